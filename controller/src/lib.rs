//! janus-controller: the `JanusGuard` CRD and the controller that turns
//! guards and pods into CreateGuard/DestroyGuard calls on node agents.
#![forbid(unsafe_code)]

pub mod agents;
pub mod crd;
pub mod desired;
pub mod diff;
pub mod drift;
pub mod fanout;
pub mod leader;
pub mod reconcile;
pub mod run;
pub mod selector;
pub mod status;
