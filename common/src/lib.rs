//! janus-common: what `janusd` and the controller share.
#![forbid(unsafe_code)]

pub mod http;
pub mod tls;
