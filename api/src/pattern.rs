//! Path patterns: absolute paths whose components may hold `*` and `?`
//! (within one component) or be `**` (any number of components, zero included).

use std::fmt;

/// One component of a pattern.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Component {
    /// Matches exactly this name.
    Literal(String),
    /// A name with `*` / `?` wildcards; matches within one component.
    Glob(Glob),
    /// `**`: zero or more components.
    AnyDepth,
}

/// A single-component wildcard pattern.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Glob(String);

impl Glob {
    /// Whether `name` (one path component) matches.
    pub fn matches(&self, name: &[u8]) -> bool {
        glob_match(self.0.as_bytes(), name)
    }

    /// The source text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Iterative wildcard match with single backtrack point (linear in practice).
fn glob_match(pat: &[u8], name: &[u8]) -> bool {
    let (mut p, mut n) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        if p < pat.len() && (pat[p] == b'?' || pat[p] == name[n]) && pat[p] != b'*' {
            p += 1;
            n += 1;
        } else if p < pat.len() && pat[p] == b'*' {
            star = Some((p, n));
            p += 1;
        } else if let Some((sp, sn)) = star {
            p = sp + 1;
            n = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    pat[p..].iter().all(|&c| c == b'*')
}

/// A parsed, validated rule path.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Pattern {
    components: Vec<Component>,
}

/// Why a path or pattern is invalid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PatternError(pub String);

impl fmt::Display for PatternError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The canonical text: `/` and the components joined by `/` (repeated and
/// trailing slashes of the source gone); it parses back to the same pattern.
impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.components().is_empty() {
            return f.write_str("/");
        }
        for c in self.components() {
            f.write_str("/")?;
            match c {
                Component::Literal(s) => f.write_str(s)?,
                Component::Glob(g) => f.write_str(g.as_str())?,
                Component::AnyDepth => f.write_str("**")?,
            }
        }
        Ok(())
    }
}

impl Pattern {
    /// Parses an absolute path pattern. Repeated and trailing slashes are
    /// ignored; `.`/`..` components, NUL bytes and `**` mixed with other
    /// characters are errors.
    pub fn parse(text: &str) -> Result<Pattern, PatternError> {
        if !text.starts_with('/') {
            return Err(PatternError("must be an absolute path (start with '/')".into()));
        }
        if text.contains('\0') {
            return Err(PatternError("must not contain NUL bytes".into()));
        }
        let mut components = Vec::new();
        for part in text.split('/').filter(|p| !p.is_empty()) {
            if part == "." || part == ".." {
                return Err(PatternError(format!("must not contain '{part}' components")));
            }
            if part == "**" {
                // `/**/**` is the same as `/**`.
                if components.last() != Some(&Component::AnyDepth) {
                    components.push(Component::AnyDepth);
                }
            } else if part.contains("**") {
                return Err(PatternError(format!("'**' must be a whole path component, found in {part:?}")));
            } else if part.contains(['*', '?']) {
                components.push(Component::Glob(Glob(part.to_string())));
            } else {
                components.push(Component::Literal(part.to_string()));
            }
        }
        Ok(Pattern { components })
    }

    /// The components, root first (`/` itself has none).
    pub fn components(&self) -> &[Component] {
        &self.components
    }

    /// The leading literal components: the directory that must exist for the
    /// pattern to match anything, and where marking starts.
    pub fn literal_prefix(&self) -> String {
        let mut out = String::new();
        for c in &self.components {
            match c {
                Component::Literal(name) => {
                    out.push('/');
                    out.push_str(name);
                }
                _ => break,
            }
        }
        if out.is_empty() { "/".to_string() } else { out }
    }

    /// Whether this pattern holds any wildcard.
    pub fn has_wildcards(&self) -> bool {
        self.components.iter().any(|c| !matches!(c, Component::Literal(_)))
    }

    /// How specific the pattern is; the larger wins. Ordered by: components
    /// other than `**`, then literal components, then literal bytes.
    pub fn specificity(&self) -> Specificity {
        let mut s = Specificity::default();
        for c in &self.components {
            match c {
                Component::Literal(name) => {
                    s.components += 1;
                    s.literals += 1;
                    s.bytes += name.len() as u32;
                }
                Component::Glob(g) => {
                    s.components += 1;
                    s.bytes += g.0.bytes().filter(|&b| b != b'*' && b != b'?').count() as u32;
                }
                Component::AnyDepth => {}
            }
        }
        s
    }

    /// Reference matcher: does the pattern match `path` or one of its
    /// ancestors (a rule covers everything beneath what it names)? Used by
    /// the property tests of the compiled trie.
    pub fn covers(&self, path: &[&[u8]]) -> bool {
        // Dynamic programming over (pattern suffix, path suffix), so many
        // `**` cost O(components x path) rather than exponential time (the
        // recursive form took minutes on `/**/a/**/a/**/...`, found by the
        // `pattern` fuzz target). `next[j]`: the pattern after this
        // component covers `path[j..]`.
        let n = path.len();
        let mut next = vec![true; n + 1]; // pattern exhausted: covered
        let mut cur = vec![false; n + 1];
        for c in self.components.iter().rev() {
            match c {
                Component::AnyDepth => {
                    // Any number of components skipped: some k >= j works.
                    let mut any = false;
                    for j in (0..=n).rev() {
                        any |= next[j];
                        cur[j] = any;
                    }
                }
                _ => {
                    cur[n] = false;
                    for j in 0..n {
                        let ok = match c {
                            Component::Literal(l) => l.as_bytes() == path[j],
                            Component::Glob(g) => g.matches(path[j]),
                            Component::AnyDepth => unreachable!(),
                        };
                        cur[j] = ok && next[j + 1];
                    }
                }
            }
            std::mem::swap(&mut cur, &mut next);
        }
        next[0]
    }
}

/// Ordering key for "most specific rule wins".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Specificity {
    /// Components other than `**`.
    pub components: u32,
    /// Literal components.
    pub literals: u32,
    /// Literal bytes (wildcards excluded).
    pub bytes: u32,
}

/// Splits an absolute path into its non-empty components.
pub fn split_path(path: &[u8]) -> impl Iterator<Item = &[u8]> {
    path.split(|&b| b == b'/').filter(|c| !c.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        let g = |p: &str, n: &str| Glob(p.into()).matches(n.as_bytes());
        assert!(g("*.key", "a.key"));
        assert!(g("*.key", ".key"));
        assert!(!g("*.key", "a.keys"));
        assert!(g("a*b*c", "axxbyyc"));
        assert!(!g("a*b*c", "axxbyy"));
        assert!(g("?x", "ax"));
        assert!(!g("?x", "x"));
        assert!(g("*", ""));
    }

    #[test]
    fn parse_and_prefix() {
        let p = Pattern::parse("//data//**/secret/*.key/").unwrap();
        assert_eq!(p.literal_prefix(), "/data");
        assert_eq!(p.components().len(), 4);
        assert_eq!(Pattern::parse("/").unwrap().literal_prefix(), "/");
        assert!(Pattern::parse("/a/../b").is_err());
        assert!(Pattern::parse("a/b").is_err());
        assert!(Pattern::parse("/a/x**").is_err());
        assert_eq!(Pattern::parse("/a/**/**/b").unwrap().components().len(), 3);
    }

    #[test]
    fn covers_ancestor_semantics() {
        let p = Pattern::parse("/data/**/*.key").unwrap();
        let path = |s: &'static str| split_path(s.as_bytes()).collect::<Vec<_>>();
        assert!(p.covers(&path("/data/a.key")));
        assert!(p.covers(&path("/data/x/y/a.key")));
        assert!(p.covers(&path("/data/x/a.key/inside")));
        assert!(!p.covers(&path("/data/x/a.txt")));
        assert!(!p.covers(&path("/data")));
        assert!(Pattern::parse("/").unwrap().covers(&path("/anything")));
        // Many `**` against a long path that does not match: linear work
        // per component (this took minutes before; found by fuzzing).
        let many = Pattern::parse(&format!("{}/b", "/**/a".repeat(12))).unwrap();
        let long: &'static str = format!("{}/c", "/a".repeat(60)).leak();
        assert!(!many.covers(&path(long)));
        let hit: &'static str = format!("{}/b/x", "/a".repeat(60)).leak();
        assert!(many.covers(&path(hit)));
    }

    #[test]
    fn specificity_orders_rules() {
        let s = |p: &str| Pattern::parse(p).unwrap().specificity();
        assert!(s("/data/public") > s("/data"));
        assert!(s("/data/public") > s("/data/*"));
        assert!(s("/data/*/x") > s("/data/**/x"));
        assert!(s("/data/**/*.key") > s("/data/**"));
    }
}
