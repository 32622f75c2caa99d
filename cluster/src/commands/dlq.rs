//! `vatio dlq list|replay`: inspect dead letters and re-submit them.

use clap::Subcommand;
use vatio_proto::v1::{self, admin_client::AdminClient};

use super::query::warn_unanswered;
use super::{TlsArgs, connect};
use crate::table;

#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// Dead letters, newest first.
    List {
        /// e.g. out_of_range, late, unknown_unit.
        #[arg(long)]
        reason: Option<String>,
        #[arg(long)]
        device: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Include letters already replayed successfully.
        #[arg(long)]
        all: bool,
    },
    /// Re-submit pending dead letters through the normal path.
    Replay {
        #[arg(long)]
        reason: Option<String>,
        #[arg(long)]
        device: Option<String>,
        #[arg(long, default_value_t = 1000)]
        limit: u32,
    },
}

pub async fn run(
    addr: &str,
    tls: &TlsArgs,
    node_only: bool,
    cmd: DlqCommand,
) -> anyhow::Result<()> {
    let mut client = AdminClient::new(connect(addr, tls).await?);
    let scope = if node_only {
        v1::QueryScope::Node
    } else {
        v1::QueryScope::Cluster
    } as i32;
    match cmd {
        DlqCommand::List {
            reason,
            device,
            limit,
            all,
        } => {
            let resp = client
                .list_dead_letters(v1::ListDeadLettersRequest {
                    reason: reason.unwrap_or_default(),
                    device_id: device.unwrap_or_default(),
                    limit,
                    include_replayed: all,
                    scope,
                })
                .await?
                .into_inner();
            warn_unanswered(&resp.unanswered_nodes);
            let mut t = table::new(&[
                "node", "id", "received", "device", "seq", "metric", "value", "unit", "reason",
                "detail", "source", "replayed",
            ]);
            for d in resp.dead_letters {
                let r = d.reading.unwrap_or_default();
                t.add_row(vec![
                    d.node_id,
                    d.id.to_string(),
                    table::time(d.received_unix_ms),
                    r.device_id,
                    r.seq.to_string(),
                    r.metric,
                    format!("{}", r.value),
                    r.unit,
                    d.reason,
                    d.detail,
                    d.source,
                    if d.replayed_unix_ms == 0 {
                        String::new()
                    } else {
                        table::time(d.replayed_unix_ms)
                    },
                ]);
            }
            println!("{t}");
        }
        DlqCommand::Replay {
            reason,
            device,
            limit,
        } => {
            let resp = client
                .replay_dead_letters(v1::ReplayDeadLettersRequest {
                    reason: reason.unwrap_or_default(),
                    device_id: device.unwrap_or_default(),
                    limit,
                    scope,
                })
                .await?
                .into_inner();
            warn_unanswered(&resp.unanswered_nodes);
            println!(
                "replayed {} dead letter(s): {} accepted, {} refused again",
                resp.attempted, resp.accepted, resp.refused_again
            );
            if resp.not_owned > 0 {
                println!(
                    "{} pending letter(s) not replayed: their devices' owners did not take \
                     them this time (see the node's log); they stay pending",
                    resp.not_owned
                );
            }
        }
    }
    Ok(())
}
