//! The agent's desired state — every (guard, pod) it was told to enforce —
//! kept in a file so that a restarted agent re-enforces it before serving.
//!
//! Writes are atomic: a temporary file in the same directory is written and
//! fsynced, renamed over the old one, and the directory is fsynced. A reader
//! sees the old state or the new one, never a torn one.

use std::io::Write;
use std::path::{Path, PathBuf};

use janus_api::Assignment;
use serde::{Deserialize, Serialize};

/// Version of the file format.
pub const VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
struct StateFile {
    version: u32,
    guards: Vec<Assignment>,
}

/// State file failures.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Reading or writing failed.
    #[error("{path}: {source}")]
    Io {
        /// File.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a state file of a known version.
    #[error("{path}: not a valid state file: {reason}")]
    Corrupt {
        /// File.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StateError + '_ {
    move |source| StateError::Io { path: path.to_path_buf(), source }
}

/// Reads the state; a missing file is an empty state.
pub fn load(path: &Path) -> Result<Vec<Assignment>, StateError> {
    let text = match std::fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(path)(e)),
    };
    let file: StateFile = serde_json::from_slice(&text)
        .map_err(|e| StateError::Corrupt { path: path.to_path_buf(), reason: e.to_string() })?;
    if file.version != VERSION {
        return Err(StateError::Corrupt {
            path: path.to_path_buf(),
            reason: format!("unknown version {}", file.version),
        });
    }
    Ok(file.guards)
}

/// Writes the state atomically, creating the directory if needed.
pub fn save(path: &Path, guards: &[Assignment]) -> Result<(), StateError> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let body = serde_json::to_vec_pretty(&StateFile { version: VERSION, guards: guards.to_vec() })
        .map_err(|e| StateError::Corrupt { path: path.to_path_buf(), reason: e.to_string() })?;
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::fs::File::create(&tmp).map_err(io(&tmp))?;
        f.write_all(&body).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
    }
    std::fs::rename(&tmp, path).map_err(io(path))?;
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))?;
    Ok(())
}

/// Moves an unreadable state file aside (so it is kept for inspection and
/// the agent can start empty) and returns where it went.
pub fn quarantine(path: &Path) -> Option<PathBuf> {
    let ts = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let aside = path.with_extension(format!("corrupt-{ts}"));
    std::fs::rename(path, &aside).ok().map(|()| aside)
}

#[cfg(test)]
mod tests {
    use super::*;

    use janus_api::{Container, GuardRef, GuardSpec, PodRef, Subject};

    fn sample() -> Assignment {
        Assignment {
            guard: GuardRef { namespace: "ns".into(), name: "g".into(), uid: "u".into(), generation: 3 },
            pod: PodRef { namespace: "ns".into(), name: "p".into(), uid: "pu".into(), node: "n".into() },
            containers: vec![Container { name: "c".into(), runtime_id: "containerd://abc".into() }],
            spec: GuardSpec {
                subjects: vec![Subject { deny: vec!["/x".into()], ..Default::default() }],
                ..Default::default()
            },
        }
    }

    #[test]
    fn save_load_round_trip_and_missing_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/state.json");
        assert!(load(&path).unwrap().is_empty());
        save(&path, &[sample()]).unwrap();
        assert_eq!(load(&path).unwrap(), vec![sample()]);
        save(&path, &[]).unwrap();
        assert!(load(&path).unwrap().is_empty());
        assert!(!path.with_extension("tmp").exists());
    }

    #[test]
    fn corrupt_file_is_reported_and_quarantined() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        std::fs::write(&path, b"{not json").unwrap();
        assert!(matches!(load(&path), Err(StateError::Corrupt { .. })));
        let aside = quarantine(&path).unwrap();
        assert!(aside.exists() && !path.exists());
    }
}
