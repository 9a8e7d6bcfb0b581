//! The in-memory search index.
//!
//! One small [`Entry`] per dataset, in a `BTreeMap` ordered by dataset id,
//! rebuilt from the descriptor tree when the catalog opens. A search walks
//! the map from the cursor and stops after one page of matches, so its cost
//! is bounded by the number of entries it has to look at, and the per-entry
//! check allocates nothing: filters compare enums and short strings, and a
//! text query is answered by binary searches over the entry's sorted token
//! list. Filters on region, level and publisher stay within the 5 ms p99
//! target at 100 000 datasets, but text queries do not (docs/BENCHMARKS.md:
//! p99 9 ms for a word on 1 % of datasets, ~130 ms for a word on none,
//! because every entry is visited). The fix is a word → ids inverted index
//! maintained beside this map on ingest, supersede, withdrawal and removal.

use bayspace_contracts::classification::{Category, DataLevel};
use bayspace_contracts::descriptor::DatasetDescriptor;
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
