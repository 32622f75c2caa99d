//! The node supervisor: parent of the router, the dead-letter office and the
//! subscribers. A failed child is restarted with backoff within its restart
//! budget and its bounded mailbox is pointed at the new actor; a child out of
//! budget (or a failed router, whose device table is not rebuilt yet) stops
//! the supervisor, which the node reports as fatal.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::future::BoxFuture;
use ractor::{Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, SpawnErr, SupervisionEvent};
use vatio_config::SupervisionConfig;

use crate::clock::SharedClock;
use crate::stats::NodeStats;
use crate::supervision::{RestartBudget, RestartDecision};

/// Starts (or restarts) one child linked to the given supervisor and
/// returns its cell.
pub type SpawnFn =
    Arc<dyn Fn(ActorCell) -> BoxFuture<'static, Result<ActorCell, SpawnErr>> + Send + Sync>;

/// One supervised child.
pub struct ChildSpec {
    pub name: &'static str,
    pub spawn: SpawnFn,
    /// Whether a failure may be answered with a restart at all.
    pub restartable: bool,
}

pub enum SupervisorMsg {
    /// Start a child now (after its backoff).
    Start(usize),
    /// Stop every child, in reverse start order, and reply; no restarts after this.
    Shutdown(ractor::RpcReplyPort<()>),
}

pub struct NodeSupervisor;

pub struct SupervisorArgs {
    pub children: Vec<ChildSpec>,
    pub supervision: SupervisionConfig,
    pub clock: SharedClock,
    pub stats: Arc<NodeStats>,
}

pub struct SupervisorState {
    children: Vec<(ChildSpec, RestartBudget)>,
    running: BTreeMap<ActorId, usize>,
    stopping: bool,
    clock: SharedClock,
    stats: Arc<NodeStats>,
}

impl Actor for NodeSupervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = SupervisorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: SupervisorArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let mut running = BTreeMap::new();
        let mut children = Vec::new();
        for (i, spec) in args.children.into_iter().enumerate() {
            let cell = (spec.spawn)(myself.get_cell()).await?;
            running.insert(cell.get_id(), i);
            children.push((spec, RestartBudget::new(&args.supervision)));
        }
        Ok(SupervisorState {
            children,
            running,
            stopping: false,
            clock: args.clock,
            stats: args.stats,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SupervisorMsg::Start(i) => {
                if st.stopping {
                    return Ok(());
                }
                if let Some((spec, _)) = st.children.get(i) {
                    let cell = (spec.spawn)(myself.get_cell()).await?;
                    tracing::info!(child = spec.name, "restarted");
                    st.running.insert(cell.get_id(), i);
                }
            }
            SupervisorMsg::Shutdown(reply) => {
                st.stopping = true;
                // Children were started producers-last (router last), so
                // stopping in reverse stops the producers first.
                let mut order: Vec<(usize, ActorId)> =
                    st.running.iter().map(|(id, i)| (*i, *id)).collect();
                order.sort_by_key(|(i, _)| std::cmp::Reverse(*i));
                for (_, id) in order {
                    if let Some(cell) = myself.get_children().into_iter().find(|c| c.get_id() == id)
                    {
                        let _ = cell.stop_and_wait(None, None).await;
                    }
                }
                let _ = reply.send(());
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        evt: SupervisionEvent,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, failure) = match evt {
            SupervisionEvent::ActorFailed(cell, err) => (cell, Some(err.to_string())),
            SupervisionEvent::ActorTerminated(cell, _, reason) => (cell, reason),
            _ => return Ok(()),
        };
        let Some(i) = st.running.remove(&cell.get_id()) else {
            return Ok(());
        };
        if st.stopping {
            return Ok(());
        }
        let Some((spec, budget)) = st.children.get_mut(i) else {
            return Ok(());
        };
        let why = failure.unwrap_or_else(|| "stopped".into());
        tracing::error!(child = spec.name, reason = %why, "node actor stopped");
        if !spec.restartable {
            return Err(format!("{} stopped: {why}", spec.name).into());
        }
        match budget.on_failure(st.clock.now_ms()) {
            RestartDecision::RestartAfter(delay) => {
                NodeStats::add(&st.stats.actor_restarts, 1);
                myself.send_after(delay, move || SupervisorMsg::Start(i));
                Ok(())
            }
            RestartDecision::GiveUp => Err(format!(
                "{} failed more often than its restart budget allows: {why}",
                spec.name
            )
            .into()),
        }
    }
}
