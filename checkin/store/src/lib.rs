//! The device store: devices, the command queue, results and push bookkeeping — the model,
//! the [`Store`] contract, the rules every backend shares ([`logic`], [`connectivity`]) and the
//! in-memory backend.
//!
//! [`Store`] is object-safe: hold an `Arc<dyn Store>` and `.await` its methods from async
//! handlers. Implementations never block the async runtime (the SQLite store does its I/O on
//! its own threads).
//!
//! - [`MemoryStore`]: in memory, for tests and benchmarks.
//! - `magicpush_sqlite::SqliteStore` (crate `magicpush-sqlite`): durable, SQLite in WAL mode
//!   with group commit.
//! - `magicpush_testkit::conformance`: one test suite every implementation passes.
//!
//! Times are inputs (`at`), never read from a clock inside the store, and kept to the
//! millisecond ([`truncate_ms`]). A device's `last_seen_at` only moves forward.

pub mod cluster;
pub mod columns;
pub mod connectivity;
pub mod enrollment;
pub mod logic;
mod memory;
mod model;
pub mod private;
pub mod pushcerts;
pub mod secrets;
pub mod settings;
pub mod writes;

use std::future::Future;
use std::pin::Pin;

use time::OffsetDateTime;

use magicpush_mdm::{Authenticate, Command, Report, Secret, TokenUpdate};

pub use cluster::ClusterStore;
pub use enrollment::{
    EnrollmentStore, Invitation, InvitationChallenge, InvitationDevice, InvitationState,
    StoredChallenge, StoredDeviceCa,
};
pub use memory::{dedup, MemoryStore};
pub use model::{
    apply_contact, from_ms, rfc3339, to_ms, truncate_ms, BoundIdentity, CommandResult, Device,
    EnqueueMode, EnqueueOutcome, Enrollment, PushOutcome, QueuedCommand, ReportOutcome, User,
};
pub use pushcerts::{
    PushCertChanges, PushCertLog, PushCertStore, StoredPushCert, StoredRequest,
    MAX_PENDING_REQUESTS,
};
pub use secrets::SecretKey;
pub use settings::{SettingsStore, StoredSettings};

/// Every role trait of the store, for code that calls them on a concrete store
/// (`use magicpush_store::prelude::*`); through `dyn Store` they need no import.
pub mod prelude {
    pub use crate::{
        CheckinStore, ClusterStore, EnrollmentStore, IdentityStore, ListingStore, PushCertStore,
        PushStore, QueueStore, SettingsStore, Store,
    };
}

/// Command results kept per device: the newest ones; older results are deleted as new ones
/// arrive, so a daily refresh of 30,000 devices does not grow the database without bound.
pub const RESULTS_KEPT_PER_DEVICE: usize = 20;

/// The future every [`Store`] method returns.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// Why a store operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The operation needs a device the store has never seen (no Authenticate/TokenUpdate).
    #[error("unknown device {udid}")]
    UnknownDevice {
        /// The identifier given.
        udid: String,
    },
    /// At Authenticate: the identity certificate is already bound to another device.
    #[error("the identity certificate is already bound to device {udid}")]
    IdentityInUse {
        /// The device it is bound to.
        udid: String,
    },
    /// A command with this UUID was already enqueued.
    #[error("command {uuid} already exists")]
    DuplicateCommand {
        /// The CommandUUID.
        uuid: String,
    },
    /// The database failed. Writes that fail this way were not committed.
    #[error("database error during {op}: {detail}")]
    Database {
        /// The operation (`open`, `commit`, `read devices`, …).
        op: &'static str,
        /// The database's message.
        detail: String,
    },
    /// The database was written by a newer magicpush (schema version `found` > `supported`).
    #[error("database schema version {found} is newer than this build supports ({supported}); upgrade magicpush")]
    SchemaTooNew {
        /// The version found (SQLite's `PRAGMA user_version`, PostgreSQL's
        /// `schema_migrations`).
        found: i64,
        /// Highest version this build knows.
        supported: i64,
    },
    /// A stored value cannot be read back (hand-edited or corrupt database).
    #[error("corrupt stored value: {what}")]
    Corrupt {
        /// What and where.
        what: String,
    },
    /// The store's writer has stopped (the store is shutting down or its thread died).
    #[error("store is closed")]
    Closed,
    /// The secrets key does not fit the database (missing, or another key).
    #[error("{0}")]
    SecretsKey(String),
    /// The database cannot be reached now (connection refused or lost, the server shutting
    /// down or starting): the operation failed and a write was not acknowledged. The store
    /// reconnects by itself; the caller should retry shortly.
    #[error("database unreachable during {op}: {detail}")]
    Unavailable {
        /// The operation (`connect`, `commit`, `read devices`, …).
        op: &'static str,
        /// Why (the driver's message).
        detail: String,
    },
    /// The writer's queue is full: this write was not queued (nothing of it was written).
    /// The caller should retry shortly.
    #[error("the store is overloaded ({queued} writes waiting); retry shortly")]
    Overloaded {
        /// The queue's capacity.
        queued: usize,
    },
}

/// Devices and their check-ins: enrollment (Authenticate, TokenUpdate, CheckOut), the escrowed
/// BootstrapToken, user channels, and forgetting devices.
pub trait CheckinStore: Send + Sync {
    /// Records an Authenticate: creates the device or overlays the facts sent (fields absent
    /// from the message are kept), sets `topic` and `authenticated_at`. An Authenticate starts
    /// a new enrollment: the commands queued for the old one are dropped, and the device is
    /// not pushable ([`Device::awaiting_token_update`]) until its next device-channel
    /// TokenUpdate. The stored token, push magic and `enrolled_at` are kept until then.
    ///
    /// With `identity`, binds the device to that certificate ([`Device::identity`]); a
    /// different certificate than the one bound replaces it and is recorded in
    /// [`BoundIdentity::replaced_sha256`]. A certificate bound to another device fails with
    /// [`StoreError::IdentityInUse`] and nothing is written. `None` keeps any binding.
    ///
    /// Returns the hash the device was bound to before this write (always `None` without
    /// `identity`), so the caller can tell a re-enrollment with a new certificate.
    fn authenticate<'a>(
        &'a self,
        msg: &'a Authenticate,
        identity: Option<&'a BoundIdentity>,
        at: OffsetDateTime,
    ) -> StoreFuture<'a, Option<[u8; 32]>>;

    /// Records a TokenUpdate.
    /// - Device channel (`msg.user` is `None`): stores token, push magic, unlock token (kept if
    ///   absent from the message), AwaitingConfiguration, topic; sets `token_updated_at`, and
    ///   `enrolled_at` on the first one. A TokenUpdate after a CheckOut or a 410 re-enrolls:
    ///   the device becomes pushable again. Creates the device if unknown.
    /// - User channel: records the user (token, push magic, names) and never touches the
    ///   device's token, push magic or enrollment. Creates a bare device row if unknown.
    fn token_update<'a>(
        &'a self,
        msg: &'a TokenUpdate,
        at: OffsetDateTime,
    ) -> StoreFuture<'a, Enrollment>;

    /// Records a CheckOut: sets `checked_out_at` and drops the device's queued commands. The
    /// device is no longer pushable and its connectivity state is `unregistered` until a new
    /// device-channel TokenUpdate.
    fn check_out<'a>(&'a self, udid: &'a str, at: OffsetDateTime) -> StoreFuture<'a, ()>;

    /// Escrows (or, with `None`, clears) the device's bootstrap token.
    fn set_bootstrap_token<'a>(
        &'a self,
        udid: &'a str,
        token: Option<&'a Secret>,
        at: OffsetDateTime,
    ) -> StoreFuture<'a, ()>;

    /// The escrowed bootstrap token; `Ok(None)` if none or the device is unknown.
    fn bootstrap_token<'a>(&'a self, udid: &'a str) -> StoreFuture<'a, Option<Secret>>;

    /// Moves `last_seen_at` forward (for contacts with no other write, e.g. GetBootstrapToken).
    fn touch<'a>(&'a self, udid: &'a str, at: OffsetDateTime) -> StoreFuture<'a, ()>;

    /// Every user channel recorded for the device, by UserID.
    fn users<'a>(&'a self, udid: &'a str) -> StoreFuture<'a, Vec<User>>;

    /// Removes the device with everything kept for it (queue, results, user channels, identity
    /// binding). `Ok(false)` if it was unknown.
    fn delete_device<'a>(&'a self, udid: &'a str) -> StoreFuture<'a, bool>;

    /// Forgets every device with its queue, results, users and identity binding, and every
    /// command (the new-topic procedure: the devices must re-enroll). The number removed.
    fn delete_all_devices(&self) -> StoreFuture<'_, u64>;

    /// Forgets every device that enrolled with `topic` (one tenant's new-topic procedure),
    /// with its queue, results, users and identity binding; other topics' devices stay. The
    /// number removed.
    fn delete_topic_devices<'a>(&'a self, topic: &'a str) -> StoreFuture<'a, u64>;
}

/// Identity bindings: which identity certificate a device is bound to (bound at
/// [`CheckinStore::authenticate`]).
pub trait IdentityStore: Send + Sync {
    /// SHA-256 of the identity certificate the device is bound to; `None` if it has none or
    /// the device is unknown. Asked on every authenticated request: implementations answer
    /// from memory once they have seen the device.
    fn identity_hash<'a>(&'a self, udid: &'a str) -> StoreFuture<'a, Option<[u8; 32]>>;
}

/// The command queue: what waits for each device, in order, and the results it reports.
pub trait QueueStore: Send + Sync {
    /// Queues `command` for each of `udids` (duplicates in `udids` are queued once). Unknown
    /// UDIDs are skipped and listed in [`EnqueueOutcome::unknown`]. Fails with
    /// [`StoreError::DuplicateCommand`] if this CommandUUID was enqueued before; in that case
    /// nothing is queued.
    fn enqueue<'a>(
        &'a self,
        command: &'a Command,
        udids: &'a [String],
        mode: EnqueueMode,
        at: OffsetDateTime,
    ) -> StoreFuture<'a, EnqueueOutcome>;

    /// True if a command with this RequestType is queued for the device (NotNow included).
    fn has_queued<'a>(&'a self, udid: &'a str, request_type: &'a str) -> StoreFuture<'a, bool>;

    /// The command to send the device next at `at`: the oldest queued (in enqueue order) that
    /// has not ended and has not expired ([`Command::expires_at`] after `at`). With
    /// `skip_not_now`, commands the device answered NotNow are skipped.
    ///
    /// The session rule: pass `skip_not_now = (report.status != Idle)`. An Idle report starts
    /// a session, so NotNow commands are offered again once per session; within the session
    /// (after Acknowledged/Error/NotNow reports) they are not re-sent, so a device that keeps
    /// answering NotNow cannot loop.
    fn next_command<'a>(
        &'a self,
        udid: &'a str,
        skip_not_now: bool,
        at: OffsetDateTime,
    ) -> StoreFuture<'a, Option<QueuedCommand>>;

    /// Every command queued for the device, oldest first.
    fn queued<'a>(&'a self, udid: &'a str) -> StoreFuture<'a, Vec<QueuedCommand>>;

    /// Records a command report (any status, Idle included):
    /// - moves `last_seen_at` and `last_report_at` to `at`; if a push is open (the device has
    ///   not reported since `last_push_at`), sets `first_report_after_push_at` — that is the
    ///   proof of contact and gives the push→report latency;
    /// - for every status but Idle, appends a [`CommandResult`] (status, error chain, the raw
    ///   report as XML), also for a CommandUUID the store does not know; only the newest
    ///   [`RESULTS_KEPT_PER_DEVICE`] are kept. A final report (Acknowledged / Error /
    ///   CommandFormatError) repeated for a command that is no longer queued for the device,
    ///   when the device already has a result of that status for it, is the same answer
    ///   again (a device re-sending it, or one report reaching two nodes): no second result
    ///   is appended, and the outcome is that of a command not queued;
    /// - Acknowledged / Error / CommandFormatError remove the command from the device's queue;
    ///   NotNow keeps it and marks it (see [`QueueStore::next_command`]);
    /// - an Acknowledged report carrying `QueryResponses` overlays the device facts and sets
    ///   `info_collected_at`;
    /// - commands queued for the device that expired by `at` are dropped unsent.
    ///
    /// Fails with [`StoreError::UnknownDevice`] for a device never seen.
    fn record_report<'a>(
        &'a self,
        report: &'a Report,
        at: OffsetDateTime,
    ) -> StoreFuture<'a, ReportOutcome>;

    /// The device's recorded results (at most [`RESULTS_KEPT_PER_DEVICE`]), oldest first.
    fn results<'a>(&'a self, udid: &'a str) -> StoreFuture<'a, Vec<CommandResult>>;

    /// Removes command `uuid` from every queue it is still in (devices that already answered
    /// keep their result). `Ok(None)` if no command has this UUID; `Ok(Some(n))`: taken off
    /// `n` queues.
    fn cancel_command<'a>(&'a self, uuid: &'a str) -> StoreFuture<'a, Option<usize>>;
}

/// Push bookkeeping: the pushes sent to devices and how they ended (the connectivity report
/// reads them).
pub trait PushStore: Send + Sync {
    /// Marks a push attempt at `at` for each device (unknown UDIDs are skipped silently): sets
    /// `last_push_at`, clears the previous outcome and `first_report_after_push_at`. Call it
    /// before handing the pushes to the engine, so that a device answering faster than the
    /// engine's result still counts as responded.
    fn record_push_attempts<'a>(
        &'a self,
        udids: &'a [String],
        at: OffsetDateTime,
    ) -> StoreFuture<'a, ()>;

    /// Takes back the push attempts marked at `attempted_at` that never happened (a refresh
    /// stopped at shutdown before these devices were pushed): a device whose attempt is still
    /// that one, with no outcome and no report since, returns to no attempt
    /// (`never_pushed`), instead of turning `unreachable` later. The number taken back.
    fn withdraw_push_attempts<'a>(
        &'a self,
        udids: &'a [String],
        attempted_at: OffsetDateTime,
    ) -> StoreFuture<'a, u64>;

    /// A refresh's bookkeeping for one chunk of devices, in one write: stores `command` unless
    /// a command with its UUID is already stored (a refresh queues one command in several
    /// chunks, so this never fails with [`StoreError::DuplicateCommand`]), queues it for each
    /// known device as [`QueueStore::enqueue`] with [`EnqueueMode::SkipIfQueued`] does, and marks a
    /// push attempt at `at` for each known device as [`PushStore::record_push_attempts`] does
    /// (also for devices that already had one queued). Unknown UDIDs are listed in
    /// [`EnqueueOutcome::unknown`] and left alone.
    fn queue_and_mark_pushes<'a>(
        &'a self,
        command: &'a Command,
        udids: &'a [String],
        at: OffsetDateTime,
    ) -> StoreFuture<'a, EnqueueOutcome>;

    /// Records how the last push attempt ended (sets `push_outcome`, `push_outcome_at`; sets
    /// `last_push_at` too if no attempt was recorded).
    fn record_push_outcome<'a>(
        &'a self,
        udid: &'a str,
        outcome: &'a PushOutcome,
        at: OffsetDateTime,
    ) -> StoreFuture<'a, ()>;

    /// Records how many push attempts ended, in one write: for each `(udid, outcome)` in
    /// order, what [`PushStore::record_push_outcome`] does. Unknown UDIDs are skipped silently
    /// (a device may be gone by the time its push is answered).
    fn record_push_outcomes<'a>(
        &'a self,
        outcomes: &'a [(String, PushOutcome)],
        at: OffsetDateTime,
    ) -> StoreFuture<'a, ()>;
}

/// Reading the fleet: one device, the whole list in pages, counts.
pub trait ListingStore: Send + Sync {
    /// Every device, ordered by UDID.
    fn devices(&self) -> StoreFuture<'_, Vec<Device>>;

    /// One page of [`ListingStore::devices`]: at most `limit` devices whose UDID sorts after
    /// `after` (from the first with `None`), ordered by UDID. Walking a fleet page by page,
    /// each from the last UDID of the one before, holds one page in memory instead of every
    /// device; a device added or removed meanwhile is seen or not, but no device is seen twice.
    fn devices_page<'a>(
        &'a self,
        after: Option<&'a str>,
        limit: usize,
    ) -> StoreFuture<'a, Vec<Device>>;

    /// One page of the devices that enrolled with `topic` (one tenant's): as
    /// [`ListingStore::devices_page`], but only those whose [`Device::topic`] is `topic`, found
    /// through an index rather than among every device.
    fn topic_devices_page<'a>(
        &'a self,
        topic: &'a str,
        after: Option<&'a str>,
        limit: usize,
    ) -> StoreFuture<'a, Vec<Device>>;

    /// One page of every device in tenant order: by topic (a device without one under the
    /// empty topic, so first), then by UDID; at most `limit` devices whose `(topic, UDID)`
    /// sorts after `after`. The order the stores keep devices in, so a refresh of every tenant
    /// reads the table in order and fills one tenant's push groups at a time. As
    /// [`ListingStore::devices_page`], every device is seen once; a device whose topic
    /// changes during the walk may be missed or seen twice.
    fn devices_page_by_topic<'a>(
        &'a self,
        after: Option<(&'a str, &'a str)>,
        limit: usize,
    ) -> StoreFuture<'a, Vec<Device>>;

    /// One device.
    fn device<'a>(&'a self, udid: &'a str) -> StoreFuture<'a, Option<Device>>;

    /// Devices that may be pushed ([`Device::is_pushable`]), ordered by UDID.
    fn pushable(&self) -> StoreFuture<'_, Vec<Device>>;

    /// Number of devices.
    fn count(&self) -> StoreFuture<'_, usize>;

    /// Enrolled devices ([`Device::is_enrolled`] and not [`Device::is_checked_out`]) by the
    /// topic they enrolled with — what a push certificate must match.
    fn enrolled_topics(&self) -> StoreFuture<'_, std::collections::BTreeMap<String, u64>>;
}

/// A device store: every role together (each role's contracts are in its own doc comments).
///
/// Contracts shared by every implementation (checked by `magicpush_testkit::conformance`):
/// - A write's future resolves `Ok` only once the write is durable (for the SQLite store:
///   committed and synced). Writes of concurrent callers may share one commit.
/// - Every check-in and report write also moves `last_seen_at` forward to `at`.
/// - Unknown devices: [`CheckinStore::authenticate`] and [`CheckinStore::token_update`] create the device;
///   [`PushStore::record_push_attempts`] and [`QueueStore::enqueue`] skip unknown UDIDs (enqueue
///   reports them); every other write on an unknown device fails with
///   [`StoreError::UnknownDevice`]; reads return `None`/empty.
pub trait Store:
    CheckinStore
    + IdentityStore
    + QueueStore
    + PushStore
    + ListingStore
    + PushCertStore
    + ClusterStore
    + SettingsStore
    + EnrollmentStore
    + 'static
{
    /// Whether the store can take writes and answer reads now: `Err` when its writer has
    /// stopped or stalled, or a read fails. What `/healthz` reports.
    fn health(&self) -> StoreFuture<'_, ()>;
}
