//! The policy compiler: guard subjects -> an immutable [`Policy`], a trie over
//! path components that answers "which rule decides this path, per event
//! kind" in one walk, whatever the number of rules.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::{Kind, KindSet};
use janus_api::pattern::{Component, Glob, Pattern, Specificity};
use janus_api::{EventName, FieldError, GuardSpec, Mode, Subject};

/// Allow or deny.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// Let the access through.
    Allow,
    /// Refuse it with EPERM.
    Deny,
}

/// One compiled rule: a path pattern with its verdict and subject.
#[derive(Clone, Debug)]
pub struct Rule {
    /// The pattern as written, for audit records and `explain`.
    pub text: Arc<str>,
    /// Parsed pattern.
    pub pattern: Pattern,
    /// What the rule says.
    pub verdict: Verdict,
    /// Index into [`Policy::subjects`].
    pub subject: u32,
    /// Event kinds the rule applies to.
    pub kinds: KindSet,
    /// Applies to directories only.
    pub only_dir: bool,
    specificity: Specificity,
}

impl Rule {
    /// Human-readable form, e.g. `deny /etc/shadow (subjects[0].deny[1])`.
    pub fn describe(&self) -> String {
        let v = match self.verdict {
            Verdict::Allow => "allow",
            Verdict::Deny => "deny",
        };
        format!("{v} {}", self.text)
    }
}

/// Options shared by a subject's rules.
#[derive(Clone, Debug)]
pub struct SubjectOptions {
    /// Processes of the container's main process tree are always allowed.
    pub auto_allow_owner: bool,
    /// Executables (paths inside the root) whose processes the deny rules
    /// do not apply to; identified by inode per guard instance.
    pub allow_processes: Arc<[String]>,
    /// Allowed events are logged too.
    pub audit: bool,
    /// Guard the whole mount.
    pub mountpoint: bool,
    /// Copied into audit records.
    pub tags: Arc<BTreeMap<String, String>>,
}

/// An immutable compiled guard.
#[derive(Debug)]
pub struct Policy {
    /// All rules; a rule's index is its identity in decisions.
    pub rules: Vec<Rule>,
    /// Per-subject options.
    pub subjects: Vec<SubjectOptions>,
    /// Enforce or audit.
    pub mode: Mode,
    /// Text template for audit lines, if any.
    pub log_format: Option<Arc<str>>,
    /// Union of all rules' event kinds, plus `open` when any rule guards
    /// `exec` (see [`Policy::denies_exec`]): the mask marks are made with.
    pub kinds: KindSet,
    root: Node,
}

#[derive(Debug, Default)]
struct Node {
    literal: HashMap<Box<[u8]>, Node>,
    globs: Vec<(Glob, Node)>,
    any_depth: Option<Box<Node>>,
    /// Rules whose pattern ends here.
    terminal: Vec<u32>,
    /// Some rule below this node (or, for a `**` node, at it) needs events.
    interest_below: bool,
    /// This is a `**` node: it stays active as components are consumed.
    is_any_depth: bool,
}

/// The rule deciding each event kind for one object; `None`: no rule matches,
/// so the access is allowed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Decision {
    rules: [Option<u32>; 3],
}

impl Decision {
    /// The deciding rule for `kind`.
    pub fn rule(&self, kind: Kind) -> Option<u32> {
        self.rules[kind as usize]
    }

    /// Sets the deciding rule for `kind`.
    pub fn set_rule(&mut self, kind: Kind, rule: Option<u32>) {
        self.rules[kind as usize] = rule;
    }

    /// The decision for an object whose path cannot be known (longer than
    /// the kernel will print): per kind, the policy's first denying rule,
    /// so that an object that might be in a denied tree is denied. Kinds
    /// that no rule denies stay allowed.
    pub fn fail_closed(policy: &Policy) -> Decision {
        let mut d = Decision::default();
        for kind in Kind::ALL {
            let deny =
                policy.rules.iter().position(|r| r.verdict == Verdict::Deny && !r.only_dir && r.kinds.contains(kind));
            d.set_rule(kind, deny.map(|i| i as u32));
        }
        d
    }
}

/// Reusable scratch space for matching, so that deciding does not allocate.
#[derive(Debug, Default)]
pub struct Scratch<'p> {
    active: Vec<&'p Node>,
    next: Vec<&'p Node>,
    matched: Vec<u32>,
}

/// The access kinds a subject's rules apply to (`events`; all when empty).
pub fn kinds_of(subject: &Subject) -> KindSet {
    if subject.events.is_empty() {
        return KindSet::ALL;
    }
    subject.events.iter().fold(KindSet::EMPTY, |set, e| {
        set.union(match e {
            EventName::All => KindSet::ALL,
            EventName::Access => KindSet::ACCESS,
            EventName::Open => KindSet::OPEN,
            EventName::Exec => KindSet::EXEC,
        })
    })
}

impl Policy {
    /// Compiles a spec, checked by the model's rules but for the size
    /// limits of one API object (`GuardSpec::validate_without_limits`).
    /// Errors name the field.
    pub fn compile(spec: &GuardSpec) -> Result<Policy, FieldError> {
        spec.validate_without_limits().map_err(|e| e.within("spec"))?;
        let mut rules = Vec::new();
        let mut subjects = Vec::new();
        for (si, subject) in spec.subjects.iter().enumerate() {
            subjects.push(SubjectOptions {
                auto_allow_owner: subject.auto_allow_owner,
                allow_processes: subject.allow_processes.iter().cloned().collect(),
                audit: subject.audit,
                mountpoint: subject.mountpoint,
                tags: Arc::new(subject.tags.clone()),
            });
            for (verdict, paths) in [(Verdict::Allow, &subject.allow), (Verdict::Deny, &subject.deny)] {
                for text in paths {
                    // Validated above: parse cannot fail here.
                    let pattern =
                        Pattern::parse(text).map_err(|e| FieldError::new(format!("spec.subjects[{si}]"), e.0))?;
                    rules.push(Rule {
                        text: Arc::from(text.as_str()),
                        specificity: pattern.specificity(),
                        pattern,
                        verdict,
                        subject: si as u32,
                        kinds: kinds_of(subject),
                        only_dir: subject.only_dir,
                    });
                }
            }
        }
        Ok(Self::from_rules(rules, subjects, spec.mode, spec.log_format.as_deref()))
    }

    /// A copy of this policy in which each `(rule, path)` moves rule `rule`
    /// to `path`: its real path inside a root where the rule's literal
    /// prefix passes through a symlink (see `root.rs`). The kernel reports
    /// events under real paths only, so the path as written could never
    /// match, and walking it would follow the symlink from outside the root.
    /// The rule keeps its index; its text says both. Fails if `path` is not
    /// a valid pattern.
    pub fn with_aliases(&self, aliases: &[(u32, String)]) -> Result<Policy, String> {
        let mut rules = self.rules.clone();
        for (r, path) in aliases {
            let rule = &mut rules[*r as usize];
            let pattern = Pattern::parse(path).map_err(|e| format!("{path}: {}", e.0))?;
            rule.text = Arc::from(format!("{} (at {path})", rule.text));
            rule.specificity = pattern.specificity();
            rule.pattern = pattern;
        }
        Ok(Self::from_rules(rules, self.subjects.clone(), self.mode, self.log_format.as_deref()))
    }

    fn from_rules(rules: Vec<Rule>, subjects: Vec<SubjectOptions>, mode: Mode, log_format: Option<&str>) -> Policy {
        let mut root = Node::default();
        for (i, rule) in rules.iter().enumerate() {
            let mut node = &mut root;
            for c in rule.pattern.components() {
                node = match c {
                    Component::Literal(name) => node.literal.entry(name.as_bytes().into()).or_default(),
                    Component::Glob(g) => {
                        let pos = match node.globs.iter().position(|(x, _)| x == g) {
                            Some(pos) => pos,
                            None => {
                                node.globs.push((g.clone(), Node::default()));
                                node.globs.len() - 1
                            }
                        };
                        &mut node.globs[pos].1
                    }
                    Component::AnyDepth => {
                        node.any_depth.get_or_insert_with(|| Box::new(Node { is_any_depth: true, ..Node::default() }))
                    }
                };
            }
            node.terminal.push(i as u32);
        }
        let mut kinds = rules.iter().fold(KindSet::EMPTY, |k, r| k.union(r.kinds));
        if kinds.contains(Kind::Exec) {
            // The dynamic loader runs a program with a plain open
            // (`ld.so FILE`): an exec guard must see opens too.
            kinds.insert(Kind::Open);
        }
        let mut policy = Policy { rules, subjects, mode, log_format: log_format.map(Arc::from), kinds, root };
        let interesting: Vec<bool> = (0..policy.rules.len()).map(|i| policy.rule_needs_events(i as u32)).collect();
        fill_interest(&mut policy.root, &interesting);
        policy
    }

    /// A rule needs events if it denies or if its subject audits allowed events.
    fn rule_needs_events(&self, rule: u32) -> bool {
        let r = &self.rules[rule as usize];
        r.verdict == Verdict::Deny || self.subjects[r.subject as usize].audit
    }

    /// The denying rule that decides `exec` for `d`, when `exec` is denied
    /// but `open` is not: such an object may be read, but a dynamic loader
    /// opening it (`ld.so FILE`, which maps and runs it without `execve`)
    /// is refused as an exec.
    pub fn denies_exec(&self, d: &Decision) -> Option<u32> {
        let denies = |r: Option<u32>| r.filter(|&r| self.rule(r).verdict == Verdict::Deny);
        match denies(d.rule(Kind::Open)) {
            Some(_) => None,
            None => denies(d.rule(Kind::Exec)),
        }
    }

    /// The rule of `idx`.
    pub fn rule(&self, idx: u32) -> &Rule {
        &self.rules[idx as usize]
    }

    /// Subject options of a rule.
    pub fn subject_of(&self, rule: u32) -> &SubjectOptions {
        &self.subjects[self.rules[rule as usize].subject as usize]
    }

    /// Decides `path` (absolute, as seen inside the guarded root) for every
    /// event kind. Allocation-free once `scratch` has grown.
    pub fn decide<'p>(&'p self, path: &[u8], is_dir: bool, scratch: &mut Scratch<'p>) -> Decision {
        self.collect_matches(path, scratch);
        let mut decision = Decision::default();
        for kind in Kind::ALL {
            let mut best: Option<u32> = None;
            for &ri in &scratch.matched {
                let r = &self.rules[ri as usize];
                if !r.kinds.contains(kind) || (r.only_dir && !is_dir) {
                    continue;
                }
                best = match best {
                    None => Some(ri),
                    Some(b) => {
                        let br = &self.rules[b as usize];
                        let better =
                            (r.specificity, r.verdict == Verdict::Deny) > (br.specificity, br.verdict == Verdict::Deny);
                        Some(if better { ri } else { b })
                    }
                };
            }
            decision.rules[kind as usize] = best;
        }
        decision
    }

    /// Runs the trie over `path`, leaving every rule that covers it in
    /// `scratch.matched` and the states still active in `scratch.active`.
    fn collect_matches<'p>(&'p self, path: &[u8], scratch: &mut Scratch<'p>) {
        scratch.active.clear();
        scratch.matched.clear();
        push_closure(&self.root, &mut scratch.active);
        for n in &scratch.active {
            scratch.matched.extend_from_slice(&n.terminal);
        }
        for name in janus_api::pattern::split_path(path) {
            if scratch.active.is_empty() {
                break;
            }
            scratch.next.clear();
            for &n in &scratch.active {
                if n.is_any_depth {
                    push_unique(n, &mut scratch.next);
                }
                if let Some(child) = n.literal.get(name) {
                    push_closure(child, &mut scratch.next);
                }
                for (g, child) in &n.globs {
                    if g.matches(name) {
                        push_closure(child, &mut scratch.next);
                    }
                }
            }
            std::mem::swap(&mut scratch.active, &mut scratch.next);
            for n in &scratch.active {
                for &t in &n.terminal {
                    if !scratch.matched.contains(&t) {
                        scratch.matched.push(t);
                    }
                }
            }
        }
    }

    /// Whether objects at or below directory `path` can need a decision in
    /// user space: some covering rule denies or audits, or a rule further
    /// down does. When false, nothing under `path` needs marks.
    pub fn needs_events_at_or_below<'p>(&'p self, path: &[u8], scratch: &mut Scratch<'p>) -> bool {
        let d = self.decide(path, true, scratch);
        let f = {
            // Same walk, decided as a file: children inherit file rules.
            let mut f = Decision::default();
            for kind in Kind::ALL {
                f.rules[kind as usize] = self.best_for_files(kind, &scratch.matched);
            }
            f
        };
        let covering = [d, f].iter().flat_map(|x| x.rules.iter().flatten()).any(|&r| self.rule_needs_events(r));
        covering || scratch.active.iter().any(|n| n.interest_below)
    }

    fn best_for_files(&self, kind: Kind, matched: &[u32]) -> Option<u32> {
        matched
            .iter()
            .copied()
            .filter(|&ri| {
                let r = &self.rules[ri as usize];
                r.kinds.contains(kind) && !r.only_dir
            })
            .max_by_key(|&ri| {
                let r = &self.rules[ri as usize];
                (r.specificity, r.verdict == Verdict::Deny)
            })
    }

    /// Reference decision by scanning every rule, used to test the trie.
    pub fn decide_by_scan(&self, path: &[u8], is_dir: bool) -> Decision {
        let comps: Vec<&[u8]> = janus_api::pattern::split_path(path).collect();
        let mut decision = Decision::default();
        for kind in Kind::ALL {
            decision.rules[kind as usize] = self
                .rules
                .iter()
                .enumerate()
                .filter(|(_, r)| r.kinds.contains(kind) && (!r.only_dir || is_dir) && r.pattern.covers(&comps))
                .max_by_key(|(i, r)| (r.specificity, r.verdict == Verdict::Deny, std::cmp::Reverse(*i)))
                .map(|(i, _)| i as u32);
        }
        decision
    }
}

fn push_unique<'p>(n: &'p Node, into: &mut Vec<&'p Node>) -> bool {
    if into.iter().any(|x| std::ptr::eq(*x, n)) {
        return false;
    }
    into.push(n);
    true
}

/// Adds `n` and the `**` nodes reachable from it without consuming a component.
fn push_closure<'p>(n: &'p Node, into: &mut Vec<&'p Node>) {
    if push_unique(n, into)
        && let Some(any) = &n.any_depth
    {
        push_closure(any, into);
    }
}

fn fill_interest(node: &mut Node, interesting: &[bool]) -> bool {
    let own = node.terminal.iter().any(|&t| interesting[t as usize]);
    let mut below = false;
    for child in node.literal.values_mut() {
        below |= fill_interest(child, interesting);
    }
    for (_, child) in node.globs.iter_mut() {
        below |= fill_interest(child, interesting);
    }
    if let Some(any) = node.any_depth.as_deref_mut() {
        below |= fill_interest(any, interesting);
    }
    if node.is_any_depth {
        below |= own;
    }
    node.interest_below = below;
    own || below
}

/// Kinds that need user space for this object (deny or audited), and kinds
/// the kernel may answer alone (allowed, not audited).
pub(crate) fn classify(policy: &Policy, d: &Decision) -> (KindSet, KindSet) {
    let mut needs = KindSet::EMPTY;
    let mut cacheable = KindSet::EMPTY;
    for kind in policy.kinds.iter() {
        if kind == Kind::Open && policy.denies_exec(d).is_some() {
            // Opens of an exec-denied file are checked for a loader.
            needs.insert(kind);
            continue;
        }
        match d.rule(kind) {
            None => cacheable.insert(kind),
            Some(r) => {
                let rule = policy.rule(r);
                if rule.verdict == Verdict::Deny || policy.subject_of(r).audit {
                    needs.insert(kind);
                } else {
                    cacheable.insert(kind);
                }
            }
        }
    }
    (needs, cacheable)
}

/// Merges the decisions of two names of one file: per kind, a denying rule
/// wins; otherwise the first decision's rule (or the second's if the first
/// has none).
pub(crate) fn merge_deny_wins(policy: &Policy, a: Decision, b: Decision) -> Decision {
    let mut out = a;
    for kind in Kind::ALL {
        let denies = |r: Option<u32>| r.is_some_and(|r| policy.rule(r).verdict == Verdict::Deny);
        let pick = if denies(a.rule(kind)) {
            a.rule(kind)
        } else if denies(b.rule(kind)) {
            b.rule(kind)
        } else {
            a.rule(kind).or(b.rule(kind))
        };
        out.set_rule(kind, pick);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use janus_api::Subject;
    use proptest::prelude::*;

    fn policy(subjects: Vec<Subject>) -> Policy {
        Policy::compile(&GuardSpec { subjects, ..Default::default() }).unwrap()
    }

    fn subj(allow: &[&str], deny: &[&str]) -> Subject {
        Subject {
            allow: allow.iter().map(|s| s.to_string()).collect(),
            deny: deny.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    fn verdict(p: &Policy, path: &str, kind: Kind) -> Verdict {
        let mut s = Scratch::default();
        match p.decide(path.as_bytes(), false, &mut s).rule(kind) {
            Some(r) => p.rule(r).verdict,
            None => Verdict::Allow,
        }
    }

    #[test]
    fn fail_closed_denies_each_kind_some_rule_denies() {
        let mut exec = subj(&["/bin/ok"], &["/bin"]);
        exec.events = vec![EventName::Exec];
        let p = policy(vec![subj(&["/public"], &[]), exec]);
        let d = Decision::fail_closed(&p);
        let exec_rule = d.rule(Kind::Exec).expect("exec is denied somewhere");
        assert_eq!(p.rule(exec_rule).verdict, Verdict::Deny);
        assert_eq!(p.rule(exec_rule).text.as_ref(), "/bin");
        // No rule denies opens, so an unresolvable open stays allowed.
        assert_eq!(d.rule(Kind::Open), None);
        assert_eq!(Decision::fail_closed(&policy(vec![subj(&["/a"], &[])])), Decision::default());
    }

    #[test]
    fn most_specific_wins_and_deny_breaks_ties() {
        let p = policy(vec![subj(&["/data/public", "/x"], &["/data", "/x"])]);
        assert_eq!(verdict(&p, "/data/secret", Kind::Open), Verdict::Deny);
        assert_eq!(verdict(&p, "/data", Kind::Open), Verdict::Deny);
        assert_eq!(verdict(&p, "/data/public/a/b", Kind::Open), Verdict::Allow);
        assert_eq!(verdict(&p, "/x/y", Kind::Open), Verdict::Deny);
        assert_eq!(verdict(&p, "/elsewhere", Kind::Open), Verdict::Allow);
    }

    #[test]
    fn patterns_and_kinds() {
        let mut s = subj(&[], &["/data/**/*.key"]);
        s.events = vec![EventName::Open];
        let p = policy(vec![s]);
        assert_eq!(verdict(&p, "/data/a/b/c.key", Kind::Open), Verdict::Deny);
        assert_eq!(verdict(&p, "/data/c.key", Kind::Open), Verdict::Deny);
        assert_eq!(verdict(&p, "/data/c.key", Kind::Exec), Verdict::Allow);
        assert_eq!(verdict(&p, "/data/c.txt", Kind::Open), Verdict::Allow);
    }

    #[test]
    fn only_dir_applies_to_directories() {
        let mut s = subj(&[], &["/data"]);
        s.only_dir = true;
        let p = policy(vec![s]);
        let mut sc = Scratch::default();
        assert!(p.decide(b"/data/sub", true, &mut sc).rule(Kind::Open).is_some());
        assert!(p.decide(b"/data/file", false, &mut sc).rule(Kind::Open).is_none());
    }

    #[test]
    fn interest_prunes_walks() {
        let p = policy(vec![subj(&["/data/public"], &["/data", "/srv/**/*.key"])]);
        let mut s = Scratch::default();
        assert!(p.needs_events_at_or_below(b"/", &mut s));
        assert!(p.needs_events_at_or_below(b"/data", &mut s));
        // Allowed carve-out with nothing denied below: no marks needed.
        assert!(!p.needs_events_at_or_below(b"/data/public", &mut s));
        assert!(p.needs_events_at_or_below(b"/srv/a/b", &mut s));
        assert!(!p.needs_events_at_or_below(b"/usr", &mut s));
        let audited = policy(vec![Subject { audit: true, ..subj(&["/etc/nginx"], &[]) }]);
        assert!(audited.needs_events_at_or_below(b"/etc/nginx/conf.d", &mut s));
        let plain = policy(vec![subj(&["/etc/nginx"], &[])]);
        assert!(!plain.needs_events_at_or_below(b"/etc/nginx", &mut s));
    }

    fn component() -> impl Strategy<Value = String> {
        prop_oneof![
            4 => prop::sample::select(vec!["a", "b", "c", "ab", "a.key", "b.key"]).prop_map(String::from),
            1 => Just("*".to_string()),
            1 => Just("*.key".to_string()),
            1 => Just("a*".to_string()),
            1 => Just("**".to_string()),
        ]
    }

    fn pattern() -> impl Strategy<Value = String> {
        prop::collection::vec(component(), 0..4).prop_map(|c| format!("/{}", c.join("/")))
    }

    fn concrete_path() -> impl Strategy<Value = String> {
        prop::collection::vec(prop::sample::select(vec!["a", "b", "c", "ab", "a.key", "b.key", "zz"]), 0..5)
            .prop_map(|c| format!("/{}", c.join("/")))
    }

    proptest! {
        /// The trie agrees with a plain scan of every rule, on the deciding
        /// rule's verdict and specificity, for every kind.
        #[test]
        fn trie_matches_reference(
            rules in prop::collection::vec((pattern(), any::<bool>(), 1u8..8, any::<bool>()), 1..12),
            paths in prop::collection::vec((concrete_path(), any::<bool>()), 1..16),
        ) {
            let subjects: Vec<Subject> = rules.iter().map(|(p, deny, kinds, only_dir)| {
                let mut events = Vec::new();
                if kinds & 1 != 0 { events.push(EventName::Open); }
                if kinds & 2 != 0 { events.push(EventName::Access); }
                if kinds & 4 != 0 { events.push(EventName::Exec); }
                Subject {
                    allow: if *deny { vec![] } else { vec![p.clone()] },
                    deny: if *deny { vec![p.clone()] } else { vec![] },
                    events, only_dir: *only_dir, ..Default::default()
                }
            }).collect();
            let p = policy(subjects);
            let mut s = Scratch::default();
            for (path, is_dir) in &paths {
                let fast = p.decide(path.as_bytes(), *is_dir, &mut s);
                let slow = p.decide_by_scan(path.as_bytes(), *is_dir);
                for kind in Kind::ALL {
                    let key = |d: Option<u32>| d.map(|r| (p.rule(r).verdict, p.rule(r).specificity));
                    prop_assert_eq!(key(fast.rule(kind)), key(slow.rule(kind)), "path {} kind {:?}", path, kind);
                }
            }
        }

        /// If a directory needs no events, no path below it is ever denied.
        #[test]
        fn pruning_is_safe(
            rules in prop::collection::vec((pattern(), any::<bool>()), 1..10),
            dir in concrete_path(),
            tail in concrete_path(),
        ) {
            let subjects: Vec<Subject> = rules.iter().map(|(p, deny)| Subject {
                allow: if *deny { vec![] } else { vec![p.clone()] },
                deny: if *deny { vec![p.clone()] } else { vec![] },
                ..Default::default()
            }).collect();
            let p = policy(subjects);
            let mut s = Scratch::default();
            if !p.needs_events_at_or_below(dir.as_bytes(), &mut s) {
                let full = format!("{}{}", dir.trim_end_matches('/'), tail);
                for is_dir in [false, true] {
                    let d = p.decide_by_scan(full.as_bytes(), is_dir);
                    for kind in Kind::ALL {
                        let v = d.rule(kind).map(|r| p.rule(r).verdict);
                        prop_assert_ne!(v, Some(Verdict::Deny), "{} denied under pruned {}", full, dir);
                    }
                }
            }
        }
    }
}
