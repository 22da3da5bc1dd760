//! Label selector matching, as the API server defines it. An empty selector
//! matches nothing (the original Janus's rule: a guard must say what it
//! selects).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// Whether `selector` selects an object with `labels`.
pub fn matches(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let match_labels = selector.match_labels.as_ref().filter(|m| !m.is_empty());
    let exprs = selector.match_expressions.as_ref().filter(|e| !e.is_empty());
    if match_labels.is_none() && exprs.is_none() {
        return false;
    }
    if let Some(ml) = match_labels
        && !ml.iter().all(|(k, v)| labels.get(k) == Some(v))
    {
        return false;
    }
    exprs.into_iter().flatten().all(|e| {
        let values = e.values.as_deref().unwrap_or_default();
        match e.operator.as_str() {
            "In" => labels.get(&e.key).is_some_and(|v| values.contains(v)),
            "NotIn" => labels.get(&e.key).is_none_or(|v| !values.contains(v)),
            "Exists" => labels.contains_key(&e.key),
            "DoesNotExist" => !labels.contains_key(&e.key),
            _ => false, // unknown operator: select nothing rather than everything
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn req(key: &str, op: &str, values: &[&str]) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: Some(values.iter().map(|s| s.to_string()).collect()),
        }
    }

    #[test]
    fn empty_selector_matches_nothing() {
        assert!(!matches(&LabelSelector::default(), &labels(&[("a", "b")])));
    }

    #[test]
    fn match_labels_and_expressions() {
        let sel = LabelSelector {
            match_labels: Some(labels(&[("run", "nginx")])),
            match_expressions: Some(vec![
                req("tier", "In", &["web", "edge"]),
                req("canary", "DoesNotExist", &[]),
                req("env", "NotIn", &["dev"]),
            ]),
        };
        assert!(matches(&sel, &labels(&[("run", "nginx"), ("tier", "web")])));
        assert!(matches(&sel, &labels(&[("run", "nginx"), ("tier", "edge"), ("env", "prod")])));
        assert!(!matches(&sel, &labels(&[("run", "nginx"), ("tier", "db")])));
        assert!(!matches(&sel, &labels(&[("run", "nginx"), ("tier", "web"), ("canary", "1")])));
        assert!(!matches(&sel, &labels(&[("run", "nginx"), ("tier", "web"), ("env", "dev")])));
        assert!(!matches(&sel, &labels(&[("run", "apache"), ("tier", "web")])));
        let exists = LabelSelector { match_expressions: Some(vec![req("x", "Exists", &[])]), ..Default::default() };
        assert!(matches(&exists, &labels(&[("x", "")])));
        let bogus = LabelSelector { match_expressions: Some(vec![req("x", "Near", &[])]), ..Default::default() };
        assert!(!matches(&bogus, &labels(&[("x", "")])));
    }
}
