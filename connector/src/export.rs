//! Where an administrator may have the node write a file on its own host:
//! only inside the configured `export-dir`.
//!
//! Researchers never name a path on the node's host (their data is
//! streamed to their own machine); an administrator's export is resolved
//! here first, and anything that could land outside the directory is
//! refused before a byte is written: `..`, an absolute path elsewhere, a
//! symbolic link on the way or at the target, a missing directory.

use std::fs;
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Component, Path, PathBuf};

use crate::crypto;

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("the export path is empty; name a file inside the export directory {}", .dir.display())]
    Empty { dir: PathBuf },
    #[error("the export path `{requested}` contains `..`; name a file inside {}", .dir.display())]
    ParentDir { requested: String, dir: PathBuf },
    #[error(
        "`{requested}` is outside the export directory {}; the node writes only there (set `export-dir` in config.toml to change it)",
        .dir.display()
    )]
    Outside { requested: String, dir: PathBuf },
    #[error("{} is a symbolic link; exports do not follow links", .path.display())]
    Symlink { path: PathBuf },
    #[error("{} does not exist inside the export directory; create it first", .path.display())]
    MissingDir { path: PathBuf },
    #[error("{} is a directory, not a file name", .path.display())]
    IsDir { path: PathBuf },
    #[error("could not {action} {}: {source}", .path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> ExportError {
    let path = path.to_path_buf();
    move |source| ExportError::Io {
        action,
        path,
        source,
    }
}

/// The file `requested` names inside `dir` (made, mode 0700, if missing):
/// relative to `dir`, or absolute and inside it. Every directory on the way
/// must exist and none may be a link; the file, and the `.part` file a
/// writer uses beside it, may not be links either.
///
/// The checks are made on the file system as it is now; an administrator
/// who shares the export directory with untrusted local users should not.
pub fn resolve(dir: &Path, requested: &str) -> Result<PathBuf, ExportError> {
    let req = Path::new(requested.trim());
    if requested.trim().is_empty() {
        return Err(ExportError::Empty {
            dir: dir.to_path_buf(),
        });
    }
    if req.components().any(|c| c == Component::ParentDir) {
        return Err(ExportError::ParentDir {
            requested: requested.to_owned(),
            dir: dir.to_path_buf(),
        });
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io_err("create", dir))?;
    let root = fs::canonicalize(dir).map_err(io_err("resolve", dir))?;
    let relative = if req.is_absolute() {
        let absolute = std::path::absolute(dir).map_err(io_err("resolve", dir))?;
        req.strip_prefix(&root)
            .or_else(|_| req.strip_prefix(&absolute))
            .map_err(|_| ExportError::Outside {
                requested: requested.to_owned(),
                dir: dir.to_path_buf(),
            })?
            .to_path_buf()
    } else {
        req.to_path_buf()
    };
    let parts: Vec<&std::ffi::OsStr> = relative
        .components()
        .filter_map(|c| match c {
            Component::Normal(p) => Some(p),
            _ => None,
        })
        .collect();
    let Some((file, dirs)) = parts.split_last() else {
        return Err(ExportError::Empty {
            dir: dir.to_path_buf(),
        });
    };
    let mut at = root;
    for d in dirs {
        at.push(d);
        match fs::symlink_metadata(&at) {
            Ok(m) if m.file_type().is_symlink() => return Err(ExportError::Symlink { path: at }),
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Err(ExportError::MissingDir { path: at }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(ExportError::MissingDir { path: at });
            }
            Err(e) => return Err(io_err("inspect", &at)(e)),
        }
    }
    at.push(file);
    for path in [at.clone(), crypto::part_path(&at)] {
        match fs::symlink_metadata(&path) {
            Ok(m) if m.file_type().is_symlink() => return Err(ExportError::Symlink { path }),
            Ok(m) if m.is_dir() => return Err(ExportError::IsDir { path }),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("inspect", &path)(e)),
        }
    }
    Ok(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inside_is_allowed_and_everything_else_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("exports");
        let outside = tmp.path().join("outside");
        fs::create_dir(&outside).unwrap();

        let root = fs::canonicalize(tmp.path()).unwrap().join("exports");
        assert_eq!(resolve(&dir, "a.csv").unwrap(), root.join("a.csv"));
        assert_eq!(
            resolve(&dir, &dir.join("b.csv").display().to_string()).unwrap(),
            root.join("b.csv")
        );
        fs::create_dir(dir.join("sub")).unwrap();
        assert_eq!(resolve(&dir, "sub/c.csv").unwrap(), root.join("sub/c.csv"));

        let refused = |r: &str| resolve(&dir, r).unwrap_err();
        assert!(matches!(refused(""), ExportError::Empty { .. }));
        assert!(matches!(refused("../x"), ExportError::ParentDir { .. }));
        assert!(matches!(
            refused("sub/../../x"),
            ExportError::ParentDir { .. }
        ));
        let abs = outside.join("x").display().to_string();
        assert!(matches!(refused(&abs), ExportError::Outside { .. }));
        assert!(matches!(
            refused("/etc/passwd"),
            ExportError::Outside { .. }
        ));
        assert!(matches!(refused("nope/x"), ExportError::MissingDir { .. }));
        assert!(matches!(refused("sub"), ExportError::IsDir { .. }));

        std::os::unix::fs::symlink(&outside, dir.join("link")).unwrap();
        assert!(matches!(refused("link/x"), ExportError::Symlink { .. }));
        std::os::unix::fs::symlink(outside.join("t"), dir.join("file")).unwrap();
        assert!(matches!(refused("file"), ExportError::Symlink { .. }));
        std::os::unix::fs::symlink(outside.join("t"), dir.join("g.part")).unwrap();
        assert!(matches!(refused("g"), ExportError::Symlink { .. }));
        assert_eq!(fs::read_dir(&outside).unwrap().count(), 0);
    }
}
