//! Whole-cluster simulations on a fixed set of seeds, together covering
//! every fault kind. A failing seed prints its schedule and the command
//! that replays it.

use vatio_simulations::cluster::{ClusterOptions, FaultKind, run_cluster_in};

fn run(seed: u64, kinds: &[FaultKind]) -> anyhow::Result<()> {
    let opts = ClusterOptions {
        seed,
        fault_kinds: kinds.to_vec(),
        ..ClusterOptions::default()
    };
    let dir = tempfile::tempdir()?;
    let report = run_cluster_in(&opts, dir.path())?;
    eprintln!("{report:#?}");
    if report.violations.is_empty() {
        return Ok(());
    }
    let kept = dir.keep();
    let kinds: Vec<String> = kinds.iter().map(|k| format!("{k:?}")).collect();
    anyhow::bail!(
        "seed {seed} broke guarantees (files kept in {}):\n{}\nreplay: cargo run -p vatio-simulations -- cluster --first-seed {seed} --seeds 1 --faults {}",
        kept.display(),
        report.violations.join("\n"),
        kinds.join(",")
    )
}

#[test]
fn node_crashes_lose_no_acknowledged_reading() -> anyhow::Result<()> {
    run(11, &[FaultKind::NodeCrash])
}

#[test]
fn az_outages_lose_no_acknowledged_reading() -> anyhow::Result<()> {
    run(12, &[FaultKind::AzOutage])
}

#[test]
fn partitions_between_the_azs_lose_no_acknowledged_reading() -> anyhow::Result<()> {
    run(13, &[FaultKind::AzPartition, FaultKind::OneWayPartition])
}

#[test]
fn skewed_clocks_and_slow_links_lose_no_acknowledged_reading() -> anyhow::Result<()> {
    run(14, &[FaultKind::ClockSkew, FaultKind::SlowLink])
}

#[test]
fn sink_outages_and_slow_sinks_lose_no_acknowledged_reading() -> anyhow::Result<()> {
    run(15, &[FaultKind::SinkOutage, FaultKind::SlowSink])
}

#[test]
fn log_disk_errors_lose_no_acknowledged_reading() -> anyhow::Result<()> {
    run(16, &[FaultKind::DiskErrors])
}
