//! `vatio status`: a node's pipeline counters, as a table or JSON.

use serde_json::{Value, json};
use vatio_proto::v1::{self, admin_client::AdminClient};

use super::{TlsArgs, connect};
use crate::table;

pub async fn run(addr: &str, tls: &TlsArgs, as_json: bool) -> anyhow::Result<()> {
    let s = AdminClient::new(connect(addr, tls).await?)
        .status(v1::StatusRequest {})
        .await?
        .into_inner();
    // One list feeds both outputs: JSON keys, table labels and values.
    let fields: Vec<(&str, &str, Value)> = vec![
        ("node_id", "node", json!(s.node_id)),
        ("az", "availability zone", json!(s.az)),
        ("started_unix_ms", "started", json!(s.started_unix_ms)),
        (
            "readings_accepted",
            "readings accepted",
            json!(s.readings_accepted),
        ),
        (
            "readings_duplicate",
            "readings duplicate",
            json!(s.readings_duplicate),
        ),
        (
            "readings_dead_lettered",
            "readings dead-lettered",
            json!(s.readings_dead_lettered),
        ),
        ("devices_known", "devices known", json!(s.devices_known)),
        ("devices_active", "devices active", json!(s.devices_active)),
        (
            "devices_activated",
            "device activations",
            json!(s.devices_activated),
        ),
        (
            "devices_passivated",
            "device passivations",
            json!(s.devices_passivated),
        ),
        (
            "device_table_bytes",
            "device table bytes",
            json!(s.device_table_bytes),
        ),
        (
            "inflight_readings",
            "readings in flight",
            json!(s.inflight_readings),
        ),
        (
            "batches_refused_overload",
            "batches refused (overload)",
            json!(s.batches_refused_overload),
        ),
        ("actor_restarts", "actor restarts", json!(s.actor_restarts)),
        ("points_written", "points written", json!(s.points_written)),
        (
            "documents_written",
            "documents written",
            json!(s.documents_written),
        ),
        (
            "archive_files_written",
            "archive files written",
            json!(s.archive_files_written),
        ),
        ("events_written", "events written", json!(s.events_written)),
        (
            "sink_write_failures",
            "sink write failures (retried)",
            json!(s.sink_write_failures),
        ),
        (
            "sink_writes_rejected",
            "sink writes rejected",
            json!(s.sink_writes_rejected),
        ),
    ];
    let log = s.log.clone().unwrap_or_default();
    let log_fields: Vec<(&str, &str, Value)> = vec![
        ("log_size_bytes", "log bytes", json!(log.size_bytes)),
        (
            "log_unsynced_bytes",
            "log bytes not yet fsynced",
            // 0 from a node that does not report it.
            json!(if log.durable_head == 0 {
                0
            } else {
                log.head.saturating_sub(log.durable_head)
            }),
        ),
        ("log_segments", "log segments", json!(log.segments)),
        ("log_appends", "log appends", json!(log.appends)),
        ("log_groups", "log group commits", json!(log.groups)),
        ("log_fsyncs", "log fsyncs", json!(log.fsyncs)),
        (
            "log_fsync_p50_us",
            "log fsync p50 (µs)",
            json!(log.fsync_micros_p50),
        ),
        (
            "log_fsync_p99_us",
            "log fsync p99 (µs)",
            json!(log.fsync_micros_p99),
        ),
        (
            "log_fsync_max_us",
            "log fsync max (µs)",
            json!(log.fsync_micros_max),
        ),
        (
            "log_write_errors",
            "log write errors",
            json!(log.write_errors),
        ),
        (
            "log_append_failures",
            "ingest steps the log refused",
            json!(log.append_failures),
        ),
        (
            "log_recovered_records",
            "log records at start-up",
            json!(log.recovered_records),
        ),
        (
            "log_recovered_bytes_cut",
            "log bytes cut at start-up",
            json!(log.recovered_bytes_cut),
        ),
        (
            "log_recovered_cut",
            "log cut at start-up",
            json!(log.recovered_cut),
        ),
        (
            "log_recovery_scan_ms",
            "log scan at start-up (ms)",
            json!(log.recovery_scan_ms),
        ),
        (
            "devices_records_replayed",
            "records replayed for device state",
            json!(log.devices_records_replayed),
        ),
        (
            "devices_rebuild_ms",
            "device state rebuild (ms)",
            json!(log.devices_rebuild_ms),
        ),
        (
            "log_positions_past_head",
            "positions past the log head at start-up",
            json!(log.positions_past_head),
        ),
        (
            "log_records_undecodable",
            "undecodable log records",
            json!(log.records_undecodable),
        ),
    ];
    let mut fields: Vec<(String, String, Value)> = fields
        .into_iter()
        .chain(log_fields)
        .map(|(k, l, v)| (k.to_owned(), l.to_owned(), v))
        .collect();
    for sub in &s.subscribers {
        fields.push((
            format!("lag_bytes_{}", sub.name),
            format!("{} lag (log bytes)", sub.name),
            json!(sub.lag_bytes),
        ));
    }
    if let Some(c) = s.cluster.as_ref().filter(|_| !s.members.is_empty()) {
        let cluster_fields: [(&str, &str, u64); 10] = [
            ("devices_owned", "devices owned", c.devices_owned),
            ("devices_claimed", "devices taken over", c.devices_claimed),
            (
                "devices_handed_over",
                "devices handed over",
                c.devices_handed_over,
            ),
            (
                "replica_steps_logged",
                "replica steps logged",
                c.replica_steps_logged,
            ),
            (
                "replication_failures",
                "replication failures (retried)",
                c.replication_failures,
            ),
            (
                "steps_voided",
                "own steps dropped (orphaned)",
                c.steps_voided,
            ),
            (
                "dropped_readings_delivered",
                "readings of dropped steps delivered at adoption",
                c.dropped_readings_delivered,
            ),
            (
                "batches_refused_no_replica",
                "batches refused (no other AZ)",
                c.batches_refused_no_replica,
            ),
            (
                "batches_acked_degraded",
                "batches acked locally (no other AZ)",
                c.batches_acked_degraded,
            ),
            (
                "batches_refused_not_owner",
                "batches for devices not owned",
                c.batches_refused_not_owner,
            ),
        ];
        for (key, label, value) in cluster_fields {
            fields.push((key.to_owned(), label.to_owned(), json!(value)));
        }
    }
    for m in &s.members {
        fields.push((
            format!("member_{}", m.node_id),
            format!("member {}", m.node_id),
            json!(format!(
                "{} {} {}{}",
                m.az,
                m.grpc_addr,
                if m.ready { "ready" } else { "not ready" },
                if m.verified { "" } else { ", not verified" }
            )),
        ));
    }
    for sink in &s.sinks {
        fields.push((
            format!("breaker_{}", sink.name),
            format!("{} ({}) breaker", sink.name, sink.backend),
            json!(sink.breaker),
        ));
        if !sink.last_error.is_empty() {
            fields.push((
                format!("error_{}", sink.name),
                format!("{} failing", sink.name),
                json!(sink.last_error),
            ));
        }
    }
    if as_json {
        let object: serde_json::Map<String, Value> = fields
            .into_iter()
            .map(|(key, _, value)| (key, value))
            .collect();
        println!("{}", serde_json::to_string_pretty(&object)?);
        return Ok(());
    }
    let mut t = table::new(&["counter", "value"]);
    for (key, label, value) in fields {
        let shown = match (key.as_str(), &value) {
            ("started_unix_ms", _) => table::time(s.started_unix_ms),
            (_, Value::String(text)) => text.clone(),
            (_, other) => other.to_string(),
        };
        t.add_row(vec![label, shown]);
    }
    println!("{t}");
    Ok(())
}
