//! The client's end of a download (`DataService.Download`): the bytes go
//! to `<out>.part` on the client's own machine, a re-run resumes from what
//! is there, and `<out>` appears only once the size and BLAKE3 the node
//! announced match.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use crate::crypto;

#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    #[error("could not {action} {}: {source}", .path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Crypto(#[from] crypto::CryptoError),
    #[error(
        "the node sent {actual} bytes in all, but the data is {expected} bytes; {} was removed, run the command again",
        .part.display()
    )]
    Size {
        expected: u64,
        actual: u64,
        part: PathBuf,
    },
    #[error(
        "the downloaded data does not match its BLAKE3 (expected {expected}, got {actual}); nothing was written to {} and the partial file was removed",
        .out.display()
    )]
    Hash {
        expected: String,
        actual: String,
        out: PathBuf,
    },
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> DownloadError {
    let path = path.to_path_buf();
    move |source| DownloadError::Io {
        action,
        path,
        source,
    }
}

/// A download being received into `<out>.part`.
#[derive(Debug)]
pub struct Receiving {
    out: PathBuf,
    part: PathBuf,
    file: File,
    hasher: blake3::Hasher,
    len: u64,
    resumed: u64,
}

/// Read size when re-hashing what a `.part` file holds.
const HASH_BUF: usize = 1 << 20;

impl Receiving {
    /// Continues `<out>.part`, or starts it. The bytes already there are
    /// hashed again, so the final check covers exactly what is on disk.
    pub fn resume(out: &Path) -> Result<Self, DownloadError> {
        let part = crypto::part_path(out);
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&part)
            .map_err(io_err("open", &part))?;
        let mut hasher = blake3::Hasher::new();
        let mut buf = vec![0u8; HASH_BUF];
        let mut len = 0u64;
        loop {
            let n = file.read(&mut buf).map_err(io_err("read", &part))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            len += n as u64;
        }
        Ok(Receiving {
            out: out.to_path_buf(),
            part,
            file,
            hasher,
            len,
            resumed: len,
        })
    }

    /// Where the next byte goes: what to ask the node for.
    pub fn offset(&self) -> u64 {
        self.len
    }

    /// Bytes that came from an earlier, interrupted run.
    pub fn resumed(&self) -> u64 {
        self.resumed
    }

    pub fn part_path(&self) -> &Path {
        &self.part
    }

    pub fn write(&mut self, chunk: &[u8]) -> Result<(), DownloadError> {
        self.file
            .write_all(chunk)
            .map_err(io_err("write", &self.part))?;
        self.hasher.update(chunk);
        self.len += chunk.len() as u64;
        Ok(())
    }

    /// Checks the size and BLAKE3 (hex) the node announced and moves the
    /// file into place; on a mismatch the partial file is removed, since
    /// resuming it could only fail again. Returns the hash.
    pub fn finish(self, size: u64, expected: &str) -> Result<String, DownloadError> {
        let actual = self.hasher.finalize().to_hex().to_string();
        if self.len != size {
            self.discard()?;
            return Err(DownloadError::Size {
                expected: size,
                actual: self.len,
                part: self.part,
            });
        }
        if !actual.eq_ignore_ascii_case(expected.trim()) {
            self.discard()?;
            return Err(DownloadError::Hash {
                expected: expected.to_owned(),
                actual,
                out: self.out,
            });
        }
        self.file.sync_all().map_err(io_err("sync", &self.part))?;
        fs::rename(&self.part, &self.out).map_err(io_err("rename into place", &self.out))?;
        crypto::sync_parent(&self.out)?;
        Ok(actual)
    }

    /// Removes the partial file: its bytes cannot be used (the node's copy
    /// is damaged, or the data changed).
    pub fn discard(&self) -> Result<(), DownloadError> {
        match fs::remove_file(&self.part) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err("remove", &self.part)(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resumes_verifies_and_renames() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("data.bin");
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
        let hash = blake3::hash(&data).to_hex().to_string();

        let mut r = Receiving::resume(&out).unwrap();
        assert_eq!((r.offset(), r.resumed()), (0, 0));
        r.write(&data[..100_000]).unwrap();
        drop(r);
        let mut r = Receiving::resume(&out).unwrap();
        assert_eq!((r.offset(), r.resumed()), (100_000, 100_000));
        r.write(&data[100_000..]).unwrap();
        assert!(!out.exists());
        assert_eq!(r.finish(data.len() as u64, &hash).unwrap(), hash);
        assert_eq!(fs::read(&out).unwrap(), data);
        assert!(!crypto::part_path(&out).exists());

        // A wrong hash: nothing at `out`, the partial file gone.
        let other = tmp.path().join("other.bin");
        let mut r = Receiving::resume(&other).unwrap();
        r.write(b"not it").unwrap();
        let e = r.finish(6, &hash).unwrap_err();
        assert!(matches!(e, DownloadError::Hash { .. }), "{e}");
        assert!(!other.exists() && !crypto::part_path(&other).exists());
        let mut r = Receiving::resume(&other).unwrap();
        r.write(b"short").unwrap();
        let e = r.finish(6, &hash).unwrap_err();
        assert!(matches!(e, DownloadError::Size { .. }), "{e}");
    }
}
