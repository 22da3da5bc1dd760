//! Compiles the first release's janus.v1 (tests/proto/janus-0.1.proto) so
//! the tests can talk to this release as a 0.1 controller or agent would.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/janus-0.1.proto");
    let fds = protox::compile(["janus-0.1.proto"], ["proto"])?;
    tonic_prost_build::configure().build_client(true).build_server(false).compile_fds(fds)?;
    Ok(())
}
