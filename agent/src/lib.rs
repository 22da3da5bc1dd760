//! janus-agent: the pieces of `janusd` — container resolution, guard state,
//! the gRPC service — as a library so that tests and `janusctl` can use them.
#![forbid(unsafe_code)]

pub mod containers;
pub mod limits;
pub mod node_setup;
pub mod observe;
pub mod service;
pub mod state;
pub mod supervisor;
