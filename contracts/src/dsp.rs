//! The Dataspace Protocol 2025-1 JSON-LD form of catalogs, contract and
//! transfer messages, so that Bayspace records can be read by any DSP
//! connector.
//!
//! The signed records stay authoritative: these renderings are views of
//! them and carry no signatures. Usage policies become ODRL policies, with
//! the term names the DSP examples use (`use`, `purpose`, `dateTime`, ...)
//! and, for what ODRL has no operand for, the Bayspace profile
//! [`ODRL_PROFILE`]. The mapping is listed in `docs/SIGNED-RECORDS.md`.

use serde_json::{Map, Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::agreement::{Agreement, AgreementId};
use crate::descriptor::{DatasetDescriptor, DatasetId, OfferId};
use crate::policy::{Action, Constraint, DutyAction, Policy, RegionSet};
use crate::region::{GbaCity, MainlandCity, Region};

/// The JSON-LD context every DSP 2025-1 message names.
pub const CONTEXT: &str = "https://w3id.org/dspace/2025/1/context.jsonld";
/// The ODRL profile that defines Bayspace's extra left operand.
pub const ODRL_PROFILE: &str = "urn:bayspace:odrl-profile:1";
/// Left operand for "onward transfers may go only to these regions".
pub const ONWARD_TRANSFER_REGION: &str = "urn:bayspace:odrl:onwardTransferRegion";
/// Action of the duty an agreement on the `certification` route carries:
/// the export relies on the provider's personal information export
/// certificate, named by the constraints on [`CERTIFICATE`] and `dateTime`.
pub const EXPORT_UNDER_CERTIFICATION: &str = "urn:bayspace:odrl:exportUnderCertification";
/// Left operand naming the certificate's reference.
pub const CERTIFICATE: &str = "urn:bayspace:odrl:piExportCertificate";
/// The distribution format: encrypted segments pulled over a libp2p stream.
pub const FORMAT: &str = "urn:bayspace:format:libp2p-stream-pull";
/// The `endpointType` of a Bayspace data address: the endpoint is a
/// multiaddr of the provider node.
pub const ENDPOINT_TYPE: &str = "urn:bayspace:endpoint:libp2p";

/// Why a record has no DSP rendering.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DspError {
    #[error("policy {0} has neither a permission nor a prohibition; ODRL offers need one")]
    EmptyPolicy(String),
    #[error("timestamp in {0} cannot be written as RFC 3339")]
    Timestamp(String),
}

/// The catalog's data service: where DSP messages for it go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataService {
    pub id: String,
    pub endpoint_url: String,
}

/// A DSP `DataAddress`: where the consumer fetches from, and properties
/// such as the provider's peer id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataAddress {
    pub endpoint: String,
    pub properties: Vec<(String, String)>,
}

/// Who sends a contract request: a first request carries the consumer's
/// callback address, a later one the provider's process id (the schema
/// allows exactly one of the two).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestStep<'a> {
    Initial { callback_address: &'a str },
    Counter { provider_pid: &'a str },
}

/// A `Catalog` of the datasets a participant offers. Withdrawn datasets
/// are left out.
pub fn catalog(
    id: &str,
    participant_id: &str,
    service: &DataService,
    datasets: &[DatasetDescriptor],
) -> Result<Value, DspError> {
    let mut c = json!({
        "@context": [CONTEXT],
        "@id": id,
        "@type": "Catalog",
        "participantId": participant_id,
        "service": [{
            "@id": service.id,
            "@type": "DataService",
            "endpointURL": service.endpoint_url,
        }],
    });
    let ds = datasets
        .iter()
        .filter(|d| !d.withdrawn)
        .map(|d| dataset(d, &service.id))
        .collect::<Result<Vec<_>, _>>()?;
    // The schema wants at least one item whenever the key is present.
    if !ds.is_empty() {
        c["dataset"] = Value::Array(ds);
    }
    Ok(c)
}

/// One `Dataset` with its offers and its single distribution.
pub fn dataset(d: &DatasetDescriptor, access_service: &str) -> Result<Value, DspError> {
    let offers = d
        .offers
        .iter()
        .map(|o| offer(&o.id, None, &o.policy))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(json!({
        "@id": d.id.to_string(),
        "@type": "Dataset",
        "dct:title": d.title,
        "dct:description": d.description,
        "dcat:keyword": d.keywords,
        "dct:issued": rfc3339(d.issued, "dataset issued")?,
        "dcat:version": d.version.to_string(),
        "dct:publisher": d.publisher.peer_id,
        "dcat:byteSize": d.size.to_string(),
        "hasPolicy": offers,
        "distribution": [{
            "@type": "Distribution",
            "format": FORMAT,
            "accessService": access_service,
        }],
    }))
}

/// A `ContractRequestMessage` for one offer of a dataset, under the given
/// (possibly narrowed) policy.
pub fn contract_request(
    consumer_pid: &str,
    step: RequestStep<'_>,
    offer_id: &OfferId,
    target: &DatasetId,
    policy: &Policy,
) -> Result<Value, DspError> {
    let mut m = json!({
        "@context": [CONTEXT],
        "@type": "ContractRequestMessage",
        "consumerPid": consumer_pid,
        "offer": offer(offer_id, Some(target), policy)?,
    });
    match step {
        RequestStep::Initial { callback_address } => {
            m["callbackAddress"] = callback_address.into();
        }
        RequestStep::Counter { provider_pid } => m["providerPid"] = provider_pid.into(),
    }
    Ok(m)
}

/// A `ContractAgreementMessage`. The agreed policy gets the agreement's
/// purpose and validity window added to every permission, so the ODRL
/// agreement says on its own what was agreed.
pub fn contract_agreement(
    provider_pid: &str,
    consumer_pid: &str,
    a: &Agreement,
) -> Result<Value, DspError> {
    let mut policy = a.constraints.clone();
    for p in &mut policy.permissions {
        p.constraints.push(Constraint::Purpose {
            is_any_of: vec![a.purpose.clone()],
        });
        p.constraints.push(Constraint::DateTime {
            not_before: Some(a.not_before),
            not_after: Some(a.not_after),
        });
    }
    let mut agreement = odrl_policy(a.id.as_str(), "Agreement", &policy)?;
    if let Some(c) = &a.certificate {
        // The route is not a usage term, so it goes in as a duty of the
        // provider's: export only while the certificate is valid.
        let duty = json!({
            "action": EXPORT_UNDER_CERTIFICATION,
            "constraint": [
                {"leftOperand": CERTIFICATE, "operator": "eq", "rightOperand": c.reference},
                {"leftOperand": "dateTime", "operator": "lteq", "rightOperand": c.valid_until.to_string()},
            ],
        });
        match agreement.get_mut("obligation") {
            Some(Value::Array(duties)) => duties.push(duty),
            _ => {
                agreement.insert("obligation".into(), Value::Array(vec![duty]));
            }
        }
    }
    agreement.insert("target".into(), a.dataset.to_string().into());
    agreement.insert("assigner".into(), a.provider.peer_id.clone().into());
    agreement.insert("assignee".into(), a.consumer.peer_id.clone().into());
    agreement.insert(
        "timestamp".into(),
        rfc3339(a.created, "agreement created")?.into(),
    );
    Ok(json!({
        "@context": [CONTEXT],
        "@type": "ContractAgreementMessage",
        "providerPid": provider_pid,
        "consumerPid": consumer_pid,
        "agreement": agreement,
    }))
}

/// A `TransferRequestMessage` for a pull transfer under an agreement.
pub fn transfer_request(
    consumer_pid: &str,
    agreement: &AgreementId,
    callback_address: &str,
) -> Value {
    json!({
        "@context": [CONTEXT],
        "@type": "TransferRequestMessage",
        "consumerPid": consumer_pid,
        "agreementId": agreement.as_str(),
        "format": FORMAT,
        "callbackAddress": callback_address,
    })
}

/// A `TransferStartMessage`; a pull transfer names the provider's data
/// address.
pub fn transfer_start(
    provider_pid: &str,
    consumer_pid: &str,
    address: Option<&DataAddress>,
) -> Value {
    let mut m = json!({
        "@context": [CONTEXT],
        "@type": "TransferStartMessage",
        "providerPid": provider_pid,
        "consumerPid": consumer_pid,
    });
    if let Some(a) = address {
        let mut da = json!({
            "@type": "DataAddress",
            "endpointType": ENDPOINT_TYPE,
            "endpoint": a.endpoint,
        });
        if !a.properties.is_empty() {
            da["endpointProperties"] = a
                .properties
                .iter()
                .map(|(name, value)| json!({"@type": "EndpointProperty", "name": name, "value": value}))
                .collect();
        }
        m["dataAddress"] = da;
    }
    m
}

fn offer(id: &OfferId, target: Option<&DatasetId>, policy: &Policy) -> Result<Value, DspError> {
    let mut o = odrl_policy(id.as_str(), "Offer", policy)?;
    if let Some(t) = target {
        o.insert("target".into(), t.to_string().into());
    }
    Ok(Value::Object(o))
}

/// An ODRL policy object of the given type. Empty rule lists are left out,
/// as the schema wants at least one item whenever a key is present.
pub fn odrl_policy(id: &str, kind: &str, p: &Policy) -> Result<Map<String, Value>, DspError> {
    if p.permissions.is_empty() && p.prohibitions.is_empty() {
        return Err(DspError::EmptyPolicy(id.to_owned()));
    }
    let mut m = Map::new();
    m.insert("@id".into(), id.into());
    m.insert("@type".into(), kind.into());
    m.insert("profile".into(), ODRL_PROFILE.into());
    let mut put = |key: &str, rules: Vec<Value>| {
        if !rules.is_empty() {
            m.insert(key.into(), Value::Array(rules));
        }
    };
    put(
        "permission",
        p.permissions
            .iter()
            .map(|r| {
                let mut v = rule(action(r.action), &r.constraints);
                if !r.duties.is_empty() {
                    v["duty"] = r
                        .duties
                        .iter()
                        .map(|d| rule(duty_action(d.action), &d.constraints))
                        .collect();
                }
                v
            })
            .collect(),
    );
    put(
        "prohibition",
        p.prohibitions
            .iter()
            .map(|r| rule(action(r.action), &r.constraints))
            .collect(),
    );
    put(
        "obligation",
        p.obligations
            .iter()
            .map(|d| rule(duty_action(d.action), &d.constraints))
            .collect(),
    );
    Ok(m)
}

fn action(a: Action) -> &'static str {
    match a {
        Action::Use => "use",
        Action::Distribute => "distribute",
    }
}

fn duty_action(a: DutyAction) -> &'static str {
    match a {
        DutyAction::Delete => "delete",
    }
}

fn rule(action: &str, constraints: &[Constraint]) -> Value {
    let mut v = json!({ "action": action });
    let cs: Vec<Value> = constraints.iter().flat_map(odrl_constraints).collect();
    if !cs.is_empty() {
        v["constraint"] = Value::Array(cs);
    }
    v
}

/// One of our constraints as ODRL atomic constraints (a date-time window
/// with both ends is two of them, which ODRL reads as "both").
pub fn odrl_constraints(c: &Constraint) -> Vec<Value> {
    let atom = |left: &str, op: &str, right: Value| json!({"leftOperand": left, "operator": op, "rightOperand": right});
    match c {
        Constraint::Purpose { is_any_of } => vec![atom(
            "purpose",
            "isAnyOf",
            is_any_of.iter().map(|p| p.as_str()).collect(),
        )],
        Constraint::RecipientRegion { allowed } => {
            vec![atom("spatial", "isAnyOf", regions(allowed))]
        }
        Constraint::DateTime {
            not_before,
            not_after,
        } => [(not_before, "gteq"), (not_after, "lteq")]
            .into_iter()
            .filter_map(|(t, op)| {
                t.and_then(|t| t.format(&Rfc3339).ok())
                    .map(|s| atom("dateTime", op, s.into()))
            })
            .collect(),
        Constraint::Count { lteq } => vec![atom("count", "lteq", lteq.to_string().into())],
        Constraint::Retention { delete_by } => {
            vec![atom("dateTime", "lteq", delete_by.to_string().into())]
        }
        Constraint::OnwardTransferOutsideGbaProhibited => vec![atom(
            ONWARD_TRANSFER_REGION,
            "isAnyOf",
            regions(&RegionSet::GbaOnly),
        )],
    }
}

fn regions(set: &RegionSet) -> Value {
    match set {
        RegionSet::AnyOf(rs) => rs.iter().map(|r| r.to_string()).collect(),
        RegionSet::GbaOnly => GbaCity::ALL
            .iter()
            .map(|c| Region::Mainland(MainlandCity::Gba(*c)))
            .chain([Region::HongKong, Region::Macao])
            .map(|r| r.to_string())
            .collect(),
    }
}

fn rfc3339(t: OffsetDateTime, what: &str) -> Result<String, DspError> {
    t.format(&Rfc3339)
        .map_err(|_| DspError::Timestamp(what.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agreement::tests::agreement;
    use crate::descriptor::tests::descriptor;

    #[test]
    fn policies_map_to_odrl() {
        let a = agreement();
        let m = contract_agreement("urn:p", "urn:c", &a).unwrap();
        let perm = &m["agreement"]["permission"][0];
        assert_eq!(perm["action"], "use");
        let cs = perm["constraint"].as_array().unwrap();
        assert!(cs.contains(&json!({"leftOperand": "purpose", "operator": "isAnyOf", "rightOperand": ["academic-research"]})));
        assert!(
            cs.contains(&json!({"leftOperand": "count", "operator": "lteq", "rightOperand": "3"}))
        );
        assert!(cs.contains(&json!({"leftOperand": "dateTime", "operator": "gteq", "rightOperand": "2025-04-01T00:00:00Z"})));
        let spatial = cs.iter().find(|c| c["leftOperand"] == "spatial").unwrap();
        assert_eq!(spatial["rightOperand"].as_array().unwrap().len(), 11);
        assert_eq!(perm["duty"][0]["action"], "delete");
        assert_eq!(
            perm["duty"][0]["constraint"][0]["rightOperand"],
            "2027-06-30"
        );
        let pro = &m["agreement"]["prohibition"][0];
        assert_eq!(pro["action"], "distribute");
        assert_eq!(pro["constraint"][0]["leftOperand"], ONWARD_TRANSFER_REGION);
        assert!(m["agreement"].get("obligation").is_none());
        assert_eq!(m["agreement"]["assignee"], a.consumer.peer_id.as_str());
    }

    #[test]
    fn a_certified_agreement_names_its_certificate() {
        let a = crate::agreement::tests::certified_agreement();
        let m = contract_agreement("urn:p", "urn:c", &a).unwrap();
        assert_eq!(
            m["agreement"]["obligation"],
            json!([{
                "action": EXPORT_UNDER_CERTIFICATION,
                "constraint": [
                    {"leftOperand": CERTIFICATE, "operator": "eq", "rightOperand": "CQC-PI-2026-0042"},
                    {"leftOperand": "dateTime", "operator": "lteq", "rightOperand": "2028-08-31"},
                ],
            }])
        );
        // Other routes carry no such duty.
        let plain = contract_agreement("urn:p", "urn:c", &agreement()).unwrap();
        assert!(plain["agreement"].get("obligation").is_none());
    }

    #[test]
    fn withdrawn_and_empty() {
        let svc = DataService {
            id: "urn:bayspace:service:x".into(),
            endpoint_url: "/ip6/2001:db8::1/tcp/4001".into(),
        };
        let mut d = descriptor();
        d.withdrawn = true;
        let c = catalog("urn:bayspace:catalog:x", "peer", &svc, &[d.clone()]).unwrap();
        assert!(c.get("dataset").is_none());
        d.offers[0].policy = Policy::default();
        assert_eq!(
            dataset(&d, &svc.id).unwrap_err(),
            DspError::EmptyPolicy("urn:bayspace:offer:research".into())
        );
    }

    #[test]
    fn request_step_picks_one_key() {
        let d = descriptor();
        let o = &d.offers[0];
        let first = contract_request(
            "urn:c",
            RequestStep::Initial {
                callback_address: "cb",
            },
            &o.id,
            &d.id,
            &o.policy,
        )
        .unwrap();
        assert!(first.get("providerPid").is_none() && first["callbackAddress"] == "cb");
        let next = contract_request(
            "urn:c",
            RequestStep::Counter {
                provider_pid: "urn:p",
            },
            &o.id,
            &d.id,
            &o.policy,
        )
        .unwrap();
        assert!(next.get("callbackAddress").is_none() && next["providerPid"] == "urn:p");
        assert_eq!(next["offer"]["target"], d.id.to_string());
    }
}
