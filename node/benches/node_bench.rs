#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The figures that need real node processes (release build, `[::1]`):
//!
//! - start to serving: from spawning `bayspace run` until its gRPC `Status`
//!   answers (target: under 200 ms);
//! - idle resident memory, `VmRSS` after the node has settled (target:
//!   under 40 MiB);
//! - publish to searchable: ten nodes bootstrapped to the first, a dataset
//!   published on the first, until a `Search` on every other node finds it
//!   (target: p50 under 300 ms);
//! - negotiation: a Hong Kong node requests a Shenzhen node's dataset under
//!   an auto-approved offer; the `Request` RPC returns once the exchange has
//!   run to FINALIZED on both sides, every transition flushed (target: p50
//!   under 15 ms); then many requests at once for a fixed time (target: at
//!   least 300 negotiations per second).
//!
//! Nodes are driven through their gRPC API directly, so no client process
//! start-up is measured. Every node is killed when the run ends, a panic
//! included, and the temporary directories are removed.
//!
//! - transfer: a 1 GiB random file released by Shenzhen to Hong Kong
//!   (`TransferService.Fetch`, encrypted segments over libp2p on `[::1]`),
//!   the peak RSS of both nodes, and in the same run the same file copied
//!   with OpenSSH `scp -c chacha20-poly1305@openssh.com` to a throwaway
//!   `sshd` on `[::1]` (its own host and client keys, a free port, stopped
//!   afterwards); both throughputs and their ratio (target: at least 3×).
//!   Needs `sshd` and `scp` (Debian: `apt-get install openssh-server`).
//!
//! - download: the same 1 GiB, fetched once into Hong Kong's sealed store,
//!   then streamed to this process with `DataService.Download` over TLS
//!   (decrypted on the node as it streams; nothing written on its host);
//!   the throughput, and Hong Kong's resident memory sampled during the
//!   download (it should stay flat whatever the size).
//!
//! - flood: the negotiation p50 of a well-behaved member and the
//!   provider's RSS, without and then with a third member flooding the
//!   provider with malformed negotiation messages and release requests for
//!   agreements that do not exist, in the same run.
//!
//! Run: `cargo bench -p bayspace-node --bench node_bench [-- SECTION…]`
//! where a section is `start`, `propagation`, `negotiation`, `transfer`,
//! `download` or `flood` (the first three when none is named; `transfer`
//! writes 2 GiB to the temporary directory, `download` 2 GiB).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bayspace_connector::config::{ADMIN_TOKEN_FILE, CONFIG_FILE, NodeConfig};
use bayspace_tests::{Node, Space, proto};
use proto::catalog_service_client::CatalogServiceClient;
use proto::contract_service_client::ContractServiceClient;
use proto::data_service_client::DataServiceClient;
use proto::dataset_service_client::DatasetServiceClient;
use proto::node_service_client::NodeServiceClient;
use proto::transfer_service_client::TransferServiceClient;
use proto::{
    ContractRequest, DownloadRequest, FetchRequest, PublishRequest, SearchRequest, StatusRequest,
};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::{Request, Status};

const STARTS: usize = 10;
const NODES: usize = 10;
const PUBLISHES: usize = 20;
const POLL: Duration = Duration::from_millis(5);
const SETTLE: Duration = Duration::from_secs(2);
const TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Clone)]
struct Bearer(MetadataValue<Ascii>);

impl Interceptor for Bearer {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        req.metadata_mut().insert("authorization", self.0.clone());
        Ok(req)
    }
}

type Auth = InterceptedService<Channel, Bearer>;

/// Where a node directory's gRPC API is, and its administrator token.
struct Api {
    url: String,
    ca: Vec<u8>,
    bearer: Bearer,
}

impl Api {
    fn of(dir: &Path) -> Api {
        let config = NodeConfig::load(&dir.join(CONFIG_FILE)).unwrap();
        let token = std::fs::read_to_string(dir.join(ADMIN_TOKEN_FILE)).unwrap();
        Api {
            url: format!("https://{}", config.grpc),
            ca: std::fs::read(dir.join(&config.api_cert)).unwrap(),
            bearer: Bearer(format!("Bearer {}", token.trim()).parse().unwrap()),
        }
    }

    async fn try_connect(&self) -> Option<Auth> {
        let channel = Endpoint::from_shared(self.url.clone())
            .unwrap()
            .tls_config(
                ClientTlsConfig::new().ca_certificate(Certificate::from_pem(self.ca.clone())),
            )
            .unwrap()
            .connect_timeout(Duration::from_millis(500))
            .connect()
            .await
            .ok()?;
        Some(InterceptedService::new(channel, self.bearer.clone()))
    }

    async fn connect(&self) -> Auth {
        let start = Instant::now();
        loop {
            if let Some(c) = self.try_connect().await {
                return c;
            }
            assert!(start.elapsed() < TIMEOUT, "{} does not answer", self.url);
            tokio::time::sleep(POLL).await;
        }
    }
}

async fn status(c: &Auth) -> Option<proto::StatusResponse> {
    let mut client = NodeServiceClient::new(c.clone());
    Some(client.status(StatusRequest {}).await.ok()?.into_inner())
}

/// Spawn to the first answered `Status`.
async fn time_to_serving(api: &Api, dir: &Path) -> (Duration, Node) {
    let started = Instant::now();
    let node = Node::start(dir);
    loop {
        if let Some(c) = api.try_connect().await
            && status(&c).await.is_some()
        {
            return (started.elapsed(), node);
        }
        assert!(
            started.elapsed() < TIMEOUT,
            "node never served; log:\n{}",
            node.log()
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

fn rss_kib(node: &Node) -> u64 {
    proc_status_kib(node, "VmRSS:")
}

/// The peak resident set since the process started.
fn peak_rss_kib(node: &Node) -> u64 {
    proc_status_kib(node, "VmHWM:")
}

fn proc_status_kib(node: &Node, field: &str) -> u64 {
    let pid = node.child.as_ref().unwrap().id();
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn summary(what: &str, mut times: Vec<Duration>) {
    times.sort_unstable();
    println!(
        "{what}: n={} p50={:.1} ms p95={:.1} ms max={:.1} ms",
        times.len(),
        ms(percentile(&times, 0.50)),
        ms(percentile(&times, 0.95)),
        ms(times[times.len() - 1]),
    );
}

async fn start_and_idle(space: &Space) {
    let (dir, _, _) = space.member("bench-start", None);
    let api = Api::of(&dir);
    let mut times = Vec::new();
    for i in 0..STARTS {
        let (t, node) = time_to_serving(&api, &dir).await;
        times.push(t);
        if i + 1 < STARTS {
            node.terminate();
        } else {
            tokio::time::sleep(SETTLE).await;
            println!(
                "idle RSS of a lone node after {} s: {:.1} MiB",
                SETTLE.as_secs(),
                rss_kib(&node) as f64 / 1024.0
            );
        }
    }
    summary("start to serving (gRPC Status answers)", times);
}

/// The first time `Search` for `word` on `c` returns something.
async fn found_after(c: Auth, word: String, since: Instant) -> Duration {
    let mut client = CatalogServiceClient::new(c);
    loop {
        let r = client
            .search(SearchRequest {
                text: word.clone(),
                ..SearchRequest::default()
            })
            .await
            .unwrap()
            .into_inner();
        if !r.datasets.is_empty() {
            return since.elapsed();
        }
        assert!(
            since.elapsed() < TIMEOUT,
            "`{word}` never became searchable"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Publishes one dataset on `origin`; returns the time until each of
/// `others` finds it, and how long the publish call itself took.
async fn publish_once(
    origin: &Auth,
    others: &[Auth],
    file: &Path,
    k: usize,
) -> (Vec<Duration>, Duration) {
    let word = format!("probe{k:03}x");
    let since = Instant::now();
    DatasetServiceClient::new(origin.clone())
        .publish(PublishRequest {
            path: file.to_str().unwrap().to_owned(),
            title: format!("Benchmark {word}"),
            description: "Synthetic records for the propagation benchmark".into(),
            keywords: vec!["benchmark".into()],
            level: "general".into(),
            purposes: vec!["academic-research".into()],
            ..PublishRequest::default()
        })
        .await
        .unwrap();
    let call = since.elapsed();
    let waits: Vec<_> = others
        .iter()
        .map(|c| tokio::spawn(found_after(c.clone(), word.clone(), since)))
        .collect();
    let mut times = Vec::new();
    for w in waits {
        times.push(w.await.unwrap());
    }
    (times, call)
}

async fn propagation(space: &Space) {
    let (dir0, peer0, _) = space.member("bench-0", None);
    let mut nodes = vec![Node::start(&dir0)];
    let addr0 = nodes[0].tcp_addr();
    let mut peers = vec![peer0.clone()];
    for i in 1..NODES {
        let (dir, peer, _) = space.member(&format!("bench-{i}"), Some(&addr0));
        nodes.push(Node::start(&dir));
        peers.push(peer);
    }
    let mut clients = Vec::new();
    for n in &nodes {
        clients.push(Api::of(&n.dir).connect().await);
    }
    // Every node admits the first, and the first admits every node.
    let start = Instant::now();
    loop {
        let mut ready = true;
        for (i, c) in clients.iter().enumerate() {
            let admitted: Vec<String> = status(c)
                .await
                .map(|s| s.admitted_peers.into_iter().map(|p| p.peer_id).collect())
                .unwrap_or_default();
            ready &= if i == 0 {
                peers[1..].iter().all(|p| admitted.contains(p))
            } else {
                admitted.contains(&peer0)
            };
        }
        if ready {
            break;
        }
        assert!(
            start.elapsed() < TIMEOUT,
            "the nodes were not all admitted; log of node 0:\n{}",
            nodes[0].log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "{NODES} nodes admitted in {:.1} s",
        start.elapsed().as_secs_f64()
    );
    tokio::time::sleep(SETTLE).await;

    let file = space.tmp.path().join("bench.csv");
    std::fs::write(&file, "id,value\n1,2\n3,4\n").unwrap();
    // One unmeasured round lets the gossip mesh settle.
    publish_once(&clients[0], &clients[1..], &file, 0).await;
    let (mut all, mut each, mut calls) = (Vec::new(), Vec::new(), Vec::new());
    for k in 1..=PUBLISHES {
        let (times, call) = publish_once(&clients[0], &clients[1..], &file, k).await;
        all.push(times.iter().copied().max().unwrap());
        each.extend(times);
        calls.push(call);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    summary("publish RPC on node 0 (hash, sign, store, flush)", calls);
    summary(
        &format!("publish to searchable on all {} other nodes", NODES - 1),
        all,
    );
    summary("publish to searchable, per node", each);

    tokio::time::sleep(SETTLE).await;
    let rss: Vec<f64> = nodes.iter().map(|n| rss_kib(n) as f64 / 1024.0).collect();
    println!(
        "RSS in the {NODES}-node mesh after the run: node 0 {:.1} MiB, others {:.1}..{:.1} MiB",
        rss[0],
        rss[1..].iter().copied().fold(f64::INFINITY, f64::min),
        rss[1..].iter().copied().fold(0.0, f64::max),
    );
}

/// Negotiations measured one at a time, after the warm-up ones.
const NEGOTIATIONS: usize = 200;
const WARM_UP: usize = 20;
/// Requests in flight at once in the sustained run (the p2p layer's
/// per-peer bound on requests in flight), and its length.
const CONCURRENT: usize = 16;
const SUSTAINED: Duration = Duration::from_secs(10);

/// One negotiation, to FINALIZED on both sides. The request RPC usually
/// returns it finalized; when the first delivery had to wait (too many
/// requests in flight to the peer), the retry finishes it and the time
/// includes that. The provider finalizes before it tells the consumer, so
/// it is asked only afterwards, outside the time, unless it is not yet
/// FINALIZED then: the time runs until it is.
async fn negotiate(consumer: &Auth, provider: &Auth, dataset: &str) -> Duration {
    let since = Instant::now();
    let mut contracts = ContractServiceClient::new(consumer.clone());
    let mut n = contracts
        .request(ContractRequest {
            dataset_id: dataset.to_owned(),
            purpose: "academic-research".into(),
            offer_id: None,
        })
        .await
        .unwrap()
        .into_inner();
    while n.state != "FINALIZED" {
        assert_ne!(n.state, "TERMINATED", "refused: {:?}", n.reasons);
        assert!(since.elapsed() < TIMEOUT, "not finalized: {n:?}");
        tokio::time::sleep(POLL).await;
        n = contracts
            .show(proto::ShowNegotiationRequest { id: n.id.clone() })
            .await
            .unwrap()
            .into_inner();
    }
    let mut took = since.elapsed();
    let mut on_provider = ContractServiceClient::new(provider.clone());
    loop {
        let p = on_provider
            .show(proto::ShowNegotiationRequest { id: n.id.clone() })
            .await
            .unwrap()
            .into_inner();
        if p.state == "FINALIZED" {
            return took;
        }
        assert_ne!(p.state, "TERMINATED", "refused: {:?}", p.reasons);
        assert!(since.elapsed() < TIMEOUT, "not finalized: {p:?}");
        tokio::time::sleep(POLL).await;
        took = since.elapsed();
    }
}

/// A Shenzhen provider and a Hong Kong consumer bootstrapped to it, both
/// admitted; `file` published by the provider under an auto offer for
/// academic research in Hong Kong, and already in the consumer's catalog.
struct Pair {
    provider: Node,
    consumer: Node,
    p: Auth,
    c: Auth,
    dataset: String,
}

async fn pair_with_dataset(space: &Space, prefix: &str, file: &Path, title: &str) -> Pair {
    pair_with_security(space, prefix, file, title, "tls-first").await
}

/// Sets `p2p-security` in the node directory's config.
fn set_security(dir: &Path, security: &str) {
    let config = dir.join("config.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    let Some(line) = text.lines().find(|l| l.starts_with("p2p-security = ")) else {
        // A node from before the setting, measured A/B: it speaks Noise.
        assert_eq!(
            security, "tls-first",
            "this node binary has no p2p-security"
        );
        return;
    };
    let text = text.replace(line, &format!("p2p-security = \"{security}\""));
    std::fs::write(&config, text).unwrap();
}

/// [`pair_with_dataset`], both nodes offering `security` on TCP.
async fn pair_with_security(
    space: &Space,
    prefix: &str,
    file: &Path,
    title: &str,
    security: &str,
) -> Pair {
    let (dir_p, peer_p, _) = space.member_in(&format!("{prefix}sz"), "mainland:shenzhen", None);
    set_security(&dir_p, security);
    let provider = Node::start(&dir_p);
    // BENCH_QUIC=1 connects the pair over QUIC instead of TCP+Noise+Yamux.
    let bootstrap = if std::env::var_os("BENCH_QUIC").is_some() {
        provider.quic_addr()
    } else {
        provider.tcp_addr()
    };
    let (dir_c, _, _) = space.member_in(&format!("{prefix}hk"), "hk", Some(&bootstrap));
    set_security(&dir_c, security);
    let consumer = Node::start(&dir_c);
    let p = Api::of(&dir_p).connect().await;
    let c = Api::of(&dir_c).connect().await;
    let start = Instant::now();
    while !status(&c)
        .await
        .is_some_and(|s| s.admitted_peers.iter().any(|a| a.peer_id == peer_p))
    {
        assert!(
            start.elapsed() < TIMEOUT,
            "not admitted:\n{}",
            consumer.log()
        );
        tokio::time::sleep(POLL).await;
    }
    let dataset = DatasetServiceClient::new(p.clone())
        .publish(PublishRequest {
            path: file.to_str().unwrap().to_owned(),
            title: title.into(),
            level: "general".into(),
            purposes: vec!["academic-research".into()],
            recipient_regions: vec!["hk".into()],
            approval: "auto".into(),
            ..PublishRequest::default()
        })
        .await
        .unwrap()
        .into_inner()
        .id;
    let start = Instant::now();
    loop {
        let found = CatalogServiceClient::new(c.clone())
            .search(SearchRequest {
                text: title.to_lowercase(),
                ..SearchRequest::default()
            })
            .await
            .is_ok_and(|r| r.into_inner().datasets.iter().any(|d| d.id == dataset));
        if found {
            break;
        }
        assert!(
            start.elapsed() < TIMEOUT,
            "the dataset never reached the consumer"
        );
        tokio::time::sleep(POLL).await;
    }
    Pair {
        provider,
        consumer,
        p,
        c,
        dataset,
    }
}

async fn negotiation(space: &Space) {
    let file = space.tmp.path().join("negotiation.csv");
    std::fs::write(&file, "id,value\n1,2\n").unwrap();
    let Pair {
        provider,
        consumer,
        p,
        c,
        dataset,
    } = pair_with_dataset(space, "bench-", &file, "Negotiation benchmark").await;
    for _ in 0..WARM_UP {
        negotiate(&c, &p, &dataset).await;
    }
    let mut times = Vec::new();
    for _ in 0..NEGOTIATIONS {
        times.push(negotiate(&c, &p, &dataset).await);
    }
    summary(
        "negotiation, auto approval, request to FINALIZED on both sides",
        times,
    );

    let since = Instant::now();
    let workers: Vec<_> = (0..CONCURRENT)
        .map(|_| {
            let (c, p, dataset) = (c.clone(), p.clone(), dataset.clone());
            tokio::spawn(async move {
                let mut done = 0u64;
                while since.elapsed() < SUSTAINED {
                    negotiate(&c, &p, &dataset).await;
                    done += 1;
                }
                done
            })
        })
        .collect();
    let mut total = 0;
    for w in workers {
        total += w.await.unwrap();
    }
    let secs = since.elapsed().as_secs_f64();
    println!(
        "sustained negotiations, {CONCURRENT} in flight: {total} in {secs:.1} s = {:.0} per second",
        total as f64 / secs
    );
    println!(
        "RSS after the negotiation run: provider {:.1} MiB, consumer {:.1} MiB",
        rss_kib(&provider) as f64 / 1024.0,
        rss_kib(&consumer) as f64 / 1024.0
    );
}

const TRANSFER_BYTES: u64 = 1 << 30;

/// A file of `len` pseudo-random bytes (incompressible, not all zero).
fn random_file(path: &Path, len: u64) {
    use std::io::Write;
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15 ^ u64::from(std::process::id());
    let mut chunk = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        for word in chunk.chunks_exact_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            word.copy_from_slice(&x.to_le_bytes());
        }
        let n = left.min(chunk.len() as u64) as usize;
        f.write_all(&chunk[..n]).unwrap();
        left -= n as u64;
    }
    f.flush().unwrap();
}

fn mib_per_s(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / d.as_secs_f64() / f64::from(1 << 20)
}

/// A throwaway sshd on `[::1]` with its own host and client keys and a free
/// port, for the scp comparison; killed when dropped.
struct Sshd {
    dir: PathBuf,
    port: u16,
    client_key: PathBuf,
    server: std::process::Child,
}

fn run_ok(cmd: &mut std::process::Command) {
    let o = cmd.output().unwrap();
    assert!(
        o.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

impl Sshd {
    fn start(dir: &Path) -> Sshd {
        use std::process::{Command, Stdio};
        std::fs::create_dir_all(dir).unwrap();
        let (host_key, client_key) = (dir.join("host_ed25519"), dir.join("client_ed25519"));
        for k in [&host_key, &client_key] {
            run_ok(
                Command::new("ssh-keygen")
                    .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                    .arg(k),
            );
        }
        std::fs::copy(dir.join("client_ed25519.pub"), dir.join("authorized_keys")).unwrap();
        let port = bayspace_tests::free_port();
        let config = dir.join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "Port {port}\nListenAddress ::1\nHostKey {}\nAuthorizedKeysFile {}\n\
                 PermitRootLogin yes\nStrictModes no\nPasswordAuthentication no\n\
                 UsePAM no\nPidFile {}\nSubsystem sftp {}\n",
                host_key.display(),
                dir.join("authorized_keys").display(),
                dir.join("sshd.pid").display(),
                sftp_server().display()
            ),
        )
        .unwrap();
        // sshd wants its privilege-separation directory.
        std::fs::create_dir_all("/run/sshd").unwrap();
        let server = Command::new(which("sshd"))
            .args(["-D", "-e", "-f"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("sshd.log")).unwrap())
            .spawn()
            .unwrap();
        let started = Instant::now();
        while std::net::TcpStream::connect(("::1", port)).is_err() {
            assert!(started.elapsed() < TIMEOUT, "sshd did not start");
            std::thread::sleep(POLL);
        }
        Sshd {
            dir: dir.to_path_buf(),
            port,
            client_key,
            server,
        }
    }

    /// Copies `file` with scp; the time of the copy alone and the machine's
    /// busy CPU seconds during it. The copy is checked for size and removed.
    fn copy(&self, file: &Path) -> (Duration, f64) {
        let dest = self.dir.join("copy.bin");
        let user = std::env::var("USER").unwrap_or_else(|_| "root".into());
        let cpu_before = busy_cpu_seconds();
        let since = Instant::now();
        run_ok(
            std::process::Command::new("scp")
                .args([
                    "-q",
                    "-c",
                    "chacha20-poly1305@openssh.com",
                    "-P",
                    &self.port.to_string(),
                ])
                .args([
                    "-o",
                    "StrictHostKeyChecking=no",
                    "-o",
                    "UserKnownHostsFile=/dev/null",
                    "-i",
                ])
                .arg(&self.client_key)
                .arg(file)
                .arg(format!("{user}@[::1]:{}", dest.display())),
        );
        let took = since.elapsed();
        let cpu = busy_cpu_seconds() - cpu_before;
        assert_eq!(
            std::fs::metadata(&dest).unwrap().len(),
            std::fs::metadata(file).unwrap().len()
        );
        std::fs::remove_file(&dest).unwrap();
        (took, cpu)
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
        if let Ok(pid) = std::fs::read_to_string(self.dir.join("sshd.pid")) {
            let _ = std::process::Command::new("kill")
                .arg(pid.trim())
                .stderr(std::process::Stdio::null())
                .status();
        }
    }
}

/// scp speaks SFTP to the server by default.
fn sftp_server() -> PathBuf {
    [
        "/usr/lib/openssh/sftp-server",
        "/usr/libexec/openssh/sftp-server",
        "/usr/lib/ssh/sftp-server",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
    .expect("sftp-server not found: install openssh-server")
}

/// `sshd` lives in sbin, which may not be on PATH.
fn which(name: &str) -> PathBuf {
    for dir in ["/usr/sbin", "/usr/bin", "/sbin", "/usr/local/sbin"] {
        let p = Path::new(dir).join(name);
        if p.exists() {
            return p;
        }
    }
    panic!("{name} not found: install openssh-server");
}

/// Measured rounds of each copy, after one warm-up round of each.
fn transfer_rounds() -> usize {
    std::env::var("BENCH_TRANSFER_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3)
}

/// One negotiation and one fetch of its agreement on the consumer; the time
/// of the fetch call and the machine's busy CPU seconds during it (not
/// during the negotiation before it or the removal after). The fetched file
/// is checked for size and removed.
async fn fetch_once(c: &Auth, dataset: &str, out: &Path) -> (Duration, f64) {
    let mut contracts = ContractServiceClient::new(c.clone());
    let n = contracts
        .request(ContractRequest {
            dataset_id: dataset.to_owned(),
            purpose: "academic-research".into(),
            offer_id: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(n.state, "FINALIZED", "{n:?}");
    let cpu_before = busy_cpu_seconds();
    let since = Instant::now();
    let mut stream = TransferServiceClient::new(c.clone())
        .fetch(FetchRequest {
            agreement_id: n.agreement_id.clone(),
            // The administrator's export, inside the consumer's export-dir.
            out: out.to_str().unwrap().to_owned(),
            keep_sealed: false,
        })
        .await
        .unwrap()
        .into_inner();
    let mut done = None;
    while let Some(m) = stream.message().await.unwrap() {
        if m.done {
            done = Some(m);
        }
    }
    let took = since.elapsed();
    let cpu = busy_cpu_seconds() - cpu_before;
    let done = done.expect("the fetch ended without a result");
    assert_eq!(done.bytes_done, TRANSFER_BYTES);
    assert_eq!(std::fs::metadata(out).unwrap().len(), TRANSFER_BYTES);
    std::fs::remove_file(out).unwrap();
    (took, cpu)
}

/// CPU time the whole machine has spent busy (user, system, interrupts),
/// in seconds, from `/proc/stat` (USER_HZ is 100 on Linux). Around a copy,
/// the difference is what both of its ends cost, whatever their processes.
fn busy_cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap();
    let cpu: Vec<f64> = stat
        .lines()
        .next()
        .unwrap()
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().unwrap())
        .collect();
    // user nice system idle iowait irq softirq steal …
    (cpu[0] + cpu[1] + cpu[2] + cpu[5] + cpu[6]) / 100.0
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

async fn transfer(space: &Space) {
    let file = space.tmp.path().join("one-gib.bin");
    random_file(&file, TRANSFER_BYTES);
    // One pair per TCP security upgrade: TLS 1.3 (what two current nodes
    // negotiate) and Noise (what they fall back to, and what nodes used
    // before). With BENCH_QUIC=1 both pairs connect over QUIC instead.
    let tls = pair_with_security(space, "bench-tls-", &file, "Transfer benchmark", "tls").await;
    let noise =
        pair_with_security(space, "bench-noise-", &file, "Transfer benchmark", "noise").await;
    let sshd = Sshd::start(&space.tmp.path().join("sshd"));
    // Each fetch lands in its consumer's export-dir (an administrator's
    // export; researchers download to their own machines).
    let out_tls = tls.consumer.dir.join("exports").join("fetched.bin");
    let out_noise = noise.consumer.dir.join("exports").join("fetched.bin");
    // Rounds alternate between the copies so that all see the same state of
    // the shared machine. The first round of each is a warm-up and is not
    // counted: on a virtual machine the first write of a gibibyte into
    // page-cache memory the guest has never touched costs seconds of
    // hypervisor faults, and whichever copy ran first would pay them.
    let rounds = transfer_rounds();
    let mut rates: [Vec<f64>; 3] = Default::default();
    let mut cpus: [Vec<f64>; 3] = Default::default();
    for round in 0..=rounds {
        let (t, t_cpu) = fetch_once(&tls.c, &tls.dataset, &out_tls).await;
        let (n, n_cpu) = fetch_once(&noise.c, &noise.dataset, &out_noise).await;
        let (s, s_cpu) = sshd.copy(&file);
        let rate = |d: Duration| mib_per_s(TRANSFER_BYTES, d);
        let label = if round == 0 {
            "warm-up".to_owned()
        } else {
            format!("round {round}")
        };
        println!(
            "{label}: tls {:.0} MiB/s ({t_cpu:.1} CPU s), noise {:.0} MiB/s ({n_cpu:.1} CPU s), \
             scp {:.0} MiB/s ({s_cpu:.1} CPU s)",
            rate(t),
            rate(n),
            rate(s),
        );
        if round > 0 {
            for (i, (d, cpu)) in [(t, t_cpu), (n, n_cpu), (s, s_cpu)].into_iter().enumerate() {
                rates[i].push(rate(d));
                cpus[i].push(cpu);
            }
        }
    }
    drop(sshd);
    let [tls_rate, noise_rate, scp_rate] = rates.map(median);
    let [tls_cpu, noise_cpu, scp_cpu] = cpus.map(median);
    for (name, r, cpu) in [
        ("bayspace fetch over TLS", tls_rate, tls_cpu),
        ("bayspace fetch over Noise", noise_rate, noise_cpu),
    ] {
        println!(
            "{name}, 1 GiB over [::1], median of {rounds}: {r:.0} MiB/s ({:.2}x scp), \
             {cpu:.1} CPU s per GiB ({:.2}x scp's)",
            r / scp_rate,
            cpu / scp_cpu
        );
    }
    println!(
        "scp -c chacha20-poly1305@openssh.com of 1 GiB over [::1], median of {rounds}: \
         {scp_rate:.0} MiB/s, {scp_cpu:.1} CPU s per GiB (both ends)"
    );
    for (name, pair) in [("tls", &tls), ("noise", &noise)] {
        println!(
            "peak RSS during the run ({name} pair): provider {:.1} MiB, consumer {:.1} MiB",
            peak_rss_kib(&pair.provider) as f64 / 1024.0,
            peak_rss_kib(&pair.consumer) as f64 / 1024.0
        );
    }
}

/// One agreement fetched sealed into the consumer, then downloaded to this
/// process: the download's throughput, and the consumer's RSS sampled
/// while it streams.
async fn download(space: &Space) {
    let file = space.tmp.path().join("one-gib-dl.bin");
    random_file(&file, TRANSFER_BYTES);
    let expected = blake3::hash(&std::fs::read(&file).unwrap())
        .to_hex()
        .to_string();
    let Pair {
        provider,
        consumer,
        c,
        dataset,
        ..
    } = pair_with_dataset(space, "bench-dl-", &file, "Download benchmark").await;
    let n = ContractServiceClient::new(c.clone())
        .request(ContractRequest {
            dataset_id: dataset,
            purpose: "academic-research".into(),
            offer_id: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(n.state, "FINALIZED", "{n:?}");
    let mut fetch = TransferServiceClient::new(c.clone())
        .fetch(FetchRequest {
            agreement_id: n.agreement_id.clone(),
            out: String::new(),
            keep_sealed: true,
        })
        .await
        .unwrap()
        .into_inner();
    while fetch.message().await.unwrap().is_some() {}
    // The provider reads the file at release; after that it is not needed.
    drop(provider);
    std::fs::remove_file(&file).unwrap();
    let before = rss_kib(&consumer);
    let since = Instant::now();
    let mut stream = DataServiceClient::new(c.clone())
        .download(DownloadRequest {
            agreement_id: n.agreement_id.clone(),
            offset: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let mut hasher = blake3::Hasher::new();
    let (mut got, mut peak, mut last_sample) = (0u64, before, Instant::now());
    let mut last = None;
    while let Some(m) = stream.message().await.unwrap() {
        if m.done {
            last = Some(m);
            break;
        }
        hasher.update(&m.data);
        got += m.data.len() as u64;
        if last_sample.elapsed() >= Duration::from_millis(50) {
            peak = peak.max(rss_kib(&consumer));
            last_sample = Instant::now();
        }
    }
    let took = since.elapsed();
    let last = last.expect("the download ended without its final message");
    assert_eq!(got, TRANSFER_BYTES);
    assert_eq!(last.blake3, expected);
    assert_eq!(hasher.finalize().to_hex().as_str(), expected);
    println!(
        "download of 1 GiB over TLS on [::1] (decrypted on the node as it streams): \
         {:.2} s = {:.0} MiB/s",
        took.as_secs_f64(),
        mib_per_s(TRANSFER_BYTES, took)
    );
    println!(
        "consumer RSS: {:.1} MiB before, at most {:.1} MiB sampled during the download",
        before as f64 / 1024.0,
        peak as f64 / 1024.0
    );
}

/// Negotiations measured in each half of the flood comparison.
const FLOOD_NEGOTIATIONS: usize = 100;
/// Flooding tasks on negotiation messages (the flooder's own bound on
/// requests in flight per peer is 16, as the provider's) and on data
/// streams (the provider serves 4 per peer).
const FLOOD_CONTROL_TASKS: usize = 16;
const FLOOD_STREAM_TASKS: usize = 4;

/// The same well-behaved member's negotiations with the provider, without
/// and then with a third member flooding that provider with malformed
/// negotiation messages and release requests for agreements that do not
/// exist; its p50 and the provider's RSS in each case.
async fn flood(space: &Space) {
    use bayspace_connector::p2p::ControlRequest;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    let file = space.tmp.path().join("flood.csv");
    std::fs::write(&file, "id,value\n1,2\n").unwrap();
    let Pair {
        provider,
        consumer: _consumer,
        p,
        c,
        dataset,
    } = pair_with_dataset(space, "flood-", &file, "Flood benchmark").await;
    let measure = |label: &'static str| {
        let (c, p, dataset) = (c.clone(), p.clone(), dataset.clone());
        async move {
            let mut times = Vec::with_capacity(FLOOD_NEGOTIATIONS);
            for _ in 0..FLOOD_NEGOTIATIONS {
                times.push(negotiate(&c, &p, &dataset).await);
            }
            times.sort_unstable();
            let p50 = percentile(&times, 0.50);
            summary(label, times);
            p50
        }
    };
    for _ in 0..WARM_UP {
        negotiate(&c, &p, &dataset).await;
    }
    let quiet = measure("flood: well-behaved negotiation, no flood").await;
    let quiet_rss = rss_kib(&provider);

    let addr = provider.tcp_addr();
    let provider_peer = addr.rsplit('/').next().unwrap().to_owned();
    let (um_dir, _, _) = space.member_in("flood-um", "macao", None);
    let um = Arc::new(
        bayspace_tests::forger::Forger::connect(space, &um_dir, &provider_peer, &addr).await,
    );
    let peer: libp2p::PeerId = provider_peer.parse().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let (sent, streams) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut tasks = Vec::new();
    for i in 0..FLOOD_CONTROL_TASKS {
        let (um, stop, sent) = (um.clone(), stop.clone(), sent.clone());
        tasks.push(tokio::spawn(async move {
            // Not a negotiation message: refused after decoding, 4 KiB each.
            let junk = vec![0x80u8 | i as u8; 4096];
            while !stop.load(Ordering::Relaxed) {
                let _ = um
                    .client
                    .control_request(peer, ControlRequest(junk.clone()))
                    .await;
                sent.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for _ in 0..FLOOD_STREAM_TASKS {
        let (um, stop, streams, provider_peer) = (
            um.clone(),
            stop.clone(),
            streams.clone(),
            provider_peer.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let agreement = "urn:uuid:00000000-0000-4000-8000-000000000000";
            while !stop.load(Ordering::Relaxed) {
                let mut control = um.client.stream_control();
                let asked = control.open_stream(
                    provider_peer.parse().unwrap(),
                    bayspace_connector::p2p::protocol::DATA_PROTOCOL,
                );
                if let Ok(mut s) = asked.await {
                    let req = bayspace_tests::forger::request(agreement, "r-1");
                    if bayspace_connector::transfers::wire::write_frame(&mut s, &req)
                        .await
                        .is_ok()
                    {
                        let _ = bayspace_connector::transfers::wire::read_frame(&mut s).await;
                    }
                }
                streams.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    // Let the flood reach its rate before measuring.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let since = Instant::now();
    let (sent0, streams0) = (
        sent.load(Ordering::Relaxed),
        streams.load(Ordering::Relaxed),
    );
    let flooded = measure("flood: well-behaved negotiation, one member flooding").await;
    let secs = since.elapsed().as_secs_f64();
    let flood_rss = rss_kib(&provider);
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = tokio::time::timeout(TIMEOUT, t).await;
    }
    println!(
        "flood: {:.0} malformed negotiation messages/s and {:.0} bogus release requests/s from the flooder",
        (sent.load(Ordering::Relaxed) - sent0) as f64 / secs,
        (streams.load(Ordering::Relaxed) - streams0) as f64 / secs,
    );
    println!(
        "flood: p50 {:.1} ms without, {:.1} ms with ({:.2}x); provider RSS {:.1} MiB without, {:.1} MiB with, peak {:.1} MiB",
        ms(quiet),
        ms(flooded),
        flooded.as_secs_f64() / quiet.as_secs_f64(),
        quiet_rss as f64 / 1024.0,
        flood_rss as f64 / 1024.0,
        peak_rss_kib(&provider) as f64 / 1024.0,
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    bayspace_tests::use_bin(env!("CARGO_BIN_EXE_bayspace"));
    // rustls is built with two crypto providers here and needs telling.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let sections: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let wants = |s: &str| sections.is_empty() || sections.iter().any(|x| x == s);
    let space = Space::new();
    if wants("start") {
        start_and_idle(&space).await;
    }
    if wants("propagation") {
        propagation(&space).await;
    }
    if wants("negotiation") {
        negotiation(&space).await;
    }
    if sections.iter().any(|x| x == "transfer") {
        transfer(&space).await;
    }
    if sections.iter().any(|x| x == "download") {
        download(&space).await;
    }
    if sections.iter().any(|x| x == "flood") {
        flood(&space).await;
    }
}
