//! The limit on failed sign-ins: per client address, at most [`Limits::per_address`] failures
//! in any [`Limits::window`]; across all addresses, at most [`Limits::global`] (so that
//! rotating addresses does not buy unlimited guesses). Past either, every sign-in attempt
//! from the address (or from any, for the global one) is refused, the right key included,
//! until the oldest failure leaves the window. Pure: the time is passed in.
//!
//! IPv6 addresses count by their /64 (one host usually holds a whole /64); an IPv4 address
//! mapped into IPv6 counts as the IPv4 address. The table of addresses is bounded
//! ([`Limits::max_addresses`]): when it is full, addresses whose failures have all left the
//! window go first, then the one whose last failure is the oldest.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv6Addr};
use std::time::{Duration, Instant};

/// The limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Failures one address may make in any window (5).
    pub per_address: usize,
    /// Failures all addresses together may make in any window (60).
    pub global: usize,
    /// The window (60 s).
    pub window: Duration,
    /// Addresses tracked at most (10 000).
    pub max_addresses: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            per_address: 5,
            global: 60,
            window: Duration::from_secs(60),
            max_addresses: 10_000,
        }
    }
}

/// Whom a failure is counted against: an address (IPv6 by its /64), or the unknown peer
/// (a request that did not come through the listener).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Client {
    /// A known address, normalised.
    Address(IpAddr),
    /// No address known.
    Unknown,
}

impl Client {
    /// The client for a peer address.
    pub fn of(peer: Option<IpAddr>) -> Self {
        match peer {
            None => Client::Unknown,
            Some(IpAddr::V4(v4)) => Client::Address(IpAddr::V4(v4)),
            Some(IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
                Some(v4) => Client::Address(IpAddr::V4(v4)),
                None => {
                    let s = v6.segments();
                    Client::Address(IpAddr::V6(Ipv6Addr::new(
                        s[0], s[1], s[2], s[3], 0, 0, 0, 0,
                    )))
                }
            },
        }
    }
}

impl std::fmt::Display for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Client::Address(IpAddr::V6(v6)) => write!(f, "{v6}/64"),
            Client::Address(ip) => write!(f, "{ip}"),
            Client::Unknown => f.write_str("unknown"),
        }
    }
}

/// Which limit refused an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The client's own.
    Address,
    /// The ceiling over all clients.
    Global,
}

/// An attempt refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    /// Whole seconds until an attempt is taken again (at least 1).
    pub retry_after_s: u64,
    /// Which limit.
    pub scope: Scope,
    /// True the first time in this window that this client (or, for the global limit,
    /// anyone) is refused: log it then, not at every refusal.
    pub first: bool,
}

#[derive(Debug)]
struct Record {
    /// Failures in the window, oldest first (at most `per_address`).
    failures: VecDeque<Instant>,
    /// Until when a refusal has been reported.
    reported_until: Option<Instant>,
}

/// Failed sign-ins, per client and in all.
#[derive(Debug)]
pub struct SignInLimiter {
    limits: Limits,
    clients: HashMap<Client, Record>,
    /// Every client's failures in the window, oldest first (at most `global`).
    all: VecDeque<Instant>,
    all_reported_until: Option<Instant>,
}

impl SignInLimiter {
    /// A limiter with no failure recorded.
    pub fn new(limits: Limits) -> Self {
        let limits = Limits {
            per_address: limits.per_address.max(1),
            global: limits.global.max(1),
            max_addresses: limits.max_addresses.max(1),
            ..limits
        };
        SignInLimiter {
            limits,
            clients: HashMap::new(),
            all: VecDeque::new(),
            all_reported_until: None,
        }
    }

    /// Clients tracked.
    pub fn tracked(&self) -> usize {
        self.clients.len()
    }

    /// Whether `client` may try a key now.
    pub fn check(&mut self, client: Client, now: Instant) -> Result<(), Limited> {
        let window = self.limits.window;
        forget_before(&mut self.all, now, window);
        if self.all.len() >= self.limits.global {
            let until = self.all[0] + window;
            return Err(Limited {
                retry_after_s: whole_seconds(until - now),
                scope: Scope::Global,
                first: report(&mut self.all_reported_until, now, until),
            });
        }
        let per_address = self.limits.per_address;
        let Some(record) = self.clients.get_mut(&client) else {
            return Ok(());
        };
        forget_before(&mut record.failures, now, window);
        if record.failures.len() >= per_address {
            let until = record.failures[0] + window;
            return Err(Limited {
                retry_after_s: whole_seconds(until - now),
                scope: Scope::Address,
                first: report(&mut record.reported_until, now, until),
            });
        }
        Ok(())
    }

    /// Counts a failed attempt (a wrong key) of `client`.
    pub fn failed(&mut self, client: Client, now: Instant) {
        let window = self.limits.window;
        forget_before(&mut self.all, now, window);
        push_bounded(&mut self.all, now, self.limits.global);
        if !self.clients.contains_key(&client) && self.clients.len() >= self.limits.max_addresses {
            self.make_room(now);
        }
        let record = self.clients.entry(client).or_insert_with(|| Record {
            failures: VecDeque::new(),
            reported_until: None,
        });
        forget_before(&mut record.failures, now, window);
        push_bounded(&mut record.failures, now, self.limits.per_address);
    }

    /// Drops the clients with no failure left in the window, or else the one whose last
    /// failure is the oldest.
    fn make_room(&mut self, now: Instant) {
        let window = self.limits.window;
        self.clients.retain(|_, r| {
            r.failures
                .back()
                .is_some_and(|last| now.saturating_duration_since(*last) < window)
        });
        if self.clients.len() < self.limits.max_addresses {
            return;
        }
        if let Some(stalest) = self
            .clients
            .iter()
            .min_by_key(|(_, r)| r.failures.back().copied())
            .map(|(c, _)| *c)
        {
            self.clients.remove(&stalest);
        }
    }
}

/// Drops the instants that have left the window ending at `now`.
fn forget_before(times: &mut VecDeque<Instant>, now: Instant, window: Duration) {
    while times
        .front()
        .is_some_and(|t| now.saturating_duration_since(*t) >= window)
    {
        times.pop_front();
    }
}

/// Appends `now`, keeping the newest `cap` (older ones would never decide anything).
fn push_bounded(times: &mut VecDeque<Instant>, now: Instant, cap: usize) {
    times.push_back(now);
    while times.len() > cap {
        times.pop_front();
    }
}

/// True (and remembered until `until`) if no refusal has been reported for this window.
fn report(reported_until: &mut Option<Instant>, now: Instant, until: Instant) -> bool {
    if reported_until.is_some_and(|u| now < u) {
        return false;
    }
    *reported_until = Some(until);
    true
}

fn whole_seconds(d: Duration) -> u64 {
    let s = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    s.max(1)
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn ip(n: u32) -> Client {
        Client::of(Some(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + n))))
    }

    #[test]
    fn five_failures_then_429_until_the_oldest_leaves_the_window() {
        let t0 = Instant::now();
        let mut l = SignInLimiter::new(Limits::default());
        let a = ip(1);
        for i in 0..5u32 {
            assert_eq!(l.check(a, t0 + i * S), Ok(()), "attempt {i}");
            l.failed(a, t0 + i * S);
        }
        let refused = l.check(a, t0 + 5 * S).unwrap_err();
        assert_eq!(refused.scope, Scope::Address);
        assert_eq!(refused.retry_after_s, 55);
        assert!(refused.first, "reported once");
        let again = l.check(a, t0 + Duration::from_millis(10_500)).unwrap_err();
        assert_eq!(again.retry_after_s, 50, "rounded up");
        assert!(!again.first, "not reported again in the window");
        // Another address is not concerned.
        assert_eq!(l.check(ip(2), t0 + 5 * S), Ok(()));
        // When the first failure is 60 s old, one more attempt is taken.
        assert_eq!(l.check(a, t0 + 60 * S), Ok(()));
        l.failed(a, t0 + 60 * S);
        let refused = l.check(a, t0 + 60 * S).unwrap_err();
        assert_eq!(
            refused.retry_after_s, 1,
            "the second failure leaves at 61 s"
        );
        assert!(refused.first, "a new window is reported again");
        // Quiet for a minute: clean.
        assert_eq!(l.check(a, t0 + 121 * S), Ok(()));
    }

    #[test]
    fn the_global_ceiling_stops_rotating_addresses() {
        let t0 = Instant::now();
        let mut l = SignInLimiter::new(Limits::default());
        for n in 0..60u32 {
            let c = ip(n);
            assert_eq!(l.check(c, t0), Ok(()), "address {n}");
            l.failed(c, t0 + Duration::from_millis(u64::from(n)));
        }
        let refused = l.check(ip(1000), t0 + 30 * S).unwrap_err();
        assert_eq!(refused.scope, Scope::Global);
        assert_eq!(refused.retry_after_s, 30);
        assert!(refused.first);
        assert!(!l.check(ip(1001), t0 + 31 * S).unwrap_err().first);
        assert_eq!(l.check(ip(1000), t0 + 60 * S + S), Ok(()));
    }

    #[test]
    fn the_table_of_addresses_is_bounded() {
        let t0 = Instant::now();
        let limits = Limits {
            max_addresses: 3,
            global: 1_000,
            ..Limits::default()
        };
        let mut l = SignInLimiter::new(limits);
        for n in 0..3u32 {
            l.failed(ip(n), t0 + n * S);
        }
        l.failed(ip(3), t0 + 3 * S);
        assert_eq!(l.tracked(), 3, "the stalest dropped");
        assert!(!l.clients.contains_key(&ip(0)));
        // Failures that left the window go first.
        l.failed(ip(4), t0 + 70 * S);
        assert_eq!(l.tracked(), 1);
        assert_eq!(
            l.all.len(),
            1,
            "the global count forgets the old failures too"
        );
    }

    #[test]
    fn addresses_are_normalised() {
        let v6 = |s: &str| Client::of(Some(s.parse().unwrap()));
        assert_eq!(v6("2001:db8:1:2:aaaa::1"), v6("2001:db8:1:2:bbbb::9"));
        assert_ne!(v6("2001:db8:1:2::1"), v6("2001:db8:1:3::1"));
        assert_eq!(v6("::ffff:10.0.0.1"), ip(1));
        assert_eq!(v6("2001:db8:1:2::1").to_string(), "2001:db8:1:2::/64");
        assert_eq!(ip(1).to_string(), "10.0.0.1");
        assert_eq!(Client::of(None).to_string(), "unknown");
        // Without an address, all such requests are one client.
        let t0 = Instant::now();
        let mut l = SignInLimiter::new(Limits::default());
        for _ in 0..5 {
            l.failed(Client::of(None), t0);
        }
        assert!(l.check(Client::Unknown, t0).is_err());
    }
}
