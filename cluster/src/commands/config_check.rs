//! `vatio config check FILE`: every problem in a configuration, with the key.

use std::path::Path;
use std::process::ExitCode;

use vatio_config::Config;

use crate::transport::Transport;

/// Exit code for an invalid configuration.
const INVALID: u8 = 2;

pub fn run(path: &Path) -> ExitCode {
    match Config::load(Some(path), std::env::vars()) {
        // The TLS files too, as the node loads them at start.
        Ok(cfg) if let Err(e) = Transport::from_config(&cfg) => {
            eprintln!("{}: 1 problem(s)\n  tls: {e}", path.display());
            ExitCode::from(INVALID)
        }
        Ok(cfg) => {
            println!(
                "{}: ok (node {} in {}, gRPC on {}, data in {})",
                path.display(),
                cfg.node.id,
                cfg.node.az,
                cfg.node.listen,
                cfg.node.data_dir.display()
            );
            ExitCode::SUCCESS
        }
        Err(errors) => {
            eprintln!("{}: {} problem(s)", path.display(), errors.problems.len());
            for p in &errors.problems {
                eprintln!("  {}: {}", p.key, p.message);
            }
            ExitCode::from(INVALID)
        }
    }
}
