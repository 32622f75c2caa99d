//! Device placement: which node owns a device, and which node keeps its replica.
//!
//! A cluster's membership is summed up in a [`View`]: every known node with its
//! AZ, address and readiness. Placement is a pure function of that view and a
//! device id, so every node that holds the same view computes the same owner and
//! replica for every device without asking anyone; nothing about placement is
//! stored or sent.
//!
//! The rule is rendezvous (highest random weight) hashing over the live nodes:
//!
//! - every live node gets a [`score`] for the device, and the owner is the node
//!   with the highest score;
//! - the replica is the best-scored live node in an AZ other than the owner's,
//!   so losing one AZ never loses both copies;
//! - [`View::ranking`] lists all live nodes by descending score: when the owner
//!   goes, the next node in that device's ranking takes over.
//!
//! Adding or removing a node moves only the devices that node gains or loses:
//! every other device keeps its owner, because the other nodes' scores for it
//! do not change.

use std::cmp::{Ordering, Reverse};
use std::collections::BTreeMap;
use std::fmt;
use std::hash::Hasher as _;
use std::net::SocketAddr;
use std::sync::Arc;

use twox_hash::XxHash64;
use vatio_stores::DeviceId;

/// The seed of [`score`]'s XXH64. Part of the placement rule: never change it.
const SCORE_SEED: u64 = 0;

/// A node's identity in the cluster, unique among its members.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(Arc<str>);

impl NodeId {
    pub fn new(id: impl Into<Arc<str>>) -> Self {
        Self(id.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<&str> for NodeId {
    fn from(id: &str) -> Self {
        Self::new(id)
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An availability zone label. Nodes with equal labels share a failure domain.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Az(Arc<str>);

impl Az {
    pub fn new(name: impl Into<Arc<str>>) -> Self {
        Self(name.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<&str> for Az {
    fn from(name: &str) -> Self {
        Self::new(name)
    }
}

impl fmt::Display for Az {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One node as membership knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub id: NodeId,
    pub az: Az,
    /// Where peers reach the node's cluster service.
    pub addr: SocketAddr,
    /// Whether the node takes devices. Members that are not ready are known
    /// but never placed on.
    pub ready: bool,
}

/// Where one device lives under a [`View`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placement {
    /// The live node with the highest score for the device.
    pub owner: NodeId,
    /// The best-scored live node in an AZ other than the owner's; `None` when
    /// no other AZ has a live node.
    pub replica: Option<NodeId>,
}

impl Placement {
    /// True when the device has no replica in another AZ: the caller decides
    /// whether to refuse writes or go on degraded.
    pub fn replica_missing(&self) -> bool {
        self.replica.is_none()
    }
}

/// An immutable snapshot of the cluster's members, the input of placement.
///
/// Members are kept sorted by id, so the same members given in any order make
/// equal views with equal placements. Ids are unique: when the input repeats an
/// id, the last member given with that id is kept.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct View {
    members: Vec<Member>,
}

impl View {
    pub fn new(members: impl IntoIterator<Item = Member>) -> Self {
        // Inserting into a map keyed by id keeps the last duplicate and sorts.
        let by_id: BTreeMap<NodeId, Member> =
            members.into_iter().map(|m| (m.id.clone(), m)).collect();
        Self {
            members: by_id.into_values().collect(),
        }
    }

    /// Every member, ready or not, sorted by id.
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    pub fn member(&self, id: &NodeId) -> Option<&Member> {
        self.members
            .binary_search_by(|m| m.id.cmp(id))
            .ok()
            .and_then(|i| self.members.get(i))
    }

    /// The members that devices can be placed on, sorted by id.
    pub fn live(&self) -> impl Iterator<Item = &Member> {
        self.members.iter().filter(|m| m.ready)
    }

    /// The owner and replica of `device`, or `None` when no member is live.
    ///
    /// One pass over the live members, one hash each, no allocation.
    pub fn place(&self, device: &DeviceId) -> Option<Placement> {
        let mut owner: Option<Scored<'_>> = None;
        // Invariant: the best member seen so far in an AZ other than `owner`'s.
        let mut replica: Option<Scored<'_>> = None;
        for member in self.live() {
            let candidate = Scored::of(member, device);
            match owner {
                None => owner = Some(candidate),
                Some(best) if candidate > best => {
                    // In another AZ, the old owner (best of all seen so far)
                    // is now the best outside the new owner's AZ. In the same
                    // AZ, "outside the owner's AZ" is the same set as before,
                    // so the replica stands.
                    if candidate.member.az != best.member.az {
                        replica = Some(best);
                    }
                    owner = Some(candidate);
                }
                Some(best) => {
                    if candidate.member.az != best.member.az
                        && replica.is_none_or(|r| candidate > r)
                    {
                        replica = Some(candidate);
                    }
                }
            }
        }
        owner.map(|owner| Placement {
            owner: owner.member.id.clone(),
            replica: replica.map(|r| r.member.id.clone()),
        })
    }

    /// Every live member, best first, for `device`: the first is the owner and
    /// each next one takes over when all before it have gone.
    pub fn ranking(&self, device: &DeviceId) -> Vec<&Member> {
        let mut scored: Vec<Scored<'_>> = self.live().map(|m| Scored::of(m, device)).collect();
        scored.sort_unstable_by(|a, b| b.cmp(a));
        scored.into_iter().map(|s| s.member).collect()
    }
}

impl FromIterator<Member> for View {
    fn from_iter<I: IntoIterator<Item = Member>>(members: I) -> Self {
        Self::new(members)
    }
}

/// The rendezvous score of `node` for `device`: higher wins.
///
/// XXH64 with seed 0 (the `twox-hash` crate, a specified algorithm whose
/// output is the same on every platform, build and Rust version) over the
/// bytes
///
/// ```text
/// len(node) as u64 little-endian ‖ node as UTF-8 ‖ len(device) as u64 little-endian ‖ device as UTF-8
/// ```
///
/// The length prefixes keep the split between the two ids unambiguous
/// (`"ab" + "c"` and `"a" + "bc"` hash differently). This function is the
/// placement rule of every deployed cluster: changing any part of it moves
/// nearly every device to another node.
pub fn score(node: &NodeId, device: &DeviceId) -> u64 {
    let mut hasher = XxHash64::with_seed(SCORE_SEED);
    for part in [node.as_str(), device.as_str()] {
        // Explicit little-endian bytes: `Hasher::write_u64` would use the
        // machine's byte order.
        hasher.write(&(part.len() as u64).to_le_bytes());
        hasher.write(part.as_bytes());
    }
    hasher.finish()
}

/// A live member with its score for one device, ordered best last: by score,
/// and on equal scores (which practically never happen) the smaller node id
/// ranks higher.
#[derive(Clone, Copy, Debug)]
struct Scored<'a> {
    score: u64,
    member: &'a Member,
}

impl<'a> Scored<'a> {
    fn of(member: &'a Member, device: &DeviceId) -> Self {
        Self {
            score: score(&member.id, device),
            member,
        }
    }

    fn key(&self) -> (u64, Reverse<&NodeId>) {
        (self.score, Reverse(&self.member.id))
    }
}

impl PartialEq for Scored<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl Eq for Scored<'_> {}

impl PartialOrd for Scored<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Scored<'_> {
    fn cmp(&self, other: &Self) -> Ordering {
        self.key().cmp(&other.key())
    }
}

#[cfg(test)]
mod tests;
