//! fanotify groups and marks.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};

/// Creates a fanotify group. `flags` are `FAN_*` init flags; the event fds it
/// hands out are opened with `event_f_flags`.
pub fn init(flags: u32, event_f_flags: u32) -> io::Result<OwnedFd> {
    // SAFETY: no pointers; the result is checked and owned.
    let fd = unsafe { libc::fanotify_init(flags, event_f_flags) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(super::own_fd(fd))
}

/// `fanotify_mark(group, flags, mask, dirfd, path)`. With `path` `None` the
/// object is `dirfd` itself; with `dirfd` `None` a path is taken relative to
/// the working directory.
pub fn mark(
    group: BorrowedFd<'_>,
    flags: u32,
    mask: u64,
    dirfd: Option<BorrowedFd<'_>>,
    path: Option<&CStr>,
) -> io::Result<()> {
    let dirfd = dirfd.map_or(libc::AT_FDCWD, |f| f.as_raw_fd());
    let path_ptr = path.map_or(std::ptr::null(), |p| p.as_ptr());
    // SAFETY: `path_ptr` is NULL or a NUL-terminated string that outlives
    // the call; the fds are borrowed, so they stay open for its duration.
    let rc = unsafe { libc::fanotify_mark(group.as_raw_fd(), flags, mask, dirfd, path_ptr) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `fanotify_mark` on an fd we only have as a raw number (an event fd that
/// the enforcement loop owns and closes later).
pub fn mark_raw_fd(group: BorrowedFd<'_>, flags: u32, mask: u64, fd: i32) -> io::Result<()> {
    // SAFETY: the caller holds `fd` open for the duration of this call (it
    // is an event fd owned by the enforcement loop until it is closed after
    // its response); the path is NULL so the object is `fd` itself.
    let rc = unsafe { libc::fanotify_mark(group.as_raw_fd(), flags, mask, fd, std::ptr::null()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Room for a file handle's bytes (`MAX_HANDLE_SZ`).
const MAX: usize = 128;

/// `struct file_handle` with room for [`MAX`] bytes of handle.
#[repr(C)]
struct Handle {
    bytes: u32,
    kind: i32,
    data: [u8; MAX],
}

/// Encodes the file handle of the object `fd` holds (an `O_PATH` fd will
/// do), as fanotify reports it with `FAN_REPORT_DFID_NAME`: `handle_type`
/// (native endian) followed by the handle bytes.
pub fn handle_of_fd(fd: BorrowedFd<'_>, out: &mut Vec<u8>) -> io::Result<()> {
    handle_at(fd, c"", libc::AT_EMPTY_PATH, out)
}

fn handle_at(dirfd: BorrowedFd<'_>, path: &CStr, flags: libc::c_int, out: &mut Vec<u8>) -> io::Result<()> {
    let mut h = Handle { bytes: MAX as u32, kind: 0, data: [0; MAX] };
    let mut mount_id: libc::c_int = 0;
    // SAFETY: `h` has the `struct file_handle` layout with room for MAX
    // bytes of handle as announced in `bytes`; `path` is NUL-terminated;
    // `mount_id` is a valid out-pointer.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_name_to_handle_at,
            dirfd.as_raw_fd(),
            path.as_ptr(),
            (&mut h as *mut Handle).cast::<libc::c_void>(),
            &mut mount_id as *mut libc::c_int,
            flags,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    out.clear();
    out.extend_from_slice(&h.kind.to_ne_bytes());
    out.extend_from_slice(&h.data[..(h.bytes as usize).min(MAX)]);
    Ok(())
}

/// `open_by_handle_at(mount_fd, handle, O_PATH | O_DIRECTORY | O_CLOEXEC)`:
/// reopens the directory that a fanotify `FAN_REPORT_DFID_NAME` record
/// names, wherever it is now (a renamed directory keeps its handle).
/// `mount_fd` is any fd on the handle's filesystem; `ESTALE` or `EXDEV`
/// when it is on another one (or the directory is gone).
pub fn open_by_handle(mount_fd: BorrowedFd<'_>, handle_type: i32, handle: &[u8]) -> io::Result<OwnedFd> {
    if handle.len() > MAX {
        return Err(io::Error::from_raw_os_error(libc::EOVERFLOW));
    }
    let mut h = Handle { bytes: handle.len() as u32, kind: handle_type, data: [0; MAX] };
    h.data[..handle.len()].copy_from_slice(handle);
    // SAFETY: `h` has the `struct file_handle` layout, `bytes` says how many
    // of its data bytes are valid, and it outlives the call; `mount_fd` is
    // borrowed, so it stays open for its duration.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_open_by_handle_at,
            mount_fd.as_raw_fd(),
            (&mut h as *mut Handle).cast::<libc::c_void>(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(super::own_fd(fd as i32))
}
