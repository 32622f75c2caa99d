//! The tail cache: the most recent visible records, kept in memory so that
//! readers close to the head never touch the disk.
//!
//! Bounded by payload bytes; the oldest records are evicted first. A record
//! larger than the whole bound is not cached. Records are contiguous: each
//! one starts where the previous one ended or, across a segment roll, at the
//! next segment's first record.

use std::collections::VecDeque;

use bytes::Bytes;

use crate::{Position, Record};

pub(crate) struct TailCache {
    records: VecDeque<Record>,
    bytes: usize,
    bytes_max: usize,
}

impl TailCache {
    pub fn new(bytes_max: usize) -> Self {
        TailCache {
            records: VecDeque::new(),
            bytes: 0,
            bytes_max,
        }
    }

    /// Payload bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Adds a record that just became visible, evicting the oldest as needed.
    pub fn push(&mut self, position: Position, end: Position, payload: Bytes) {
        if payload.len() > self.bytes_max {
            // Cannot be held; drop everything older too so the cache stays contiguous.
            self.records.clear();
            self.bytes = 0;
            return;
        }
        self.bytes += payload.len();
        self.records.push_back(Record {
            position,
            end,
            payload,
        });
        while self.bytes > self.bytes_max {
            match self.records.pop_front() {
                Some(old) => self.bytes -= old.payload.len(),
                None => break,
            }
        }
    }

    /// Records from `from` on (whole records, in order, ending at or before
    /// `head`, about `max_bytes` of payload, at least one), or `None` when the
    /// cache does not hold the record at `from`.
    ///
    /// `from` may also be the `end` of the record before, which differs from
    /// the next record's position across a segment header.
    pub fn read(&self, from: Position, head: Position, max_bytes: usize) -> Option<Vec<Record>> {
        let index = self.records.partition_point(|r| r.position < from);
        let first = self.records.get(index)?;
        let starts_here = first.position == from
            || (index > 0
                && self
                    .records
                    .get(index - 1)
                    .is_some_and(|prev| prev.end == from));
        if !starts_here {
            return None;
        }
        let mut batch = Vec::new();
        let mut bytes = 0usize;
        for record in self.records.range(index..) {
            if record.end > head {
                break;
            }
            if !batch.is_empty() && bytes + record.payload.len() > max_bytes {
                break;
            }
            bytes += record.payload.len();
            batch.push(record.clone());
        }
        if batch.is_empty() { None } else { Some(batch) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fill(cache: &mut TailCache, sizes: &[usize]) -> Vec<Position> {
        let mut at = 16u64;
        let mut positions = Vec::new();
        for &size in sizes {
            let end = at + 8 + size as u64;
            cache.push(Position(at), Position(end), Bytes::from(vec![7u8; size]));
            positions.push(Position(at));
            at = end;
        }
        positions
    }

    #[test]
    fn evicts_oldest_beyond_the_byte_bound() {
        let mut cache = TailCache::new(100);
        let positions = fill(&mut cache, &[40, 40, 40]);
        assert_eq!(cache.bytes(), 80);
        assert!(cache.read(positions[0], Position(u64::MAX), 1000).is_none());
        let batch = cache
            .read(positions[1], Position(u64::MAX), 1000)
            .expect("cached");
        assert_eq!(batch.len(), 2);
    }

    #[test]
    fn reads_respect_head_and_byte_budget() {
        let mut cache = TailCache::new(1000);
        let positions = fill(&mut cache, &[10, 10, 10, 10]);
        let batch = cache
            .read(positions[0], positions[2], 1000)
            .expect("cached");
        assert_eq!(batch.len(), 2, "records ending past head stay hidden");
        let batch = cache
            .read(positions[0], Position(u64::MAX), 25)
            .expect("cached");
        assert_eq!(batch.len(), 2);
        let batch = cache
            .read(positions[0], Position(u64::MAX), 1)
            .expect("cached");
        assert_eq!(
            batch.len(),
            1,
            "a record bigger than the budget comes alone"
        );
    }

    #[test]
    fn a_record_larger_than_the_cache_empties_it() {
        let mut cache = TailCache::new(50);
        fill(&mut cache, &[10, 60]);
        assert_eq!(cache.bytes(), 0);
    }
}
