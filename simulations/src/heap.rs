//! The process's live heap, for the simulations' bounded-memory check.
//!
//! Every binary that links this crate (the `vatio-simulations` command and
//! its tests) allocates through [`HEAP`], which counts the bytes in use.
//! A simulation runs all its nodes in one process, and one run per process
//! (the command runs seeds one after another; nextest runs each test in
//! its own process, and ractor's registry needs that anyway), so the growth
//! over a run's start is what that run's nodes hold. SQLite,
//! bundled C code, allocates with `malloc` directly: its page caches are
//! not counted.

use std::alloc::System;

use cap::Cap;

/// The system allocator, counting the bytes in use (no limit is set: the
/// checks compare against their own bound and report, never abort).
#[global_allocator]
pub static HEAP: Cap<System> = Cap::new(System, usize::MAX);

/// Bytes allocated and not yet freed, process-wide.
pub fn allocated() -> usize {
    HEAP.allocated()
}

/// The highest heap seen while sampling, over a baseline.
#[derive(Clone, Copy, Debug)]
pub struct HeapWatch {
    baseline: usize,
    peak: usize,
}

impl HeapWatch {
    /// Starts watching from the heap in use now.
    pub fn start() -> Self {
        let now = allocated();
        Self {
            baseline: now,
            peak: now,
        }
    }

    pub fn sample(&mut self) {
        self.peak = self.peak.max(allocated());
    }

    /// How far the heap rose above the baseline at its highest.
    pub fn peak_growth(&self) -> usize {
        self.peak.saturating_sub(self.baseline)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_allocation_shows_in_the_peak_and_a_freed_one_stays_there() {
        let mut watch = HeapWatch::start();
        let block = vec![0u8; 8 << 20];
        watch.sample();
        let held = watch.peak_growth();
        drop(block);
        watch.sample();
        // (A margin for what other threads of the test process free.)
        assert!(held >= 6 << 20, "peak growth {held} misses the 8 MiB block");
        // Freeing does not lower the peak.
        assert!(watch.peak_growth() >= held);
    }
}
