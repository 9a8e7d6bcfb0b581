//! `TransferService`: fetching the data of an agreement, with progress;
//! `DataService`: the data kept sealed in this node's store.

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;

use bayspace_connector::audit::Actor;
use bayspace_connector::crypto::CryptoError;
use bayspace_connector::export::{self, ExportError};
use bayspace_connector::transfers::{Destination, Progress, TransferError, Transfers};
use bayspace_connector::vault::{SealedRecord, VaultError};
use bayspace_contracts::agreement::AgreementId;
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::grpc::auth::{Caller, Role, require_admin, require_user};
use crate::proto::{self, DownloadChunk, DownloadRequest, FetchProgress, FetchRequest};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

#[derive(Clone)]
pub struct TransfersApi {
    pub transfers: Arc<Transfers>,
    /// Where an administrator's export may write on this host.
    pub export_dir: PathBuf,
}

/// Progress messages queued for a slow client before the transfer waits.
const PROGRESS_BUFFER: usize = 16;

/// Download chunks (each at most a segment, 1 MiB) decrypted ahead of a
/// slow client; the decryption waits beyond them, so a download holds a few
/// MiB whatever the size.
const DOWNLOAD_BUFFER: usize = 2;

fn status(e: &TransferError) -> Status {
    if let Some(full) = super::disk_full(e) {
        return full;
    }
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
    if let Some(full) = super::disk_full(e) {
        return full;
    }
    let msg = e.to_string();
    match e {
        VaultError::NotFound(_) => Status::not_found(msg),
        VaultError::WrongResearcher { .. } => Status::permission_denied(msg),
        VaultError::Incomplete(_)
        | VaultError::Shredded { .. }
        | VaultError::AlreadySealed(_)
        | VaultError::RetentionPassed { .. }
        | VaultError::RetentionEnded { .. } => Status::failed_precondition(msg),
        VaultError::OffsetPastEnd { .. } => Status::out_of_range(msg),
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

/// An administrator's export path: inside the export directory, or refused
/// before anything is written. A researcher never names a host path.
fn export_path(caller: &Caller, export_dir: &Path, out: &str) -> Result<PathBuf, Status> {
    if caller.role != Role::Admin {
        return Err(Status::permission_denied(format!(
            "out: researcher {} may not name a path on the node's host; download the data to your \
             own machine with DataService.Download (`bayspace transfer fetch AGREEMENT --out PATH`)",
            caller.id
        )));
    }
    export::resolve(export_dir, out).map_err(|e| match e {
        ExportError::Io { .. } => Status::internal(format!("out: {e}")),
        _ => Status::invalid_argument(format!("out: {e}")),
    })
}

type FetchStream = Pin<Box<dyn Stream<Item = Result<FetchProgress, Status>> + Send>>;
type DownloadStream = Pin<Box<dyn Stream<Item = Result<DownloadChunk, Status>> + Send>>;

#[tonic::async_trait]
impl proto::transfer_service_server::TransferService for TransfersApi {
    type FetchStream = FetchStream;

    async fn fetch(&self, req: Request<FetchRequest>) -> Result<Response<FetchStream>, Status> {
        let caller = require_user(&req)?.clone();
        let req = req.into_inner();
        let id = parse_agreement(&req.agreement_id)?;
        let out = match (req.keep_sealed, req.out.is_empty()) {
            (_, true) => None,
            (false, false) => Some(export_path(&caller, &self.export_dir, &req.out)?),
            (true, false) => {
                return Err(Status::invalid_argument(
                    "out: give either `out` or `keep_sealed`, not both",
                ));
            }
        };
        let researcher = match caller.role {
            Role::Admin => None,
            Role::Researcher => Some(caller.id.clone()),
        };
        let (tx, rx) = mpsc::channel(PROGRESS_BUFFER);
        let transfers = self.transfers.clone();
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
        let vault = self.transfers.vault().clone();
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

    type DownloadStream = DownloadStream;

    async fn download(
        &self,
        req: Request<DownloadRequest>,
    ) -> Result<Response<DownloadStream>, Status> {
        let caller = require_user(&req)?;
        let researcher = (caller.role == Role::Researcher).then(|| caller.id.clone());
        let client = req
            .remote_addr()
            .map_or_else(|| "unknown".to_owned(), |a| a.to_string());
        let req = req.into_inner();
        let id = parse_agreement(&req.agreement_id)?;
        let transfers = self.transfers.clone();
        // The checks and the audit entry come before the stream starts, so a
        // refusal is the call's status rather than a broken stream.
        let mut download = tokio::task::spawn_blocking(move || {
            transfers.download(
                &id,
                researcher.as_deref(),
                &client,
                req.offset,
                OffsetDateTime::now_utc(),
            )
        })
        .await
        .map_err(|e| Status::internal(format!("sealed storage task: {e}")))?
        .map_err(|e| status(&e))?;
        let (tx, rx) = mpsc::channel(DOWNLOAD_BUFFER);
        tokio::task::spawn_blocking(move || {
            let mut buf = Vec::new();
            loop {
                let item = match download.next_chunk(&mut buf, OffsetDateTime::now_utc()) {
                    Ok(true) => Ok(DownloadChunk {
                        data: std::mem::take(&mut buf),
                        size: download.size(),
                        ..DownloadChunk::default()
                    }),
                    Ok(false) => {
                        let _ = tx.blocking_send(Ok(DownloadChunk {
                            done: true,
                            size: download.size(),
                            blake3: download.hash().to_string(),
                            ..DownloadChunk::default()
                        }));
                        return;
                    }
                    Err(e) => {
                        tracing::warn!("download stopped: {e}");
                        let _ = tx.blocking_send(Err(vault_status(&e)));
                        return;
                    }
                };
                // A client that went away ends the download.
                if tx.blocking_send(item).is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn open(
        &self,
        req: Request<proto::DataOpenRequest>,
    ) -> Result<Response<proto::DataOpenResponse>, Status> {
        let caller = require_user(&req)?.clone();
        let req = req.into_inner();
        let id = parse_agreement(&req.agreement_id)?;
        let out = export_path(&caller, &self.export_dir, &req.out)?;
        let vault = self.transfers.vault().clone();
        let target = out.clone();
        let r =
            blocking(move || vault.open_to(&id, None, &target, OffsetDateTime::now_utc())).await?;
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
        let vault = self.transfers.vault().clone();
        let r = blocking(move || {
            let r = vault.shred(&id, Actor::Admin, &reason, OffsetDateTime::now_utc())?;
            let path = vault.sealed_path(&r.agreement);
            Ok(sealed_data(r, &path))
        })
        .await?;
        Ok(Response::new(r))
    }
}
