//! Pure parsers of /proc file contents. None of them touches the
//! filesystem, so each is tested on literal text.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;

/// What is wrong with the contents of a /proc file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The text ends (or the line has no more fields) before this field.
    #[error("no {field} field")]
    Missing {
        /// The field, e.g. `start_time` or `Uid`.
        field: &'static str,
    },
    /// The field is there but is not what it should be (usually: not a
    /// number).
    #[error("bad {field} field {value:?}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// Its text.
        value: String,
    },
}

fn missing(field: &'static str) -> ParseError {
    ParseError::Missing { field }
}

/// Parses a decimal number field.
fn number<T: std::str::FromStr>(field: &'static str, value: Option<&str>) -> Result<T, ParseError> {
    let value = value.ok_or(missing(field))?;
    value.parse().map_err(|_| ParseError::Invalid { field, value: value.to_string() })
}

/// The fields of `/proc/<pid>/stat` that Janus uses (see proc(5) for the
/// numbering).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    /// Field 1: process ID.
    pub pid: u32,
    /// Field 2: command name, without the parentheses. It may contain
    /// spaces and `)`.
    pub comm: String,
    /// Field 3: state (`R` running, `S` sleeping, `Z` zombie, ...).
    pub state: char,
    /// Field 4: parent's process ID (0 for init and kernel threads' parent).
    pub ppid: u32,
    /// Field 6: session ID (the pid of the session's leader). A process
    /// joins a session only by being forked from a member, or starts its
    /// own with `setsid()`; `autoAllowOwner` relies on that (the engine's
    /// `is_owned`).
    pub session: u32,
    /// Field 14: user-mode CPU time of all threads, in clock ticks.
    pub utime: u64,
    /// Field 15: kernel-mode CPU time of all threads, in clock ticks.
    pub stime: u64,
    /// Field 22: start time in clock ticks after boot. With `pid` it names
    /// one run of a process: a reused pid has another start time.
    pub start_time: u64,
}

impl Stat {
    /// Parses the contents of `/proc/<pid>/stat`.
    ///
    /// The command name is between the first `(` and the *last* `)`, since
    /// it may itself contain `)` and spaces; the numbered fields are counted
    /// from there. Fields after start time may be absent (older kernels,
    /// truncated reads of an exiting process) and are not needed.
    pub fn parse(text: &str) -> Result<Stat, ParseError> {
        let open = text.find('(').ok_or(missing("comm"))?;
        let close = text.rfind(')').filter(|&c| c > open).ok_or(missing("comm"))?;
        let pid = number("pid", Some(text[..open].trim_end()))?;
        let comm = text[open + 1..close].to_string();
        // Field 3 onwards.
        let mut fields = text[close + 1..].split_ascii_whitespace();
        let state = fields.next().ok_or(missing("state"))?;
        let mut chars = state.chars();
        let state = match (chars.next(), chars.next()) {
            (Some(c), None) => c,
            _ => return Err(ParseError::Invalid { field: "state", value: state.to_string() }),
        };
        let ppid = number("ppid", fields.next())?; // 4
        let session = number("session", fields.nth(1))?; // 6 (skips 5)
        let utime = number("utime", fields.nth(7))?; // 14 (skips 7..=13)
        let stime = number("stime", fields.next())?; // 15
        let start_time = number("start_time", fields.nth(6))?; // 22 (skips 16..=21)
        Ok(Stat { pid, comm, state, ppid, session, utime, stime, start_time })
    }
}

/// One set of user or group IDs from `/proc/<pid>/status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ids {
    /// Real ID: who started the process.
    pub real: u32,
    /// Effective ID: what permission checks use.
    pub effective: u32,
    /// Saved set-ID.
    pub saved: u32,
    /// Filesystem ID.
    pub filesystem: u32,
}

impl Ids {
    fn parse(field: &'static str, value: Option<&str>) -> Result<Ids, ParseError> {
        let mut v = value.ok_or(missing(field))?.split_ascii_whitespace();
        Ok(Ids {
            real: number(field, v.next())?,
            effective: number(field, v.next())?,
            saved: number(field, v.next())?,
            filesystem: number(field, v.next())?,
        })
    }
}

/// The fields of `/proc/<pid>/status` that Janus uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status {
    /// `Uid:` real, effective, saved, filesystem.
    pub uid: Ids,
    /// `Gid:` real, effective, saved, filesystem.
    pub gid: Ids,
    /// `VmRSS:` resident set size in KiB; absent for kernel threads (and
    /// zombies), which have no memory of their own.
    pub vm_rss_kib: Option<u64>,
    /// `Threads:` number of threads, when the kernel reports it.
    pub threads: Option<u64>,
    /// The last `NSpid:` field: the process's pid in its own (innermost)
    /// pid namespace; 1 for a namespace's init, which adopts every orphan
    /// of that namespace. `None` on kernels without the field (< 4.1).
    pub ns_pid: Option<u32>,
}

impl Status {
    /// Parses the contents of `/proc/<pid>/status` (`Key:\tvalue` lines).
    /// `Uid` and `Gid` are required; unknown keys are ignored.
    pub fn parse(text: &str) -> Result<Status, ParseError> {
        let (mut uid, mut gid, mut rss, mut threads, mut nspid) = (None, None, None, None, None);
        for line in text.lines() {
            let Some((key, value)) = line.split_once(':') else {
                continue;
            };
            match key {
                "Uid" => uid = Some(value),
                "Gid" => gid = Some(value),
                "VmRSS" => rss = Some(value),
                "Threads" => threads = Some(value),
                "NSpid" => nspid = Some(value),
                _ => {}
            }
        }
        let vm_rss_kib = match rss {
            // "  1234 kB"
            Some(v) => Some(number("VmRSS", v.split_ascii_whitespace().next())?),
            None => None,
        };
        let threads = match threads {
            Some(v) => Some(number("Threads", v.split_ascii_whitespace().next())?),
            None => None,
        };
        let ns_pid = match nspid {
            // "\t1234\t1": outermost first.
            Some(v) => Some(number("NSpid", v.split_ascii_whitespace().last())?),
            None => None,
        };
        Ok(Status { uid: Ids::parse("Uid", uid)?, gid: Ids::parse("Gid", gid)?, vm_rss_kib, threads, ns_pid })
    }
}

/// One line of `/proc/<pid>/cgroup`: `hierarchy-ID:controllers:path`.
///
/// cgroup v2 has one line, `0::/path`; each v1 hierarchy has its own, e.g.
/// `4:cpu,cpuacct:/path` or `1:name=systemd:/path`; hybrid hosts have both.
/// The path is relative to the reader's cgroup namespace root, so it may
/// start with `/..`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CgroupLine<'a> {
    /// Hierarchy ID (0 for v2).
    pub hierarchy: u32,
    /// Comma-separated controllers (`cpu,cpuacct`, `name=systemd`); empty
    /// for v2. See [`CgroupLine::controllers`].
    pub controllers: &'a str,
    /// The cgroup's path. May contain `:`.
    pub path: &'a str,
}

impl<'a> CgroupLine<'a> {
    /// Parses one line (without its newline).
    pub fn parse(line: &'a str) -> Result<CgroupLine<'a>, ParseError> {
        let mut fields = line.splitn(3, ':');
        let hierarchy = number("hierarchy", fields.next().filter(|f| !f.is_empty()))?;
        let controllers = fields.next().ok_or(missing("controllers"))?;
        let path = fields.next().ok_or(missing("path"))?;
        Ok(CgroupLine { hierarchy, controllers, path })
    }

    /// Parses every line of the file, lazily and without allocating, so a
    /// scan over all processes can stop at the first line that matters.
    /// Empty lines are skipped; each malformed line yields an error item.
    pub fn parse_all(text: &'a str) -> impl Iterator<Item = Result<CgroupLine<'a>, ParseError>> + 'a {
        text.lines().filter(|l| !l.is_empty()).map(CgroupLine::parse)
    }

    /// The controllers of a v1 hierarchy, one by one (`name=...` entries
    /// included); none for v2.
    pub fn controllers(&self) -> impl Iterator<Item = &'a str> + 'a {
        self.controllers.split(',').filter(|c| !c.is_empty())
    }

    /// Whether this is the cgroup v2 (unified) hierarchy.
    pub fn is_v2(&self) -> bool {
        self.hierarchy == 0 && self.controllers.is_empty()
    }
}

/// One line of `/proc/<pid>/mountinfo`:
/// `ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTIONS`.
///
/// Paths are unescaped (the kernel writes space, tab, newline and `\` as
/// `\040`, `\011`, `\012`, `\134`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// Mount ID.
    pub mount_id: u32,
    /// Parent's mount ID.
    pub parent_id: u32,
    /// The directory of the filesystem that is the root of this mount (`/`
    /// unless a subtree is mounted, e.g. a bind mount or a cgroup mount
    /// inside a cgroup namespace).
    pub root: String,
    /// Where it is mounted, relative to the reader's root.
    pub mount_point: PathBuf,
    /// Per-mount options (`rw,relatime`).
    pub options: String,
    /// Filesystem type (`cgroup2`, `ext4`, ...).
    pub fs_type: String,
    /// Source (`/dev/sda1`, `tmpfs`, `none`).
    pub source: String,
    /// Per-superblock options; for cgroup v1 they include the controllers
    /// (`rw,cpu,cpuacct`).
    pub super_options: String,
}

impl Mount {
    /// For an overlayfs mount, the directories its layers live in
    /// (`lowerdir` entries, `upperdir`, `workdir`, as given to mount);
    /// empty for any other filesystem. Reading an event for an overlay
    /// directory makes the kernel open the matching directory of a layer,
    /// which a permission listener must not be waiting on.
    pub fn overlay_layers(&self) -> Vec<PathBuf> {
        if self.fs_type != "overlay" {
            return Vec::new();
        }
        let mut out = Vec::new();
        for opt in split_unescaped(&self.super_options, ',') {
            let Some((key, value)) = opt.split_once('=') else { continue };
            match key {
                "lowerdir" | "lowerdir+" | "datadir+" => {
                    out.extend(split_unescaped(value, ':').into_iter().map(|p| layer_path(&p)));
                }
                "upperdir" | "workdir" => out.push(layer_path(value)),
                _ => {}
            }
        }
        out.retain(|p| !p.as_os_str().is_empty());
        out
    }

    /// Parses one line.
    pub fn parse(line: &str) -> Result<Mount, ParseError> {
        let (left, right) = line.split_once(" - ").ok_or(missing("separator"))?;
        let mut l = left.split(' ');
        let mount_id = number("mount ID", l.next())?;
        let parent_id = number("parent ID", l.next())?;
        let _major_minor = l.next().ok_or(missing("major:minor"))?;
        let root = unescape(l.next().ok_or(missing("root"))?);
        let mount_point = PathBuf::from(OsString::from_vec(unescape(l.next().ok_or(missing("mount point"))?)));
        let options = l.next().ok_or(missing("mount options"))?.to_string();
        let mut r = right.split(' ');
        let fs_type = r.next().ok_or(missing("filesystem type"))?.to_string();
        let source = unescape(r.next().ok_or(missing("source"))?);
        let super_options = r.next().ok_or(missing("super options"))?.to_string();
        Ok(Mount {
            mount_id,
            parent_id,
            root: String::from_utf8_lossy(&root).into_owned(),
            mount_point,
            options,
            fs_type,
            source: String::from_utf8_lossy(&source).into_owned(),
            super_options,
        })
    }

    /// Parses every line of the file, lazily; each malformed line yields an
    /// error item.
    pub fn parse_all(text: &str) -> impl Iterator<Item = Result<Mount, ParseError>> + '_ {
        text.lines().filter(|l| !l.is_empty()).map(Mount::parse)
    }
}

/// Splits `s` at `sep` unless escaped with a backslash (overlay options
/// escape `,` and `:` in paths that way); the escapes are removed.
fn split_unescaped(s: &str, sep: char) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.clone().next() {
                Some(n) if n == sep || n == '\\' => {
                    chars.next();
                    out.last_mut().expect("never empty").push(n);
                }
                _ => out.last_mut().expect("never empty").push(c),
            },
            c if c == sep => out.push(String::new()),
            c => out.last_mut().expect("never empty").push(c),
        }
    }
    out
}

fn layer_path(s: &str) -> PathBuf {
    PathBuf::from(OsString::from_vec(unescape(s)))
}

/// Undoes mountinfo's octal escapes (`\040` for a space, ...).
fn unescape(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        // `\` and three octal digits; `\777` and the like (over 255) are
        // not escapes and are kept as they are.
        let escaped = match b.get(i..i + 4) {
            Some([b'\\', digits @ ..]) if digits.iter().all(|d| (b'0'..=b'7').contains(d)) => {
                u8::try_from(digits.iter().fold(0u32, |v, d| v * 8 + u32::from(d - b'0'))).ok()
            }
            _ => None,
        };
        match escaped {
            Some(v) => {
                out.push(v);
                i += 4;
            }
            None => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    out
}

/// `/proc/<pid>/task/<tid>/schedstat`: a thread's CPU time, in nanoseconds
/// (precise, unlike the tick counts of `stat`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedstat {
    /// Time spent on a CPU, ns.
    pub run_ns: u64,
    /// Time spent waiting on a run queue, ns.
    pub wait_ns: u64,
    /// Number of time slices run on a CPU.
    pub timeslices: u64,
}

impl Schedstat {
    /// Parses the file's one line: three numbers.
    pub fn parse(text: &str) -> Result<Schedstat, ParseError> {
        let mut f = text.split_ascii_whitespace();
        Ok(Schedstat {
            run_ns: number("run time", f.next())?,
            wait_ns: number("wait time", f.next())?,
            timeslices: number("timeslices", f.next())?,
        })
    }
}

/// The parts of `/proc/<pid>/fdinfo/<fd>` that Janus uses.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FdInfo {
    /// For a fanotify group: the inode numbers it has inode marks on (the
    /// `fanotify ino:<hex>` lines). Empty for any other fd.
    pub fanotify_inodes: Vec<u64>,
    /// The same inode marks with their flags and masks.
    pub fanotify_marks: Vec<InodeMark>,
}

/// One `fanotify ino:` line of a group's fdinfo.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct InodeMark {
    /// Inode number.
    pub ino: u64,
    /// `mflags`: `FAN_MARK_*` flags the mark was made with (evictable,
    /// ignored-survive-modify, `FAN_MARK_IGNORE` style ignore flags).
    pub mflags: u64,
    /// Events the mark asks for.
    pub mask: u64,
    /// Events the mark ignores.
    pub ignored_mask: u64,
}

impl FdInfo {
    /// Parses the file.
    pub fn parse(text: &str) -> Result<FdInfo, ParseError> {
        let mut fanotify_inodes = Vec::new();
        let mut fanotify_marks = Vec::new();
        let hex = |field: &'static str, v: &str| {
            u64::from_str_radix(v, 16).map_err(|_| ParseError::Invalid { field, value: v.to_string() })
        };
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("fanotify ino:") {
                let field = "fanotify ino";
                let mut words = rest.split_ascii_whitespace();
                let ino = hex(field, words.next().ok_or(missing(field))?)?;
                let mut mark = InodeMark { ino, ..Default::default() };
                for w in words {
                    match w.split_once(':') {
                        Some(("mflags", v)) => mark.mflags = hex("mflags", v)?,
                        Some(("mask", v)) => mark.mask = hex("mask", v)?,
                        Some(("ignored_mask", v)) => mark.ignored_mask = hex("ignored_mask", v)?,
                        _ => {}
                    }
                }
                fanotify_inodes.push(ino);
                fanotify_marks.push(mark);
            }
        }
        Ok(FdInfo { fanotify_inodes, fanotify_marks })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn overlay_layers_from_super_options() {
        let line = "712 30 0:120 / /run/c/rootfs rw,relatime - overlay overlay \
                    rw,lowerdir=/var/lib/s/3/fs:/var/lib/s/2/fs:/var/lib/a\\:b,upperdir=/var/lib/s/4/fs,workdir=/var/lib/s/4/work,uuid=on";
        let m = super::Mount::parse(line).unwrap();
        let layers: Vec<String> = m.overlay_layers().iter().map(|p| p.display().to_string()).collect();
        assert_eq!(
            layers,
            ["/var/lib/s/3/fs", "/var/lib/s/2/fs", "/var/lib/a:b", "/var/lib/s/4/fs", "/var/lib/s/4/work"]
        );
        let ext4 = super::Mount::parse("22 1 8:1 / / rw,relatime - ext4 /dev/sda1 rw").unwrap();
        assert!(ext4.overlay_layers().is_empty());
    }

    use super::*;

    /// A stat line for `comm` with state S, ppid 900, session 1233, utime 7, stime 3,
    /// start time 4242, and the real kernel's trailing fields.
    fn stat_line(comm: &str) -> String {
        format!(
            "1234 ({comm}) S 900 1234 1233 0 -1 4194560 100 0 0 0 7 3 0 0 20 0 1 0 4242 1234567 89 18446744073709551615 0 0\n"
        )
    }

    #[test]
    fn stat_with_odd_command_names() {
        for comm in ["cat", "my (odd) cmd", "a) b)", ") S 1 2 3", "(", "", "x y  z", "🦀"] {
            let s = Stat::parse(&stat_line(comm)).unwrap_or_else(|e| panic!("{comm:?}: {e}"));
            assert_eq!(
                s,
                Stat {
                    pid: 1234,
                    comm: comm.to_string(),
                    state: 'S',
                    ppid: 900,
                    session: 1233,
                    utime: 7,
                    stime: 3,
                    start_time: 4242
                },
                "{comm:?}"
            );
        }
    }

    #[test]
    fn stat_minimal_and_short_lines() {
        // Ends right at start time: enough.
        let s = Stat::parse("7 (a) b) c) R 3 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 99").unwrap();
        assert_eq!((s.comm.as_str(), s.state, s.ppid, s.start_time), ("a) b) c", 'R', 3, 99));
        let cases: &[(&str, ParseError)] = &[
            ("", missing("comm")),
            ("7 (a R 3", missing("comm")),
            ("7 )a( R 3", missing("comm")),
            ("7 (a)", missing("state")),
            ("7 (a) R", missing("ppid")),
            ("1001 (x) S 900 1", missing("session")),
            ("1001 (x) S 900 1 1", missing("utime")),
            ("1 (x) S 0 0 0 0 0 0 0 0 0 0 5", missing("stime")),
            ("1 (x) S 0 0 0 0 0 0 0 0 0 0 5 6 0 0 0 0 0", missing("start_time")),
        ];
        for (text, want) in cases {
            assert_eq!(Stat::parse(text).unwrap_err(), *want, "{text:?}");
        }
    }

    /// [`stat_line`] with field `n` (proc(5) numbering, 3 or more) replaced.
    fn with_field(n: usize, value: &str) -> String {
        let line = stat_line("a");
        let (head, rest) = line.split_at(line.rfind(')').unwrap() + 1);
        let mut fields: Vec<&str> = rest.split_ascii_whitespace().collect();
        fields[n - 3] = value;
        format!("{head} {}", fields.join(" "))
    }

    #[test]
    fn stat_non_numeric_fields() {
        let invalid = |field, value: &str| ParseError::Invalid { field, value: value.to_string() };
        assert_eq!(Stat::parse(&with_field(22, "4242")).unwrap().start_time, 4242);
        let cases = [
            (with_field(3, "RS"), invalid("state", "RS")),
            (with_field(4, "x"), invalid("ppid", "x")),
            (with_field(4, "-1"), invalid("ppid", "-1")),
            (with_field(4, "99999999999"), invalid("ppid", "99999999999")),
            (with_field(6, "s"), invalid("session", "s")),
            (with_field(14, "u"), invalid("utime", "u")),
            (with_field(15, "1e3"), invalid("stime", "1e3")),
            (with_field(22, "9.5"), invalid("start_time", "9.5")),
            (stat_line("a").replacen("1234", "x", 1), invalid("pid", "x")),
            (stat_line("a").replacen("1234 ", "", 1), invalid("pid", "")),
        ];
        for (text, want) in cases {
            assert_eq!(Stat::parse(&text).unwrap_err(), want, "{text:?}");
        }
        assert_eq!(Stat::parse("7 (a) R x").unwrap_err().to_string(), "bad ppid field \"x\"");
    }

    #[test]
    fn status_fields() {
        let text = "Name:\tcat\nUmask:\t0022\nState:\tR (running)\nPid:\t42\nUid:\t1000\t0\t2\t3\nGid:\t10\t11\t12\t13\n\
                    VmPeak:\t  9000 kB\nVmRSS:\t    1234 kB\nThreads:\t1\n";
        let s = Status::parse(text).unwrap();
        assert_eq!(s.uid, Ids { real: 1000, effective: 0, saved: 2, filesystem: 3 });
        assert_eq!(s.gid, Ids { real: 10, effective: 11, saved: 12, filesystem: 13 });
        assert_eq!(s.vm_rss_kib, Some(1234));
        assert_eq!(s.ns_pid, None, "no NSpid line");
        // In a nested pid namespace, the innermost pid is the last.
        let s = Status::parse("Uid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\nNSpid:\t4711\t12\t1\n").unwrap();
        assert_eq!(s.ns_pid, Some(1));
        let s = Status::parse("Uid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\nNSpid:\t4711\n").unwrap();
        assert_eq!(s.ns_pid, Some(4711));
        assert_eq!(Status::parse("Uid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\nNSpid:\t\n").unwrap_err(), missing("NSpid"));
        // A kernel thread: no VmRSS.
        let s = Status::parse("Name:\tkthreadd\nUid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\n").unwrap();
        assert_eq!(s.vm_rss_kib, None);
        assert_eq!(Status::parse("Name:\tx\nGid:\t0\t0\t0\t0\n").unwrap_err(), missing("Uid"));
        assert_eq!(Status::parse("Uid:\t0\t0\nGid:\t0\t0\t0\t0\n").unwrap_err(), missing("Uid"));
        assert_eq!(
            Status::parse("Uid:\t0\tx\t0\t0\nGid:\t0\t0\t0\t0\n").unwrap_err(),
            ParseError::Invalid { field: "Uid", value: "x".into() }
        );
        assert_eq!(
            Status::parse("Uid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\nVmRSS:\tlots kB\n").unwrap_err(),
            ParseError::Invalid { field: "VmRSS", value: "lots".into() }
        );
    }

    #[test]
    fn cgroup_v2_v1_and_hybrid_lines() {
        let text =
            "12:pids:/kubepods/pod1/abc\n11:cpu,cpuacct:/kubepods/pod1/abc\n1:name=systemd:/a:b\n0::/../x.scope\n";
        let lines: Vec<CgroupLine> = CgroupLine::parse_all(text).map(Result::unwrap).collect();
        assert_eq!(lines.len(), 4);
        assert_eq!(lines[0], CgroupLine { hierarchy: 12, controllers: "pids", path: "/kubepods/pod1/abc" });
        assert_eq!(lines[1].controllers().collect::<Vec<_>>(), ["cpu", "cpuacct"]);
        assert_eq!((lines[2].controllers, lines[2].path), ("name=systemd", "/a:b"));
        assert!(lines[3].is_v2() && !lines[0].is_v2());
        assert_eq!(lines[3].path, "/../x.scope");
        assert_eq!(lines[3].controllers().count(), 0);
        // A v1 hierarchy with no controllers is not v2.
        assert!(!CgroupLine::parse("3::/").unwrap().is_v2());
    }

    #[test]
    fn cgroup_malformed_lines() {
        assert_eq!(
            CgroupLine::parse("garbage").unwrap_err(),
            ParseError::Invalid { field: "hierarchy", value: "garbage".into() }
        );
        assert_eq!(CgroupLine::parse("::").unwrap_err(), missing("hierarchy"));
        assert_eq!(CgroupLine::parse("0").unwrap_err(), missing("controllers"));
        assert_eq!(CgroupLine::parse("0:").unwrap_err(), missing("path"));
        assert_eq!(
            CgroupLine::parse("x::/").unwrap_err(),
            ParseError::Invalid { field: "hierarchy", value: "x".into() }
        );
        // One bad line among good ones: only that item is an error.
        let items: Vec<_> = CgroupLine::parse_all("0::/a\n\nbad\n1:pids:/b\n").collect();
        assert_eq!(items.len(), 3);
        assert!(items[0].is_ok() && items[1].is_err() && items[2].is_ok());
    }

    #[test]
    fn mountinfo_lines() {
        let text = "\
36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue
29 23 0:26 /kubepods.slice /sys/fs/cgroup\\040x rw - cgroup2 cgroup2 rw,nsdelegate
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime shared:9 propagate_from:2 - cgroup cgroup rw,xattr,name=systemd
";
        let m: Vec<Mount> = Mount::parse_all(text).map(Result::unwrap).collect();
        assert_eq!(
            m[0],
            Mount {
                mount_id: 36,
                parent_id: 35,
                root: "/mnt1".into(),
                mount_point: "/mnt2".into(),
                options: "rw,noatime".into(),
                fs_type: "ext3".into(),
                source: "/dev/root".into(),
                super_options: "rw,errors=continue".into(),
            }
        );
        assert_eq!((m[1].root.as_str(), m[1].mount_point.to_str()), ("/kubepods.slice", Some("/sys/fs/cgroup x")));
        assert_eq!((m[2].fs_type.as_str(), m[2].super_options.as_str()), ("cgroup", "rw,xattr,name=systemd"));
        assert_eq!(Mount::parse("36 35 98:0 / /x rw").unwrap_err(), missing("separator"));
        assert_eq!(Mount::parse("36 35 98:0 / - ext4 a b").unwrap_err(), missing("mount point"));
        assert_eq!(Mount::parse("36 35 98:0 / /x rw - ext4").unwrap_err(), missing("source"));
        assert_eq!(
            Mount::parse("a 35 98:0 / /x rw - ext4 s o").unwrap_err(),
            ParseError::Invalid { field: "mount ID", value: "a".into() }
        );
    }

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape(r"/a\040b\011c\012d\134e"), b"/a b\tc\nd\\e");
        // Not an escape: kept as is.
        assert_eq!(unescape(r"\04"), b"\\04");
        assert_eq!(unescape(r"\0x9"), b"\\0x9");
        assert_eq!(unescape(r"\777"), b"\\777");
        assert_eq!(unescape(r"a\"), b"a\\");
        // Non-UTF-8 bytes survive in the mount point.
        let m = Mount::parse(r"1 0 0:1 / /x\377 rw - tmpfs t rw").unwrap();
        assert_eq!(m.mount_point.as_os_str().as_encoded_bytes(), b"/x\xff");
    }

    #[test]
    fn schedstat_and_fdinfo() {
        assert_eq!(Schedstat::parse("123 45 6\n").unwrap(), Schedstat { run_ns: 123, wait_ns: 45, timeslices: 6 });
        assert_eq!(Schedstat::parse("").unwrap_err(), missing("run time"));
        assert_eq!(Schedstat::parse("1 2").unwrap_err(), missing("timeslices"));
        let text = "pos:\t0\nflags:\t02\nmnt_id:\t15\nino:\t1057\n\
                    fanotify flags:10 event-flags:0\n\
                    fanotify ino:4f969 sdev:800013 mflags:0 mask:3b ignored_mask:40000000 fhandle-bytes:8\n\
                    fanotify mnt_id:20 mflags:0 mask:3b ignored_mask:0\n\
                    fanotify ino:a sdev:800013 mflags:0 mask:1\n";
        let info = FdInfo::parse(text).unwrap();
        assert_eq!(info.fanotify_inodes, [0x4f969, 0xa]);
        assert_eq!(
            info.fanotify_marks,
            [
                InodeMark { ino: 0x4f969, mflags: 0, mask: 0x3b, ignored_mask: 0x4000_0000 },
                InodeMark { ino: 0xa, mflags: 0, mask: 1, ignored_mask: 0 }
            ]
        );
        let evictable = FdInfo::parse("fanotify ino:b sdev:1 mflags:620 mask:0 ignored_mask:10020\n").unwrap();
        assert_eq!(evictable.fanotify_marks[0].mflags, 0x620);
        assert_eq!(
            FdInfo::parse("fanotify ino:b sdev:1 mflags:x\n").unwrap_err(),
            ParseError::Invalid { field: "mflags", value: "x".into() }
        );
        assert_eq!(FdInfo::parse("pos:\t0\nflags:\t02\n").unwrap(), FdInfo::default());
        assert_eq!(
            FdInfo::parse("fanotify ino:zz sdev:1\n").unwrap_err(),
            ParseError::Invalid { field: "fanotify ino", value: "zz".into() }
        );
    }
}
