//! `magicpush cert …`: inspect a push certificate, check a renewal before registering it.
//!
//! Exit status: 0 when all is well; 1 when the certificate cannot be read, is not an MDM push
//! certificate, its key does not match (after printing what was found), or the renewal is
//! refused (E320 for another topic).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use magicpush_engine::cert::{self, CertError, CertificateInfo, PushCertificate};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

#[derive(Debug, clap::Subcommand)]
pub(crate) enum CertCommand {
    /// Show what a push certificate says: subject, topic, APSP uuid, serial, validity, and
    /// whether the private key belongs to it.
    Inspect(InspectArgs),
    /// Check that a new push certificate may replace the registered one: same topic, later
    /// expiry, valid now. A different topic is refused with E320.
    CheckRenewal(CheckRenewalArgs),
}

#[derive(Debug, clap::Args)]
pub(crate) struct InspectArgs {
    /// The certificate: PEM (optionally followed by its key), DER, or PKCS#12 (.p12, needs
    /// --password). The format is detected from the content.
    cert: PathBuf,
    /// The private key (PEM or DER: PKCS#8, PKCS#1 RSA or SEC1 EC) to check against the
    /// certificate.
    #[arg(long)]
    key: Option<PathBuf>,
    /// Password of a PKCS#12 file (`--password ''` for an empty one).
    #[arg(long)]
    password: Option<String>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// Evaluate days left and expiry at this RFC 3339 time instead of now.
    #[arg(long, value_parser = parse_rfc3339, value_name = "RFC3339")]
    at: Option<OffsetDateTime>,
}

#[derive(Debug, clap::Args)]
pub(crate) struct CheckRenewalArgs {
    /// The registered (current) certificate, PEM or DER.
    #[arg(long, value_name = "PEM")]
    current: PathBuf,
    /// The new certificate downloaded from the Apple Push Certificates Portal, PEM or DER.
    #[arg(long = "new", value_name = "PEM")]
    candidate: PathBuf,
    /// Check validity at this RFC 3339 time instead of now.
    #[arg(long, value_parser = parse_rfc3339, value_name = "RFC3339")]
    at: Option<OffsetDateTime>,
}

pub(crate) fn run(cmd: CertCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        CertCommand::Inspect(args) => inspect(args),
        CertCommand::CheckRenewal(args) => check_renewal(args),
    }
}

/// Whether the key was checked, and the outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyCheck {
    NotGiven,
    Matches,
    DoesNotMatch,
}

fn inspect(args: InspectArgs) -> anyhow::Result<ExitCode> {
    let now = args.at.unwrap_or_else(OffsetDateTime::now_utc);
    let bytes = std::fs::read(&args.cert)
        .with_context(|| format!("cannot read {}", args.cert.display()))?;
    let (info, key_check) = load_for_inspect(&args, &bytes)?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&to_json(&info, key_check, now))?
        );
    } else {
        print_text(&info, key_check, now);
    }
    if key_check == KeyCheck::DoesNotMatch {
        eprintln!(
            "error: the private key does not belong to this certificate ({}); use the key the certificate signing request was made with",
            info.identity()
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

fn load_for_inspect(
    args: &InspectArgs,
    bytes: &[u8],
) -> anyhow::Result<(CertificateInfo, KeyCheck)> {
    let path = &args.cert;
    let is_pem = bytes.windows(11).any(|w| w == b"-----BEGIN ");
    if !is_pem && (args.password.is_some() || cert::is_probably_pkcs12(bytes)) {
        let Some(password) = &args.password else {
            anyhow::bail!(
                "{} is a PKCS#12 file: give its password with --password (--password '' if it has none)",
                path.display()
            );
        };
        // Loading a PKCS#12 file checks its key against its certificate.
        let cert = PushCertificate::from_pkcs12_file(path, password)?;
        return Ok((cert.info().clone(), KeyCheck::Matches));
    }
    let info = CertificateInfo::from_pem(bytes).map_err(|e| with_path(e, path))?;
    let key_check = match &args.key {
        Some(key) => key_check(PushCertificate::from_pem_files(path, key))?,
        None if is_pem && has_private_key(bytes) => {
            key_check(PushCertificate::from_pem_bundle_file(path))?
        }
        None => KeyCheck::NotGiven,
    };
    Ok((info, key_check))
}

fn key_check(loaded: Result<PushCertificate, CertError>) -> anyhow::Result<KeyCheck> {
    match loaded {
        Ok(_) => Ok(KeyCheck::Matches),
        Err(e) if matches!(e.root(), CertError::KeyMismatch { .. }) => Ok(KeyCheck::DoesNotMatch),
        Err(e) => Err(e.into()),
    }
}

fn has_private_key(pem: &[u8]) -> bool {
    pem.windows(12).any(|w| w == b"PRIVATE KEY-")
}

fn with_path(e: CertError, path: &Path) -> anyhow::Error {
    anyhow::anyhow!("{}: {e}", path.display())
}

fn print_text(info: &CertificateInfo, key_check: KeyCheck, now: OffsetDateTime) {
    let days = info.days_left(now);
    let status = if info.is_expired(now) {
        format!("EXPIRED {} day(s) ago", -days)
    } else if info.is_not_yet_valid(now) {
        "not valid yet".to_string()
    } else {
        format!("valid, {days} day(s) left")
    };
    println!("subject:     {}", info.subject());
    println!("topic:       {}", info.topic());
    println!("apsp_uuid:   {}", info.apsp_uuid().unwrap_or("(none)"));
    println!("serial:      {}", info.serial());
    println!("issuer:      {}", info.issuer());
    println!("not_before:  {}", rfc3339(info.not_before()));
    println!("not_after:   {}", rfc3339(info.not_after()));
    println!("days_left:   {days}");
    println!("status:      {status}");
    println!("environment: {}", info.environment());
    println!(
        "key_matches: {}",
        match key_check {
            KeyCheck::NotGiven => "(no key given)",
            KeyCheck::Matches => "yes",
            KeyCheck::DoesNotMatch => "NO",
        }
    );
}

fn to_json(info: &CertificateInfo, key_check: KeyCheck, now: OffsetDateTime) -> serde_json::Value {
    serde_json::json!({
        "subject": info.subject(),
        "topic": info.topic(),
        "apsp_uuid": info.apsp_uuid(),
        "serial": info.serial(),
        "issuer": info.issuer(),
        "not_before": rfc3339(info.not_before()),
        "not_after": rfc3339(info.not_after()),
        "days_left": info.days_left(now),
        "expired": info.is_expired(now),
        "environment": info.environment().as_str(),
        "key_matches": match key_check {
            KeyCheck::NotGiven => None,
            KeyCheck::Matches => Some(true),
            KeyCheck::DoesNotMatch => Some(false),
        },
    })
}

fn check_renewal(args: CheckRenewalArgs) -> anyhow::Result<ExitCode> {
    let now = args.at.unwrap_or_else(OffsetDateTime::now_utc);
    let current = CertificateInfo::from_pem_file(&args.current)?;
    let candidate = CertificateInfo::from_pem_file(&args.candidate)?;
    match cert::check_renewal(&current, &candidate, now) {
        Ok(()) => {
            println!(
                "OK: {} is a valid renewal of {} (topic {}, {} day(s) left)",
                candidate.identity(),
                current.identity(),
                candidate.topic(),
                candidate.days_left(now)
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("error: {e}");
            Ok(ExitCode::FAILURE)
        }
    }
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_else(|_| format!("{t}"))
}

fn parse_rfc3339(s: &str) -> Result<OffsetDateTime, String> {
    OffsetDateTime::parse(s, &Rfc3339).map_err(|e| format!("not an RFC 3339 time ({e}): {s}"))
}
