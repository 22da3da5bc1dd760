//! Path patterns (`/etc/**/*.key`): parsing and matching.
//!
//! Properties: nothing panics; a parsed pattern re-parses from its text to
//! the same pattern; a pattern without wildcards covers its own path.
#![no_main]

use janus_api::pattern::{Pattern, split_path};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (pattern, path) = text.split_once('\n').unwrap_or((text, "/a/b"));
    let Ok(p) = Pattern::parse(pattern) else { return };
    let text_of_p = p.to_string();
    let again = Pattern::parse(&text_of_p).expect("a pattern's text parses");
    assert_eq!(again, p);
    let comps: Vec<&[u8]> = split_path(path.as_bytes()).collect();
    let _ = p.covers(&comps);
    if !p.has_wildcards() {
        let own: Vec<&[u8]> = split_path(text_of_p.as_bytes()).collect();
        assert!(p.covers(&own), "{text_of_p} does not cover itself");
    }
    let _ = p.literal_prefix();
    let _ = p.specificity();
});
