//! The node's main loop: the one consumer of the swarm's [`P2pEvent`]s.
//!
//! Admission outcomes and revocation lists are handled here; everything the
//! catalog owns goes through [`on_catalog_event`], the single place where
//! the catalog service is attached.

use std::sync::Arc;

use bayspace_connector::admission::{AdmissionError, RevocationOutcome};
use bayspace_connector::audit::{Actor, AuditEvent};
use bayspace_connector::identity::PeerId;
use bayspace_connector::p2p::{CatalogResponse, GossipId, GossipVerdict, P2pEvent, Topic};
use serde_json::json;
use time::OffsetDateTime;
use tokio::sync::mpsc;

use super::NodeContext;

pub async fn run(ctx: Arc<NodeContext>, mut events: mpsc::Receiver<P2pEvent>) {
    while let Some(event) = events.recv().await {
        match event {
            P2pEvent::PeerAdmitted(peer) => {
                tracing::info!(peer = %peer.peer_id, institution = %peer.institution, "peer admitted");
                on_catalog_event(&ctx, P2pEvent::PeerAdmitted(peer)).await;
            }
            P2pEvent::PeerRefused { peer, reason } => {
                tracing::warn!(%peer, %reason, "peer refused");
                audit_refusal(&ctx, &peer, &reason.to_string());
            }
            P2pEvent::Gossip {
                topic: Topic::Revocations,
                from,
                data,
                id,
                ..
            } => on_revocation_gossip(&ctx, from, &data, id).await,
            other => on_catalog_event(&ctx, other).await,
        }
    }
    tracing::debug!("p2p event channel closed");
}

fn audit_refusal(ctx: &NodeContext, peer: &PeerId, reason: &str) {
    if let Err(e) = ctx.audit.append(
        Actor::Peer(peer.to_string()),
        AuditEvent::AdmissionRefused,
        vec![peer.to_string()],
        json!({ "reason": reason }),
        OffsetDateTime::now_utc(),
    ) {
        tracing::error!(%peer, "cannot audit an admission refusal: {e}");
    }
}

/// A revocation list relayed by a member: forwarded only if it is genuine
/// and newer, and then in force (persisted, admitted peers re-checked)
/// before it is forwarded.
async fn on_revocation_gossip(ctx: &NodeContext, from: PeerId, data: &[u8], id: GossipId) {
    let verdict = match ctx.admission.offer_revocations(data) {
        Ok(RevocationOutcome::Accepted(body)) => {
            tracing::info!(%from, seq = body.seq, revoked = body.revoked.len(), "revocation list accepted");
            match ctx.client.recheck_all().await {
                Ok(n) => tracing::info!("{n} peer(s) disconnected after the revocation list"),
                Err(e) => tracing::error!("cannot re-check admitted peers: {e}"),
            }
            GossipVerdict::Accept
        }
        Ok(RevocationOutcome::NotNewer { .. }) => GossipVerdict::Ignore,
        Err(e @ (AdmissionError::Store(_) | AdmissionError::Poisoned)) => {
            tracing::error!(%from, "cannot keep a revocation list: {e}");
            GossipVerdict::Ignore
        }
        Err(e) => {
            tracing::warn!(%from, "revocation list rejected: {e}");
            GossipVerdict::Reject
        }
    };
    if let Err(e) = ctx.client.report_gossip(id, verdict).await {
        tracing::warn!("cannot report a gossip verdict: {e}");
    }
}

/// The seam where the federated catalog attaches to the network: descriptor
/// gossip, catalog page requests, DSP control requests, and newly admitted
/// peers (whose catalog is worth syncing). Until the catalog is attached the
/// node holds no datasets: it ignores announcements, serves an empty
/// catalog and leaves control requests unanswered, which the requester sees
/// as a failed request.
async fn on_catalog_event(ctx: &NodeContext, event: P2pEvent) {
    match event {
        P2pEvent::PeerAdmitted(_) => {}
        P2pEvent::Gossip { id, .. } => {
            if let Err(e) = ctx.client.report_gossip(id, GossipVerdict::Ignore).await {
                tracing::warn!("cannot report a gossip verdict: {e}");
            }
        }
        P2pEvent::InboundRequest { channel, .. } => {
            let empty = CatalogResponse {
                items: Vec::new(),
                next: None,
            };
            if let Err(e) = ctx.client.respond(channel, empty).await {
                tracing::warn!("cannot answer a catalog request: {e}");
            }
        }
        P2pEvent::InboundControl { peer, .. } => {
            tracing::warn!(%peer, "control request dropped: this node offers no negotiation yet");
        }
        P2pEvent::PeerRefused { .. } => {}
    }
}
