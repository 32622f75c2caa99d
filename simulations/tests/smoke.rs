//! The smoke harness on a fixed set of seeds: every guarantee holds, one
//! seed replays to the same trace, and injected device-actor crashes
//! (FAULT INJECTION through the tree's crash hook) cost nothing acknowledged.
//! Sizes are small so the file runs in seconds in a debug build.

use vatio_simulations::{RunReport, SimOptions, run};

fn small() -> SimOptions {
    SimOptions {
        devices: 18,
        clients: 3,
        batches: 50,
        batch_readings: 30,
        ..SimOptions::default()
    }
}

fn assert_passed(report: &RunReport) {
    let listed: Vec<String> = report.violations.iter().map(|v| v.to_string()).collect();
    assert!(
        report.passed(),
        "seed {} broke a guarantee:\n{}",
        report.seed,
        listed.join("\n")
    );
}

#[test]
fn five_seeds_keep_every_guarantee() -> anyhow::Result<()> {
    for seed in 1..=5 {
        let report = run(seed, &small())?;
        assert_passed(&report);
        let s = &report.stats;
        assert_eq!(s.readings_sent, s.accepted + s.duplicates + s.dead_lettered);
        assert!(s.accepted > 0 && s.duplicates > 0 && s.dead_lettered > 0);
        assert_eq!(s.archive_rows as u64, s.accepted, "seed {seed}");
        let f = &s.faults;
        assert!(
            f.invalid > 0 && f.duplicated > 0 && f.swapped_in_batch > 0 && f.held_to_next_batch > 0,
            "seed {seed} injected every input fault: {f:?}"
        );
    }
    Ok(())
}

#[test]
fn one_seed_run_twice_leaves_the_same_trace() -> anyhow::Result<()> {
    let first = run(42, &small())?;
    let second = run(42, &small())?;
    assert_passed(&first);
    assert_passed(&second);
    assert_eq!(first.trace_hash, second.trace_hash);
    let other = run(43, &small())?;
    assert_ne!(
        first.trace_hash, other.trace_hash,
        "the trace depends on the seed"
    );
    Ok(())
}

#[test]
fn crashed_device_actors_restart_and_lose_nothing() -> anyhow::Result<()> {
    let opts = SimOptions {
        crash_share: 0.02,
        ..small()
    };
    let report = run(7, &opts)?;
    assert_passed(&report);
    assert!(report.stats.faults.crash_points > 0);
    assert_eq!(
        report.stats.actor_restarts, report.stats.faults.crash_points as u64,
        "one restart per injected crash, no poison"
    );
    Ok(())
}
