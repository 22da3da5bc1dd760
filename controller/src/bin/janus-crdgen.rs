//! Prints the JanusGuard CRD as YAML (`deploy/crd.yaml` is this output).
#![forbid(unsafe_code)]

fn main() -> anyhow::Result<()> {
    print!("{}", janus_controller::crd::render()?);
    Ok(())
}
