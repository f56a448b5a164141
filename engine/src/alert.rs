//! TLS alerts by which a server refuses the client certificate, recognised in the errors
//! rustls reports. Below both the APNs protocol ([`crate::apns`], whose metric labels name
//! them) and the transport (which meets them), and dependent on neither.

/// The alerts [`certificate_alert`] names, as their reason strings.
const CERTIFICATE_ALERTS: &[&str] = &[
    "BadCertificate",
    "CertificateExpired",
    "CertificateRevoked",
    "CertificateUnknown",
    "UnsupportedCertificate",
    "UnknownCA",
    "AccessDenied",
    "CertificateRequired",
];

/// Whether `reason` is one of the TLS alerts [`certificate_alert`] names.
pub(crate) fn is_alert_reason(reason: &str) -> bool {
    CERTIFICATE_ALERTS.contains(&reason)
}

/// A TLS alert from the server that refuses our certificate, by name (`CertificateExpired`,
/// `CertificateRevoked`, `BadCertificate`, …).
pub(crate) fn certificate_alert(err: &std::io::Error) -> Option<&'static str> {
    use rustls::AlertDescription as A;
    let inner = err.get_ref()?;
    let rustls::Error::AlertReceived(alert) = inner.downcast_ref::<rustls::Error>()? else {
        return None;
    };
    let name = match alert {
        A::BadCertificate => "BadCertificate",
        A::CertificateExpired => "CertificateExpired",
        A::CertificateRevoked => "CertificateRevoked",
        A::CertificateUnknown => "CertificateUnknown",
        A::UnsupportedCertificate => "UnsupportedCertificate",
        A::UnknownCA => "UnknownCA",
        A::AccessDenied => "AccessDenied",
        A::CertificateRequired => "CertificateRequired",
        _ => return None,
    };
    debug_assert!(is_alert_reason(name));
    Some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificate_alerts_are_recognised() {
        let err = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::AlertReceived(rustls::AlertDescription::CertificateExpired),
        );
        assert_eq!(certificate_alert(&err), Some("CertificateExpired"));
        let other = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::AlertReceived(rustls::AlertDescription::HandshakeFailure),
        );
        assert_eq!(certificate_alert(&other), None);
        let plain = std::io::Error::other("boom");
        assert_eq!(certificate_alert(&plain), None);
    }
}
