//! The time-series conformance suite against real InfluxDB 1.6 (v1 writes,
//! InfluxQL reads), each test in a database of its own on one server per
//! test process; what only this backend promises (the points as InfluxDB
//! itself shows them, escaping, refused points, gzip, errors that name the
//! server); and the v2 write API against VictoriaMetrics, read back through
//! its export API.

mod conformance;

use vatio_config::{InfluxApi, InfluxDbConfig};
use vatio_stores::influxdb::InfluxTimeSeries;
use vatio_stores::{DeviceKind, Error, Metric, TimeSeriesStore};
use vatio_test_servers::{Kind, Server, shared, unique_name};

use conformance::point;

/// A configuration for `server`'s database `database`.
fn config(server: &Server, database: &str) -> InfluxDbConfig {
    InfluxDbConfig {
        url: server.url(),
        database: database.to_owned(),
        ..InfluxDbConfig::default()
    }
}

/// A fresh database on the shared InfluxDB server.
fn fresh_database() -> (String, InfluxDbConfig) {
    let server = shared(Kind::InfluxDb);
    let name = unique_name("vatio");
    create_database(server, &name);
    let cfg = config(server, &name);
    (name, cfg)
}

fn create_database(server: &Server, name: &str) {
    let (status, body) = vatio_test_servers::post(
        server.addr(),
        "/query",
        &format!("q=CREATE+DATABASE+%22{name}%22"),
    )
    .expect("create database");
    assert_eq!(status, 200, "{body}");
}

/// InfluxQL straight to the server, not through vatio: the JSON answer.
fn influxql(database: &str, statement: &str) -> serde_json::Value {
    let server = shared(Kind::InfluxDb);
    let form = format!(
        "db={database}&epoch=ms&q={}",
        statement
            .bytes()
            .map(|b| format!("%{b:02X}"))
            .collect::<String>()
    );
    let (status, body) = vatio_test_servers::post(server.addr(), "/query", &form).expect("query");
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).expect("JSON answer")
}

fn store_on_fresh_database() -> InfluxTimeSeries {
    let (_, cfg) = fresh_database();
    InfluxTimeSeries::connect(&cfg, "node-a1").expect("connect")
}

macro_rules! conformance {
    ($($check:ident),+ $(,)?) => {
        mod timeseries {
            $(
                #[tokio::test]
                async fn $check() {
                    let store = crate::store_on_fresh_database();
                    crate::conformance::timeseries::$check(&store).await;
                }
            )+
        }
    };
}

conformance!(
    writing_a_point_twice_keeps_one_copy_with_the_new_values,
    a_points_log_position_reads_back_as_written,
    a_missing_point_is_none,
    an_empty_write_is_a_no_op,
    latest_is_the_last_value_of_each_series_newest_minute,
    series_merges_minutes_into_epoch_aligned_windows,
    a_zero_minute_window_is_refused,
    power_flow_sums_each_meters_mean_power_per_minute,
    max_minute_is_the_newest_stored_minute,
    minutes_lists_the_matching_points_and_merge_recomputes_the_answers,
);

#[tokio::test]
async fn two_nodes_shares_of_one_minute_add_up() {
    let (_, cfg) = fresh_database();
    let a = InfluxTimeSeries::connect(&cfg, "node-a1").expect("connect a");
    let b = InfluxTimeSeries::connect(&cfg, "node-b1").expect("connect b");
    conformance::timeseries::two_nodes_shares_of_one_minute_add_up(&a, &b).await;
}

#[tokio::test]
async fn points_are_stored_as_documented_one_per_share() {
    let (db, cfg) = fresh_database();
    let store = InfluxTimeSeries::connect(&cfg, "node-a1").expect("connect");
    let p = point(
        "m,1 =x",
        DeviceKind::ElectricityMeter,
        Metric::Power,
        2,
        &[4.0, 6.0],
    );
    store
        .write_points(std::slice::from_ref(&p))
        .await
        .expect("write");
    let answer = influxql(&db, "SELECT * FROM vatio_minute");
    let series = &answer["results"][0]["series"][0];
    let columns: Vec<&str> = series["columns"]
        .as_array()
        .expect("columns")
        .iter()
        .filter_map(|c| c.as_str())
        .collect();
    assert_eq!(
        columns,
        [
            "time",
            "count",
            "device",
            "kind",
            "last",
            "last_seq",
            "last_ts_ms",
            "log_pos",
            "max",
            "metric",
            "min",
            "node",
            "sum"
        ]
    );
    let row = &series["values"][0];
    assert_eq!(row[0], p.minute_ms);
    assert_eq!(row[1], 2);
    assert_eq!(row[2], "m,1 =x", "tag escaping round-trips");
    assert_eq!(row[3], "electricity_meter");
    assert_eq!(row[9], "power");
    assert_eq!(row[11], "node-a1");
    assert_eq!(row[12], 10.0);
    // Integer fields are integers and statistics floats, for good.
    let types = influxql(&db, "SHOW FIELD KEYS FROM vatio_minute");
    let fields = &types["results"][0]["series"][0]["values"];
    let field_type = |name: &str| {
        fields
            .as_array()
            .expect("field keys")
            .iter()
            .find(|f| f[0] == name)
            .map(|f| f[1].clone())
    };
    for name in ["count", "last_ts_ms", "last_seq", "log_pos"] {
        assert_eq!(field_type(name), Some("integer".into()), "{name}");
    }
    for name in ["min", "max", "sum", "last"] {
        assert_eq!(field_type(name), Some("float".into()), "{name}");
    }
}

#[tokio::test]
async fn a_named_retention_policy_is_written_and_read() {
    let (db, mut cfg) = fresh_database();
    let (status, body) = vatio_test_servers::post(
        shared(Kind::InfluxDb).addr(),
        "/query",
        &format!(
            "q=CREATE+RETENTION+POLICY+%22ten+years%22+ON+%22{db}%22+DURATION+520w+REPLICATION+1"
        ),
    )
    .expect("create retention policy");
    assert_eq!(status, 200, "{body}");
    cfg.retention_policy = "ten years".into();
    let store = InfluxTimeSeries::connect(&cfg, "node-a1").expect("connect");
    let p = point("m1", DeviceKind::ElectricityMeter, Metric::Power, 0, &[1.0]);
    store
        .write_points(std::slice::from_ref(&p))
        .await
        .expect("write");
    assert_eq!(
        store
            .point(&p.device, p.metric, p.minute_ms)
            .await
            .expect("read"),
        Some(p.clone())
    );
    let named = influxql(
        &db,
        "SELECT count(\"count\") FROM \"ten years\".vatio_minute",
    );
    assert_eq!(named["results"][0]["series"][0]["values"][0][1], 1);
    let default = influxql(&db, "SELECT count(\"count\") FROM vatio_minute");
    assert!(
        default["results"][0]["series"].is_null(),
        "nothing in the default policy: {default}"
    );
}

#[tokio::test]
async fn writes_without_gzip_and_in_small_batches_land_whole() {
    let (db, mut cfg) = fresh_database();
    cfg.gzip = false;
    cfg.batch_points_max = 3;
    let store = InfluxTimeSeries::connect(&cfg, "node-a1").expect("connect");
    let points: Vec<_> = (0..10)
        .map(|m| {
            point(
                "c1",
                DeviceKind::ClimateSensor,
                Metric::Temperature,
                m,
                &[20.0],
            )
        })
        .collect();
    store.write_points(&points).await.expect("write");
    let answer = influxql(&db, "SELECT count(\"count\") FROM vatio_minute");
    assert_eq!(answer["results"][0]["series"][0]["values"][0][1], 10);
}

#[tokio::test]
async fn a_field_type_conflict_is_a_rejection_with_the_servers_message() {
    let (db, cfg) = fresh_database();
    // Someone else wrote `count` as a float into the same measurement and
    // shard (InfluxDB checks field types per shard, by time).
    let (status, body) = vatio_test_servers::post(
        shared(Kind::InfluxDb).addr(),
        &format!("/write?db={db}&precision=ms"),
        &format!(
            "vatio_minute,device=x,kind=robot_arm,metric=torque,node=z count=1.5 {}",
            conformance::T0
        ),
    )
    .expect("foreign write");
    assert_eq!(status, 204, "{body}");
    let store = InfluxTimeSeries::connect(&cfg, "node-a1").expect("connect");
    let p = point("m1", DeviceKind::ElectricityMeter, Metric::Power, 0, &[1.0]);
    let err = store.write_points(&[p]).await.expect_err("type conflict");
    assert!(matches!(err, Error::Rejected { .. }), "{err}");
    assert!(err.to_string().contains("field type conflict"), "{err}");
    assert!(err.to_string().contains("/write"), "names the URL: {err}");
}

#[tokio::test]
async fn a_missing_database_and_a_closed_port_are_retried_not_refused() {
    let server = shared(Kind::InfluxDb);
    let store =
        InfluxTimeSeries::connect(&config(server, "no_such_db"), "node-a1").expect("connect");
    let p = point("m1", DeviceKind::ElectricityMeter, Metric::Power, 0, &[1.0]);
    let err = store
        .write_points(std::slice::from_ref(&p))
        .await
        .expect_err("no database");
    assert!(err.is_transient(), "{err}");
    assert!(err.to_string().contains("database not found"), "{err}");
    let err = store.max_minute().await.expect_err("no database to read");
    assert!(err.is_transient(), "{err}");

    let closed = InfluxDbConfig {
        url: "http://127.0.0.1:1".into(),
        ..InfluxDbConfig::default()
    };
    let store = InfluxTimeSeries::connect(&closed, "node-a1").expect("connect needs no server");
    let err = store.write_points(&[p]).await.expect_err("closed port");
    assert!(err.is_transient(), "{err}");
    assert!(
        err.to_string().contains("127.0.0.1:1"),
        "names the URL: {err}"
    );
}

#[tokio::test]
async fn wrong_credentials_are_retried_and_name_the_server_and_its_answer() {
    // A server of its own, with authentication on.
    let server = Server::start(Kind::InfluxDbAuth).expect("start influxdb");
    let (status, body) = vatio_test_servers::post(
        server.addr(),
        "/query",
        "q=CREATE+USER+vatio+WITH+PASSWORD+%27s3cret%27+WITH+ALL+PRIVILEGES",
    )
    .expect("create user");
    assert_eq!(status, 200, "{body}");
    let name = unique_name("vatio");
    let (status, body) = vatio_test_servers::post(
        server.addr(),
        "/query?u=vatio&p=s3cret",
        &format!("q=CREATE+DATABASE+%22{name}%22"),
    )
    .expect("create database");
    assert_eq!(status, 200, "{body}");
    let p = point("m1", DeviceKind::ElectricityMeter, Metric::Power, 0, &[1.0]);

    let wrong = InfluxDbConfig {
        username: "vatio".into(),
        password: "wrong".into(),
        ..config(&server, &name)
    };
    let store = InfluxTimeSeries::connect(&wrong, "node-a1").expect("connect");
    let err = store
        .write_points(std::slice::from_ref(&p))
        .await
        .expect_err("refused");
    assert!(
        err.is_transient(),
        "the log holds the data until it is fixed: {err}"
    );
    let text = err.to_string();
    assert!(
        text.contains(&server.url()) && text.contains("401"),
        "{text}"
    );
    assert!(
        text.contains("authorization failed"),
        "the server's answer: {text}"
    );
    assert!(!text.contains("wrong"), "no password in messages: {text}");

    let right = InfluxDbConfig {
        password: "s3cret".into(),
        ..wrong
    };
    let store = InfluxTimeSeries::connect(&right, "node-a1").expect("connect");
    store
        .write_points(std::slice::from_ref(&p))
        .await
        .expect("write");
    let stored = store
        .point(&p.device, p.metric, p.minute_ms)
        .await
        .expect("read");
    assert_eq!(stored, Some(p));
}

#[tokio::test]
async fn the_v2_write_api_lands_every_field_in_victoria_metrics() {
    let server = shared(Kind::VictoriaMetrics);
    let cfg = InfluxDbConfig {
        url: server.url(),
        api: InfluxApi::V2,
        org: "plant".into(),
        bucket: "vatio".into(),
        token: "t".into(),
        ..InfluxDbConfig::default()
    };
    let device = unique_name("meter");
    let store = InfluxTimeSeries::connect(&cfg, "node-a1").expect("connect");
    let p = point(
        &device,
        DeviceKind::ElectricityMeter,
        Metric::Power,
        1,
        &[4.0, 6.0],
    );
    store
        .write_points(std::slice::from_ref(&p))
        .await
        .expect("v2 write");
    let exported = export_until(server, &device, 8);
    let value = |field: &str| {
        exported
            .iter()
            .find(|s| s["metric"]["__name__"] == format!("vatio_minute_{field}"))
            .map(|s| {
                (
                    s["values"][0].as_f64(),
                    s["timestamps"][0].as_i64(),
                    s["metric"]["node"].clone(),
                )
            })
    };
    assert_eq!(
        value("count"),
        Some((Some(2.0), Some(p.minute_ms), "node-a1".into()))
    );
    assert_eq!(value("sum").and_then(|v| v.0), Some(10.0));
    assert_eq!(value("log_pos").and_then(|v| v.0), Some(p.log_pos as f64));
}

/// VictoriaMetrics' export of `device`'s series, once `expected` of them
/// are visible (it makes new data searchable within a second or two).
fn export_until(server: &Server, device: &str, expected: usize) -> Vec<serde_json::Value> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let _ = vatio_test_servers::get(server.addr(), "/internal/force_flush");
        let target = format!("/api/v1/export?match[]=%7Bdevice%3D%22{device}%22%7D");
        let (status, body) = vatio_test_servers::get(server.addr(), &target).expect("export");
        assert_eq!(status, 200, "{body}");
        let series: Vec<serde_json::Value> = body
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(serde_json::Value::is_object)
            .collect();
        if series.len() >= expected || std::time::Instant::now() > deadline {
            return series;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}
