#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The Python example client (`examples/python-client`, grpcio with stubs
//! generated from the node's protos) searches a live node's catalog with a
//! researcher token, and makes a researcher's whole journey from search to
//! a verified, resumed download, all over TLS with the node's certificate.

use std::path::{Path, PathBuf};
use std::process::Command;

use bayspace_tests::pair::*;
use bayspace_tests::*;
use serde_json::Value;

fn run(cmd: &mut Command) -> String {
    let o = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(o.status.success(), "{cmd:?}: {}", text(&o));
    String::from_utf8(o.stdout).unwrap()
}

/// A venv with the client's requirements, kept between runs under the
/// target directory so only the first run downloads anything.
fn venv(client: &Path) -> PathBuf {
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("python-client-venv");
    let python = venv.join("bin/python");
    let stamp = venv.join("requirements.installed");
    let wanted = std::fs::read_to_string(client.join("requirements.txt")).unwrap();
    if std::fs::read_to_string(&stamp).ok().as_deref() != Some(wanted.as_str()) {
        run(Command::new("python3").arg("-m").arg("venv").arg(&venv));
        run(Command::new(&python)
            .args(["-m", "pip", "install", "-q", "-r"])
            .arg(client.join("requirements.txt")));
        std::fs::write(&stamp, wanted).unwrap();
    }
    python
}

/// The client's directory and a Python with its requirements and stubs.
/// Made once per test process: the tests run in parallel, and two pip
/// installs into one venv at once break each other (CI saw pip read a
/// half-written package's metadata).
fn client() -> (PathBuf, PathBuf) {
    static READY: std::sync::OnceLock<(PathBuf, PathBuf)> = std::sync::OnceLock::new();
    READY
        .get_or_init(|| {
            let client = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/python-client");
            let python = venv(&client);
            run(Command::new("sh")
                .arg(client.join("generate.sh"))
                .env("PYTHON", &python));
            (client, python)
        })
        .clone()
}

#[test]
fn the_python_client_searches_a_live_node() {
    let (client, python) = client();

    let space = Space::new();
    let (dir, _, _) = space.member_in("Shenzhen University", "mainland:shenzhen", None);
    let node = Node::start(&dir);
    node.wait_for("status", |_| true);
    let data = space.tmp.path().join("air.csv");
    std::fs::write(&data, "station,pm25\nfutian,31\n").unwrap();
    ok(&[
        "dataset",
        "publish",
        &s(&data),
        "--title",
        "Air quality Futian",
        "--keyword",
        "pm25",
        "--level",
        "general",
        "--personal",
        "0",
        "--sensitive",
        "0",
        "--purpose",
        "academic-research",
        "--dir",
        &s(&dir),
    ]);
    let added = ok(&["researcher", "add", "Chan Tai Man", "--dir", &s(&dir)]);
    let token = added
        .lines()
        .find_map(|l| l.strip_prefix("token: "))
        .unwrap()
        .to_owned();
    let grpc = grpc_addr(&dir);
    let ca = api_ca(&dir);

    let search = |args: &[&str]| -> std::process::Output {
        Command::new(&python)
            .arg(client.join("search.py"))
            .args(["--node", &grpc, "--ca", &ca, "--token", &token])
            .args(args)
            .output()
            .unwrap()
    };
    let o = search(&["pm25"]);
    assert!(o.status.success(), "{}", text(&o));
    let found: Value = serde_json::from_slice(&o.stdout).unwrap();
    let found = found.as_array().unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0]["title"], "Air quality Futian");
    assert_eq!(found[0]["publisher"], "Shenzhen University");

    let o = search(&["--region", "hk"]);
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "[]");

    // Reflection (v1alpha, the version Python's client speaks) lists the
    // bayspace.v1 services without a token, and health reports SERVING.
    let probe = r#"
import sys, grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
creds = grpc.ssl_channel_credentials(root_certificates=open(sys.argv[2], "rb").read())
ch = grpc.secure_channel(sys.argv[1], creds)
stub = reflection_pb2_grpc.ServerReflectionStub(ch)
reqs = iter([reflection_pb2.ServerReflectionRequest(list_services="")])
for r in stub.ServerReflectionInfo(reqs, timeout=10):
    print("\n".join(s.name for s in r.list_services_response.service))
h = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
print("health", health_pb2.HealthCheckResponse.ServingStatus.Name(h.status))
"#;
    let out = run(Command::new(&python).args(["-c", probe, &grpc, &ca]));
    for service in [
        "bayspace.v1.CatalogService",
        "bayspace.v1.DatasetService",
        "bayspace.v1.NodeService",
    ] {
        assert!(
            out.lines().any(|l| l == service),
            "{service} not listed: {out}"
        );
    }
    assert!(out.contains("health SERVING"), "{out}");

    // A wrong token is refused with the gRPC code.
    let o = Command::new(&python)
        .arg(client.join("search.py"))
        .args([
            "--node",
            &grpc,
            "--ca",
            &ca,
            "--token",
            "not-a-token",
            "pm25",
        ])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(text(&o).contains("UNAUTHENTICATED"), "{}", text(&o));
}

#[test]
fn the_python_client_makes_the_whole_researcher_journey_over_tls() {
    let (client, python) = client();
    let p = Pair::start(false);
    let bytes: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let file = p.space.tmp.path().join("ozone.bin");
    std::fs::write(&file, &bytes).unwrap();
    p.publish_file(&file, "Ozone Tsuen Wan", &AUTO_TO_HK);
    let (grpc, ca) = (grpc_addr(&p.hk.dir), api_ca(&p.hk.dir));
    let journey = |args: &[&str]| -> std::process::Output {
        Command::new(&python)
            .arg(client.join("journey.py"))
            .args(["--node", &grpc, "--ca", &ca, "--token", &p.token])
            .args(args)
            .output()
            .unwrap()
    };

    let out = p.space.tmp.path().join("laptop-ozone.bin");
    let o = journey(&["--query", "ozone", "--out", &s(&out)]);
    assert!(o.status.success(), "{}", text(&o));
    let summary: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(summary["state"], "FINALIZED", "{summary}");
    assert_eq!(summary["bytes"], bytes.len() as u64);
    assert_eq!(summary["resumed_bytes"], 0);
    assert_eq!(
        summary["blake3"].as_str().unwrap(),
        blake3::hash(&bytes).to_hex().as_str()
    );
    assert_eq!(std::fs::read(&out).unwrap(), bytes);
    let said = String::from_utf8_lossy(&o.stderr);
    assert!(said.contains("FINALIZED"), "Watch followed it: {said}");
    let agreement = summary["agreement"].as_str().unwrap().to_owned();

    // An interrupted download (half the bytes in .part) resumes from there.
    let again = p.space.tmp.path().join("again.bin");
    let half = bytes.len() / 2;
    std::fs::write(format!("{}.part", again.display()), &bytes[..half]).unwrap();
    let o = journey(&["--agreement", &agreement, "--out", &s(&again)]);
    assert!(o.status.success(), "{}", text(&o));
    let summary: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(summary["resumed_bytes"], half as u64, "{summary}");
    assert_eq!(std::fs::read(&again).unwrap(), bytes);

    // A .part that is not the data fails the BLAKE3 check: nothing at OUT.
    let bad = p.space.tmp.path().join("bad.bin");
    let bad_part = format!("{}.part", bad.display());
    std::fs::write(&bad_part, vec![0u8; 1000]).unwrap();
    let o = journey(&["--agreement", &agreement, "--out", &s(&bad)]);
    assert!(!o.status.success());
    assert!(text(&o).contains("does not verify"), "{}", text(&o));
    assert!(!bad.exists() && !Path::new(&bad_part).exists());
}
