//! `TransferService`: fetching the data of an agreement, with progress;
//! `DataService`: the data kept sealed in this node's store.

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use bayspace_connector::audit::Actor;
use bayspace_connector::crypto::CryptoError;
use bayspace_connector::transfers::{Destination, Progress, TransferError, Transfers};
use bayspace_connector::vault::{SealedRecord, VaultError};
use bayspace_contracts::agreement::AgreementId;
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::grpc::auth::{Role, require_admin, require_user};
use crate::proto::{self, FetchProgress, FetchRequest};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

#[derive(Clone)]
pub struct TransfersApi(pub Arc<Transfers>);

/// Progress messages queued for a slow client before the transfer waits.
const PROGRESS_BUFFER: usize = 16;

fn status(e: &TransferError) -> Status {
    let msg = e.to_string();
    match e {
        TransferError::UnknownAgreement(_) => Status::not_found(msg),
        TransferError::WrongResearcher { .. } => Status::permission_denied(msg),
        TransferError::NotConsumer(_)
        | TransferError::Revoked { .. }
        | TransferError::Refused(_) => Status::failed_precondition(msg),
        TransferError::Unreachable { .. } | TransferError::InProgress(_) => {
            Status::unavailable(msg)
        }
        TransferError::Vault(e) => vault_status(e),
        _ => Status::aborted(msg),
    }
}

fn vault_status(e: &VaultError) -> Status {
    let msg = e.to_string();
    match e {
        VaultError::NotFound(_) => Status::not_found(msg),
        VaultError::WrongResearcher { .. } => Status::permission_denied(msg),
        VaultError::Incomplete(_)
        | VaultError::Shredded { .. }
        | VaultError::AlreadySealed(_)
        | VaultError::RetentionPassed { .. }
        | VaultError::RetentionEnded { .. } => Status::failed_precondition(msg),
        VaultError::Crypto(
            CryptoError::Segment { .. }
            | CryptoError::SealedLength { .. }
            | CryptoError::HashMismatch { .. }
            | CryptoError::Unwrap { .. },
        ) => Status::data_loss(msg),
        _ => Status::internal(msg),
    }
}

fn parse_agreement(id: &str) -> Result<AgreementId, Status> {
    id.parse()
        .map_err(|e| Status::invalid_argument(format!("agreement_id: {e}")))
}

fn parse_out(out: &str) -> Result<PathBuf, Status> {
    let path = PathBuf::from(out);
    if out.trim().is_empty() || !path.is_absolute() {
        return Err(Status::invalid_argument(format!(
            "out: `{out}` must be an absolute path on the node's host"
        )));
    }
    Ok(path)
}

type FetchStream = Pin<Box<dyn Stream<Item = Result<FetchProgress, Status>> + Send>>;

#[tonic::async_trait]
impl proto::transfer_service_server::TransferService for TransfersApi {
    type FetchStream = FetchStream;

    async fn fetch(&self, req: Request<FetchRequest>) -> Result<Response<FetchStream>, Status> {
        let caller = require_user(&req)?.clone();
        let req = req.into_inner();
        let id = parse_agreement(&req.agreement_id)?;
        let out = match (req.keep_sealed, req.out.is_empty()) {
            (true, true) => None,
            (false, false) => Some(parse_out(&req.out)?),
            (true, false) => {
                return Err(Status::invalid_argument(
                    "out: give either `out` or `keep_sealed`, not both",
                ));
            }
            (false, true) => {
                return Err(Status::invalid_argument(
                    "out: an absolute path on the node's host is required unless `keep_sealed` is set",
                ));
            }
        };
        let researcher = match caller.role {
            Role::Admin => None,
            Role::Researcher => Some(caller.id.clone()),
        };
        let (tx, rx) = mpsc::channel(PROGRESS_BUFFER);
        let transfers = self.0.clone();
        let agreement = req.agreement_id.clone();
        tokio::spawn(async move {
            let progress_tx = tx.clone();
            let agreement_id = agreement.clone();
            let dest = out
                .as_deref()
                .map_or(Destination::Sealed, Destination::File);
            let result = transfers
                .fetch(&id, researcher.as_deref(), dest, move |p: Progress| {
                    // Progress is advisory: a full queue drops a message.
                    let _ = progress_tx.try_send(Ok(FetchProgress {
                        bytes_done: p.done,
                        bytes_total: p.total,
                        agreement_id: agreement_id.clone(),
                        ..FetchProgress::default()
                    }));
                })
                .await;
            let last = match result {
                Ok(r) => Ok(FetchProgress {
                    bytes_done: r.bytes,
                    bytes_total: r.bytes,
                    done: true,
                    path: r.path.display().to_string(),
                    blake3: r.hash,
                    seconds: r.seconds,
                    resumed_bytes: r.resumed_bytes,
                    agreement_id: agreement,
                    sealed: r.sealed,
                }),
                Err(e) => {
                    tracing::warn!("fetch failed: {e}");
                    Err(status(&e))
                }
            };
            let _ = tx.send(last).await;
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

fn rfc3339(t: Option<OffsetDateTime>) -> String {
    t.and_then(|t| t.format(&Rfc3339).ok()).unwrap_or_default()
}

fn sealed_data(r: SealedRecord, path: &std::path::Path) -> proto::SealedData {
    proto::SealedData {
        agreement_id: r.agreement.to_string(),
        dataset_id: r.dataset.to_string(),
        dataset_version: r.dataset_version,
        researcher: r.researcher,
        state: r.state.to_string(),
        size: r.size.unwrap_or(0),
        blake3: r.content_hash.map(|h| h.to_string()).unwrap_or_default(),
        retention_deadline: rfc3339(r.retention_deadline),
        shredded_at: rfc3339(r.shredded_at),
        shred_reason: r.shred_reason.unwrap_or_default(),
        path: path.display().to_string(),
    }
}

/// Runs a blocking vault operation off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, VaultError> + Send + 'static,
) -> Result<T, Status> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Status::internal(format!("sealed storage task: {e}")))?
        .map_err(|e| vault_status(&e))
}

#[tonic::async_trait]
impl proto::data_service_server::DataService for TransfersApi {
    async fn list(
        &self,
        req: Request<proto::DataListRequest>,
    ) -> Result<Response<proto::DataListResponse>, Status> {
        let caller = require_user(&req)?;
        let researcher = (caller.role == Role::Researcher).then(|| caller.id.clone());
        let vault = self.0.vault().clone();
        let items = blocking(move || {
            let records = vault.list(researcher.as_deref())?;
            Ok(records
                .into_iter()
                .map(|r| {
                    let path = vault.sealed_path(&r.agreement);
                    sealed_data(r, &path)
                })
                .collect())
        })
        .await?;
        Ok(Response::new(proto::DataListResponse { items }))
    }

    async fn open(
        &self,
        req: Request<proto::DataOpenRequest>,
    ) -> Result<Response<proto::DataOpenResponse>, Status> {
        let caller = require_user(&req)?;
        let researcher = (caller.role == Role::Researcher).then(|| caller.id.clone());
        let req = req.into_inner();
        let id = parse_agreement(&req.agreement_id)?;
        let out = parse_out(&req.out)?;
        let vault = self.0.vault().clone();
        let target = out.clone();
        let r = blocking(move || {
            vault.open_to(
                &id,
                researcher.as_deref(),
                &target,
                OffsetDateTime::now_utc(),
            )
        })
        .await?;
        Ok(Response::new(proto::DataOpenResponse {
            path: out.display().to_string(),
            bytes: r.size.unwrap_or(0),
            blake3: r.content_hash.map(|h| h.to_string()).unwrap_or_default(),
        }))
    }

    async fn shred(
        &self,
        req: Request<proto::DataShredRequest>,
    ) -> Result<Response<proto::SealedData>, Status> {
        require_admin(&req)?;
        let req = req.into_inner();
        let id = parse_agreement(&req.agreement_id)?;
        let reason = match req.reason.trim() {
            "" => "shredded by the administrator".to_owned(),
            r => r.to_owned(),
        };
        let vault = self.0.vault().clone();
        let r = blocking(move || {
            let r = vault.shred(&id, Actor::Admin, &reason, OffsetDateTime::now_utc())?;
            let path = vault.sealed_path(&r.agreement);
            Ok(sealed_data(r, &path))
        })
        .await?;
        Ok(Response::new(r))
    }
}
