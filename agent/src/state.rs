//! The agent's desired state — every (guard, pod) it was told to enforce —
//! kept in a file so that a restarted agent re-enforces it before serving.
//!
//! Writes are atomic: a temporary file in the same directory is written and
//! fsynced, renamed over the old one, and the directory is fsynced. A reader
//! sees the old state or the new one, never a torn one.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, MutexGuard};

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

/// The desired state in memory and on disk, with group commit: a change is
/// applied in memory and the caller waits until a write that includes it is
/// on disk (two fsyncs). Changes made while a write is in flight go out
/// together in the next one, so N concurrent requests cost about two writes,
/// not N, and none is answered before its change is durable.
#[derive(Debug)]
pub struct Store<K> {
    path: PathBuf,
    inner: Mutex<StoreInner<K>>,
    written: Condvar,
    /// Tests: when set, every write waits for a message first.
    #[cfg(test)]
    gate: Mutex<Option<std::sync::mpsc::Receiver<()>>>,
}

#[derive(Debug)]
struct StoreInner<K> {
    map: BTreeMap<K, Assignment>,
    /// Bumped by every change.
    version: u64,
    /// Every change up to this version is on disk.
    durable: u64,
    /// Changes up to this version went into a write that failed (and why).
    failed: Option<(u64, String)>,
    /// A caller is writing now (outside the lock).
    writing: bool,
    /// Writes are skipped (the file could not be read and must not be
    /// overwritten): changes stay in memory and count as written.
    hold: bool,
    /// Writes done (each one file replaced, two fsyncs).
    writes: u64,
}

impl<K: Ord + Clone> Store<K> {
    /// An empty store over the file `path` (nothing is read or written yet).
    pub fn new(path: PathBuf) -> Store<K> {
        Store {
            path,
            inner: Mutex::new(StoreInner {
                map: BTreeMap::new(),
                version: 0,
                durable: 0,
                failed: None,
                writing: false,
                hold: false,
                writes: 0,
            }),
            written: Condvar::new(),
            #[cfg(test)]
            gate: Mutex::default(),
        }
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn lock(&self) -> MutexGuard<'_, StoreInner<K>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes done so far.
    pub fn writes(&self) -> u64 {
        self.lock().writes
    }

    /// While `hold` is set, nothing is written (see [`StoreInner::hold`]).
    pub fn set_hold(&self, hold: bool) {
        self.lock().hold = hold;
    }

    /// Adds `value` under `key` in memory only, unless a value is there
    /// already; whether it was added. (Restoring what the file held.)
    pub fn insert_loaded(&self, key: K, value: Assignment) -> bool {
        match self.lock().map.entry(key) {
            std::collections::btree_map::Entry::Vacant(v) => {
                v.insert(value);
                true
            }
            std::collections::btree_map::Entry::Occupied(_) => false,
        }
    }

    /// Sets (`Some`) or removes (`None`) `key` and returns once the change
    /// is on disk. On error the change is undone in memory (the value
    /// before it is put back) and nothing else changed.
    pub fn put(&self, key: K, value: Option<Assignment>) -> Result<(), StateError> {
        let mut g = self.lock();
        let before = match value {
            Some(v) => g.map.insert(key.clone(), v),
            None => g.map.remove(&key),
        };
        g.version += 1;
        let mine = g.version;
        match self.wait_durable(g, mine) {
            Ok(()) => Ok(()),
            Err(e) => {
                let mut g = self.lock();
                match before {
                    Some(b) => g.map.insert(key, b),
                    None => g.map.remove(&key),
                };
                Err(e)
            }
        }
    }

    /// Writes what is in memory now and returns once it is on disk.
    pub fn flush(&self) -> Result<(), StateError> {
        let mut g = self.lock();
        g.version += 1;
        let mine = g.version;
        self.wait_durable(g, mine)
    }

    /// Group commit: returns once version `mine` is on disk, writing it
    /// (with every change made meanwhile) if no other caller is writing.
    fn wait_durable<'a>(&'a self, mut g: MutexGuard<'a, StoreInner<K>>, mine: u64) -> Result<(), StateError> {
        loop {
            if g.durable >= mine {
                return Ok(());
            }
            if let Some((upto, why)) = &g.failed
                && *upto >= mine
            {
                return Err(StateError::Io { path: self.path.clone(), source: std::io::Error::other(why.clone()) });
            }
            if g.writing {
                g = self.written.wait(g).unwrap_or_else(|p| p.into_inner());
                continue;
            }
            let version = g.version;
            if g.hold {
                g.durable = version;
                continue;
            }
            g.writing = true;
            let all: Vec<Assignment> = g.map.values().cloned().collect();
            drop(g);
            #[cfg(test)]
            if let Some(gate) = self.gate.lock().unwrap().as_ref() {
                gate.recv().unwrap();
            }
            let result = save(&self.path, &all);
            metrics::counter!("janus_agent_state_writes_total").increment(1);
            g = self.lock();
            g.writes += 1;
            g.writing = false;
            match &result {
                Ok(()) => g.durable = version,
                Err(e) => g.failed = Some((version, e.to_string())),
            }
            self.written.notify_all();
            if let Err(e) = result
                && mine <= version
            {
                return Err(e);
            }
        }
    }
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

    fn assignment(pod: &str) -> Assignment {
        let mut a = sample();
        a.pod.uid = pod.into();
        a
    }

    #[test]
    fn concurrent_puts_are_written_together_and_each_is_durable_when_it_returns() {
        let dir = tempfile::tempdir().unwrap();
        let store = std::sync::Arc::new(Store::<String>::new(dir.path().join("state.json")));
        let (open, gate) = std::sync::mpsc::channel();
        *store.gate.lock().unwrap() = Some(gate);
        // The first put becomes the writer and waits at the gate; 20 more
        // arrive while it writes.
        let mut threads = Vec::new();
        for i in 0..21 {
            let s = store.clone();
            threads.push(std::thread::spawn(move || s.put(format!("k{i:02}"), Some(assignment(&format!("p{i}"))))));
            if i == 0 {
                while !store.lock().writing {
                    std::thread::yield_now();
                }
            }
        }
        while store.lock().version < 21 {
            std::thread::yield_now();
        }
        open.send(()).unwrap(); // the first write (k00 alone, or more)
        open.send(()).unwrap(); // the rest, together
        for t in threads {
            t.join().unwrap().unwrap();
        }
        assert_eq!(store.writes(), 2, "21 changes in two writes");
        let on_disk = load(store.path()).unwrap();
        assert_eq!(on_disk.len(), 21, "every change is on disk");
    }

    #[test]
    fn a_failed_write_undoes_the_change_and_says_why() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("file");
        std::fs::write(&blocker, b"").unwrap();
        // The state file's directory is a regular file: every write fails.
        let store = Store::<String>::new(blocker.join("state.json"));
        let err = store.put("k".into(), Some(assignment("p"))).unwrap_err();
        assert!(err.to_string().contains("file"), "{err}");
        assert!(store.lock().map.is_empty(), "the change was undone");
        // Held (an unreadable file is never overwritten): changes stay in
        // memory and succeed.
        store.set_hold(true);
        store.put("k".into(), Some(assignment("p"))).unwrap();
        assert_eq!(store.lock().map.len(), 1);
    }
}
