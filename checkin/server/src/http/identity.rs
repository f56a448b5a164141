//! How device requests are authenticated at the edge. The decisions live in
//! [`crate::identity`] (which certificate, is it the CA's) and the service (is it bound to
//! this device); this module holds the setting and the TLS connection's client certificate.
//!
//! Refusals answer 403, never 401 (a 401 tells a device its enrollment is void).

use std::sync::Arc;

use crate::identity::DeviceAuthenticator;

/// How device requests are authenticated.
#[derive(Debug, Clone)]
pub enum DeviceAuth {
    /// No check: any client may act as any device. Only with `--insecure-no-device-auth`.
    Off,
    /// Every device request must carry a verified identity bound to its enrollment.
    Required(Arc<DeviceAuthenticator>),
}

impl DeviceAuth {
    /// The sources as `--device-auth` writes them, or `off`.
    pub fn describe(&self) -> String {
        match self {
            DeviceAuth::Off => "off".to_owned(),
            DeviceAuth::Required(a) => a.describe(),
        }
    }
}

/// The DER of the client certificate a TLS connection presented (its end entity). Its chain
/// and binding are checked per request; the handshake proved the client holds its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerCertificate(pub Arc<[u8]>);
