//! The aggregator: per device and metric, min/max/mean/count/last per
//! minute, written to the time-series store. It flushes when
//! `flush_max_points` windows changed or `flush_max_delay` passed since the
//! first unflushed change, whichever comes first. A flush writes whole
//! windows (replacing the stored point), so a repeated flush is idempotent.

use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use vatio_config::AggregatorConfig;
use vatio_stores::{MINUTE_MS, MinutePoint, Reading, TimeSeriesStore, minute_of};

use crate::clock::SharedClock;
use crate::logic::windows::{PointKey, Windows, new_point};
use crate::pipeline::SubscriberMsg;
use crate::retry;
use crate::stats::NodeStats;

#[derive(Clone)]
pub struct AggregatorArgs {
    pub store: Arc<dyn TimeSeriesStore>,
    pub cfg: AggregatorConfig,
    pub clock: SharedClock,
    pub stats: Arc<NodeStats>,
}

#[derive(Clone, Copy)]
pub struct Aggregator;

pub struct AggregatorState {
    args: AggregatorArgs,
    windows: Windows<PointKey, MinutePoint>,
    dirty_since_ms: Option<i64>,
}

impl Actor for Aggregator {
    type Msg = SubscriberMsg;
    type State = AggregatorState;
    type Arguments = AggregatorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: AggregatorArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let store = args.store.clone();
        let newest =
            retry::while_transient("timeseries", &args.stats, || store.max_minute()).await?;
        // Windows up to the newest stored minute may already be in the
        // store (written before a restart) and are loaded before an update;
        // later ones are new.
        let horizon = newest.map_or(i64::MIN, |m| m.saturating_add(MINUTE_MS));
        let lateness = i64::try_from(args.cfg.window_lateness.as_millis()).unwrap_or(0);
        let tick = (args.cfg.flush_max_delay / 4).max(Duration::from_millis(10));
        myself.send_interval(tick, || SubscriberMsg::Tick);
        Ok(AggregatorState {
            windows: Windows::new(lateness, horizon),
            dirty_since_ms: None,
            args,
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SubscriberMsg::Readings { batch, permit } => {
                for r in batch.iter() {
                    st.absorb(r).await?;
                }
                drop(permit);
                if st.windows.dirty_len() >= st.args.cfg.flush_max_points as usize {
                    st.flush().await?;
                }
            }
            SubscriberMsg::Tick => {
                let now = st.args.clock.now_ms();
                let delay = i64::try_from(st.args.cfg.flush_max_delay.as_millis()).unwrap_or(0);
                if st
                    .dirty_since_ms
                    .is_some_and(|t| now.saturating_sub(t) >= delay)
                {
                    st.flush().await?;
                }
                st.windows.evict(now);
            }
            SubscriberMsg::Flush(reply) => {
                st.flush().await?;
                let _ = reply.send(());
            }
        }
        Ok(())
    }
}

impl AggregatorState {
    async fn absorb(&mut self, r: &Reading) -> Result<(), ActorProcessingErr> {
        let key = PointKey {
            device: r.device.clone(),
            metric: r.metric,
            minute_ms: minute_of(r.ts_ms),
        };
        if let Some(point) = self.windows.get_mut(&key) {
            point.stats.add(r);
        } else {
            let stored = if self.windows.needs_load(&key) {
                let store = self.args.store.clone();
                retry::while_transient("timeseries", &self.args.stats, || {
                    store.point(&key.device, key.metric, key.minute_ms)
                })
                .await?
            } else {
                None
            };
            let point = match stored {
                Some(mut p) => {
                    p.stats.add(r);
                    p
                }
                None => new_point(r),
            };
            self.windows.insert(key.clone(), point);
        }
        self.windows.touch(&key);
        self.dirty_since_ms
            .get_or_insert_with(|| self.args.clock.now_ms());
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), ActorProcessingErr> {
        self.dirty_since_ms = None;
        let dirty = self.windows.take_dirty();
        if dirty.is_empty() {
            return Ok(());
        }
        let points: Vec<MinutePoint> = dirty.into_iter().map(|(_, p)| p).collect();
        let store = self.args.store.clone();
        match retry::while_transient("timeseries", &self.args.stats, || {
            store.write_points(&points)
        })
        .await
        {
            Ok(()) => NodeStats::add(&self.args.stats.points_written, points.len() as u64),
            Err(e) => {
                NodeStats::add(&self.args.stats.sink_writes_rejected, points.len() as u64);
                tracing::error!(error = %e, points = points.len(), "time-series store rejected points");
            }
        }
        Ok(())
    }
}
