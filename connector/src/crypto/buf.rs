//! The buffer one segment is sealed or opened in.

use aead_stream::aead::Buffer;

use super::{IO_ALIGN, SEGMENT_SIZE, TAG_SIZE};

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
