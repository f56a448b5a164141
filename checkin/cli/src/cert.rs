//! `magicpush cert …`: inspect and identify a push certificate, check a renewal before
//! registering it, issue a request (CSR, vendor-signed or not), sign a customer's CSR as the
//! vendor.
//!
//! Exit status: 0 when all is well; 1 when the certificate cannot be read, is not an MDM push
//! certificate, its key does not match (after printing what was found), or the renewal is
//! refused (E320 for another topic).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use magicpush_engine::cert::{self, CertError, CertificateInfo, PushCertificate};

use super::secret_arg::SecretArg;
use magicpush_server::pushcert::request::{self, Subject, VendorIdentity};
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
    /// Issue a push certificate request offline: a new RSA-2048 key (mode 0600) and the
    /// request file to upload to the Apple Push Certificates Portal (vendor-signed with
    /// --vendor-cert/--vendor-key, else a PEM CSR for a vendor's signing service).
    Csr(CsrArgs),
    /// The MDM vendor's side: sign a customer's CSR into the request Apple's portal takes.
    SignRequest(SignRequestArgs),
    /// Print what the manual says to compare with the portal's certificate list: the APSP id,
    /// the serial number, the expiry date (also as the portal writes it) and the topic.
    Identify(IdentifyArgs),
}

/// The vendor's signing identity.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct VendorArgs {
    /// The MDM vendor certificate (PEM) Apple issued.
    #[arg(long, env = "MAGICPUSH_VENDOR_CERT", requires = "vendor_key")]
    vendor_cert: Option<PathBuf>,
    /// Its RSA private key (PEM).
    #[arg(long, env = "MAGICPUSH_VENDOR_KEY", requires = "vendor_cert")]
    vendor_key: Option<PathBuf>,
    /// Its chain (PEM), appended to PushCertCertificateChain.
    #[arg(long, env = "MAGICPUSH_VENDOR_CHAIN")]
    vendor_chain: Option<PathBuf>,
    /// The vendor name in the file name (default: from the vendor certificate, else
    /// MAGICPUSH).
    #[arg(long, env = "MAGICPUSH_VENDOR_NAME")]
    vendor_name: Option<String>,
}

impl VendorArgs {
    fn load(&self) -> anyhow::Result<Option<VendorIdentity>> {
        match (&self.vendor_cert, &self.vendor_key) {
            (Some(cert), Some(key)) => Ok(Some(super::serve::load_vendor(
                cert,
                key,
                self.vendor_chain.as_deref(),
                self.vendor_name.as_deref(),
            )?)),
            _ => Ok(None),
        }
    }
}

#[derive(Debug, clap::Args)]
pub(crate) struct CsrArgs {
    /// Directory for the key (`<file name>.key`, 0600) and the request file.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// The request's e-mail address.
    #[arg(long, env = "MAGICPUSH_CSR_EMAIL")]
    email: Option<String>,
    /// The request's common name (e.g. the company).
    #[arg(long = "cn", env = "MAGICPUSH_CSR_CN")]
    common_name: Option<String>,
    /// The request's country (two letters).
    #[arg(long, env = "MAGICPUSH_CSR_COUNTRY")]
    country: Option<String>,
    #[command(flatten)]
    vendor: VendorArgs,
}

#[derive(Debug, clap::Args)]
pub(crate) struct SignRequestArgs {
    /// The MDM vendor certificate (PEM).
    #[arg(long, env = "MAGICPUSH_VENDOR_CERT")]
    vendor_cert: PathBuf,
    /// Its RSA private key (PEM).
    #[arg(long, env = "MAGICPUSH_VENDOR_KEY")]
    vendor_key: PathBuf,
    /// Its chain (PEM), appended to PushCertCertificateChain.
    #[arg(long, env = "MAGICPUSH_VENDOR_CHAIN")]
    vendor_chain: Option<PathBuf>,
    /// The customer's CSR (PEM or DER).
    #[arg(long)]
    csr: PathBuf,
    /// Where to write the vendor-signed request.
    #[arg(long)]
    out: PathBuf,
}

#[derive(Debug, clap::Args)]
pub(crate) struct IdentifyArgs {
    /// The push certificate (PEM or DER), as downloaded from the portal.
    cert: PathBuf,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
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
    /// Password of a PKCS#12 file (`--password ''` for an empty one). Prefer
    /// MAGICPUSH_P12_PASSWORD: a command line is visible to every local user.
    #[arg(long, env = "MAGICPUSH_P12_PASSWORD", hide_env_values = true)]
    password: Option<SecretArg>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// Evaluate days left and expiry at this RFC 3339 time instead of now.
    #[arg(long, value_parser = parse_rfc3339, value_name = "RFC3339")]
    at: Option<OffsetDateTime>,
    /// Exit 0 for an expired (or not yet valid) certificate too: by default such a
    /// certificate is printed and the exit status is 3, so that scripts notice.
    #[arg(long)]
    allow_expired: bool,
}

/// Exit status of `cert inspect` for a certificate that is expired or not yet valid.
const UNUSABLE_NOW: u8 = 3;

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
        CertCommand::Csr(args) => csr(args),
        CertCommand::SignRequest(args) => sign_request(args),
        CertCommand::Identify(args) => identify(args),
    }
}

fn csr(args: CsrArgs) -> anyhow::Result<ExitCode> {
    let vendor = args.vendor.load()?;
    let subject = Subject {
        email: args.email,
        common_name: args.common_name,
        country: args.country,
    };
    let issued = request::issue(
        &subject,
        vendor.as_ref(),
        args.vendor.vendor_name.as_deref(),
        OffsetDateTime::now_utc(),
    )?;
    let key_name = format!("{}.key", issued.file_name.trim_end_matches(".csr"));
    let key_pem = request::pem("PRIVATE KEY", &issued.key_pkcs8);
    magicpush_store::private::write_private(&args.out, &key_name, key_pem.as_bytes())
        .with_context(|| format!("cannot write the key in {}", args.out.display()))?;
    magicpush_store::private::write_private(&args.out, &issued.file_name, issued.text.as_bytes())
        .with_context(|| format!("cannot write the request in {}", args.out.display()))?;
    println!("request: {}", args.out.join(&issued.file_name).display());
    println!(
        "key:     {} (keep it: Apple's certificate works only with it)",
        args.out.join(&key_name).display()
    );
    println!("subject: {}", issued.subject);
    if issued.vendor_signed {
        println!("next:    upload the request at https://identity.apple.com (Apple Push Certificates Portal), download the certificate, and register it with the key");
    } else {
        println!("next:    have your MDM vendor sign the CSR (`magicpush cert sign-request` on their side), upload the signed request to the Apple Push Certificates Portal, and register the certificate with the key");
    }
    Ok(ExitCode::SUCCESS)
}

fn sign_request(args: SignRequestArgs) -> anyhow::Result<ExitCode> {
    let vendor = super::serve::load_vendor(
        &args.vendor_cert,
        &args.vendor_key,
        args.vendor_chain.as_deref(),
        None,
    )?;
    let bytes =
        std::fs::read(&args.csr).with_context(|| format!("cannot read {}", args.csr.display()))?;
    let csr = request::read_csr(&bytes).with_context(|| args.csr.display().to_string())?;
    let signed = vendor.sign_request(&csr)?;
    std::fs::write(&args.out, signed.as_bytes())
        .with_context(|| format!("cannot write {}", args.out.display()))?;
    println!(
        "signed request for {}: {}",
        request::csr_subject(&csr)?,
        args.out.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn identify(args: IdentifyArgs) -> anyhow::Result<ExitCode> {
    let bytes = std::fs::read(&args.cert)
        .with_context(|| format!("cannot read {}", args.cert.display()))?;
    let info = if bytes.trim_ascii_start().starts_with(b"-----") {
        CertificateInfo::from_pem(&bytes)
    } else {
        CertificateInfo::from_der(bytes)
    }
    .map_err(|e| with_path(e, &args.cert))?;
    let portal = portal_date(info.not_after());
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "apsp": info.apsp_uuid(),
                "serial": info.serial(),
                "not_after": rfc3339(info.not_after()),
                "expires": portal,
                "topic": info.topic(),
            }))?
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "APSP:     {}",
        info.apsp_uuid()
            .unwrap_or("(none: not an Apple push certificate)")
    );
    println!("serial:   {}", info.serial());
    println!("expires:  {portal} ({})", rfc3339(info.not_after()));
    println!("topic:    {}", info.topic());
    println!("Compare these with the certificate list of the Apple Push Certificates Portal: renew the one with this serial number and expiry date.");
    Ok(ExitCode::SUCCESS)
}

/// A date as the portal's list writes it: `Mar 13, 2025`.
pub(crate) fn portal_date(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{} {}, {}",
        MONTHS[usize::from(u8::from(t.month())) - 1],
        t.day(),
        t.year()
    )
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
    if !args.allow_expired {
        if info.is_expired(now) {
            eprintln!(
                "error: the certificate {} expired on {}; renew it in the Apple Push Certificates Portal (\"Renew\", same Apple ID). --allow-expired exits 0 anyway",
                info.identity(),
                magicpush_store::rfc3339(info.not_after())
            );
            return Ok(ExitCode::from(UNUSABLE_NOW));
        }
        if info.is_not_yet_valid(now) {
            eprintln!(
                "error: the certificate {} is not valid before {}; check this machine's clock. --allow-expired exits 0 anyway",
                info.identity(),
                magicpush_store::rfc3339(info.not_before())
            );
            return Ok(ExitCode::from(UNUSABLE_NOW));
        }
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
        let cert = PushCertificate::from_pkcs12_file(path, password.expose())?;
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

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    #[test]
    fn portal_dates() {
        assert_eq!(portal_date(datetime!(2025-03-13 08:00 UTC)), "Mar 13, 2025");
        assert_eq!(portal_date(datetime!(2026-12-01 23:59 UTC)), "Dec 1, 2026");
    }
}
