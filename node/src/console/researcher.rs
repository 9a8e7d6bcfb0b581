//! The researcher's pages: search the catalog, request a contract, follow
//! one's negotiations, download the data of a FINALIZED agreement.

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::Query;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::StreamExt;
use maud::html;
use serde::Deserialize;

use super::i18n::Arg;
use super::layout::{self, csrf};
use super::{Console, Signed};
use crate::proto;
use crate::proto::catalog_service_server::CatalogService;
use crate::proto::contract_service_server::ContractService;
use crate::proto::data_service_server::DataService;
use crate::proto::transfer_service_server::TransferService;

pub fn routes() -> Router<Console> {
    Router::new()
        .route("/catalog", get(catalog))
        .route("/contracts/request", post(request))
        .route("/negotiations", get(negotiations))
        .route("/data/download", post(download))
}

#[derive(Deserialize)]
struct SearchQuery {
    #[serde(default)]
    q: String,
}

/// What the purpose field starts with: the purpose most offers allow.
const USUAL_PURPOSE: &str = "academic-research";

async fn catalog(Signed { page, caller }: Signed, Query(q): Query<SearchQuery>) -> Response {
    let req = proto::SearchRequest {
        text: q.q.clone(),
        limit: 100,
        ..Default::default()
    };
    let tr = page.tr();
    let found =
        CatalogService::search(&page.console.apis.catalog, page.request(&caller, req)).await;
    layout::page(
        &page,
        "catalog-title",
        html! {
            form role="search" method="get" action="/catalog" {
                label for="q" { (tr.t("search-label")) }
                " "
                input id="q" name="q" type="search" value=(q.q);
                " "
                button type="submit" { (tr.t("search")) }
            }
            @match found {
                Err(s) => { p.err role="alert" { (tr.a("action-failed", &[("reason", Arg::S(s.message().to_owned()))])) } }
                Ok(r) => {
                    @let list = r.into_inner().datasets;
                    p role="status" { (tr.a("search-count", &[("count", Arg::N(list.len() as i64))])) }
                    @for d in &list {
                        section.card aria-labelledby={ "d-" (d.id) } {
                            h2 id={ "d-" (d.id) } { (d.title) " · v" (d.version) }
                            @if !d.description.is_empty() { p { (d.description) } }
                            dl {
                                dt { (tr.t("field-publisher")) } dd { (d.publisher) " (" code { (d.region) } ")" }
                                dt { (tr.t("field-level")) } dd { code { (d.level) } }
                                dt { (tr.t("field-personal")) } dd { (d.personal_individuals) " / " (d.sensitive_individuals) }
                                dt { (tr.t("field-dataset")) } dd { code { (d.id) } }
                            }
                            form method="post" action="/contracts/request" {
                                (csrf(&page))
                                input type="hidden" name="dataset" value=(d.id);
                                p {
                                    label for={ "purpose-" (d.id) } { (tr.t("field-purpose")) }
                                    " "
                                    input id={ "purpose-" (d.id) } name="purpose" type="text" required value=(USUAL_PURPOSE);
                                    @if d.offers.len() > 1 {
                                        " "
                                        label for={ "offer-" (d.id) } { (tr.t("field-offer")) }
                                        " "
                                        select id={ "offer-" (d.id) } name="offer" {
                                            @for o in &d.offers { option value=(o.id) { (o.id) " (" (o.approval) ")" } }
                                        }
                                    }
                                    " "
                                    button type="submit" { (tr.t("request-contract")) }
                                }
                            }
                        }
                    }
                }
            }
        },
    )
}

#[derive(Deserialize)]
struct RequestForm {
    csrf: Option<String>,
    dataset: String,
    purpose: String,
    offer: Option<String>,
}

async fn request(
    Signed { page, caller }: Signed,
    axum::Form(f): axum::Form<RequestForm>,
) -> Response {
    if let Some(r) = page.csrf_refusal(f.csrf.as_deref()) {
        return r;
    }
    let tr = page.tr();
    let req = proto::ContractRequest {
        dataset_id: f.dataset,
        purpose: f.purpose,
        offer_id: f.offer,
    };
    match ContractService::request(&page.console.apis.contracts, page.request(&caller, req)).await {
        Ok(n) => {
            let n = n.into_inner();
            page.done(
                true,
                tr.a("requested", &[("state", Arg::S(n.state))]),
                "/negotiations",
            )
        }
        Err(s) => page.failed(&s, "/catalog"),
    }
}

async fn negotiations(Signed { page, caller }: Signed) -> Response {
    let tr = page.tr();
    let list = match ContractService::list(
        &page.console.apis.contracts,
        page.request(&caller, proto::ListNegotiationsRequest::default()),
    )
    .await
    {
        Ok(l) => l.into_inner().negotiations,
        Err(s) => {
            tracing::error!("console: negotiations: {}", s.message());
            return layout::refusal(&page, StatusCode::INTERNAL_SERVER_ERROR, "error-internal");
        }
    };
    // A researcher follows their own requests, made from this, the
    // consumer, side.
    let mine: Vec<&proto::Negotiation> = list.iter().filter(|n| n.role == "consumer").collect();
    layout::page(
        &page,
        "my-negotiations-title",
        html! {
            p { (tr.t("my-negotiations-intro")) " " a href="/negotiations" { (tr.t("refresh")) } }
            @if mine.is_empty() { p { (tr.t("negotiations-none")) } }
            @for n in mine {
                section.card.negotiation aria-labelledby={ "n-" (n.id) } {
                    h2 id={ "n-" (n.id) } { (n.dataset_title) " — " span.state { (n.state) } }
                    p { (tr.t(&format!("state-{}", n.state))) }
                    dl {
                        dt { (tr.t("field-provider")) } dd { (n.counterparty_institution) }
                        dt { (tr.t("field-purpose")) } dd { code { (n.purpose) } }
                        dt { (tr.t("field-negotiation")) } dd { code { (n.id) } }
                        @if !n.route.is_empty() {
                            dt { (tr.t("field-route")) } dd { (tr.t(&format!("route-{}", n.route))) }
                        }
                        @if !n.reasons.is_empty() {
                            dt { (tr.t("field-reasons")) } dd.reasons { (n.reasons.join("; ")) }
                        }
                        @if !n.agreement_id.is_empty() {
                            dt { (tr.t("field-agreement")) } dd { code { (n.agreement_id) } }
                        }
                    }
                    @if n.state == "FINALIZED" && !n.agreement_id.is_empty() {
                        form method="post" action="/data/download" {
                            (csrf(&page))
                            input type="hidden" name="agreement" value=(n.agreement_id);
                            input type="hidden" name="title" value=(n.dataset_title);
                            button type="submit" { (tr.t("download")) }
                        }
                    }
                }
            }
        },
    )
}

#[derive(Deserialize)]
struct DownloadForm {
    csrf: Option<String>,
    agreement: String,
    #[serde(default)]
    title: String,
}

/// A file name from a dataset title: letters, digits and dashes only.
fn file_name(title: &str, agreement: &str) -> String {
    let base: String = title
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let base = base.trim_matches('-');
    if base.is_empty() {
        format!(
            "bayspace-{}",
            agreement.rsplit(':').next().unwrap_or("data")
        )
    } else {
        base.to_owned()
    }
}

/// Fetches the data of the agreement into the node, sealed, unless it is
/// there already, then streams it to the browser decrypted as it goes: the
/// same two calls `bayspace transfer fetch` makes, so the same checks and
/// audit entries.
async fn download(
    Signed { page, caller }: Signed,
    axum::Form(f): axum::Form<DownloadForm>,
) -> Response {
    if let Some(r) = page.csrf_refusal(f.csrf.as_deref()) {
        return r;
    }
    let tr = page.tr();
    let api = &page.console.apis.transfers;
    let fail = |msg: &str| {
        page.done(
            false,
            tr.a("action-failed", &[("reason", Arg::S(msg.to_owned()))]),
            "/negotiations",
        )
    };
    let held = match DataService::list(api, page.request(&caller, proto::DataListRequest {})).await
    {
        Ok(l) => l
            .into_inner()
            .items
            .iter()
            .any(|d| d.agreement_id == f.agreement && d.state == "sealed"),
        Err(s) => return fail(s.message()),
    };
    if !held {
        let req = proto::FetchRequest {
            agreement_id: f.agreement.clone(),
            out: String::new(),
            keep_sealed: true,
        };
        let mut progress = match TransferService::fetch(api, page.request(&caller, req)).await {
            Ok(s) => s.into_inner(),
            Err(s) => return fail(s.message()),
        };
        loop {
            match progress.next().await {
                Some(Ok(p)) if p.done => break,
                Some(Ok(_)) => {}
                Some(Err(s)) => return fail(s.message()),
                None => return fail(&tr.t("fetch-ended")),
            }
        }
    }
    let req = proto::DownloadRequest {
        agreement_id: f.agreement.clone(),
        offset: 0,
    };
    let mut chunks = match DataService::download(api, page.request(&caller, req)).await {
        Ok(s) => s.into_inner(),
        Err(s) => return fail(s.message()),
    };
    // The first message gives the size for Content-Length, and a refusal
    // before any byte is still a page rather than a broken download.
    let first = match chunks.next().await {
        Some(Ok(c)) => c,
        Some(Err(s)) => return fail(s.message()),
        None => return fail(&tr.t("fetch-ended")),
    };
    let size = first.size;
    let head = futures::stream::iter([Ok::<_, tonic::Status>(first)]);
    // A failure mid-way ends the body with an error, which the browser
    // shows as a failed download rather than a short file.
    let body = head.chain(chunks).filter_map(|item| async move {
        match item {
            Ok(c) if c.done => None,
            Ok(c) => Some(Ok::<Bytes, std::io::Error>(Bytes::from(c.data))),
            Err(s) => Some(Err(std::io::Error::other(s.message().to_owned()))),
        }
    });
    let mut r = Body::from_stream(body).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(size));
    if let Ok(v) = HeaderValue::from_str(&format!(
        "attachment; filename=\"{}\"",
        file_name(&f.title, &f.agreement)
    )) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    layout::secure_headers(&mut r);
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_are_plain() {
        assert_eq!(
            file_name("Diabetes cohort 2026", "urn:uuid:x"),
            "Diabetes-cohort-2026"
        );
        assert_eq!(file_name("\"; rm -rf /", "urn:uuid:abc"), "rm--rf");
        assert_eq!(file_name("糖尿病", "urn:uuid:abc"), "bayspace-abc");
    }
}
