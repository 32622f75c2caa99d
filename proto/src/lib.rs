//! vatio's wire API. `v1` holds the generated messages, clients and servers of
//! the `vatio.v1` package; `FILE_DESCRIPTOR_SET` feeds gRPC reflection.

/// Version 1 of the API (`vatio.v1`).
pub mod v1 {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("vatio.v1");
}

/// Encoded descriptor set of every vatio `.proto`, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/vatio_descriptor.bin"));
