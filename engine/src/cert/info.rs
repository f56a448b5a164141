//! What a push certificate says: parsed from DER with x509-parser, no private key involved.

use std::fmt;

use rustls_pki_types::CertificateDer;
use time::OffsetDateTime;
use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::FromDer as _;

use super::dn;
use super::error::CertError;
use super::key::key_algorithm;
use super::load;

/// OID of the subject's UID attribute, which carries the APNs topic.
pub const UID_OID: &str = "0.9.2342.19200300.100.1.1";
/// Prefix of every MDM push topic.
pub const MDM_TOPIC_PREFIX: &str = "com.apple.mgmt.";
/// Apple's extension marking a push certificate for the development environment.
pub const DEVELOPMENT_EXT_OID: &str = "1.2.840.113635.100.6.3.1";
/// Apple's extension marking a push certificate for the production environment.
pub const PRODUCTION_EXT_OID: &str = "1.2.840.113635.100.6.3.2";

/// The APNs environments a certificate is marked for by Apple's extensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Environment {
    /// Only 1.2.840.113635.100.6.3.2 (what MDM push certificates carry).
    Production,
    /// Only 1.2.840.113635.100.6.3.1.
    Development,
    /// Both extensions.
    DevelopmentAndProduction,
    /// Neither extension (e.g. a certificate made by another tool).
    Unspecified,
}

impl Environment {
    /// Short lowercase name: `production`, `development`, `development+production`,
    /// `unspecified`.
    pub fn as_str(self) -> &'static str {
        match self {
            Environment::Production => "production",
            Environment::Development => "development",
            Environment::DevelopmentAndProduction => "development+production",
            Environment::Unspecified => "unspecified",
        }
    }
}

impl fmt::Display for Environment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The parsed facts of an MDM push certificate. Constructing one checks that the certificate
/// is an MDM push certificate (UID attribute starting `com.apple.mgmt.`).
#[derive(Clone, PartialEq, Eq)]
pub struct CertificateInfo {
    der: CertificateDer<'static>,
    subject: String,
    issuer: String,
    topic: String,
    common_name: Option<String>,
    serial: String,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    environment: Environment,
    spki: Vec<u8>,
    key_algorithm: &'static str,
}

impl CertificateInfo {
    /// Parses the first certificate of a PEM text (or, if the input is not PEM, DER).
    pub fn from_pem(cert_pem: &[u8]) -> Result<CertificateInfo, CertError> {
        let first = load::pem_certificates(cert_pem)?
            .into_iter()
            .next()
            .ok_or(CertError::NoCertificate)?;
        CertificateInfo::from_der(first)
    }

    /// Reads and parses a PEM (or DER) certificate file.
    pub fn from_pem_file(path: impl AsRef<std::path::Path>) -> Result<CertificateInfo, CertError> {
        let path = path.as_ref();
        let bytes = load::read(path)?;
        CertificateInfo::from_pem(&bytes).map_err(|e| e.in_file(path))
    }

    /// Parses one DER certificate.
    pub fn from_der(der: impl Into<CertificateDer<'static>>) -> Result<CertificateInfo, CertError> {
        let der = der.into();
        let (rest, cert) =
            X509Certificate::from_der(&der).map_err(|e| CertError::InvalidCertificate {
                reason: e.to_string(),
            })?;
        if !rest.is_empty() {
            return Err(CertError::InvalidCertificate {
                reason: format!("{} trailing bytes after the certificate", rest.len()),
            });
        }
        let subject = dn::openssl_oneline(cert.subject());
        let uid = first_attr(&cert, UID_OID);
        let topic = match uid {
            Some(uid) if uid.starts_with(MDM_TOPIC_PREFIX) => uid,
            uid => return Err(CertError::NotMdmCertificate { subject, uid }),
        };
        let validity = cert.validity();
        let info = CertificateInfo {
            subject,
            issuer: dn::openssl_oneline(cert.issuer()),
            topic,
            common_name: first_attr(&cert, "2.5.4.3"),
            serial: serial_hex(cert.raw_serial()),
            not_before: validity.not_before.to_datetime(),
            not_after: validity.not_after.to_datetime(),
            environment: environment(&cert),
            spki: cert.public_key().raw.to_vec(),
            key_algorithm: key_algorithm(&cert.public_key().algorithm.algorithm.to_id_string()),
            der: der.clone(),
        };
        Ok(info)
    }

    /// The certificate, DER.
    pub fn der(&self) -> &CertificateDer<'static> {
        &self.der
    }

    /// Subject DN as `openssl x509 -noout -subject` prints it, e.g.
    /// `C = JP, CN = APSP:<uuid>, UID = com.apple.mgmt.External.<uuid>`.
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// Issuer DN, same style as [`CertificateInfo::subject`].
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The APNs topic: the subject's UID attribute (`com.apple.mgmt.External.<uuid>`).
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The subject's common name (`APSP:<uuid>` for push certificates), if any.
    pub fn common_name(&self) -> Option<&str> {
        self.common_name.as_deref()
    }

    /// The `<uuid>` of an `APSP:<uuid>` common name, if the common name has that form. This
    /// is what the Apple Push Certificates Portal lists.
    pub fn apsp_uuid(&self) -> Option<&str> {
        self.common_name.as_deref()?.strip_prefix("APSP:")
    }

    /// Serial number in uppercase hex without separators, as `openssl x509 -noout -serial`
    /// prints it (e.g. `7A6A46CBD7C36D56…`).
    pub fn serial(&self) -> &str {
        &self.serial
    }

    /// Start of validity.
    pub fn not_before(&self) -> OffsetDateTime {
        self.not_before
    }

    /// End of validity (the certificate is valid through this instant).
    pub fn not_after(&self) -> OffsetDateTime {
        self.not_after
    }

    /// The APNs environment from Apple's extensions.
    pub fn environment(&self) -> Environment {
        self.environment
    }

    /// The certificate's SubjectPublicKeyInfo, DER.
    pub fn spki_der(&self) -> &[u8] {
        &self.spki
    }

    /// The public key algorithm: `RSA`, `EC`, `Ed25519` or the dotted OID.
    pub fn key_algorithm(&self) -> &'static str {
        self.key_algorithm
    }

    /// Whole days until `not_after`, rounded down: 0 on the last day, negative once expired
    /// (−1 during the first day after expiry).
    pub fn days_left(&self, now: OffsetDateTime) -> i64 {
        (self.not_after - now).whole_seconds().div_euclid(86_400)
    }

    /// Whether `now` is after `not_after`.
    pub fn is_expired(&self, now: OffsetDateTime) -> bool {
        now > self.not_after
    }

    /// Whether `now` is before `not_before`.
    pub fn is_not_yet_valid(&self, now: OffsetDateTime) -> bool {
        now < self.not_before
    }

    /// Whether `now` is within the validity period (inclusive at both ends).
    pub fn is_valid_at(&self, now: OffsetDateTime) -> bool {
        !self.is_expired(now) && !self.is_not_yet_valid(now)
    }

    /// One line identifying the certificate for an administrator: APSP uuid (or subject),
    /// serial and expiry date.
    pub fn identity(&self) -> String {
        let who = match self.apsp_uuid() {
            Some(uuid) => format!("APSP:{uuid}"),
            None => self.subject.clone(),
        };
        format!(
            "{who}, serial {}, expires {}",
            self.serial,
            format_date(self.not_after)
        )
    }
}

impl fmt::Debug for CertificateInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateInfo")
            .field("subject", &self.subject)
            .field("issuer", &self.issuer)
            .field("topic", &self.topic)
            .field("serial", &self.serial)
            .field("not_before", &self.not_before)
            .field("not_after", &self.not_after)
            .field("environment", &self.environment)
            .finish_non_exhaustive()
    }
}

/// `YYYY-MM-DD HH:MM:SS UTC`, the form used in messages.
pub(crate) fn format_date(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

fn first_attr(cert: &X509Certificate<'_>, oid: &str) -> Option<String> {
    cert.subject()
        .iter_attributes()
        .find(|a| a.attr_type().to_id_string() == oid)
        .map(|a| match a.as_str() {
            Ok(s) => s.to_string(),
            Err(_) => String::from_utf8_lossy(a.as_slice()).into_owned(),
        })
}

/// Uppercase hex of the serial's DER content without the sign-padding zero byte.
fn serial_hex(raw: &[u8]) -> String {
    let trimmed = match raw {
        [0, rest @ ..] if !rest.is_empty() => rest,
        other => other,
    };
    if trimmed.is_empty() {
        return "00".to_string();
    }
    hex::encode_upper(trimmed)
}

fn environment(cert: &X509Certificate<'_>) -> Environment {
    let has = |oid: &str| {
        cert.extensions()
            .iter()
            .any(|e| e.oid.to_id_string() == oid)
    };
    match (has(DEVELOPMENT_EXT_OID), has(PRODUCTION_EXT_OID)) {
        (true, true) => Environment::DevelopmentAndProduction,
        (true, false) => Environment::Development,
        (false, true) => Environment::Production,
        (false, false) => Environment::Unspecified,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serial_is_trimmed_of_sign_padding() {
        assert_eq!(serial_hex(&[0x00, 0xa1, 0x02]), "A102");
        assert_eq!(serial_hex(&[0x7a, 0x6a]), "7A6A");
        assert_eq!(serial_hex(&[0x00]), "00");
    }

    #[test]
    fn dates_format_in_utc() {
        let t = time::macros::datetime!(2036-01-01 09:00 +09:00);
        assert_eq!(format_date(t), "2036-01-01 00:00:00 UTC");
    }
}
