//! One device's sequencing state: fixes its kind, drops duplicates by `seq`,
//! holds out-of-order readings in a bounded reorder buffer until the gap
//! before them fills or is given up, and keeps an energy counter from going
//! backwards. This is what makes "per device, readings reach the sinks in
//! `seq` order" hold; the device actor only wraps it in a mailbox.
//!
//! Lifecycle of one reading: [`offer`] validates and sequences it into the
//! buffer; [`release`] moves what may leave, in `seq` order; [`flush`] forces
//! everything out. Call `release` after each `offer` (or each batch of
//! offers) and again at [`next_deadline`].
//!
//! Every change to a [`DeviceState`] is an [`Op`], applied through
//! [`DeviceState::apply`] and handed to a [`Recorder`]. The device actor
//! writes a step's ops to the write-ahead log, so the state of every device
//! is a fold of the log: a restarted node rebuilds it by applying the same
//! ops again, and cannot end up with a state the log does not explain.

use std::collections::{BTreeMap, VecDeque};
use std::mem::size_of;

use serde::{Deserialize, Serialize};

use vatio_stores::model::{DeadLetterReason, DeviceId, DeviceKind, Metric, RawReading, Reading};

use super::epoch::Epoch;
use super::validate::{Refusal, Rules, kind_from_wire, validate};

/// How many given-up gaps a device remembers. Beyond this the oldest is
/// forgotten and a straggler from it counts as a duplicate instead of late;
/// by then its timestamp is usually stale anyway.
pub const SKIPPED_RANGES_MAX: usize = 32;

/// A reading accepted but not yet released, with when it arrived.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Pending {
    pub reading: Reading,
    pub arrived_ms: i64,
}

/// One change to a device's state. A step of the device actor is a list of
/// these; applying them in order to the state before the step gives the
/// state after it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Op {
    /// The first accepted reading starts the sequence at `seq`; every seq
    /// below it is given up. Written with `seq: 1` (seqs start at 1), so
    /// the seqs below a device's first reading are a gap like any other;
    /// logs may hold higher starts from earlier versions.
    Start { seq: u64 },
    /// An accepted reading waits in the reorder buffer.
    Hold(Pending),
    /// The gap `[from, to)` is given up; the sequence continues at `to`.
    GiveUp { from: u64, to: u64 },
    /// A reading leaves the buffer, in seq order, for the sinks.
    Emit(Reading),
    /// A dead letter replayed and accepted: goes to the sinks but does not
    /// touch sequencing (its seq was never accepted).
    Replayed(Reading),
    /// The device's state as another node held it, taken over when this
    /// node became the device's owner (see [`DeviceState::progress`]).
    /// Applies only if it is further on (a replica may fold it late).
    Adopt(Box<DeviceState>),
    /// The device's state as the cluster holds it, replacing this node's:
    /// this node took steps no replica confirmed, and another node went on
    /// without them.
    Reset(Box<DeviceState>),
}

impl Op {
    /// The reading this op sends to the sinks, if any.
    pub fn released(&self) -> Option<&Reading> {
        match self {
            Self::Emit(r) | Self::Replayed(r) => Some(r),
            _ => None,
        }
    }
}

/// Where a step's ops go as they happen.
pub trait Recorder {
    fn record(&mut self, op: Op);
}

/// The whole journal of a step, as the device actor logs it.
impl Recorder for Vec<Op> {
    fn record(&mut self, op: Op) {
        self.push(op);
    }
}

/// Only what leaves for the sinks.
impl Recorder for Vec<Reading> {
    fn record(&mut self, op: Op) {
        if let Op::Emit(r) | Op::Replayed(r) = op {
            self.push(r);
        }
    }
}

/// Drops every op: for callers that only need the state (tests, checks).
impl Recorder for () {
    fn record(&mut self, _op: Op) {}
}

/// Sequencing state of one device. Small and cloneable so the device actor
/// can snapshot it when it passivates.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DeviceState {
    /// Fixed by the first accepted reading.
    kind: Option<DeviceKind>,
    /// The seq the next release waits for; 0 until a reading is accepted.
    /// Every seq below it was released or is in `skipped`.
    next_seq: u64,
    /// The last released reading.
    last: Option<Reading>,
    /// `(seq, kWh)` of the last released energy reading.
    last_energy: Option<(u64, f64)>,
    /// Half-open `[start, end)` seq ranges that were given up, oldest first.
    skipped: VecDeque<(u64, u64)>,
    /// The reorder buffer, by seq.
    pending: BTreeMap<u64, Pending>,
    /// Per node that took steps for the device as its owner, the log end
    /// (in that node's log) of the last of its steps this state includes;
    /// most recent owners last, at most [`OWNERS_MAX`]. A replica tells
    /// from it whether it already holds a step an owner sends again.
    owners: Vec<(String, u64)>,
    /// The latest ownership epoch this copy knows (see [`Epoch`]).
    epoch: Epoch,
    /// The epoch of the latest owner step this copy took in: the line it
    /// follows. A fence raises `epoch` but not this: a claim that was
    /// answered may still have been abandoned, and only its claimer's
    /// steps (its adoption first) show that its line exists.
    line: Epoch,
}

/// Owners a device state remembers (see `DeviceState::owners`).
pub const OWNERS_MAX: usize = 8;

/// A device state as format version 1 encoded it, before owners were kept.
#[derive(Deserialize)]
pub struct DeviceStateV1 {
    kind: Option<DeviceKind>,
    next_seq: u64,
    last: Option<Reading>,
    last_energy: Option<(u64, f64)>,
    skipped: VecDeque<(u64, u64)>,
    pending: BTreeMap<u64, Pending>,
}

impl From<DeviceStateV1> for DeviceState {
    fn from(v1: DeviceStateV1) -> Self {
        DeviceStateV2 {
            kind: v1.kind,
            next_seq: v1.next_seq,
            last: v1.last,
            last_energy: v1.last_energy,
            skipped: v1.skipped,
            pending: v1.pending,
            owners: Vec::new(),
        }
        .into()
    }
}

/// A device state as format version 3 encoded it, before lines.
#[derive(Deserialize)]
pub struct DeviceStateV3 {
    kind: Option<DeviceKind>,
    next_seq: u64,
    last: Option<Reading>,
    last_energy: Option<(u64, f64)>,
    skipped: VecDeque<(u64, u64)>,
    pending: BTreeMap<u64, Pending>,
    owners: Vec<(String, u64)>,
    epoch: Epoch,
}

impl From<DeviceStateV3> for DeviceState {
    /// The line is unknown: [`Epoch::ZERO`], so such a copy ranks by its
    /// progress among copies from before lines.
    fn from(v3: DeviceStateV3) -> Self {
        Self {
            kind: v3.kind,
            next_seq: v3.next_seq,
            last: v3.last,
            last_energy: v3.last_energy,
            skipped: v3.skipped,
            pending: v3.pending,
            owners: v3.owners,
            epoch: v3.epoch,
            line: Epoch::ZERO,
        }
    }
}

/// A device state as format version 2 encoded it, before epochs.
#[derive(Deserialize)]
pub struct DeviceStateV2 {
    kind: Option<DeviceKind>,
    next_seq: u64,
    last: Option<Reading>,
    last_energy: Option<(u64, f64)>,
    skipped: VecDeque<(u64, u64)>,
    pending: BTreeMap<u64, Pending>,
    owners: Vec<(String, u64)>,
}

impl From<DeviceStateV2> for DeviceState {
    fn from(v2: DeviceStateV2) -> Self {
        Self {
            kind: v2.kind,
            next_seq: v2.next_seq,
            last: v2.last,
            last_energy: v2.last_energy,
            skipped: v2.skipped,
            pending: v2.pending,
            owners: v2.owners,
            epoch: Epoch::ZERO,
            line: Epoch::ZERO,
        }
    }
}

impl DeviceState {
    pub fn new() -> Self {
        Self::default()
    }

    /// True when nothing waits in the reorder buffer, so the actor may
    /// passivate without losing a reading.
    pub fn is_idle(&self) -> bool {
        self.pending.is_empty()
    }

    /// The last released reading.
    pub fn last(&self) -> Option<&Reading> {
        self.last.as_ref()
    }

    /// The device's kind, once a reading has been accepted.
    pub fn kind(&self) -> Option<DeviceKind> {
        self.kind
    }

    /// How many readings wait in the reorder buffer.
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// The seq the next release waits for (0 before the first acceptance).
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Rough heap plus inline size, for memory accounting across many devices.
    /// Device ids are shared `Arc`s, so only their pointers are counted.
    pub fn approx_bytes(&self) -> usize {
        // A B-tree entry costs its key and value plus roughly a third again
        // in node slack and edges.
        let pending_entry = size_of::<u64>() + size_of::<Pending>();
        size_of::<Self>()
            + self.pending.len() * (pending_entry + pending_entry / 3)
            + self.skipped.capacity() * size_of::<(u64, u64)>()
    }

    fn is_skipped(&self, seq: u64) -> bool {
        self.skipped
            .iter()
            .any(|&(start, end)| (start..end).contains(&seq))
    }

    fn skip(&mut self, start: u64, end: u64) {
        if start >= end {
            return;
        }
        if self.skipped.len() >= SKIPPED_RANGES_MAX {
            self.skipped.pop_front();
        }
        self.skipped.push_back((start, end));
    }

    /// Whether the line has passed `seq`: released or given up.
    pub fn has_passed(&self, seq: u64) -> bool {
        self.is_released_or_skipped(seq)
    }

    /// Whether `seq` already left the buffer. `next_seq` saturates at
    /// `u64::MAX`, so the last released seq is checked too.
    fn is_released_or_skipped(&self, seq: u64) -> bool {
        seq < self.next_seq || self.last.as_ref().is_some_and(|l| l.seq >= seq)
    }

    /// How far the device's sequencing has got: the seq the next release
    /// waits for, then how many readings are held. Every op that changes the
    /// state raises it, so of two copies of one device's state (an owner's
    /// and a replica's) the one with the higher progress has seen more.
    pub fn progress(&self) -> (u64, usize) {
        (self.next_seq, self.pending.len())
    }

    /// How a claim ranks this copy against others of the device: the
    /// latest line first, then progress. A copy of an earlier line went on
    /// with an owner that a later claim has taken the device from; however
    /// far it got, the later line is the device's.
    pub fn rank(&self) -> (&Epoch, (u64, usize)) {
        (&self.line, self.progress())
    }

    /// The epoch of the latest owner step this copy took in.
    pub fn line(&self) -> &Epoch {
        &self.line
    }

    /// Records that this state took in the step `node` logged at `term`,
    /// ending at `end` in `node`'s log (after applying its ops): the step
    /// is noted, and its epoch raises the copy's epoch and line. Part of
    /// the fold: the owner calls it after logging a step, replicas and
    /// recovery after folding one.
    pub fn took_step(&mut self, node: &str, end: u64, term: u64) {
        let epoch = Epoch::of(term, node);
        self.note_step(node, end);
        self.raise_epoch(&epoch);
        if epoch > self.line {
            self.line = epoch;
        }
    }

    /// Records that this state includes `node`'s step that ends at `end`
    /// in `node`'s log.
    pub fn note_step(&mut self, node: &str, end: u64) {
        let end = end.max(self.held_from(node));
        self.set_note(node, end);
    }

    /// Makes `node` the latest owner noted, its steps held up to `end`.
    fn set_note(&mut self, node: &str, end: u64) {
        match self.owners.iter().position(|(n, _)| n == node) {
            Some(i) => {
                let (n, _) = self.owners.remove(i);
                self.owners.push((n, end));
            }
            None => {
                if self.owners.len() >= OWNERS_MAX {
                    self.owners.remove(0);
                }
                self.owners.push((node.to_owned(), end));
            }
        }
    }

    /// Takes in `other`'s owner notes: the later end per node, and nodes
    /// only `other` knows as older owners than this copy's (this copy's
    /// order, and so its latest owner, stands).
    fn unite_owner_notes(&mut self, other: &DeviceState) {
        for (node, end) in other.owners.iter().rev() {
            if let Some((_, e)) = self.owners.iter_mut().find(|(n, _)| n == node) {
                *e = (*e).max(*end);
            } else if self.owners.len() < OWNERS_MAX {
                self.owners.insert(0, (node.clone(), *end));
            }
        }
    }

    /// Marks the claimer of `epoch` as the device's latest owner (it
    /// claimed the device from this node, or this node claimed it): a step
    /// of an earlier epoch that this state does not hold is then known to
    /// be off the line.
    ///
    /// `claimer_head` is where the claimer's log ended when it claimed. Its
    /// steps this state holds beyond it were lost from its log (cut at its
    /// start-up), and its new steps end past it, possibly at ends the lost
    /// ones had: those must not pass for steps already held.
    pub fn fence(&mut self, epoch: &Epoch, claimer_head: Option<u64>) {
        if let Some(node) = epoch.claimer() {
            let held = self.held_from(node);
            self.set_note(node, claimer_head.map_or(held, |head| held.min(head)));
        }
        self.raise_epoch(epoch);
    }

    /// The latest ownership epoch this copy knows.
    pub fn epoch(&self) -> &Epoch {
        &self.epoch
    }

    /// Learns of `epoch` (a step or claim of it reached this copy).
    pub fn raise_epoch(&mut self, epoch: &Epoch) {
        if *epoch > self.epoch {
            self.epoch = epoch.clone();
        }
    }

    /// The node whose step this state took last (None: no step noted).
    pub fn last_owner(&self) -> Option<&str> {
        self.owners.last().map(|(n, _)| n.as_str())
    }

    /// The log end of the last step of `node`'s this state includes (0: none).
    pub fn held_from(&self, node: &str) -> u64 {
        self.owners
            .iter()
            .find(|(n, _)| n == node)
            .map_or(0, |(_, e)| *e)
    }

    /// Takes in the readings `other` holds in its reorder buffer that this
    /// state has neither released nor given up. When a device changes
    /// hands, two copies of its state can each hold readings the other
    /// lacks (a replica folded a step another copy never saw); the copy
    /// adopted keeps them all, so no acknowledged reading waiting for a
    /// gap is dropped. A reading this state already passed stays out
    /// (delivered by this line, or late).
    pub fn merge_held(&mut self, other: &DeviceState) {
        if other.pending.is_empty() {
            return;
        }
        // An empty copy starts at 1 like a device's first reading does.
        self.apply(&Op::Start { seq: 1 });
        for (seq, p) in &other.pending {
            if !self.pending.contains_key(seq) {
                self.apply(&Op::Hold(p.clone()));
            }
        }
    }

    /// Applies one op. The only way sequencing state changes, live or when
    /// the state is rebuilt from the log.
    ///
    /// An op the state is already past changes nothing, so a replica that
    /// took a newer copy of the state can still fold older steps on top.
    /// The device actor only produces ops ahead of the state, so for it
    /// every op applies.
    ///
    /// Every held reading stays ahead of the line (see
    /// [`DeviceState::drop_passed`]), whatever the ops; returns how many
    /// held readings this op's line passed (0 for a copy missing no step).
    pub fn apply(&mut self, op: &Op) -> usize {
        self.apply_op(op);
        self.drop_passed()
    }

    fn apply_op(&mut self, op: &Op) {
        match op {
            Op::Start { seq } => {
                if self.next_seq != 0 {
                    return;
                }
                self.next_seq = *seq;
                self.skip(1, *seq);
            }
            Op::Hold(p) => {
                if self.is_released_or_skipped(p.reading.seq) {
                    return;
                }
                self.kind = Some(p.reading.kind);
                self.pending.insert(p.reading.seq, p.clone());
            }
            Op::GiveUp { from, to } => {
                if *to <= self.next_seq {
                    return;
                }
                self.skip(*from, *to);
                self.next_seq = *to;
            }
            Op::Adopt(state) => {
                // Either way the owner notes are united and the later epoch
                // stands: each copy may know steps of some owner, or a
                // claim, the other does not, and a node judges a resent
                // step by them.
                if state.rank() > self.rank() {
                    let before = std::mem::replace(self, (**state).clone());
                    self.unite_owner_notes(&before);
                    self.raise_epoch(&before.epoch);
                } else {
                    self.unite_owner_notes(state);
                    self.raise_epoch(&state.epoch);
                }
            }
            Op::Reset(state) => {
                let before = std::mem::replace(self, (**state).clone());
                self.raise_epoch(&before.epoch);
            }
            Op::Emit(r) => {
                if self.is_released_or_skipped(r.seq) {
                    return;
                }
                self.kind = Some(r.kind);
                self.pending.remove(&r.seq);
                self.next_seq = r.seq.saturating_add(1);
                if r.metric == Metric::Energy {
                    self.last_energy = Some((r.seq, r.value));
                }
                self.last = Some(r.clone());
            }
            Op::Replayed(_) => {}
        }
    }

    /// Forgets held readings the line has passed. Ops from one line never
    /// leave any: the device actor emits in seq order and gives up only
    /// gaps before its first held reading. A copy that misses some of a
    /// line's steps can: a replica whose owner shipped the steps between
    /// to another node folds a step that emits or gives up past readings
    /// it still holds. The line has decided those seqs (released by it, or
    /// given up), so a copy holding them would only wait for a seq that
    /// has gone, and never release again.
    fn drop_passed(&mut self) -> usize {
        let floor = match &self.last {
            Some(last) => self.next_seq.max(last.seq.saturating_add(1)),
            None => self.next_seq,
        };
        if self
            .pending
            .first_key_value()
            .is_none_or(|(&k, _)| k >= floor)
        {
            return 0;
        }
        let before = self.pending.len();
        self.pending = self.pending.split_off(&floor);
        before - self.pending.len()
    }

    /// Applies `op` and hands it to `rec`.
    fn change(&mut self, op: Op, rec: &mut impl Recorder) {
        self.apply(&op);
        rec.record(op);
    }
}

/// Reorder buffer bounds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Most readings held waiting for a gap to fill; one more gives the gap up.
    pub reorder_window: u32,
    /// Longest a reading is held waiting for a gap before the gap is given up.
    pub reorder_max_hold_ms: i64,
}

/// What became of an offered reading.
#[derive(Clone, Debug, PartialEq)]
pub enum Offer {
    /// Sequenced into the reorder buffer; `release` will emit it.
    Accepted,
    /// Same `(device, seq)` as a reading already accepted: dropped and
    /// counted, not a dead letter, because resends are normal.
    Duplicate,
    Refused(Refusal),
}

/// Validates and sequences one reading. Accepted readings go to the reorder
/// buffer; nothing is released here.
///
/// Order of checks: wire kind, validation (against the kind the reading
/// declares), kind mismatch, dedupe, energy counter. Validation comes before
/// dedupe so a refused reading never touches sequencing state and the
/// outcome of a malformed reading does not depend on what came before it.
/// The price: a resend of an accepted reading that has since become stale is
/// refused as stale rather than counted as a duplicate.
///
/// `_limits` is not needed to sequence (only `release` applies them); it is
/// taken so call sites stay stable if admission ever depends on them.
pub fn offer(
    state: &mut DeviceState,
    device: &DeviceId,
    raw: &RawReading,
    rules: &Rules,
    _limits: &Limits,
    now_ms: i64,
    rec: &mut impl Recorder,
) -> Offer {
    match sequence(state, device, raw, rules, now_ms, rec) {
        Ok(()) => Offer::Accepted,
        Err(None) => Offer::Duplicate,
        Err(Some(refusal)) => Offer::Refused(refusal),
    }
}

/// `offer` with `?`: `Err(None)` is a duplicate, `Err(Some(_))` a refusal.
fn sequence(
    state: &mut DeviceState,
    device: &DeviceId,
    raw: &RawReading,
    rules: &Rules,
    now_ms: i64,
    rec: &mut impl Recorder,
) -> Result<(), Option<Refusal>> {
    let kind = kind_from_wire(raw.kind)?;
    let reading = validate(device, kind, raw, rules, now_ms)?;

    if let Some(first) = state.kind
        && first != kind
    {
        return Err(Some(Refusal::new(
            DeadLetterReason::KindMismatch,
            format!("kind {kind} but device {device} was first seen as {first}"),
        )));
    }

    let seq = reading.seq;
    if state.pending.contains_key(&seq) {
        return Err(None);
    }
    if state.next_seq != 0 && state.is_released_or_skipped(seq) {
        if state.is_skipped(seq) {
            return Err(Some(Refusal::new(
                DeadLetterReason::Late,
                format!(
                    "seq {seq} arrived after its gap was given up (watermark: next seq {})",
                    state.next_seq
                ),
            )));
        }
        return Err(None);
    }

    if reading.metric == Metric::Energy {
        check_counter(state, &reading)?;
    }

    if state.next_seq == 0 {
        // Seqs start at 1. A first reading with a higher seq waits for the
        // ones below it like any reading behind a gap (a retried first batch
        // overtaken by the second is not late), within the reorder limits.
        state.change(Op::Start { seq: 1 }, rec);
    }
    state.change(
        Op::Hold(Pending {
            reading,
            arrived_ms: now_ms,
        }),
        rec,
    );
    Ok(())
}

/// An energy counter never decreases in seq order: the new value must lie
/// between its nearest energy neighbours, released or pending.
fn check_counter(state: &DeviceState, r: &Reading) -> Result<(), Option<Refusal>> {
    let energy = |(&seq, p): (&u64, &Pending)| {
        (p.reading.metric == Metric::Energy).then_some((seq, p.reading.value))
    };
    let before = state
        .pending
        .range(..r.seq)
        .rev()
        .find_map(energy)
        .or(state.last_energy.filter(|&(seq, _)| seq < r.seq));
    let after = state.pending.range(r.seq..).find_map(energy);

    if let Some((seq, value)) = before
        && r.value < value
    {
        return Err(Some(Refusal::new(
            DeadLetterReason::CounterDecreased,
            format!(
                "energy {} kWh at seq {} below {value} kWh at earlier seq {seq}",
                r.value, r.seq
            ),
        )));
    }
    if let Some((seq, value)) = after
        && r.value > value
    {
        return Err(Some(Refusal::new(
            DeadLetterReason::CounterDecreased,
            format!(
                "energy {} kWh at seq {} above {value} kWh at later seq {seq}",
                r.value, r.seq
            ),
        )));
    }
    Ok(())
}

/// Moves every reading that may leave now into `out`, in seq order.
///
/// The head of the buffer leaves when it is the next seq. A gap before it is
/// given up (recorded as skipped) when the buffer holds more than
/// `reorder_window` readings or when some reading behind the gap has been
/// held for `reorder_max_hold_ms` or longer.
pub fn release(state: &mut DeviceState, limits: &Limits, now_ms: i64, out: &mut impl Recorder) {
    // Every gap below the newest expired reading must go, so that reading can
    // leave; gaps after it may still fill.
    let expired_up_to = state
        .pending
        .iter()
        .filter(|(_, p)| now_ms >= p.arrived_ms.saturating_add(limits.reorder_max_hold_ms))
        .map(|(&seq, _)| seq)
        .next_back();
    let window = usize::try_from(limits.reorder_window).unwrap_or(usize::MAX);
    // A state decoded from a log or checkpoint written before `apply`
    // kept its held readings ahead of the line.
    let _ = state.drop_passed();

    while let Some(&seq) = state.pending.keys().next() {
        if seq > state.next_seq {
            let give_up = state.pending.len() > window || expired_up_to.is_some_and(|e| seq <= e);
            if !give_up {
                break;
            }
            let from = state.next_seq;
            state.change(Op::GiveUp { from, to: seq }, out);
        }
        if let Some(p) = state.pending.get(&seq) {
            let r = p.reading.clone();
            state.change(Op::Emit(r), out);
        }
        // Every turn takes the head off the buffer, so this loop ends; a
        // head still there (a seq at the very end of the range) would spin.
        if state.pending.contains_key(&seq) {
            break;
        }
    }
}

/// Releases everything pending regardless of gaps (shutdown, admin flush);
/// the gaps become skipped, so stragglers from them are late.
pub fn flush(state: &mut DeviceState, out: &mut impl Recorder) {
    let _ = state.drop_passed();
    while let Some((&seq, p)) = state.pending.first_key_value() {
        let r = p.reading.clone();
        let from = state.next_seq;
        if from < seq {
            state.change(Op::GiveUp { from, to: seq }, out);
        }
        state.change(Op::Emit(r), out);
        if state.pending.contains_key(&seq) {
            break;
        }
    }
}

/// When `release` must next be called for held readings to time out; `None`
/// when nothing is pending.
pub fn next_deadline(state: &DeviceState, limits: &Limits) -> Option<i64> {
    state
        .pending
        .values()
        .map(|p| p.arrived_ms)
        .min()
        .map(|arrived| arrived.saturating_add(limits.reorder_max_hold_ms))
}

#[cfg(test)]
mod tests {
    use super::*;
    use DeadLetterReason as R;

    const NOW: i64 = 1_700_000_000_000;
    const RULES: Rules = Rules {
        max_future_skew_ms: 5_000,
        max_past_age_ms: 3_600_000,
    };
    const LIMITS: Limits = Limits {
        reorder_window: 4,
        reorder_max_hold_ms: 2_000,
    };

    fn dev() -> DeviceId {
        DeviceId::new("meter-1")
    }

    fn raw(seq: u64, metric: &str, value: f64, unit: &str) -> RawReading {
        RawReading {
            device_id: "meter-1".into(),
            seq,
            ts_ms: NOW - 10_000 + seq as i64,
            metric: metric.into(),
            value,
            unit: unit.into(),
            kind: 3,
        }
    }

    fn power(seq: u64) -> RawReading {
        raw(seq, "power", (seq % 1000) as f64, "kW")
    }

    fn energy(seq: u64, kwh: f64) -> RawReading {
        raw(seq, "energy", kwh, "kWh")
    }

    /// Offers `r` under the test rules and limits, recording into `rec`.
    fn offer_into(s: &mut DeviceState, r: &RawReading, now: i64, rec: &mut impl Recorder) -> Offer {
        offer(s, &dev(), r, &RULES, &LIMITS, now, rec)
    }

    fn offer_at(s: &mut DeviceState, r: &RawReading, now: i64) -> Offer {
        offer_into(s, r, now, &mut ())
    }

    fn put(s: &mut DeviceState, r: &RawReading) -> Offer {
        offer_at(s, r, NOW)
    }

    fn release_at(s: &mut DeviceState, now: i64) -> Vec<u64> {
        let mut out: Vec<Reading> = Vec::new();
        release(s, &LIMITS, now, &mut out);
        out.iter().map(|r| r.seq).collect()
    }

    fn refusal(o: Offer) -> Refusal {
        match o {
            Offer::Refused(r) => r,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn first_reading_is_released_at_once_and_fixes_kind() {
        let mut s = DeviceState::new();
        assert!(s.is_idle());
        assert_eq!(s.kind(), None);
        assert_eq!(put(&mut s, &power(1)), Offer::Accepted);
        assert!(!s.is_idle());
        assert_eq!(s.kind(), Some(DeviceKind::ElectricityMeter));
        assert_eq!(release_at(&mut s, NOW), [1]);
        assert!(s.is_idle());
        assert_eq!(
            s.last().map(|r| (r.seq, r.metric, r.value)),
            Some((1, Metric::Power, 1.0))
        );
        assert_eq!(s.next_seq(), 2);
    }

    #[test]
    fn seqs_below_a_first_reading_are_a_gap_that_may_still_fill() {
        // A client's first batch retried after its second: not late.
        let mut s = DeviceState::new();
        assert_eq!(put(&mut s, &power(3)), Offer::Accepted);
        assert_eq!(put(&mut s, &power(4)), Offer::Accepted);
        assert_eq!(release_at(&mut s, NOW), Vec::<u64>::new());
        assert_eq!(put(&mut s, &power(1)), Offer::Accepted);
        assert_eq!(put(&mut s, &power(2)), Offer::Accepted);
        assert_eq!(release_at(&mut s, NOW), [1, 2, 3, 4]);
    }

    #[test]
    fn a_first_reading_above_1_leaves_when_its_gap_is_given_up() {
        let mut s = DeviceState::new();
        assert_eq!(put(&mut s, &power(7)), Offer::Accepted);
        assert_eq!(release_at(&mut s, NOW + 1), Vec::<u64>::new());
        assert_eq!(release_at(&mut s, NOW + LIMITS.reorder_max_hold_ms), [7]);
        assert_eq!(s.next_seq(), 8);
        assert_eq!(refusal(put(&mut s, &power(5))).reason, R::Late);
    }

    #[test]
    fn nothing_is_released_by_offer() {
        let mut s = DeviceState::new();
        assert_eq!(put(&mut s, &power(1)), Offer::Accepted);
        assert_eq!(s.last(), None);
        assert_eq!(s.pending_len(), 1);
    }

    #[test]
    fn released_reading_is_validated_and_converted() {
        let mut s = DeviceState::new();
        assert_eq!(put(&mut s, &raw(1, "power", 2500.0, "W")), Offer::Accepted);
        let mut out: Vec<Reading> = Vec::new();
        release(&mut s, &LIMITS, NOW, &mut out);
        assert_eq!(
            out,
            [Reading {
                device: dev(),
                kind: DeviceKind::ElectricityMeter,
                seq: 1,
                ts_ms: NOW - 10_000 + 1,
                metric: Metric::Power,
                value: 2.5,
            }]
        );
    }

    #[test]
    fn kind_mismatch_is_refused() {
        let mut s = DeviceState::new();
        assert_eq!(put(&mut s, &power(1)), Offer::Accepted);
        let arm = RawReading {
            kind: 2,
            ..power(2)
        };
        assert_eq!(
            refusal(put(&mut s, &arm)),
            Refusal::new(
                R::KindMismatch,
                "kind robot_arm but device meter-1 was first seen as electricity_meter"
            )
        );
        assert_eq!(s.pending_len(), 1);
        assert_eq!(s.kind(), Some(DeviceKind::ElectricityMeter));
    }

    #[test]
    fn missing_wire_kind_is_refused_before_anything_else() {
        let mut s = DeviceState::new();
        let r = RawReading {
            kind: 0,
            seq: 0,
            ..power(1)
        };
        assert_eq!(
            refusal(put(&mut s, &r)),
            Refusal::new(R::MissingField, "kind 0 unspecified")
        );
        assert_eq!(s, DeviceState::new());
    }

    #[test]
    fn refused_readings_leave_state_untouched() {
        let mut s = DeviceState::new();
        let bad = raw(5, "power", -1.0, "kW");
        assert_eq!(refusal(put(&mut s, &bad)).reason, R::OutOfRange);
        assert_eq!(s, DeviceState::new());
        // So the same seq, corrected, is accepted rather than a duplicate.
        assert_eq!(put(&mut s, &power(5)), Offer::Accepted);
    }

    #[test]
    fn validation_runs_before_dedupe() {
        let mut s = DeviceState::new();
        assert_eq!(put(&mut s, &power(1)), Offer::Accepted);
        let resend = RawReading {
            value: f64::NAN,
            ..power(1)
        };
        assert_eq!(refusal(put(&mut s, &resend)).reason, R::NotFinite);
    }

    #[test]
    fn duplicates_of_pending_and_released_readings() {
        let mut s = DeviceState::new();
        assert_eq!(put(&mut s, &power(1)), Offer::Accepted);
        assert_eq!(put(&mut s, &power(1)), Offer::Duplicate);
        assert_eq!(release_at(&mut s, NOW), [1]);
        assert_eq!(put(&mut s, &power(1)), Offer::Duplicate);
        // Pending but not released (waiting for 2).
        assert_eq!(put(&mut s, &power(3)), Offer::Accepted);
        assert_eq!(put(&mut s, &power(3)), Offer::Duplicate);
        // A duplicate may even carry another value: seq identifies the reading.
        assert_eq!(
            put(&mut s, &raw(3, "voltage", 230.0, "V")),
            Offer::Duplicate
        );
        assert_eq!(s.pending_len(), 1);
        assert_eq!(release_at(&mut s, NOW), Vec::<u64>::new());
    }

    #[test]
    fn a_fence_makes_the_claimer_latest_owner_held_no_further_than_its_log() {
        let mut s = DeviceState::new();
        s.note_step("o1", 200);
        s.note_step("n1", 50);
        // o1 claims back with its log ending at 120 (its steps past 120 were
        // lost from it): held up to 120 only, and the latest owner.
        s.fence(&Epoch::of(2, "o1"), Some(120));
        assert_eq!((s.held_from("o1"), s.last_owner()), (120, Some("o1")));
        assert_eq!(s.epoch(), &Epoch::of(2, "o1"));
        // A claimer's head past what is held changes nothing held.
        s.fence(&Epoch::of(3, "n1"), Some(900));
        assert_eq!((s.held_from("n1"), s.last_owner()), (50, Some("n1")));
        // Its new steps are noted as they come, past the head.
        s.note_step("o1", 150);
        assert_eq!(s.held_from("o1"), 150);
    }

    #[test]
    fn a_copy_follows_the_line_of_the_latest_step_it_took_not_of_a_fence() {
        let mut s = DeviceState::new();
        s.took_step("b2", 100, 1);
        assert_eq!(s.line(), &Epoch::of(1, "b2"));
        // A claim answered here: the epoch rises, the line does not (the
        // claim may be abandoned).
        s.fence(&Epoch::of(2, "a1"), None);
        assert_eq!(
            (s.epoch(), s.line()),
            (&Epoch::of(2, "a1"), &Epoch::of(1, "b2"))
        );
        // The claimer's adoption step arrives: its line is the copy's.
        s.took_step("a1", 40, 2);
        assert_eq!(s.line(), &Epoch::of(2, "a1"));
        // An old owner's step folded late does not take the line back.
        s.took_step("b2", 200, 1);
        assert_eq!((s.line(), s.held_from("b2")), (&Epoch::of(2, "a1"), 200));
    }

    #[test]
    fn a_copy_of_a_later_line_outranks_a_more_advanced_one_of_an_earlier_line() {
        // The old owner b2 went on to seq 5 after a1 claimed the device
        // from the state at seq 2, and a1's line took seq 3.
        let mut stale = DeviceState::new();
        for seq in 1..=5 {
            assert_eq!(put(&mut stale, &power(seq)), Offer::Accepted);
        }
        assert_eq!(release_at(&mut stale, NOW), [1, 2, 3, 4, 5]);
        stale.took_step("b2", 500, 1);
        let mut line = DeviceState::new();
        for seq in 1..=3 {
            assert_eq!(put(&mut line, &power(seq)), Offer::Accepted);
        }
        assert_eq!(release_at(&mut line, NOW), [1, 2, 3]);
        line.took_step("a1", 60, 2);
        assert!(stale.progress() > line.progress());
        assert!(line.rank() > stale.rank());

        // Folded as an adoption, the later line replaces the stale copy.
        stale.apply(&Op::Adopt(Box::new(line.clone())));
        assert_eq!(stale.next_seq(), 4);
        assert_eq!(stale.line(), &Epoch::of(2, "a1"));
        assert_eq!(stale.held_from("b2"), 500, "the notes are united");
        // On one line, the most advanced copy still wins.
        let mut ahead = line.clone();
        assert_eq!(put(&mut ahead, &power(4)), Offer::Accepted);
        assert!(ahead.rank() > line.rank());
    }

    #[test]
    fn adopting_a_copy_unites_the_owner_notes() {
        let mut replica = DeviceState::new();
        assert_eq!(put(&mut replica, &power(1)), Offer::Accepted);
        replica.note_step("o1", 100);
        let mut line = replica.clone();
        assert_eq!(put(&mut line, &power(2)), Offer::Accepted);
        line.note_step("o2", 40);
        // A replica that took o1's step 300 but never saw o2's line: adopting
        // the line keeps the note of o1's step, and o2 stays the latest owner.
        replica.note_step("o1", 300);
        replica.apply(&Op::Adopt(Box::new(line.clone())));
        assert_eq!(replica.held_from("o1"), 300);
        assert_eq!(replica.held_from("o2"), 40);
        assert_eq!(replica.last_owner(), Some("o2"));
        // A copy further on than the one adopted still learns its notes.
        let mut ahead = line.clone();
        assert_eq!(put(&mut ahead, &power(3)), Offer::Accepted);
        let mut older = DeviceState::new();
        older.note_step("o0", 7);
        ahead.apply(&Op::Adopt(Box::new(older)));
        assert_eq!(ahead.held_from("o0"), 7);
        assert_eq!(ahead.last_owner(), Some("o2"));
    }

    #[test]
    fn merging_held_readings_adds_only_those_not_yet_passed() {
        let mut a = DeviceState::new();
        let mut b = DeviceState::new();
        for seq in [1, 2] {
            assert_eq!(put(&mut a, &power(seq)), Offer::Accepted);
            assert_eq!(put(&mut b, &power(seq)), Offer::Accepted);
        }
        assert_eq!(release_at(&mut a, NOW), [1, 2]);
        assert_eq!(release_at(&mut b, NOW), [1, 2]);
        // a holds 4 and 6 (3 and 5 missing); b released up to 5 meanwhile.
        assert_eq!(put(&mut a, &power(4)), Offer::Accepted);
        assert_eq!(put(&mut a, &power(6)), Offer::Accepted);
        for seq in [3, 4, 5] {
            assert_eq!(put(&mut b, &power(seq)), Offer::Accepted);
        }
        assert_eq!(release_at(&mut b, NOW), [3, 4, 5]);
        b.merge_held(&a);
        assert_eq!(b.pending_len(), 1);
        assert_eq!(release_at(&mut b, NOW), [6]);
    }

    #[test]
    fn first_reading_at_seq_one_skips_nothing() {
        let mut s = DeviceState::new();
        assert_eq!(put(&mut s, &power(1)), Offer::Accepted);
        assert!(s.skipped.is_empty());
    }

    #[test]
    fn reorders_within_the_window() {
        let mut s = DeviceState::new();
        assert_eq!(put(&mut s, &power(1)), Offer::Accepted);
        assert_eq!(release_at(&mut s, NOW), [1]);
        for seq in [4, 3, 5] {
            assert_eq!(put(&mut s, &power(seq)), Offer::Accepted);
            assert_eq!(release_at(&mut s, NOW), Vec::<u64>::new());
        }
        assert_eq!(put(&mut s, &power(2)), Offer::Accepted);
        assert_eq!(release_at(&mut s, NOW + 100), [2, 3, 4, 5]);
        assert!(s.is_idle());
        assert!(s.skipped.is_empty());
        assert_eq!(s.last().map(|r| r.seq), Some(5));
    }

    #[test]
    fn gap_is_given_up_when_the_window_overflows() {
        let mut s = DeviceState::new();
        assert_eq!(put(&mut s, &power(1)), Offer::Accepted);
        assert_eq!(release_at(&mut s, NOW), [1]);
        // Window 4: seqs 3..=6 are held for the missing 2.
        for seq in 3..=6 {
            assert_eq!(put(&mut s, &power(seq)), Offer::Accepted);
            assert_eq!(release_at(&mut s, NOW), Vec::<u64>::new());
        }
        assert_eq!(s.pending_len(), 4);
        // A fifth held reading exceeds it: 2 is given up.
        assert_eq!(put(&mut s, &power(8)), Offer::Accepted);
        assert_eq!(release_at(&mut s, NOW), [3, 4, 5, 6]);
        // The gap at 7 stays open: the buffer is back within the window.
        assert_eq!(s.pending_len(), 1);
        assert_eq!(s.next_seq(), 7);
        assert_eq!(s.skipped, [(2, 3)]);
        assert_eq!(refusal(put(&mut s, &power(2))).reason, R::Late);
        assert_eq!(put(&mut s, &power(7)), Offer::Accepted);
        assert_eq!(release_at(&mut s, NOW), [7, 8]);
    }

    #[test]
    fn window_bound_gives_up_only_as_many_gaps_as_needed() {
        let mut s = DeviceState::new();
        assert_eq!(put(&mut s, &power(1)), Offer::Accepted);
        assert_eq!(release_at(&mut s, NOW), [1]);
        // Gaps at 2, 4, 6: held 3, 5, 7, 9, 11.
        for seq in [3, 5, 7, 9, 11] {
            assert_eq!(put(&mut s, &power(seq)), Offer::Accepted);
        }
        assert_eq!(release_at(&mut s, NOW), [3]);
        assert_eq!(s.pending_len(), 4);
        assert_eq!(s.skipped, [(2, 3)]);
    }

    #[test]
    fn zero_window_never_holds() {
        let limits = Limits {
            reorder_window: 0,
            ..LIMITS
        };
        let mut s = DeviceState::new();
        let mut out: Vec<Reading> = Vec::new();
        for seq in [1, 3, 2] {
            let _ = offer(&mut s, &dev(), &power(seq), &RULES, &limits, NOW, &mut ());
            release(&mut s, &limits, NOW, &mut out);
        }
        assert_eq!(out.iter().map(|r| r.seq).collect::<Vec<_>>(), [1, 3]);
        assert_eq!(refusal(put(&mut s, &power(2))).reason, R::Late);
    }

    #[test]
    fn gap_is_given_up_after_the_hold_time() {
        let mut s = DeviceState::new();
        assert_eq!(offer_at(&mut s, &power(1), NOW), Offer::Accepted);
        assert_eq!(release_at(&mut s, NOW), [1]);
        assert_eq!(next_deadline(&s, &LIMITS), None);

        assert_eq!(offer_at(&mut s, &power(3), NOW + 100), Offer::Accepted);
        assert_eq!(offer_at(&mut s, &power(4), NOW + 500), Offer::Accepted);
        assert_eq!(release_at(&mut s, NOW + 500), Vec::<u64>::new());
        // Deadline: the oldest arrival plus the hold time.
        assert_eq!(next_deadline(&s, &LIMITS), Some(NOW + 2_100));
        assert_eq!(release_at(&mut s, NOW + 2_099), Vec::<u64>::new());
        assert_eq!(release_at(&mut s, NOW + 2_100), [3, 4]);
        assert_eq!(s.skipped, [(2, 3)]);
        assert_eq!(next_deadline(&s, &LIMITS), None);
    }

    #[test]
    fn hold_timeout_gives_up_gaps_only_up_to_the_expired_reading() {
        let mut s = DeviceState::new();
        assert_eq!(offer_at(&mut s, &power(1), NOW), Offer::Accepted);
        assert_eq!(release_at(&mut s, NOW), [1]);
        assert_eq!(offer_at(&mut s, &power(3), NOW), Offer::Accepted);
        assert_eq!(offer_at(&mut s, &power(6), NOW + 1_000), Offer::Accepted);
        assert_eq!(offer_at(&mut s, &power(4), NOW + 1_500), Offer::Accepted);
        // 3 expires at NOW + 2000; 4 and 6 have time left, so 5 may still come.
        assert_eq!(release_at(&mut s, NOW + 2_000), [3, 4]);
        assert_eq!(s.next_seq(), 5);
        assert_eq!(next_deadline(&s, &LIMITS), Some(NOW + 3_000));
        assert_eq!(offer_at(&mut s, &power(5), NOW + 2_500), Offer::Accepted);
        assert_eq!(release_at(&mut s, NOW + 2_500), [5, 6]);
        assert_eq!(s.skipped, [(2, 3)]);
    }

    #[test]
    fn hold_timeout_applies_to_a_reading_behind_a_later_gap() {
        let mut s = DeviceState::new();
        assert_eq!(offer_at(&mut s, &power(1), NOW), Offer::Accepted);
        assert_eq!(release_at(&mut s, NOW), [1]);
        // 5 arrived first; 3 arrived later. When 5 expires, both gaps go.
        assert_eq!(offer_at(&mut s, &power(5), NOW), Offer::Accepted);
        assert_eq!(offer_at(&mut s, &power(3), NOW + 1_900), Offer::Accepted);
        assert_eq!(release_at(&mut s, NOW + 2_000), [3, 5]);
        assert_eq!(s.skipped, [(2, 3), (4, 5)]);
    }

    #[test]
    fn flush_releases_everything_and_records_gaps() {
        let mut s = DeviceState::new();
        assert_eq!(put(&mut s, &power(1)), Offer::Accepted);
        assert_eq!(release_at(&mut s, NOW), [1]);
        for seq in [6, 3, 4] {
            assert_eq!(put(&mut s, &power(seq)), Offer::Accepted);
        }
        let mut out: Vec<Reading> = Vec::new();
        flush(&mut s, &mut out);
        assert_eq!(out.iter().map(|r| r.seq).collect::<Vec<_>>(), [3, 4, 6]);
        assert!(s.is_idle());
        assert_eq!(s.skipped, [(2, 3), (5, 6)]);
        assert_eq!(s.next_seq(), 7);
        assert_eq!(s.last().map(|r| r.seq), Some(6));
        assert_eq!(refusal(put(&mut s, &power(5))).reason, R::Late);
        assert_eq!(put(&mut s, &power(4)), Offer::Duplicate);
        assert_eq!(put(&mut s, &power(7)), Offer::Accepted);
    }

    #[test]
    fn flush_of_an_empty_buffer_does_nothing() {
        let mut s = DeviceState::new();
        let mut out: Vec<Reading> = Vec::new();
        flush(&mut s, &mut out);
        assert!(out.is_empty());
        assert_eq!(s, DeviceState::new());
    }

    #[test]
    fn skipped_ranges_are_bounded_oldest_dropped() {
        let mut s = DeviceState::new();
        let mut out: Vec<Reading> = Vec::new();
        // First at 2 skips [1, 2); then every even seq is missing.
        for i in 1..=40u64 {
            assert_eq!(put(&mut s, &power(2 * i)), Offer::Accepted);
            flush(&mut s, &mut out);
        }
        assert_eq!(s.skipped.len(), SKIPPED_RANGES_MAX);
        assert_eq!(s.skipped.front(), Some(&(79 - 2 * 31, 80 - 2 * 31)));
        assert_eq!(s.skipped.back(), Some(&(79, 80)));
        // A straggler from a remembered gap is late; from a forgotten one it
        // can no longer be told from a resend.
        assert_eq!(refusal(put(&mut s, &power(79))).reason, R::Late);
        assert_eq!(put(&mut s, &power(1)), Offer::Duplicate);
    }

    #[test]
    fn pending_stays_bounded_when_released_after_each_offer() {
        let mut s = DeviceState::new();
        assert_eq!(put(&mut s, &power(1)), Offer::Accepted);
        assert_eq!(release_at(&mut s, NOW), [1]);
        for seq in (3..200).step_by(2) {
            assert_eq!(put(&mut s, &power(seq)), Offer::Accepted);
            assert!(s.pending_len() <= LIMITS.reorder_window as usize + 1);
            let _ = release_at(&mut s, NOW);
            assert!(s.pending_len() <= LIMITS.reorder_window as usize);
        }
    }

    #[test]
    fn counter_below_released_predecessor_is_refused() {
        let mut s = DeviceState::new();
        assert_eq!(put(&mut s, &energy(1, 100.0)), Offer::Accepted);
        assert_eq!(put(&mut s, &power(2)), Offer::Accepted);
        assert_eq!(release_at(&mut s, NOW), [1, 2]);
        assert_eq!(
            refusal(put(&mut s, &energy(3, 99.5))),
            Refusal::new(
                R::CounterDecreased,
                "energy 99.5 kWh at seq 3 below 100 kWh at earlier seq 1"
            )
        );
        // Equal is fine: the plant may draw nothing for a while.
        assert_eq!(put(&mut s, &energy(3, 100.0)), Offer::Accepted);
    }

    #[test]
    fn counter_is_compared_in_canonical_units() {
        let mut s = DeviceState::new();
        assert_eq!(put(&mut s, &raw(1, "energy", 2.0, "MWh")), Offer::Accepted);
        assert_eq!(
            refusal(put(&mut s, &raw(2, "energy", 1999.0, "kWh"))).reason,
            R::CounterDecreased
        );
        assert_eq!(
            put(&mut s, &raw(2, "energy", 2_000_500.0, "Wh")),
            Offer::Accepted
        );
    }

    #[test]
    fn counter_below_pending_predecessor_is_refused() {
        let mut s = DeviceState::new();
        assert_eq!(put(&mut s, &energy(1, 10.0)), Offer::Accepted);
        assert_eq!(release_at(&mut s, NOW), [1]);
        // 3 is pending (2 missing); 4 must not be below it, nor below 1.
        assert_eq!(put(&mut s, &energy(3, 50.0)), Offer::Accepted);
        assert_eq!(put(&mut s, &power(5)), Offer::Accepted);
        assert_eq!(
            refusal(put(&mut s, &energy(6, 40.0))),
            Refusal::new(
                R::CounterDecreased,
                "energy 40 kWh at seq 6 below 50 kWh at earlier seq 3"
            )
        );
    }

    #[test]
    fn counter_above_pending_successor_is_refused() {
        let mut s = DeviceState::new();
        assert_eq!(put(&mut s, &energy(1, 10.0)), Offer::Accepted);
        assert_eq!(release_at(&mut s, NOW), [1]);
        assert_eq!(put(&mut s, &energy(4, 30.0)), Offer::Accepted);
        // 3 is power, skipped over when finding the energy successor.
        assert_eq!(put(&mut s, &power(3)), Offer::Accepted);
        assert_eq!(
            refusal(put(&mut s, &energy(2, 31.0))),
            Refusal::new(
                R::CounterDecreased,
                "energy 31 kWh at seq 2 above 30 kWh at later seq 4"
            )
        );
        assert_eq!(
            refusal(put(&mut s, &energy(2, 9.0))),
            Refusal::new(
                R::CounterDecreased,
                "energy 9 kWh at seq 2 below 10 kWh at earlier seq 1"
            )
        );
        assert_eq!(put(&mut s, &energy(2, 20.0)), Offer::Accepted);
        assert_eq!(release_at(&mut s, NOW), [2, 3, 4]);
        assert_eq!(s.last_energy, Some((4, 30.0)));
    }

    #[test]
    fn counter_refusal_does_not_take_the_seq() {
        let mut s = DeviceState::new();
        assert_eq!(put(&mut s, &energy(1, 10.0)), Offer::Accepted);
        assert_eq!(
            refusal(put(&mut s, &energy(2, 5.0))).reason,
            R::CounterDecreased
        );
        assert_eq!(put(&mut s, &energy(2, 15.0)), Offer::Accepted);
    }

    #[test]
    fn duplicate_energy_with_other_value_is_a_duplicate_not_a_decrease() {
        let mut s = DeviceState::new();
        assert_eq!(put(&mut s, &energy(1, 10.0)), Offer::Accepted);
        assert_eq!(put(&mut s, &energy(2, 20.0)), Offer::Accepted);
        assert_eq!(put(&mut s, &energy(2, 1.0)), Offer::Duplicate);
        assert_eq!(release_at(&mut s, NOW), [1, 2]);
        assert_eq!(put(&mut s, &energy(2, 1.0)), Offer::Duplicate);
    }

    #[test]
    fn energy_after_given_up_gap_compares_with_last_released() {
        let mut s = DeviceState::new();
        let mut out: Vec<Reading> = Vec::new();
        assert_eq!(put(&mut s, &energy(1, 10.0)), Offer::Accepted);
        assert_eq!(put(&mut s, &energy(3, 12.0)), Offer::Accepted);
        flush(&mut s, &mut out);
        assert_eq!(s.last_energy, Some((3, 12.0)));
        assert_eq!(
            refusal(put(&mut s, &energy(4, 11.0))).reason,
            R::CounterDecreased
        );
    }

    #[test]
    fn seq_at_u64_max_is_not_released_twice() {
        let mut s = DeviceState::new();
        assert_eq!(put(&mut s, &power(u64::MAX)), Offer::Accepted);
        assert_eq!(
            release_at(&mut s, NOW + LIMITS.reorder_max_hold_ms),
            [u64::MAX]
        );
        assert_eq!(put(&mut s, &power(u64::MAX)), Offer::Duplicate);
        assert_eq!(refusal(put(&mut s, &power(5))).reason, R::Late);
    }

    #[test]
    fn approx_bytes_grows_with_pending() {
        let mut s = DeviceState::new();
        let empty = s.approx_bytes();
        assert!(empty >= size_of::<DeviceState>());
        assert_eq!(put(&mut s, &power(1)), Offer::Accepted);
        assert_eq!(put(&mut s, &power(3)), Offer::Accepted);
        assert!(s.approx_bytes() >= empty + 2 * size_of::<Reading>());
    }

    /// A seeded xorshift: each call gives a number below its argument.
    fn below(seed: u64) -> impl FnMut(u64) -> u64 {
        let mut x = seed;
        move |n| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        }
    }

    /// The log's promise: folding a device's recorded ops over an empty
    /// state gives exactly the live state, whatever the arrival order.
    #[test]
    fn folding_the_recorded_ops_rebuilds_the_state() {
        let mut next = below(0x9e37_79b9_7f4a_7c15);
        for _round in 0..50 {
            let mut live = DeviceState::new();
            let mut ops: Vec<Op> = Vec::new();
            let mut now = NOW;
            for _ in 0..200 {
                now += i64::try_from(next(700)).unwrap_or(0);
                match next(10) {
                    0 => flush(&mut live, &mut ops),
                    1..=2 => release(&mut live, &LIMITS, now, &mut ops),
                    _ => {
                        let seq = 1 + next(120);
                        let r = if next(3) == 0 {
                            energy(seq, seq as f64 * 2.0 + next(3) as f64)
                        } else {
                            power(seq)
                        };
                        let _ = offer_into(&mut live, &r, now, &mut ops);
                        release(&mut live, &LIMITS, now, &mut ops);
                    }
                }
            }
            let mut rebuilt = DeviceState::new();
            for op in &ops {
                rebuilt.apply(op);
            }
            assert_eq!(rebuilt, live);
        }
    }

    /// What replication relies on: every live op that changes the state
    /// raises its progress; and a replica that took a newer copy of the
    /// state (a seed) ends at the live state whichever older ops it folds
    /// after it, and whenever it folds the seed among the ops.
    #[test]
    fn progress_rises_with_every_op_and_folding_is_monotone() {
        let mut next = below(0x2545_f491_4f6c_dd1d);
        for _round in 0..50 {
            let mut live = DeviceState::new();
            let mut ops: Vec<Op> = Vec::new();
            let mut states = vec![live.clone()];
            let mut now = NOW;
            for _ in 0..150 {
                now += i64::try_from(next(700)).unwrap_or(0);
                let before = ops.len();
                if next(8) == 0 {
                    flush(&mut live, &mut ops);
                } else {
                    let seq = 1 + next(100);
                    let _ = offer_into(&mut live, &power(seq), now, &mut ops);
                    release(&mut live, &LIMITS, now, &mut ops);
                }
                // Replay this step's ops one at a time to see each rise.
                let mut step = states.last().cloned().unwrap_or_default();
                for op in &ops[before..] {
                    let prev = step.progress();
                    step.apply(op);
                    if !matches!(op, Op::Replayed(_)) {
                        assert!(step.progress() > prev, "{op:?} did not raise progress");
                    }
                }
                assert_eq!(step, live);
                states.push(live.clone());
            }
            // A seed taken at a random point, then every op from an
            // earlier point on: the replica ends where the owner is.
            let seed_at = usize::try_from(next(states.len() as u64)).unwrap_or(0);
            let mut replica = DeviceState::new();
            replica.apply(&Op::Adopt(Box::new(states[seed_at].clone())));
            let from = usize::try_from(next(ops.len() as u64 + 1)).unwrap_or(0);
            for op in &ops[from.min(ops.len())..] {
                replica.apply(op);
            }
            let mut full = DeviceState::new();
            for op in &ops[..from.min(ops.len())] {
                full.apply(op);
            }
            // Only a replica that missed no op between the seed and `from`
            // can match; the shipper guarantees that by seeding with a
            // state at or after the first step it ships.
            if full.progress() <= states[seed_at].progress() {
                assert_eq!(replica, live, "seed at {seed_at}, ops from {from}");
            }
            // An older copy adopted over the live state changes nothing.
            let mut owner = live.clone();
            owner.apply(&Op::Adopt(Box::new(states[seed_at].clone())));
            assert_eq!(owner, live);
        }
    }

    /// A replica that missed some of a line's steps (its owner shipped
    /// them to another node) and then folds a later step: the readings
    /// it still holds below the line are gone from it, and it releases
    /// again. Before, it held them forever and `release` spun on them.
    #[test]
    fn a_copy_that_missed_steps_forgets_held_readings_the_line_passed() {
        let mut owner = DeviceState::new();
        let mut early: Vec<Op> = Vec::new();
        assert_eq!(put(&mut owner, &power(1)), Offer::Accepted);
        release(&mut owner, &LIMITS, NOW, &mut early);
        let _ = offer_into(&mut owner, &power(3), NOW, &mut early);
        let mut replica = DeviceState::new();
        for op in &early {
            replica.apply(op);
        }
        assert_eq!(replica.pending_len(), 1, "the replica holds seq 3");

        // Steps the replica never sees: 2 fills the gap, 3 and 4 leave.
        let mut missed: Vec<Op> = Vec::new();
        for seq in [2, 4] {
            let _ = offer_into(&mut owner, &power(seq), NOW, &mut missed);
        }
        release(&mut owner, &LIMITS, NOW, &mut missed);
        // The step it does see: 5 arrives and leaves.
        let mut seen: Vec<Op> = Vec::new();
        let _ = offer_into(&mut owner, &power(5), NOW, &mut seen);
        release(&mut owner, &LIMITS, NOW, &mut seen);
        let passed: usize = seen.iter().map(|op| replica.apply(op)).sum();

        assert_eq!(passed, 1, "seq 3 was passed by the line");
        assert_eq!(replica.pending_len(), 0);
        assert_eq!(replica.next_seq(), owner.next_seq());
        assert_eq!(replica.last(), owner.last());
        // Taken over, it goes on from the line, not from seq 3.
        assert_eq!(put(&mut replica, &power(6)), Offer::Accepted);
        assert_eq!(release_at(&mut replica, NOW), [6]);
    }

    /// Whatever run of a line's ops a copy misses, folding the rest keeps
    /// every held reading ahead of the line, and `release` and `flush`
    /// finish on it.
    #[test]
    fn copies_missing_any_run_of_ops_keep_held_readings_ahead_of_the_line() {
        let mut next = below(0x5851_f42d_4c95_7f2d);
        for _round in 0..100 {
            let mut live = DeviceState::new();
            let mut ops: Vec<Op> = Vec::new();
            let mut now = NOW;
            for _ in 0..150 {
                now += i64::try_from(next(700)).unwrap_or(0);
                let seq = 1 + next(100);
                let _ = offer_into(&mut live, &power(seq), now, &mut ops);
                release(&mut live, &LIMITS, now, &mut ops);
            }
            let len = ops.len() as u64;
            let start = usize::try_from(next(len)).unwrap_or(0);
            let end = start + usize::try_from(next(len - start as u64 + 1)).unwrap_or(0);
            let mut copy = DeviceState::new();
            for op in ops[..start].iter().chain(&ops[end..]) {
                copy.apply(op);
            }
            let floor = copy.next_seq().max(copy.last().map_or(0, |r| r.seq + 1));
            assert!(
                copy.pending.keys().all(|&k| k >= floor),
                "missing ops {start}..{end}: held {:?} behind {floor}",
                copy.pending.keys().collect::<Vec<_>>()
            );
            release(
                &mut copy,
                &LIMITS,
                now + LIMITS.reorder_max_hold_ms,
                &mut (),
            );
            flush(&mut copy, &mut ());
            assert!(copy.is_idle());
        }
    }

    /// A state decoded from before `apply` kept held readings ahead of the
    /// line: `release` and `flush` drop what the line passed and finish.
    #[test]
    fn release_and_flush_finish_on_a_state_holding_passed_readings() {
        let mut s = DeviceState::new();
        for seq in 1..=3 {
            assert_eq!(put(&mut s, &power(seq)), Offer::Accepted);
        }
        assert_eq!(release_at(&mut s, NOW), [1, 2, 3]);
        let mut stale = s.clone();
        stale.pending.insert(
            2,
            Pending {
                reading: s
                    .last()
                    .cloned()
                    .map(|mut r| {
                        r.seq = 2;
                        r
                    })
                    .unwrap_or_else(|| unreachable!("seq 3 was released")),
                arrived_ms: NOW,
            },
        );
        let mut again = stale.clone();
        assert_eq!(release_at(&mut stale, NOW), Vec::<u64>::new());
        assert!(stale.is_idle());
        let mut out: Vec<Reading> = Vec::new();
        flush(&mut again, &mut out);
        assert!(out.is_empty() && again.is_idle());
    }
}
