//! janus-controller: the `JanusGuard` CRD and the controller that turns
//! guards and pods into CreateGuard/DestroyGuard calls on node agents.
#![forbid(unsafe_code)]

pub mod crd;
