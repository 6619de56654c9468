use std::path::PathBuf;

use thiserror::Error;

pub type Result<T, E = LoadError> = std::result::Result<T, E>;

/// Everything that can be wrong with a checkpoint on disk. Each variant names the file and,
/// where there is one, the tensor or config field, so a user can find the problem.
#[derive(Debug, Error)]
pub enum LoadError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: invalid safetensors header: {reason}")]
    BadHeader { path: PathBuf, reason: String },
    #[error("{path}: invalid GGUF file: {reason}")]
    BadGguf { path: PathBuf, reason: String },
    #[error("{path}: tensor `{tensor}`: {reason}")]
    BadTensor {
        path: PathBuf,
        tensor: String,
        reason: String,
    },
    #[error("{path}: tensor `{tensor}` not found")]
    MissingTensor { path: PathBuf, tensor: String },
    #[error("{path}: tensor `{tensor}` has shape {found:?}, expected {expected:?}")]
    WrongShape {
        path: PathBuf,
        tensor: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
    #[error("{path}: tensor `{tensor}` has dtype {found}, expected {expected}")]
    WrongDtype {
        path: PathBuf,
        tensor: String,
        expected: String,
        found: String,
    },
    #[error("{path}: {reason}")]
    BadIndex { path: PathBuf, reason: String },
    #[error("{path}: missing required field `{field}`")]
    MissingField { path: PathBuf, field: String },
    #[error("{path}: field `{field}`: {reason}")]
    BadField {
        path: PathBuf,
        field: String,
        reason: String,
    },
    #[error(
        "{path}: no weights found (expected model.safetensors or model.safetensors.index.json)"
    )]
    NoWeights { path: PathBuf },
}
