//! `/metrics` over plain HTTP/1.1 on the `metrics` address. The metrics
//! themselves are the connector's ([`bayspace_connector::metrics`]); this
//! only refreshes the state gauges and writes the text out.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use bayspace_connector::metrics::{self, Sources};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use time::OffsetDateTime;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::NodeContext;

const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A scrape that does not finish its request in this time is dropped.
const HEADER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Binds `addr` now (an address in use is a start-up error) and serves
/// until the task is aborted.
pub async fn serve(
    addr: SocketAddr,
    ctx: Arc<NodeContext>,
    store_dir: PathBuf,
) -> anyhow::Result<JoinHandle<()>> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen for metrics on {addr} (config key `metrics`)"))?;
    tracing::info!(
        "metrics serving on http://{}/metrics",
        listener.local_addr()?
    );
    let store_dir = Arc::new(store_dir);
    Ok(tokio::spawn(async move {
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!("metrics: accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            };
            let (ctx, store_dir) = (ctx.clone(), store_dir.clone());
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    answer(req, ctx.clone(), store_dir.clone())
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT)
                    .serve_connection(TokioIo::new(stream), service);
                if let Err(e) = conn.await {
                    tracing::debug!("metrics connection: {e}");
                }
            });
        }
    }))
}

async fn answer(
    req: Request<Incoming>,
    ctx: Arc<NodeContext>,
    store_dir: Arc<PathBuf>,
) -> Result<Response<String>, Infallible> {
    let reply = |status: StatusCode, body: String| {
        let mut r = Response::new(body);
        *r.status_mut() = status;
        r
    };
    if req.uri().path() != "/metrics" {
        return Ok(reply(
            StatusCode::NOT_FOUND,
            "only /metrics is served here\n".into(),
        ));
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Ok(reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "GET /metrics\n".into(),
        ));
    }
    let admitted = ctx
        .node
        .client
        .admitted_peers()
        .await
        .map_or(0, |p| p.len());
    // The gauges read the store: off the runtime.
    let text = tokio::task::spawn_blocking(move || {
        let m = metrics::global();
        let holidays = ctx.holidays();
        m.observe(
            &Sources {
                admitted,
                negotiator: &ctx.node.negotiator,
                audit: &ctx.node.audit,
                store_dir: &store_dir,
                holidays: &holidays,
            },
            OffsetDateTime::now_utc(),
        );
        m.encode()
    })
    .await;
    Ok(match text {
        Ok(Ok(text)) => {
            let mut r = reply(StatusCode::OK, text);
            if let Ok(v) = hyper::header::HeaderValue::from_str(CONTENT_TYPE) {
                r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
            }
            r
        }
        Ok(Err(e)) => reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode the metrics: {e}\n"),
        ),
        Err(e) => reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("metrics task failed: {e}\n"),
        ),
    })
}
