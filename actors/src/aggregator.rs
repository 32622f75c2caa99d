//! The aggregator: per device and metric, min/max/mean/count/last per
//! minute, written to the time-series store. It reads released readings
//! from the write-ahead log, flushes when `flush_max_points` windows changed
//! or `flush_max_delay` passed since the first unflushed change, whichever
//! comes first, and commits its log position after each flush.
//!
//! A flush writes whole windows (replacing the stored point), so a repeated
//! flush is idempotent. Each point carries the log position of the last
//! record folded into it: after a restart the aggregator reads some records
//! again, and skips them for every window that already counts them.

use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use vatio_config::AggregatorConfig;
use vatio_stores::{MINUTE_MS, MinutePoint, Reading, TimeSeriesStore, minute_of};

use crate::clock::SharedClock;
use crate::feed::{Feed, LogConsumer};
use crate::logic::windows::{PointKey, Windows, new_point};
use crate::pipeline::SubscriberMsg;
use crate::rejects::{Rejects, point_letter};
use crate::sink_retry::SinkGuard;
use crate::stats::NodeStats;

#[derive(Clone)]
pub struct AggregatorArgs {
    pub store: Arc<dyn TimeSeriesStore>,
    pub guard: SinkGuard,
    pub rejects: Rejects,
    pub consumer: LogConsumer,
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
    _feed: Feed,
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
        // Until `post_start` learns the newest stored minute, every window
        // is loaded before an update.
        let horizon = i64::MAX;
        let lateness = i64::try_from(args.cfg.window_lateness.as_millis()).unwrap_or(0);
        let tick = (args.cfg.flush_max_delay / 4).max(Duration::from_millis(10));
        myself.send_interval(tick, || SubscriberMsg::Tick);
        let feed = args.consumer.resume(myself)?;
        Ok(AggregatorState {
            windows: Windows::new(lateness, horizon),
            dirty_since_ms: None,
            _feed: feed,
            args,
        })
    }

    async fn post_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // Asked here, not in `pre_start`: a store that is down holds up this
        // actor's messages (the log keeps the data), not the node's start.
        // Windows up to the newest stored minute may already be in the store
        // (written before a restart) and are loaded before an update; later
        // ones are new.
        let store = st.args.store.clone();
        let newest = st.args.guard.call(|| store.max_minute()).await?;
        st.windows
            .learn_load_horizon(newest.map_or(i64::MIN, |m| m.saturating_add(MINUTE_MS)));
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SubscriberMsg::Steps { steps, permit } => {
                for logged in &steps {
                    let mut folding = Vec::new();
                    for r in logged.step.released() {
                        st.absorb(r, logged.end, &mut folding).await?;
                    }
                }
                drop(permit);
                st.args.consumer.folded(&steps);
                if st.windows.dirty_len() >= st.args.cfg.flush_max_points as usize {
                    st.flush().await?;
                }
            }
            SubscriberMsg::Drain => {}
            SubscriberMsg::Tick => {
                let now = st.args.clock.now_ms();
                let delay = i64::try_from(st.args.cfg.flush_max_delay.as_millis()).unwrap_or(0);
                if st
                    .dirty_since_ms
                    .is_some_and(|t| now.saturating_sub(t) >= delay)
                {
                    st.flush().await?;
                } else if st.dirty_since_ms.is_none() {
                    // Nothing buffered: everything folded is in the store.
                    st.args.consumer.commit_folded().await?;
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
    /// Folds one reading logged in the record ending at `end`, unless its
    /// window already counted that record before. `folding` lists the
    /// windows this record has already changed (their `log_pos` is `end`
    /// now, and the record's other readings still belong in them).
    async fn absorb(
        &mut self,
        r: &Reading,
        end: u64,
        folding: &mut Vec<PointKey>,
    ) -> Result<(), ActorProcessingErr> {
        let key = PointKey {
            device: r.device.clone(),
            metric: r.metric,
            minute_ms: minute_of(r.ts_ms),
        };
        let this_record = folding.contains(&key);
        if let Some(point) = self.windows.get_mut(&key) {
            if point.log_pos >= end && !this_record {
                return Ok(());
            }
            point.stats.add(r);
            point.log_pos = end;
        } else {
            let stored = if self.windows.needs_load(&key) {
                let store = self.args.store.clone();
                self.args
                    .guard
                    .call(|| store.point(&key.device, key.metric, key.minute_ms))
                    .await?
            } else {
                None
            };
            let point = match stored {
                Some(p) if p.log_pos >= end => {
                    // Already stored with this reading: keep it open, clean.
                    self.windows.insert(key, p);
                    return Ok(());
                }
                Some(mut p) => {
                    p.stats.add(r);
                    p.log_pos = end;
                    p
                }
                None => MinutePoint {
                    log_pos: end,
                    ..new_point(r)
                },
            };
            self.windows.insert(key.clone(), point);
        }
        if !this_record {
            folding.push(key.clone());
        }
        self.windows.touch(&key);
        self.dirty_since_ms
            .get_or_insert_with(|| self.args.clock.now_ms());
        Ok(())
    }

    /// Writes every changed window, then commits the log position: every
    /// record folded so far is in the store.
    async fn flush(&mut self) -> Result<(), ActorProcessingErr> {
        self.dirty_since_ms = None;
        let points: Vec<MinutePoint> = self
            .windows
            .take_dirty()
            .into_iter()
            .map(|(_, p)| p)
            .collect();
        let written = self
            .args
            .rejects
            .write_or_split(
                &self.args.guard,
                self.args.store.as_ref(),
                &points,
                |store, batch| store.write_points(batch),
                |p, error| vec![point_letter(p, error)],
            )
            .await?;
        NodeStats::add(&self.args.stats.points_written, written);
        self.args.consumer.commit_folded().await?;
        Ok(())
    }
}
