//! `janus.v1`: the contract between the controller and the node agent.
//!
//! Generated from `proto/janus.proto` at build time. [`FILE_DESCRIPTOR_SET`]
//! is the encoded descriptor set, for gRPC reflection.
#![forbid(unsafe_code)]
#![allow(missing_docs, missing_debug_implementations, clippy::all)]

/// Generated messages, client and server for package `janus.v1`.
pub mod v1 {
    tonic::include_proto!("janus.v1");
}

/// Encoded `FileDescriptorSet` of janus.proto (for gRPC reflection).
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("janus_descriptor");
