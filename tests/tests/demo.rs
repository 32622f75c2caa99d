//! `vatio demo` runs four real nodes, two per AZ, fed by the simulated
//! factory: each node lists all four as ready members, keeps its own log and
//! stores in its own directory, takes a share of the devices, and together
//! the nodes count exactly the readings the factory was told they accepted.

use std::path::Path;
use std::time::Duration;

use vatio_cluster::commands::demo::{DemoOptions, Redraw, SEATS, node_config, run_until};
use vatio_cluster::factory::FactorySpec;

/// The files in `dir`, or an error naming it.
fn files_in(dir: &Path) -> anyhow::Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))? {
        names.push(entry?.file_name().to_string_lossy().into_owned());
    }
    Ok(names)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_nodes_in_two_azs_share_the_factory() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let options = DemoOptions {
        base: vatio_config::Config::default(),
        data_dir: dir.path().to_path_buf(),
        listen: "127.0.0.1:0".parse()?,
        factory: FactorySpec::default(),
        duration: Some(Duration::from_secs(3)),
        refresh: Duration::from_secs(1),
        redraw: Redraw::Lines,
    };
    let report = run_until(options, std::future::pending()).await?;

    let mut every_member: Vec<(String, String, bool)> = SEATS
        .iter()
        .map(|s| (s.id.to_owned(), s.az.to_owned(), true))
        .collect();
    every_member.sort();
    let ids: Vec<&str> = report.end.nodes.iter().map(|n| n.seat.id).collect();
    assert_eq!(ids, ["demo-a1", "demo-a2", "demo-b1", "demo-b2"]);

    let mut accepted_by_nodes = 0;
    for n in &report.end.nodes {
        let status = n
            .status
            .as_ref()
            .map_err(|e| anyhow::anyhow!("{} did not answer: {e}", n.seat.id))?;
        assert_eq!(
            (status.node_id.as_str(), status.az.as_str()),
            (n.seat.id, n.seat.az)
        );
        let mut members: Vec<(String, String, bool)> = status
            .members
            .iter()
            .map(|m| (m.node_id.clone(), m.az.clone(), m.ready))
            .collect();
        members.sort();
        assert_eq!(
            members, every_member,
            "{} sees every node as a ready member",
            n.seat.id
        );
        assert!(
            status.readings_accepted > 0,
            "{} took a share of the devices",
            n.seat.id
        );
        accepted_by_nodes += status.readings_accepted;

        let cfg = node_config(
            n.seat,
            &vatio_config::Config::default(),
            dir.path(),
            "127.0.0.1:0".parse()?,
            &[],
        )?;
        assert_eq!(n.data_dir, dir.path().join(n.seat.id));
        assert_eq!(cfg.node.data_dir, n.data_dir);
        let segments = files_in(&cfg.data_path(&cfg.log.dir).join("segments"))?;
        assert!(
            !segments.is_empty(),
            "{} has its own log segments",
            n.seat.id
        );
        let stores = files_in(&cfg.data_path(&cfg.stores.sqlite_dir))?;
        for store in [
            "timeseries.sqlite",
            "documents.sqlite",
            "dead_letters.sqlite",
        ] {
            assert!(
                stores.iter().any(|f| f == store),
                "{} has its own {store}: {stores:?}",
                n.seat.id
            );
        }
    }
    assert!(
        report.factory.accepted > 0,
        "the factory's readings were accepted"
    );
    assert_eq!(
        accepted_by_nodes, report.factory.accepted,
        "the nodes together accepted what the factory was told"
    );

    let last = report.final_lines();
    for seat in SEATS {
        assert!(last.contains(seat.id) && last.contains(seat.az), "{last}");
    }
    Ok(())
}

/// The README runs the demo with its default, relative data directory:
/// each node, which reads relative paths against its own data directory,
/// still finds the demo's certificates where the demo wrote them.
#[test]
fn a_relative_data_directory_still_leads_each_node_to_the_demo_certificates() -> anyhow::Result<()>
{
    let relative = Path::new("vatio-data/demo");
    let certs = std::path::absolute(relative.join("certs"))?;
    for seat in SEATS {
        let cfg = node_config(
            seat,
            &vatio_config::Config::default(),
            relative,
            "127.0.0.1:0".parse()?,
            &[],
        )?;
        for file in [&cfg.tls.ca_file, &cfg.tls.cert_file, &cfg.tls.key_file] {
            let read_at = cfg.data_path(file);
            assert!(
                read_at.starts_with(&certs),
                "{}: {} is read at {}, not under {}",
                seat.id,
                file.display(),
                read_at.display(),
                certs.display()
            );
        }
    }
    Ok(())
}

/// `vatio demo --config FILE` with a file that points the stores at real
/// servers: the four nodes share one InfluxDB database, one MongoDB
/// database and the two buckets, each writing its own share.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_runs_on_the_production_stores_a_base_configuration_names() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let real = vatio_tests::real_stores::RealStores::on_shared_servers()?;
    let file = dir.path().join("stores.toml");
    let mut base = vatio_config::Config::default();
    real.apply(&mut base);
    std::fs::write(&file, toml_of(&base)?)?;
    let base =
        vatio_config::Config::load(Some(&file), Vec::new()).map_err(|e| anyhow::anyhow!("{e}"))?;
    let options = DemoOptions {
        base,
        data_dir: dir.path().join("demo"),
        listen: "127.0.0.1:0".parse()?,
        factory: FactorySpec::default(),
        duration: Some(Duration::from_secs(3)),
        refresh: Duration::from_secs(1),
        redraw: Redraw::Off,
    };
    let report = run_until(options, std::future::pending()).await?;
    let accepted: u64 = report
        .end
        .nodes
        .iter()
        .filter_map(|n| n.status.as_ref().ok())
        .map(|s| s.readings_accepted)
        .sum();
    assert!(accepted > 0, "the factory's readings were taken");

    let counted = real.influx_counted()?;
    assert_eq!(
        counted, accepted as f64,
        "InfluxDB counts every accepted reading once"
    );
    let writers: std::collections::BTreeSet<String> =
        real.influx_rows()?.keys().map(|k| k.node.clone()).collect();
    assert_eq!(
        writers.len(),
        SEATS.len(),
        "every node wrote its share: {writers:?}"
    );
    let docs = real.mongo_documents("minute_docs").await?;
    assert!(!docs.is_empty(), "minute documents in MongoDB");
    let parquet = real
        .bucket_objects(&real.primary_bucket)
        .await?
        .into_keys()
        .filter(|p| p.ends_with(".parquet"))
        .count();
    assert!(parquet > 0, "the archive is in S3");
    Ok(())
}

/// The settings the file needs, as TOML: the whole configuration.
fn toml_of(cfg: &vatio_config::Config) -> anyhow::Result<String> {
    Ok(toml::to_string(cfg)?)
}
