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

/// A new invitation id: 160 random bits, lowercase hex.
pub fn new_invitation_id() -> String {
    new_challenge().0
}

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

/// The most challenges an invitation keeps unused and unexpired: each profile fetched makes
/// one, so a URL fetched in a loop stops making rows here (the fetch is refused until one is
/// used or expires).
pub const MAX_OUTSTANDING_CHALLENGES: u32 = 100;

/// An enrollment invitation: a URL (its id is the secret) that hands out enrollment profiles,
/// each with a fresh one-time challenge, while devices may still enroll through it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invitation {
    /// Random, at least 128 bits, lowercase hex: the secret in `/enroll/{id}`. The
    /// certificates issued through it carry it as their enrollment id.
    pub id: String,
    /// The tenant (push topic) the profile names; `None` while no push certificate is
    /// registered (the profile then names the server's topic when it is fetched).
    pub topic: Option<String>,
    /// The operator's note.
    pub note: Option<String>,
    /// How many devices may enroll through it.
    pub uses: u32,
    /// How many did (challenges of it used at `/scep`).
    pub enrolled: u32,
    /// When it was created.
    pub created_at: OffsetDateTime,
    /// After this instant it hands out nothing and its challenges are refused.
    pub expires_at: OffsetDateTime,
    /// When it was withdrawn, if it was.
    pub withdrawn_at: Option<OffsetDateTime>,
}

impl Invitation {
    /// Devices that may still enroll through it.
    pub fn uses_left(&self) -> u32 {
        self.uses.saturating_sub(self.enrolled)
    }

    /// Whether a profile (and its challenge) may be handed out at `at`, and if not, why.
    pub fn state(&self, at: OffsetDateTime) -> InvitationState {
        if self.withdrawn_at.is_some() {
            InvitationState::Withdrawn
        } else if self.expires_at <= at {
            InvitationState::Expired
        } else if self.uses_left() == 0 {
            InvitationState::UsedUp
        } else {
            InvitationState::Open
        }
    }
}

/// Where an invitation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvitationState {
    /// It hands out profiles.
    Open,
    /// Its devices all enrolled.
    UsedUp,
    /// Past its expiry.
    Expired,
    /// Withdrawn by an operator.
    Withdrawn,
}

impl InvitationState {
    /// The state's name in the admin API.
    pub fn as_str(self) -> &'static str {
        match self {
            InvitationState::Open => "open",
            InvitationState::UsedUp => "used_up",
            InvitationState::Expired => "expired",
            InvitationState::Withdrawn => "withdrawn",
        }
    }
}

/// What asking an invitation for a challenge gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InvitationChallenge {
    /// The challenge was kept; the invitation as it stands.
    Issued(Invitation),
    /// No invitation has this id.
    Unknown,
    /// It exists but hands out nothing (the state says why).
    Closed(InvitationState),
    /// [`MAX_OUTSTANDING_CHALLENGES`] of its challenges wait unused.
    TooManyOutstanding,
}

/// A device that enrolled through an invitation (recorded at its Authenticate).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvitationDevice {
    /// The invitation.
    pub invitation_id: String,
    /// The device.
    pub udid: String,
    /// Its Authenticate.
    pub at: OffsetDateTime,
}

/// The most invitations [`EnrollmentStore::invitations`] lists.
pub const MAX_LISTED_INVITATIONS: usize = 1000;

/// The most devices [`EnrollmentStore::invitation_devices`] lists per invitation.
pub const MAX_LISTED_DEVICES: usize = 1000;

/// Challenges, revoked serials, invitations and the device CA.
pub trait EnrollmentStore: Send + Sync {
    /// Keeps a new challenge.
    fn add_challenge<'a>(&'a self, challenge: &'a StoredChallenge) -> StoreFuture<'a, ()>;

    /// Uses up the challenge of hash `hash` at `at`, atomically: the enrollment id the first
    /// time; `None` when unknown, already used or expired (`expires_at <= at`). A challenge
    /// an invitation owns counts one device enrolled through it ([`Invitation::enrolled`]),
    /// and is refused (and stays unused) unless the invitation is
    /// [`InvitationState::Open`] at `at`: racing challenges of a one-use invitation admit one.
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

    /// Deletes the challenges used, or expired, before `before`: a deleted challenge is
    /// refused as unknown, as it was as used or expired. The number deleted.
    fn prune_challenges(&self, before: OffsetDateTime) -> StoreFuture<'_, u64>;

    /// Keeps a new invitation.
    fn add_invitation<'a>(&'a self, invitation: &'a Invitation) -> StoreFuture<'a, ()>;

    /// The invitation of id `id`.
    fn invitation<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Option<Invitation>>;

    /// The newest [`MAX_LISTED_INVITATIONS`] invitations, newest first.
    fn invitations(&self) -> StoreFuture<'_, Vec<Invitation>>;

    /// Withdraws invitation `id` at `at` (its unused challenges are refused from then on).
    /// `false` when unknown; withdrawing twice keeps the first time.
    fn withdraw_invitation<'a>(&'a self, id: &'a str, at: OffsetDateTime) -> StoreFuture<'a, bool>;

    /// Keeps `challenge` for the invitation it names ([`StoredChallenge::invitation_id`])
    /// if that invitation is [`InvitationState::Open`] at `at` and has fewer than
    /// [`MAX_OUTSTANDING_CHALLENGES`] unused, unexpired challenges; atomically.
    fn invitation_challenge<'a>(
        &'a self,
        challenge: &'a StoredChallenge,
        at: OffsetDateTime,
    ) -> StoreFuture<'a, InvitationChallenge>;

    /// Records that `udid` enrolled through invitation `invitation_id` (its Authenticate, at
    /// `at`). Recording it again keeps the first time.
    fn record_invitation_device<'a>(
        &'a self,
        invitation_id: &'a str,
        udid: &'a str,
        at: OffsetDateTime,
    ) -> StoreFuture<'a, ()>;

    /// The devices enrolled through each of `ids` (at most [`MAX_LISTED_DEVICES`] per
    /// invitation, earliest first).
    fn invitation_devices<'a>(
        &'a self,
        ids: &'a [String],
    ) -> StoreFuture<'a, Vec<InvitationDevice>>;

    /// The invitation each of `udids` enrolled through, for those that did.
    fn device_invitations<'a>(
        &'a self,
        udids: &'a [String],
    ) -> StoreFuture<'a, Vec<InvitationDevice>>;

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
