//! The fleet's certificates: a CA, the mock APNs' server certificate and the MDM push
//! certificate, generated fresh or read from a directory, and written as PEM files the server
//! process reads.

use std::path::{Path, PathBuf};

use magicpush_fixtures::TestPki;

use super::FleetError;

/// File names, the same as the committed fixtures' `certs/` directory uses.
pub const CA_FILE: &str = "ca.pem";
/// The mock APNs' TLS certificate.
pub const SERVER_CERT_FILE: &str = "server.pem";
/// Its key.
pub const SERVER_KEY_FILE: &str = "server.key.pem";
/// The MDM push certificate.
pub const PUSH_CERT_FILE: &str = "push.pem";
/// Its key.
pub const PUSH_KEY_FILE: &str = "push.key.pem";

/// PEM texts of the fleet's certificates and where they are on disk.
#[derive(Debug, Clone)]
pub struct FleetPki {
    /// Issues the server and push certificates; the mock trusts push certificates it signed.
    pub ca_pem: String,
    /// Mock APNs TLS certificate (`localhost`, `127.0.0.1`).
    pub server_cert_pem: String,
    /// Its key.
    pub server_key_pem: String,
    /// The MDM push certificate.
    pub push_cert_pem: String,
    /// Its key.
    pub push_key_pem: String,
    /// The push certificate's topic.
    pub topic: String,
    /// The directory holding the PEM files.
    pub dir: PathBuf,
}

impl FleetPki {
    /// Reads the set from `dir` if it holds one, otherwise generates a fresh set (ECDSA) and
    /// writes it there.
    pub fn load_or_create(dir: &Path) -> Result<FleetPki, FleetError> {
        if dir.join(CA_FILE).exists() {
            return Self::load(dir);
        }
        let pki = TestPki::generate().map_err(|e| FleetError::Pki(format!("{e:#}")))?;
        let set = FleetPki {
            ca_pem: pki.ca.cert_pem().to_owned(),
            server_cert_pem: pki.server.cert_pem,
            server_key_pem: pki.server.key_pem,
            push_cert_pem: pki.push.cert_pem,
            push_key_pem: pki.push.key_pem,
            topic: pki.topic,
            dir: dir.to_owned(),
        };
        std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
        for (name, text) in [
            (CA_FILE, &set.ca_pem),
            (SERVER_CERT_FILE, &set.server_cert_pem),
            (SERVER_KEY_FILE, &set.server_key_pem),
            (PUSH_CERT_FILE, &set.push_cert_pem),
            (PUSH_KEY_FILE, &set.push_key_pem),
        ] {
            let path = dir.join(name);
            std::fs::write(&path, text).map_err(|e| io(&path, e))?;
        }
        Ok(set)
    }

    fn load(dir: &Path) -> Result<FleetPki, FleetError> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read_to_string(&path).map_err(|e| io(&path, e))
        };
        let push_cert_pem = read(PUSH_CERT_FILE)?;
        let push_key_pem = read(PUSH_KEY_FILE)?;
        let push = magicpush_engine::cert::PushCertificate::from_pem(
            push_cert_pem.as_bytes(),
            push_key_pem.as_bytes(),
        )
        .map_err(|e| FleetError::Pki(format!("{}: {e}", dir.join(PUSH_CERT_FILE).display())))?;
        Ok(FleetPki {
            ca_pem: read(CA_FILE)?,
            server_cert_pem: read(SERVER_CERT_FILE)?,
            server_key_pem: read(SERVER_KEY_FILE)?,
            topic: push.topic().to_owned(),
            push_cert_pem,
            push_key_pem,
            dir: dir.to_owned(),
        })
    }

    /// Path of one of the files above.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

fn io(path: &Path, e: std::io::Error) -> FleetError {
    FleetError::Pki(format!("{}: {e}", path.display()))
}
