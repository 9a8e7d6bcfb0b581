//! The node's Prometheus metrics.
//!
//! One process-wide registry ([`global`]): the code that does the work
//! counts it where it happens (admission, releases, fetches), so nothing has
//! to thread a handle through every constructor. Values that describe state
//! rather than events (negotiations by state, pending approvals, filings,
//! audit entries, store size) are read from the store when scraped
//! ([`Metrics::observe`]), so they are right after a restart too.
//!
//! Every label takes its value from a closed set: enum variants, the
//! `&'static str` codes of refusals, and gRPC method names checked against
//! the API's own descriptor by the caller. No dataset title, researcher name
//! or address ever becomes a label, so a peer cannot grow the series set.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::LazyLock;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use bayspace_contracts::filing::{FilingDue, deadline};
use bayspace_contracts::negotiation::{Role, State};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;
use time::{Date, OffsetDateTime};

use crate::audit::AuditLog;
use crate::negotiator::Negotiator;
use crate::p2p::AdmissionRefusal;

/// A filing is "due soon" when its deadline is at most this many working
/// days away.
pub const DUE_SOON_WORKING_DAYS: u32 = 3;

/// Every value of the `reason` label of admission refusals.
pub const REFUSAL_REASONS: [&str; 9] = [
    "malformed",
    "untrusted",
    "expired",
    "revoked",
    "wrong-peer",
    "address-outside-prefixes",
    "credential-too-large",
    "no-ip-address",
    "no-credential",
];

/// An admission refusal's kind, kebab-case.
pub fn refusal_reason(r: &AdmissionRefusal) -> &'static str {
    match r {
        AdmissionRefusal::Malformed(_) => "malformed",
        AdmissionRefusal::Untrusted(_) => "untrusted",
        AdmissionRefusal::Expired => "expired",
        AdmissionRefusal::Revoked(_) => "revoked",
        AdmissionRefusal::WrongPeer(_) => "wrong-peer",
        AdmissionRefusal::AddressOutsidePrefixes(_) => "address-outside-prefixes",
        AdmissionRefusal::CredentialTooLarge { .. } => "credential-too-large",
        AdmissionRefusal::NoIpAddress(_) => "no-ip-address",
        AdmissionRefusal::NoCredential(_) => "no-credential",
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

/// `state` is the DSP name of the state.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NegotiationLabels {
    pub role: &'static str,
    pub state: &'static str,
}

#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum ReleaseOutcome {
    Completed,
    Refused,
    Failed,
}

impl ReleaseOutcome {
    fn name(self) -> &'static str {
        match self {
            ReleaseOutcome::Completed => "completed",
            ReleaseOutcome::Refused => "refused",
            ReleaseOutcome::Failed => "failed",
        }
    }
}

/// `reason` is a refusal code (`ReleaseRefusal::code` or one of the
/// transfer protocol's own codes, all `&'static str`), or `none`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReleaseLabels {
    pub outcome: &'static str,
    pub reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RoleOnly {
    pub role: &'static str,
}

/// `status` is `due-soon` or `overdue`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FilingLabels {
    pub status: &'static str,
}

/// `method` is `/package.Service/Method` from the API's descriptor, or
/// `other`; `code` is a gRPC status code name.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GrpcLabels {
    pub method: &'static str,
    pub code: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GrpcMethod {
    pub method: &'static str,
}

fn seconds_histogram() -> Histogram {
    // 1 ms to about 9 minutes.
    Histogram::new(exponential_buckets(0.001, 2.0, 20))
}

fn transfer_histogram() -> Histogram {
    // 10 ms to about 2.9 hours.
    Histogram::new(exponential_buckets(0.01, 2.0, 21))
}

/// Every metric the node exposes.
pub struct Metrics {
    registry: Registry,
    pub admitted_peers: Gauge,
    pub admission_refusals: Family<ReasonLabel, Counter>,
    pub negotiations: Family<NegotiationLabels, Gauge>,
    pub pending_approvals: Gauge,
    pub oldest_pending_approval_seconds: Gauge<f64, AtomicU64>,
    pub releases: Family<ReleaseLabels, Counter>,
    pub released_bytes: Counter,
    pub received_bytes: Counter,
    pub transfer_duration: Family<RoleOnly, Histogram>,
    pub filings: Family<FilingLabels, Gauge>,
    pub audit_entries: Gauge,
    pub store_size_bytes: Gauge,
    pub grpc_requests: Family<GrpcLabels, Counter>,
    pub grpc_duration: Family<GrpcMethod, Histogram>,
}

static GLOBAL: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The process's metrics.
pub fn global() -> &'static Metrics {
    &GLOBAL
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::with_prefix("bayspace");
        let m = Metrics {
            registry: Registry::default(),
            admitted_peers: Gauge::default(),
            admission_refusals: Family::default(),
            negotiations: Family::default(),
            pending_approvals: Gauge::default(),
            oldest_pending_approval_seconds: Gauge::default(),
            releases: Family::default(),
            released_bytes: Counter::default(),
            received_bytes: Counter::default(),
            transfer_duration: Family::new_with_constructor(transfer_histogram),
            filings: Family::default(),
            audit_entries: Gauge::default(),
            store_size_bytes: Gauge::default(),
            grpc_requests: Family::default(),
            grpc_duration: Family::new_with_constructor(seconds_histogram),
        };
        registry.register(
            "build",
            "The node's version",
            Info::new(BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
            }),
        );
        registry.register(
            "admitted_peers",
            "Peers admitted now",
            m.admitted_peers.clone(),
        );
        registry.register(
            "admission_refusals",
            "Admission refusals since start, by reason",
            m.admission_refusals.clone(),
        );
        registry.register(
            "negotiations",
            "Stored negotiations, by role and DSP state",
            m.negotiations.clone(),
        );
        registry.register(
            "pending_approvals",
            "Requests waiting for this node's administrator",
            m.pending_approvals.clone(),
        );
        registry.register(
            "oldest_pending_approval_age_seconds",
            "Age of the oldest request waiting for approval (0 when none)",
            m.oldest_pending_approval_seconds.clone(),
        );
        registry.register(
            "releases",
            "Releases served as provider since start, by outcome and refusal reason",
            m.releases.clone(),
        );
        registry.register(
            "released_bytes",
            "Bytes of data released to consumers since start",
            m.released_bytes.clone(),
        );
        registry.register(
            "received_bytes",
            "Bytes of data received from providers since start",
            m.received_bytes.clone(),
        );
        registry.register(
            "transfer_duration_seconds",
            "Duration of completed transfers, by this node's role",
            m.transfer_duration.clone(),
        );
        registry.register(
            "filings",
            "Provider agreements whose filing package is not exported yet: due within 3 working days, or overdue",
            m.filings.clone(),
        );
        registry.register(
            "audit_entries",
            "Entries in the audit log",
            m.audit_entries.clone(),
        );
        registry.register(
            "store_size_bytes",
            "Size of the store directory on disk",
            m.store_size_bytes.clone(),
        );
        registry.register(
            "grpc_requests",
            "gRPC calls since start, by method and status code",
            m.grpc_requests.clone(),
        );
        registry.register(
            "grpc_request_duration_seconds",
            "Time to a gRPC call's response headers, by method",
            m.grpc_duration.clone(),
        );
        // Series that exist from the start, at zero, so that rates and
        // alerts see the first event as an increase.
        for reason in REFUSAL_REASONS {
            drop(m.admission_refusals.get_or_create(&ReasonLabel { reason }));
        }
        for (outcome, reason) in [
            (ReleaseOutcome::Completed, "none"),
            (ReleaseOutcome::Failed, "error"),
        ] {
            drop(m.releases.get_or_create(&ReleaseLabels {
                outcome: outcome.name(),
                reason,
            }));
        }
        for role in Role::ALL {
            drop(m.transfer_duration.get_or_create(&RoleOnly {
                role: role.as_str(),
            }));
        }
        Metrics { registry, ..m }
    }

    /// The registry in the Prometheus (OpenMetrics) text format.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }

    pub fn admission_refused(&self, reason: &AdmissionRefusal) {
        self.admission_refusals
            .get_or_create(&ReasonLabel {
                reason: refusal_reason(reason),
            })
            .inc();
    }

    pub fn release(&self, outcome: ReleaseOutcome, reason: &'static str) {
        self.releases
            .get_or_create(&ReleaseLabels {
                outcome: outcome.name(),
                reason,
            })
            .inc();
    }

    pub fn transfer_done(&self, role: Role, bytes: u64, took: Duration) {
        match role {
            Role::Provider => self.released_bytes.inc_by(bytes),
            Role::Consumer => self.received_bytes.inc_by(bytes),
        };
        self.transfer_duration
            .get_or_create(&RoleOnly {
                role: role.as_str(),
            })
            .observe(took.as_secs_f64());
    }

    pub fn grpc_call(&self, method: &'static str, code: &'static str, took: Duration) {
        self.grpc_requests
            .get_or_create(&GrpcLabels { method, code })
            .inc();
        self.grpc_duration
            .get_or_create(&GrpcMethod { method })
            .observe(took.as_secs_f64());
    }

    /// Sets the state gauges from the store, as of `now`.
    pub fn observe(&self, sources: &Sources<'_>, now: OffsetDateTime) {
        self.admitted_peers
            .set(i64::try_from(sources.admitted).unwrap_or(i64::MAX));
        match sources.negotiator.list(&crate::negotiator::Viewer::Admin) {
            Ok(records) => {
                let mut counts = std::collections::HashMap::new();
                let mut pending = 0i64;
                let mut oldest: Option<OffsetDateTime> = None;
                for r in &records {
                    *counts
                        .entry(NegotiationLabels {
                            role: r.role.as_str(),
                            state: r.state.dsp_name(),
                        })
                        .or_insert(0i64) += 1;
                    if r.is_pending_approval() {
                        pending += 1;
                        oldest = Some(oldest.map_or(r.requested_at, |o| o.min(r.requested_at)));
                    }
                }
                // Every combination is set, so a state that empties goes to
                // 0 instead of keeping its last value.
                for role in [Role::Provider, Role::Consumer] {
                    for state in State::ALL {
                        let labels = NegotiationLabels {
                            role: role.as_str(),
                            state: state.dsp_name(),
                        };
                        let n = counts.get(&labels).copied().unwrap_or(0);
                        self.negotiations.get_or_create(&labels).set(n);
                    }
                }
                self.pending_approvals.set(pending);
                let age = oldest.map_or(0.0, |o| (now - o).as_seconds_f64().max(0.0));
                self.oldest_pending_approval_seconds.set(age);
            }
            Err(e) => tracing::warn!("metrics: cannot read the negotiations: {e}"),
        }
        match filings(sources.negotiator, sources.holidays, now) {
            Ok((soon, overdue)) => {
                self.filings
                    .get_or_create(&FilingLabels { status: "due-soon" })
                    .set(soon);
                self.filings
                    .get_or_create(&FilingLabels { status: "overdue" })
                    .set(overdue);
            }
            Err(e) => tracing::warn!("metrics: cannot read the agreements: {e}"),
        }
        match sources.audit.last() {
            Ok(last) => {
                let n = last.map_or(0, |(seq, _)| seq.saturating_add(1));
                self.audit_entries.set(i64::try_from(n).unwrap_or(i64::MAX));
            }
            Err(e) => tracing::warn!("metrics: cannot read the audit log: {e}"),
        }
        self.store_size_bytes
            .set(i64::try_from(dir_size(sources.store_dir)).unwrap_or(i64::MAX));
    }
}

/// What [`Metrics::observe`] reads.
pub struct Sources<'a> {
    pub admitted: usize,
    pub negotiator: &'a Negotiator,
    pub audit: &'a AuditLog,
    pub store_dir: &'a Path,
    pub holidays: &'a BTreeSet<Date>,
}

/// Provider agreements on a contract route, in force, whose filing package
/// was never exported: (due within [`DUE_SOON_WORKING_DAYS`], overdue).
fn filings(
    negotiator: &Negotiator,
    holidays: &BTreeSet<Date>,
    now: OffsetDateTime,
) -> Result<(i64, i64), crate::negotiator::NegotiatorError> {
    let today = now
        .to_offset(bayspace_contracts::region::GBA_UTC_OFFSET)
        .date();
    let soon_limit = deadline(today, DUE_SOON_WORKING_DAYS, holidays).unwrap_or(Date::MAX);
    let (mut soon, mut overdue) = (0, 0);
    for a in negotiator.agreements()? {
        if a.role != Role::Provider || a.revoked.is_some() {
            continue;
        }
        let id = &a.signed.agreement.id;
        if negotiator.filing_exported(id)? {
            continue;
        }
        // Agreements on routes that owe no filing are refused here.
        let Ok(FilingDue::Contract(filing)) = negotiator.filing(id, holidays) else {
            continue;
        };
        if filing.deadline < today {
            overdue += 1;
        } else if filing.deadline <= soon_limit {
            soon += 1;
        }
    }
    Ok((soon, overdue))
}

/// Bytes of the regular files under `dir`; what cannot be read counts 0.
fn dir_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_size(&e.path()),
            Ok(t) if t.is_file() => e.metadata().map_or(0, |m| m.len()),
            _ => 0,
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_refusal_has_a_listed_reason() {
        use std::net::{IpAddr, Ipv6Addr};
        let peer = libp2p::PeerId::random();
        for r in [
            AdmissionRefusal::Malformed(String::new()),
            AdmissionRefusal::Untrusted(String::new()),
            AdmissionRefusal::Expired,
            AdmissionRefusal::Revoked(String::new()),
            AdmissionRefusal::WrongPeer(peer),
            AdmissionRefusal::AddressOutsidePrefixes(IpAddr::V6(Ipv6Addr::LOCALHOST)),
            AdmissionRefusal::CredentialTooLarge { len: 2, max: 1 },
            AdmissionRefusal::NoIpAddress(libp2p::Multiaddr::empty()),
            AdmissionRefusal::NoCredential(Duration::from_secs(1)),
        ] {
            assert!(REFUSAL_REASONS.contains(&refusal_reason(&r)), "{r}");
        }
    }

    #[test]
    fn text_format_names_every_metric_once() {
        let m = global();
        m.admission_refused(&AdmissionRefusal::Expired);
        m.release(ReleaseOutcome::Refused, "expired");
        m.transfer_done(Role::Provider, 10, Duration::from_millis(5));
        m.grpc_call(
            "/bayspace.v1.NodeService/Status",
            "OK",
            Duration::from_millis(1),
        );
        let text = m.encode().unwrap();
        for name in [
            "bayspace_build_info{version=",
            "bayspace_admission_refusals_total{reason=\"expired\"} 1",
            "bayspace_releases_total{outcome=\"refused\",reason=\"expired\"} 1",
            "bayspace_released_bytes_total 10",
            "bayspace_transfer_duration_seconds_count{role=\"provider\"} 1",
            "bayspace_grpc_requests_total{method=\"/bayspace.v1.NodeService/Status\",code=\"OK\"} 1",
            "# TYPE bayspace_audit_entries gauge",
            "# TYPE bayspace_store_size_bytes gauge",
        ] {
            assert!(text.contains(name), "{name} missing from\n{text}");
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
