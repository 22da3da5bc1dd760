//! Opener threads: `open()` + `close()` of a set of files in a loop, counted
//! over a measured window after a warm-up, with every Nth open timed, and
//! optionally, every Mth iteration, an attempt to open a file that must be
//! denied.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::procfs;

/// Every this many opens of a thread, one is timed.
pub const SAMPLE_EVERY: u64 = 64;
/// Every this many opens of a thread, the probe file is tried once.
pub const PROBE_EVERY: u64 = 1024;

const WARMUP: u8 = 0;
const MEASURE: u8 = 1;
const STOP: u8 = 2;

/// One load to generate.
#[derive(Clone, Debug)]
pub struct Load {
    /// Files to open, round-robin.
    pub files: Arc<Vec<PathBuf>>,
    /// Opener threads.
    pub threads: usize,
    /// Unmeasured time before the window.
    pub warmup: Duration,
    /// The measured window.
    pub duration: Duration,
    /// Pin every opener thread to this CPU.
    pub pin: Option<usize>,
    /// A file that is opened every [`PROBE_EVERY`] opens (deny check).
    pub probe: Option<PathBuf>,
}

/// Outcomes of opening the probe file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ProbeCount {
    /// Attempts.
    pub attempts: u64,
    /// Opens that succeeded.
    pub succeeded: u64,
    /// Opens refused with EPERM.
    pub denied: u64,
    /// Opens that failed otherwise.
    pub other_errors: u64,
}

impl ProbeCount {
    /// Adds `o` into `self`.
    pub fn add(&mut self, o: &ProbeCount) {
        self.attempts += o.attempts;
        self.succeeded += o.succeeded;
        self.denied += o.denied;
        self.other_errors += o.other_errors;
    }
}

/// What a load measured.
#[derive(Clone, Debug, Default)]
pub struct LoadResult {
    /// Opens (of the bench files) completed in the window.
    pub opens: u64,
    /// Length of the window, seconds.
    pub secs: f64,
    /// Timed opens, ns (unsorted).
    pub latencies_ns: Vec<u32>,
    /// Bench-file opens that failed (any phase); must be 0.
    pub errors: u64,
    /// First error seen, for the message.
    pub first_error: Option<String>,
    /// Probe outcomes (any phase).
    pub probe: ProbeCount,
}

impl LoadResult {
    /// Opens per second in the window.
    pub fn rate(&self) -> f64 {
        if self.secs > 0.0 { self.opens as f64 / self.secs } else { 0.0 }
    }
}

/// Runs `load` and returns what it measured.
pub fn run(load: &Load) -> anyhow::Result<LoadResult> {
    anyhow::ensure!(!load.files.is_empty(), "no files to open");
    let phase = Arc::new(AtomicU8::new(WARMUP));
    let barrier = Arc::new(Barrier::new(load.threads + 1));
    let mut handles = Vec::with_capacity(load.threads);
    for t in 0..load.threads {
        let (load, phase, barrier) = (load.clone(), phase.clone(), barrier.clone());
        let h = std::thread::Builder::new()
            .name(format!("opener-{t}"))
            .spawn(move || opener(t, &load, &phase, &barrier))
            .context("spawn opener")?;
        handles.push(h);
    }
    barrier.wait();
    std::thread::sleep(load.warmup);
    phase.store(MEASURE, Ordering::SeqCst);
    let t0 = Instant::now();
    std::thread::sleep(load.duration);
    phase.store(STOP, Ordering::SeqCst);
    let secs = t0.elapsed().as_secs_f64();
    let mut out = LoadResult { secs, ..Default::default() };
    let mut pin_error = None;
    for h in handles {
        let r = h.join().map_err(|_| anyhow::anyhow!("opener thread panicked"))?;
        match r {
            Ok(r) => {
                out.opens += r.opens;
                out.errors += r.errors;
                out.latencies_ns.extend(r.latencies_ns);
                out.probe.add(&r.probe);
                if out.first_error.is_none() {
                    out.first_error = r.first_error;
                }
            }
            Err(e) => pin_error = Some(e),
        }
    }
    if let Some(e) = pin_error {
        return Err(e).context("pin opener thread");
    }
    Ok(out)
}

fn opener(t: usize, load: &Load, phase: &AtomicU8, barrier: &Barrier) -> std::io::Result<LoadResult> {
    let pinned = load.pin.map(procfs::pin_current_thread).transpose();
    // Wait at the barrier even on error, or the main thread would hang.
    barrier.wait();
    pinned?;
    let files = &load.files;
    let mut r = LoadResult { latencies_ns: Vec::with_capacity(16_384), ..Default::default() };
    // Threads start at different files so they do not move in lockstep.
    let mut i = t * 7919;
    let mut n: u64 = 0;
    loop {
        let ph = phase.load(Ordering::Relaxed);
        if ph == STOP {
            break;
        }
        let path = &files[i % files.len()];
        i += 1;
        n += 1;
        let measured = ph == MEASURE;
        let result = if measured && n.is_multiple_of(SAMPLE_EVERY) {
            let t0 = Instant::now();
            let f = std::fs::File::open(path);
            let ns = t0.elapsed().as_nanos().min(u32::MAX as u128) as u32;
            r.latencies_ns.push(ns);
            f
        } else {
            std::fs::File::open(path)
        };
        match result {
            Ok(f) => {
                drop(f);
                if measured {
                    r.opens += 1;
                }
            }
            Err(e) => {
                r.errors += 1;
                r.first_error.get_or_insert_with(|| format!("open {}: {e}", path.display()));
            }
        }
        if let Some(probe) = &load.probe
            && n.is_multiple_of(PROBE_EVERY)
        {
            r.probe.attempts += 1;
            match std::fs::File::open(probe) {
                Ok(_) => r.probe.succeeded += 1,
                Err(e) if e.raw_os_error() == Some(libc::EPERM) => r.probe.denied += 1,
                Err(_) => r.probe.other_errors += 1,
            }
        }
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_opens_and_probe_outcomes() {
        let dir = std::env::temp_dir().join(format!("janus-perf-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("a");
        std::fs::write(&f, "x").unwrap();
        let r = run(&Load {
            files: Arc::new(vec![f]),
            threads: 2,
            warmup: Duration::from_millis(5),
            duration: Duration::from_millis(50),
            pin: None,
            probe: Some(dir.join("missing")),
        })
        .unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(r.opens > 0 && r.rate() > 0.0);
        assert_eq!(r.errors, 0);
        assert!(!r.latencies_ns.is_empty());
        assert!(r.probe.attempts > 0);
        assert_eq!(r.probe.other_errors, r.probe.attempts, "missing file: ENOENT");
    }
}
