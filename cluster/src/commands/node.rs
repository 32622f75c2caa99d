//! `vatio node --config FILE`: the production entry point. Runs until
//! Ctrl-C or SIGTERM, then drains: everything acknowledged reaches the sinks.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use vatio_config::Config;

use crate::{Node, NodeOptions, SystemClock};

pub async fn run(config: Option<PathBuf>) -> anyhow::Result<()> {
    let cfg = Config::load(config.as_deref(), std::env::vars())
        .map_err(|e| anyhow::anyhow!("invalid configuration:\n{e}"))?;
    let node = Node::start(cfg, NodeOptions::with_clock(Arc::new(SystemClock))).await?;
    println!("vatio node serving gRPC on {}", node.endpoint());
    tokio::select! {
        signal = wait_for_stop_signal() => signal?,
        _ = node.failed() => anyhow::bail!(
            "the node's actor tree stopped after a fatal failure: its write-ahead log failed, or an actor \
             failed beyond its restart budget (see the log above)"
        ),
    }
    println!("stopping: draining acknowledged readings into the sinks…");
    node.shutdown().await.context("shutting down")?;
    println!("stopped cleanly");
    Ok(())
}

/// Ctrl-C, or SIGTERM on Unix (what service managers send).
pub async fn wait_for_stop_signal() -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("installing the SIGTERM handler")?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r.context("waiting for Ctrl-C")?,
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    Ok(())
}
