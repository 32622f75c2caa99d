//! The stream-ETL: per device, one document per minute with every metric's
//! statistics, plus threshold events (over-temperature, power spike, arm
//! faults), upserted into the document store with stable ids. A periodic
//! sweep enforces the retention (168 h by default).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use vatio_config::StreamEtlConfig;
use vatio_stores::{DeviceId, DocumentStore, Event, MINUTE_MS, MinuteDoc, Reading, minute_of};

use crate::clock::SharedClock;
use crate::feed::{Feed, LogConsumer};
use crate::logic::events::{self, PowerBaseline, Thresholds};
use crate::logic::windows::{DocKey, Windows, new_doc};
use crate::pipeline::SubscriberMsg;
use crate::rejects::{Rejects, doc_letters};
use crate::sink_retry::SinkGuard;
use crate::stats::NodeStats;

#[derive(Clone)]
pub struct StreamEtlArgs {
    pub store: Arc<dyn DocumentStore>,
    pub guard: SinkGuard,
    pub rejects: Rejects,
    pub consumer: LogConsumer,
    pub cfg: StreamEtlConfig,
    pub clock: SharedClock,
    pub stats: Arc<NodeStats>,
    /// How long a minute stays open after it ends (the aggregator's setting,
    /// so documents and points close together).
    pub window_lateness: Duration,
}

#[derive(Clone, Copy)]
pub struct StreamEtl;

pub struct StreamEtlState {
    args: StreamEtlArgs,
    thresholds: Thresholds,
    windows: Windows<DocKey, MinuteDoc>,
    baselines: BTreeMap<DeviceId, PowerBaseline>,
    events: Vec<Event>,
    dirty_since_ms: Option<i64>,
    next_sweep_ms: i64,
    _feed: Feed,
}

impl Actor for StreamEtl {
    type Msg = SubscriberMsg;
    type State = StreamEtlState;
    type Arguments = StreamEtlArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: StreamEtlArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        // As in the aggregator: the horizon is learnt in `post_start`.
        let horizon = i64::MAX;
        let lateness = i64::try_from(args.window_lateness.as_millis()).unwrap_or(0);
        let tick = (args.cfg.flush_max_delay / 4).max(Duration::from_millis(10));
        myself.send_interval(tick, || SubscriberMsg::Tick);
        let t = &args.cfg.thresholds;
        let thresholds = Thresholds {
            over_temperature_c: t.over_temperature_c,
            motor_over_temperature_c: t.motor_over_temperature_c,
            high_humidity_pct: t.high_humidity_pct,
            vibration_fault_mm_s: t.vibration_fault_mm_s,
            torque_fault_nm: t.torque_fault_nm,
            power_spike_factor: t.power_spike_factor,
            power_spike_min_kw: t.power_spike_min_kw,
        };
        let feed = args.consumer.resume(myself)?;
        Ok(StreamEtlState {
            _feed: feed,
            thresholds,
            windows: Windows::new(lateness, horizon),
            baselines: BTreeMap::new(),
            events: Vec::new(),
            dirty_since_ms: None,
            // First sweep right away: a node that was down may hold expired data.
            next_sweep_ms: args.clock.now_ms(),
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
                if st.windows.dirty_len() + st.events.len() >= st.args.cfg.flush_max_docs as usize {
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
                if now >= st.next_sweep_ms {
                    st.sweep(now).await?;
                }
            }
            SubscriberMsg::Flush(reply) => {
                st.flush().await?;
                let _ = reply.send(());
            }
        }
        Ok(())
    }
}

impl StreamEtlState {
    /// Folds one reading logged in the record ending at `end`, unless its
    /// minute document already counted that record before (then its events
    /// were written with it, too). `folding` lists the documents this
    /// record has already changed.
    async fn absorb(
        &mut self,
        r: &Reading,
        end: u64,
        folding: &mut Vec<DocKey>,
    ) -> Result<(), ActorProcessingErr> {
        let key = DocKey {
            device: r.device.clone(),
            minute_ms: minute_of(r.ts_ms),
        };
        if self.windows.get(&key).is_none() && self.windows.needs_load(&key) {
            let store = self.args.store.clone();
            let stored = self
                .args
                .guard
                .call(|| store.minute_doc(&key.device, key.minute_ms))
                .await?;
            if let Some(doc) = stored {
                self.windows.insert(key.clone(), doc);
            }
        }
        let this_record = folding.contains(&key);
        if !this_record && self.windows.get(&key).is_some_and(|d| d.log_pos >= end) {
            return Ok(());
        }
        if !this_record {
            folding.push(key.clone());
        }
        let baseline = self.baselines.entry(r.device.clone()).or_default();
        if let Some(event) = events::detect(r, &self.thresholds, baseline) {
            self.events.push(event);
        }
        match self.windows.get_mut(&key) {
            Some(doc) => {
                doc.metrics
                    .entry(r.metric)
                    .and_modify(|s| s.add(r))
                    .or_insert_with(|| vatio_stores::Stats::of(r));
                doc.log_pos = end;
            }
            None => {
                let doc = MinuteDoc {
                    log_pos: end,
                    ..new_doc(r)
                };
                self.windows.insert(key.clone(), doc);
            }
        }
        self.windows.touch(&key);
        self.dirty_since_ms
            .get_or_insert_with(|| self.args.clock.now_ms());
        Ok(())
    }

    /// Writes every changed document and the new events, then commits the
    /// log position.
    async fn flush(&mut self) -> Result<(), ActorProcessingErr> {
        self.dirty_since_ms = None;
        let docs: Vec<MinuteDoc> = self
            .windows
            .take_dirty()
            .into_iter()
            .map(|(_, d)| d)
            .collect();
        let events = std::mem::take(&mut self.events);
        let store = self.args.store.clone();
        let written = self
            .args
            .rejects
            .write_or_split(
                &self.args.guard,
                store.as_ref(),
                &docs,
                |store, batch| store.upsert_minute_docs(batch),
                doc_letters,
            )
            .await?;
        NodeStats::add(&self.args.stats.documents_written, written);
        if !events.is_empty() {
            match self.args.guard.call(|| store.upsert_events(&events)).await {
                Ok(()) => NodeStats::add(&self.args.stats.events_written, events.len() as u64),
                Err(e) => {
                    // Events are derived from readings that are stored; a
                    // batch refused after the guard's attempts is counted
                    // and reported, not dead-lettered.
                    NodeStats::add(&self.args.stats.sink_writes_rejected, events.len() as u64);
                    tracing::error!(error = %e, events = events.len(), "document store rejected events");
                }
            }
        }
        self.args.consumer.commit_folded().await?;
        Ok(())
    }

    async fn sweep(&mut self, now_ms: i64) -> Result<(), ActorProcessingErr> {
        let retention = i64::try_from(self.args.cfg.retention.as_millis()).unwrap_or(i64::MAX);
        let cutoff = now_ms.saturating_sub(retention);
        let store = self.args.store.clone();
        let removed = self.args.guard.call(|| store.sweep_before(cutoff)).await?;
        if removed > 0 {
            tracing::info!(removed, cutoff_ms = cutoff, "retention sweep");
        }
        let interval = i64::try_from(self.args.cfg.sweep_interval.as_millis()).unwrap_or(i64::MAX);
        self.next_sweep_ms = now_ms.saturating_add(interval);
        Ok(())
    }
}
