//! `bayspace authority …`: the trust anchor's tools, run by the data space
//! operator on a machine of their own.
//!
//! The authority directory holds `authority.key` (0600), `authority.pub`,
//! `serial` (the next membership serial, decimal text) and
//! `revocations.json` (the current signed revocation list).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use bayspace_connector::identity::{
    AUTHORITY_PUB_FILE, AuthorityKey, MemberRole, MembershipBody, MembershipCredential, Overwrite,
    PeerId, RevocationBody, RevocationList, files, parse_prefix, timestamp,
};
use bayspace_contracts::region::Region;
use bayspace_contracts::signing::b64;
use ipnet::Ipv6Net;
use time::{Duration, OffsetDateTime};

const SERIAL_FILE: &str = "serial";
const REVOCATIONS_FILE: &str = "revocations.json";

#[derive(Debug, clap::Args)]
pub struct AuthorityArgs {
    #[command(subcommand)]
    pub command: AuthorityCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum AuthorityCommand {
    /// Create the trust anchor: DIR/authority.key (0600) and DIR/authority.pub.
    Init {
        #[arg(long)]
        dir: PathBuf,
        /// A label for the public key file, e.g. the data space's name.
        #[arg(long)]
        name: Option<String>,
    },
    /// Issue a membership credential for an institution's node.
    Issue(IssueArgs),
    /// Revoke a membership credential by serial; writes the new full list.
    Revoke {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        serial: u64,
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Debug, clap::Args)]
pub struct IssueArgs {
    #[arg(long)]
    dir: PathBuf,
    #[arg(long)]
    institution: String,
    /// mainland:<city>, hk or macao.
    #[arg(long)]
    region: Region,
    /// The node's PeerId, as `bayspace init` printed it.
    #[arg(long)]
    peer_id: PeerId,
    /// An IPv6 prefix of the institution (repeat for several).
    #[arg(long = "prefix", required = true, value_parser = parse_prefix)]
    prefixes: Vec<Ipv6Net>,
    #[arg(long, value_delimiter = ',', default_value = "provider,consumer")]
    roles: Vec<MemberRole>,
    #[arg(long, default_value_t = 365)]
    valid_days: u32,
    #[arg(long)]
    out: PathBuf,
}

pub fn run(args: AuthorityArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        AuthorityCommand::Init { dir, name } => init(&dir, name.as_deref()),
        AuthorityCommand::Issue(issue_args) => issue(issue_args),
        AuthorityCommand::Revoke { dir, serial, out } => revoke(&dir, serial, &out),
    }
}

fn now() -> OffsetDateTime {
    timestamp::whole_seconds(OffsetDateTime::now_utc())
}

fn init(dir: &Path, name: Option<&str>) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let key = AuthorityKey::init(dir, name)?;
    write_serial(dir, 1, Overwrite::Refuse)?;
    let empty = RevocationList::sign(
        RevocationBody {
            seq: 0,
            issued_at: now(),
            revoked: BTreeSet::new(),
        },
        key.signing_key(),
    )?;
    empty.write(&dir.join(REVOCATIONS_FILE), Overwrite::Refuse)?;
    println!(
        "authority-key: {}",
        b64::encode(key.verifying_key().as_bytes())
    );
    println!(
        "wrote {} (secret, 0600) and {}; give {} to every member node",
        dir.join("authority.key").display(),
        dir.join(AUTHORITY_PUB_FILE).display(),
        AUTHORITY_PUB_FILE
    );
    Ok(ExitCode::SUCCESS)
}

fn read_serial(dir: &Path) -> anyhow::Result<u64> {
    let path = dir.join(SERIAL_FILE);
    let text = files::read_text(&path)?;
    text.trim().parse().with_context(|| {
        format!(
            "{}: expected the next serial as a decimal number, found `{}`",
            path.display(),
            text.trim()
        )
    })
}

fn write_serial(dir: &Path, next: u64, overwrite: Overwrite) -> anyhow::Result<()> {
    files::write_atomic(
        &dir.join(SERIAL_FILE),
        format!("{next}\n").as_bytes(),
        0o644,
        overwrite,
    )?;
    Ok(())
}

fn issue(a: IssueArgs) -> anyhow::Result<ExitCode> {
    let key = AuthorityKey::load(&a.dir)?;
    if a.out.exists() {
        bail!(
            "{} already exists; refusing to overwrite it",
            a.out.display()
        );
    }
    let serial = read_serial(&a.dir)?;
    let not_before = now();
    let body = MembershipBody {
        serial,
        institution: a.institution,
        region: a.region,
        peer_id: a.peer_id,
        prefixes: a.prefixes,
        roles: a.roles.into_iter().collect(),
        not_before,
        not_after: not_before + Duration::days(i64::from(a.valid_days)),
    };
    let cred = MembershipCredential::sign(body, key.signing_key())?;
    // Consume the serial before the credential exists, so a crash in
    // between can never hand the same serial out twice.
    let next = serial
        .checked_add(1)
        .context("the serial counter is exhausted")?;
    write_serial(&a.dir, next, Overwrite::Replace)?;
    cred.write(&a.out, Overwrite::Refuse)?;
    let b = cred.body();
    println!(
        "issued serial {} to {} ({}), valid {} to {}: {}",
        b.serial,
        b.institution,
        b.peer_id,
        timestamp::display(&b.not_before),
        timestamp::display(&b.not_after),
        a.out.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn revoke(dir: &Path, serial: u64, out: &Path) -> anyhow::Result<ExitCode> {
    let key = AuthorityKey::load(dir)?;
    let path = dir.join(REVOCATIONS_FILE);
    let current = RevocationList::read(&path)?;
    let body = current
        .verify(&[key.verifying_key()])
        .with_context(|| format!("{} is not this authority's list", path.display()))?;
    let next_serial = read_serial(dir)?;
    if serial == 0 || serial >= next_serial {
        bail!("serial {serial} was never issued (issued serials are 1 to {next_serial} exclusive)");
    }
    if body.revoked.contains(&serial) {
        bail!(
            "serial {serial} is already revoked in list {} ({})",
            body.seq,
            path.display()
        );
    }
    let mut revoked = body.revoked.clone();
    revoked.insert(serial);
    let list = RevocationList::sign(
        RevocationBody {
            seq: body.seq + 1,
            issued_at: now(),
            revoked,
        },
        key.signing_key(),
    )?;
    list.write(&path, Overwrite::Replace)?;
    list.write(out, Overwrite::Replace)?;
    println!(
        "revocation list {} revokes {} serial(s), including {serial}: {}",
        list.body().seq,
        list.body().revoked.len(),
        out.display()
    );
    Ok(ExitCode::SUCCESS)
}
