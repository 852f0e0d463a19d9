//! Error type of the session store.

use std::io;
use std::path::{Path, PathBuf};

/// Errors returned by the session writer and by [`crate::SessionReader::open`].
///
/// Every variant names the file or directory it is about. Problems *inside* readable files
/// (corrupt lines, torn tails) are not errors for the reader: they are reported as
/// [`crate::Problem`]s next to the records that could be read.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// An I/O operation on `path` failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// File or directory the operation was about.
        path: PathBuf,
        /// Underlying I/O error.
        source: io::Error,
    },
    /// A JSON document (e.g. `run.json`) could not be parsed or a record could not be serialized.
    #[error("{}: invalid JSON: {source}", path.display())]
    Json {
        /// File the JSON belongs to.
        path: PathBuf,
        /// Underlying serde_json error (carries line/column for parse errors).
        source: serde_json::Error,
    },
    /// The configuration text is not valid TOML.
    #[error("{}: invalid TOML: {message}", path.display())]
    Toml {
        /// File the TOML belongs to (or would be written to).
        path: PathBuf,
        /// Parser message, including the position.
        message: String,
    },
    /// [`crate::SessionWriter::create`] was pointed at a directory that already holds a session.
    #[error("{}: already contains a session ({found} exists); use resume or another directory", path.display())]
    AlreadyExists {
        /// The session directory.
        path: PathBuf,
        /// The session file that was found.
        found: String,
    },
    /// [`crate::SessionWriter::create`] was pointed at something other than a new path or an
    /// empty directory.
    #[error("{}: cannot create a session here ({found}); choose a new or empty directory", path.display())]
    NotEmpty {
        /// The intended session directory.
        path: PathBuf,
        /// What is in the way.
        found: String,
    },
    /// The path is not a session directory or session file (e.g. resume on a directory without
    /// `run.json`, or open on something that is neither a file nor a directory).
    #[error("{}: not a session: {reason}", path.display())]
    NotASession {
        /// The offending path.
        path: PathBuf,
        /// Why it was rejected.
        reason: String,
    },
}

/// Result alias used throughout the crate.
pub type Result<T> = std::result::Result<T, SessionError>;

/// Builds a closure mapping an [`io::Error`] to [`SessionError::Io`] for `path`.
pub(crate) fn io_err(path: &Path) -> impl FnOnce(io::Error) -> SessionError + '_ {
    move |source| SessionError::Io {
        path: path.to_path_buf(),
        source,
    }
}
