//! TEMPORARY API SKELETON: the lead replaces every body. Do not edit.
#![allow(clippy::todo, unused_variables)]
use std::collections::BTreeSet;
use std::sync::Arc;

use bayspace_contracts::agreement::{AgreementId, NegotiationId};
use bayspace_contracts::descriptor::DatasetId;
use bayspace_contracts::filing::Filing;
use libp2p::PeerId;
use time::Date;

use super::*;

impl Negotiator {
    /// Consumer side: issue a researcher credential, store REQUESTED,
    /// send the ContractRequest (first attempt inline).
    pub async fn request(self: &Arc<Self>, req: NewRequest) -> Result<NegotiationRecord, NegotiatorError> { todo!() }
    /// Provider side: approve a pending request (re-assessed now).
    pub async fn approve(self: &Arc<Self>, id: &NegotiationId, note: Option<String>) -> Result<NegotiationRecord, NegotiatorError> { todo!() }
    pub async fn reject(self: &Arc<Self>, id: &NegotiationId, reason: String) -> Result<NegotiationRecord, NegotiatorError> { todo!() }
    /// Returns the new records and the pending negotiations re-evaluated.
    pub async fn set_records(self: &Arc<Self>, dataset: &DatasetId, update: RecordsUpdate) -> Result<(DatasetRecords, Vec<NegotiationRecord>), NegotiatorError> { todo!() }
    pub async fn revoke(self: &Arc<Self>, id: &AgreementId, reason: String) -> Result<AgreementRecord, NegotiatorError> { todo!() }
    pub fn filing(&self, id: &AgreementId, holidays: &BTreeSet<Date>) -> Result<Filing, NegotiatorError> { todo!() }
    /// An inbound `/bayspace/negotiation/1` request; returns the response bytes.
    pub async fn on_control(self: &Arc<Self>, peer: PeerId, request: &[u8]) -> Vec<u8> { todo!() }
    /// A peer was (re)admitted: retry what waits for it now.
    pub fn peer_admitted(&self, peer: &PeerId) { todo!() }
    /// The retry loop; spawn it once.
    pub async fn run(self: Arc<Self>) { todo!() }
    pub(crate) fn own_dataset(&self, dataset: &DatasetId) -> Result<(), NegotiatorError> { todo!() }
}
