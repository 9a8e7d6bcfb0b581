//! `bayspace backup` and `bayspace restore`: a node directory to one signed
//! file and back (docs/OPERATIONS.md, "Backup and restore").

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use bayspace_connector::api_tls;
use bayspace_connector::audit::AuditLog;
use bayspace_connector::backup::{self, FileRole, SealedSecrets, Secrets, Snapshotted, Staging};
use bayspace_connector::config::{
    ADMIN_TOKEN_FILE, AdminToken, CONFIG_FILE, DEFAULT_ANCHOR, DEFAULT_API_CERT, DEFAULT_API_KEY,
    DEFAULT_CREDENTIAL, DEFAULT_DATA_DIR, DEFAULT_EXPORT_DIR, DEFAULT_NODE_KEY, DEFAULT_SEALED_DIR,
    NodeConfig,
};
use bayspace_connector::identity::{MembershipCredential, NodeKey};
use bayspace_connector::store::{SledStore, Store};
use serde_bytes::ByteBuf;
use time::OffsetDateTime;
use zeroize::Zeroizing;

use crate::client::{self, ClientArgs};
use crate::proto::SnapshotRequest;
use crate::proto::backup_service_client::BackupServiceClient;
use bayspace_connector::config::resolve;
use bayspace_connector::node::CHECKPOINT_EVERY;

/// Where the passphrase comes from when no file is given.
pub const PASSPHRASE_ENV: &str = "BAYSPACE_BACKUP_PASSPHRASE";

#[derive(Debug, clap::Args)]
pub struct BackupArgs {
    /// The node directory (the node may be running).
    #[arg(long)]
    dir: PathBuf,
    /// The backup file to write (0600); replaced whole, never left half
    /// written.
    #[arg(long)]
    out: PathBuf,
    /// Also hold the node key, the API key and the administrator token,
    /// encrypted under a passphrase (--passphrase-file, or the
    /// BAYSPACE_BACKUP_PASSPHRASE environment variable).
    #[arg(long)]
    include_key: bool,
    /// A file whose first line is the passphrase.
    #[arg(long)]
    passphrase_file: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct RestoreArgs {
    /// A file written by `bayspace backup`.
    file: PathBuf,
    /// The node directory to create; it must not exist or be empty.
    #[arg(long)]
    dir: PathBuf,
    /// A file whose first line is the passphrase of a backup made with
    /// --include-key (or BAYSPACE_BACKUP_PASSPHRASE).
    #[arg(long)]
    passphrase_file: Option<PathBuf>,
}

fn passphrase(file: Option<&Path>) -> anyhow::Result<Option<Zeroizing<String>>> {
    if let Some(f) = file {
        let text = Zeroizing::new(
            std::fs::read_to_string(f)
                .with_context(|| format!("cannot read the passphrase file {}", f.display()))?,
        );
        let line = text.lines().next().unwrap_or_default();
        return Ok(Some(Zeroizing::new(line.to_owned())));
    }
    Ok(std::env::var(PASSPHRASE_ENV).ok().map(Zeroizing::new))
}

fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}

pub fn backup(args: BackupArgs) -> anyhow::Result<ExitCode> {
    let dir = &args.dir;
    let config_path = dir.join(CONFIG_FILE);
    let config = NodeConfig::load(&config_path)?;
    let key = NodeKey::load(&resolve(dir, &config.node_key))?;
    let secrets = if args.include_key {
        let Some(pass) = passphrase(args.passphrase_file.as_deref())? else {
            bail!("--include-key needs a passphrase: --passphrase-file FILE or {PASSPHRASE_ENV}");
        };
        let optional = |p: PathBuf| -> anyhow::Result<Option<ByteBuf>> {
            match std::fs::read(&p) {
                Ok(b) => Ok(Some(ByteBuf::from(b))),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(e).with_context(|| format!("cannot read {}", p.display())),
            }
        };
        let secrets = Secrets {
            node_key: ByteBuf::from(read(&resolve(dir, &config.node_key))?),
            api_key: optional(resolve(dir, &config.api_key))?,
            admin_token: optional(dir.join(ADMIN_TOKEN_FILE))?,
        };
        Some(SealedSecrets::seal(&secrets, &pass)?)
    } else {
        None
    };

    let data_dir = resolve(dir, &config.data_dir);
    let (snap, how) = match SledStore::open(&data_dir) {
        // Nothing runs on this directory: read the store directly.
        Ok(store) => {
            let audit = AuditLog::open(
                std::sync::Arc::new(store.clone()),
                key.signing_key().clone(),
                CHECKPOINT_EVERY,
            )?;
            let snap = Snapshotted::take(&audit, &store, OffsetDateTime::now_utc())?;
            store.flush()?;
            (snap, "offline")
        }
        // The running node holds the store: it takes the snapshot.
        Err(_) => (online_snapshot(dir)?, "from the running node"),
    };

    let contents = backup::write_node_backup(dir, &config, &key, snap.clone(), secrets, &args.out)?;
    let entries: usize = contents.store.trees.iter().map(|t| t.entries.len()).sum();
    println!(
        "wrote {}: store snapshot {how}, {} trees, {entries} entries",
        args.out.display(),
        contents.store.trees.len()
    );
    match &snap.checkpoint {
        Some(c) => println!(
            "audit log up to checkpoint {} (entry {}), signed {}",
            c.number, c.seq, c.time
        ),
        None => println!("audit log empty"),
    }
    println!(
        "node key: {}",
        if contents.secrets.is_some() {
            "included, encrypted under the passphrase"
        } else {
            "not included (keep node.key safe yourself, or use --include-key)"
        }
    );
    Ok(ExitCode::SUCCESS)
}

/// Wraps a snapshot with the node directory's files, signs it with the
/// node key and writes it to `out`.
fn online_snapshot(dir: &Path) -> anyhow::Result<Snapshotted> {
    let args = ClientArgs::in_dir(dir.to_owned());
    let bytes = client::block_on(async {
        let mut c = BackupServiceClient::new(client::connect_streaming(&args).await?)
            .max_decoding_message_size(2 << 20);
        let mut stream = c
            .snapshot(SnapshotRequest {})
            .await
            .map_err(client::refused)?
            .into_inner();
        let mut bytes = Vec::new();
        while let Some(chunk) = stream.message().await.map_err(client::refused)? {
            bytes.extend_from_slice(&chunk.data);
        }
        Ok(bytes)
    })
    .context(
        "the store is in use (the node is running?) and the node's API did not give a snapshot",
    )?;
    Ok(Snapshotted::from_cbor(&bytes)?)
}

pub fn restore(args: RestoreArgs) -> anyhow::Result<ExitCode> {
    let bytes = read(&args.file)?;
    // Everything is checked before anything is written.
    let (contents, signer) = backup::decode(&bytes, &args.file)?;
    let secrets = match &contents.secrets {
        Some(sealed) => {
            let Some(pass) = passphrase(args.passphrase_file.as_deref())? else {
                bail!(
                    "{} holds the node key encrypted: give its passphrase with --passphrase-file FILE or {PASSPHRASE_ENV}",
                    args.file.display()
                );
            };
            let secrets = sealed.open(&pass)?;
            let key_file = Zeroizing::new(secrets.node_key.to_vec());
            check_node_key(&key_file, &contents.peer_id)?;
            Some(secrets)
        }
        None => None,
    };
    let config_text = contents
        .files(FileRole::Config)
        .next()
        .context("the backup holds no config.toml")?;
    let mut config = NodeConfig::parse(
        std::str::from_utf8(config_text).context("the backup's config.toml is not UTF-8")?,
        Path::new("config.toml (in the backup)"),
    )?;
    let credential_bytes = contents
        .files(FileRole::Credential)
        .next()
        .context("the backup holds no membership credential")?;
    let credential = MembershipCredential::from_json(
        std::str::from_utf8(credential_bytes).context("the backup's credential is not UTF-8")?,
        Path::new("membership credential (in the backup)"),
    )?;
    if credential.body().peer_id.to_string() != contents.peer_id {
        bail!(
            "{}: the membership credential names {}, but the backup is of {}",
            args.file.display(),
            credential.body().peer_id,
            contents.peer_id
        );
    }
    let anchors: Vec<&[u8]> = contents.files(FileRole::Anchor).collect();

    let staging = Staging::new(&args.dir)?;
    let root = staging.path().to_owned();
    // Every path is the default, inside the new directory.
    config.node_key = DEFAULT_NODE_KEY.into();
    config.credential = DEFAULT_CREDENTIAL.into();
    config.data_dir = DEFAULT_DATA_DIR.into();
    config.sealed_dir = DEFAULT_SEALED_DIR.into();
    config.export_dir = DEFAULT_EXPORT_DIR.into();
    config.api_cert = DEFAULT_API_CERT.into();
    config.api_key = DEFAULT_API_KEY.into();
    config.anchors = (0..anchors.len())
        .map(|i| match i {
            0 => DEFAULT_ANCHOR.into(),
            n => format!("anchor-{}.pub", n + 1).into(),
        })
        .collect();
    for (name, data) in config.anchors.iter().zip(&anchors) {
        staging.write(&name.to_string_lossy(), data, 0o644)?;
    }
    staging.write(DEFAULT_CREDENTIAL, credential_bytes, 0o644)?;

    let mut notes = Vec::new();
    let api_cert = contents.files(FileRole::ApiCert).next();
    match (&secrets, api_cert) {
        (Some(s), Some(cert)) if s.api_key.is_some() => {
            staging.write(DEFAULT_API_CERT, cert, 0o644)?;
            if let Some(k) = &s.api_key {
                staging.write(DEFAULT_API_KEY, k, 0o600)?;
            }
        }
        _ => {
            let made = api_tls::self_signed(api_tls::subject_names(config.grpc))?;
            staging.write(DEFAULT_API_CERT, made.cert_pem.as_bytes(), 0o644)?;
            staging.write(DEFAULT_API_KEY, made.key_pem.as_bytes(), 0o600)?;
            let fp = api_tls::fingerprint(made.cert_pem.as_bytes(), "the API certificate")?;
            notes.push(format!(
                "new self-signed API certificate api.crt (the backup has no API key), SHA-256 {fp}: send it to researchers again"
            ));
        }
    }
    match secrets.as_ref().and_then(|s| s.admin_token.as_ref()) {
        Some(token) => staging.write(ADMIN_TOKEN_FILE, token, 0o600)?,
        None => {
            let token = AdminToken::generate()?;
            config.admin_token_blake3 = token.blake3_hex();
            staging.write(
                ADMIN_TOKEN_FILE,
                format!("{}\n", token.as_str()).as_bytes(),
                0o600,
            )?;
            notes.push("new administrator token in admin.token".into());
        }
    }
    match &secrets {
        Some(s) => staging.write(DEFAULT_NODE_KEY, &s.node_key, 0o600)?,
        None => notes.push(format!(
            "the backup holds no node key: copy the node key of PeerId {} to {} (mode 0600) before `bayspace run`",
            contents.peer_id,
            args.dir.join(DEFAULT_NODE_KEY).display()
        )),
    }
    staging.write(CONFIG_FILE, config.render().as_bytes(), 0o644)?;
    drop(SledStore::create_from(
        &root.join(DEFAULT_DATA_DIR),
        &contents.store,
    )?);
    let dir = staging.finish()?;

    let entries: usize = contents.store.trees.iter().map(|t| t.entries.len()).sum();
    println!(
        "restored {} into {}: PeerId {}, backup of {}, {} trees, {entries} entries",
        args.file.display(),
        dir.display(),
        contents.peer_id,
        contents.created,
        contents.store.trees.len()
    );
    println!("signed by the node key {}", backup::peer_id_of(&signer));
    for n in notes {
        println!("{n}");
    }
    Ok(ExitCode::SUCCESS)
}

/// The restored node key must be the one that signed the backup.
fn check_node_key(key_file: &[u8], peer_id: &str) -> anyhow::Result<()> {
    let text = std::str::from_utf8(key_file).context("the node key in the backup is not text")?;
    let key = NodeKey::parse(text, Path::new("node.key (in the backup)"))?;
    if key.peer_id().to_string() != peer_id {
        bail!(
            "the node key in the backup is of {}, but the backup is of {peer_id}",
            key.peer_id()
        );
    }
    Ok(())
}
