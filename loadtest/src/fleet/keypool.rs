//! The RSA-2048 device keys of an `--enroll` run: a small pool generated once, in parallel,
//! before anything is timed; device `i` enrolls with key `i % pool`. Generating a key costs a
//! real device a second or so of its own time and the server nothing: a key per simulated
//! device would measure the load generator, not the server.

use std::sync::Arc;
use std::time::{Duration, Instant};

use magicpush_scep::client::RequestSigner;
use magicpush_scep::rand_core::OsRng;
use ring::signature::RsaKeyPair;
use rsa::pkcs8::EncodePrivateKey;
use rsa::RsaPrivateKey;

/// Keys in the pool.
pub const POOL_SIZE: usize = 8;
/// Their size, as iOS devices' SCEP keys.
pub const KEY_BITS: usize = 2048;

/// The pool could not be made.
#[derive(Debug, thiserror::Error)]
#[error("device RSA key pool: {0}")]
pub struct KeyPoolError(String);

/// One key: for the SCEP requests (the `rsa` crate's, with the self-signed certificate they
/// are signed with, made once) and for signing check-ins (*ring*'s).
pub struct PoolKey {
    /// The key itself (the SCEP signer holds its own copy).
    pub rsa: RsaPrivateKey,
    /// The key and its self-signed certificate, for the PKCSReq messages.
    pub scep: RequestSigner,
    /// The same key for `Mdm-Signature` (RSA PKCS#1 v1.5 SHA-256).
    pub signing: Arc<RsaKeyPair>,
}

/// The pool and how long it took.
pub struct KeyPool {
    keys: Vec<PoolKey>,
    /// Wall time of the generation.
    pub generated_in: Duration,
    /// One RSA-2048 private-key operation on this machine, measured after the generation
    /// (the median of [`OP_SAMPLES`] blinded PKCS#1 v1.5 decryptions, one thread): the unit
    /// the enrollment phase's CPU is reported in.
    pub rsa2048_private_op: Duration,
}

/// Operations timed for [`KeyPool::rsa2048_private_op`].
pub const OP_SAMPLES: usize = 41;

impl KeyPool {
    /// `size` (at least 1) fresh keys, one thread each.
    pub fn generate(size: usize) -> Result<KeyPool, KeyPoolError> {
        let started = Instant::now();
        let threads: Vec<_> = (0..size.max(1))
            .map(|_| std::thread::spawn(one_key))
            .collect();
        let keys = threads
            .into_iter()
            .map(|t| {
                t.join()
                    .map_err(|_| KeyPoolError("a key generation thread panicked".into()))?
            })
            .collect::<Result<Vec<_>, _>>()?;
        let generated_in = started.elapsed();
        let rsa2048_private_op = private_op(&keys[0].rsa)?;
        Ok(KeyPool {
            keys,
            generated_in,
            rsa2048_private_op,
        })
    }

    /// The key of device `index`.
    pub fn key_of(&self, index: usize) -> &PoolKey {
        &self.keys[index % self.keys.len()]
    }

    /// Keys in the pool.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Never true: a pool has at least one key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// The median time of one blinded decryption with `key`.
fn private_op(key: &RsaPrivateKey) -> Result<Duration, KeyPoolError> {
    use rsa::{Pkcs1v15Encrypt, RsaPublicKey};
    let sealed = RsaPublicKey::from(key)
        .encrypt(&mut OsRng, Pkcs1v15Encrypt, &[7u8; 16])
        .map_err(|e| KeyPoolError(e.to_string()))?;
    let mut times: Vec<Duration> = (0..OP_SAMPLES)
        .map(|_| {
            let started = Instant::now();
            let opened = key.decrypt_blinded(&mut OsRng, Pkcs1v15Encrypt, &sealed);
            let took = started.elapsed();
            opened
                .map(|_| took)
                .map_err(|e| KeyPoolError(e.to_string()))
        })
        .collect::<Result<_, _>>()?;
    times.sort();
    Ok(times[times.len() / 2])
}

fn one_key() -> Result<PoolKey, KeyPoolError> {
    let rsa = RsaPrivateKey::new(&mut OsRng, KEY_BITS).map_err(|e| KeyPoolError(e.to_string()))?;
    let pkcs8 = rsa
        .to_pkcs8_der()
        .map_err(|e| KeyPoolError(e.to_string()))?;
    let signing = RsaKeyPair::from_pkcs8(pkcs8.as_bytes())
        .map_err(|e| KeyPoolError(format!("ring refuses the key: {e}")))?;
    let scep = RequestSigner::new(&rsa).map_err(|e| KeyPoolError(e.to_string()))?;
    Ok(PoolKey {
        rsa,
        scep,
        signing: Arc::new(signing),
    })
}

#[cfg(test)]
mod tests {
    use ring::signature::KeyPair;
    use rsa::traits::PublicKeyParts;

    use super::*;

    #[test]
    fn devices_share_the_pool_round_robin_and_both_forms_are_one_key() {
        let pool = KeyPool::generate(2).unwrap();
        assert_eq!(pool.len(), 2);
        assert!(std::ptr::eq(pool.key_of(0), pool.key_of(2)));
        assert!(!std::ptr::eq(pool.key_of(0), pool.key_of(1)));
        assert!(pool.rsa2048_private_op > Duration::ZERO);
        for i in 0..2 {
            let key = pool.key_of(i);
            assert_eq!(key.rsa.size() * 8, KEY_BITS);
            let modulus = key.rsa.n().to_bytes_be();
            let ring_modulus = key.signing.public_key().modulus_len();
            assert_eq!(modulus.len(), ring_modulus);
        }
    }
}
