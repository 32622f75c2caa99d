//! The demo's summary text: per node, per AZ and per minute. The plant's
//! power flow and dead letters are one node's cluster-wide Query answer,
//! which merges every node's share.

use std::collections::BTreeMap;
use std::time::Duration;

use vatio_proto::v1::{self, query_client::QueryClient};

use super::cluster::{DemoCluster, SEATS};
use super::feed::Tally;
use super::snapshot::{Counts, Snapshot, sees_ready};
use crate::table;

/// How far back the power flow is asked for: the minutes the feed keeps.
const POWER_WINDOW_MS: i64 = 10 * 60_000;

/// One AZ's sums.
#[derive(Default)]
struct AzTotals {
    counts: Counts,
    nodes: usize,
    /// Nodes every answering node lists as ready members.
    ready: usize,
}

/// Per-node and per-AZ tables of the counters in `after`, with rates since
/// `before`.
fn cluster_tables(before: &Snapshot, after: &Snapshot) -> String {
    let secs = after.taken.duration_since(before.taken).as_secs_f64();
    let mut nodes = table::new(&[
        "node",
        "AZ",
        "accepted/s",
        "accepted",
        "duplicates",
        "dead letters",
        "ready member",
        "sees ready",
    ]);
    let mut azs: BTreeMap<&str, AzTotals> = BTreeMap::new();
    for n in &after.nodes {
        let az = azs.entry(n.seat.az).or_default();
        az.nodes += 1;
        let (ready, views) = after.ready_views(n.seat);
        let readiness = if views > 0 && ready == views {
            az.ready += 1;
            "yes".to_owned()
        } else {
            format!("in {ready}/{views} views")
        };
        let mut row = vec![n.seat.id.to_owned(), n.seat.az.to_owned()];
        match &n.status {
            Ok(s) => {
                let c = Counts::between(before.status(n.seat.id), s, secs);
                az.counts.add(c);
                row.extend([
                    table::num(c.accepted_per_s, 1),
                    c.accepted.to_string(),
                    c.duplicates.to_string(),
                    c.dead_lettered.to_string(),
                    readiness,
                    format!("{}/{}", sees_ready(s), SEATS.len()),
                ]);
            }
            Err(e) => row.push(format!("unreachable: {e}")),
        }
        nodes.add_row(row);
    }
    let mut by_az = table::new(&[
        "AZ",
        "nodes ready",
        "accepted/s",
        "accepted",
        "duplicates",
        "dead letters",
    ]);
    for (az, t) in &azs {
        by_az.add_row(vec![
            (*az).to_owned(),
            format!("{}/{}", t.ready, t.nodes),
            table::num(t.counts.accepted_per_s, 1),
            t.counts.accepted.to_string(),
            t.counts.duplicates.to_string(),
            t.counts.dead_lettered.to_string(),
        ]);
    }
    format!("{nodes}\n{by_az}\n")
}

/// The plant as one node answers for the whole cluster.
#[derive(Default)]
struct Plant {
    /// Minute start → (total kW, meters).
    power: BTreeMap<i64, (f64, u32)>,
    dead_letters: BTreeMap<String, u64>,
    unanswered: Vec<String>,
}

impl Plant {
    /// Asks the nodes in turn for the cluster-wide answer until one gives
    /// it; the first node that answers merges every member's share.
    async fn ask(cluster: &DemoCluster, now_ms: i64) -> Self {
        let mut plant = Plant::default();
        for n in cluster.nodes() {
            let mut query = QueryClient::new(n.channel.clone());
            let power = query
                .power_flow(v1::PowerFlowRequest {
                    from_unix_ms: now_ms - POWER_WINDOW_MS,
                    to_unix_ms: 0,
                    scope: v1::QueryScope::Cluster as i32,
                })
                .await;
            let dead = query
                .dead_letter_counts(v1::DeadLetterCountsRequest {
                    scope: v1::QueryScope::Cluster as i32,
                })
                .await;
            match (power, dead) {
                (Ok(power), Ok(dead)) => {
                    let (power, dead) = (power.into_inner(), dead.into_inner());
                    for m in power.minutes {
                        plant.power.insert(m.minute_unix_ms, (m.total_kw, m.meters));
                    }
                    for c in dead.counts {
                        plant.dead_letters.insert(c.reason, c.count);
                    }
                    plant.unanswered = power.unanswered_nodes;
                    plant.unanswered.extend(dead.unanswered_nodes);
                    plant.unanswered.sort();
                    plant.unanswered.dedup();
                    return plant;
                }
                (Err(e), _) | (_, Err(e)) => {
                    plant
                        .unanswered
                        .push(format!("{}: {}", n.seat.id, e.message()))
                }
            }
        }
        plant
    }
}

/// The live summary: per-minute factory tallies with the plant's power
/// flow, the per-node and per-AZ tables, and dead letters by reason.
pub async fn live(
    cluster: &DemoCluster,
    minutes: &BTreeMap<i64, Tally>,
    before: &Snapshot,
    after: &Snapshot,
    now_ms: i64,
) -> String {
    let plant = Plant::ask(cluster, now_ms).await;
    let mut t = table::new(&[
        "minute (UTC)",
        "readings in",
        "accepted",
        "duplicates",
        "dead letters",
        "power flow kW",
        "meters",
    ]);
    for (minute, m) in minutes.iter().rev() {
        let (kw, meters) = plant
            .power
            .get(minute)
            .map(|(kw, n)| (table::num(*kw, 1), n.to_string()))
            .unwrap_or_else(|| ("…".into(), "…".into()));
        t.add_row(vec![
            table::minute(*minute),
            m.sent.to_string(),
            m.accepted.to_string(),
            m.duplicates.to_string(),
            m.dead_lettered.to_string(),
            kw,
            meters,
        ]);
    }
    let reasons: Vec<String> = plant
        .dead_letters
        .iter()
        .map(|(reason, count)| format!("{reason} {count}"))
        .collect();
    let mut text = format!(
        "vatio demo — {} — {} nodes in 2 AZs\n{t}\n{}dead letters by reason: {}\n",
        table::time(now_ms),
        SEATS.len(),
        cluster_tables(before, after),
        if reasons.is_empty() {
            "none".to_owned()
        } else {
            reasons.join(", ")
        },
    );
    if !plant.unanswered.is_empty() {
        text.push_str(&format!("not answered: {}\n", plant.unanswered.join("; ")));
    }
    text
}

/// One line per node and per AZ over the whole run, and the factory's totals.
pub fn final_lines(start: &Snapshot, end: &Snapshot, factory: &Tally) -> String {
    let secs = end.taken.duration_since(start.taken).as_secs_f64();
    let mut azs: BTreeMap<&str, AzTotals> = BTreeMap::new();
    let mut text = String::new();
    for n in &end.nodes {
        let az = azs.entry(n.seat.az).or_default();
        az.nodes += 1;
        let s = match &n.status {
            Ok(s) => s,
            Err(e) => {
                text.push_str(&format!(
                    "node {} ({}): unreachable: {e}\n",
                    n.seat.id, n.seat.az
                ));
                continue;
            }
        };
        let c = Counts::between(start.status(n.seat.id), s, secs);
        az.counts.add(c);
        let sees = sees_ready(s);
        if sees == SEATS.len() {
            az.ready += 1;
        }
        text.push_str(&format!(
            "node {} ({}): {} accepted ({}/s), {} duplicates, {} dead letters; saw {sees}/{} members ready\n",
            n.seat.id,
            n.seat.az,
            c.accepted,
            table::num(c.accepted_per_s, 1),
            c.duplicates,
            c.dead_lettered,
            SEATS.len(),
        ));
    }
    for (az, t) in &azs {
        text.push_str(&format!(
            "{az} ({}/{} nodes saw every member): {} accepted ({}/s), {} duplicates, {} dead letters\n",
            t.ready,
            t.nodes,
            t.counts.accepted,
            table::num(t.counts.accepted_per_s, 1),
            t.counts.duplicates,
            t.counts.dead_lettered,
        ));
    }
    text.push_str(&format!(
        "factory over {}: {} readings sent, {} accepted, {} duplicates, {} dead-lettered, {} in refused batches\n",
        humantime::format_duration(Duration::from_secs(secs.round() as u64)),
        factory.sent,
        factory.accepted,
        factory.duplicates,
        factory.dead_lettered,
        factory.refused,
    ));
    text
}
