//! InfluxDB over https: a node's time series trusts the server through
//! `[stores.influxdb] ca_file`, and a server whose certificate that CA did
//! not issue is refused with an error that names the store and the URL,
//! and retried (the log holds the data), never written to.

use vatio_cluster::certs::{TlsFiles, generate_dev};
use vatio_config::InfluxDbConfig;
use vatio_stores::influxdb::InfluxTimeSeries;
use vatio_stores::{DeviceId, DeviceKind, Metric, MinutePoint, Stats, TimeSeriesStore};
use vatio_test_servers::{Kind, Server};

/// A development CA and a certificate for a "node" named `influx`, which
/// names localhost and 127.0.0.1 as every vatio dev certificate does.
fn dev_ca(dir: &std::path::Path) -> anyhow::Result<TlsFiles> {
    generate_dev(dir, &[("influx".into(), "az-a".into())], &[], true)?;
    Ok(TlsFiles::node(dir, "influx"))
}

fn point() -> MinutePoint {
    MinutePoint {
        device: DeviceId::new("m-1"),
        kind: DeviceKind::ElectricityMeter,
        metric: Metric::Power,
        minute_ms: 1_767_225_600_000,
        stats: Stats {
            count: 1,
            min: 2.0,
            max: 2.0,
            sum: 2.0,
            last: 2.0,
            last_ts_ms: 1_767_225_600_500,
            last_seq: 1,
        },
        log_pos: 64,
    }
}

#[tokio::test]
async fn the_time_series_speaks_https_to_a_server_its_ca_file_trusts() -> anyhow::Result<()> {
    let certs = tempfile::tempdir()?;
    let files = dev_ca(certs.path())?;
    let server = Server::start_https(
        Kind::InfluxDbHttps,
        &std::fs::read_to_string(&files.cert)?,
        &std::fs::read_to_string(&files.key)?,
    )?;
    let trusted = InfluxDbConfig {
        url: server.url(),
        database: "_internal".into(),
        ca_file: files.ca.clone(),
        ..InfluxDbConfig::default()
    };
    let store = InfluxTimeSeries::connect(&trusted, "node-a1")?;
    // The database does not exist: the server's answer came over TLS.
    let err = store
        .write_points(&[point()])
        .await
        .expect_err("no such database");
    assert!(err.to_string().contains("database not found"), "{err}");

    // Another CA's certificate: the handshake fails, transiently, by name.
    let other = tempfile::tempdir()?;
    let stranger = dev_ca(other.path())?;
    let mismatched = InfluxDbConfig {
        ca_file: stranger.ca,
        ..trusted
    };
    let store = InfluxTimeSeries::connect(&mismatched, "node-a1")?;
    let err = store
        .write_points(&[point()])
        .await
        .expect_err("untrusted certificate");
    assert!(err.is_transient(), "{err}");
    let text = format!("{err:#}");
    assert!(
        text.contains("influxdb") && text.contains(&server.url()),
        "{text}"
    );
    Ok(())
}
