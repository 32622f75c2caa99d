//! Cluster-wide calls: the node asked gathers every verified member's share
//! of an answer (a query, a dead-letter list or replay) over the peer
//! channels and merges it with its own.

use std::future::Future;
use std::time::Duration;

use futures::future::join_all;
use std::sync::Arc;

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
        Self {
            me,
            views,
            clients,
            timeout,
        }
    }

    /// Calls `ask` on every verified member but this node, all at once,
    /// each within the timeout. A member that fails or is late is logged
    /// and listed as unanswered; the answer goes on without its share.
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
        let calls = peers.into_iter().map(|member| {
            let channel = self.clients.channel(&member);
            let call = channel.map(&ask);
            async move {
                let result = match call {
                    Ok(call) => match tokio::time::timeout(self.timeout, call).await {
                        Ok(Ok(share)) => Ok(share),
                        Ok(Err(status)) => Err(status.to_string()),
                        Err(_) => Err(format!("no answer within {:?}", self.timeout)),
                    },
                    Err(e) => Err(e.to_string()),
                };
                (member.id, result)
            }
        });
        let mut gathered = Gathered {
            shares: Vec::new(),
            unanswered: Vec::new(),
        };
        for (node, result) in join_all(calls).await {
            match result {
                Ok(share) => gathered.shares.push(share),
                Err(error) => {
                    tracing::warn!(%node, %error, query = what, "a member's share of a cluster-wide query is missing");
                    gathered.unanswered.push(node.to_string());
                }
            }
        }
        gathered
    }
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
