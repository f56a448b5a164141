//! Enrollment state the SCEP endpoint needs: one-time challenges, the serials of revoked
//! device certificates, and (for a store several nodes share) the built-in device CA.
//!
//! A challenge is random (160 bits, hex) and only its SHA-256 is stored: the store looks it up
//! by hash, so a stored row never gives the challenge back and no comparison depends on the
//! secret's bytes. Each row names the enrollment id the certificate it admits will carry, and
//! may name an invitation that owns it (`invitation_id`, for enrollment invitations).

/// The secret type the CA's key is kept in.
pub use magicpush_mdm::Secret;
use ring::rand::SecureRandom;
use time::OffsetDateTime;

use crate::StoreFuture;

/// A new challenge: what to give the device (hex) and the hash to store.
pub fn new_challenge() -> (String, [u8; 32]) {
    let mut bytes = [0u8; 20];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .expect("the system's random source failed");
    let challenge = hex::encode(bytes);
    let hash = challenge_hash(&challenge);
    (challenge, hash)
}

/// The stored form of a challenge the device sent.
pub fn challenge_hash(challenge: &str) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, challenge.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

/// A challenge as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredChallenge {
    /// SHA-256 of the challenge ([`challenge_hash`]).
    pub hash: [u8; 32],
    /// The enrollment id the issued certificate carries.
    pub enrollment_id: String,
    /// The invitation that owns it, if any.
    pub invitation_id: Option<String>,
    /// When it was created.
    pub created_at: OffsetDateTime,
    /// After this instant it is refused.
    pub expires_at: OffsetDateTime,
}

/// The built-in device CA as a shared store keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredDeviceCa {
    /// The CA certificate, PEM.
    pub cert_pem: String,
    /// Its private key, PEM (sealed by a store that seals secrets).
    pub key_pem: Secret,
    /// When it was created.
    pub created_at: OffsetDateTime,
}

/// Challenges, revoked serials and the device CA.
pub trait EnrollmentStore: Send + Sync {
    /// Keeps a new challenge.
    fn add_challenge<'a>(&'a self, challenge: &'a StoredChallenge) -> StoreFuture<'a, ()>;

    /// Uses up the challenge of hash `hash` at `at`, atomically: the enrollment id the first
    /// time; `None` when unknown, already used or expired (`expires_at <= at`).
    fn consume_challenge<'a>(
        &'a self,
        hash: &'a [u8; 32],
        at: OffsetDateTime,
    ) -> StoreFuture<'a, Option<String>>;

    /// Records the certificate of serial `serial` (lowercase hex, as
    /// [`crate::enrollment::serial_key`] writes it) as revoked; `udid`: the device it was
    /// bound to. Revoking twice is one revocation.
    fn revoke_serial<'a>(
        &'a self,
        serial: &'a str,
        udid: &'a str,
        at: OffsetDateTime,
    ) -> StoreFuture<'a, ()>;

    /// Whether the certificate of serial `serial` was revoked.
    fn is_revoked<'a>(&'a self, serial: &'a str) -> StoreFuture<'a, bool>;

    /// The device CA kept in the store, if any.
    fn device_ca(&self) -> StoreFuture<'_, Option<StoredDeviceCa>>;

    /// Keeps `ca` unless a CA is kept already; returns the one kept (the first written wins,
    /// so several nodes starting together end with one CA).
    fn create_device_ca<'a>(&'a self, ca: &'a StoredDeviceCa) -> StoreFuture<'a, StoredDeviceCa>;
}

/// The key a certificate serial (big-endian bytes, as in the certificate) is stored under:
/// lowercase hex without leading zero bytes.
pub fn serial_key(serial: &[u8]) -> String {
    let start = serial.iter().position(|b| *b != 0).unwrap_or(serial.len());
    let trimmed = &serial[start..];
    if trimmed.is_empty() {
        "00".into()
    } else {
        hex::encode(trimmed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_are_random_and_hashed() {
        let (a, ha) = new_challenge();
        let (b, hb) = new_challenge();
        assert_ne!(a, b);
        assert_eq!(a.len(), 40);
        assert_eq!(challenge_hash(&a), ha);
        assert_ne!(ha, hb);
    }

    #[test]
    fn serial_keys_drop_leading_zeros() {
        assert_eq!(serial_key(&[0, 0x8a, 1]), "8a01");
        assert_eq!(serial_key(&[0]), "00");
    }
}
