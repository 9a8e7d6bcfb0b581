//! Encryption of released data: the per-transfer data key, the segmented
//! XChaCha20-Poly1305 STREAM, key wrapping for data kept sealed, and the file
//! helpers the transfer code streams through.
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

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use aead_stream::aead::Buffer;
use aead_stream::{NewStream, StreamBE32, StreamPrimitive};
use bayspace_contracts::signing::b64;
use chacha20poly1305::{AeadInOut, KeyInit, Tag, XChaCha20Poly1305, XNonce};
use serde::{Deserialize, Serialize};
use zeroize::Zeroize;

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

type Stream = StreamBE32<XChaCha20Poly1305>;

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

/// The 256-bit key one transfer is encrypted under.
///
/// It is never cloned, never printed, and wiped from memory when dropped, so
/// the only copies are the ones the transfer deliberately sends or wraps.
pub struct DataKey([u8; KEY_SIZE]);

impl DataKey {
    /// A fresh key from the operating system's random number generator.
    pub fn generate() -> Result<Self> {
        Ok(Self(random()?))
    }

    pub fn from_bytes(bytes: [u8; KEY_SIZE]) -> Self {
        Self(bytes)
    }

    /// The raw key, for sending it in a TransferStartMessage; do not keep
    /// copies of it.
    pub fn as_bytes(&self) -> &[u8; KEY_SIZE] {
        &self.0
    }
}

impl Drop for DataKey {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataKey(<redacted>)")
    }
}

/// A reusable buffer for one sealed or opened segment.
///
/// Its first byte sits on an [`IO_ALIGN`] boundary, so a full plaintext
/// segment opened in it can go to disk with direct I/O (see
/// [`SegmentWriter`]), and its capacity is fixed, so a frame from the
/// network can never make it grow. The transfer code keeps a few of these
/// per transfer and passes them between the network and a worker thread
/// instead of allocating a MiB per segment.
pub struct SegmentBuf {
    raw: Vec<u8>,
    start: usize,
    len: usize,
    cap: usize,
}

impl std::fmt::Debug for SegmentBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SegmentBuf")
            .field("len", &self.len)
            .field("cap", &self.cap)
            .finish_non_exhaustive()
    }
}

impl Default for SegmentBuf {
    fn default() -> Self {
        Self::new()
    }
}

impl SegmentBuf {
    /// Room for one sealed segment of [`SEGMENT_SIZE`].
    pub fn new() -> Self {
        Self::with_capacity(SEGMENT_SIZE + TAG_SIZE)
    }

    pub fn with_capacity(cap: usize) -> Self {
        let raw = vec![0u8; cap + IO_ALIGN];
        // `align_offset` may decline to compute an offset; the buffer then
        // starts unaligned, which only means direct I/O is not used for it.
        let start = match raw.as_ptr().align_offset(IO_ALIGN) {
            n if n < IO_ALIGN => n,
            _ => 0,
        };
        Self {
            raw,
            start,
            len: 0,
            cap,
        }
    }

    pub fn capacity(&self) -> usize {
        self.cap
    }

    /// Sets the length to `len` and returns those bytes to be filled (they
    /// hold whatever the buffer held before); `None` when `len` is over
    /// the capacity.
    pub fn fill(&mut self, len: usize) -> Option<&mut [u8]> {
        if len > self.cap {
            return None;
        }
        self.len = len;
        Some(&mut self.raw[self.start..self.start + len])
    }
}

impl AsRef<[u8]> for SegmentBuf {
    fn as_ref(&self) -> &[u8] {
        &self.raw[self.start..self.start + self.len]
    }
}

impl AsMut<[u8]> for SegmentBuf {
    fn as_mut(&mut self) -> &mut [u8] {
        &mut self.raw[self.start..self.start + self.len]
    }
}

impl Buffer for SegmentBuf {
    fn extend_from_slice(&mut self, other: &[u8]) -> aead_stream::aead::Result<()> {
        let end = self.len + other.len();
        if end > self.cap {
            return Err(aead_stream::aead::Error);
        }
        self.raw[self.start + self.len..self.start + end].copy_from_slice(other);
        self.len = end;
        Ok(())
    }

    fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }
}

/// Whether `data` can be written with direct I/O at an aligned offset.
fn direct_io_fits(data: &[u8]) -> bool {
    !data.is_empty()
        && data.len().is_multiple_of(IO_ALIGN)
        && data.as_ptr().align_offset(IO_ALIGN) == 0
}

/// `path` opened for writing with `O_DIRECT`, where the platform and file
/// system allow it (tmpfs, for one, does not).
///
/// Received datasets bypass the page cache: a gibibyte written through it
/// costs a copy and a page-cache allocation per byte, pushes other data out
/// of memory, and is only written out by the `fsync` at the end, while a
/// direct write goes from the segment buffer to the device as it arrives.
fn open_direct(path: &Path) -> Option<File> {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::fs::OpenOptionsExt;
        OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_DIRECT)
            .open(path)
            .ok()
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = path;
        None
    }
}

/// The fields that tie a ciphertext to one agreement and one dataset
/// version, in a fixed layout so that no two different pairs encode alike:
/// agreement id length (u64 BE), agreement id bytes, version (u64 BE).
fn transfer_binding(agreement_id: &str, dataset_version: u64) -> Vec<u8> {
    let id = agreement_id.as_bytes();
    let mut out = Vec::with_capacity(16 + id.len());
    out.extend_from_slice(&(id.len() as u64).to_be_bytes());
    out.extend_from_slice(id);
    out.extend_from_slice(&dataset_version.to_be_bytes());
    out
}

/// Seals and opens the segments of one transfer.
///
/// The STREAM nonce prefix is derived from the agreement id and the dataset
/// version rather than drawn at random: the key is fresh for each transfer,
/// so (key, prefix, index, last) never repeats, and the consumer can rebuild
/// the cipher from the key and the agreement alone. The AAD of a segment is
/// `"bayspace/v1 segment\0"`, the transfer binding (see above) and the
/// segment index (u32 BE); the index is also in the nonce, the AAD makes the
/// binding explicit.
pub struct SegmentCipher {
    stream: Stream,
    aad_prefix: Vec<u8>,
    segment_size: usize,
}

impl std::fmt::Debug for SegmentCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SegmentCipher")
            .field("segment_size", &self.segment_size)
            .finish_non_exhaustive()
    }
}

impl SegmentCipher {
    pub fn new(key: &DataKey, agreement_id: &str, dataset_version: u64) -> Self {
        Self::with_segment_size(key, agreement_id, dataset_version, SEGMENT_SIZE)
    }

    /// Smaller segments keep the tests fast; production always uses
    /// [`SEGMENT_SIZE`].
    pub(crate) fn with_segment_size(
        key: &DataKey,
        agreement_id: &str,
        dataset_version: u64,
        segment_size: usize,
    ) -> Self {
        let binding = transfer_binding(agreement_id, dataset_version);
        let derived = blake3::derive_key(NONCE_PREFIX_CONTEXT, &binding);
        let mut prefix = [0u8; NONCE_PREFIX_SIZE];
        prefix.copy_from_slice(&derived[..NONCE_PREFIX_SIZE]);
        let stream = Stream::new(key.as_bytes().into(), &prefix.into());
        let mut aad_prefix = Vec::with_capacity(SEGMENT_AAD_DOMAIN.len() + binding.len());
        aad_prefix.extend_from_slice(SEGMENT_AAD_DOMAIN);
        aad_prefix.extend_from_slice(&binding);
        Self {
            stream,
            aad_prefix,
            segment_size,
        }
    }

    pub fn segment_size(&self) -> usize {
        self.segment_size
    }

    fn aad(&self, index: u32) -> Vec<u8> {
        let mut aad = Vec::with_capacity(self.aad_prefix.len() + 4);
        aad.extend_from_slice(&self.aad_prefix);
        aad.extend_from_slice(&index.to_be_bytes());
        aad
    }

    fn check_len(&self, index: u32, len: usize, max: usize) -> Result<()> {
        if len > max {
            return Err(CryptoError::SegmentTooLong { index, len, max });
        }
        Ok(())
    }

    pub fn seal(&self, index: u32, last: bool, plaintext: &[u8]) -> Result<Vec<u8>> {
        let mut buf = Vec::with_capacity(plaintext.len() + TAG_SIZE);
        buf.extend_from_slice(plaintext);
        self.seal_in_place(index, last, &mut buf)?;
        Ok(buf)
    }

    /// Seals `buf` in place, appending the tag; give it `TAG_SIZE` spare
    /// capacity to avoid a reallocation.
    pub fn seal_in_place(&self, index: u32, last: bool, buf: &mut dyn Buffer) -> Result<()> {
        self.check_len(index, buf.len(), self.segment_size)?;
        self.stream
            .encrypt_in_place(index, last, &self.aad(index), buf)
            // The AEAD refuses only messages far beyond a segment's size.
            .map_err(|_| CryptoError::SegmentTooLong {
                index,
                len: buf.len(),
                max: self.segment_size,
            })
    }

    pub fn open(&self, index: u32, last: bool, ciphertext: &[u8]) -> Result<Vec<u8>> {
        let mut buf = ciphertext.to_vec();
        self.open_in_place(index, last, &mut buf)?;
        Ok(buf)
    }

    /// Opens `buf` in place, leaving the plaintext; on failure its content
    /// is unspecified and must be discarded.
    pub fn open_in_place(&self, index: u32, last: bool, buf: &mut dyn Buffer) -> Result<()> {
        self.check_len(index, buf.len(), self.segment_size + TAG_SIZE)?;
        self.stream
            .decrypt_in_place(index, last, &self.aad(index), buf)
            .map_err(|_| CryptoError::Segment { index })
    }
}

/// How many segments a dataset of `size` bytes has: at least one, so that
/// even an empty dataset ends with an authenticated last segment.
pub fn segment_count(size: u64) -> Result<u32> {
    count_with(size, SEGMENT_SIZE)
}

/// Byte offset and length of segment `index` in a dataset of `size` bytes.
pub fn segment_range(index: u32, size: u64) -> Result<(u64, usize)> {
    range_with(index, size, SEGMENT_SIZE)
}

fn count_with(size: u64, segment_size: usize) -> Result<u32> {
    let count = size.div_ceil(segment_size as u64).max(1);
    u32::try_from(count).map_err(|_| CryptoError::TooLarge { size })
}

fn range_with(index: u32, size: u64, segment_size: usize) -> Result<(u64, usize)> {
    let count = count_with(size, segment_size)?;
    if index >= count {
        return Err(CryptoError::IndexOutOfRange { index, count });
    }
    let offset = u64::from(index) * segment_size as u64;
    // Bounded by `segment_size`, so it fits a usize.
    let len = (size - offset).min(segment_size as u64) as usize;
    Ok((offset, len))
}

/// Derives the key that wraps data keys at rest from the node's key seed,
/// so a node needs no second secret and its storage key never leaves it.
pub fn storage_key_from_seed(seed: &[u8; 32]) -> [u8; KEY_SIZE] {
    blake3::derive_key(STORAGE_KEY_CONTEXT, seed)
}

/// A data key encrypted under a storage key, for data kept sealed at rest.
///
/// Destroying the wrapped key is crypto-shredding: the sealed data can no
/// longer be opened by anyone. The context (such as the agreement id) is
/// authenticated, so a wrapped key moved to another record does not open.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WrappedKey {
    #[serde(with = "b64")]
    nonce: [u8; WRAP_NONCE_SIZE],
    #[serde(with = "b64")]
    sealed: [u8; KEY_SIZE + TAG_SIZE],
}

fn wrap_aad(context: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(WRAP_AAD_DOMAIN.len() + context.len());
    aad.extend_from_slice(WRAP_AAD_DOMAIN);
    aad.extend_from_slice(context.as_bytes());
    aad
}

impl WrappedKey {
    pub fn wrap(key: &DataKey, storage_key: &[u8; KEY_SIZE], context: &str) -> Result<Self> {
        let nonce: [u8; WRAP_NONCE_SIZE] = random()?;
        let aead = XChaCha20Poly1305::new(storage_key.into());
        let mut buf = *key.as_bytes();
        let tag = aead.encrypt_inout_detached(
            &XNonce::from(nonce),
            &wrap_aad(context),
            (&mut buf[..]).into(),
        );
        let mut sealed = [0u8; KEY_SIZE + TAG_SIZE];
        sealed[..KEY_SIZE].copy_from_slice(&buf);
        buf.zeroize();
        // Encrypting 32 bytes cannot exceed the AEAD's limits; the error
        // is kept typed rather than assumed away.
        let tag = tag.map_err(|_| CryptoError::Wrap {
            context: context.to_owned(),
        })?;
        sealed[KEY_SIZE..].copy_from_slice(&tag);
        Ok(Self { nonce, sealed })
    }

    pub fn unwrap(&self, storage_key: &[u8; KEY_SIZE], context: &str) -> Result<DataKey> {
        let aead = XChaCha20Poly1305::new(storage_key.into());
        let mut buf = [0u8; KEY_SIZE];
        buf.copy_from_slice(&self.sealed[..KEY_SIZE]);
        let mut tag = [0u8; TAG_SIZE];
        tag.copy_from_slice(&self.sealed[KEY_SIZE..]);
        let opened = aead.decrypt_inout_detached(
            &XNonce::from(self.nonce),
            &wrap_aad(context),
            (&mut buf[..]).into(),
            &Tag::from(tag),
        );
        let key = opened.map(|()| DataKey::from_bytes(buf));
        buf.zeroize();
        key.map_err(|_| CryptoError::Unwrap {
            context: context.to_owned(),
        })
    }
}

/// One sealed segment, ready to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedSegment {
    pub index: u32,
    pub last: bool,
    pub ciphertext: Vec<u8>,
}

/// Reads a plaintext file one segment at a time and seals each, starting at
/// any segment so that a resumed transfer skips what the consumer holds.
///
/// The size is fixed when the reader opens: a file that shrinks afterwards
/// fails with a read error, and one that changes otherwise fails the
/// consumer's final hash check.
#[derive(Debug)]
pub struct SealedReader {
    file: File,
    path: PathBuf,
    cipher: SegmentCipher,
    size: u64,
    count: u32,
    next: u32,
}

impl SealedReader {
    /// `start` may equal the segment count, when the consumer already holds
    /// every segment; the reader then yields nothing.
    pub fn open(path: &Path, cipher: SegmentCipher, start: u32) -> Result<Self> {
        let mut file = File::open(path).map_err(io_err("open", path))?;
        let size = file.metadata().map_err(io_err("stat", path))?.len();
        let count = count_with(size, cipher.segment_size)?;
        if start > count {
            return Err(CryptoError::IndexOutOfRange {
                index: start,
                count,
            });
        }
        let offset = u64::from(start) * cipher.segment_size as u64;
        file.seek(SeekFrom::Start(offset))
            .map_err(io_err("seek in", path))?;
        Ok(Self {
            file,
            path: path.to_path_buf(),
            cipher,
            size,
            count,
            next: start,
        })
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn segment_count(&self) -> u32 {
        self.count
    }

    /// Reads and seals the next segment into `buf`, reusing its memory,
    /// and returns its index and whether it is the last; `None` once every
    /// segment has been read. `buf` needs room for a segment and its tag.
    pub fn next_into(&mut self, buf: &mut SegmentBuf) -> Option<Result<(u32, bool)>> {
        if self.next >= self.count {
            return None;
        }
        let item = self.read_into(buf);
        if item.is_err() {
            // A failed read leaves the position unknown; stop rather than
            // yield a segment from the wrong offset.
            self.next = self.count;
        }
        Some(item)
    }

    fn read_into(&mut self, buf: &mut SegmentBuf) -> Result<(u32, bool)> {
        let index = self.next;
        let (_, len) = range_with(index, self.size, self.cipher.segment_size)?;
        let max = buf.capacity().saturating_sub(TAG_SIZE);
        let dst = buf
            .fill(len)
            .filter(|_| len <= max)
            .ok_or(CryptoError::SegmentTooLong { index, len, max })?;
        self.file
            .read_exact(dst)
            .map_err(io_err("read", &self.path))?;
        let last = index + 1 == self.count;
        self.cipher.seal_in_place(index, last, buf)?;
        self.next += 1;
        Ok((index, last))
    }
}

/// One freshly allocated segment at a time; [`SealedReader::next_into`]
/// reuses a buffer instead.
impl Iterator for SealedReader {
    type Item = Result<SealedSegment>;

    fn next(&mut self) -> Option<Self::Item> {
        let mut buf = SegmentBuf::with_capacity(self.cipher.segment_size + TAG_SIZE);
        let item = self.next_into(&mut buf)?;
        Some(item.map(|(index, last)| SealedSegment {
            index,
            last,
            ciphertext: buf.as_ref().to_vec(),
        }))
    }
}

/// Where a [`SegmentWriter`] keeps the data until it is verified.
pub fn part_path(out: &Path) -> PathBuf {
    let mut name = out.as_os_str().to_owned();
    name.push(".part");
    PathBuf::from(name)
}

/// Writes verified segments in order to `<out>.part` and moves the file to
/// `<out>` only once the whole dataset's hash matches, so a partial or wrong
/// file never appears at `<out>`.
///
/// The segments land either as plaintext, or re-sealed under a storage
/// cipher ([`SegmentWriter::resume_sealed`]) for data a node keeps sealed at
/// rest. Either way the hash covers the plaintext, and every record but the
/// last has the same length, which is what lets a resume find its place from
/// the file length alone.
#[derive(Debug)]
pub struct SegmentWriter {
    out: PathBuf,
    part: PathBuf,
    file: File,
    /// `.part` opened again with direct I/O, for full plaintext segments in
    /// aligned buffers; `None` where the file system refuses it, for sealed
    /// records (not block-sized), and after a direct write was refused.
    direct: Option<File>,
    /// Segments written through `direct` by this writer.
    direct_writes: u32,
    /// Where a sealed record is made, reused from one segment to the next.
    scratch: Vec<u8>,
    hasher: blake3::Hasher,
    segment_size: usize,
    seal: Option<SegmentCipher>,
    next: u32,
    ended: bool,
}

impl SegmentWriter {
    /// Starts afresh, discarding any earlier `<out>.part`.
    pub fn create(out: &Path) -> Result<Self> {
        Self::create_sized(out, SEGMENT_SIZE)
    }

    /// Continues from `<out>.part`, returning the index of the first segment
    /// still needed. Bytes past the last whole segment are dropped (a segment
    /// cut short by a crash), and the kept bytes are re-hashed, so the final
    /// check covers what is on disk. Without a `.part` file it starts at 0.
    pub fn resume(out: &Path) -> Result<(Self, u32)> {
        Self::resume_sized(out, SEGMENT_SIZE)
    }

    /// Like [`resume`](Self::resume), but each segment is stored sealed
    /// under `cipher`. The kept records are opened again to re-hash them,
    /// so a record damaged at rest is dropped with everything after it and
    /// fetched again.
    ///
    /// A resumed record is re-sealed under the same key and nonce only with
    /// the plaintext the provider's signed version holds, which is the same
    /// plaintext as before; data that differs fails the final hash check.
    pub fn resume_sealed(out: &Path, cipher: SegmentCipher) -> Result<(Self, u32)> {
        Self::resume_with(out, cipher.segment_size, Some(cipher))
    }

    pub(crate) fn create_sized(out: &Path, segment_size: usize) -> Result<Self> {
        let part = part_path(out);
        let file = File::create(&part).map_err(io_err("create", &part))?;
        let mut writer = Self::from_parts(out, part, file, segment_size, None);
        writer.direct = open_direct(&writer.part);
        Ok(writer)
    }

    pub(crate) fn resume_sized(out: &Path, segment_size: usize) -> Result<(Self, u32)> {
        Self::resume_with(out, segment_size, None)
    }

    fn resume_with(
        out: &Path,
        segment_size: usize,
        seal: Option<SegmentCipher>,
    ) -> Result<(Self, u32)> {
        let part = part_path(out);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&part)
            .map_err(io_err("open", &part))?;
        let len = file.metadata().map_err(io_err("stat", &part))?.len();
        let mut writer = Self::from_parts(out, part, file, segment_size, seal);
        let record = writer.record_size() as u64;
        let whole = u32::try_from(len / record).map_err(|_| CryptoError::TooLarge { size: len })?;
        writer
            .file
            .seek(SeekFrom::Start(0))
            .map_err(io_err("seek in", &writer.part))?;
        writer.rehash(whole)?;
        let keep = u64::from(writer.next) * record;
        writer
            .file
            .set_len(keep)
            .map_err(io_err("truncate", &writer.part))?;
        if writer.seal.is_none() {
            writer.direct = open_direct(&writer.part);
        }
        let next = writer.next;
        Ok((writer, next))
    }

    /// Feeds the first `whole` records back into the hash, setting `next`
    /// to the first record to fetch again.
    fn rehash(&mut self, whole: u32) -> Result<()> {
        let Some(cipher) = &self.seal else {
            let keep = u64::from(whole) * self.segment_size as u64;
            io::copy(&mut (&self.file).take(keep), &mut self.hasher)
                .map_err(io_err("re-read", &self.part))?;
            self.next = whole;
            return Ok(());
        };
        let mut buf = vec![0u8; self.segment_size + TAG_SIZE];
        for index in 0..whole {
            buf.resize(self.segment_size + TAG_SIZE, 0);
            self.file
                .read_exact(&mut buf)
                .map_err(io_err("re-read", &self.part))?;
            let sealed = buf.clone();
            // A full record is the last one only for a dataset whose size
            // is a multiple of the segment size.
            let last = if cipher.open_in_place(index, false, &mut buf).is_ok() {
                false
            } else {
                buf = sealed;
                if cipher.open_in_place(index, true, &mut buf).is_err() {
                    return Ok(());
                }
                true
            };
            self.hasher.update(&buf);
            self.next = index + 1;
            if last {
                self.ended = true;
                return Ok(());
            }
        }
        Ok(())
    }

    fn from_parts(
        out: &Path,
        part: PathBuf,
        file: File,
        segment_size: usize,
        seal: Option<SegmentCipher>,
    ) -> Self {
        Self {
            out: out.to_path_buf(),
            part,
            file,
            direct: None,
            direct_writes: 0,
            scratch: Vec::new(),
            hasher: blake3::Hasher::new(),
            segment_size,
            seal,
            next: 0,
            ended: false,
        }
    }

    fn record_size(&self) -> usize {
        self.segment_size + if self.seal.is_some() { TAG_SIZE } else { 0 }
    }

    /// Whether full segments in aligned buffers still go to disk directly.
    pub fn direct_io(&self) -> bool {
        self.direct.is_some()
    }

    /// How many segments this writer has written with direct I/O, past the
    /// page cache; 0 where the file system refuses it.
    pub fn direct_writes(&self) -> u32 {
        self.direct_writes
    }

    /// The index the next segment must have.
    pub fn next_index(&self) -> u32 {
        self.next
    }

    pub fn part_path(&self) -> &Path {
        &self.part
    }

    /// Appends one verified plaintext segment. Every segment but the last
    /// must be full.
    pub fn write_segment(&mut self, index: u32, last: bool, plaintext: &[u8]) -> Result<()> {
        if self.ended {
            return Err(CryptoError::AfterLast { index });
        }
        if index != self.next {
            return Err(CryptoError::OutOfOrder {
                index,
                expected: self.next,
            });
        }
        let len = plaintext.len();
        if len > self.segment_size {
            return Err(CryptoError::SegmentTooLong {
                index,
                len,
                max: self.segment_size,
            });
        }
        if !last && len != self.segment_size {
            return Err(CryptoError::ShortSegment {
                index,
                len,
                expected: self.segment_size,
            });
        }
        // Every record before this one is full, so its place is fixed by
        // its index; writing at an explicit offset keeps the buffered and
        // the direct handle from each needing the other's file position.
        let offset = u64::from(index) * self.record_size() as u64;
        match &self.seal {
            None => self.write_plain(plaintext, offset),
            Some(cipher) => {
                let buf = &mut self.scratch;
                buf.clear();
                buf.extend_from_slice(plaintext);
                cipher.seal_in_place(index, last, buf)?;
                self.file.write_all_at(buf, offset)
            }
        }
        .map_err(io_err("write", &self.part))?;
        self.hasher.update(plaintext);
        self.next = self.next.wrapping_add(1);
        self.ended = last;
        Ok(())
    }

    fn write_plain(&mut self, data: &[u8], offset: u64) -> io::Result<()> {
        if direct_io_fits(data)
            && offset.is_multiple_of(IO_ALIGN as u64)
            && let Some(direct) = &self.direct
        {
            match direct.write_all_at(data, offset) {
                Ok(()) => {
                    self.direct_writes += 1;
                    return Ok(());
                }
                // The file system took the open but refuses the write (some
                // do, for some sizes): buffered writes from now on. A write
                // refused part-way is simply done again below.
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => self.direct = None,
                Err(e) => return Err(e),
            }
        }
        self.file.write_all_at(data, offset)
    }

    /// Checks the dataset hash, makes the file durable and moves it to
    /// `<out>` atomically. On a mismatch the `.part` file is removed, since
    /// resuming from it could only reproduce the same wrong result.
    pub fn finish(self, expected: &blake3::Hash) -> Result<PathBuf> {
        self.verify(expected)?.commit()
    }

    /// The first half of [`finish`](Self::finish): the hash checked and
    /// `.part` made durable, but nothing at `<out>` yet, so that the caller
    /// can record the delivery before the data is handed over.
    pub fn verify(self, expected: &blake3::Hash) -> Result<Verified> {
        let actual = self.hasher.finalize();
        if actual != *expected {
            drop(self.file);
            fs::remove_file(&self.part).map_err(io_err("remove", &self.part))?;
            return Err(CryptoError::HashMismatch {
                expected: *expected,
                actual,
                out: self.out,
            });
        }
        self.file.sync_all().map_err(io_err("sync", &self.part))?;
        Ok(Verified {
            out: self.out,
            part: self.part,
        })
    }
}

/// A `.part` file whose content verified and is on disk, waiting to be
/// moved into place.
#[derive(Debug)]
pub struct Verified {
    out: PathBuf,
    part: PathBuf,
}

impl Verified {
    pub fn out(&self) -> &Path {
        &self.out
    }

    /// Moves the file to `<out>` atomically and durably.
    pub fn commit(self) -> Result<PathBuf> {
        fs::rename(&self.part, &self.out).map_err(io_err("rename into place", &self.out))?;
        sync_parent(&self.out)?;
        Ok(self.out)
    }
}

/// Makes a rename or removal in `path`'s directory durable.
pub fn sync_parent(path: &Path) -> Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("sync directory", dir))
}

/// Decrypts a file written by a sealed [`SegmentWriter`] into `out`,
/// verifying every record and the plaintext hash, with the same guarantee
/// that nothing appears at `out` unless all of it verified.
pub fn unseal_file(
    sealed: &Path,
    cipher: &SegmentCipher,
    size: u64,
    expected: &blake3::Hash,
    out: &Path,
) -> Result<PathBuf> {
    let segment_size = cipher.segment_size;
    let count = count_with(size, segment_size)?;
    let mut file = File::open(sealed).map_err(io_err("open", sealed))?;
    let actual = file.metadata().map_err(io_err("stat", sealed))?.len();
    let expected_len = size + u64::from(count) * TAG_SIZE as u64;
    if actual != expected_len {
        return Err(CryptoError::SealedLength {
            path: sealed.to_path_buf(),
            expected: expected_len,
            actual,
        });
    }
    let mut writer = SegmentWriter::create_sized(out, segment_size)?;
    let mut buf = Vec::with_capacity(segment_size + TAG_SIZE);
    for index in 0..count {
        let (_, len) = range_with(index, size, segment_size)?;
        buf.resize(len + TAG_SIZE, 0);
        file.read_exact(&mut buf).map_err(io_err("read", sealed))?;
        let last = index + 1 == count;
        if let Err(e) = cipher
            .open_in_place(index, last, &mut buf)
            .and_then(|()| writer.write_segment(index, last, &buf))
        {
            let part = writer.part.clone();
            drop(writer);
            fs::remove_file(&part).map_err(io_err("remove", &part))?;
            return Err(e);
        }
    }
    writer.finish(expected)
}

/// Decrypts a file of sealed records (as [`SegmentWriter::resume_sealed`]
/// writes them) one segment at a time, from any segment on, so a download
/// holds one segment in memory whatever the size and a resumed download
/// skips what the client holds. Each record is authenticated as it is read;
/// a damaged one is an error naming its index.
#[derive(Debug)]
pub struct UnsealReader {
    file: File,
    path: PathBuf,
    cipher: SegmentCipher,
    size: u64,
    count: u32,
    next: u32,
}

impl UnsealReader {
    /// `size` is the plaintext size on record; the file must be exactly as
    /// long as that many bytes sealed. `start` may equal the segment count
    /// (the client holds everything); the reader then yields nothing.
    pub fn open(sealed: &Path, cipher: SegmentCipher, size: u64, start: u32) -> Result<Self> {
        let segment_size = cipher.segment_size;
        let count = count_with(size, segment_size)?;
        if start > count {
            return Err(CryptoError::IndexOutOfRange {
                index: start,
                count,
            });
        }
        let mut file = File::open(sealed).map_err(io_err("open", sealed))?;
        let actual = file.metadata().map_err(io_err("stat", sealed))?.len();
        let expected = size + u64::from(count) * TAG_SIZE as u64;
        if actual != expected {
            return Err(CryptoError::SealedLength {
                path: sealed.to_path_buf(),
                expected,
                actual,
            });
        }
        let offset = u64::from(start) * (segment_size + TAG_SIZE) as u64;
        file.seek(SeekFrom::Start(offset))
            .map_err(io_err("seek in", sealed))?;
        Ok(UnsealReader {
            file,
            path: sealed.to_path_buf(),
            cipher,
            size,
            count,
            next: start,
        })
    }

    pub fn segment_size(&self) -> usize {
        self.cipher.segment_size
    }

    /// Decrypts the next segment into `buf` (replacing its contents) and
    /// returns its index; `None` once every segment has been read.
    pub fn next_into(&mut self, buf: &mut Vec<u8>) -> Option<Result<u32>> {
        if self.next >= self.count {
            return None;
        }
        let index = self.next;
        let item = range_with(index, self.size, self.cipher.segment_size).and_then(|(_, len)| {
            buf.resize(len + TAG_SIZE, 0);
            self.file
                .read_exact(buf)
                .map_err(io_err("read", &self.path))?;
            self.cipher
                .open_in_place(index, index + 1 == self.count, buf)
        });
        // After a failure the position is unknown; stop rather than yield a
        // segment from the wrong offset.
        self.next = if item.is_ok() { index + 1 } else { self.count };
        Some(item.map(|()| index))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::io::Write;

    const SMALL: usize = 64;

    fn key() -> DataKey {
        DataKey::generate().unwrap()
    }

    fn random_bytes(len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        getrandom::fill(&mut v).unwrap();
        v
    }

    /// Seals `data` from a file and writes it back through a `SegmentWriter`,
    /// as the two ends of a transfer would.
    fn round_trip(data: &[u8], segment_size: usize) {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src.bin");
        let out = dir.path().join("out.bin");
        fs::write(&src, data).unwrap();
        let k = key();
        let sender = SegmentCipher::with_segment_size(&k, "agr-1", 3, segment_size);
        let receiver = SegmentCipher::with_segment_size(&k, "agr-1", 3, segment_size);
        let reader = SealedReader::open(&src, sender, 0).unwrap();
        let count = reader.segment_count();
        assert_eq!(count, count_with(data.len() as u64, segment_size).unwrap());
        let mut writer = SegmentWriter::create_sized(&out, segment_size).unwrap();
        let mut seen = 0;
        for seg in reader {
            let seg = seg.unwrap();
            assert!(seg.ciphertext.len() <= segment_size + TAG_SIZE);
            assert_eq!(seg.last, seg.index + 1 == count);
            let plain = receiver.open(seg.index, seg.last, &seg.ciphertext).unwrap();
            writer.write_segment(seg.index, seg.last, &plain).unwrap();
            seen += 1;
        }
        assert_eq!(seen, count);
        assert!(!out.exists(), "nothing at <out> before finish");
        let done = writer.finish(&blake3::hash(data)).unwrap();
        assert_eq!(done, out);
        assert_eq!(fs::read(&out).unwrap(), data);
        assert!(!part_path(&out).exists());
    }

    #[test]
    fn round_trip_sizes_small_segments() {
        let s = SMALL;
        for size in [0, 1, s - 1, s, s + 1, 3 * s + 5] {
            round_trip(&random_bytes(size), s);
        }
    }

    #[test]
    fn round_trip_sizes_real_segment_size() {
        let s = SEGMENT_SIZE;
        for size in [0, 1, s - 1, s, s + 1, 3 * s + 5] {
            round_trip(&random_bytes(size), s);
        }
    }

    #[test]
    fn segment_buffers_are_aligned_and_never_grow() {
        let mut buf = SegmentBuf::new();
        assert_eq!(buf.capacity(), SEGMENT_SIZE + TAG_SIZE);
        assert!(buf.fill(SEGMENT_SIZE + TAG_SIZE + 1).is_none());
        let full = buf.fill(SEGMENT_SIZE).unwrap();
        assert_eq!(full.len(), SEGMENT_SIZE);
        assert!(direct_io_fits(buf.as_ref()), "a full segment is aligned");
        assert!(!direct_io_fits(&buf.as_ref()[1..]));
        assert!(!direct_io_fits(&buf.as_ref()[..SEGMENT_SIZE - 1]));
        // The AEAD appends its tag within the capacity, and no further.
        buf.extend_from_slice(&[0; TAG_SIZE]).unwrap();
        assert!(buf.extend_from_slice(&[0]).is_err());
        assert_eq!(buf.as_ref().len(), SEGMENT_SIZE + TAG_SIZE);
        buf.truncate(3);
        assert_eq!(buf.as_ref().len(), 3);

        // Sealing into a buffer too small for the tag fails cleanly.
        let k = key();
        let c = SegmentCipher::with_segment_size(&k, "agr-1", 1, SMALL);
        let mut tight = SegmentBuf::with_capacity(SMALL);
        tight.fill(SMALL).unwrap();
        assert!(c.seal_in_place(0, true, &mut tight).is_err());
    }

    /// Full-size segments through reused buffers, as a release moves them:
    /// the full ones go to disk directly where the file system allows it,
    /// the short last one through the page cache, and a resume in between
    /// continues the same file.
    fn direct_round_trip(dir: &Path) -> bool {
        // Whether this file system takes O_DIRECT at all, asked apart from
        // the writer.
        let probe = dir.join("probe");
        fs::write(&probe, b"").unwrap();
        let supported = open_direct(&probe).is_some();
        let data = random_bytes(3 * SEGMENT_SIZE + 4321);
        let (src, out) = (dir.join("src.bin"), dir.join("out.bin"));
        fs::write(&src, &data).unwrap();
        let k = key();
        let receiver = SegmentCipher::new(&k, "agr-1", 3);
        let mut reader = SealedReader::open(&src, SegmentCipher::new(&k, "agr-1", 3), 0).unwrap();
        let mut buf = SegmentBuf::new();
        let mut writer = SegmentWriter::create(&out).unwrap();
        let direct = writer.direct_io();
        assert_eq!(direct, supported, "{}", dir.display());
        for _ in 0..2 {
            let (index, last) = reader.next_into(&mut buf).unwrap().unwrap();
            receiver.open_in_place(index, last, &mut buf).unwrap();
            writer.write_segment(index, last, buf.as_ref()).unwrap();
        }
        assert_eq!(
            writer.direct_io(),
            direct,
            "aligned writes were not refused"
        );
        // Both full segments went past the page cache, or, without direct
        // I/O here, none did and the writer says so.
        assert_eq!(writer.direct_writes(), if direct { 2 } else { 0 });
        drop(writer);

        let (mut writer, next) = SegmentWriter::resume(&out).unwrap();
        assert_eq!(next, 2);
        let mut reader =
            SealedReader::open(&src, SegmentCipher::new(&k, "agr-1", 3), next).unwrap();
        while let Some(item) = reader.next_into(&mut buf) {
            let (index, last) = item.unwrap();
            receiver.open_in_place(index, last, &mut buf).unwrap();
            writer.write_segment(index, last, buf.as_ref()).unwrap();
        }
        assert_eq!(writer.direct_io(), direct);
        // The third segment is full and goes directly; the short last one
        // is buffered.
        assert_eq!(writer.direct_writes(), if direct { 1 } else { 0 });
        writer.finish(&blake3::hash(&data)).unwrap();
        assert_eq!(fs::read(&out).unwrap(), data);
        if !direct {
            println!(
                "{}: no direct I/O on this file system; buffered writes checked",
                dir.display()
            );
        }
        direct
    }

    #[test]
    fn full_segments_go_to_disk_directly_and_resume() {
        // The system's temporary directory, and the build's own directory,
        // on the disk the sources are on whatever /tmp is.
        let mut direct = direct_round_trip(tempfile::tempdir().unwrap().path());
        let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target");
        if target.is_dir() {
            direct |= direct_round_trip(tempfile::tempdir_in(&target).unwrap().path());
        }
        // tmpfs refuses O_DIRECT on older kernels: the buffered path then.
        if Path::new("/dev/shm").is_dir() {
            direct |= direct_round_trip(tempfile::tempdir_in("/dev/shm").unwrap().path());
        }
        if cfg!(target_os = "linux") && !direct {
            let reason = "no directory here takes direct I/O; only the buffered path was checked";
            assert!(
                !std::env::var("BAYSPACE_REQUIRE_ALL").is_ok_and(|v| v == "1"),
                "BAYSPACE_REQUIRE_ALL=1, but {reason}"
            );
            println!("skipped: {reason}");
        }
    }

    /// Writes `data` through a sealed writer, as a node keeping received
    /// data sealed does, stopping after `stop_after` segments if given.
    fn write_sealed(
        data: &[u8],
        k: &DataKey,
        out: &Path,
        stop_after: Option<u32>,
    ) -> Option<PathBuf> {
        let cipher = SegmentCipher::with_segment_size(k, "agr-1", 3, SMALL);
        let (mut w, next) = SegmentWriter::resume_sealed(out, cipher).unwrap();
        let count = count_with(data.len() as u64, SMALL).unwrap();
        for i in next..count {
            if stop_after == Some(i) {
                return None;
            }
            let (off, len) = range_with(i, data.len() as u64, SMALL).unwrap();
            let off = off as usize;
            w.write_segment(i, i + 1 == count, &data[off..off + len])
                .unwrap();
        }
        Some(w.finish(&blake3::hash(data)).unwrap())
    }

    fn unseal(
        data_len: usize,
        k: &DataKey,
        sealed: &Path,
        hash: &blake3::Hash,
        out: &Path,
    ) -> Result<PathBuf> {
        let cipher = SegmentCipher::with_segment_size(k, "agr-1", 3, SMALL);
        unseal_file(sealed, &cipher, data_len as u64, hash, out)
    }

    #[test]
    fn sealed_storage_round_trips_every_size_and_holds_no_plaintext() {
        let dir = tempfile::tempdir().unwrap();
        for size in [0, 1, SMALL - 1, SMALL, SMALL + 1, 3 * SMALL, 3 * SMALL + 5] {
            let data = random_bytes(size);
            let k = key();
            let sealed = dir.path().join(format!("{size}.sealed"));
            write_sealed(&data, &k, &sealed, None).unwrap();
            let count = count_with(size as u64, SMALL).unwrap() as usize;
            let stored = fs::read(&sealed).unwrap();
            assert_eq!(stored.len(), size + count * TAG_SIZE);
            if size >= 16 {
                assert!(!stored.windows(16).any(|w| w == &data[..16]));
            }
            let out = dir.path().join(format!("{size}.out"));
            unseal(size, &k, &sealed, &blake3::hash(&data), &out).unwrap();
            assert_eq!(fs::read(&out).unwrap(), data);
            // Another key (a shredded and re-issued one, say) opens nothing.
            let other = dir.path().join(format!("{size}.other"));
            let e = unseal(size, &key(), &sealed, &blake3::hash(&data), &other).unwrap_err();
            assert!(matches!(e, CryptoError::Segment { index: 0 }), "{e}");
            assert!(!other.exists() && !part_path(&other).exists());
        }
    }

    #[test]
    fn sealed_storage_resumes_after_a_torn_record() {
        let dir = tempfile::tempdir().unwrap();
        let data = random_bytes(5 * SMALL + 7);
        let k = key();
        let sealed = dir.path().join("d.sealed");
        assert!(write_sealed(&data, &k, &sealed, Some(3)).is_none());
        // A crash in the middle of record 3.
        let part = part_path(&sealed);
        let mut f = OpenOptions::new().append(true).open(&part).unwrap();
        f.write_all(&[7u8; 20]).unwrap();
        drop(f);
        let cipher = SegmentCipher::with_segment_size(&k, "agr-1", 3, SMALL);
        let (_, next) = SegmentWriter::resume_sealed(&sealed, cipher).unwrap();
        assert_eq!(next, 3);
        write_sealed(&data, &k, &sealed, None).unwrap();
        let out = dir.path().join("d.out");
        unseal(data.len(), &k, &sealed, &blake3::hash(&data), &out).unwrap();
        assert_eq!(fs::read(&out).unwrap(), data);
    }

    #[test]
    fn sealed_storage_resume_drops_a_record_damaged_at_rest_and_what_follows() {
        let dir = tempfile::tempdir().unwrap();
        let data = random_bytes(4 * SMALL);
        let k = key();
        let sealed = dir.path().join("d.sealed");
        assert!(write_sealed(&data, &k, &sealed, Some(3)).is_none());
        let part = part_path(&sealed);
        let mut bytes = fs::read(&part).unwrap();
        bytes[(SMALL + TAG_SIZE) + 5] ^= 1;
        fs::write(&part, &bytes).unwrap();
        let cipher = SegmentCipher::with_segment_size(&k, "agr-1", 3, SMALL);
        let (_, next) = SegmentWriter::resume_sealed(&sealed, cipher).unwrap();
        assert_eq!(next, 1, "record 1 is damaged, so it is fetched again");
        write_sealed(&data, &k, &sealed, None).unwrap();
        let out = dir.path().join("d.out");
        unseal(data.len(), &k, &sealed, &blake3::hash(&data), &out).unwrap();
        assert_eq!(fs::read(&out).unwrap(), data);
    }

    #[test]
    fn sealed_storage_resume_recognises_a_full_last_record() {
        let dir = tempfile::tempdir().unwrap();
        let data = random_bytes(2 * SMALL);
        let k = key();
        let sealed = dir.path().join("d.sealed");
        // Every record written, then a crash before the rename.
        let cipher = SegmentCipher::with_segment_size(&k, "agr-1", 3, SMALL);
        let (mut w, _) = SegmentWriter::resume_sealed(&sealed, cipher).unwrap();
        w.write_segment(0, false, &data[..SMALL]).unwrap();
        w.write_segment(1, true, &data[SMALL..]).unwrap();
        drop(w);
        let cipher = SegmentCipher::with_segment_size(&k, "agr-1", 3, SMALL);
        let (w, next) = SegmentWriter::resume_sealed(&sealed, cipher).unwrap();
        assert_eq!(next, 2);
        w.finish(&blake3::hash(&data)).unwrap();
    }

    #[test]
    fn a_flipped_bit_at_rest_in_sealed_data_names_its_segment() {
        let dir = tempfile::tempdir().unwrap();
        let data = random_bytes(3 * SMALL + 1);
        let k = key();
        let sealed = dir.path().join("d.sealed");
        write_sealed(&data, &k, &sealed, None).unwrap();
        let mut bytes = fs::read(&sealed).unwrap();
        bytes[2 * (SMALL + TAG_SIZE) + 9] ^= 0x40;
        fs::write(&sealed, &bytes).unwrap();
        let out = dir.path().join("d.out");
        let e = unseal(data.len(), &k, &sealed, &blake3::hash(&data), &out).unwrap_err();
        assert!(matches!(e, CryptoError::Segment { index: 2 }), "{e}");
        assert!(e.to_string().contains("segment 2"), "{e}");
        assert!(!out.exists() && !part_path(&out).exists());
        // Truncation is caught before any decryption.
        fs::write(&sealed, &bytes[..bytes.len() - 1]).unwrap();
        let e = unseal(data.len(), &k, &sealed, &blake3::hash(&data), &out).unwrap_err();
        assert!(matches!(e, CryptoError::SealedLength { .. }), "{e}");
    }

    fn seal_all(cipher: &SegmentCipher, data: &[u8]) -> Vec<SealedSegment> {
        let s = cipher.segment_size();
        let count = count_with(data.len() as u64, s).unwrap();
        (0..count)
            .map(|i| {
                let (off, len) = range_with(i, data.len() as u64, s).unwrap();
                let off = off as usize;
                let last = i + 1 == count;
                SealedSegment {
                    index: i,
                    last,
                    ciphertext: cipher.seal(i, last, &data[off..off + len]).unwrap(),
                }
            })
            .collect()
    }

    #[test]
    fn flipped_bit_in_any_segment_is_detected_and_named() {
        let k = key();
        let c = SegmentCipher::with_segment_size(&k, "agr-1", 1, SMALL);
        let data = random_bytes(3 * SMALL + 5);
        let segs = seal_all(&c, &data);
        assert_eq!(segs.len(), 4);
        for (n, seg) in segs.iter().enumerate() {
            // Every byte, ciphertext and tag alike, is covered.
            for pos in [0, seg.ciphertext.len() / 2, seg.ciphertext.len() - 1] {
                let mut bad = seg.ciphertext.clone();
                bad[pos] ^= 1 << (n % 8);
                let err = c.open(seg.index, seg.last, &bad).unwrap_err();
                assert!(
                    matches!(err, CryptoError::Segment { index } if index == seg.index),
                    "{err}"
                );
                assert!(
                    err.to_string()
                        .starts_with(&format!("segment {} failed authentication", seg.index))
                );
            }
            assert!(c.open(seg.index, seg.last, &seg.ciphertext).is_ok());
        }
    }

    #[test]
    fn swapped_segments_fail() {
        let k = key();
        let c = SegmentCipher::with_segment_size(&k, "agr-1", 1, SMALL);
        let segs = seal_all(&c, &random_bytes(3 * SMALL));
        let err = c.open(0, false, &segs[1].ciphertext).unwrap_err();
        assert!(matches!(err, CryptoError::Segment { index: 0 }));
        let err = c.open(1, false, &segs[0].ciphertext).unwrap_err();
        assert!(matches!(err, CryptoError::Segment { index: 1 }));
    }

    #[test]
    fn segments_from_another_agreement_or_version_fail() {
        let k = key();
        let c = SegmentCipher::with_segment_size(&k, "agr-1", 1, SMALL);
        let seg = c.seal(2, false, &random_bytes(SMALL)).unwrap();
        for other in [
            SegmentCipher::with_segment_size(&k, "agr-2", 1, SMALL),
            SegmentCipher::with_segment_size(&k, "agr-1", 2, SMALL),
            SegmentCipher::with_segment_size(&key(), "agr-1", 1, SMALL),
        ] {
            let err = other.open(2, false, &seg).unwrap_err();
            assert!(matches!(err, CryptoError::Segment { index: 2 }));
        }
        assert!(c.open(2, false, &seg).is_ok());
    }

    #[test]
    fn truncated_stream_fails() {
        let k = key();
        let c = SegmentCipher::with_segment_size(&k, "agr-1", 1, SMALL);
        let segs = seal_all(&c, &random_bytes(2 * SMALL + 1));
        // The real last segment cannot pass as an inner one ...
        let err = c.open(2, false, &segs[2].ciphertext).unwrap_err();
        assert!(matches!(err, CryptoError::Segment { index: 2 }));
        // ... and a stream cut after segment 1 cannot end there.
        let err = c.open(1, true, &segs[1].ciphertext).unwrap_err();
        assert!(matches!(err, CryptoError::Segment { index: 1 }));
        // Chopping the tag off is not a way round it either.
        let err = c.open(2, true, &segs[2].ciphertext[..10]).unwrap_err();
        assert!(matches!(err, CryptoError::Segment { index: 2 }));
    }

    #[test]
    fn oversized_segments_are_refused() {
        let c = SegmentCipher::with_segment_size(&key(), "agr-1", 1, SMALL);
        let err = c.seal(4, true, &[0; SMALL + 1]).unwrap_err();
        assert!(matches!(
            err,
            CryptoError::SegmentTooLong { index: 4, len, max: SMALL } if len == SMALL + 1
        ));
        let err = c.open(4, true, &[0; SMALL + TAG_SIZE + 1]).unwrap_err();
        assert!(matches!(err, CryptoError::SegmentTooLong { index: 4, .. }));
    }

    #[test]
    fn plan_helpers() {
        let s = SEGMENT_SIZE as u64;
        assert_eq!(segment_count(0).unwrap(), 1);
        assert_eq!(segment_count(1).unwrap(), 1);
        assert_eq!(segment_count(s).unwrap(), 1);
        assert_eq!(segment_count(s + 1).unwrap(), 2);
        assert_eq!(segment_count(u64::from(u32::MAX) * s).unwrap(), u32::MAX);
        assert!(matches!(
            segment_count(u64::from(u32::MAX) * s + 1),
            Err(CryptoError::TooLarge { .. })
        ));
        assert!(matches!(
            segment_count(u64::MAX),
            Err(CryptoError::TooLarge { size: u64::MAX })
        ));
        assert_eq!(segment_range(0, 0).unwrap(), (0, 0));
        assert_eq!(segment_range(0, 5).unwrap(), (0, 5));
        assert_eq!(segment_range(1, 3 * s + 5).unwrap(), (s, SEGMENT_SIZE));
        assert_eq!(segment_range(3, 3 * s + 5).unwrap(), (3 * s, 5));
        assert!(matches!(
            segment_range(4, 3 * s + 5),
            Err(CryptoError::IndexOutOfRange { index: 4, count: 4 })
        ));
    }

    #[test]
    fn sealed_reader_starts_at_any_segment() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src.bin");
        let data = random_bytes(3 * SMALL + 5);
        fs::write(&src, &data).unwrap();
        let k = key();
        let c = SegmentCipher::with_segment_size(&k, "agr-1", 1, SMALL);
        let all = seal_all(&c, &data);
        let reader = SealedReader::open(&src, c, 2).unwrap();
        let tail: Vec<_> = reader.map(Result::unwrap).collect();
        assert_eq!(tail, all[2..]);
        let c = SegmentCipher::with_segment_size(&k, "agr-1", 1, SMALL);
        assert_eq!(SealedReader::open(&src, c, 4).unwrap().count(), 0);
        let c = SegmentCipher::with_segment_size(&k, "agr-1", 1, SMALL);
        assert!(matches!(
            SealedReader::open(&src, c, 5),
            Err(CryptoError::IndexOutOfRange { index: 5, count: 4 })
        ));
    }

    #[test]
    fn resume_continues_at_the_right_segment() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src.bin");
        let out = dir.path().join("out.bin");
        let data = random_bytes(9 * SMALL + 7);
        fs::write(&src, &data).unwrap();

        // First attempt: five segments arrive, then the connection drops.
        let k1 = key();
        let c1 = SegmentCipher::with_segment_size(&k1, "agr-1", 1, SMALL);
        let r1 = SegmentCipher::with_segment_size(&k1, "agr-1", 1, SMALL);
        let mut writer = SegmentWriter::create_sized(&out, SMALL).unwrap();
        for seg in SealedReader::open(&src, c1, 0).unwrap().take(5) {
            let seg = seg.unwrap();
            let plain = r1.open(seg.index, seg.last, &seg.ciphertext).unwrap();
            writer.write_segment(seg.index, seg.last, &plain).unwrap();
        }
        drop(writer);
        // A crash mid-write left part of a sixth segment behind.
        let mut f = OpenOptions::new()
            .append(true)
            .open(part_path(&out))
            .unwrap();
        f.write_all(&data[5 * SMALL..5 * SMALL + 10]).unwrap();
        drop(f);
        assert!(!out.exists());

        // Second attempt under a fresh key, as the transfer code must do.
        let (mut writer, next) = SegmentWriter::resume_sized(&out, SMALL).unwrap();
        assert_eq!(next, 5);
        assert_eq!(writer.next_index(), 5);
        assert_eq!(
            fs::metadata(part_path(&out)).unwrap().len(),
            5 * SMALL as u64
        );
        let k2 = key();
        let c2 = SegmentCipher::with_segment_size(&k2, "agr-1", 1, SMALL);
        let r2 = SegmentCipher::with_segment_size(&k2, "agr-1", 1, SMALL);
        for seg in SealedReader::open(&src, c2, next).unwrap() {
            let seg = seg.unwrap();
            let plain = r2.open(seg.index, seg.last, &seg.ciphertext).unwrap();
            writer.write_segment(seg.index, seg.last, &plain).unwrap();
        }
        writer.finish(&blake3::hash(&data)).unwrap();
        assert_eq!(blake3::hash(&fs::read(&out).unwrap()), blake3::hash(&data));
    }

    #[test]
    fn resume_without_a_part_file_starts_at_zero() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out.bin");
        let (mut writer, next) = SegmentWriter::resume_sized(&out, SMALL).unwrap();
        assert_eq!(next, 0);
        writer.write_segment(0, true, b"abc").unwrap();
        writer.finish(&blake3::hash(b"abc")).unwrap();
        assert_eq!(fs::read(&out).unwrap(), b"abc");
    }

    #[test]
    fn resume_rehashes_what_is_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out.bin");
        let data = random_bytes(2 * SMALL);
        let mut writer = SegmentWriter::create_sized(&out, SMALL).unwrap();
        writer.write_segment(0, false, &data[..SMALL]).unwrap();
        drop(writer);
        // The .part file is altered at rest between attempts.
        let mut on_disk = fs::read(part_path(&out)).unwrap();
        on_disk[3] ^= 0x10;
        fs::write(part_path(&out), &on_disk).unwrap();
        let (mut writer, next) = SegmentWriter::resume_sized(&out, SMALL).unwrap();
        assert_eq!(next, 1);
        writer.write_segment(1, true, &data[SMALL..]).unwrap();
        let err = writer.finish(&blake3::hash(&data)).unwrap_err();
        assert!(matches!(err, CryptoError::HashMismatch { .. }));
        assert!(!out.exists());
    }

    #[test]
    fn finish_with_the_wrong_hash_leaves_nothing_at_out() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out.bin");
        let mut writer = SegmentWriter::create_sized(&out, SMALL).unwrap();
        writer.write_segment(0, true, b"hello").unwrap();
        let wrong = blake3::hash(b"hellO");
        let err = writer.finish(&wrong).unwrap_err();
        match &err {
            CryptoError::HashMismatch {
                expected,
                actual,
                out: o,
            } => {
                assert_eq!(*expected, wrong);
                assert_eq!(*actual, blake3::hash(b"hello"));
                assert_eq!(o, &out);
            }
            other => panic!("unexpected {other}"),
        }
        assert!(err.to_string().contains("nothing was written to"));
        assert!(!out.exists());
        assert!(!part_path(&out).exists());
    }

    #[test]
    fn writer_refuses_out_of_order_short_and_trailing_segments() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out.bin");
        let mut w = SegmentWriter::create_sized(&out, SMALL).unwrap();
        assert!(matches!(
            w.write_segment(1, false, &[0; SMALL]),
            Err(CryptoError::OutOfOrder {
                index: 1,
                expected: 0
            })
        ));
        assert!(matches!(
            w.write_segment(0, false, &[0; SMALL - 1]),
            Err(CryptoError::ShortSegment { index: 0, .. })
        ));
        assert!(matches!(
            w.write_segment(0, true, &[0; SMALL + 1]),
            Err(CryptoError::SegmentTooLong { index: 0, .. })
        ));
        w.write_segment(0, false, &[0; SMALL]).unwrap();
        w.write_segment(1, true, &[1; 3]).unwrap();
        assert!(matches!(
            w.write_segment(2, true, &[]),
            Err(CryptoError::AfterLast { index: 2 })
        ));
    }

    #[test]
    fn wrap_unwrap_round_trip() {
        let k = key();
        let storage = storage_key_from_seed(&[7; 32]);
        let wrapped = WrappedKey::wrap(&k, &storage, "agr-1").unwrap();
        let back = wrapped.unwrap(&storage, "agr-1").unwrap();
        assert_eq!(back.as_bytes(), k.as_bytes());

        // It survives storage as JSON.
        let json = serde_json::to_string(&wrapped).unwrap();
        let parsed: WrappedKey = serde_json::from_str(&json).unwrap();
        assert_eq!(parsed, wrapped);
        assert_eq!(
            parsed.unwrap(&storage, "agr-1").unwrap().as_bytes(),
            k.as_bytes()
        );
        // Two wraps of one key differ (random nonce).
        assert_ne!(WrappedKey::wrap(&k, &storage, "agr-1").unwrap(), wrapped);
    }

    #[test]
    fn unwrap_with_wrong_context_or_storage_key_fails() {
        let k = key();
        let storage = storage_key_from_seed(&[7; 32]);
        let wrapped = WrappedKey::wrap(&k, &storage, "agr-1").unwrap();
        let err = wrapped.unwrap(&storage, "agr-2").unwrap_err();
        assert!(matches!(&err, CryptoError::Unwrap { context } if context == "agr-2"));
        let other = storage_key_from_seed(&[8; 32]);
        assert!(matches!(
            wrapped.unwrap(&other, "agr-1"),
            Err(CryptoError::Unwrap { .. })
        ));
        let mut altered = wrapped.clone();
        altered.sealed[0] ^= 1;
        assert!(altered.unwrap(&storage, "agr-1").is_err());
    }

    #[test]
    fn storage_key_is_derived_not_the_seed() {
        let seed = [7; 32];
        let a = storage_key_from_seed(&seed);
        assert_ne!(a, seed);
        assert_eq!(a, storage_key_from_seed(&seed));
        assert_ne!(a, storage_key_from_seed(&[8; 32]));
    }

    #[test]
    fn data_key_debug_hides_the_key() {
        let k = DataKey::from_bytes([0xab; 32]);
        let shown = format!("{k:?} {k:#?}");
        assert!(!shown.contains("ab"), "{shown}");
        assert!(!shown.contains("171"), "{shown}");
        assert!(shown.contains("redacted"));
        let k = key();
        let hex: String = k.as_bytes().iter().map(|b| format!("{b:02x}")).collect();
        let shown = format!("{k:?}");
        assert!(!shown.contains(&hex[..8]));
        assert!(!shown.contains(&format!("{:?}", k.as_bytes())));
    }

    #[test]
    fn generated_keys_differ() {
        assert_ne!(key().as_bytes(), key().as_bytes());
    }

    #[test]
    fn ciphertext_is_deterministic_per_key_and_binding() {
        // Resume with the same key would resend identical ciphertext; a fresh
        // key per attempt changes it.
        let k = key();
        let c = SegmentCipher::with_segment_size(&k, "agr-1", 1, SMALL);
        let p = random_bytes(SMALL);
        assert_eq!(c.seal(0, false, &p).unwrap(), c.seal(0, false, &p).unwrap());
        let c2 = SegmentCipher::with_segment_size(&key(), "agr-1", 1, SMALL);
        assert_ne!(
            c.seal(0, false, &p).unwrap(),
            c2.seal(0, false, &p).unwrap()
        );
        assert_ne!(c.seal(0, false, &p).unwrap(), c.seal(1, false, &p).unwrap());
        assert_ne!(c.seal(0, false, &p).unwrap(), c.seal(0, true, &p).unwrap());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn seal_open_round_trip(
            len in 0usize..=4096,
            index in any::<u32>(),
            last in any::<bool>(),
            seed in any::<[u8; 32]>(),
            version in any::<u64>(),
        ) {
            let k = DataKey::from_bytes(seed);
            let c = SegmentCipher::with_segment_size(&k, "agr-p", version, 4096);
            let plain: Vec<u8> = (0..len).map(|i| (i as u8) ^ seed[i % 32]).collect();
            let sealed = c.seal(index, last, &plain).unwrap();
            prop_assert_eq!(sealed.len(), len + TAG_SIZE);
            prop_assert_eq!(c.open(index, last, &sealed).unwrap(), plain);
            prop_assert!(c.open(index, !last, &sealed).is_err());
            prop_assert!(c.open(index.wrapping_add(1), last, &sealed).is_err());
        }
    }
}
