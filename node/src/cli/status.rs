//! `bayspace status`: what a running node reports about itself.

use std::process::ExitCode;

use serde_json::json;

use crate::client::{self, ClientArgs};
use crate::proto::StatusRequest;
use crate::proto::node_service_client::NodeServiceClient;

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

pub fn run(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let s = client::block_on(async {
        let mut c = NodeServiceClient::new(client::connect(&args.client).await?);
        Ok(c.status(StatusRequest {})
            .await
            .map_err(client::refused)?
            .into_inner())
    })?;
    if args.json {
        let peers: Vec<_> = s
            .admitted_peers
            .iter()
            .map(|p| {
                json!({
                    "peer_id": p.peer_id,
                    "institution": p.institution,
                    "region": p.region,
                    "credential_expires": p.credential_expires,
                })
            })
            .collect();
        let doc = json!({
            "peer_id": s.peer_id,
            "institution": s.institution,
            "region": s.region,
            "listen_addrs": s.listen_addrs,
            "admitted_peers": peers,
            "catalog_size": s.catalog_size,
            "uptime_seconds": s.uptime_seconds,
            "admission_refusals": s.admission_refusals,
            "version": s.version,
        });
        println!("{doc}");
        return Ok(ExitCode::SUCCESS);
    }
    println!("peer-id:            {}", s.peer_id);
    println!("institution:        {} ({})", s.institution, s.region);
    println!("version:            {}", s.version);
    println!("uptime:             {} s", s.uptime_seconds);
    for a in &s.listen_addrs {
        println!("listening on:       {a}");
    }
    println!("catalog size:       {}", s.catalog_size);
    println!("admission refusals: {}", s.admission_refusals);
    println!("admitted peers:     {}", s.admitted_peers.len());
    for p in &s.admitted_peers {
        println!(
            "  {}  {} ({}), credential expires {}",
            p.peer_id, p.institution, p.region, p.credential_expires
        );
    }
    Ok(ExitCode::SUCCESS)
}
