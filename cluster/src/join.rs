//! Joins the node to its cluster when `[cluster]` is configured: starts
//! gossip membership advertising the node's AZ and gRPC address. Each start
//! gets a higher generation from a counter in the data directory, so peers
//! tell a restarted node from its previous life without reading a clock.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use vatio_config::Config;

use crate::membership::{FailureDetection, Membership, MembershipConfig};
use crate::net::Network;
use crate::placement::{Az, NodeId};

/// Starts membership (not ready yet) if the node is configured to join a
/// cluster; `grpc_addr` is where peers reach this node.
pub async fn join(
    cfg: &Config,
    grpc_addr: SocketAddr,
    network: Option<&Arc<dyn Network>>,
    rng_seed: Option<u64>,
) -> anyhow::Result<Option<Membership>> {
    let cluster = &cfg.cluster;
    if !cluster.enabled() {
        return Ok(None);
    }
    let parse = |key: &str, value: &str| -> anyhow::Result<SocketAddr> {
        value
            .trim()
            .parse()
            .with_context(|| format!("cluster.{key}: {value:?} is not an ip:port address"))
    };
    let listen = parse("gossip_listen", &cluster.gossip_listen)?;
    let generation = next_generation(&cfg.node.data_dir)?;
    let mut m = MembershipConfig::new(
        NodeId::new(cfg.node.id.as_str()),
        Az::new(cfg.node.az.as_str()),
        grpc_addr,
        listen,
        generation,
    );
    if !cluster.gossip_advertise.trim().is_empty() {
        m.gossip_advertise = Some(parse("gossip_advertise", &cluster.gossip_advertise)?);
    }
    m.seeds = cluster
        .seeds
        .iter()
        .map(|s| parse("seeds", s))
        .collect::<anyhow::Result<_>>()?;
    m.cluster_id = cluster.cluster_id.clone();
    m.gossip_interval = cluster.gossip_interval;
    m.failure_detector = FailureDetection::for_gossip_interval(cluster.gossip_interval);
    m.rng_seed = rng_seed.unwrap_or_else(entropy);
    let membership = match network {
        None => Membership::start(m).await,
        Some(network) => {
            let socket = network
                .gossip(listen)
                .await
                .with_context(|| format!("binding cluster.gossip_listen {listen}"))?;
            Membership::start_on(m, socket).await
        }
    }
    .context("joining the cluster (gossip)")?;
    tracing::info!(gossip = %membership.gossip_addr(), generation, "joined the cluster gossip");
    Ok(Some(membership))
}

/// A random seed from the operating system (through std's hasher keys).
fn entropy() -> u64 {
    use std::hash::{BuildHasher as _, Hasher as _};
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
}

/// Reads, increments and stores the node's start counter.
fn next_generation(data_dir: &Path) -> anyhow::Result<u64> {
    let dir = data_dir.join("cluster");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join("generation");
    let last = match std::fs::read_to_string(&path) {
        Ok(text) => text
            .trim()
            .parse::<u64>()
            .with_context(|| format!("{} does not hold a number", path.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let next = last.saturating_add(1);
    let tmp = dir.join("generation.tmp");
    std::fs::write(&tmp, next.to_string()).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("replacing {}", path.display()))?;
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_start_gets_a_higher_generation() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        assert_eq!(next_generation(dir.path())?, 1);
        assert_eq!(next_generation(dir.path())?, 2);
        std::fs::write(dir.path().join("cluster").join("generation"), "x")?;
        assert!(
            next_generation(dir.path()).is_err(),
            "a damaged counter is reported"
        );
        Ok(())
    }
}
