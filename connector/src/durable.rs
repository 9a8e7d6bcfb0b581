//! Files that appear whole or not at all, and stay after a crash.
//!
//! A reader of a path written here sees the old file (or none) or the whole
//! new one, never a part: the bytes go to a temporary file beside the
//! target, which is synced, moved into place, and then the directory is
//! synced so the move itself survives a power cut.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// What to do when the target already exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overwrite {
    /// Replace it.
    Replace,
    /// Fail with [`io::ErrorKind::AlreadyExists`]; the move is a hard link,
    /// so of two writers racing for one path exactly one wins.
    Refuse,
}

/// A file being written to a temporary path beside its target. Nothing is
/// at the target until [`AtomicFile::commit`]; dropped uncommitted, the
/// temporary file is removed.
pub struct AtomicFile {
    file: File,
    tmp: PathBuf,
    path: PathBuf,
    committed: bool,
}

impl AtomicFile {
    /// Starts writing `path`, with exactly `mode` (the umask does not
    /// narrow it).
    pub fn create(path: &Path, mode: u32) -> io::Result<AtomicFile> {
        let name = path
            .file_name()
            .ok_or_else(|| io::Error::other("the path has no file name"))?;
        let suffix = crate::random::bytes::<8>().map_err(io::Error::other)?;
        let tmp = parent(path).join(format!(
            ".{}.tmp-{}",
            name.to_string_lossy(),
            u64::from_le_bytes(suffix)
        ));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        let this = AtomicFile {
            file,
            tmp,
            path: path.to_owned(),
            committed: false,
        };
        this.file
            .set_permissions(fs::Permissions::from_mode(mode))?;
        Ok(this)
    }

    /// Syncs the bytes, moves the file into place and syncs the directory.
    pub fn commit(mut self, overwrite: Overwrite) -> io::Result<()> {
        self.file.sync_all()?;
        match overwrite {
            Overwrite::Replace => fs::rename(&self.tmp, &self.path)?,
            Overwrite::Refuse => {
                fs::hard_link(&self.tmp, &self.path)?;
                fs::remove_file(&self.tmp)?;
            }
        }
        self.committed = true;
        sync_parent(&self.path)
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// Writes `bytes` to `path` whole or not at all: see the module docs.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32, overwrite: Overwrite) -> io::Result<()> {
    let mut file = AtomicFile::create(path, mode)?;
    file.write_all(bytes)?;
    file.commit(overwrite)
}

/// Makes a rename or removal in `path`'s directory durable.
pub fn sync_parent(path: &Path) -> io::Result<()> {
    File::open(parent(path))?.sync_all()
}

fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leftovers(dir: &Path) -> Vec<String> {
        fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".tmp-"))
            .collect()
    }

    #[test]
    fn replace_refuse_and_mode() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        write_atomic(&p, b"one", 0o600, Overwrite::Refuse).unwrap();
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let err = write_atomic(&p, b"two", 0o600, Overwrite::Refuse).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read(&p).unwrap(), b"one");
        write_atomic(&p, b"three", 0o644, Overwrite::Replace).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"three");
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o644
        );
        assert!(leftovers(dir.path()).is_empty());
    }

    #[test]
    fn an_uncommitted_file_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        fs::write(&p, b"old").unwrap();
        {
            let mut f = AtomicFile::create(&p, 0o600).unwrap();
            f.write_all(b"half of the new").unwrap();
            assert_eq!(leftovers(dir.path()).len(), 1);
        }
        assert_eq!(fs::read(&p).unwrap(), b"old");
        assert!(leftovers(dir.path()).is_empty());
    }
}
