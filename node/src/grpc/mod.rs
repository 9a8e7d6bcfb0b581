//! The gRPC API: the `bayspace.v1` services behind bearer-token
//! authentication ([`auth`]), plus the standard health and reflection
//! services, which stay open so that probes and tools like grpcurl work
//! without a token.

mod audit;
pub mod auth;
mod catalog;
mod contracts;
mod services;
mod transfers;

use std::future::Future;
use std::sync::Arc;

use anyhow::Context;
use tokio::task::JoinHandle;
use tonic::transport::Server;
use tonic::transport::server::{Router, TcpIncoming};

use audit::AuditApi;
use bayspace_contracts::descriptor::{Institution, PublicKey};
use catalog::CatalogApi;
use contracts::ContractsApi;

use crate::daemon::NodeContext;
use crate::proto::agreement_service_server::AgreementServiceServer;
use crate::proto::audit_service_server::AuditServiceServer;
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

/// Binds the configured address and serves until `shutdown` completes.
/// Binding happens before this returns, so an address in use is a start-up
/// error rather than a log line from a background task.
pub async fn serve(
    ctx: Arc<NodeContext>,
    admin_token_hash: blake3::Hash,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<JoinHandle<Result<(), tonic::transport::Error>>> {
    let addr = ctx.config.grpc;
    let incoming = TcpIncoming::bind(addr)
        .with_context(|| format!("cannot listen for gRPC on {addr}"))?
        .with_nodelay(Some(true));

    let (health, health_service) = tonic_health::server::health_reporter();
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;

    let auth = Authenticator::new(admin_token_hash, ctx.researchers.clone());
    let router = Server::builder()
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(NodeServiceServer::with_interceptor(
            NodeApi(ctx.clone()),
            auth.clone(),
        ))
        .add_service(ResearcherServiceServer::with_interceptor(
            ResearcherApi(ctx.clone()),
            auth.clone(),
        ))
        .add_service(RevocationServiceServer::with_interceptor(
            RevocationApi(ctx.clone()),
            auth.clone(),
        ))
        .add_service(TransferServiceServer::with_interceptor(
            TransfersApi(ctx.transfers.clone()),
            auth.clone(),
        ))
        .add_service(DataServiceServer::with_interceptor(
            TransfersApi(ctx.transfers.clone()),
            auth.clone(),
        ));
    let router = catalog_services(router, &ctx, &auth);
    let router = contract_services(router, &ctx, &auth);

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
    tracing::info!("grpc serving on {addr}");
    Ok(tokio::spawn(
        router.serve_with_incoming_shutdown(incoming, shutdown),
    ))
}

/// The catalog and dataset services; each is wrapped with `auth` and checks
/// the caller's role itself.
fn catalog_services(router: Router, ctx: &Arc<NodeContext>, auth: &Authenticator) -> Router {
    let api = CatalogApi {
        catalog: ctx.catalog.clone(),
        p2p: ctx.client.clone(),
        key: ctx.key.clone(),
        institution: Institution {
            name: ctx.config.institution.clone(),
            region: ctx.config.region,
            peer_id: ctx.peer_id.to_string(),
            key: PublicKey::from(&ctx.key.verifying_key()),
        },
        audit: ctx.audit.clone(),
        grpc_endpoint: format!("http://{}", ctx.config.grpc),
        negotiator: ctx.negotiator.clone(),
    };
    router
        .add_service(CatalogServiceServer::with_interceptor(
            api.clone(),
            auth.clone(),
        ))
        .add_service(DatasetServiceServer::with_interceptor(api, auth.clone()))
        .add_service(AuditServiceServer::with_interceptor(
            AuditApi {
                log: ctx.audit.clone(),
                witness: ctx.witness.clone(),
            },
            auth.clone(),
        ))
}

/// The negotiation services; each is wrapped with `auth` and checks the
/// caller's role itself.
fn contract_services(router: Router, ctx: &Arc<NodeContext>, auth: &Authenticator) -> Router {
    let api = ContractsApi {
        negotiator: ctx.negotiator.clone(),
        researchers: ctx.researchers.clone(),
        holidays: Arc::new(ctx.config.filing_holidays.clone()),
    };
    router
        .add_service(ContractServiceServer::with_interceptor(
            api.clone(),
            auth.clone(),
        ))
        .add_service(OfferServiceServer::with_interceptor(
            api.clone(),
            auth.clone(),
        ))
        .add_service(RecordServiceServer::with_interceptor(
            api.clone(),
            auth.clone(),
        ))
        .add_service(AgreementServiceServer::with_interceptor(
            api.clone(),
            auth.clone(),
        ))
        .add_service(FilingServiceServer::with_interceptor(api, auth.clone()))
}
