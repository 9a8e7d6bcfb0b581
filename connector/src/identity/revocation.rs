//! Revocation lists: the trust anchor's signed, numbered list of the
//! membership serials it has withdrawn.
//!
//! Each list is complete (not a delta) and carries a sequence number that
//! the anchor raises by one for every new list. A node keeps the highest it
//! has seen; an older list, replayed by anyone, never replaces it.

use std::collections::BTreeSet;

use bayspace_contracts::signing::SigningContext;
use ed25519_dalek::VerifyingKey;
use time::OffsetDateTime;

use serde::{Deserialize, Serialize};

use super::forms;
use super::signed::{InvalidBody, RecordBody, Signed};
use super::verify::{VerifyError, check_anchor};

pub const REVOCATION_FORMAT: &str = "bayspace/revocation-list/1";

pub type RevocationList = Signed<RevocationBody>;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevocationBody {
    /// Raised by one for every list the anchor issues.
    pub seq: u64,
    #[serde(with = "forms::timestamp")]
    pub issued_at: OffsetDateTime,
    /// Membership credential serials, sorted, each once.
    pub revoked: BTreeSet<u64>,
}

impl RecordBody for RevocationBody {
    const FORMAT: &'static str = REVOCATION_FORMAT;
    const CONTEXT: SigningContext = SigningContext::RevocationList;

    fn validate(&self) -> Result<(), InvalidBody> {
        Ok(())
    }
}

impl Signed<RevocationBody> {
    /// Check that a configured anchor signed this list.
    pub fn verify(&self, anchors: &[VerifyingKey]) -> Result<&RevocationBody, VerifyError> {
        check_anchor(self.signer(), anchors)?;
        self.check_signature()?;
        Ok(self.body())
    }

    pub fn is_revoked(&self, serial: u64) -> bool {
        self.body().revoked.contains(&serial)
    }

    /// Replace `current` with `candidate` if the candidate verifies and is
    /// newer. Returns whether it replaced. A candidate with the sequence
    /// number of `current` but other content is refused: the anchor never
    /// issues two lists under one number, so one of them is not genuine.
    pub fn accept_newer(
        current: &mut Option<RevocationList>,
        candidate: RevocationList,
        anchors: &[VerifyingKey],
    ) -> Result<bool, VerifyError> {
        let seq = candidate.verify(anchors)?.seq;
        if let Some(cur) = current.as_ref() {
            let cur_seq = cur.body().seq;
            if seq == cur_seq && cur.body() != candidate.body() {
                return Err(VerifyError::SequenceConflict { seq });
            }
            if seq <= cur_seq {
                return Ok(false);
            }
        }
        *current = Some(candidate);
        Ok(true)
    }
}
