#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The daemon as a real process: start-up, status, admission between two
//! nodes, refusals, revocation, gRPC authentication, SIGTERM.

use bayspace_connector::identity::{
    AuthorityKey, MemberRole, MembershipBody, MembershipCredential, Overwrite, PeerId, timestamp,
};
use bayspace_tests::*;
use serde_json::Value;
use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;
use time::OffsetDateTime;
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
    // E's refusal names D and why: its credential expired.
    let log = e.log();
    assert!(
        log.lines()
            .any(|l| l.contains(&d_peer) && l.contains("credential expired")),
        "{log}"
    );
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
    let url = format!("https://{grpc}");
    let ca = api_ca(&dir);

    let o = bayspace(&["status", "--node", &url, "--ca", &ca, "--token", "wrong"]);
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
    let o = bayspace(&["status", "--node", &url, "--ca", &ca, "--token", &token]);
    assert!(!o.status.success());
    assert!(text(&o).contains("PermissionDenied"), "{}", text(&o));

    let list: Value =
        serde_json::from_str(&ok(&["researcher", "list", "--json", "--dir", &s(&dir)])).unwrap();
    assert_eq!(list[0]["id"], id.as_str());
    assert_eq!(list[0]["orcid"], "0000-0002-1825-0097");
    ok(&["researcher", "remove", &id, "--dir", &s(&dir)]);
    let o = bayspace(&["status", "--node", &url, "--ca", &ca, "--token", &token]);
    assert!(text(&o).contains("Unauthenticated"), "{}", text(&o));

    // An empty token reaches the node and is refused there.
    let o = bayspace(&["status", "--node", &url, "--ca", &ca, "--token", ""]);
    assert!(text(&o).contains("Unauthenticated"), "{}", text(&o));

    // Without any token the call never leaves the client.
    let o = Command::new(bin())
        .args(["status", "--node", &url, "--ca", &ca])
        .env_remove("BAYSPACE_TOKEN")
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(text(&o).contains("no token"), "{}", text(&o));

    // Guessing tokens: after 20 failures within a minute from one address,
    // its calls are refused unchecked, the right token's too.
    let mut throttled_after = None;
    for attempt in 4..=22 {
        let o = bayspace(&["status", "--node", &url, "--ca", &ca, "--token", "guess"]);
        assert!(!o.status.success());
        if text(&o).contains("ResourceExhausted") {
            throttled_after = Some(attempt);
            break;
        }
        assert!(text(&o).contains("Unauthenticated"), "{}", text(&o));
    }
    assert_eq!(
        throttled_after,
        Some(21),
        "refused from the 21st attempt on"
    );
    let o = bayspace(&["status", "--dir", &s(&dir)]);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("ResourceExhausted") && text(&o).contains("failed authentications"),
        "{}",
        text(&o)
    );
}

/// The API speaks only TLS by default: a plaintext client gets nothing, and
/// a client that trusts another certificate is refused too. Plaintext is
/// possible on the loopback when the config says so, and refused with a
/// reason anywhere else.
#[test]
fn the_api_is_tls_by_default_and_plaintext_only_on_loopback() {
    let space = Space::new();
    let (dir, _, _) = space.member("alpha", None);
    let init_out = std::fs::read_to_string(dir.join("api.crt")).unwrap();
    assert!(init_out.contains("BEGIN CERTIFICATE"));
    let node = Node::start(&dir);
    node.wait_for("status", |_| true);
    let addr = grpc_addr(&dir);

    // Plaintext HTTP/2 to the TLS port: no answer.
    let o = bayspace(&[
        "status",
        "--node",
        &format!("http://{addr}"),
        "--dir",
        &s(&dir),
    ]);
    assert!(!o.status.success(), "{}", text(&o));
    // (The error varies with where HTTP/2 notices: a transport or a
    // protocol error; never an answer.)
    assert!(o.stdout.is_empty(), "{}", text(&o));
    // https without a certificate to trust: the client says what to pass.
    let o = Command::new(bin())
        .args([
            "status",
            "--node",
            &format!("https://{addr}"),
            "--token",
            "t",
        ])
        .env_remove("BAYSPACE_CA")
        .output()
        .unwrap();
    assert!(text(&o).contains("--ca"), "{}", text(&o));
    // Trusting some other certificate: the handshake fails.
    let (other, _, _) = space.member("beta", None);
    let o = bayspace(&[
        "status",
        "--node",
        &format!("https://{addr}"),
        "--ca",
        &api_ca(&other),
        "--dir",
        &s(&dir),
    ]);
    assert!(!o.status.success(), "{}", text(&o));
    // With the node's own certificate it works (--dir finds it).
    ok(&["status", "--dir", &s(&dir)]);
    drop(node);

    // The institution's own certificate: copied, and its fingerprint shown.
    let own = space.tmp.path().join("own-cert");
    let init = |d: &std::path::Path, extra: &[&str]| {
        let mut args = vec![
            "init",
            "--dir",
            d.to_str().unwrap(),
            "--institution",
            "gamma",
        ];
        args.extend(["--region", "hk"]);
        args.extend(extra);
        let out = ok(&args);
        out.lines()
            .skip_while(|l| !l.contains("SHA-256 fingerprint"))
            .nth(1)
            .unwrap()
            .trim()
            .to_owned()
    };
    let first = init(&own, &[]);
    assert_eq!(first.len(), 32 * 3 - 1, "{first}");
    let (cert, key) = (s(&own.join("api.crt")), s(&own.join("api.key")));
    let copied = space.tmp.path().join("copied-cert");
    let second = init(&copied, &["--api-cert", &cert, "--api-key", &key]);
    assert_eq!(first, second);
    assert_eq!(
        std::fs::read(copied.join("api.crt")).unwrap(),
        std::fs::read(own.join("api.crt")).unwrap()
    );
    let third = space.tmp.path().join("third-cert");
    let o = bayspace(&[
        "init",
        "--dir",
        &s(&third),
        "--institution",
        "delta",
        "--region",
        "hk",
        "--api-cert",
        &key,
        "--api-key",
        &key,
    ]);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("--api-cert") && text(&o).contains("not a PEM certificate"),
        "{}",
        text(&o)
    );
    assert!(!third.exists(), "nothing written");

    // grpc-tls = false on the loopback: plaintext, and the CLI follows.
    let config = dir.join("config.toml");
    let text_tls = std::fs::read_to_string(&config).unwrap();
    assert!(text_tls.contains("grpc-tls = true"), "{text_tls}");
    std::fs::write(
        &config,
        text_tls.replace("grpc-tls = true", "grpc-tls = false"),
    )
    .unwrap();
    let node = Node::start(&dir);
    node.wait_for("plaintext status", |_| true);
    drop(node);

    // grpc-tls = false anywhere else: the node refuses to start and says
    // why and how to fix it.
    let open = text_tls
        .replace("grpc-tls = true", "grpc-tls = false")
        .replace(&format!("grpc = \"{addr}\""), "grpc = \"[::]:7999\"");
    std::fs::write(&config, open).unwrap();
    let o = bayspace(&["run", "--dir", &s(&dir)]);
    assert!(!o.status.success());
    let said = text(&o);
    assert!(
        said.contains("in the clear")
            && said.contains("grpc-tls = true")
            && said.contains("[::]:7999"),
        "{said}"
    );
}
