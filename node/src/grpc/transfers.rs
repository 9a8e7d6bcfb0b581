//! `TransferService`: fetching the data of an agreement, with progress.

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use bayspace_connector::transfers::{Progress, TransferError, Transfers};
use bayspace_contracts::agreement::AgreementId;
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::grpc::auth::{Role, require_user};
use crate::proto::{self, FetchProgress, FetchRequest};

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
        TransferError::Unreachable { .. } => Status::unavailable(msg),
        _ => Status::aborted(msg),
    }
}

type FetchStream = Pin<Box<dyn Stream<Item = Result<FetchProgress, Status>> + Send>>;

#[tonic::async_trait]
impl proto::transfer_service_server::TransferService for TransfersApi {
    type FetchStream = FetchStream;

    async fn fetch(&self, req: Request<FetchRequest>) -> Result<Response<FetchStream>, Status> {
        let caller = require_user(&req)?.clone();
        let req = req.into_inner();
        let id: AgreementId = req
            .agreement_id
            .parse()
            .map_err(|e| Status::invalid_argument(format!("agreement_id: {e}")))?;
        let out = PathBuf::from(&req.out);
        if req.out.trim().is_empty() || !out.is_absolute() {
            return Err(Status::invalid_argument(format!(
                "out: `{}` must be an absolute path on the node's host",
                req.out
            )));
        }
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
            let result = transfers
                .fetch(&id, researcher.as_deref(), &out, move |p: Progress| {
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
