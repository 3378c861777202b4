//! Reading the PEM files that configuration keys name, and the error that names the key and
//! the file when one is unusable.

use std::fs;
use std::path::{Path, PathBuf};

/// A TLS setup failure, naming the key and file involved.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    /// A file could not be read.
    #[error("{key} {}: cannot read: {source}", path.display())]
    Read {
        /// Config key naming the file.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// The IO error.
        source: std::io::Error,
    },
    /// A file's content is unusable.
    #[error("{key} {}: {message}", path.display())]
    Content {
        /// Config key naming the file.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// OpenSSL refused a setting (should not happen with the built-in policy).
    #[error("TLS setup: {0}")]
    OpenSsl(#[from] openssl::error::ErrorStack),
}

impl TlsSetupError {
    /// The configuration key the problem is about, when there is one.
    pub(crate) fn key(&self) -> Option<&'static str> {
        match self {
            TlsSetupError::Read { key, .. } | TlsSetupError::Content { key, .. } => Some(key),
            TlsSetupError::OpenSsl(_) => None,
        }
    }
}

/// A file and the configuration key that named it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KeyedPath {
    /// The dotted key, e.g. `listen.certificate`.
    pub(crate) key: &'static str,
    /// The file (or directory).
    pub(crate) path: PathBuf,
}

/// `path` itself, or every regular file in it (sorted) when it is a directory.
pub(crate) fn list_files(path: &Path) -> std::io::Result<Vec<PathBuf>> {
    if !path.is_dir() {
        return Ok(vec![path.to_owned()]);
    }
    let mut files: Vec<PathBuf> = fs::read_dir(path)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    Ok(files)
}

/// [`list_files`], with the error naming the key.
pub(super) fn pem_files(key: &'static str, path: &Path) -> Result<Vec<PathBuf>, TlsSetupError> {
    list_files(path).map_err(|source| TlsSetupError::Read {
        key,
        path: path.into(),
        source,
    })
}

/// Reads a whole file named by `key`.
pub(super) fn read(key: &'static str, path: &Path) -> Result<Vec<u8>, TlsSetupError> {
    fs::read(path).map_err(|source| TlsSetupError::Read {
        key,
        path: path.into(),
        source,
    })
}

/// The PEM blocks of type `label` in `pem`, each with its BEGIN and END lines.
pub(crate) fn pem_blocks<'a>(pem: &'a [u8], label: &str) -> Vec<&'a [u8]> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let mut blocks = Vec::new();
    let mut rest = pem;
    while let Some(start) = find(rest, begin.as_bytes()) {
        let Some(stop) = find(&rest[start..], end.as_bytes()) else {
            break;
        };
        let stop = start + stop + end.len();
        blocks.push(&rest[start..stop]);
        rest = &rest[stop..];
    }
    blocks
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// A file or directory that holds nothing of what it should.
pub(super) fn none_found(key: &'static str, path: &Path, what: &str) -> TlsSetupError {
    TlsSetupError::Content {
        key,
        path: path.into(),
        message: format!("no PEM {what} found"),
    }
}

/// A file OpenSSL cannot parse.
pub(super) fn content(
    key: &'static str,
    path: &Path,
    e: openssl::error::ErrorStack,
) -> TlsSetupError {
    TlsSetupError::Content {
        key,
        path: path.into(),
        message: format!("not a valid PEM file: {e}"),
    }
}
