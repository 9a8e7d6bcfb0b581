//! How identity material lives on disk: strict, versioned JSON documents,
//! written atomically, with secret files readable by their owner only.
//!
//! Every document carries a `format` string (`bayspace/<kind>/<version>`).
//! Parsing reads that string first, so a document of another kind or
//! version is refused by name before any other field is looked at; then the
//! whole document is parsed with unknown fields refused. Errors name the
//! file and the field path.
//!
//! Unix only: file modes are how a node keeps its key to itself.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde::de::DeserializeOwned;
use zeroize::Zeroizing;

/// Why a file could not be read, written or parsed.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("cannot read {}: {source}", .path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot write {}: {source}", .path.display())]
    Write { path: PathBuf, source: io::Error },
    #[error("{} already exists; refusing to overwrite it", .path.display())]
    Exists { path: PathBuf },
    #[error(
        "{} has mode {mode:04o}: group or others may access this secret; run `chmod 600 {}`",
        .path.display(), .path.display()
    )]
    InsecureMode { path: PathBuf, mode: u32 },
    #[error("{}: unsupported format `{found}`; expected `{expected}`", .path.display())]
    UnknownFormat {
        path: PathBuf,
        found: String,
        expected: &'static str,
    },
    #[error("{}: field `{field}`: {reason}", .path.display())]
    Malformed {
        path: PathBuf,
        field: String,
        reason: String,
    },
}

pub use crate::durable::Overwrite;

/// Parse a versioned JSON document strictly.
///
/// `path` only labels errors; it may be a pseudo path for input that did not
/// come from a file.
pub fn parse_document<T: DeserializeOwned>(
    text: &str,
    path: &Path,
    expected: &'static str,
) -> Result<T, FileError> {
    #[derive(Deserialize)]
    struct Probe {
        format: Option<String>,
    }
    let malformed = |field: String, reason: String| FileError::Malformed {
        path: path.to_owned(),
        field,
        reason,
    };
    let probe: Probe =
        serde_json::from_str(text).map_err(|e| malformed("format".into(), e.to_string()))?;
    match probe.format {
        None => return Err(malformed("format".into(), "missing".into())),
        Some(found) if found != expected => {
            return Err(FileError::UnknownFormat {
                path: path.to_owned(),
                found,
                expected,
            });
        }
        Some(_) => {}
    }
    let de = &mut serde_json::Deserializer::from_str(text);
    let value: T = serde_path_to_error::deserialize(de)
        .map_err(|e| malformed(e.path().to_string(), e.inner().to_string()))?;
    Ok(value)
}

/// Read a whole file as UTF-8.
pub fn read_text(path: &Path) -> Result<String, FileError> {
    fs::read_to_string(path).map_err(|source| FileError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Read a secret file, refusing it when group or others have any access.
/// The text is wiped from memory when dropped.
pub fn read_secret_text(path: &Path) -> Result<Zeroizing<String>, FileError> {
    let read_err = |source| FileError::Read {
        path: path.to_owned(),
        source,
    };
    let file = File::open(path).map_err(read_err)?;
    let mode = file.metadata().map_err(read_err)?.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(FileError::InsecureMode {
            path: path.to_owned(),
            mode,
        });
    }
    io::read_to_string(file)
        .map(Zeroizing::new)
        .map_err(read_err)
}

/// Write `bytes` to `path` whole or not at all, with exactly `mode`: see
/// [`crate::durable`]. With [`Overwrite::Refuse`], an existing file is
/// [`FileError::Exists`].
pub fn write_atomic(
    path: &Path,
    bytes: &[u8],
    mode: u32,
    overwrite: Overwrite,
) -> Result<(), FileError> {
    crate::durable::write_atomic(path, bytes, mode, overwrite).map_err(|source| {
        if source.kind() == io::ErrorKind::AlreadyExists {
            FileError::Exists {
                path: path.to_owned(),
            }
        } else {
            FileError::Write {
                path: path.to_owned(),
                source,
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Doc {
        format: String,
        inner: Inner,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        n: u32,
    }

    const F: &str = "bayspace/test/1";

    #[test]
    fn strict_parsing_names_file_format_and_field() {
        let p = Path::new("/x/doc.json");
        let ok: Doc =
            parse_document(r#"{"format":"bayspace/test/1","inner":{"n":1}}"#, p, F).unwrap();
        assert_eq!(ok.inner.n, 1);

        let e = parse_document::<Doc>(r#"{"format":"bayspace/test/2","inner":{"n":1}}"#, p, F)
            .unwrap_err();
        assert!(
            matches!(e, FileError::UnknownFormat { ref found, .. } if found == "bayspace/test/2")
        );
        assert!(e.to_string().contains("/x/doc.json"), "{e}");

        let e = parse_document::<Doc>(
            r#"{"format":"bayspace/test/1","inner":{"n":1,"extra":2}}"#,
            p,
            F,
        )
        .unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("/x/doc.json") && msg.contains("extra"),
            "{msg}"
        );
        assert!(msg.contains("inner"), "{msg}");

        let e = parse_document::<Doc>(r#"{"inner":{"n":1}}"#, p, F).unwrap_err();
        assert!(e.to_string().contains("`format`: missing"), "{e}");
    }

    #[test]
    fn atomic_write_sets_mode_and_refuses_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("secret");
        write_atomic(&p, b"one", 0o600, Overwrite::Refuse).unwrap();
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let e = write_atomic(&p, b"two", 0o600, Overwrite::Refuse).unwrap_err();
        assert!(matches!(e, FileError::Exists { .. }), "{e}");
        assert_eq!(read_secret_text(&p).unwrap().as_str(), "one");
        write_atomic(&p, b"three", 0o600, Overwrite::Replace).unwrap();
        assert_eq!(read_secret_text(&p).unwrap().as_str(), "three");
        // No temporary files are left behind.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn secret_readable_by_others_is_refused_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("node.key");
        write_atomic(&p, b"x", 0o644, Overwrite::Refuse).unwrap();
        let e = read_secret_text(&p).unwrap_err();
        assert!(matches!(e, FileError::InsecureMode { mode: 0o644, .. }));
        let msg = e.to_string();
        assert!(msg.contains("0644"), "{msg}");
        assert!(msg.contains(&format!("chmod 600 {}", p.display())), "{msg}");
    }
}
