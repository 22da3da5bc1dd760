//! Metric names the engine records through the `metrics` facade. The binary
//! that embeds the engine installs an exporter (Prometheus in `janusd`) and
//! should call [`describe`] once. Histograms need explicit buckets in the
//! exporter: see [`BUCKETS`].

/// Permission events by `guard`, `event` and `decision` (counter).
pub const EVENTS: &str = "janus_events_total";
/// Events per read batch (histogram).
pub const BATCH_SIZE: &str = "janus_batch_size";
/// Seconds from a batch's read completing to its responses being queued
/// (histogram): the time an opener waits on user space, minus the wake-up.
pub const DECISION_SECONDS: &str = "janus_decision_seconds";
/// `FAN_Q_OVERFLOW` events seen (counter). Permission groups use an
/// unlimited queue, so any value above 0 is a bug report.
pub const QUEUE_OVERFLOWS: &str = "janus_queue_overflows_total";
/// Responses the kernel refused because the event was gone (counter).
pub const STALE_RESPONSES: &str = "janus_stale_responses_total";
/// Audit records dropped because the audit queue was full (counter).
pub const AUDIT_DROPPED: &str = "janus_audit_dropped_total";
/// Guard instances being enforced (gauge).
pub const GUARDS_ACTIVE: &str = "janus_guards_active";
/// fanotify marks held, by `guard` (gauge).
pub const MARKS_ACTIVE: &str = "janus_marks_active";
/// Allowed inodes cached in the kernel with ignore marks (counter).
pub const CACHE_INSERTS: &str = "janus_decision_cache_inserts_total";
/// Cached allows taken back at once because the file's name changed while
/// it was decided (counter, label `why`).
pub const CACHE_TAKEBACKS: &str = "janus_decision_cache_takebacks_total";
/// Which event loop runs: `backend` label `io_uring` or `plain` (gauge, 1).
pub const BACKEND: &str = "janus_backend_info";
/// Errors while marking or handling new directories, by `op` (counter).
pub const ERRORS: &str = "janus_errors_total";

/// Failed reads of a permission group, by `errno` (`EMFILE`, `ENFILE`,
/// ...; counter). The kernel denies the event it could not hand over; the
/// loop backs off and keeps answering.
pub const READ_ERRORS: &str = "janus_read_errors_total";
/// io_uring submissions that failed (counter); the work is retried or done
/// synchronously.
pub const SUBMIT_ERRORS: &str = "janus_submit_errors_total";
/// Guard instances retired because the loop could not serve them
/// (counter). Each is also logged; such an instance is not enforced.
pub const GROUPS_FAILED: &str = "janus_groups_failed_total";

/// Buckets for [`BATCH_SIZE`].
pub const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];
/// Buckets for [`DECISION_SECONDS`].
pub const BUCKETS: &[f64] = &[1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 1e-2, 0.1, 1.0];

/// Registers help texts for every engine metric.
pub fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(EVENTS, "Permission events decided, by guard, event kind and decision.");
    describe_histogram!(BATCH_SIZE, Unit::Count, "Permission events handled per read batch.");
    describe_histogram!(DECISION_SECONDS, Unit::Seconds, "Time to decide one batch of permission events.");
    describe_counter!(QUEUE_OVERFLOWS, "fanotify queue overflow events seen.");
    describe_counter!(STALE_RESPONSES, "Responses refused by the kernel because the event was gone.");
    describe_counter!(AUDIT_DROPPED, "Audit records dropped because the audit queue was full.");
    describe_gauge!(GUARDS_ACTIVE, "Guard instances being enforced.");
    describe_gauge!(MARKS_ACTIVE, "fanotify marks held, by guard.");
    describe_counter!(CACHE_INSERTS, "Allowed inodes cached in the kernel with ignore marks.");
    describe_counter!(
        CACHE_TAKEBACKS,
        "Cached allows taken back because the file was renamed or linked while decided."
    );
    describe_gauge!(BACKEND, "Event loop backend in use (label backend).");
    describe_counter!(ERRORS, "Errors while marking, by operation.");
    describe_counter!(READ_ERRORS, "Failed reads of a permission group, by errno.");
    describe_counter!(SUBMIT_ERRORS, "io_uring submissions that failed (retried or done synchronously).");
    describe_counter!(GROUPS_FAILED, "Guard instances retired because the event loop could not serve them.");
}
