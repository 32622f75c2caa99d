//! Reads back what a run left in the stores, through the stores' own read
//! paths: every archived hour from both sides (and a walk of both roots, so
//! that a file for an hour nobody expected is seen too), the time-series
//! points and minute documents of every device, and every dead letter.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::Context;
use vatio_actors::{AckCounts, ActorTree};
use vatio_config::Config;
use vatio_stores::archive::{Side, hour_path};
use vatio_stores::{
    DeadLetter, DeadLetterFilter, DeviceId, DeviceKind, HOUR_MS, HourKey, Metric, Reading, hour_of,
    minute_of,
};

use crate::model::PointKey;
use crate::recording::RecordingStaging;
use crate::workload::{Expect, Workload};

/// The archive as read back.
#[derive(Clone, Debug, Default)]
pub struct ArchiveView {
    pub primary: BTreeMap<HourKey, Vec<Reading>>,
    pub replica: BTreeMap<HourKey, Vec<Reading>>,
    /// Parquet files found by walking each side's root, whatever their hour.
    pub files_on_disk: [usize; 2],
    /// Hours that exist but failed to read or to verify against their manifest.
    pub errors: Vec<String>,
}

/// Everything the checks look at.
#[derive(Clone, Debug, Default)]
pub struct Observed {
    /// The ack of every planned batch, by batch id (`None`: never acked).
    pub acks: Vec<Option<AckCounts>>,
    pub archive: ArchiveView,
    /// `(device, seq)` in the order the archiver staged them.
    pub staged: Vec<(DeviceId, u64)>,
    /// Stored count per time-series point.
    pub points: BTreeMap<PointKey, u64>,
    /// Count per metric in each stored minute document.
    pub docs: BTreeMap<PointKey, u64>,
    /// Every dead letter, pending or replayed.
    pub dead_letters: Vec<DeadLetter>,
    /// Device-actor restarts the node counted.
    pub actor_restarts: u64,
    /// Ingest calls refused for overload, as the clients saw them.
    pub overload_refusals_seen: u64,
    /// Ingest calls refused for overload, as the node counted them.
    pub overload_refusals_counted: u64,
}

/// Reads the stores after the final flush.
pub async fn read(
    cfg: &Config,
    w: &Workload,
    tree: &ActorTree,
    recorder: &RecordingStaging,
    acks: Vec<Option<AckCounts>>,
) -> anyhow::Result<Observed> {
    let stores = tree.stores();
    let kind_of: BTreeMap<&str, DeviceKind> =
        w.devices.iter().map(|d| (d.id.as_str(), d.kind)).collect();

    // Every hour any sent reading is stamped in, valid or not: a refused
    // reading that slipped through would show up in its hour.
    let mut hours: BTreeSet<HourKey> = BTreeSet::new();
    let mut minutes: BTreeSet<(String, i64)> = BTreeSet::new();
    for s in w.batches.iter().flat_map(|b| &b.readings) {
        if let Some(kind) = kind_of.get(s.raw.device_id.as_str()) {
            hours.insert(HourKey {
                kind: *kind,
                hour_ms: hour_of(s.raw.ts_ms),
            });
        }
        if let Expect::Valid(r) = &s.expect {
            minutes.insert((s.raw.device_id.clone(), minute_of(r.ts_ms)));
        }
    }

    let mut archive = ArchiveView::default();
    for (i, side) in Side::BOTH.into_iter().enumerate() {
        let root = match side {
            Side::Primary => &cfg.archiver.primary_root,
            Side::Replica => &cfg.archiver.replica_root,
        };
        let root = cfg
            .archive_dir(root)
            .with_context(|| format!("the simulation's archive root {root} is not a directory"))?;
        let part_file = format!("part-{}.parquet", cfg.node.id);
        archive.files_on_disk[i] = count_files(&root, &part_file)
            .with_context(|| format!("walking {}", root.display()))?;
        for &hour in &hours {
            let path = hour_path(hour, &cfg.node.id);
            let relative: &str = path.as_ref();
            if !root.join(relative).exists() {
                continue;
            }
            let name = format!("{} {relative}", side.as_str());
            if let Err(e) = stores.archive.verify(side, hour).await {
                archive.errors.push(format!("{name}: {e}"));
            }
            match stores.archive.read_hour(side, hour).await {
                Ok(rows) => {
                    let map = match side {
                        Side::Primary => &mut archive.primary,
                        Side::Replica => &mut archive.replica,
                    };
                    map.insert(hour, rows);
                }
                Err(e) => archive.errors.push(format!("{name}: {e}")),
            }
        }
    }

    // A window wide enough for any reading a run can have accepted.
    let from = hour_of(w.start_ms) - 12 * HOUR_MS;
    let to = hour_of(w.start_ms) + 12 * HOUR_MS;
    let mut points = BTreeMap::new();
    for d in &w.devices {
        let device = DeviceId::new(d.id.as_str());
        for metric in metrics_of(d.kind) {
            let series = stores
                .timeseries
                .series(&device, metric, from, to, 1)
                .await
                .with_context(|| format!("reading the series of {} {metric}", d.id))?;
            for p in series {
                points.insert((d.id.clone(), metric, p.window_start_ms), p.count);
            }
        }
    }

    let mut docs = BTreeMap::new();
    for (device, minute) in &minutes {
        let id = DeviceId::new(device.as_str());
        let doc = stores
            .documents
            .minute_doc(&id, *minute)
            .await
            .with_context(|| format!("reading the document of {device} at {minute}"))?;
        for (metric, stats) in doc.map(|d| d.metrics).unwrap_or_default() {
            docs.insert((device.clone(), metric, *minute), stats.count);
        }
    }

    let dead_letters = stores
        .dead_letters
        .list(&DeadLetterFilter {
            include_replayed: true,
            limit: u32::MAX,
            ..DeadLetterFilter::default()
        })
        .await
        .context("listing the dead letters")?;

    Ok(Observed {
        acks,
        archive,
        staged: recorder.staged(),
        points,
        docs,
        dead_letters,
        actor_restarts: vatio_actors::stats::NodeStats::get(&tree.stats().actor_restarts),
        // Filled in by the run, which counted the refusals as they came.
        overload_refusals_seen: 0,
        overload_refusals_counted: 0,
    })
}

/// Every metric a device of `kind` may report, so that a stray point under
/// a metric the workload never sent for it is seen too.
fn metrics_of(kind: DeviceKind) -> Vec<Metric> {
    Metric::ALL
        .into_iter()
        .filter(|m| vatio_actors::logic::validate::range_of(kind, *m).is_some())
        .collect()
}

/// Files called `name` anywhere under `root`.
fn count_files(root: &Path, name: &str) -> std::io::Result<usize> {
    let mut count = 0;
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let kind = entry.file_type()?;
            if kind.is_dir() {
                dirs.push(entry.path());
            } else if entry.file_name() == name {
                count += 1;
            }
        }
    }
    Ok(count)
}
