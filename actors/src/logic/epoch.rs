//! Ownership epochs: which of two owners of a device came later.
//!
//! Every claim of a device raises its epoch: the claimer's term is above
//! every term the nodes it claimed from knew, and the claimer's id breaks a
//! tie between two claims that did not see each other. Every step an owner
//! logs carries its term, so a replica judges a step by one comparison: a
//! step from an epoch below the latest one it knows comes from an owner
//! that another node has since taken the device from.

use std::cmp::Ordering;

use serde::{Deserialize, Serialize};

/// A device's ownership epoch: ordered by term, then by the claimer's id.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Epoch {
    term: u64,
    /// The node that claimed the device at this term ("" at term 0).
    node: String,
}

impl Epoch {
    /// Before any claim (a single node, or a log from before epochs).
    pub const ZERO: Self = Self {
        term: 0,
        node: String::new(),
    };

    /// The epoch of a step that `node` logged at `term` as owner. Term 0 is
    /// the epoch before any claim, whoever logged the step.
    pub fn of(term: u64, node: &str) -> Self {
        if term == 0 {
            Self::ZERO
        } else {
            Self {
                term,
                node: node.to_owned(),
            }
        }
    }

    pub fn term(&self) -> u64 {
        self.term
    }

    /// The node that claimed the device at this epoch (None: no claim yet).
    pub fn claimer(&self) -> Option<&str> {
        (self.term > 0).then_some(self.node.as_str())
    }

    /// The term `node` logs its steps at while this is the device's epoch
    /// (0 unless `node` is the claimer).
    pub fn term_for(&self, node: &str) -> u64 {
        if self.claimer() == Some(node) {
            self.term
        } else {
            0
        }
    }

    /// The epoch of a claim by `node` that comes after this one.
    pub fn next_for(&self, node: &str) -> Self {
        Self::of(self.term.saturating_add(1), node)
    }
}

impl Ord for Epoch {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.term, &self.node).cmp(&(other.term, &other.node))
    }
}

impl PartialOrd for Epoch {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl std::fmt::Display for Epoch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.claimer() {
            Some(node) => write!(f, "{}@{node}", self.term),
            None => f.write_str("0"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_later_term_wins_and_the_claimer_breaks_ties() {
        let a1 = Epoch::of(1, "a1");
        let b1 = Epoch::of(1, "b1");
        let a2 = Epoch::of(2, "a1");
        assert!(Epoch::ZERO < a1);
        assert!(a1 < b1);
        assert!(b1 < a2);
        assert_eq!(b1.next_for("a1"), a2);
        assert_eq!(Epoch::of(0, "x"), Epoch::ZERO);
    }

    #[test]
    fn only_the_claimer_logs_at_the_epochs_term() {
        let e = Epoch::of(4, "b2");
        assert_eq!(e.term_for("b2"), 4);
        assert_eq!(e.term_for("a1"), 0);
        assert_eq!(Epoch::ZERO.claimer(), None);
        assert_eq!(e.to_string(), "4@b2");
    }
}
