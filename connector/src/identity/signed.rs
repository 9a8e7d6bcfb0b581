//! The one envelope every signed identity record travels in:
//! `{"format": …, "body": {…}, "signer": "<base64 key>", "signature": "<base64>"}`.

use std::path::Path;

use bayspace_contracts::signing::{self, CanonicalError, SigningContext, b64};
use ed25519_dalek::{Signature, SigningKey, VerifyingKey};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::files::{self, FileError, Overwrite};
use super::verify::VerifyError;

/// A record body that can be signed: its file format and signing context.
pub trait RecordBody: Serialize + DeserializeOwned {
    const FORMAT: &'static str;
    const CONTEXT: SigningContext;

    /// The rules serde cannot express; checked when signing and parsing.
    fn validate(&self) -> Result<(), InvalidBody>;
}

/// A body field that breaks a rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("field `{field}`: {reason}")]
pub struct InvalidBody {
    pub field: &'static str,
    pub reason: String,
}

/// Why a record could not be signed.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error(transparent)]
    Invalid(#[from] InvalidBody),
    #[error(transparent)]
    Canonical(#[from] CanonicalError),
}

/// A body with the key that signed it and the signature. Holding one says
/// nothing about its validity: call the record's `verify`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed<B> {
    body: B,
    signer: VerifyingKey,
    signature: Signature,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Envelope<B> {
    format: String,
    body: B,
    #[serde(with = "b64")]
    signer: [u8; 32],
    #[serde(with = "b64")]
    signature: [u8; 64],
}

impl<B: RecordBody> Signed<B> {
    pub fn sign(body: B, key: &SigningKey) -> Result<Self, SignError> {
        body.validate()?;
        let canonical = signing::canonical_bytes(&body)?;
        let signature = signing::sign(key, B::CONTEXT, &canonical);
        Ok(Signed {
            body,
            signer: key.verifying_key(),
            signature,
        })
    }

    /// The body, not yet verified. For display and for routing only.
    pub fn body(&self) -> &B {
        &self.body
    }

    pub fn signer(&self) -> &VerifyingKey {
        &self.signer
    }

    /// Check the signature by the stated signer. Whether that signer is
    /// trusted is the caller's question.
    pub(crate) fn check_signature(&self) -> Result<(), VerifyError> {
        let bad = || VerifyError::BadSignature {
            context: B::CONTEXT,
        };
        // A body that cannot be encoded canonically was never signed.
        let canonical = signing::canonical_bytes(&self.body).map_err(|_| bad())?;
        signing::verify(&self.signer, B::CONTEXT, &canonical, &self.signature).map_err(|_| bad())
    }

    pub fn to_json(&self) -> String {
        let env = Envelope {
            format: B::FORMAT.to_owned(),
            body: &self.body,
            signer: self.signer.to_bytes(),
            signature: self.signature.to_bytes(),
        };
        // The body was encoded once when signed (or parsed), so encoding it
        // again cannot fail; an empty text would be refused by any reader.
        let mut text = serde_json::to_string_pretty(&env).unwrap_or_default();
        text.push('\n');
        text
    }

    /// Parse strictly; `path` labels errors.
    pub fn from_json(text: &str, path: &Path) -> Result<Self, FileError> {
        let env: Envelope<B> = files::parse_document(text, path, B::FORMAT)?;
        let malformed = |field: String, reason: String| FileError::Malformed {
            path: path.to_owned(),
            field,
            reason,
        };
        let signer = VerifyingKey::from_bytes(&env.signer)
            .map_err(|e| malformed("signer".into(), e.to_string()))?;
        env.body
            .validate()
            .map_err(|e| malformed(format!("body.{}", e.field), e.reason))?;
        Ok(Signed {
            body: env.body,
            signer,
            signature: Signature::from_bytes(&env.signature),
        })
    }

    pub fn read(path: &Path) -> Result<Self, FileError> {
        Self::from_json(&files::read_text(path)?, path)
    }

    /// Write atomically with mode 0644.
    pub fn write(&self, path: &Path, overwrite: Overwrite) -> Result<(), FileError> {
        files::write_atomic(path, self.to_json().as_bytes(), 0o644, overwrite)
    }
}
