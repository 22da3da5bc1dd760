//! Kernel limits the agent raises at start.

const MAX_USER_GROUPS: &str = "/proc/sys/fs/fanotify/max_user_groups";

/// Each guard instance uses two fanotify groups (permission + watcher), and
/// the kernel's default per-user limit is 128, so a node with more than about
/// 60 guarded containers would run out. Raises the limit to `want` if it is
/// lower (needs root); `0` leaves it alone. Failure is logged, not fatal: the
/// engine reports a clear error when it actually hits the limit.
pub fn raise_fanotify_group_limit(want: u64) {
    if want == 0 {
        return;
    }
    let current = std::fs::read_to_string(MAX_USER_GROUPS).ok().and_then(|s| s.trim().parse::<u64>().ok());
    match current {
        Some(c) if c >= want => {}
        Some(c) => match std::fs::write(MAX_USER_GROUPS, want.to_string()) {
            Ok(()) => tracing::info!(from = c, to = want, "raised fs.fanotify.max_user_groups"),
            Err(e) => tracing::warn!(current = c, want, error = %e, "cannot raise fs.fanotify.max_user_groups"),
        },
        None => tracing::warn!("cannot read {MAX_USER_GROUPS}"),
    }
}
