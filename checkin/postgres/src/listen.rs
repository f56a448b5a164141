//! The feed of push certificate changes between nodes ([`PushCertStore::pushcert_changes`]):
//! every write of the push certificates' state (and of the run-time settings, which ride
//! along) sends a notification on [`CHANNEL`] in its own
//! transaction (so it is delivered only if it commits), and each store listens on a session
//! of its own.
//!
//! - **One database, many schemas**: `LISTEN`/`NOTIFY` channels are the database's, not a
//!   schema's. A notification's payload names the schema written (`current_schema()`) and
//!   the store that wrote it ([`Payload`]): a listener takes only those about its own schema
//!   from another store (a node's own writes are already in its memory).
//! - **Lost sessions**: the listening session is not pooled (`LISTEN` belongs to a session).
//!   When it ends (the server restarted, the network broke, an operator terminated it) the
//!   listener reconnects with a bounded backoff ([`retry_delay`]), and moves the counter on
//!   again once it listens: notifications sent meanwhile were lost, so the node re-reads.
//!   A session that stops answering is found by a ping every [`PING_EVERY`]. An outage is
//!   logged once when it starts and once when it ends, never per retry.
//! - **Seen by operators** as `application_name` `<the URL's, or magicpush>/pushcert-listener`
//!   in `pg_stat_activity`, and as the gauge `magicpush_pushcert_listener_up` (1 while
//!   listening).
//!
//! [`PushCertStore::pushcert_changes`]: magicpush_store::PushCertStore::pushcert_changes

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, watch};
use tokio_postgres::AsyncMessage;

use crate::tls::{DatabaseUrl, TlsMode};

/// The channel every node listens on.
pub(crate) const CHANNEL: &str = "magicpush_pushcerts";

/// What a write sends on [`CHANNEL`]: `<schema> <store>`. `$1` is the writing store's
/// [`Origin`]; `current_schema()` is the schema the write went to (NULL without one: "").
pub(crate) const NOTIFY_SQL: &str =
    "SELECT pg_notify('magicpush_pushcerts', COALESCE(current_schema(), '') || ' ' || $1)";

/// The gauge: 1 while the listening session listens.
const UP: &str = "magicpush_pushcert_listener_up";

/// Appended to the session's application name.
const NAME_SUFFIX: &str = "/pushcert-listener";

/// How often the listening session is pinged, and how long the ping may take.
pub(crate) const PING_EVERY: Duration = Duration::from_secs(30);
const PING_TIMEOUT: Duration = Duration::from_secs(10);

/// The first and the longest wait between two attempts to listen again.
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// A store's name in its notifications: random per store, so that its own are told apart.
pub(crate) type Origin = Arc<str>;

/// A new store's [`Origin`].
pub(crate) fn new_origin() -> Origin {
    format!("{:016x}", fastrand_u64()).into()
}

/// 64 bits unlikely to repeat between stores (no randomness crate needed for this).
fn fastrand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.write_u32(std::process::id());
    h.finish()
}

/// A notification's payload taken apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Payload<'a> {
    /// The schema written.
    pub(crate) schema: &'a str,
    /// The store that wrote it.
    pub(crate) origin: &'a str,
}

impl<'a> Payload<'a> {
    /// `None` for a payload not in [`NOTIFY_SQL`]'s form.
    pub(crate) fn parse(text: &'a str) -> Option<Payload<'a>> {
        let (schema, origin) = text.rsplit_once(' ')?;
        Some(Payload { schema, origin })
    }

    /// Whether a store of `origin` in `schema` must re-read: another store wrote its schema.
    pub(crate) fn concerns(&self, schema: &str, origin: &str) -> bool {
        self.schema == schema && self.origin != origin
    }
}

/// The wait before the next attempt to listen, after waiting `previous` (`None`: the first
/// failure): doubling from [`RETRY_FIRST`], at most [`RETRY_MAX`].
pub(crate) fn retry_delay(previous: Option<Duration>) -> Duration {
    match previous {
        None => RETRY_FIRST,
        Some(d) => (d * 2).clamp(RETRY_FIRST, RETRY_MAX),
    }
}

/// The listening task and its counter; the task ends when this is dropped.
pub(crate) struct Listener {
    changes: watch::Sender<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Listener {
    /// Starts listening for the changes other stores than `origin` make, on `runtime`.
    pub(crate) fn start(
        url: DatabaseUrl,
        origin: Origin,
        runtime: &tokio::runtime::Handle,
    ) -> Listener {
        let (changes, _) = watch::channel(0);
        let task = runtime.spawn(run(url, origin, changes.clone()));
        Listener { changes, task }
    }

    /// A receiver that sees the changes from now on.
    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }
}

/// Why a listening session ended.
#[derive(Debug, thiserror::Error)]
enum Ended {
    #[error("{0}")]
    Store(#[from] magicpush_store::StoreError),
    #[error("cannot listen: {0}")]
    Listen(tokio_postgres::Error),
    #[error("the session ended: {0}")]
    Closed(String),
    #[error("the session did not answer a ping within {}s", PING_TIMEOUT.as_secs())]
    Silent,
}

/// Listens until aborted, session after session.
async fn run(url: DatabaseUrl, origin: Origin, changes: watch::Sender<u64>) {
    let mut outage: Option<(Instant, Duration)> = None;
    loop {
        let mut listening = |schema: &str| {
            metrics::gauge!(UP).set(1.0);
            changes.send_modify(|n| *n = n.wrapping_add(1));
            match outage.take() {
                Some((since, _)) => tracing::info!(
                    schema,
                    after_s = since.elapsed().as_secs(),
                    "listening for push certificate changes from other nodes again; re-reading them"
                ),
                None => tracing::debug!(schema, "listening for push certificate changes"),
            }
        };
        let ended = session(&url, &origin, &changes, &mut listening).await;
        metrics::gauge!(UP).set(0.0);
        let delay = match &mut outage {
            None => {
                tracing::warn!(
                    "push certificate changes from other nodes are not heard ({ended}); \
                     retrying (meanwhile the server's periodic re-read picks them up)"
                );
                let delay = retry_delay(None);
                outage = Some((Instant::now(), delay));
                delay
            }
            Some((_, previous)) => {
                tracing::debug!("listening for push certificate changes failed again: {ended}");
                *previous = retry_delay(Some(*previous));
                *previous
            }
        };
        tokio::time::sleep(delay).await;
    }
}

/// What the connection's driver hands the session.
enum Event {
    Notification(String),
    Closed(String),
}

/// One session: connect, `LISTEN`, then count the notifications that concern this store until
/// the session ends. `listening` runs once `LISTEN` took effect.
async fn session(
    url: &DatabaseUrl,
    origin: &str,
    changes: &watch::Sender<u64>,
    listening: &mut impl FnMut(&str),
) -> Ended {
    let mut config = match url.config() {
        Ok(c) => c,
        Err(e) => return e.into(),
    };
    let name = config.get_application_name().unwrap_or("magicpush");
    let name = format!("{name}{NAME_SUFFIX}");
    config.application_name(&name);
    let (events, mut received) = mpsc::unbounded_channel();
    // The driver ends with the session, even one whose network hangs.
    let (client, _driver) = match url.mode {
        TlsMode::Off => match config.connect(tokio_postgres::NoTls).await {
            Ok((client, conn)) => (client, AbortOnDrop(tokio::spawn(drive(conn, events)))),
            Err(e) => return crate::pg_err("connect")(e).into(),
        },
        _ => {
            let tls = match url.connector() {
                Ok(t) => t,
                Err(e) => return e.into(),
            };
            match config.connect(tls).await {
                Ok((client, conn)) => (client, AbortOnDrop(tokio::spawn(drive(conn, events)))),
                Err(e) => return crate::pg_err("connect")(e).into(),
            }
        }
    };
    if let Err(e) = client.batch_execute(&format!("LISTEN {CHANNEL}")).await {
        return Ended::Listen(e);
    }
    let schema: String = match client
        .query_one("SELECT COALESCE(current_schema(), '')", &[])
        .await
        .and_then(|row| row.try_get(0))
    {
        Ok(s) => s,
        Err(e) => return Ended::Listen(e),
    };
    listening(&schema);
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + PING_EVERY, PING_EVERY);
    loop {
        tokio::select! {
            event = received.recv() => match event {
                Some(Event::Notification(text)) => {
                    if Payload::parse(&text).is_some_and(|p| p.concerns(&schema, origin)) {
                        changes.send_modify(|n| *n = n.wrapping_add(1));
                    }
                }
                Some(Event::Closed(why)) => return Ended::Closed(why),
                None => return Ended::Closed("the connection closed".into()),
            },
            _ = ping.tick() => {
                match tokio::time::timeout(PING_TIMEOUT, client.simple_query("SELECT 1")).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => return Ended::Closed(e.to_string()),
                    Err(_) => return Ended::Silent,
                }
            }
        }
    }
}

/// A task aborted when this is dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Drives the connection (its queries and its notifications) until it ends, handing
/// notifications and the end to the session.
async fn drive<S, T>(
    mut conn: tokio_postgres::Connection<S, T>,
    events: mpsc::UnboundedSender<Event>,
) where
    S: AsyncRead + AsyncWrite + Unpin,
    T: AsyncRead + AsyncWrite + Unpin,
{
    loop {
        let event = match std::future::poll_fn(|cx| conn.poll_message(cx)).await {
            Some(Ok(AsyncMessage::Notification(n))) => Event::Notification(n.payload().to_owned()),
            Some(Ok(_)) => continue,
            Some(Err(e)) => Event::Closed(crate::with_causes(&e)),
            None => Event::Closed("the server closed the connection".into()),
        };
        let last = matches!(event, Event::Closed(_));
        if events.send(event).is_err() || last {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_notification_concerns_other_stores_of_its_schema() {
        let p = Payload::parse("t_00ab 1234").unwrap();
        assert_eq!(
            p,
            Payload {
                schema: "t_00ab",
                origin: "1234"
            }
        );
        assert!(
            p.concerns("t_00ab", "5678"),
            "another store wrote my schema"
        );
        assert!(!p.concerns("t_00ab", "1234"), "my own write");
        assert!(!p.concerns("t_ffff", "5678"), "another schema's");
        // A schema name with a space (quoted identifiers allow it): the origin is the last word.
        let p = Payload::parse("my schema 99").unwrap();
        assert_eq!(p.schema, "my schema");
        assert_eq!(Payload::parse("nospace"), None);
        // No schema at all (an empty search_path).
        assert_eq!(Payload::parse(" 77").unwrap().schema, "");
    }

    #[test]
    fn retries_back_off_to_a_bound() {
        let mut d = retry_delay(None);
        assert_eq!(d, RETRY_FIRST);
        let mut waits = vec![d];
        for _ in 0..10 {
            d = retry_delay(Some(d));
            waits.push(d);
        }
        assert!(waits.windows(2).all(|w| w[0] <= w[1]), "{waits:?}");
        assert_eq!(*waits.last().unwrap(), RETRY_MAX);
        assert_eq!(waits[1], RETRY_FIRST * 2);
    }

    #[test]
    fn origins_differ() {
        assert_ne!(new_origin(), new_origin());
    }
}
