//! The device checkpoint: a log subscriber that folds every logged step into
//! a table of device states and saves the changed ones, with its log
//! position, in one transaction every `checkpoint_interval`. A restarted
//! node loads the table and replays only the log after it (see
//! [`crate::recovery`]); the log is never truncated past the checkpoint.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use vatio_stores::{CheckpointStore, DeviceId};

use crate::feed::{Feed, LogConsumer};
use crate::journal::{FenceRecord, ReplicaStep, StepRecord, decode_state, encode_state};
use crate::logic::device::DeviceState;
use crate::pipeline::SubscriberMsg;
use crate::sink_retry::SinkGuard;

#[derive(Clone)]
pub struct CheckpointArgs {
    pub store: Arc<dyn CheckpointStore>,
    pub guard: SinkGuard,
    pub consumer: LogConsumer,
    pub interval: Duration,
    /// This node's id: own steps are noted under it in device state.
    pub node: Arc<str>,
}

#[derive(Clone, Copy)]
pub struct Checkpointer;

pub struct CheckpointState {
    args: CheckpointArgs,
    table: DeviceTable,
    _feed: Feed,
}

impl Actor for Checkpointer {
    type Msg = SubscriberMsg;
    type State = CheckpointState;
    type Arguments = CheckpointArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: CheckpointArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        // Start-up recovery saved a checkpoint (at the log's head; in a
        // cluster at the shipper's position, where the settled steps end),
        // so the store always holds where to resume, with the table as of
        // there (after a restart of this actor too).
        let store = args.store.clone();
        let saved = args.guard.call(|| store.load()).await?;
        let position = saved
            .position
            .unwrap_or_else(|| args.consumer.log.start().0);
        let table = DeviceTable::decode(saved.devices)?;
        myself.send_interval(args.interval, || SubscriberMsg::Tick);
        let feed = args.consumer.start_feed(myself, position)?;
        Ok(CheckpointState {
            args,
            table,
            _feed: feed,
        })
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
                    match (&logged.replica, &logged.fence) {
                        (Some(replica), _) => st.table.fold_replica(replica),
                        (None, Some(fence)) => st.table.fold_fence(fence),
                        (None, None) => st.table.fold(&logged.step, &st.args.node, logged.end),
                    }
                }
                drop(permit);
                st.args.consumer.folded(&steps);
            }
            SubscriberMsg::Drain => {}
            SubscriberMsg::Tick => st.save().await?,
            SubscriberMsg::Flush(reply) => {
                st.save().await?;
                let _ = reply.send(());
            }
        }
        Ok(())
    }
}

impl CheckpointState {
    /// Saves the changed devices with the position they are folded to, in
    /// one transaction; that position is this subscriber's commit.
    async fn save(&mut self) -> Result<(), ActorProcessingErr> {
        let progress = &self.args.consumer.progress;
        let position = progress.folded();
        if position <= progress.committed() {
            return Ok(());
        }
        let changed = self.table.encode_changed()?;
        let store = self.args.store.clone();
        self.args
            .guard
            .call(|| store.save(position, &changed))
            .await?;
        self.table.clear_changed();
        progress.set_committed(position);
        Ok(())
    }
}

/// Device states as a fold of logged steps, and which of them changed
/// since the last save. Shared by the checkpointer and start-up recovery.
#[derive(Debug, Default)]
pub struct DeviceTable {
    devices: BTreeMap<DeviceId, DeviceState>,
    changed: BTreeSet<DeviceId>,
}

impl DeviceTable {
    /// The table a checkpoint holds; nothing changed yet.
    pub fn decode(saved: Vec<(DeviceId, Vec<u8>)>) -> Result<Self, String> {
        let mut devices = BTreeMap::new();
        for (device, bytes) in saved {
            let state =
                decode_state(&bytes).map_err(|e| format!("checkpoint of device {device}: {e}"))?;
            devices.insert(device, state);
        }
        Ok(Self {
            devices,
            changed: BTreeSet::new(),
        })
    }

    /// Applies one logged step.
    /// Applies one of this node's (`node`) own steps, logged ending at `end`.
    pub fn fold(&mut self, step: &StepRecord, node: &str, end: u64) {
        if step.ops.is_empty() {
            return;
        }
        let state = self.devices.entry(step.device.clone()).or_default();
        for op in &step.ops {
            state.apply(op);
        }
        state.took_step(node, end, step.term);
        self.changed.insert(step.device.clone());
    }

    /// Applies one step kept as another node's replica.
    pub fn fold_replica(&mut self, replica: &ReplicaStep) {
        let device = &replica.step.device;
        // The count was logged when the step was first folded.
        let _ = replica.fold_into(self.devices.entry(device.clone()).or_default());
        self.changed.insert(device.clone());
    }

    /// Applies a hand-over to another node.
    pub fn fold_fence(&mut self, fence: &FenceRecord) {
        self.devices
            .entry(fence.device.clone())
            .or_default()
            .fence(&fence.epoch, fence.claimer_head);
        self.changed.insert(fence.device.clone());
    }

    /// The changed devices' states, encoded for the checkpoint store.
    pub fn encode_changed(&self) -> Result<Vec<(DeviceId, Vec<u8>)>, String> {
        self.changed
            .iter()
            .filter_map(|device| self.devices.get(device).map(|state| (device, state)))
            .map(|(device, state)| {
                encode_state(state)
                    .map(|bytes| (device.clone(), bytes))
                    .map_err(|e| format!("encoding the state of device {device}: {e}"))
            })
            .collect()
    }

    pub fn clear_changed(&mut self) {
        self.changed.clear();
    }

    /// A device's state as folded so far.
    pub fn state(&self, device: &DeviceId) -> Option<DeviceState> {
        self.devices.get(device).cloned()
    }

    pub fn into_devices(self) -> BTreeMap<DeviceId, DeviceState> {
        self.devices
    }
}
