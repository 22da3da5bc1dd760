//! `janus-probe`: a tiny opener used by the tests as "another process".
//! Every operation prints one result word: `ok`, `EPERM`, `ENOENT`, or
//! `ERR:<message>`. A watchdog exits the process after 30 s so a hung
//! listener can never leave it behind.

use std::io::{BufRead, Read, Write};
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
    word(match kind {
        "open" => std::fs::File::open(path).map(drop),
        "read" => std::fs::File::open(path).and_then(|mut f| {
            let mut b = [0u8; 1];
            f.read(&mut b).map(drop)
        }),
        "exec" => std::process::Command::new(path).status().map(drop),
        "list" => std::fs::read_dir(path).map(drop),
        _ => Err(std::io::Error::other(format!("unknown op {kind}"))),
    })
}

fn main() {
    std::thread::spawn(|| {
        std::thread::sleep(Duration::from_secs(30));
        eprintln!("janus-probe: watchdog expired");
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
