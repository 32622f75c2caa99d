//! The device checkpoint: a log subscriber that folds every logged step into
//! a table of device states and saves the changed ones, with its log
//! position, in one transaction every `checkpoint_interval`. A restarted
//! node loads the table and replays only the log after it (see
//! [`crate::recovery`]); the log is never truncated past the checkpoint.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use vatio_stores::{CheckpointStore, DeviceId};

use crate::feed::{Feed, LogConsumer};
use crate::journal::encode_state;
use crate::logic::device::DeviceState;
use crate::pipeline::SubscriberMsg;
use crate::sink_retry::SinkGuard;

#[derive(Clone)]
pub struct CheckpointArgs {
    pub store: Arc<dyn CheckpointStore>,
    pub guard: SinkGuard,
    pub consumer: LogConsumer,
    pub interval: Duration,
}

#[derive(Clone, Copy)]
pub struct Checkpointer;

pub struct CheckpointState {
    args: CheckpointArgs,
    devices: HashMap<DeviceId, DeviceState>,
    changed: HashSet<DeviceId>,
    folded: u64,
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
        // Start-up recovery saved a checkpoint at the log's head, so the
        // store always holds where to resume (after a restart of this actor
        // too).
        let store = args.store.clone();
        let saved = args.guard.call(|| store.load()).await?;
        let folded = saved
            .position
            .unwrap_or_else(|| args.consumer.log.start().0);
        let devices = decode_devices(saved.devices)?;
        args.consumer.progress.set_committed(folded);
        myself.send_interval(args.interval, || SubscriberMsg::Tick);
        let feed = args.consumer.start_feed(myself, folded)?;
        Ok(CheckpointState {
            args,
            devices,
            changed: HashSet::new(),
            folded,
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
                    let step = &logged.step;
                    if !step.ops.is_empty() {
                        let state = st.devices.entry(step.device.clone()).or_default();
                        for op in &step.ops {
                            state.apply(op);
                        }
                        st.changed.insert(step.device.clone());
                    }
                    st.folded = logged.end;
                }
                drop(permit);
                st.args.consumer.progress.set_folded(st.folded);
            }
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
    async fn save(&mut self) -> Result<(), ActorProcessingErr> {
        if self.folded <= self.args.consumer.progress.committed() {
            return Ok(());
        }
        let mut changed = Vec::with_capacity(self.changed.len());
        for device in &self.changed {
            if let Some(state) = self.devices.get(device) {
                let bytes = encode_state(state)
                    .map_err(|e| format!("encoding the state of device {device}: {e}"))?;
                changed.push((device.clone(), bytes));
            }
        }
        let store = self.args.store.clone();
        let position = self.folded;
        self.args
            .guard
            .call(|| store.save(position, &changed))
            .await?;
        self.changed.clear();
        self.args.consumer.progress.set_committed(position);
        Ok(())
    }
}

/// Decodes a loaded checkpoint's device states.
pub fn decode_devices(
    saved: Vec<(DeviceId, Vec<u8>)>,
) -> Result<HashMap<DeviceId, DeviceState>, String> {
    let mut devices = HashMap::with_capacity(saved.len());
    for (device, bytes) in saved {
        let state = crate::journal::decode_state(&bytes)
            .map_err(|e| format!("checkpoint of device {device}: {e}"))?;
        devices.insert(device, state);
    }
    Ok(devices)
}
