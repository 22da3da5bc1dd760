//! `janus.v1`: the contract between the controller and the node agent.
//!
//! Generated from `proto/janus.proto` at build time. [`FILE_DESCRIPTOR_SET`]
//! is the encoded descriptor set, for gRPC reflection. [`convert`] is the one
//! conversion between these messages and the guard model (`janus-api`).
#![forbid(unsafe_code)]

pub mod convert;

/// Generated messages, client and server for package `janus.v1`.
#[allow(missing_docs, missing_debug_implementations, clippy::all)]
pub mod v1 {
    tonic::include_proto!("janus.v1");
}

/// Encoded `FileDescriptorSet` of janus.proto (for gRPC reflection).
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("janus_descriptor");
