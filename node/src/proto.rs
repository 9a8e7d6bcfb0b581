//! Generated gRPC types and services of `bayspace.v1`.

#![allow(clippy::all, clippy::pedantic, missing_docs)]

tonic::include_proto!("bayspace.v1");

/// The encoded descriptor set, for server reflection.
// Used by the daemon for server reflection.
#[allow(dead_code)]
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("bayspace_descriptor");
