//! `janusd node-setup`: run once per pod start by the DaemonSet's init
//! container (janus_agent::node_setup says what and why).

use std::path::PathBuf;

use anyhow::Context;
use janus_agent::node_setup::{self, Installed};

/// Options of `janusd node-setup`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Install the agent's seccomp profile (built into this binary) at this
    /// path: `<kubelet root>/seccomp/<the pod's localhostProfile>` as seen
    /// in this container. Not given: no profile is installed.
    #[arg(long)]
    seccomp_profile: Option<PathBuf>,
    /// Raise fs.fanotify.max_user_groups to at least this; 0 leaves it.
    /// Fails when it cannot (the container must be privileged).
    #[arg(long, default_value_t = 0)]
    max_fanotify_groups: u64,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if let Some(path) = &args.seccomp_profile {
        let how = node_setup::install_file(path, node_setup::SECCOMP_PROFILE.as_bytes())
            .context("installing the seccomp profile")?;
        match how {
            Installed::Written => tracing::info!(path = %path.display(), "installed the seccomp profile"),
            Installed::Unchanged => tracing::info!(path = %path.display(), "seccomp profile already up to date"),
        }
    }
    let proc = janus_procfs::ProcFs::default();
    match janus_agent::limits::try_raise_fanotify_group_limit(&proc, args.max_fanotify_groups)
        .map_err(node_setup::NodeSetupError::from)?
    {
        Some((from, to)) => tracing::info!(from, to, "raised fs.fanotify.max_user_groups"),
        None if args.max_fanotify_groups > 0 => {
            tracing::info!(want = args.max_fanotify_groups, "fs.fanotify.max_user_groups already high enough")
        }
        None => {}
    }
    Ok(())
}
