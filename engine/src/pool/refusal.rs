//! What a connection does with a push that APNs answered 403 for the certificate, given which
//! certificate the connection presents.
//!
//! Certificates are numbered by generation: every [`replace_certificate`] bumps the pool's,
//! and each connection remembers the one it was opened with.
//!
//! [`replace_certificate`]: crate::Client::replace_certificate

/// The decision for one certificate refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalAction {
    /// The connection presents a certificate the pool has since replaced: the refusal says
    /// nothing about the current certificate, and the push deserves another try with it.
    Resend,
    /// The refusal concerns the pool's current certificate: the push fails with
    /// [`PushError::CertificateRejected`](crate::PushError::CertificateRejected) and the pool
    /// hears of the refusal ([`Plan::on_certificate_refusal`](super::plan::Plan::on_certificate_refusal)).
    Report,
}

/// Decides for a refusal on a connection that presents certificate generation `presented`
/// while the pool is at generation `current`.
pub fn on_certificate_refusal(presented: u64, current: u64) -> RefusalAction {
    if presented == current {
        RefusalAction::Report
    } else {
        RefusalAction::Resend
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_current_certificate_is_reported() {
        assert_eq!(on_certificate_refusal(0, 0), RefusalAction::Report);
        assert_eq!(on_certificate_refusal(7, 7), RefusalAction::Report);
        // Replaced once or many times since the connection opened: resend with the new one.
        assert_eq!(on_certificate_refusal(0, 1), RefusalAction::Resend);
        assert_eq!(on_certificate_refusal(3, 9), RefusalAction::Resend);
    }
}
