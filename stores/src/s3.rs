//! The archive's buckets on S3 or an S3-compatible service, through
//! `object_store`'s AWS backend: one [`ObjectStore`] per archive side, each
//! possibly on its own endpoint and account (one per AZ).
//!
//! Settings left empty in the configuration come from the usual `AWS_*`
//! environment variables (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
//! `AWS_SESSION_TOKEN`, `AWS_ENDPOINT`, …), and credentials then from the
//! instance or container role as the AWS SDKs find them.

use std::sync::Arc;

use object_store::aws::AmazonS3Builder;
use object_store::prefix::PrefixStore;
use object_store::{ClientOptions, ObjectStore, RetryConfig};
use vatio_config::S3Config;

use crate::Result;

/// The objects under `s3://{bucket}/{prefix}` on the service `cfg` names.
/// Nothing is sent yet: a bucket that is missing or unreachable shows at
/// the first write, which the archiver retries.
pub fn s3_object_store(bucket: &str, prefix: &str, cfg: &S3Config) -> Result<Arc<dyn ObjectStore>> {
    // One quick retry inside object_store for a dropped connection; the
    // archiver's guard does the long retrying (backoff, breaker, status).
    let retry = RetryConfig {
        max_retries: 1,
        retry_timeout: cfg.request_timeout.saturating_mul(2),
        ..RetryConfig::default()
    };
    // The client options replace the builder's own, `allow_http` included.
    let client = ClientOptions::new()
        .with_allow_http(cfg.allow_http)
        .with_timeout(cfg.request_timeout)
        .with_connect_timeout(cfg.request_timeout.min(std::time::Duration::from_secs(5)));
    let mut builder = AmazonS3Builder::from_env()
        .with_bucket_name(bucket)
        .with_client_options(client)
        .with_retry(retry);
    if !cfg.endpoint.is_empty() {
        builder = builder.with_endpoint(&cfg.endpoint);
    }
    if !cfg.region.is_empty() {
        builder = builder.with_region(&cfg.region);
    }
    if !cfg.access_key_id.is_empty() {
        builder = builder.with_access_key_id(&cfg.access_key_id);
    }
    if !cfg.secret_access_key.is_empty() {
        builder = builder.with_secret_access_key(&cfg.secret_access_key);
    }
    let store = builder.build()?;
    if prefix.is_empty() {
        Ok(Arc::new(store))
    } else {
        Ok(Arc::new(PrefixStore::new(store, prefix)))
    }
}
