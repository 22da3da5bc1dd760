//! `janusd node-setup`: what a node needs before the agent can start, done
//! by the agent's own image in a privileged init container of the DaemonSet,
//! so that installing the chart needs no hand steps on the nodes.
//!
//! - the agent's seccomp profile (deploy/seccomp/janusd.json, built into this
//!   binary so it always matches it) where kubelet looks for `Localhost`
//!   profiles (`<kubelet root>/seccomp/...`): kubelet hands the runtime that
//!   path when it creates the agent's container, which comes after the init
//!   container;
//! - `fs.fanotify.max_user_groups` raised (never lowered): two groups per
//!   guarded container, and the kernel's default is 128.

use std::io::Write;
use std::path::{Path, PathBuf};

/// The agent's seccomp profile (the runtime default list plus io_uring and
/// fanotify), as shipped in deploy/seccomp/janusd.json.
pub const SECCOMP_PROFILE: &str = include_str!("../../deploy/seccomp/janusd.json");

/// What went wrong, naming the file.
#[derive(Debug, thiserror::Error)]
pub enum NodeSetupError {
    /// Writing the profile (or its directory) failed.
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    /// The kernel limit could not be read or raised.
    #[error("raising fs.fanotify.max_user_groups: {0}")]
    Limit(#[from] janus_procfs::ProcError),
}

/// Whether [`install_file`] changed anything.
#[derive(Debug, PartialEq, Eq)]
pub enum Installed {
    /// The file was missing or different and now holds the contents.
    Written,
    /// It already held exactly the contents.
    Unchanged,
}

/// Writes `contents` to `path` (mode 0644), creating its directory: to a
/// temporary file beside it, synced, then renamed over it, so a reader (the
/// runtime creating a container on this node) sees the old file or the new
/// one, never half of one.
pub fn install_file(path: &Path, contents: &[u8]) -> Result<Installed, NodeSetupError> {
    let io = |p: &Path| {
        let path = p.to_path_buf();
        move |source| NodeSetupError::Io { path, source }
    };
    if std::fs::read(path).is_ok_and(|old| old == contents) {
        return Ok(Installed::Unchanged);
    }
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.janusd-{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o644).open(&tmp)?;
        f.write_all(contents)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        NodeSetupError::Io { path: path.to_path_buf(), source: e }
    })?;
    Ok(Installed::Written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_profile_is_the_shipped_json() {
        let v: serde_json::Value = serde_json::from_str(SECCOMP_PROFILE).expect("valid JSON");
        assert_eq!(v["defaultAction"], "SCMP_ACT_ERRNO");
        let names = v["syscalls"].to_string();
        for s in ["io_uring_setup", "io_uring_enter", "fanotify_init", "fanotify_mark"] {
            assert!(names.contains(s), "{s} missing from the profile");
        }
    }

    #[test]
    fn installs_atomically_and_only_when_different() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seccomp/janus/janusd.json");
        assert_eq!(install_file(&path, b"one").unwrap(), Installed::Written);
        assert_eq!(std::fs::read(&path).unwrap(), b"one");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o644);
        assert_eq!(install_file(&path, b"one").unwrap(), Installed::Unchanged);
        assert_eq!(install_file(&path, b"two").unwrap(), Installed::Written);
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        // No temporary file left beside it.
        let left: Vec<_> = std::fs::read_dir(path.parent().unwrap()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left, vec![std::ffi::OsString::from("janusd.json")]);
    }

    #[test]
    fn a_path_it_cannot_write_is_named_in_the_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("plain-file");
        std::fs::write(&file, "x").unwrap();
        let e = install_file(&file.join("janusd.json"), b"x").unwrap_err().to_string();
        assert!(e.contains("plain-file"), "{e}");
    }
}
