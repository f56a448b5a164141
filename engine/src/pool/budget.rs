//! The connection budget shared by every topic of a client, and when a topic gives
//! connections back to it.
//!
//! Every connection, from its first TCP packet to its close (draining included), holds one
//! permit of the budget, so the client never has more than `max_total_connections` open to
//! APNs whatever its topics do. Permits are handed out first come, first served. A topic that
//! has work but not one connection waits in line ("starves"); while any topic starves, the
//! others give back what they can spare ([`decide`]): connections beyond their first at once,
//! and the last one once the topic has been idle for an [`IDLE_GRACE`] or the other has
//! waited a [`TURN`] (a busy topic then waits in line behind the others with its pushes still
//! queued). A topic with work therefore always gets a connection in turn, however busy the
//! others are, and a topic nobody pushes to closes its connections after the idle time
//! anyway.
//!
//! Only as many connections are given back as topics starve ([`Budget::promise`]): when a
//! topic waits, one connection closes for it, not one in every other topic — each close and
//! reopen costs a TLS handshake on both sides.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The permits, and how many topics wait for their first connection.
#[derive(Debug)]
pub struct Budget {
    permits: Arc<Semaphore>,
    max: usize,
    starving: AtomicUsize,
    /// Connections closing for a starving topic, their permits not yet free.
    releasing: AtomicUsize,
}

impl Budget {
    /// A budget of `max` connections.
    pub fn new(max: usize) -> Arc<Budget> {
        Arc::new(Budget {
            permits: Arc::new(Semaphore::new(max)),
            max,
            starving: AtomicUsize::new(0),
            releasing: AtomicUsize::new(0),
        })
    }

    /// The most connections, all topics together.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Connections open or opening now, all topics together.
    pub fn in_use(&self) -> usize {
        self.max - self.permits.available_permits()
    }

    /// A permit now, if one is free and no starving topic waits for it.
    pub fn try_take(&self) -> Option<OwnedSemaphorePermit> {
        if self.starving() > 0 {
            return None;
        }
        self.permits.clone().try_acquire_owned().ok()
    }

    /// Waits in line for a permit, counted as starving meanwhile.
    pub fn wait(self: &Arc<Self>) -> impl std::future::Future<Output = OwnedSemaphorePermit> {
        let guard = Starving::new(Arc::clone(self));
        let permits = Arc::clone(&self.permits);
        async move {
            let permit = permits
                .acquire_owned()
                .await
                .expect("the budget's semaphore is never closed");
            drop(guard);
            permit
        }
    }

    /// Topics waiting for their first connection.
    pub fn starving(&self) -> usize {
        self.starving.load(Ordering::Relaxed)
    }

    /// Leave to close a connection for a starving topic: granted while fewer connections
    /// are closing for them than topics starve. Held until the connection's permit is free.
    pub fn promise(self: &Arc<Self>) -> Option<Promise> {
        let mut closing = self.releasing.load(Ordering::Acquire);
        loop {
            if closing >= self.starving() {
                return None;
            }
            match self.releasing.compare_exchange_weak(
                closing,
                closing + 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Some(Promise(Arc::clone(self))),
                Err(now) => closing = now,
            }
        }
    }
}

/// A connection closing for a starving topic ([`Budget::promise`]); drop it once the
/// connection's permit is free.
#[derive(Debug)]
pub struct Promise(Arc<Budget>);

impl Drop for Promise {
    fn drop(&mut self) {
        self.0.releasing.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Counts a topic as starving for as long as it lives (dropped with the wait, however the
/// wait ends).
struct Starving(Arc<Budget>);

impl Starving {
    fn new(budget: Arc<Budget>) -> Starving {
        budget.starving.fetch_add(1, Ordering::Relaxed);
        Starving(budget)
    }
}

impl Drop for Starving {
    fn drop(&mut self) {
        self.0.starving.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What a topic's pool should give back now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GiveBack {
    /// Nothing.
    Nothing,
    /// Every connection (it has no work).
    All,
    /// Connections beyond the first (another topic starves).
    AllButOne,
}

/// How long a busy topic keeps its last connection while another topic waits for one.
pub const TURN: Duration = Duration::from_secs(1);

/// How long a topic without work keeps its last connection while another topic waits for
/// one: a topic whose pushes come a few milliseconds apart is not idle between them, and
/// closing its connection for each gap would cost a handshake per push.
pub const IDLE_GRACE: Duration = Duration::from_millis(100);

/// The pool's state as [`decide`] needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// Connections open or opening.
    pub connections: usize,
    /// Pushes waiting, being retried or in flight.
    pub busy: bool,
    /// Time since the pool last had work.
    pub idle_for: Duration,
    /// How long another topic has been waiting while this pool held connections (zero when
    /// none waits).
    pub others_waited: Duration,
}

/// Whether a pool gives connections back: all of them once it has been idle for
/// `idle_timeout`; while another topic starves, all but one at once, and the last one too
/// once the pool has been idle for an [`IDLE_GRACE`] or the other has waited a [`TURN`].
pub fn decide(usage: Usage, starving: usize, idle_timeout: Duration) -> GiveBack {
    if usage.connections == 0 {
        return GiveBack::Nothing;
    }
    if starving == 0 {
        if !usage.busy && usage.idle_for >= idle_timeout {
            return GiveBack::All;
        }
        return GiveBack::Nothing;
    }
    let idle = !usage.busy && usage.idle_for >= IDLE_GRACE.min(idle_timeout);
    if idle || usage.others_waited >= TURN {
        return GiveBack::All;
    }
    if usage.connections > 1 {
        return GiveBack::AllButOne;
    }
    GiveBack::Nothing
}

#[cfg(test)]
mod tests {
    use super::*;

    const IDLE: Duration = Duration::from_secs(300);

    fn usage(connections: usize, busy: bool, idle_s: u64) -> Usage {
        Usage {
            connections,
            busy,
            idle_for: Duration::from_secs(idle_s),
            others_waited: Duration::ZERO,
        }
    }

    #[test]
    fn an_idle_pool_closes_after_the_idle_time_or_after_a_grace_for_a_starving_topic() {
        assert_eq!(decide(usage(4, false, 10), 0, IDLE), GiveBack::Nothing);
        assert_eq!(decide(usage(4, false, 300), 0, IDLE), GiveBack::All);
        assert_eq!(decide(usage(4, false, 1), 1, IDLE), GiveBack::All);
        assert_eq!(decide(usage(0, false, 999), 3, IDLE), GiveBack::Nothing);
        // Between two pushes a few milliseconds apart: the extra connections go, the last
        // one stays.
        let between = Usage {
            idle_for: IDLE_GRACE / 4,
            ..usage(4, false, 0)
        };
        assert_eq!(decide(between, 1, IDLE), GiveBack::AllButOne);
        let between = Usage {
            connections: 1,
            ..between
        };
        assert_eq!(decide(between, 1, IDLE), GiveBack::Nothing);
    }

    #[test]
    fn only_as_many_connections_close_as_topics_starve() {
        let budget = Budget::new(4);
        assert!(budget.promise().is_none(), "nobody starves");
        budget.starving.fetch_add(2, Ordering::Relaxed);
        let first = budget.promise().expect("one starves");
        let second = budget.promise().expect("two starve");
        assert!(budget.promise().is_none(), "two are closing already");
        drop(first);
        let third = budget.promise().expect("one closed; one is still owed");
        drop((second, third));
        budget.starving.fetch_sub(2, Ordering::Relaxed);
        assert!(budget.promise().is_none());
    }

    #[test]
    fn a_busy_pool_keeps_one_connection_for_a_turn_while_another_waits() {
        assert_eq!(decide(usage(4, true, 0), 0, IDLE), GiveBack::Nothing);
        assert_eq!(decide(usage(4, true, 999), 2, IDLE), GiveBack::AllButOne);
        assert_eq!(decide(usage(1, true, 999), 2, IDLE), GiveBack::Nothing);
        let waited = |d: Duration| Usage {
            others_waited: d,
            ..usage(1, true, 0)
        };
        assert_eq!(decide(waited(TURN / 2), 1, IDLE), GiveBack::Nothing);
        assert_eq!(decide(waited(TURN), 1, IDLE), GiveBack::All);
        // Nobody waits any more: the turn does not end.
        assert_eq!(decide(waited(TURN * 9), 0, IDLE), GiveBack::Nothing);
    }

    #[tokio::test]
    async fn permits_are_bounded_and_a_starving_topic_goes_first() {
        let budget = Budget::new(2);
        let a = budget.try_take().expect("free");
        let _b = budget.try_take().expect("free");
        assert!(budget.try_take().is_none());
        assert_eq!(budget.in_use(), 2);
        let waiting = tokio::spawn({
            let budget = Arc::clone(&budget);
            async move { budget.wait().await }
        });
        while budget.starving() == 0 {
            tokio::task::yield_now().await;
        }
        drop(a);
        // The freed permit goes to the topic in line, not to a newcomer.
        assert!(budget.try_take().is_none());
        let _c = waiting.await.unwrap();
        assert_eq!(budget.starving(), 0);
        assert_eq!(budget.in_use(), 2);
    }
}
