//! `Position`: a byte address in the log's address space.
//!
//! Every byte ever written to a log has one address, and addresses never
//! repeat: segment files are named after the address of their first byte, so a
//! position stays valid across restarts and truncation of old segments.

use std::fmt;

/// A byte address in the log. A record's position is the address of its frame;
/// its `end` is the address just after it, which is also where the next record
/// (or the next segment's header) starts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position(pub u64);

impl Position {
    /// The address `bytes` further on.
    pub(crate) fn add(self, bytes: u64) -> Position {
        Position(self.0.saturating_add(bytes))
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}
