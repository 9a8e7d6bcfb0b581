#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The Debian package and its systemd unit, and what the unit relies on in
//! the node: readiness over the notify socket (`Type=notify`) and SIGHUP
//! reloading the revocation list and filing holidays.
//!
//! The package test needs `cargo-deb` (`.ci/run` installs it) and builds
//! the package from the binary these tests were built with, so no release
//! build is made.

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use bayspace_tests::*;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

fn run(cmd: &mut Command) -> String {
    let o = cmd.output().unwrap();
    assert!(o.status.success(), "{cmd:?}: {}", text(&o));
    String::from_utf8(o.stdout).unwrap()
}

/// The target directory's profile folder the test binary was built into.
fn profile() -> &'static str {
    let exe = Path::new(bin());
    if exe.parent().unwrap().ends_with("release") {
        "release"
    } else {
        "dev"
    }
}

#[test]
fn the_package_installs_a_unit_that_verifies() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("deb");
    std::fs::create_dir(&out).unwrap();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let o = Command::new(&cargo)
        .current_dir(workspace())
        // Stripped and quickly compressed: the test build's binary is large.
        .args(["deb", "-p", "bayspace-node", "--no-build", "--fast"])
        .args(["--profile", profile(), "--output"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "cargo deb failed (install it with `cargo install cargo-deb --locked`): {}",
        text(&o)
    );
    let deb = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .unwrap();
    let name = deb.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        name.starts_with("bayspace_") && name.ends_with("_amd64.deb"),
        "{name}"
    );

    let contents = run(Command::new("dpkg-deb").arg("--contents").arg(&deb));
    for path in [
        "./usr/bin/bayspace",
        "./lib/systemd/system/bayspace.service",
        "./usr/share/doc/bayspace/OPERATIONS.md",
        "./usr/share/doc/bayspace/grafana/bayspace-node.json",
    ] {
        assert!(contents.contains(path), "{path} missing:\n{contents}");
    }
    assert!(
        contents
            .lines()
            .any(|l| l.starts_with("-rwxr-xr-x") && l.ends_with("./usr/bin/bayspace")),
        "{contents}"
    );
    let package = run(Command::new("dpkg-deb")
        .args(["--field"])
        .arg(&deb)
        .arg("Package"));
    assert_eq!(package.trim(), "bayspace");

    // Maintainer scripts: the user and 0700 directory, no enable or start.
    let control = tmp.path().join("control");
    run(Command::new("dpkg-deb")
        .arg("--control")
        .arg(&deb)
        .arg(&control));
    let postinst = std::fs::read_to_string(control.join("postinst")).unwrap();
    assert!(postinst.contains("useradd --system"), "{postinst}");
    assert!(postinst.contains("-m 0700 -o bayspace"), "{postinst}");
    for script in ["postinst", "prerm", "postrm"] {
        let text = std::fs::read_to_string(control.join(script)).unwrap_or_default();
        assert!(
            !text.contains("systemctl enable")
                && !text.contains("systemctl start")
                && !text.contains("deb-systemd-invoke start"),
            "{script} enables or starts the service:\n{text}"
        );
    }

    // Into a scratch root, never onto this machine.
    let root = tmp.path().join("root");
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root));
    let installed = root.join("usr/bin/bayspace");
    let version = run(Command::new(&installed).arg("--version"));
    assert!(version.starts_with("bayspace "), "{version}");
    let unit = std::fs::read_to_string(root.join("lib/systemd/system/bayspace.service")).unwrap();
    for line in [
        "Type=notify",
        "User=bayspace",
        "ExecStart=/usr/bin/bayspace run --dir /var/lib/bayspace",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "ReadWritePaths=/var/lib/bayspace",
        "CapabilityBoundingSet=\n",
        "SystemCallFilter=@system-service",
        "RestrictAddressFamilies=AF_INET6 AF_INET AF_UNIX\n",
        "MemoryDenyWriteExecute=yes",
    ] {
        assert!(unit.contains(line), "{line:?} missing from the unit");
    }
    assert!(!unit.contains("WantedBy=default.target"));

    // systemd-analyze resolves the unit's dependencies and commands in the
    // root: give it the system's targets and kill(1), as a system has.
    for dir in ["lib/systemd/system", "bin", "var/lib/bayspace"] {
        std::fs::create_dir_all(root.join(dir)).unwrap();
    }
    for e in std::fs::read_dir("/lib/systemd/system").unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "target") {
            std::fs::copy(
                &p,
                root.join("lib/systemd/system").join(p.file_name().unwrap()),
            )
            .unwrap();
        }
    }
    std::fs::copy("/bin/kill", root.join("bin/kill")).unwrap();
    let o = Command::new("systemd-analyze")
        .arg("verify")
        .arg(format!("--root={}", root.display()))
        .arg("bayspace.service")
        .output()
        .unwrap();
    assert!(o.status.success(), "systemd-analyze verify: {}", text(&o));
    assert!(text(&o).trim().is_empty(), "warnings: {}", text(&o));

    // Exposure 1.2 ("OK") when this was written; fail if it gets worse
    // than 2.0.
    let o = Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--threshold=20"])
        .arg(format!("--root={}", root.display()))
        .arg("bayspace.service")
        .output()
        .unwrap();
    let report = text(&o);
    assert!(o.status.success(), "systemd-analyze security: {report}");
    assert!(
        report.contains("Overall exposure level for bayspace.service"),
        "{report}"
    );
    // A unit that is not hardened at all fails the same check.
    let loose = root.join("lib/systemd/system/loose.service");
    std::fs::write(
        &loose,
        "[Service]\nType=notify\nExecStart=/usr/bin/bayspace run --dir /var/lib/bayspace\n",
    )
    .unwrap();
    let o = Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--threshold=20"])
        .arg(format!("--root={}", root.display()))
        .arg("loose.service")
        .output()
        .unwrap();
    assert!(!o.status.success(), "{}", text(&o));
}

/// The node tells the notify socket READY=1 only once its API answers.
#[test]
fn readiness_is_sent_once_the_api_serves() {
    let space = Space::new();
    let (dir, _, _) = space.member("Notify University", None);
    let socket_path = space.tmp.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(40)))
        .unwrap();
    let log = std::fs::File::create(dir.join("node.log")).unwrap();
    let child = Command::new(bin())
        .args(["run", "--dir", &s(&dir)])
        .env("NOTIFY_SOCKET", &socket_path)
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let node = Node {
        dir: dir.clone(),
        child: Some(child),
    };
    let mut buf = [0u8; 256];
    let n = socket.recv(&mut buf).unwrap();
    let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(msg.contains("READY=1"), "{msg}");
    // Ready means the API answers now, without waiting.
    let st = node.try_status().expect("the API answers once ready");
    assert_eq!(st["institution"], "Notify University");
    assert!(node.log().contains("grpc serving on"));

    let start = Instant::now();
    let pid = node.child.as_ref().unwrap().id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let n = socket.recv(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).contains("STOPPING=1"));
    assert!(start.elapsed() < Duration::from_secs(40));
}

/// SIGHUP: a new revocation list in the node directory takes effect (the
/// revoked member is disconnected) and filing-holidays are re-read, with
/// the same process running throughout.
#[test]
fn sighup_reloads_revocations_and_holidays_without_a_restart() {
    let space = Space::new();
    let (a_dir, _, _) = space.member("alpha", None);
    let a = Node::start(&a_dir);
    let a_addr = a.tcp_addr();
    let (b_dir, b_peer, b_serial) = space.member("beta", Some(&a_addr));
    let b = Node::start(&b_dir);
    a.wait_for("beta admitted", |st| Node::admitted(st).contains(&b_peer));
    let pid = a.child.as_ref().unwrap().id();

    let config = a_dir.join("config.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    let text = text.replace(
        "filing-holidays = []",
        "filing-holidays = [\"2026-10-01\", \"2026-10-02\"]",
    );
    assert!(text.contains("2026-10-02"), "{text}");
    std::fs::write(&config, text).unwrap();
    ok(&[
        "authority",
        "revoke",
        "--dir",
        &s(&space.authority()),
        "--serial",
        &b_serial.to_string(),
        "--out",
        &s(&a_dir.join("revocations.json")),
    ]);
    let hup = |pid: u32| {
        assert!(
            Command::new("kill")
                .args(["-HUP", &pid.to_string()])
                .status()
                .unwrap()
                .success()
        )
    };
    hup(pid);
    a.wait_for("beta disconnected", |st| {
        !Node::admitted(st).contains(&b_peer)
    });
    a.wait_log("filing-holidays reloaded");
    assert!(a.log().contains(": 2 days"), "{}", a.log());
    assert!(a.log().contains("revocation list loaded from"));

    // A broken config on SIGHUP keeps the node running with what it had.
    let good = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, "not = [toml").unwrap();
    hup(pid);
    a.wait_log("filing-holidays not reloaded");
    // The CLI reads the address from the config: put it back to ask.
    std::fs::write(&config, good).unwrap();
    assert!(a.try_status().is_some(), "still serving");
    assert_eq!(a.child.as_ref().unwrap().id(), pid);
    drop(b);
}
