//! The guarantees, checked against what a run left behind. Each checker
//! compares the stores (and the acks the clients got) with the harness's
//! own expectation ([`Expected`]) and returns the violations it found; an
//! empty list means the guarantee held.
//!
//! | check | guarantee |
//! |---|---|
//! | `acks` | every batch acknowledged, with the counts the rules give |
//! | `no_loss` | accepted + duplicates + dead-lettered = readings sent, per batch and in total |
//! | `archive_sides` | primary and replica hold the same hours with the same rows, each matching its manifest |
//! | `archive_exactly_once` | every accepted reading is archived once, as accepted; nothing else is |
//! | `archive_no_duplicates` | no `(device, seq)` twice in the archive |
//! | `archive_seq_order` | per device, archive rows in strictly increasing seq |
//! | `sink_seq_order` | per device, readings reached the archiver in strictly increasing seq |
//! | `timeseries_counts` | each minute point counts exactly the accepted readings in it |
//! | `document_counts` | each minute document counts exactly the accepted readings in it |
//! | `dead_letters` | every refused reading is a pending dead letter with the expected reason; nothing else is |
//! | `restarts` | each injected crash restarted its device actor once |
//! | `overload_counted` | every overload refusal a client got is counted by the node |

use std::collections::BTreeMap;
use std::fmt;

use vatio_stores::{DeadLetterReason, Reading};

use crate::model::Expected;
use crate::observe::Observed;
use crate::workload::Workload;

/// Details listed per check before the rest are only counted.
const DETAILS_MAX: usize = 12;

/// One guarantee that did not hold, and how.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    pub check: &'static str,
    pub detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}] {}", self.check, self.detail)
    }
}

/// Collects one check's findings, listing the first few in full.
struct Findings {
    check: &'static str,
    listed: Vec<Violation>,
    more: usize,
}

impl Findings {
    fn new(check: &'static str) -> Self {
        Self {
            check,
            listed: Vec::new(),
            more: 0,
        }
    }

    fn add(&mut self, detail: impl Into<String>) {
        if self.listed.len() < DETAILS_MAX {
            self.listed.push(Violation {
                check: self.check,
                detail: detail.into(),
            });
        } else {
            self.more += 1;
        }
    }

    fn done(mut self) -> Vec<Violation> {
        if self.more > 0 {
            self.listed.push(Violation {
                check: self.check,
                detail: format!("… and {} more like these", self.more),
            });
        }
        self.listed
    }
}

/// Every check, in the order of the table above.
pub fn all(w: &Workload, e: &Expected, o: &Observed) -> Vec<Violation> {
    let mut v = Vec::new();
    v.extend(acks(w, e, o));
    v.extend(no_loss(w, o));
    v.extend(archive_sides(o));
    v.extend(archive_exactly_once(e, o));
    v.extend(archive_no_duplicates(o));
    v.extend(archive_seq_order(o));
    v.extend(sink_seq_order(o));
    v.extend(counts("timeseries_counts", e, &o.points));
    v.extend(counts("document_counts", e, &o.docs));
    v.extend(dead_letters(e, o));
    v.extend(restarts(w, o));
    v.extend(overload_counted(o));
    v
}

/// Each batch's ack says what the rules say should have become of it.
pub fn acks(w: &Workload, e: &Expected, o: &Observed) -> Vec<Violation> {
    let mut f = Findings::new("acks");
    for b in &w.batches {
        let want = e.acks.get(b.id).copied().unwrap_or_default();
        match o.acks.get(b.id).copied().flatten() {
            None => f.add(format!("batch {} was never acknowledged", b.id)),
            Some(got) if got != want => f.add(format!(
                "batch {} (client {}{}): acked {got:?}, expected {want:?}",
                b.id,
                b.client,
                b.resend_of
                    .map(|o| format!(", re-send of {o}"))
                    .unwrap_or_default()
            )),
            Some(_) => {}
        }
    }
    f.done()
}

/// Nothing vanishes between the wire and the ack: every reading of every
/// acknowledged call is counted as accepted, duplicate or dead-lettered.
/// Refused (overloaded) attempts took nothing and are not counted.
pub fn no_loss(w: &Workload, o: &Observed) -> Vec<Violation> {
    let mut f = Findings::new("no_loss");
    let (mut sent, mut counted) = (0u64, 0u64);
    for b in &w.batches {
        let Some(Some(a)) = o.acks.get(b.id) else {
            continue;
        };
        let n = b.readings.len() as u64;
        let c = u64::from(a.accepted) + u64::from(a.duplicates) + u64::from(a.dead_lettered);
        sent += n;
        counted += c;
        if n != c {
            f.add(format!(
                "batch {}: {n} readings sent, {c} accounted for",
                b.id
            ));
        }
    }
    let all_sent = w.readings_sent() as u64;
    if counted != all_sent {
        f.add(format!(
            "{all_sent} readings sent in all, {counted} accounted for by acks ({sent} in acknowledged calls)"
        ));
    }
    f.done()
}

/// Both AZs hold the same archive, and every file matches its manifest.
pub fn archive_sides(o: &Observed) -> Vec<Violation> {
    let mut f = Findings::new("archive_sides");
    let a = &o.archive;
    for e in &a.errors {
        f.add(e.clone());
    }
    for (hour, rows) in &a.primary {
        match a.replica.get(hour) {
            None => f.add(format!("{hour:?} only on the primary side")),
            Some(other) if other != rows => f.add(format!(
                "{hour:?}: primary has {} rows, replica {} rows, and they differ",
                rows.len(),
                other.len()
            )),
            Some(_) => {}
        }
    }
    for hour in a.replica.keys() {
        if !a.primary.contains_key(hour) {
            f.add(format!("{hour:?} only on the replica side"));
        }
    }
    for (i, (side, read)) in [("primary", a.primary.len()), ("replica", a.replica.len())]
        .into_iter()
        .enumerate()
    {
        if a.files_on_disk[i] != read {
            f.add(format!(
                "{side}: {} Parquet files on disk, {read} of them for hours any reading was stamped in",
                a.files_on_disk[i]
            ));
        }
    }
    f.done()
}

/// Archive rows (primary side) by `(device, seq)`.
fn archived(o: &Observed) -> BTreeMap<(String, u64), Vec<&Reading>> {
    let mut m: BTreeMap<(String, u64), Vec<&Reading>> = BTreeMap::new();
    for r in o.archive.primary.values().flatten() {
        m.entry((r.device.as_str().to_owned(), r.seq))
            .or_default()
            .push(r);
    }
    m
}

/// Every accepted reading is archived, exactly as accepted, and nothing the
/// node did not accept is.
pub fn archive_exactly_once(e: &Expected, o: &Observed) -> Vec<Violation> {
    let mut f = Findings::new("archive_exactly_once");
    let got = archived(o);
    for (key, want) in &e.accepted {
        match got.get(key).and_then(|rows| rows.first()) {
            None => f.add(format!("{}/{} accepted but not archived", key.0, key.1)),
            Some(r) if *r != want => {
                f.add(format!(
                    "{}/{} archived as {r:?}, accepted as {want:?}",
                    key.0, key.1
                ));
            }
            Some(_) => {}
        }
    }
    for key in got.keys() {
        if !e.accepted.contains_key(key) {
            f.add(format!("{}/{} archived but never accepted", key.0, key.1));
        }
    }
    f.done()
}

/// No reading is archived twice.
pub fn archive_no_duplicates(o: &Observed) -> Vec<Violation> {
    let mut f = Findings::new("archive_no_duplicates");
    for ((device, seq), rows) in archived(o) {
        if rows.len() > 1 {
            f.add(format!("{device}/{seq} archived {} times", rows.len()));
        }
    }
    f.done()
}

/// Per device, the archive read hour by hour has strictly increasing seqs.
pub fn archive_seq_order(o: &Observed) -> Vec<Violation> {
    let mut f = Findings::new("archive_seq_order");
    let mut hours: Vec<_> = o.archive.primary.iter().collect();
    hours.sort_by_key(|(h, _)| (h.hour_ms, h.kind));
    let mut last: BTreeMap<&str, u64> = BTreeMap::new();
    for (hour, rows) in hours {
        for r in rows {
            if let Some(prev) = last.insert(r.device.as_str(), r.seq)
                && r.seq <= prev
            {
                f.add(format!(
                    "{}: seq {} after seq {prev} (hour {})",
                    r.device, r.seq, hour.hour_ms
                ));
            }
        }
    }
    f.done()
}

/// Per device, readings reached the archiver in strictly increasing seq:
/// in order, and each once.
pub fn sink_seq_order(o: &Observed) -> Vec<Violation> {
    let mut f = Findings::new("sink_seq_order");
    let mut last: BTreeMap<&str, u64> = BTreeMap::new();
    for (i, (device, seq)) in o.staged.iter().enumerate() {
        if let Some(prev) = last.insert(device.as_str(), *seq)
            && *seq <= prev
        {
            f.add(format!(
                "{device}: seq {seq} reached the archiver after seq {prev} (arrival {i})"
            ));
        }
    }
    f.done()
}

/// Each stored minute (point or document metric) counts exactly the
/// accepted readings in it, and no other minute is stored.
pub fn counts(
    check: &'static str,
    e: &Expected,
    stored: &BTreeMap<crate::model::PointKey, u64>,
) -> Vec<Violation> {
    let mut f = Findings::new(check);
    for (key, want) in &e.point_counts {
        let got = stored.get(key).copied().unwrap_or(0);
        if got != *want {
            f.add(format!(
                "{} {} minute {}: count {got}, expected {want}",
                key.0, key.1, key.2
            ));
        }
    }
    for (key, got) in stored {
        if !e.point_counts.contains_key(key) {
            f.add(format!(
                "{} {} minute {}: count {got} stored, no reading accepted in it",
                key.0, key.1, key.2
            ));
        }
    }
    f.done()
}

/// Every deliberately invalid reading, each time it was sent, is a pending
/// dead letter with the reason the rules give; no other letter exists.
pub fn dead_letters(e: &Expected, o: &Observed) -> Vec<Violation> {
    let mut f = Findings::new("dead_letters");
    let mut got: BTreeMap<(String, u64, DeadLetterReason), u32> = BTreeMap::new();
    for l in &o.dead_letters {
        let r = &l.letter.reading;
        if l.replayed_ms.is_some() {
            f.add(format!(
                "{}/{} marked replayed, but nothing was replayed",
                r.device_id, r.seq
            ));
        }
        *got.entry((r.device_id.clone(), r.seq, l.letter.reason))
            .or_default() += 1;
    }
    for (key, want) in &e.dead_letters {
        let n = got.get(key).copied().unwrap_or(0);
        if n != *want {
            f.add(format!(
                "{}/{} {}: {n} dead letters, expected {want}",
                key.0, key.1, key.2
            ));
        }
    }
    for (key, n) in &got {
        if !e.dead_letters.contains_key(key) {
            f.add(format!(
                "{}/{} {}: {n} unexpected dead letters",
                key.0, key.1, key.2
            ));
        }
    }
    f.done()
}

/// Each injected crash restarted a device actor exactly once: no crash was
/// missed, none repeated into poison.
pub fn restarts(w: &Workload, o: &Observed) -> Vec<Violation> {
    let mut f = Findings::new("restarts");
    let want = w.crash_points.len() as u64;
    if o.actor_restarts != want {
        f.add(format!(
            "{} actor restarts, {want} crashes injected",
            o.actor_restarts
        ));
    }
    f.done()
}

/// Backpressure is never silent: the node counts every refusal it answers.
pub fn overload_counted(o: &Observed) -> Vec<Violation> {
    let mut f = Findings::new("overload_counted");
    if o.overload_refusals_seen != o.overload_refusals_counted {
        f.add(format!(
            "clients were refused {} times, the node counted {}",
            o.overload_refusals_seen, o.overload_refusals_counted
        ));
    }
    f.done()
}

#[cfg(test)]
mod tests {
    use vatio_actors::AckCounts;
    use vatio_stores::{DeadLetter, DeadLetterId, HourKey, NewDeadLetter, RawReading, hour_of};

    use super::*;
    use crate::model::expect;
    use crate::run::SimOptions;
    use crate::workload::{Bounds, generate};

    /// A workload, its expectation and an observation that matches it.
    fn perfect() -> (Workload, Expected, Observed) {
        let opts = SimOptions {
            devices: 9,
            batches: 40,
            crash_share: 0.01,
            ..SimOptions::default()
        };
        let w = generate(21, &opts, &Bounds::default());
        let e = expect(&w);
        let mut o = Observed {
            acks: e.acks.iter().copied().map(Some).collect(),
            points: e.point_counts.clone(),
            docs: e.point_counts.clone(),
            actor_restarts: w.crash_points.len() as u64,
            ..Observed::default()
        };
        for r in e.accepted.values() {
            let hour = HourKey {
                kind: r.kind,
                hour_ms: hour_of(r.ts_ms),
            };
            o.archive.primary.entry(hour).or_default().push(r.clone());
            o.staged.push((r.device.clone(), r.seq));
        }
        o.archive.replica = o.archive.primary.clone();
        let files = o.archive.primary.len();
        o.archive.files_on_disk = [files, files];
        let mut id = 0;
        for ((device, seq, reason), n) in &e.dead_letters {
            for _ in 0..*n {
                id += 1;
                o.dead_letters.push(letter(id, device, *seq, *reason));
            }
        }
        (w, e, o)
    }

    fn letter(id: u64, device: &str, seq: u64, reason: DeadLetterReason) -> DeadLetter {
        DeadLetter {
            id: DeadLetterId(id),
            letter: NewDeadLetter {
                reading: RawReading {
                    device_id: device.to_owned(),
                    seq,
                    ts_ms: 1,
                    metric: "power".into(),
                    value: 1.0,
                    unit: "kW".into(),
                    kind: 3,
                },
                reason,
                detail: String::new(),
                source: "test".into(),
                received_ms: 1,
                key: None,
            },
            replayed_ms: None,
            replay_attempts: 0,
        }
    }

    fn checks_failing(w: &Workload, e: &Expected, o: &Observed) -> Vec<&'static str> {
        let mut names: Vec<&'static str> = all(w, e, o).into_iter().map(|v| v.check).collect();
        names.dedup();
        names
    }

    #[test]
    fn a_faithful_run_passes_every_check() {
        let (w, e, o) = perfect();
        assert!(!e.dead_letters.is_empty() && !w.crash_points.is_empty());
        assert_eq!(all(&w, &e, &o), Vec::<Violation>::new());
    }

    #[test]
    fn a_lost_reading_is_caught() {
        let (w, e, mut o) = perfect();
        for side in [&mut o.archive.primary, &mut o.archive.replica] {
            if let Some(rows) = side.values_mut().next() {
                rows.pop();
            }
        }
        assert_eq!(checks_failing(&w, &e, &o), ["archive_exactly_once"]);
    }

    #[test]
    fn a_reading_archived_twice_is_caught() {
        let (w, e, mut o) = perfect();
        for side in [&mut o.archive.primary, &mut o.archive.replica] {
            if let Some(rows) = side.values_mut().next() {
                rows.push(rows[0].clone());
            }
        }
        assert_eq!(
            checks_failing(&w, &e, &o),
            ["archive_no_duplicates", "archive_seq_order"]
        );
    }

    #[test]
    fn sides_that_differ_are_caught() {
        let (w, e, mut o) = perfect();
        if let Some(rows) = o.archive.replica.values_mut().next() {
            rows[0].value += 1.0;
        }
        assert_eq!(checks_failing(&w, &e, &o), ["archive_sides"]);
        let (w, e, mut o) = perfect();
        o.archive.files_on_disk[1] += 1;
        assert_eq!(checks_failing(&w, &e, &o), ["archive_sides"]);
    }

    #[test]
    fn a_reading_that_reached_the_sink_out_of_order_is_caught() {
        let (w, e, mut o) = perfect();
        let first = o.staged[0].0.clone();
        let second = o
            .staged
            .iter()
            .position(|(d, _)| *d == first)
            .and_then(|i| {
                o.staged[i + 1..]
                    .iter()
                    .position(|(d, _)| *d == first)
                    .map(|j| i + 1 + j)
            })
            .expect("a device with two readings");
        o.staged.swap(0, second);
        assert_eq!(checks_failing(&w, &e, &o), ["sink_seq_order"]);
    }

    #[test]
    fn a_wrong_minute_count_is_caught_in_either_sink() {
        let (w, e, mut o) = perfect();
        if let Some(c) = o.points.values_mut().next() {
            *c += 1;
        }
        assert_eq!(checks_failing(&w, &e, &o), ["timeseries_counts"]);
        let (w, e, mut o) = perfect();
        o.docs
            .insert(("meter-9999".into(), vatio_stores::Metric::Power, 0), 1);
        assert_eq!(checks_failing(&w, &e, &o), ["document_counts"]);
    }

    #[test]
    fn a_missing_or_unexpected_dead_letter_is_caught() {
        let (w, e, mut o) = perfect();
        o.dead_letters.pop();
        assert_eq!(checks_failing(&w, &e, &o), ["dead_letters"]);
        let (w, e, mut o) = perfect();
        o.dead_letters
            .push(letter(999_999, "meter-0002", 1, DeadLetterReason::Late));
        assert_eq!(checks_failing(&w, &e, &o), ["dead_letters"]);
    }

    #[test]
    fn a_wrong_or_missing_ack_is_caught() {
        let (w, e, mut o) = perfect();
        if let Some(Some(a)) = o.acks.get_mut(3) {
            *a = AckCounts {
                accepted: a.accepted + 1,
                ..*a
            };
        }
        assert_eq!(checks_failing(&w, &e, &o), ["acks", "no_loss"]);
        let (w, e, mut o) = perfect();
        o.acks[0] = None;
        assert_eq!(checks_failing(&w, &e, &o), ["acks", "no_loss"]);
    }

    #[test]
    fn an_uncounted_overload_refusal_is_caught() {
        let (w, e, mut o) = perfect();
        o.overload_refusals_seen = 3;
        o.overload_refusals_counted = 2;
        assert_eq!(checks_failing(&w, &e, &o), ["overload_counted"]);
    }

    #[test]
    fn a_missed_crash_is_caught() {
        let (w, e, mut o) = perfect();
        o.actor_restarts -= 1;
        assert_eq!(checks_failing(&w, &e, &o), ["restarts"]);
    }
}
