//! Verification of credentials, in a fixed order.
//!
//! Authenticity comes first (is the signer trusted, does the signature
//! hold), because nothing in an unauthenticated body may influence a
//! decision or an error message. Then time, then revocation, then what the
//! caller asks the credential to prove (PeerId, address, role). The first
//! failing check is the reported reason.

use std::net::IpAddr;

use bayspace_contracts::signing::{SigningContext, b64};
use ed25519_dalek::VerifyingKey;
use ipnet::Ipv6Net;
use libp2p_identity::PeerId;
use time::OffsetDateTime;

use super::credential::{
    MemberRole, MembershipBody, MembershipCredential, ResearcherBody, ResearcherRole,
};
use super::forms::timestamp;
use super::key::{PeerKeyError, key_of_peer_id};
use super::revocation::RevocationList;
use super::signed::Signed;

/// Why a credential or list was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("the {context} signature does not verify")]
    BadSignature { context: SigningContext },
    #[error("signed by key {signer}, which is not a trusted issuer for it")]
    UnknownIssuer { signer: String },
    #[error("expired: not valid after {}", timestamp::display(.not_after))]
    Expired { not_after: OffsetDateTime },
    #[error("not yet valid: not valid before {}", timestamp::display(.not_before))]
    NotYetValid { not_before: OffsetDateTime },
    #[error("serial {serial} is revoked")]
    Revoked { serial: u64 },
    #[error("issued for PeerId {found}, but expected {expected}")]
    PeerIdMismatch {
        expected: Box<PeerId>,
        found: Box<PeerId>,
    },
    #[error("address {addr} is outside the credential's prefixes {}", list(.prefixes))]
    AddressOutsidePrefixes {
        addr: IpAddr,
        prefixes: Vec<Ipv6Net>,
    },
    #[error("the credential lacks the role `{role}`")]
    MissingRole { role: String },
    #[error("issuer: {0}")]
    IssuerKey(Box<PeerKeyError>),
    #[error("the institution's membership credential: {0}")]
    Membership(Box<VerifyError>),
    #[error("the revocation list: {0}")]
    RevocationList(Box<VerifyError>),
    #[error("revocation list {seq} differs from the list already held under that number")]
    SequenceConflict { seq: u64 },
}

fn list(prefixes: &[Ipv6Net]) -> String {
    let items: Vec<String> = prefixes.iter().map(ToString::to_string).collect();
    items.join(", ")
}

/// What a membership credential must prove beyond being valid.
#[derive(Debug, Clone, Copy, Default)]
pub struct Checks<'a> {
    /// The PeerId the connection authenticated.
    pub peer_id: Option<PeerId>,
    /// The remote address of the connection.
    pub addr: Option<IpAddr>,
    /// Verified against the same anchors before use.
    pub revocations: Option<&'a RevocationList>,
    pub role: Option<MemberRole>,
}

/// What a researcher credential must prove beyond being valid.
#[derive(Debug, Clone, Copy, Default)]
pub struct ResearcherChecks<'a> {
    /// Applied to the institution's membership credential.
    pub revocations: Option<&'a RevocationList>,
    pub role: Option<ResearcherRole>,
}

pub(crate) fn check_anchor(
    signer: &VerifyingKey,
    anchors: &[VerifyingKey],
) -> Result<(), VerifyError> {
    if anchors.contains(signer) {
        Ok(())
    } else {
        Err(VerifyError::UnknownIssuer {
            signer: b64::encode(signer.as_bytes()),
        })
    }
}

/// Valid when `not_before <= now <= not_after`: both ends inclusive, so a
/// credential with `not_after = 12:00:00Z` is valid at 12:00:00 and expired
/// from the first instant after it.
fn check_time(
    now: OffsetDateTime,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> Result<(), VerifyError> {
    if now < not_before {
        Err(VerifyError::NotYetValid { not_before })
    } else if now > not_after {
        Err(VerifyError::Expired { not_after })
    } else {
        Ok(())
    }
}

impl Signed<MembershipBody> {
    /// Verify against the configured trust anchors at `now`.
    ///
    /// Order: anchor, signature, validity window, revocation (the list is
    /// itself verified first), PeerId, address, role.
    pub fn verify(
        &self,
        anchors: &[VerifyingKey],
        now: OffsetDateTime,
        checks: &Checks<'_>,
    ) -> Result<&MembershipBody, VerifyError> {
        check_anchor(self.signer(), anchors)?;
        self.check_signature()?;
        let body = self.body();
        check_time(now, body.not_before, body.not_after)?;
        if let Some(list) = checks.revocations {
            list.verify(anchors)
                .map_err(|e| VerifyError::RevocationList(Box::new(e)))?;
            if list.is_revoked(body.serial) {
                return Err(VerifyError::Revoked {
                    serial: body.serial,
                });
            }
        }
        if let Some(expected) = checks.peer_id
            && expected != body.peer_id
        {
            return Err(VerifyError::PeerIdMismatch {
                expected: Box::new(expected),
                found: Box::new(body.peer_id),
            });
        }
        if let Some(addr) = checks.addr {
            let inside = match addr {
                IpAddr::V6(a) => body.prefixes.iter().any(|p| p.contains(&a)),
                IpAddr::V4(_) => false,
            };
            if !inside {
                return Err(VerifyError::AddressOutsidePrefixes {
                    addr,
                    prefixes: body.prefixes.clone(),
                });
            }
        }
        if let Some(role) = checks.role
            && !body.roles.contains(&role)
        {
            return Err(VerifyError::MissingRole {
                role: role.to_string(),
            });
        }
        Ok(body)
    }
}

impl Signed<ResearcherBody> {
    /// Verify the chain anchor → institution → researcher at `now`.
    ///
    /// Order: the membership credential (as [`MembershipCredential::verify`],
    /// with the revocation list), the issuer PeerId against the membership's,
    /// the signer against the key inside that PeerId, the signature, the
    /// validity window, the role.
    pub fn verify(
        &self,
        membership: &MembershipCredential,
        anchors: &[VerifyingKey],
        now: OffsetDateTime,
        checks: &ResearcherChecks<'_>,
    ) -> Result<&ResearcherBody, VerifyError> {
        let member_checks = Checks {
            revocations: checks.revocations,
            ..Checks::default()
        };
        let member = membership
            .verify(anchors, now, &member_checks)
            .map_err(|e| VerifyError::Membership(Box::new(e)))?;
        let body = self.body();
        if body.issuer != member.peer_id {
            return Err(VerifyError::PeerIdMismatch {
                expected: Box::new(member.peer_id),
                found: Box::new(body.issuer),
            });
        }
        let institution_key =
            key_of_peer_id(&member.peer_id).map_err(|e| VerifyError::IssuerKey(Box::new(e)))?;
        check_anchor(self.signer(), &[institution_key])?;
        self.check_signature()?;
        check_time(now, body.not_before, body.not_after)?;
        if let Some(role) = checks.role
            && !body.roles.contains(&role)
        {
            return Err(VerifyError::MissingRole {
                role: role.to_string(),
            });
        }
        Ok(body)
    }
}
