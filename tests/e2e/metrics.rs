#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Prometheus metrics scraped from real node processes: the counters and
//! gauges move with a negotiation, a release and a pending request, and
//! their labels come from closed sets.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;

use bayspace_tests::pair::*;
use bayspace_tests::*;

/// Turns metrics on in a node directory; returns the address.
fn enable_metrics(dir: &Path) -> String {
    let addr = format!("[::1]:{}", free_port());
    let config = dir.join("config.toml");
    let mut text = std::fs::read_to_string(&config).unwrap();
    assert!(text.contains("# metrics = "), "init documents the key");
    text.push_str(&format!("metrics = \"{addr}\"\n"));
    std::fs::write(&config, text).unwrap();
    std::fs::write(dir.join("metrics.addr"), &addr).unwrap();
    addr
}

fn metrics_addr(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("metrics.addr")).unwrap()
}

/// One plain HTTP/1.1 request; returns (status line, body).
fn http_get(addr: &str, path: &str) -> (String, String) {
    let mut conn = TcpStream::connect(addr).unwrap();
    write!(
        conn,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    conn.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    (head.lines().next().unwrap().to_owned(), body.to_owned())
}

fn scrape(node: &Node) -> String {
    let (status, body) = http_get(&metrics_addr(&node.dir), "/metrics");
    assert!(status.contains("200"), "{status}\n{body}");
    body
}

/// The value of the sample `series` (name and labels exactly as printed).
fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

#[test]
fn counters_move_after_a_negotiation_and_a_release() {
    let p = Pair::start_with(false, |dir| {
        enable_metrics(dir);
    });
    let before = scrape(&p.sz);
    assert!(
        before.contains("bayspace_build_info{version=\""),
        "{before}"
    );
    assert_eq!(value(&before, "bayspace_admitted_peers"), 1.0, "{before}");
    assert_eq!(
        value(
            &before,
            "bayspace_negotiations{role=\"provider\",state=\"FINALIZED\"}"
        ),
        0.0
    );
    let audit_before = value(&before, "bayspace_audit_entries");
    assert!(
        value(&before, "bayspace_store_size_bytes") > 0.0,
        "{before}"
    );

    let bytes: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let agreement = p.agree_on("metered", &bytes, &[]);
    let out = p.space.tmp.path().join("metered.bin");
    let o = p.researcher(&["transfer", "fetch", &agreement, "--out", &s(&out)]);
    assert!(o.status.success(), "{}", text(&o));

    let after = scrape(&p.sz);
    assert_eq!(
        value(
            &after,
            "bayspace_negotiations{role=\"provider\",state=\"FINALIZED\"}"
        ),
        1.0,
        "{after}"
    );
    assert_eq!(
        value(
            &after,
            "bayspace_releases_total{outcome=\"completed\",reason=\"none\"}"
        ),
        1.0,
        "{after}"
    );
    assert!(value(&after, "bayspace_released_bytes_total") >= bytes.len() as f64);
    assert_eq!(
        value(
            &after,
            "bayspace_transfer_duration_seconds_count{role=\"provider\"}"
        ),
        1.0
    );
    assert!(value(&after, "bayspace_audit_entries") > audit_before);
    assert!(
        value(
            &after,
            "bayspace_grpc_requests_total{method=\"/bayspace.v1.DatasetService/Publish\",code=\"OK\"}"
        ) >= 1.0,
        "{after}"
    );
    assert!(
        after.contains("bayspace_grpc_request_duration_seconds_count{method=\"/bayspace.v1.DatasetService/Publish\"}"),
        "{after}"
    );

    let consumer = scrape(&p.hk);
    assert_eq!(
        value(
            &consumer,
            "bayspace_negotiations{role=\"consumer\",state=\"FINALIZED\"}"
        ),
        1.0,
        "{consumer}"
    );
    assert!(value(&consumer, "bayspace_received_bytes_total") >= bytes.len() as f64);
    // The researcher's calls: counted by method, never by who made them.
    assert!(
        value(
            &consumer,
            "bayspace_grpc_requests_total{method=\"/bayspace.v1.ContractService/Request\",code=\"OK\"}"
        ) >= 1.0,
        "{consumer}"
    );
    assert!(!consumer.contains("Chan Tai Man") && !consumer.contains("metered"));

    // A request waiting for the administrator.
    let dataset = p.publish(
        "Waiting cohort",
        &["--personal", "0", "--recipient-region", "hk"],
    );
    let (id, _) = p.request(&dataset, "academic-research");
    p.wait_pending(&id);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let waiting = scrape(&p.sz);
    assert_eq!(
        value(&waiting, "bayspace_pending_approvals"),
        1.0,
        "{waiting}"
    );
    assert!(value(&waiting, "bayspace_oldest_pending_approval_age_seconds") >= 1.0);

    // A call with an unknown token is counted by its code.
    let o = std::process::Command::new(bin())
        .args([
            "status",
            "--node",
            &grpc_url(&p.sz.dir),
            "--ca",
            &api_ca(&p.sz.dir),
        ])
        .env("BAYSPACE_TOKEN", "not-a-token")
        .output()
        .unwrap();
    assert!(!o.status.success());
    let refused = scrape(&p.sz);
    assert!(refused.contains("code=\"UNAUTHENTICATED\""), "{refused}");

    let (status, _) = http_get(&metrics_addr(&p.sz.dir), "/elsewhere");
    assert!(status.contains("404"), "{status}");

    // The example dashboard and alert rules use only names the node serves.
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/grafana");
    for file in ["bayspace-node.json", "alerts.yml"] {
        let text = std::fs::read_to_string(examples.join(file)).unwrap();
        let mut names = 0;
        for (i, _) in text.match_indices("bayspace_") {
            let name: String = text[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            let family = ["_bucket", "_count", "_sum", "_total", "_info"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix))
                .unwrap_or(&name);
            assert!(
                refused.contains(&format!("# TYPE {family} ")),
                "{file} uses {name}, which the node does not serve"
            );
            names += 1;
        }
        assert!(names >= 4, "{file}");
    }
}
