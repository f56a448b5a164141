//! Is an identity certificate one the device CA issued? The chain to the built-in device CA
//! and `--device-ca` (one or more roots) through `--device-intermediates` (optional), each signature, validity at the
//! time given, and the clientAuth extended key usage when the certificate has an EKU
//! extension — by rustls-webpki, the verifier rustls itself uses.
//!
//! Certificates that arrive with a request (inside a signature or a TLS chain) are never used
//! as intermediates: only configured ones are.

use std::path::{Path, PathBuf};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, TrustAnchor, UnixTime};
use time::OffsetDateTime;
use webpki::{EndEntityCert, KeyUsage};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::{DeviceIdentity, Refusal};

/// The device CA cannot be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrustError {
    /// A file could not be read.
    #[error("cannot read {path}: {cause}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        cause: std::io::Error,
    },
    /// The file holds no usable certificate.
    #[error("{path}: {detail}")]
    Certificate {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
}

/// The device CA roots and intermediates.
#[derive(Debug, Clone)]
pub struct DeviceTrust {
    anchors: Vec<TrustAnchor<'static>>,
    intermediates: Vec<CertificateDer<'static>>,
}

impl DeviceTrust {
    /// From DER certificates: `roots` (at least one) and `intermediates`.
    pub fn new(
        roots: &[CertificateDer<'_>],
        intermediates: Vec<CertificateDer<'static>>,
    ) -> Result<DeviceTrust, String> {
        if roots.is_empty() {
            return Err("no CA certificate".into());
        }
        let anchors = roots
            .iter()
            .map(|der| {
                webpki::anchor_from_trusted_cert(der)
                    .map(|a| a.to_owned())
                    .map_err(|e| format!("not a usable CA certificate: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(DeviceTrust {
            anchors,
            intermediates,
        })
    }

    /// The roots' subjects (DER of each `Name`'s contents), for TLS certificate requests.
    pub fn root_subjects(&self) -> Vec<Vec<u8>> {
        self.anchors.iter().map(|a| a.subject.to_vec()).collect()
    }

    /// From PEM files: `--device-ca` and optionally `--device-intermediates`.
    pub fn from_pem_files(
        ca: &Path,
        intermediates: Option<&Path>,
    ) -> Result<DeviceTrust, TrustError> {
        let roots = read_pem_certificates(ca)?;
        let intermediates = match intermediates {
            Some(path) => read_pem_certificates(path)?,
            None => Vec::new(),
        };
        DeviceTrust::new(&roots, intermediates).map_err(|detail| TrustError::Certificate {
            path: ca.to_owned(),
            detail,
        })
    }

    /// The built-in device CA (`builtin`, DER) and any `--device-ca` roots and
    /// `--device-intermediates` besides: a device certificate of either is trusted.
    pub fn with_builtin(
        builtin: &[u8],
        ca: Option<&Path>,
        intermediates: Option<&Path>,
    ) -> Result<DeviceTrust, TrustError> {
        let mut roots = vec![CertificateDer::from(builtin.to_vec())];
        if let Some(path) = ca {
            roots.extend(read_pem_certificates(path)?);
        }
        let intermediates = match intermediates {
            Some(path) => read_pem_certificates(path)?,
            None => Vec::new(),
        };
        DeviceTrust::new(&roots, intermediates).map_err(|detail| TrustError::Certificate {
            path: ca.map_or_else(|| PathBuf::from("(the built-in device CA)"), Path::to_owned),
            detail,
        })
    }

    /// Verifies `der` as a device identity at `now`.
    pub fn verify(&self, der: &[u8], now: OffsetDateTime) -> Result<DeviceIdentity, Refusal> {
        let (_, parsed) = X509Certificate::from_der(der).map_err(|e| Refusal::Untrusted {
            subject: "(unparseable)".into(),
            detail: format!("the certificate does not parse: {e}"),
        })?;
        let subject = parsed.subject().to_string();
        let cert = CertificateDer::from(der);
        let end_entity = EndEntityCert::try_from(&cert).map_err(|e| Refusal::Untrusted {
            subject: subject.clone(),
            detail: e.to_string(),
        })?;
        let secs = u64::try_from(now.unix_timestamp()).unwrap_or(0);
        let time = UnixTime::since_unix_epoch(std::time::Duration::from_secs(secs));
        end_entity
            .verify_for_usage(
                webpki::ALL_VERIFICATION_ALGS,
                &self.anchors,
                &self.intermediates,
                time,
                KeyUsage::client_auth(),
                None,
                None,
            )
            .map_err(|e| refusal(e, &subject))?;
        let validity = parsed.validity();
        let at =
            |t: i64| OffsetDateTime::from_unix_timestamp(t).unwrap_or(OffsetDateTime::UNIX_EPOCH);
        let enrollment_id = parsed
            .subject()
            .iter_organizational_unit()
            .next()
            .and_then(|ou| ou.as_str().ok())
            .map(str::to_owned);
        Ok(DeviceIdentity {
            sha256: sha256(der),
            subject,
            serial: hex::encode_upper(parsed.raw_serial()),
            not_before: at(validity.not_before.timestamp()),
            not_after: at(validity.not_after.timestamp()),
            enrollment_id,
        })
    }
}

/// SHA-256 of a certificate's DER.
pub fn sha256(der: &[u8]) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

#[allow(deprecated)] // `RequiredEkuNotFound` is still produced by some paths.
fn refusal(err: webpki::Error, subject: &str) -> Refusal {
    use webpki::Error as E;
    let subject = subject.to_owned();
    let date = |t: UnixTime| {
        OffsetDateTime::from_unix_timestamp(t.as_secs() as i64)
            .map(super::rfc3339)
            .unwrap_or_else(|_| t.as_secs().to_string())
    };
    match err {
        E::CertExpired { time, not_after } => Refusal::Expired {
            subject,
            detail: format!("expired on {} (now {})", date(not_after), date(time)),
        },
        E::CertNotValidYet { time, not_before } => Refusal::Expired {
            subject,
            detail: format!("not valid before {} (now {})", date(not_before), date(time)),
        },
        E::RequiredEkuNotFound | E::RequiredEkuNotFoundContext(_) => {
            Refusal::NotForClientAuth { subject }
        }
        other => Refusal::Untrusted {
            subject,
            detail: other.to_string(),
        },
    }
}

fn read_pem_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TrustError> {
    let pem = std::fs::read(path).map_err(|cause| TrustError::Read {
        path: path.to_owned(),
        cause,
    })?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TrustError::Certificate {
            path: path.to_owned(),
            detail: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TrustError::Certificate {
            path: path.to_owned(),
            detail: "the file has no CERTIFICATE block".into(),
        });
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    fn pem(name: &str) -> CertificateDer<'static> {
        CertificateDer::from_pem_slice(magicpush_fixtures::mdm_signature(name)).unwrap()
    }

    fn trust() -> DeviceTrust {
        DeviceTrust::new(&[pem("device-ca.pem")], Vec::new()).unwrap()
    }

    const NOW: OffsetDateTime = datetime!(2030-01-01 0:00 UTC);

    #[test]
    fn devices_of_the_ca_verify_with_their_details() {
        for cert in [
            pem("device-rsa.pem"),
            pem("device-ec.pem"),
            pem("device-p384.pem"),
        ] {
            let id = trust().verify(&cert, NOW).unwrap();
            assert_eq!(id.sha256, sha256(&cert));
            assert!(id.subject.contains("CN=device-"), "{}", id.subject);
            assert!(!id.serial.is_empty() && id.serial.chars().all(|c| c.is_ascii_hexdigit()));
            assert!(id.not_before < NOW && NOW < id.not_after);
        }
    }

    #[test]
    fn another_ca_a_wrong_eku_and_time_are_refused() {
        let foreign = trust().verify(&pem("device-foreign.pem"), NOW).unwrap_err();
        assert_eq!(foreign.reason(), "untrusted", "{foreign}");
        let eku = trust()
            .verify(&pem("device-server-eku.pem"), NOW)
            .unwrap_err();
        assert_eq!(eku.reason(), "not_client_auth", "{eku}");
        let ec = pem("device-ec.pem");
        let expired = trust()
            .verify(&ec, datetime!(2200-01-01 0:00 UTC))
            .unwrap_err();
        assert_eq!(expired.reason(), "expired", "{expired}");
        assert!(expired.to_string().contains("expired on"), "{expired}");
        let early = trust()
            .verify(&ec, datetime!(2020-01-01 0:00 UTC))
            .unwrap_err();
        assert_eq!(early.reason(), "expired", "{early}");
        let junk = trust().verify(b"\x30\x03\x02\x01\x01", NOW).unwrap_err();
        assert_eq!(junk.reason(), "untrusted");
        // The CA itself is no device identity.
        let ca = trust().verify(&pem("device-ca.pem"), NOW).unwrap_err();
        assert_eq!(ca.reason(), "untrusted", "{ca}");
    }

    #[test]
    fn the_other_ca_as_a_second_root_is_accepted() {
        let both =
            DeviceTrust::new(&[pem("device-ca.pem"), pem("other-ca.pem")], Vec::new()).unwrap();
        assert!(both.verify(&pem("device-foreign.pem"), NOW).is_ok());
        assert!(DeviceTrust::new(&[], Vec::new()).is_err());
    }
}
