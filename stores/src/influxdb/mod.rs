//! Time series in InfluxDB: every node's minute points in one shared
//! database, written in line protocol (v1 `/write` or v2 `/api/v2/write`)
//! and read with InfluxQL on `/query`.
//!
//! Each node writes its share of a device·metric·minute as its own point
//! (a `node` tag; the `line` module has the layout): a minute that two nodes sequenced parts of
//! (a failover in the middle of it) is two points, and a replay after a
//! crash rewrites the node's own point with the same statistics and log
//! position. Reads merge the shares of a key ([`crate::merge`]), so nothing
//! is counted twice and no share overwrites another. Minute statistics
//! rather than raw readings keep the store as small as the embedded one
//! and the writes as few.

mod client;
mod influxql;
pub mod line;

use async_trait::async_trait;
use vatio_config::InfluxDbConfig;

use self::client::Client;
use self::influxql::Conditions;
use crate::{
    DeviceId, DeviceKind, LatestFilter, LatestValue, Metric, MinuteFilter, MinutePoint,
    PowerFlowMinute, Result, TimeSeriesStore, UnixMs, merge, query_limit,
};

/// [`TimeSeriesStore`] on an InfluxDB server, as one node of a cluster sees it.
#[derive(Clone, Debug)]
pub struct InfluxTimeSeries {
    client: Client,
    /// The node whose share this store writes and reopens.
    node: String,
    batch_points_max: usize,
}

impl InfluxTimeSeries {
    /// The store on the server `cfg` names, for node `node`. Nothing is sent
    /// yet: a server that is down shows at the first write, which the
    /// aggregator retries while the log holds the data.
    pub fn connect(cfg: &InfluxDbConfig, node: &str) -> Result<Self> {
        Ok(Self {
            client: Client::new(cfg)?,
            node: node.to_owned(),
            batch_points_max: usize::try_from(cfg.batch_points_max.max(1)).unwrap_or(5000),
        })
    }

    async fn query_points(&self, statement: String) -> Result<Vec<MinutePoint>> {
        let body = self.client.query(&statement).await?;
        influxql::points(&body)
    }

    fn own(&self) -> Conditions {
        Conditions::default().tag("node", Some(&self.node))
    }
}

#[async_trait]
impl TimeSeriesStore for InfluxTimeSeries {
    fn shared(&self) -> bool {
        true
    }

    async fn write_points(&self, points: &[MinutePoint]) -> Result<()> {
        for chunk in points.chunks(self.batch_points_max) {
            let mut body = String::with_capacity(chunk.len() * 200);
            for point in chunk {
                line::push_point(&mut body, point, &self.node)?;
            }
            self.client.write(body).await?;
        }
        Ok(())
    }

    async fn point(
        &self,
        device: &DeviceId,
        metric: Metric,
        minute_ms: UnixMs,
    ) -> Result<Option<MinutePoint>> {
        let conditions = self
            .own()
            .tag("device", Some(device.as_str()))
            .tag("metric", Some(metric.as_str()))
            .at(minute_ms);
        let statement = influxql::select_points(self.client.retention_policy(), &conditions);
        Ok(self.query_points(statement).await?.into_iter().next())
    }

    async fn latest(&self, filter: &LatestFilter) -> Result<Vec<LatestValue>> {
        let conditions = Conditions::default()
            .tag("device", filter.device.as_ref().map(DeviceId::as_str))
            .tag("kind", filter.kind.map(DeviceKind::as_str));
        let statement = influxql::select_newest(self.client.retention_policy(), &conditions);
        // Each share's newest minute; the newest reading over the shares wins.
        let values = self
            .query_points(statement)
            .await?
            .into_iter()
            .filter(|p| p.stats.count > 0)
            .map(|p| LatestValue {
                device: p.device,
                kind: p.kind,
                metric: p.metric,
                value: p.stats.last,
                ts_ms: p.stats.last_ts_ms,
            });
        Ok(merge::latest(values, query_limit(filter.limit) as usize))
    }

    async fn power_flow(&self, from_ms: UnixMs, to_ms: UnixMs) -> Result<Vec<PowerFlowMinute>> {
        let filter = MinuteFilter {
            device: None,
            kind: Some(DeviceKind::ElectricityMeter),
            metric: Some(Metric::Power),
        };
        Ok(merge::power_flow(
            self.minutes(&filter, from_ms, to_ms).await?,
        ))
    }

    /// Every share merged: one point per key, as the cluster holds it.
    async fn minutes(
        &self,
        filter: &MinuteFilter,
        from_ms: UnixMs,
        to_ms: UnixMs,
    ) -> Result<Vec<MinutePoint>> {
        let conditions = Conditions::default()
            .tag("device", filter.device.as_ref().map(DeviceId::as_str))
            .tag("kind", filter.kind.map(DeviceKind::as_str))
            .tag("metric", filter.metric.map(Metric::as_str))
            .time_range(from_ms, to_ms);
        let statement = influxql::select_points(self.client.retention_policy(), &conditions);
        let shares = self.query_points(statement).await?;
        Ok(merge::merge_points(
            shares.into_iter().filter(|p| p.stats.count > 0),
        ))
    }

    /// This node's newest minute: later windows of its own are new.
    async fn max_minute(&self) -> Result<Option<UnixMs>> {
        let statement = influxql::select_newest_time(self.client.retention_policy(), &self.own());
        let body = self.client.query(&statement).await?;
        influxql::newest_time(&body)
    }
}
