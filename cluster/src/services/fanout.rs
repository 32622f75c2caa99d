//! Cluster-wide calls: the node asked gathers every verified member's share
//! of an answer (a query, a dead-letter list or replay) over the peer
//! channels and merges it with its own.

use std::future::Future;
use std::time::Duration;

use futures::future::join_all;
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;
use tonic::Status;
use tonic::transport::Channel;

use vatio_proto::v1;

use crate::peer::PeerClients;
use crate::placement::{NodeId, View};

/// What a node needs to ask its peers' stores.
pub struct ClusterReads {
    me: NodeId,
    /// Verified members only (see [`crate::trust`]): an unverified node's
    /// stores are not read.
    views: watch::Receiver<View>,
    clients: PeerClients,
    /// How long each peer may take to answer.
    timeout: Duration,
    /// Every node this one has had as a verified member since it started:
    /// one that is gone from the view now (down, left, or no longer
    /// verified) still holds its share in its own stores, and an answer
    /// without it names it.
    seen: Arc<Mutex<BTreeSet<NodeId>>>,
}

/// The peers' shares of an answer, and the peers that gave none.
pub struct Gathered<T> {
    pub shares: Vec<T>,
    pub unanswered: Vec<String>,
}

impl ClusterReads {
    pub fn new(
        me: NodeId,
        views: watch::Receiver<View>,
        clients: PeerClients,
        timeout: Duration,
    ) -> Self {
        let seen = Arc::new(Mutex::new(BTreeSet::new()));
        tokio::spawn(remember_members(views.clone(), seen.clone()));
        Self {
            me,
            views,
            clients,
            timeout,
            seen,
        }
    }

    /// Calls `ask` on every verified member but this node, all at once,
    /// each within the timeout. A member that fails or is late is logged
    /// and listed as unanswered; the answer goes on without its share.
    /// So is a node that was a member earlier and is gone from the view.
    /// `ask` gets the member's channel and builds the client it needs
    /// (Query, Admin) on it.
    pub async fn gather<T, F, Fut>(&self, what: &'static str, ask: F) -> Gathered<T>
    where
        F: Fn(Channel) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let peers: Vec<_> = self
            .views
            .borrow()
            .members()
            .iter()
            .filter(|m| m.id != self.me)
            .cloned()
            .collect();
        let gone: Vec<NodeId> = self
            .seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|n| **n != self.me && !peers.iter().any(|m| m.id == **n))
            .cloned()
            .collect();
        let deadline = tokio::time::Instant::now() + self.timeout;
        let ask = &ask;
        let calls = peers.into_iter().map(|member| async move {
            let mut first = true;
            let result = loop {
                let call = match self.clients.channel(&member) {
                    Ok(channel) => ask(channel),
                    Err(e) => break Err(e.to_string()),
                };
                match tokio::time::timeout_at(deadline, call).await {
                    Ok(Ok(share)) => break Ok(share),
                    // A connection that died while idle (a keep-alive that
                    // timed out) fails its next call at once; the channel
                    // connects again for the one after.
                    Ok(Err(status)) if first && is_transport_error(&status) => first = false,
                    Ok(Err(status)) => break Err(status.to_string()),
                    Err(_) => break Err(format!("no answer within {:?}", self.timeout)),
                }
            };
            (member.id, result)
        });
        let mut gathered = Gathered {
            shares: Vec::new(),
            unanswered: Vec::new(),
        };
        for node in gone {
            tracing::debug!(%node, query = what, "a member's share of a cluster-wide query is missing: it is not a member now");
            gathered.unanswered.push(node.to_string());
        }
        for (node, result) in join_all(calls).await {
            match result {
                Ok(share) => gathered.shares.push(share),
                Err(error) => {
                    tracing::warn!(%node, %error, query = what, "a member's share of a cluster-wide query is missing");
                    gathered.unanswered.push(node.to_string());
                }
            }
        }
        gathered.unanswered.sort();
        gathered
    }
}

/// Adds every member of every view to `seen`, until the views stop.
async fn remember_members(mut views: watch::Receiver<View>, seen: Arc<Mutex<BTreeSet<NodeId>>>) {
    loop {
        {
            let view = views.borrow_and_update();
            seen.lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend(view.members().iter().map(|m| m.id.clone()));
        }
        if views.changed().await.is_err() {
            return;
        }
    }
}

/// Whether `status` reports the connection failing rather than the peer
/// answering with an error.
fn is_transport_error(status: &Status) -> bool {
    std::error::Error::source(status)
        .is_some_and(|source| source.downcast_ref::<tonic::transport::Error>().is_some())
}

/// Whose stores a request with `scope` reads: the peers to ask too, or
/// none for a node-scoped request or a node on its own.
pub fn peers_for(
    cluster: Option<&Arc<ClusterReads>>,
    scope: i32,
) -> Result<Option<&ClusterReads>, Status> {
    match v1::QueryScope::try_from(scope) {
        Ok(v1::QueryScope::Cluster) => Ok(cluster.map(Arc::as_ref)),
        Ok(v1::QueryScope::Node) => Ok(None),
        Err(_) => Err(Status::invalid_argument(format!(
            "scope: unknown query scope {scope}"
        ))),
    }
}

/// The peers' shares when there are peers to ask, else nothing.
pub async fn gather<T, F, Fut>(
    peers: Option<&ClusterReads>,
    what: &'static str,
    ask: F,
) -> Gathered<T>
where
    F: Fn(Channel) -> Fut,
    Fut: Future<Output = Result<T, Status>>,
{
    match peers {
        Some(peers) => peers.gather(what, ask).await,
        None => Gathered {
            shares: Vec::new(),
            unanswered: Vec::new(),
        },
    }
}
