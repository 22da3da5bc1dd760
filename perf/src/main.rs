//! `janus-perf`: the Janus benchmark harness. See `janus-perf --help`.
//!
//! Scenarios compare configurations interleaved in one run (A B C A B C …)
//! and report median, min and max. Openers run in this process; every
//! listener runs in a subprocess (`janus-perf __listener`) because the
//! engine always allows its own process.

mod cli;
mod counting;
mod fixture;
mod listener;
mod openers;
mod plan;
mod procfs;
mod progress;
mod report;
mod run;
mod scenario;
mod stats;
mod supervise;
mod svg;
mod table;

fn main() -> std::process::ExitCode {
    match cli::main() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("janus-perf: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}
