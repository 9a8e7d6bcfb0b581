//! `CatalogService` and `DatasetService`: search the federated catalog,
//! export it as DSP, and publish or withdraw this node's datasets.

use std::sync::Arc;

use bayspace_connector::audit::Actor;
use bayspace_connector::catalog::{CatalogError, NewDataset, SearchQuery};
use bayspace_connector::negotiator::OnwardError;
use bayspace_connector::node::{Node, PublishError};
use bayspace_contracts::classification::{Category, DataLevel};
use bayspace_contracts::descriptor::{ApprovalMode, DatasetId, SignedDescriptor};
use bayspace_contracts::dsp::DataService;
use bayspace_contracts::policy::{Purpose, RegionSet};
use bayspace_contracts::region::Region;
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{Date, OffsetDateTime};
use tonic::{Request, Response, Status};

use crate::grpc::auth::{Caller, Role, require_admin, require_user};
use crate::proto;

/// Everything the two services need; cheap to clone.
#[derive(Clone)]
pub struct CatalogApi {
    pub node: Arc<Node>,
    pub grpc_endpoint: String,
}

fn actor(caller: &Caller) -> Actor {
    match caller.role {
        Role::Admin => Actor::Admin,
        Role::Researcher => Actor::Researcher(caller.id.clone()),
    }
}

fn publish_status(e: PublishError) -> Status {
    if let Some(full) = super::disk_full(&e) {
        return full;
    }
    match e {
        PublishError::Catalog(e) => catalog_status(e),
        PublishError::Policy(_) | PublishError::Onward(OnwardError::Read { .. }) => {
            Status::invalid_argument(e.to_string())
        }
        PublishError::Onward(OnwardError::Forbidden { .. }) => {
            Status::failed_precondition(e.to_string())
        }
        _ => Status::internal(e.to_string()),
    }
}

fn catalog_status(e: CatalogError) -> Status {
    if let Some(full) = super::disk_full(&e) {
        return full;
    }
    match e {
        CatalogError::Store(_) | CatalogError::Encode(_) | CatalogError::Dsp(_) => {
            Status::internal(e.to_string())
        }
        CatalogError::UnknownDataset(_) => Status::not_found(e.to_string()),
        CatalogError::NotOurs { .. } => Status::permission_denied(e.to_string()),
        _ => Status::invalid_argument(e.to_string()),
    }
}

fn opt(s: String) -> Option<String> {
    let s = s.trim().to_owned();
    (!s.is_empty()).then_some(s)
}

fn parse_field<T: std::str::FromStr>(field: &str, value: &str) -> Result<T, Status>
where
    T::Err: std::fmt::Display,
{
    value
        .parse()
        .map_err(|e| Status::invalid_argument(format!("{field}: {e}")))
}

fn summary(s: &SignedDescriptor) -> proto::DatasetSummary {
    let d = &s.descriptor;
    proto::DatasetSummary {
        id: d.id.to_string(),
        title: d.title.clone(),
        description: d.description.clone(),
        keywords: d.keywords.clone(),
        publisher: d.publisher.name.clone(),
        publisher_peer_id: d.publisher.peer_id.clone(),
        region: d.region.to_string(),
        version: d.version,
        level: d.profile.level.to_string(),
        categories: d
            .profile
            .categories
            .iter()
            .map(ToString::to_string)
            .collect(),
        personal_individuals: d.profile.personal_individuals,
        sensitive_individuals: d.profile.sensitive_individuals,
        size: d.size,
        content_hash: d.content_hash.to_string(),
        published_at: d.issued.format(&Rfc3339).unwrap_or_default(),
        offers: d
            .offers
            .iter()
            .map(|o| proto::Offer {
                id: o.id.to_string(),
                approval: match o.approval {
                    ApprovalMode::Manual => "manual".into(),
                    ApprovalMode::Auto => "auto".into(),
                },
                policy_json: serde_json::to_string(&o.policy).unwrap_or_default(),
            })
            .collect(),
    }
}

fn new_dataset(r: proto::PublishRequest) -> Result<NewDataset, Status> {
    let level: DataLevel = parse_field("level", &r.level)?;
    let categories = r
        .categories
        .iter()
        .map(|c| parse_field::<Category>("category", c))
        .collect::<Result<_, _>>()?;
    let purposes = r
        .purposes
        .iter()
        .map(|p| parse_field::<Purpose>("purpose", p))
        .collect::<Result<Vec<_>, _>>()?;
    // A GBA data space offers to the GBA unless the steward says otherwise.
    let recipient_regions = if r.recipient_regions.is_empty() {
        RegionSet::GbaOnly
    } else {
        RegionSet::from_args(&r.recipient_regions)
            .map_err(|e| Status::invalid_argument(format!("recipient-region: {e}")))?
    };
    let approval = match r.approval.as_str() {
        "" | "manual" => ApprovalMode::Manual,
        "auto" => ApprovalMode::Auto,
        other => {
            return Err(Status::invalid_argument(format!(
                "approval: `{other}` is not manual or auto"
            )));
        }
    };
    let replaces = opt(r.replaces)
        .map(|id| parse_field::<DatasetId>("replaces", &id))
        .transpose()?;
    if r.path.is_empty() {
        return Err(Status::invalid_argument(
            "path: the dataset file is required",
        ));
    }
    let valid_until = opt(r.valid_until)
        .map(|v| {
            OffsetDateTime::parse(&v, &Rfc3339).map_err(|e| {
                Status::invalid_argument(format!(
                    "valid-until `{v}` is not an RFC 3339 moment such as \
                     2026-12-31T18:00:00+08:00: {e}"
                ))
            })
        })
        .transpose()?;
    let delete_by = opt(r.delete_by)
        .map(|v| {
            Date::parse(&v, format_description!("[year]-[month]-[day]")).map_err(|e| {
                Status::invalid_argument(format!("delete-by `{v}` is not a date YYYY-MM-DD: {e}"))
            })
        })
        .transpose()?;
    Ok(NewDataset {
        path: r.path.into(),
        title: r.title,
        description: r.description,
        keywords: r.keywords,
        region: None,
        level,
        personal_individuals: r.personal_individuals,
        sensitive_individuals: r.sensitive_individuals,
        categories,
        collected_abroad: r.collected_abroad,
        purposes,
        recipient_regions,
        approval,
        valid_days: (r.valid_days > 0).then_some(r.valid_days),
        valid_until,
        use_limit: r.use_limit,
        delete_by,
        replaces,
    })
}

#[tonic::async_trait]
impl proto::catalog_service_server::CatalogService for CatalogApi {
    async fn search(
        &self,
        req: Request<proto::SearchRequest>,
    ) -> Result<Response<proto::SearchResponse>, Status> {
        require_user(&req)?;
        let r = req.into_inner();
        let query = SearchQuery {
            text: opt(r.text),
            publisher: opt(r.publisher),
            region: opt(r.region)
                .map(|v| parse_field::<Region>("region", &v))
                .transpose()?,
            category: opt(r.category)
                .map(|v| parse_field::<Category>("category", &v))
                .transpose()?,
            level: opt(r.level)
                .map(|v| parse_field::<DataLevel>("level", &v))
                .transpose()?,
            limit: (r.limit > 0).then_some(r.limit),
            after: opt(r.after),
        };
        let page = self.node.catalog.search(&query).map_err(catalog_status)?;
        Ok(Response::new(proto::SearchResponse {
            datasets: page.items.iter().map(summary).collect(),
            next: page.next.unwrap_or_default(),
        }))
    }

    async fn export_dsp(
        &self,
        req: Request<proto::ExportDspRequest>,
    ) -> Result<Response<proto::ExportDspResponse>, Status> {
        require_user(&req)?;
        let peer = &self.node.institution.peer_id;
        let service = DataService {
            id: format!("urn:bayspace:service:{peer}"),
            endpoint_url: self.grpc_endpoint.clone(),
        };
        let doc = self
            .node
            .catalog
            .export_dsp(&format!("urn:bayspace:catalog:{peer}"), peer, &service)
            .map_err(catalog_status)?;
        Ok(Response::new(proto::ExportDspResponse {
            json: serde_json::to_string_pretty(&doc)
                .map_err(|e| Status::internal(e.to_string()))?,
        }))
    }
}

#[tonic::async_trait]
impl proto::dataset_service_server::DatasetService for CatalogApi {
    async fn publish(
        &self,
        req: Request<proto::PublishRequest>,
    ) -> Result<Response<proto::PublishResponse>, Status> {
        let caller = require_admin(&req)?.clone();
        let new = new_dataset(req.into_inner())?;
        let signed = self
            .node
            .publish(actor(&caller), new)
            .await
            .map_err(publish_status)?;
        let d = &signed.descriptor;
        Ok(Response::new(proto::PublishResponse {
            id: d.id.to_string(),
            version: d.version,
            content_hash: d.content_hash.to_string(),
        }))
    }

    async fn withdraw(
        &self,
        req: Request<proto::WithdrawRequest>,
    ) -> Result<Response<proto::WithdrawResponse>, Status> {
        let caller = require_admin(&req)?.clone();
        let id: DatasetId = parse_field("id", &req.into_inner().id)?;
        let signed = self
            .node
            .withdraw(actor(&caller), &id)
            .await
            .map_err(publish_status)?;
        Ok(Response::new(proto::WithdrawResponse {
            id: signed.descriptor.id.to_string(),
            version: signed.descriptor.version,
        }))
    }
}
