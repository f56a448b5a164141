//! Verdicts of the chain check, kept per certificate hash so that a device that checks in
//! again costs one signature check, not a chain walk. Bounded: two generations of at most
//! half the capacity each; a hit in the older one moves the entry forward, and when the newer
//! one fills up the older one is dropped (an approximate LRU without per-hit bookkeeping).
//!
//! A kept verdict is used only while the certificate is inside its validity at the time given
//! and for at most `recheck` after the chain was walked (so an intermediate that expires, or a
//! CA file that changes at restart, is noticed). Only successful verdicts are kept.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use time::OffsetDateTime;

use super::SharedIdentity;

/// Default number of certificates remembered.
pub const DEFAULT_CAPACITY: usize = 200_000;
/// Default time after which a remembered chain is walked again.
pub const DEFAULT_RECHECK: Duration = Duration::from_secs(3600);

#[derive(Debug)]
struct Entry {
    identity: SharedIdentity,
    verified_at: OffsetDateTime,
}

#[derive(Debug, Default)]
struct Generations {
    current: HashMap<[u8; 32], Entry>,
    previous: HashMap<[u8; 32], Entry>,
}

/// A bounded map from certificate SHA-256 to a verified identity.
#[derive(Debug)]
pub struct VerdictCache {
    inner: Mutex<Generations>,
    half: usize,
    recheck: Duration,
}

impl Default for VerdictCache {
    fn default() -> Self {
        VerdictCache::new(DEFAULT_CAPACITY, DEFAULT_RECHECK)
    }
}

impl VerdictCache {
    /// Remembers at most `capacity` certificates (at least 2), each for at most `recheck`.
    pub fn new(capacity: usize, recheck: Duration) -> VerdictCache {
        VerdictCache {
            inner: Mutex::new(Generations::default()),
            half: (capacity / 2).max(1),
            recheck,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Generations> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The remembered identity for this hash, if it is still usable at `now`.
    pub fn get(&self, sha256: &[u8; 32], now: OffsetDateTime) -> Option<SharedIdentity> {
        let mut g = self.lock();
        let usable = |e: &Entry| {
            now >= e.identity.not_before
                && now <= e.identity.not_after
                && now >= e.verified_at
                && now - e.verified_at < self.recheck
        };
        if let Some(e) = g.current.get(sha256) {
            return usable(e).then(|| e.identity.clone());
        }
        let e = g.previous.remove(sha256)?;
        if !usable(&e) {
            return None;
        }
        let identity = e.identity.clone();
        Self::put(&mut g, self.half, *sha256, e);
        Some(identity)
    }

    /// Remembers a verdict reached at `now`.
    pub fn insert(&self, identity: SharedIdentity, now: OffsetDateTime) {
        let mut g = self.lock();
        let key = identity.sha256;
        g.previous.remove(&key);
        Self::put(
            &mut g,
            self.half,
            key,
            Entry {
                identity,
                verified_at: now,
            },
        );
    }

    fn put(g: &mut Generations, half: usize, key: [u8; 32], entry: Entry) {
        if g.current.len() >= half && !g.current.contains_key(&key) {
            g.previous = std::mem::take(&mut g.current);
        }
        g.current.insert(key, entry);
    }

    /// Certificates remembered now.
    pub fn len(&self) -> usize {
        let g = self.lock();
        g.current.len() + g.previous.len()
    }

    /// True when nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use time::macros::datetime;

    use super::*;
    use crate::identity::DeviceIdentity;

    fn identity(n: u8) -> SharedIdentity {
        Arc::new(DeviceIdentity {
            sha256: [n; 32],
            subject: format!("CN=device {n}"),
            serial: format!("{n:02X}"),
            not_before: datetime!(2026-01-01 0:00 UTC),
            not_after: datetime!(2027-01-01 0:00 UTC),
            enrollment_id: None,
        })
    }

    #[test]
    fn a_verdict_is_used_inside_validity_and_the_recheck_window_only() {
        let cache = VerdictCache::new(10, Duration::from_secs(3600));
        let t = datetime!(2026-06-01 12:00 UTC);
        cache.insert(identity(1), t);
        assert!(cache
            .get(&[1; 32], t + time::Duration::minutes(59))
            .is_some());
        assert!(cache
            .get(&[1; 32], t + time::Duration::minutes(60))
            .is_none());
        assert!(cache
            .get(&[1; 32], t - time::Duration::minutes(1))
            .is_none());
        assert!(cache.get(&[2; 32], t).is_none());
        // Expired certificate: never from the cache, even within the window.
        let late = datetime!(2026-12-31 23:30 UTC);
        cache.insert(identity(3), late);
        assert!(cache.get(&[3; 32], late).is_some());
        assert!(cache
            .get(&[3; 32], datetime!(2027-01-01 0:00:01 UTC))
            .is_none());
    }

    #[test]
    fn it_stays_bounded_and_keeps_what_is_used() {
        let cache = VerdictCache::new(4, Duration::from_secs(3600));
        let t = datetime!(2026-06-01 12:00 UTC);
        for n in 0..50u8 {
            cache.insert(identity(n), t);
            // Device 0 checks in all the time: it must survive the churn.
            assert!(cache.get(&[0; 32], t).is_some(), "after {n}");
            assert!(cache.len() <= 4, "{} after {n}", cache.len());
        }
        assert!(cache.get(&[1; 32], t).is_none());
        assert!(cache.get(&[49; 32], t).is_some());
    }
}
