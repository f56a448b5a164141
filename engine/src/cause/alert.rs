//! TLS alerts by which a server refuses the client certificate, and how to recognise them in
//! the errors rustls reports (the transport and the connections meet them).

use std::fmt;

/// A TLS alert by which the server refused the push certificate during or right after the
/// handshake. Each has a stable name (its description in the IANA TLS Alert registry, e.g.
/// `certificate_expired`) and its alert number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum CertificateAlert {
    /// `bad_certificate` (42).
    BadCertificate,
    /// `unsupported_certificate` (43).
    UnsupportedCertificate,
    /// `certificate_revoked` (44).
    CertificateRevoked,
    /// `certificate_expired` (45).
    CertificateExpired,
    /// `certificate_unknown` (46).
    CertificateUnknown,
    /// `unknown_ca` (48).
    UnknownCa,
    /// `access_denied` (49).
    AccessDenied,
    /// `certificate_required` (116).
    CertificateRequired,
}

impl CertificateAlert {
    /// Every alert, in alert-number order.
    pub const ALL: &'static [CertificateAlert] = &[
        CertificateAlert::BadCertificate,
        CertificateAlert::UnsupportedCertificate,
        CertificateAlert::CertificateRevoked,
        CertificateAlert::CertificateExpired,
        CertificateAlert::CertificateUnknown,
        CertificateAlert::UnknownCa,
        CertificateAlert::AccessDenied,
        CertificateAlert::CertificateRequired,
    ];

    /// The alert's stable name: its description in the IANA TLS Alert registry
    /// (`certificate_expired`, `unknown_ca`, …).
    pub fn name(self) -> &'static str {
        match self {
            CertificateAlert::BadCertificate => "bad_certificate",
            CertificateAlert::UnsupportedCertificate => "unsupported_certificate",
            CertificateAlert::CertificateRevoked => "certificate_revoked",
            CertificateAlert::CertificateExpired => "certificate_expired",
            CertificateAlert::CertificateUnknown => "certificate_unknown",
            CertificateAlert::UnknownCa => "unknown_ca",
            CertificateAlert::AccessDenied => "access_denied",
            CertificateAlert::CertificateRequired => "certificate_required",
        }
    }

    /// The inverse of [`CertificateAlert::name`].
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|a| a.name() == name)
    }

    /// The alert's number on the wire.
    pub fn code(self) -> u8 {
        match self {
            CertificateAlert::BadCertificate => 42,
            CertificateAlert::UnsupportedCertificate => 43,
            CertificateAlert::CertificateRevoked => 44,
            CertificateAlert::CertificateExpired => 45,
            CertificateAlert::CertificateUnknown => 46,
            CertificateAlert::UnknownCa => 48,
            CertificateAlert::AccessDenied => 49,
            CertificateAlert::CertificateRequired => 116,
        }
    }

    /// The alert with this number, if it is one of these.
    pub fn from_code(code: u8) -> Option<Self> {
        Self::ALL.iter().copied().find(|a| a.code() == code)
    }

    /// The name in the style of APNs's reasons (`CertificateExpired`, `UnknownCA`, …): what
    /// [`Display`](fmt::Display) shows, as the engine has always spelled these alerts.
    pub fn display_name(self) -> &'static str {
        match self {
            CertificateAlert::BadCertificate => "BadCertificate",
            CertificateAlert::UnsupportedCertificate => "UnsupportedCertificate",
            CertificateAlert::CertificateRevoked => "CertificateRevoked",
            CertificateAlert::CertificateExpired => "CertificateExpired",
            CertificateAlert::CertificateUnknown => "CertificateUnknown",
            CertificateAlert::UnknownCa => "UnknownCA",
            CertificateAlert::AccessDenied => "AccessDenied",
            CertificateAlert::CertificateRequired => "CertificateRequired",
        }
    }

    /// The certificate alert the server sent, if that is what ended `err`.
    pub(crate) fn from_io_error(err: &std::io::Error) -> Option<Self> {
        use rustls::AlertDescription as A;
        let inner = err.get_ref()?;
        let rustls::Error::AlertReceived(alert) = inner.downcast_ref::<rustls::Error>()? else {
            return None;
        };
        Some(match alert {
            A::BadCertificate => CertificateAlert::BadCertificate,
            A::UnsupportedCertificate => CertificateAlert::UnsupportedCertificate,
            A::CertificateRevoked => CertificateAlert::CertificateRevoked,
            A::CertificateExpired => CertificateAlert::CertificateExpired,
            A::CertificateUnknown => CertificateAlert::CertificateUnknown,
            A::UnknownCA => CertificateAlert::UnknownCa,
            A::AccessDenied => CertificateAlert::AccessDenied,
            A::CertificateRequired => CertificateAlert::CertificateRequired,
            _ => return None,
        })
    }
}

impl fmt::Display for CertificateAlert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.display_name())
    }
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
        assert_eq!(
            CertificateAlert::from_io_error(&err),
            Some(CertificateAlert::CertificateExpired)
        );
        let other = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::AlertReceived(rustls::AlertDescription::HandshakeFailure),
        );
        assert_eq!(CertificateAlert::from_io_error(&other), None);
        let plain = std::io::Error::other("boom");
        assert_eq!(CertificateAlert::from_io_error(&plain), None);
    }

    #[test]
    fn names_and_numbers_match_rustls_and_round_trip() {
        for &alert in CertificateAlert::ALL {
            assert_eq!(CertificateAlert::from_name(alert.name()), Some(alert));
            assert_eq!(CertificateAlert::from_code(alert.code()), Some(alert));
            let wire = rustls::AlertDescription::from(alert.code());
            let err = std::io::Error::other(rustls::Error::AlertReceived(wire));
            assert_eq!(
                CertificateAlert::from_io_error(&err),
                Some(alert),
                "{wire:?}"
            );
            // The display name is what rustls's Debug spelled, as the engine used to store.
            assert_eq!(alert.display_name(), format!("{wire:?}"));
        }
        assert_eq!(CertificateAlert::from_name("CertificateExpired"), None);
        assert_eq!(CertificateAlert::from_code(40), None);
    }
}
