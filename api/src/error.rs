//! The one validation error: which field, and why.

use std::fmt;

/// An input that cannot be accepted: the field, as a dotted path
/// (`spec.subjects[0].deny[1]`), and the reason. Every component reports
/// bad guards with it, so a user sees the same message from `kubectl
/// apply`'s neighbours (janusd's INVALID_ARGUMENT, `janusd standalone`'s exit
/// message, the controller's status).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct FieldError {
    /// Dotted path to the field, e.g. `spec.subjects[0].deny[1]`.
    pub field: String,
    /// What is wrong with it.
    pub reason: String,
}

impl FieldError {
    /// A new error for `field`.
    pub fn new(field: impl Into<String>, reason: impl fmt::Display) -> Self {
        FieldError { field: field.into(), reason: reason.to_string() }
    }

    /// The same error with `prefix.` in front of the field (`spec` +
    /// `subjects[0]` = `spec.subjects[0]`). An empty field means the object
    /// itself: it becomes `prefix`.
    pub fn within(self, prefix: &str) -> Self {
        let field = match (prefix.is_empty(), self.field.is_empty()) {
            (true, _) => self.field,
            (false, true) => prefix.to_string(),
            (false, false) => format!("{prefix}.{}", self.field),
        };
        FieldError { field, reason: self.reason }
    }
}
