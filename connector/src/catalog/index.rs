//! The in-memory search index.
//!
//! One small [`Entry`] per dataset, in a `BTreeMap` ordered by dataset id,
//! rebuilt from the descriptor tree when the catalog opens. A search walks
//! the map from the cursor and stops after one page of matches, so its cost
//! is bounded by the number of entries it has to look at, and the per-entry
//! check allocates nothing: filters compare enums and short strings, and a
//! text query is answered by binary searches over the entry's sorted token
//! list. Text queries would still visit every entry when a word is rare (at
//! 100 000 datasets a word on none took ~130 ms), so [`Index`] also keeps a
//! word → ids map: a text query walks only the datasets holding some word
//! that starts with its rarest query word, found by a range scan over the
//! sorted words.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;

use bayspace_contracts::classification::{Category, DataLevel};
use bayspace_contracts::descriptor::{DatasetDescriptor, DatasetId};
use bayspace_contracts::region::Region;

/// What a search looks at for one dataset.
#[derive(Debug, Clone)]
pub(super) struct Entry {
    /// Lower-cased words of title, description and keywords; sorted and
    /// without repeats.
    tokens: Box<[Box<str>]>,
    publisher_name: Box<str>,
    pub(super) peer_id: Box<str>,
    region: Region,
    categories: Box<[Category]>,
    level: DataLevel,
    pub(super) withdrawn: bool,
}

impl Entry {
    pub(super) fn of(d: &DatasetDescriptor) -> Entry {
        let mut tokens = Vec::new();
        for text in [&d.title, &d.description]
            .into_iter()
            .chain(d.keywords.iter())
        {
            tokenize(text, |t| tokens.push(t.into_boxed_str()));
        }
        tokens.sort_unstable();
        tokens.dedup();
        Entry {
            tokens: tokens.into_boxed_slice(),
            publisher_name: d.publisher.name.to_lowercase().into_boxed_str(),
            peer_id: d.publisher.peer_id.clone().into_boxed_str(),
            region: d.region,
            categories: d.profile.categories.clone().into_boxed_slice(),
            level: d.profile.level,
            withdrawn: d.withdrawn,
        }
    }

    /// Whether some token starts with `word` (already lower-cased).
    fn has_prefix(&self, word: &str) -> bool {
        let i = self.tokens.partition_point(|t| &**t < word);
        self.tokens.get(i).is_some_and(|t| t.starts_with(word))
    }
}

/// The entries by id, the ids by word, and how many datasets each
/// publisher has here.
#[derive(Debug, Default)]
pub(super) struct Index {
    entries: BTreeMap<DatasetId, Entry>,
    words: BTreeMap<Box<str>, BTreeSet<DatasetId>>,
    /// Kept beside the entries so the per-publisher quota on every new
    /// dataset costs a lookup, not a walk of the whole catalog (which made
    /// filling a catalog quadratic: 100 000 descriptors took 17 minutes).
    per_publisher: BTreeMap<Box<str>, usize>,
}

impl Index {
    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(super) fn entries(&self) -> impl Iterator<Item = (&DatasetId, &Entry)> {
        self.entries.iter()
    }

    /// Datasets of the publisher with this PeerId, withdrawn ones
    /// included.
    pub(super) fn held_by(&self, peer_id: &str) -> usize {
        self.per_publisher.get(peer_id).copied().unwrap_or(0)
    }

    pub(super) fn insert(&mut self, id: DatasetId, entry: Entry) {
        self.remove(&id);
        for t in &entry.tokens {
            self.words.entry(t.clone()).or_default().insert(id.clone());
        }
        *self.per_publisher.entry(entry.peer_id.clone()).or_default() += 1;
        self.entries.insert(id, entry);
    }

    pub(super) fn remove(&mut self, id: &DatasetId) {
        let Some(old) = self.entries.remove(id) else {
            return;
        };
        if let Some(n) = self.per_publisher.get_mut(&old.peer_id) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_publisher.remove(&old.peer_id);
            }
        }
        for t in &old.tokens {
            if let Some(ids) = self.words.get_mut(t) {
                ids.remove(id);
                if ids.is_empty() {
                    self.words.remove(t);
                }
            }
        }
    }

    /// The ids of datasets holding a word that starts with `prefix`.
    fn with_prefix(&self, prefix: &str) -> BTreeSet<&DatasetId> {
        self.words
            .range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
            .take_while(|(w, _)| w.starts_with(prefix))
            .flat_map(|(_, ids)| ids.iter())
            .collect()
    }

    /// Up to `take` matching ids after the cursor, in id order.
    pub(super) fn search(
        &self,
        filter: &Filter,
        after: Option<&DatasetId>,
        take: usize,
    ) -> Vec<DatasetId> {
        let lower = after.map_or(Bound::Unbounded, Bound::Excluded);
        let matching = |id: &DatasetId| self.entries.get(id).is_some_and(|e| filter.matches(e));
        let rarest = filter
            .words
            .iter()
            .map(|w| self.with_prefix(w))
            .min_by_key(BTreeSet::len);
        match rarest {
            Some(candidates) => candidates
                .into_iter()
                .skip_while(|id| after.is_some_and(|a| *id <= a))
                .filter(|id| matching(id))
                .take(take)
                .cloned()
                .collect(),
            None => self
                .entries
                .range((lower, Bound::Unbounded))
                .filter(|(_, e)| filter.matches(e))
                .take(take)
                .map(|(id, _)| id.clone())
                .collect(),
        }
    }
}

/// A search query prepared once: words lower-cased, publisher lower-cased.
#[derive(Debug, Default)]
pub(super) struct Filter {
    pub(super) words: Vec<String>,
    /// As given (a peer id matches exactly) and lower-cased (a name
    /// matches whatever its case).
    pub(super) publisher: Option<(String, String)>,
    pub(super) region: Option<Region>,
    pub(super) category: Option<Category>,
    pub(super) level: Option<DataLevel>,
}

impl Filter {
    pub(super) fn matches(&self, e: &Entry) -> bool {
        !e.withdrawn
            && self.level.is_none_or(|l| l == e.level)
            && self.region.is_none_or(|r| r == e.region)
            && self
                .category
                .as_ref()
                .is_none_or(|c| e.categories.contains(c))
            && self
                .publisher
                .as_ref()
                .is_none_or(|(exact, lower)| **exact == *e.peer_id || **lower == *e.publisher_name)
            && self.words.iter().all(|w| e.has_prefix(w))
    }
}

/// Splits text into lower-cased words: runs of letters and digits, except
/// that each CJK character is a word of its own, since Chinese and Japanese
/// text has no spaces between words. A query for `深圳` thus matches text
/// holding both characters.
pub(super) fn tokenize(text: &str, mut out: impl FnMut(String)) {
    let mut word = String::new();
    for c in text.chars() {
        if is_cjk(c) {
            if !word.is_empty() {
                out(std::mem::take(&mut word));
            }
            out(c.to_string());
        } else if c.is_alphanumeric() {
            word.extend(c.to_lowercase());
        } else if !word.is_empty() {
            out(std::mem::take(&mut word));
        }
    }
    if !word.is_empty() {
        out(word);
    }
}

fn is_cjk(c: char) -> bool {
    matches!(u32::from(c),
        0x3040..=0x30ff      // kana
        | 0x3400..=0x4dbf    // CJK extension A
        | 0x4e00..=0x9fff    // CJK unified ideographs
        | 0xf900..=0xfaff    // compatibility ideographs
        | 0x20000..=0x2ffff) // extensions B and later
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        let mut v = vec![];
        tokenize(s, |w| v.push(w));
        v
    }

    fn entry(tokens: &[&str]) -> Entry {
        let mut t: Vec<Box<str>> = tokens.iter().map(|w| (*w).into()).collect();
        t.sort_unstable();
        Entry {
            tokens: t.into_boxed_slice(),
            publisher_name: "lab".into(),
            peer_id: "peer".into(),
            region: Region::HongKong,
            categories: Box::new([]),
            level: DataLevel::General,
            withdrawn: false,
        }
    }

    fn id(n: u8) -> DatasetId {
        format!("urn:bayspace:dataset:{}", format!("{n:02x}").repeat(32))
            .parse()
            .unwrap()
    }

    #[test]
    fn publishers_are_counted_through_replacements_and_removals() {
        let mut index = Index::default();
        let other = |e: Entry| Entry {
            peer_id: "other".into(),
            ..e
        };
        index.insert(id(1), entry(&["a"]));
        index.insert(id(2), entry(&["b"]));
        index.insert(id(3), other(entry(&["c"])));
        // A new version of a dataset replaces its entry: still one.
        index.insert(id(2), entry(&["b", "c"]));
        assert_eq!((index.held_by("peer"), index.held_by("other")), (2, 1));
        // A dataset that changes hands moves between the counts.
        index.insert(id(1), other(entry(&["a"])));
        assert_eq!((index.held_by("peer"), index.held_by("other")), (1, 2));
        index.remove(&id(2));
        index.remove(&id(2));
        assert_eq!((index.held_by("peer"), index.held_by("other")), (0, 2));
        assert!(
            !index.per_publisher.contains_key("peer"),
            "no empty counts kept"
        );
        assert_eq!(index.held_by("nobody"), 0);
    }

    fn text(q: &str) -> Filter {
        Filter {
            words: words(q),
            ..Filter::default()
        }
    }

    #[test]
    fn the_word_index_follows_inserts_supersedes_and_removals() {
        let mut ix = Index::default();
        ix.insert(id(1), entry(&["diabetes", "cohort"]));
        ix.insert(id(2), entry(&["air", "quality"]));
        ix.insert(id(3), entry(&["diabetic", "retina"]));
        assert_eq!(ix.search(&text("diab"), None, 10), vec![id(1), id(3)]);
        assert_eq!(ix.search(&text("diab cohort"), None, 10), vec![id(1)]);
        assert_eq!(ix.search(&text("diab"), Some(&id(1)), 10), vec![id(3)]);
        assert_eq!(ix.search(&text("diab"), None, 1), vec![id(1)]);
        assert!(ix.search(&text("nothing"), None, 10).is_empty());
        // A new version with other words leaves no trace of the old ones.
        ix.insert(id(1), entry(&["asthma"]));
        assert_eq!(ix.search(&text("diab"), None, 10), vec![id(3)]);
        assert_eq!(ix.search(&text("asthma"), None, 10), vec![id(1)]);
        ix.remove(&id(3));
        assert!(ix.search(&text("diab"), None, 10).is_empty());
        assert!(!ix.words.contains_key("diabetic"));
        assert_eq!(ix.search(&Filter::default(), None, 10), vec![id(1), id(2)]);
        assert_eq!(ix.len(), 2);
    }

    #[test]
    fn tokenizes_latin_and_cjk() {
        assert_eq!(
            words("Cohort-Study 2024, HK!"),
            ["cohort", "study", "2024", "hk"]
        );
        assert_eq!(words("深圳Cohort队列"), ["深", "圳", "cohort", "队", "列"]);
        assert_eq!(words("  ..  "), Vec::<String>::new());
        assert_eq!(words("ÉTUDE"), ["étude"]);
    }
}
