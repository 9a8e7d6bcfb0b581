//! `bayspace ipv6 …`: checks an address plan and renders a node's nftables
//! rule set from it.
//!
//! Exit codes: 0 on success; 2 when the plan (or the request against it)
//! is wrong, with every problem on stderr, one per line, so that scripts
//! and CI can tell a bad plan from a failure to run (an unreadable file is
//! returned as an error).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use bayspace_ipv6::IpNet;
use bayspace_ipv6::nft;
use bayspace_ipv6::plan::AddressPlan;

/// Exit code for a plan that is not valid.
const INVALID: u8 = 2;

#[derive(Debug, clap::Subcommand)]
pub enum Ipv6Command {
    /// Check an address plan and report every problem with its line.
    Check {
        /// The address plan (TOML).
        plan: PathBuf,
    },
    /// Print the nftables rule set for one institution's node.
    Nft {
        /// The address plan (TOML).
        plan: PathBuf,
        /// The institution whose node the rules are for, as named in the plan.
        #[arg(long)]
        institution: String,
        /// A prefix allowed to reach the gRPC port (repeatable); default ::1/128.
        #[arg(long = "grpc-client-prefix", value_name = "CIDR")]
        grpc_client_prefixes: Vec<IpNet>,
    },
}

pub fn run(cmd: Ipv6Command) -> anyhow::Result<ExitCode> {
    match cmd {
        Ipv6Command::Check { plan } => {
            let Some(parsed) = load(&plan)? else {
                return Ok(ExitCode::from(INVALID));
            };
            let prefixes: usize = parsed.institutions().iter().map(|i| i.prefixes.len()).sum();
            println!(
                "{}: plan `{}` is valid: {} institutions, {} prefixes, IPv4 {}",
                plan.display(),
                parsed.name(),
                parsed.institutions().len(),
                prefixes,
                if parsed.allow_ipv4() {
                    "allowed"
                } else {
                    "refused"
                },
            );
            Ok(ExitCode::SUCCESS)
        }
        Ipv6Command::Nft {
            plan,
            institution,
            grpc_client_prefixes,
        } => {
            let Some(parsed) = load(&plan)? else {
                return Ok(ExitCode::from(INVALID));
            };
            match nft::render(&parsed, &institution, &grpc_client_prefixes) {
                Ok(rules) => {
                    print!("{rules}");
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    eprintln!("{}: {e}", plan.display());
                    Ok(ExitCode::from(INVALID))
                }
            }
        }
    }
}

/// Reads and parses the plan; `None` after printing its problems.
fn load(path: &Path) -> anyhow::Result<Option<AddressPlan>> {
    let src = std::fs::read_to_string(path)
        .with_context(|| format!("reading address plan {}", path.display()))?;
    match AddressPlan::parse(&src) {
        Ok(plan) => Ok(Some(plan)),
        Err(errors) => {
            for problem in errors.problems() {
                eprintln!("{}: {problem}", path.display());
            }
            Ok(None)
        }
    }
}
