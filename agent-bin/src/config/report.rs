//! Problems found in a config file, each with its path, and their rendering for
//! `--validate-config`.

use std::fmt;

/// The start of the message about a key the schema does not know.
pub const UNKNOWN_KEY: &str = "unknown key (ignored)";

/// How bad a problem is: errors stop the agent, warnings do not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// The config cannot be used.
    Error,
    /// Suspicious but usable (unknown key, tag conflict, …).
    Warning,
}

/// One problem, located by its dotted path in the file (`postgresql.listen`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Error or warning.
    pub severity: Severity,
    /// Dotted path, `[i]` for list items; empty for the file as a whole.
    pub path: String,
    /// What is wrong and, where useful, what to do.
    pub message: String,
}

/// A non-fatal problem.
pub type Warning = Problem;

impl Problem {
    /// An error at `path`.
    pub fn error(path: impl Into<String>, message: impl Into<String>) -> Self {
        Problem {
            severity: Severity::Error,
            path: path.into(),
            message: message.into(),
        }
    }

    /// A warning at `path`.
    pub fn warning(path: impl Into<String>, message: impl Into<String>) -> Self {
        Problem {
            severity: Severity::Warning,
            path: path.into(),
            message: message.into(),
        }
    }

    /// Whether this is an error.
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    /// Whether this is the warning about a key the schema does not know.
    pub fn is_unknown_key(&self) -> bool {
        self.severity == Severity::Warning && self.message.starts_with(UNKNOWN_KEY)
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tag = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        if self.path.is_empty() {
            write!(f, "{tag}: {}", self.message)
        } else {
            write!(f, "{tag}: {}: {}", self.path, self.message)
        }
    }
}

/// Everything `validate_file` found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Errors first, then warnings, each in file order.
    pub problems: Vec<Problem>,
}

impl Report {
    /// Whether any problem is an error.
    pub fn has_errors(&self) -> bool {
        self.problems.iter().any(Problem::is_error)
    }

    /// The errors.
    pub fn errors(&self) -> impl Iterator<Item = &Problem> {
        self.problems.iter().filter(|p| p.is_error())
    }

    /// The warnings.
    pub fn warnings(&self) -> impl Iterator<Item = &Problem> {
        self.problems.iter().filter(|p| !p.is_error())
    }

    /// The problem at `path` with a message containing `needle`, if any (for tests
    /// and tooling).
    pub fn find(&self, path: &str, needle: &str) -> Option<&Problem> {
        self.problems
            .iter()
            .find(|p| p.path == path && p.message.contains(needle))
    }

    /// `--validate-config` output: one line per problem, `error:`/`warning:` first.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for p in &self.problems {
            out.push_str(&p.to_string());
            out.push('\n');
        }
        out
    }
}

/// Why a config could not be loaded: every error found (warnings included for context).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration:\n{}", .0.render())]
pub struct ConfigErrors(pub Report);
