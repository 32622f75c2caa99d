//! The node's gRPC services: `Ingest`, `Query`, `Admin` (package `vatio.v1`).

pub mod admin;
pub mod convert;
pub mod fanout;
pub mod ingest;
pub mod query;
