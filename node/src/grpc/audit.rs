//! `AuditService`: the audit log leaves the node as JSON lines, streamed so
//! that a long log never sits whole in memory.

use std::io::Write;
use std::pin::Pin;
use std::sync::Arc;

use bayspace_connector::audit::{AuditLog, PeerCheckpoints};
use bayspace_connector::identity::PeerId;
use time::OffsetDateTime;
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::grpc::auth::require_admin;
use crate::proto;

const CHUNK: usize = 64 * 1024;
/// Chunks in flight between the exporting thread and the client.
const IN_FLIGHT: usize = 8;

#[derive(Clone)]
pub struct AuditApi {
    pub log: Arc<AuditLog>,
    pub witness: Arc<PeerCheckpoints>,
}

/// A `Write` that ships full chunks to the response stream, blocking the
/// exporting thread while the client is slow (back-pressure).
struct ChunkWriter {
    buf: Vec<u8>,
    tx: mpsc::Sender<Result<proto::AuditChunk, Status>>,
}

impl ChunkWriter {
    fn ship(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let data = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        self.tx
            .blocking_send(Ok(proto::AuditChunk { data }))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "client went away"))
    }
}

impl Write for ChunkWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(bytes);
        if self.buf.len() >= CHUNK {
            self.ship()?;
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.ship()
    }
}

#[tonic::async_trait]
impl proto::audit_service_server::AuditService for AuditApi {
    type ExportStream = Pin<Box<dyn Stream<Item = Result<proto::AuditChunk, Status>> + Send>>;

    async fn export(
        &self,
        req: Request<proto::ExportAuditRequest>,
    ) -> Result<Response<Self::ExportStream>, Status> {
        require_admin(&req)?;
        // Sign everything written so far, so the export can be verified to
        // its last line.
        self.log
            .checkpoint(OffsetDateTime::now_utc())
            .map_err(|e| {
                super::disk_full(&e)
                    .unwrap_or_else(|| Status::internal(format!("audit checkpoint: {e}")))
            })?;
        let (tx, rx) = mpsc::channel(IN_FLIGHT);
        let log = self.log.clone();
        tokio::task::spawn_blocking(move || {
            let mut w = ChunkWriter {
                buf: Vec::with_capacity(CHUNK),
                tx: tx.clone(),
            };
            let result = log
                .export(&mut w)
                .map_err(|e| e.to_string())
                .and_then(|_| w.flush().map_err(|e| e.to_string()));
            if let Err(e) = result {
                let _ = tx.blocking_send(Err(Status::internal(format!("audit export: {e}"))));
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn peer_checkpoints(
        &self,
        req: Request<proto::PeerCheckpointsRequest>,
    ) -> Result<Response<proto::PeerCheckpointsResponse>, Status> {
        require_admin(&req)?;
        let peer = req.into_inner().peer_id;
        let peer: PeerId = peer.parse().map_err(|e| {
            Status::invalid_argument(format!("peer_id `{peer}` is not a PeerId: {e}"))
        })?;
        let witness = self.witness.clone();
        let data = tokio::task::spawn_blocking(move || witness.export(&peer.to_string()))
            .await
            .map_err(|e| Status::internal(format!("peer checkpoints: {e}")))?
            .map_err(|e| Status::internal(format!("peer checkpoints: {e}")))?;
        Ok(Response::new(proto::PeerCheckpointsResponse { data }))
    }
}
