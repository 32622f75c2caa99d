//! Tests of loading, overriding and validating the configuration, and of the
//! error reports: every mistake in a file is reported with its key path.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::{ClientAuth, Config, ConfigErrors, Problem, SqliteSync, env_overrides};

const EXAMPLE: &str = include_str!("../vatio.example.toml");

fn env(vars: &[(&str, &str)]) -> Vec<(String, String)> {
    vars.iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn parse(text: &str) -> Result<Config, ConfigErrors> {
    Config::from_toml_str(text, &[])
}

/// The report as `key: reason` lines, for comparing whole reports.
fn report(result: Result<Config, ConfigErrors>) -> Vec<String> {
    match result {
        Ok(config) => panic!("expected problems, got {config:?}"),
        Err(errors) => errors.problems.iter().map(ToString::to_string).collect(),
    }
}

fn parse_ok(text: &str) -> Config {
    match parse(text) {
        Ok(config) => config,
        Err(errors) => panic!("expected a valid configuration, got:\n{errors}"),
    }
}

#[test]
fn archive_roots_are_paths_or_s3_locations() {
    use crate::ArchiveRoot;
    let config = parse_ok(
        "[archiver]\nprimary_root = \"s3://plant-a/bronze/\"\nreplica_root = \"/mnt/az-b\"",
    );
    assert_eq!(
        config.archiver.primary_root,
        ArchiveRoot::S3 {
            bucket: "plant-a".into(),
            prefix: "bronze".into()
        }
    );
    assert_eq!(config.archive_dir(&config.archiver.primary_root), None);
    assert_eq!(
        config.archive_dir(&config.archiver.replica_root),
        Some(PathBuf::from("/mnt/az-b"))
    );
    // The same bucket and prefix on another endpoint is another AZ's copy.
    parse_ok(
        "[archiver]\nprimary_root = \"s3://vatio\"\nreplica_root = \"s3://vatio\"\n\
         [stores.s3_replica]\nendpoint = \"http://az-b:9000\"",
    );
}

#[test]
fn the_replica_s3_service_takes_what_it_leaves_empty_from_the_primary() {
    let config = parse_ok(
        "[stores.s3]\nendpoint = \"http://a:9000\"\naccess_key_id = \"ka\"\nallow_http = true\n\
         [stores.s3_replica]\nendpoint = \"http://b:9000\"",
    );
    let replica = config.stores.s3_replica.or_from(&config.stores.s3);
    assert_eq!(replica.endpoint, "http://b:9000");
    assert_eq!(replica.access_key_id, "ka");
    assert_eq!(replica.region, "us-east-1");
    assert!(replica.allow_http);
}

#[test]
fn defaults_are_valid() {
    assert_eq!(Config::default().validate(), Ok(()));
}

#[test]
fn an_empty_file_gives_the_defaults() {
    assert_eq!(parse_ok(""), Config::default());
    assert_eq!(parse_ok("# nothing set\n[aggregator]\n"), Config::default());
}

#[test]
fn no_file_and_no_environment_gives_the_defaults() {
    let config = Config::load(None, Vec::new()).expect("defaults load");
    assert_eq!(config, Config::default());
}

#[test]
fn the_example_file_is_the_defaults() {
    assert_eq!(parse_ok(EXAMPLE), Config::default());
}

#[test]
fn the_example_file_sets_every_setting() {
    let example: toml::Table = EXAMPLE.parse().expect("example parses");
    let mut missing = Vec::new();
    missing_keys(&crate::parse::schema(), &example, "", &mut missing);
    assert!(missing.is_empty(), "not in vatio.example.toml: {missing:?}");
}

fn missing_keys(schema: &toml::Table, table: &toml::Table, prefix: &str, out: &mut Vec<String>) {
    for (key, value) in schema {
        let path = crate::parse::join(prefix, key);
        match (value, table.get(key)) {
            (toml::Value::Table(s), Some(toml::Value::Table(t))) => missing_keys(s, t, &path, out),
            (_, None) => out.push(path),
            _ => {}
        }
    }
}

#[test]
fn the_defaults_round_trip_through_toml() {
    let text = toml::to_string(&Config::default()).expect("defaults serialize");
    assert_eq!(parse_ok(&text), Config::default());
}

#[test]
fn a_file_sets_values_and_leaves_the_rest_at_defaults() {
    let config = parse_ok(
        r#"
        [node]
        id = "press-line-3"
        listen = "0.0.0.0:7500"

        [aggregator]
        flush_max_delay = "750ms"

        [stream_etl.thresholds]
        torque_fault_nm = 350   # an integer is accepted for a number

        [stores]
        synchronous = "full"
        "#,
    );
    assert_eq!(config.node.id, "press-line-3");
    assert_eq!(config.node.listen.port(), 7500);
    assert_eq!(
        config.aggregator.flush_max_delay,
        Duration::from_millis(750)
    );
    assert_eq!(config.stream_etl.thresholds.torque_fault_nm, 350.0);
    assert_eq!(config.stores.synchronous, SqliteSync::Full);
    assert_eq!(config.aggregator.flush_max_points, 5_000);
    assert_eq!(config.ingest, Config::default().ingest);
}

#[test]
fn env_names_become_key_paths() {
    let overrides = env_overrides(env(&[
        ("VATIO_AGGREGATOR__FLUSH_MAX_DELAY", "10s"),
        ("VATIO_STREAM_ETL__THRESHOLDS__TORQUE_FAULT_NM", "300"),
        ("VATIO_LOG", "debug"),
        ("VATIO_CONFIG", "/etc/vatio.toml"),
        ("PATH", "/usr/bin"),
        ("vatio_node__id", "lower-case prefix is not ours"),
    ]));
    assert_eq!(
        overrides,
        env(&[
            ("aggregator.flush_max_delay", "10s"),
            ("stream_etl.thresholds.torque_fault_nm", "300"),
        ])
    );
}

#[test]
fn env_overrides_are_applied_and_typed() {
    let config = Config::load(
        None,
        env(&[
            ("VATIO_AGGREGATOR__FLUSH_MAX_DELAY", "10s"),
            ("VATIO_INGEST__MAX_BATCH_READINGS", "500"),
            ("VATIO_STREAM_ETL__THRESHOLDS__POWER_SPIKE_FACTOR", "2.5"),
            ("VATIO_NODE__ID", "1234"), // a string setting stays a string
            ("VATIO_NODE__DATA_DIR", "/var/lib/vatio"),
            ("VATIO_STORES__SYNCHRONOUS", "off"),
            ("VATIO_LOG", "debug"),
        ]),
    )
    .expect("valid overrides");
    assert_eq!(config.aggregator.flush_max_delay, Duration::from_secs(10));
    assert_eq!(config.ingest.max_batch_readings, 500);
    assert_eq!(config.stream_etl.thresholds.power_spike_factor, 2.5);
    assert_eq!(config.node.id, "1234");
    assert_eq!(config.node.data_dir, PathBuf::from("/var/lib/vatio"));
    assert_eq!(config.stores.synchronous, SqliteSync::Off);
}

#[test]
fn env_overrides_win_over_the_file() {
    let overrides = env_overrides(env(&[("VATIO_AGGREGATOR__FLUSH_MAX_POINTS", "42")]));
    let config =
        Config::from_toml_str("[aggregator]\nflush_max_points = 7\n", &overrides).expect("valid");
    assert_eq!(config.aggregator.flush_max_points, 42);
}

#[test]
fn bad_env_overrides_are_reported_with_the_variable() {
    let result = Config::load(
        None,
        env(&[
            ("VATIO_AGGREGATOR__FLUSH_DELAY", "10s"),
            ("VATIO_NODE_ID", "n"),
            ("VATIO_INGEST__MAX_BATCH_READINGS", "lots"),
            ("VATIO_AGGREGATOR__FLUSH_MAX_DELAY", "0s"),
            ("VATIO_DEVICE", "x"),
        ]),
    );
    assert_eq!(
        report(result),
        [
            r#"aggregator.flush_max_delay: must be > 0, got "0s" (set by VATIO_AGGREGATOR__FLUSH_MAX_DELAY)"#,
            "env VATIO_AGGREGATOR__FLUSH_DELAY: unknown setting `aggregator.flush_delay`, did you mean VATIO_AGGREGATOR__FLUSH_MAX_DELAY?",
            "env VATIO_DEVICE: `device` is a section, not a setting",
            "env VATIO_NODE_ID: unknown setting `node_id`; levels are separated by a double underscore: VATIO_NODE__ID",
            r#"ingest.max_batch_readings: expected a whole number from 0 to 4294967295, got "lots" (set by VATIO_INGEST__MAX_BATCH_READINGS)"#,
        ]
    );
}

#[test]
fn a_file_with_many_mistakes_reports_every_one() {
    let result = parse(
        r#"
        [node]
        idd = "press-1"                 # unknown key
        listen = "localhost"            # not an address

        [ingest]
        max_batch_readings = "lots"     # wrong type
        retry_after = 5                 # a duration must be a string

        [aggregator]
        flush_max_delay = "0s"          # zero duration
        flush_max_points = -5           # negative count

        [stream_etl.thresholds]
        power_spike_factor = 0.5        # out of range
        torque_fault_nm = nan           # not finite

        [archiver]
        staging_retention = "1h"        # below the minimum
        replica_root = "archive/primary"

        [stores]
        timeseries = "influx"           # not a backend (yet)

        [aggregatr]                     # unknown section
        "#,
    );
    assert_eq!(
        report(result),
        [
            r#"aggregator.flush_max_delay: must be > 0, got "0s""#,
            "aggregator.flush_max_points: expected a whole number from 0 to 4294967295, got -5",
            "aggregatr: unknown key, did you mean `aggregator`?",
            r#"archiver.replica_root: must differ from archiver.primary_root, both are "archive/primary""#,
            r#"archiver.staging_retention: must be >= "2h", got "1h""#,
            r#"ingest.max_batch_readings: expected a whole number from 0 to 4294967295, got "lots""#,
            r#"ingest.retry_after: expected a duration such as "200ms", "5s" or "168h", got 5"#,
            r#"node.idd: unknown key, did you mean `id`?"#,
            r#"node.listen: expected an address such as "127.0.0.1:7400", got "localhost""#,
            "stores.timeseries: unknown variant `influx`, expected `embedded` or `influxdb`",
            "stream_etl.thresholds.power_spike_factor: must be > 1.0, got 0.5",
            "stream_etl.thresholds.torque_fault_nm: must be a finite number, got nan",
        ]
    );
}

#[test]
fn every_semantic_check_names_its_key_and_quotes_the_value() {
    let cases = [
        (
            "[node]\nid = \"\"",
            r#"node.id: must be 1 to 64 characters from [A-Za-z0-9_-], got """#,
        ),
        (
            "[node]\naz = \"az a\"",
            r#"node.az: must be 1 to 64 characters from [A-Za-z0-9_-], got "az a""#,
        ),
        (
            "[node]\ndata_dir = \"\"",
            r#"node.data_dir: must not be empty, got """#,
        ),
        (
            "[ingest]\nmax_batch_readings = 0",
            "ingest.max_batch_readings: must be between 1 and 100000, got 0",
        ),
        (
            "[ingest]\nmax_batch_readings = 100001\nmax_inflight_readings = 200000",
            "ingest.max_batch_readings: must be between 1 and 100000, got 100001",
        ),
        (
            "[ingest]\nmax_inflight_readings = 9999",
            "ingest.max_inflight_readings: must be >= ingest.max_batch_readings (10000), got 9999",
        ),
        (
            "[ingest]\nretry_after = \"0ms\"",
            r#"ingest.retry_after: must be > 0, got "0s""#,
        ),
        (
            "[ingest]\nmax_device_id_bytes = 1025",
            "ingest.max_device_id_bytes: must be between 1 and 1024, got 1025",
        ),
        (
            "[device]\nidle_passivate_after = \"0s\"",
            r#"device.idle_passivate_after: must be > 0, got "0s""#,
        ),
        (
            "[device]\nreorder_window = 0",
            "device.reorder_window: must be between 1 and 65536, got 0",
        ),
        (
            "[device]\nreorder_max_hold = \"0s\"",
            r#"device.reorder_max_hold: must be > 0, got "0s""#,
        ),
        (
            "[device]\nmax_past_age = \"0s\"",
            r#"device.max_past_age: must be > 0, got "0s""#,
        ),
        (
            "[device]\nmailbox_batches = 0",
            "device.mailbox_batches: must be > 0, got 0",
        ),
        (
            "[supervision]\nmax_restarts = 0",
            "supervision.max_restarts: must be > 0, got 0",
        ),
        (
            "[supervision]\nrestart_window = \"0s\"",
            r#"supervision.restart_window: must be > 0, got "0s""#,
        ),
        (
            "[supervision]\nbackoff_initial = \"0s\"",
            r#"supervision.backoff_initial: must be > 0, got "0s""#,
        ),
        (
            "[supervision]\nbackoff_max = \"50ms\"",
            r#"supervision.backoff_max: must be >= supervision.backoff_initial ("100ms"), got "50ms""#,
        ),
        (
            "[supervision]\npoison_attempts = 0",
            "supervision.poison_attempts: must be > 0, got 0",
        ),
        (
            "[aggregator]\nflush_max_points = 0",
            "aggregator.flush_max_points: must be > 0, got 0",
        ),
        (
            "[aggregator]\nmailbox_readings = 0",
            "aggregator.mailbox_readings: must be > 0, got 0",
        ),
        (
            "[stream_etl]\nflush_max_docs = 0",
            "stream_etl.flush_max_docs: must be > 0, got 0",
        ),
        (
            "[stream_etl]\nflush_max_delay = \"0s\"",
            r#"stream_etl.flush_max_delay: must be > 0, got "0s""#,
        ),
        (
            "[stream_etl]\nretention = \"0s\"",
            r#"stream_etl.retention: must be > 0, got "0s""#,
        ),
        (
            "[cluster]\ngossip_listen = \"localhost\"",
            r#"cluster.gossip_listen: must be an address like "127.0.0.1:7401", got "localhost""#,
        ),
        (
            "[cluster]\nseeds = [\"10.0.0.1:7401\", \"nowhere\"]",
            r#"cluster.seeds[1]: must be an address like "127.0.0.1:7401", got "nowhere""#,
        ),
        (
            "[cluster]\ngossip_listen = \"127.0.0.1:7401\"\ncluster_id = \"a b\"",
            r#"cluster.cluster_id: must be 1 to 64 characters from [A-Za-z0-9_-], got "a b""#,
        ),
        (
            "[log]\nfsync = \"interval(0s)\"",
            r#"log.fsync: interval must be > 0, got "interval(0s)""#,
        ),
        (
            "[log]\nfsync = \"interval(3s)\"\n\n[cluster]\ngossip_listen = \"127.0.0.1:7401\"",
            r#"log.fsync: in a cluster the interval must be at most half of cluster.peer_timeout ("5s"), since a replica answers only after its interval fsync; got "interval(3s)""#,
        ),
        (
            "[stream_etl]\nsweep_interval = \"0s\"",
            r#"stream_etl.sweep_interval: must be > 0, got "0s""#,
        ),
        (
            "[stream_etl]\nmailbox_readings = 0",
            "stream_etl.mailbox_readings: must be > 0, got 0",
        ),
        (
            "[stream_etl.thresholds]\nover_temperature_c = inf",
            "stream_etl.thresholds.over_temperature_c: must be a finite number, got inf",
        ),
        (
            "[stream_etl.thresholds]\nmotor_over_temperature_c = -inf",
            "stream_etl.thresholds.motor_over_temperature_c: must be a finite number, got -inf",
        ),
        (
            "[stream_etl.thresholds]\nhigh_humidity_pct = nan",
            "stream_etl.thresholds.high_humidity_pct: must be a finite number, got nan",
        ),
        (
            "[stream_etl.thresholds]\nvibration_fault_mm_s = nan",
            "stream_etl.thresholds.vibration_fault_mm_s: must be a finite number, got nan",
        ),
        (
            "[stream_etl.thresholds]\ntorque_fault_nm = 0",
            "stream_etl.thresholds.torque_fault_nm: must be > 0, got 0.0",
        ),
        (
            "[stream_etl.thresholds]\npower_spike_factor = 1",
            "stream_etl.thresholds.power_spike_factor: must be > 1.0, got 1.0",
        ),
        (
            "[stream_etl.thresholds]\npower_spike_min_kw = -0.5",
            "stream_etl.thresholds.power_spike_min_kw: must be >= 0.0, got -0.5",
        ),
        (
            "[archiver]\nprimary_root = \"\"\nreplica_root = \"r\"",
            r#"archiver.primary_root: must not be empty, got """#,
        ),
        (
            "[archiver]\nreplica_root = \"archive/primary/copy\"",
            r#"archiver.replica_root: must not contain or be inside archiver.primary_root ("archive/primary"), got "archive/primary/copy""#,
        ),
        (
            "[archiver]\nseal_interval = \"0s\"",
            r#"archiver.seal_interval: must be > 0, got "0s""#,
        ),
        (
            "[archiver]\nstaging_retention = \"119m\"",
            r#"archiver.staging_retention: must be >= "2h", got "1h 59m""#,
        ),
        (
            "[archiver]\nmailbox_readings = 0",
            "archiver.mailbox_readings: must be > 0, got 0",
        ),
        (
            "[dead_letters]\nlist_limit_max = 0",
            "dead_letters.list_limit_max: must be > 0, got 0",
        ),
        (
            "[dead_letters]\nmailbox_readings = 0",
            "dead_letters.mailbox_readings: must be > 0, got 0",
        ),
        (
            "[stores]\nsqlite_dir = \"\"",
            r#"stores.sqlite_dir: must not be empty, got """#,
        ),
        (
            "[stores]\ntimeseries = \"influxdb\"",
            r#"stores.influxdb.url: must be a URL such as "http://127.0.0.1:8086", got """#,
        ),
        (
            "[stores]\ntimeseries = \"influxdb\"\n[stores.influxdb]\nurl = \"http://i:8086\"\ndatabase = \"\"",
            r#"stores.influxdb.database: must be set (InfluxQL reads name it), got """#,
        ),
        (
            "[stores]\ntimeseries = \"influxdb\"\n[stores.influxdb]\nurl = \"http://i:8086\"\napi = \"v2\"\nbucket = \"b\"",
            r#"stores.influxdb.org: must be set (api = "v2" writes name it), got """#,
        ),
        (
            "[stores]\ntimeseries = \"influxdb\"\n[stores.influxdb]\nurl = \"http://i:8086\"\nusername = \"u\"",
            "stores.influxdb.password: must be set together with username",
        ),
        (
            "[stores]\ntimeseries = \"influxdb\"\n[stores.influxdb]\nurl = \"http://i:8086\"\ntoken = \"t\"\nusername = \"u\"\npassword = \"p\"",
            "stores.influxdb.username: set either token or username/password, not both",
        ),
        (
            "[stores.influxdb]\nbatch_points_max = 0",
            "stores.influxdb.batch_points_max: must be between 1 and 100000, got 0",
        ),
        (
            "[stores]\ndocuments = \"mongodb\"\n[stores.mongodb]\nuri = \"http://u:secret@m:27017\"",
            r#"stores.mongodb.uri: must be a connection string starting with "mongodb://" or "mongodb+srv://", got "http://u:***@m:27017""#,
        ),
        (
            "[stores]\ndocuments = \"mongodb\"\n[stores.mongodb]\nuri = \"mongodb://m\"\ndatabase = \"a.b\"",
            r#"stores.mongodb.database: must be 1 to 63 characters without /\. "$*<>:|?, got "a.b""#,
        ),
        (
            "[archiver]\nprimary_root = \"s3://Bad_Bucket/x\"",
            r#"archiver.primary_root: the bucket of "s3://Bad_Bucket/x" must be 3 to 63 characters from [a-z0-9.-], starting and ending with a letter or digit"#,
        ),
        (
            "[archiver]\nprimary_root = \"gs://b/x\"",
            r#"archiver.primary_root: expected a path or "s3://bucket/prefix", got "gs://b/x""#,
        ),
        (
            "[archiver]\nprimary_root = \"s3://vatio/archive\"\nreplica_root = \"s3://vatio/archive/copy\"",
            r#"archiver.replica_root: must not contain or be inside archiver.primary_root ("s3://vatio/archive"), got "s3://vatio/archive/copy""#,
        ),
    ];
    for (text, expected) in cases {
        assert_eq!(report(parse(text)), [expected], "for file:\n{text}");
    }
}

#[test]
fn settings_without_a_minimum_accept_zero() {
    let config = parse_ok(
        "[device]\nmax_future_skew = \"0s\"\n[aggregator]\nwindow_lateness = \"0s\"\n\
         [archiver]\nseal_after = \"0s\"\n[node]\nlisten = \"127.0.0.1:0\"\n",
    );
    assert_eq!(config.device.max_future_skew, Duration::ZERO);
}

#[test]
fn several_type_errors_in_one_section_are_all_reported() {
    let result = parse(
        "[device]\nreorder_window = \"big\"\nmailbox_batches = true\nmax_past_age = \"forever\"\n",
    );
    assert_eq!(
        report(result),
        [
            "device.mailbox_batches: expected a whole number from 0 to 4294967295, got true",
            r#"device.max_past_age: expected a duration such as "200ms", "5s" or "168h", got "forever""#,
            r#"device.reorder_window: expected a whole number from 0 to 4294967295, got "big""#,
        ]
    );
}

#[test]
fn a_section_of_the_wrong_type_is_reported() {
    let result = parse("aggregator = 5\n[stream_etl]\nthresholds = \"high\"\n");
    assert_eq!(
        report(result),
        [
            "aggregator: expected a table, got 5",
            r#"stream_etl.thresholds: expected a table, got "high""#,
        ]
    );
}

#[test]
fn a_syntax_error_is_reported_with_its_line_and_column() {
    let result = parse("[node]\nid = \"n1\"\n\n[aggregator\nflush_max_points = 10\n");
    let problems = match result {
        Ok(_) => panic!("a syntax error must be reported"),
        Err(errors) => errors.problems,
    };
    assert!(!problems.is_empty());
    assert!(
        problems[0].key.starts_with("line 4, column "),
        "got {problems:?}"
    );
}

#[test]
fn every_syntax_error_is_reported() {
    let problems = match parse("a = \nb = 1\nc = 'unterminated\n") {
        Ok(_) => panic!("syntax errors must be reported"),
        Err(errors) => errors.problems,
    };
    let lines: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
    assert!(
        lines.iter().any(|k| k.starts_with("line 1,")),
        "got {problems:?}"
    );
    assert!(
        lines.iter().any(|k| k.starts_with("line 3,")),
        "got {problems:?}"
    );
}

#[test]
fn a_duplicate_key_is_reported() {
    let problems = match parse("[node]\nid = \"a\"\nid = \"b\"\n") {
        Ok(_) => panic!("a duplicate key must be reported"),
        Err(errors) => errors.problems,
    };
    assert!(
        problems[0].key.starts_with("line 3, column "),
        "got {problems:?}"
    );
}

#[test]
fn the_report_prints_one_problem_per_line() {
    let errors = ConfigErrors {
        problems: vec![Problem::new("a.b", "bad"), Problem::new("c", "worse")],
    };
    assert_eq!(errors.to_string(), "a.b: bad\nc: worse");
}

#[test]
fn load_reads_the_file_and_the_environment() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("vatio.toml");
    std::fs::write(&path, "[node]\nid = \"from-file\"\naz = \"az-b\"\n").expect("write");
    let config = Config::load(Some(&path), env(&[("VATIO_NODE__AZ", "az-c")])).expect("valid");
    assert_eq!(config.node.id, "from-file");
    assert_eq!(config.node.az, "az-c");
}

#[test]
fn load_reports_a_missing_file_by_its_path() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("missing.toml");
    let problems = match Config::load(Some(&path), Vec::new()) {
        Ok(_) => panic!("a missing file must be reported"),
        Err(errors) => errors.problems,
    };
    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0].key, path.display().to_string());
    assert!(
        problems[0]
            .message
            .starts_with("cannot read the configuration file")
    );
}

#[test]
fn data_paths_resolve_against_the_data_dir() {
    let mut config = Config::default();
    config.node.data_dir = PathBuf::from("/srv/vatio");
    assert_eq!(
        config.data_path(Path::new("db")),
        PathBuf::from("/srv/vatio/db")
    );
    assert_eq!(
        config.data_path(Path::new("/mnt/archive")),
        PathBuf::from("/mnt/archive")
    );
}

#[test]
fn validate_reports_every_problem_of_a_built_config() {
    let mut config = Config::default();
    config.aggregator.flush_max_delay = Duration::ZERO;
    config.ingest.max_batch_readings = 0;
    let errors = config.validate().expect_err("two problems");
    assert_eq!(
        errors.to_string(),
        "aggregator.flush_max_delay: must be > 0, got \"0s\"\n\
         ingest.max_batch_readings: must be between 1 and 100000, got 0"
    );
}

#[test]
fn tls_is_off_by_default_and_read_from_its_section() {
    assert!(!Config::default().tls.enabled());
    let config = parse_ok(
        r#"
        [tls]
        ca_file = "certs/ca.pem"
        cert_file = "certs/node-1.pem"
        key_file = "certs/node-1.key"
        allowed_azs = ["az-a", "az-b"]
        allowed_peers = ["node-2"]
        client_auth = "required"
        "#,
    );
    let tls = &config.tls;
    assert!(tls.enabled());
    assert_eq!(tls.ca_file, PathBuf::from("certs/ca.pem"));
    assert_eq!(tls.cert_file, PathBuf::from("certs/node-1.pem"));
    assert_eq!(tls.key_file, PathBuf::from("certs/node-1.key"));
    assert_eq!(tls.allowed_azs, ["az-a", "az-b"]);
    assert_eq!(tls.allowed_peers, ["node-2"]);
    assert_eq!(tls.client_auth, ClientAuth::Required);
}

#[test]
fn tls_needs_all_three_files_or_none() {
    assert_eq!(
        report(parse("[tls]\ncert_file = \"n.pem\"")),
        [
            r#"tls.ca_file: must be set as tls.cert_file is: TLS needs all three files or none, got """#,
            r#"tls.key_file: must be set as tls.cert_file is: TLS needs all three files or none, got """#,
        ]
    );
    assert_eq!(
        report(parse("[tls]\nca_file = \"ca.pem\"\ncert_file = \"n.pem\"")),
        [
            r#"tls.key_file: must be set as tls.ca_file and tls.cert_file are: TLS needs all three files or none, got """#,
        ]
    );
}

#[test]
fn tls_restrictions_are_refused_without_tls() {
    assert_eq!(
        report(parse(
            "[tls]\nallowed_azs = [\"az-a\"]\nallowed_peers = [\"n2\"]\nclient_auth = \"required\""
        )),
        [
            r#"tls.allowed_azs: has no effect without TLS (set tls.ca_file, tls.cert_file and tls.key_file), got ["az-a"]"#,
            r#"tls.allowed_peers: has no effect without TLS (set tls.ca_file, tls.cert_file and tls.key_file), got ["n2"]"#,
            r#"tls.client_auth: has no effect without TLS (set tls.ca_file, tls.cert_file and tls.key_file), got "required""#,
        ]
    );
}

#[test]
fn tls_allow_lists_hold_node_and_az_names() {
    let files = "ca_file = \"ca.pem\"\ncert_file = \"n.pem\"\nkey_file = \"n.key\"\n";
    assert_eq!(
        report(parse(&format!(
            "[tls]\n{files}allowed_azs = [\"az-a\", \"az b\"]\nallowed_peers = [\"\"]"
        ))),
        [
            r#"tls.allowed_azs[1]: must be 1 to 64 characters from [A-Za-z0-9_-], got "az b""#,
            r#"tls.allowed_peers[0]: must be 1 to 64 characters from [A-Za-z0-9_-], got """#,
        ]
    );
    assert_eq!(
        report(parse(&format!("[tls]\n{files}client_auth = \"always\""))),
        [r#"tls.client_auth: unknown variant `always`, expected `optional` or `required`"#]
    );
}
