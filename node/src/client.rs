//! What every client subcommand shares: where the node is, the token, the
//! connection, and how the node's refusals are shown.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use bayspace_connector::config::{ADMIN_TOKEN_FILE, CONFIG_FILE, NodeConfig};
use bayspace_connector::identity::files;
use tonic::metadata::MetadataValue;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::{Request, Status};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, clap::Args)]
pub struct ClientArgs {
    /// The node's gRPC address, e.g. https://[2001:db8::5]:7410.
    #[arg(long, env = "BAYSPACE_NODE", global = true)]
    node: Option<String>,
    /// The certificate (PEM) to trust for an https:// node: the node's
    /// api.crt (check its SHA-256 fingerprint with the administrator), or
    /// the CA that issued the institution's certificate.
    #[arg(long, env = "BAYSPACE_CA", global = true)]
    ca: Option<PathBuf>,
    /// Bearer token (administrator or researcher).
    #[arg(long, env = "BAYSPACE_TOKEN", hide_env_values = true, global = true)]
    token: Option<String>,
    /// A node directory: its gRPC address and administrator token are used
    /// where --node or --token are not given.
    #[arg(long, global = true)]
    dir: Option<PathBuf>,
}

/// Adds the bearer token to every call.
impl ClientArgs {
    /// For callers inside the binary (the demo) that already know the
    /// node and the token.
    /// The node whose directory is `dir`, with its administrator token.
    pub fn in_dir(dir: PathBuf) -> Self {
        ClientArgs {
            node: None,
            ca: None,
            token: None,
            dir: Some(dir),
        }
    }

    pub fn to(node: String, token: String, ca: Option<PathBuf>) -> Self {
        ClientArgs {
            node: Some(node),
            ca,
            token: Some(token),
            dir: None,
        }
    }
}

#[derive(Clone)]
pub struct Bearer(MetadataValue<tonic::metadata::Ascii>);

impl Interceptor for Bearer {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        req.metadata_mut().insert("authorization", self.0.clone());
        Ok(req)
    }
}

pub type AuthChannel = InterceptedService<Channel, Bearer>;

/// Where a client reaches a node listening on `addr`: an unspecified
/// address means "every interface", which includes the loopback.
pub fn url_of(addr: SocketAddr, tls: bool) -> String {
    let ip = match addr.ip() {
        IpAddr::V6(a) if a.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        IpAddr::V4(a) if a.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        ip => ip,
    };
    let scheme = if tls { "https" } else { "http" };
    format!("{scheme}://{}", SocketAddr::new(ip, addr.port()))
}

/// Where the client finds the node, the token and the certificate to trust.
#[derive(Debug, PartialEq, Eq)]
struct Target {
    url: String,
    token: String,
    ca: Option<PathBuf>,
}

fn in_dir(dir: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_owned()
    } else {
        dir.join(p)
    }
}

fn resolve(args: &ClientArgs) -> anyhow::Result<Target> {
    let (mut node, mut token, mut ca) = (args.node.clone(), args.token.clone(), args.ca.clone());
    if let Some(dir) = &args.dir {
        if node.is_none() {
            let config = NodeConfig::load(&dir.join(CONFIG_FILE))?;
            node = Some(url_of(config.grpc, config.grpc_tls));
            if ca.is_none() && config.grpc_tls {
                ca = Some(in_dir(dir, &config.api_cert));
            }
        }
        if token.is_none() {
            let text = files::read_secret_text(&dir.join(ADMIN_TOKEN_FILE))?;
            token = Some(text.trim().to_owned());
        }
    }
    match (node, token) {
        (Some(url), Some(token)) => Ok(Target { url, token, ca }),
        (None, _) => bail!(
            "which node? pass --node https://HOST:PORT (or set BAYSPACE_NODE) with --ca FILE, or --dir NODE_DIR on the node's host"
        ),
        (_, None) => bail!(
            "no token: pass --token (or set BAYSPACE_TOKEN), or --dir NODE_DIR for the administrator token"
        ),
    }
}

/// Connects to the node; fails within a few seconds when it does not answer.
pub async fn connect(args: &ClientArgs) -> anyhow::Result<AuthChannel> {
    let channel = open_channel(args, Some(CALL_TIMEOUT)).await?;
    let Target { token, .. } = resolve(args)?;
    let header: MetadataValue<_> = format!("Bearer {token}")
        .parse()
        .context("the token contains characters not allowed in a header")?;
    Ok(InterceptedService::new(channel, Bearer(header)))
}

/// Like [`connect`], without a deadline per call: for a download, which
/// takes as long as the data needs.
pub async fn connect_streaming(args: &ClientArgs) -> anyhow::Result<AuthChannel> {
    let channel = open_channel(args, None).await?;
    let Target { token, .. } = resolve(args)?;
    let header: MetadataValue<_> = format!("Bearer {token}")
        .parse()
        .context("the token contains characters not allowed in a header")?;
    Ok(InterceptedService::new(channel, Bearer(header)))
}

async fn open_channel(args: &ClientArgs, timeout: Option<Duration>) -> anyhow::Result<Channel> {
    let Target { url, ca, .. } = resolve(args)?;
    let mut endpoint = Endpoint::from_shared(url.clone())
        .with_context(|| format!("`{url}` is not a gRPC address (like https://[::1]:7410)"))?
        .connect_timeout(CONNECT_TIMEOUT);
    if let Some(t) = timeout {
        endpoint = endpoint.timeout(t);
    }
    if url.starts_with("https://") {
        let Some(ca) = ca else {
            bail!(
                "{url} speaks TLS: pass --ca FILE (or set BAYSPACE_CA) with the node's certificate \
                 (its api.crt; compare the SHA-256 fingerprint `bayspace init` printed) or the CA that issued it"
            );
        };
        let pem = std::fs::read(&ca)
            .with_context(|| format!("cannot read the certificate to trust, {}", ca.display()))?;
        endpoint = endpoint
            .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem)))
            .with_context(|| format!("{} is not a usable certificate", ca.display()))?;
    }
    endpoint
        .connect()
        .await
        .map_err(|e| anyhow::anyhow!("the node at {url} does not answer: {}", source_chain(&e)))
}

fn source_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}

/// The node's refusal, with the gRPC code name so scripts can match on it.
pub fn refused(s: Status) -> anyhow::Error {
    anyhow::anyhow!("node refused: {:?}: {}", s.code(), s.message())
}

/// Runs a client subcommand on a small runtime of its own.
pub fn block_on<T>(fut: impl Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(fut)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unspecified_addresses_mean_loopback() {
        assert_eq!(
            url_of("[::]:7410".parse().unwrap(), true),
            "https://[::1]:7410"
        );
        assert_eq!(
            url_of("[2001:db8::1]:7410".parse().unwrap(), false),
            "http://[2001:db8::1]:7410"
        );
    }

    #[test]
    fn explicit_flags_win_and_missing_ones_are_named() {
        let args = ClientArgs {
            node: Some("http://[::1]:1".into()),
            ca: None,
            token: None,
            dir: None,
        };
        let e = resolve(&args).unwrap_err().to_string();
        assert!(e.contains("--token"), "{e}");
        let args = ClientArgs {
            node: None,
            ca: None,
            token: Some("t".into()),
            dir: None,
        };
        assert!(resolve(&args).unwrap_err().to_string().contains("--node"));
        let args = ClientArgs {
            node: Some("https://x:1".into()),
            ca: Some("/ca.pem".into()),
            token: Some("t".into()),
            dir: Some("/nonexistent".into()),
        };
        assert_eq!(
            resolve(&args).unwrap(),
            Target {
                url: "https://x:1".to_owned(),
                token: "t".to_owned(),
                ca: Some("/ca.pem".into())
            }
        );
    }
}
