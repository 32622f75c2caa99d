//! `vatio query …`: the Query API as tables.

use std::time::Duration;

use clap::Subcommand;
use vatio_proto::v1::{self, query_client::QueryClient};

use super::{TlsArgs, connect};
use crate::table;

#[derive(Debug, Subcommand)]
pub enum QueryCommand {
    /// Latest value per device and metric.
    Latest {
        #[arg(long)]
        device: Option<String>,
        /// climate_sensor, robot_arm or electricity_meter.
        #[arg(long)]
        kind: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// One device's metric over time, in windows.
    Series {
        #[arg(long)]
        device: String,
        #[arg(long)]
        metric: String,
        /// How far back, e.g. 1h, 30m.
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        since: Duration,
        /// Window length in minutes.
        #[arg(long, default_value_t = 1)]
        window: u32,
    },
    /// The plant's power flow per minute (sum over electricity meters).
    Power {
        #[arg(long, default_value = "30m", value_parser = humantime::parse_duration)]
        since: Duration,
    },
    /// Threshold events of the last 168 h.
    Events {
        #[arg(long)]
        device: Option<String>,
        #[arg(long)]
        kind: Option<String>,
        /// e.g. over_temperature, power_spike, vibration_fault.
        #[arg(long = "type")]
        event_type: Option<String>,
        #[arg(long, default_value = "168h", value_parser = humantime::parse_duration)]
        since: Duration,
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Dead letters counted by reason.
    DeadLetters,
}

pub fn kind_arg(kind: Option<&str>) -> anyhow::Result<i32> {
    Ok(match kind {
        None => v1::DeviceKind::Unspecified as i32,
        Some("climate_sensor") => v1::DeviceKind::ClimateSensor as i32,
        Some("robot_arm") => v1::DeviceKind::RobotArm as i32,
        Some("electricity_meter") => v1::DeviceKind::ElectricityMeter as i32,
        Some(other) => anyhow::bail!(
            "--kind {other:?}: expected climate_sensor, robot_arm or electricity_meter"
        ),
    })
}

fn kind_name(wire: i32) -> &'static str {
    match v1::DeviceKind::try_from(wire) {
        Ok(v1::DeviceKind::ClimateSensor) => "climate_sensor",
        Ok(v1::DeviceKind::RobotArm) => "robot_arm",
        Ok(v1::DeviceKind::ElectricityMeter) => "electricity_meter",
        _ => "unspecified",
    }
}

fn ago_ms(d: Duration) -> i64 {
    let now = chrono::Utc::now().timestamp_millis();
    now.saturating_sub(i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Tells on stderr whose share a cluster-wide answer lacks.
pub fn warn_unanswered(nodes: &[String]) {
    if !nodes.is_empty() {
        eprintln!(
            "warning: incomplete answer: no share from {}",
            nodes.join(", ")
        );
    }
}

pub async fn run(
    addr: &str,
    tls: &TlsArgs,
    node_only: bool,
    cmd: QueryCommand,
) -> anyhow::Result<()> {
    let mut client = QueryClient::new(connect(addr, tls).await?);
    let scope = if node_only {
        v1::QueryScope::Node
    } else {
        v1::QueryScope::Cluster
    } as i32;
    match cmd {
        QueryCommand::Latest {
            device,
            kind,
            limit,
        } => {
            let resp = client
                .latest(v1::LatestRequest {
                    device_id: device.unwrap_or_default(),
                    kind: kind_arg(kind.as_deref())?,
                    limit,
                    scope,
                })
                .await?
                .into_inner();
            warn_unanswered(&resp.unanswered_nodes);
            let mut t = table::new(&["device", "kind", "metric", "value", "unit", "time"]);
            for v in resp.values {
                t.add_row(vec![
                    v.device_id,
                    kind_name(v.kind).into(),
                    v.metric,
                    table::num(v.value, 2),
                    v.unit,
                    table::time(v.ts_unix_ms),
                ]);
            }
            println!("{t}");
        }
        QueryCommand::Series {
            device,
            metric,
            since,
            window,
        } => {
            let resp = client
                .series(v1::SeriesRequest {
                    device_id: device,
                    metric,
                    from_unix_ms: ago_ms(since),
                    to_unix_ms: 0,
                    window_minutes: window,
                    scope,
                })
                .await?
                .into_inner();
            warn_unanswered(&resp.unanswered_nodes);
            let unit = resp.unit;
            let mut t = table::new(&["window", "count", "min", "mean", "max", "last"]);
            for p in resp.points {
                t.add_row(vec![
                    table::time(p.window_start_unix_ms),
                    p.count.to_string(),
                    table::num(p.min, 2),
                    table::num(p.mean, 2),
                    table::num(p.max, 2),
                    table::num(p.last, 2),
                ]);
            }
            println!("unit: {unit}\n{t}");
        }
        QueryCommand::Power { since } => {
            let resp = client
                .power_flow(v1::PowerFlowRequest {
                    from_unix_ms: ago_ms(since),
                    to_unix_ms: 0,
                    scope,
                })
                .await?
                .into_inner();
            warn_unanswered(&resp.unanswered_nodes);
            let mut t = table::new(&["minute", "total kW", "meters"]);
            for m in resp.minutes {
                t.add_row(vec![
                    table::time(m.minute_unix_ms),
                    table::num(m.total_kw, 1),
                    m.meters.to_string(),
                ]);
            }
            println!("{t}");
        }
        QueryCommand::Events {
            device,
            kind,
            event_type,
            since,
            limit,
        } => {
            let resp = client
                .events(v1::EventsRequest {
                    device_id: device.unwrap_or_default(),
                    kind: kind_arg(kind.as_deref())?,
                    event_type: event_type.unwrap_or_default(),
                    from_unix_ms: ago_ms(since),
                    to_unix_ms: 0,
                    limit,
                    scope,
                })
                .await?
                .into_inner();
            warn_unanswered(&resp.unanswered_nodes);
            let mut t = table::new(&["time", "device", "event", "metric", "value", "threshold"]);
            for e in resp.events {
                t.add_row(vec![
                    table::time(e.ts_unix_ms),
                    e.device_id,
                    e.event_type,
                    e.metric,
                    table::num(e.value, 2),
                    table::num(e.threshold, 2),
                ]);
            }
            println!("{t}");
        }
        QueryCommand::DeadLetters => {
            let resp = client
                .dead_letter_counts(v1::DeadLetterCountsRequest { scope })
                .await?
                .into_inner();
            warn_unanswered(&resp.unanswered_nodes);
            let mut t = table::new(&["reason", "count"]);
            for c in resp.counts {
                t.add_row(vec![c.reason, c.count.to_string()]);
            }
            println!("{t}\ntotal: {}", resp.total);
        }
    }
    Ok(())
}
