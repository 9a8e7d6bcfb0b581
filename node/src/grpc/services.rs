//! The node's own services: status, researchers, revocation lists.

use std::sync::Arc;
use std::time::SystemTime;

use bayspace_connector::admission::AdmissionError;
use bayspace_connector::identity::{Orcid, timestamp};
use bayspace_connector::node::RevocationError;
use bayspace_connector::researchers::ResearcherError;
use time::OffsetDateTime;
use tonic::{Request, Response, Status};

use super::auth::require_admin;
use crate::daemon::NodeContext;
use crate::proto;

fn internal(what: &str, e: impl std::fmt::Display) -> Status {
    tracing::error!("{what}: {e}");
    Status::internal(format!("{what}: {e}"))
}

fn rfc3339(t: SystemTime) -> String {
    timestamp::format(&timestamp::whole_seconds(OffsetDateTime::from(t))).unwrap_or_default()
}

#[derive(Clone)]
pub struct NodeApi(pub Arc<NodeContext>);

#[tonic::async_trait]
impl proto::node_service_server::NodeService for NodeApi {
    async fn status(
        &self,
        req: Request<proto::StatusRequest>,
    ) -> Result<Response<proto::StatusResponse>, Status> {
        require_admin(&req)?;
        let ctx = &self.0;
        let stats = ctx
            .node
            .client
            .stats()
            .await
            .map_err(|e| internal("p2p engine", e))?;
        let listen = ctx
            .node
            .client
            .listen_addrs()
            .await
            .map_err(|e| internal("p2p engine", e))?;
        let mut admitted: Vec<proto::AdmittedPeer> = stats
            .admitted
            .iter()
            .map(|p| proto::AdmittedPeer {
                peer_id: p.peer_id.to_string(),
                institution: p.institution.clone(),
                region: ctx
                    .node
                    .admission
                    .region_of(&p.peer_id)
                    .map(|r| r.to_string())
                    .unwrap_or_default(),
                credential_expires: rfc3339(p.expires_at),
            })
            .collect();
        admitted.sort_by(|a, b| a.peer_id.cmp(&b.peer_id));
        Ok(Response::new(proto::StatusResponse {
            peer_id: ctx.node.peer_id.to_string(),
            institution: ctx.node.config.institution.clone(),
            region: ctx.node.config.region.to_string(),
            listen_addrs: listen.iter().map(ToString::to_string).collect(),
            admitted_peers: admitted,
            catalog_size: ctx.node.catalog.len() as u64,
            uptime_seconds: ctx.started.elapsed().as_secs(),
            admission_refusals: stats.refusals,
            version: env!("CARGO_PKG_VERSION").into(),
        }))
    }
}

#[derive(Clone)]
pub struct ResearcherApi(pub Arc<NodeContext>);

fn researcher(r: bayspace_connector::researchers::ResearcherRecord) -> proto::Researcher {
    proto::Researcher {
        id: r.id,
        name: r.name,
        orcid: r.orcid.map(|o| o.to_string()).unwrap_or_default(),
        added_at: timestamp::format(&r.added_at).unwrap_or_default(),
    }
}

#[tonic::async_trait]
impl proto::researcher_service_server::ResearcherService for ResearcherApi {
    async fn add(
        &self,
        req: Request<proto::AddResearcherRequest>,
    ) -> Result<Response<proto::AddResearcherResponse>, Status> {
        require_admin(&req)?;
        let r = req.into_inner();
        let orcid = match r.orcid.trim() {
            "" => None,
            o => Some(
                o.parse::<Orcid>()
                    .map_err(|e| Status::invalid_argument(format!("orcid: {e}")))?,
            ),
        };
        let (record, token) = self
            .0
            .node
            .researchers
            .add(&r.name, orcid, OffsetDateTime::now_utc())
            .map_err(|e| match e {
                ResearcherError::BadName(_) => Status::invalid_argument(e.to_string()),
                e => super::disk_full(&e).unwrap_or_else(|| internal("researcher registry", e)),
            })?;
        tracing::info!(id = %record.id, name = %record.name, "researcher added");
        Ok(Response::new(proto::AddResearcherResponse {
            id: record.id,
            token,
        }))
    }

    async fn list(
        &self,
        req: Request<proto::ListResearchersRequest>,
    ) -> Result<Response<proto::ListResearchersResponse>, Status> {
        require_admin(&req)?;
        let list = self
            .0
            .node
            .researchers
            .list()
            .map_err(|e| internal("researcher registry", format!("{e:#}")))?;
        Ok(Response::new(proto::ListResearchersResponse {
            researchers: list.into_iter().map(researcher).collect(),
        }))
    }

    async fn remove(
        &self,
        req: Request<proto::RemoveResearcherRequest>,
    ) -> Result<Response<proto::RemoveResearcherResponse>, Status> {
        require_admin(&req)?;
        let id = req.into_inner().id;
        let removed = self
            .0
            .node
            .researchers
            .remove(&id)
            .map_err(|e| internal("researcher registry", format!("{e:#}")))?;
        if !removed {
            return Err(Status::not_found(format!("no researcher with id `{id}`")));
        }
        tracing::info!(%id, "researcher removed");
        Ok(Response::new(proto::RemoveResearcherResponse {}))
    }
}

pub struct RevocationApi(pub Arc<NodeContext>);

#[tonic::async_trait]
impl proto::revocation_service_server::RevocationService for RevocationApi {
    async fn publish(
        &self,
        req: Request<proto::PublishRevocationsRequest>,
    ) -> Result<Response<proto::PublishRevocationsResponse>, Status> {
        require_admin(&req)?;
        let published = self
            .0
            .node
            .publish_revocations(req.into_inner().list)
            .await
            .map_err(|e| match e {
                RevocationError::NotNewer { .. } => Status::failed_precondition(e.to_string()),
                RevocationError::Admission(AdmissionError::Store(_) | AdmissionError::Poisoned)
                | RevocationError::P2p(_) => internal("revocation list", e),
                RevocationError::Admission(_) => Status::invalid_argument(e.to_string()),
            })?;
        Ok(Response::new(proto::PublishRevocationsResponse {
            sequence: published.body.seq,
            revoked_serials: published.body.revoked.into_iter().collect(),
            disconnected: published.disconnected.into_iter().collect(),
        }))
    }
}
