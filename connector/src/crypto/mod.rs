//! Encryption of released data: the per-transfer data key, the segmented
//! XChaCha20-Poly1305 STREAM, key wrapping for data kept sealed, and the file
//! helpers the transfer code streams through.
//!
//! The pieces, one file each:
//! - `key`: [`DataKey`], and [`WrappedKey`] for keys kept at rest;
//! - `cipher`: [`SegmentCipher`] and the segment arithmetic;
//! - `buf`: [`SegmentBuf`], the aligned buffer a segment is sealed in;
//! - `files`: reading a file as sealed segments ([`SealedReader`]), writing
//!   verified plaintext to `<out>.part` ([`SegmentWriter`]), and unsealing a
//!   sealed file.
//!
//! Only `files` touches the file system.
//!
//! A dataset travels as a sequence of segments of [`SEGMENT_SIZE`] plaintext
//! bytes (the last may be shorter, and is empty only for an empty dataset).
//! Each segment is sealed on its own with the STREAM construction, whose
//! nonce carries the segment index and a "last segment" flag, so a receiver
//! detects a flipped bit, reordered or dropped segments and a truncated
//! stream, and can name the segment at fault. Because any segment can be
//! sealed or opened at any index, a transfer resumes from the first segment
//! the consumer has not yet verified.
//!
//! Key discipline, which the transfer code must keep: a data key is fresh
//! from [`DataKey::generate`] for every transfer attempt, including a resumed
//! one. The consumer keeps verified *plaintext* in `<out>.part`, so nothing
//! needs the old key to resume, and a fresh key makes nonce reuse impossible
//! even if the file changed on disk between attempts.

use std::io;
use std::path::{Path, PathBuf};

mod buf;
mod cipher;
mod files;
mod key;
#[cfg(test)]
mod tests;

pub use buf::SegmentBuf;
pub use cipher::{SegmentCipher, segment_count, segment_range};
pub use files::{
    SealedReader, SealedSegment, SegmentWriter, UnsealReader, Verified, part_path, sync_parent,
    unseal_file,
};
pub use key::{DataKey, WrappedKey, storage_key_from_seed};

/// Plaintext bytes per segment (1 MiB).
///
/// Memory stays bounded: sender and receiver each hold about one segment at
/// a time, far below the 64 MiB budget of a node. A GiB is about a thousand
/// segments, so the 16-byte tag per segment costs 0.0015 % and the per-segment
/// bookkeeping is negligible, while a resume re-sends at most one MiB.
pub const SEGMENT_SIZE: usize = 1 << 20;

/// Bytes a sealed segment adds to its plaintext: the Poly1305 tag.
pub const TAG_SIZE: usize = 16;

/// Length of a data key and of a storage key.
pub const KEY_SIZE: usize = 32;

const NONCE_PREFIX_CONTEXT: &str = "bayspace/v1 transfer-nonce-prefix";
const STORAGE_KEY_CONTEXT: &str = "bayspace/v1 storage-key";
const SEGMENT_AAD_DOMAIN: &[u8] = b"bayspace/v1 segment\0";
const WRAP_AAD_DOMAIN: &[u8] = b"bayspace/v1 wrapped-key\0";
/// XChaCha20's 24-byte nonce minus the 5 bytes STREAM uses for the
/// big-endian counter and the last-segment flag.
const NONCE_PREFIX_SIZE: usize = 19;
const WRAP_NONCE_SIZE: usize = 24;

/// Alignment of [`SegmentBuf`] and of the file offsets and lengths written
/// with direct I/O: the largest logical block size of common devices.
pub const IO_ALIGN: usize = 4096;

/// What went wrong while encrypting, decrypting or storing released data.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error(transparent)]
    Random(#[from] crate::random::RandomError),
    #[error(
        "segment {index} failed authentication: corrupted, reordered or not from this transfer"
    )]
    Segment { index: u32 },
    #[error("segment {index} is {len} bytes; a segment holds at most {max}")]
    SegmentTooLong { index: u32, len: usize, max: usize },
    #[error(
        "segment {index} is {len} bytes but is not the last one; every segment but the last holds exactly {expected}"
    )]
    ShortSegment {
        index: u32,
        len: usize,
        expected: usize,
    },
    #[error("segment {index} arrived out of order: segment {expected} comes next")]
    OutOfOrder { index: u32, expected: u32 },
    #[error("segment {index} arrived after the last segment")]
    AfterLast { index: u32 },
    #[error("a {size}-byte dataset needs more than {} segments", u32::MAX)]
    TooLarge { size: u64 },
    #[error("segment {index} does not exist: the dataset has {count} segments")]
    IndexOutOfRange { index: u32, count: u32 },
    #[error("could not wrap the data key under context {context:?}")]
    Wrap { context: String },
    #[error(
        "the wrapped data key does not open under context {context:?}: wrong storage key, wrong context, or the wrapped key was altered"
    )]
    Unwrap { context: String },
    #[error(
        "the received data does not match the dataset hash (expected {expected}, got {actual}); nothing was written to {out} and the partial file was removed"
    )]
    HashMismatch {
        expected: blake3::Hash,
        actual: blake3::Hash,
        out: PathBuf,
    },
    #[error("{path} is {actual} bytes; sealed data of this size is {expected} bytes")]
    SealedLength {
        path: PathBuf,
        expected: u64,
        actual: u64,
    },
    #[error("could not {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

type Result<T, E = CryptoError> = std::result::Result<T, E>;

pub(crate) fn io_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> CryptoError {
    let path = path.to_path_buf();
    move |source| CryptoError::Io {
        action,
        path,
        source,
    }
}

fn random<const N: usize>() -> Result<[u8; N]> {
    Ok(crate::random::bytes()?)
}
