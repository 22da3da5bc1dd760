//! The files a run opens and the guards it applies, in a temporary directory
//! this process creates under `/tmp`, bind-mounts onto itself and removes
//! when dropped. Nothing outside it is ever marked: the engine marks the
//! whole mount that holds a guarded tree (so files created later are
//! decided), and this mount is the fixture's own, like a container's root.
//!
//! Layout of `/tmp/janus-perf-<pid>-<n>/`:
//! - `guarded/`: a small fake root filesystem, the guard's `root`
//!   (`etc/…`, and `bench/` with the opened files `f0000.txt…`, the
//!   files `h0000.txt…` that also have a second name in `links/`, and the
//!   denied `secret.key`);
//! - `links/`: the second names of `bench/h*.txt` (the engine never caches
//!   a file with two names in the kernel, so every open of them is decided
//!   in user space, without audit);
//! - `outside/`: files on the same filesystem that no guard covers;
//! - `engine.yaml`, `engine-uncached.yaml`: the guards the `engine`
//!   configurations apply (paths inside `guarded/`).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context;
use janus_api::{GuardSpec, Subject};

/// The bench directory as the guard sees it (inside its root).
pub const BENCH_IN_ROOT: &str = "/bench";

/// Number of generated deny rules per family in the realistic guard
/// (four families, plus a few fixed rules: about 300 rules in all).
const FAMILY: usize = 75;

/// A temporary directory tree for one harness run.
#[derive(Debug)]
pub struct Fixture {
    /// The temporary directory; removed on drop.
    pub base: PathBuf,
    /// The guard root (`base/guarded`).
    pub root: PathBuf,
    /// The guarded bench directory (`root/bench`).
    pub bench: PathBuf,
    /// Files opened by the throughput scenario.
    pub files: Vec<PathBuf>,
    /// Bench files with a second name (hard link) outside the guard root.
    pub linked_files: Vec<PathBuf>,
    /// A file every engine configuration denies.
    pub denied: PathBuf,
    /// Files outside every guarded path.
    pub outside_files: Vec<PathBuf>,
    /// Guard whose bench files are allowed without audit (cached in the kernel).
    pub guard_cached: PathBuf,
    /// Guard whose bench files are allowed with `audit: true` (every open
    /// decided in user space).
    pub guard_uncached: PathBuf,
}

impl Fixture {
    /// Creates the tree with `files` bench files and as many outside files.
    pub fn create(files: usize) -> anyhow::Result<Fixture> {
        let base = unique_dir()?;
        if let Err(e) = own_mount(&base) {
            let _ = std::fs::remove_dir(&base);
            return Err(e);
        }
        let mut fx = Fixture {
            root: base.join("guarded"),
            bench: base.join("guarded/bench"),
            denied: base.join("guarded/bench/secret.key"),
            guard_cached: base.join("engine.yaml"),
            guard_uncached: base.join("engine-uncached.yaml"),
            base,
            files: Vec::new(),
            linked_files: Vec::new(),
            outside_files: Vec::new(),
        };
        fx.populate(files).with_context(|| format!("populate {}", fx.base.display()))?;
        Ok(fx)
    }

    fn populate(&mut self, files: usize) -> anyhow::Result<()> {
        let root = &self.root;
        std::fs::create_dir_all(root.join("etc/ssl/private"))?;
        std::fs::create_dir_all(&self.bench)?;
        std::fs::create_dir_all(self.base.join("outside"))?;
        std::fs::create_dir_all(self.base.join("links"))?;
        for (rel, text) in [
            ("etc/passwd", "root:x:0:0::/root:/bin/sh\n"),
            ("etc/shadow", "root:*:19000::::::\n"),
            ("etc/hosts", "127.0.0.1 localhost\n"),
            ("etc/ssl/private/server.key", "key\n"),
            ("etc/ssl/private/public.pem", "pem\n"),
        ] {
            std::fs::write(root.join(rel), text)?;
        }
        std::fs::write(&self.denied, "secret\n")?;
        for i in 0..files {
            let f = self.bench.join(format!("f{i:04}.txt"));
            std::fs::write(&f, "x")?;
            self.files.push(f);
            let o = self.base.join(format!("outside/f{i:04}.txt"));
            std::fs::write(&o, "x")?;
            self.outside_files.push(o);
            let h = self.bench.join(format!("h{i:04}.txt"));
            std::fs::write(&h, "x")?;
            std::fs::hard_link(&h, self.base.join(format!("links/h{i:04}.txt")))?;
            self.linked_files.push(h);
        }
        std::fs::write(&self.guard_cached, realistic_guard("bench", false))?;
        std::fs::write(&self.guard_uncached, realistic_guard("bench-uncached", true))?;
        Ok(())
    }

    /// `n` new one-byte files in a new directory `name` under the fixture
    /// (on its mount, outside every guarded path).
    pub fn fresh_files(&self, name: &str, n: usize) -> anyhow::Result<Vec<PathBuf>> {
        let dir = self.base.join(name);
        std::fs::create_dir_all(&dir)?;
        (0..n)
            .map(|i| {
                let f = dir.join(format!("f{i:05}"));
                std::fs::write(&f, "x")?;
                Ok(f)
            })
            .collect()
    }

    /// A fresh empty directory under the fixture.
    pub fn subdir(&self, name: &str) -> anyhow::Result<PathBuf> {
        let p = self.base.join(name);
        std::fs::create_dir_all(&p)?;
        Ok(p)
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        unmount(&self.base);
        let _ = std::fs::remove_dir_all(&self.base);
    }
}

/// Bind-mounts `dir` onto itself, so that it is a mount of its own.
fn own_mount(dir: &Path) -> anyhow::Result<()> {
    let st = std::process::Command::new("mount")
        .arg("--bind")
        .arg(dir)
        .arg(dir)
        .status()
        .context("run mount (util-linux)")?;
    anyhow::ensure!(st.success(), "mount --bind {0} {0} failed ({st}); janus-perf needs root", dir.display());
    Ok(())
}

/// Lazily unmounts everything at and below `dir` (quietly: it may not be
/// mounted).
fn unmount(dir: &Path) {
    let _ =
        std::process::Command::new("umount").arg("-R").arg("-l").arg(dir).stderr(std::process::Stdio::null()).status();
}

/// Removes `/tmp/janus-perf-<pid>-<n>` directories whose process is gone
/// (left by a run that was interrupted).
fn sweep_stale() {
    let Ok(entries) = std::fs::read_dir("/tmp") else { return };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix("janus-perf-")) else { continue };
        let Some((pid, n)) = rest.split_once('-') else { continue };
        if let (Ok(pid), Ok(_)) = (pid.parse::<u32>(), n.parse::<u32>())
            && !crate::procfs::pid_alive(pid)
        {
            unmount(&e.path());
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

fn unique_dir() -> anyhow::Result<PathBuf> {
    sweep_stale();
    let pid = std::process::id();
    for n in 0..1000 {
        let p = Path::new("/tmp").join(format!("janus-perf-{pid}-{n}"));
        match std::fs::create_dir(&p) {
            Ok(()) => return Ok(p),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e).with_context(|| format!("create {}", p.display())),
        }
    }
    anyhow::bail!("no free /tmp/janus-perf-{pid}-N directory")
}

/// The generated "other" deny rules of the realistic guard: four families of
/// [`FAMILY`] rules (literal files, globs, `**` trees, `**` + glob).
fn other_rules() -> Vec<String> {
    let mut rules = Vec::with_capacity(4 * FAMILY);
    for i in 0..FAMILY {
        rules.push(format!("/etc/app{i}/credentials"));
        rules.push(format!("/srv/tenant{i}/**/*.pem"));
        rules.push(format!("/home/user{i}/.ssh/id_*"));
        rules.push(format!("/var/lib/db{i}/**"));
    }
    rules
}

/// A realistic guard (about 300 rules, denials audited) as a `JanusGuard`
/// manifest, paths relative to the fixture's root. `/bench/**/*.key` is
/// denied, so the bench directory is marked and its files are decided by the
/// engine. With `audit_bench`, the bench files are also in an `audit: true`
/// allow subject, so every open of them is answered from user space instead
/// of being cached in the kernel.
pub fn realistic_guard(name: &str, audit_bench: bool) -> String {
    let mut deny = vec![
        "/etc/shadow".to_string(),
        "/etc/gshadow".to_string(),
        "/etc/ssl/private/**".to_string(),
        "/root/**".to_string(),
        format!("{BENCH_IN_ROOT}/**/*.key"),
    ];
    deny.extend(other_rules());
    let mut y = String::new();
    let _ = writeln!(
        y,
        "apiVersion: januscontroller.clustergarage.io/v1alpha1\nkind: JanusGuard\nmetadata:\n  name: {name}\n  namespace: perf\nspec:\n  subjects:"
    );
    let list = |y: &mut String, key: &str, items: &[String]| {
        let _ = writeln!(y, "    {key}:");
        for i in items {
            let _ = writeln!(y, "    - \"{i}\"");
        }
    };
    // At most 256 paths per list, as the CRD allows.
    for chunk in deny.chunks(janus_api::guard::MAX_PATHS) {
        y.push_str("  - tags: {team: perf}\n");
        list(&mut y, "deny", chunk);
    }
    y.push_str("  - events: [open]\n");
    list(&mut y, "allow", &["/etc/ssl/private/public.pem".to_string()]);
    if audit_bench {
        y.push_str("  - events: [open]\n    audit: true\n");
        list(&mut y, "allow", &[format!("{BENCH_IN_ROOT}/*.txt")]);
    }
    y
}

/// A guard spec with `n` deny rules for the decision-scale scenario, every
/// rule under `prefix` (e.g. `/g7`, or empty). Rules cycle through four
/// shapes, each under its own literal directory: a literal file, a glob, a
/// `**` tree and `**` + glob.
pub fn scale_spec(n: usize, prefix: &str) -> GuardSpec {
    let deny = (0..n)
        .map(|i| match i % 4 {
            0 => format!("{prefix}/srv/app{i}/secret"),
            1 => format!("{prefix}/data/t{i}/*.pem"),
            2 => format!("{prefix}/var/lib/s{i}/**"),
            _ => format!("{prefix}/home/u{i}/**/*.key"),
        })
        .collect();
    GuardSpec { subjects: vec![Subject { deny, ..Default::default() }], ..Default::default() }
}

/// Paths to decide against [`scale_spec`]`(n, prefix)`: hits of each shape
/// spread over the rule set, and misses (see [`scale_path`]).
pub fn scale_paths(n: usize, prefix: &str, count: usize) -> Vec<Vec<u8>> {
    (0..count).map(|k| scale_path(n, prefix, k)).collect()
}

/// The `k`th path to decide against [`scale_spec`]`(n, prefix)`: of every
/// six, four hit a rule (one of each shape, spread over the set) and two
/// miss.
pub fn scale_path(n: usize, prefix: &str, k: usize) -> Vec<u8> {
    let shape = k % 6;
    let i = ((k * 7919) % n.max(1)) / 4 * 4 + shape % 4;
    let i = if i >= n { shape % 4 } else { i };
    let p = match shape {
        0 => format!("{prefix}/srv/app{i}/secret"),
        1 => format!("{prefix}/data/t{i}/cert.pem"),
        2 => format!("{prefix}/var/lib/s{i}/a/b/c.db"),
        3 => format!("{prefix}/home/u{i}/x/y/id.key"),
        4 => format!("{prefix}/usr/lib/x86_64-linux-gnu/libc.so.6"),
        _ => format!("{prefix}/bench/f{k:04}.txt"),
    };
    p.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use janus_api::GuardManifest;
    use janus_engine::policy::{Policy, Scratch};
    use std::sync::Arc;

    #[test]
    fn realistic_guards_parse_and_compile() {
        for audit in [false, true] {
            let m = GuardManifest::parse_all(&realistic_guard("g", audit)).unwrap().remove(0);
            let p = Policy::compile(&m.spec).unwrap();
            assert!(p.rules.len() >= 300, "{}", p.rules.len());
            let mut s = Scratch::default();
            let d = p.decide(b"/bench/secret.key", false, &mut s);
            assert!(d.rule(janus_engine::Kind::Open).is_some());
            let d = p.decide(b"/bench/f0001.txt", false, &mut s);
            assert_eq!(d.rule(janus_engine::Kind::Open).is_some(), audit);
        }
    }

    #[test]
    fn scale_paths_hit_rules() {
        let spec = scale_spec(100, "/g1");
        let p = Arc::new(Policy::compile(&spec).unwrap());
        let mut s = Scratch::default();
        let paths = scale_paths(100, "/g1", 60);
        let hits = paths.iter().filter(|q| p.decide(q, false, &mut s).rule(janus_engine::Kind::Open).is_some()).count();
        assert_eq!(hits, 40, "four of every six paths hit a rule");
        assert_eq!(scale_spec(1, "").subjects[0].deny.len(), 1);
        assert_eq!(scale_paths(1, "", 6).len(), 6);
    }
}
