//! `bayspace demo`: three institutions on `[::1]`, one cross-border request
//! from proposal to verified encrypted release, and one refusal.
//!
//! Everything is real: the directories are made by this binary's own
//! `authority`, `init` commands, the nodes are `bayspace run` processes, and
//! every step goes through their gRPC API as a user's client would. The
//! temporary directory and the node processes are removed at the end, on
//! failure too.

use std::fmt::Write as _;
use std::net::{Ipv6Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tonic::Code;

use crate::client::{self, AuthChannel, ClientArgs};
use crate::proto::catalog_service_client::CatalogServiceClient;
use crate::proto::contract_service_client::ContractServiceClient;
use crate::proto::dataset_service_client::DatasetServiceClient;
use crate::proto::node_service_client::NodeServiceClient;
use crate::proto::offer_service_client::OfferServiceClient;
use crate::proto::record_service_client::RecordServiceClient;
use crate::proto::researcher_service_client::ResearcherServiceClient;
use crate::proto::transfer_service_client::TransferServiceClient;
use crate::proto::{
    AddResearcherRequest, ApproveRequest, ContractRequest, FetchRequest, ListPendingRequest,
    Negotiation, PublishRequest, SearchRequest, SetRecordsRequest, ShowNegotiationRequest,
    StatusRequest,
};

/// How long any one step may take before the demo gives up.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(50);
/// Size of the synthetic dataset: enough for several encrypted segments.
const DATASET_BYTES: usize = 8 << 20;

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Keep the temporary directory (node directories, logs, the fetched
    /// file) instead of removing it.
    #[arg(long)]
    keep: bool,
}

struct Institution {
    name: &'static str,
    region: &'static str,
    dir: PathBuf,
    peer_id: String,
    grpc: String,
    p2p_port: u16,
}

/// The temporary directory and the node processes; both go away on drop.
struct Space {
    root: PathBuf,
    keep: bool,
    nodes: Vec<Child>,
}

impl Drop for Space {
    fn drop(&mut self) {
        for child in &mut self.nodes {
            // SIGTERM first, so each node flushes and exits cleanly.
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        for child in &mut self.nodes {
            while Instant::now() < deadline {
                if matches!(child.try_wait(), Ok(Some(_))) {
                    break;
                }
                std::thread::sleep(POLL);
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }
}

fn say(line: &str) {
    println!("{line}");
}

fn free_port() -> anyhow::Result<u16> {
    let l = TcpListener::bind(SocketAddr::from((Ipv6Addr::LOCALHOST, 0)))
        .context("cannot find a free port on [::1]; is IPv6 loopback enabled?")?;
    Ok(l.local_addr()?.port())
}

/// Run this binary with `args`; its stdout, or an error with its stderr.
fn me(args: &[&str]) -> anyhow::Result<String> {
    let exe = std::env::current_exe().context("cannot find the bayspace binary")?;
    let out = Command::new(exe)
        .args(args)
        .output()
        .with_context(|| format!("cannot run bayspace {}", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "bayspace {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn path(p: &Path) -> anyhow::Result<&str> {
    p.to_str()
        .with_context(|| format!("{} is not UTF-8", p.display()))
}

impl Space {
    fn institution(
        &mut self,
        name: &'static str,
        region: &'static str,
        bootstrap: Option<&Institution>,
    ) -> anyhow::Result<Institution> {
        let dir = self.root.join(name.replace(' ', "-").to_lowercase());
        let anchor = self.root.join("operator");
        let (p2p_port, grpc_port) = (free_port()?, free_port()?);
        let listen = format!("/ip6/::1/tcp/{p2p_port}");
        let grpc = format!("[::1]:{grpc_port}");
        let pubkey = anchor.join("authority.pub");
        let mut args = vec![
            "init",
            "--dir",
            path(&dir)?,
            "--institution",
            name,
            "--region",
            region,
            "--listen",
            &listen,
            "--grpc",
            &grpc,
            "--anchor",
            path(&pubkey)?,
        ];
        let boot;
        if let Some(b) = bootstrap {
            boot = format!("/ip6/::1/tcp/{}/p2p/{}", b.p2p_port, b.peer_id);
            args.extend(["--bootstrap", &boot]);
        }
        let out = me(&args)?;
        let peer_id = out
            .lines()
            .find_map(|l| l.strip_prefix("peer-id: "))
            .context("`bayspace init` printed no peer-id")?
            .to_owned();
        let cred = dir.join("membership.cred");
        me(&[
            "authority",
            "issue",
            "--dir",
            path(&anchor)?,
            "--institution",
            name,
            "--region",
            region,
            "--peer-id",
            &peer_id,
            "--prefix",
            "::1/128",
            "--out",
            path(&cred)?,
        ])?;
        let log = std::fs::File::create(dir.join("node.log"))?;
        let exe = std::env::current_exe()?;
        let child = Command::new(exe)
            .args(["run", "--dir", path(&dir)?])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start the {name} node"))?;
        self.nodes.push(child);
        Ok(Institution {
            name,
            region,
            dir,
            peer_id,
            grpc: format!("https://{grpc}"),
            p2p_port,
        })
    }
}

impl Institution {
    fn admin_args(&self) -> anyhow::Result<ClientArgs> {
        let token = std::fs::read_to_string(self.dir.join("admin.token"))?;
        Ok(ClientArgs::to(
            self.grpc.clone(),
            token.trim().to_owned(),
            Some(self.dir.join(bayspace_connector::config::DEFAULT_API_CERT)),
        ))
    }

    async fn admin(&self) -> anyhow::Result<AuthChannel> {
        client::connect(&self.admin_args()?).await
    }

    /// Waits until the node serves and has admitted every one of `peers`.
    async fn ready(&self, peers: &[&str]) -> anyhow::Result<()> {
        let start = Instant::now();
        loop {
            if let Ok(c) = self.admin().await
                && let Ok(s) = NodeServiceClient::new(c).status(StatusRequest {}).await
            {
                let s = s.into_inner();
                if peers
                    .iter()
                    .all(|p| s.admitted_peers.iter().any(|a| a.peer_id == *p))
                {
                    return Ok(());
                }
            }
            if start.elapsed() > STEP_TIMEOUT {
                bail!(
                    "the {} node did not admit its peers in time; see {}",
                    self.name,
                    self.dir.join("node.log").display()
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    async fn researcher(&self, name: &str) -> anyhow::Result<(AuthChannel, ClientArgs)> {
        let added = ResearcherServiceClient::new(self.admin().await?)
            .add(AddResearcherRequest {
                name: name.into(),
                orcid: String::new(),
            })
            .await?
            .into_inner();
        let args = ClientArgs::to(
            self.grpc.clone(),
            added.token,
            Some(self.dir.join(bayspace_connector::config::DEFAULT_API_CERT)),
        );
        Ok((client::connect(&args).await?, args))
    }
}

/// Polls a negotiation until `done` holds.
async fn until(
    c: &AuthChannel,
    id: &str,
    done: impl Fn(&Negotiation) -> bool,
) -> anyhow::Result<Negotiation> {
    let start = Instant::now();
    loop {
        let n = ContractServiceClient::new(c.clone())
            .show(ShowNegotiationRequest { id: id.into() })
            .await?
            .into_inner();
        if done(&n) {
            return Ok(n);
        }
        if start.elapsed() > STEP_TIMEOUT {
            bail!("negotiation {id} stayed {}", n.state);
        }
        tokio::time::sleep(POLL).await;
    }
}

fn synthetic_cohort() -> Vec<u8> {
    let mut out = String::with_capacity(DATASET_BYTES + 128);
    out.push_str("subject,age,hba1c,district\n");
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut i = 0u64;
    while out.len() < DATASET_BYTES {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let _ = writeln!(
            out,
            "S{i:07},{},{}.{},D{}",
            20 + x % 60,
            5 + x % 5,
            x % 10,
            x % 10
        );
        i += 1;
    }
    out.into_bytes()
}

pub fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    client::block_on(demo(args))
}

async fn demo(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let root = std::env::temp_dir().join(format!(
        "bayspace-demo-{}",
        bayspace_connector::random::hex(6)?
    ));
    std::fs::create_dir_all(&root)?;
    let mut space = Space {
        root: root.clone(),
        keep: args.keep,
        nodes: Vec::new(),
    };
    let mut summary: Vec<(String, String)> = Vec::new();

    say("Bayspace demo: three GBA institutions on [::1], each its own node process.");
    me(&["authority", "init", "--dir", path(&root.join("operator"))?])?;
    say("1. The data space operator creates a trust anchor and admits three members:");
    let sz = space.institution("Shenzhen University", "mainland:shenzhen", None)?;
    let hk = space.institution("University of Hong Kong", "hk", Some(&sz))?;
    let mo = space.institution("University of Macau", "macao", Some(&sz))?;
    for i in [&sz, &hk, &mo] {
        say(&format!("   {:<26} {:<18} {}", i.name, i.region, i.peer_id));
    }
    sz.ready(&[&hk.peer_id, &mo.peer_id]).await?;
    hk.ready(&[&sz.peer_id]).await?;
    mo.ready(&[&sz.peer_id]).await?;
    say("   every node verified the others' membership credentials over IPv6.");

    say("2. Shenzhen publishes a cohort with personal information of 150 000 people:");
    let data = synthetic_cohort();
    let file = root.join("diabetes-cohort.csv");
    std::fs::write(&file, &data)?;
    let published = DatasetServiceClient::new(sz.admin().await?)
        .publish(PublishRequest {
            path: path(&file)?.to_owned(),
            title: "Shenzhen diabetes cohort".into(),
            description: "HbA1c follow-up of adult patients, 2019-2024".into(),
            keywords: vec!["diabetes".into(), "cohort".into()],
            level: "general".into(),
            personal_individuals: 150_000,
            categories: vec!["health".into()],
            purposes: vec!["academic-research".into()],
            recipient_regions: vec!["hk".into(), "macao".into()],
            approval: "manual".into(),
            ..PublishRequest::default()
        })
        .await?
        .into_inner();
    say(&format!(
        "   {} ({} bytes, BLAKE3 {}…), offered for academic-research to hk and macao, manual approval",
        published.id,
        data.len(),
        &published.content_hash.get(..16).unwrap_or_default()
    ));
    let start = Instant::now();
    loop {
        let found = CatalogServiceClient::new(hk.admin().await?)
            .search(SearchRequest {
                text: "diabetes".into(),
                ..SearchRequest::default()
            })
            .await?
            .into_inner();
        if found.datasets.iter().any(|d| d.id == published.id) {
            break;
        }
        if start.elapsed() > STEP_TIMEOUT {
            bail!("the dataset never reached Hong Kong's catalog");
        }
        tokio::time::sleep(POLL).await;
    }
    say("   the signed descriptor reached Hong Kong's federated catalog by gossip.");

    say("3. A Hong Kong researcher requests it for academic research:");
    let (chan, researcher_args) = hk.researcher("Dr Chan Tai Man").await?;
    let n = ContractServiceClient::new(chan.clone())
        .request(ContractRequest {
            dataset_id: published.id.clone(),
            purpose: "academic-research".into(),
            offer_id: None,
        })
        .await?
        .into_inner();
    say(&format!("   negotiation {} is {}", n.id, n.state));

    say("4. Shenzhen's node assessed the request; its administrator sees:");
    let mut offers = OfferServiceClient::new(sz.admin().await?);
    let pending = offers
        .list(ListPendingRequest {})
        .await?
        .into_inner()
        .negotiations;
    let p = pending
        .iter()
        .find(|p| p.id == n.id)
        .context("the request is not pending on Shenzhen")?;
    say(&format!(
        "   route {} ({}), blockers: {}, obligations: {}",
        p.route,
        p.variant,
        p.blockers.join(", "),
        p.obligations.join(", ")
    ));
    summary.push(("route".into(), format!("{} ({})", p.route, p.variant)));
    match offers
        .approve(ApproveRequest {
            id: n.id.clone(),
            note: String::new(),
        })
        .await
    {
        Err(s) if s.code() == Code::FailedPrecondition => {
            say(&format!("   approving now is refused: {}", s.message()));
        }
        Err(s) => return Err(client::refused(s)),
        Ok(_) => bail!("approval went through although blockers remained"),
    }
    say("   the administrator records the PIPIA and the separate consent, then approves:");
    RecordServiceClient::new(sz.admin().await?)
        .set(SetRecordsRequest {
            dataset_id: published.id.clone(),
            pipia: Some(true),
            pipia_reference: Some("PIPIA-SZU-2026-014".into()),
            consent: Some(true),
            ..SetRecordsRequest::default()
        })
        .await?;
    offers
        .approve(ApproveRequest {
            id: n.id.clone(),
            note: "PIPIA-SZU-2026-014 on file".into(),
        })
        .await?;
    let done = until(&chan, &n.id, |n| {
        n.state == "FINALIZED" || n.state == "TERMINATED"
    })
    .await?;
    if done.state != "FINALIZED" {
        bail!(
            "the negotiation ended {}: {}",
            done.state,
            done.reasons.join("; ")
        );
    }
    say(&format!(
        "   both institutions signed agreement {}; the negotiation is FINALIZED on both sides.",
        done.agreement_id
    ));
    summary.push(("agreement".into(), done.agreement_id.clone()));

    say("5. The researcher fetches the data; Shenzhen checks everything again first:");
    let out = root.join("fetched-cohort.csv");
    let mut fetch = TransferServiceClient::new(chan.clone())
        .fetch(FetchRequest {
            agreement_id: done.agreement_id.clone(),
            out: String::new(),
            keep_sealed: true,
        })
        .await?
        .into_inner();
    let mut last = None;
    while let Some(p) = fetch.message().await? {
        if p.done {
            last = Some(p);
        }
    }
    let last = last.context("the transfer ended without a result")?;
    // Then from the home node to the researcher's machine, decrypted as it
    // streams.
    let got = crate::cli::transfer::download(
        &researcher_args,
        &done.agreement_id,
        &out,
        &mut crate::cli::transfer::Progress::new(true),
    )
    .await?;
    let fetched = std::fs::read(&out)?;
    let hash = blake3::hash(&fetched).to_hex().to_string();
    if fetched != data || hash != last.blake3 || got.blake3 != hash {
        bail!("the fetched file differs from the published one");
    }
    let rate = last.bytes_done as f64 / last.seconds.max(1e-6) / (1 << 20) as f64;
    // The figure includes the checks and the audited key release, and a
    // debug build (the README's `cargo run`) is far slower than a release.
    let build = if cfg!(debug_assertions) {
        ", in this debug build; docs/BENCHMARKS.md has release figures"
    } else {
        ""
    };
    say(&format!(
        "   {} bytes in {:.2} s ({rate:.0} MiB/s, checks and key release included{build}),",
        last.bytes_done, last.seconds
    ));
    say(
        "   sealed in XChaCha20-Poly1305 segments over libp2p; every segment and the BLAKE3 verified.",
    );
    summary.push((
        "transfer".into(),
        format!(
            "{} bytes, {:.2} s, BLAKE3 {}…",
            last.bytes_done,
            last.seconds,
            &hash[..16]
        ),
    ));

    say("6. A Macao researcher asks for the same data for marketing:");
    let (macao, _) = mo.researcher("Dr Ho Weng Kei").await?;
    let m = ContractServiceClient::new(macao.clone())
        .request(ContractRequest {
            dataset_id: published.id.clone(),
            purpose: "marketing".into(),
            offer_id: None,
        })
        .await?
        .into_inner();
    let refused = until(&macao, &m.id, |n| {
        n.state == "TERMINATED" || n.state == "FINALIZED"
    })
    .await?;
    if refused.state != "TERMINATED" {
        bail!("the Macao request was not refused: {}", refused.state);
    }
    for r in &refused.reasons {
        say(&format!("   refused: {r}"));
    }
    summary.push((
        "Macao request".into(),
        "refused (purpose not offered)".into(),
    ));

    say("");
    say("Summary");
    for (k, v) in &summary {
        say(&format!("  {k:<14} {v}"));
    }
    say(&format!(
        "  {:<14} {:.1} s",
        "demo time",
        started.elapsed().as_secs_f64()
    ));
    if args.keep {
        say(&format!("  {:<14} {}", "kept", root.display()));
    }
    drop(space);
    Ok(ExitCode::SUCCESS)
}
