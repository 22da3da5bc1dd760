//! `janusd`: the Janus node agent.
//!
//! `janusd standalone -f GUARD.yaml` enforces guard manifests on this host
//! without Kubernetes; `janusd serve` is the DaemonSet mode.
#![forbid(unsafe_code)]

mod serve;
mod setup;
mod standalone;

use clap::{Parser, Subcommand};

/// Janus node agent: file-access guards enforced with fanotify.
#[derive(Debug, Parser)]
#[command(name = "janusd", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Enforce JanusGuard manifests on this host until SIGINT/SIGTERM.
    Standalone(standalone::Args),
    /// Node agent for Kubernetes: serve the janus.v1 gRPC API to the controller.
    Serve(serve::Args),
    /// Prepare this node for the agent (the DaemonSet's privileged init
    /// container): install its seccomp profile, raise fanotify limits.
    NodeSetup(setup::Args),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    janus_agent::observe::init_logging();
    let result = match cli.command {
        Command::Standalone(args) => standalone::run(args),
        Command::Serve(args) => serve::run(args),
        Command::NodeSetup(args) => setup::run(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("janusd: error: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}
