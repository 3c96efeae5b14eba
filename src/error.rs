//! The library's error type: one enum with structured variants, so the CLI
//! (and users of the library) can tell a bad file from a bad node from a
//! runtime failure without parsing strings.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The cause follows in the error chain (`{:#}` prints "path: cause").
    #[error("{}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },

    #[error("{}: not a valid ONNX model: {reason}", path.display())]
    Decode { path: PathBuf, reason: String },

    /// A data file or folder that cannot be used (named, with the reason).
    #[error("{}: data: {reason}", path.display())]
    Data { path: PathBuf, reason: String },

    #[error("{}: initializer `{tensor}`: external data: {reason}", path.display())]
    ExternalData {
        path: PathBuf,
        tensor: String,
        reason: String,
    },

    #[error("tensor `{name}`: {reason}")]
    Tensor { name: String, reason: String },

    #[error("node `{node}` ({op}): {reason}")]
    Node {
        node: String,
        op: String,
        reason: String,
    },

    #[error("node `{node}` ({op}): attribute `{attr}`: {reason}")]
    Attribute {
        node: String,
        op: String,
        attr: String,
        reason: String,
    },

    #[error("graph: {0}")]
    Graph(String),

    #[error("{backend}: {reason}")]
    Runtime {
        backend: &'static str,
        reason: String,
    },

    #[error("{0}")]
    Invalid(String),

    /// A training device that cannot be had.
    #[error("device `{spec}`: {reason}")]
    Device { spec: String, reason: String },

    /// A recipe file that cannot be used (the key or value named).
    #[error("{}: recipe: {reason}", path.display())]
    Recipe { path: PathBuf, reason: String },

    /// The run finished but its result is refused (the pruned model is not
    /// exact, off its target, at chance, or lost more than allowed);
    /// nothing was written.
    #[error("{0}")]
    Rejected(String),

    /// Stopped by the caller (Ctrl-C); the message says where the
    /// checkpoint is.
    #[error("{0}")]
    Interrupted(String),

    /// A tensor operation failed in candle (training, evaluation).
    #[error(transparent)]
    Candle(#[from] candle_core::Error),

    /// An error during a named phase of training (resuming, a budget step,
    /// evaluation); the cause follows in the chain.
    #[error("{what}")]
    During {
        what: &'static str,
        #[source]
        source: Box<Error>,
    },

    /// An error while running one node; the cause follows in the chain.
    #[error("node `{node}` ({op})")]
    AtNode {
        node: String,
        op: String,
        #[source]
        source: Box<Error>,
    },

    /// An error inside a model file (a node, tensor or attribute), with the
    /// file it came from; the cause follows in the chain.
    #[error("{}", path.display())]
    InModel {
        path: PathBuf,
        #[source]
        source: Box<Error>,
    },
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn tensor(name: &str, reason: impl Into<String>) -> Self {
        Error::Tensor {
            name: name.to_string(),
            reason: reason.into(),
        }
    }

    /// A candle error raised during `what`.
    pub fn during(what: &'static str, e: candle_core::Error) -> Self {
        Error::During {
            what,
            source: Box::new(Error::Candle(e)),
        }
    }

    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
