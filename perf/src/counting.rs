//! A minimal `metrics` recorder for the engine listener subprocess: it sums
//! the engine's event counters (all guards together) so the harness knows
//! how many events the engine answered, and how they were batched.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use janus_engine::metrics as m;
use metrics::{Counter, Gauge, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use serde::{Deserialize, Serialize};

/// The counters the recorder keeps.
#[derive(Debug, Default)]
pub struct Counts {
    allowed: Arc<AtomicU64>,
    denied: Arc<AtomicU64>,
    would_deny: Arc<AtomicU64>,
    audit_dropped: Arc<AtomicU64>,
    stale: Arc<AtomicU64>,
    overflows: Arc<AtomicU64>,
    cache_inserts: Arc<AtomicU64>,
    batches: Arc<Batches>,
}

/// Sum and count of the batch-size histogram.
#[derive(Debug, Default)]
struct Batches {
    count: AtomicU64,
    events: AtomicU64,
}

impl HistogramFn for Batches {
    fn record(&self, value: f64) {
        self.count.fetch_add(1, Ordering::Relaxed);
        self.events.fetch_add(value as u64, Ordering::Relaxed);
    }
}

/// A point-in-time copy of [`Counts`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CountSnapshot {
    /// Events answered allow.
    pub allowed: u64,
    /// Events answered deny.
    pub denied: u64,
    /// Events allowed in audit mode that enforce mode would deny.
    pub would_deny: u64,
    /// Audit records dropped because the queue was full.
    pub audit_dropped: u64,
    /// Responses refused by the kernel (event gone).
    pub stale: u64,
    /// fanotify queue overflows.
    pub overflows: u64,
    /// Inodes cached in the kernel while running.
    pub cache_inserts: u64,
    /// Read batches handled.
    pub batches: u64,
    /// Events in those batches.
    pub batch_events: u64,
}

impl CountSnapshot {
    /// Every event answered.
    pub fn events(&self) -> u64 {
        self.allowed + self.denied + self.would_deny
    }
}

impl Counts {
    /// Copies the current values.
    pub fn snapshot(&self) -> CountSnapshot {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        CountSnapshot {
            allowed: get(&self.allowed),
            denied: get(&self.denied),
            would_deny: get(&self.would_deny),
            audit_dropped: get(&self.audit_dropped),
            stale: get(&self.stale),
            overflows: get(&self.overflows),
            cache_inserts: get(&self.cache_inserts),
            batches: get(&self.batches.count),
            batch_events: get(&self.batches.events),
        }
    }
}

#[derive(Debug)]
struct CountingRecorder(Arc<Counts>);

impl Recorder for CountingRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        let c = &self.0;
        let cell = match key.name() {
            m::EVENTS => match key.labels().find(|l| l.key() == "decision").map(|l| l.value()) {
                Some("allow") => &c.allowed,
                Some("deny") => &c.denied,
                _ => &c.would_deny,
            },
            m::AUDIT_DROPPED => &c.audit_dropped,
            m::STALE_RESPONSES => &c.stale,
            m::QUEUE_OVERFLOWS => &c.overflows,
            m::CACHE_INSERTS => &c.cache_inserts,
            _ => return Counter::noop(),
        };
        Counter::from_arc(cell.clone())
    }

    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        if key.name() == m::BATCH_SIZE { Histogram::from_arc(self.0.batches.clone()) } else { Histogram::noop() }
    }
}

/// Installs the counting recorder as the global `metrics` recorder (once per
/// process) and returns its counters.
pub fn install() -> anyhow::Result<Arc<Counts>> {
    let counts = Arc::new(Counts::default());
    metrics::set_global_recorder(CountingRecorder(counts.clone()))
        .map_err(|_| anyhow::anyhow!("a metrics recorder is already installed"))?;
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_engine_events_by_decision() {
        let counts = Arc::new(Counts::default());
        let rec = CountingRecorder(counts.clone());
        metrics::with_local_recorder(&rec, || {
            metrics::counter!(m::EVENTS, "guard" => "g", "decision" => "allow").increment(3);
            metrics::counter!(m::EVENTS, "guard" => "h", "decision" => "allow").increment(1);
            metrics::counter!(m::EVENTS, "guard" => "g", "decision" => "deny").increment(2);
            metrics::counter!("unrelated").increment(9);
            metrics::histogram!(m::BATCH_SIZE).record(4.0);
            metrics::histogram!(m::BATCH_SIZE).record(2.0);
        });
        let s = counts.snapshot();
        assert_eq!((s.allowed, s.denied, s.events()), (4, 2, 6));
        assert_eq!((s.batches, s.batch_events), (2, 6));
    }
}
