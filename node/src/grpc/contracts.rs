//! The negotiation services: `ContractService` (researchers' requests and
//! every negotiation's state), `OfferService` (the administrator's
//! decisions), `RecordService` (the records on file the assessment reads),
//! `AgreementService` and `FilingService`. The negotiator decides and
//! records; these only check who may ask and translate.

use std::pin::Pin;
use std::sync::Arc;

use bayspace_connector::negotiator::{
    AgreementRecord, DatasetRecords, NegotiationRecord, Negotiator, NegotiatorError, NewRequest,
    RecordsUpdate, Requester, Viewer,
};
use bayspace_contracts::agreement::{AgreementId, NegotiationId, Orcid};
use bayspace_contracts::compliance::Route;
use bayspace_contracts::descriptor::{DatasetId, OfferId};
use bayspace_contracts::filing::FilingDue;
use bayspace_contracts::negotiation::Role as Side;
use bayspace_contracts::policy::Purpose;
use serde::Serialize;
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{Date, OffsetDateTime};
use tokio::sync::{broadcast, mpsc};
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::grpc::auth::{Caller, Role, require_admin, require_user};
use crate::proto;
use bayspace_connector::researchers::Researchers;

/// Changes buffered for one watcher before it is considered slow.
const WATCH_BUFFER: usize = 16;

/// What the five services need; cheap to clone.
#[derive(Clone)]
pub struct ContractsApi {
    pub negotiator: Arc<Negotiator>,
    pub researchers: Researchers,
    /// `filing-holidays` from the config.
    pub holidays: crate::daemon::Holidays,
}

/// The gRPC code for each refusal; the message is the error's own text.
pub fn negotiator_status(e: NegotiatorError) -> Status {
    use NegotiatorError as E;
    if let Some(full) = super::disk_full(&e) {
        return full;
    }
    let msg = e.to_string();
    match e {
        E::UnknownDataset(_) | E::UnknownNegotiation(_) | E::UnknownAgreement(_) => {
            Status::not_found(msg)
        }
        E::Blocked { .. }
        | E::PolicyRefuses { .. }
        | E::NotPending { .. }
        | E::WrongRole { .. }
        | E::AlreadyRevoked(_)
        | E::Withdrawn(_)
        | E::OwnDataset(_)
        | E::NotOurDataset(_)
        | E::ForeignRelease { .. }
        | E::Filing(_) => Status::failed_precondition(msg),
        E::UsesExhausted { .. } => Status::resource_exhausted(msg),
        E::UnknownOffer { .. } | E::OfferNeeded { .. } | E::BadInput { .. } | E::Wire(_) => {
            Status::invalid_argument(msg)
        }
        E::Credential(_)
        | E::Sign(_)
        | E::Random(_)
        | E::Audit(_)
        | E::Store(_)
        | E::Catalog(_)
        | E::Ledger(_)
        | E::Task(_)
        | E::Poisoned => {
            tracing::error!("negotiator: {msg}");
            Status::internal(msg)
        }
    }
}

fn parse_field<T: std::str::FromStr>(field: &str, value: &str) -> Result<T, Status>
where
    T::Err: std::fmt::Display,
{
    value
        .trim()
        .parse()
        .map_err(|e| Status::invalid_argument(format!("{field}: {e}")))
}

fn required(field: &str, value: String) -> Result<String, Status> {
    let v = value.trim();
    if v.is_empty() {
        return Err(Status::invalid_argument(format!("{field}: required")));
    }
    Ok(v.to_owned())
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

fn ymd(d: Date) -> String {
    d.format(format_description!("[year]-[month]-[day]"))
        .unwrap_or_else(|_| d.to_string())
}

fn pretty<T: Serialize>(v: &T) -> Result<String, Status> {
    serde_json::to_string_pretty(v).map_err(|e| Status::internal(format!("json: {e}")))
}

fn to_json<T: Serialize>(v: &T) -> Result<String, Status> {
    serde_json::to_string(v).map_err(|e| Status::internal(format!("json: {e}")))
}

fn viewer(c: &Caller) -> Viewer {
    match c.role {
        Role::Admin => Viewer::Admin,
        Role::Researcher => Viewer::Researcher(c.id.clone()),
    }
}

pub fn negotiation(r: &NegotiationRecord) -> Result<proto::Negotiation, Status> {
    let a = r.assessment.as_ref();
    let strings = |v: Option<Vec<String>>| v.unwrap_or_default();
    Ok(proto::Negotiation {
        id: r.id.to_string(),
        role: r.role.to_string(),
        state: r.state.to_string(),
        dataset_id: r.dataset.to_string(),
        dataset_title: r.dataset_title.clone(),
        dataset_version: r.dataset_version,
        offer_id: r.offer.to_string(),
        purpose: r.purpose.to_string(),
        counterparty_peer_id: r.counterparty.peer_id.clone(),
        counterparty_institution: r.counterparty.institution.clone(),
        counterparty_region: r.counterparty.region.to_string(),
        researcher_id: r.researcher.id.clone(),
        researcher_name: r.researcher.name.clone(),
        route: a.map(|a| a.route.to_string()).unwrap_or_default(),
        variant: a
            .and_then(|a| a.variant)
            .map(|v| v.to_string())
            .unwrap_or_default(),
        blockers: strings(a.map(|a| a.blockers.iter().map(ToString::to_string).collect())),
        obligations: strings(a.map(|a| a.obligations.iter().map(ToString::to_string).collect())),
        reasons: r.reasons.clone(),
        agreement_id: r
            .agreement_id
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
        requested_at: rfc3339(r.requested_at),
        updated_at: rfc3339(r.updated_at),
        json: to_json(r)?,
        certification_reference: r
            .certificate
            .as_ref()
            .map(|c| c.reference.clone())
            .unwrap_or_default(),
        certification_valid_until: r
            .certificate
            .as_ref()
            .map(|c| ymd(c.valid_until))
            .unwrap_or_default(),
    })
}

fn negotiations(list: &[NegotiationRecord]) -> Result<proto::ListNegotiationsResponse, Status> {
    Ok(proto::ListNegotiationsResponse {
        negotiations: list.iter().map(negotiation).collect::<Result<_, _>>()?,
        next_page_token: String::new(),
    })
}

/// Largest page of `contract list`: a thousand records of a few KiB each
/// stay well inside tonic's 4 MiB reply.
pub const MAX_PAGE: usize = 1000;

/// The page of `list` (newest first) that `page_size` and `token` ask for.
/// The token is the id of the last negotiation of the previous page: the
/// order only ever grows at the front, so the rest follows it unchanged.
fn page(
    list: &[NegotiationRecord],
    page_size: u32,
    token: &str,
) -> Result<proto::ListNegotiationsResponse, Status> {
    let from = match token.trim() {
        "" => 0,
        t => {
            list.iter()
                .position(|r| r.id.to_string() == t)
                .ok_or_else(|| {
                    Status::invalid_argument(format!(
                        "page_token: {t:?} is not a negotiation of this list; start again without a token"
                    ))
                })?
                + 1
        }
    };
    let size = match page_size {
        0 => list.len(),
        n => (n as usize).min(MAX_PAGE),
    };
    let end = from.saturating_add(size).min(list.len());
    let mut reply = negotiations(&list[from..end])?;
    if end < list.len()
        && let Some(last) = list[from..end].last()
    {
        reply.next_page_token = last.id.to_string();
    }
    Ok(reply)
}

fn records(dataset: &DatasetId, r: &DatasetRecords) -> proto::DatasetRecords {
    proto::DatasetRecords {
        dataset_id: dataset.to_string(),
        pipia: r.records.pipia,
        pipia_reference: r.pipia_reference.clone().unwrap_or_default(),
        consent: r.records.consent,
        security_assessment_until: r
            .records
            .security_assessment_valid_until
            .map(ymd)
            .unwrap_or_default(),
        hgr_filing: r.records.hgr_filing,
        hgr_security_review: r.records.hgr_security_review,
        macao_authorisation: r.records.macao_authorisation,
        updated_at: r.updated_at.map(rfc3339).unwrap_or_default(),
        certification_reference: r.certification_reference.clone().unwrap_or_default(),
        certification_valid_until: r
            .records
            .pi_certification_valid_until
            .map(ymd)
            .unwrap_or_default(),
    }
}

/// A `YYYY-MM-DD` date, or `none` to clear it; `flag` names the option in
/// the error.
fn date_or_none(flag: &str, value: Option<&str>) -> Result<Option<Option<Date>>, Status> {
    match value {
        None => Ok(None),
        Some(v) if v.trim().eq_ignore_ascii_case("none") => Ok(Some(None)),
        Some(v) => Date::parse(v.trim(), format_description!("[year]-[month]-[day]"))
            .map(|d| Some(Some(d)))
            .map_err(|e| {
                Status::invalid_argument(format!(
                    "{flag}: `{v}` is not a date like 2027-06-30 (or `none`): {e}"
                ))
            }),
    }
}

fn records_update(r: &proto::SetRecordsRequest) -> Result<RecordsUpdate, Status> {
    let security_assessment_valid_until = date_or_none(
        "security-assessment-until",
        r.security_assessment_until.as_deref(),
    )?;
    let certification_valid_until = date_or_none(
        "certification-valid-until",
        r.certification_valid_until.as_deref(),
    )?;
    let certification_reference = r
        .certification_reference
        .clone()
        .map(|c| required("certification-ref", c))
        .transpose()?;
    let pipia_reference = r
        .pipia_reference
        .clone()
        .map(|p| required("pipia-reference", p))
        .transpose()?;
    Ok(RecordsUpdate {
        pipia: r.pipia,
        pipia_reference,
        consent: r.consent,
        security_assessment_valid_until,
        hgr_filing: r.hgr_filing,
        hgr_security_review: r.hgr_security_review,
        macao_authorisation: r.macao_authorisation,
        certification_reference,
        certification_valid_until,
    })
}

fn agreement_doc(r: &AgreementRecord) -> Result<proto::AgreementDocument, Status> {
    Ok(proto::AgreementDocument {
        id: r.id().to_string(),
        json: to_json(r)?,
    })
}

impl ContractsApi {
    /// The negotiation, if `viewer` may see it; otherwise NOT_FOUND, so a
    /// researcher cannot learn which ids exist.
    fn visible(&self, id: &NegotiationId, viewer: &Viewer) -> Result<NegotiationRecord, Status> {
        match self.negotiator.get(id).map_err(negotiator_status)? {
            Some(r) if viewer.may_see(&r) => Ok(r),
            _ => Err(negotiator_status(NegotiatorError::UnknownNegotiation(
                id.clone(),
            ))),
        }
    }

    /// Who the request is for: the researcher's own record, or the
    /// administrator acting as a researcher.
    fn requester(&self, c: &Caller) -> Result<(Requester, bool), Status> {
        if c.role == Role::Admin {
            return Ok((
                Requester {
                    id: "admin".into(),
                    name: format!("Administrator, {}", self.negotiator.institution().name),
                    orcid: None,
                },
                true,
            ));
        }
        let record = self
            .researchers
            .list()
            .map_err(|e| Status::internal(format!("researcher registry: {e:#}")))?
            .into_iter()
            .find(|r| r.id == c.id)
            .ok_or_else(|| {
                Status::unauthenticated(format!("researcher {} has been removed", c.id))
            })?;
        let orcid = record
            .orcid
            .map(|o| Orcid::try_from(o.to_string()))
            .transpose()
            .map_err(|e| Status::internal(format!("researcher {}: {e}", record.id)))?;
        Ok((
            Requester {
                id: record.id,
                name: record.name,
                orcid,
            },
            false,
        ))
    }

    /// The agreement, if the caller may see it: an administrator sees all;
    /// a researcher only those concluded for them on this, the consumer,
    /// side (researcher ids are unique only within one institution).
    fn visible_agreement(&self, id: &AgreementId, c: &Caller) -> Result<AgreementRecord, Status> {
        match self.negotiator.agreement(id).map_err(negotiator_status)? {
            Some(r) if may_see_agreement(c, &r) => Ok(r),
            _ => Err(negotiator_status(NegotiatorError::UnknownAgreement(
                id.clone(),
            ))),
        }
    }
}

fn may_see_agreement(c: &Caller, r: &AgreementRecord) -> bool {
    match c.role {
        Role::Admin => true,
        Role::Researcher => r.role == Side::Consumer && r.signed.agreement.researcher.id == c.id,
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<proto::Negotiation, Status>> + Send>>;

/// Sends `r` unless it is what the watcher saw last; false once the
/// watcher is gone.
async fn forward(
    tx: &mpsc::Sender<Result<proto::Negotiation, Status>>,
    last: &mut Option<NegotiationRecord>,
    r: NegotiationRecord,
) -> bool {
    if last.as_ref() == Some(&r) {
        return true;
    }
    let msg = negotiation(&r);
    *last = Some(r);
    tx.send(msg).await.is_ok()
}

async fn watch_loop(
    negotiator: Arc<Negotiator>,
    id: NegotiationId,
    mut changes: broadcast::Receiver<NegotiationRecord>,
    first: NegotiationRecord,
    tx: mpsc::Sender<Result<proto::Negotiation, Status>>,
) {
    let mut last = None;
    if !forward(&tx, &mut last, first).await {
        return;
    }
    while let Some(seen) = &last
        && !seen.state.is_terminal()
    {
        let change = tokio::select! {
            c = changes.recv() => c,
            // The watcher left while nothing changed.
            () = tx.closed() => return,
        };
        let next = match change {
            Ok(r) if r.id == id => r,
            Ok(_) => continue,
            // Changes were missed: the store has the latest.
            Err(broadcast::error::RecvError::Lagged(_)) => match negotiator.get(&id) {
                Ok(Some(r)) => r,
                Ok(None) => return,
                Err(e) => {
                    let _ = tx.send(Err(negotiator_status(e))).await;
                    return;
                }
            },
            Err(broadcast::error::RecvError::Closed) => return,
        };
        if !forward(&tx, &mut last, next).await {
            return;
        }
    }
}

#[tonic::async_trait]
impl proto::contract_service_server::ContractService for ContractsApi {
    async fn request(
        &self,
        req: Request<proto::ContractRequest>,
    ) -> Result<Response<proto::Negotiation>, Status> {
        let caller = require_user(&req)?.clone();
        let r = req.into_inner();
        let dataset: DatasetId = parse_field("dataset", &r.dataset_id)?;
        let purpose: Purpose = parse_field("purpose", &required("purpose", r.purpose)?)?;
        let offer = r
            .offer_id
            .filter(|o| !o.trim().is_empty())
            .map(|o| parse_field::<OfferId>("offer", &o))
            .transpose()?;
        let (requester, as_admin) = self.requester(&caller)?;
        let record = self
            .negotiator
            .request(NewRequest {
                dataset,
                offer,
                purpose,
                requester,
                as_admin,
            })
            .await
            .map_err(negotiator_status)?;
        tracing::info!(id = %record.id, dataset = %record.dataset, by = %caller.id, state = %record.state, "contract requested");
        Ok(Response::new(negotiation(&record)?))
    }

    async fn show(
        &self,
        req: Request<proto::ShowNegotiationRequest>,
    ) -> Result<Response<proto::Negotiation>, Status> {
        let viewer = viewer(require_user(&req)?);
        let id: NegotiationId = parse_field("id", &req.into_inner().id)?;
        Ok(Response::new(negotiation(&self.visible(&id, &viewer)?)?))
    }

    async fn list(
        &self,
        req: Request<proto::ListNegotiationsRequest>,
    ) -> Result<Response<proto::ListNegotiationsResponse>, Status> {
        let viewer = viewer(require_user(&req)?);
        let list = self.negotiator.list(&viewer).map_err(negotiator_status)?;
        let r = req.into_inner();
        Ok(Response::new(page(&list, r.page_size, &r.page_token)?))
    }

    type WatchStream = WatchStream;

    async fn watch(
        &self,
        req: Request<proto::ShowNegotiationRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let viewer = viewer(require_user(&req)?);
        let id: NegotiationId = parse_field("id", &req.into_inner().id)?;
        // Subscribe before reading, so no change falls in between.
        let changes = self.negotiator.subscribe();
        let first = self.visible(&id, &viewer)?;
        let (tx, rx) = mpsc::channel(WATCH_BUFFER);
        tokio::spawn(watch_loop(self.negotiator.clone(), id, changes, first, tx));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

#[tonic::async_trait]
impl proto::offer_service_server::OfferService for ContractsApi {
    async fn list(
        &self,
        req: Request<proto::ListPendingRequest>,
    ) -> Result<Response<proto::ListNegotiationsResponse>, Status> {
        require_admin(&req)?;
        let list = self.negotiator.pending().map_err(negotiator_status)?;
        Ok(Response::new(negotiations(&list)?))
    }

    async fn approve(
        &self,
        req: Request<proto::ApproveRequest>,
    ) -> Result<Response<proto::Negotiation>, Status> {
        require_admin(&req)?;
        let r = req.into_inner();
        let id: NegotiationId = parse_field("id", &r.id)?;
        let note = Some(r.note.trim().to_owned()).filter(|n| !n.is_empty());
        let record = self
            .negotiator
            .approve(&id, note)
            .await
            .map_err(negotiator_status)?;
        tracing::info!(%id, state = %record.state, "request approved");
        Ok(Response::new(negotiation(&record)?))
    }

    async fn reject(
        &self,
        req: Request<proto::RejectRequest>,
    ) -> Result<Response<proto::Negotiation>, Status> {
        require_admin(&req)?;
        let r = req.into_inner();
        let id: NegotiationId = parse_field("id", &r.id)?;
        let reason = required("reason", r.reason)?;
        let record = self
            .negotiator
            .reject(&id, reason)
            .await
            .map_err(negotiator_status)?;
        tracing::info!(%id, "request rejected");
        Ok(Response::new(negotiation(&record)?))
    }
}

#[tonic::async_trait]
impl proto::record_service_server::RecordService for ContractsApi {
    async fn set(
        &self,
        req: Request<proto::SetRecordsRequest>,
    ) -> Result<Response<proto::SetRecordsResponse>, Status> {
        require_admin(&req)?;
        let r = req.into_inner();
        let dataset: DatasetId = parse_field("dataset", &r.dataset_id)?;
        let update = records_update(&r)?;
        let (now, reevaluated) = self
            .negotiator
            .set_records(&dataset, update)
            .await
            .map_err(negotiator_status)?;
        tracing::info!(%dataset, reevaluated = reevaluated.len(), "records set");
        Ok(Response::new(proto::SetRecordsResponse {
            records: Some(records(&dataset, &now)),
            reevaluated: reevaluated
                .iter()
                .map(negotiation)
                .collect::<Result<_, _>>()?,
        }))
    }

    async fn show(
        &self,
        req: Request<proto::ShowRecordsRequest>,
    ) -> Result<Response<proto::DatasetRecords>, Status> {
        require_admin(&req)?;
        let dataset: DatasetId = parse_field("dataset", &req.into_inner().dataset_id)?;
        let now = self
            .negotiator
            .records(&dataset)
            .map_err(negotiator_status)?;
        Ok(Response::new(records(&dataset, &now)))
    }
}

#[tonic::async_trait]
impl proto::agreement_service_server::AgreementService for ContractsApi {
    async fn show(
        &self,
        req: Request<proto::ShowAgreementRequest>,
    ) -> Result<Response<proto::AgreementDocument>, Status> {
        let caller = require_user(&req)?.clone();
        let r = req.into_inner();
        let id: AgreementId = parse_field("id", &r.id)?;
        let record = self.visible_agreement(&id, &caller)?;
        match r.format.trim() {
            "" | "json" => Ok(Response::new(agreement_doc(&record)?)),
            "dsp" => {
                let a = &record.signed.agreement;
                let pid = a.negotiation.as_str();
                let doc = bayspace_contracts::dsp::contract_agreement(pid, pid, a)
                    .map_err(|e| Status::internal(format!("dsp: {e}")))?;
                Ok(Response::new(proto::AgreementDocument {
                    id: id.to_string(),
                    json: serde_json::to_string_pretty(&doc)
                        .map_err(|e| Status::internal(format!("json: {e}")))?,
                }))
            }
            other => Err(Status::invalid_argument(format!(
                "format: `{other}` is not json or dsp"
            ))),
        }
    }

    async fn list(
        &self,
        req: Request<proto::ListAgreementsRequest>,
    ) -> Result<Response<proto::ListAgreementsResponse>, Status> {
        let caller = require_user(&req)?.clone();
        let all = self.negotiator.agreements().map_err(negotiator_status)?;
        Ok(Response::new(proto::ListAgreementsResponse {
            agreements: all
                .iter()
                .filter(|r| may_see_agreement(&caller, r))
                .map(agreement_doc)
                .collect::<Result<_, _>>()?,
        }))
    }

    async fn revoke(
        &self,
        req: Request<proto::RevokeAgreementRequest>,
    ) -> Result<Response<proto::AgreementDocument>, Status> {
        require_admin(&req)?;
        let r = req.into_inner();
        let id: AgreementId = parse_field("id", &r.id)?;
        let reason = required("reason", r.reason)?;
        let record = self
            .negotiator
            .revoke(&id, reason)
            .await
            .map_err(negotiator_status)?;
        tracing::info!(%id, "agreement revoked");
        Ok(Response::new(agreement_doc(&record)?))
    }
}

#[tonic::async_trait]
impl proto::filing_service_server::FilingService for ContractsApi {
    async fn export(
        &self,
        req: Request<proto::ExportFilingRequest>,
    ) -> Result<Response<proto::FilingPackage>, Status> {
        require_admin(&req)?;
        let id: AgreementId = parse_field("agreement", &req.into_inner().agreement_id)?;
        let due = self
            .negotiator
            .filing(&id, &self.holidays.get())
            .map_err(negotiator_status)?;
        self.negotiator
            .note_filing_exported(&id, time::OffsetDateTime::now_utc())
            .map_err(negotiator_status)?;
        let package = match due {
            FilingDue::Contract(filing) => proto::FilingPackage {
                agreement_id: id.to_string(),
                json: pretty(&*filing)?,
                markdown: filing.to_markdown(),
                deadline: ymd(filing.deadline),
                authorities: filing.authorities.iter().map(ToString::to_string).collect(),
                route: filing.route.to_string(),
                certification: None,
            },
            FilingDue::Certification(renewal) => proto::FilingPackage {
                agreement_id: id.to_string(),
                route: Route::Certification.to_string(),
                certification: Some(proto::CertificationRenewal {
                    reference: renewal.certificate.reference.clone(),
                    valid_until: ymd(renewal.certificate.valid_until),
                    reapply_by: ymd(renewal.reapply_by),
                    json: pretty(&renewal)?,
                }),
                ..Default::default()
            },
        };
        Ok(Response::new(package))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_map_to_codes_with_the_errors_text() {
        let id: NegotiationId = "urn:uuid:1".parse().unwrap();
        let s = negotiator_status(NegotiatorError::UnknownNegotiation(id.clone()));
        assert_eq!(s.code(), tonic::Code::NotFound);
        assert_eq!(s.message(), "no negotiation urn:uuid:1");
        let s = negotiator_status(NegotiatorError::Blocked {
            id,
            blockers: vec![bayspace_contracts::compliance::Blocker::Pipia],
        });
        assert_eq!(s.code(), tonic::Code::FailedPrecondition);
        assert!(s.message().contains("pipia"), "{}", s.message());
        let s = negotiator_status(NegotiatorError::BadInput {
            field: "reason",
            reason: "empty".into(),
        });
        assert_eq!(s.code(), tonic::Code::InvalidArgument);
        assert_eq!(
            negotiator_status(NegotiatorError::Poisoned).code(),
            tonic::Code::Internal
        );
    }

    #[test]
    fn records_update_parses_dates_and_none() {
        let mut r = proto::SetRecordsRequest {
            dataset_id: "urn:x".into(),
            pipia: Some(true),
            security_assessment_until: Some("2027-06-30".into()),
            ..Default::default()
        };
        let u = records_update(&r).unwrap();
        assert_eq!(u.pipia, Some(true));
        assert_eq!(u.consent, None);
        assert_eq!(
            u.security_assessment_valid_until,
            Some(Some(time::macros::date!(2027 - 06 - 30)))
        );
        r.security_assessment_until = Some("none".into());
        assert_eq!(
            records_update(&r).unwrap().security_assessment_valid_until,
            Some(None)
        );
        r.security_assessment_until = Some("30/06/2027".into());
        let e = records_update(&r).unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(
            e.message().contains("security-assessment-until"),
            "{}",
            e.message()
        );
        r.security_assessment_until = None;
        r.pipia_reference = Some("  ".into());
        assert!(records_update(&r).is_err());
    }

    #[test]
    fn records_update_parses_the_certificate() {
        let mut r = proto::SetRecordsRequest {
            dataset_id: "urn:x".into(),
            certification_reference: Some(" CQC-PI-2026-0042 ".into()),
            certification_valid_until: Some("2028-06-30".into()),
            ..Default::default()
        };
        let u = records_update(&r).unwrap();
        assert_eq!(
            u.certification_reference.as_deref(),
            Some("CQC-PI-2026-0042")
        );
        assert_eq!(
            u.certification_valid_until,
            Some(Some(time::macros::date!(2028 - 06 - 30)))
        );
        r.certification_valid_until = Some("NONE".into());
        assert_eq!(
            records_update(&r).unwrap().certification_valid_until,
            Some(None)
        );
        for bad in ["2028-02-30", "30/06/2028", "2028-6-30"] {
            r.certification_valid_until = Some(bad.into());
            let e = records_update(&r).unwrap_err();
            assert_eq!(e.code(), tonic::Code::InvalidArgument);
            assert!(
                e.message().starts_with("certification-valid-until: `"),
                "{}",
                e.message()
            );
        }
        r.certification_valid_until = None;
        r.certification_reference = Some("".into());
        let e = records_update(&r).unwrap_err();
        assert!(
            e.message().starts_with("certification-ref"),
            "{}",
            e.message()
        );
    }
}
