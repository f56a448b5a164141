//! Encryption of the secrets a device escrows — its UnlockToken and BootstrapToken — in the
//! database, with a key the operator keeps elsewhere (`--secrets-key-file`). ChaCha20-Poly1305
//! (*ring*), a random nonce per value, and the column and UDID as associated data, so a value
//! copied to another row or column does not decrypt. Stored as `mpk1 ‖ nonce ‖ ciphertext`.
//!
//! The database remembers that it is encrypted (a check value in `meta`): opening it without
//! the key, or with another key, is a start-up error, never garbage. Opening a plaintext
//! database with a key encrypts what it holds.

use std::path::Path;

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};

use crate::StoreError;

const MAGIC: &[u8; 4] = b"mpk1";
const CHECK: &[u8] = b"magicpush secrets key check";

/// The key for the secret columns.
pub struct SecretKey {
    key: LessSafeKey,
    rng: SystemRandom,
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(redacted)")
    }
}

/// Why a key file cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("--secrets-key-file {path}: {detail}")]
pub struct KeyFileError {
    path: String,
    detail: String,
}

impl SecretKey {
    /// From 32 bytes.
    pub fn from_bytes(bytes: &[u8]) -> Option<SecretKey> {
        let key = UnboundKey::new(&CHACHA20_POLY1305, bytes).ok()?;
        Some(SecretKey {
            key: LessSafeKey::new(key),
            rng: SystemRandom::new(),
        })
    }

    /// From a file holding the 32-byte key raw, as 64 hex digits, or as base64
    /// (`openssl rand -hex 32 > key` makes one).
    pub fn from_file(path: &Path) -> Result<SecretKey, KeyFileError> {
        let err = |detail: String| KeyFileError {
            path: path.display().to_string(),
            detail,
        };
        let raw = std::fs::read(path).map_err(|e| err(e.to_string()))?;
        let text = std::str::from_utf8(&raw).map(str::trim).unwrap_or("");
        let bytes = if raw.len() == 32 {
            raw.clone()
        } else if let Ok(b) = hex::decode(text) {
            b
        } else {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD
                .decode(text)
                .map_err(|_| err("not a 32-byte key (raw, 64 hex digits, or base64)".into()))?
        };
        if bytes.len() != 32 {
            return Err(err(format!(
                "the key is {} bytes; it must be 32 (openssl rand -hex 32)",
                bytes.len()
            )));
        }
        SecretKey::from_bytes(&bytes).ok_or_else(|| err("unusable key".into()))
    }

    /// `plain` sealed for `column` of device `udid`.
    pub fn seal(&self, column: &str, udid: &str, plain: &[u8]) -> Result<Vec<u8>, StoreError> {
        let mut nonce = [0u8; NONCE_LEN];
        self.rng
            .fill(&mut nonce)
            .map_err(|_| StoreError::Database {
                op: "encrypt secret",
                detail: "no randomness".into(),
            })?;
        let mut out = Vec::with_capacity(MAGIC.len() + NONCE_LEN + plain.len() + 16);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&nonce);
        let mut body = plain.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad(column, udid)),
                &mut body,
            )
            .map_err(|_| StoreError::Database {
                op: "encrypt secret",
                detail: "sealing failed".into(),
            })?;
        out.extend_from_slice(&body);
        Ok(out)
    }

    /// The plaintext of a value [`SecretKey::seal`] made for this column and device.
    pub fn open(&self, column: &str, udid: &str, sealed: &[u8]) -> Result<Vec<u8>, StoreError> {
        let corrupt = || StoreError::Corrupt {
            what: format!("device {udid}: {column} does not decrypt with this --secrets-key-file"),
        };
        let rest = sealed.strip_prefix(MAGIC.as_slice()).ok_or_else(corrupt)?;
        if rest.len() < NONCE_LEN + 16 {
            return Err(corrupt());
        }
        let (nonce, body) = rest.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| corrupt())?;
        let mut body = body.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(aad(column, udid)), &mut body)
            .map_err(|_| corrupt())?;
        Ok(plain.to_vec())
    }

    /// The check value kept in the database.
    pub fn check_value(&self) -> Result<Vec<u8>, StoreError> {
        self.seal("meta", "secrets_check", CHECK)
    }

    /// Whether `value` is the check value of this key.
    pub fn matches_check(&self, value: &[u8]) -> bool {
        self.open("meta", "secrets_check", value)
            .is_ok_and(|p| p == CHECK)
    }
}

/// Whether stored bytes are sealed (as opposed to a plaintext value from before the key).
pub fn is_sealed(value: &[u8]) -> bool {
    value.starts_with(MAGIC)
}

fn aad(column: &str, udid: &str) -> Vec<u8> {
    format!("magicpush:{column}:{udid}").into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_open_only_where_they_were_sealed() {
        let key = SecretKey::from_bytes(&[7; 32]).unwrap();
        let sealed = key.seal("unlock_token", "A", b"keybag").unwrap();
        assert!(is_sealed(&sealed));
        assert_ne!(&sealed[4..], b"keybag");
        assert_eq!(key.open("unlock_token", "A", &sealed).unwrap(), b"keybag");
        assert!(
            key.open("unlock_token", "B", &sealed).is_err(),
            "another device's row"
        );
        assert!(
            key.open("bootstrap_token", "A", &sealed).is_err(),
            "another column"
        );
        let other = SecretKey::from_bytes(&[8; 32]).unwrap();
        assert!(
            other.open("unlock_token", "A", &sealed).is_err(),
            "another key"
        );
        let mut tampered = sealed.clone();
        let n = tampered.len();
        tampered[n - 1] ^= 1;
        assert!(key.open("unlock_token", "A", &tampered).is_err());
        assert!(key.matches_check(&key.check_value().unwrap()));
        assert!(!other.matches_check(&key.check_value().unwrap()));
    }

    #[test]
    fn key_files_raw_hex_or_base64() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, bytes: &[u8]| {
            let p = dir.path().join(name);
            std::fs::write(&p, bytes).unwrap();
            p
        };
        let raw = write("raw", &[1; 32]);
        let hex = write("hex", format!("{}\n", hex::encode([1u8; 32])).as_bytes());
        let b64 = write("b64", b"AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=");
        let a = SecretKey::from_file(&raw).unwrap();
        for p in [&hex, &b64] {
            let k = SecretKey::from_file(p).unwrap();
            assert!(
                k.matches_check(&a.check_value().unwrap()),
                "{}",
                p.display()
            );
        }
        let short = write("short", b"abcd");
        let err = SecretKey::from_file(&short).unwrap_err().to_string();
        assert!(err.contains("32"), "{err}");
        assert!(SecretKey::from_file(&dir.path().join("missing")).is_err());
    }
}
