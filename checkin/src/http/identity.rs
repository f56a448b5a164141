//! Device authentication by TLS client certificate (optional): the device presents the
//! identity certificate installed with its MDM profile, issued by the CA given with
//! `--device-ca`, whose subject common name is the device's UDID. Every device request must
//! then come over such a connection, and the UDID in the message must match the certificate.
//!
//! Failures answer 403, never 401 (a 401 tells a device its enrollment is void).

use x509_parser::prelude::{FromDer, X509Certificate};

/// How device requests are authenticated.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum DeviceAuth {
    /// No check (the default; put the server behind a trusted network or proxy).
    #[default]
    Off,
    /// A verified TLS client certificate whose subject CN equals the message's UDID.
    ClientCertificateCn,
}

/// The verified client certificate of a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentity {
    /// Subject common name, if the certificate has one.
    pub common_name: Option<String>,
    /// The subject, for messages.
    pub subject: String,
}

impl PeerIdentity {
    /// From the DER of the client's end-entity certificate (already verified by rustls).
    pub fn from_der(der: &[u8]) -> Option<Self> {
        let (_, cert) = X509Certificate::from_der(der).ok()?;
        let subject = cert.subject();
        let common_name = subject
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .map(str::to_owned);
        Some(PeerIdentity {
            common_name,
            subject: subject.to_string(),
        })
    }
}
