//! The live devices' side: each accepted push wakes its device (an online one) which, after
//! the report delay and a little jitter, contacts the server and answers whatever is queued.
//! A push to a device already awake makes it go round once more when it is done, so no push
//! is left unanswered and no device talks to the server twice at once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;

use super::super::device::{Role, SimDevice};
use super::super::exchange::exchange;
use super::super::nodes::NodeRoutes;
use super::super::signer::DeviceSigner;
use super::answers;
use super::summary::Counters;
use crate::mock_apns::AcceptedPush;

/// Most commands a device answers in one exchange before it gives up on the server.
const MAX_COMMANDS: usize = 64;

/// Devices talking to the server at once.
const CONCURRENT: usize = 32;

/// A device's wake state.
const ASLEEP: u8 = 0;
/// Waiting for its delay or answering.
const AWAKE: u8 = 1;
/// Awake, and pushed again since: one more exchange when this one ends.
const AGAIN: u8 = 2;

/// The live fleet's devices and what they need to reach the server.
pub(crate) struct LiveDevices {
    pub(crate) devices: Arc<Vec<SimDevice>>,
    pub(crate) signers: Option<Arc<Vec<DeviceSigner>>>,
    pub(crate) routes: Arc<NodeRoutes>,
    pub(crate) counters: Arc<Counters>,
}

impl LiveDevices {
    /// Device `index` contacts the server: Idle, then it answers each command handed out
    /// ([`answers::answer`]) until nothing is queued. Counted in the counters, failures too.
    pub(crate) async fn answer_queue(&self, index: usize) {
        let d = &self.devices[index];
        let signer = self.signers.as_ref().map(|s| &s[index]);
        let mut conn = self.routes.conns();
        let mut how = Vec::new();
        let done = exchange(&mut conn, index, d, signer, MAX_COMMANDS, |c| {
            let (body, answer) = answers::answer(d, c);
            how.push(answer);
            body
        })
        .await;
        match done {
            Ok(answered) => {
                for (command, answer) in answered.iter().zip(how) {
                    self.counters.command(&command.request_type, answer);
                }
                self.counters.reports.fetch_add(1, Ordering::Relaxed);
            }
            Err(why) => self
                .counters
                .failures
                .record(format!("report {}: {why}", d.udid)),
        }
    }

    /// [`LiveDevices::answer_queue`] for each device of `indices`, `workers` at a time.
    pub(crate) async fn answer_all(self: &Arc<Self>, indices: Vec<usize>, workers: usize) {
        let indices = Arc::new(indices);
        let workers = workers.clamp(1, indices.len().max(1));
        let mut tasks = JoinSet::new();
        for w in 0..workers {
            let (fleet, indices) = (self.clone(), indices.clone());
            tasks.spawn(async move {
                for &i in indices.iter().skip(w).step_by(workers) {
                    fleet.answer_queue(i).await;
                }
            });
        }
        while tasks.join_next().await.is_some() {}
    }
}

/// Hands each accepted push to its device until aborted (which stops the devices too).
pub(crate) fn start(
    fleet: Arc<LiveDevices>,
    mut accepted: mpsc::UnboundedReceiver<AcceptedPush>,
    delay: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let by_token: HashMap<String, usize> = fleet
            .devices
            .iter()
            .enumerate()
            .map(|(i, d)| (d.token_hex(), i))
            .collect();
        let states: Arc<Vec<AtomicU8>> = Arc::new(
            fleet
                .devices
                .iter()
                .map(|_| AtomicU8::new(ASLEEP))
                .collect(),
        );
        let permits = Arc::new(Semaphore::new(CONCURRENT));
        let mut devices = JoinSet::new();
        loop {
            let push = tokio::select! {
                push = accepted.recv() => push,
                Some(_) = devices.join_next() => continue,
            };
            let Some(push) = push else { break };
            let counters = &fleet.counters;
            counters.pushes_accepted.fetch_add(1, Ordering::Relaxed);
            let Some(&index) = by_token.get(&push.token) else {
                counters
                    .failures
                    .record(format!("push to a token of no device: {}", push.token));
                continue;
            };
            match fleet.devices[index].role {
                Role::Online => {}
                Role::Offline => {
                    counters.pushes_unanswered.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                Role::Unregistered => {
                    counters.failures.record(format!(
                        "{}: unregistered token was accepted",
                        fleet.devices[index].udid
                    ));
                    continue;
                }
            }
            if wake(&states[index]) {
                let (fleet, states, permits) = (fleet.clone(), states.clone(), permits.clone());
                devices.spawn(async move {
                    loop {
                        tokio::time::sleep(delay + jitter(delay)).await;
                        {
                            let _permit = permits.acquire().await;
                            fleet.answer_queue(index).await;
                        }
                        if fall_asleep(&states[index]) {
                            break;
                        }
                    }
                });
            }
        }
        while devices.join_next().await.is_some() {}
    })
}

/// Marks the device pushed; true when it was asleep (the caller starts it).
fn wake(state: &AtomicU8) -> bool {
    loop {
        let (from, to) = match state.load(Ordering::Acquire) {
            ASLEEP => (ASLEEP, AWAKE),
            AWAKE => (AWAKE, AGAIN),
            _ => return false,
        };
        if state
            .compare_exchange(from, to, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            return from == ASLEEP;
        }
    }
}

/// After an exchange: true when the device may sleep; false when it was pushed meanwhile
/// (it goes round again).
fn fall_asleep(state: &AtomicU8) -> bool {
    if state
        .compare_exchange(AWAKE, ASLEEP, Ordering::AcqRel, Ordering::Acquire)
        .is_ok()
    {
        return true;
    }
    // AGAIN: only this device's task leaves it.
    state.store(AWAKE, Ordering::Release);
    false
}

/// Up to the delay again (at least 200 ms), so that a refresh's answers arrive spread out and
/// a progress bar visibly moves.
fn jitter(delay: Duration) -> Duration {
    let spread = delay.max(Duration::from_millis(200)).as_millis() as u64;
    Duration::from_millis(fastrand::u64(0..=spread))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_push_while_awake_means_one_more_round() {
        let s = AtomicU8::new(ASLEEP);
        assert!(wake(&s), "asleep: start it");
        assert!(!wake(&s), "awake: no second task");
        assert!(!wake(&s), "pushed twice meanwhile: still one more round");
        assert!(!fall_asleep(&s), "pushed meanwhile: go round again");
        assert!(fall_asleep(&s), "nothing since: sleep");
        assert!(wake(&s), "asleep again: start it");
    }

    #[test]
    fn jitter_stays_within_the_spread() {
        for _ in 0..100 {
            assert!(jitter(Duration::from_millis(300)) <= Duration::from_millis(300));
            assert!(jitter(Duration::ZERO) <= Duration::from_millis(200));
        }
    }
}
