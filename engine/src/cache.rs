//! The kernel's cache of allows: ignore marks on a guard instance's
//! permission group, so an allowed file's later opens never reach user
//! space. Placed and taken back by the enforcement thread only, so adding
//! and taking back a cached allow are ordered (see [`cache_allowed`]).
//! Apart from `marks` because only the enforcement thread may use it.

use std::os::fd::BorrowedFd;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::KindSet;
use crate::sys::fanotify;

/// Whether ignore marks are asked for the old way (`FAN_MARK_IGNORED_MASK`):
/// set once a kernel refuses `FAN_MARK_IGNORE` (before 6.0).
static LEGACY_IGNORE: AtomicBool = AtomicBool::new(false);

/// The ignore-mark flag this kernel takes. `FAN_MARK_IGNORE` without
/// `FAN_ONDIR` or `FAN_EVENT_ON_CHILD` ignores events on the object itself
/// only, and the kernel refuses it on a directory (`EISDIR`): an ignore
/// mark can never silence a directory's children. (Both kinds on one mark
/// are refused, `EEXIST`, so every ignore mark uses the same one.)
fn ignore_flag() -> u32 {
    if LEGACY_IGNORE.load(Ordering::Relaxed) { libc::FAN_MARK_IGNORED_MASK } else { libc::FAN_MARK_IGNORE }
}

/// Caches an allow for the open file `fd` in the kernel: an ignore mark that
/// survives modification and, where the kernel has it (5.19+), is evictable,
/// so the cache pins no inodes and is dropped harmlessly under memory
/// pressure (the next open is then decided again). Only the enforcement
/// thread calls this and [`uncache`], so adding and taking back a cached
/// allow are ordered. Fails with `EEXIST` when the inode already carries a
/// non-evictable mark of the group, and `EISDIR` for a directory; the
/// caller then remembers the decision itself.
pub(crate) fn cache_allowed(group: BorrowedFd<'_>, mask: u64, fd: std::os::fd::RawFd) -> std::io::Result<()> {
    let mut evictable = libc::FAN_MARK_EVICTABLE;
    loop {
        let flags = libc::FAN_MARK_ADD | libc::FAN_MARK_IGNORED_SURV_MODIFY | ignore_flag() | evictable;
        match fanotify::mark_raw_fd(group, flags, mask, fd) {
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) && !LEGACY_IGNORE.load(Ordering::Relaxed) => {
                tracing::info!("this kernel has no FAN_MARK_IGNORE (6.0+); using FAN_MARK_IGNORED_MASK");
                LEGACY_IGNORE.store(true, Ordering::Relaxed);
            }
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) && evictable != 0 => evictable = 0,
            r => return r,
        }
    }
}

/// Takes back a cached allow from the object `path` names (the file's fd
/// as [`sys::fd_magic_path`](crate::sys::fd_magic_path), or the event fd's): no ignore mark there is
/// fine.
pub(crate) fn uncache(group: BorrowedFd<'_>, path: &std::ffi::CStr) {
    let flags = libc::FAN_MARK_REMOVE | ignore_flag();
    let _ = fanotify::mark(group, flags, KindSet::ALL.fan_mask(), None, Some(path));
}
