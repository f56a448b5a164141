//! Shared by the integration tests: the fixture CA, an in-memory challenge store, a
//! revocation set.
#![allow(dead_code, unreachable_pub)]

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::time::SystemTime;

use magicpush_scep::{ct_eq, CertificateId, ChallengeStore, DeviceCa, RevocationCheck};

pub fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

/// The committed test CA (made by `DeviceCa::generate`; see tests/data/README.md).
pub fn fixture_ca() -> DeviceCa {
    let dir = data_dir();
    let cert = std::fs::read_to_string(dir.join("ca.pem")).expect("tests/data/ca.pem");
    let key = std::fs::read_to_string(dir.join("ca.key.pem")).expect("tests/data/ca.key.pem");
    DeviceCa::from_pem(&cert, &key).expect("the fixture CA loads")
}

/// Challenges in memory: secret → (enrollment id, expiry).
#[derive(Default)]
pub struct MemoryChallenges {
    pub live: HashMap<String, (String, SystemTime)>,
}

impl MemoryChallenges {
    pub fn add(&mut self, secret: &str, enrollment_id: &str, expires: SystemTime) {
        self.live
            .insert(secret.to_string(), (enrollment_id.to_string(), expires));
    }
}

impl ChallengeStore for MemoryChallenges {
    fn consume(&mut self, challenge: &str, now: SystemTime) -> Option<String> {
        let key = self
            .live
            .keys()
            .find(|k| ct_eq(k.as_bytes(), challenge.as_bytes()))?
            .clone();
        let (id, expires) = self.live.remove(&key)?;
        (now <= expires).then_some(id)
    }
}

/// Revoked serials (lowercase hex).
#[derive(Default, Clone)]
pub struct Revoked(pub HashSet<String>);

impl RevocationCheck for Revoked {
    fn is_revoked(&self, certificate: &CertificateId) -> bool {
        self.0.contains(&certificate.serial_hex)
    }
}
