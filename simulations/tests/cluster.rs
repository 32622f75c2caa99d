//! Whole-cluster simulations on a fixed set of seeds, together covering
//! every fault kind but one-way partitions (see below). A failing seed
//! prints its schedule and the command that replays it.

use vatio_simulations::cluster::{ClusterOptions, FaultKind, run_cluster_in};

/// Share of invalid readings in the runs whose faults do not move devices
/// between nodes (see the note on `run`).
const INVALID_SHARE: f64 = 0.01;

/// Runs `seed` with `kinds` of faults; `invalid_share` of the readings are
/// sent invalid and must end in dead letters. Runs that move devices
/// between nodes send none yet: a reading refused leaves a gap, readings
/// behind it wait in the reorder buffer, and a device taken over meanwhile
/// was seen to deliver them twice (`--first-seed 710 --seeds 1
/// --invalid-share 0.01` before held readings were merged; clean in the
/// runs since, but without ownership epochs, see DESIGN.md "Cluster", this
/// stays out of CI until many more seeds say so).
fn run(seed: u64, kinds: &[FaultKind], invalid_share: f64) -> anyhow::Result<()> {
    let opts = ClusterOptions {
        seed,
        fault_kinds: kinds.to_vec(),
        invalid_share,
        ..ClusterOptions::default()
    };
    let dir = tempfile::tempdir()?;
    let report = run_cluster_in(&opts, dir.path())?;
    eprintln!("{report:#?}");
    if report.violations.is_empty() {
        return Ok(());
    }
    let kept = dir.keep();
    let kinds: Vec<String> = kinds
        .iter()
        .filter_map(clap::ValueEnum::to_possible_value)
        .map(|v| v.get_name().to_owned())
        .collect();
    anyhow::bail!(
        "seed {seed} broke guarantees (files kept in {}):\n{}\nreplay: VATIO_LOG=info cargo run -p vatio-simulations --release -- cluster --first-seed {seed} --seeds 1 --faults {} --invalid-share {invalid_share}",
        kept.display(),
        report.violations.join("\n"),
        kinds.join(",")
    )
}

#[test]
fn node_crashes_lose_no_acknowledged_reading() -> anyhow::Result<()> {
    run(11, &[FaultKind::NodeCrash], 0.0)
}

#[test]
fn az_outages_lose_no_acknowledged_reading() -> anyhow::Result<()> {
    run(12, &[FaultKind::AzOutage], 0.0)
}

/// One-way partitions are left to the `cluster` command for now: with
/// them two nodes can both act as a device's owner and some seeds archive
/// readings twice (an open bug, see DESIGN.md "Cluster": ownership epochs).
#[test]
fn partitions_between_the_azs_lose_no_acknowledged_reading() -> anyhow::Result<()> {
    run(13, &[FaultKind::AzPartition], 0.0)
}

#[test]
fn skewed_clocks_and_slow_links_lose_no_acknowledged_reading() -> anyhow::Result<()> {
    run(
        14,
        &[FaultKind::ClockSkew, FaultKind::SlowLink],
        INVALID_SHARE,
    )
}

#[test]
fn sink_outages_and_slow_sinks_lose_no_acknowledged_reading() -> anyhow::Result<()> {
    run(
        15,
        &[FaultKind::SinkOutage, FaultKind::SlowSink],
        INVALID_SHARE,
    )
}

#[test]
fn log_disk_errors_lose_no_acknowledged_reading() -> anyhow::Result<()> {
    run(16, &[FaultKind::DiskErrors], INVALID_SHARE)
}
