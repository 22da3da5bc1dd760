//! Liveness of the engine's threads: each loop beats at least once per
//! second, even when idle, so a thread that stops beating is stuck (in a
//! syscall that never returns, a deadlock, an endless loop). The agent's
//! `/healthz` fails then, and the kubelet restarts it; the kernel releases
//! every opener the stuck thread held when the process goes.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The last beat of each engine thread.
#[derive(Clone, Debug)]
pub struct Heartbeat {
    start: Instant,
    beats: Arc<[AtomicU64; 2]>,
}

/// Which thread beats.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Beater {
    Enforcement = 0,
    Watcher = 1,
}

impl Heartbeat {
    pub(crate) fn new() -> Heartbeat {
        Heartbeat { start: Instant::now(), beats: Arc::new([AtomicU64::new(0), AtomicU64::new(0)]) }
    }

    pub(crate) fn beat(&self, who: Beater) {
        self.beats[who as usize].store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// Ok if every thread beat within `limit`; else which one did not, and
    /// since when.
    pub fn check(&self, limit: Duration) -> Result<(), String> {
        let now = self.start.elapsed().as_millis() as u64;
        for (name, beat) in [("enforcement", &self.beats[0]), ("watcher", &self.beats[1])] {
            let age = Duration::from_millis(now.saturating_sub(beat.load(Ordering::Relaxed)));
            if age > limit {
                return Err(format!("the {name} thread has not run for {age:?} (limit {limit:?})"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_beats_fail() {
        let h = Heartbeat::new();
        h.beat(Beater::Enforcement);
        h.beat(Beater::Watcher);
        assert!(h.check(Duration::from_secs(5)).is_ok());
        std::thread::sleep(Duration::from_millis(30));
        h.beat(Beater::Enforcement);
        let e = h.check(Duration::from_millis(20)).unwrap_err();
        assert!(e.contains("watcher"), "{e}");
    }
}
