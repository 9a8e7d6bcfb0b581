//! The frame of every page: language, navigation, the language switch, the
//! sign-out form, the message left by the last action; and the headers that
//! keep the pages to themselves.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use maud::{DOCTYPE, Markup, PreEscaped, html};

use super::Page;
use super::i18n::Lang;
use crate::grpc::auth::Role;

/// No script, no frame, nothing from elsewhere; forms post only here.
const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

pub fn secure_headers(r: &mut Response) {
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

/// The hidden field every state-changing form carries.
pub fn csrf(page: &Page) -> Markup {
    let token = page
        .session
        .as_ref()
        .map(|(_, s)| s.csrf.as_str())
        .unwrap_or_default();
    html! { input type="hidden" name="csrf" value=(token); }
}

fn nav(page: &Page) -> Markup {
    let tr = page.tr();
    let role = page.caller().map(|c| c.role);
    let admin: [(&str, &str); 7] = [
        ("/admin/offers", "nav-offers"),
        ("/admin/negotiations", "nav-negotiations"),
        ("/admin/datasets", "nav-datasets"),
        ("/admin/filings", "nav-filings"),
        ("/admin/audit", "nav-audit"),
        ("/admin/members", "nav-members"),
        ("/admin/researchers", "nav-researchers"),
    ];
    let researcher: [(&str, &str); 2] = [
        ("/catalog", "nav-catalog"),
        ("/negotiations", "nav-my-negotiations"),
    ];
    let links: Vec<(&str, &str)> = match role {
        Some(Role::Admin) => admin.iter().chain(researcher.iter()).copied().collect(),
        Some(Role::Researcher) => researcher.to_vec(),
        None => Vec::new(),
    };
    html! {
        @if !links.is_empty() {
            nav aria-label=(tr.t("nav-label")) {
                ul.nav {
                    @for (href, id) in links {
                        li {
                            @if page.path == href {
                                a href=(href) aria-current="page" { (tr.t(id)) }
                            } @else {
                                a href=(href) { (tr.t(id)) }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn lang_switch(page: &Page) -> Markup {
    let tr = page.tr();
    html! {
        nav.langs aria-label=(tr.t("lang-switch-label")) {
            ul {
                @for l in Lang::ALL {
                    @let name = page.console.cat.format(l, "language-name", None);
                    li {
                        @if l == page.lang {
                            span lang=(l.code()) aria-current="true" { (name) }
                        } @else {
                            a lang=(l.code()) hreflang=(l.code())
                                href={ "/lang/" (l.code()) "?next=" (encode(&page.path)) } { (name) }
                        }
                    }
                }
            }
        }
    }
}

/// Percent-encodes a path for a query value.
fn encode(path: &str) -> String {
    path.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"/-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// A whole page: `title` is a message id, `body` the content.
pub fn page(page: &Page, title: &str, body: Markup) -> Response {
    page_with(page, StatusCode::OK, &page.tr().t(title), body)
}

pub fn page_with(page: &Page, status: StatusCode, title: &str, body: Markup) -> Response {
    let tr = page.tr();
    let ctx = &page.console.ctx;
    let flash = page.session.as_ref().and_then(|(_, s)| s.flash.clone());
    let markup = html! {
        (DOCTYPE)
        html lang=(page.lang.code()) {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · " (tr.t("console-name")) }
                link rel="stylesheet" href="/style.css";
            }
            body {
                a.skip href="#main" { (tr.t("skip-to-content")) }
                header {
                    p.brand {
                        strong { (tr.t("console-name")) }
                        " · " (ctx.node.config.institution) " (" (ctx.node.config.region) ")"
                    }
                    (lang_switch(page))
                    @if let Some(c) = page.caller() {
                        form.signout method="post" action="/signout" {
                            (csrf(page))
                            span.who {
                                @if c.role == Role::Admin { (tr.t("role-admin")) }
                                @else { (tr.t("role-researcher")) ": " (c.name) }
                            }
                            " "
                            button type="submit" { (tr.t("sign-out")) }
                        }
                    }
                    (nav(page))
                }
                main id="main" tabindex="-1" {
                    h1 { (title) }
                    @if let Some((ok, message)) = flash {
                        p.flash.ok[ok].err[!ok] role="status" { (message) }
                    }
                    (body)
                }
                footer {
                    p { (tr.t("footer-times")) }
                }
            }
        }
    };
    let mut r = (status, PreEscaped(markup.into_string()).0).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    secure_headers(&mut r);
    r
}

/// A refusal page: `id` is the message saying why.
pub fn refusal(page: &Page, status: StatusCode, id: &str) -> Response {
    let tr = page.tr();
    page_with(
        page,
        status,
        &tr.t("refused-title"),
        html! {
            p.err role="alert" { (tr.t(id)) }
            p { a href="/" { (tr.t("back-home")) } }
        },
    )
}

pub fn signin(page: &Page, nonce: &str, error: Option<&str>) -> Response {
    let tr = page.tr();
    self::page(
        page,
        "signin-title",
        html! {
            p { (tr.t("signin-intro")) }
            @if let Some(e) = error {
                p.err role="alert" { (tr.t(e)) }
            }
            form method="post" action="/signin" {
                input type="hidden" name="csrf" value=(nonce);
                p {
                    label for="token" { (tr.t("signin-token")) }
                    br;
                    input id="token" name="token" type="password" required autocomplete="off" size="50";
                }
                p { button type="submit" { (tr.t("sign-in")) } }
            }
        },
    )
}
