//! A run's fingerprint: SHA-256 over the ack of every batch in schedule
//! order, then the archive's rows and the pending dead letters, each sorted.
//! Nothing timing-dependent goes in (no arrival times, ids or retry counts),
//! so two runs of one seed must give the same hash; if they do not, the
//! run depended on something other than its seed.

use sha2::{Digest, Sha256};

use crate::observe::Observed;

pub fn hash(o: &Observed) -> String {
    let mut h = Sha256::new();
    for (id, ack) in o.acks.iter().enumerate() {
        let line = match ack {
            Some(a) => format!(
                "batch {id} {} {} {}\n",
                a.accepted, a.duplicates, a.dead_lettered
            ),
            None => format!("batch {id} unacknowledged\n"),
        };
        h.update(line.as_bytes());
    }
    let mut rows: Vec<_> = o.archive.primary.values().flatten().collect();
    rows.sort_by(|a, b| (&a.device, a.seq).cmp(&(&b.device, b.seq)));
    for r in rows {
        // Values by their bits: the archive must be the same, not close.
        let line = format!(
            "row {} {} {} {} {} {:016x}\n",
            r.device,
            r.kind,
            r.seq,
            r.ts_ms,
            r.metric,
            r.value.to_bits()
        );
        h.update(line.as_bytes());
    }
    let mut letters: Vec<_> = o
        .dead_letters
        .iter()
        .map(|l| {
            let r = &l.letter.reading;
            (
                r.device_id.as_str(),
                r.seq,
                l.letter.reason.as_str(),
                l.replayed_ms.is_some(),
            )
        })
        .collect();
    letters.sort();
    for (device, seq, reason, replayed) in letters {
        h.update(format!("dead {device} {seq} {reason} {replayed}\n").as_bytes());
    }
    hex::encode(h.finalize())
}
