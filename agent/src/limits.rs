//! Kernel limits the agent raises at start.

use janus_procfs::{ProcError, ProcFs};

/// Each guard instance uses two fanotify groups (permission + watcher), and
/// the kernel's default per-user limit is 128, so a node with more than about
/// 60 guarded containers would run out. Raises the limit to `want` if it is
/// lower (needs root); `0` leaves it alone. Failure is logged, not fatal: the
/// engine reports a clear error when it actually hits the limit.
pub fn raise_fanotify_group_limit(want: u64) {
    match try_raise_fanotify_group_limit(&ProcFs::default(), want) {
        Ok(Some((from, to))) => tracing::info!(from, to, "raised fs.fanotify.max_user_groups"),
        Ok(None) => {}
        Err(e) => tracing::warn!(want, error = %e, "cannot raise fs.fanotify.max_user_groups"),
    }
}

/// Raises `fs.fanotify.max_user_groups` to `want` if it is lower, never
/// lowers it; `0` leaves it alone. `Some((from, to))` when it was changed.
pub fn try_raise_fanotify_group_limit(proc: &ProcFs, want: u64) -> Result<Option<(u64, u64)>, ProcError> {
    if want == 0 {
        return Ok(None);
    }
    let current = proc.fanotify_max_user_groups()?;
    if current >= want {
        return Ok(None);
    }
    proc.set_fanotify_max_user_groups(want)?;
    Ok(Some((current, want)))
}
