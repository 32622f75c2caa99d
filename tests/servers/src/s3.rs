//! Buckets on the S3 test server. S3 requests must be signed, so this asks
//! boto3 (installed with moto) rather than signing by hand.

use std::process::Command;

use anyhow::Context as _;

/// The credentials the tests use against moto (it accepts any).
pub const ACCESS_KEY_ID: &str = "testing";
pub const SECRET_ACCESS_KEY: &str = "testing";
pub const REGION: &str = "us-east-1";

/// Creates `bucket` on the S3 server at `endpoint` (such as moto's
/// `Server::url`).
pub fn create_bucket(endpoint: &str, bucket: &str) -> anyhow::Result<()> {
    let script = "import sys, boto3\n\
        boto3.client('s3', endpoint_url=sys.argv[1], region_name=sys.argv[2],\n\
            aws_access_key_id=sys.argv[3], aws_secret_access_key=sys.argv[4]\n\
        ).create_bucket(Bucket=sys.argv[5])\n";
    let output = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(endpoint)
        .arg(REGION)
        .arg(ACCESS_KEY_ID)
        .arg(SECRET_ACCESS_KEY)
        .arg(bucket)
        .output()
        .context("running python3 with boto3")?;
    anyhow::ensure!(
        output.status.success(),
        "creating bucket {bucket} on {endpoint}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}
