//! The console's languages: every word it shows comes from a Fluent
//! catalogue in `node/locales/`, compiled into the binary so that an
//! offline campus network needs nothing else.

use fluent_bundle::concurrent::FluentBundle;
use fluent_bundle::{FluentArgs, FluentResource, FluentValue};
use time::{OffsetDateTime, UtcOffset};

/// Asia/Shanghai: UTC+8, without daylight saving since 1991.
pub const GBA: UtcOffset = time::macros::offset!(+8);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    En,
    ZhHans,
    ZhHant,
}

impl Lang {
    pub const ALL: [Lang; 3] = [Lang::En, Lang::ZhHans, Lang::ZhHant];

    /// The BCP 47 tag, as `<html lang>` and the language cookie carry it.
    pub fn code(self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::ZhHans => "zh-Hans",
            Lang::ZhHant => "zh-Hant",
        }
    }

    pub fn from_code(code: &str) -> Option<Lang> {
        Lang::ALL
            .into_iter()
            .find(|l| l.code().eq_ignore_ascii_case(code.trim()))
    }

    /// The language a tag from `Accept-Language` asks for, if we have it:
    /// Chinese written in Taiwan, Hong Kong or Macao, or tagged Hant, is
    /// Traditional; other Chinese is Simplified.
    fn from_tag(tag: &str) -> Option<Lang> {
        let tag = tag.trim().to_ascii_lowercase();
        let mut parts = tag.split(['-', '_']);
        match parts.next()? {
            "en" => Some(Lang::En),
            "zh" => {
                let rest: Vec<&str> = parts.collect();
                let traditional = rest
                    .iter()
                    .any(|p| matches!(*p, "hant" | "tw" | "hk" | "mo"))
                    && !rest.contains(&"hans");
                Some(if traditional {
                    Lang::ZhHant
                } else {
                    Lang::ZhHans
                })
            }
            _ => None,
        }
    }

    /// The best of ours for an `Accept-Language` header; English when it
    /// names none of them.
    pub fn negotiate(accept: &str) -> Lang {
        let mut wanted: Vec<(f32, usize, Lang)> = accept
            .split(',')
            .enumerate()
            .filter_map(|(i, item)| {
                let mut fields = item.split(';');
                let lang = Lang::from_tag(fields.next()?)?;
                let q = fields
                    .find_map(|f| f.trim().strip_prefix("q="))
                    .map_or(Some(1.0), |q| q.trim().parse::<f32>().ok())?;
                (q > 0.0).then_some((q, i, lang))
            })
            .collect();
        // Highest quality first; among equals, the order given.
        wanted.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        wanted.first().map_or(Lang::En, |w| w.2)
    }
}

const SOURCES: [(Lang, &str); 3] = [
    (Lang::En, include_str!("../../locales/en.ftl")),
    (Lang::ZhHans, include_str!("../../locales/zh-Hans.ftl")),
    (Lang::ZhHant, include_str!("../../locales/zh-Hant.ftl")),
];

#[derive(Debug, thiserror::Error)]
pub enum I18nError {
    #[error("the {lang} message catalogue does not parse: {reason}")]
    Parse { lang: &'static str, reason: String },
    #[error("the {lang} message catalogue defines a message twice: {reason}")]
    Duplicate { lang: &'static str, reason: String },
}

/// The three catalogues, loaded once.
pub struct Catalogues {
    bundles: Vec<(Lang, FluentBundle<FluentResource>)>,
}

impl Catalogues {
    pub fn load() -> Result<Catalogues, I18nError> {
        let mut bundles = Vec::new();
        for (lang, source) in SOURCES {
            let resource = FluentResource::try_new(source.to_owned()).map_err(|(_, errors)| {
                I18nError::Parse {
                    lang: lang.code(),
                    reason: format!("{errors:?}"),
                }
            })?;
            let id: unic_langid::LanguageIdentifier =
                lang.code().parse().map_err(|e| I18nError::Parse {
                    lang: lang.code(),
                    reason: format!("{e}"),
                })?;
            let mut bundle = FluentBundle::new_concurrent(vec![id]);
            // The HTML is escaped by the template; Unicode isolation marks
            // would only show up as stray characters in form values.
            bundle.set_use_isolating(false);
            bundle
                .add_resource(resource)
                .map_err(|errors| I18nError::Duplicate {
                    lang: lang.code(),
                    reason: format!("{errors:?}"),
                })?;
            bundles.push((lang, bundle));
        }
        Ok(Catalogues { bundles })
    }

    fn bundle(&self, lang: Lang) -> Option<&FluentBundle<FluentResource>> {
        self.bundles
            .iter()
            .find(|(l, _)| *l == lang)
            .map(|(_, b)| b)
    }

    fn format_in(&self, lang: Lang, id: &str, args: Option<&FluentArgs>) -> Option<String> {
        let bundle = self.bundle(lang)?;
        let pattern = bundle.get_message(id)?.value()?;
        let mut errors = Vec::new();
        let text = bundle.format_pattern(pattern, args, &mut errors);
        if !errors.is_empty() {
            tracing::warn!(lang = lang.code(), id, "message formatting: {errors:?}");
        }
        Some(text.into_owned())
    }

    /// The message `id` in `lang`, else in English, else the id itself (a
    /// missing message shows, rather than hiding the page).
    pub fn format(&self, lang: Lang, id: &str, args: Option<&FluentArgs>) -> String {
        self.format_in(lang, id, args)
            .or_else(|| {
                tracing::warn!(lang = lang.code(), id, "message missing");
                self.format_in(Lang::En, id, args)
            })
            .unwrap_or_else(|| id.to_owned())
    }

    /// Every message id of `lang`'s catalogue.
    #[cfg(test)]
    fn ids(lang: Lang) -> std::collections::BTreeSet<String> {
        let source = SOURCES
            .iter()
            .find(|(l, _)| *l == lang)
            .map(|(_, s)| *s)
            .unwrap_or_default();
        source
            .lines()
            .filter(|l| l.chars().next().is_some_and(|c| c.is_ascii_lowercase()))
            .filter_map(|l| l.split_once(" =").map(|(id, _)| id.trim().to_owned()))
            .collect()
    }
}

/// One request's translator.
#[derive(Clone, Copy)]
pub struct Tr<'a> {
    pub cat: &'a Catalogues,
    pub lang: Lang,
}

impl Tr<'_> {
    pub fn t(&self, id: &str) -> String {
        self.cat.format(self.lang, id, None)
    }

    /// A message with arguments; numbers stay numbers so plurals work.
    pub fn a(&self, id: &str, args: &[(&str, Arg)]) -> String {
        let mut fa = FluentArgs::new();
        for (k, v) in args {
            match v {
                Arg::S(s) => fa.set(*k, FluentValue::from(s.clone())),
                Arg::N(n) => fa.set(*k, FluentValue::from(*n)),
            }
        }
        self.cat.format(self.lang, id, Some(&fa))
    }

    /// A time as the GBA reads it: Asia/Shanghai, which has been UTC+8
    /// without daylight saving since 1991.
    pub fn time(&self, t: OffsetDateTime) -> String {
        let local = t.to_offset(GBA);
        let stamp = format!(
            "{:04}-{:02}-{:02} {:02}:{:02}",
            local.year(),
            u8::from(local.month()),
            local.day(),
            local.hour(),
            local.minute()
        );
        self.a("time-gba", &[("time", Arg::S(stamp))])
    }
}

pub enum Arg {
    S(String),
    N(i64),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_language_picks_the_script() {
        assert_eq!(Lang::negotiate(""), Lang::En);
        assert_eq!(Lang::negotiate("fr-FR, de;q=0.5"), Lang::En);
        assert_eq!(Lang::negotiate("zh-CN,zh;q=0.9,en;q=0.8"), Lang::ZhHans);
        assert_eq!(Lang::negotiate("zh-HK,en;q=0.5"), Lang::ZhHant);
        assert_eq!(Lang::negotiate("zh-Hant-MO"), Lang::ZhHant);
        assert_eq!(Lang::negotiate("en;q=0.4, zh-TW;q=0.9"), Lang::ZhHant);
        assert_eq!(Lang::negotiate("zh-Hans-HK"), Lang::ZhHans);
        assert_eq!(Lang::negotiate("zh;q=0, en"), Lang::En);
        assert_eq!(Lang::negotiate("en-GB"), Lang::En);
    }

    #[test]
    fn the_catalogues_load_and_define_the_same_messages() {
        let cat = Catalogues::load().unwrap();
        let en = Catalogues::ids(Lang::En);
        assert!(en.len() > 50, "{}", en.len());
        for lang in [Lang::ZhHans, Lang::ZhHant] {
            let other = Catalogues::ids(lang);
            assert_eq!(
                en.symmetric_difference(&other).collect::<Vec<_>>(),
                Vec::<&String>::new(),
                "{}",
                lang.code()
            );
        }
        let tr = Tr {
            cat: &cat,
            lang: Lang::ZhHant,
        };
        assert_eq!(tr.t("language-name"), "繁體中文");
        let t = OffsetDateTime::from_unix_timestamp(1_767_225_600).unwrap(); // 2026-01-01 00:00Z
        assert!(tr.time(t).contains("2026-01-01 08:00"), "{}", tr.time(t));
    }
}
