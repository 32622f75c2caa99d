//! Checking a run afterwards: what the load generator reported and listed
//! as acknowledged, and problems found, grouped by kind with examples.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context as _;
use vatio_actors::TreeStores;
use vatio_stores::{DeviceId, HourKey, Metric, Reading, hour_of, minute_of};

use crate::process::archived_files;

/// A `vatio load` run whose every acknowledged reading is listed in a file.
#[derive(Clone, Debug)]
pub struct ListedLoad {
    pub addr: String,
    pub devices: u32,
    pub rate: u32,
    pub batch: u32,
    pub concurrency: u32,
    pub duration: std::time::Duration,
    pub seed: u64,
    pub acks_out: std::path::PathBuf,
}

impl ListedLoad {
    /// The command line after `vatio`: JSON report, seqs from 1.
    pub fn args(&self) -> Vec<String> {
        [
            "load",
            "--addr",
            &self.addr,
            "--devices",
            &self.devices.to_string(),
            "--rate",
            &self.rate.to_string(),
            "--batch",
            &self.batch.to_string(),
            "--concurrency",
            &self.concurrency.to_string(),
            "--duration",
            &format!("{}s", self.duration.as_secs()),
            "--seed",
            &self.seed.to_string(),
            "--seq-start",
            "1",
            "--acks-out",
            &self.acks_out.display().to_string(),
            "--json",
        ]
        .iter()
        .map(|a| (*a).to_owned())
        .collect()
    }
}

/// Examples listed per kind of problem.
pub const EXAMPLES_MAX: usize = 10;

/// What the load generator reported (`--json`), the fields this test reads.
#[derive(Debug, Default)]
pub struct LoadTotals {
    pub sent: u64,
    pub acked: u64,
    pub dead_lettered: u64,
    pub backoffs: u64,
    pub errors: u64,
    pub listed: Option<u64>,
    pub batches_acked: u64,
    pub batches_acked_replicated: u64,
}

impl LoadTotals {
    pub fn parse(json: &str) -> anyhow::Result<Self> {
        let v: serde_json::Value =
            serde_json::from_str(json).with_context(|| format!("load report: {json}"))?;
        let field = |name: &str| {
            v[name]
                .as_u64()
                .with_context(|| format!("load report has no {name}: {json}"))
        };
        Ok(Self {
            sent: field("readings_sent")?,
            acked: field("readings_acked")?,
            dead_lettered: field("readings_dead_lettered")?,
            backoffs: field("backoffs")?,
            errors: field("errors")?,
            listed: v["readings_acked_listed"].as_u64(),
            batches_acked: field("batches_acked")?,
            batches_acked_replicated: field("batches_acked_replicated")?,
        })
    }
}

/// The acknowledged readings: one `{device} {seq}` line each.
pub fn read_acks(path: &Path) -> anyhow::Result<(u64, HashSet<(String, u64)>)> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut lines = 0u64;
    let mut acked = HashSet::new();
    for line in text.lines() {
        let (device, seq) = line
            .split_once(' ')
            .with_context(|| format!("malformed ack line {line:?}"))?;
        let seq = seq
            .parse::<u64>()
            .with_context(|| format!("malformed seq in ack line {line:?}"))?;
        acked.insert((device.to_owned(), seq));
        lines += 1;
    }
    Ok((lines, acked))
}

/// The load report against its `--acks-out` file: `(lines, distinct readings)`.
pub fn check_load(
    totals: &LoadTotals,
    acks_path: &Path,
    findings: &mut Findings,
) -> anyhow::Result<HashSet<(String, u64)>> {
    let (ack_lines, acked) = read_acks(acks_path)?;
    if ack_lines != acked.len() as u64 {
        findings.add("readings listed as acknowledged more than once", || {
            format!("{ack_lines} lines for {} distinct readings", acked.len())
        });
    }
    if totals.listed != Some(ack_lines) || totals.acked != ack_lines {
        findings.add("load report disagreeing with its --acks-out file", || {
            format!(
                "{ack_lines} lines, report says {} acked and {:?} listed",
                totals.acked, totals.listed
            )
        });
    }
    if totals.dead_lettered > 0 {
        findings.add(
            "acknowledged readings dead-lettered (never archived)",
            || format!("{} readings", totals.dead_lettered),
        );
    }
    Ok(acked)
}

/// What the Parquet archives of one or more nodes hold.
#[derive(Debug, Default)]
pub struct Archived {
    /// (device, seq) → the node of each archived row of it.
    pub rows: HashMap<(String, u64), Vec<String>>,
    /// (device, minute) → archived readings in it, over all nodes.
    pub per_minute: BTreeMap<(String, i64), u64>,
    pub hours: BTreeSet<HourKey>,
}

impl Archived {
    /// Reads every hour file under `root` (node `node`'s archive), noting
    /// rows out of seq order within a file.
    pub fn add_root(
        &mut self,
        node: &str,
        root: &Path,
        findings: &mut Findings,
    ) -> anyhow::Result<()> {
        for (file, rows) in archived_files(root)? {
            self.add_file(node, &file.display().to_string(), &rows, findings);
        }
        Ok(())
    }

    /// Adds the rows of one hour file of node `node` (`file` names it in
    /// findings), noting rows out of seq order within it.
    pub fn add_file(&mut self, node: &str, file: &str, rows: &[Reading], findings: &mut Findings) {
        let mut last_seq: HashMap<&DeviceId, u64> = HashMap::new();
        for row in rows {
            if let Some(before) = last_seq.insert(&row.device, row.seq)
                && before >= row.seq
            {
                findings.add("rows out of seq order within a file", || {
                    format!(
                        "{node} {file}: {} seq {} after {before}",
                        row.device, row.seq
                    )
                });
            }
            self.hours.insert(HourKey {
                kind: row.kind,
                hour_ms: hour_of(row.ts_ms),
            });
            self.rows
                .entry((row.device.to_string(), row.seq))
                .or_default()
                .push(node.to_owned());
            *self
                .per_minute
                .entry((row.device.to_string(), minute_of(row.ts_ms)))
                .or_default() += 1;
        }
    }

    /// Every acknowledged reading archived, none twice.
    pub fn check_exactly_once(&self, acked: &HashSet<(String, u64)>, findings: &mut Findings) {
        for ((device, seq), nodes) in &self.rows {
            if nodes.len() > 1 {
                findings.add("readings archived more than once", || {
                    format!("{device} {seq} on {nodes:?}")
                });
            }
        }
        let mut missing: Vec<&(String, u64)> = acked
            .iter()
            .filter(|k| !self.rows.contains_key(*k))
            .collect();
        missing.sort();
        for (device, seq) in missing {
            findings.add("acknowledged readings missing from the archive", || {
                format!("{device} {seq}")
            });
        }
    }

    /// Each (device, minute), summed over `stores`' time-series points and
    /// minute documents, counts exactly its archived readings.
    pub async fn check_minutes(
        &self,
        stores: &[TreeStores],
        findings: &mut Findings,
    ) -> anyhow::Result<()> {
        for ((device, minute_ms), count) in &self.per_minute {
            let id = DeviceId::new(device.as_str());
            let (mut points, mut docs) = (0, 0);
            for s in stores {
                if let Some(p) = s.timeseries.point(&id, Metric::Power, *minute_ms).await? {
                    points += p.stats.count;
                }
                if let Some(d) = s.documents.minute_doc(&id, *minute_ms).await?
                    && let Some(stats) = d.metrics.get(&Metric::Power)
                {
                    docs += stats.count;
                }
            }
            if points != *count {
                findings.add("time-series minutes miscounted", || {
                    format!("{device} minute {minute_ms}: {count} archived, points count {points}")
                });
            }
            if docs != *count {
                findings.add("minute documents miscounted", || {
                    format!("{device} minute {minute_ms}: {count} archived, documents count {docs}")
                });
            }
        }
        Ok(())
    }
}

/// Problems found, grouped by kind, with a few examples each.
#[derive(Default)]
pub struct Findings {
    kinds: BTreeMap<&'static str, (u64, Vec<String>)>,
}

impl Findings {
    pub fn add(&mut self, kind: &'static str, example: impl FnOnce() -> String) {
        let (count, examples) = self.kinds.entry(kind).or_default();
        *count += 1;
        if examples.len() < EXAMPLES_MAX {
            examples.push(example());
        }
    }

    pub fn count(&self, kind: &'static str) -> u64 {
        self.kinds.get(kind).map_or(0, |(count, _)| *count)
    }

    pub fn is_empty(&self) -> bool {
        self.kinds.is_empty()
    }

    pub fn report(&self) -> String {
        let mut out = String::new();
        for (kind, (count, examples)) in &self.kinds {
            let _ = writeln!(out, "{count} {kind}; first {}:", examples.len());
            for example in examples {
                let _ = writeln!(out, "    {example}");
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Problems are counted per kind with the first few examples, so a failure
    /// reads as "how many, and which".
    #[test]
    fn findings_group_examples_by_kind() {
        let mut findings = Findings::default();
        for seq in 0..(EXAMPLES_MAX as u64 + 5) {
            findings.add("acknowledged readings missing from the archive", || {
                format!("load-000001 {seq}")
            });
        }
        findings.add("readings archived more than once", || {
            "load-000002 7 (2 times)".to_owned()
        });
        let report = findings.report();
        assert!(
            report.contains("15 acknowledged readings missing from the archive; first 10:"),
            "{report}"
        );
        assert!(report.contains("load-000001 9") && !report.contains("load-000001 10"));
        assert!(report.contains("1 readings archived more than once; first 1:"));
        assert_eq!(
            findings.count("acknowledged readings missing from the archive"),
            15
        );
    }
}
