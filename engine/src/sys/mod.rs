//! Every system call the engine makes that needs `unsafe`, each wrapped in a
//! small safe function. Nothing outside this module uses `unsafe`.
//!
//! Kept deliberately thin: no policy, no state, only "call the kernel and
//! turn the result into an `io::Result`".

pub mod fanotify;
pub mod uring;

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// Identity of a file object: device, inode, and birth (or change) time so
/// that a reused inode number is not mistaken for the file it replaced.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FileId {
    /// `st_dev`.
    pub dev: u64,
    /// `st_ino`.
    pub ino: u64,
    /// Birth time in ns when the filesystem reports it, else 0.
    pub birth: u64,
    /// Whether the object is a directory.
    pub is_dir: bool,
    /// Whether the object is a regular file.
    pub is_file: bool,
    /// Hard link count.
    pub nlink: u32,
    /// Mount id (`STATX_MNT_ID`), 0 when the kernel does not report it.
    pub mnt_id: u64,
}

/// `statx(fd, "", AT_EMPTY_PATH | AT_STATX_DONT_SYNC)`: the identity of an
/// open file. Called on the enforcement thread for every event: on a
/// network filesystem (NFS, FUSE with caching) `AT_STATX_DONT_SYNC` takes
/// what the client has cached instead of asking the server, so one slow
/// server cannot stall the answers of every guard (identity fields do not
/// change for an open file).
pub fn file_id(fd: RawFd) -> io::Result<FileId> {
    statx_at(fd, c"", libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW | libc::AT_STATX_DONT_SYNC)
}

/// `statx(dirfd, name, AT_SYMLINK_NOFOLLOW)`, or of a path when `dirfd` is
/// `AT_FDCWD`.
pub fn statx_at(dirfd: RawFd, name: &CStr, flags: libc::c_int) -> io::Result<FileId> {
    // SAFETY: `statx` is plain-old-data; all-zero is a valid value.
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    let mask = libc::STATX_TYPE | libc::STATX_INO | libc::STATX_NLINK | libc::STATX_BTIME | libc::STATX_MNT_ID;
    // SAFETY: `name` is NUL-terminated and outlives the call; `stx` is a
    // valid, exclusively borrowed out-buffer of the right type.
    let rc = unsafe { libc::statx(dirfd, name.as_ptr(), flags, mask, &mut stx) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    let birth = if stx.stx_mask & libc::STATX_BTIME != 0 {
        (stx.stx_btime.tv_sec as u64).wrapping_mul(1_000_000_000) + stx.stx_btime.tv_nsec as u64
    } else {
        0
    };
    let fmt = u32::from(stx.stx_mode) & libc::S_IFMT;
    Ok(FileId {
        dev: libc::makedev(stx.stx_dev_major, stx.stx_dev_minor),
        ino: stx.stx_ino,
        birth,
        is_dir: fmt == libc::S_IFDIR,
        is_file: fmt == libc::S_IFREG,
        nlink: stx.stx_nlink,
        mnt_id: if stx.stx_mask & libc::STATX_MNT_ID != 0 { stx.stx_mnt_id } else { 0 },
    })
}

/// Reads the path of an open fd (`/proc/self/fd/N`) into `buf` without
/// allocating; returns the length. A path longer than `buf` is an error.
pub fn fd_path(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    let mut link = [0u8; 32];
    let prefix = b"/proc/self/fd/";
    link[..prefix.len()].copy_from_slice(prefix);
    let mut n = prefix.len();
    let mut digits = [0u8; 12];
    let mut v = fd as u32;
    let mut d = 0;
    loop {
        digits[d] = b'0' + (v % 10) as u8;
        d += 1;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    for i in (0..d).rev() {
        link[n] = digits[i];
        n += 1;
    }
    link[n] = 0;
    // SAFETY: `link` is NUL-terminated at `n`; `buf` is a valid writable
    // region of `buf.len()` bytes for the duration of the call.
    let rc = unsafe { libc::readlink(link.as_ptr().cast(), buf.as_mut_ptr().cast(), buf.len()) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    let len = rc as usize;
    if len == buf.len() {
        return Err(io::Error::other("path longer than buffer"));
    }
    Ok(len)
}

/// Takes ownership of an fd the kernel handed us (e.g. in a fanotify event).
pub fn own_fd(fd: RawFd) -> OwnedFd {
    // SAFETY: called only for fds that the kernel just installed in our fd
    // table on our behalf (fanotify event fds), which nothing else owns.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// A non-blocking, close-on-exec eventfd, used to wake a thread that sleeps
/// in the kernel.
pub fn eventfd() -> io::Result<OwnedFd> {
    // SAFETY: no pointers involved; the returned fd is checked and owned.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(own_fd(fd))
}

/// Adds 1 to an eventfd's counter.
pub fn eventfd_signal(fd: BorrowedFd<'_>) -> io::Result<()> {
    let one: u64 = 1;
    // SAFETY: writes 8 bytes from a valid local.
    let rc = unsafe { libc::write(fd.as_raw_fd(), (&one as *const u64).cast(), 8) };
    if rc < 0 {
        let e = io::Error::last_os_error();
        // EAGAIN: the counter is saturated, the reader will wake anyway.
        if e.raw_os_error() != Some(libc::EAGAIN) {
            return Err(e);
        }
    }
    Ok(())
}

/// Non-blocking `read(2)` into `buf`.
pub fn read(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid and writable for `buf.len()` bytes.
    let rc = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(rc as usize) }
}

/// `writev(2)` of `count` consecutive `chunk`-sized pieces of `data`, one
/// iovec each. fanotify applies one response per iovec.
pub fn writev_chunks(fd: RawFd, data: &[u8], chunk: usize, iov: &mut Vec<libc::iovec>) -> io::Result<usize> {
    iov.clear();
    for piece in data.chunks(chunk) {
        iov.push(libc::iovec { iov_base: piece.as_ptr() as *mut _, iov_len: piece.len() });
    }
    // SAFETY: every iovec points into `data`, which is borrowed for the call.
    let rc = unsafe { libc::writev(fd, iov.as_ptr(), iov.len() as libc::c_int) };
    if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(rc as usize) }
}

/// `poll(2)` on `fds` (events POLLIN); returns how many are ready.
pub fn poll_in(fds: &mut [libc::pollfd], timeout_ms: i32) -> io::Result<usize> {
    // SAFETY: `fds` is a valid, exclusively borrowed array of pollfd.
    let rc = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
    if rc < 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::Interrupted {
            return Ok(0);
        }
        return Err(e);
    }
    Ok(rc as usize)
}

/// `openat2(dirfd, path, O_PATH | O_CLOEXEC, RESOLVE_IN_ROOT |
/// RESOLVE_NO_MAGICLINKS)`: opens `path` as if `dirfd` were `/`. Absolute
/// symlinks and `..` stay inside `dirfd`; magic links (`/proc/<pid>/root`,
/// `/proc/self/fd/N`) fail with `ELOOP` instead of being followed.
pub fn openat2_in_root(dirfd: BorrowedFd<'_>, path: &CStr) -> io::Result<OwnedFd> {
    openat2(dirfd, path, libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS)
}

/// Like [`openat2_in_root`], and no symlink at all is followed, the last
/// component's included (`ELOOP`): the object at exactly `path` inside
/// `dirfd`, for a walk whose paths hold no symlinks (a symlink there now
/// was swapped in since the directory was listed).
pub fn openat2_in_root_no_symlinks(dirfd: BorrowedFd<'_>, path: &CStr) -> io::Result<OwnedFd> {
    openat2(dirfd, path, libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS | libc::RESOLVE_NO_SYMLINKS)
}

fn openat2(dirfd: BorrowedFd<'_>, path: &CStr, resolve: u64) -> io::Result<OwnedFd> {
    // SAFETY: `open_how` is plain-old-data; all-zero is a valid value.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (libc::O_PATH | libc::O_CLOEXEC) as u64;
    how.resolve = resolve;
    // SAFETY: `path` is NUL-terminated and outlives the call; `how` is a
    // valid `open_how` passed with its exact size; `dirfd` is borrowed, so
    // it stays open for the duration of the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dirfd.as_raw_fd(),
            path.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just installed this fd for us.
    Ok(unsafe { OwnedFd::from_raw_fd(rc as RawFd) })
}

/// `/proc/self/fd/N` for an fd of ours: a path that every path-taking call
/// (`fanotify_mark`, `opendir`) follows to exactly the object the fd holds,
/// wherever it is now, whatever was swapped in on the way. It names the fd
/// only while the fd stays open (a held fd, or an event fd the engine owns
/// until its response is sent).
pub fn fd_magic_path(fd: RawFd) -> std::ffi::CString {
    std::ffi::CString::new(format!("/proc/self/fd/{fd}")).expect("no NUL in a number")
}

/// `pidfd_open(pid, 0)`: a handle on one run of a process. While the
/// process lives its pid cannot be reused, and the handle never refers to
/// a later process with the same pid.
pub fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    // SAFETY: no pointers; the returned fd is new and owned by nobody else.
    let rc = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just installed this fd for us.
    Ok(unsafe { OwnedFd::from_raw_fd(rc as RawFd) })
}

/// Whether the process behind a pidfd has exited (the pidfd polls
/// readable then). An error counts as exited.
pub fn pidfd_exited(fd: BorrowedFd<'_>) -> bool {
    let mut p = [libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 }];
    !matches!(poll_in(&mut p, 0), Ok(0))
}

/// `statfs(2)` filesystem magic of the file at `fd`.
pub fn fs_magic(fd: RawFd) -> io::Result<i64> {
    // SAFETY: plain-old-data out-struct.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is a valid out-pointer for the call.
    let rc = unsafe { libc::fstatfs(fd, &mut st) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st.f_type as i64)
}

/// The process id of the calling process (the thread group id).
pub fn getpid() -> u32 {
    std::process::id()
}

/// `write(2)` of `data`; returns bytes written.
pub fn write(fd: RawFd, data: &[u8]) -> io::Result<usize> {
    // SAFETY: `data` is valid for reads of `data.len()` bytes.
    let rc = unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) };
    if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(rc as usize) }
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit: every permission
/// event the agent reads carries an fd, so a low soft limit (often 1024)
/// turns a burst of opens into `EMFILE` (and the kernel then denies those
/// events). Returns (soft limit before, soft limit now).
pub fn raise_nofile_limit() -> io::Result<(u64, u64)> {
    let mut r = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes only into `r`, which lives on our stack.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let before = r.rlim_cur;
    if r.rlim_cur < r.rlim_max {
        r.rlim_cur = r.rlim_max;
        // SAFETY: setrlimit only reads `r`.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &r) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok((before, r.rlim_cur))
}
