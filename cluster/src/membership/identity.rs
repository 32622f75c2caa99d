//! Who a node is on the gossip: its id, this life of it, and what it
//! advertises (AZ, gRPC address, readiness).
//!
//! SWIM identities are immutable: once declared down, an identity cannot
//! come back. A node therefore changes identity to announce a change (its
//! readiness) or to rejoin after others declared it down, by raising
//! `version`. Two identities on one gossip address are two versions of one
//! node, and the higher `(generation, version)` wins.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::placement::{Az, Member, NodeId};

/// One version of one life of a node, as gossip carries it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Identity {
    pub node: String,
    /// This life of the node: higher than every earlier life's.
    pub generation: u64,
    /// Raised within a life at every change of what the node advertises,
    /// and when it rejoins after being declared down.
    pub version: u64,
    /// Where peers send gossip to this node.
    pub gossip_addr: SocketAddr,
    pub az: String,
    /// Where peers reach the node's cluster service.
    pub grpc_addr: SocketAddr,
    /// Whether the node takes devices.
    pub ready: bool,
}

impl Identity {
    /// The next version of this identity, with `ready` as given.
    pub fn next(&self, ready: bool) -> Self {
        Self {
            version: self.version.wrapping_add(1),
            ready,
            ..self.clone()
        }
    }

    /// Which of two versions of a node is the newer.
    pub fn rank(&self) -> (u64, u64) {
        (self.generation, self.version)
    }

    /// The member this identity describes.
    pub fn member(&self) -> Member {
        Member {
            id: NodeId::new(self.node.as_str()),
            az: Az::new(self.az.as_str()),
            addr: self.grpc_addr,
            ready: self.ready,
        }
    }

    /// A stand-in for a seed known only by its address: enough to send it
    /// an announce, which the seed accepts for its own address.
    pub fn seed(gossip_addr: SocketAddr) -> Self {
        Self {
            node: String::new(),
            generation: 0,
            version: 0,
            gossip_addr,
            az: String::new(),
            grpc_addr: gossip_addr,
            ready: false,
        }
    }
}

impl foca::Identity for Identity {
    type Addr = SocketAddr;

    /// Rejoins at once after being declared down (a partition healed, a
    /// long pause): the same node, one version up.
    fn renew(&self) -> Option<Self> {
        Some(self.next(self.ready))
    }

    fn addr(&self) -> SocketAddr {
        self.gossip_addr
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        self.rank() > adversary.rank()
    }
}

#[cfg(test)]
mod tests {
    use foca::Identity as _;

    use super::*;

    fn identity(generation: u64, version: u64) -> Identity {
        Identity {
            node: "a1".to_owned(),
            generation,
            version,
            gossip_addr: "127.0.0.1:7000".parse().expect("literal"),
            az: "az-a".to_owned(),
            grpc_addr: "127.0.0.1:7001".parse().expect("literal"),
            ready: false,
        }
    }

    #[test]
    fn a_later_life_wins_over_any_version_of_an_earlier_one() {
        assert!(identity(2, 0).win_addr_conflict(&identity(1, 9)));
        assert!(!identity(1, 9).win_addr_conflict(&identity(2, 0)));
    }

    #[test]
    fn within_a_life_the_next_version_wins_and_carries_the_change() {
        let before = identity(1, 3);
        let after = before.next(true);
        assert!(after.ready);
        assert!(after.win_addr_conflict(&before));
        assert!(!before.win_addr_conflict(&after));
        let renewed = after.renew().expect("identities renew");
        assert!(renewed.win_addr_conflict(&after));
        assert!(renewed.ready, "renewal keeps what the node advertises");
    }
}
