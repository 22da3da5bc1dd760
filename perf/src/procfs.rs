//! Facts about this process and machine from `/proc`, and CPU pinning
//! through `taskset` (util-linux), so the crate needs no unsafe code.

use std::io;
use std::process::{Command, Stdio};

/// A reading of this process's CPU clock; see [`CpuSample::since`].
#[derive(Clone, Copy, Debug)]
pub struct CpuSample {
    /// Sum of `/proc/self/task/*/schedstat` (ns, live threads only).
    sched_ns: Option<u64>,
    /// utime + stime of `/proc/self/stat` (all threads, 10 ms ticks).
    stat_ns: u64,
    /// Live threads.
    threads: u64,
}

impl CpuSample {
    /// Reads the clock now.
    pub fn now() -> io::Result<CpuSample> {
        let sched = schedstat_sum().ok();
        Ok(CpuSample { sched_ns: sched.map(|s| s.0), stat_ns: stat_cpu_ns()?, threads: sched.map_or(1, |s| s.1) })
    }

    /// CPU time (user + system) the process used between `earlier` and
    /// `self`, ns. Precise (schedstat) unless threads that used CPU exited
    /// in between, which only the coarse tick count sees: then the tick
    /// count is used.
    pub fn since(&self, earlier: &CpuSample) -> u64 {
        let stat = self.stat_ns.saturating_sub(earlier.stat_ns);
        match (self.sched_ns, earlier.sched_ns) {
            (Some(a), Some(b)) => {
                let sched = a.saturating_sub(b);
                // Each live thread's tick count may be one tick off.
                let tolerance = 10_000_000 * (self.threads.max(earlier.threads) + 1);
                if stat > sched + tolerance { stat } else { sched }
            }
            _ => stat,
        }
    }
}

/// (sum of run time in ns, live threads).
fn schedstat_sum() -> io::Result<(u64, u64)> {
    let (mut total, mut threads) = (0u64, 0u64);
    for task in std::fs::read_dir("/proc/self/task")? {
        let path = task?.path().join("schedstat");
        // A thread may exit between listing and reading.
        let Ok(text) = std::fs::read_to_string(path) else {
            continue;
        };
        total += parse_first_u64(&text)?;
        threads += 1;
    }
    Ok((total, threads))
}

fn parse_first_u64(text: &str) -> io::Result<u64> {
    text.split_whitespace()
        .next()
        .and_then(|f| f.parse().ok())
        .ok_or_else(|| io::Error::other(format!("unexpected schedstat: {text:?}")))
}

fn stat_cpu_ns() -> io::Result<u64> {
    let text = std::fs::read_to_string("/proc/self/stat")?;
    parse_stat_cpu_ticks(&text)
        // USER_HZ is 100 on every Linux ABI Janus targets.
        .map(|ticks| ticks * 10_000_000)
        .ok_or_else(|| io::Error::other("unexpected /proc/self/stat"))
}

/// utime + stime (fields 14 and 15) of a `/proc/<pid>/stat` line, in ticks.
fn parse_stat_cpu_ticks(text: &str) -> Option<u64> {
    // The command name (field 2) may hold spaces; fields after it are plain.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3, so utime (14) is index 11.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Resident set size of this process in KiB (`VmRSS`).
pub fn vm_rss_kib() -> io::Result<u64> {
    status_field("VmRSS:")?
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| io::Error::other("unexpected VmRSS"))
}

/// Number of open file descriptors of this process.
pub fn open_fds() -> io::Result<usize> {
    Ok(std::fs::read_dir("/proc/self/fd")?.count())
}

/// Whether the effective uid is 0.
pub fn is_root() -> bool {
    status_field("Uid:").ok().and_then(|v| v.split_whitespace().nth(1).map(|e| e == "0")).unwrap_or(false)
}

fn status_field(name: &str) -> io::Result<String> {
    let text = std::fs::read_to_string("/proc/self/status")?;
    text.lines()
        .find_map(|l| l.strip_prefix(name))
        .map(|v| v.trim().to_string())
        .ok_or_else(|| io::Error::other(format!("no {name} in /proc/self/status")))
}

/// The kernel release (`uname -r`).
pub fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// The first three fields of `/proc/loadavg`.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// Whether process `pid` exists.
pub fn pid_alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// `fs.fanotify.max_user_groups`, if readable.
pub fn fanotify_max_groups() -> Option<usize> {
    std::fs::read_to_string("/proc/sys/fs/fanotify/max_user_groups").ok()?.trim().parse().ok()
}

/// Whether `taskset` can be run (needed for pinned runs).
pub fn have_taskset() -> bool {
    Command::new("taskset").arg("-V").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
}

/// Kernel thread id of the calling thread, from `/proc/thread-self`.
pub fn current_tid() -> io::Result<u32> {
    let link = std::fs::read_link("/proc/thread-self")?;
    link.file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| io::Error::other(format!("unexpected /proc/thread-self: {link:?}")))
}

/// Pins the calling thread to `cpu` (threads it spawns later inherit it).
pub fn pin_current_thread(cpu: usize) -> io::Result<()> {
    let tid = current_tid()?;
    let status = Command::new("taskset")
        .args(["-p", "-c", &cpu.to_string(), &tid.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?;
    if status.success() { Ok(()) } else { Err(io::Error::other(format!("taskset -p -c {cpu} {tid}: {status}"))) }
}

/// Whether the open fanotify group of this process holds at least one mark
/// (its `/proc/self/fdinfo` lists `fanotify ino:` lines).
pub fn fanotify_has_marks() -> bool {
    let Ok(fds) = std::fs::read_dir("/proc/self/fd") else {
        return false;
    };
    fds.flatten().any(|fd| {
        let is_fanotify = std::fs::read_link(fd.path()).is_ok_and(|t| t.to_string_lossy() == "anon_inode:[fanotify]");
        is_fanotify
            && std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.file_name().to_string_lossy()))
                .is_ok_and(|info| info.contains("fanotify ino:"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_line_with_spaces_in_name() {
        let line = "42 (a b) S 1 42 42 0 -1 4194560 100 0 0 0 7 3 0 0 20 0 1 0 5 0 0";
        assert_eq!(parse_stat_cpu_ticks(line), Some(10));
    }

    #[test]
    fn own_process_facts() {
        assert!(vm_rss_kib().unwrap() > 0);
        assert!(open_fds().unwrap() >= 3);
        assert!(current_tid().unwrap() > 0);
        assert!(CpuSample::now().unwrap().stat_ns < u64::MAX);
    }

    #[test]
    fn cpu_delta_prefers_schedstat_unless_threads_exited() {
        let s = |sched: u64, stat: u64| CpuSample { sched_ns: Some(sched), stat_ns: stat, threads: 2 };
        // Precise figure within the tick tolerance.
        assert_eq!(s(1_234_567_890, 1_230_000_000).since(&s(1_000_000_000, 1_000_000_000)), 234_567_890);
        // A thread that used 500 ms exited: schedstat lost it, ticks did not.
        assert_eq!(s(1_000_000_000, 1_500_000_000).since(&s(900_000_000, 1_000_000_000)), 500_000_000);
        let coarse = CpuSample { sched_ns: None, stat_ns: 30_000_000, threads: 1 };
        assert_eq!(coarse.since(&CpuSample { stat_ns: 10_000_000, ..coarse }), 20_000_000);
    }
}
