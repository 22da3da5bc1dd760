//! The progress line on stderr: rewritten in place on a terminal, one line
//! per step otherwise (CI logs).

use std::io::{IsTerminal, Write};
use std::time::Instant;

/// Counts steps of a run and shows the current one.
#[derive(Debug)]
pub struct Progress {
    total: usize,
    done: usize,
    start: Instant,
    tty: bool,
}

impl Progress {
    /// A progress line for `total` steps.
    pub fn new(total: usize) -> Progress {
        Progress { total, done: 0, start: Instant::now(), tty: std::io::stderr().is_terminal() }
    }

    /// Announces the next step.
    pub fn step(&mut self, what: &str) {
        self.done += 1;
        let line = format_line(self.done, self.total, self.start.elapsed().as_secs(), what);
        let mut err = std::io::stderr().lock();
        if self.tty {
            let _ = write!(err, "\r{line}\x1b[K");
        } else {
            let _ = writeln!(err, "{line}");
        }
        let _ = err.flush();
    }

    /// Clears the line (terminal only).
    pub fn finish(&self) {
        if self.tty {
            let _ = write!(std::io::stderr(), "\r\x1b[K");
        }
    }
}

fn format_line(done: usize, total: usize, secs: u64, what: &str) -> String {
    let w = total.to_string().len();
    format!("[{done:>w$}/{total} {secs:>3}s] {what}")
}

#[cfg(test)]
mod tests {
    #[test]
    fn line_format() {
        assert_eq!(super::format_line(3, 120, 7, "x"), "[  3/120   7s] x");
    }
}
