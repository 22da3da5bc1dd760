//! Container IDs from pod statuses and `/proc/<pid>/cgroup` contents into
//! the resolver's matching.
//!
//! Input: a container ID on the first line, a cgroup file after it.
//! Properties: nothing panics; an ID prints as what it parsed from; a file
//! that matches the ID names it in one of its paths.
#![no_main]

use janus_agent::containers::{CgroupMatch, ContainerId};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (id, cgroup) = text.split_once('\n').unwrap_or((text, ""));
    let Ok(c) = ContainerId::parse(id) else { return };
    assert_eq!(ContainerId::parse(&c.to_string()).expect("its own text parses"), c);
    if c.in_proc_cgroup(cgroup) {
        assert!(cgroup.contains(c.id.as_str()), "matched a file that does not name {}", c.id);
    }
    for line in cgroup.lines() {
        let _ = c.in_cgroup_path(line);
    }
});
