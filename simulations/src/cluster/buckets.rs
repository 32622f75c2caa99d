//! SIMULATION STAND-IN: a node's two archive buckets (its AZ's and the other
//! AZ's), in memory.
//!
//! `object_store`'s local file system does its file work on tokio's
//! blocking threads, which the seed does not order; these buckets do none,
//! so the archive replays with the seed like everything else. Like real
//! buckets they outlive the node: a crash or a power loss keeps every
//! object written. After the run they are written out as files where the
//! node's archive directories would be, for the audit and for `--keep`.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use futures::TryStreamExt;
use object_store::memory::InMemory;
use object_store::{ObjectStore, ObjectStoreExt};
use vatio_stores::archive::ParquetArchive;

#[derive(Clone, Default)]
pub struct Buckets {
    primary: Arc<InMemory>,
    replica: Arc<InMemory>,
}

impl Buckets {
    /// Node `node`'s archive over these buckets, encoding in the calling task.
    pub fn archive(&self, node: &str) -> ParquetArchive {
        ParquetArchive::new(self.primary.clone(), self.replica.clone(), node)
            .with_blocking(vatio_stores::Blocking::Inline)
    }

    /// Writes every object of both buckets under `primary_root` and
    /// `replica_root`, as the embedded archive lays them out.
    pub async fn export(&self, primary_root: &Path, replica_root: &Path) -> anyhow::Result<()> {
        export(&self.primary, primary_root).await?;
        export(&self.replica, replica_root).await
    }
}

async fn export(bucket: &InMemory, root: &Path) -> anyhow::Result<()> {
    let objects: Vec<_> = bucket.list(None).try_collect().await?;
    for meta in objects {
        let bytes = bucket.get(&meta.location).await?.bytes().await?;
        let file = root.join(meta.location.as_ref());
        if let Some(dir) = file.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        std::fs::write(&file, &bytes).with_context(|| format!("writing {}", file.display()))?;
    }
    Ok(())
}
