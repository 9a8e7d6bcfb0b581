//! Sealing and opening the segments of one transfer, and the arithmetic of
//! cutting a dataset into segments.

use aead_stream::aead::Buffer;
use aead_stream::{NewStream, StreamBE32, StreamPrimitive};
use chacha20poly1305::XChaCha20Poly1305;

use super::{
    CryptoError, DataKey, NONCE_PREFIX_CONTEXT, NONCE_PREFIX_SIZE, Result, SEGMENT_AAD_DOMAIN,
    SEGMENT_SIZE, TAG_SIZE,
};

type Stream = StreamBE32<XChaCha20Poly1305>;

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

pub(super) fn count_with(size: u64, segment_size: usize) -> Result<u32> {
    let count = size.div_ceil(segment_size as u64).max(1);
    u32::try_from(count).map_err(|_| CryptoError::TooLarge { size })
}

pub(super) fn range_with(index: u32, size: u64, segment_size: usize) -> Result<(u64, usize)> {
    let count = count_with(size, segment_size)?;
    if index >= count {
        return Err(CryptoError::IndexOutOfRange { index, count });
    }
    let offset = u64::from(index) * segment_size as u64;
    // Bounded by `segment_size`, so it fits a usize.
    let len = (size - offset).min(segment_size as u64) as usize;
    Ok((offset, len))
}
