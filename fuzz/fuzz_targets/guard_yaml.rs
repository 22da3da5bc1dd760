//! Guard YAML (what `janusd standalone -f` and `janusctl explain` read) into
//! validation, the policy compiler and decisions.
//!
//! Properties: nothing panics; a manifest that validates compiles; the
//! compiled trie and a plain scan of every rule agree on the verdict for
//! every event kind; a directory the policy prunes (no events needed at or
//! below it) has nothing denied below it.
#![no_main]

use janus_api::manifest::GuardManifest;
use janus_engine::Kind;
use janus_engine::policy::{Policy, Scratch, Verdict};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(manifests) = GuardManifest::parse_all(text) else { return };
    for m in manifests {
        let policy = Policy::compile(&m.spec).expect("a manifest that validates must compile");
        // Paths: every rule's literal prefix, with and without a tail.
        let mut paths: Vec<String> = vec!["/".into()];
        for r in &policy.rules {
            let p = r.pattern.literal_prefix();
            paths.push(format!("{}/x", p.trim_end_matches('/')));
            paths.push(format!("{}/a/b.key", p.trim_end_matches('/')));
            paths.push(p);
        }
        let mut scratch = Scratch::default();
        for path in &paths {
            for is_dir in [false, true] {
                let fast = policy.decide(path.as_bytes(), is_dir, &mut scratch);
                let slow = policy.decide_by_scan(path.as_bytes(), is_dir);
                for kind in Kind::ALL {
                    let verdict = |r: Option<u32>| r.map(|r| policy.rule(r).verdict);
                    assert_eq!(verdict(fast.rule(kind)), verdict(slow.rule(kind)), "{path} {kind:?}");
                }
            }
            if !policy.needs_events_at_or_below(path.as_bytes(), &mut scratch) {
                for tail in ["/x", "/a/b.key", "/x/y/z"] {
                    let below = format!("{}{tail}", path.trim_end_matches('/'));
                    for is_dir in [false, true] {
                        let d = policy.decide_by_scan(below.as_bytes(), is_dir);
                        for kind in Kind::ALL {
                            let v = d.rule(kind).map(|r| policy.rule(r).verdict);
                            assert_ne!(v, Some(Verdict::Deny), "{below} denied under pruned {path}");
                        }
                    }
                }
            }
        }
    }
});
