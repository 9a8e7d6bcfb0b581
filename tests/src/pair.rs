//! Two running members for the tests of agreements and releases: Shenzhen
//! University publishes, an HKU researcher asks through their home node.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::*;

pub const SZ: &str = "Shenzhen University";
pub const HK: &str = "HKU";
/// `publish` options for an offer to Hong Kong, approved by the node, of
/// data without personal information.
pub const AUTO_TO_HK: [&str; 6] = [
    "--personal",
    "0",
    "--recipient-region",
    "hk",
    "--approval",
    "auto",
];

/// Shenzhen (provider) and HKU (consumer, bootstrapping to Shenzhen), both
/// running and admitted to each other, and a researcher token on HKU.
pub struct Pair {
    pub space: Space,
    pub sz: Node,
    pub sz_peer: String,
    pub hk: Node,
    pub hk_peer: String,
    pub token: String,
}

impl Pair {
    /// `fixed_sz_port`: Shenzhen listens on a TCP port chosen now, so a
    /// restarted Shenzhen is found again at the bootstrap address HKU has.
    pub fn start(fixed_sz_port: bool) -> Pair {
        Pair::start_with(fixed_sz_port, |_| {})
    }

    /// [`Pair::start`], with `prepare` run on each node directory after
    /// `init` and before the node starts (to edit its config, say).
    pub fn start_with(fixed_sz_port: bool, prepare: impl Fn(&Path)) -> Pair {
        let space = Space::new();
        let (sz_dir, sz_peer, _) = space.member_in(SZ, "mainland:shenzhen", None);
        prepare(&sz_dir);
        if fixed_sz_port {
            let config = sz_dir.join("config.toml");
            let text = std::fs::read_to_string(&config).unwrap();
            let port = format!("/ip6/::1/tcp/{}", free_port());
            assert!(text.contains("/ip6/::1/tcp/0"), "{text}");
            std::fs::write(&config, text.replace("/ip6/::1/tcp/0", &port)).unwrap();
        }
        let sz = Node::start(&sz_dir);
        let sz_addr = sz.tcp_addr();
        let (hk_dir, hk_peer, _) = space.member_in(HK, "hk", Some(&sz_addr));
        prepare(&hk_dir);
        let hk = Node::start(&hk_dir);
        wait_admitted(&hk, &sz_peer);
        wait_admitted(&sz, &hk_peer);
        let out = ok(&[
            "researcher",
            "add",
            "Chan Tai Man",
            "--orcid",
            "0000-0002-1825-0097",
            "--dir",
            &s(&hk_dir),
        ]);
        let token = out
            .lines()
            .find_map(|l| l.strip_prefix("token: "))
            .unwrap()
            .to_owned();
        Pair {
            space,
            sz,
            sz_peer,
            hk,
            hk_peer,
            token,
        }
    }

    /// Publishes on Shenzhen and waits until HKU's catalog has it.
    pub fn publish(&self, title: &str, extra: &[&str]) -> String {
        let data = self.space.tmp.path().join("cohort.csv");
        std::fs::write(&data, "id,age\n1,34\n2,51\n").unwrap();
        self.publish_file(&data, title, extra)
    }

    /// Writes `bytes` to `<name>.bin`, publishes it on Shenzhen as an
    /// automatic offer to HKU with `terms` besides, has the researcher ask
    /// for it, and returns the agreement once both sides are FINALIZED.
    pub fn agree_on(&self, name: &str, bytes: &[u8], terms: &[&str]) -> String {
        let file = self.space.tmp.path().join(format!("{name}.bin"));
        std::fs::write(&file, bytes).unwrap();
        let mut extra = AUTO_TO_HK.to_vec();
        extra.extend(terms);
        let dataset = self.publish_file(&file, name, &extra);
        let (id, _) = self.request(&dataset, "academic-research");
        let (consumer, _) = self.wait_both(&id, "FINALIZED");
        consumer["agreement_id"].as_str().unwrap().to_owned()
    }

    /// Publishes `data` on Shenzhen and waits until HKU's catalog has it.
    pub fn publish_file(&self, data: &Path, title: &str, extra: &[&str]) -> String {
        let (d, f) = (s(&self.sz.dir), s(data));
        let mut args = vec![
            "dataset",
            "publish",
            &f,
            "--title",
            title,
            "--level",
            "general",
            "--sensitive",
            "0",
            "--purpose",
            "academic-research",
            "--json",
            "--dir",
            &d,
        ];
        args.extend(extra);
        let published: Value = serde_json::from_str(&ok(&args)).unwrap();
        let id = published["id"].as_str().unwrap().to_owned();
        poll(&self.hk, &format!("{id} in HKU's catalog"), || {
            let found: Value = serde_json::from_str(&ok(&[
                "catalog",
                "search",
                "--json",
                "--dir",
                &s(&self.hk.dir),
            ]))
            .unwrap();
            found.as_array().unwrap().iter().any(|d| d["id"] == *id)
        });
        id
    }

    /// The researcher's request; returns the negotiation id.
    pub fn request(&self, dataset: &str, purpose: &str) -> (String, String) {
        let o = self.researcher(&[
            "contract",
            "request",
            dataset,
            "--purpose",
            purpose,
            "--json",
        ]);
        assert!(o.status.success(), "{}", text(&o));
        let v: Value = serde_json::from_slice(&o.stdout).unwrap();
        (
            v["id"].as_str().unwrap().to_owned(),
            v["state"].as_str().unwrap().to_owned(),
        )
    }

    /// A command on HKU as the researcher: the node's address from
    /// `--node`, the token from `BAYSPACE_TOKEN`.
    pub fn researcher(&self, args: &[&str]) -> Output {
        Command::new(bin())
            .args(args)
            .args(["--node", &grpc_url(&self.hk.dir)])
            .args(["--ca", &api_ca(&self.hk.dir)])
            .env("BAYSPACE_TOKEN", &self.token)
            .output()
            .unwrap()
    }

    pub fn consumer_view(&self, id: &str) -> Option<Value> {
        let o = self.researcher(&["contract", "show", id, "--json"]);
        o.status
            .success()
            .then(|| serde_json::from_slice(&o.stdout).unwrap())
    }

    /// Polls both sides until each shows `state`; returns (provider, consumer).
    pub fn wait_both(&self, id: &str, state: &str) -> (Value, Value) {
        let start = Instant::now();
        loop {
            let p = admin_view(&self.sz, id).unwrap_or(Value::Null);
            let c = self.consumer_view(id).unwrap_or(Value::Null);
            if p["state"] == state && c["state"] == state {
                return (p, c);
            }
            assert!(
                start.elapsed() < DEADLINE,
                "timed out waiting for {id} to be {state} on both sides; provider {p}, consumer {c}\nShenzhen log:\n{}\nHKU log:\n{}",
                self.sz.log(),
                self.hk.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Polls the researcher's view until it is TERMINATED; returns its reasons.
    pub fn wait_terminated(&self, id: &str) -> Vec<String> {
        let start = Instant::now();
        loop {
            let c = self.consumer_view(id).unwrap_or(Value::Null);
            if c["state"] == "TERMINATED" {
                return c["reasons"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|r| r.as_str().unwrap().to_owned())
                    .collect();
            }
            assert!(
                start.elapsed() < DEADLINE,
                "timed out waiting for {id} to be TERMINATED; consumer {c}\nHKU log:\n{}",
                self.hk.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until the provider lists `id` as pending; returns its entry.
    pub fn wait_pending(&self, id: &str) -> Value {
        let mut entry = Value::Null;
        poll(&self.sz, &format!("{id} pending on Shenzhen"), || {
            let list: Value = serde_json::from_str(&ok(&[
                "offers",
                "list",
                "--json",
                "--dir",
                &s(&self.sz.dir),
            ]))
            .unwrap();
            match list.as_array().unwrap().iter().find(|n| n["id"] == id) {
                Some(n) => {
                    entry = n.clone();
                    true
                }
                None => false,
            }
        });
        entry
    }
}

pub fn wait_admitted(node: &Node, peer: &str) {
    node.wait_for(&format!("admission of {peer}"), |st| {
        Node::admitted(st).contains(peer)
    });
}

/// The gRPC address from the node's config, as `--node` takes it.
pub fn grpc_url(dir: &Path) -> String {
    let config = std::fs::read_to_string(dir.join("config.toml")).unwrap();
    let addr = config
        .lines()
        .find_map(|l| l.strip_prefix("grpc = "))
        .unwrap()
        .trim_matches('"');
    format!("https://{addr}")
}

/// Polls `cond` until it holds, within the shared deadline.
pub fn poll(node: &Node, what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < DEADLINE,
            "timed out waiting for {what}; log:\n{}",
            node.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `contract show --json` with the node's administrator token.
pub fn admin_view(node: &Node, id: &str) -> Option<Value> {
    let o = bayspace(&["contract", "show", id, "--json", "--dir", &s(&node.dir)]);
    o.status
        .success()
        .then(|| serde_json::from_slice(&o.stdout).unwrap())
}

pub fn admin(node: &Node, args: &[&str]) -> Output {
    let d = s(&node.dir);
    let mut all = args.to_vec();
    all.extend(["--dir", &d]);
    bayspace(&all)
}

pub fn admin_ok(node: &Node, args: &[&str]) -> String {
    let o = admin(node, args);
    assert!(
        o.status.success(),
        "{args:?}: {}\nlog:\n{}",
        text(&o),
        node.log()
    );
    String::from_utf8(o.stdout).unwrap()
}

pub fn audit_events(node: &Node, out: &Path) -> String {
    admin_ok(node, &["audit", "export", "--out", &s(out)]);
    std::fs::read_to_string(out).unwrap()
}
