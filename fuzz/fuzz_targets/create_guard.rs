//! CreateGuard messages as the agent decodes them: protobuf bytes into the
//! model's validation and the policy compiler.
//!
//! Properties: nothing panics; an accepted request compiles; it converts
//! back to the wire and is accepted again as the same assignment.
#![no_main]

use janus_api::Assignment;
use janus_engine::policy::Policy;
use janus_proto::v1;
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let Ok(req) = v1::CreateGuardRequest::decode(data) else { return };
    let Ok(a) = Assignment::try_from(&req) else { return };
    a.validate().expect("an accepted request validates");
    Policy::compile(&a.spec).expect("an accepted request compiles");
    let wire = v1::CreateGuardRequest::from(&a);
    let back = Assignment::try_from(&wire).expect("its own wire form is accepted");
    assert_eq!(back, a);
    let _ = v1::DestroyGuardRequest::decode(data).ok().map(|r| janus_api::Release::try_from(&r).ok());
});
