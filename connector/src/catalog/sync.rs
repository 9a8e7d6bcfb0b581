//! Pulling a peer's catalog page by page.

use libp2p::PeerId;
use time::OffsetDateTime;

use super::{Catalog, CatalogError, IngestOutcome, MAX_PAGE_ITEMS};
use crate::p2p::{CatalogRequest, Client, P2pError};

/// Most pages one sync asks for (200 000 descriptors at full pages); a
/// larger catalog is finished by the next sync.
pub const MAX_SYNC_PAGES: usize = 1000;
/// Refusals kept in a report; the rest are only counted.
const MAX_REPORTED_REFUSALS: usize = 16;

/// What one sync did.
#[derive(Debug, Default)]
pub struct SyncReport {
    pub pages: usize,
    pub stored: usize,
    pub unchanged: usize,
    pub stale: usize,
    /// Items refused (malformed, forged, not admitted, ...), skipped.
    pub refused: usize,
    /// The first few refusals, for the log.
    pub refusals: Vec<CatalogError>,
    /// False when [`MAX_SYNC_PAGES`] was reached before the last page.
    pub complete: bool,
}

/// Why a sync stopped early. Bad items do not stop it.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("catalog request to {peer} failed: {source}")]
    Request {
        peer: PeerId,
        #[source]
        source: P2pError,
    },
    #[error("peer {peer} sent cursor {next:?}, which does not advance past {after:?}")]
    NoProgress {
        peer: PeerId,
        after: Option<String>,
        next: String,
    },
    #[error("peer {peer} sent {got} items for a page of at most {limit}")]
    PageTooLong {
        peer: PeerId,
        got: usize,
        limit: u32,
    },
    #[error("the local catalog failed during sync: {0}")]
    Local(#[source] CatalogError),
}

/// Request `peer`'s catalog from the start until its last page (at most
/// [`MAX_SYNC_PAGES`]), ingesting each item.
pub async fn sync_from(
    client: &Client,
    peer: PeerId,
    catalog: &Catalog,
    admitted: impl Fn(&str) -> bool,
    now: OffsetDateTime,
) -> Result<SyncReport, SyncError> {
    let mut report = SyncReport::default();
    let mut after: Option<String> = None;
    while report.pages < MAX_SYNC_PAGES {
        let request = CatalogRequest {
            after: after.clone(),
            limit: MAX_PAGE_ITEMS,
        };
        let page = client
            .request(peer, request)
            .await
            .map_err(|source| SyncError::Request { peer, source })?;
        report.pages += 1;
        if page.items.len() > MAX_PAGE_ITEMS as usize {
            return Err(SyncError::PageTooLong {
                peer,
                got: page.items.len(),
                limit: MAX_PAGE_ITEMS,
            });
        }
        for item in &page.items {
            match catalog.ingest_bytes(item, &admitted, now) {
                Ok(IngestOutcome::Stored) => report.stored += 1,
                Ok(IngestOutcome::Unchanged) => report.unchanged += 1,
                Ok(IngestOutcome::Stale) => report.stale += 1,
                Err(e @ CatalogError::Store(_)) => return Err(SyncError::Local(e)),
                Err(e) => {
                    report.refused += 1;
                    if report.refusals.len() < MAX_REPORTED_REFUSALS {
                        report.refusals.push(e);
                    }
                }
            }
        }
        match page.next {
            None => {
                report.complete = true;
                break;
            }
            // Cursors are dataset ids in ascending order; one that does not
            // move forward would loop forever.
            Some(next) if after.as_ref().is_some_and(|a| next <= *a) => {
                return Err(SyncError::NoProgress { peer, after, next });
            }
            Some(next) => after = Some(next),
        }
    }
    Ok(report)
}
