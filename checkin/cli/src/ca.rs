//! The built-in device CA: loaded or created by `serve` at start, shown by `magicpush ca
//! show`.
//!
//! - `--data-dir D` (SQLite): `D/device-ca.pem` and `D/device-ca.key.pem` (mode 0600). The
//!   key is written first and the certificate last, each atomically: a CA exists once its
//!   certificate does. The data directory is locked by the one server on it.
//! - `--database-url` (PostgreSQL): in the database (`device_ca`), the key sealed with
//!   `--secrets-key-file`. Nodes starting together each offer a new CA; the first committed is
//!   kept and every node reads that one back.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context};
use magicpush_scep::DeviceCa;
use magicpush_store::{SecretKey, Store, StoredDeviceCa};

use super::secret_arg::SecretArg;

/// The CA certificate's file in a data directory.
pub(crate) const CERT_FILE: &str = "device-ca.pem";
/// The CA key's file in a data directory.
pub(crate) const KEY_FILE: &str = "device-ca.key.pem";
/// The organisation in a new CA's subject.
const ORGANISATION: &str = "magicpush";

/// Where the CA lives.
pub(crate) enum CaHome<'a> {
    /// A data directory's files.
    Dir(&'a Path),
    /// The shared store.
    Store(&'a dyn Store),
}

/// The CA kept in `home`, if any.
pub(crate) async fn load(home: &CaHome<'_>) -> anyhow::Result<Option<DeviceCa>> {
    match home {
        CaHome::Dir(dir) => {
            let cert_path = dir.join(CERT_FILE);
            let cert = match std::fs::read_to_string(&cert_path) {
                Ok(text) => text,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(e) => {
                    return Err(e).with_context(|| format!("cannot read {}", cert_path.display()))
                }
            };
            let key_path = dir.join(KEY_FILE);
            let key = std::fs::read_to_string(&key_path)
                .with_context(|| format!("cannot read {}", key_path.display()))?;
            let ca = DeviceCa::from_pem(&cert, &key).with_context(|| {
                format!(
                    "the device CA in {} and {} cannot be used",
                    cert_path.display(),
                    key_path.display()
                )
            })?;
            Ok(Some(ca))
        }
        CaHome::Store(store) => {
            let Some(stored) = store
                .device_ca()
                .await
                .context("cannot read the device CA from the database")?
            else {
                return Ok(None);
            };
            Ok(Some(from_stored(&stored)?))
        }
    }
}

fn from_stored(stored: &StoredDeviceCa) -> anyhow::Result<DeviceCa> {
    let key = std::str::from_utf8(stored.key_pem.expose())
        .context("the device CA's key in the database is not PEM")?;
    DeviceCa::from_pem(&stored.cert_pem, key)
        .context("the device CA in the database cannot be used")
}

/// The CA kept in `home`, created there first when there is none (logged once, with its
/// fingerprint).
pub(crate) async fn load_or_create(home: &CaHome<'_>) -> anyhow::Result<DeviceCa> {
    if let Some(ca) = load(home).await? {
        tracing::info!(sha256 = %ca.fingerprint_sha256(), "built-in device CA loaded");
        if let Some(advice) = key_usage_advice(&ca) {
            tracing::warn!("{advice}");
        }
        return Ok(ca);
    }
    let made = tokio::task::spawn_blocking(|| {
        DeviceCa::generate(
            ORGANISATION,
            std::time::SystemTime::now(),
            &mut magicpush_scep::rand_core::OsRng,
        )
    })
    .await
    .context("the device CA's generation failed")?
    .context("cannot create the device CA")?;
    let ca = match home {
        CaHome::Dir(dir) => {
            magicpush_store::private::write_private(
                dir,
                KEY_FILE,
                made.private_key_pem().as_bytes(),
            )
            .with_context(|| format!("cannot write {}", dir.join(KEY_FILE).display()))?;
            magicpush_store::private::write_private(
                dir,
                CERT_FILE,
                made.certificate_pem().as_bytes(),
            )
            .with_context(|| format!("cannot write {}", dir.join(CERT_FILE).display()))?;
            tracing::info!(
                sha256 = %made.fingerprint_sha256(),
                cert = %dir.join(CERT_FILE).display(),
                "built-in device CA created"
            );
            made
        }
        CaHome::Store(store) => {
            let offered = StoredDeviceCa {
                cert_pem: made.certificate_pem(),
                key_pem: magicpush_store::enrollment::Secret::new(
                    made.private_key_pem().as_bytes().to_vec(),
                ),
                created_at: magicpush_store::truncate_ms(time::OffsetDateTime::now_utc()),
            };
            let kept = store
                .create_device_ca(&offered)
                .await
                .context("cannot keep the device CA in the database")?;
            if kept.cert_pem == offered.cert_pem {
                tracing::info!(sha256 = %made.fingerprint_sha256(), "built-in device CA created in the database");
                made
            } else {
                let ca = from_stored(&kept)?;
                tracing::info!(sha256 = %ca.fingerprint_sha256(), "built-in device CA loaded (another node created it)");
                ca
            }
        }
    };
    Ok(ca)
}

/// What to do about a CA certificate without the key usages RFC 8894 asks of a SCEP CA (one
/// created before magicpush set them), or `None` when it has them.
fn key_usage_advice(ca: &DeviceCa) -> Option<String> {
    let missing = ca.missing_key_usages();
    if missing.is_empty() {
        return None;
    }
    Some(format!(
        "the built-in device CA's certificate lacks keyUsage {} (RFC 8894 §2.1.2), which Apple's \
         SCEP client may require: it was created before magicpush set them. If no device has \
         enrolled through /scep yet, stop serve, delete {CERT_FILE} and {KEY_FILE} from the data \
         directory (on PostgreSQL: the device_ca row) and start again for a new CA; devices \
         enrolled with the old one must then enroll again",
        missing.join(" and ")
    ))
}

/// `magicpush ca`.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum CaCommand {
    /// Print the built-in device CA's certificate (PEM) and fingerprints. Creates nothing:
    /// `serve` creates the CA at its first start.
    Show(ShowArgs),
}

/// `magicpush ca show`.
#[derive(Debug, clap::Args)]
pub(crate) struct ShowArgs {
    /// The server's data directory (SQLite).
    #[arg(long, env = "MAGICPUSH_DATA_DIR", conflicts_with = "database_url")]
    data_dir: Option<PathBuf>,
    /// The server's database (PostgreSQL).
    #[arg(long, env = "MAGICPUSH_DATABASE_URL", requires = "secrets_key_file")]
    database_url: Option<SecretArg>,
    /// The secrets key the database's CA key is sealed with.
    #[arg(long, env = "MAGICPUSH_SECRETS_KEY_FILE")]
    secrets_key_file: Option<PathBuf>,
    /// JSON: `{"certificate_pem", "sha256", "sha1", "missing_key_usages"}`.
    #[arg(long)]
    json: bool,
}

pub(crate) fn run(command: CaCommand) -> anyhow::Result<ExitCode> {
    let CaCommand::Show(args) = command;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let ca = runtime.block_on(async {
        match (&args.data_dir, &args.database_url, &args.secrets_key_file) {
            (Some(dir), None, _) => {
                let ca = load(&CaHome::Dir(dir)).await?;
                ca.with_context(|| {
                    format!(
                        "no device CA in {}: `magicpush serve --data-dir {}` creates it at its first start",
                        dir.display(),
                        dir.display()
                    )
                })
            }
            (None, Some(url), Some(key)) => {
                let key = Arc::new(SecretKey::from_file(key)?);
                let store = magicpush_postgres::PostgresStore::open(url.expose(), key)
                    .await
                    .context("cannot open the database (--database-url)")?;
                let ca = load(&CaHome::Store(&store)).await?;
                ca.context("no device CA in the database: `magicpush serve --database-url …` creates it at its first start")
            }
            _ => bail!("give --data-dir, or --database-url with --secrets-key-file"),
        }
    })?;
    if args.json {
        let json = serde_json::json!({
            "certificate_pem": ca.certificate_pem(),
            "sha256": ca.fingerprint_sha256(),
            "sha1": ca.fingerprint_sha1(),
            "missing_key_usages": ca.missing_key_usages(),
        });
        println!("{json:#}");
    } else {
        print!("{}", ca.certificate_pem());
        println!("SHA-256 fingerprint: {}", ca.fingerprint_sha256());
        println!("SHA-1 fingerprint: {}", ca.fingerprint_sha1());
        if let Some(advice) = key_usage_advice(&ca) {
            println!("WARNING: {advice}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
