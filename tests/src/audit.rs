//! Checking a run afterwards: what the load generator reported and listed
//! as acknowledged, and problems found, grouped by kind with examples.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context as _;

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
