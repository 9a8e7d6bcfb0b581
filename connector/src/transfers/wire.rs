//! The frames of one transfer on a `/bayspace/data/1` stream: a u32
//! big-endian length, then a CBOR frame. The consumer opens the stream with
//! a DSP `TransferRequestMessage`; the provider answers with a
//! `TransferStartMessage` carrying the data key (or a
//! `TransferTerminationMessage`), then the sealed segments; the consumer
//! confirms with a `TransferCompletionMessage` once the whole file has
//! verified, and the provider acknowledges when it has counted the release.

use bayspace_contracts::agreement::AgreementId;
use bayspace_contracts::descriptor::Digest;
use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use serde::{Deserialize, Serialize};

use crate::crypto::SEGMENT_SIZE;

/// The largest frame: one sealed segment and its framing.
pub const MAX_FRAME: usize = SEGMENT_SIZE + 64 * 1024;
/// Longest termination reason, in bytes.
pub const MAX_REASON: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransferRequest {
    pub agreement: AgreementId,
    /// The researcher the consumer node acts for (the credential id).
    pub researcher: String,
    /// The first segment wanted: 0, or where an earlier transfer stopped.
    pub from_segment: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransferStart {
    /// A fresh 256-bit key for this transfer only.
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
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
    Segment {
        index: u32,
        last: bool,
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
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
            Frame::Segment { .. } => "segment",
            Frame::Completion { .. } => "TransferCompletionMessage",
            Frame::Termination { .. } => "TransferTerminationMessage",
            Frame::Done => "done",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("stream: {0}")]
    Io(#[from] std::io::Error),
    #[error("frame of {0} bytes, more than the {MAX_FRAME} allowed")]
    TooLarge(usize),
    #[error("not a transfer frame: {0}")]
    Decode(String),
    #[error("cannot encode a transfer frame: {0}")]
    Encode(String),
    #[error("termination reason of {0} bytes, more than {MAX_REASON}")]
    LongReason(usize),
}

pub async fn write_frame<W: AsyncWrite + Unpin>(w: &mut W, f: &Frame) -> Result<(), FrameError> {
    write_encoded(w, &encode(f)?).await
}

/// A frame as it goes on the wire, length prefix included, so that the
/// encoding can happen away from the task that writes.
pub fn encode(f: &Frame) -> Result<Vec<u8>, FrameError> {
    let mut bytes =
        cbor4ii::serde::to_vec(vec![0u8; 4], f).map_err(|e| FrameError::Encode(e.to_string()))?;
    let body = bytes.len() - 4;
    if body > MAX_FRAME {
        return Err(FrameError::TooLarge(body));
    }
    let len = u32::try_from(body).map_err(|_| FrameError::TooLarge(body))?;
    bytes[..4].copy_from_slice(&len.to_be_bytes());
    Ok(bytes)
}

/// Writes a frame made by [`encode`].
pub async fn write_encoded<W: AsyncWrite + Unpin>(
    w: &mut W,
    bytes: &[u8],
) -> Result<(), FrameError> {
    w.write_all(bytes).await?;
    w.flush().await?;
    Ok(())
}

/// Read one frame, refusing a length over the bound before allocating.
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> Result<Frame, FrameError> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge(len));
    }
    let mut buf = vec![0u8; len];
    r.read_exact(&mut buf).await?;
    let f: Frame =
        cbor4ii::serde::from_slice(&buf).map_err(|e| FrameError::Decode(e.to_string()))?;
    if let Frame::Termination { reason, .. } = &f
        && reason.len() > MAX_REASON
    {
        return Err(FrameError::LongReason(reason.len()));
    }
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::io::Cursor;

    #[tokio::test]
    async fn frames_round_trip_and_bounds_hold() {
        let frames = vec![
            Frame::Request(TransferRequest {
                agreement: AgreementId::from_random([1; 16]),
                researcher: "r-1".into(),
                from_segment: 3,
            }),
            Frame::Segment {
                index: 3,
                last: true,
                data: vec![7; 100],
            },
            Frame::Termination {
                code: Some("revoked".into()),
                reason: "agreement revoked".into(),
            },
            Frame::Termination {
                code: None,
                reason: "the consumer gave up".into(),
            },
            Frame::Done,
        ];
        let mut buf = Vec::new();
        for f in &frames {
            write_frame(&mut buf, f).await.unwrap();
        }
        let mut r = Cursor::new(buf);
        for f in &frames {
            assert_eq!(&read_frame(&mut r).await.unwrap(), f);
        }
        let mut huge = Cursor::new(((MAX_FRAME + 1) as u32).to_be_bytes().to_vec());
        assert!(matches!(
            read_frame(&mut huge).await,
            Err(FrameError::TooLarge(_))
        ));
        let mut junk = Cursor::new([0, 0, 0, 2, 0xff, 0xff].to_vec());
        assert!(matches!(
            read_frame(&mut junk).await,
            Err(FrameError::Decode(_))
        ));
    }
}
