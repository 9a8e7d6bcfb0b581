//! Shared by the tests that drive real node processes (`e2e/`, and the
//! node's benchmarks): the binary itself, node directories made with the
//! real CLI, started with `bayspace run`, polled with `bayspace status`.
// Test code: a failed step panics, and the panic is the test's report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

pub mod forger;
pub mod pair;

/// The node's gRPC API, as generated from its protos (`node/proto`).
#[allow(clippy::all, clippy::pedantic)]
pub mod proto {
    tonic::include_proto!("bayspace.v1");
}

pub const DEADLINE: Duration = Duration::from_secs(40);

static BIN: OnceLock<String> = OnceLock::new();

/// The `bayspace` binary under test: `BAYSPACE_BIN` when set (a release
/// build, say), else the workspace's own, built on first use.
///
/// Cargo tells only the binary's own package where the binary is
/// (`CARGO_BIN_EXE_bayspace`), and this is another package, so the first
/// call asks Cargo for it; every test thread waits for that one answer.
pub fn bin() -> &'static str {
    BIN.get_or_init(|| std::env::var("BAYSPACE_BIN").unwrap_or_else(|_| build_bin()))
}

/// For the node's own targets, which Cargo does tell where the binary is:
/// `path` is the binary, and nothing is built.
pub fn use_bin(path: &str) {
    let chosen = BIN.get_or_init(|| path.to_owned());
    assert_eq!(chosen, path, "the binary was chosen before use_bin");
}

/// `cargo build` of the binary, quiet unless it fails; its path as Cargo
/// reports it, so wherever `CARGO_TARGET_DIR` or the configuration puts it
/// (a `--target-dir` on the outer command line is not seen here).
///
/// This runs inside the outer `cargo test`, which releases its lock on the
/// build directory before it starts the tests, so the nested build does
/// not wait on it. The nested build must resolve features exactly as
/// `cargo test --workspace` does, or the binary's dependencies are built a
/// second time: `--workspace` selects the same packages, and naming a test
/// target makes Cargo count the dev-dependencies' features, as `cargo test`
/// does. Without that (`--bins`, or `-p bayspace-node`), fantoccini's,
/// proptest's and criterion's features drop out (syn's `fold`, getrandom's
/// and url's `std`, ...) and some 110 of the binary's ~480 units would be
/// compiled again. The test target named is this very binary, built and so
/// fresh. The profile is the one this binary was built with.
///
/// Nor may it see the variables Cargo set for this test process (this
/// package's `CARGO_MANIFEST_DIR`, `CARGO_PKG_*`, `OUT_DIR`, ...): build
/// scripts that watch them (ring's does) would be rerun, and everything
/// above them rebuilt, by every nested build and again by the next outer
/// one.
fn build_bin() -> String {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(&cargo);
    for (name, _) in std::env::vars_os() {
        if name.to_str().is_some_and(set_by_cargo_for_tests) {
            cmd.env_remove(name);
        }
    }
    let o = cmd
        .current_dir(workspace)
        .arg("build")
        .arg("--manifest-path")
        .arg(workspace.join("Cargo.toml"))
        .args(["--workspace", "--bin", "bayspace", "--test", "e2e"])
        .args(["--profile", &profile()])
        .args(["--message-format", "json-render-diagnostics"])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", cargo.display()));
    assert!(
        o.status.success(),
        "building the bayspace binary failed:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|m| {
            m["reason"] == "compiler-artifact"
                && m["target"]["name"] == "bayspace"
                && m["target"]["kind"] == serde_json::json!(["bin"])
                && m["profile"]["test"] == false
        })
        .and_then(|m| m["executable"].as_str().map(str::to_owned))
        .unwrap_or_else(|| panic!("cargo build named no bayspace executable"))
}

/// The variables Cargo sets for a crate's own run (besides `CARGO`), as
/// opposed to those that configure Cargo (`CARGO_HOME`, `CARGO_TARGET_DIR`,
/// `CARGO_BUILD_*`, ...), which the nested build must share.
fn set_by_cargo_for_tests(name: &str) -> bool {
    name == "OUT_DIR"
        || name == "CARGO_CRATE_NAME"
        || name == "CARGO_BIN_NAME"
        || name == "CARGO_PRIMARY_PACKAGE"
        || name == "CARGO_TARGET_TMPDIR"
        || name == "CARGO_RUSTC_CURRENT_DIR"
        || ["CARGO_MANIFEST_", "CARGO_PKG_", "CARGO_BIN_EXE_"]
            .iter()
            .any(|p| name.starts_with(p))
}

/// The profile of this build, from the folder Cargo put it in
/// (`target/debug/deps/e2e-…`): `debug` is the `dev` profile's folder.
fn profile() -> String {
    let exe = std::env::current_exe().unwrap();
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .and_then(Path::file_name);
    match dir.and_then(|d| d.to_str()) {
        Some("debug") | None => "dev".to_owned(),
        Some(other) => other.to_owned(),
    }
}

/// The shared directory with the DSP schemas and the validator (see
/// contracts/tests/dsp_schemas.rs): `BAYSPACE_SHARED`, else `../shared`
/// beside the repository.
pub fn shared() -> Option<PathBuf> {
    let dir = std::env::var_os("BAYSPACE_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared"));
    let found = dir.join("dsp-2025-1").is_dir() && dir.join("tools/dsp-validate").is_file();
    if !found {
        skip_or_fail(&format!(
            "{}/dsp-2025-1 or tools/dsp-validate not found (set BAYSPACE_SHARED); the DSP form is not validated",
            dir.display()
        ));
    }
    found.then_some(dir)
}

/// A check that cannot run here (a tool or a permission is missing): said,
/// and skipped; but with `BAYSPACE_REQUIRE_ALL=1`, as CI sets it, a failure,
/// so that a CI run never passes on checks it did not make.
pub fn skip_or_fail(reason: &str) {
    if std::env::var("BAYSPACE_REQUIRE_ALL").is_ok_and(|v| v == "1") {
        panic!("BAYSPACE_REQUIRE_ALL=1, but this check cannot run: {reason}");
    }
    println!("skipped: {reason}");
}

pub fn bayspace(args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .output()
        .expect("run bayspace")
}

pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

pub fn ok(args: &[&str]) -> String {
    let o = bayspace(args);
    assert!(o.status.success(), "{args:?}: {}", text(&o));
    String::from_utf8(o.stdout).unwrap()
}

pub fn s(p: &Path) -> String {
    p.to_str().unwrap().to_owned()
}

/// A port free now, for a node's gRPC or metrics address, taken below the
/// kernel's ephemeral range: a port-0 bind (a node's p2p listener, any
/// client) never gets it, so it stays free while its node is stopped and
/// restarted. Each port is handed out once per test process.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let ephemeral_low: u32 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse().ok())
        .unwrap_or(32768);
    const LOW: u32 = 10_000;
    let span = ephemeral_low.saturating_sub(LOW);
    if span < 1_000 {
        // No room below the ephemeral range: take any free port.
        return TcpListener::bind("[::1]:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
    }
    // Processes running tests at once start at different places.
    let offset = std::process::id().wrapping_mul(7919) % span;
    for _ in 0..span {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = LOW + (offset + n) % span;
        let port = u16::try_from(port).unwrap();
        if TcpListener::bind(("::1", port)).is_ok()
            && TcpListener::bind(("127.0.0.1", port)).is_ok()
        {
            return port;
        }
    }
    panic!("no free port between {LOW} and {ephemeral_low}");
}

/// A running node, killed when dropped.
pub struct Node {
    pub dir: PathBuf,
    pub child: Option<Child>,
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Node {
    pub fn start(dir: &Path) -> Node {
        let log = std::fs::File::create(dir.join("node.log")).unwrap();
        let child = Command::new(bin())
            .args(["run", "--dir", &s(dir)])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        Node {
            dir: dir.to_owned(),
            child: Some(child),
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("node.log")).unwrap_or_default()
    }

    pub fn try_status(&self) -> Option<Value> {
        let o = bayspace(&["status", "--json", "--dir", &s(&self.dir)]);
        o.status
            .success()
            .then(|| serde_json::from_slice(&o.stdout).unwrap())
    }

    /// Polls status until `pred` holds.
    pub fn wait_for(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let start = Instant::now();
        loop {
            if let Some(st) = self.try_status()
                && pred(&st)
            {
                return st;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "timed out waiting for {what}; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn admitted(st: &Value) -> BTreeSet<String> {
        st["admitted_peers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["peer_id"].as_str().unwrap().to_owned())
            .collect()
    }

    pub fn tcp_addr(&self) -> String {
        self.listen_addr("/tcp/")
    }

    /// The node's QUIC address with its peer id.
    pub fn quic_addr(&self) -> String {
        self.listen_addr("/quic-v1")
    }

    fn listen_addr(&self, transport: &str) -> String {
        let st = self.wait_for("status", |_| true);
        let peer = st["peer_id"].as_str().unwrap();
        let addr = st["listen_addrs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .find(|a| a.contains(transport))
            .unwrap();
        format!("{addr}/p2p/{peer}")
    }

    pub fn wait_log(&self, needle: &str) {
        let start = Instant::now();
        while !self.log().contains(needle) {
            assert!(
                start.elapsed() < DEADLINE,
                "timed out waiting for `{needle}` in the log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn terminate(mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().unwrap();
        let pid = child.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        let start = Instant::now();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            assert!(start.elapsed() < DEADLINE, "node did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

pub struct Space {
    pub tmp: tempfile::TempDir,
}

impl Space {
    // Not a `Default`: making one runs `bayspace authority init`.
    #[allow(clippy::new_without_default)]
    pub fn new() -> Space {
        let tmp = tempfile::tempdir().unwrap();
        let auth = tmp.path().join("authority");
        ok(&["authority", "init", "--dir", &s(&auth)]);
        Space { tmp }
    }

    pub fn authority(&self) -> PathBuf {
        self.tmp.path().join("authority")
    }

    /// `bayspace init` a node directory; returns it and its PeerId.
    pub fn init(&self, name: &str, bootstrap: Option<&str>) -> (PathBuf, String) {
        self.init_in(name, "hk", bootstrap)
    }

    pub fn init_in(&self, name: &str, region: &str, bootstrap: Option<&str>) -> (PathBuf, String) {
        let dir = self.tmp.path().join(name);
        let grpc = format!("[::1]:{}", free_port());
        let anchor = s(&self.authority().join("authority.pub"));
        let mut args = vec![
            "init",
            "--dir",
            dir.to_str().unwrap(),
            "--institution",
            name,
            "--region",
            region,
            "--listen",
            "/ip6/::1/tcp/0",
            "--listen",
            "/ip6/::1/udp/0/quic-v1",
            "--grpc",
            &grpc,
            "--anchor",
            &anchor,
        ];
        if let Some(b) = bootstrap {
            args.extend(["--bootstrap", b]);
        }
        let out = ok(&args);
        let peer = out
            .lines()
            .find_map(|l| l.strip_prefix("peer-id: "))
            .unwrap()
            .to_owned();
        (dir, peer)
    }

    /// Issues a credential with the real CLI; returns its serial.
    pub fn issue(&self, dir: &Path, peer: &str, prefix: &str) -> u64 {
        self.issue_in(dir, peer, "hk", prefix)
    }

    pub fn issue_in(&self, dir: &Path, peer: &str, region: &str, prefix: &str) -> u64 {
        let out = ok(&[
            "authority",
            "issue",
            "--dir",
            &s(&self.authority()),
            "--institution",
            dir.file_name().unwrap().to_str().unwrap(),
            "--region",
            region,
            "--peer-id",
            peer,
            "--prefix",
            prefix,
            "--out",
            &s(&dir.join("membership.cred")),
        ]);
        out.split_whitespace().nth(2).unwrap().parse().unwrap()
    }

    pub fn member(&self, name: &str, bootstrap: Option<&str>) -> (PathBuf, String, u64) {
        self.member_in(name, "hk", bootstrap)
    }

    /// A node directory with a credential for `::1/128` in `region`.
    pub fn member_in(
        &self,
        name: &str,
        region: &str,
        bootstrap: Option<&str>,
    ) -> (PathBuf, String, u64) {
        let (dir, peer) = self.init_in(name, region, bootstrap);
        let serial = self.issue_in(&dir, &peer, region, "::1/128");
        (dir, peer, serial)
    }
}

/// The node's gRPC address from its `config.toml`, `host:port`.
pub fn grpc_addr(dir: &Path) -> String {
    let config = std::fs::read_to_string(dir.join("config.toml")).unwrap();
    config
        .lines()
        .find_map(|l| l.strip_prefix("grpc = "))
        .unwrap()
        .trim_matches('"')
        .to_owned()
}

/// A raw gRPC channel to the node in `dir`, for tests that send requests
/// the CLI would never build.
pub async fn grpc_channel(dir: &Path) -> tonic::transport::Channel {
    // As in the binary: rustls has two providers here and needs telling.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let pem = std::fs::read(api_ca(dir)).unwrap();
    tonic::transport::Endpoint::from_shared(format!("https://{}", grpc_addr(dir)))
        .unwrap()
        .tls_config(
            tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(pem)),
        )
        .unwrap()
        .connect()
        .await
        .unwrap()
}

/// The node's own API certificate, as a researcher would be sent it for
/// `--ca`.
pub fn api_ca(dir: &Path) -> String {
    s(&dir.join("api.crt"))
}
