//! Shared by the tests that drive real node processes: node directories
//! made with the real CLI, started with `bayspace run`, polled with
//! `bayspace status`.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub mod forger;
pub mod pair;

pub const BIN: &str = env!("CARGO_BIN_EXE_bayspace");
pub const DEADLINE: Duration = Duration::from_secs(40);

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
    Command::new(BIN).args(args).output().expect("run bayspace")
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

pub fn free_port() -> u16 {
    TcpListener::bind("[::1]:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
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
        let child = Command::new(BIN)
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
    #[allow(dead_code)]
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
