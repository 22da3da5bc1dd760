//! A guard's label selector: kube's [`Selector`] (`kube::core`), with
//! Janus's two rules on top. An empty selector matches nothing (kube's
//! matches everything; the original Janus's rule is that a guard must say
//! what it selects), and a selector kube cannot parse (unknown operator,
//! `In` without values, ...) matches nothing and says why, for the guard's
//! status.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::core::{Expression, Selector, SelectorExt};

/// kube's selector for `s`: `Ok(None)` when `s` is empty (it selects
/// nothing), `Err` with the reason when kube cannot parse it (it selects
/// nothing either).
pub fn parse(s: &janus_api::LabelSelector) -> Result<Option<Selector>, String> {
    let s = LabelSelector::from(s);
    let labels = s.match_labels.clone().unwrap_or_default();
    let requirements = s.match_expressions.as_deref().unwrap_or_default();
    if labels.is_empty() && requirements.is_empty() {
        return Ok(None);
    }
    // What `Selector::try_from(LabelSelector)` does, one requirement at a
    // time so that the error can name the one kube refused.
    let mut selector: Selector = labels.into_iter().collect();
    for (i, r) in requirements.iter().enumerate() {
        let e = Expression::try_from(r.clone())
            .map_err(|e| format!("matchExpressions[{i}] (key {:?}, operator {:?}): {}", r.key, r.operator, e.0))?;
        selector.extend(e);
    }
    Ok(Some(selector))
}

/// Whether `s` selects an object with `labels` (never, if it is empty or
/// cannot be parsed).
pub fn matches(s: &janus_api::LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    matches!(parse(s), Ok(Some(selector)) if selector.matches(labels))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    // The tests build selectors as the API server sends them.
    fn parse(s: &LabelSelector) -> Result<Option<Selector>, String> {
        super::parse(&s.into())
    }

    fn matches(s: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
        super::matches(&s.into(), labels)
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn req(key: &str, op: &str, values: Option<&[&str]>) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: values.map(|v| v.iter().map(|s| s.to_string()).collect()),
        }
    }

    #[test]
    fn empty_selector_matches_nothing() {
        let empty = [
            LabelSelector::default(),
            LabelSelector { match_labels: Some(BTreeMap::new()), match_expressions: Some(vec![]) },
        ];
        for s in &empty {
            assert_eq!(parse(s), Ok(None), "{s:?}");
            assert!(!matches(s, &labels(&[("a", "b")])), "{s:?}");
            assert!(!matches(s, &labels(&[])), "{s:?}");
        }
    }

    #[test]
    fn match_labels_and_expressions() {
        let sel = LabelSelector {
            match_labels: Some(labels(&[("run", "nginx")])),
            match_expressions: Some(vec![
                req("tier", "In", Some(&["web", "edge"])),
                req("canary", "DoesNotExist", None),
                req("env", "NotIn", Some(&["dev"])),
            ]),
        };
        // Exactly kube's selector.
        assert_eq!(parse(&sel), Ok(Some(Selector::try_from(sel.clone()).unwrap())));
        assert!(matches(&sel, &labels(&[("run", "nginx"), ("tier", "web")])));
        assert!(matches(&sel, &labels(&[("run", "nginx"), ("tier", "edge"), ("env", "prod")])));
        assert!(!matches(&sel, &labels(&[("run", "nginx"), ("tier", "db")])));
        assert!(!matches(&sel, &labels(&[("run", "nginx"), ("tier", "web"), ("canary", "1")])));
        assert!(!matches(&sel, &labels(&[("run", "nginx"), ("tier", "web"), ("env", "dev")])));
        assert!(!matches(&sel, &labels(&[("run", "apache"), ("tier", "web")])));
        let only_labels = LabelSelector { match_labels: Some(labels(&[("run", "nginx")])), ..Default::default() };
        assert!(matches(&only_labels, &labels(&[("run", "nginx"), ("x", "y")])));
        assert!(!matches(&only_labels, &labels(&[("x", "y")])));
        let exists = LabelSelector { match_expressions: Some(vec![req("x", "Exists", None)]), ..Default::default() };
        assert!(matches(&exists, &labels(&[("x", "")])));
        assert!(!matches(&exists, &labels(&[("y", "")])));
    }

    #[test]
    fn unparsable_selector_matches_nothing_and_says_why() {
        let bogus = LabelSelector {
            match_labels: Some(labels(&[("x", "")])),
            match_expressions: Some(vec![req("x", "Exists", None), req("x", "Near", Some(&[]))]),
        };
        let why = parse(&bogus).unwrap_err();
        assert!(why.starts_with(r#"matchExpressions[1] (key "x", operator "Near"): "#), "{why}");
        assert!(!matches(&bogus, &labels(&[("x", "")])));
        // `In` and `NotIn` need values.
        for op in ["In", "NotIn"] {
            let s = LabelSelector { match_expressions: Some(vec![req("tier", op, None)]), ..Default::default() };
            let why = parse(&s).unwrap_err();
            assert!(why.starts_with(&format!(r#"matchExpressions[0] (key "tier", operator "{op}"): "#)), "{why}");
            assert!(!matches(&s, &labels(&[("tier", "web")])));
            assert!(!matches(&s, &labels(&[])));
        }
    }
}
