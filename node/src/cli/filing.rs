//! `bayspace filing export`: the regulator filing package of an agreement
//! on a standard-contract route, as JSON and as a readable document. On the
//! certification route no filing is due and nothing is written; the
//! command names the certificate and its `certification-renewal` date.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use bayspace_connector::identity::{Overwrite, files};

use crate::client::{self, ClientArgs};
use crate::proto::ExportFilingRequest;
use crate::proto::filing_service_client::FilingServiceClient;

#[derive(Debug, clap::Subcommand)]
pub enum FilingCommand {
    /// Write DIR/filing-<id>.json and DIR/filing-<id>.md (administrator);
    /// on the certification route, say why none is due.
    Export {
        agreement_id: String,
        /// Created if missing; existing files of the same name are replaced.
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        client: ClientArgs,
    },
}

/// A file name from an agreement id (`urn:uuid:…`), safe on any system.
fn file_stem(id: &str) -> String {
    let tail = id.strip_prefix("urn:").unwrap_or(id);
    let safe: String = tail
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("filing-{safe}")
}

fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    files::write_atomic(path, text.as_bytes(), 0o644, Overwrite::Replace)
        .with_context(|| format!("cannot write {}", path.display()))
}

pub fn run(cmd: FilingCommand) -> anyhow::Result<ExitCode> {
    let FilingCommand::Export {
        agreement_id,
        out,
        client,
    } = cmd;
    let pkg = client::block_on(async {
        let mut c = FilingServiceClient::new(client::connect(&client).await?);
        Ok(c.export(ExportFilingRequest { agreement_id })
            .await
            .map_err(client::refused)?
            .into_inner())
    })?;
    if let Some(c) = &pkg.certification {
        println!(
            "no contract filing is due for agreement {} on route {}; nothing written",
            pkg.agreement_id, pkg.route
        );
        println!("certificate {} valid until {}", c.reference, c.valid_until);
        println!("certification-renewal: re-apply by {}", c.reapply_by);
        return Ok(ExitCode::SUCCESS);
    }
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    let stem = file_stem(&pkg.agreement_id);
    let (json, md) = (
        out.join(format!("{stem}.json")),
        out.join(format!("{stem}.md")),
    );
    write(&json, &format!("{}\n", pkg.json))?;
    write(&md, &pkg.markdown)?;
    println!("wrote {}", json.display());
    println!("wrote {}", md.display());
    println!("file by {}", pkg.deadline);
    for a in &pkg.authorities {
        println!("  with {a}");
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_keep_only_safe_characters() {
        assert_eq!(
            file_stem("urn:uuid:1b4e28ba-2fa1-4d2b-883f-0016d3cca427"),
            "filing-uuid-1b4e28ba-2fa1-4d2b-883f-0016d3cca427"
        );
        assert_eq!(file_stem("urn:x/../y"), "filing-x----y");
    }
}
