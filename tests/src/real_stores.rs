//! A node's configuration pointed at the real servers (InfluxDB 1.6,
//! SecantusDB for MongoDB, moto for S3), each test in a database and
//! buckets of its own, and what those servers hold, read back with their
//! own APIs (InfluxQL over HTTP, the MongoDB driver, S3 through
//! `object_store`'s client), not through vatio's stores.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use anyhow::Context as _;
use futures::TryStreamExt;
use mongodb::bson::Document;
use object_store::ObjectStoreExt;
use vatio_config::{ArchiveRoot, Config, DocumentsBackend, S3Config, TimeSeriesBackend};
use vatio_test_servers::{Kind, Server, create_bucket, s3, shared, unique_name};

/// One test's database, document database and two buckets (one per AZ).
#[derive(Clone, Debug)]
pub struct RealStores {
    pub influx_url: String,
    pub influx_addr: std::net::SocketAddr,
    pub database: String,
    pub mongo_uri: String,
    pub s3_url: String,
    pub moto_addr: SocketAddr,
    pub primary_bucket: String,
    pub replica_bucket: String,
}

impl RealStores {
    /// Fresh names on the process's shared servers.
    pub fn on_shared_servers() -> anyhow::Result<Self> {
        Self::on(
            shared(Kind::InfluxDb),
            shared(Kind::SecantusDb),
            shared(Kind::Moto),
        )
    }

    /// Fresh names on the given servers, created there.
    pub fn on(influx: &Server, mongo: &Server, moto: &Server) -> anyhow::Result<Self> {
        let stores = Self::at(influx.addr(), mongo.addr(), moto.addr());
        stores.create()?;
        Ok(stores)
    }

    /// Fresh names for servers at these addresses, which may not be up yet:
    /// nothing is created ([`Self::create`] does that once they are).
    pub fn at(influx: SocketAddr, mongo: SocketAddr, moto: SocketAddr) -> Self {
        Self {
            influx_url: format!("http://{influx}"),
            influx_addr: influx,
            database: unique_name("vatio"),
            mongo_uri: format!("mongodb://{mongo}"),
            s3_url: format!("http://{moto}"),
            moto_addr: moto,
            primary_bucket: unique_name("az-a"),
            replica_bucket: unique_name("az-b"),
        }
    }

    /// Creates the InfluxDB database and the two buckets (MongoDB creates
    /// its database on the first write).
    pub fn create(&self) -> anyhow::Result<()> {
        let (status, body) = vatio_test_servers::post(
            self.influx_addr,
            "/query",
            &format!("q=CREATE+DATABASE+%22{}%22", self.database),
        )?;
        anyhow::ensure!(status == 200, "creating database {}: {body}", self.database);
        create_bucket(&self.s3_url, &self.primary_bucket)?;
        create_bucket(&self.s3_url, &self.replica_bucket)?;
        Ok(())
    }

    /// `cfg` with every store on these servers.
    pub fn apply(&self, cfg: &mut Config) {
        cfg.stores.timeseries = TimeSeriesBackend::Influxdb;
        cfg.stores.influxdb.url = self.influx_url.clone();
        cfg.stores.influxdb.database = self.database.clone();
        cfg.stores.documents = DocumentsBackend::Mongodb;
        cfg.stores.mongodb.uri = self.mongo_uri.clone();
        cfg.stores.mongodb.database = self.database.clone();
        cfg.stores.s3 = self.s3_config();
        cfg.archiver.primary_root = ArchiveRoot::S3 {
            bucket: self.primary_bucket.clone(),
            prefix: "archive".into(),
        };
        cfg.archiver.replica_root = ArchiveRoot::S3 {
            bucket: self.replica_bucket.clone(),
            prefix: "archive".into(),
        };
    }

    pub fn s3_config(&self) -> S3Config {
        S3Config {
            endpoint: self.s3_url.clone(),
            region: s3::REGION.into(),
            access_key_id: s3::ACCESS_KEY_ID.into(),
            secret_access_key: s3::SECRET_ACCESS_KEY.into(),
            allow_http: true,
            ..S3Config::default()
        }
    }

    /// Every row of the minute points, as InfluxQL on `/query` returns it:
    /// (device, metric, node, minute) → the fields by name.
    pub fn influx_rows(&self) -> anyhow::Result<BTreeMap<InfluxKey, BTreeMap<String, f64>>> {
        let statement = "SELECT * FROM vatio_minute";
        let form = format!(
            "db={}&epoch=ms&q={}",
            self.database,
            statement
                .bytes()
                .map(|b| format!("%{b:02X}"))
                .collect::<String>()
        );
        let (status, body) = vatio_test_servers::post(self.influx_addr, "/query", &form)?;
        anyhow::ensure!(status == 200, "InfluxQL: {body}");
        let answer: serde_json::Value = serde_json::from_str(&body)?;
        let mut rows = BTreeMap::new();
        let Some(series) = answer["results"][0]["series"].as_array() else {
            return Ok(rows);
        };
        for s in series {
            let columns: Vec<String> = s["columns"]
                .as_array()
                .context("columns")?
                .iter()
                .filter_map(|c| c.as_str().map(str::to_owned))
                .collect();
            for row in s["values"].as_array().context("values")? {
                let cell = |name: &str| {
                    columns
                        .iter()
                        .position(|c| c == name)
                        .map(|i| row[i].clone())
                        .unwrap_or_default()
                };
                let text = |name: &str| cell(name).as_str().unwrap_or_default().to_owned();
                let key = InfluxKey {
                    device: text("device"),
                    metric: text("metric"),
                    node: text("node"),
                    minute_ms: cell("time").as_i64().context("time")?,
                };
                let fields = columns
                    .iter()
                    .filter_map(|c| cell(c).as_f64().map(|v| (c.clone(), v)))
                    .filter(|(c, _)| c != "time")
                    .collect();
                rows.insert(key, fields);
            }
        }
        Ok(rows)
    }

    /// The readings InfluxDB counts: `count` summed over every point.
    pub fn influx_counted(&self) -> anyhow::Result<f64> {
        Ok(self
            .influx_rows()?
            .values()
            .map(|fields| fields.get("count").copied().unwrap_or_default())
            .sum())
    }

    /// Every document of `collection`, by `_id`.
    pub async fn mongo_documents(
        &self,
        collection: &str,
    ) -> anyhow::Result<BTreeMap<String, Document>> {
        let client = mongodb::Client::with_uri_str(&self.mongo_uri).await?;
        let coll = client
            .database(&self.database)
            .collection::<Document>(collection);
        let docs: Vec<Document> = coll.find(Document::new()).await?.try_collect().await?;
        docs.into_iter()
            .map(|d| {
                let id = d.get_str("_id").context("a string _id")?.to_owned();
                Ok((id, d))
            })
            .collect()
    }

    /// Every object of a bucket, by path, with its bytes.
    pub async fn bucket_objects(&self, bucket: &str) -> anyhow::Result<BTreeMap<String, Vec<u8>>> {
        let store = vatio_stores::s3::s3_object_store(bucket, "", &self.s3_config())?;
        let listed: Vec<_> = object_store::ObjectStore::list(&*store, None)
            .try_collect()
            .await?;
        let mut out = BTreeMap::new();
        for meta in listed {
            let bytes = store.get(&meta.location).await?.bytes().await?;
            out.insert(meta.location.to_string(), bytes.to_vec());
        }
        Ok(out)
    }
}

/// A minute point's identity in InfluxDB: its tags and time.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct InfluxKey {
    pub device: String,
    pub metric: String,
    pub node: String,
    pub minute_ms: i64,
}
