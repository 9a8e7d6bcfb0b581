//! One test suite for every [`Store`] backend: each case is a function of
//! a fresh store, and `backend_suite!` runs all of them against a backend.
//! A backend added later gets the same guarantees by one more macro call.

use serde::{Deserialize, Serialize};

use super::*;

const A: TreeName = TreeName::new("a");
const B: TreeName = TreeName::new("b");

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Rec {
    name: String,
    n: u64,
}

fn rec(name: &str, n: u64) -> Rec {
    Rec {
        name: name.to_owned(),
        n,
    }
}

fn raw_round_trip(store: &dyn Store) {
    let t = store.tree(A).unwrap();
    assert_eq!(t.name(), A);
    assert_eq!(t.get(b"k").unwrap(), None);
    assert_eq!(t.insert(b"k", b"v1").unwrap(), None);
    assert_eq!(t.insert(b"k", b"v2").unwrap(), Some(b"v1".to_vec()));
    assert_eq!(t.get(b"k").unwrap(), Some(b"v2".to_vec()));
    assert_eq!(t.len(), 1);
    assert_eq!(t.remove(b"k").unwrap(), Some(b"v2".to_vec()));
    assert_eq!(t.remove(b"k").unwrap(), None);
    assert!(t.is_empty());
    // Trees are separate namespaces.
    t.insert(b"k", b"in a").unwrap();
    assert_eq!(store.tree(B).unwrap().get(b"k").unwrap(), None);
    // A second handle on the same tree sees the same data.
    assert_eq!(
        store.tree(A).unwrap().get(b"k").unwrap(),
        Some(b"in a".to_vec())
    );
}

fn typed_round_trip_and_order(store: &dyn Store) {
    let t: TypedTree<u64, Rec> = TypedTree::open(store, A).unwrap();
    // Big-endian keys sort numerically, not lexically.
    for n in [300u64, 2, 70_000, 1] {
        t.insert(&n, &rec("x", n)).unwrap();
    }
    assert_eq!(t.get(&2).unwrap(), Some(rec("x", 2)));
    assert_eq!(t.get(&3).unwrap(), None);
    let keys: Vec<u64> = t
        .scan(&[], None, 10)
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(keys, [1, 2, 300, 70_000]);
    assert_eq!(t.last().unwrap().unwrap().0, 70_000);
    assert!(t.remove(&300).unwrap());
    assert!(!t.remove(&300).unwrap());
    assert_eq!(t.len(), 3);
}

fn prefix_scan_is_bounded_and_stays_in_prefix(store: &dyn Store) {
    let t: TypedTree<String, u64> = TypedTree::open(store, A).unwrap();
    for (i, k) in ["ds/1", "ds/2", "ds/3", "dt/1", "agr/1"].iter().enumerate() {
        t.insert(&(*k).to_owned(), &(i as u64)).unwrap();
    }
    let all: Vec<String> = t
        .scan(b"ds/", None, 100)
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(all, ["ds/1", "ds/2", "ds/3"]);
    assert_eq!(t.scan(b"ds/", None, 2).unwrap().len(), 2);
    assert!(t.scan(b"zz", None, 10).unwrap().is_empty());
    assert_eq!(t.scan(b"ds/", None, 0).unwrap().len(), 0);
    assert!(t.last().unwrap().is_some_and(|(k, _)| k == "dt/1"));
}

fn paging_visits_every_key_once(store: &dyn Store) {
    let t: TypedTree<String, u64> = TypedTree::open(store, A).unwrap();
    for i in 0..23u64 {
        t.insert(&format!("p/{i:03}"), &i).unwrap();
    }
    t.insert(&"q/000".to_owned(), &99).unwrap();
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = t.scan(b"p/", after.as_ref(), 5).unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 5);
        after = page.last().map(|(k, _)| k.clone());
        seen.extend(page.into_iter().map(|(_, v)| v));
    }
    assert_eq!(seen, (0..23).collect::<Vec<u64>>());
    // A cursor before the prefix starts at the prefix.
    let raw = store.tree(A).unwrap();
    assert_eq!(raw.scan(b"q/", Some(b"a"), 10).unwrap().len(), 1);
}

fn iter_crosses_pages_and_stays_in_prefix(store: &dyn Store) {
    let t: TypedTree<String, u64> = TypedTree::open(store, A).unwrap();
    // More than two of the iterator's pages, with neighbours on both sides.
    let n = 600u64;
    t.insert(&"a/0".to_owned(), &0).unwrap();
    for i in 0..n {
        t.insert(&format!("m/{i:04}"), &i).unwrap();
    }
    t.insert(&"z/0".to_owned(), &0).unwrap();
    let got: Vec<(String, u64)> = t.iter(b"m/").collect::<Result<_, _>>().unwrap();
    assert_eq!(got.len(), n as usize);
    assert!(
        got.iter()
            .enumerate()
            .all(|(i, (k, v))| *v == i as u64 && *k == format!("m/{i:04}"))
    );
    assert_eq!(t.values(b"").unwrap().len(), n as usize + 2);
    assert_eq!(t.iter(b"nothing").count(), 0);
}

fn iter_stops_at_a_bad_record(store: &dyn Store) {
    let raw = store.tree(B).unwrap();
    let t: TypedTree<u64, Rec> = TypedTree::open(store, B).unwrap();
    t.insert(&1, &rec("one", 1)).unwrap();
    raw.insert(&2u64.to_be_bytes(), b"not json").unwrap();
    t.insert(&3, &rec("three", 3)).unwrap();
    let items: Vec<_> = t.iter(&[]).collect();
    assert_eq!(
        items.len(),
        2,
        "one good record, then the error, then nothing"
    );
    assert!(items[0].as_ref().is_ok_and(|(k, _)| *k == 1));
    assert!(
        matches!(items[1], Err(StoreError::Decode { tree, ref key, .. }) if tree == B && key == "2")
    );
    assert!(t.values(&[]).is_err());
}

fn write_set_spans_trees_atomically(store: &dyn Store) {
    let a: TypedTree<String, Rec> = TypedTree::open(store, A).unwrap();
    let b: TypedTree<u64, Rec> = TypedTree::open(store, B).unwrap();
    b.insert(&7, &rec("old", 7)).unwrap();

    let mut ok = WriteSet::new();
    a.stage_insert(&mut ok, &"x".to_owned(), &rec("x", 1))
        .unwrap();
    b.stage_expect(&mut ok, &7, Some(&rec("old", 7))).unwrap();
    b.stage_insert(&mut ok, &7, &rec("new", 7)).unwrap();
    b.stage_remove(&mut ok, &8);
    store.apply(&ok).unwrap();
    assert_eq!(a.get(&"x".to_owned()).unwrap(), Some(rec("x", 1)));
    assert_eq!(b.get(&7).unwrap(), Some(rec("new", 7)));

    // The failing expectation comes after writes to both trees: neither
    // write may survive.
    let mut bad = WriteSet::new();
    a.stage_insert(&mut bad, &"y".to_owned(), &rec("y", 2))
        .unwrap();
    b.stage_insert(&mut bad, &9, &rec("nine", 9)).unwrap();
    b.stage_expect(&mut bad, &7, Some(&rec("old", 7))).unwrap();
    let err = store.apply(&bad).unwrap_err();
    match &err {
        StoreError::Conflict { tree, key } => {
            assert_eq!(*tree, B);
            assert_eq!(key, "0x0000000000000007");
        }
        other => panic!("expected a conflict, got {other}"),
    }
    assert_eq!(a.get(&"y".to_owned()).unwrap(), None);
    assert_eq!(b.get(&9).unwrap(), None);
    assert_eq!(b.get(&7).unwrap(), Some(rec("new", 7)));

    // Expecting absence.
    let mut absent = WriteSet::new();
    b.stage_expect(&mut absent, &7, None).unwrap();
    assert!(matches!(
        store.apply(&absent),
        Err(StoreError::Conflict { .. })
    ));
    store.apply(&WriteSet::new()).unwrap();
}

fn a_write_set_sees_its_own_earlier_writes(store: &dyn Store) {
    let t = store.tree(A).unwrap();
    let mut ws = WriteSet::new();
    ws.insert(A, b"k".to_vec(), b"1".to_vec());
    ws.expect(A, b"k".to_vec(), Some(b"1".to_vec()));
    ws.remove(A, b"k".to_vec());
    ws.expect(A, b"k".to_vec(), None);
    ws.insert(A, b"j".to_vec(), b"2".to_vec());
    store.apply(&ws).unwrap();
    assert_eq!(t.get(b"k").unwrap(), None);
    assert_eq!(t.get(b"j").unwrap(), Some(b"2".to_vec()));
}

fn compare_and_swap_refuses_a_stale_expectation(store: &dyn Store) {
    let t = store.tree(A).unwrap();
    t.compare_and_swap(b"k", None, Some(b"1")).unwrap();
    let err = t.compare_and_swap(b"k", None, Some(b"2")).unwrap_err();
    assert!(matches!(err, StoreError::Conflict { tree, .. } if tree == A));
    assert_eq!(t.get(b"k").unwrap(), Some(b"1".to_vec()));
    t.compare_and_swap(b"k", Some(b"1"), Some(b"2")).unwrap();
    t.compare_and_swap(b"k", Some(b"2"), None).unwrap();
    assert_eq!(t.get(b"k").unwrap(), None);
}

fn decoding_errors_name_the_tree_and_key(store: &dyn Store) {
    let raw = store.tree(B).unwrap();
    raw.insert(&5u64.to_be_bytes(), b"{\"name\": 3}").unwrap();
    let t: TypedTree<u64, Rec> = TypedTree::open(store, B).unwrap();
    let err = t.get(&5).unwrap_err();
    assert!(matches!(err, StoreError::Decode { tree, ref key, .. } if tree == B && key == "5"));
    let msg = err.to_string();
    assert!(msg.contains("tree `b`") && msg.contains("key 5"), "{msg}");

    raw.insert(b"abc", b"{}").unwrap();
    let err = t.last().unwrap_err();
    assert!(
        matches!(err, StoreError::BadKey { tree, ref key, .. } if tree == B && key == "0x616263"),
        "{err}"
    );
}

/// Runs every case above against the backend that `$new` makes.
macro_rules! backend_suite {
    ($backend:ident, $new:expr, [$($case:ident),* $(,)?]) => {
        mod $backend {
            $(
                #[test]
                fn $case() {
                    let store = $new;
                    super::$case(&store);
                }
            )*
        }
    };
}

macro_rules! every_backend {
    ($($backend:ident => $new:expr),* $(,)?) => {
        $(
            backend_suite!($backend, $new, [
                raw_round_trip,
                typed_round_trip_and_order,
                prefix_scan_is_bounded_and_stays_in_prefix,
                paging_visits_every_key_once,
                iter_crosses_pages_and_stays_in_prefix,
                iter_stops_at_a_bad_record,
                write_set_spans_trees_atomically,
                a_write_set_sees_its_own_earlier_writes,
                compare_and_swap_refuses_a_stale_expectation,
                decoding_errors_name_the_tree_and_key,
            ]);
        )*
    };
}

every_backend! {
    sled => crate::store::SledStore::temporary().unwrap(),
    memory => crate::store::MemStore::new(),
}
