//! Canonical bytes and domain-separated ed25519 signatures for every signed
//! record in Bayspace.
//!
//! # Canonical encoding
//! A record is signed over its canonical bytes: the record's serde form,
//! written as JSON with
//! - object keys sorted by their UTF-8 bytes, at every depth;
//! - no insignificant whitespace;
//! - strings escaped as `serde_json` escapes them (`"`, `\`, control
//!   characters as `\uXXXX` or the short escapes; everything else verbatim);
//! - integers only: a floating-point number anywhere is refused, so the
//!   encoding never depends on float formatting.
//!
//! This is the integer-only subset of RFC 8785 (JCS), so any language with a
//! JSON library can recompute it.
//!
//! # Signing contexts
//! The signed message is `b"bayspace/v1/" || context || 0x00 || canonical`.
//! Each record type has its own context, so a signature over one kind of
//! record can never be replayed as another kind.

use std::fmt;

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::Serialize;
use serde_json::Value;

/// The kind of record a signature is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SigningContext {
    Descriptor,
    AgreementProvider,
    AgreementConsumer,
    MembershipCredential,
    ResearcherCredential,
    RevocationList,
    AuditCheckpoint,
}

impl SigningContext {
    pub fn label(self) -> &'static str {
        match self {
            SigningContext::Descriptor => "dataset-descriptor",
            SigningContext::AgreementProvider => "agreement/provider",
            SigningContext::AgreementConsumer => "agreement/consumer",
            SigningContext::MembershipCredential => "membership-credential",
            SigningContext::ResearcherCredential => "researcher-credential",
            SigningContext::RevocationList => "revocation-list",
            SigningContext::AuditCheckpoint => "audit-checkpoint",
        }
    }
}

impl fmt::Display for SigningContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CanonicalError {
    #[error("record cannot be encoded: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("record holds a floating-point number at {0}; signed records use integers only")]
    Float(String),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the {0} signature does not verify")]
    BadSignature(SigningContext),
}

/// The canonical bytes of any serialisable record.
pub fn canonical_bytes<T: Serialize + ?Sized>(record: &T) -> Result<Vec<u8>, CanonicalError> {
    let value = serde_json::to_value(record)?;
    let mut out = Vec::with_capacity(256);
    write_canonical(&value, "$", &mut out)?;
    Ok(out)
}

fn write_canonical(v: &Value, path: &str, out: &mut Vec<u8>) -> Result<(), CanonicalError> {
    match v {
        Value::Null | Value::Bool(_) | Value::String(_) => {
            serde_json::to_writer(&mut *out, v)?;
        }
        Value::Number(n) => {
            if n.is_f64() {
                return Err(CanonicalError::Float(path.to_owned()));
            }
            serde_json::to_writer(&mut *out, v)?;
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(item, &format!("{path}[{i}]"), out)?;
            }
            out.push(b']');
        }
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
            out.push(b'{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                serde_json::to_writer(&mut *out, k)?;
                out.push(b':');
                if let Some(child) = map.get(k) {
                    write_canonical(child, &format!("{path}.{k}"), out)?;
                }
            }
            out.push(b'}');
        }
    }
    Ok(())
}

fn message(ctx: SigningContext, canonical: &[u8]) -> Vec<u8> {
    let label = ctx.label().as_bytes();
    let mut m = Vec::with_capacity(12 + label.len() + 1 + canonical.len());
    m.extend_from_slice(b"bayspace/v1/");
    m.extend_from_slice(label);
    m.push(0);
    m.extend_from_slice(canonical);
    m
}

/// Sign canonical bytes under a context.
pub fn sign(key: &SigningKey, ctx: SigningContext, canonical: &[u8]) -> Signature {
    key.sign(&message(ctx, canonical))
}

/// Verify a signature made by [`sign`] under the same context.
pub fn verify(
    key: &VerifyingKey,
    ctx: SigningContext,
    canonical: &[u8],
    signature: &Signature,
) -> Result<(), SignatureError> {
    key.verify(&message(ctx, canonical), signature)
        .map_err(|_| SignatureError::BadSignature(ctx))
}

/// Serde helpers for byte fields as standard base64 (with padding).
pub mod b64 {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn encode(bytes: &[u8]) -> String {
        STANDARD.encode(bytes)
    }

    pub fn serialize<S: Serializer, B: AsRef<[u8]>>(bytes: B, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(bytes.as_ref()))
    }

    pub fn deserialize<'de, D: Deserializer<'de>, const N: usize>(
        d: D,
    ) -> Result<[u8; N], D::Error> {
        let s = String::deserialize(d)?;
        let v = STANDARD
            .decode(s.as_bytes())
            .map_err(|e| serde::de::Error::custom(format!("bad base64: {e}")))?;
        <[u8; N]>::try_from(v.as_slice()).map_err(|_| {
            serde::de::Error::custom(format!("expected {N} bytes of base64, got {}", v.len()))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn canonical_sorts_keys_at_every_depth() {
        let v = json!({"b": 1, "a": {"z": [true, null, "x\n"], "y": -3}});
        let bytes = canonical_bytes(&v).unwrap();
        assert_eq!(
            String::from_utf8(bytes).unwrap(),
            r#"{"a":{"y":-3,"z":[true,null,"x\n"]},"b":1}"#
        );
    }

    #[test]
    fn canonical_refuses_floats() {
        let e = canonical_bytes(&json!({"a": [1, 2.5]})).unwrap_err();
        assert!(e.to_string().contains("$.a[1]"), "{e}");
    }

    #[test]
    fn contexts_separate_domains() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let sig = sign(&key, SigningContext::Descriptor, b"{}");
        verify(
            &key.verifying_key(),
            SigningContext::Descriptor,
            b"{}",
            &sig,
        )
        .unwrap();
        assert_eq!(
            verify(
                &key.verifying_key(),
                SigningContext::AgreementProvider,
                b"{}",
                &sig
            ),
            Err(SignatureError::BadSignature(
                SigningContext::AgreementProvider
            ))
        );
        assert!(
            verify(
                &key.verifying_key(),
                SigningContext::Descriptor,
                b"{ }",
                &sig
            )
            .is_err()
        );
    }
}
