//! Audit checkpoints between members: this node's go out on the
//! `Checkpoints` gossip topic, the other members' are kept as witnesses
//! (the rules are `crate::audit::PeerCheckpoints`'s).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use crate::audit::{Announcement, AuditLog, Offered};
use crate::identity::PeerId;
use crate::p2p::{Client, GossipId, GossipVerdict, Topic};
use time::OffsetDateTime;
use tokio::time::Instant;

use super::Node;

/// How often the sender looks for a new checkpoint or new members.
const TICK: Duration = Duration::from_secs(1);
/// A member admitted this long ago has told us its subscriptions, so a
/// checkpoint published now reaches it.
const SETTLE: Duration = Duration::from_secs(2);
/// The latest checkpoint is sent again this often even when nothing
/// changed, for members whose copy was lost.
const REANNOUNCE: Duration = Duration::from_secs(600);

/// Sends each new checkpoint of this node's log to the admitted members,
/// and the latest one to every member admitted since. A checkpoint that
/// cannot go out yet (no member connected) is tried again at the next tick.
/// Runs until the swarm is gone.
pub async fn announce(client: Client, audit: Arc<AuditLog>, me: PeerId) {
    let mut latest = audit.checkpoints();
    let mut pending = latest.borrow_and_update().is_some();
    // Both hold only members admitted now, so they are bounded by the
    // connection limit.
    let mut admitted_at: HashMap<PeerId, Instant> = HashMap::new();
    let mut reached: HashSet<PeerId> = HashSet::new();
    let mut last_sent: Option<Instant> = None;
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Ok(admitted) = client.admitted_peers().await else {
            return;
        };
        let now = Instant::now();
        let current: HashSet<PeerId> = admitted.into_iter().map(|p| p.peer_id).collect();
        admitted_at.retain(|p, _| current.contains(p));
        reached.retain(|p| current.contains(p));
        for p in &current {
            admitted_at.entry(*p).or_insert(now);
        }
        if latest.has_changed().unwrap_or(false) {
            pending = true;
        }
        let settled: HashSet<PeerId> = admitted_at
            .iter()
            .filter(|(_, at)| now.duration_since(**at) >= SETTLE)
            .map(|(p, _)| *p)
            .collect();
        let newcomer = settled.iter().any(|p| !reached.contains(p));
        let stale = last_sent.is_some_and(|t| now.duration_since(t) >= REANNOUNCE);
        if settled.is_empty() || !(pending || newcomer || stale) {
            continue;
        }
        let Some(checkpoint) = latest.borrow_and_update().clone() else {
            continue;
        };
        let (number, seq) = (checkpoint.number, checkpoint.seq);
        let bytes = match (Announcement {
            peer: me.to_string(),
            checkpoint,
        })
        .encode()
        {
            Ok(b) => b,
            Err(e) => {
                tracing::error!("cannot encode audit checkpoint {number}: {e}");
                pending = false;
                continue;
            }
        };
        match client.publish(Topic::Checkpoints, bytes).await {
            Ok(()) => {
                tracing::debug!(number, seq, "audit checkpoint sent to the members");
                pending = false;
                reached = settled;
                last_sent = Some(now);
            }
            Err(e) => tracing::debug!(number, "audit checkpoint not sent yet: {e}"),
        }
    }
}

/// A member's checkpoint relayed by `from`: kept if it is genuine, from an
/// admitted member, and moves that member's log forward; forwarded only
/// then.
pub async fn on_gossip(
    node: &Node,
    from: PeerId,
    author: Option<PeerId>,
    data: Vec<u8>,
    id: GossipId,
) {
    let admitted: HashSet<PeerId> = match node.client.admitted_peers().await {
        Ok(peers) => peers.into_iter().map(|p| p.peer_id).collect(),
        Err(e) => {
            tracing::warn!("cannot list admitted peers: {e}");
            HashSet::new()
        }
    };
    let witness = node.witness.clone();
    let author = author.unwrap_or(from);
    let outcome = tokio::task::spawn_blocking(move || {
        witness.receive(
            &data,
            from,
            author,
            |p| admitted.contains(p),
            OffsetDateTime::now_utc(),
        )
    })
    .await;
    let verdict = match outcome {
        Ok(Ok(Offered::Stored)) => GossipVerdict::Accept,
        Ok(Ok(Offered::AlreadyHeld)) => GossipVerdict::Ignore,
        Ok(Err(e)) if e.is_invalid() => GossipVerdict::Reject,
        Ok(Err(_)) => GossipVerdict::Ignore,
        Err(e) => {
            tracing::error!(%from, "peer checkpoint task: {e}");
            GossipVerdict::Ignore
        }
    };
    if let Err(e) = node.client.report_gossip(id, verdict).await {
        tracing::warn!("cannot report a gossip verdict: {e}");
    }
}
