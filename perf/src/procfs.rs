//! Facts about this process and machine from `/proc`, and CPU pinning
//! through `taskset` (util-linux), so the crate needs no unsafe code.

use std::io;
use std::process::{Command, Stdio};

use janus_procfs::{Pid, ProcError, ProcFs};

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
    let proc = ProcFs::default();
    let (mut total, mut threads) = (0u64, 0u64);
    for tid in proc.tasks(Pid::SelfProc)? {
        match proc.task_schedstat(Pid::SelfProc, tid?) {
            Ok(s) => {
                total += s.run_ns;
                threads += 1;
            }
            Err(e @ ProcError::Parse { .. }) => return Err(e.into()),
            // A thread may exit between listing and reading.
            Err(_) => {}
        }
    }
    Ok((total, threads))
}

fn stat_cpu_ns() -> io::Result<u64> {
    let stat = ProcFs::default().stat(Pid::SelfProc)?;
    // USER_HZ is 100 on every Linux ABI Janus targets.
    Ok((stat.utime + stat.stime) * 10_000_000)
}

/// Resident set size of this process in KiB (`VmRSS`).
pub fn vm_rss_kib() -> io::Result<u64> {
    ProcFs::default()
        .status(Pid::SelfProc)?
        .vm_rss_kib
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no VmRSS in /proc/self/status"))
}

/// Number of open file descriptors of this process.
pub fn open_fds() -> io::Result<usize> {
    Ok(ProcFs::default().fds(Pid::SelfProc)?.count())
}

/// Whether the effective uid is 0.
pub fn is_root() -> bool {
    ProcFs::default().status(Pid::SelfProc).is_ok_and(|s| s.uid.effective == 0)
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
    ProcFs::default().exists(pid)
}

/// `fs.fanotify.max_user_groups`, if readable.
pub fn fanotify_max_groups() -> Option<usize> {
    ProcFs::default().fanotify_max_user_groups().ok().map(|n| n as usize)
}

/// Whether `taskset` can be run (needed for pinned runs).
pub fn have_taskset() -> bool {
    Command::new("taskset").arg("-V").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
}

/// Kernel thread id of the calling thread, from `/proc/thread-self`.
pub fn current_tid() -> io::Result<u32> {
    Ok(ProcFs::default().current_tid()?)
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
    let proc = ProcFs::default();
    proc.fanotify_fds(Pid::SelfProc).is_ok_and(|fds| {
        fds.into_iter().any(|fd| proc.fdinfo(Pid::SelfProc, fd).is_ok_and(|i| !i.fanotify_inodes.is_empty()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
