//! `BackupService`: a consistent snapshot of the live store for `bayspace
//! backup`, which cannot open the store itself while the node holds it.

use std::pin::Pin;
use std::sync::Arc;

use bayspace_connector::audit::AuditLog;
use bayspace_connector::backup::Snapshotted;
use bayspace_connector::store::Store;
use time::OffsetDateTime;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::grpc::auth::require_admin;
use crate::proto;

const CHUNK: usize = 1 << 20;

pub struct BackupApi {
    pub audit: Arc<AuditLog>,
    pub store: Arc<dyn Store>,
}

type ChunkStream = Pin<Box<dyn Stream<Item = Result<proto::SnapshotChunk, Status>> + Send>>;

#[tonic::async_trait]
impl proto::backup_service_server::BackupService for BackupApi {
    type SnapshotStream = ChunkStream;

    async fn snapshot(
        &self,
        req: Request<proto::SnapshotRequest>,
    ) -> Result<Response<Self::SnapshotStream>, Status> {
        require_admin(&req)?;
        let (audit, store) = (self.audit.clone(), self.store.clone());
        let bytes = tokio::task::spawn_blocking(move || {
            Snapshotted::take(&audit, &*store, OffsetDateTime::now_utc())?.to_cbor()
        })
        .await
        .map_err(|e| Status::internal(format!("snapshot task: {e}")))?
        .map_err(|e| Status::internal(e.to_string()))?;
        tracing::info!(bytes = bytes.len(), "store snapshot taken for a backup");
        let chunks: Vec<Result<proto::SnapshotChunk, Status>> = bytes
            .chunks(CHUNK)
            .map(|c| Ok(proto::SnapshotChunk { data: c.to_vec() }))
            .collect();
        Ok(Response::new(Box::pin(tokio_stream::iter(chunks))))
    }
}
