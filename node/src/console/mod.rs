//! The web console: server-rendered pages for the administrator and the
//! researchers, served beside the gRPC services on the API's address and
//! TLS. Each page is a thin view: what it shows it reads from the
//! connector, and what it changes it changes by calling the gRPC service
//! implementations in-process, with the signed-in caller, so the role
//! checks and the audit entries are exactly those of the CLI.

mod admin;
mod i18n;
mod layout;
mod researcher;
mod session;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{FromRequestParts, Path, Query};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};

use crate::daemon::NodeContext;
use crate::grpc::Apis;
use crate::grpc::auth::{Authenticator, Caller, Role, SignInError};
use i18n::{Arg, Catalogues, Lang, Tr};
use session::{COOKIE, LANG_COOKIE, SIGNIN_COOKIE, Session, Sessions, same_secret};

/// What every handler shares.
pub(crate) struct Inner {
    ctx: Arc<NodeContext>,
    apis: Apis,
    auth: Authenticator,
    sessions: Sessions,
    cat: Catalogues,
    /// Cookies get `Secure` (always, but over TLS the browser needs it).
    secure: bool,
}

#[derive(Clone)]
pub(crate) struct Console(Arc<Inner>);

impl std::ops::Deref for Console {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

/// The console's routes, to merge beside the gRPC services.
pub fn router(
    ctx: Arc<NodeContext>,
    apis: Apis,
    auth: Authenticator,
    secure: bool,
) -> anyhow::Result<Router> {
    let state = Console(Arc::new(Inner {
        ctx,
        apis,
        auth,
        sessions: Sessions::default(),
        cat: Catalogues::load()?,
        secure,
    }));
    Ok(Router::new()
        .route("/", get(home))
        .route("/style.css", get(style))
        .route("/signin", get(signin_form).post(signin))
        .route("/signout", post(signout))
        .route("/lang/{code}", get(set_lang))
        .merge(admin::routes())
        .merge(researcher::routes())
        .with_state(state))
}

/// One request as the pages see it: language, session, client address.
pub(crate) struct Page {
    pub lang: Lang,
    /// The session cookie's value and the session, when signed in.
    pub session: Option<(String, Session)>,
    pub path: String,
    pub remote: Option<SocketAddr>,
    pub cookies: Vec<(String, String)>,
    pub console: Console,
}

fn cookies(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| {
            let (k, v) = c.split_once('=')?;
            Some((k.trim().to_owned(), v.trim().to_owned()))
        })
        .collect()
}

impl Page {
    pub fn cookie(&self, name: &str) -> Option<&str> {
        self.cookies
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn tr(&self) -> Tr<'_> {
        Tr {
            cat: &self.console.cat,
            lang: self.lang,
        }
    }

    pub fn caller(&self) -> Option<&Caller> {
        self.session.as_ref().map(|(_, s)| &s.caller)
    }

    /// A request to one of the gRPC implementations, as `caller` from the
    /// browser's address.
    pub fn request<T>(&self, caller: &Caller, msg: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(msg);
        r.extensions_mut().insert(caller.clone());
        if let Some(addr) = self.remote {
            r.extensions_mut().insert(TcpConnectInfo {
                local_addr: None,
                remote_addr: Some(addr),
            });
        }
        r
    }

    /// A message for the next page, then back to `to`.
    pub fn done(&self, ok: bool, message: String, to: &str) -> Response {
        if let Some((sid, _)) = &self.session {
            self.console.sessions.flash(sid, ok, message);
        }
        Redirect::to(to).into_response()
    }

    /// Back to `to`, with the reason the service refused the action.
    pub fn failed(&self, refused: &tonic::Status, to: &str) -> Response {
        let reason = Arg::S(refused.message().to_owned());
        self.done(
            false,
            self.tr().a("action-failed", &[("reason", reason)]),
            to,
        )
    }

    /// The refusal of a form whose CSRF token is missing or not the
    /// session's; `None` when it is the session's.
    pub fn csrf_refusal(&self, sent: Option<&str>) -> Option<Response> {
        let expected = self.session.as_ref().map(|(_, s)| s.csrf.as_str());
        match (expected, sent) {
            (Some(e), Some(s)) if same_secret(e, s) => None,
            _ => {
                tracing::warn!(path = %self.path, remote = ?self.remote, "console form without a valid CSRF token");
                Some(layout::refusal(self, StatusCode::FORBIDDEN, "error-csrf"))
            }
        }
    }
}

impl FromRequestParts<Console> for Page {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Console,
    ) -> Result<Self, Self::Rejection> {
        let cookies = cookies(&parts.headers);
        let find = |name: &str| {
            cookies
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        let lang = find(LANG_COOKIE)
            .and_then(|c| Lang::from_code(&c))
            .unwrap_or_else(|| {
                Lang::negotiate(
                    parts
                        .headers
                        .get(header::ACCEPT_LANGUAGE)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or(""),
                )
            });
        let session = find(COOKIE).and_then(|sid| {
            let s = state.sessions.touch(&sid, Instant::now())?;
            if state.auth.still_valid(&s.caller) {
                Some((sid, s))
            } else {
                state.sessions.remove(&sid);
                None
            }
        });
        let remote = parts
            .extensions
            .get::<TcpConnectInfo>()
            .and_then(TcpConnectInfo::remote_addr)
            .or_else(|| {
                parts
                    .extensions
                    .get::<TlsConnectInfo<TcpConnectInfo>>()
                    .and_then(|i| i.get_ref().remote_addr())
            });
        Ok(Page {
            lang,
            session,
            path: parts.uri.path().to_owned(),
            remote,
            cookies,
            console: state.clone(),
        })
    }
}

/// A signed-in page, administrator or researcher.
pub(crate) struct Signed {
    pub page: Page,
    pub caller: Caller,
}

impl FromRequestParts<Console> for Signed {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &Console) -> Result<Self, Response> {
        let Ok(page) = Page::from_request_parts(parts, state).await;
        match page.caller().cloned() {
            Some(caller) => Ok(Signed { page, caller }),
            None => Err(Redirect::to("/signin").into_response()),
        }
    }
}

/// A page only the administrator may see.
pub(crate) struct AdminPage {
    pub page: Page,
    pub caller: Caller,
}

impl FromRequestParts<Console> for AdminPage {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &Console) -> Result<Self, Response> {
        let Signed { page, caller } = Signed::from_request_parts(parts, state).await?;
        if caller.role != Role::Admin {
            tracing::warn!(researcher = %caller.id, path = %page.path, "researcher refused an administrator page");
            return Err(layout::refusal(
                &page,
                StatusCode::FORBIDDEN,
                "error-admin-only",
            ));
        }
        Ok(AdminPage { page, caller })
    }
}

fn cookie_header(c: &Console, name: &str, value: &str, max_age: u64) -> HeaderValue {
    let secure = if c.secure { "; Secure" } else { "" };
    let text =
        format!("{name}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}");
    // Names and values are ours: hex, language tags.
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

async fn home(page: Page) -> Response {
    match page.caller().map(|c| c.role) {
        Some(Role::Admin) => Redirect::to("/admin/offers").into_response(),
        Some(Role::Researcher) => Redirect::to("/catalog").into_response(),
        None => Redirect::to("/signin").into_response(),
    }
}

async fn style() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        include_str!("style.css"),
    )
        .into_response()
}

#[derive(Deserialize)]
struct LangQuery {
    next: Option<String>,
}

/// Only a path on this site, so the switch cannot send anyone elsewhere.
fn local_path(next: Option<&str>) -> &str {
    match next {
        Some(n) if n.starts_with('/') && !n.starts_with("//") && !n.contains('\\') => n,
        _ => "/",
    }
}

async fn set_lang(page: Page, Path(code): Path<String>, Query(q): Query<LangQuery>) -> Response {
    let Some(lang) = Lang::from_code(&code) else {
        return layout::refusal(&page, StatusCode::NOT_FOUND, "error-not-found");
    };
    let mut r = Redirect::to(local_path(q.next.as_deref())).into_response();
    r.headers_mut().append(
        header::SET_COOKIE,
        cookie_header(&page.console, LANG_COOKIE, lang.code(), 365 * 24 * 3600),
    );
    r
}

async fn signin_form(page: Page) -> Response {
    if page.caller().is_some() {
        return home(page).await;
    }
    let Ok(nonce) = session::random_token() else {
        return layout::refusal(&page, StatusCode::INTERNAL_SERVER_ERROR, "error-internal");
    };
    let mut r = layout::signin(&page, &nonce, None);
    r.headers_mut().append(
        header::SET_COOKIE,
        cookie_header(&page.console, SIGNIN_COOKIE, &nonce, 600),
    );
    r
}

#[derive(Deserialize)]
struct SignInForm {
    token: Option<String>,
    csrf: Option<String>,
}

async fn signin(page: Page, axum::Form(form): axum::Form<SignInForm>) -> Response {
    let nonce = page.cookie(SIGNIN_COOKIE).unwrap_or_default().to_owned();
    let forged = match form.csrf.as_deref() {
        Some(sent) => nonce.is_empty() || !same_secret(&nonce, sent),
        None => true,
    };
    if forged {
        return layout::refusal(&page, StatusCode::FORBIDDEN, "error-csrf");
    }
    let token = form.token.unwrap_or_default();
    let source = page.remote.map(|a| a.ip());
    match page.console.auth.sign_in(source, &token) {
        Ok(caller) => {
            let Ok(sid) = page.console.sessions.create(caller.clone(), Instant::now()) else {
                return layout::refusal(&page, StatusCode::INTERNAL_SERVER_ERROR, "error-internal");
            };
            tracing::info!(who = %caller.id, remote = ?page.remote, "console sign-in");
            let mut r = Redirect::to("/").into_response();
            let headers = r.headers_mut();
            headers.append(
                header::SET_COOKIE,
                cookie_header(&page.console, COOKIE, &sid, session::ABSOLUTE.as_secs()),
            );
            headers.append(
                header::SET_COOKIE,
                cookie_header(&page.console, SIGNIN_COOKIE, "", 0),
            );
            r
        }
        Err(e) => {
            let (status, id) = match e {
                SignInError::Throttled { .. } => {
                    (StatusCode::TOO_MANY_REQUESTS, "signin-throttled")
                }
                SignInError::BadToken => (StatusCode::UNAUTHORIZED, "signin-bad-token"),
                SignInError::Internal => (StatusCode::INTERNAL_SERVER_ERROR, "error-internal"),
            };
            let mut r = layout::signin(&page, &nonce, Some(id));
            *r.status_mut() = status;
            r
        }
    }
}

#[derive(Deserialize)]
struct CsrfOnly {
    csrf: Option<String>,
}

async fn signout(page: Page, axum::Form(form): axum::Form<CsrfOnly>) -> Response {
    if let Some(r) = page.csrf_refusal(form.csrf.as_deref()) {
        return r;
    }
    if let Some((sid, s)) = &page.session {
        page.console.sessions.remove(sid);
        tracing::info!(who = %s.caller.id, "console sign-out");
    }
    let mut r = Redirect::to("/signin").into_response();
    r.headers_mut().append(
        header::SET_COOKIE,
        cookie_header(&page.console, COOKIE, "", 0),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_language_switch_stays_on_this_site() {
        assert_eq!(local_path(Some("/admin/offers")), "/admin/offers");
        assert_eq!(local_path(Some("//evil.example/")), "/");
        assert_eq!(local_path(Some("https://evil.example/")), "/");
        assert_eq!(local_path(Some("/\\evil.example")), "/");
        assert_eq!(local_path(None), "/");
    }

    #[test]
    fn cookies_are_parsed_from_every_header() {
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, HeaderValue::from_static("a=1; b = 2"));
        h.append(header::COOKIE, HeaderValue::from_static("c=3"));
        assert_eq!(
            cookies(&h),
            vec![
                ("a".to_owned(), "1".to_owned()),
                ("b".to_owned(), "2".to_owned()),
                ("c".to_owned(), "3".to_owned())
            ]
        );
    }
}
