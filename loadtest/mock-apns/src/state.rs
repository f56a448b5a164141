//! State shared by the mock's connections and its handle: counters, token sets, fault knobs.
//!
//! Nothing here takes a global lock on the request path: counters are atomics, per-token data
//! lives in maps sharded by hash.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, watch, Notify};

use super::judge::{Reason, TokenState};
use super::settings_io::StreamLimits;
use super::AcceptedPush;

const SHARDS: usize = 64;

type Shard<V> = Mutex<HashMap<Box<str>, V>>;

/// A map from device token to a value, sharded by hash.
pub(crate) struct ShardedMap<V> {
    shards: Box<[Shard<V>]>,
    len: AtomicU64,
}

impl<V: Copy> ShardedMap<V> {
    pub(crate) fn new() -> Self {
        ShardedMap {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            len: AtomicU64::new(0),
        }
    }

    fn shard(&self, key: &str) -> &Shard<V> {
        // FNV-1a: tokens are random already, this only spreads them over the shards.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in key.bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        &self.shards[(h as usize) % SHARDS]
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len.load(Ordering::Relaxed) == 0
    }

    pub(crate) fn get(&self, key: &str) -> Option<V> {
        if self.is_empty() {
            return None;
        }
        let shard = self.shard(key).lock().unwrap_or_else(|e| e.into_inner());
        shard.get(key).copied()
    }

    pub(crate) fn insert(&self, key: &str, value: V) {
        let mut shard = self.shard(key).lock().unwrap_or_else(|e| e.into_inner());
        if shard.insert(key.into(), value).is_none() {
            self.len.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn remove(&self, key: &str) -> Option<V> {
        let mut shard = self.shard(key).lock().unwrap_or_else(|e| e.into_inner());
        let old = shard.remove(key);
        if old.is_some() {
            self.len.fetch_sub(1, Ordering::Relaxed);
        }
        old
    }

    pub(crate) fn update(&self, key: &str, default: V, f: impl FnOnce(&mut V)) {
        let mut shard = self.shard(key).lock().unwrap_or_else(|e| e.into_inner());
        match shard.get_mut(key) {
            Some(v) => f(v),
            None => {
                let mut v = default;
                f(&mut v);
                shard.insert(key.into(), v);
                self.len.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    pub(crate) fn snapshot(&self) -> HashMap<String, V> {
        let mut out = HashMap::new();
        for shard in self.shards.iter() {
            let shard = shard.lock().unwrap_or_else(|e| e.into_inner());
            out.extend(shard.iter().map(|(k, v)| (k.to_string(), *v)));
        }
        out
    }
}

/// A probability in 0..=1 stored as `f64` bits.
pub(crate) struct Rate(AtomicU64);

impl Rate {
    pub(crate) fn new(p: f64) -> Self {
        Rate(AtomicU64::new(p.clamp(0.0, 1.0).to_bits()))
    }
    pub(crate) fn set(&self, p: f64) {
        self.0.store(p.clamp(0.0, 1.0).to_bits(), Ordering::Relaxed);
    }
    pub(crate) fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Relaxed))
    }
    /// Draws: true with the stored probability.
    pub(crate) fn hit(&self) -> bool {
        let p = self.get();
        p > 0.0 && fastrand::f64() < p
    }
}

/// What connections watch for: changes that must reach every live connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Control {
    pub(crate) frozen: bool,
    pub(crate) goaway_gen: u64,
    pub(crate) drop_gen: u64,
    pub(crate) limit_gen: u64,
    pub(crate) shutdown: bool,
}

/// Per-connection figures, kept after the connection closes.
#[derive(Debug)]
pub(crate) struct ConnState {
    pub(crate) id: u64,
    pub(crate) topic: Option<String>,
    pub(crate) active: AtomicU32,
    pub(crate) peak: AtomicU32,
    pub(crate) requests: AtomicU64,
    pub(crate) limit_violations: AtomicU64,
    /// Flushes that carried data (see [`crate::write_count`]).
    pub(crate) writes: AtomicU64,
    pub(crate) open: AtomicBool,
    pub(crate) limits: Arc<StreamLimits>,
}

/// Counters, token sets and knobs shared by everything.
pub(crate) struct Shared {
    pub(crate) max_streams: Arc<AtomicU32>,
    pub(crate) delay_us: AtomicU64,
    pub(crate) rate_429: Rate,
    pub(crate) rate_503: Rate,
    pub(crate) reset_rate: Rate,
    pub(crate) goaway_every: AtomicU64,
    /// `Reason as usize + 1`, or 0 for none.
    pub(crate) reject_certificate: AtomicU32,

    pub(crate) unregistered: ShardedMap<u64>,
    pub(crate) foreign: ShardedMap<()>,
    pub(crate) accepted_by_token: ShardedMap<u64>,
    /// Accepted pushes by `apns-topic` (the connection certificate's topic when it has one).
    pub(crate) accepted_by_topic: ShardedMap<u64>,

    pub(crate) accepted: AtomicU64,
    pub(crate) by_reason: Box<[AtomicU64]>,
    pub(crate) resets_injected: AtomicU64,
    pub(crate) refused_over_limit: AtomicU64,
    pub(crate) connections_opened: AtomicU64,
    /// Connections open now, and the most ever open at once.
    pub(crate) connections_now: AtomicU64,
    pub(crate) connections_peak: AtomicU64,
    pub(crate) handshake_failures: AtomicU64,
    pub(crate) goaways_sent: AtomicU64,
    pub(crate) drops: AtomicU64,

    pub(crate) connections: Mutex<Vec<Arc<ConnState>>>,
    pub(crate) control: watch::Sender<Control>,
    /// Wakes connections when `control` changes (a pinned `Notified` costs nothing per poll).
    pub(crate) control_changed: Notify,

    has_subscriber: AtomicBool,
    subscriber: RwLock<Option<mpsc::UnboundedSender<AcceptedPush>>>,
}

/// Milliseconds since the UNIX epoch.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Shared {
    pub(crate) fn new(config: &super::MockConfig) -> Self {
        let (control, _) = watch::channel(Control::default());
        let shared = Shared {
            max_streams: Arc::new(AtomicU32::new(config.max_streams)),
            delay_us: AtomicU64::new(config.delay.as_micros() as u64),
            rate_429: Rate::new(config.rate_429),
            rate_503: Rate::new(config.rate_503),
            reset_rate: Rate::new(config.reset_rate),
            goaway_every: AtomicU64::new(config.goaway_every.unwrap_or(0)),
            reject_certificate: AtomicU32::new(0),
            unregistered: ShardedMap::new(),
            foreign: ShardedMap::new(),
            accepted_by_token: ShardedMap::new(),
            accepted_by_topic: ShardedMap::new(),
            accepted: AtomicU64::new(0),
            by_reason: Reason::ALL.iter().map(|_| AtomicU64::new(0)).collect(),
            resets_injected: AtomicU64::new(0),
            refused_over_limit: AtomicU64::new(0),
            connections_opened: AtomicU64::new(0),
            connections_now: AtomicU64::new(0),
            connections_peak: AtomicU64::new(0),
            handshake_failures: AtomicU64::new(0),
            goaways_sent: AtomicU64::new(0),
            drops: AtomicU64::new(0),
            connections: Mutex::new(Vec::new()),
            control,
            control_changed: Notify::new(),
            has_subscriber: AtomicBool::new(config.accepted.is_some()),
            subscriber: RwLock::new(config.accepted.clone()),
        };
        let since = now_ms();
        for token in &config.unregistered {
            shared
                .unregistered
                .insert(&token.to_ascii_lowercase(), since);
        }
        for token in &config.foreign_tokens {
            shared.foreign.insert(&token.to_ascii_lowercase(), ());
        }
        shared
    }

    pub(crate) fn delay(&self) -> Duration {
        Duration::from_micros(self.delay_us.load(Ordering::Relaxed))
    }

    pub(crate) fn rejected_certificate(&self) -> Option<Reason> {
        match self.reject_certificate.load(Ordering::Relaxed) {
            0 => None,
            n => Reason::ALL.get(n as usize - 1).copied(),
        }
    }

    /// The state of a (syntactically valid) token; lookups are skipped while the sets are empty.
    pub(crate) fn token_state(&self, token: &str) -> TokenState {
        if self.unregistered.is_empty() && self.foreign.is_empty() {
            return TokenState::Active;
        }
        let lower;
        let key = if token.bytes().any(|b| b.is_ascii_uppercase()) {
            lower = token.to_ascii_lowercase();
            lower.as_str()
        } else {
            token
        };
        if let Some(since_ms) = self.unregistered.get(key) {
            return TokenState::Unregistered { since_ms };
        }
        if self.foreign.get(key).is_some() {
            return TokenState::OtherTopic;
        }
        TokenState::Active
    }

    pub(crate) fn count_reason(&self, reason: Reason) {
        self.by_reason[reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn record_accepted(&self, token: &str, topic: &str, magic: &str) {
        self.accepted.fetch_add(1, Ordering::Relaxed);
        if token.bytes().any(|b| b.is_ascii_uppercase()) {
            self.accepted_by_token
                .update(&token.to_ascii_lowercase(), 0, |n| *n += 1);
        } else {
            self.accepted_by_token.update(token, 0, |n| *n += 1);
        }
        self.accepted_by_topic.update(topic, 0, |n| *n += 1);
        if self.has_subscriber.load(Ordering::Relaxed) {
            let sub = self.subscriber.read().unwrap_or_else(|e| e.into_inner());
            if let Some(tx) = sub.as_ref() {
                let _ = tx.send(AcceptedPush {
                    token: token.to_ascii_lowercase(),
                    magic: magic.to_owned(),
                    topic: topic.to_owned(),
                });
            }
        }
    }

    pub(crate) fn subscribe(&self) -> mpsc::UnboundedReceiver<AcceptedPush> {
        let (tx, rx) = mpsc::unbounded_channel();
        *self.subscriber.write().unwrap_or_else(|e| e.into_inner()) = Some(tx);
        self.has_subscriber.store(true, Ordering::Relaxed);
        rx
    }

    pub(crate) fn register_connection(&self, topic: Option<String>) -> Arc<ConnState> {
        let id = self.connections_opened.fetch_add(1, Ordering::Relaxed) + 1;
        let now = self.connections_now.fetch_add(1, Ordering::Relaxed) + 1;
        self.connections_peak.fetch_max(now, Ordering::Relaxed);
        let conn = Arc::new(ConnState {
            id,
            topic,
            active: AtomicU32::new(0),
            peak: AtomicU32::new(0),
            requests: AtomicU64::new(0),
            limit_violations: AtomicU64::new(0),
            writes: AtomicU64::new(0),
            open: AtomicBool::new(true),
            limits: Arc::new(StreamLimits::new(self.max_streams.clone())),
        });
        self.connections
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(conn.clone());
        conn
    }

    /// `conn` has closed.
    pub(crate) fn connection_closed(&self, conn: &ConnState) {
        if conn.open.swap(false, Ordering::Relaxed) {
            self.connections_now.fetch_sub(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn bump(&self, f: impl FnOnce(&mut Control)) {
        self.control.send_modify(f);
        self.control_changed.notify_waiters();
    }

    pub(crate) fn control_now(&self) -> Control {
        *self.control.borrow()
    }
}
