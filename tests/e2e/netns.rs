#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Three member nodes on three hosts: Linux network namespaces for
//! Shenzhen (`fd00:5a::/48`), Hong Kong (`fd00:852::/48`) and Macao
//! (`fd00:853::/48`), joined by a bridge in a fourth "switch" namespace so
//! the host's own network is untouched. Admission here checks real remote
//! IPv6 addresses, not `::1`. Needs root (or CAP_NET_ADMIN) and `ip`; skips
//! with a message where `ip netns` is unavailable.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use bayspace_tests::*;
use serde_json::Value;

/// Longer than `DEADLINE`: each step here spawns `ip netns exec` processes.
const NS_DEADLINE: Duration = Duration::from_secs(30);
const P2P_PORT: u16 = 4710;
const GRPC: &str = "[::1]:7410";

fn ip(args: &[&str]) -> Output {
    Command::new("ip").args(args).output().expect("run ip")
}

fn ip_ok(args: &[&str]) {
    let o = ip(args);
    assert!(o.status.success(), "ip {args:?}: {}", text(&o));
}

/// The namespaces of one test run; deletes them when dropped, panicking or
/// not. Declared before the nodes so that the nodes are killed first.
struct Net {
    names: Vec<String>,
}

impl Net {
    /// Adds a namespace, or says why namespaces cannot be used here.
    fn add(&mut self, name: &str) -> Result<(), String> {
        let o = match Command::new("ip").args(["netns", "add", name]).output() {
            Ok(o) => o,
            Err(e) => return Err(format!("cannot run `ip`: {e}")),
        };
        if !o.status.success() {
            let err = text(&o);
            if err.contains("Permission denied") || err.contains("Operation not permitted") {
                return Err(format!("`ip netns add` is not permitted: {}", err.trim()));
            }
            panic!("ip netns add {name}: {err}");
        }
        self.names.push(name.to_owned());
        Ok(())
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for n in self.names.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", n]).output();
        }
    }
}

/// A host: a namespace with one interface `eth0` on the switch's bridge.
struct Host {
    ns: String,
}

impl Host {
    fn connect(switch: &str, ns: &str, port: &str, addr: &str) -> Host {
        ip_ok(&["-n", ns, "link", "set", "lo", "up"]);
        ip_ok(&[
            "-n", switch, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns,
        ]);
        ip_ok(&["-n", switch, "link", "set", port, "master", "br0", "up"]);
        ip_ok(&["-n", ns, "link", "set", "eth0", "up"]);
        let host = Host { ns: ns.to_owned() };
        host.address(addr);
        // All three /48s share one L2 segment: every ULA is on-link.
        ip_ok(&["-n", ns, "-6", "route", "add", "fd00::/16", "dev", "eth0"]);
        host
    }

    /// `nodad`: the address is usable at once, not tentative.
    fn address(&self, addr: &str) {
        let cidr = format!("{addr}/48");
        ip_ok(&["-n", &self.ns, "addr", "add", &cidr, "dev", "eth0", "nodad"]);
    }

    fn unaddress(&self, addr: &str) {
        let cidr = format!("{addr}/48");
        ip_ok(&["-n", &self.ns, "addr", "del", &cidr, "dev", "eth0"]);
    }

    fn bayspace(&self, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.ns, bin()])
            .args(args)
            .output()
            .expect("run bayspace in a namespace")
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.bayspace(args);
        assert!(o.status.success(), "{} {args:?}: {}", self.ns, text(&o));
        String::from_utf8(o.stdout).unwrap()
    }

    /// `bayspace run` inside the namespace; `ip netns exec` execs, so the
    /// child is the node itself and killing it stops the node.
    fn start(&self, dir: &Path) -> Node {
        let log = std::fs::File::create(dir.join("node.log")).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns, bin(), "run", "--dir", &s(dir)])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        Node {
            dir: dir.to_owned(),
            child: Some(child),
        }
    }

    fn status(&self, node: &Node) -> Option<Value> {
        let o = self.bayspace(&["status", "--json", "--dir", &s(&node.dir)]);
        o.status
            .success()
            .then(|| serde_json::from_slice(&o.stdout).unwrap())
    }

    fn wait_for(&self, node: &Node, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let start = Instant::now();
        loop {
            let st = self.status(node);
            if let Some(st) = &st
                && pred(st)
            {
                return st.clone();
            }
            assert!(
                start.elapsed() < NS_DEADLINE,
                "{}: timed out waiting for {what}; last status {st:?}; log:\n{}",
                self.ns,
                node.log()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Waits until a TCP connection from this host to `addr` succeeds, so a
    /// node's single bootstrap dial does not race the network coming up.
    fn wait_reachable(&self, addr: &str, port: u16) {
        let probe = format!("exec 3<>/dev/tcp/{addr}/{port}");
        let start = Instant::now();
        loop {
            let o = Command::new("ip")
                .args(["netns", "exec", &self.ns, "bash", "-c", &probe])
                .output()
                .unwrap();
            if o.status.success() {
                return;
            }
            assert!(
                start.elapsed() < NS_DEADLINE,
                "{}: [{addr}]:{port} unreachable: {}",
                self.ns,
                text(&o)
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    fn search(&self, dir: &Path, query: &[&str]) -> Vec<Value> {
        let d = s(dir);
        let mut args = vec!["catalog", "search", "--json", "--dir", &d];
        args.extend(query);
        serde_json::from_str::<Value>(&self.ok(&args))
            .unwrap()
            .as_array()
            .unwrap()
            .clone()
    }

    fn wait_search(&self, node: &Node, query: &[&str], what: &str) -> Vec<Value> {
        let start = Instant::now();
        loop {
            let found = self.search(&node.dir, query);
            if !found.is_empty() {
                return found;
            }
            assert!(
                start.elapsed() < NS_DEADLINE,
                "{}: timed out waiting for {what}; log:\n{}",
                self.ns,
                node.log()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    fn publish(&self, dir: &Path, file: &Path, title: &str) -> Value {
        let (d, f) = (s(dir), s(file));
        serde_json::from_str(&self.ok(&[
            "dataset",
            "publish",
            &f,
            "--title",
            title,
            "--level",
            "general",
            "--personal",
            "0",
            "--sensitive",
            "0",
            "--category",
            "health",
            "--purpose",
            "academic-research",
            "--json",
            "--dir",
            &d,
        ]))
        .unwrap()
    }
}

fn p2p_listen(addr: &str, port: u16) -> [String; 2] {
    [
        format!("/ip6/{addr}/tcp/{port}"),
        format!("/ip6/{addr}/udp/{port}/quic-v1"),
    ]
}

/// `bayspace init` for a node listening on `addr` with its gRPC on the
/// namespace's own `[::1]`, and a credential for `prefix` in `region`.
fn member(
    space: &Space,
    name: &str,
    region: &str,
    listen: &[String; 2],
    grpc: &str,
    prefix: &str,
    bootstrap: Option<&str>,
) -> (PathBuf, String) {
    let dir = space.tmp.path().join(name);
    let (d, anchor) = (s(&dir), s(&space.authority().join("authority.pub")));
    let mut args = vec![
        "init",
        "--dir",
        &d,
        "--institution",
        name,
        "--region",
        region,
        "--listen",
        &listen[0],
        "--listen",
        &listen[1],
        "--grpc",
        grpc,
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
    space.issue_in(&dir, &peer, region, prefix);
    (dir, peer)
}

/// Waits until `node`'s log refuses `peer` because it speaks from
/// `addr`, outside its prefixes; the status only counts refusals.
fn wait_refused_for_address(node: &Node, peer: &str, addr: &str) {
    let reason = format!("remote address {addr} is outside the institution's prefixes");
    let start = Instant::now();
    loop {
        let log = node.log();
        if log
            .lines()
            .any(|l| l.contains("peer refused") && l.contains(peer) && l.contains(&reason))
        {
            return;
        }
        assert!(
            start.elapsed() < NS_DEADLINE,
            "timed out waiting for the refusal of {peer} at {addr}; log:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn refusals(st: &Value) -> u64 {
    st["admission_refusals"].as_u64().unwrap()
}

#[test]
fn members_in_three_namespaces_admit_each_other_and_refuse_a_moved_node() {
    let tag = format!("bs-{}", std::process::id());
    let [sw_ns, sz_ns, hk_ns, mo_ns] = ["sw", "sz", "hk", "mo"].map(|n| format!("{tag}-{n}"));
    let mut net = Net { names: Vec::new() };
    if let Err(why) = net.add(&sw_ns) {
        skip_or_fail(&why);
        return;
    }
    for ns in [&sz_ns, &hk_ns, &mo_ns] {
        net.add(ns).unwrap();
    }
    // Snooping off: the bridge floods neighbour discovery before it has
    // seen any MLD report.
    ip_ok(&[
        "-n",
        &sw_ns,
        "link",
        "add",
        "br0",
        "type",
        "bridge",
        "mcast_snooping",
        "0",
    ]);
    ip_ok(&["-n", &sw_ns, "link", "set", "br0", "up"]);
    let (sz_ip, hk_ip, mo_ip, moved_ip) =
        ("fd00:5a::1", "fd00:852::1", "fd00:853::1", "fd00:999::1");
    let sz_host = Host::connect(&sw_ns, &sz_ns, "p-sz", sz_ip);
    let hk_host = Host::connect(&sw_ns, &hk_ns, "p-hk", hk_ip);
    let mo_host = Host::connect(&sw_ns, &mo_ns, "p-mo", mo_ip);

    let space = Space::new();
    let (sz_dir, sz_peer) = member(
        &space,
        "Shenzhen University",
        "mainland:shenzhen",
        &p2p_listen(sz_ip, P2P_PORT),
        GRPC,
        "fd00:5a::/48",
        None,
    );
    let sz_addr = format!("/ip6/{sz_ip}/tcp/{P2P_PORT}/p2p/{sz_peer}");
    let (hk_dir, hk_peer) = member(
        &space,
        "HKU",
        "hk",
        &p2p_listen(hk_ip, P2P_PORT),
        GRPC,
        "fd00:852::/48",
        Some(&sz_addr),
    );
    let (mo_dir, mo_peer) = member(
        &space,
        "University of Macau",
        "macao",
        &p2p_listen(mo_ip, P2P_PORT),
        GRPC,
        "fd00:853::/48",
        Some(&sz_addr),
    );

    let sz = sz_host.start(&sz_dir);
    sz_host.wait_for(&sz, "Shenzhen's status", |_| true);
    hk_host.wait_reachable(sz_ip, P2P_PORT);
    mo_host.wait_reachable(sz_ip, P2P_PORT);
    let hk = hk_host.start(&hk_dir);
    let mo = mo_host.start(&mo_dir);

    // (1) Admission over the routes between the namespaces.
    let st = sz_host.wait_for(&sz, "Shenzhen to admit HK and Macao", |st| {
        let a = Node::admitted(st);
        a.contains(&hk_peer) && a.contains(&mo_peer)
    });
    assert_eq!(refusals(&st), 0, "{st}");
    for (host, node) in [(&hk_host, &hk), (&mo_host, &mo)] {
        host.wait_for(node, "admission to Shenzhen", |st| {
            Node::admitted(st).contains(&sz_peer)
        });
    }

    let data = space.tmp.path().join("cohort.csv");
    std::fs::write(&data, "id,age\n1,34\n2,51\n").unwrap();
    let published = sz_host.publish(&sz_dir, &data, "Diabetes cohort 2026");
    let id = published["id"].as_str().unwrap().to_owned();
    for (host, node) in [(&hk_host, &hk), (&mo_host, &mo)] {
        let found = host.wait_search(node, &["diabetes"], "Shenzhen's dataset");
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0]["id"], Value::from(id.clone()));
        assert_eq!(found[0]["publisher"], "Shenzhen University");
        assert_eq!(found[0]["region"], "mainland:shenzhen");
    }

    // (2) Macao moves to an address outside its credential's prefix. With
    // only that address on the host, the kernel must dial from it.
    mo.terminate();
    mo_host.unaddress(mo_ip);
    mo_host.address(moved_ip);
    let config = mo_dir.join("config.toml");
    let moved = std::fs::read_to_string(&config)
        .unwrap()
        .replace(mo_ip, moved_ip);
    std::fs::write(&config, moved).unwrap();
    let before = refusals(&sz_host.wait_for(&sz, "Shenzhen's status", |st| {
        !Node::admitted(st).contains(&mo_peer)
    }));
    mo_host.wait_reachable(sz_ip, P2P_PORT);
    let mo = mo_host.start(&mo_dir);
    mo_host.wait_for(&mo, "the moved node's status", |_| true);
    wait_refused_for_address(&sz, &mo_peer, moved_ip);
    let st = sz_host.wait_for(&sz, "Shenzhen to count the refusal", |st| {
        refusals(st) > before && !Node::admitted(st).contains(&mo_peer)
    });
    assert!(Node::admitted(&st).contains(&hk_peer), "{st}");

    // A node that was never admitted from the outside address sees an
    // empty catalog; the moved one gets nothing new.
    let (lab_dir, lab_peer) = member(
        &space,
        "Macao Lab",
        "macao",
        &p2p_listen(moved_ip, P2P_PORT + 1),
        "[::1]:7411",
        "fd00:853::/48",
        Some(&sz_addr),
    );
    let lab = mo_host.start(&lab_dir);
    mo_host.wait_for(&lab, "the lab's status", |_| true);
    wait_refused_for_address(&sz, &lab_peer, moved_ip);
    let st = sz_host.wait_for(&sz, "Shenzhen to count both refusals", |st| {
        refusals(st) > before + 1
    });
    let admitted = Node::admitted(&st);
    assert!(
        !admitted.contains(&lab_peer) && !admitted.contains(&mo_peer),
        "{st}"
    );

    let air = space.tmp.path().join("air.csv");
    std::fs::write(&air, "station,pm25\n1,12\n").unwrap();
    sz_host.publish(&sz_dir, &air, "Air quality 2026");
    hk_host.wait_search(&hk, &["air"], "the second dataset");
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        mo_host.search(&mo_dir, &["air"]).is_empty(),
        "the moved node got a new dataset; log:\n{}",
        mo.log()
    );
    assert!(
        mo_host.search(&lab_dir, &[]).is_empty(),
        "the outside lab got a catalog; log:\n{}",
        lab.log()
    );
    let st = hk_host.status(&hk).unwrap();
    let admitted = Node::admitted(&st);
    assert!(
        !admitted.contains(&lab_peer) && !admitted.contains(&mo_peer),
        "{st}"
    );
}
