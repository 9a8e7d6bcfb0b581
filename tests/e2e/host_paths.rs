#![allow(clippy::unwrap_used, clippy::expect_used)]
//! No researcher request names a path on the node's host, and an
//! administrator's export stays inside `export-dir`. Each request is made
//! with a raw gRPC client, as an attacker holding a researcher token would,
//! and the file system is checked afterwards.

use std::path::Path;

use bayspace_tests::pair::*;
use bayspace_tests::proto::data_service_client::DataServiceClient;
use bayspace_tests::proto::transfer_service_client::TransferServiceClient;
use bayspace_tests::proto::{DataOpenRequest, FetchRequest};
use bayspace_tests::*;
use tonic::transport::Channel;
use tonic::{Code, Request};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

async fn channel(dir: &Path) -> Channel {
    bayspace_tests::grpc_channel(dir).await
}

fn bearer<T>(msg: T, token: &str) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    r
}

/// Runs a Fetch to its end; the status of the first error, if any.
async fn fetch(dir: &Path, token: &str, req: FetchRequest) -> Result<(), tonic::Status> {
    let mut c = TransferServiceClient::new(channel(dir).await);
    let mut stream = c.fetch(bearer(req, token)).await?.into_inner();
    while let Some(p) = stream.message().await? {
        if p.done {
            return Ok(());
        }
    }
    Ok(())
}

async fn open(dir: &Path, token: &str, agreement: &str, out: &Path) -> Result<(), tonic::Status> {
    let mut c = DataServiceClient::new(channel(dir).await);
    c.open(bearer(
        DataOpenRequest {
            agreement_id: agreement.to_owned(),
            out: s(out),
        },
        token,
    ))
    .await
    .map(drop)
}

fn refused(r: Result<(), tonic::Status>, what: &str) -> tonic::Status {
    let e = r.expect_err(what);
    assert!(
        matches!(e.code(), Code::PermissionDenied | Code::InvalidArgument),
        "{what}: {e:?}"
    );
    e
}

/// Names every file under `dir`, so a test can show nothing appeared.
fn tree(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd {
            let p = e.unwrap().path();
            if p.is_dir() && !p.is_symlink() {
                stack.push(p.clone());
            }
            out.push(s(&p));
        }
    }
    out.sort();
    out
}

#[test]
fn no_request_writes_outside_the_export_dir() {
    let p = Pair::start(false);
    let bytes: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let agreement = p.agree_on("cohort", &bytes, &[]);
    let admin_token = std::fs::read_to_string(p.hk.dir.join("admin.token"))
        .unwrap()
        .trim()
        .to_owned();
    // Somewhere the node's process can write: the attack's target.
    let victim_dir = p.space.tmp.path().join("victim");
    std::fs::create_dir(&victim_dir).unwrap();
    let rt = runtime();

    // 1. A researcher token naming a host path: refused, nothing written.
    let target = victim_dir.join("fetched.bin");
    let e = refused(
        rt.block_on(fetch(
            &p.hk.dir,
            &p.token,
            FetchRequest {
                agreement_id: agreement.clone(),
                out: s(&target),
                keep_sealed: false,
            },
        )),
        "a researcher's Fetch into a host path",
    );
    assert!(e.message().contains("out"), "{e:?}");
    assert_eq!(tree(&victim_dir), Vec::<String>::new());

    // The data kept sealed, as a researcher may ask.
    rt.block_on(fetch(
        &p.hk.dir,
        &p.token,
        FetchRequest {
            agreement_id: agreement.clone(),
            out: String::new(),
            keep_sealed: true,
        },
    ))
    .unwrap();
    let target = victim_dir.join("opened.bin");
    refused(
        rt.block_on(open(&p.hk.dir, &p.token, &agreement, &target)),
        "a researcher's Open into a host path",
    );
    assert_eq!(tree(&victim_dir), Vec::<String>::new());

    // 2. The administrator: outside export-dir, with `..`, refused.
    let exports = p.hk.dir.join("exports");
    for out in [
        victim_dir.join("admin.bin"),
        exports.join("../victim/dotdot.bin"),
    ] {
        refused(
            rt.block_on(open(&p.hk.dir, &admin_token, &agreement, &out)),
            &format!("an administrator's Open into {}", out.display()),
        );
    }
    assert_eq!(tree(&victim_dir), Vec::<String>::new());

    // 3. A symlink inside export-dir leading out of it: refused.
    std::fs::create_dir_all(&exports).unwrap();
    std::os::unix::fs::symlink(&victim_dir, exports.join("escape")).unwrap();
    refused(
        rt.block_on(open(
            &p.hk.dir,
            &admin_token,
            &agreement,
            &exports.join("escape/linked.bin"),
        )),
        "an administrator's Open through a symlink out of export-dir",
    );
    assert_eq!(tree(&victim_dir), Vec::<String>::new());

    // Inside export-dir, the administrator's export works (named relative
    // to it, or as an absolute path inside it).
    rt.block_on(open(
        &p.hk.dir,
        &admin_token,
        &agreement,
        Path::new("cohort.bin"),
    ))
    .unwrap();
    assert_eq!(std::fs::read(exports.join("cohort.bin")).unwrap(), bytes);
    rt.block_on(open(
        &p.hk.dir,
        &admin_token,
        &agreement,
        &exports.join("again.bin"),
    ))
    .unwrap();
    assert_eq!(std::fs::read(exports.join("again.bin")).unwrap(), bytes);
    assert_eq!(tree(&victim_dir), Vec::<String>::new());
}
