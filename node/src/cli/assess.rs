//! `bayspace assess FILE|-`: the compliance engine on one scenario.
//!
//! The contract with scripts is strict (see docs/COMPLIANCE.md): the
//! assessment as one JSON object on stdout and exit 0, whatever the route;
//! or, on bad input, exit 2 with exactly one line on stderr naming the field
//! and what was expected, and nothing on stdout.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use bayspace_contracts::compliance::{Scenario, assess};

/// Input is capped so a stray multi-gigabyte file cannot exhaust memory.
const MAX_INPUT: u64 = 1 << 20;

#[derive(Debug, clap::Args)]
pub struct AssessArgs {
    /// Scenario file, or `-` for standard input.
    pub input: PathBuf,
}

pub fn run(args: &AssessArgs) -> anyhow::Result<ExitCode> {
    match assess_input(args) {
        Ok(json) => {
            println!("{json}");
            Ok(ExitCode::SUCCESS)
        }
        Err(msg) => {
            // One line, always: callers parse stderr line by line.
            eprintln!("bayspace assess: {}", msg.replace('\n', " "));
            Ok(ExitCode::from(2))
        }
    }
}

fn assess_input(args: &AssessArgs) -> Result<String, String> {
    let raw = read_input(args)?;
    let scenario = parse_scenario(&raw)?;
    let assessment = assess(&scenario);
    serde_json::to_string_pretty(&assessment).map_err(|e| format!("cannot encode the result: {e}"))
}

fn read_input(args: &AssessArgs) -> Result<Vec<u8>, String> {
    let mut buf = Vec::new();
    let (what, res) = if args.input.as_os_str() == "-" {
        (
            "standard input".to_owned(),
            std::io::stdin().take(MAX_INPUT + 1).read_to_end(&mut buf),
        )
    } else {
        let name = args.input.display().to_string();
        match std::fs::File::open(&args.input) {
            Ok(f) => (name, f.take(MAX_INPUT + 1).read_to_end(&mut buf)),
            Err(e) => return Err(format!("cannot open {name}: {e}")),
        }
    };
    res.map_err(|e| format!("cannot read {what}: {e}"))?;
    if buf.len() as u64 > MAX_INPUT {
        return Err(format!("{what} is larger than {MAX_INPUT} bytes"));
    }
    Ok(buf)
}

/// Parse once at the edge: every error names the JSON path it happened at.
pub fn parse_scenario(raw: &[u8]) -> Result<Scenario, String> {
    let mut de = serde_json::Deserializer::from_slice(raw);
    let scenario: Scenario = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() || path == "." {
            format!("input is not a valid scenario: {inner}")
        } else {
            format!("{path}: {inner}")
        }
    })?;
    de.end()
        .map_err(|e| format!("input is not a valid scenario: {e}"))?;
    Ok(scenario)
}
