//! Configuration errors: each names the file, and the key where one is at fault.

use std::fmt::Display;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config {file}: cannot read: {source}")]
    Read {
        file: String,
        source: std::io::Error,
    },
    #[error("config {file}: line {line}, column {column}: {message}")]
    Syntax {
        file: String,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("config {file}: {key}: {message}")]
    Invalid {
        file: String,
        key: String,
        message: String,
    },
}

pub(super) fn invalid(file: &str, key: impl Display, message: impl Display) -> ConfigError {
    ConfigError::Invalid {
        file: file.to_owned(),
        key: key.to_string(),
        message: message.to_string(),
    }
}
