//! `janusctl`: the command line for people.
//!
//! - `janusctl state` — what an agent enforces (GetGuardState);
//! - `janusctl events --follow` — tail audit records from one agent;
//! - `janusctl explain -f GUARD.yaml PATH...` — which rule decides each path
//!   and why, offline.
#![forbid(unsafe_code)]

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use janus_api::GuardManifest;
use janus_common::tls::TlsArgs;
use janus_engine::Kind;
use janus_engine::policy::{Policy, Scratch, Verdict};
use janus_proto::v1::janusd_client::JanusdClient;
use janus_proto::v1::{GetGuardStateRequest, WatchEventsRequest};

/// Talk to a Janus agent, or explain a guard offline.
#[derive(Debug, Parser)]
#[command(name = "janusctl", version, about)]
struct Cli {
    /// Agent address.
    #[arg(long, global = true, default_value = "https://127.0.0.1:9440")]
    addr: String,
    /// Server name to verify in the agent's certificate.
    #[arg(long, global = true, default_value = "janusd")]
    server_name: String,
    #[command(flatten)]
    tls: TlsArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print what the agent enforces.
    State {
        /// Print the raw state as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print audit records from the agent as JSON lines.
    Events {
        /// Keep streaming until interrupted (otherwise stop after --seconds).
        #[arg(long)]
        follow: bool,
        /// Without --follow, how long to listen.
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        /// Only this guard (namespace/name).
        #[arg(long, default_value = "")]
        guard: String,
        /// Only this pod (namespace/name).
        #[arg(long, default_value = "")]
        pod: String,
        /// Only this decision (allow, deny, would-deny).
        #[arg(long, default_value = "")]
        decision: String,
    },
    /// Explain which rule decides each path, for each event kind (offline).
    Explain {
        /// JanusGuard manifest.
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
        /// Treat the paths as directories (for onlyDir rules).
        #[arg(long)]
        dir: bool,
        /// Paths as seen inside the pod.
        #[arg(required = true)]
        paths: Vec<String>,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Explain { file, dir, paths } => explain(file, *dir, paths),
        _ => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)
            .and_then(|rt| rt.block_on(remote(&cli))),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("janusctl: error: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}

async fn connect(cli: &Cli) -> anyhow::Result<JanusdClient<tonic::transport::Channel>> {
    let mut endpoint = tonic::transport::Endpoint::from_shared(cli.addr.clone()).context("--addr")?;
    if let Some(tls) = cli.tls.client(&cli.server_name)? {
        endpoint = endpoint.tls_config(tls).context("TLS")?;
    }
    let channel = endpoint.connect().await.with_context(|| format!("connect to {}", cli.addr))?;
    Ok(JanusdClient::new(channel))
}

/// The agent's state as JSON: what `state` prints as a table, with the
/// container state by name.
fn state_json(state: &janus_proto::v1::GuardState) -> serde_json::Value {
    let guards: Vec<serde_json::Value> = state
        .guards
        .iter()
        .map(|g| {
            let guard = g.guard.as_ref().map(|x| {
                serde_json::json!({"namespace": x.namespace, "name": x.name, "uid": x.uid, "generation": x.generation})
            });
            let pod = g
                .pod
                .as_ref()
                .map(|x| serde_json::json!({"namespace": x.namespace, "name": x.name, "uid": x.uid, "node": x.node}));
            let containers: Vec<serde_json::Value> = g
                .containers
                .iter()
                .map(|c| {
                    let state = match janus_proto::convert::container_state(c) {
                        Ok(s) => s.to_string(),
                        Err(e) => format!("unknown ({e})"),
                    };
                    serde_json::json!({
                        "name": c.name, "runtimeId": c.runtime_id, "state": state, "pid": c.pid,
                        "marks": c.marks, "lastError": c.last_error, "pendingPaths": c.pending_paths,
                    })
                })
                .collect();
            serde_json::json!({"guard": guard, "pod": pod, "containers": containers})
        })
        .collect();
    serde_json::json!({"node": state.node, "guards": guards})
}

async fn remote(cli: &Cli) -> anyhow::Result<()> {
    let mut client = connect(cli).await?;
    match &cli.command {
        Command::State { json } => {
            // Paged, as the controller asks (an agent of 0.1 answers all at once).
            let mut state = janus_proto::v1::GuardState::default();
            let mut token = String::new();
            loop {
                let req = GetGuardStateRequest { page_size: 100, page_token: token.clone() };
                let page = client.get_guard_state(req).await?.into_inner();
                state.node = page.node;
                state.guards.extend(page.guards);
                if page.next_page_token.is_empty() || page.next_page_token == token {
                    break;
                }
                token = page.next_page_token;
            }
            if *json {
                println!("{}", serde_json::to_string_pretty(&state_json(&state))?);
                return Ok(());
            }
            println!("node {}: {} guard(s)", state.node, state.guards.len());
            println!(
                "{:<30} {:<30} {:<12} {:<10} {:>8} {:>6}  ERROR / PENDING PATHS",
                "GUARD", "POD", "CONTAINER", "STATE", "PID", "MARKS"
            );
            for g in &state.guards {
                let guard = g.guard.as_ref().map(|x| format!("{}/{}", x.namespace, x.name)).unwrap_or_default();
                let pod = g.pod.as_ref().map(|x| format!("{}/{}", x.namespace, x.name)).unwrap_or_default();
                for c in &g.containers {
                    let state = match janus_proto::convert::container_state(c) {
                        Ok(s) => s.to_string(),
                        Err(e) => format!("?({e})"),
                    };
                    let mut notes = c.last_error.clone();
                    if !c.pending_paths.is_empty() {
                        let pending = format!("pending: {}", c.pending_paths.join(", "));
                        notes = if notes.is_empty() { pending } else { format!("{notes}; {pending}") };
                    }
                    println!("{guard:<30} {pod:<30} {:<12} {:<10} {:>8} {:>6}  {notes}", c.name, state, c.pid, c.marks);
                }
            }
        }
        Command::Events { follow, seconds, guard, pod, decision } => {
            let req = WatchEventsRequest { guard: guard.clone(), pod: pod.clone(), decision: decision.clone() };
            let mut stream = client.watch_events(req).await?.into_inner();
            let deadline = (!follow).then(|| tokio::time::Instant::now() + std::time::Duration::from_secs(*seconds));
            loop {
                let next = match deadline {
                    Some(d) => match tokio::time::timeout_at(d, stream.message()).await {
                        Ok(m) => m?,
                        Err(_) => break,
                    },
                    None => stream.message().await?,
                };
                let Some(ev) = next else { break };
                let line = serde_json::json!({
                    "time": ev.time, "guard": ev.guard, "namespace": ev.namespace, "pod": ev.pod,
                    "container": ev.container, "node": ev.node, "pid": ev.pid, "process": ev.process,
                    "executable": ev.executable, "uid": ev.uid, "path": ev.path, "event": ev.event,
                    "decision": ev.decision, "mode": ev.mode, "rule": ev.rule, "tags": ev.tags,
                });
                println!("{line}");
            }
        }
        Command::Explain { .. } => unreachable!("handled offline"),
    }
    Ok(())
}

fn explain(file: &PathBuf, is_dir: bool, paths: &[String]) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let guards = GuardManifest::parse_all(&text).with_context(|| file.display().to_string())?;
    for g in guards {
        let policy = Policy::compile(&g.spec)?;
        println!("guard {} (mode {}):", g.qualified_name(), g.spec.mode.as_str());
        let mut scratch = Scratch::default();
        for path in paths {
            if !path.starts_with('/') {
                anyhow::bail!("{path:?}: paths must be absolute, as seen inside the pod");
            }
            let d = policy.decide(path.as_bytes(), is_dir, &mut scratch);
            println!("  {path}");
            for kind in Kind::ALL {
                let line = match d.rule(kind) {
                    None => "allow  (no rule covers it)".to_string(),
                    Some(r) => {
                        let rule = policy.rule(r);
                        let verdict = match rule.verdict {
                            Verdict::Allow => "allow",
                            Verdict::Deny => "deny ",
                        };
                        let subject = policy.subject_of(r);
                        let mut why = format!("by `{}` (subjects[{}])", rule.describe(), rule.subject);
                        let covering = policy
                            .rules
                            .iter()
                            .filter(|x| x.kinds.contains(kind) && (!x.only_dir || is_dir))
                            .filter(|x| {
                                x.pattern.covers(&janus_api::pattern::split_path(path.as_bytes()).collect::<Vec<_>>())
                            })
                            .count();
                        if covering > 1 {
                            why.push_str(&format!(", the most specific of {covering} covering rules"));
                        }
                        if rule.verdict == Verdict::Deny && subject.auto_allow_owner {
                            why.push_str("; the container's own process tree is allowed (autoAllowOwner)");
                        }
                        if rule.verdict == Verdict::Deny && !subject.allow_processes.is_empty() {
                            why.push_str(&format!(
                                "; processes running {} are allowed (allowProcesses)",
                                subject.allow_processes.join(", ")
                            ));
                        }
                        if rule.verdict == Verdict::Deny && g.spec.mode == janus_api::Mode::Audit {
                            why.push_str("; Audit mode: logged as would-deny, allowed");
                        }
                        format!("{verdict}  {why}")
                    }
                };
                println!("    {:<6} {line}", kind.as_str());
            }
        }
    }
    Ok(())
}
