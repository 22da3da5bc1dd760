//! The `JanusGuard` custom resource. The types live in the guard model
//! (`janus_api::crd`, generated from `janus_api::GuardSpec` with feature
//! `kube`); this module re-exports them for the controller and keeps the
//! test that `deploy/crd.yaml` is exactly what they generate.

pub use janus_api::crd::{JanusGuard, JanusGuardStatus, render};

#[cfg(test)]
mod generated {
    /// deploy/crd.yaml must be exactly what the types generate.
    #[test]
    fn deploy_crd_yaml_is_up_to_date() {
        let want = super::render().unwrap();
        let have = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/crd.yaml")).unwrap();
        assert!(
            have == want,
            "deploy/crd.yaml differs from the types; regenerate it with\n  cargo run -p janus-controller --bin janus-crdgen > deploy/crd.yaml"
        );
    }
}
