//! Open minute windows, shared by the aggregator (one [`MinutePoint`] per
//! device, metric and minute) and the stream-ETL (one [`MinuteDoc`] per
//! device and minute).
//!
//! A window stays open after it is flushed, so a reading that arrives a
//! little late updates it in memory instead of costing a store round trip.
//! Once its minute is more than `lateness_ms` past it is evicted; a reading
//! for it after that makes [`Windows::needs_load`] say so, and the caller
//! reloads the stored window before folding the reading in, so the next
//! write (which replaces the stored one) loses nothing.
//!
//! Keys are kept ordered by minute first: eviction walks the oldest minutes
//! only, and flush batches come out in the same order on every run, which
//! keeps the simulation reproducible.

use std::collections::{BTreeMap, BTreeSet};

use vatio_stores::model::{
    DeviceId, MINUTE_MS, Metric, MinuteDoc, MinutePoint, Reading, Stats, minute_of,
};

/// Identifies one window.
pub trait WindowKey: Ord + Clone {
    /// The key of the window `r` belongs to.
    fn of(r: &Reading) -> Self;
    /// Start of the window's minute.
    fn minute_ms(&self) -> i64;
}

/// A value that summarises the readings of one window.
pub trait Window: Clone {
    /// A window holding just `r`.
    fn open(r: &Reading) -> Self;
    /// Folds `r` into the window.
    fn absorb(&mut self, r: &Reading);
}

/// Key of a time-series point. `minute_ms` is declared first so the derived
/// order is by minute, then device, then metric.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PointKey {
    pub minute_ms: i64,
    pub device: DeviceId,
    pub metric: Metric,
}

impl WindowKey for PointKey {
    fn of(r: &Reading) -> Self {
        Self {
            minute_ms: minute_of(r.ts_ms),
            device: r.device.clone(),
            metric: r.metric,
        }
    }
    fn minute_ms(&self) -> i64 {
        self.minute_ms
    }
}

/// Key of a minute document. `minute_ms` first, as for [`PointKey`].
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DocKey {
    pub minute_ms: i64,
    pub device: DeviceId,
}

impl WindowKey for DocKey {
    fn of(r: &Reading) -> Self {
        Self {
            minute_ms: minute_of(r.ts_ms),
            device: r.device.clone(),
        }
    }
    fn minute_ms(&self) -> i64 {
        self.minute_ms
    }
}

impl PointKey {
    /// The key a stored point is written under.
    pub fn of_point(p: &MinutePoint) -> Self {
        Self {
            minute_ms: p.minute_ms,
            device: p.device.clone(),
            metric: p.metric,
        }
    }
}

impl DocKey {
    /// The key a stored document is written under.
    pub fn of_doc(d: &MinuteDoc) -> Self {
        Self {
            minute_ms: d.minute_ms,
            device: d.device.clone(),
        }
    }
}

/// The point for `r`'s device, metric and minute, holding just `r`.
pub fn new_point(r: &Reading) -> MinutePoint {
    MinutePoint {
        device: r.device.clone(),
        kind: r.kind,
        metric: r.metric,
        minute_ms: minute_of(r.ts_ms),
        stats: Stats::of(r),
        log_pos: 0,
    }
}

/// The document for `r`'s device and minute, holding just `r`.
pub fn new_doc(r: &Reading) -> MinuteDoc {
    MinuteDoc {
        device: r.device.clone(),
        kind: r.kind,
        minute_ms: minute_of(r.ts_ms),
        metrics: BTreeMap::from([(r.metric, Stats::of(r))]),
        log_pos: 0,
    }
}

impl Window for MinutePoint {
    fn open(r: &Reading) -> Self {
        new_point(r)
    }
    fn absorb(&mut self, r: &Reading) {
        self.stats.add(r);
    }
}

impl Window for MinuteDoc {
    fn open(r: &Reading) -> Self {
        new_doc(r)
    }
    fn absorb(&mut self, r: &Reading) {
        self.metrics
            .entry(r.metric)
            .and_modify(|s| s.add(r))
            .or_insert_with(|| Stats::of(r));
    }
}

/// The aggregator's windows.
pub type PointWindows = Windows<PointKey, MinutePoint>;
/// The stream-ETL's windows.
pub type DocWindows = Windows<DocKey, MinuteDoc>;

/// A table of open windows with the set changed since the last flush.
///
/// Use per reading: `key = K::of(r)`; if `needs_load(&key)`, load the stored
/// window and `insert` it when the store has one; then `absorb(key, r)`.
/// Periodically `take_dirty` and write the result, then `evict(now_ms)`.
#[derive(Clone, Debug)]
pub struct Windows<K, V> {
    open: BTreeMap<K, V>,
    dirty: BTreeSet<K>,
    lateness_ms: i64,
    /// Windows of minutes before this may already be in the store.
    load_horizon_ms: i64,
}

impl<K: WindowKey, V: Window> Windows<K, V> {
    /// `lateness_ms`: how long after its minute ends a window stays open.
    /// `load_horizon_ms`: minutes before this may already be stored (by an
    /// earlier run or another node), so their windows are loaded before use.
    pub fn new(lateness_ms: i64, load_horizon_ms: i64) -> Self {
        Self {
            open: BTreeMap::new(),
            dirty: BTreeSet::new(),
            lateness_ms,
            load_horizon_ms,
        }
    }

    /// Sets the load horizon once the store has said how far it reaches
    /// (before that, every window is loaded before use). Only while no
    /// window is open: an open window's horizon must never drop.
    pub fn learn_load_horizon(&mut self, load_horizon_ms: i64) {
        if self.open.is_empty() {
            self.load_horizon_ms = load_horizon_ms;
        }
    }

    /// The open window for `key`.
    pub fn get(&self, key: &K) -> Option<&V> {
        self.open.get(key)
    }

    /// The open window for `key`. Call [`Windows::touch`] after changing it.
    pub fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        self.open.get_mut(key)
    }

    /// True when `key` is not open but the store may already hold it: load it
    /// and [`Windows::insert`] it before absorbing, or the write of a fresh
    /// window would replace the stored one.
    pub fn needs_load(&self, key: &K) -> bool {
        !self.open.contains_key(key) && key.minute_ms() < self.load_horizon_ms
    }

    /// Opens `key` with a value loaded from the store. Clean: it is what the
    /// store already holds. Replaces any open value (and its dirt with it).
    pub fn insert(&mut self, key: K, value: V) {
        self.dirty.remove(&key);
        self.open.insert(key, value);
    }

    /// Folds `r` into `key`'s window, opening it if it is not open, and
    /// marks it dirty. Check [`Windows::needs_load`] first.
    pub fn absorb(&mut self, key: K, r: &Reading) {
        match self.open.get_mut(&key) {
            Some(v) => v.absorb(r),
            None => {
                self.open.insert(key.clone(), V::open(r));
            }
        }
        self.dirty.insert(key);
    }

    /// Marks an open window dirty (after `get_mut`, or to retry a failed
    /// write). Returns false when `key` is not open.
    pub fn touch(&mut self, key: &K) -> bool {
        if !self.open.contains_key(key) {
            return false;
        }
        self.dirty.insert(key.clone());
        true
    }

    /// How many windows changed since the last `take_dirty`: the flush-size
    /// trigger.
    pub fn dirty_len(&self) -> usize {
        self.dirty.len()
    }

    /// How many windows are open: what the table costs in memory.
    pub fn len(&self) -> usize {
        self.open.len()
    }

    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }

    /// Copies of the windows changed since the last call, ordered by minute,
    /// and marks them clean. The windows stay open for late readings; if the
    /// write fails, `touch` them again.
    pub fn take_dirty(&mut self) -> Vec<(K, V)> {
        std::mem::take(&mut self.dirty)
            .into_iter()
            .filter_map(|k| {
                let v = self.open.get(&k)?.clone();
                Some((k, v))
            })
            .collect()
    }

    /// Drops clean windows whose minute ended `lateness_ms` or more before
    /// `now_ms` and returns how many. Dirty windows stay until flushed.
    /// The load horizon moves past every evicted minute, so a reading that
    /// still arrives for one reloads the stored window first.
    pub fn evict(&mut self, now_ms: i64) -> usize {
        let closed = |k: &K| {
            k.minute_ms()
                .saturating_add(MINUTE_MS)
                .saturating_add(self.lateness_ms)
                <= now_ms
        };
        let gone: Vec<K> = self
            .open
            .keys()
            .take_while(|k| closed(k))
            .filter(|k| !self.dirty.contains(k))
            .cloned()
            .collect();
        for k in &gone {
            self.open.remove(k);
            let after = k.minute_ms().saturating_add(MINUTE_MS);
            self.load_horizon_ms = self.load_horizon_ms.max(after);
        }
        gone.len()
    }

    pub fn lateness_ms(&self) -> i64 {
        self.lateness_ms
    }

    pub fn load_horizon_ms(&self) -> i64 {
        self.load_horizon_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vatio_stores::model::DeviceKind;

    const T0: i64 = 1_700_000_040_000; // a minute boundary
    const LATE: i64 = 30_000;

    fn reading(device: &str, metric: Metric, seq: u64, ts_ms: i64, value: f64) -> Reading {
        Reading {
            device: DeviceId::new(device),
            kind: DeviceKind::ClimateSensor,
            seq,
            ts_ms,
            metric,
            value,
        }
    }

    fn temp(seq: u64, ts_ms: i64, value: f64) -> Reading {
        reading("c-1", Metric::Temperature, seq, ts_ms, value)
    }

    fn add<K: WindowKey, V: Window>(w: &mut Windows<K, V>, r: &Reading) {
        let key = K::of(r);
        assert!(
            !w.needs_load(&key),
            "test adds only to minutes not yet stored"
        );
        w.absorb(key, r);
    }

    #[test]
    fn t0_is_a_minute_boundary() {
        assert_eq!(minute_of(T0), T0);
    }

    #[test]
    fn new_point_and_new_doc_hold_one_reading() {
        let r = temp(3, T0 + 1_500, 21.0);
        assert_eq!(
            new_point(&r),
            MinutePoint {
                device: DeviceId::new("c-1"),
                kind: DeviceKind::ClimateSensor,
                metric: Metric::Temperature,
                minute_ms: T0,
                stats: Stats::of(&r),
                log_pos: 0,
            }
        );
        assert_eq!(
            new_doc(&r),
            MinuteDoc {
                device: DeviceId::new("c-1"),
                kind: DeviceKind::ClimateSensor,
                minute_ms: T0,
                metrics: BTreeMap::from([(Metric::Temperature, Stats::of(&r))]),
                log_pos: 0,
            }
        );
    }

    #[test]
    fn keys_of_readings_and_stored_values_agree() {
        let r = temp(3, T0 + 59_999, 21.0);
        assert_eq!(
            PointKey::of(&r),
            PointKey {
                minute_ms: T0,
                device: DeviceId::new("c-1"),
                metric: Metric::Temperature
            }
        );
        assert_eq!(PointKey::of_point(&new_point(&r)), PointKey::of(&r));
        assert_eq!(
            DocKey::of(&r),
            DocKey {
                minute_ms: T0,
                device: DeviceId::new("c-1")
            }
        );
        assert_eq!(DocKey::of_doc(&new_doc(&r)), DocKey::of(&r));
        assert_eq!(
            PointKey::of(&temp(4, T0 + 60_000, 1.0)).minute_ms,
            T0 + MINUTE_MS
        );
    }

    #[test]
    fn points_absorb_by_device_metric_and_minute() {
        let mut w = PointWindows::new(LATE, 0);
        add(&mut w, &temp(1, T0 + 1_000, 20.0));
        add(&mut w, &temp(2, T0 + 2_000, 22.0));
        add(&mut w, &temp(3, T0 + 61_000, 30.0));
        add(
            &mut w,
            &reading("c-1", Metric::Humidity, 4, T0 + 3_000, 40.0),
        );
        add(
            &mut w,
            &reading("c-2", Metric::Temperature, 1, T0 + 3_000, 10.0),
        );
        assert_eq!(w.len(), 4);
        let key = PointKey {
            minute_ms: T0,
            device: DeviceId::new("c-1"),
            metric: Metric::Temperature,
        };
        let stats = w.get(&key).map(|p| p.stats);
        assert_eq!(
            stats,
            Some(Stats {
                count: 2,
                min: 20.0,
                max: 22.0,
                sum: 42.0,
                last: 22.0,
                last_ts_ms: T0 + 2_000,
                last_seq: 2,
            })
        );
    }

    #[test]
    fn docs_absorb_every_metric_of_a_device_minute() {
        let mut w = DocWindows::new(LATE, 0);
        add(&mut w, &temp(1, T0 + 1_000, 20.0));
        add(
            &mut w,
            &reading("c-1", Metric::Humidity, 2, T0 + 2_000, 40.0),
        );
        add(&mut w, &temp(3, T0 + 3_000, 24.0));
        assert_eq!(w.len(), 1);
        let doc = w.get(&DocKey {
            minute_ms: T0,
            device: DeviceId::new("c-1"),
        });
        let metrics = doc.map(|d| d.metrics.clone()).unwrap_or_default();
        assert_eq!(metrics.len(), 2);
        assert_eq!(
            metrics
                .get(&Metric::Temperature)
                .map(|s| (s.count, s.mean(), s.last)),
            Some((2, 22.0, 24.0))
        );
        assert_eq!(
            metrics.get(&Metric::Humidity).map(|s| (s.count, s.sum)),
            Some((1, 40.0))
        );
    }

    #[test]
    fn take_dirty_returns_changed_windows_once_in_minute_order() {
        let mut w = PointWindows::new(LATE, 0);
        add(&mut w, &temp(1, T0 + 61_000, 30.0));
        add(&mut w, &temp(2, T0 + 1_000, 20.0));
        add(
            &mut w,
            &reading("a-0", Metric::Temperature, 1, T0 + 1_000, 5.0),
        );
        assert_eq!(w.dirty_len(), 3);
        let flushed = w.take_dirty();
        let order: Vec<(i64, &str)> = flushed
            .iter()
            .map(|(k, _)| (k.minute_ms, k.device.as_str()))
            .collect();
        assert_eq!(order, [(T0, "a-0"), (T0, "c-1"), (T0 + MINUTE_MS, "c-1")]);
        assert!(flushed.iter().all(|(k, v)| PointKey::of_point(v) == *k));
        assert_eq!(w.dirty_len(), 0);
        assert!(w.take_dirty().is_empty());
        // Windows stay open: a late reading updates and re-dirties one.
        add(&mut w, &temp(3, T0 + 5_000, 26.0));
        assert_eq!(w.len(), 3);
        let again = w.take_dirty();
        assert_eq!(again.len(), 1);
        assert_eq!(
            again.first().map(|(_, p)| (p.minute_ms, p.stats.count)),
            Some((T0, 2))
        );
    }

    #[test]
    fn take_dirty_returns_copies_not_moves() {
        let mut w = PointWindows::new(LATE, 0);
        let r = temp(1, T0, 20.0);
        add(&mut w, &r);
        let flushed = w.take_dirty();
        assert_eq!(flushed, [(PointKey::of(&r), new_point(&r))]);
        assert_eq!(w.get(&PointKey::of(&r)), Some(&new_point(&r)));
    }

    #[test]
    fn touch_marks_open_windows_dirty_only() {
        let mut w = PointWindows::new(LATE, 0);
        let r = temp(1, T0, 20.0);
        add(&mut w, &r);
        let _ = w.take_dirty();
        let key = PointKey::of(&r);
        if let Some(p) = w.get_mut(&key) {
            p.stats.add(&temp(2, T0 + 1, 21.0));
        }
        assert_eq!(w.dirty_len(), 0);
        assert!(w.touch(&key));
        assert_eq!(w.dirty_len(), 1);
        assert!(!w.touch(&PointKey {
            minute_ms: T0 - MINUTE_MS,
            ..key
        }));
        assert_eq!(w.dirty_len(), 1);
    }

    #[test]
    fn evicts_clean_windows_once_their_lateness_has_passed() {
        let mut w = PointWindows::new(LATE, 0);
        add(&mut w, &temp(1, T0 + 1_000, 20.0));
        add(&mut w, &temp(2, T0 + 61_000, 21.0));
        let _ = w.take_dirty();
        // Minute T0 closes at T0 + 60 s + 30 s.
        assert_eq!(w.evict(T0 + MINUTE_MS + LATE - 1), 0);
        assert_eq!(w.evict(T0 + MINUTE_MS + LATE), 1);
        assert_eq!(w.len(), 1);
        assert_eq!(w.load_horizon_ms(), T0 + MINUTE_MS);
        assert_eq!(w.evict(T0 + MINUTE_MS + LATE), 0);
        assert_eq!(w.evict(T0 + 2 * MINUTE_MS + LATE), 1);
        assert!(w.is_empty());
        assert_eq!(w.load_horizon_ms(), T0 + 2 * MINUTE_MS);
    }

    #[test]
    fn dirty_windows_are_not_evicted_before_flush() {
        let mut w = PointWindows::new(LATE, 0);
        add(&mut w, &temp(1, T0, 20.0));
        add(&mut w, &reading("c-2", Metric::Temperature, 1, T0, 20.0));
        let _ = w.take_dirty();
        add(&mut w, &temp(2, T0 + 1, 21.0));
        let far = T0 + 10 * MINUTE_MS;
        // c-2 is clean and goes; c-1 changed since the flush and stays.
        assert_eq!(w.evict(far), 1);
        assert_eq!(w.len(), 1);
        assert_eq!(w.dirty_len(), 1);
        assert_eq!(w.take_dirty().len(), 1);
        assert_eq!(w.evict(far), 1);
        assert!(w.is_empty());
    }

    #[test]
    fn needs_load_below_the_horizon_when_not_open() {
        let mut w = PointWindows::new(LATE, T0 + MINUTE_MS);
        let old = temp(1, T0 + 5_000, 20.0);
        let new = temp(2, T0 + MINUTE_MS, 20.0);
        assert!(w.needs_load(&PointKey::of(&old)));
        assert!(!w.needs_load(&PointKey::of(&new)));

        // The store held count 3; the loaded window absorbs on top of it.
        let mut stored = new_point(&temp(90, T0 + 1_000, 10.0));
        stored.stats.add(&temp(91, T0 + 2_000, 11.0));
        stored.stats.add(&temp(92, T0 + 3_000, 12.0));
        w.insert(PointKey::of(&old), stored);
        assert_eq!(w.dirty_len(), 0, "a loaded window is clean");
        assert!(!w.needs_load(&PointKey::of(&old)));
        w.absorb(PointKey::of(&old), &old);
        let flushed = w.take_dirty();
        assert_eq!(
            flushed
                .first()
                .map(|(_, p)| (p.stats.count, p.stats.min, p.stats.last)),
            Some((4, 10.0, 20.0))
        );
    }

    #[test]
    fn eviction_raises_the_load_horizon_so_stragglers_reload() {
        let mut w = DocWindows::new(LATE, 0);
        let r = temp(1, T0 + 1_000, 20.0);
        add(&mut w, &r);
        let _ = w.take_dirty();
        assert!(!w.needs_load(&DocKey::of(&r)));
        assert_eq!(w.evict(T0 + MINUTE_MS + LATE), 1);
        assert!(w.needs_load(&DocKey::of(&r)));
        assert!(!w.needs_load(&DocKey::of(&temp(2, T0 + MINUTE_MS, 1.0))));
    }

    #[test]
    fn eviction_never_lowers_the_horizon() {
        let mut w = PointWindows::new(LATE, T0 + 10 * MINUTE_MS);
        w.insert(
            PointKey::of(&temp(1, T0, 1.0)),
            new_point(&temp(1, T0, 1.0)),
        );
        assert_eq!(w.evict(T0 + 20 * MINUTE_MS), 1);
        assert_eq!(w.load_horizon_ms(), T0 + 10 * MINUTE_MS);
    }

    #[test]
    fn insert_replaces_an_open_window_and_clears_its_dirt() {
        let mut w = PointWindows::new(LATE, 0);
        let r = temp(1, T0, 20.0);
        add(&mut w, &r);
        let loaded = new_point(&temp(7, T0 + 1, 5.0));
        w.insert(PointKey::of(&r), loaded.clone());
        assert_eq!(w.dirty_len(), 0);
        assert_eq!(w.get(&PointKey::of(&r)), Some(&loaded));
    }

    #[test]
    fn eviction_stops_at_the_first_open_minute() {
        let mut w = PointWindows::new(0, 0);
        for (i, minute) in [0, 1, 2, 3].into_iter().enumerate() {
            add(&mut w, &temp(i as u64 + 1, T0 + minute * MINUTE_MS, 1.0));
        }
        let _ = w.take_dirty();
        assert_eq!(w.evict(T0 + 2 * MINUTE_MS), 2);
        let left: Vec<i64> = w.take_dirty().iter().map(|(k, _)| k.minute_ms).collect();
        assert!(left.is_empty());
        assert_eq!(w.len(), 2);
        assert_eq!(w.load_horizon_ms(), T0 + 2 * MINUTE_MS);
    }
}
