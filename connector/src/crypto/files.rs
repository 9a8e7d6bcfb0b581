//! The file side of a transfer: a plaintext file read as sealed segments,
//! verified segments written to `<out>.part` (with direct I/O where the
//! file system allows), and sealed files opened again.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::cipher::{count_with, range_with};
use super::{
    CryptoError, IO_ALIGN, Result, SEGMENT_SIZE, SegmentBuf, SegmentCipher, TAG_SIZE, io_err,
};

/// Whether `data` can be written with direct I/O at an aligned offset.
pub(super) fn direct_io_fits(data: &[u8]) -> bool {
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
pub(super) fn open_direct(path: &Path) -> Option<File> {
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
        let count = count_with(size, cipher.segment_size())?;
        if start > count {
            return Err(CryptoError::IndexOutOfRange {
                index: start,
                count,
            });
        }
        let offset = u64::from(start) * cipher.segment_size() as u64;
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
        let (_, len) = range_with(index, self.size, self.cipher.segment_size())?;
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
        let mut buf = SegmentBuf::with_capacity(self.cipher.segment_size() + TAG_SIZE);
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
        Self::resume_with(out, cipher.segment_size(), Some(cipher))
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
    crate::durable::sync_parent(path).map_err(io_err("sync the directory of", path))
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
    let segment_size = cipher.segment_size();
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
        let segment_size = cipher.segment_size();
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
        self.cipher.segment_size()
    }

    /// Decrypts the next segment into `buf` (replacing its contents) and
    /// returns its index; `None` once every segment has been read.
    pub fn next_into(&mut self, buf: &mut Vec<u8>) -> Option<Result<u32>> {
        if self.next >= self.count {
            return None;
        }
        let index = self.next;
        let item = range_with(index, self.size, self.cipher.segment_size()).and_then(|(_, len)| {
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
