//! The frames of one transfer on a `/bayspace/data/1` stream. The consumer
//! opens the stream with a DSP `TransferRequestMessage`; the provider
//! answers with a `TransferStartMessage` carrying the data key (or a
//! `TransferTerminationMessage`), then the sealed segments; the consumer
//! confirms with a `TransferCompletionMessage` once the whole file has
//! verified, and the provider acknowledges when it has counted the release.
//!
//! Every frame is a u32 big-endian length of what follows, a kind byte,
//! and a body. A message ([`KIND_MESSAGE`]) is a CBOR [`Frame`] of at most
//! [`MAX_MESSAGE`] bytes. A segment ([`KIND_SEGMENT`]) is the u32
//! big-endian segment index, a last-segment byte (0 or 1) and the sealed
//! bytes, which are read straight into a [`SegmentBuf`] of bounded size:
//! no frame ever makes a reader allocate more than it chose to.

use bayspace_contracts::agreement::AgreementId;
use bayspace_contracts::descriptor::Digest;
use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use serde::{Deserialize, Serialize};

use zeroize::Zeroizing;

use crate::crypto::SegmentBuf;
pub use crate::negotiator::ReleaseId;

/// The key as a CBOR byte string, decoded straight into wiped memory.
mod key_bytes {
    use serde::{Deserialize, Deserializer, Serializer};
    use zeroize::Zeroizing;

    pub fn serialize<S: Serializer>(key: &Zeroizing<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        serde_bytes::serialize(key.as_slice(), s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Zeroizing<Vec<u8>>, D::Error> {
        serde_bytes::ByteBuf::deserialize(d).map(|b| Zeroizing::new(b.into_vec()))
    }
}

/// The kind byte of a CBOR message frame.
pub const KIND_MESSAGE: u8 = 0;
/// The kind byte of a sealed segment frame.
pub const KIND_SEGMENT: u8 = 1;
/// The largest message body, in bytes.
pub const MAX_MESSAGE: usize = 64 * 1024;
/// Longest termination reason, in bytes.
pub const MAX_REASON: usize = 4096;
/// Longest termination code, in bytes (the provider's codes are short
/// kebab-case words).
pub const MAX_CODE: usize = 64;
/// Longest researcher id in a request, in bytes: a credential id is far
/// shorter, and whatever a peer sends here may end up in the audit log.
pub const MAX_RESEARCHER: usize = 256;
/// The u32 length and the kind byte that start every frame.
const FRAME_HEAD: usize = 5;
/// Index and last-segment flag before a segment's sealed bytes.
const SEGMENT_HEADER: usize = 5;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransferRequest {
    pub agreement: AgreementId,
    /// The researcher the consumer node acts for (the credential id).
    pub researcher: String,
    /// The first segment wanted: 0, or where an earlier transfer stopped.
    pub from_segment: u32,
    /// The consumer's id of the release (the use) this request belongs
    /// to, kept durably by the consumer before its first request; absent
    /// from consumers older than it (docs/TRANSFER.md, "Counting a use").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<ReleaseId>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransferStart {
    /// A fresh 256-bit key for this transfer only, wiped when dropped.
    #[serde(with = "key_bytes")]
    pub key: Zeroizing<Vec<u8>>,
    pub dataset_version: u64,
    pub size: u64,
    pub segments: u32,
    pub content_hash: Digest,
    pub from_segment: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Frame {
    Request(TransferRequest),
    Start(TransferStart),
    Completion {
        hash: Digest,
    },
    /// As DSP's `TransferTerminationMessage`: a machine-readable code
    /// (the provider's refusal codes, e.g. `expired`) and the reason.
    Termination {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        code: Option<String>,
        reason: String,
    },
    /// The provider has counted the release.
    Done,
}

impl Frame {
    pub fn terminate(code: &str, reason: impl Into<String>) -> Frame {
        Frame::Termination {
            code: Some(code.to_owned()),
            reason: reason.into(),
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Frame::Request(_) => "TransferRequestMessage",
            Frame::Start(_) => "TransferStartMessage",
            Frame::Completion { .. } => "TransferCompletionMessage",
            Frame::Termination { .. } => "TransferTerminationMessage",
            Frame::Done => "done",
        }
    }
}

/// What a reader got: a message, or a segment whose sealed bytes are now
/// in the buffer it passed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    Message(Frame),
    Segment { index: u32, last: bool },
}

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("stream: {0}")]
    Io(#[from] std::io::Error),
    #[error("message frame of {0} bytes, more than the {MAX_MESSAGE} allowed")]
    TooLarge(usize),
    #[error("segment {index} frame holds {len} sealed bytes, more than the {max} allowed")]
    SegmentTooLarge { index: u32, len: usize, max: usize },
    #[error("frame of kind {0}; only messages (0) and segments (1) exist")]
    UnknownKind(u8),
    #[error("a frame of {0} bytes is too short for its kind")]
    Short(usize),
    #[error("segment {index} has last-segment byte {flag}; only 0 and 1 are allowed")]
    BadLastFlag { index: u32, flag: u8 },
    #[error("a segment arrived where a message was expected")]
    UnexpectedSegment,
    #[error("not a transfer frame: {0}")]
    Decode(String),
    #[error("cannot encode a transfer frame: {0}")]
    Encode(String),
    #[error("termination reason of {0} bytes, more than {MAX_REASON}")]
    LongReason(usize),
    #[error("{field} of {len} bytes, more than the {max} allowed")]
    TooLong {
        field: &'static str,
        len: usize,
        max: usize,
    },
    #[error("no {what} within {} s", after.as_secs())]
    TimedOut {
        what: &'static str,
        after: std::time::Duration,
    },
}

pub async fn write_frame<W: AsyncWrite + Unpin>(w: &mut W, f: &Frame) -> Result<(), FrameError> {
    // Wiped when dropped: a start message carries the data key.
    let mut bytes = Zeroizing::new(
        cbor4ii::serde::to_vec(vec![0u8; FRAME_HEAD], f)
            .map_err(|e| FrameError::Encode(e.to_string()))?,
    );
    let body = bytes.len() - FRAME_HEAD;
    if body > MAX_MESSAGE {
        return Err(FrameError::TooLarge(body));
    }
    let len = u32::try_from(body + 1).map_err(|_| FrameError::TooLarge(body))?;
    bytes[..4].copy_from_slice(&len.to_be_bytes());
    bytes[4] = KIND_MESSAGE;
    w.write_all(&bytes).await?;
    w.flush().await?;
    Ok(())
}

/// Writes one sealed segment. The header and the sealed bytes go out as
/// two writes rather than being copied into one buffer first.
pub async fn write_segment<W: AsyncWrite + Unpin>(
    w: &mut W,
    index: u32,
    last: bool,
    sealed: &[u8],
) -> Result<(), FrameError> {
    let len = u32::try_from(1 + SEGMENT_HEADER + sealed.len()).map_err(|_| {
        FrameError::SegmentTooLarge {
            index,
            len: sealed.len(),
            max: u32::MAX as usize,
        }
    })?;
    let mut header = [0u8; FRAME_HEAD + SEGMENT_HEADER];
    header[..4].copy_from_slice(&len.to_be_bytes());
    header[4] = KIND_SEGMENT;
    header[5..9].copy_from_slice(&index.to_be_bytes());
    header[9] = u8::from(last);
    w.write_all(&header).await?;
    w.write_all(sealed).await?;
    w.flush().await?;
    Ok(())
}

/// Refuses peer-supplied text longer than anything honest, before any of
/// it reaches a log.
fn check_lengths(f: &Frame) -> Result<(), FrameError> {
    let too_long = |field, len, max| Err(FrameError::TooLong { field, len, max });
    match f {
        Frame::Termination { reason, .. } if reason.len() > MAX_REASON => {
            Err(FrameError::LongReason(reason.len()))
        }
        Frame::Termination {
            code: Some(code), ..
        } if code.len() > MAX_CODE => too_long("termination code", code.len(), MAX_CODE),
        Frame::Request(r) if r.researcher.len() > MAX_RESEARCHER => {
            too_long("researcher id", r.researcher.len(), MAX_RESEARCHER)
        }
        _ => Ok(()),
    }
}

/// Reads one message; a segment here is an error.
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> Result<Frame, FrameError> {
    match read_incoming(r, None).await? {
        Incoming::Message(f) => Ok(f),
        Incoming::Segment { .. } => Err(FrameError::UnexpectedSegment),
    }
}

/// Reads one frame. A segment's sealed bytes land in `segment`, and one
/// that would not fit is refused before anything is read into it; with no
/// buffer, a segment is refused as unexpected.
pub async fn read_incoming<R: AsyncRead + Unpin>(
    r: &mut R,
    segment: Option<&mut SegmentBuf>,
) -> Result<Incoming, FrameError> {
    let mut head = [0u8; FRAME_HEAD];
    r.read_exact(&mut head).await?;
    let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
    let body = len.checked_sub(1).ok_or(FrameError::Short(len))?;
    match head[4] {
        KIND_MESSAGE => {
            if body > MAX_MESSAGE {
                return Err(FrameError::TooLarge(body));
            }
            // Wiped when dropped: a start message carries the data key.
            let mut buf = Zeroizing::new(vec![0u8; body]);
            r.read_exact(&mut buf).await?;
            let f: Frame =
                cbor4ii::serde::from_slice(&buf).map_err(|e| FrameError::Decode(e.to_string()))?;
            check_lengths(&f)?;
            Ok(Incoming::Message(f))
        }
        KIND_SEGMENT => {
            let Some(buf) = segment else {
                return Err(FrameError::UnexpectedSegment);
            };
            let sealed = body
                .checked_sub(SEGMENT_HEADER)
                .ok_or(FrameError::Short(len))?;
            let mut sh = [0u8; SEGMENT_HEADER];
            r.read_exact(&mut sh).await?;
            let index = u32::from_be_bytes([sh[0], sh[1], sh[2], sh[3]]);
            let last = match sh[4] {
                0 => false,
                1 => true,
                flag => return Err(FrameError::BadLastFlag { index, flag }),
            };
            let max = buf.capacity();
            let dst = buf.fill(sealed).ok_or(FrameError::SegmentTooLarge {
                index,
                len: sealed,
                max,
            })?;
            r.read_exact(dst).await?;
            Ok(Incoming::Segment { index, last })
        }
        kind => Err(FrameError::UnknownKind(kind)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::io::Cursor;

    fn messages() -> Vec<Frame> {
        vec![
            Frame::Request(TransferRequest {
                agreement: AgreementId::from_random([1; 16]),
                researcher: "r-1".into(),
                from_segment: 3,
                release: None,
            }),
            Frame::Request(TransferRequest {
                agreement: AgreementId::from_random([1; 16]),
                researcher: "r-1".into(),
                from_segment: 0,
                release: Some(ReleaseId([0x5c; 16])),
            }),
            Frame::Termination {
                code: Some("revoked".into()),
                reason: "agreement revoked".into(),
            },
            Frame::Termination {
                code: None,
                reason: "the consumer gave up".into(),
            },
            Frame::Start(TransferStart {
                key: Zeroizing::new(vec![0xa5; 32]),
                dataset_version: 2,
                size: 13,
                segments: 1,
                content_hash: Digest([4; 32]),
                from_segment: 0,
            }),
            Frame::Done,
        ]
    }

    #[tokio::test]
    async fn peer_supplied_text_past_its_bound_is_refused_before_it_is_used() {
        let long = |n| "x".repeat(n);
        let cases = [
            (
                Frame::Request(TransferRequest {
                    agreement: AgreementId::from_random([1; 16]),
                    researcher: long(MAX_RESEARCHER + 1),
                    from_segment: 0,
                    release: None,
                }),
                "researcher id of 257 bytes",
            ),
            (
                Frame::Termination {
                    code: Some(long(MAX_CODE + 1)),
                    reason: "r".into(),
                },
                "termination code of 65 bytes",
            ),
        ];
        for (frame, needle) in cases {
            let mut wire = Vec::new();
            write_frame(&mut wire, &frame).await.unwrap();
            let e = read_frame(&mut Cursor::new(wire)).await.unwrap_err();
            assert!(e.to_string().contains(needle), "{e}");
        }
    }

    /// A request as a consumer older than release ids encodes it, and one
    /// whose release id is not 16 bytes.
    #[tokio::test]
    async fn a_request_without_a_release_id_is_read_and_a_malformed_one_refused() {
        #[derive(Serialize)]
        #[serde(rename_all = "kebab-case")]
        enum Old {
            Request {
                agreement: AgreementId,
                researcher: String,
                from_segment: u32,
            },
        }
        #[derive(Serialize)]
        #[serde(rename_all = "kebab-case")]
        enum Odd {
            Request {
                agreement: AgreementId,
                researcher: String,
                from_segment: u32,
                #[serde(with = "serde_bytes")]
                release: Vec<u8>,
            },
        }
        let encode = |v: Vec<u8>| {
            let mut wire = (u32::try_from(v.len()).unwrap() + 1).to_be_bytes().to_vec();
            wire.push(KIND_MESSAGE);
            wire.extend(v);
            wire
        };
        let id = AgreementId::from_random([1; 16]);
        let old = cbor4ii::serde::to_vec(
            Vec::new(),
            &Old::Request {
                agreement: id.clone(),
                researcher: "r-1".into(),
                from_segment: 0,
            },
        )
        .unwrap();
        let Frame::Request(got) = read_frame(&mut Cursor::new(encode(old))).await.unwrap() else {
            panic!("not a request");
        };
        assert_eq!(got.release, None);
        for len in [0, 15, 17, 32] {
            let odd = cbor4ii::serde::to_vec(
                Vec::new(),
                &Odd::Request {
                    agreement: id.clone(),
                    researcher: "r-1".into(),
                    from_segment: 0,
                    release: vec![7; len],
                },
            )
            .unwrap();
            let e = read_frame(&mut Cursor::new(encode(odd))).await.unwrap_err();
            assert!(e.to_string().contains("16 bytes"), "{len}: {e}");
        }
    }

    #[tokio::test]
    async fn messages_and_segments_round_trip_in_order() {
        let mut wire = Vec::new();
        for f in &messages() {
            write_frame(&mut wire, f).await.unwrap();
        }
        write_segment(&mut wire, 7, false, &[9; 100]).await.unwrap();
        write_segment(&mut wire, 8, true, &[]).await.unwrap();
        write_frame(&mut wire, &Frame::Done).await.unwrap();

        let mut r = Cursor::new(wire);
        for f in &messages() {
            assert_eq!(&read_frame(&mut r).await.unwrap(), f);
        }
        let mut buf = SegmentBuf::with_capacity(128);
        let got = read_incoming(&mut r, Some(&mut buf)).await.unwrap();
        assert_eq!(
            got,
            Incoming::Segment {
                index: 7,
                last: false
            }
        );
        assert_eq!(buf.as_ref(), &[9; 100][..]);
        let got = read_incoming(&mut r, Some(&mut buf)).await.unwrap();
        assert_eq!(
            got,
            Incoming::Segment {
                index: 8,
                last: true
            }
        );
        assert!(buf.as_ref().is_empty());
        assert_eq!(
            read_incoming(&mut r, Some(&mut buf)).await.unwrap(),
            Incoming::Message(Frame::Done)
        );
    }

    /// Reads sealed segment frames as the consumer does (in order, opened
    /// as they come) and returns the plaintext, or the first error.
    async fn receive(
        wire: Vec<u8>,
        cipher: &crate::crypto::SegmentCipher,
        count: u32,
    ) -> Result<Vec<u8>, String> {
        let mut r = Cursor::new(wire);
        let mut buf = SegmentBuf::with_capacity(64 + crate::crypto::TAG_SIZE);
        let mut out = Vec::new();
        for expected in 0..count {
            match read_incoming(&mut r, Some(&mut buf)).await {
                Ok(Incoming::Segment { index, last }) => {
                    if index != expected {
                        return Err(format!("segment {index} where {expected} was due"));
                    }
                    cipher
                        .open_in_place(index, last, &mut buf)
                        .map_err(|e| e.to_string())?;
                    out.extend_from_slice(buf.as_ref());
                    if last != (index + 1 == count) {
                        return Err(format!("segment {index} has the wrong last flag"));
                    }
                }
                Ok(other) => return Err(format!("{other:?}")),
                Err(e) => return Err(e.to_string()),
            }
        }
        Ok(out)
    }

    #[tokio::test]
    async fn every_single_bit_flipped_on_the_wire_is_detected() {
        use crate::crypto::{DataKey, SegmentCipher};
        let key = DataKey::generate().unwrap();
        let cipher = SegmentCipher::with_segment_size(&key, "agr-1", 2, 64);
        let data: Vec<u8> = (0..150u8).collect();
        let chunks: Vec<&[u8]> = data.chunks(64).collect();
        let count = chunks.len() as u32;
        let mut wire = Vec::new();
        // Where each segment's sealed bytes start and end on the wire.
        let mut sealed_at = Vec::new();
        for (i, chunk) in chunks.iter().enumerate() {
            let i = i as u32;
            let sealed = cipher.seal(i, i + 1 == count, chunk).unwrap();
            let start = wire.len() + 10;
            write_segment(&mut wire, i, i + 1 == count, &sealed)
                .await
                .unwrap();
            sealed_at.push((start, wire.len()));
        }
        assert_eq!(receive(wire.clone(), &cipher, count).await.unwrap(), data);

        for bit in 0..wire.len() * 8 {
            let mut bad = wire.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            let err = receive(bad, &cipher, count)
                .await
                .expect_err("a flipped bit went unnoticed");
            // A flip inside a segment's sealed bytes fails that segment,
            // and the error names it.
            if let Some(i) = sealed_at
                .iter()
                .position(|&(a, b)| (a..b).contains(&(bit / 8)))
            {
                assert!(
                    err.contains(&format!("segment {i} failed authentication")),
                    "bit {bit}: {err}"
                );
            }
        }
    }

    fn raw(len: u32, kind: u8, body: &[u8]) -> Cursor<Vec<u8>> {
        let mut v = len.to_be_bytes().to_vec();
        v.push(kind);
        v.extend_from_slice(body);
        Cursor::new(v)
    }

    #[tokio::test]
    async fn bounds_and_malformed_frames_are_refused_before_reading_on() {
        // A message length over the bound is refused from the header alone.
        let mut r = raw((MAX_MESSAGE + 2) as u32, KIND_MESSAGE, &[]);
        assert!(matches!(
            read_frame(&mut r).await,
            Err(FrameError::TooLarge(_))
        ));
        // A segment bigger than the reader's buffer never reaches it.
        let mut wire = Vec::new();
        write_segment(&mut wire, 2, false, &[1; 65]).await.unwrap();
        let mut buf = SegmentBuf::with_capacity(64);
        assert!(matches!(
            read_incoming(&mut Cursor::new(wire), Some(&mut buf)).await,
            Err(FrameError::SegmentTooLarge {
                index: 2,
                len: 65,
                max: 64
            })
        ));
        // A segment where only messages are expected.
        let mut wire = Vec::new();
        write_segment(&mut wire, 0, true, &[1]).await.unwrap();
        assert!(matches!(
            read_frame(&mut Cursor::new(wire)).await,
            Err(FrameError::UnexpectedSegment)
        ));
        // An unknown kind, a zero length, a short segment header, a bad flag.
        assert!(matches!(
            read_frame(&mut raw(1, 9, &[])).await,
            Err(FrameError::UnknownKind(9))
        ));
        assert!(matches!(
            read_frame(&mut raw(0, 0, &[])).await,
            Err(FrameError::Short(0))
        ));
        assert!(matches!(
            read_incoming(&mut raw(3, KIND_SEGMENT, &[0, 0]), Some(&mut buf)).await,
            Err(FrameError::Short(3))
        ));
        assert!(matches!(
            read_incoming(&mut raw(6, KIND_SEGMENT, &[0, 0, 0, 4, 2]), Some(&mut buf)).await,
            Err(FrameError::BadLastFlag { index: 4, flag: 2 })
        ));
        // Junk CBOR, and a termination reason over its bound.
        assert!(matches!(
            read_frame(&mut raw(3, KIND_MESSAGE, &[0xff, 0xff])).await,
            Err(FrameError::Decode(_))
        ));
        let mut wire = Vec::new();
        write_frame(
            &mut wire,
            &Frame::Termination {
                code: None,
                reason: "x".repeat(MAX_REASON + 1),
            },
        )
        .await
        .unwrap();
        assert!(matches!(
            read_frame(&mut Cursor::new(wire)).await,
            Err(FrameError::LongReason(_))
        ));
        // A stream that ends inside a frame.
        assert!(matches!(
            read_frame(&mut raw(10, KIND_MESSAGE, &[0xa0])).await,
            Err(FrameError::Io(_))
        ));
    }
}
