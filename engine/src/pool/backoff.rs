//! Exponential backoff with jitter, as a pure function of the failure count.

use std::time::Duration;

/// Exponential backoff: the `n`th consecutive failure waits about `base · 2^(n-1)`, capped at
/// `max`, with the upper half of that interval randomised so that many clients (or many
/// connections of one pool) never retry in step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Wait after the first failure (before jitter).
    pub base: Duration,
    /// Longest wait.
    pub max: Duration,
}

impl Backoff {
    /// Reconnect backoff: 1 s up to 60 s.
    pub const RECONNECT: Backoff = Backoff {
        base: Duration::from_secs(1),
        max: Duration::from_secs(60),
    };

    /// Reconnect backoff while APNs refuses the certificate: 30 s up to 10 min, so a pool
    /// with a revoked or expired certificate never hammers APNs.
    pub const CERTIFICATE_REJECTED: Backoff = Backoff {
        base: Duration::from_secs(30),
        max: Duration::from_secs(600),
    };

    /// Push retry backoff (429, 500, 503): 100 ms up to 5 s.
    pub const PUSH_RETRY: Backoff = Backoff {
        base: Duration::from_millis(100),
        max: Duration::from_secs(5),
    };

    /// The wait after `failures` consecutive failures (`failures >= 1`; 0 waits nothing).
    /// `jitter` is a uniform random number in `[0, 1)`, passed in so tests are deterministic;
    /// whatever it is, the wait stays within `[base / 2, max]`.
    pub fn delay(&self, failures: u32, jitter: f64) -> Duration {
        if failures == 0 {
            return Duration::ZERO;
        }
        let exp = failures.saturating_sub(1).min(30);
        let full = self
            .base
            .saturating_mul(1u32 << exp)
            .min(self.max)
            .as_secs_f64();
        // Out-of-range jitter is clamped; NaN (which `clamp` keeps) counts as 0.
        let jitter = if jitter.is_nan() {
            0.0
        } else {
            jitter.clamp(0.0, 1.0)
        };
        Duration::from_secs_f64(full / 2.0 + full / 2.0 * jitter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_doubles_and_caps() {
        let b = Backoff::RECONNECT;
        assert_eq!(b.delay(0, 0.5), Duration::ZERO);
        assert_eq!(b.delay(1, 1.0), Duration::from_secs(1));
        assert_eq!(b.delay(1, 0.0), Duration::from_millis(500));
        assert_eq!(b.delay(2, 1.0), Duration::from_secs(2));
        assert_eq!(b.delay(4, 1.0), Duration::from_secs(8));
        assert_eq!(b.delay(7, 1.0), Duration::from_secs(60));
        assert_eq!(b.delay(1000, 1.0), Duration::from_secs(60));
        assert_eq!(b.delay(1000, 0.0), Duration::from_secs(30));
    }

    #[test]
    fn jitter_spreads_within_upper_half() {
        let b = Backoff::PUSH_RETRY;
        let lo = b.delay(3, 0.0);
        let hi = b.delay(3, 0.999);
        assert_eq!(lo, Duration::from_millis(200));
        assert!(hi > lo && hi <= Duration::from_millis(400));
    }
}
