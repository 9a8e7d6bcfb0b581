//! The node's configuration file, `config.toml`.
//!
//! `bayspace init` writes it with every field explained in a comment; the
//! daemon reads it. Unknown keys are refused so that a misspelt setting is an
//! error, not a silently ignored line. Relative paths are relative to the
//! directory that holds `config.toml`.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use bayspace_contracts::region::Region;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::Date;
use time::macros::format_description;

use crate::identity::files::{self, FileError};
use crate::p2p::TcpSecurity;

pub const CONFIG_FILE: &str = "config.toml";

/// A path from the config: relative ones are relative to the node
/// directory, so a node directory can be moved whole.
pub fn resolve(dir: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_owned()
    } else {
        dir.join(p)
    }
}
pub const DEFAULT_LISTEN: [&str; 2] = ["/ip6/::/tcp/4710", "/ip6/::/udp/4710/quic-v1"];
pub const DEFAULT_GRPC: &str = "[::1]:7410";
pub const DEFAULT_NODE_KEY: &str = "node.key";
pub const DEFAULT_CREDENTIAL: &str = "membership.cred";
pub const DEFAULT_ANCHOR: &str = "anchor.pub";
pub const DEFAULT_DATA_DIR: &str = "data";
pub const DEFAULT_SEALED_DIR: &str = "sealed";
pub const ADMIN_TOKEN_FILE: &str = "admin.token";
pub const DEFAULT_API_CERT: &str = "api.crt";
pub const DEFAULT_API_KEY: &str = "api.key";
pub const DEFAULT_EXPORT_DIR: &str = "exports";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct NodeConfig {
    pub institution: String,
    pub region: Region,
    /// libp2p listen multiaddrs.
    pub listen: Vec<String>,
    pub grpc: SocketAddr,
    /// Serve the gRPC API over TLS. `false` is allowed only on a loopback
    /// address ([`NodeConfig::check_api`]).
    #[serde(default = "yes")]
    pub grpc_tls: bool,
    /// The API's certificate (PEM, chain allowed) and its private key.
    #[serde(default = "default_api_cert")]
    pub api_cert: PathBuf,
    #[serde(default = "default_api_key")]
    pub api_key: PathBuf,
    /// Serve the web console (HTML) beside the gRPC services, on the same
    /// address and TLS. Configs written before it existed get it on.
    #[serde(default = "yes")]
    pub console: bool,
    pub node_key: PathBuf,
    pub credential: PathBuf,
    pub anchors: Vec<PathBuf>,
    /// Multiaddrs (with `/p2p/<PeerId>`) of members to dial at start.
    pub bootstrap: Vec<String>,
    pub data_dir: PathBuf,
    /// Received data kept sealed, and the wrapped keys whose destruction
    /// shreds it. Configs written before it existed get the default.
    #[serde(default = "default_sealed_dir")]
    pub sealed_dir: PathBuf,
    /// The only place an administrator's export writes on this host.
    #[serde(default = "default_export_dir")]
    pub export_dir: PathBuf,
    /// BLAKE3 of the administrator token's text, hex; the token itself is
    /// never stored by the node.
    pub admin_token_blake3: String,
    /// Public holidays the filing deadline skips (working days are Monday
    /// to Friday). The official calendars come out year by year, so the
    /// operator keeps this list; left out, only weekends are skipped.
    #[serde(
        default,
        skip_serializing_if = "BTreeSet::is_empty",
        serialize_with = "holidays_out",
        deserialize_with = "holidays_in"
    )]
    pub filing_holidays: BTreeSet<Date>,
    /// The security upgrades the node's TCP connections offer:
    /// `tls-first` (TLS 1.3, Noise as the fallback), `tls` or `noise`.
    #[serde(default, skip_serializing_if = "is_default_security")]
    pub p2p_security: TcpSecurity,
    /// Free space (MiB) kept on the disks of `data-dir` and `sealed-dir`:
    /// below it the node refuses changes and fetches with "disk full"
    /// rather than let the store hit a full disk (docs/RELIABILITY.md).
    #[serde(default = "default_disk_reserve_mib")]
    pub disk_reserve_mib: u64,
    /// Where `/metrics` (Prometheus text format) is served over plain
    /// HTTP; `None`, the default, serves nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<SocketAddr>,
}

fn default_disk_reserve_mib() -> u64 {
    crate::store::DEFAULT_RESERVE_BYTES >> 20
}

impl NodeConfig {
    /// [`NodeConfig::disk_reserve_mib`] in bytes.
    pub fn disk_reserve_bytes(&self) -> u64 {
        self.disk_reserve_mib.saturating_mul(1 << 20)
    }
}

fn is_default_security(s: &TcpSecurity) -> bool {
    *s == TcpSecurity::default()
}

fn default_sealed_dir() -> PathBuf {
    DEFAULT_SEALED_DIR.into()
}

fn yes() -> bool {
    true
}

fn default_api_cert() -> PathBuf {
    DEFAULT_API_CERT.into()
}

fn default_api_key() -> PathBuf {
    DEFAULT_API_KEY.into()
}

fn default_export_dir() -> PathBuf {
    DEFAULT_EXPORT_DIR.into()
}

const DATE: &[time::format_description::BorrowedFormatItem<'static>] =
    format_description!("[year]-[month]-[day]");

/// `YYYY-MM-DD` strings, each parsed strictly so the error names the value.
fn holidays_in<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeSet<Date>, D::Error> {
    Vec::<String>::deserialize(d)?
        .iter()
        .map(|s| {
            Date::parse(s.trim(), DATE).map_err(|e| {
                serde::de::Error::custom(format!(
                    "filing-holidays: `{s}` is not a date like 2026-10-01: {e}"
                ))
            })
        })
        .collect()
}

fn holidays_out<S: Serializer>(days: &BTreeSet<Date>, s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(days.iter().map(|d| format_date(*d)))
}

fn format_date(d: Date) -> String {
    d.format(DATE).unwrap_or_else(|_| d.to_string())
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(transparent)]
    File(#[from] FileError),
    #[error("{}: {reason}", .path.display())]
    Parse { path: PathBuf, reason: String },
    #[error(transparent)]
    Random(#[from] crate::random::RandomError),
    #[error(
        "grpc-tls = false with grpc = \"{addr}\": bearer tokens and data would cross the network in the clear. Plaintext is allowed only on a loopback address; set grpc-tls = true (the default) in config.toml, or listen on [::1] or 127.0.0.1"
    )]
    PlaintextApi { addr: SocketAddr },
}

impl NodeConfig {
    /// A configuration with the defaults for everything but who the node is.
    pub fn new(institution: String, region: Region, admin_token: &AdminToken) -> Self {
        NodeConfig {
            institution,
            region,
            listen: DEFAULT_LISTEN.map(String::from).to_vec(),
            grpc: SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, 7410)),
            grpc_tls: true,
            api_cert: DEFAULT_API_CERT.into(),
            api_key: DEFAULT_API_KEY.into(),
            console: true,
            node_key: DEFAULT_NODE_KEY.into(),
            credential: DEFAULT_CREDENTIAL.into(),
            anchors: vec![DEFAULT_ANCHOR.into()],
            bootstrap: Vec::new(),
            data_dir: DEFAULT_DATA_DIR.into(),
            sealed_dir: DEFAULT_SEALED_DIR.into(),
            export_dir: DEFAULT_EXPORT_DIR.into(),
            admin_token_blake3: admin_token.blake3_hex(),
            filing_holidays: BTreeSet::new(),
            p2p_security: TcpSecurity::default(),
            disk_reserve_mib: default_disk_reserve_mib(),
            metrics: None,
        }
    }

    /// Refuses a plaintext API anywhere but on a loopback address.
    pub fn check_api(&self) -> Result<(), ConfigError> {
        if self.grpc_tls || self.grpc.ip().is_loopback() {
            Ok(())
        } else {
            Err(ConfigError::PlaintextApi { addr: self.grpc })
        }
    }

    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = files::read_text(path)?;
        Self::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            reason: e.to_string(),
        })
    }

    /// The TOML text, each field preceded by what it means.
    pub fn render(&self) -> String {
        let s = |v: &str| toml::Value::String(v.to_owned()).to_string();
        let p = |v: &Path| s(&v.to_string_lossy());
        let list = |items: Vec<String>| format!("[{}]", items.join(", "));
        format!(
            "\
# Bayspace node configuration. Written by `bayspace init`; read by
# `bayspace run`. Unknown keys are refused. Relative paths are relative to
# the directory holding this file.

# The institution this node belongs to, as named in its membership credential.
institution = {institution}

# Where the institution is, for the cross-border rules: mainland:<city>
# (guangzhou, shenzhen, zhuhai, foshan, huizhou, dongguan, zhongshan,
# jiangmen, zhaoqing, or other), hk or macao.
region = {region}

# libp2p listen addresses (multiaddrs): TCP (TLS or Noise, Yamux) and QUIC over IPv6.
listen = {listen}

# The gRPC API for researchers and administrators (host:port).
grpc = {grpc}

# Serve the API over TLS with the certificate and key below (PEM). `false`
# (plaintext HTTP/2) is accepted only when `grpc` is a loopback address.
grpc-tls = {grpc_tls}
api-cert = {api_cert}
api-key = {api_key}

# The web console for administrators and researchers, served at
# https://<grpc>/ on the same port and TLS as the API; `false` turns it off.
console = {console}

# The node's ed25519 key (mode 0600). The PeerId is derived from it.
node-key = {node_key}

# The membership credential the trust anchor issued for this node's PeerId.
credential = {credential}

# Public keys of the trust anchors whose credentials and revocation lists
# this node accepts (bayspace/ed25519-public/1 files).
anchors = {anchors}

# Members to dial at start: multiaddrs ending in /p2p/<PeerId>.
bootstrap = {bootstrap}

# Where the node keeps its store (catalog, agreements, audit log).
data-dir = {data_dir}

# Where received data kept sealed (`transfer fetch --keep-sealed`) lives,
# with the wrapped keys whose destruction at a retention end shreds it.
sealed-dir = {sealed_dir}

# The only directory an administrator's export (`bayspace data export`)
# writes to on this host; researchers' data goes to their own machines.
export-dir = {export_dir}

# BLAKE3 hash (hex) of the administrator token in admin.token. The node keeps
# only this hash; to rotate the token, write a new one and its hash here.
admin-token-blake3 = {hash}

# Public holidays (YYYY-MM-DD) the deadline of a contract filing skips; it
# counts working days, Monday to Friday. Add each year's official GBA
# holidays, e.g. [\"2026-10-01\", \"2026-10-02\"].
filing-holidays = {holidays}

# Security of TCP connections between nodes: \"tls-first\" (TLS 1.3, with
# Noise for members whose nodes offer only Noise), \"tls\" or \"noise\".
# QUIC always uses TLS 1.3.
p2p-security = {security}

# Free space (MiB) kept on the disks holding data-dir and sealed-dir. Below
# it the node refuses every change and fetch with a \"disk full\" error
# instead of letting the store hit a full disk; reads go on, and work
# resumes by itself once space is freed.
disk-reserve-mib = {reserve}
# Prometheus metrics: serve /metrics over plain HTTP on this address
# (host:port), e.g. \"[::1]:9410\". Left out, nothing is served. The
# metrics name no dataset or researcher; keep the port to the monitoring
# network anyway.
{metrics}
",
            institution = s(&self.institution),
            region = s(&self.region.to_string()),
            listen = list(self.listen.iter().map(|l| s(l)).collect()),
            grpc = s(&self.grpc.to_string()),
            grpc_tls = self.grpc_tls,
            api_cert = p(&self.api_cert),
            api_key = p(&self.api_key),
            console = self.console,
            export_dir = p(&self.export_dir),
            node_key = p(&self.node_key),
            credential = p(&self.credential),
            anchors = list(self.anchors.iter().map(|a| p(a)).collect()),
            bootstrap = list(self.bootstrap.iter().map(|b| s(b)).collect()),
            data_dir = p(&self.data_dir),
            sealed_dir = p(&self.sealed_dir),
            hash = s(&self.admin_token_blake3),
            holidays = list(
                self.filing_holidays
                    .iter()
                    .map(|d| s(&format_date(*d)))
                    .collect()
            ),
            security = s(self.p2p_security.as_str()),
            reserve = self.disk_reserve_mib,
            metrics = match self.metrics {
                Some(addr) => format!("metrics = {}", s(&addr.to_string())),
                None => "# metrics = \"[::1]:9410\"".to_owned(),
            },
        )
    }
}

/// The administrator's bearer token: 32 random bytes, hex encoded.
pub struct AdminToken(String);

impl AdminToken {
    pub fn generate() -> Result<Self, ConfigError> {
        Ok(AdminToken(crate::random::hex(32)?))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// What the node stores: BLAKE3 of the token's text.
    pub fn blake3_hex(&self) -> String {
        blake3::hash(self.0.as_bytes()).to_hex().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> NodeConfig {
        let token = AdminToken::generate().unwrap();
        let mut c = NodeConfig::new(
            "Example \"Quoted\" University".into(),
            "mainland:shenzhen".parse().unwrap(),
            &token,
        );
        c.bootstrap = vec!["/ip6/2001:db8::1/tcp/4710/p2p/12D3KooW".into()];
        c.filing_holidays = [
            time::macros::date!(2026 - 10 - 01),
            time::macros::date!(2026 - 10 - 02),
        ]
        .into();
        c.p2p_security = TcpSecurity::Noise;
        c
    }

    #[test]
    fn p2p_security_defaults_to_tls_first_and_refuses_unknown_values() {
        let c = config();
        let text = c.render().replace("p2p-security = \"noise\"\n", "");
        let parsed = NodeConfig::parse(&text, Path::new("c.toml")).unwrap();
        assert_eq!(parsed.p2p_security, TcpSecurity::TlsFirst);
        let bad = c.render().replace("\"noise\"", "\"ssl\"");
        let e = NodeConfig::parse(&bad, Path::new("c.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("c.toml") && e.contains("ssl"), "{e}");
    }

    #[test]
    fn render_parses_back_to_the_same_config() {
        let c = config();
        let text = c.render();
        assert_eq!(
            NodeConfig::parse(&text, Path::new("config.toml")).unwrap(),
            c
        );
        assert!(text.contains("grpc = \"[::1]:7410\""), "{text}");
        assert!(text.contains("\"/ip6/::/udp/4710/quic-v1\""), "{text}");
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused() {
        let text = config().render();
        let e = NodeConfig::parse(&format!("{text}\nlisten-port = 1\n"), Path::new("c.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("c.toml") && e.contains("listen-port"), "{e}");
        let e = NodeConfig::parse(
            &text.replace("mainland:shenzhen", "mainland:shenzen"),
            Path::new("c.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("shenzen"), "{e}");
        let e = NodeConfig::parse(
            &text.replace("2026-10-02", "2026-10-32"),
            Path::new("c.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("c.toml") && e.contains("filing-holidays") && e.contains("2026-10-32"),
            "{e}"
        );
    }

    #[test]
    fn plaintext_api_only_on_loopback() {
        let mut c = config();
        c.grpc_tls = false;
        c.check_api().unwrap();
        c.grpc = "127.0.0.1:7410".parse().unwrap();
        c.check_api().unwrap();
        for addr in ["[::]:7410", "[2001:db8::5]:7410", "0.0.0.0:7410"] {
            c.grpc = addr.parse().unwrap();
            let e = c.check_api().unwrap_err().to_string();
            assert!(e.contains(addr) && e.contains("grpc-tls = true"), "{e}");
        }
        c.grpc_tls = true;
        c.check_api().unwrap();
        let text = c.render();
        assert!(text.contains("grpc-tls = true") && text.contains("export-dir = \"exports\""));
    }

    #[test]
    fn holidays_are_optional() {
        let text = config().render();
        let start = text.find("filing-holidays =").unwrap();
        let end = start + text[start..].find('\n').unwrap();
        let without = format!("{}{}", &text[..start], &text[end..]);
        let c = NodeConfig::parse(&without, Path::new("c.toml")).unwrap();
        assert!(c.filing_holidays.is_empty());
        assert!(
            text.contains("filing-holidays = [\"2026-10-01\", \"2026-10-02\"]"),
            "{text}"
        );
    }

    #[test]
    fn token_is_random_and_hashed() {
        let a = AdminToken::generate().unwrap();
        let b = AdminToken::generate().unwrap();
        assert_ne!(a.as_str(), b.as_str());
        assert_eq!(a.as_str().len(), 64);
        assert_eq!(
            a.blake3_hex(),
            blake3::hash(a.as_str().as_bytes()).to_hex().as_str()
        );
        assert_ne!(a.blake3_hex(), a.as_str());
    }
}
