//! Deciding permission events, shared by both event loops: for each event,
//! the deciding rule (remembered per inode, or found by path on first sight
//! and then cached, in the guard instance's map or in the kernel), the
//! outcome ([`outcome`], pure: rule, verdict, the subject's exemptions,
//! the guard's mode), the counters and the audit record.
//!
//! Apart from the loops (`enforce`) so that it depends on the guard
//! instance's parts only (its [`Runtime`] and decision map), not on how
//! events are read and answered.

use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use crate::audit::{self, AuditQueue, Outcome, Pending, ProcessInfo};
use crate::cache;
use crate::event::{self, Event};
use crate::instance::{Entry, FileKey, Owner, Runtime};
use crate::policy::{Decision, Policy, Scratch, SubjectOptions, Verdict, classify};
use crate::root::{ExeId, in_root};
use crate::sys;
use crate::{Kind, metrics as m};
use janus_api::Mode;

/// Most decisions remembered per guard instance.
pub(crate) const MAX_ENTRIES: usize = 1 << 20;
/// The path shown for an object whose path the kernel cannot print.
pub(crate) const UNRESOLVED_PATH: &str = "<unresolved: path longer than PATH_MAX>";

/// Per-batch buffers, recycled.
#[derive(Default)]
pub(crate) struct Batch {
    pub responses: Vec<u8>,
    pub fds: Vec<OwnedFd>,
    pub iov: Vec<libc::iovec>,
}

/// Decision making shared by both backends.
pub(crate) struct Decider {
    pid: u32,
    /// Events of other processes decided (for fault injection).
    decided: u64,
    panic_after: Option<u64>,
    stall_after: Option<u64>,
    procs: HashMap<i32, (ProcessInfo, Instant)>,
    queue: AuditQueue,
    path: Vec<u8>,
    /// The path read again after caching (see [`Decider::resolve`]).
    recheck: Vec<u8>,
    batch_size: metrics::Histogram,
    latency: metrics::Histogram,
    overflows: metrics::Counter,
    pub stale: metrics::Counter,
    cache_inserts: metrics::Counter,
    cache_takebacks: metrics::Counter,
}

impl Decider {
    pub fn new(queue: AuditQueue) -> Decider {
        Decider {
            pid: sys::getpid(),
            decided: 0,
            panic_after: crate::fault::faults().panic_after_events,
            stall_after: crate::fault::faults().stall_after_events,
            procs: HashMap::new(),
            queue,
            path: vec![0; libc::PATH_MAX as usize + 1],
            recheck: vec![0; libc::PATH_MAX as usize + 1],
            batch_size: metrics::histogram!(m::BATCH_SIZE),
            latency: metrics::histogram!(m::DECISION_SECONDS),
            overflows: metrics::counter!(m::QUEUE_OVERFLOWS),
            stale: metrics::counter!(m::STALE_RESPONSES),
            cache_inserts: metrics::counter!(m::CACHE_INSERTS),
            cache_takebacks: metrics::counter!(m::CACHE_TAKEBACKS, "why" => "renamed"),
        }
    }

    /// Decides every event in `buf`, appending responses and event fds.
    pub fn batch(&mut self, rt: &Runtime, map: &mut HashMap<FileKey, Entry>, buf: &[u8], out: &mut Batch) {
        let start = Instant::now();
        let mut n = 0u64;
        for (ev, _) in event::events(buf) {
            if ev.mask & libc::FAN_Q_OVERFLOW != 0 {
                self.overflows.increment(1);
                continue;
            }
            if ev.fd < 0 {
                continue;
            }
            let fd = sys::own_fd(ev.fd);
            let allow = self.decide(rt, map, &ev, fd.as_raw_fd());
            event::push_response(&mut out.responses, ev.fd, allow);
            out.fds.push(fd);
            n += 1;
        }
        if n > 0 {
            self.batch_size.record(n as f64);
            self.latency.record(start.elapsed().as_secs_f64());
        }
    }

    fn decide(&mut self, rt: &Runtime, map: &mut HashMap<FileKey, Entry>, ev: &Event, fd: RawFd) -> bool {
        let Some(kind) = Kind::from_fan_mask(ev.mask) else {
            return true;
        };
        if ev.pid as u32 == self.pid {
            // Our own walks and reads: never wait on ourselves.
            return true;
        }
        self.decided += 1;
        if self.panic_after.is_some_and(|n| self.decided >= n) {
            panic!("injected panic after {} events (JANUS_FAULT_INJECT)", self.decided);
        }
        if self.stall_after.is_some_and(|n| self.decided >= n) {
            tracing::error!("injected stall (JANUS_FAULT_INJECT): the enforcement thread stops");
            loop {
                std::thread::park();
            }
        }
        let id = sys::file_id(fd).ok();
        let key = id.map(|i| FileKey { dev: i.dev, ino: i.ino });
        let known = key.and_then(|k| map.get(&k)).filter(|e| id.is_none_or(|i| i.birth == e.birth)).cloned();
        let entry = match known {
            Some(e) => e,
            None => self.resolve(rt, map, fd, id, key),
        };
        let policy = &rt.policy;
        let mut kind = kind;
        let mut deciding = entry.decision.rule(kind);
        if kind == Kind::Open
            && let Some(r) = policy.denies_exec(&entry.decision)
            // Read now, not from the per-pid cache: a process that opened
            // the file a moment ago may have exec'd the loader since.
            && janus_procfs::ProcFs::default()
                .exe(ev.pid as u32)
                .is_ok_and(|exe| exe.to_str().is_some_and(is_dynamic_loader))
        {
            // `ld.so FILE`: the loader opens FILE to map and run it. That
            // is an exec, decided by the exec rule.
            kind = Kind::Exec;
            deciding = Some(r);
        }
        let (outcome, log, rule) = outcome(policy, deciding, |subject, si| {
            (subject.auto_allow_owner && is_owned(ev.pid, &rt.owners))
                || runs_allowed_exe(ev.pid, &rt.exes[si as usize])
        });
        let oi = match outcome {
            Outcome::Allow => 0,
            Outcome::Deny => 1,
            Outcome::WouldDeny => 2,
        };
        rt.counters.events[kind as usize][oi].increment(1);
        if log {
            let (rule_text, tags) = match rule {
                Some(r) => (Some(rt.rule_text[r as usize].clone()), policy.subject_of(r).tags.clone()),
                None => (None, Default::default()),
            };
            let process = (outcome != Outcome::Allow).then(|| self.process_info(ev.pid));
            self.queue.push(Pending {
                time: SystemTime::now(),
                target: rt.info.clone(),
                pid: ev.pid,
                path: entry.path.clone(),
                is_dir: entry.is_dir,
                kind,
                outcome,
                mode: policy.mode,
                rule: rule_text,
                tags,
                log_format: policy.log_format.clone(),
                process,
            });
        }
        outcome != Outcome::Deny
    }

    /// First sight of an inode: decide by its path, then remember the
    /// decision (in the kernel as an ignore mark when it is an unconditional
    /// allow, else in the map).
    fn resolve(
        &mut self,
        rt: &Runtime,
        map: &mut HashMap<FileKey, Entry>,
        fd: RawFd,
        id: Option<sys::FileId>,
        key: Option<FileKey>,
    ) -> Entry {
        let is_dir = id.is_some_and(|i| i.is_dir);
        let len = match sys::fd_path(fd, &mut self.path) {
            Ok(len) => len,
            Err(e) => {
                // No path (longer than the kernel prints, or the fd is
                // gone): the object may be in a denied tree, so it is
                // denied, and never remembered, so the next open tries again.
                tracing::debug!(error = %e, "cannot resolve an event's path; failing closed");
                metrics::counter!(m::ERRORS, "op" => "resolve_path").increment(1);
                return Entry {
                    path: Arc::from(UNRESOLVED_PATH),
                    birth: id.map_or(0, |i| i.birth),
                    is_dir,
                    decision: Decision::fail_closed(&rt.policy),
                };
            }
        };
        let mut shown = &self.path[..len];
        if let Some(p) = shown.strip_suffix(b" (deleted)") {
            shown = p;
        }
        let (inner, decision) = match in_root(shown, &rt.root_shown) {
            Some(inner) => {
                let mut scratch = Scratch::default();
                (inner, rt.policy.decide(inner, is_dir, &mut scratch))
            }
            // Outside the instance's root (a root that is a directory, not
            // a mount, shares its mount with files outside it): this
            // instance's rules, written for paths inside the root, never
            // apply there.
            _ => (shown, Decision::default()),
        };
        let entry = Entry {
            path: Arc::from(String::from_utf8_lossy(inner).as_ref()),
            birth: id.map_or(0, |i| i.birth),
            is_dir,
            decision,
        };
        let (needs, cacheable) = classify(&rt.policy, &decision);
        let single_file = id.is_some_and(|i| i.is_file && i.nlink == 1);
        let mut remember = !needs.is_empty() || !single_file;
        if single_file && !cacheable.is_empty() {
            if cache::cache_allowed(rt.perm.as_fd(), cacheable.fan_mask(), fd).is_ok() {
                // Renamed or linked to another name while this was decided?
                // Then the watcher's news of it may already have been
                // handled, before the mark existed: look again now that it
                // does, and take the cache back unless the name is the same.
                // (Renamed after this look, the watcher's news comes after
                // the mark and takes it back.)
                let again = sys::fd_path(fd, &mut self.recheck).ok();
                let nlink = sys::file_id(fd).map_or(0, |i| i.nlink);
                if again.is_some_and(|n| self.recheck[..n] == self.path[..len]) && nlink == 1 {
                    self.cache_inserts.increment(1);
                } else {
                    cache::uncache(rt.perm.as_fd(), &sys::fd_magic_path(fd));
                    self.cache_takebacks.increment(1);
                    remember = true;
                }
            } else {
                remember = true;
            }
        }
        if remember
            && let Some(k) = key
            && map.len() < MAX_ENTRIES
        {
            map.insert(k, entry.clone());
        }
        entry
    }
}

impl Decider {
    /// Process details for a denial, read while the process still waits on
    /// us. Cached for a second per pid, so a process hammering a denied file
    /// costs three /proc reads per second, not per event.
    fn process_info(&mut self, pid: i32) -> ProcessInfo {
        let now = Instant::now();
        if let Some((info, at)) = self.procs.get(&pid)
            && now.duration_since(*at) < PROCESS_INFO_TTL
        {
            return info.clone();
        }
        if self.procs.len() >= 4096 {
            self.procs.retain(|_, (_, at)| now.duration_since(*at) < PROCESS_INFO_TTL);
        }
        let info = audit::process_info(pid);
        self.procs.insert(pid, (info.clone(), now));
        info
    }
}

/// The outcome of an access that rule `rule` decides (`None`: no rule
/// matches), whether it is logged, and the rule for the record. A denying
/// rule lets the access through when `exempt(subject, subject index)` says
/// the process is exempt from its subject's denies (`autoAllowOwner`,
/// `allowProcesses`); `exempt` reads /proc, so it is called only for a
/// denying rule. Pure otherwise, so it is tested without fanotify.
fn outcome(
    policy: &Policy,
    rule: Option<u32>,
    exempt: impl FnOnce(&SubjectOptions, u32) -> bool,
) -> (Outcome, bool, Option<u32>) {
    let Some(r) = rule else {
        return (Outcome::Allow, false, None);
    };
    let subject = policy.subject_of(r);
    match policy.rule(r).verdict {
        Verdict::Allow => (Outcome::Allow, subject.audit, Some(r)),
        Verdict::Deny if exempt(subject, policy.rule(r).subject) => (Outcome::Allow, subject.audit, Some(r)),
        Verdict::Deny if policy.mode == Mode::Audit => (Outcome::WouldDeny, true, Some(r)),
        Verdict::Deny => (Outcome::Deny, true, Some(r)),
    }
}

/// How long process details of a pid are reused.
const PROCESS_INFO_TTL: std::time::Duration = std::time::Duration::from_secs(1);

/// Whether `exe` (a process's executable path) is a dynamic loader by its
/// name (`ld-linux-x86-64.so.2`, `ld-linux-aarch64.so.1`, `ld-musl-*.so.1`,
/// `ld64.so.2`, `ld.so`). A renamed copy of a loader, like any program that
/// maps code itself, is a reader to fanotify; `deny` on `open` closes that
/// (docs/engine.md, "What exec guards see").
fn is_dynamic_loader(exe: &str) -> bool {
    let name = exe.rsplit('/').next().unwrap_or(exe);
    let name = name.strip_suffix(" (deleted)").unwrap_or(name);
    name == "ld.so" || name.starts_with("ld64.so") || (name.starts_with("ld-") && name.contains(".so"))
}

/// Whether process `pid` runs one of `exes` (`allowProcesses`), read now:
/// the opener is blocked in its open, so its pid names it, and if another
/// of its threads execs meanwhile, the kernel kills the opener first.
fn runs_allowed_exe(pid: i32, exes: &[ExeId]) -> bool {
    !exes.is_empty() && ExeId::of_process(pid as u32).is_some_and(|id| exes.contains(&id))
}

/// Whether `pid` is one of `owners` or descends from one. An ancestor with
/// an owner's pid after that owner exited is a process that reused the pid:
/// not the owner.
///
/// The parent links are not all descent: an owner that is its pid
/// namespace's init adopts every orphan of the namespace, including those
/// of processes that entered it from outside (`kubectl exec`, `nsenter`):
/// `sh -c '(sleep 1; cat secret) &'` leaves a child whose parent is then
/// the owner. Such a link counts only when the owner leads its own session
/// and the child is in it. Sessions are inherited by fork alone (`setsid()`
/// starts a new one), so the members of the owner's session are its
/// descendants, while runtimes start every exec'd process in a session of
/// its own (runc's nsexec calls `setsid()`). The price: a descendant that
/// starts its own session and is then orphaned is no longer the owner's
/// (docs/guard-format.md, `autoAllowOwner`). Subreapers only adopt their
/// own descendants, so links to any other parent are descent.
fn is_owned(pid: i32, owners: &[Owner]) -> bool {
    if owners.is_empty() {
        return false;
    }
    let mut p = pid as u32;
    let proc = janus_procfs::ProcFs::default();
    let mut child: Option<janus_procfs::Stat> = None;
    for _ in 0..128 {
        let Ok(st) = proc.stat(p) else {
            return false;
        };
        if let Some(o) = owners.iter().find(|o| o.pid == p) {
            let adopted = match &child {
                Some(c) if o.reaper => !(st.session == o.pid && c.session == o.pid),
                _ => false,
            };
            return !adopted && o.is(p);
        }
        match st.ppid {
            pp if pp > 0 && pp != p => p = pp,
            _ => return false,
        }
        child = Some(st);
    }
    false
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::is_dynamic_loader;
    use super::{Outcome, outcome};
    use crate::Kind;
    use crate::policy::{Policy, Scratch};
    use janus_api::{GuardSpec, Mode, Subject};

    fn subject(allow: &[&str], deny: &[&str]) -> Subject {
        Subject {
            allow: allow.iter().map(|s| s.to_string()).collect(),
            deny: deny.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    fn policy(subjects: Vec<Subject>, mode: Mode) -> Policy {
        Policy::compile(&GuardSpec { subjects, mode, ..Default::default() }).unwrap()
    }

    /// The rule deciding an open of file `path`.
    fn rule(p: &Policy, path: &str) -> Option<u32> {
        p.decide(path.as_bytes(), false, &mut Scratch::default()).rule(Kind::Open)
    }

    /// An `exempt` that must not be called.
    fn never(_: &crate::policy::SubjectOptions, _: u32) -> bool {
        panic!("exempt asked for an access no denying rule decides")
    }

    #[test]
    fn no_rule_allows_unlogged() {
        let p = policy(vec![subject(&[], &["/secret"])], Mode::Enforce);
        assert_eq!(rule(&p, "/elsewhere"), None);
        assert_eq!(outcome(&p, None, never), (Outcome::Allow, false, None));
    }

    #[test]
    fn allow_rule_allows_logged_as_its_subject_audits() {
        let quiet = Subject { auto_allow_owner: true, ..subject(&["/data/public"], &["/data"]) };
        let audited = Subject { audit: true, ..subject(&["/etc/nginx"], &[]) };
        let p = policy(vec![quiet, audited], Mode::Enforce);
        let r = rule(&p, "/data/public/a").expect("the allow rule decides");
        assert_eq!(outcome(&p, Some(r), never), (Outcome::Allow, false, Some(r)));
        let r = rule(&p, "/etc/nginx/nginx.conf").expect("the audited allow rule decides");
        assert_eq!(outcome(&p, Some(r), never), (Outcome::Allow, true, Some(r)));
        // Audit mode changes nothing for an allow.
        let p = policy(vec![subject(&["/a"], &[])], Mode::Audit);
        let r = rule(&p, "/a").unwrap();
        assert_eq!(outcome(&p, Some(r), never), (Outcome::Allow, false, Some(r)));
    }

    #[test]
    fn deny_rule_denies_logged_unless_exempt() {
        let first = subject(&[], &["/other"]);
        let second = Subject { auto_allow_owner: true, ..subject(&[], &["/secret"]) };
        let p = policy(vec![first, second], Mode::Enforce);
        let r = rule(&p, "/secret/key").expect("the deny rule decides");
        let asked = Cell::new(None);
        let not_exempt = |s: &crate::policy::SubjectOptions, si: u32| {
            asked.set(Some((s.auto_allow_owner, si)));
            false
        };
        assert_eq!(outcome(&p, Some(r), not_exempt), (Outcome::Deny, true, Some(r)));
        // Asked once, about the rule's own subject (the second).
        assert_eq!(asked.get(), Some((true, 1)));
        assert_eq!(outcome(&p, Some(r), |_, _| true), (Outcome::Allow, false, Some(r)));
        // An exempt process is logged if its subject audits.
        let audited = Subject { audit: true, ..subject(&[], &["/secret"]) };
        let p = policy(vec![audited], Mode::Enforce);
        let r = rule(&p, "/secret").unwrap();
        assert_eq!(outcome(&p, Some(r), |_, si| si == 0), (Outcome::Allow, true, Some(r)));
        assert_eq!(outcome(&p, Some(r), |_, _| false), (Outcome::Deny, true, Some(r)));
    }

    #[test]
    fn audit_mode_would_deny_unless_exempt() {
        let p = policy(vec![subject(&[], &["/secret"])], Mode::Audit);
        let r = rule(&p, "/secret").unwrap();
        assert_eq!(outcome(&p, Some(r), |_, _| false), (Outcome::WouldDeny, true, Some(r)));
        assert_eq!(outcome(&p, Some(r), |_, _| true), (Outcome::Allow, false, Some(r)));
    }

    #[test]
    fn dynamic_loaders_by_name() {
        for exe in [
            "/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
            "/lib/ld-linux-aarch64.so.1",
            "/lib/ld-musl-x86_64.so.1",
            "/lib64/ld64.so.2",
            "/usr/bin/ld.so",
            "/lib/ld-linux.so.2 (deleted)",
        ] {
            assert!(is_dynamic_loader(exe), "{exe}");
        }
        for exe in ["/usr/bin/cat", "/usr/bin/ld", "/usr/bin/ldd", "/opt/ld-tool", "/usr/lib/libld-x.so"] {
            assert!(!is_dynamic_loader(exe), "{exe}");
        }
    }
}
