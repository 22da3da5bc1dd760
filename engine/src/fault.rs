//! Fault injection for the engine's own tests, from the environment
//! variable `JANUS_FAULT_INJECT` (read once, at first use). Comma-separated:
//!
//! - `ring-push-fail:N`: every Nth io_uring submission fails as if the
//!   kernel had refused it (the loop must still answer every event);
//! - `panic-after-events:N`: the enforcement thread panics after deciding
//!   N events (the process must abort, so the kernel releases every opener);
//! - `stall-after-events:N`: the enforcement thread stops (sleeps forever)
//!   after N events (`/healthz` must fail, so the kubelet restarts janusd).
//!
//! Unset in production. Setting it needs control of janusd's environment,
//! which already means root on the node; it can only make janusd fail, in
//! the ways it is built to survive or to fail open safely (abort).

use std::sync::OnceLock;

/// What to inject.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Faults {
    /// Every Nth ring push fails.
    pub ring_push_fail_every: Option<u64>,
    /// Panic after this many decided events.
    pub panic_after_events: Option<u64>,
    /// Stop answering after this many decided events.
    pub stall_after_events: Option<u64>,
}

/// The faults configured for this process.
pub(crate) fn faults() -> Faults {
    static F: OnceLock<Faults> = OnceLock::new();
    *F.get_or_init(|| {
        let f = std::env::var("JANUS_FAULT_INJECT").map(|s| parse(&s)).unwrap_or_default();
        if f != Faults::default() {
            tracing::warn!(?f, "JANUS_FAULT_INJECT is set: injecting faults (tests only)");
        }
        f
    })
}

fn parse(s: &str) -> Faults {
    let mut f = Faults::default();
    for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (name, n) = item.split_once(':').unwrap_or((item, "1"));
        let n = n.parse::<u64>().ok().filter(|n| *n > 0);
        match name {
            "ring-push-fail" => f.ring_push_fail_every = n,
            "panic-after-events" => f.panic_after_events = n,
            "stall-after-events" => f.stall_after_events = n,
            _ => tracing::warn!(item, "JANUS_FAULT_INJECT: unknown fault ignored"),
        }
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses() {
        assert_eq!(parse(""), Faults::default());
        let f = parse("ring-push-fail:3, panic-after-events:10,bogus");
        assert_eq!((f.ring_push_fail_every, f.panic_after_events), (Some(3), Some(10)));
        assert_eq!(parse("ring-push-fail:0").ring_push_fail_every, None);
    }
}
