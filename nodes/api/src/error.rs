//! The error a node returns when it cannot produce its outputs.

/// Why a node failed. The engine adds the node's id and type when it reports the failure.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The run was cancelled while the node was working.
    #[error("cancelled")]
    Cancelled,
    /// An argument the node needs is missing or has the wrong type; this points at a mismatch
    /// between a node's descriptor and its code, or a linked value outside a parameter's range.
    #[error("argument \"{name}\": {problem}")]
    Argument {
        /// The input or parameter name.
        name: String,
        /// What is wrong with it.
        problem: String,
    },
    /// Reading or writing a file failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done, e.g. "cannot write".
        action: &'static str,
        /// The file concerned.
        path: std::path::PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// Any other failure, already phrased for the user.
    #[error("{0}")]
    Message(String),
}

impl NodeError {
    /// A failure described by a message for the user.
    pub fn msg(message: impl Into<String>) -> Self {
        Self::Message(message.into())
    }
}
