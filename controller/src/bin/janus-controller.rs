//! `janus-controller`: watches JanusGuards and Pods and pushes guards to the
//! janusd agent on each pod's node.
#![forbid(unsafe_code)]

use clap::Parser;

fn main() -> std::process::ExitCode {
    let args = janus_controller::run::Args::parse();
    janus_common::http::init_logging();
    let rt = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("janus-controller: error: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    match rt.block_on(janus_controller::run::run(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("janus-controller: error: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}
