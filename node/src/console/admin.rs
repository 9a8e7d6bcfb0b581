//! The administrator's pages: pending offers and the records that unblock
//! them, negotiations and agreements, datasets, filings, the audit log,
//! members, researchers.

use axum::Router;
use axum::extract::Query;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bayspace_connector::audit::verify_export;
use bayspace_connector::negotiator::{NegotiationRecord, Viewer};
use bayspace_contracts::compliance::{Blocker, Obligation};
use bayspace_contracts::filing::{FilingDue, working_days_left};
use bayspace_contracts::negotiation::Role as Side;
use maud::{Markup, html};
use serde::Deserialize;
use time::OffsetDateTime;

use super::i18n::{Arg, GBA, Tr};
use super::layout::{self, csrf};
use super::{AdminPage, Console, Page};
use crate::proto;
use crate::proto::agreement_service_server::AgreementService;
use crate::proto::dataset_service_server::DatasetService;
use crate::proto::filing_service_server::FilingService;
use crate::proto::node_service_server::NodeService;
use crate::proto::offer_service_server::OfferService;
use crate::proto::record_service_server::RecordService;
use crate::proto::researcher_service_server::ResearcherService;

pub fn routes() -> Router<Console> {
    Router::new()
        .route("/admin/offers", get(offers))
        .route("/admin/offers/decide", post(decide))
        .route("/admin/records", post(set_records))
        .route("/admin/negotiations", get(negotiations))
        .route("/admin/agreements/revoke", post(revoke))
        .route("/admin/datasets", get(datasets))
        .route("/admin/datasets/withdraw", post(withdraw))
        .route("/admin/filings", get(filings))
        .route("/admin/filings/download", get(filing_download))
        .route("/admin/audit", get(audit))
        .route("/admin/members", get(members))
        .route("/admin/researchers", get(researchers))
        .route("/admin/researchers/add", post(add_researcher))
        .route("/admin/researchers/remove", post(remove_researcher))
}

/// A failure of a read: the page says so, the log has the detail.
fn failed(page: &Page, what: &str, e: impl std::fmt::Display) -> Response {
    tracing::error!("console: {what}: {e}");
    layout::refusal(page, StatusCode::INTERNAL_SERVER_ERROR, "error-internal")
}

/// The blocker's rule id, and its citation when the assessment gives one.
fn rule(tr: &Tr<'_>, r: &NegotiationRecord, id: &str) -> Markup {
    let citation = r.assessment.as_ref().and_then(|a| a.citation(id));
    html! {
        " " span.rule { (tr.t("rule-id")) " " code { (id) } }
        @if let Some(c) = citation {
            br; small.cite { (c) }
        }
    }
}

fn offer_card(page: &Page, r: &NegotiationRecord, records: Option<&str>) -> Markup {
    let tr = page.tr();
    let a = r.assessment.as_ref();
    let blockers: Vec<Blocker> = a.map(|a| a.blockers.clone()).unwrap_or_default();
    let obligations: Vec<Obligation> = a.map(|a| a.obligations.clone()).unwrap_or_default();
    let id = r.id.to_string();
    html! {
        section.card aria-labelledby={ "h-" (id) } {
            h2 id={ "h-" (id) } { (r.dataset_title) }
            dl {
                dt { (tr.t("field-institution")) } dd { (r.counterparty.institution) }
                dt { (tr.t("field-region")) } dd { (tr.t(&format!("region-{}", region_key(&r.counterparty.region.to_string())))) " " code { (r.counterparty.region) } }
                dt { (tr.t("field-researcher")) } dd {
                    (r.researcher.name)
                    @if let Some(o) = &r.researcher.orcid { " (ORCID " (o.as_str()) ")" }
                }
                dt { (tr.t("field-dataset")) } dd { (r.dataset_title) " · v" (r.dataset_version) br; code { (r.dataset) } }
                dt { (tr.t("field-purpose")) } dd { code { (r.purpose) } }
                dt { (tr.t("field-route")) } dd {
                    @if let Some(a) = a {
                        (tr.t(&format!("route-{}", a.route))) " " code { (a.route) }
                    } @else { (tr.t("not-assessed")) }
                }
                dt { (tr.t("field-variant")) } dd {
                    @match a.and_then(|a| a.variant) {
                        Some(v) => { (tr.t(&format!("variant-{v}"))) " " code { (v) } }
                        None => { "—" }
                    }
                }
                dt { (tr.t("field-requested")) } dd { (tr.time(r.requested_at)) }
                dt { (tr.t("field-negotiation")) } dd { code { (id) } }
                @if let Some(rec) = records {
                    dt { (tr.t("field-records")) } dd { (rec) }
                }
            }
            h3 { (tr.t("blockers")) }
            @if blockers.is_empty() {
                p.ok { (tr.t("no-blockers")) }
            } @else {
                ul.blockers {
                    @for b in &blockers {
                        li { strong { (tr.t(&format!("blocker-{b}"))) } (rule(&tr, r, &b.rule_id())) }
                    }
                }
            }
            h3 { (tr.t("obligations")) }
            @if obligations.is_empty() {
                p { "—" }
            } @else {
                ul {
                    @for o in &obligations {
                        li { (tr.t(&format!("obligation-{o}"))) (rule(&tr, r, &o.rule_id())) }
                    }
                }
            }
            @if !blockers.is_empty() {
                div.blocked role="note" {
                    p { strong { (tr.t("approval-blocked")) } }
                    @for b in &blockers {
                        @match b {
                            Blocker::Pipia => {
                                form method="post" action="/admin/records" {
                                    (csrf(page))
                                    input type="hidden" name="dataset" value=(r.dataset);
                                    input type="hidden" name="kind" value="pipia";
                                    p {
                                        label for={ "pipia-" (id) } { (tr.t("pipia-ref-label")) }
                                        br;
                                        input id={ "pipia-" (id) } name="pipia_ref" type="text" required;
                                        " "
                                        button type="submit" { (tr.t("record-pipia")) }
                                    }
                                }
                            }
                            Blocker::Consent => {
                                form method="post" action="/admin/records" {
                                    (csrf(page))
                                    input type="hidden" name="dataset" value=(r.dataset);
                                    input type="hidden" name="kind" value="consent";
                                    p {
                                        input id={ "consent-" (id) } name="confirm" type="checkbox" value="yes" required;
                                        " "
                                        label for={ "consent-" (id) } { (tr.t("consent-confirm")) }
                                        " "
                                        button type="submit" { (tr.t("record-consent")) }
                                    }
                                }
                            }
                            other => {
                                p { (tr.a("blocker-cli", &[("blocker", Arg::S(other.to_string())), ("dataset", Arg::S(r.dataset.to_string()))])) }
                            }
                        }
                    }
                }
            } @else {
                form method="post" action="/admin/offers/decide" {
                    (csrf(page))
                    input type="hidden" name="id" value=(id);
                    input type="hidden" name="action" value="approve";
                    p {
                        label for={ "note-" (id) } { (tr.t("approve-note")) }
                        br;
                        input id={ "note-" (id) } name="note" type="text" size="40";
                        " "
                        button type="submit" { (tr.t("approve")) }
                    }
                }
            }
            form method="post" action="/admin/offers/decide" {
                (csrf(page))
                input type="hidden" name="id" value=(id);
                input type="hidden" name="action" value="reject";
                p {
                    label for={ "reason-" (id) } { (tr.t("reject-reason")) }
                    br;
                    input id={ "reason-" (id) } name="reason" type="text" size="40" required;
                    " "
                    button.danger type="submit" { (tr.t("reject")) }
                }
            }
        }
    }
}

/// `mainland:shenzhen` → `mainland`, for the region's name.
fn region_key(region: &str) -> &str {
    region.split(':').next().unwrap_or(region)
}

async fn offers(AdminPage { page, .. }: AdminPage) -> Response {
    let negotiator = &page.console.ctx.node.negotiator;
    let pending = match negotiator.pending() {
        Ok(p) => p,
        Err(e) => return failed(&page, "pending offers", e),
    };
    let tr = page.tr();
    let cards: Vec<Markup> = pending
        .iter()
        .map(|r| {
            let on_file = negotiator.records(&r.dataset).ok().map(|d| {
                let mut parts = Vec::new();
                if d.records.pipia {
                    parts.push(match &d.pipia_reference {
                        Some(p) => tr.a("records-pipia-ref", &[("reference", Arg::S(p.clone()))]),
                        None => tr.t("records-pipia"),
                    });
                }
                if d.records.consent {
                    parts.push(tr.t("records-consent"));
                }
                if parts.is_empty() {
                    tr.t("records-none")
                } else {
                    parts.join("; ")
                }
            });
            offer_card(&page, r, on_file.as_deref())
        })
        .collect();
    layout::page(
        &page,
        "offers-title",
        html! {
            @if cards.is_empty() {
                p { (tr.t("offers-none")) }
            } @else {
                p { (tr.a("offers-count", &[("count", Arg::N(cards.len() as i64))])) }
                @for c in cards { (c) }
            }
        },
    )
}

#[derive(Deserialize)]
struct Decide {
    csrf: Option<String>,
    id: String,
    action: String,
    #[serde(default)]
    note: String,
    #[serde(default)]
    reason: String,
}

async fn decide(
    AdminPage { page, caller }: AdminPage,
    axum::Form(f): axum::Form<Decide>,
) -> Response {
    if let Some(r) = page.csrf_refusal(f.csrf.as_deref()) {
        return r;
    }
    let api = &page.console.apis.contracts;
    let tr = page.tr();
    let result = match f.action.as_str() {
        "approve" => OfferService::approve(
            api,
            page.request(
                &caller,
                proto::ApproveRequest {
                    id: f.id.clone(),
                    note: f.note,
                },
            ),
        )
        .await
        .map(|r| tr.a("offer-approved", &[("state", Arg::S(r.into_inner().state))])),
        "reject" => OfferService::reject(
            api,
            page.request(
                &caller,
                proto::RejectRequest {
                    id: f.id.clone(),
                    reason: f.reason,
                },
            ),
        )
        .await
        .map(|_| tr.t("offer-rejected")),
        _ => return layout::refusal(&page, StatusCode::BAD_REQUEST, "error-bad-form"),
    };
    match result {
        Ok(m) => page.done(true, m, "/admin/offers"),
        Err(s) => page.failed(&s, "/admin/offers"),
    }
}

#[derive(Deserialize)]
struct RecordsForm {
    csrf: Option<String>,
    dataset: String,
    kind: String,
    #[serde(default)]
    pipia_ref: String,
    #[serde(default)]
    confirm: String,
}

async fn set_records(
    AdminPage { page, caller }: AdminPage,
    axum::Form(f): axum::Form<RecordsForm>,
) -> Response {
    if let Some(r) = page.csrf_refusal(f.csrf.as_deref()) {
        return r;
    }
    let tr = page.tr();
    let mut req = proto::SetRecordsRequest {
        dataset_id: f.dataset,
        ..Default::default()
    };
    match f.kind.as_str() {
        "pipia" => {
            req.pipia = Some(true);
            req.pipia_reference = Some(f.pipia_ref);
        }
        "consent" if f.confirm == "yes" => req.consent = Some(true),
        "consent" => return page.done(false, tr.t("consent-not-confirmed"), "/admin/offers"),
        _ => return layout::refusal(&page, StatusCode::BAD_REQUEST, "error-bad-form"),
    }
    match RecordService::set(&page.console.apis.contracts, page.request(&caller, req)).await {
        Ok(r) => {
            let n = r.into_inner().reevaluated.len();
            page.done(
                true,
                tr.a("records-saved", &[("count", Arg::N(n as i64))]),
                "/admin/offers",
            )
        }
        Err(s) => page.failed(&s, "/admin/offers"),
    }
}

async fn negotiations(AdminPage { page, .. }: AdminPage) -> Response {
    let negotiator = &page.console.ctx.node.negotiator;
    let (list, agreements) = match (negotiator.list(&Viewer::Admin), negotiator.agreements()) {
        (Ok(l), Ok(a)) => (l, a),
        (Err(e), _) | (_, Err(e)) => return failed(&page, "negotiations", e),
    };
    let tr = page.tr();
    layout::page(
        &page,
        "negotiations-title",
        html! {
            h2 { (tr.t("agreements")) }
            @if agreements.is_empty() { p { (tr.t("agreements-none")) } }
            @for a in &agreements {
                @let ag = &a.signed.agreement;
                section.card {
                    h3 { code { (a.id()) } }
                    dl {
                        dt { (tr.t("field-side")) } dd { (tr.t(&format!("side-{}", a.role))) }
                        dt { (tr.t("field-dataset")) } dd { code { (ag.dataset) } " · v" (ag.dataset_version) }
                        dt { (tr.t("field-provider")) } dd { (ag.provider.name) }
                        dt { (tr.t("field-consumer")) } dd { (ag.consumer.name) }
                        dt { (tr.t("field-researcher")) } dd { (ag.researcher.name) }
                        dt { (tr.t("field-purpose")) } dd { code { (ag.purpose) } }
                        dt { (tr.t("field-valid")) } dd { (tr.time(ag.not_before)) " – " (tr.time(ag.not_after)) }
                        dt { (tr.t("field-uses")) } dd { (a.uses) }
                    }
                    @if let Some(rv) = &a.revoked {
                        p.err { (tr.a("agreement-revoked", &[("reason", Arg::S(rv.reason.clone()))])) " " (tr.time(rv.at)) }
                    } @else {
                        form method="post" action="/admin/agreements/revoke" {
                            (csrf(&page))
                            input type="hidden" name="id" value=(a.id());
                            p {
                                label for={ "revoke-" (a.id()) } { (tr.t("revoke-reason")) }
                                br;
                                input id={ "revoke-" (a.id()) } name="reason" type="text" size="40" required;
                                " "
                                button.danger type="submit" { (tr.t("revoke")) }
                            }
                        }
                    }
                }
            }
            h2 { (tr.t("negotiations")) }
            @if list.is_empty() { p { (tr.t("negotiations-none")) } }
            @for n in &list {
                section.card {
                    h3 { (n.dataset_title) " — " span.state { (n.state) } }
                    dl {
                        dt { (tr.t("field-side")) } dd { (tr.t(&format!("side-{}", n.role))) }
                        dt { (tr.t("field-institution")) } dd { (n.counterparty.institution) }
                        dt { (tr.t("field-researcher")) } dd { (n.researcher.name) }
                        dt { (tr.t("field-negotiation")) } dd { code { (n.id) } }
                        @if !n.reasons.is_empty() {
                            dt { (tr.t("field-reasons")) } dd { (n.reasons.join("; ")) }
                        }
                    }
                    table {
                        caption { (tr.t("history")) }
                        thead { tr { th scope="col" { (tr.t("col-time")) } th scope="col" { (tr.t("col-state")) } th scope="col" { (tr.t("col-by")) } } }
                        tbody {
                            @for s in &n.history {
                                tr { td { (tr.time(s.at)) } td { code { (s.state) } } td { (s.by) } }
                            }
                        }
                    }
                }
            }
        },
    )
}

#[derive(Deserialize)]
struct IdReason {
    csrf: Option<String>,
    id: String,
    #[serde(default)]
    reason: String,
}

async fn revoke(
    AdminPage { page, caller }: AdminPage,
    axum::Form(f): axum::Form<IdReason>,
) -> Response {
    if let Some(r) = page.csrf_refusal(f.csrf.as_deref()) {
        return r;
    }
    let tr = page.tr();
    let req = proto::RevokeAgreementRequest {
        id: f.id,
        reason: f.reason,
    };
    match AgreementService::revoke(&page.console.apis.contracts, page.request(&caller, req)).await {
        Ok(_) => page.done(true, tr.t("revoked-done"), "/admin/negotiations"),
        Err(s) => page.failed(&s, "/admin/negotiations"),
    }
}

async fn datasets(AdminPage { page, caller }: AdminPage) -> Response {
    let ctx = &page.console.ctx;
    let req = proto::SearchRequest {
        publisher: ctx.node.peer_id.to_string(),
        limit: 500,
        ..Default::default()
    };
    let found = match proto::catalog_service_server::CatalogService::search(
        &page.console.apis.catalog,
        page.request(&caller, req),
    )
    .await
    {
        Ok(r) => r.into_inner().datasets,
        Err(s) => return failed(&page, "own datasets", s.message()),
    };
    let tr = page.tr();
    layout::page(
        &page,
        "datasets-title",
        html! {
            @if found.is_empty() { p { (tr.t("datasets-none")) } }
            @for d in &found {
                @let on_file = d.id.parse().ok().and_then(|id| ctx.node.negotiator.records(&id).ok());
                section.card {
                    h2 { (d.title) " · v" (d.version) }
                    dl {
                        dt { (tr.t("field-dataset")) } dd { code { (d.id) } }
                        dt { (tr.t("field-level")) } dd { code { (d.level) } }
                        dt { (tr.t("field-personal")) } dd { (d.personal_individuals) " / " (d.sensitive_individuals) }
                        dt { (tr.t("field-size")) } dd { (d.size) }
                        dt { (tr.t("field-published")) } dd { (d.published_at) }
                        dt { (tr.t("field-offers")) } dd { @for o in &d.offers { code { (o.id) } " (" (o.approval) ") " } }
                        @if let Some(r) = on_file {
                            dt { (tr.t("field-records")) } dd {
                                "PIPIA: " (if r.records.pipia { r.pipia_reference.clone().unwrap_or_else(|| "✓".into()) } else { "—".into() })
                                " · " (tr.t("records-consent")) ": " (if r.records.consent { "✓" } else { "—" })
                            }
                        }
                    }
                    form method="post" action="/admin/datasets/withdraw" {
                        (csrf(&page))
                        input type="hidden" name="id" value=(d.id);
                        button.danger type="submit" { (tr.t("withdraw")) }
                    }
                }
            }
        },
    )
}

async fn withdraw(
    AdminPage { page, caller }: AdminPage,
    axum::Form(f): axum::Form<IdReason>,
) -> Response {
    if let Some(r) = page.csrf_refusal(f.csrf.as_deref()) {
        return r;
    }
    let tr = page.tr();
    let req = proto::WithdrawRequest { id: f.id };
    match DatasetService::withdraw(&page.console.apis.catalog, page.request(&caller, req)).await {
        Ok(r) => page.done(
            true,
            tr.a(
                "withdrawn-done",
                &[(
                    "version",
                    Arg::N(i64::try_from(r.into_inner().version).unwrap_or(i64::MAX)),
                )],
            ),
            "/admin/datasets",
        ),
        Err(s) => page.failed(&s, "/admin/datasets"),
    }
}

async fn filings(AdminPage { page, .. }: AdminPage) -> Response {
    let ctx = &page.console.ctx;
    let agreements = match ctx.node.negotiator.agreements() {
        Ok(a) => a,
        Err(e) => return failed(&page, "agreements", e),
    };
    let holidays = &ctx.node.config.filing_holidays;
    let today = OffsetDateTime::now_utc().to_offset(GBA).date();
    let tr = page.tr();
    let rows: Vec<Markup> = agreements
        .iter()
        .filter(|a| a.role == Side::Provider)
        .filter_map(|a| {
            let id = a.id().to_string();
            let due = ctx.node.negotiator.filing(a.id(), holidays).ok()?;
            Some(match due {
                FilingDue::Contract(f) => {
                    let left = working_days_left(today, f.deadline, holidays);
                    html! {
                        tr.overdue[left < 0] {
                            td { code { (id) } }
                            td { (f.route) }
                            td { (f.deadline) }
                            td {
                                @if left < 0 { strong { (tr.a("filing-overdue", &[("days", Arg::N(-left))])) } }
                                @else { (tr.a("filing-days-left", &[("days", Arg::N(left))])) }
                            }
                            td {
                                a href={ "/admin/filings/download?format=json&agreement=" (id) } { "JSON" }
                                " · "
                                a href={ "/admin/filings/download?format=md&agreement=" (id) } { "Markdown" }
                            }
                        }
                    }
                }
                FilingDue::Certification(c) => html! {
                    tr {
                        td { code { (id) } }
                        td { "certification" }
                        td { (c.reapply_by) }
                        td { (tr.a("filing-reapply", &[("reference", Arg::S(c.certificate.reference.clone()))])) }
                        td { a href={ "/admin/filings/download?format=json&agreement=" (id) } { "JSON" } }
                    }
                },
            })
        })
        .collect();
    layout::page(
        &page,
        "filings-title",
        html! {
            @if rows.is_empty() { p { (tr.t("filings-none")) } } @else {
                table {
                    thead { tr {
                        th scope="col" { (tr.t("col-agreement")) }
                        th scope="col" { (tr.t("field-route")) }
                        th scope="col" { (tr.t("col-deadline")) }
                        th scope="col" { (tr.t("col-left")) }
                        th scope="col" { (tr.t("col-download")) }
                    } }
                    tbody { @for r in rows { (r) } }
                }
            }
        },
    )
}

#[derive(Deserialize)]
struct FilingQuery {
    agreement: String,
    format: String,
}

async fn filing_download(
    AdminPage { page, caller }: AdminPage,
    Query(q): Query<FilingQuery>,
) -> Response {
    let req = proto::ExportFilingRequest {
        agreement_id: q.agreement.clone(),
    };
    let package =
        match FilingService::export(&page.console.apis.contracts, page.request(&caller, req)).await
        {
            Ok(p) => p.into_inner(),
            Err(s) => return page.failed(&s, "/admin/filings"),
        };
    let safe: String = q
        .agreement
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let (body, kind, ext) = match (q.format.as_str(), package.certification) {
        ("md", None) => (package.markdown, "text/markdown; charset=utf-8", "md"),
        ("json", None) => (package.json, "application/json", "json"),
        ("json", Some(c)) => (c.json, "application/json", "json"),
        _ => return layout::refusal(&page, StatusCode::NOT_FOUND, "error-not-found"),
    };
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"filing-{safe}.{ext}\"")) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    layout::secure_headers(&mut r);
    r
}

/// Entries the audit page lists, newest first.
const AUDIT_RECENT: usize = 50;

async fn audit(AdminPage { page, .. }: AdminPage) -> Response {
    let log = page.console.ctx.node.audit.clone();
    // The whole chain is read and checked on every view: the page states
    // what the server verified, not what it last remembered.
    let checked = tokio::task::spawn_blocking(move || {
        let mut buf = Vec::new();
        log.export(&mut buf).map_err(|e| e.to_string())?;
        let report = verify_export(&buf[..], &log.verifying_key());
        let entries: Vec<serde_json::Value> = buf
            .split(|b| *b == b'\n')
            .filter_map(|l| serde_json::from_slice::<serde_json::Value>(l).ok())
            .filter(|v| v.get("event").is_some())
            .collect();
        Ok::<_, String>((report, entries))
    })
    .await;
    let (report, entries) = match checked {
        Ok(Ok(x)) => x,
        Ok(Err(e)) => return failed(&page, "audit export", e),
        Err(e) => return failed(&page, "audit export task", e),
    };
    let tr = page.tr();
    layout::page(
        &page,
        "audit-title",
        html! {
            @match &report {
                Ok(r) => {
                    p.ok role="status" { (tr.a("audit-verified", &[("entries", Arg::N(i64::try_from(r.entries).unwrap_or(i64::MAX)))])) }
                    @if let Some(c) = &r.last_checkpoint {
                        p { (tr.a("audit-checkpoint", &[("number", Arg::N(i64::try_from(c.number).unwrap_or(i64::MAX))), ("seq", Arg::N(i64::try_from(c.seq).unwrap_or(i64::MAX)))])) " " (tr.time(c.time)) }
                    } @else {
                        p { (tr.t("audit-no-checkpoint")) }
                    }
                }
                Err(e) => { p.err role="alert" { (tr.t("audit-broken")) " " code { (e) } } }
            }
            table {
                caption { (tr.a("audit-recent", &[("count", Arg::N(AUDIT_RECENT as i64))])) }
                thead { tr {
                    th scope="col" { "#" }
                    th scope="col" { (tr.t("col-time")) }
                    th scope="col" { (tr.t("col-event")) }
                    th scope="col" { (tr.t("col-by")) }
                    th scope="col" { (tr.t("col-subjects")) }
                } }
                tbody {
                    @for e in entries.iter().rev().take(AUDIT_RECENT) {
                        tr {
                            td { (e["seq"]) }
                            td {
                                @match e["time"].as_str().and_then(|t| OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()) {
                                    Some(t) => { (tr.time(t)) }
                                    None => { (e["time"]) }
                                }
                            }
                            td { code { (e["event"].as_str().unwrap_or_default()) } }
                            td { (e["actor"].as_str().map_or_else(|| e["actor"].to_string(), str::to_owned)) }
                            td { @for s in e["subjects"].as_array().into_iter().flatten() { code { (s.as_str().unwrap_or_default()) } " " } }
                        }
                    }
                }
            }
        },
    )
}

async fn members(AdminPage { page, caller }: AdminPage) -> Response {
    let st = match NodeService::status(
        &page.console.apis.node,
        page.request(&caller, proto::StatusRequest {}),
    )
    .await
    {
        Ok(s) => s.into_inner(),
        Err(s) => return failed(&page, "status", s.message()),
    };
    let tr = page.tr();
    layout::page(
        &page,
        "members-title",
        html! {
            dl {
                dt { (tr.t("field-peer-id")) } dd { code { (st.peer_id) } }
                dt { (tr.t("field-institution")) } dd { (st.institution) " (" (st.region) ")" }
                dt { (tr.t("field-version")) } dd { (st.version) }
                dt { (tr.t("field-uptime")) } dd { (tr.a("uptime-seconds", &[("seconds", Arg::N(i64::try_from(st.uptime_seconds).unwrap_or(i64::MAX)))])) }
                dt { (tr.t("field-catalog-size")) } dd { (st.catalog_size) }
                dt { (tr.t("field-refusals")) } dd { (st.admission_refusals) }
            }
            table {
                caption { (tr.t("members-admitted")) }
                thead { tr {
                    th scope="col" { (tr.t("field-institution")) }
                    th scope="col" { (tr.t("field-region")) }
                    th scope="col" { (tr.t("field-peer-id")) }
                    th scope="col" { (tr.t("col-credential-expires")) }
                } }
                tbody {
                    @for p in &st.admitted_peers {
                        tr {
                            td { (p.institution) }
                            td { code { (p.region) } }
                            td { code { (p.peer_id) } }
                            td {
                                @match OffsetDateTime::parse(&p.credential_expires, &time::format_description::well_known::Rfc3339) {
                                    Ok(t) => { (tr.time(t)) }
                                    Err(_) => { (p.credential_expires) }
                                }
                            }
                        }
                    }
                }
            }
        },
    )
}

async fn researchers(AdminPage { page, caller }: AdminPage) -> Response {
    researchers_page(&page, &caller, None).await
}

async fn researchers_page(
    page: &Page,
    caller: &crate::grpc::auth::Caller,
    new: Option<(String, String)>,
) -> Response {
    let list = match ResearcherService::list(
        &page.console.apis.researchers,
        page.request(caller, proto::ListResearchersRequest {}),
    )
    .await
    {
        Ok(l) => l.into_inner().researchers,
        Err(s) => return failed(page, "researchers", s.message()),
    };
    let tr = page.tr();
    layout::page(
        page,
        "researchers-title",
        html! {
            @if let Some((id, token)) = new {
                div.card.ok role="status" {
                    p { strong { (tr.a("researcher-added", &[("id", Arg::S(id))])) } }
                    p { (tr.t("token-once")) }
                    p { label for="new-token" { (tr.t("token")) } " " input id="new-token" type="text" readonly value=(token) size="70"; }
                }
            }
            table {
                thead { tr {
                    th scope="col" { "ID" }
                    th scope="col" { (tr.t("field-name")) }
                    th scope="col" { "ORCID" }
                    th scope="col" { (tr.t("col-added")) }
                    th scope="col" { span.visually-hidden { (tr.t("remove")) } }
                } }
                tbody {
                    @for r in &list {
                        tr {
                            td { code { (r.id) } }
                            td { (r.name) }
                            td { (r.orcid) }
                            td { (r.added_at) }
                            td {
                                form method="post" action="/admin/researchers/remove" {
                                    (csrf(page))
                                    input type="hidden" name="id" value=(r.id);
                                    button.danger type="submit" aria-label={ (tr.t("remove")) " " (r.name) } { (tr.t("remove")) }
                                }
                            }
                        }
                    }
                }
            }
            h2 { (tr.t("researcher-add")) }
            form method="post" action="/admin/researchers/add" {
                (csrf(page))
                p {
                    label for="r-name" { (tr.t("field-name")) }
                    br;
                    input id="r-name" name="name" type="text" required;
                }
                p {
                    label for="r-orcid" { "ORCID" }
                    br;
                    input id="r-orcid" name="orcid" type="text" placeholder="0000-0002-1825-0097";
                }
                p { button type="submit" { (tr.t("researcher-add")) } }
            }
        },
    )
}

#[derive(Deserialize)]
struct AddForm {
    csrf: Option<String>,
    name: String,
    #[serde(default)]
    orcid: String,
}

async fn add_researcher(
    AdminPage { page, caller }: AdminPage,
    axum::Form(f): axum::Form<AddForm>,
) -> Response {
    if let Some(r) = page.csrf_refusal(f.csrf.as_deref()) {
        return r;
    }
    let req = proto::AddResearcherRequest {
        name: f.name,
        orcid: f.orcid,
    };
    match ResearcherService::add(&page.console.apis.researchers, page.request(&caller, req)).await {
        // The token is shown on this response only, never stored or
        // redirected through a URL.
        Ok(r) => {
            let r = r.into_inner();
            researchers_page(&page, &caller, Some((r.id, r.token))).await
        }
        Err(s) => page.failed(&s, "/admin/researchers"),
    }
}

async fn remove_researcher(
    AdminPage { page, caller }: AdminPage,
    axum::Form(f): axum::Form<IdReason>,
) -> Response {
    if let Some(r) = page.csrf_refusal(f.csrf.as_deref()) {
        return r;
    }
    let tr = page.tr();
    let req = proto::RemoveResearcherRequest { id: f.id };
    match ResearcherService::remove(&page.console.apis.researchers, page.request(&caller, req))
        .await
    {
        Ok(_) => page.done(true, tr.t("researcher-removed"), "/admin/researchers"),
        Err(s) => page.failed(&s, "/admin/researchers"),
    }
}
