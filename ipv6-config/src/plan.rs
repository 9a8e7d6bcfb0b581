//! The address plan: which prefixes belong to which institution.
//!
//! The plan is the one place that says "this remote address is inside that
//! member". A wrong plan silently opens a node to strangers or shuts out a
//! member, so parsing reports every problem at once, each with the line it
//! is on, and an [`AddressPlan`] value only exists once all checks passed.

use std::fmt;
use std::net::IpAddr;
use std::ops::Range;

use bayspace_contracts::region::{Region, RegionError};
use ipnet::IpNet;
use serde::Deserialize;
use toml::Spanned;

/// The libp2p port (TCP and UDP/QUIC) when an institution names none.
pub const DEFAULT_P2P_PORT: u16 = 4710;
/// The gRPC port when an institution names none.
pub const DEFAULT_GRPC_PORT: u16 = 7410;
/// Anything shorter would hand one institution a large share of the
/// address space; such a plan is a typo far more often than an intent.
pub const MIN_PREFIX_LEN: u8 = 16;

/// A validated address plan.
///
/// The fields are private so that every value went through
/// [`AddressPlan::parse`]: code holding a plan may rely on the prefixes of
/// different institutions never overlapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressPlan {
    name: String,
    allow_ipv4: bool,
    institutions: Vec<Institution>,
}

/// One member institution of the data space.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Institution {
    pub name: String,
    pub region: Region,
    /// Normalised prefixes, in file order.
    pub prefixes: Vec<IpNet>,
    pub p2p_port: Option<u16>,
    pub grpc_port: Option<u16>,
}

impl Institution {
    /// The p2p port its node listens on, falling back to [`DEFAULT_P2P_PORT`].
    pub fn p2p_port_or_default(&self) -> u16 {
        self.p2p_port.unwrap_or(DEFAULT_P2P_PORT)
    }

    /// The gRPC port its node listens on, falling back to [`DEFAULT_GRPC_PORT`].
    pub fn grpc_port_or_default(&self) -> u16 {
        self.grpc_port.unwrap_or(DEFAULT_GRPC_PORT)
    }

    /// Whether `addr` lies in one of this institution's prefixes.
    ///
    /// An IPv4-mapped IPv6 address is compared as the IPv4 address it
    /// carries, because dual-stack sockets report IPv4 peers that way.
    pub fn contains(&self, addr: IpAddr) -> bool {
        let addr = addr.to_canonical();
        self.prefixes.iter().any(|p| p.contains(&addr))
    }
}

/// What is wrong with one part of a plan.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProblemKind {
    #[error("TOML: {0}")]
    Syntax(String),
    #[error("the plan lists no [[institution]]")]
    NoInstitutions,
    #[error("{field} `{value}` is empty or contains control characters")]
    BadName { field: &'static str, value: String },
    #[error("institution name `{name}` is already used on line {first_line}")]
    DuplicateName { name: String, first_line: usize },
    #[error("region: {0}")]
    UnknownRegion(RegionError),
    #[error("no prefixes: an institution needs at least one")]
    NoPrefixes,
    #[error("prefix `{value}` is not an IP prefix (expected ADDRESS/LENGTH): {reason}")]
    BadPrefix { value: String, reason: String },
    #[error("prefix {prefix} has host bits set: write {network}")]
    HostBitsSet { prefix: IpNet, network: IpNet },
    #[error("prefix {0} is IPv4 (or IPv4-mapped) and allow_ipv4 is not set")]
    Ipv4NotAllowed(IpNet),
    #[error("prefix {0} is shorter than /{MIN_PREFIX_LEN}")]
    PrefixTooShort(IpNet),
    #[error("prefix {prefix} overlaps {other_prefix} of {other_institution} (line {other_line})")]
    Overlap {
        prefix: IpNet,
        other_prefix: IpNet,
        other_institution: String,
        other_line: usize,
    },
    #[error("{field} is 0: a node needs a fixed port to be reachable and firewalled")]
    ZeroPort { field: &'static str },
    #[error("p2p_port and grpc_port are both {0}: both listen on TCP")]
    PortClash(u16),
}

/// One problem, located.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanProblem {
    /// The institution the problem belongs to, when it belongs to one.
    pub institution: Option<String>,
    /// 1-based line in the plan file.
    pub line: usize,
    pub kind: ProblemKind,
}

impl fmt::Display for PlanProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.institution {
            Some(name) => write!(f, "line {} ({name}): {}", self.line, self.kind),
            None => write!(f, "line {}: {}", self.line, self.kind),
        }
    }
}

impl std::error::Error for PlanProblem {}

/// Every problem found in a plan, in line order. Never empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanErrors(Vec<PlanProblem>);

impl PlanErrors {
    pub fn problems(&self) -> &[PlanProblem] {
        &self.0
    }
}

impl fmt::Display for PlanErrors {
    /// One problem per line, so that the list can go to a terminal as is.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for PlanErrors {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPlan {
    name: Spanned<String>,
    #[serde(default)]
    allow_ipv4: bool,
    #[serde(default)]
    institution: Vec<Spanned<RawInstitution>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInstitution {
    name: Spanned<String>,
    region: Spanned<String>,
    prefixes: Vec<Spanned<String>>,
    p2p_port: Option<Spanned<u16>>,
    grpc_port: Option<Spanned<u16>>,
}

/// Maps byte offsets of the source to 1-based line numbers.
struct Lines(Vec<usize>);

impl Lines {
    fn new(src: &str) -> Self {
        Lines(
            src.char_indices()
                .filter(|&(_, c)| c == '\n')
                .map(|(i, _)| i)
                .collect(),
        )
    }

    fn of(&self, span: Range<usize>) -> usize {
        self.0.partition_point(|&nl| nl < span.start) + 1
    }
}

fn is_good_name(s: &str) -> bool {
    !s.trim().is_empty() && !s.chars().any(char::is_control)
}

impl AddressPlan {
    /// Parses and checks a plan, collecting every problem.
    ///
    /// TOML that does not have the plan's shape (a syntax error, a missing
    /// or unknown field, a port beyond 65535) stops at that one problem,
    /// because nothing after it can be located reliably; all checks on
    /// values are then run to the end.
    pub fn parse(src: &str) -> Result<AddressPlan, PlanErrors> {
        let lines = Lines::new(src);
        let raw: RawPlan = toml::from_str(src).map_err(|e| {
            PlanErrors(vec![PlanProblem {
                institution: None,
                line: e.span().map_or(1, |s| lines.of(s)),
                kind: ProblemKind::Syntax(e.message().trim_end().to_owned()),
            }])
        })?;
        Checker {
            lines: &lines,
            allow_ipv4: raw.allow_ipv4,
            problems: Vec::new(),
        }
        .run(raw)
    }

    /// The name of the data space.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn allow_ipv4(&self) -> bool {
        self.allow_ipv4
    }

    pub fn institutions(&self) -> &[Institution] {
        &self.institutions
    }

    pub fn institution(&self, name: &str) -> Option<&Institution> {
        self.institutions.iter().find(|i| i.name == name)
    }

    /// The institution whose prefix is the longest one containing `addr`.
    ///
    /// IPv4-mapped IPv6 addresses are looked up as IPv4, so they only match
    /// when the plan allows IPv4 and lists the IPv4 prefix.
    pub fn institution_for(&self, addr: IpAddr) -> Option<&Institution> {
        let addr = addr.to_canonical();
        self.institutions
            .iter()
            .flat_map(|i| i.prefixes.iter().map(move |p| (p, i)))
            .filter(|(p, _)| p.contains(&addr))
            .max_by_key(|(p, _)| p.prefix_len())
            .map(|(_, i)| i)
    }

    /// Whether `addr` belongs to the institution called `institution`;
    /// false for an unknown name.
    pub fn contains(&self, institution: &str, addr: IpAddr) -> bool {
        self.institution(institution)
            .is_some_and(|i| i.contains(addr))
    }
}

struct Checker<'a> {
    lines: &'a Lines,
    allow_ipv4: bool,
    problems: Vec<PlanProblem>,
}

/// A prefix that passed its own checks, remembered for the overlap check.
struct Placed {
    prefix: IpNet,
    /// Position in the file, which tells institutions of the same name apart.
    institution: usize,
    name: String,
    line: usize,
}

impl Checker<'_> {
    fn report(&mut self, institution: Option<&str>, span: Range<usize>, kind: ProblemKind) {
        self.problems.push(PlanProblem {
            institution: institution.map(str::to_owned),
            line: self.lines.of(span),
            kind,
        });
    }

    fn run(mut self, raw: RawPlan) -> Result<AddressPlan, PlanErrors> {
        let plan_name = raw.name.get_ref().clone();
        if !is_good_name(&plan_name) {
            self.report(
                None,
                raw.name.span(),
                ProblemKind::BadName {
                    field: "name",
                    value: plan_name.clone(),
                },
            );
        }
        if raw.institution.is_empty() {
            self.report(None, 0..0, ProblemKind::NoInstitutions);
        }

        let mut institutions = Vec::new();
        let mut placed: Vec<Placed> = Vec::new();
        let mut first_lines: Vec<(String, usize)> = Vec::new();
        for (index, raw_inst) in raw.institution.into_iter().enumerate() {
            let table_span = raw_inst.span();
            let r = raw_inst.into_inner();
            let name = r.name.get_ref().clone();
            let who = Some(name.as_str());
            let name_line = self.lines.of(r.name.span());

            if !is_good_name(&name) {
                self.report(
                    who,
                    r.name.span(),
                    ProblemKind::BadName {
                        field: "institution name",
                        value: name.clone(),
                    },
                );
            } else if let Some((_, first_line)) = first_lines.iter().find(|(n, _)| *n == name) {
                let first_line = *first_line;
                self.report(
                    who,
                    r.name.span(),
                    ProblemKind::DuplicateName {
                        name: name.clone(),
                        first_line,
                    },
                );
            } else {
                first_lines.push((name.clone(), name_line));
            }

            let region = match r.region.get_ref().parse::<Region>() {
                Ok(region) => Some(region),
                Err(e) => {
                    self.report(who, r.region.span(), ProblemKind::UnknownRegion(e));
                    None
                }
            };

            if r.prefixes.is_empty() {
                self.report(who, table_span.clone(), ProblemKind::NoPrefixes);
            }
            let mut prefixes = Vec::new();
            for p in &r.prefixes {
                if let Some(prefix) = self.check_prefix(who, p) {
                    let line = self.lines.of(p.span());
                    if let Some(other) = placed
                        .iter()
                        .find(|o| o.institution != index && overlaps(&o.prefix, &prefix))
                    {
                        let kind = ProblemKind::Overlap {
                            prefix,
                            other_prefix: other.prefix,
                            other_institution: other.name.clone(),
                            other_line: other.line,
                        };
                        self.report(who, p.span(), kind);
                    }
                    placed.push(Placed {
                        prefix,
                        institution: index,
                        name: name.clone(),
                        line,
                    });
                    prefixes.push(prefix);
                }
            }

            let p2p_port = self.check_port(who, "p2p_port", r.p2p_port.as_ref());
            let grpc_port = self.check_port(who, "grpc_port", r.grpc_port.as_ref());
            let effective = (
                p2p_port.unwrap_or(DEFAULT_P2P_PORT),
                grpc_port.unwrap_or(DEFAULT_GRPC_PORT),
            );
            if effective.0 == effective.1 {
                let span = r
                    .grpc_port
                    .as_ref()
                    .or(r.p2p_port.as_ref())
                    .map_or(table_span, Spanned::span);
                self.report(who, span, ProblemKind::PortClash(effective.0));
            }

            // Without a region the plan is already refused; the remaining
            // institutions are still checked so that every problem is found.
            if let Some(region) = region {
                institutions.push(Institution {
                    name,
                    region,
                    prefixes,
                    p2p_port,
                    grpc_port,
                });
            }
        }

        if self.problems.is_empty() {
            Ok(AddressPlan {
                name: plan_name,
                allow_ipv4: self.allow_ipv4,
                institutions,
            })
        } else {
            self.problems.sort_by_key(|p| p.line);
            Err(PlanErrors(self.problems))
        }
    }

    /// Returns the prefix when it may take part in the overlap check; a
    /// prefix with host bits set still does, as its network. A prefix that
    /// is too short is reported for that alone: its host bits are most
    /// likely the part the author meant.
    fn check_prefix(&mut self, who: Option<&str>, p: &Spanned<String>) -> Option<IpNet> {
        let value = p.get_ref();
        let parsed = match value.parse::<IpNet>() {
            Ok(net) => net,
            Err(e) => {
                let reason = if value.parse::<IpAddr>().is_ok() {
                    "the /LENGTH is missing".to_owned()
                } else {
                    e.to_string()
                };
                self.report(
                    who,
                    p.span(),
                    ProblemKind::BadPrefix {
                        value: value.clone(),
                        reason,
                    },
                );
                return None;
            }
        };
        if is_ipv4_like(&parsed) && !self.allow_ipv4 {
            self.report(who, p.span(), ProblemKind::Ipv4NotAllowed(parsed));
            return None;
        }
        if parsed.prefix_len() < MIN_PREFIX_LEN {
            self.report(who, p.span(), ProblemKind::PrefixTooShort(parsed));
            return None;
        }
        let network = parsed.trunc();
        if network != parsed {
            self.report(
                who,
                p.span(),
                ProblemKind::HostBitsSet {
                    prefix: parsed,
                    network,
                },
            );
        }
        Some(canonical_net(network))
    }

    fn check_port(
        &mut self,
        who: Option<&str>,
        field: &'static str,
        port: Option<&Spanned<u16>>,
    ) -> Option<u16> {
        let port = port?;
        if *port.get_ref() == 0 {
            self.report(who, port.span(), ProblemKind::ZeroPort { field });
        }
        Some(*port.get_ref())
    }
}

/// True for IPv4 prefixes and for IPv6 prefixes inside `::ffff:0:0/96`,
/// which carry IPv4 addresses.
pub(crate) fn is_ipv4_like(net: &IpNet) -> bool {
    match net {
        IpNet::V4(_) => true,
        IpNet::V6(n) => n.prefix_len() >= 96 && n.network().to_ipv4_mapped().is_some(),
    }
}

/// An IPv4-mapped IPv6 prefix as the IPv4 prefix it stands for, so that
/// lookups (which canonicalise addresses) and overlap checks agree.
fn canonical_net(net: IpNet) -> IpNet {
    match net {
        IpNet::V6(n) if is_ipv4_like(&net) => n
            .network()
            .to_ipv4_mapped()
            .and_then(|a| ipnet::Ipv4Net::new(a, n.prefix_len() - 96).ok())
            .map_or(net, IpNet::V4),
        _ => net,
    }
}

fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    a.contains(b) || b.contains(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"name = "gba-research"

[[institution]]
name = "Shenzhen University"
region = "mainland:shenzhen"
prefixes = ["fd00:5a::/48", "2001:db8:5a::/48"]
p2p_port = 4711

[[institution]]
name = "HKU"
region = "hk"
prefixes = ["fd00:6b::/48", "fd00:6b:0:1::/64"]
grpc_port = 7411
"#;

    fn problems(src: &str) -> Vec<PlanProblem> {
        AddressPlan::parse(src).unwrap_err().problems().to_vec()
    }

    fn addr(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn parses_a_good_plan() {
        let plan = AddressPlan::parse(GOOD).unwrap();
        assert_eq!(plan.name(), "gba-research");
        assert!(!plan.allow_ipv4());
        assert_eq!(plan.institutions().len(), 2);
        let szu = plan.institution("Shenzhen University").unwrap();
        assert_eq!(szu.region.to_string(), "mainland:shenzhen");
        assert_eq!(szu.prefixes.len(), 2);
        assert_eq!(szu.p2p_port_or_default(), 4711);
        assert_eq!(szu.grpc_port_or_default(), DEFAULT_GRPC_PORT);
        let hku = plan.institution("HKU").unwrap();
        assert_eq!(hku.p2p_port_or_default(), DEFAULT_P2P_PORT);
        assert_eq!(hku.grpc_port, Some(7411));
    }

    #[test]
    fn longest_prefix_match_and_one_bit_outside() {
        let plan = AddressPlan::parse(GOOD).unwrap();
        let hit = plan.institution_for(addr("fd00:6b:0:1::9")).unwrap();
        assert_eq!(hit.name, "HKU");
        assert_eq!(
            plan.institution_for(addr("2001:db8:5a:ffff::1"))
                .unwrap()
                .name,
            "Shenzhen University"
        );
        // The last address of fd00:5a::/48 is inside; flipping the lowest
        // bit of the 48-bit network part leaves it.
        assert!(plan.contains(
            "Shenzhen University",
            addr("fd00:5a:0:ffff:ffff:ffff:ffff:ffff")
        ));
        assert!(!plan.contains("Shenzhen University", addr("fd00:5b::")));
        assert!(!plan.contains(
            "Shenzhen University",
            addr("fd00:59:ffff:ffff:ffff:ffff:ffff:ffff")
        ));
        assert!(plan.institution_for(addr("fd00:5b::")).is_none());
        assert!(!plan.contains("HKU", addr("fd00:5a::1")));
        assert!(!plan.contains("Nobody", addr("fd00:5a::1")));
    }

    #[test]
    fn longest_prefix_wins_within_nested_prefixes() {
        // Nested prefixes are legal inside one institution.
        let plan = AddressPlan::parse(GOOD).unwrap();
        let i = plan.institution("HKU").unwrap();
        assert!(i.contains(addr("fd00:6b:0:1::1")) && i.contains(addr("fd00:6b:0:2::1")));
    }

    #[test]
    fn ipv4_lookups_only_when_allowed() {
        let plan = AddressPlan::parse(GOOD).unwrap();
        assert!(plan.institution_for(addr("10.0.0.1")).is_none());
        let src = r#"name = "x"
allow_ipv4 = true
[[institution]]
name = "Lab"
region = "macao"
prefixes = ["10.20.0.0/16", "::ffff:10.30.0.0/112"]
"#;
        let plan = AddressPlan::parse(src).unwrap();
        let lab = plan.institution("Lab").unwrap();
        assert_eq!(lab.prefixes[1].to_string(), "10.30.0.0/16");
        assert!(plan.contains("Lab", addr("10.20.3.4")));
        assert!(plan.contains("Lab", addr("::ffff:10.20.3.4")));
        assert!(plan.contains("Lab", addr("10.30.0.1")));
        assert!(!plan.contains("Lab", addr("10.21.0.0")));
    }

    fn one(src: &str) -> PlanProblem {
        let mut p = problems(src);
        assert_eq!(p.len(), 1, "{p:?}");
        p.remove(0)
    }

    fn inst(body: &str) -> String {
        format!("name = \"x\"\n[[institution]]\nname = \"A\"\nregion = \"hk\"\n{body}\n")
    }

    #[test]
    fn each_kind_is_reported_with_line_and_institution() {
        let p = one(&inst("prefixes = [\"fd00:5a::/8\"]"));
        assert_eq!(p.line, 5);
        assert_eq!(p.institution.as_deref(), Some("A"));
        assert!(matches!(p.kind, ProblemKind::PrefixTooShort(_)));
        assert_eq!(
            p.to_string(),
            "line 5 (A): prefix fd00:5a::/8 is shorter than /16"
        );

        let p = one(&inst("prefixes = [\"10.0.0.0/8\"]"));
        assert!(matches!(p.kind, ProblemKind::Ipv4NotAllowed(_)), "{p}");
        let p = one(&inst("prefixes = [\"::ffff:10.0.0.0/104\"]"));
        assert!(matches!(p.kind, ProblemKind::Ipv4NotAllowed(_)), "{p}");

        let p = one(&inst("prefixes = [\"fd00:5a::1/48\"]"));
        assert_eq!(
            p.to_string(),
            "line 5 (A): prefix fd00:5a::1/48 has host bits set: write fd00:5a::/48"
        );

        let p = one(&inst("prefixes = [\"fd00:5a::/129\"]"));
        assert!(matches!(p.kind, ProblemKind::BadPrefix { .. }), "{p}");
        let p = one(&inst("prefixes = [\"fd00:5a::1\"]"));
        assert!(p.to_string().contains("/LENGTH is missing"), "{p}");

        let p = one(&inst("prefixes = []"));
        assert!(matches!(p.kind, ProblemKind::NoPrefixes), "{p}");
        assert_eq!(p.line, 2, "{p}");

        let p = one(&inst("prefixes = [\"fd00::/48\"]\np2p_port = 0"));
        assert_eq!(p.line, 6);
        assert!(
            matches!(p.kind, ProblemKind::ZeroPort { field: "p2p_port" }),
            "{p}"
        );

        let p = one(&inst("prefixes = [\"fd00::/48\"]\np2p_port = 7410"));
        assert!(matches!(p.kind, ProblemKind::PortClash(7410)), "{p}");

        let p = one(
            "name = \"x\"\n[[institution]]\nname = \"A\"\nregion = \"mainland:shenzen\"\nprefixes = [\"fd00::/48\"]\n",
        );
        assert_eq!(p.line, 4);
        assert!(p.to_string().contains("`shenzen`"), "{p}");

        let p = one("name = \"x\"\n");
        assert!(matches!(p.kind, ProblemKind::NoInstitutions));

        let p = one(&inst("prefixes = [\"fd00::/48\"]").replace("name = \"A\"", "name = \"\""));
        assert!(matches!(p.kind, ProblemKind::BadName { .. }), "{p}");
    }

    #[test]
    fn duplicate_names_and_overlaps_name_the_other_line() {
        let src = r#"name = "x"
[[institution]]
name = "A"
region = "hk"
prefixes = ["fd00:5a::/48"]
[[institution]]
name = "A"
region = "macao"
prefixes = ["fd00:5a:0:1::/64"]
"#;
        let p = problems(src);
        assert_eq!(p.len(), 2, "{p:?}");
        assert_eq!(
            p[0].to_string(),
            "line 7 (A): institution name `A` is already used on line 3"
        );
        assert_eq!(
            p[1].to_string(),
            "line 9 (A): prefix fd00:5a:0:1::/64 overlaps fd00:5a::/48 of A (line 5)"
        );
    }

    #[test]
    fn reports_every_problem_at_once_in_line_order() {
        let src = r#"name = "gba-research"
[[institution]]
name = "Shenzhen University"
region = "mainland:shenzen"
prefixes = ["fd00:5a::/8", "10.1.0.0/16", "fd00:5a::/48"]

[[institution]]
name = "Shenzhen University"
region = "hk"
prefixes = [
  "fd00:5a:0:7::/64",
  "not-a-prefix",
]
grpc_port = 4710
"#;
        let p = problems(src);
        let text: Vec<String> = p.iter().map(ToString::to_string).collect();
        assert_eq!(p.len(), 7, "{text:#?}");
        let lines: Vec<usize> = p.iter().map(|p| p.line).collect();
        assert_eq!(lines, [4, 5, 5, 8, 11, 12, 14]);
        assert!(matches!(p[0].kind, ProblemKind::UnknownRegion(_)));
        assert!(matches!(p[1].kind, ProblemKind::PrefixTooShort(_)));
        assert!(matches!(p[2].kind, ProblemKind::Ipv4NotAllowed(_)));
        assert!(matches!(
            p[3].kind,
            ProblemKind::DuplicateName { first_line: 3, .. }
        ));
        assert!(matches!(
            p[4].kind,
            ProblemKind::Overlap { other_line: 5, .. }
        ));
        assert!(matches!(p[5].kind, ProblemKind::BadPrefix { .. }));
        assert!(matches!(p[6].kind, ProblemKind::PortClash(4710)));
        let all = AddressPlan::parse(src).unwrap_err().to_string();
        assert_eq!(all.lines().count(), 7);
    }

    #[test]
    fn syntax_and_shape_errors_have_lines() {
        let p = one("name = \"x\"\n[[institution]]\nname = \"A\"\nregion = hk\n");
        assert_eq!(p.line, 4);
        assert!(matches!(p.kind, ProblemKind::Syntax(_)));
        let p = one(&inst("prefixes = [\"fd00::/48\"]\ncolour = \"red\""));
        assert_eq!(p.line, 6, "{p}");
        assert!(p.to_string().contains("colour"), "{p}");
        let p = one(&inst("prefixes = [\"fd00::/48\"]\np2p_port = 70000"));
        assert_eq!(p.line, 6, "{p}");
    }
}
