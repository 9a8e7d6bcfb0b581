//! The gRPC API: the `bayspace.v1` services behind bearer-token
//! authentication ([`auth`]), plus the standard health and reflection
//! services, which stay open so that probes and tools like grpcurl work
//! without a token.

pub(crate) mod audit;
pub mod auth;
mod backup;
pub(crate) mod catalog;
pub(crate) mod contracts;
mod metered;
pub(crate) mod services;
pub(crate) mod transfers;

use std::future::Future;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use bayspace_connector::api_tls;
use tokio::task::JoinHandle;
use tonic::service::{Routes, RoutesBuilder};
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Identity, Server, ServerTlsConfig};
use zeroize::Zeroizing;

use audit::AuditApi;
use catalog::CatalogApi;
use contracts::ContractsApi;

use crate::daemon::NodeContext;
use crate::proto::agreement_service_server::AgreementServiceServer;
use crate::proto::audit_service_server::AuditServiceServer;
use crate::proto::backup_service_server::BackupServiceServer;
use crate::proto::catalog_service_server::CatalogServiceServer;
use crate::proto::contract_service_server::ContractServiceServer;
use crate::proto::data_service_server::DataServiceServer;
use crate::proto::dataset_service_server::DatasetServiceServer;
use crate::proto::filing_service_server::FilingServiceServer;
use crate::proto::node_service_server::NodeServiceServer;
use crate::proto::offer_service_server::OfferServiceServer;
use crate::proto::record_service_server::RecordServiceServer;
use crate::proto::researcher_service_server::ResearcherServiceServer;
use crate::proto::revocation_service_server::RevocationServiceServer;
use crate::proto::transfer_service_server::TransferServiceServer;
use auth::Authenticator;
use services::{NodeApi, ResearcherApi, RevocationApi};
use transfers::TransfersApi;

/// RESOURCE_EXHAUSTED naming the disk, when `e` is or wraps the store's
/// (or the sealed directory's) refusal on a full disk: the caller may try
/// again once space is freed, without the node restarting.
pub(crate) fn disk_full(e: &(dyn std::error::Error + 'static)) -> Option<tonic::Status> {
    bayspace_connector::store::disk_full(e)
        .map(|f| tonic::Status::resource_exhausted(f.to_string()))
}

/// The edge of the API: what one client can make the node hold or wait
/// for. docs/OPERATIONS.md lists them.
pub mod limits {
    use std::time::Duration;

    /// Largest request message the node decodes. The largest legitimate
    /// one, a revocation list, is far smaller.
    pub const MAX_DECODED_MESSAGE: usize = 4 << 20;
    /// HTTP/2 streams (calls) open at once on one connection.
    pub const MAX_STREAMS_PER_CONNECTION: u32 = 64;
    /// Calls one connection may have in their handlers at once.
    pub const MAX_CALLS_PER_CONNECTION: usize = 32;
    /// Time a handler has to answer (the start of a stream counts; a
    /// download or a Watch then streams for as long as it needs).
    pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
    /// HTTP/2 pings on an idle connection, and how long a ping may go
    /// unanswered before the connection is closed.
    pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
    pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
    pub const TCP_KEEPALIVE: Duration = Duration::from_secs(60);
    /// Size of the request headers (the token is one of them).
    pub const MAX_HEADER_LIST: u32 = 16 << 10;
    /// Failed authentications from one address within the window, after
    /// which its calls are refused unchecked until the window passes.
    pub const AUTH_FAILURES: u32 = 20;
    pub const AUTH_WINDOW: Duration = Duration::from_secs(60);
}

/// The API's TLS certificate (chain) and private key, PEM.
pub struct ApiIdentity {
    cert: Vec<u8>,
    key: Zeroizing<Vec<u8>>,
}

impl ApiIdentity {
    /// Reads and checks both files, so a missing or wrong one is a start-up
    /// error that names it.
    pub fn load(cert: &Path, key: &Path) -> anyhow::Result<Self> {
        let read = |p: &Path| {
            std::fs::read(p).with_context(|| {
                format!(
                    "cannot read the API's TLS file {}: `bayspace init` writes api.crt and api.key; \
                     give the institution's own with `bayspace init --api-cert --api-key`, or point \
                     `api-cert`/`api-key` in config.toml at them",
                    p.display()
                )
            })
        };
        let cert_pem = read(cert)?;
        let key_pem = Zeroizing::new(read(key)?);
        api_tls::fingerprint(&cert_pem, &cert.display().to_string())?;
        api_tls::check_key(&key_pem, &key.display().to_string())?;
        Ok(ApiIdentity {
            cert: cert_pem,
            key: key_pem,
        })
    }
}

/// A service behind the token check, decoding at most
/// [`limits::MAX_DECODED_MESSAGE`] per request.
macro_rules! guarded {
    ($server:ident, $api:expr, $auth:expr) => {
        tonic::service::interceptor::InterceptedService::new(
            $server::new($api).max_decoding_message_size(limits::MAX_DECODED_MESSAGE),
            $auth.clone(),
        )
    };
}

/// Binds the configured address and serves until `shutdown` completes,
/// over TLS unless `tls` is `None` (allowed only on a loopback address; the
/// config check refuses the rest). Binding happens before this returns, so
/// an address in use is a start-up error rather than a log line from a
/// background task.
pub async fn serve(
    ctx: Arc<NodeContext>,
    admin_token_hash: blake3::Hash,
    tls: Option<ApiIdentity>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<JoinHandle<Result<(), tonic::transport::Error>>> {
    let addr = ctx.node.config.grpc;
    let incoming = TcpIncoming::bind(addr)
        .with_context(|| format!("cannot listen for gRPC on {addr}"))?
        .with_nodelay(Some(true))
        .with_keepalive(Some(limits::TCP_KEEPALIVE));
    let secure = tls.is_some();
    let scheme = if secure { "https" } else { "http" };
    let mut server = Server::builder()
        .max_concurrent_streams(limits::MAX_STREAMS_PER_CONNECTION)
        .concurrency_limit_per_connection(limits::MAX_CALLS_PER_CONNECTION)
        .timeout(limits::REQUEST_TIMEOUT)
        .http2_keepalive_interval(Some(limits::KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(limits::KEEPALIVE_TIMEOUT))
        .http2_max_header_list_size(limits::MAX_HEADER_LIST)
        // Over TLS, browsers agree on HTTP/2 by ALPN; on a plaintext
        // loopback API they speak HTTP/1.1 to the console.
        .accept_http1(!secure && ctx.node.config.console)
        .layer(metered::MeteredLayer);
    if let Some(id) = tls {
        server = server
            .tls_config(ServerTlsConfig::new().identity(Identity::from_pem(&id.cert, &*id.key)))
            .context("the API's TLS certificate or key is not usable")?;
    }

    let (health, health_service) = tonic_health::server::health_reporter();
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;

    let auth = Authenticator::new(admin_token_hash, ctx.node.researchers.clone());
    let apis = Apis::new(&ctx, scheme);
    let mut routes = RoutesBuilder::default();
    routes
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(guarded!(NodeServiceServer, apis.node.clone(), auth))
        .add_service(guarded!(
            ResearcherServiceServer,
            apis.researchers.clone(),
            auth
        ))
        .add_service(guarded!(
            RevocationServiceServer,
            RevocationApi(ctx.clone()),
            auth
        ))
        .add_service(guarded!(
            TransferServiceServer,
            apis.transfers.clone(),
            auth
        ))
        .add_service(guarded!(DataServiceServer, apis.transfers.clone(), auth))
        .add_service(guarded!(CatalogServiceServer, apis.catalog.clone(), auth))
        .add_service(guarded!(DatasetServiceServer, apis.catalog.clone(), auth))
        .add_service(guarded!(AuditServiceServer, apis.audit.clone(), auth))
        .add_service(guarded!(
            BackupServiceServer,
            backup::BackupApi {
                audit: ctx.node.audit.clone(),
                store: ctx.node.store.clone(),
            },
            auth
        ));
    contract_services(&mut routes, &apis.contracts, &auth);
    let mut axum_routes = routes.routes().into_axum_router();
    if ctx.node.config.console {
        // Browsers send no `application/grpc` requests and gRPC clients ask
        // only for `/<package>.<Service>/<method>` paths, so the console's
        // paths sit beside the services without overlapping them.
        axum_routes = axum_routes.merge(crate::console::router(ctx.clone(), apis, auth, secure)?);
    }
    let router = server.add_routes(Routes::from(axum_routes).prepare());

    health.set_serving::<NodeServiceServer<NodeApi>>().await;
    health
        .set_serving::<ResearcherServiceServer<ResearcherApi>>()
        .await;
    health
        .set_serving::<RevocationServiceServer<RevocationApi>>()
        .await;
    health
        .set_serving::<CatalogServiceServer<CatalogApi>>()
        .await;
    health
        .set_serving::<DatasetServiceServer<CatalogApi>>()
        .await;
    health.set_serving::<AuditServiceServer<AuditApi>>().await;
    health
        .set_serving::<BackupServiceServer<backup::BackupApi>>()
        .await;
    health
        .set_serving::<ContractServiceServer<ContractsApi>>()
        .await;
    health
        .set_serving::<OfferServiceServer<ContractsApi>>()
        .await;
    health
        .set_serving::<RecordServiceServer<ContractsApi>>()
        .await;
    health
        .set_serving::<AgreementServiceServer<ContractsApi>>()
        .await;
    health
        .set_serving::<FilingServiceServer<ContractsApi>>()
        .await;
    health
        .set_serving::<TransferServiceServer<TransfersApi>>()
        .await;
    health
        .set_serving::<DataServiceServer<TransfersApi>>()
        .await;
    tracing::info!("grpc serving on {scheme}://{addr}");
    Ok(tokio::spawn(
        router.serve_with_incoming_shutdown(incoming, shutdown),
    ))
}

/// The in-process implementations of the services, shared by the gRPC
/// server and the console, so that both make the same calls with the same
/// role checks and audit entries.
#[derive(Clone)]
pub(crate) struct Apis {
    pub node: NodeApi,
    pub researchers: ResearcherApi,
    pub transfers: TransfersApi,
    pub catalog: CatalogApi,
    pub audit: AuditApi,
    pub contracts: ContractsApi,
}

impl Apis {
    fn new(ctx: &Arc<NodeContext>, scheme: &str) -> Apis {
        Apis {
            node: NodeApi(ctx.clone()),
            researchers: ResearcherApi(ctx.clone()),
            transfers: TransfersApi {
                transfers: ctx.node.transfers.clone(),
                export_dir: ctx.node.export_dir.clone(),
            },
            catalog: CatalogApi {
                node: ctx.node.clone(),
                grpc_endpoint: format!("{scheme}://{}", ctx.node.config.grpc),
            },
            audit: AuditApi {
                log: ctx.node.audit.clone(),
                witness: ctx.node.witness.clone(),
            },
            contracts: ContractsApi {
                negotiator: ctx.node.negotiator.clone(),
                researchers: ctx.node.researchers.clone(),
                holidays: ctx.holidays.clone(),
            },
        }
    }
}

/// The negotiation services; each is wrapped with `auth` and checks the
/// caller's role itself.
fn contract_services(routes: &mut RoutesBuilder, api: &ContractsApi, auth: &Authenticator) {
    routes
        .add_service(guarded!(ContractServiceServer, api.clone(), auth))
        .add_service(guarded!(OfferServiceServer, api.clone(), auth))
        .add_service(guarded!(RecordServiceServer, api.clone(), auth))
        .add_service(guarded!(AgreementServiceServer, api.clone(), auth))
        .add_service(guarded!(FilingServiceServer, api.clone(), auth));
}
