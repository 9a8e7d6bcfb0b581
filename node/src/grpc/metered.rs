//! Counts every gRPC call by method and status code, and times it to its
//! response headers, in the connector's metrics.
//!
//! The method label is the request path only when the API's descriptor
//! (or the health and reflection services) names it; anything else a
//! client sends is `other`, so no client can add series.

use std::collections::HashSet;
use std::pin::Pin;
use std::sync::LazyLock;
use std::task::{Context, Poll};
use std::time::Instant;

use bayspace_connector::metrics;
use http_body::{Body, Frame};
use prost::Message as _;
use tonic::Code;

/// Every method path the node serves, leaked once so labels can be
/// `&'static str`. The set is fixed by the binary.
static METHODS: LazyLock<HashSet<&'static str>> = LazyLock::new(|| {
    let mut out: HashSet<&'static str> = [
        "/grpc.health.v1.Health/Check",
        "/grpc.health.v1.Health/Watch",
        "/grpc.health.v1.Health/List",
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
    ]
    .into_iter()
    .collect();
    if let Ok(set) = prost_types::FileDescriptorSet::decode(crate::proto::FILE_DESCRIPTOR_SET) {
        for file in set.file {
            let package = file.package.unwrap_or_default();
            for service in file.service {
                let service_name = service.name.unwrap_or_default();
                for method in service.method {
                    let path = format!(
                        "/{package}.{service_name}/{}",
                        method.name.unwrap_or_default()
                    );
                    out.insert(Box::leak(path.into_boxed_str()));
                }
            }
        }
    }
    out
});

fn method_label(path: &str) -> &'static str {
    METHODS.get(path).copied().unwrap_or("other")
}

fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

fn status_of(headers: &http::HeaderMap) -> Option<&'static str> {
    let v = headers
        .get("grpc-status")?
        .to_str()
        .ok()?
        .parse::<i32>()
        .ok()?;
    Some(code_name(Code::from_i32(v)))
}

#[derive(Clone, Copy, Default)]
pub struct MeteredLayer;

impl<S> tower_layer::Layer<S> for MeteredLayer {
    type Service = Metered<S>;
    fn layer(&self, inner: S) -> Metered<S> {
        Metered { inner }
    }
}

#[derive(Clone)]
pub struct Metered<S> {
    inner: S,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, ReqBody, ResBody> tower_service::Service<http::Request<ReqBody>> for Metered<S>
where
    S: tower_service::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>
        + Send
        + 'static,
    S::Future: Send + 'static,
    ReqBody: Send + 'static,
{
    type Response = http::Response<MeteredBody<ResBody>>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<ReqBody>) -> Self::Future {
        let method = method_label(req.uri().path());
        let started = Instant::now();
        let fut = self.inner.call(req);
        Box::pin(async move {
            let response = fut.await;
            let took = started.elapsed();
            let response = match response {
                Ok(r) => r,
                Err(e) => {
                    metrics::global().grpc_call(method, "UNKNOWN", took);
                    return Err(e);
                }
            };
            // An error answered at once carries its status in the headers;
            // otherwise it comes in the trailers at the end of the body.
            let pending = match status_of(response.headers()) {
                Some(code) => {
                    metrics::global().grpc_call(method, code, took);
                    None
                }
                None => Some(Pending {
                    method,
                    took,
                    done: false,
                }),
            };
            Ok(response.map(|inner| MeteredBody { inner, pending }))
        })
    }
}

/// A call whose status is still to come in the trailers.
pub struct Pending {
    method: &'static str,
    took: std::time::Duration,
    done: bool,
}

impl Pending {
    fn record(&mut self, code: &'static str) {
        if !self.done {
            self.done = true;
            metrics::global().grpc_call(self.method, code, self.took);
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        // The body was dropped before its trailers: the client went away.
        self.record("CANCELLED");
    }
}

pub struct MeteredBody<B> {
    inner: B,
    pending: Option<Pending>,
}

impl<B: Body + Unpin> Body for MeteredBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let (Poll::Ready(item), Some(p)) = (&polled, this.pending.as_mut()) {
            match item {
                Some(Ok(frame)) => {
                    if let Some(code) = frame.trailers_ref().and_then(status_of) {
                        p.record(code);
                    }
                }
                Some(Err(_)) => p.record("UNKNOWN"),
                None => p.record("OK"),
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
