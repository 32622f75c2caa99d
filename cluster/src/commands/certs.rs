//! `vatio certs dev`: a development CA and certificates for the nodes and
//! clients of a test cluster, for mutual TLS (see [`crate::certs`]).

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};

use crate::certs::{self, DEV_CA_NAME, Written};

#[derive(Debug, Subcommand)]
pub enum CertsCommand {
    /// Generate a development CA and a certificate and key per node and
    /// client (not for production).
    Dev(DevArgs),
}

#[derive(Debug, Args)]
pub struct DevArgs {
    /// Directory to write into (created if missing).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// A node as ID:AZ (e.g. n1:az-a), as `node.id` and `node.az` in its
    /// configuration; repeat for each node.
    #[arg(long = "node", value_name = "ID:AZ", required = true, value_parser = parse_node)]
    pub nodes: Vec<(String, String)>,
    /// A client (gateway, CLI) that may connect but not serve; repeatable.
    #[arg(long = "client", value_name = "NAME")]
    pub clients: Vec<String>,
    /// Replace existing files (certificates signed by a replaced CA stop
    /// verifying).
    #[arg(long)]
    pub force: bool,
}

/// `ID:AZ` → (id, AZ); the characters are checked with everything else by
/// [`certs::generate_dev`], which reports every problem at once.
fn parse_node(spec: &str) -> Result<(String, String), String> {
    spec.split_once(':')
        .map(|(id, az)| (id.to_owned(), az.to_owned()))
        .ok_or_else(|| format!("expected ID:AZ (e.g. n1:az-a), got {spec:?}"))
}

pub fn run(command: CertsCommand) -> anyhow::Result<()> {
    match command {
        CertsCommand::Dev(args) => {
            let written = certs::generate_dev(&args.out, &args.nodes, &args.clients, args.force)?;
            println!(
                "wrote {} file(s) in {} ({DEV_CA_NAME}):",
                written.files.len(),
                args.out.display()
            );
            let shown: Vec<_> = written
                .files
                .iter()
                .map(|f| (f.path.display().to_string(), &f.what))
                .collect();
            let width = shown.iter().map(|(path, _)| path.len()).max().unwrap_or(0);
            for (path, what) in shown {
                println!("  {path:<width$}  {what}");
            }
            if args.force {
                let stale = stale_certificates(&args.out, &written);
                if !stale.is_empty() {
                    eprintln!(
                        "note: issued by the CA just replaced, so no longer accepted: {}",
                        stale.join(", ")
                    );
                }
            }
            Ok(())
        }
    }
}

/// Other certificates in `dir` than those just written: after `--force`
/// they were signed by the CA that was replaced. Only for a note, so a
/// directory that cannot be listed yields none.
fn stale_certificates(dir: &Path, written: &Written) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut stale: Vec<String> = entries
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "pem"))
        .filter(|path| !written.files.iter().any(|f| f.path == *path))
        .map(|path| path.display().to_string())
        .collect();
    stale.sort();
    stale
}
