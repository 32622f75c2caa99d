//! `vatio status`: a node's pipeline counters.

use vatio_proto::v1::{self, admin_client::AdminClient};

use super::connect;
use crate::table;

pub async fn run(addr: &str, json: bool) -> anyhow::Result<()> {
    let s = AdminClient::new(connect(addr).await?)
        .status(v1::StatusRequest {})
        .await?
        .into_inner();
    if json {
        let value = serde_json::json!({
            "node_id": s.node_id,
            "az": s.az,
            "started_unix_ms": s.started_unix_ms,
            "readings_accepted": s.readings_accepted,
            "readings_duplicate": s.readings_duplicate,
            "readings_dead_lettered": s.readings_dead_lettered,
            "devices_known": s.devices_known,
            "devices_active": s.devices_active,
            "device_table_bytes": s.device_table_bytes,
            "inflight_readings": s.inflight_readings,
            "batches_refused_overload": s.batches_refused_overload,
            "actor_restarts": s.actor_restarts,
            "points_written": s.points_written,
            "documents_written": s.documents_written,
            "archive_files_written": s.archive_files_written,
        });
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    let mut t = table::new(&["counter", "value"]);
    let rows: [(&str, String); 14] = [
        ("node", format!("{} ({})", s.node_id, s.az)),
        ("started", table::time(s.started_unix_ms)),
        ("readings accepted", s.readings_accepted.to_string()),
        ("readings duplicate", s.readings_duplicate.to_string()),
        (
            "readings dead-lettered",
            s.readings_dead_lettered.to_string(),
        ),
        ("devices known", s.devices_known.to_string()),
        ("devices active", s.devices_active.to_string()),
        ("device table bytes", s.device_table_bytes.to_string()),
        ("readings in flight", s.inflight_readings.to_string()),
        (
            "batches refused (overload)",
            s.batches_refused_overload.to_string(),
        ),
        ("actor restarts", s.actor_restarts.to_string()),
        ("points written", s.points_written.to_string()),
        ("documents written", s.documents_written.to_string()),
        ("archive files written", s.archive_files_written.to_string()),
    ];
    for (k, v) in rows {
        t.add_row(vec![k.to_string(), v]);
    }
    println!("{t}");
    Ok(())
}
