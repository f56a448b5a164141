//! One verdict per device request: the identity certificate from the first configured source
//! the request has (`--device-auth`, default `signature,tls`), checked against the device CA.
//! A source that is present and fails refuses the request; the next source is not tried.

use std::fmt;
use std::sync::Arc;

use http::{HeaderMap, HeaderName};
use time::OffsetDateTime;

use super::cache::VerdictCache;
use super::trust::{sha256, DeviceTrust};
use super::{header, signature, Refusal, SharedIdentity};

/// The request header devices sign their bodies in.
pub const MDM_SIGNATURE: &str = "mdm-signature";

/// Where a device's identity certificate comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IdentitySource {
    /// The `Mdm-Signature` header (the MDM payload's `SignMessage`).
    Signature,
    /// The client certificate of the TLS connection.
    Tls,
    /// A header set by a trusted TLS-terminating proxy (`--device-cert-header`).
    Header,
}

impl IdentitySource {
    /// The name used in `--device-auth`.
    pub fn name(self) -> &'static str {
        match self {
            IdentitySource::Signature => "signature",
            IdentitySource::Tls => "tls",
            IdentitySource::Header => "header",
        }
    }
}

impl fmt::Display for IdentitySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A `--device-auth` list that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SourceListError {
    /// A name that is not a source.
    #[error("--device-auth: unknown source {0:?} (expected a comma-separated list of signature, tls, header)")]
    Unknown(String),
    /// Nothing in the list.
    #[error("--device-auth: the list is empty (use --insecure-no-device-auth to turn device authentication off)")]
    Empty,
    /// `header` without the header's name.
    #[error("--device-auth header needs --device-cert-header NAME (the header your TLS proxy puts the client certificate in)")]
    HeaderWithoutName,
}

/// Parses `signature,tls,header` (order kept, duplicates dropped).
pub fn parse_sources(text: &str) -> Result<Vec<IdentitySource>, SourceListError> {
    let mut out = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let source = match part.to_ascii_lowercase().as_str() {
            "signature" => IdentitySource::Signature,
            "tls" => IdentitySource::Tls,
            "header" => IdentitySource::Header,
            _ => return Err(SourceListError::Unknown(part.to_owned())),
        };
        if !out.contains(&source) {
            out.push(source);
        }
    }
    if out.is_empty() {
        return Err(SourceListError::Empty);
    }
    Ok(out)
}

/// Authenticates device requests. Cheap to share (`Arc`).
#[derive(Debug)]
pub struct DeviceAuthenticator {
    sources: Vec<IdentitySource>,
    trust: DeviceTrust,
    cert_header: Option<HeaderName>,
    cache: VerdictCache,
}

impl DeviceAuthenticator {
    /// Checks `sources` in order against `trust`. `cert_header` names the proxy's header and is
    /// required when `sources` has [`IdentitySource::Header`].
    pub fn new(
        sources: Vec<IdentitySource>,
        trust: DeviceTrust,
        cert_header: Option<HeaderName>,
    ) -> Result<DeviceAuthenticator, SourceListError> {
        if sources.is_empty() {
            return Err(SourceListError::Empty);
        }
        if sources.contains(&IdentitySource::Header) && cert_header.is_none() {
            return Err(SourceListError::HeaderWithoutName);
        }
        Ok(DeviceAuthenticator {
            sources,
            trust,
            cert_header,
            cache: VerdictCache::default(),
        })
    }

    /// Replaces the verdict cache (size, recheck window).
    pub fn with_cache(mut self, cache: VerdictCache) -> Self {
        self.cache = cache;
        self
    }

    /// The device CA.
    pub fn trust(&self) -> &DeviceTrust {
        &self.trust
    }

    /// The sources, in order.
    pub fn sources(&self) -> &[IdentitySource] {
        &self.sources
    }

    /// The sources as `--device-auth` writes them.
    pub fn describe(&self) -> String {
        let names: Vec<&str> = self.sources.iter().map(|s| s.name()).collect();
        names.join(",")
    }

    /// The cheap checks that come before the body is read: an oversized `Mdm-Signature` is
    /// refused without looking at it.
    pub fn precheck(&self, headers: &HeaderMap) -> Result<(), Refusal> {
        if self.sources.contains(&IdentitySource::Signature) {
            if let Some(value) = headers.get(MDM_SIGNATURE) {
                if value.len() > super::MAX_SIGNATURE_HEADER {
                    return Err(Refusal::Oversized(value.len()));
                }
            }
        }
        Ok(())
    }

    /// The request's verified identity. `tls_peer` is the DER of the connection's client
    /// certificate, if it presented one; `body` the exact request body.
    pub fn authenticate(
        &self,
        headers: &HeaderMap,
        tls_peer: Option<&[u8]>,
        body: &[u8],
        now: OffsetDateTime,
    ) -> Result<SharedIdentity, Refusal> {
        for source in &self.sources {
            match source {
                IdentitySource::Signature => {
                    if let Some(value) = headers.get(MDM_SIGNATURE) {
                        let cms = signature::decode_header(value.as_bytes())?;
                        let signer = signature::verify_detached(&cms, body)?;
                        return self.trusted(&signer.certificate_der, now);
                    }
                }
                IdentitySource::Tls => {
                    if let Some(der) = tls_peer {
                        return self.trusted(der, now);
                    }
                }
                IdentitySource::Header => {
                    if let Some(name) = &self.cert_header {
                        if let Some(value) = headers.get(name) {
                            let der = header::parse(name.as_str(), value.as_bytes())?;
                            return self.trusted(&der, now);
                        }
                    }
                }
            }
        }
        Err(Refusal::Missing(self.missing_hint()))
    }

    fn missing_hint(&self) -> String {
        let wanted: Vec<String> = self
            .sources
            .iter()
            .map(|s| match s {
                IdentitySource::Signature => {
                    "an Mdm-Signature header (SignMessage in the MDM payload)".to_owned()
                }
                IdentitySource::Tls => "a TLS client certificate".to_owned(),
                IdentitySource::Header => format!(
                    "a {} header from the TLS proxy",
                    self.cert_header.as_ref().map_or("", |h| h.as_str())
                ),
            })
            .collect();
        format!(
            "the request needs {} with the device's identity certificate",
            wanted.join(" or ")
        )
    }

    fn trusted(&self, der: &[u8], now: OffsetDateTime) -> Result<SharedIdentity, Refusal> {
        let hash = sha256(der);
        if let Some(identity) = self.cache.get(&hash, now) {
            return Ok(identity);
        }
        let identity = Arc::new(self.trust.verify(der, now)?);
        self.cache.insert(identity.clone(), now);
        Ok(identity)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_lists() {
        use IdentitySource::*;
        assert_eq!(
            parse_sources("signature,tls").unwrap(),
            vec![Signature, Tls]
        );
        assert_eq!(
            parse_sources(" header , signature,header").unwrap(),
            vec![Header, Signature]
        );
        assert_eq!(parse_sources("TLS").unwrap(), vec![Tls]);
        assert_eq!(parse_sources(""), Err(SourceListError::Empty));
        assert_eq!(parse_sources(" , "), Err(SourceListError::Empty));
        assert!(matches!(
            parse_sources("signature,cn"),
            Err(SourceListError::Unknown(s)) if s == "cn"
        ));
    }
}

#[cfg(test)]
mod flow_tests {
    use base64::Engine as _;
    use http::HeaderValue;
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::CertificateDer;
    use time::macros::datetime;

    use super::*;

    use magicpush_fixtures::mdm_signature as fixture;

    const NOW: OffsetDateTime = datetime!(2030-01-01 0:00 UTC);

    fn body() -> &'static [u8] {
        fixture("body.plist")
    }

    fn authenticator(sources: &str, header: Option<&str>) -> DeviceAuthenticator {
        let ca = CertificateDer::from_pem_slice(fixture("device-ca.pem")).unwrap();
        DeviceAuthenticator::new(
            parse_sources(sources).unwrap(),
            DeviceTrust::new(&[ca], Vec::new()).unwrap(),
            header.map(|h| HeaderName::from_bytes(h.as_bytes()).unwrap()),
        )
        .unwrap()
    }

    fn signed(cms: &[u8]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        let b64 = base64::engine::general_purpose::STANDARD.encode(cms);
        headers.insert(MDM_SIGNATURE, HeaderValue::from_str(&b64).unwrap());
        headers
    }

    #[test]
    fn a_signed_request_is_the_signers_identity_and_is_remembered() {
        let auth = authenticator("signature,tls", None);
        let headers = signed(fixture("ec-sha256.der"));
        let id = auth.authenticate(&headers, None, body(), NOW).unwrap();
        let ec = CertificateDer::from_pem_slice(fixture("device-ec.pem")).unwrap();
        assert_eq!(id.sha256, sha256(&ec));
        assert_eq!(auth.cache.len(), 1);
        let again = auth.authenticate(&headers, None, body(), NOW).unwrap();
        assert!(
            Arc::ptr_eq(&id, &again),
            "the second request uses the kept verdict"
        );
        // A remembered certificate is still checked against the body, and expires.
        assert_eq!(
            auth.authenticate(&headers, None, b"other body", NOW),
            Err(Refusal::DigestMismatch)
        );
        let later = datetime!(2200-01-01 0:00 UTC);
        assert_eq!(
            auth.authenticate(&headers, None, body(), later)
                .unwrap_err()
                .reason(),
            "expired"
        );
    }

    #[test]
    fn each_failure_has_its_reason() {
        let auth = authenticator("signature,tls", None);
        let cases: [(&[u8], &str); 3] = [
            (fixture("foreign.der"), "untrusted"),
            (fixture("server-eku.der"), "not_client_auth"),
            (fixture("two-signers.der"), "signer_count"),
        ];
        for (cms, reason) in cases {
            let got = auth
                .authenticate(&signed(cms), None, body(), NOW)
                .unwrap_err();
            assert_eq!(got.reason(), reason, "{got}");
        }
        let missing = auth
            .authenticate(&HeaderMap::new(), None, body(), NOW)
            .unwrap_err();
        assert_eq!(missing.reason(), "missing");
        assert!(missing.to_string().contains("Mdm-Signature"), "{missing}");
        let mut garbage = HeaderMap::new();
        garbage.insert(MDM_SIGNATURE, HeaderValue::from_static("%%%"));
        assert_eq!(
            auth.authenticate(&garbage, None, body(), NOW)
                .unwrap_err()
                .reason(),
            "malformed"
        );
        let mut big = HeaderMap::new();
        let value = "A".repeat(crate::identity::MAX_SIGNATURE_HEADER + 1);
        big.insert(MDM_SIGNATURE, HeaderValue::from_str(&value).unwrap());
        assert_eq!(auth.precheck(&big).unwrap_err().reason(), "oversized");
        assert!(auth.precheck(&signed(fixture("ec-sha256.der"))).is_ok());
    }

    #[test]
    fn sources_are_tried_in_order_and_only_when_configured() {
        let ec = CertificateDer::from_pem_slice(fixture("device-ec.pem")).unwrap();
        let rsa = CertificateDer::from_pem_slice(fixture("device-rsa.pem")).unwrap();
        // TLS only: a signature is not looked at.
        let tls = authenticator("tls", None);
        let id = tls
            .authenticate(&signed(fixture("rsa-sha256.der")), Some(&ec), body(), NOW)
            .unwrap();
        assert_eq!(id.sha256, sha256(&ec));
        assert_eq!(
            tls.authenticate(&signed(fixture("rsa-sha256.der")), None, body(), NOW)
                .unwrap_err()
                .reason(),
            "missing"
        );
        // signature first: a present signature wins over the TLS certificate.
        let both = authenticator("signature,tls", None);
        let id = both
            .authenticate(&signed(fixture("rsa-sha256.der")), Some(&ec), body(), NOW)
            .unwrap();
        assert_eq!(id.sha256, sha256(&rsa));
        // A failing signature is not rescued by the TLS certificate.
        assert_eq!(
            both.authenticate(&signed(fixture("rsa-sha256.der")), Some(&ec), b"x", NOW),
            Err(Refusal::DigestMismatch)
        );
        // The proxy header, RFC 9440 form.
        let proxy = authenticator("header", Some("client-cert"));
        let mut headers = HeaderMap::new();
        let value = format!(
            ":{}:",
            base64::engine::general_purpose::STANDARD.encode(&rsa)
        );
        headers.insert("client-cert", HeaderValue::from_str(&value).unwrap());
        assert_eq!(
            proxy
                .authenticate(&headers, Some(&ec), body(), NOW)
                .unwrap()
                .sha256,
            sha256(&rsa)
        );
        // Without a name, `header` cannot be configured at all.
        assert_eq!(
            DeviceAuthenticator::new(
                vec![IdentitySource::Header],
                authenticator("tls", None).trust.clone(),
                None
            )
            .map(|_| ())
            .unwrap_err(),
            SourceListError::HeaderWithoutName
        );
    }
}
