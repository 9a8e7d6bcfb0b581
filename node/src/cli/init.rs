//! `bayspace init`: prepare a node directory for an institution.
//!
//! Writes `config.toml`, `node.key` (0600), `admin.token` (0600), the API's
//! TLS certificate and key (`api.crt`, `api.key` (0600): self-signed, or
//! copies of the institution's own) and, with `--anchor`, `anchor.pub`. An existing node key is kept even with
//! `--force`: replacing it would change the PeerId and void the membership
//! credential.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use bayspace_connector::api_tls;
use bayspace_connector::config::{
    ADMIN_TOKEN_FILE, AdminToken, CONFIG_FILE, DEFAULT_API_CERT, DEFAULT_API_KEY, NodeConfig,
};
use bayspace_connector::identity::{Anchor, NodeKey, Overwrite, files};
use bayspace_contracts::region::Region;

#[derive(Debug, clap::Args)]
pub struct InitArgs {
    #[arg(long)]
    dir: PathBuf,
    #[arg(long)]
    institution: String,
    /// mainland:<city>, hk or macao.
    #[arg(long)]
    region: Region,
    /// libp2p listen multiaddr (repeat; default /ip6/::/tcp/4710 and
    /// /ip6/::/udp/4710/quic-v1).
    #[arg(long)]
    listen: Vec<String>,
    /// gRPC listen address (default [::1]:7410).
    #[arg(long)]
    grpc: Option<SocketAddr>,
    /// The trust anchor's public key file; copied to DIR/anchor.pub.
    #[arg(long)]
    anchor: Option<PathBuf>,
    /// Member multiaddr to dial at start, ending in /p2p/<PeerId> (repeat).
    #[arg(long)]
    bootstrap: Vec<String>,
    /// The institution's own certificate for the API (PEM, chain allowed);
    /// copied to DIR/api.crt. Without it a self-signed one is made.
    #[arg(long, requires = "api_key")]
    api_cert: Option<PathBuf>,
    /// The private key (PEM) of --api-cert; copied to DIR/api.key (0600).
    #[arg(long, requires = "api_cert")]
    api_key: Option<PathBuf>,
    /// Rewrite config.toml, admin.token, anchor.pub and the API certificate
    /// in a non-empty DIR.
    #[arg(long)]
    force: bool,
}

pub fn run(args: InitArgs) -> anyhow::Result<ExitCode> {
    let dir = &args.dir;
    if !args.region.can_export() {
        bail!(
            "region {} is a recipient region; a member node must be in mainland:<city>, hk or macao",
            args.region
        );
    }
    // The certificate is made, or the institution's checked, before anything
    // is written, so a wrong file leaves no half-made directory.
    let grpc = args
        .grpc
        .unwrap_or_else(|| SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, 7410)));
    let api = api_cert(grpc, args.api_cert.as_deref(), args.api_key.as_deref())?;
    prepare_dir(dir, args.force)?;
    let overwrite = if args.force {
        Overwrite::Replace
    } else {
        Overwrite::Refuse
    };

    if let Some(src) = &args.anchor {
        let anchor = Anchor::load(src)?;
        anchor.write(
            &dir.join(bayspace_connector::config::DEFAULT_ANCHOR),
            overwrite,
        )?;
    }

    let key_path = dir.join(bayspace_connector::config::DEFAULT_NODE_KEY);
    let (key, kept) = if key_path.exists() {
        (NodeKey::load(&key_path)?, true)
    } else {
        (NodeKey::create(&key_path)?, false)
    };

    let token = AdminToken::generate()?;
    files::write_atomic(
        &dir.join(ADMIN_TOKEN_FILE),
        format!("{}\n", token.as_str()).as_bytes(),
        0o600,
        overwrite,
    )?;

    let mut config = NodeConfig::new(args.institution, args.region, &token);
    if !args.listen.is_empty() {
        config.listen = args.listen;
    }
    if let Some(grpc) = args.grpc {
        config.grpc = grpc;
    }
    config.bootstrap = args.bootstrap;
    files::write_atomic(&dir.join(DEFAULT_API_KEY), &api.key_pem, 0o600, overwrite)?;
    files::write_atomic(&dir.join(DEFAULT_API_CERT), &api.cert_pem, 0o644, overwrite)?;
    let fingerprint = api.fingerprint;
    files::write_atomic(
        &dir.join(CONFIG_FILE),
        config.render().as_bytes(),
        0o644,
        overwrite,
    )?;

    println!("peer-id: {}", key.peer_id());
    if kept {
        println!("kept the existing node key {}", key_path.display());
    }
    println!("wrote {}", dir.join(CONFIG_FILE).display());
    println!(
        "administrator token in {} (0600); the node stores only its hash",
        dir.join(ADMIN_TOKEN_FILE).display()
    );
    println!(
        "API certificate {} (TLS), SHA-256 fingerprint:\n  {fingerprint}\n\
         researchers check it against the api.crt they are sent, and pass that file as --ca",
        dir.join(DEFAULT_API_CERT).display()
    );
    println!("next steps:");
    println!("  1. send the peer-id above and your IPv6 prefixes to the data space operator");
    if args.anchor.is_none() {
        println!(
            "     and put the operator's public key at {}",
            dir.join(bayspace_connector::config::DEFAULT_ANCHOR)
                .display()
        );
    }
    println!(
        "  2. put the membership credential you receive at {}",
        dir.join(&config.credential).display()
    );
    println!("  3. run `bayspace run --dir {}`", dir.display());
    Ok(ExitCode::SUCCESS)
}

/// The API's certificate and key, PEM, and the certificate's fingerprint.
struct ApiFiles {
    cert_pem: Vec<u8>,
    key_pem: zeroize::Zeroizing<Vec<u8>>,
    fingerprint: String,
}

/// The institution's certificate and key, checked, or a new self-signed
/// pair for the gRPC address and the loopback.
fn api_cert(grpc: SocketAddr, cert: Option<&Path>, key: Option<&Path>) -> anyhow::Result<ApiFiles> {
    let (cert_pem, key_pem) = match (cert, key) {
        (Some(c), Some(k)) => {
            let cert_pem = std::fs::read(c)
                .with_context(|| format!("cannot read --api-cert {}", c.display()))?;
            let key_pem = zeroize::Zeroizing::new(
                std::fs::read(k)
                    .with_context(|| format!("cannot read --api-key {}", k.display()))?,
            );
            api_tls::check_key(&key_pem, &format!("--api-key {}", k.display()))?;
            api_tls::fingerprint(&cert_pem, &format!("--api-cert {}", c.display()))?;
            (cert_pem, key_pem)
        }
        _ => {
            let made = api_tls::self_signed(api_tls::subject_names(grpc))?;
            (
                made.cert_pem.into_bytes(),
                zeroize::Zeroizing::new(made.key_pem.as_bytes().to_vec()),
            )
        }
    };
    let fingerprint = api_tls::fingerprint(&cert_pem, "the API certificate")?;
    Ok(ApiFiles {
        cert_pem,
        key_pem,
        fingerprint,
    })
}

/// Create DIR (0700: it holds secrets) or check that it may be used.
fn prepare_dir(dir: &Path, force: bool) -> anyhow::Result<()> {
    if dir.exists() {
        let non_empty = std::fs::read_dir(dir)
            .with_context(|| format!("cannot read {}", dir.display()))?
            .next()
            .is_some();
        if non_empty && !force {
            bail!(
                "{} is not empty; pass --force to rewrite its configuration (the node key is kept)",
                dir.display()
            );
        }
        return Ok(());
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("cannot set the mode of {}", dir.display()))
}
