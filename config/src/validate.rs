//! Semantic checks on a deserialized configuration: ranges, non-zero
//! durations, finite thresholds and relations between settings. Every
//! failed check is reported, each quoting the value it is about.

use std::fmt::Display;
use std::path::Path;
use std::time::Duration;

use crate::{Config, ConfigErrors, Problem};

/// The rule for node ids, AZ names (and the names certificates carry), as
/// the error messages state it.
pub const NAME_RULE: &str = "1 to 64 characters from [A-Za-z0-9_-]";

/// Whether `value` follows [`NAME_RULE`]: safe in URIs, file names and
/// log lines without escaping.
pub fn is_valid_name(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 64
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

pub(crate) fn validate(config: &Config) -> Result<(), ConfigErrors> {
    let mut problems = Vec::new();
    check(config, &mut problems);
    ConfigErrors::from_problems(problems)
}

/// Push a problem for every failed check.
pub(crate) fn check(config: &Config, problems: &mut Vec<Problem>) {
    let mut c = Checks { problems };

    let node = &config.node;
    c.name("node.id", &node.id);
    c.name("node.az", &node.az);
    c.not_empty("node.data_dir", &node.data_dir);

    let ingest = &config.ingest;
    c.between(
        "ingest.max_batch_readings",
        ingest.max_batch_readings,
        1,
        100_000,
    );
    if ingest.max_inflight_readings < u64::from(ingest.max_batch_readings) {
        c.fail(
            "ingest.max_inflight_readings",
            format!(
                "must be >= ingest.max_batch_readings ({}), got {}",
                ingest.max_batch_readings, ingest.max_inflight_readings
            ),
        );
    }
    c.positive_duration("ingest.retry_after", ingest.retry_after);
    c.between(
        "ingest.max_device_id_bytes",
        ingest.max_device_id_bytes,
        1,
        1024,
    );

    let log = &config.log;
    c.not_empty("log.dir", &log.dir);
    c.between(
        "log.segment_bytes_max",
        log.segment_bytes_max,
        1 << 20,
        4 << 30,
    );
    c.between(
        "log.group_bytes_max",
        log.group_bytes_max,
        64 << 10,
        256 << 20,
    );
    c.positive("log.tail_cache_bytes_max", log.tail_cache_bytes_max);
    if log.unconsumed_bytes_max < 1 << 20 {
        c.fail(
            "log.unconsumed_bytes_max",
            format!(
                "must be >= 1048576 (1 MiB), got {}",
                log.unconsumed_bytes_max
            ),
        );
    }
    c.positive_duration("log.checkpoint_interval", log.checkpoint_interval);
    if let crate::LogFsync::Interval(d) = log.fsync
        && d.is_zero()
    {
        c.fail(
            "log.fsync",
            "interval must be > 0, got \"interval(0s)\"".to_owned(),
        );
    }

    let cluster = &config.cluster;
    c.socket_addr("cluster.gossip_listen", &cluster.gossip_listen, true);
    c.socket_addr("cluster.gossip_advertise", &cluster.gossip_advertise, true);
    for (i, seed) in cluster.seeds.iter().enumerate() {
        c.socket_addr(&format!("cluster.seeds[{i}]"), seed, false);
    }
    if cluster.enabled() && !is_valid_name(&cluster.cluster_id) {
        c.fail(
            "cluster.cluster_id",
            format!("must be {NAME_RULE}, got {}", quoted(&cluster.cluster_id)),
        );
    }
    c.positive_duration("cluster.gossip_interval", cluster.gossip_interval);
    c.positive_duration("cluster.peer_timeout", cluster.peer_timeout);
    // A replica answers a shipment only once the steps are on its disk, so
    // under `interval` an answer can take a whole interval: with an interval
    // near the peer timeout, shipments time out again and again.
    if let crate::LogFsync::Interval(d) = log.fsync
        && cluster.enabled()
        && d.saturating_mul(2) > cluster.peer_timeout
    {
        c.fail(
            "log.fsync",
            format!(
                "in a cluster the interval must be at most half of cluster.peer_timeout ({}), \
                 since a replica answers only after its interval fsync; got \"interval({})\"",
                duration(cluster.peer_timeout),
                humantime::format_duration(d)
            ),
        );
    }

    let device = &config.device;
    c.positive_duration("device.idle_passivate_after", device.idle_passivate_after);
    c.between("device.reorder_window", device.reorder_window, 1, 65_536);
    c.positive_duration("device.reorder_max_hold", device.reorder_max_hold);
    c.positive_duration("device.max_past_age", device.max_past_age);
    c.positive("device.mailbox_batches", device.mailbox_batches);

    let supervision = &config.supervision;
    c.positive("supervision.max_restarts", supervision.max_restarts);
    c.positive_duration("supervision.restart_window", supervision.restart_window);
    c.positive_duration("supervision.backoff_initial", supervision.backoff_initial);
    if supervision.backoff_max < supervision.backoff_initial {
        c.fail(
            "supervision.backoff_max",
            format!(
                "must be >= supervision.backoff_initial ({}), got {}",
                duration(supervision.backoff_initial),
                duration(supervision.backoff_max)
            ),
        );
    }
    c.positive("supervision.poison_attempts", supervision.poison_attempts);

    let aggregator = &config.aggregator;
    c.positive("aggregator.flush_max_points", aggregator.flush_max_points);
    c.positive_duration("aggregator.flush_max_delay", aggregator.flush_max_delay);
    c.positive("aggregator.mailbox_readings", aggregator.mailbox_readings);

    let etl = &config.stream_etl;
    c.positive("stream_etl.flush_max_docs", etl.flush_max_docs);
    c.positive_duration("stream_etl.flush_max_delay", etl.flush_max_delay);
    c.positive_duration("stream_etl.retention", etl.retention);
    c.positive_duration("stream_etl.sweep_interval", etl.sweep_interval);
    c.positive("stream_etl.mailbox_readings", etl.mailbox_readings);
    let t = &etl.thresholds;
    let prefix = "stream_etl.thresholds";
    c.finite(prefix, "over_temperature_c", t.over_temperature_c);
    c.finite(
        prefix,
        "motor_over_temperature_c",
        t.motor_over_temperature_c,
    );
    c.finite(prefix, "high_humidity_pct", t.high_humidity_pct);
    c.finite(prefix, "vibration_fault_mm_s", t.vibration_fault_mm_s);
    if c.finite(prefix, "torque_fault_nm", t.torque_fault_nm) && t.torque_fault_nm <= 0.0 {
        c.fail(
            "stream_etl.thresholds.torque_fault_nm",
            format!("must be > 0, got {}", float(t.torque_fault_nm)),
        );
    }
    if c.finite(prefix, "power_spike_factor", t.power_spike_factor) && t.power_spike_factor <= 1.0 {
        c.fail(
            "stream_etl.thresholds.power_spike_factor",
            format!("must be > 1.0, got {}", float(t.power_spike_factor)),
        );
    }
    if c.finite(prefix, "power_spike_min_kw", t.power_spike_min_kw) && t.power_spike_min_kw < 0.0 {
        c.fail(
            "stream_etl.thresholds.power_spike_min_kw",
            format!("must be >= 0.0, got {}", float(t.power_spike_min_kw)),
        );
    }

    let archiver = &config.archiver;
    check_archive_roots(config, &mut c);
    c.positive_duration("archiver.seal_interval", archiver.seal_interval);
    let two_hours = Duration::from_secs(2 * 3600);
    if archiver.staging_retention < two_hours {
        c.fail(
            "archiver.staging_retention",
            format!(
                "must be >= {}, got {}",
                duration(two_hours),
                duration(archiver.staging_retention)
            ),
        );
    }
    c.positive("archiver.mailbox_readings", archiver.mailbox_readings);

    let dead_letters = &config.dead_letters;
    c.positive("dead_letters.list_limit_max", dead_letters.list_limit_max);
    c.positive(
        "dead_letters.mailbox_readings",
        dead_letters.mailbox_readings,
    );

    c.not_empty("stores.sqlite_dir", &config.stores.sqlite_dir);
    check_influxdb(&config.stores, &mut c);
    c.positive_duration(
        "stores.s3.request_timeout",
        config.stores.s3.request_timeout,
    );
    check_mongodb(&config.stores, &mut c);

    check_tls(&config.tls, &mut c);
}

/// Both roots set and apart: two local directories neither inside the
/// other, two S3 locations neither inside the other.
fn check_archive_roots(config: &Config, c: &mut Checks<'_>) {
    use crate::ArchiveRoot;
    let archiver = &config.archiver;
    let roots = [
        ("archiver.primary_root", &archiver.primary_root),
        ("archiver.replica_root", &archiver.replica_root),
    ];
    for (key, root) in roots {
        if let ArchiveRoot::Local(dir) = root {
            c.not_empty(key, dir);
        }
    }
    let overlap = match (&archiver.primary_root, &archiver.replica_root) {
        (ArchiveRoot::Local(p), ArchiveRoot::Local(r)) => {
            // An empty root is reported above; comparing it would only add noise.
            if p.as_os_str().is_empty() || r.as_os_str().is_empty() {
                None
            } else {
                let (p, r) = (config.data_path(p), config.data_path(r));
                Some((p == r, p.starts_with(&r) || r.starts_with(&p)))
            }
        }
        (
            ArchiveRoot::S3 {
                bucket: pb,
                prefix: pp,
            },
            ArchiveRoot::S3 {
                bucket: rb,
                prefix: rp,
            },
        ) => {
            let inside = |a: &str, b: &str| a.is_empty() || b.starts_with(&format!("{a}/"));
            let same_service = config.stores.s3_replica.or_from(&config.stores.s3).endpoint
                == config.stores.s3.endpoint;
            let same_bucket = pb == rb && same_service;
            Some((
                same_bucket && pp == rp,
                same_bucket && (inside(pp, rp) || inside(rp, pp)),
            ))
        }
        _ => None,
    };
    match overlap {
        Some((true, _)) => c.fail(
            "archiver.replica_root",
            format!(
                "must differ from archiver.primary_root, both are {}",
                quoted(&archiver.replica_root)
            ),
        ),
        Some((false, true)) => c.fail(
            "archiver.replica_root",
            format!(
                "must not contain or be inside archiver.primary_root ({}), got {}",
                quoted(&archiver.primary_root),
                quoted(&archiver.replica_root)
            ),
        ),
        _ => {}
    }
}

/// What the InfluxDB backend needs, checked only when it is chosen.
fn check_influxdb(stores: &crate::StoresConfig, c: &mut Checks<'_>) {
    let influx = &stores.influxdb;
    c.between(
        "stores.influxdb.batch_points_max",
        influx.batch_points_max,
        1,
        100_000,
    );
    c.positive_duration("stores.influxdb.request_timeout", influx.request_timeout);
    if stores.timeseries != crate::TimeSeriesBackend::Influxdb {
        return;
    }
    c.http_url("stores.influxdb.url", &influx.url);
    // Reads are InfluxQL against a database under either API.
    c.required(
        "stores.influxdb.database",
        &influx.database,
        "InfluxQL reads name it",
    );
    if influx.api == crate::InfluxApi::V2 {
        c.required(
            "stores.influxdb.org",
            &influx.org,
            "api = \"v2\" writes name it",
        );
        c.required(
            "stores.influxdb.bucket",
            &influx.bucket,
            "api = \"v2\" writes name it",
        );
    }
    if !influx.token.is_empty() && !influx.username.is_empty() {
        c.fail(
            "stores.influxdb.username",
            "set either token or username/password, not both".to_owned(),
        );
    }
    if influx.username.is_empty() != influx.password.is_empty() {
        let (key, other) = if influx.username.is_empty() {
            ("stores.influxdb.username", "password")
        } else {
            ("stores.influxdb.password", "username")
        };
        c.fail(key, format!("must be set together with {other}"));
    }
}

/// What the MongoDB backend needs, checked only when it is chosen.
fn check_mongodb(stores: &crate::StoresConfig, c: &mut Checks<'_>) {
    if stores.documents != crate::DocumentsBackend::Mongodb {
        return;
    }
    let mongo = &stores.mongodb;
    if !(mongo.uri.starts_with("mongodb://") || mongo.uri.starts_with("mongodb+srv://")) {
        c.fail(
            "stores.mongodb.uri",
            format!(
                "must be a connection string starting with \"mongodb://\" or \"mongodb+srv://\", got {}",
                quoted(redact_password(&mongo.uri))
            ),
        );
    }
    // MongoDB's own rule for database names.
    let bad = mongo.database.is_empty()
        || mongo.database.len() > 63
        || mongo
            .database
            .chars()
            .any(|c| "/\\. \"$*<>:|?".contains(c) || c.is_control());
    if bad {
        c.fail(
            "stores.mongodb.database",
            format!(
                "must be 1 to 63 characters without /\\. \"$*<>:|?, got {}",
                quoted(&mongo.database)
            ),
        );
    }
}

/// A connection string with the password of its user info replaced, so an
/// error message never prints it.
fn redact_password(uri: &str) -> String {
    let Some((scheme, rest)) = uri.split_once("://") else {
        return uri.to_owned();
    };
    let Some((user_info, host)) = rest.split_once('@') else {
        return uri.to_owned();
    };
    match user_info.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => uri.to_owned(),
    }
}

/// TLS is all three files or none; the allow-lists name nodes and AZs;
/// restrictions that only TLS can enforce are refused without it, so that
/// none is silently ignored.
fn check_tls(tls: &crate::TlsConfig, c: &mut Checks<'_>) {
    let files = [
        ("tls.ca_file", &tls.ca_file),
        ("tls.cert_file", &tls.cert_file),
        ("tls.key_file", &tls.key_file),
    ];
    let set: Vec<&str> = files
        .iter()
        .filter(|(_, p)| !p.as_os_str().is_empty())
        .map(|(key, _)| *key)
        .collect();
    if !set.is_empty() && set.len() < files.len() {
        let verb = if set.len() == 1 { "is" } else { "are" };
        for (key, _) in files.iter().filter(|(key, _)| !set.contains(key)) {
            c.fail(
                key,
                format!(
                    "must be set as {} {verb}: TLS needs all three files or none, got \"\"",
                    set.join(" and ")
                ),
            );
        }
    }
    for (i, az) in tls.allowed_azs.iter().enumerate() {
        c.name(&format!("tls.allowed_azs[{i}]"), az);
    }
    for (i, peer) in tls.allowed_peers.iter().enumerate() {
        c.name(&format!("tls.allowed_peers[{i}]"), peer);
    }
    if set.is_empty() {
        let needs_tls =
            "has no effect without TLS (set tls.ca_file, tls.cert_file and tls.key_file)";
        if !tls.allowed_azs.is_empty() {
            c.fail(
                "tls.allowed_azs",
                format!("{needs_tls}, got {}", list(&tls.allowed_azs)),
            );
        }
        if !tls.allowed_peers.is_empty() {
            c.fail(
                "tls.allowed_peers",
                format!("{needs_tls}, got {}", list(&tls.allowed_peers)),
            );
        }
        if tls.client_auth == crate::ClientAuth::Required {
            c.fail("tls.client_auth", format!("{needs_tls}, got \"required\""));
        }
    }
}

struct Checks<'a> {
    problems: &'a mut Vec<Problem>,
}

impl Checks<'_> {
    fn fail(&mut self, key: &str, message: String) {
        self.problems.push(Problem::new(key, message));
    }

    fn positive(&mut self, key: &str, value: impl Into<u64>) {
        if value.into() == 0 {
            self.fail(key, "must be > 0, got 0".to_owned());
        }
    }

    fn between<T: PartialOrd + Display + Copy>(&mut self, key: &str, value: T, min: T, max: T) {
        if !(min..=max).contains(&value) {
            self.fail(key, format!("must be between {min} and {max}, got {value}"));
        }
    }

    fn positive_duration(&mut self, key: &str, value: Duration) {
        if value.is_zero() {
            self.fail(key, format!("must be > 0, got {}", duration(value)));
        }
    }

    /// Reports a NaN or infinite threshold; true if the value is finite.
    fn finite(&mut self, prefix: &str, field: &str, value: f64) -> bool {
        if !value.is_finite() {
            self.fail(
                &format!("{prefix}.{field}"),
                format!("must be a finite number, got {}", float(value)),
            );
        }
        value.is_finite()
    }

    /// Node and AZ names: 1 to 64 characters from `[A-Za-z0-9_-]`.
    fn name(&mut self, key: &str, value: &str) {
        if !is_valid_name(value) {
            self.fail(key, format!("must be {NAME_RULE}, got {}", quoted(value)));
        }
    }

    /// An "ip:port" address; empty only where `empty_ok`.
    fn socket_addr(&mut self, key: &str, value: &str, empty_ok: bool) {
        if empty_ok && value.trim().is_empty() {
            return;
        }
        if value.trim().parse::<std::net::SocketAddr>().is_err() {
            self.fail(
                key,
                format!(
                    "must be an address like \"127.0.0.1:7401\", got {}",
                    quoted(value)
                ),
            );
        }
    }

    /// A setting a chosen backend cannot do without.
    fn required(&mut self, key: &str, value: &str, why: &str) {
        if value.trim().is_empty() {
            self.fail(key, format!("must be set ({why}), got \"\""));
        }
    }

    /// An `http://` or `https://` URL with a host.
    fn http_url(&mut self, key: &str, value: &str) {
        let host = value
            .strip_prefix("http://")
            .or_else(|| value.strip_prefix("https://"))
            .map(|rest| rest.split(['/', '?']).next().unwrap_or(""));
        if host.is_none_or(str::is_empty) {
            self.fail(
                key,
                format!(
                    "must be a URL such as \"http://127.0.0.1:8086\", got {}",
                    quoted(value)
                ),
            );
        }
    }

    fn not_empty(&mut self, key: &str, value: &Path) {
        if value.as_os_str().is_empty() {
            self.fail(key, "must not be empty, got \"\"".to_owned());
        }
    }
}

/// A duration as it is written in the file, e.g. `"5s"`.
fn duration(d: Duration) -> String {
    quoted(humantime::format_duration(d))
}

/// A string as a TOML basic string.
fn quoted(s: impl Display) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// A list of strings as a TOML array, e.g. `["az-a", "az-b"]`.
fn list(values: &[String]) -> String {
    toml::Value::Array(values.iter().cloned().map(toml::Value::String).collect()).to_string()
}

/// A float as it is written in TOML (`1.0`, `nan`, `inf`).
fn float(f: f64) -> String {
    toml::Value::Float(f).to_string()
}
