//! # janus-api: what a guard is, in one place
//!
//! The `JanusGuard` model shared by every Janus component:
//!
//! - [`guard`]: the spec (`selector`, `subjects`, `mode`, `logFormat`) as
//!   serde types, with [`GuardSpec::validate`] naming the bad field;
//! - [`manifest`]: a whole `JanusGuard` YAML document (for `janusd
//!   standalone`, `janusctl explain` and the benchmarks);
//! - [`pattern`]: the path pattern syntax rules are written in;
//! - [`log_format`]: the `logFormat` template fields;
//! - [`assignment`]: what the controller asks one node's agent to enforce
//!   (a guard on one pod's containers), validated the same way on both ends;
//! - [`crd`] (feature `kube`): the custom resource generated from the same
//!   types (`deploy/crd.yaml`), its status, and k8s-openapi conversions.
//!
//! The wire form (`janus.v1`) converts to and from these types in
//! `janus-proto`; the engine compiles [`GuardSpec`] into its policy. A new
//! guard field is added here, once.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod assignment;
pub mod container_id;
#[cfg(feature = "kube")]
pub mod crd;
mod error;
pub mod guard;
pub mod log_format;
pub mod manifest;
pub mod pattern;

pub use assignment::{Assignment, Container, ContainerState, GuardRef, PodRef, Release};
pub use container_id::{ContainerId, ContainerIdError, Runtime};
pub use error::FieldError;
pub use guard::{EventName, GuardSpec, LabelSelector, LabelSelectorRequirement, Mode, Subject};
pub use manifest::{GuardManifest, Metadata};

/// API group of the original Janus CRD, kept for compatibility.
pub const GROUP: &str = "januscontroller.clustergarage.io";
/// API version.
pub const VERSION: &str = "v1alpha1";
/// `apiVersion` of a JanusGuard document.
pub const API_VERSION: &str = "januscontroller.clustergarage.io/v1alpha1";
/// Kind of the custom resource.
pub const KIND: &str = "JanusGuard";
