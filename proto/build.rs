//! Compiles `proto/vatio/v1/*.proto` without a `protoc` binary: `protox`
//! parses them into a descriptor set, `tonic-prost-build` generates the code.
//! The descriptor set is also kept for the gRPC reflection service.

use std::path::PathBuf;

use prost::Message;

const FILES: [&str; 5] = [
    "vatio/v1/common.proto",
    "vatio/v1/ingest.proto",
    "vatio/v1/query.proto",
    "vatio/v1/admin.proto",
    "vatio/v1/peer.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(FILES, ["proto"])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out_dir.join("vatio_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}
