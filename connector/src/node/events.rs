//! The node's main loop: the one consumer of the swarm's [`P2pEvent`]s.
//!
//! Admission outcomes and revocation lists are handled here; negotiation
//! messages go to the negotiator; everything the catalog owns goes through
//! [`on_catalog_event`], the single place where the catalog service is
//! attached.

use std::collections::HashSet;
use std::sync::Arc;

use crate::admission::{AdmissionError, RevocationOutcome};
use crate::audit::{Actor, AuditEvent};
use crate::catalog::{CatalogError, IngestOutcome, sync_from};
use crate::identity::PeerId;
use crate::p2p::{CatalogResponse, ControlResponse, GossipId, GossipVerdict, P2pEvent, Topic};
use serde_json::json;
use time::OffsetDateTime;
use tokio::sync::mpsc;

use super::Node;

pub async fn run(node: Arc<Node>, mut events: mpsc::Receiver<P2pEvent>) {
    while let Some(event) = events.recv().await {
        match event {
            P2pEvent::PeerAdmitted(peer) => {
                tracing::info!(peer = %peer.peer_id, institution = %peer.institution, "peer admitted");
                node.negotiator.peer_admitted(&peer.peer_id);
                on_catalog_event(&node, P2pEvent::PeerAdmitted(peer)).await;
            }
            P2pEvent::PeerRefused { peer, reason } => {
                tracing::warn!(%peer, %reason, "peer refused");
                audit_refusal(&node, &peer, &reason.to_string());
            }
            P2pEvent::Gossip {
                topic: Topic::Revocations,
                from,
                data,
                id,
                ..
            } => on_revocation_gossip(&node, from, &data, id).await,
            P2pEvent::Gossip {
                topic: Topic::Checkpoints,
                from,
                author,
                data,
                id,
            } => super::witness::on_gossip(&node, from, author, data, id).await,
            P2pEvent::InboundControl {
                peer,
                request,
                channel,
            } => {
                // Answering may wait on the store and the audit log; the
                // loop must keep serving meanwhile.
                let node = node.clone();
                tokio::spawn(async move {
                    let reply = node.negotiator.on_control(peer, &request.0).await;
                    if let Err(e) = node
                        .client
                        .respond_control(channel, ControlResponse(reply))
                        .await
                    {
                        tracing::warn!(%peer, "cannot answer a negotiation message: {e}");
                    }
                });
            }
            other => on_catalog_event(&node, other).await,
        }
    }
    tracing::debug!("p2p event channel closed");
}

fn audit_refusal(node: &Node, peer: &PeerId, reason: &str) {
    if let Err(e) = node.audit.append(
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
async fn on_revocation_gossip(node: &Node, from: PeerId, data: &[u8], id: GossipId) {
    let verdict = match node.admission.offer_revocations(data) {
        Ok(RevocationOutcome::Accepted(body)) => {
            tracing::info!(%from, seq = body.seq, revoked = body.revoked.len(), "revocation list accepted");
            match node.client.recheck_all().await {
                Ok(n) => tracing::info!("{n} peer(s) disconnected after the revocation list"),
                Err(e) => tracing::error!("cannot re-check admitted peers: {e}"),
            }
            node.drop_revoked_publishers();
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
    if let Err(e) = node.client.report_gossip(id, verdict).await {
        tracing::warn!("cannot report a gossip verdict: {e}");
    }
}

/// The federated catalog on the network: descriptor gossip, catalog page
/// requests from members, and a catalog sync from every newly admitted
/// peer.
async fn on_catalog_event(node: &Arc<Node>, event: P2pEvent) {
    match event {
        P2pEvent::PeerAdmitted(peer) => {
            // Syncing takes several round trips; the loop must keep serving.
            let node = node.clone();
            tokio::spawn(async move {
                let admitted = admitted_set(&node).await;
                let report = sync_from(
                    &node.client,
                    peer.peer_id,
                    &node.catalog,
                    |p| admitted.contains(p),
                    OffsetDateTime::now_utc(),
                )
                .await;
                match report {
                    Ok(r) => tracing::info!(
                        peer = %peer.peer_id, pages = r.pages, stored = r.stored,
                        refused = r.refused, "catalog synced"
                    ),
                    Err(e) => tracing::warn!(peer = %peer.peer_id, "catalog sync failed: {e}"),
                }
            });
        }
        P2pEvent::Gossip {
            topic: Topic::Descriptors,
            from,
            data,
            id,
            ..
        } => {
            let admitted = admitted_set(node).await;
            let verdict = match node.catalog.ingest_bytes(
                &data,
                |p| admitted.contains(p),
                OffsetDateTime::now_utc(),
            ) {
                Ok(IngestOutcome::Stored) => GossipVerdict::Accept,
                Ok(IngestOutcome::Unchanged | IngestOutcome::Stale) => GossipVerdict::Ignore,
                Err(CatalogError::Store(e)) => {
                    tracing::error!(%from, "cannot store an announced descriptor: {e}");
                    GossipVerdict::Ignore
                }
                Err(e) => {
                    tracing::warn!(%from, "announced descriptor refused: {e}");
                    GossipVerdict::Reject
                }
            };
            if let Err(e) = node.client.report_gossip(id, verdict).await {
                tracing::warn!("cannot report a gossip verdict: {e}");
            }
        }
        P2pEvent::Gossip { id, topic, .. } => {
            tracing::debug!(?topic, "gossip on a topic the catalog does not own");
            if let Err(e) = node.client.report_gossip(id, GossipVerdict::Ignore).await {
                tracing::warn!("cannot report a gossip verdict: {e}");
            }
        }
        P2pEvent::InboundRequest {
            peer,
            request,
            channel,
        } => {
            let page = node
                .catalog
                .page(request.after.as_deref(), request.limit)
                .unwrap_or_else(|e| {
                    tracing::warn!(%peer, "catalog page refused: {e}");
                    CatalogResponse {
                        items: Vec::new(),
                        next: None,
                    }
                });
            if let Err(e) = node.client.respond(channel, page).await {
                tracing::warn!("cannot answer a catalog request: {e}");
            }
        }
        // Handled by `run`.
        P2pEvent::InboundControl { .. } | P2pEvent::PeerRefused { .. } => {}
    }
}

/// The PeerIds admitted right now, ourselves included (our own datasets are
/// always ours to keep).
async fn admitted_set(node: &Node) -> HashSet<String> {
    let mut set: HashSet<String> = match node.client.admitted_peers().await {
        Ok(peers) => peers.into_iter().map(|p| p.peer_id.to_string()).collect(),
        Err(e) => {
            tracing::warn!("cannot list admitted peers: {e}");
            HashSet::new()
        }
    };
    set.insert(node.peer_id.to_string());
    set
}
