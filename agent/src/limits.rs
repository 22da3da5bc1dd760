//! Kernel limits the agent raises at start.

/// Each guard instance uses two fanotify groups (permission + watcher), and
/// the kernel's default per-user limit is 128, so a node with more than about
/// 60 guarded containers would run out. Raises the limit to `want` if it is
/// lower (needs root); `0` leaves it alone. Failure is logged, not fatal: the
/// engine reports a clear error when it actually hits the limit.
pub fn raise_fanotify_group_limit(want: u64) {
    if want == 0 {
        return;
    }
    let proc = janus_procfs::ProcFs::default();
    match proc.fanotify_max_user_groups() {
        Ok(c) if c >= want => {}
        Ok(c) => match proc.set_fanotify_max_user_groups(want) {
            Ok(()) => tracing::info!(from = c, to = want, "raised fs.fanotify.max_user_groups"),
            Err(e) => tracing::warn!(current = c, want, error = %e, "cannot raise fs.fanotify.max_user_groups"),
        },
        Err(e) => tracing::warn!(error = %e, "cannot read fs.fanotify.max_user_groups"),
    }
}
