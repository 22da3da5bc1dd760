//! `janus-probe`: a tiny opener used by the tests as "another process".
//! Every operation prints one result word: `ok`, `EPERM`, `ENOENT`, or
//! `ERR:<message>`. A watchdog exits the process (status 99) after 30 s, or
//! `JANUS_PROBE_WATCHDOG` seconds, so a hung listener can never leave it
//! behind.
//!
//! `execveat PATH` and `fexecve PATH` replace the probe with PATH through an
//! fd (PATH then runs with the argument `ran`).
//!
//! `janus-probe serve` is a test container's main process: it prints
//! `pid <pid>`, then reads `OP PATH` lines from stdin and answers each with
//! one line, until stdin closes. Ops: `open`, `read`, `exec`, `list`,
//! `spawn-open` (a child process of the probe opens PATH; prints the child's
//! result), `whoami` (`pid=<pid> ppid=<ppid>`), `cgroup` (this process's
//! /proc/self/cgroup lines, space-separated).

use std::io::{BufRead, Read, Write};
use std::process::Stdio;
use std::time::{Duration, Instant};

fn word(r: std::io::Result<()>) -> String {
    match r {
        Ok(()) => "ok".into(),
        Err(e) => match e.raw_os_error() {
            Some(1) => "EPERM".into(),
            Some(2) => "ENOENT".into(),
            Some(13) => "EACCES".into(),
            _ => format!("ERR:{e}"),
        },
    }
}

fn op(kind: &str, path: &str) -> String {
    match kind {
        "whoami" => return format!("pid={} ppid={}", std::process::id(), std::os::unix::process::parent_id()),
        "cgroup" => {
            return match std::fs::read_to_string("/proc/self/cgroup") {
                Ok(s) => s.lines().collect::<Vec<_>>().join(" "),
                Err(e) => word(Err(e)),
            };
        }
        // Replace this process with PATH, given as an fd, not a name:
        // `execveat(fd, "", AT_EMPTY_PATH)` on an O_PATH fd, or
        // `fexecve` on an O_RDONLY one. PATH runs with the argument `ran`
        // (a copy of `echo` prints it); on failure the result word.
        "execveat" | "fexecve" => return fd_exec(kind, path),
        "spawn-open" => {
            // A child of this process (for autoAllowOwner: the owner's children).
            let me = std::env::current_exe().unwrap_or_else(|_| std::env::args().next().unwrap_or_default().into());
            let out = std::process::Command::new(me).args(["open", path]).stdin(Stdio::null()).output();
            return out
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
                .unwrap_or_else(|e| format!("ERR:{e}"));
        }
        _ => {}
    }
    word(match kind {
        "open" => std::fs::File::open(path).map(drop),
        "read" => std::fs::File::open(path).and_then(|mut f| {
            let mut b = [0u8; 1];
            f.read(&mut b).map(drop)
        }),
        // stdin/stdout to /dev/null: in `serve` they carry the protocol.
        "exec" => std::process::Command::new(path).stdin(Stdio::null()).stdout(Stdio::null()).status().map(drop),
        "list" => std::fs::read_dir(path).map(drop),
        _ => Err(std::io::Error::other(format!("unknown op {kind}"))),
    })
}

fn fd_exec(kind: &str, path: &str) -> String {
    use nix::fcntl::{OFlag, open};
    use nix::sys::stat::Mode;
    use std::ffi::CString;
    let flags = if kind == "execveat" { OFlag::O_PATH } else { OFlag::O_RDONLY };
    let fd = match open(path, flags | OFlag::O_CLOEXEC, Mode::empty()) {
        Ok(fd) => fd,
        Err(e) => return word(Err(e.into())),
    };
    let argv = [CString::new(path).unwrap_or_default(), c"ran".to_owned()];
    let env: [CString; 0] = [];
    let _ = std::io::stdout().flush();
    let err = if kind == "execveat" {
        nix::unistd::execveat(&fd, c"", &argv, &env, nix::fcntl::AtFlags::AT_EMPTY_PATH).unwrap_err()
    } else {
        nix::unistd::fexecve(&fd, &argv, &env).unwrap_err()
    };
    word(Err(err.into()))
}

/// `serve`: answer `OP PATH` lines until stdin closes.
fn serve() {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "pid {}", std::process::id());
    let _ = out.flush();
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        let line = line.trim_end_matches('\r');
        if line.is_empty() {
            continue;
        }
        let (kind, path) = line.split_once(' ').unwrap_or((line, ""));
        let answer = op(kind, path);
        if writeln!(out, "{answer}").and_then(|()| out.flush()).is_err() {
            break;
        }
    }
}

fn main() {
    let watchdog =
        std::env::var("JANUS_PROBE_WATCHDOG").ok().and_then(|s| s.trim().parse::<f64>().ok()).unwrap_or(30.0);
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs_f64(watchdog.clamp(0.1, 86_400.0)));
        eprintln!("janus-probe: watchdog expired after {watchdog} s");
        std::process::exit(99);
    });
    let args: Vec<String> = std::env::args().collect();
    let get = |i: usize| args.get(i).cloned().unwrap_or_default();
    match get(1).as_str() {
        // owner PATH: wait for a line on stdin, then open PATH here and in a child.
        "owner" => {
            let mut line = String::new();
            let _ = std::io::stdin().lock().read_line(&mut line);
            let me = op("open", &get(2));
            let child = std::process::Command::new(&args[0]).args(["open", &get(2)]).output();
            let child = child
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
                .unwrap_or_else(|e| format!("ERR:{e}"));
            println!("{me} {child}");
        }
        "serve" => serve(),
        // hammer SECONDS PATH...: open+close the paths round robin; print
        // per-path counts as JSON: {"path": [ok, denied, other], ...}.
        "hammer" => {
            let secs: f64 = get(2).parse().unwrap_or(1.0);
            let paths = &args[3..];
            let mut counts = vec![[0u64; 3]; paths.len()];
            let end = Instant::now() + Duration::from_secs_f64(secs);
            while Instant::now() < end {
                for (i, p) in paths.iter().enumerate() {
                    match std::fs::File::open(p) {
                        Ok(_) => counts[i][0] += 1,
                        Err(e) if e.raw_os_error() == Some(1) => counts[i][1] += 1,
                        Err(_) => counts[i][2] += 1,
                    }
                }
            }
            let obj: serde_json::Map<String, serde_json::Value> =
                paths.iter().zip(&counts).map(|(p, c)| (p.clone(), serde_json::json!(c))).collect();
            println!("{}", serde_json::Value::Object(obj));
        }
        kind => println!("{}", op(kind, &get(2))),
    }
    let _ = std::io::stdout().flush();
}
