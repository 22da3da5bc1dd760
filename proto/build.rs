//! Compiles proto/janus.proto with protox (pure Rust: no system protoc
//! needed) and generates the tonic client and server.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/janus.proto");
    let fds = protox::compile(["janus.proto"], ["proto"])?;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    // The encoded descriptor set serves gRPC reflection.
    std::fs::write(out.join("janus_descriptor.bin"), prost::Message::encode_to_vec(&fds))?;
    tonic_prost_build::configure().build_client(true).build_server(true).compile_fds(fds)?;
    Ok(())
}
