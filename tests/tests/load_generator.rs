//! `vatio load` against a real node: every reading it sends is acknowledged
//! and accepted exactly once, and its report agrees with the node's counters.
//! Also drives the load generator's overload path: a tiny in-flight budget
//! makes the node answer RESOURCE_EXHAUSTED, the generator backs off and
//! re-sends, and nothing is taken twice. With `--acks-out`, the list of
//! acknowledged readings is exactly what the node took.

use std::collections::HashSet;
use std::time::Duration;

use vatio_actors::{Clock, TreeOptions};
use vatio_cluster::SystemClock;
use vatio_cluster::load::{self, LoadSpec};
use vatio_tests::process::archived_files;
use vatio_tests::{TestNode, test_config};

async fn run_load(t: &TestNode, spec: LoadSpec) -> anyhow::Result<load::LoadReport> {
    // The generator stamps readings with wall-clock time: give the node the same.
    t.clock.set(SystemClock.now_ms());
    load::run(LoadSpec {
        addr: t.node.endpoint(),
        ..spec
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_reading_sent_is_acked_and_accepted_once() -> anyhow::Result<()> {
    let t = TestNode::start().await?;
    let report = run_load(
        &t,
        LoadSpec {
            devices: 40,
            batch: 50,
            rate: Some(4_000),
            duration: Duration::from_secs(1),
            concurrency: 2,
            progress: false,
            ..LoadSpec::default()
        },
    )
    .await?;
    assert!(report.readings_sent > 0);
    assert_eq!(report.errors, 0, "{report}");
    assert_eq!(report.readings_acked, report.readings_sent);
    assert_eq!(report.readings_accepted, report.readings_sent);
    let status = t.status().await?;
    assert_eq!(status.readings_accepted, report.readings_accepted);
    t.node.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backing_off_on_overload_loses_and_duplicates_nothing() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut cfg = test_config(&dir);
    // Room for one batch at a time: parallel streams must be refused.
    cfg.ingest.max_batch_readings = 100;
    cfg.ingest.max_inflight_readings = 100;
    cfg.ingest.retry_after = Duration::from_millis(5);
    let t = TestNode::start_with(dir, cfg, TreeOptions::default(), None).await?;
    let report = run_load(
        &t,
        LoadSpec {
            devices: 200,
            batch: 100,
            rate: None,
            duration: Duration::from_secs(1),
            concurrency: 4,
            progress: false,
            ..LoadSpec::default()
        },
    )
    .await?;
    assert!(report.backoffs > 0, "the node pushed back: {report}");
    assert_eq!(report.errors, 0, "{report}");
    let status = t.status().await?;
    // Re-sent readings the node had already taken come back as duplicates,
    // never as a second acceptance: the node's count of distinct readings
    // lies between what the generator saw accepted and what it sent.
    assert!(
        status.readings_accepted >= report.readings_accepted
            && status.readings_accepted <= report.readings_sent,
        "node accepted {} of {report}",
        status.readings_accepted
    );
    assert!(status.batches_refused_overload >= report.backoffs);
    t.node.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_out_lists_exactly_the_acknowledged_readings() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut cfg = test_config(&dir);
    // Overload, so that refused batches are re-sent: a re-send acked as
    // duplicate is still listed once.
    cfg.ingest.max_batch_readings = 100;
    cfg.ingest.max_inflight_readings = 100;
    cfg.ingest.retry_after = Duration::from_millis(5);
    let primary_root = cfg
        .archive_dir(&cfg.archiver.primary_root)
        .expect("a local archive root");
    let t = TestNode::start_with(dir, cfg, TreeOptions::default(), None).await?;
    let acks_out = t.dir.path().join("acks.txt");
    // A line from an earlier run: the file is appended to, not replaced.
    std::fs::write(&acks_out, "earlier-run 1\n")?;
    let report = run_load(
        &t,
        LoadSpec {
            devices: 30,
            batch: 50,
            rate: None,
            duration: Duration::from_secs(1),
            concurrency: 3,
            progress: false,
            acks_out: Some(acks_out.clone()),
            ..LoadSpec::default()
        },
    )
    .await?;
    assert!(report.backoffs > 0, "the node pushed back: {report}");
    t.flush().await?;

    let text = std::fs::read_to_string(&acks_out)?;
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("earlier-run 1"));
    let mut listed = HashSet::new();
    let mut count = 0u64;
    for line in lines {
        let (device, seq) = line.split_once(' ').expect("`device seq` lines");
        assert!(
            listed.insert((device.to_owned(), seq.parse::<u64>()?)),
            "{line} listed twice"
        );
        count += 1;
    }
    assert_eq!(Some(count), report.readings_acked_listed, "{report}");
    assert_eq!(count, report.readings_acked, "{report}");

    // What the node took, as archived: the same readings, no more, no less.
    let mut taken = HashSet::new();
    for (_, rows) in archived_files(&primary_root)? {
        taken.extend(rows.into_iter().map(|r| (r.device.to_string(), r.seq)));
    }
    assert_eq!(taken.len() as u64, t.status().await?.readings_accepted);
    assert!(
        listed == taken,
        "{} listed but not taken, {} taken but not listed",
        listed.difference(&taken).count(),
        taken.difference(&listed).count()
    );
    t.node.shutdown().await?;
    Ok(())
}
