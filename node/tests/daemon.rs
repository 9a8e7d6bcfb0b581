#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The daemon as a real process: start-up, status, admission between two
//! nodes, refusals, revocation, gRPC authentication, SIGTERM.

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use bayspace_connector::identity::{
    AuthorityKey, MemberRole, MembershipBody, MembershipCredential, Overwrite, PeerId, timestamp,
};
use serde_json::Value;
use time::OffsetDateTime;

const BIN: &str = env!("CARGO_BIN_EXE_bayspace");
const DEADLINE: Duration = Duration::from_secs(20);

fn bayspace(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().expect("run bayspace")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn ok(args: &[&str]) -> String {
    let o = bayspace(args);
    assert!(o.status.success(), "{args:?}: {}", text(&o));
    String::from_utf8(o.stdout).unwrap()
}

fn s(p: &Path) -> String {
    p.to_str().unwrap().to_owned()
}

fn free_port() -> u16 {
    TcpListener::bind("[::1]:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running node, killed when dropped.
struct Node {
    dir: PathBuf,
    child: Option<Child>,
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
    fn start(dir: &Path) -> Node {
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

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("node.log")).unwrap_or_default()
    }

    fn try_status(&self) -> Option<Value> {
        let o = bayspace(&["status", "--json", "--dir", &s(&self.dir)]);
        o.status
            .success()
            .then(|| serde_json::from_slice(&o.stdout).unwrap())
    }

    /// Polls status until `pred` holds.
    fn wait_for(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
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

    fn admitted(st: &Value) -> BTreeSet<String> {
        st["admitted_peers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["peer_id"].as_str().unwrap().to_owned())
            .collect()
    }

    fn tcp_addr(&self) -> String {
        let st = self.wait_for("status", |_| true);
        let peer = st["peer_id"].as_str().unwrap();
        let addr = st["listen_addrs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .find(|a| a.contains("/tcp/"))
            .unwrap();
        format!("{addr}/p2p/{peer}")
    }

    fn wait_log(&self, needle: &str) {
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

    fn terminate(mut self) -> std::process::ExitStatus {
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

struct Space {
    tmp: tempfile::TempDir,
}

impl Space {
    fn new() -> Space {
        let tmp = tempfile::tempdir().unwrap();
        let auth = tmp.path().join("authority");
        ok(&["authority", "init", "--dir", &s(&auth)]);
        Space { tmp }
    }

    fn authority(&self) -> PathBuf {
        self.tmp.path().join("authority")
    }

    /// `bayspace init` a node directory; returns it and its PeerId.
    fn init(&self, name: &str, bootstrap: Option<&str>) -> (PathBuf, String) {
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
            "hk",
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
    fn issue(&self, dir: &Path, peer: &str, prefix: &str) -> u64 {
        let out = ok(&[
            "authority",
            "issue",
            "--dir",
            &s(&self.authority()),
            "--institution",
            dir.file_name().unwrap().to_str().unwrap(),
            "--region",
            "hk",
            "--peer-id",
            peer,
            "--prefix",
            prefix,
            "--out",
            &s(&dir.join("membership.cred")),
        ]);
        out.split_whitespace().nth(2).unwrap().parse().unwrap()
    }

    fn member(&self, name: &str, bootstrap: Option<&str>) -> (PathBuf, String, u64) {
        let (dir, peer) = self.init(name, bootstrap);
        let serial = self.issue(&dir, &peer, "::1/128");
        (dir, peer, serial)
    }
}

#[test]
fn starts_reports_status_and_stops_on_sigterm() {
    let space = Space::new();
    let (dir, peer) = space.init("alpha", None);

    // Without a credential the node refuses to start and says what to do.
    let o = bayspace(&["run", "--dir", &s(&dir)]);
    assert!(!o.status.success());
    let err = text(&o);
    assert!(
        err.contains("no membership credential") && err.contains(&peer),
        "{err}"
    );

    space.issue(&dir, &peer, "::1/128");
    let node = Node::start(&dir);
    let st = node.wait_for("status", |_| true);
    assert_eq!(st["peer_id"], peer.as_str());
    assert_eq!(st["institution"], "alpha");
    assert_eq!(st["catalog_size"], 0);
    assert!(
        st["listen_addrs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a.as_str().unwrap().starts_with("/ip6/::1/tcp/")),
        "{st}"
    );
    assert!(node.log().contains("grpc serving on"), "{}", node.log());
    let log_dir = dir.clone();
    let status = node.terminate();
    assert!(status.success(), "exit {status:?}");

    // Stopped: status fails with a clear message.
    let o = bayspace(&["status", "--dir", &s(&log_dir)]);
    assert!(!o.status.success());
    assert!(text(&o).contains("does not answer"), "{}", text(&o));
}

#[test]
fn two_members_admit_each_other_and_revocation_disconnects() {
    let space = Space::new();
    let (a_dir, a_peer, _) = space.member("alpha", None);
    let a = Node::start(&a_dir);
    let a_addr = a.tcp_addr();
    let (b_dir, b_peer, b_serial) = space.member("beta", Some(&a_addr));
    let b = Node::start(&b_dir);

    let st = a.wait_for("B admitted by A", |st| Node::admitted(st).contains(&b_peer));
    assert_eq!(st["admitted_peers"][0]["institution"], "beta");
    assert_eq!(st["admitted_peers"][0]["region"], "hk");
    b.wait_for("A admitted by B", |st| Node::admitted(st).contains(&a_peer));

    // The operator revokes B; A puts the list in force and drops B.
    let list = space.tmp.path().join("revocations-1.json");
    ok(&[
        "authority",
        "revoke",
        "--dir",
        &s(&space.authority()),
        "--serial",
        &b_serial.to_string(),
        "--out",
        &s(&list),
    ]);
    let out = ok(&["revocations", "publish", &s(&list), "--dir", &s(&a_dir)]);
    assert!(out.contains(&format!("disconnected {b_peer}")), "{out}");
    assert!(
        out.contains(&format!("revoked serials: {b_serial}")),
        "{out}"
    );
    let st = a.wait_for("B gone", |st| Node::admitted(st).is_empty());
    assert!(st["admission_refusals"].as_u64().unwrap() >= 1, "{st}");

    // The same list again is not newer.
    let o = bayspace(&["revocations", "publish", &s(&list), "--dir", &s(&a_dir)]);
    assert!(!o.status.success());
    assert!(text(&o).contains("FailedPrecondition"), "{}", text(&o));
}

#[test]
fn credentials_outside_prefix_forged_or_expired_are_refused() {
    let space = Space::new();
    let (a_dir, _, _) = space.member("alpha", None);
    let a = Node::start(&a_dir);
    let a_addr = a.tcp_addr();

    // B's credential does not cover ::1.
    let (b_dir, b_peer) = space.init("beta", Some(&a_addr));
    space.issue(&b_dir, &b_peer, "fd00:5a::/48");
    let b = Node::start(&b_dir);
    let st = a.wait_for("B refused", |st| {
        st["admission_refusals"].as_u64().unwrap() >= 1
    });
    assert!(Node::admitted(&st).is_empty(), "{st}");
    a.wait_log("outside the institution's prefixes");
    drop(b);

    // C's credential comes from another anchor, which C trusts besides the
    // real one (so C admits A and A gets to judge C's credential).
    let (c_dir, c_peer) = space.init("gamma", Some(&a_addr));
    let other = space.tmp.path().join("other-authority");
    ok(&["authority", "init", "--dir", &s(&other)]);
    std::fs::copy(other.join("authority.pub"), c_dir.join("other.pub")).unwrap();
    let config = std::fs::read_to_string(c_dir.join("config.toml")).unwrap();
    let config = config.replace(
        "anchors = [\"anchor.pub\"]",
        "anchors = [\"anchor.pub\", \"other.pub\"]",
    );
    assert!(config.contains("other.pub"), "{config}");
    std::fs::write(c_dir.join("config.toml"), config).unwrap();
    ok(&[
        "authority",
        "issue",
        "--dir",
        &s(&other),
        "--institution",
        "gamma",
        "--region",
        "hk",
        "--peer-id",
        &c_peer,
        "--prefix",
        "::1/128",
        "--out",
        &s(&c_dir.join("membership.cred")),
    ]);
    let c = Node::start(&c_dir);
    let st = a.wait_for("C refused", |st| {
        st["admission_refusals"].as_u64().unwrap() >= 2
    });
    assert!(Node::admitted(&st).is_empty(), "{st}");
    a.wait_log("not issued by a trusted authority");
    drop(c);

    // D's credential expires a few seconds after D starts; A, started only
    // then, dials D and refuses it.
    let (d_dir, d_peer) = space.init("delta", None);
    let key = AuthorityKey::load(&space.authority()).unwrap();
    let now = timestamp::whole_seconds(OffsetDateTime::now_utc());
    let not_after = now + time::Duration::seconds(4);
    let cred = MembershipCredential::sign(
        MembershipBody {
            serial: 99,
            institution: "delta".into(),
            region: "hk".parse().unwrap(),
            peer_id: d_peer.parse::<PeerId>().unwrap(),
            prefixes: vec!["::1/128".parse().unwrap()],
            roles: BTreeSet::from([MemberRole::Provider]),
            not_before: now,
            not_after,
        },
        key.signing_key(),
    )
    .unwrap();
    cred.write(&d_dir.join("membership.cred"), Overwrite::Refuse)
        .unwrap();
    let d = Node::start(&d_dir);
    let d_addr = d.tcp_addr();
    while OffsetDateTime::now_utc() <= not_after + time::Duration::seconds(1) {
        std::thread::sleep(Duration::from_millis(200));
    }
    let (e_dir, _, _) = space.member("epsilon", Some(&d_addr));
    let e = Node::start(&e_dir);
    let st = e.wait_for("D refused", |st| {
        st["admission_refusals"].as_u64().unwrap() >= 1
    });
    assert!(Node::admitted(&st).is_empty(), "{st}");
    assert!(e.log().contains("expired"), "{}", e.log());
}

#[test]
fn grpc_calls_need_a_token_of_the_right_role() {
    let space = Space::new();
    let (dir, _, _) = space.member("alpha", None);
    let node = Node::start(&dir);
    node.wait_for("status", |_| true);
    let config = std::fs::read_to_string(dir.join("config.toml")).unwrap();
    let grpc = config
        .lines()
        .find_map(|l| l.strip_prefix("grpc = "))
        .unwrap()
        .trim_matches('"')
        .to_owned();
    let url = format!("http://{grpc}");

    let o = bayspace(&["status", "--node", &url, "--token", "wrong"]);
    assert!(!o.status.success());
    assert!(text(&o).contains("Unauthenticated"), "{}", text(&o));

    let out = ok(&[
        "researcher",
        "add",
        "Ada Lovelace",
        "--orcid",
        "0000-0002-1825-0097",
        "--dir",
        &s(&dir),
    ]);
    let token = out
        .lines()
        .find_map(|l| l.strip_prefix("token: "))
        .unwrap()
        .to_owned();
    let id = out
        .lines()
        .find_map(|l| l.strip_prefix("id: "))
        .unwrap()
        .to_owned();
    let o = bayspace(&["status", "--node", &url, "--token", &token]);
    assert!(!o.status.success());
    assert!(text(&o).contains("PermissionDenied"), "{}", text(&o));

    let list: Value =
        serde_json::from_str(&ok(&["researcher", "list", "--json", "--dir", &s(&dir)])).unwrap();
    assert_eq!(list[0]["id"], id.as_str());
    assert_eq!(list[0]["orcid"], "0000-0002-1825-0097");
    ok(&["researcher", "remove", &id, "--dir", &s(&dir)]);
    let o = bayspace(&["status", "--node", &url, "--token", &token]);
    assert!(text(&o).contains("Unauthenticated"), "{}", text(&o));

    // An empty token reaches the node and is refused there.
    let o = bayspace(&["status", "--node", &url, "--token", ""]);
    assert!(text(&o).contains("Unauthenticated"), "{}", text(&o));

    // Without any token the call never leaves the client.
    let o = Command::new(BIN)
        .args(["status", "--node", &url])
        .env_remove("BAYSPACE_TOKEN")
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(text(&o).contains("no token"), "{}", text(&o));
}
