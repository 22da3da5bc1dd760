//! `logFormat`: the original Janus's text template for audit lines. The
//! engine renders it; this module says what a valid template is.

/// Fields a `logFormat` may use, as `{name}`.
pub const FIELDS: &[&str] = &[
    "pod",
    "node",
    "response",
    "event",
    "path",
    "ftype",
    "tags",
    "guard",
    "container",
    "pid",
    "process",
    "rule",
    "namespace",
    "uid",
    "executable",
    "mode",
    "time",
];

/// Checks that every `{field}` in a template is known and braces balance.
pub fn validate(format: &str) -> Result<(), String> {
    let mut rest = format;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let close =
            after.find('}').ok_or_else(|| format!("unclosed '{{' at byte {}", format.len() - rest.len() + open))?;
        let name = &after[..close];
        if !FIELDS.contains(&name) {
            return Err(format!("unknown field {{{name}}}; known fields: {}", FIELDS.join(", ")));
        }
        rest = &after[close + 1..];
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_and_unknown_fields() {
        assert!(validate(crate::guard::DEFAULT_LOG_FORMAT).is_ok());
        assert!(validate("{pid} {rule}").is_ok());
        assert!(validate("{nope}").unwrap_err().contains("unknown field {nope}"));
        assert!(validate("{pid").unwrap_err().contains("unclosed"));
    }
}
