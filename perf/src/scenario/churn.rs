//! churn: guards created and destroyed over gRPC while openers run. Needs
//! the agent's `janusd serve`, which does not exist yet.

use crate::report::Churn;

/// The line printed in place of the scenario's results.
pub const NOT_RUN: &str = "churn: not run — needs janusd serve (issue 3)";

/// Runs the scenario (for now: reports that it cannot).
pub fn run() -> Churn {
    Churn { run: false, note: NOT_RUN.into() }
}
