//! `vatio load --acks-out FILE`: the list of every reading the node
//! acknowledged, one `{device_id} {seq}` line each, for tests that check
//! afterwards that acknowledged readings reached the sinks.
//!
//! Workers hand the readings of each acknowledged batch to one writer task
//! over a bounded channel; the writer owns the file behind a buffer and
//! appends, so several runs can share one file. [`AcksOut::finish`] flushes
//! it once the workers are done.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use tokio::fs::OpenOptions;
use tokio::io::{AsyncWriteExt as _, BufWriter};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use vatio_proto::v1::Reading;

/// Acknowledged batches queued for the writer; a slow disk holds the
/// workers back rather than growing memory.
const QUEUE_BATCHES_MAX: usize = 1_024;
/// Size of the writer's buffer.
const BUFFER_BYTES: usize = 256 * 1024;

/// What workers use to record acknowledged readings. Cheap to clone.
#[derive(Clone, Debug)]
pub(crate) struct AckSink {
    tx: mpsc::Sender<Vec<Reading>>,
}

impl AckSink {
    /// Queues the readings of one acknowledged batch. If the writer has
    /// stopped (a write failed), the readings are dropped here and the
    /// failure is reported by [`AcksOut::finish`].
    pub(crate) async fn record(&self, readings: Vec<Reading>) {
        let _ = self.tx.send(readings).await;
    }
}

/// The writer task behind an [`AckSink`].
#[derive(Debug)]
pub(crate) struct AcksOut {
    path: PathBuf,
    task: JoinHandle<std::io::Result<u64>>,
}

impl AcksOut {
    /// Opens `path` for appending (creating it) and starts the writer.
    pub(crate) async fn open(path: &Path) -> anyhow::Result<(AckSink, AcksOut)> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .await
            .with_context(|| format!("opening --acks-out file {}", path.display()))?;
        let (tx, rx) = mpsc::channel(QUEUE_BATCHES_MAX);
        let task = tokio::spawn(write_all(BufWriter::with_capacity(BUFFER_BYTES, file), rx));
        Ok((
            AckSink { tx },
            AcksOut {
                path: path.to_path_buf(),
                task,
            },
        ))
    }

    /// Waits until every [`AckSink`] is dropped, then flushes; returns the
    /// number of lines written.
    pub(crate) async fn finish(self) -> anyhow::Result<u64> {
        let written = self
            .task
            .await
            .context("the --acks-out writer task failed")?
            .with_context(|| format!("writing --acks-out file {}", self.path.display()))?;
        Ok(written)
    }
}

/// Appends one line per reading until every sender is gone, then flushes
/// and syncs the file.
async fn write_all(
    mut out: BufWriter<tokio::fs::File>,
    mut rx: mpsc::Receiver<Vec<Reading>>,
) -> std::io::Result<u64> {
    let mut written = 0u64;
    let mut line = String::with_capacity(64);
    while let Some(readings) = rx.recv().await {
        for reading in &readings {
            line.clear();
            line.push_str(&reading.device_id);
            line.push(' ');
            line.push_str(&reading.seq.to_string());
            line.push('\n');
            out.write_all(line.as_bytes()).await?;
            written += 1;
        }
    }
    out.flush().await?;
    out.get_ref().sync_all().await?;
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(device: &str, seq: u64) -> Reading {
        Reading {
            device_id: device.to_owned(),
            seq,
            ..Reading::default()
        }
    }

    #[tokio::test]
    async fn lines_are_appended_across_runs() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("acks.txt");
        for run in 0..2u64 {
            let (sink, out) = AcksOut::open(&path).await?;
            let other = sink.clone();
            sink.record(vec![reading("load-000001", run * 10 + 1)])
                .await;
            other
                .record(vec![
                    reading("load-000002", run * 10 + 1),
                    reading("load-000002", run * 10 + 2),
                ])
                .await;
            drop((sink, other));
            assert_eq!(out.finish().await?, 3);
        }
        let text = std::fs::read_to_string(&path)?;
        assert_eq!(
            text,
            "load-000001 1\nload-000002 1\nload-000002 2\n\
             load-000001 11\nload-000002 11\nload-000002 12\n"
        );
        Ok(())
    }

    #[tokio::test]
    async fn an_unwritable_path_is_an_error() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("missing").join("acks.txt");
        assert!(AcksOut::open(&path).await.is_err());
    }
}
