//! The tree's handle for the node's cluster services: claims and hand-overs
//! of devices between nodes, and replica steps from other owners. The node
//! does the network calls; this is what they do here.

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::oneshot;
use vatio_stores::DeviceId;

use super::{ActorTree, TreeError};
use crate::journal::{ReplicaStep, StepRecord, decode_state};
use crate::router::{ClusterMsg, HeldState, Presence, ReplicaVerdict, RouterMsg};
use crate::stats::NodeStats;

/// What a node did with steps an owner sent it (each named by its end in
/// the owner's log); steps not listed are in its log or in its state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Replicated {
    /// The device's owner here went on without these: drop them.
    pub orphaned: Vec<u64>,
    /// Another node claimed these steps' devices: ask it.
    pub fenced: Vec<(u64, Arc<str>)>,
    /// This node still sequences these steps' devices: try again later.
    pub busy: Vec<u64>,
}

/// One replica step as it arrives from its owner.
pub struct IncomingStep {
    pub step: Bytes,
    /// End of the step in the owner's log.
    pub end: u64,
    pub seed: Option<Bytes>,
}

impl ActorTree {
    /// Whether this tree takes part in a cluster (sequences only claimed devices).
    pub fn clustered(&self) -> bool {
        self.replication.is_some()
    }

    async fn ask<T>(
        &self,
        msg: impl FnOnce(oneshot::Sender<T>) -> ClusterMsg,
    ) -> Result<T, TreeError> {
        let (tx, rx) = oneshot::channel();
        self.router
            .cast(RouterMsg::Cluster(msg(tx)))
            .map_err(|_| TreeError::Stopped)?;
        rx.await.map_err(|_| TreeError::Stopped)
    }

    /// Node `by` takes these devices over: answers with the state held here
    /// for each once nothing of it is in progress here, raised to an epoch
    /// of `by`'s above every one known here. From then on this node refuses
    /// readings for them and refers steps of earlier epochs to `by`.
    /// `by_head` is where `by`'s log ends now, if it said: its steps
    /// held here beyond it were lost from its log.
    pub async fn claim(
        &self,
        by: &str,
        by_head: Option<u64>,
        devices: Vec<DeviceId>,
    ) -> Result<Vec<HeldState>, TreeError> {
        let n = devices.len() as u64;
        let by: Arc<str> = Arc::from(by);
        let held = self
            .ask(|reply| ClusterMsg::Claim {
                by,
                by_head,
                devices,
                reply,
            })
            .await?;
        NodeStats::add(&self.stats.devices_handed_over, n);
        Ok(held)
    }

    /// This node starts claiming these devices; the attempt number goes
    /// to [`ActorTree::abandon_claim`] if the claim fails.
    pub async fn begin_claim(&self, devices: Vec<DeviceId>) -> Result<u64, TreeError> {
        self.ask(|reply| ClusterMsg::BeginClaim { devices, reply })
            .await
    }

    /// A claim attempt failed: its devices are unclaimed again.
    pub fn abandon_claim(&self, attempt: u64, devices: Vec<DeviceId>) -> Result<(), TreeError> {
        self.router
            .cast(RouterMsg::Cluster(ClusterMsg::AbandonClaim {
                attempt,
                devices,
            }))
            .map_err(|_| TreeError::Stopped)
    }

    /// This node is now the owner of these devices; each state is the most
    /// advanced one its peers answered a claim with, and each term the
    /// highest they fenced the device at. Returns the devices another
    /// node's claim took meanwhile (not owned here).
    pub async fn adopt(&self, states: Vec<HeldState>) -> Result<Vec<DeviceId>, TreeError> {
        self.ask(|reply| ClusterMsg::Adopt { states, reply }).await
    }

    /// Waits (at most `limit`) until replicas have settled this node's own
    /// steps of these devices, so that its copy of their state is either
    /// the cluster's or known to be off the line before it claims them.
    pub async fn await_settled(
        &self,
        devices: Vec<DeviceId>,
        limit: std::time::Duration,
    ) -> Result<bool, TreeError> {
        let Some((_, shipping)) = &self.replication else {
            return Ok(true);
        };
        let end = self
            .ask(|reply| ClusterMsg::OwnEnd { devices, reply })
            .await?;
        let mut deliverable = shipping.deliverable();
        Ok(
            tokio::time::timeout(limit, deliverable.wait_for(|d| *d >= end))
                .await
                .is_ok_and(|r| r.is_ok()),
        )
    }

    /// Which of these devices this node has yet to claim before it may
    /// take their readings.
    pub async fn unowned(&self, devices: Vec<DeviceId>) -> Result<Vec<DeviceId>, TreeError> {
        self.ask(|reply| ClusterMsg::Unowned { devices, reply })
            .await
    }

    /// Membership changed: owned devices for which `keep` is false are no
    /// longer this node's, and fences towards nodes that `member` says
    /// left are lifted.
    pub fn disown(
        &self,
        keep: Box<dyn Fn(&DeviceId) -> bool + Send>,
        member: Box<dyn Fn(&str) -> Presence + Send>,
    ) -> Result<(), TreeError> {
        self.router
            .cast(RouterMsg::Cluster(ClusterMsg::Disown { keep, member }))
            .map_err(|_| TreeError::Stopped)
    }

    /// Keeps steps that owner `from` took, as their replica: logs the ones
    /// this node accepts and folds them into device state, and says what
    /// became of the others (see [`Replicated`]).
    pub async fn replicate(
        &self,
        from: &str,
        incoming: Vec<IncomingStep>,
    ) -> Result<Replicated, TreeError> {
        let bad = |detail: String| TreeError::BadReplica {
            from: from.to_owned(),
            detail,
        };
        let mut steps = Vec::with_capacity(incoming.len());
        for (i, s) in incoming.into_iter().enumerate() {
            let step = StepRecord::decode(&s.step).map_err(|e| bad(format!("steps[{i}]: {e}")))?;
            let seed = match s.seed {
                Some(bytes) => {
                    Some(decode_state(&bytes).map_err(|e| bad(format!("steps[{i}].seed: {e}")))?)
                }
                None => None,
            };
            steps.push(ReplicaStep {
                from: from.to_owned(),
                end: s.end,
                seed,
                step,
            });
        }
        let keys: Vec<(DeviceId, u64, u64)> = steps
            .iter()
            .map(|s| (s.step.device.clone(), s.end, s.step.term))
            .collect();
        let from_arc: Arc<str> = Arc::from(from);
        let verdicts = self
            .ask(|reply| ClusterMsg::ReplicaBegin {
                from: from_arc,
                steps: keys,
                reply,
            })
            .await?;
        let mut out = Replicated::default();
        let mut taken = Vec::new();
        for (step, verdict) in steps.into_iter().zip(verdicts) {
            match verdict {
                ReplicaVerdict::Take => taken.push(step),
                ReplicaVerdict::Held => {}
                ReplicaVerdict::Orphaned => out.orphaned.push(step.end),
                ReplicaVerdict::Fenced(owner) => out.fenced.push((step.end, owner)),
                ReplicaVerdict::Busy => out.busy.push(step.end),
            }
        }
        // One append per step, all in flight at once: the log's group
        // commit turns them into one write and one fsync.
        let mut appends = Vec::with_capacity(taken.len());
        for step in &taken {
            let bytes = step.encode().map_err(|e| bad(e.to_string()))?;
            appends.push(self.log.append(bytes));
        }
        let results = futures::future::join_all(appends).await;
        let mut logged = Vec::with_capacity(taken.len());
        let mut failure = None;
        let mut aborted = Vec::new();
        let mut ends = Vec::with_capacity(taken.len());
        for (step, result) in taken.into_iter().zip(results) {
            match result {
                Ok(appended) => {
                    ends.push(appended.end);
                    logged.push(step);
                }
                Err(e) => {
                    aborted.push(step.step.device.clone());
                    failure = Some(e);
                }
            }
        }
        NodeStats::add(&self.stats.replica_steps_logged, logged.len() as u64);
        if !aborted.is_empty() {
            let _ = self
                .router
                .cast(RouterMsg::Cluster(ClusterMsg::ReplicaAbort {
                    devices: aborted,
                }));
        }
        let logged_end = ends.iter().copied().max();
        self.ask(|reply| ClusterMsg::ReplicaApply {
            steps: logged,
            reply,
        })
        .await?;
        if let Some(e) = failure {
            return Err(TreeError::Log(e));
        }
        // The owner counts a step as replicated once this answer comes: it
        // must survive this node losing power, so under `interval` the
        // answer waits for the fsync. Otherwise a replica that lost power
        // would forget steps it had confirmed, and a claim adopting its copy
        // would take their readings again (the suspected cause of duplicates
        // in simulation seed 19, `power-loss`, `interval(50ms)`).
        if let Some(end) = logged_end {
            self.log.wait_durable(end).await.map_err(TreeError::Log)?;
        }
        Ok(out)
    }
}
