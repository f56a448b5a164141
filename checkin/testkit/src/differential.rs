//! Differential property test of a durable [`Store`]: random sequences of store operations
//! run on [`MemoryStore`] and the durable store (SQLite, PostgreSQL: a [`Durable`]) side by
//! side. After every operation, what it returned and everything the [`Store`] trait can read
//! back must be the same on both.
//!
//! Why: the backends implement one contract (the `Store` trait's doc comments) in different
//! ways — plain Rust over maps, and SQL statements that re-derive the shared rules
//! (`magicpush_store::logic`) column by column. The conformance suite checks chosen cases;
//! this one checks the interleavings nobody wrote down. Devices come from a pool of four and
//! commands from a pool of eight per case, so operations collide (a second Authenticate, a
//! report for a cancelled command, a refresh chunk for a command enqueued before, an identity
//! bound to another device). Times advance by random amounts with sub-millisecond parts, and
//! now and then an operation is stamped a little late, as a slow request is: the stores keep
//! times to the millisecond and `last_seen_at` only moves forward. An operation may replace
//! the durable store by a new one on the same database ([`Durable::reopen`]), so that nothing
//! read back comes from a cache the database does not match. Each store's
//! `tests/differential.rs` says how its store is opened (sealed secret columns or not) and
//! how many cases it runs:
//!
//! ```ignore
//! proptest! {
//!     #[test]
//!     fn memory_and_x_stores_agree(case in differential::case()) {
//!         let mut durable = X::open();
//!         differential::runtime().block_on(differential::check(&case, &mut durable))?;
//!     }
//! }
//! ```
//!
//! Every difference fails, except one allowed by the contract and normalised in
//! `same_report_outcome`: `ReportOutcome::next_command` is `None` when a store did not look.

use std::future::Future;
use std::mem::discriminant;
use std::sync::OnceLock;

use magicpush_engine::{EngineCause, Reason};
use magicpush_store::prelude::*;

use magicpush_mdm::{Authenticate, Command, Report, Secret, Status, TokenUpdate, UserChannel};
use magicpush_store::{
    BoundIdentity, Device, EnqueueMode, EnqueueOutcome, Enrollment, MemoryStore, PushOutcome,
    QueuedCommand, ReportOutcome, Store, StoreError, RESULTS_KEPT_PER_DEVICE,
};
use plist::{Dictionary, Value};
use proptest::prelude::*;
use time::{Duration, OffsetDateTime};

use crate::conformance::{authenticate, report, t, token_update};

/// The durable store of a differential test, and how to replace it by a new one on the same
/// database (a `Reopen` operation). Each store's `tests/differential.rs` implements it.
pub trait Durable {
    /// The store's name in failure messages (`sqlite`, `postgres`).
    const NAME: &'static str;

    /// The store compared with the memory store.
    fn store(&self) -> &dyn Store;

    /// Replaces the store by a new one on the same database, the old one closed: what was
    /// written is all in the database, none of it only in a cache.
    fn reopen(&mut self) -> impl Future<Output = ()>;
}

/// The most operations of a case (one of which may be a [`burst`] of reports), run after
/// enrolling some of the devices.
const MAX_OPS: usize = 40;

/// The device pool: a prefix (`D1`, `D10`) and a lower-case UDID, so that listing order and
/// page boundaries are exercised too.
const DEVICES: [&str; 4] = ["D1", "D10", "D2", "d3"];
const TOPICS: [&str; 2] = ["com.apple.mgmt.External.a", "com.apple.mgmt.External.b"];
const REQUEST_TYPES: [&str; 4] = [
    magicpush_mdm::DEVICE_INFORMATION,
    "ProfileList",
    "InstallProfile",
    "RestartDevice",
];
const COMMANDS: usize = 8;
/// A CommandUUID no command has.
const UNKNOWN_UUID: &str = "NO-SUCH-COMMAND";

/// One command of a case's pool: its UUID is `CMD-<index>`, so a UUID always names the same
/// command (as it does in a real deployment).
#[derive(Debug, Clone)]
struct CommandSpec {
    request_type: usize,
    /// Expiry after the case's start; expired commands must be dropped alike.
    expires_after_ms: Option<i64>,
}

/// How an operation's clock moves: `advance_ns` forward (kept), then `late_ms` back for this
/// operation only.
#[derive(Debug, Clone)]
struct Step {
    advance_ns: i64,
    late_ms: Option<i64>,
    op: Op,
}

/// Which CommandUUID a report answers.
#[derive(Debug, Clone)]
enum Target {
    /// The first command queued for the device (an unknown UUID if none is).
    Head,
    /// One of the case's commands, queued for the device or not.
    Pool(usize),
    Unknown,
}

#[derive(Debug, Clone)]
enum Outcome {
    Accepted,
    Unregistered {
        timestamp_ms: Option<u64>,
    },
    /// `BadDeviceToken` invalidates the token; another reason does not.
    Rejected {
        bad_token: bool,
    },
    Failed,
}

/// A store operation (every write, and `next_command`). Devices and commands are indices into
/// [`DEVICES`] and the case's pool.
#[derive(Debug, Clone)]
enum Op {
    Authenticate {
        dev: usize,
        topic: usize,
        /// 0: the full facts, 1: only a newer OS version, 2: no facts.
        facts: u8,
        /// Identity certificate `[n; 32]`: few values, so devices contend for one.
        identity: Option<u8>,
    },
    TokenUpdate {
        dev: usize,
        topic: usize,
        seed: u8,
        unlock_token: bool,
        awaiting_configuration: bool,
    },
    UserTokenUpdate {
        dev: usize,
        user: u8,
        seed: u8,
        names: bool,
    },
    CheckOut {
        dev: usize,
    },
    SetBootstrapToken {
        dev: usize,
        token: Option<u8>,
    },
    Touch {
        dev: usize,
    },
    Enqueue {
        cmd: usize,
        devs: Vec<usize>,
        skip_if_queued: bool,
    },
    NextCommand {
        dev: usize,
        skip_not_now: bool,
    },
    Report {
        dev: usize,
        status: Status,
        target: Target,
        /// 0: no QueryResponses, 1: with facts, 2: an empty QueryResponses.
        facts: u8,
    },
    RecordPushAttempts {
        devs: Vec<usize>,
    },
    /// Withdraws the attempts marked at the `attempt`-th latest push time of the case.
    WithdrawPushAttempts {
        devs: Vec<usize>,
        attempt: usize,
    },
    RecordPushOutcome {
        dev: usize,
        outcome: Outcome,
    },
    RecordPushOutcomes {
        outcomes: Vec<(usize, Outcome)>,
    },
    QueueAndMarkPushes {
        cmd: usize,
        devs: Vec<usize>,
    },
    CancelCommand {
        /// `None`: a UUID no command has.
        cmd: Option<usize>,
    },
    DeleteDevice {
        dev: usize,
    },
    DeleteAllDevices,
    /// [`Durable::reopen`] (the memory store does nothing).
    Reopen,
}

/// One random case: a pool of commands and the steps run on both stores.
#[derive(Debug, Clone)]
pub struct Case {
    commands: Vec<CommandSpec>,
    steps: Vec<Step>,
    /// Page size for walking `devices_page`.
    page: usize,
}

// ---- strategies ----

fn dev() -> impl Strategy<Value = usize> {
    0..DEVICES.len()
}

fn devs() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(dev(), 0..=5)
}

fn cmd() -> impl Strategy<Value = usize> {
    0..COMMANDS
}

fn outcome() -> impl Strategy<Value = Outcome> {
    prop_oneof![
        Just(Outcome::Accepted),
        prop::option::of(1u64..2_000_000_000_000)
            .prop_map(|timestamp_ms| Outcome::Unregistered { timestamp_ms }),
        any::<bool>().prop_map(|bad_token| Outcome::Rejected { bad_token }),
        Just(Outcome::Failed),
    ]
}

fn status() -> impl Strategy<Value = Status> {
    prop_oneof![
        3 => Just(Status::Acknowledged),
        2 => Just(Status::Idle),
        1 => Just(Status::Error),
        1 => Just(Status::CommandFormatError),
        2 => Just(Status::NotNow),
    ]
}

fn target() -> impl Strategy<Value = Target> {
    prop_oneof![
        4 => Just(Target::Head),
        2 => cmd().prop_map(Target::Pool),
        1 => Just(Target::Unknown),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    // Weighted so that devices exist and have queues: an Authenticate drops the device's
    // queue, a TokenUpdate does not.
    prop_oneof![
        3 => (dev(), 0..TOPICS.len(), 0u8..3, prop::option::weighted(0.4, 0u8..3)).prop_map(
            |(dev, topic, facts, identity)| Op::Authenticate { dev, topic, facts, identity }
        ),
        5 => (dev(), 0..TOPICS.len(), 0u8..3, any::<bool>(), prop::bool::weighted(0.2))
            .prop_map(|(dev, topic, seed, unlock_token, awaiting_configuration)| {
                Op::TokenUpdate { dev, topic, seed, unlock_token, awaiting_configuration }
            }),
        1 => (dev(), 0u8..2, 0u8..3, any::<bool>())
            .prop_map(|(dev, user, seed, names)| Op::UserTokenUpdate { dev, user, seed, names }),
        1 => dev().prop_map(|dev| Op::CheckOut { dev }),
        1 => (dev(), prop::option::of(0u8..3))
            .prop_map(|(dev, token)| Op::SetBootstrapToken { dev, token }),
        1 => dev().prop_map(|dev| Op::Touch { dev }),
        5 => (cmd(), devs(), any::<bool>())
            .prop_map(|(cmd, devs, skip_if_queued)| Op::Enqueue { cmd, devs, skip_if_queued }),
        2 => (dev(), any::<bool>())
            .prop_map(|(dev, skip_not_now)| Op::NextCommand { dev, skip_not_now }),
        10 => (dev(), status(), target(), 0u8..3).prop_map(|(dev, status, target, facts)| {
            Op::Report { dev, status, target, facts }
        }),
        2 => devs().prop_map(|devs| Op::RecordPushAttempts { devs }),
        1 => (devs(), 0usize..3)
            .prop_map(|(devs, attempt)| Op::WithdrawPushAttempts { devs, attempt }),
        2 => (dev(), outcome()).prop_map(|(dev, outcome)| Op::RecordPushOutcome { dev, outcome }),
        1 => prop::collection::vec((dev(), outcome()), 0..=4)
            .prop_map(|outcomes| Op::RecordPushOutcomes { outcomes }),
        3 => (cmd(), devs()).prop_map(|(cmd, devs)| Op::QueueAndMarkPushes { cmd, devs }),
        1 => prop::option::weighted(0.8, cmd()).prop_map(|cmd| Op::CancelCommand { cmd }),
        // Deleting every device (the new-topic procedure) is rare: it empties the state the
        // other operations build up.
        1 => prop_oneof![
            7 => dev().prop_map(|dev| Op::DeleteDevice { dev }),
            1 => Just(Op::DeleteAllDevices),
        ],
        1 => Just(Op::Reopen),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    // Often no time passes (writes at one instant), mostly up to a few seconds, sometimes
    // minutes (commands expire meanwhile).
    let advance = prop_oneof![
        2 => Just(0i64),
        6 => 0i64..3_000_000_000,
        1 => 0i64..120_000_000_000,
    ];
    (advance, prop::option::weighted(0.1, 1i64..5_000), op()).prop_map(
        |(advance_ns, late_ms, op)| Step {
            advance_ns,
            late_ms,
            op,
        },
    )
}

/// More results than a device keeps ([`RESULTS_KEPT_PER_DEVICE`]), a millisecond apart: one
/// device answering command after command, so that old results are pruned.
fn burst() -> impl Strategy<Value = Vec<Step>> {
    let kept = RESULTS_KEPT_PER_DEVICE;
    let answers =
        (status(), target()).prop_filter("Idle records no result", |(s, _)| *s != Status::Idle);
    (dev(), prop::collection::vec(answers, kept + 1..=kept + 3)).prop_map(|(dev, answers)| {
        answers
            .into_iter()
            .map(|(status, target)| Step {
                advance_ns: 1_000_000,
                late_ms: None,
                op: Op::Report {
                    dev,
                    status,
                    target,
                    facts: 0,
                },
            })
            .collect()
    })
}

/// The steps that enroll `dev` at the case's start (Authenticate, then TokenUpdate), so that
/// most operations find devices with queues to work on.
fn enrollment(dev: usize) -> [Step; 2] {
    let at_start = |op| Step {
        advance_ns: 0,
        late_ms: None,
        op,
    };
    [
        at_start(Op::Authenticate {
            dev,
            topic: 0,
            facts: 0,
            identity: None,
        }),
        at_start(Op::TokenUpdate {
            dev,
            topic: 0,
            seed: 0,
            unlock_token: true,
            awaiting_configuration: false,
        }),
    ]
}

/// The random cases of a differential test.
pub fn case() -> impl Strategy<Value = Case> {
    let spec = (
        0..REQUEST_TYPES.len(),
        prop::option::weighted(0.4, 0i64..90_000),
    )
        .prop_map(|(request_type, expires_after_ms)| CommandSpec {
            request_type,
            expires_after_ms,
        });
    (
        prop::collection::vec(spec, COMMANDS),
        prop::collection::vec(prop::bool::weighted(0.75), DEVICES.len()),
        prop::collection::vec(
            prop_oneof![40 => step().prop_map(|s| vec![s]), 1 => burst()],
            1..=MAX_OPS,
        ),
        1usize..=3,
    )
        .prop_map(|(commands, enrolled, steps, page)| {
            let prologue = (0..DEVICES.len())
                .filter(|&d| enrolled[d])
                .flat_map(enrollment);
            Case {
                commands,
                steps: prologue.chain(steps.into_iter().flatten()).collect(),
                page,
            }
        })
}

// ---- from an operation to store calls ----

/// A case's start: a fixed instant.
fn start() -> OffsetDateTime {
    t(0)
}

fn udid(dev: usize) -> String {
    DEVICES[dev].to_owned()
}

fn udids(devs: &[usize]) -> Vec<String> {
    devs.iter().map(|&d| udid(d)).collect()
}

fn build_command(index: usize, spec: &CommandSpec) -> Command {
    let mut params = Dictionary::new();
    params.insert("Index".into(), Value::Integer((index as i64).into()));
    let mut c = Command::with_uuid(
        format!("CMD-{index}"),
        REQUEST_TYPES[spec.request_type],
        params,
    );
    // Sub-millisecond parts: the stores keep the expiry to the millisecond.
    c.expires_at = spec
        .expires_after_ms
        .map(|ms| start() + Duration::milliseconds(ms) + Duration::nanoseconds(123_456));
    c
}

fn push_outcome(o: &Outcome) -> PushOutcome {
    match o {
        Outcome::Accepted => PushOutcome::Accepted,
        Outcome::Unregistered { timestamp_ms } => PushOutcome::Unregistered {
            reason: Reason::Unregistered,
            timestamp_ms: *timestamp_ms,
        },
        Outcome::Rejected { bad_token: true } => PushOutcome::Rejected {
            reason: Reason::BadDeviceToken.into(),
        },
        Outcome::Rejected { bad_token: false } => PushOutcome::Rejected {
            reason: Reason::PayloadTooLarge.into(),
        },
        Outcome::Failed => PushOutcome::Failed {
            reason: EngineCause::DeadlineExceeded.into(),
        },
    }
}

fn authenticate_msg(dev: usize, topic: usize, facts: u8) -> Authenticate {
    let mut msg = authenticate(&udid(dev));
    msg.topic = TOPICS[topic].into();
    match facts {
        0 => {}
        1 => {
            msg.info = magicpush_mdm::DeviceInfo {
                os_version: Some("18.0".into()),
                ..Default::default()
            }
        }
        _ => msg.info = Default::default(),
    }
    msg
}

fn identity(n: u8, at: OffsetDateTime) -> BoundIdentity {
    BoundIdentity::new(
        [n; 32],
        format!("CN=identity {n}"),
        format!("{n:02X}"),
        start() + Duration::days(365),
        at,
    )
}

fn report_msg(dev: usize, status: Status, uuid: Option<&str>, facts: u8) -> Report {
    let mut extra = Dictionary::new();
    if facts > 0 {
        let mut q = Dictionary::new();
        if facts == 1 {
            q.insert("DeviceName".into(), Value::String(format!("name {status}")));
            q.insert("OSVersion".into(), Value::String("18.1".into()));
        }
        extra.insert("QueryResponses".into(), Value::Dictionary(q));
    }
    if status == Status::Error {
        let mut item = Dictionary::new();
        item.insert("ErrorCode".into(), Value::Integer(12_021.into()));
        item.insert(
            "ErrorDomain".into(),
            Value::String("MCMDMErrorDomain".into()),
        );
        let chain = vec![Value::Dictionary(item)];
        extra.insert("ErrorChain".into(), Value::Array(chain));
    }
    let uuid = uuid.filter(|_| status != Status::Idle);
    report(&udid(dev), status, uuid, extra)
}

/// An operation with its inputs made concrete: what both stores are given.
#[derive(Debug)]
enum Call {
    Authenticate(Authenticate, Option<BoundIdentity>),
    TokenUpdate(TokenUpdate),
    CheckOut(String),
    SetBootstrapToken(String, Option<Secret>),
    Touch(String),
    Enqueue(Command, Vec<String>, EnqueueMode),
    NextCommand(String, bool),
    Report(Report),
    RecordPushAttempts(Vec<String>),
    WithdrawPushAttempts(Vec<String>, OffsetDateTime),
    RecordPushOutcome(String, PushOutcome),
    RecordPushOutcomes(Vec<(String, PushOutcome)>),
    QueueAndMarkPushes(Command, Vec<String>),
    CancelCommand(String),
    DeleteDevice(String),
    DeleteAllDevices,
    Reopen,
}

/// What a call returned (`()` for writes that return nothing).
#[derive(Debug, PartialEq)]
enum Returned {
    Unit,
    PreviousIdentity(Option<[u8; 32]>),
    Enrollment(Enrollment),
    Enqueued(EnqueueOutcome),
    Next(Option<QueuedCommand>),
    Report(ReportOutcome),
    Number(u64),
    Cancelled(Option<usize>),
    Deleted(bool),
}

async fn apply(store: &dyn Store, call: &Call, at: OffsetDateTime) -> Result<Returned, StoreError> {
    use Returned as R;
    match call {
        Call::Authenticate(msg, id) => store
            .authenticate(msg, id.as_ref(), at)
            .await
            .map(R::PreviousIdentity),
        Call::TokenUpdate(msg) => store.token_update(msg, at).await.map(R::Enrollment),
        Call::CheckOut(u) => store.check_out(u, at).await.map(|()| R::Unit),
        Call::SetBootstrapToken(u, tok) => store
            .set_bootstrap_token(u, tok.as_ref(), at)
            .await
            .map(|()| R::Unit),
        Call::Touch(u) => store.touch(u, at).await.map(|()| R::Unit),
        Call::Enqueue(c, us, mode) => store.enqueue(c, us, *mode, at).await.map(R::Enqueued),
        Call::NextCommand(u, skip) => store.next_command(u, *skip, at).await.map(R::Next),
        Call::Report(r) => store.record_report(r, at).await.map(R::Report),
        Call::RecordPushAttempts(us) => store.record_push_attempts(us, at).await.map(|()| R::Unit),
        Call::WithdrawPushAttempts(us, when) => {
            store.withdraw_push_attempts(us, *when).await.map(R::Number)
        }
        Call::RecordPushOutcome(u, o) => {
            store.record_push_outcome(u, o, at).await.map(|()| R::Unit)
        }
        Call::RecordPushOutcomes(os) => store.record_push_outcomes(os, at).await.map(|()| R::Unit),
        Call::QueueAndMarkPushes(c, us) => store
            .queue_and_mark_pushes(c, us, at)
            .await
            .map(R::Enqueued),
        Call::CancelCommand(uuid) => store.cancel_command(uuid).await.map(R::Cancelled),
        Call::DeleteDevice(u) => store.delete_device(u).await.map(R::Deleted),
        Call::DeleteAllDevices => store.delete_all_devices().await.map(R::Number),
        // `Pair::step` reopens the durable store before: nothing to call.
        Call::Reopen => Ok(R::Unit),
    }
}

// ---- the run ----

/// Both stores and the case's state: its commands, its clock, the push times used so far.
struct Pair<'d, D: Durable> {
    memory: MemoryStore,
    durable: &'d mut D,
    commands: Vec<Command>,
    clock_ns: i64,
    push_times: Vec<OffsetDateTime>,
    page: usize,
}

impl<'d, D: Durable> Pair<'d, D> {
    fn new(case: &Case, durable: &'d mut D) -> Self {
        Pair {
            memory: MemoryStore::new(),
            durable,
            commands: case
                .commands
                .iter()
                .enumerate()
                .map(|(i, spec)| build_command(i, spec))
                .collect(),
            clock_ns: 0,
            push_times: Vec::new(),
            page: case.page,
        }
    }

    /// The step's time: the clock moved forward, less the step's lateness.
    fn time(&mut self, step: &Step) -> OffsetDateTime {
        self.clock_ns += step.advance_ns;
        let late = step.late_ms.unwrap_or(0) * 1_000_000;
        start() + Duration::nanoseconds((self.clock_ns - late).max(0))
    }

    /// The report target's CommandUUID. `Head` reads the memory store's queue: the two queues
    /// are equal here, as the step before compared them.
    async fn target_uuid(&self, dev: usize, target: &Target) -> String {
        match target {
            Target::Head => {
                let queued = self.memory.queued(DEVICES[dev]).await.expect("memory read");
                queued
                    .first()
                    .map_or_else(|| UNKNOWN_UUID.to_owned(), |c| c.uuid.clone())
            }
            Target::Pool(i) => self.commands[*i].uuid.clone(),
            Target::Unknown => UNKNOWN_UUID.to_owned(),
        }
    }

    async fn call(&mut self, op: &Op, at: OffsetDateTime) -> Call {
        match op {
            Op::Authenticate {
                dev,
                topic,
                facts,
                identity: id,
            } => Call::Authenticate(
                authenticate_msg(*dev, *topic, *facts),
                id.map(|n| identity(n, at)),
            ),
            Op::TokenUpdate {
                dev,
                topic,
                seed,
                unlock_token,
                awaiting_configuration,
            } => {
                let mut msg = token_update(&udid(*dev), *seed + 1);
                msg.topic = TOPICS[*topic].into();
                msg.awaiting_configuration = *awaiting_configuration;
                if !unlock_token {
                    msg.unlock_token = None;
                }
                Call::TokenUpdate(msg)
            }
            Op::UserTokenUpdate {
                dev,
                user,
                seed,
                names,
            } => {
                let mut msg = token_update(&udid(*dev), 0x80 + *seed);
                msg.push_magic = format!("user-magic-{user}");
                msg.unlock_token = None;
                msg.user = Some(UserChannel {
                    user_id: format!("U{user}"),
                    short_name: names.then(|| format!("user{user}")),
                    long_name: names.then(|| format!("User {user}")),
                });
                Call::TokenUpdate(msg)
            }
            Op::CheckOut { dev } => Call::CheckOut(udid(*dev)),
            Op::SetBootstrapToken { dev, token } => Call::SetBootstrapToken(
                udid(*dev),
                token.map(|n| Secret::new(vec![n; 8 + usize::from(n)])),
            ),
            Op::Touch { dev } => Call::Touch(udid(*dev)),
            Op::Enqueue {
                cmd,
                devs,
                skip_if_queued,
            } => {
                let mode = if *skip_if_queued {
                    EnqueueMode::SkipIfQueued
                } else {
                    EnqueueMode::Always
                };
                Call::Enqueue(self.commands[*cmd].clone(), udids(devs), mode)
            }
            Op::NextCommand { dev, skip_not_now } => Call::NextCommand(udid(*dev), *skip_not_now),
            Op::Report {
                dev,
                status,
                target,
                facts,
            } => {
                let uuid = self.target_uuid(*dev, target).await;
                Call::Report(report_msg(*dev, *status, Some(&uuid), *facts))
            }
            Op::RecordPushAttempts { devs } => {
                self.push_times.push(at);
                Call::RecordPushAttempts(udids(devs))
            }
            Op::WithdrawPushAttempts { devs, attempt } => {
                let when = self
                    .push_times
                    .iter()
                    .rev()
                    .nth(*attempt)
                    .copied()
                    .unwrap_or(at);
                Call::WithdrawPushAttempts(udids(devs), when)
            }
            Op::RecordPushOutcome { dev, outcome } => {
                Call::RecordPushOutcome(udid(*dev), push_outcome(outcome))
            }
            Op::RecordPushOutcomes { outcomes } => Call::RecordPushOutcomes(
                outcomes
                    .iter()
                    .map(|(d, o)| (udid(*d), push_outcome(o)))
                    .collect(),
            ),
            Op::QueueAndMarkPushes { cmd, devs } => {
                self.push_times.push(at);
                Call::QueueAndMarkPushes(self.commands[*cmd].clone(), udids(devs))
            }
            Op::CancelCommand { cmd } => Call::CancelCommand(cmd.map_or_else(
                || UNKNOWN_UUID.to_owned(),
                |i| self.commands[i].uuid.clone(),
            )),
            Op::DeleteDevice { dev } => Call::DeleteDevice(udid(*dev)),
            Op::DeleteAllDevices => Call::DeleteAllDevices,
            Op::Reopen => Call::Reopen,
        }
    }

    async fn step(&mut self, n: usize, step: &Step) -> Result<(), TestCaseError> {
        let at = self.time(step);
        let call = self.call(&step.op, at).await;
        if let Call::Reopen = call {
            self.durable.reopen().await;
        }
        let memory = apply(&self.memory, &call, at).await;
        let durable = apply(self.durable.store(), &call, at).await;
        let context = || format!("step {n} at {at}: {call:?}");
        match (&memory, &durable) {
            (Ok(Returned::Report(m)), Ok(Returned::Report(s))) => {
                let Call::Report(r) = &call else {
                    unreachable!("a report outcome answers a report")
                };
                let next = self
                    .memory
                    .next_command(&r.udid, r.status != Status::Idle, at)
                    .await
                    .expect("memory read");
                same_report_outcome(D::NAME, m, s, &next).map_err(|e| fail(context(), e))?;
            }
            (Ok(m), Ok(s)) if m == s => {}
            (Err(m), Err(s)) => same_error(D::NAME, m, s).map_err(|e| fail(context(), e))?,
            _ => {
                let returned = format!(
                    "returned values differ:\n{}",
                    difference(D::NAME, &memory, &durable)
                );
                return Err(fail(context(), returned));
            }
        }
        self.compare_reads(at)
            .await
            .map_err(|e| fail(format!("after {}", context()), e))
    }

    /// Every read of the trait, on both stores.
    async fn compare_reads(&self, now: OffsetDateTime) -> Result<(), String> {
        let (m, s): (&dyn Store, &dyn Store) = (&self.memory, self.durable.store());
        let name = D::NAME;
        for udid in DEVICES {
            same(name, "device", m.device(udid).await, s.device(udid).await)?;
            same(name, "queued", m.queued(udid).await, s.queued(udid).await)?;
            let (mr, sr) = (m.results(udid).await, s.results(udid).await);
            same(name, "results", mr, sr)?;
            same(name, "users", m.users(udid).await, s.users(udid).await)?;
            let (mh, sh) = (m.identity_hash(udid).await, s.identity_hash(udid).await);
            same(name, "identity_hash", mh, sh)?;
            let (mb, sb) = (m.bootstrap_token(udid).await, s.bootstrap_token(udid).await);
            same(name, "bootstrap_token", mb, sb)?;
            for skip in [false, true] {
                let (mn, sn) = (
                    m.next_command(udid, skip, now).await,
                    s.next_command(udid, skip, now).await,
                );
                same(name, "next_command", mn, sn)?;
            }
            for rt in REQUEST_TYPES {
                let (mq, sq) = (m.has_queued(udid, rt).await, s.has_queued(udid, rt).await);
                same(name, "has_queued", mq, sq)?;
            }
        }
        same(name, "count", m.count().await, s.count().await)?;
        same(name, "devices", m.devices().await, s.devices().await)?;
        same(name, "pushable", m.pushable().await, s.pushable().await)?;
        let (mt, st) = (m.enrolled_topics().await, s.enrolled_topics().await);
        same(name, "enrolled_topics", mt, st)?;
        let (mp, sp) = (walk(m, self.page).await, walk(s, self.page).await);
        same(name, "devices_page", mp, sp)
    }
}

/// Every page of `devices_page`, `size` devices at a time, from the first to the first short
/// one.
async fn walk(store: &dyn Store, size: usize) -> Result<Vec<Vec<Device>>, StoreError> {
    let mut pages = Vec::new();
    let mut after: Option<String> = None;
    // More pages than devices can exist means the walk does not advance.
    for _ in 0..=DEVICES.len() + 1 {
        let page = store.devices_page(after.as_deref(), size).await?;
        let full = page.len() == size;
        after = page.last().map(|d| d.udid.clone());
        pages.push(page);
        if !full {
            return Ok(pages);
        }
    }
    Err(StoreError::Corrupt {
        what: "devices_page walk does not end".into(),
    })
}

fn fail(context: String, detail: String) -> TestCaseError {
    TestCaseError::fail(format!("{context}\n{detail}"))
}

/// Two reads must agree. A read never fails in this test.
fn same<T: std::fmt::Debug + PartialEq>(
    name: &str,
    what: &str,
    memory: Result<T, StoreError>,
    durable: Result<T, StoreError>,
) -> Result<(), String> {
    match (memory, durable) {
        (Ok(m), Ok(s)) if m == s => Ok(()),
        (m, s) => Err(format!("{what} differs:\n{}", difference(name, &m, &s))),
    }
}

/// Where two values' pretty `Debug` forms part, with a few lines of context (a command's
/// body prints a line per byte: whole values would bury the difference). `name` is the
/// durable store's.
fn difference(name: &str, memory: &impl std::fmt::Debug, durable: &impl std::fmt::Debug) -> String {
    const CONTEXT: usize = 6;
    let (m, s) = (format!("{memory:#?}"), format!("{durable:#?}"));
    let (m, s): (Vec<&str>, Vec<&str>) = (m.lines().collect(), s.lines().collect());
    let first = m.iter().zip(&s).take_while(|(a, b)| a == b).count();
    let around = |lines: &[&str]| {
        let from = first.saturating_sub(CONTEXT);
        lines[from..lines.len().min(first + CONTEXT)].join("\n")
    };
    format!(
        "first difference at line {}\n memory:\n{}\n {name}:\n{}",
        first + 1,
        around(&m),
        around(&s)
    )
}

/// Errors compare by variant and by the identifier the variant names (a UDID, a
/// CommandUUID: data the contract defines, not a message). Only the errors the contract
/// names for these inputs may occur at all.
fn same_error(name: &str, memory: &StoreError, durable: &StoreError) -> Result<(), String> {
    let expected = matches!(
        memory,
        StoreError::UnknownDevice { .. }
            | StoreError::IdentityInUse { .. }
            | StoreError::DuplicateCommand { .. }
    );
    // The variants named above carry no message, so they compare whole.
    if expected && discriminant(memory) == discriminant(durable) && memory == durable {
        Ok(())
    } else {
        Err(format!(
            "errors differ: memory {memory:?}, {name} {durable:?}"
        ))
    }
}

/// Report outcomes must agree, but for `next_command`: `None` means the store did not look
/// (the memory store never does), and a store that looked must have found what
/// [`Store::next_command`] answers right after the report (`next`).
fn same_report_outcome(
    name: &str,
    memory: &ReportOutcome,
    durable: &ReportOutcome,
    next: &Option<QueuedCommand>,
) -> Result<(), String> {
    for (name, o) in [("memory", memory), (name, durable)] {
        if let Some(looked) = &o.next_command {
            if looked != next {
                return Err(format!(
                    "{name}'s report outcome names next command {looked:?}, next_command says {next:?}"
                ));
            }
        }
    }
    let without_next = |o: &ReportOutcome| ReportOutcome {
        next_command: None,
        ..o.clone()
    };
    if without_next(memory) == without_next(durable) {
        Ok(())
    } else {
        Err(format!(
            "report outcomes differ:\n{}",
            difference(name, memory, durable)
        ))
    }
}

/// One runtime for every case (the SQLite store needs one for its reads). Its worker threads
/// run the stores' tasks; [`check`] runs on the thread that blocks on it.
pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime")
    })
}

/// Runs `case` on a fresh memory store and `durable` (a store on a fresh database) side by
/// side, comparing after every step. Run it with [`runtime`]`().block_on`.
pub async fn check<D: Durable>(case: &Case, durable: &mut D) -> Result<(), TestCaseError> {
    let mut pair = Pair::new(case, durable);
    for (n, step) in case.steps.iter().enumerate() {
        pair.step(n, step).await?;
    }
    Ok(())
}
