//! The one error type of fullautoctl: every failure becomes one line on stderr and
//! a non-zero exit.

use ha_core::DcsError;

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    /// The config file or `--dcs-url` is unusable.
    #[error("{0}")]
    Config(String),
    /// The DCS failed or could not be reached.
    #[error("{0}")]
    Dcs(#[from] DcsError),
    /// A REST call could not be made or was refused.
    #[error("{0}")]
    Rest(String),
    /// A question needed an answer and stdin had none.
    #[error("no answer to \"{question}\" on stdin: {hint}")]
    NoAnswer {
        /// The question.
        question: String,
        /// What to do instead.
        hint: String,
    },
    /// The user declined, or the request cannot be carried out as given.
    #[error("{0}")]
    Failed(String),
    /// Local I/O (files, editor).
    #[error("{0}")]
    Io(String),
}

impl CtlError {
    /// A refusal or failed check, with patronictl's message.
    pub fn failed(msg: impl Into<String>) -> Self {
        CtlError::Failed(msg.into())
    }
}

/// Result of a fullautoctl step.
pub type CtlResult<T> = Result<T, CtlError>;
