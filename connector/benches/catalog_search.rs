#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Catalog search latency at 100 000 descriptors (target: p99 under 5 ms),
//! with 10 000 as the baseline in the same run.
//!
//! The catalogs are filled through [`Catalog::ingest`], as descriptors from
//! the network are, so the search index is exactly what a node holds.
//! Criterion reports mean and median; a plain loop afterwards records
//! [`SAMPLES`] latencies per query and prints p50/p99/max, the figure the
//! target is about.
//!
//! Run: `cargo bench -p bayspace-connector --bench catalog_search`

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bayspace_connector::catalog::{Catalog, SearchQuery};
use bayspace_connector::identity::NodeKey;
use bayspace_connector::store::SledStore;
use bayspace_contracts::classification::{DataLevel, DataProfile};
use bayspace_contracts::descriptor::{
    ApprovalMode, DatasetDescriptor, DatasetId, Digest, Institution, Offer, OfferId, PublicKey,
    SignedDescriptor,
};
use bayspace_contracts::policy::{Policy, RegionSet};
use bayspace_contracts::region::Region;
use criterion::{BenchmarkId, Criterion};
use time::OffsetDateTime;
use time::macros::datetime;

const NOW: OffsetDateTime = datetime!(2026-03-01 09:00 +8);
const SIZES: [usize; 2] = [10_000, 100_000];
const SAMPLES: usize = 10_000;
/// The percentile loop of one query stops early after this long, so that a
/// slow query does not hold the run for minutes.
const SAMPLE_BUDGET: Duration = Duration::from_secs(15);
/// One descriptor in this many carries the rare keyword.
const RARE_EVERY: usize = 100;
const RARE: &str = "mangrove";
const PUBLISHERS: usize = 10;
const REGIONS: [&str; 5] = [
    "hk",
    "macao",
    "mainland:shenzhen",
    "mainland:guangzhou",
    "mainland:zhuhai",
];
/// Ordinary words; none is a prefix of [`RARE`] or of `zzz`.
const WORDS: [&str; 32] = [
    "air", "quality", "cohort", "diabetes", "genome", "panel", "traffic", "port", "shipping",
    "rainfall", "typhoon", "clinical", "trial", "survey", "census", "energy", "grid", "water",
    "ocean", "coastal", "urban", "housing", "school", "income", "tourism", "hospital", "imaging",
    "retail", "finance", "customs", "ferry", "bridge",
];

/// A small deterministic generator, so that every run indexes the same data.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
        from[(self.next() % from.len() as u64) as usize]
    }
}

struct Publisher {
    key: NodeKey,
    institution: Institution,
}

fn publishers() -> Vec<Publisher> {
    (0..PUBLISHERS)
        .map(|i| {
            let key = NodeKey::from_seed([i as u8 + 1; 32]).unwrap();
            let institution = Institution {
                name: format!("Institute {i}"),
                region: REGIONS[i % REGIONS.len()].parse().unwrap(),
                peer_id: key.peer_id().to_string(),
                key: PublicKey::from(&key.verifying_key()),
            };
            Publisher { key, institution }
        })
        .collect()
}

fn descriptor(i: usize, p: &Publisher, rng: &mut SplitMix) -> SignedDescriptor {
    let name = format!("ds-{i:06}");
    let mut keywords = vec![rng.pick(&WORDS).to_owned(), rng.pick(&WORDS).to_owned()];
    if i.is_multiple_of(RARE_EVERY) {
        keywords.push(RARE.to_owned());
    }
    let level = [DataLevel::General, DataLevel::Important, DataLevel::Core][i % 3];
    let region: Region = rng.pick(&REGIONS).parse().unwrap();
    let d = DatasetDescriptor {
        id: DatasetId::derive(&p.institution.key, &name),
        name,
        version: 1,
        title: format!(
            "{} {} {} {}",
            rng.pick(&WORDS),
            rng.pick(&WORDS),
            rng.pick(&WORDS),
            2000 + rng.next() % 27
        ),
        description: format!("Anonymised {} records, study {i}", rng.pick(&WORDS)),
        keywords,
        publisher: p.institution.clone(),
        region,
        profile: DataProfile {
            level,
            personal_individuals: rng.next() % 10_000,
            sensitive_individuals: 0,
            categories: vec![],
            collected_abroad: false,
        },
        content_hash: Digest(*blake3::hash(&i.to_le_bytes()).as_bytes()),
        size: 1024 + rng.next() % 1_000_000,
        offers: vec![Offer {
            id: OfferId::from_random((i as u128).to_le_bytes()),
            policy: Policy::offer(vec!["academic-research".parse().unwrap()])
                .recipients(RegionSet::GbaOnly)
                .build()
                .unwrap(),
            approval: ApprovalMode::Manual,
        }],
        issued: NOW,
        withdrawn: false,
    };
    SignedDescriptor::sign(d, p.key.signing_key()).unwrap()
}

/// How many of the descriptors generated should match each query of
/// [`queries`], tallied as they are made.
#[derive(Default)]
struct Expected {
    rare: usize,
    macao_core: usize,
    institute_7: usize,
}

impl Expected {
    fn of(&self, query: &str) -> usize {
        match query {
            "text-1pct" => self.rare,
            "text-none" => 0,
            "region-level" => self.macao_core,
            "publisher" => self.institute_7,
            other => panic!("no expected count for query {other}"),
        }
    }
}

/// A catalog in a temporary sled store holding `n` descriptors, and how
/// many of them each query should find.
fn build(n: usize, publishers: &[Publisher]) -> (Catalog, Expected) {
    let started = Instant::now();
    let catalog = Catalog::open(Arc::new(SledStore::temporary().unwrap())).unwrap();
    let mut rng = SplitMix(n as u64);
    let mut expected = Expected::default();
    for i in 0..n {
        let s = descriptor(i, &publishers[i % publishers.len()], &mut rng);
        let d = &s.descriptor;
        expected.rare += usize::from(d.keywords.iter().any(|k| k == RARE));
        expected.macao_core += usize::from(
            d.region == "macao".parse::<Region>().unwrap() && d.profile.level == DataLevel::Core,
        );
        expected.institute_7 += usize::from(d.publisher.name == "Institute 7");
        catalog.ingest(s, |_| true, NOW).unwrap();
    }
    assert_eq!(catalog.len(), n);
    eprintln!(
        "built a catalog of {n} descriptors in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    (catalog, expected)
}

fn queries() -> Vec<(&'static str, SearchQuery)> {
    vec![
        (
            "text-1pct",
            SearchQuery {
                text: Some(RARE.into()),
                ..SearchQuery::default()
            },
        ),
        (
            "text-none",
            SearchQuery {
                text: Some("zzz".into()),
                ..SearchQuery::default()
            },
        ),
        (
            "region-level",
            SearchQuery {
                region: Some("macao".parse().unwrap()),
                level: Some(DataLevel::Core),
                ..SearchQuery::default()
            },
        ),
        (
            "publisher",
            SearchQuery {
                publisher: Some("institute 7".into()),
                ..SearchQuery::default()
            },
        ),
    ]
}

/// Every match of a query, by paging to the end.
fn count(catalog: &Catalog, q: &SearchQuery) -> usize {
    let mut q = SearchQuery {
        limit: Some(500),
        ..q.clone()
    };
    let mut n = 0;
    loop {
        let page = catalog.search(&q).unwrap();
        n += page.items.len();
        match page.next {
            Some(next) => q.after = Some(next),
            None => return n,
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() {
    let publishers = publishers();
    let built: Vec<(usize, Catalog, Expected)> = SIZES
        .iter()
        .map(|&n| {
            let (catalog, expected) = build(n, &publishers);
            (n, catalog, expected)
        })
        .collect();
    let queries = queries();
    // A query that finds the wrong datasets would be timed for nothing.
    for (n, catalog, expected) in &built {
        for (name, q) in &queries {
            let page = catalog.search(q).unwrap().items.len();
            let found = count(catalog, q);
            eprintln!("{n} descriptors, {name}: {found} matches, first page {page}");
            assert_eq!(found, expected.of(name), "{n} descriptors, {name}");
            if found > 0 {
                assert!(page > 0, "{n} descriptors, {name}: an empty first page");
            }
        }
    }
    let catalogs: Vec<(usize, Catalog)> = built.into_iter().map(|(n, c, _)| (n, c)).collect();

    let mut c = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    let mut group = c.benchmark_group("catalog_search");
    for (n, catalog) in &catalogs {
        for (name, q) in &queries {
            group.bench_with_input(BenchmarkId::new(*name, n), q, |b, q| {
                b.iter(|| black_box(catalog.search(black_box(q)).unwrap()));
            });
        }
    }
    group.finish();
    c.final_summary();

    println!("\nper-query latency, up to {SAMPLES} runs each (ms)");
    println!(
        "{:>8} {:<13} {:>6} {:>7} {:>7} {:>7}",
        "datasets", "query", "runs", "p50", "p99", "max"
    );
    for (n, catalog) in &catalogs {
        for (name, q) in &queries {
            let started = Instant::now();
            let mut times = Vec::with_capacity(SAMPLES);
            while times.len() < SAMPLES && started.elapsed() < SAMPLE_BUDGET {
                let t = Instant::now();
                black_box(catalog.search(black_box(q)).unwrap());
                times.push(t.elapsed());
            }
            times.sort_unstable();
            println!(
                "{n:>8} {name:<13} {:>6} {:>7.3} {:>7.3} {:>7.3}",
                times.len(),
                ms(percentile(&times, 0.50)),
                ms(percentile(&times, 0.99)),
                ms(times[times.len() - 1]),
            );
        }
    }
}
