//! Rule paths resolved inside a guard instance's root.
//!
//! A container reaches its files through its own root: in a Debian image
//! `/var/run` is a symlink to `/run`, so a rule on `/var/run/secrets/x`
//! protects `/run/secrets/x`. The engine reaches the container's files from
//! outside (`/proc/<pid>/root/...`), where an absolute symlink would resolve
//! against the agent's root instead, and the kernel reports every event
//! under the real path (`/run/secrets/x`). So each rule's literal prefix is
//! resolved once, at apply, with `openat2(RESOLVE_IN_ROOT |
//! RESOLVE_NO_MAGICLINKS)` from the root, exactly as the container would
//! resolve it, and a rule whose prefix passes through a symlink gets an
//! *alias*: the same rule at the real path. Nothing is ever resolved
//! against the agent's root, and a magic link (`/proc/<pid>/root`) is never
//! followed: that rule is guarded as written, with a warning.

use std::ffi::CString;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;

use crate::policy::Policy;
use crate::sys;

/// One file, as `allowProcesses` identifies an executable: by inode (and
/// birth time where the filesystem keeps one), never by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ExeId {
    dev: u64,
    ino: u64,
    birth: u64,
}

impl ExeId {
    /// The executable that process `pid` runs now (`/proc/<pid>/exe`,
    /// opened `O_PATH`: no open event, no read).
    pub fn of_process(pid: u32) -> Option<ExeId> {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_CLOEXEC)
            .open(format!("/proc/{pid}/exe"))
            .ok()?;
        ExeId::of_fd(&f.into())
    }

    fn of_fd(fd: &OwnedFd) -> Option<ExeId> {
        use std::os::fd::AsRawFd;
        let id = sys::file_id(fd.as_raw_fd()).ok()?;
        id.is_file.then_some(ExeId { dev: id.dev, ino: id.ino, birth: id.birth })
    }
}

/// The executables each subject's `allowProcesses` names, found inside
/// `root` as the container would resolve them (symlinks followed inside
/// the root, magic links refused), and notes for the report about those
/// that allow nothing.
pub(crate) fn resolve_executables(root: &Path, policy: &Policy) -> (Vec<Vec<ExeId>>, Vec<String>) {
    let mut notes = Vec::new();
    if policy.subjects.iter().all(|s| s.allow_processes.is_empty()) {
        return (vec![Vec::new(); policy.subjects.len()], notes);
    }
    let rootfd = match open_root(root) {
        Ok(fd) => fd,
        Err(e) => {
            notes.push(format!(
                "cannot open the root {} to find allowProcesses: {e}; they allow nothing",
                root.display()
            ));
            return (vec![Vec::new(); policy.subjects.len()], notes);
        }
    };
    let exes = policy
        .subjects
        .iter()
        .enumerate()
        .map(|(si, subject)| {
            let mut ids = Vec::new();
            for (j, exe) in subject.allow_processes.iter().enumerate() {
                let at = format!("subjects[{si}].allowProcesses[{j}] {exe}");
                let found = CString::new(exe.trim_start_matches('/'))
                    .map_err(|_| "holds a NUL byte".to_string())
                    .and_then(|c| sys::openat2_in_root(rootfd.as_fd(), &c).map_err(|e| e.to_string()));
                match found.map(|fd| ExeId::of_fd(&fd)) {
                    Ok(Some(id)) => ids.push(id),
                    Ok(None) => notes.push(format!("{at}: not a regular file inside the root; it allows nothing")),
                    Err(e) => notes.push(format!("{at}: not found inside the root ({e}); it allows nothing")),
                }
            }
            ids
        })
        .collect();
    (exes, notes)
}

/// `root`, opened `O_PATH` as the directory paths are resolved from.
pub(crate) fn open_root(root: &Path) -> std::io::Result<OwnedFd> {
    Ok(std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(root)?
        .into())
}

/// The policy to enforce under `root` (with aliases for rules whose paths
/// pass through symlinks inside it) and what the report should say about it.
pub(crate) fn resolve_rules(root: &Path, root_shown: &[u8], policy: Arc<Policy>) -> (Arc<Policy>, Vec<String>) {
    let rootfd = match open_root(root) {
        Ok(fd) => fd,
        Err(e) => return (policy, vec![format!("cannot open the root {} to resolve rule paths: {e}", root.display())]),
    };
    let mut aliases = Vec::new();
    let mut notes = Vec::new();
    let mut buf = vec![0u8; libc::PATH_MAX as usize + 1];
    for (i, rule) in policy.rules.iter().enumerate() {
        let prefix = rule.pattern.literal_prefix();
        let text = rule.text.as_ref();
        if prefix == "/" || !text.starts_with(prefix.as_str()) {
            continue;
        }
        match real_path(&rootfd, &prefix, root_shown, &mut buf) {
            Ok(Some(real)) if real != prefix => {
                let alias = format!("{real}{}", &text[prefix.len()..]);
                notes.push(format!("rule {text} passes through a symlink inside the root: guarded at {alias}"));
                aliases.push((i as u32, alias));
            }
            Ok(_) => {}
            Err(why) => notes.push(format!("rule {text}: {why}; guarded as written")),
        }
    }
    if aliases.is_empty() {
        return (policy, notes);
    }
    match policy.with_aliases(&aliases) {
        Ok(p) => (Arc::new(p), notes),
        Err(e) => {
            notes.push(format!("cannot guard rules at their real paths ({e}); guarded as written"));
            (policy, notes)
        }
    }
}

/// The real in-root path of `path`: its deepest existing ancestor-or-self
/// resolved inside the root, then the rest as written. `Ok(None)` when
/// nothing of it exists.
fn real_path(rootfd: &OwnedFd, path: &str, root_shown: &[u8], buf: &mut [u8]) -> Result<Option<String>, String> {
    let mut existing = path;
    loop {
        let rest = &path[existing.len()..];
        let Ok(c) = CString::new(existing.trim_start_matches('/')) else {
            return Err("path holds a NUL byte".into());
        };
        match sys::openat2_in_root(rootfd.as_fd(), &c) {
            Ok(fd) => {
                use std::os::fd::AsRawFd;
                let len = sys::fd_path(fd.as_raw_fd(), buf).map_err(|e| format!("cannot read its real path: {e}"))?;
                let inner =
                    in_root(&buf[..len], root_shown).ok_or_else(|| "its real path is outside the root".to_string())?;
                let inner = std::str::from_utf8(inner).map_err(|_| "its real path is not UTF-8".to_string())?;
                let joined = if inner == "/" && !rest.is_empty() { rest.to_string() } else { format!("{inner}{rest}") };
                return Ok(Some(joined));
            }
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR)) => {
                match existing.rfind('/') {
                    Some(0) | None => return Ok(None),
                    Some(i) => existing = &existing[..i],
                }
            }
            // ELOOP: a magic link refused by RESOLVE_NO_MAGICLINKS (or a
            // loop); EACCES: /proc refuses the magic link before that.
            Err(e) if matches!(e.raw_os_error(), Some(libc::ELOOP) | Some(libc::EACCES)) => {
                return Err("it passes through a link that is not followed inside a root (a magic link such as \
                            /proc/<pid>/root, or a symlink loop)"
                    .into());
            }
            Err(e) => return Err(format!("cannot resolve it inside the root: {e}")),
        }
    }
}

/// The in-root path of a path the kernel printed (`readlink` of an fd),
/// given the prefix it shows for the instance's root (`Runtime::root_shown`,
/// empty for `/`): `Some("/")` for the root itself, `None` for a path
/// outside the root.
pub(crate) fn in_root<'a>(shown: &'a [u8], root_shown: &[u8]) -> Option<&'a [u8]> {
    match shown.strip_prefix(root_shown) {
        Some(rest) if root_shown.is_empty() || rest.is_empty() || rest[0] == b'/' => {
            Some(if rest.is_empty() { &b"/"[..] } else { rest })
        }
        _ => None,
    }
}
