//! vatio's typed configuration: one TOML file plus `VATIO_*` environment
//! overrides, with a sane default for every setting and validation that
//! reports every problem with the key it concerns.
//!
//! ```
//! use vatio_config::Config;
//!
//! let text = "[aggregator]\nflush_max_delay = \"0s\"\nflush_max_points = \"lots\"\n";
//! let overrides = vatio_config::env_overrides([(
//!     "VATIO_INGEST__MAX_BATCH_READINGS".to_owned(),
//!     "0".to_owned(),
//! )]);
//! let Err(errors) = Config::from_toml_str(text, &overrides) else {
//!     panic!("three mistakes");
//! };
//! assert_eq!(
//!     errors.to_string(),
//!     "aggregator.flush_max_delay: must be > 0, got \"0s\"\n\
//!      aggregator.flush_max_points: expected a whole number from 0 to 4294967295, got \"lots\"\n\
//!      ingest.max_batch_readings: must be between 1 and 100000, got 0 (set by VATIO_INGEST__MAX_BATCH_READINGS)"
//! );
//! ```

mod errors;
mod overrides;
mod parse;
mod sections;
#[cfg(test)]
mod tests;
mod validate;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use errors::{ConfigErrors, Problem};
pub use overrides::env_overrides;
pub use sections::{
    AckMode, AggregatorConfig, ArchiveRoot, ArchiverConfig, ClusterConfig, DeadLetterConfig,
    DeviceConfig, DocumentsBackend, InfluxApi, InfluxDbConfig, IngestConfig, LogConfig, LogFsync,
    MongoDbConfig, NoOtherAz, NodeConfig, S3Config, SqliteSync, StoresConfig, StreamEtlConfig,
    SupervisionConfig, Thresholds, TimeSeriesBackend,
};
pub use sections::{ClientAuth, TlsConfig};
pub use validate::{NAME_RULE, is_valid_name};

/// The whole configuration of one node.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Identity and addresses of this node.
    pub node: NodeConfig,
    /// Limits on the ingest path.
    pub ingest: IngestConfig,
    /// The write-ahead log behind every acknowledgement.
    pub log: LogConfig,
    /// Gossip membership with the other nodes, if any.
    pub cluster: ClusterConfig,
    /// Per-device actors.
    pub device: DeviceConfig,
    /// Restarting failed actors.
    pub supervision: SupervisionConfig,
    /// Windowed aggregates into the time-series store.
    pub aggregator: AggregatorConfig,
    /// Event detection into the document store.
    pub stream_etl: StreamEtlConfig,
    /// Hourly Parquet archive in two AZs.
    pub archiver: ArchiverConfig,
    /// The dead-letter office.
    pub dead_letters: DeadLetterConfig,
    /// Store backends.
    pub stores: StoresConfig,
    /// Mutual TLS between nodes and for clients.
    pub tls: TlsConfig,
}

impl Config {
    /// Parse TOML text, apply overrides (key path like
    /// `"aggregator.flush_max_delay"` -> raw string value), validate.
    ///
    /// Every problem is reported: syntax errors (keyed `line L, column C`,
    /// in which case nothing else is checked), unknown keys, type errors in
    /// every section, unknown override keys (keyed `env VATIO_X__Y`) and
    /// every failed semantic check, sorted by key.
    pub fn from_toml_str(
        text: &str,
        overrides: &[(String, String)],
    ) -> Result<Config, ConfigErrors> {
        let mut table = parse::parse_table(text).map_err(|problems| ConfigErrors { problems })?;
        let schema = parse::schema();
        let mut problems = Vec::new();
        let sources = overrides::apply(&mut table, &schema, overrides, &mut problems);
        parse::remove_unknown_keys(&mut table, &schema, "", &mut problems);
        let config = parse::deserialize_sections(table, &mut problems);
        validate::check(&config, &mut problems);
        for problem in &mut problems {
            if let Some(name) = sources.get(&problem.key) {
                problem.message.push_str(&format!(" (set by {name})"));
            }
        }
        ConfigErrors::from_problems(problems)?;
        Ok(config)
    }

    /// Read the file (`None` = defaults only), take overrides from the given
    /// environment variables (only names starting with `VATIO_`), validate.
    ///
    /// A file that cannot be read is one problem keyed by its path.
    pub fn load(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigErrors> {
        let text = match path {
            Some(path) => std::fs::read_to_string(path).map_err(|err| ConfigErrors {
                problems: vec![Problem::new(
                    path.display().to_string(),
                    format!("cannot read the configuration file: {err}"),
                )],
            })?,
            None => String::new(),
        };
        Config::from_toml_str(&text, &env_overrides(env))
    }

    /// Semantic checks; every problem found, not just the first.
    pub fn validate(&self) -> Result<(), ConfigErrors> {
        validate::validate(self)
    }

    /// Resolve a path setting relative to `node.data_dir` (absolute paths unchanged).
    pub fn data_path(&self, p: &Path) -> PathBuf {
        self.node.data_dir.join(p)
    }

    /// The directory of a local archive root, resolved like [`Self::data_path`];
    /// None for an `s3://` root.
    pub fn archive_dir(&self, root: &ArchiveRoot) -> Option<PathBuf> {
        root.local().map(|p| self.data_path(p))
    }
}
