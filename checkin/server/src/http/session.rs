//! Browser sign-in: the admin API key exchanged for a session cookie (`magicpush_session`)
//! with a per-session CSRF token, so that the console (`/ui/`) calls the same `/v1/…` JSON
//! routes without holding the key in script.
//!
//! | route | request | answer |
//! |---|---|---|
//! | `POST /v1/session` (no bearer needed) | `{"api_key": "<the admin API key>"}` | 201 `{"csrf_token", "expires_at", "idle_timeout_s"}` and `Set-Cookie: magicpush_session=…; Path=/; HttpOnly; SameSite=Strict; Max-Age=…` (`; Secure` over TLS); 401 wrong key; 400 malformed body; 429 with `Retry-After` after 5 failures from one address in 60 s (or 60 from all) |
//! | `GET /v1/session` | the cookie | 200 as above (a reloaded page gets its CSRF token back); 401 `not signed in` |
//! | `DELETE /v1/session` | the cookie and `X-CSRF-Token` | 200 `{"signed_out": true}`, the session revoked and the cookie cleared (`Max-Age=0`) |
//!
//! Every answer of these routes carries `Cache-Control: no-store`. With the cookie, the other
//! `/v1/…` routes take every method but GET, HEAD and OPTIONS only with `X-CSRF-Token` equal to
//! the session's token (403 otherwise); see [`super::auth::require`].
//!
//! The decisions are pure, with the time passed in: the table of sessions here
//! ([`Sessions`]) and the limit on failed sign-ins ([`limit::SignInLimiter`]). Sessions live in
//! this process's memory: a restart (and so a new API key) ends them all, and behind a load
//! balancer the console needs sticky sessions (or signs in again on another node).

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime};

use base64::Engine as _;
use subtle::ConstantTimeEq as _;

pub mod limit;
pub(super) mod web;

/// The cookie's name.
pub const COOKIE: &str = "magicpush_session";
/// The header a cookie-authenticated request that changes something carries its CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// Live sessions at most: signing in beyond it ends the oldest.
pub const MAX_SESSIONS: usize = 1_000;

/// How long a session lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionSettings {
    /// From sign-in, whatever the use (`--session-ttl`, default 12 h).
    pub ttl: Duration,
    /// Since its last authenticated use (`--session-idle`, default 30 min).
    pub idle: Duration,
}

impl Default for SessionSettings {
    fn default() -> Self {
        SessionSettings {
            ttl: Duration::from_secs(12 * 3600),
            idle: Duration::from_secs(30 * 60),
        }
    }
}

/// Why session settings are refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionSettingsError {
    /// A zero lifetime or idle timeout would end every session at once.
    #[error("{flag} must be longer than 0s")]
    Zero {
        /// The flag in question.
        flag: &'static str,
    },
}

impl SessionSettings {
    /// Checks the settings: both durations above zero.
    pub fn check(self) -> Result<Self, SessionSettingsError> {
        if self.ttl.is_zero() {
            return Err(SessionSettingsError::Zero {
                flag: "--session-ttl",
            });
        }
        if self.idle.is_zero() {
            return Err(SessionSettingsError::Zero {
                flag: "--session-idle",
            });
        }
        Ok(self)
    }
}

/// 256 random bits: a session token or a CSRF token before encoding.
pub type Secret = [u8; 32];

/// Base64url without padding (43 characters for 256 bits): safe in a cookie and a header.
pub fn encode(secret: &Secret) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret)
}

/// 256 bits from the system's CSPRNG (*ring*'s `SystemRandom`, which the server already
/// uses for key generation).
pub fn random_secret() -> Secret {
    use ring::rand::SecureRandom as _;
    let mut out = [0u8; 32];
    // The system's generator does not fail once the process runs; if it ever did, a zeroed
    // token must not be handed out.
    ring::rand::SystemRandom::new()
        .fill(&mut out)
        .expect("the system random number generator failed");
    out
}

/// The table's key for a token: its SHA-256, so that the table does not hold live cookies.
fn hash(token: &str) -> [u8; 32] {
    crate::identity::trust::sha256(token.as_bytes())
}

/// One live session, stored under its token's hash.
#[derive(Debug, Clone)]
struct Entry {
    csrf: String,
    created: Instant,
    /// `created + ttl`, as the wall clock read it at sign-in.
    expires_wall: SystemTime,
    last_used: Instant,
}

/// What a client learns of its session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionView {
    /// The token to send in `X-CSRF-Token`.
    pub csrf_token: String,
    /// The end of its lifetime (idle timeout aside).
    pub expires_at: SystemTime,
    /// The idle timeout, in seconds.
    pub idle_timeout_s: u64,
}

/// A session just created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    /// The cookie's value (held by the client only; the table keeps its hash).
    pub token: String,
    /// What the client reads of it.
    pub view: SessionView,
    /// The cookie's `Max-Age`: seconds to the end of its lifetime.
    pub max_age: Duration,
    /// A session ended to make room (the table was full).
    pub evicted: bool,
}

/// The live sessions, keyed by the SHA-256 of their token.
pub struct Sessions {
    settings: SessionSettings,
    max: usize,
    live: HashMap<[u8; 32], Entry>,
}

/// Counts only: the entries hold CSRF tokens.
impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions")
            .field("settings", &self.settings)
            .field("max", &self.max)
            .field("live", &self.live.len())
            .finish()
    }
}

impl Sessions {
    /// An empty table holding at most `max` sessions (at least one).
    pub fn new(settings: SessionSettings, max: usize) -> Self {
        Sessions {
            settings,
            max: max.max(1),
            live: HashMap::new(),
        }
    }

    /// The lifetimes in force.
    pub fn settings(&self) -> SessionSettings {
        self.settings
    }

    /// New lifetimes, for sessions created from now on and for the idle timeout of all.
    pub fn set_settings(&mut self, settings: SessionSettings) {
        self.settings = settings;
    }

    /// Sessions held (expired ones count until swept or looked up).
    pub fn len(&self) -> usize {
        self.live.len()
    }

    /// True when no session is held.
    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }

    fn alive(&self, e: &Entry, now: Instant) -> bool {
        now < e.created + self.settings.ttl && now < e.last_used + self.settings.idle
    }

    /// Drops the sessions that have expired; returns how many.
    pub fn sweep(&mut self, now: Instant) -> usize {
        let before = self.live.len();
        let (ttl, idle) = (self.settings.ttl, self.settings.idle);
        self.live
            .retain(|_, e| now < e.created + ttl && now < e.last_used + idle);
        before - self.live.len()
    }

    /// A new session for `token` with `csrf` (both random, given so the table stays pure):
    /// expired sessions are swept first, and the oldest one ends when the table is full.
    pub fn insert(
        &mut self,
        token: &Secret,
        csrf: &Secret,
        now: Instant,
        wall: SystemTime,
    ) -> Issued {
        self.sweep(now);
        let mut evicted = false;
        while self.live.len() >= self.max {
            let Some(oldest) = self
                .live
                .iter()
                .min_by_key(|(_, e)| e.created)
                .map(|(k, _)| *k)
            else {
                break;
            };
            self.live.remove(&oldest);
            evicted = true;
        }
        let token = encode(token);
        let entry = Entry {
            csrf: encode(csrf),
            created: now,
            expires_wall: wall + self.settings.ttl,
            last_used: now,
        };
        let view = self.view(&entry);
        self.live.insert(hash(&token), entry);
        Issued {
            token,
            view,
            max_age: self.settings.ttl,
            evicted,
        }
    }

    fn view(&self, e: &Entry) -> SessionView {
        SessionView {
            csrf_token: e.csrf.clone(),
            expires_at: e.expires_wall,
            idle_timeout_s: self.settings.idle.as_secs(),
        }
    }

    /// The session of `token` if it is alive, its idle timeout restarted (an authenticated
    /// use). An expired session found is dropped.
    pub fn touch(&mut self, token: &str, now: Instant) -> Option<SessionView> {
        let key = hash(token);
        let alive = self.alive(self.live.get(&key)?, now);
        if !alive {
            self.live.remove(&key);
            return None;
        }
        let entry = self.live.get_mut(&key)?;
        entry.last_used = now;
        let entry = entry.clone();
        Some(self.view(&entry))
    }

    /// [`Sessions::touch`] if `presented` is the session's CSRF token (compared in constant
    /// time); a request refused for its CSRF token does not count as a use.
    pub fn touch_with_csrf(
        &mut self,
        token: &str,
        presented: Option<&[u8]>,
        now: Instant,
    ) -> Result<SessionView, SessionRefused> {
        let key = hash(token);
        let entry = self.live.get(&key).ok_or(SessionRefused::NotSignedIn)?;
        if !self.alive(entry, now) {
            self.live.remove(&key);
            return Err(SessionRefused::NotSignedIn);
        }
        match presented {
            Some(p) if bool::from(p.ct_eq(entry.csrf.as_bytes())) => {
                self.touch(token, now).ok_or(SessionRefused::NotSignedIn)
            }
            _ => Err(SessionRefused::Csrf),
        }
    }

    /// Ends the session of `token`; false if there was none.
    pub fn revoke(&mut self, token: &str) -> bool {
        self.live.remove(&hash(token)).is_some()
    }
}

/// Why a cookie does not authenticate a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SessionRefused {
    /// No session, or an expired or revoked one: 401.
    #[error("not signed in")]
    NotSignedIn,
    /// A request that changes something without the session's CSRF token: 403.
    #[error("missing or wrong CSRF token (X-CSRF-Token)")]
    Csrf,
}

/// True for the methods a cookie alone may use (they change nothing).
pub fn is_safe(method: &http::Method) -> bool {
    matches!(
        *method,
        http::Method::GET | http::Method::HEAD | http::Method::OPTIONS
    )
}

/// The value of the `magicpush_session` cookie among the request's `Cookie` headers (the
/// first one named so).
pub fn cookie_token(headers: &http::HeaderMap) -> Option<&str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| name.trim() == COOKIE)
        .map(|(_, value)| value.trim().trim_matches('"'))
        .filter(|v| !v.is_empty())
}

/// The `Set-Cookie` value that hands out `token` for `max_age` (`Secure` when the request
/// came over TLS).
pub fn set_cookie(token: &str, max_age: Duration, tls: bool) -> String {
    let secure = if tls { "; Secure" } else { "" };
    format!(
        "{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
        max_age.as_secs()
    )
}

/// The `Set-Cookie` value that clears the cookie.
pub fn clear_cookie(tls: bool) -> String {
    let secure = if tls { "; Secure" } else { "" };
    format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{secure}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(60);

    fn table(max: usize) -> Sessions {
        Sessions::new(SessionSettings::default(), max)
    }

    fn secret(n: u8) -> Secret {
        [n; 32]
    }

    #[test]
    fn a_session_is_found_by_its_token_and_stored_under_its_hash() {
        let t0 = Instant::now();
        let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let mut s = table(10);
        let issued = s.insert(&secret(1), &secret(2), t0, wall);
        assert_eq!(issued.token.len(), 43, "256 bits in base64url");
        assert_eq!(issued.view.csrf_token, encode(&secret(2)));
        assert_ne!(issued.token, issued.view.csrf_token);
        assert_eq!(
            issued.view.expires_at,
            wall + Duration::from_secs(12 * 3600)
        );
        assert_eq!(issued.view.idle_timeout_s, 1800);
        assert_eq!(issued.max_age, Duration::from_secs(12 * 3600));
        // The table holds the hash, not the token.
        assert!(!s.live.contains_key(&secret(1)));
        let raw: [u8; 32] = issued.token.as_bytes()[..32].try_into().unwrap();
        assert!(!s.live.contains_key(&raw));
        assert!(s
            .live
            .contains_key(&crate::identity::trust::sha256(issued.token.as_bytes())));
        let debug = format!("{s:?}");
        assert!(!debug.contains(&issued.token) && !debug.contains(&issued.view.csrf_token));
        assert_eq!(s.touch(&issued.token, t0 + MIN), Some(issued.view.clone()));
        assert_eq!(s.touch("not-a-token", t0), None);
    }

    #[test]
    fn each_use_slides_the_idle_timeout_but_not_the_lifetime() {
        let t0 = Instant::now();
        let mut s = table(10);
        let token = s
            .insert(&secret(1), &secret(2), t0, SystemTime::now())
            .token;
        // Used every 29 minutes: alive through the 12 hours, not after.
        let mut t = t0;
        while t + 29 * MIN < t0 + Duration::from_secs(12 * 3600) {
            t += 29 * MIN;
            assert!(s.touch(&token, t).is_some(), "at {:?}", t - t0);
        }
        assert!(s
            .touch(&token, t0 + Duration::from_secs(12 * 3600))
            .is_none());
        assert!(s.is_empty(), "an expired session found is dropped");
        // Left alone for the idle timeout: gone.
        let token = s
            .insert(&secret(3), &secret(4), t0, SystemTime::now())
            .token;
        assert!(s.touch(&token, t0 + 29 * MIN).is_some());
        assert!(s.touch(&token, t0 + 59 * MIN).is_none());
    }

    #[test]
    fn a_revoked_session_is_gone_at_once() {
        let t0 = Instant::now();
        let mut s = table(10);
        let token = s
            .insert(&secret(1), &secret(2), t0, SystemTime::now())
            .token;
        assert!(s.revoke(&token));
        assert!(!s.revoke(&token));
        assert!(s.touch(&token, t0).is_none());
    }

    #[test]
    fn the_csrf_token_is_needed_and_must_match() {
        let t0 = Instant::now();
        let mut s = table(10);
        let issued = s.insert(&secret(1), &secret(2), t0, SystemTime::now());
        let csrf = issued.view.csrf_token.as_bytes();
        assert!(s.touch_with_csrf(&issued.token, Some(csrf), t0).is_ok());
        assert_eq!(
            s.touch_with_csrf(&issued.token, None, t0),
            Err(SessionRefused::Csrf)
        );
        assert_eq!(
            s.touch_with_csrf(&issued.token, Some(&csrf[..42]), t0),
            Err(SessionRefused::Csrf)
        );
        // A refused request does not keep the session alive.
        let t1 = t0 + 29 * MIN;
        assert_eq!(
            s.touch_with_csrf(&issued.token, None, t1),
            Err(SessionRefused::Csrf)
        );
        assert_eq!(
            s.touch_with_csrf(&issued.token, Some(csrf), t0 + 31 * MIN),
            Err(SessionRefused::NotSignedIn)
        );
        let issued = s.insert(&secret(1), &secret(2), t0, SystemTime::now());
        let other = s.insert(&secret(3), &secret(4), t0, SystemTime::now());
        assert_eq!(
            s.touch_with_csrf(&issued.token, Some(other.view.csrf_token.as_bytes()), t0),
            Err(SessionRefused::Csrf),
            "another session's token"
        );
        assert_eq!(
            s.touch_with_csrf("nope", Some(csrf), t0),
            Err(SessionRefused::NotSignedIn)
        );
    }

    #[test]
    fn a_full_table_ends_the_oldest_and_sweeps_the_expired_first() {
        let t0 = Instant::now();
        let mut s = table(3);
        let tokens: Vec<String> = (0..3u8)
            .map(|n| {
                s.insert(
                    &secret(n),
                    &secret(100 + n),
                    t0 + MIN * u32::from(n),
                    SystemTime::now(),
                )
                .token
            })
            .collect();
        // The oldest is touched last: eviction goes by age, not by use.
        assert!(s.touch(&tokens[0], t0 + 3 * MIN).is_some());
        let fourth = s.insert(&secret(9), &secret(109), t0 + 4 * MIN, SystemTime::now());
        assert!(fourth.evicted);
        assert_eq!(s.len(), 3);
        assert!(
            s.touch(&tokens[0], t0 + 4 * MIN).is_none(),
            "the oldest ended"
        );
        assert!(s.touch(&tokens[1], t0 + 4 * MIN).is_some());
        // Once the others have gone idle, a sign-in sweeps them instead of evicting.
        let later = t0 + 4 * MIN + Duration::from_secs(31 * 60);
        let fifth = s.insert(&secret(10), &secret(110), later, SystemTime::now());
        assert!(!fifth.evicted);
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn settings_with_zero_are_refused() {
        assert!(SessionSettings::default().check().is_ok());
        let zero = SessionSettings {
            ttl: Duration::ZERO,
            ..SessionSettings::default()
        };
        assert_eq!(
            zero.check().unwrap_err().to_string(),
            "--session-ttl must be longer than 0s"
        );
        let zero = SessionSettings {
            idle: Duration::ZERO,
            ..SessionSettings::default()
        };
        assert!(zero.check().is_err());
    }

    #[test]
    fn random_secrets_differ() {
        assert_ne!(random_secret(), random_secret());
        assert_eq!(encode(&random_secret()).len(), 43);
    }

    #[test]
    fn the_cookie_is_read_among_others_and_built_with_its_attributes() {
        let mut h = http::HeaderMap::new();
        assert_eq!(cookie_token(&h), None);
        h.append(http::header::COOKIE, "a=1; theme=dark".parse().unwrap());
        h.append(
            http::header::COOKIE,
            "x=2;magicpush_session=abc ; magicpush_session=def"
                .parse()
                .unwrap(),
        );
        assert_eq!(cookie_token(&h), Some("abc"));
        let mut h = http::HeaderMap::new();
        h.insert(http::header::COOKIE, "magicpush_session=".parse().unwrap());
        assert_eq!(cookie_token(&h), None);

        let plain = set_cookie("tok", Duration::from_secs(43_200), false);
        assert_eq!(
            plain,
            "magicpush_session=tok; Path=/; HttpOnly; SameSite=Strict; Max-Age=43200"
        );
        let tls = set_cookie("tok", Duration::from_secs(60), true);
        assert!(tls.ends_with("; Max-Age=60; Secure"), "{tls}");
        assert_eq!(
            clear_cookie(false),
            "magicpush_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"
        );
        assert!(clear_cookie(true).ends_with("; Secure"));
        assert!(is_safe(&http::Method::GET) && is_safe(&http::Method::OPTIONS));
        assert!(!is_safe(&http::Method::PUT) && !is_safe(&http::Method::DELETE));
    }
}
