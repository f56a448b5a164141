//! Refresh: enqueue DeviceInformation (unless one is already queued), mark the push attempts,
//! then push in the background with bounded concurrency and record each outcome. Also ad-hoc
//! commands. Each refresh is a run in the store (see [`super::nodes`]): its devices are listed
//! before they are marked, and its outcome recorder finishes it, so that another node can
//! take back the refresh of a node that died.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use utoipa::ToSchema;

use magicpush_engine::{DevicePush, PushError};
use serde::Serialize;
use time::OffsetDateTime;
use tokio::sync::mpsc;

use crate::notify::Notifier;
use magicpush_mdm::{Command, DEVICE_INFORMATION_QUERIES};
use magicpush_store::{Device, EnqueueMode, PushOutcome, Store};

use super::listing::Pages;
use super::topic_groups::TopicGroups;
use super::{Service, ServiceError};

/// Which devices to refresh.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefreshTarget {
    /// Every pushable device of every tenant.
    All,
    /// Every pushable device of one tenant (those enrolled with its topic).
    Tenant(String),
    /// These devices.
    Devices(Vec<String>),
}

/// What a refresh started. The pushes continue in the background.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, ToSchema)]
pub struct RefreshSummary {
    /// Devices considered.
    pub requested: usize,
    /// Devices being pushed.
    pub pushing: usize,
    /// DeviceInformation commands newly queued.
    pub enqueued: usize,
    /// Devices that already had a DeviceInformation queued (pushed anyway, not queued twice).
    pub already_queued: usize,
    /// The CommandUUID of the DeviceInformation queued by this refresh.
    pub command_uuid: String,
    /// Devices not pushed, by reason: `unknown`, `no_token`, `checked_out`,
    /// `token_invalid`.
    #[schema(value_type = BTreeMap<String, u64>)]
    pub skipped: BTreeMap<&'static str, usize>,
    /// When the pushes were marked (RFC 3339): every device this refresh pushes has this
    /// `last_push_at`, until a later push.
    pub pushed_at: String,
    /// The run's id in the store (its progress is in `GET /v1/nodes`'s `refreshes`, from
    /// any node).
    pub run_id: String,
    /// The devices being pushed (only for a refresh of listed devices).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pushed_udids: Option<Vec<String>>,
}

/// A refresh under way: what [`Service::refresh`] carries from one chunk to the next.
struct RefreshRun {
    summary: RefreshSummary,
    /// The DeviceInformation every chunk queues.
    command: Command,
    /// When the push attempts are marked (the same for every chunk).
    now: OffsetDateTime,
    /// Its run in the store.
    run_id: String,
    /// Held until every chunk is queued, so that `refresh.completed` cannot fire early.
    completion: Option<Arc<Completion>>,
    /// The pushes not yet handed to the engine, by topic.
    groups: TopicGroups<(String, DevicePush)>,
    launcher: Launcher,
}

impl RefreshRun {
    fn skip(&mut self, why: &'static str) {
        *self.summary.skipped.entry(why).or_default() += 1;
    }

    /// Hands the pushes gathered so far to the engine (the walk has ended, or failed).
    fn launch_all(&mut self) {
        for group in self.groups.drain() {
            self.launcher.launch(group);
        }
    }
}

/// Where a refresh or a command hands its pushes (see [`Service::launcher`]).
struct Launcher(Arc<Launching>);

/// What sending a group of pushes needs.
struct Launching {
    watch: Arc<super::tenants::CertWatch>,
    pusher: Arc<dyn magicpush_engine::PushSender>,
    /// The service's push slots (`push_concurrency` of them).
    slots: Arc<tokio::sync::Semaphore>,
    concurrency: usize,
    tracker: Arc<PushTracker>,
    /// To the recorder, which ends once every sender is gone.
    done: mpsc::UnboundedSender<Recorded>,
    completion: Option<Arc<Completion>>,
}

impl Launcher {
    /// Sends `group` in a task of its own: its pushes take their push slots together, so
    /// that they reach the engine one after another (one topic's share a connection's
    /// writes) rather than each behind every other waiting push.
    fn launch(&self, group: Vec<(String, DevicePush)>) {
        if !group.is_empty() {
            tokio::spawn(Arc::clone(&self.0).send(group));
        }
    }
}

impl Launching {
    async fn send(self: Arc<Self>, group: Vec<(String, DevicePush)>) {
        let mut pushes = group.into_iter().peekable();
        while pushes.peek().is_some() {
            let batch: Vec<_> = pushes.by_ref().take(self.concurrency).collect();
            let permits = match self.tracker.is_stopping() {
                false => {
                    let n = u32::try_from(batch.len()).unwrap_or(u32::MAX);
                    Arc::clone(&self.slots).acquire_many_owned(n).await.ok()
                }
                true => None,
            };
            let mut permits = match permits {
                Some(p) if !self.tracker.is_stopping() => p,
                _ => {
                    // Stopping: these pushes and the rest are not sent.
                    let unsent = batch.into_iter().chain(pushes.by_ref());
                    for (udid, _) in unsent {
                        if let Some(c) = &self.completion {
                            c.interrupted.fetch_add(1, Ordering::Relaxed);
                        }
                        let _ = self.done.send(Recorded::Unsent(udid));
                    }
                    return;
                }
            };
            for (udid, push) in batch {
                let permit = permits.split(1);
                self.start(udid, push, permit);
            }
        }
    }

    /// Hands one push to the engine and records how it ends; `permit` is its push slot.
    fn start(
        &self,
        udid: String,
        push: DevicePush,
        permit: Option<tokio::sync::OwnedSemaphorePermit>,
    ) {
        let done = self.done.clone();
        let topic = push.topic.clone();
        let sending = self.pusher.push(push);
        let (watch, completion) = (Arc::clone(&self.watch), self.completion.clone());
        tokio::spawn(async move {
            let result = sending.await;
            drop(permit);
            watch.observe(topic.as_deref(), &result);
            if let Some(c) = &completion {
                c.count(&result);
            }
            if matches!(result, Err(PushError::Shutdown)) {
                // The server is stopping: nothing is known of this push; it is taken back
                // rather than left to look unanswered.
                let _ = done.send(Recorded::Unsent(udid));
                return;
            }
            let outcome = PushOutcome::from_result(&result);
            ::metrics::counter!("magicpush_push_outcomes_total", "outcome" => outcome.kind())
                .increment(1);
            if let Err(err) = &result {
                tracing::info!(%udid, "push failed: {err}");
            }
            // The recorder outlives every sender; a send fails only if it panicked.
            let _ = done.send(Recorded::Outcome(udid, outcome));
        });
    }
}

/// `POST /v1/commands`: one command for some devices.
#[derive(Debug, Clone)]
pub struct CommandRequest {
    /// Target devices.
    pub udids: Vec<String>,
    /// `RequestType`.
    pub request_type: String,
    /// The rest of the `Command` dictionary.
    pub params: plist::Dictionary,
    /// Push the devices so they fetch it now.
    pub push: bool,
    /// The `CommandUUID` to use (`None`: a fresh one).
    pub uuid: Option<String>,
    /// Not sent after this time: an unanswered command expires from the queues.
    pub expires_at: Option<time::OffsetDateTime>,
}

/// `RequestType` of the command that removes a device's passcode: it needs the device's own
/// `UnlockToken`, which the server fills in from the store (the API never shows it).
pub const CLEAR_PASSCODE: &str = "ClearPasscode";

/// What `POST /v1/commands` did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, ToSchema)]
pub struct CommandSummary {
    /// The CommandUUID (the same for every device).
    pub command_uuid: String,
    /// Devices it was queued for.
    pub queued: Vec<String>,
    /// UDIDs the store does not know.
    pub unknown: Vec<String>,
    /// Devices pushed so they fetch it.
    pub pushing: usize,
}

fn skip_reason(device: &Device) -> Option<&'static str> {
    if device.is_checked_out() {
        Some("checked_out")
    } else if !device.is_enrolled() || device.awaiting_token_update {
        Some("no_token")
    } else if device.is_token_invalidated() || device.push_target().is_none() {
        Some("token_invalid")
    } else {
        None
    }
}

impl Service {
    /// Starts a refresh and returns as soon as the commands are queued and the push attempts
    /// recorded; the pushes proceed in the background.
    ///
    /// A refresh of every device walks the store a page ([`REFRESH_CHUNK`] devices) at a
    /// time, so that a large fleet is never read whole: each page is filtered, queued and
    /// marked in one write before the next page is read. Its pushes are gathered by topic
    /// ([`TopicGroups`]) and start as a tenant's group fills, so that each tenant's APNs
    /// connection carries its pushes together. A store error part-way fails the refresh; the
    /// pages before it stay queued and pushed.
    pub async fn refresh(&self, target: RefreshTarget) -> Result<RefreshSummary, ServiceError> {
        self.require_pushcert()?;
        let tenant = match &target {
            RefreshTarget::Tenant(topic) => Some(self.tenant(Some(topic))?),
            _ => None,
        };
        let command = Command::device_information(DEVICE_INFORMATION_QUERIES);
        let cert = match &tenant {
            Some(t) => Some(t.info()),
            None => self.pushcert.info(),
        };
        let completion = self
            .pushcert
            .watch()
            .notifier()
            .map(|n| Completion::new(n.clone(), &command.uuid, cert));
        let (run_id, now) = self
            .begin_run(magicpush_store::cluster::RunKind::Refresh)
            .await?;
        let launcher = self.launcher(completion.clone(), now, Some(run_id.clone()));
        let mut run = RefreshRun {
            summary: RefreshSummary {
                command_uuid: command.uuid.clone(),
                pushed_at: magicpush_store::rfc3339(now),
                run_id: run_id.clone(),
                ..RefreshSummary::default()
            },
            command,
            now,
            run_id,
            completion,
            groups: TopicGroups::new(PUSH_GROUP, PUSH_GROUPS_HELD),
            launcher,
        };
        let walked = self.walk(&mut run, target).await;
        // The pushes of the pages queued before a failure go out too.
        run.launch_all();
        walked?;
        // The refresh's own hold: `refresh.completed` waits for every chunk to be queued.
        let RefreshRun {
            summary,
            completion,
            ..
        } = run;
        drop(completion);
        ::metrics::counter!("magicpush_refresh_pushes_total").increment(summary.pushing as u64);
        tracing::info!(
            pushing = summary.pushing,
            enqueued = summary.enqueued,
            already_queued = summary.already_queued,
            "refresh started"
        );
        Ok(summary)
    }

    /// Queues and marks the target's devices chunk by chunk, gathering their pushes.
    async fn walk(&self, run: &mut RefreshRun, target: RefreshTarget) -> Result<(), ServiceError> {
        match target {
            RefreshTarget::All => {
                // Tenant by tenant: each fills its push groups at once, and the devices
                // pushed (and so answering) together lie together in the store.
                let mut pages = Pages::new(Arc::clone(&self.store), REFRESH_CHUNK).by_tenant();
                while let Some(page) = pages.next().await? {
                    let last = page.last().and_then(|d| d.topic.clone());
                    self.refresh_chunk(run, page).await?;
                    // The tenants before the page's last are done: their last groups go.
                    if let Some(last) = last {
                        for group in run.groups.take_before(&last) {
                            run.launcher.launch(group);
                        }
                    }
                }
            }
            RefreshTarget::Tenant(topic) => {
                let mut pages =
                    Pages::new(Arc::clone(&self.store), REFRESH_CHUNK).of_topic(Some(&topic));
                while let Some(page) = pages.next().await? {
                    self.refresh_chunk(run, page).await?;
                }
            }
            RefreshTarget::Devices(mut udids) => {
                run.summary.pushed_udids = Some(Vec::new());
                udids.sort();
                udids.dedup();
                for udids in udids.chunks(REFRESH_CHUNK) {
                    let mut found = Vec::with_capacity(udids.len());
                    for udid in udids {
                        match self.store.device(udid).await? {
                            Some(device) => found.push(device),
                            None => {
                                run.summary.requested += 1;
                                run.skip("unknown");
                            }
                        }
                    }
                    self.refresh_chunk(run, found).await?;
                }
            }
        }
        Ok(())
    }

    /// One chunk of a refresh: skips the devices that cannot be pushed, queues the command
    /// and marks the push attempts of the rest in one write (check-ins waiting on the writer
    /// get in between chunks), and starts their pushes.
    async fn refresh_chunk(
        &self,
        run: &mut RefreshRun,
        devices: Vec<Device>,
    ) -> Result<(), ServiceError> {
        run.summary.requested += devices.len();
        let mut chunk: Vec<(String, DevicePush)> = Vec::with_capacity(devices.len());
        let watch = self.pushcert.watch();
        for device in devices {
            if !watch.serves(device.topic.as_deref().unwrap_or_default()) {
                // Enrolled with a topic no tenant has: no certificate can push it.
                run.skip("unregistered_topic");
                continue;
            }
            match (skip_reason(&device), device.push_target()) {
                (None, Some(push)) => chunk.push((device.udid, push)),
                (Some(why), _) => run.skip(why),
                (None, None) => run.skip("token_invalid"),
            }
        }
        if chunk.is_empty() {
            return Ok(());
        }
        let udids: Vec<String> = chunk.iter().map(|(u, _)| u.clone()).collect();
        // Listed with the run before they are marked: whatever a death leaves marked is
        // listed, for the sweep.
        self.store
            .add_refresh_run_devices(&run.run_id, &udids)
            .await?;
        let queued = self
            .store
            .queue_and_mark_pushes(&run.command, &udids, run.now)
            .await?;
        run.summary.enqueued += queued.queued.len();
        run.summary.already_queued += queued.already_queued.len();
        if !queued.unknown.is_empty() {
            // Gone since the listing: not pushed.
            *run.summary.skipped.entry("unknown").or_default() += queued.unknown.len();
            let gone: HashSet<&String> = queued.unknown.iter().collect();
            chunk.retain(|(u, _)| !gone.contains(u));
        }
        run.summary.pushing += chunk.len();
        if let Some(pushed) = &mut run.summary.pushed_udids {
            pushed.extend(chunk.iter().map(|(u, _)| u.clone()));
        }
        for (udid, push) in chunk {
            for group in run.groups.add(push.topic.clone(), (udid, push)) {
                run.launcher.launch(group);
            }
        }
        Ok(())
    }

    /// Queues a command for devices and (optionally) pushes them.
    pub async fn enqueue_command(
        &self,
        request: CommandRequest,
    ) -> Result<CommandSummary, ServiceError> {
        let request_type = request.request_type.trim();
        if request_type.is_empty() {
            return Err(ServiceError::BadRequest(
                "request_type must not be empty".into(),
            ));
        }
        if request.udids.is_empty() {
            return Err(ServiceError::BadRequest("udids must not be empty".into()));
        }
        let params = request.params;
        if request_type == CLEAR_PASSCODE && !params.contains_key("UnlockToken") {
            // Each device's own token: one device per command. The queue stores the command
            // without it; the token is written in from the device's sealed column when the
            // command is handed out, so it never lies in the queue in clear.
            let [udid] = request.udids.as_slice() else {
                return Err(ServiceError::BadRequest(
                    "ClearPasscode carries the device's own UnlockToken: send it for one device at a time".into(),
                ));
            };
            let device = self
                .store
                .device(udid)
                .await?
                .ok_or_else(|| ServiceError::NoDevice { udid: udid.clone() })?;
            if device.unlock_token.is_none() {
                return Err(ServiceError::Conflict(format!(
                    "device {udid} has escrowed no UnlockToken (it sends one in its TokenUpdate when it has a passcode and is supervised or enrolled by the user); ClearPasscode cannot be sent"
                )));
            }
        }
        let mut command = match request.uuid {
            Some(uuid) => Command::with_uuid(uuid, request_type, params),
            None => Command::new(request_type, params),
        };
        if let Some(at) = request.expires_at {
            if at <= Self::now() {
                return Err(ServiceError::BadRequest(format!(
                    "the command would expire at {}, which is already past",
                    magicpush_store::rfc3339(at)
                )));
            }
            command.expires_at = Some(at);
        }
        let now = Self::now();
        let outcome = self
            .store
            .enqueue(&command, &request.udids, EnqueueMode::Always, now)
            .await?;
        if request.push {
            self.require_pushcert()?;
        }
        let mut pushes = Vec::new();
        let mut run = None;
        if request.push {
            for udid in &outcome.queued {
                if let Some(p) = self.store.device(udid).await?.and_then(|d| d.push_target()) {
                    pushes.push((udid.clone(), p));
                }
            }
            let udids: Vec<String> = pushes.iter().map(|(u, _)| u.clone()).collect();
            if !udids.is_empty() {
                // A run as a refresh's: what a node's death leaves marked is taken back.
                let (id, at) = self
                    .begin_run(magicpush_store::cluster::RunKind::Command)
                    .await?;
                self.store.add_refresh_run_devices(&id, &udids).await?;
                self.store.record_push_attempts(&udids, at).await?;
                run = Some((id, at));
            }
        }
        let summary = CommandSummary {
            command_uuid: outcome.command_uuid,
            queued: outcome.queued,
            unknown: outcome.unknown,
            pushing: pushes.len(),
        };
        if let Some((id, at)) = run {
            self.launcher(None, at, Some(id)).launch(pushes);
        }
        Ok(summary)
    }

    /// `DELETE /v1/commands/{uuid}`: takes a queued command off every queue it is still in;
    /// the number of queues it left.
    pub async fn cancel_command(&self, uuid: &str) -> Result<usize, ServiceError> {
        match self.store.cancel_command(uuid).await? {
            Some(n) => {
                tracing::info!(%uuid, queues = n, "command cancelled");
                Ok(n)
            }
            None => Err(ServiceError::UnknownCommand {
                uuid: uuid.to_owned(),
            }),
        }
    }

    /// `DELETE /v1/devices/{udid}`: forgets the device and everything kept for it. Its MDM
    /// profile stays on the device: it must re-enroll to be managed again.
    pub async fn delete_device(&self, udid: &str) -> Result<(), ServiceError> {
        if let Some(device) = self.store.device(udid).await? {
            self.revoke_identity(&device).await?;
        }
        if self.store.delete_device(udid).await? {
            tracing::warn!(%udid, "device deleted through the admin API");
            Ok(())
        } else {
            Err(ServiceError::NoDevice {
                udid: udid.to_owned(),
            })
        }
    }

    /// Revokes the identity certificate `device` is bound to, when this server has a built-in
    /// device CA: that certificate is refused from now on (403), and may not renew through
    /// `/scep`. The binding does not say which CA issued the certificate: its serial is
    /// recorded either way, and only matters for the built-in CA's certificates, whose
    /// serials are random.
    async fn revoke_identity(&self, device: &magicpush_store::Device) -> Result<(), ServiceError> {
        let (Some(_), Some(identity)) = (self.device_ca(), &device.identity) else {
            return Ok(());
        };
        let Some(key) = super::device::serial_key(&identity.serial) else {
            return Ok(());
        };
        self.store
            .revoke_serial(&key, &device.udid, Self::now())
            .await?;
        tracing::info!(udid = %device.udid, serial = %key, "identity certificate revoked");
        Ok(())
    }

    /// `DELETE /v1/devices?all=true&confirm=<topic>`: the new-topic procedure's first step
    /// (a lost Apple ID) for one tenant: forgets every device enrolled with `confirm`, with
    /// their queues; other tenants' devices stay. `confirm` must be a tenant's topic or one
    /// devices enrolled with.
    pub async fn delete_all_devices(&self, confirm: &str) -> Result<u64, ServiceError> {
        let mut known = self.pushcert.watch().topics();
        known.extend(self.store.enrolled_topics().await?.into_keys());
        known.sort();
        known.dedup();
        if !known.iter().any(|t| t == confirm) {
            let what = if known.is_empty() {
                "no topic is in use".to_owned()
            } else {
                format!(
                    "the topics in use are {}",
                    super::tenants::some_topics(&known)
                )
            };
            return Err(ServiceError::Conflict(format!(
                "confirm={confirm} does not match: {what}. Deleting a tenant's devices means they must all re-enroll; confirm with that tenant's topic"
            )));
        }
        if self.device_ca().is_some() {
            let mut after: Option<String> = None;
            loop {
                let page = self
                    .store
                    .topic_devices_page(confirm, after.as_deref(), 1000)
                    .await?;
                for device in &page {
                    self.revoke_identity(device).await?;
                }
                match page.last() {
                    Some(last) if page.len() == 1000 => after = Some(last.udid.clone()),
                    _ => break,
                }
            }
        }
        let deleted = self.store.delete_topic_devices(confirm).await?;
        tracing::warn!(deleted, topic = %confirm, "every device of a topic deleted through the admin API: they must re-enroll");
        Ok(deleted)
    }

    /// Starts the task that records push outcomes and returns the [`Launcher`] that pushes:
    /// each group it is handed goes to the engine together, within the service's
    /// `push_concurrency`, and every outcome is recorded in batches (see [`record_outcomes`]),
    /// not one write each. The attempts were marked at `attempted_at`: those never sent (the
    /// server stops first) are taken back at the end, so they read `never_pushed`, not
    /// `unreachable`. A refresh's `run` is finished in the store then.
    fn launcher(
        &self,
        completion: Option<Arc<Completion>>,
        attempted_at: OffsetDateTime,
        run: Option<String>,
    ) -> Launcher {
        let tracker = Arc::clone(&self.pushes);
        let (done, outcomes) = mpsc::unbounded_channel();
        tokio::spawn(record_outcomes(
            self.store.clone(),
            outcomes,
            attempted_at,
            run,
            tracker.start(),
        ));
        Launcher(Arc::new(Launching {
            watch: Arc::clone(self.pushcert.watch()),
            pusher: self.pusher.clone(),
            slots: self.push_slots.clone(),
            concurrency: self.config.push_concurrency.max(1),
            tracker,
            done,
            completion,
        }))
    }

    /// Stops launching pushes (shutdown): pushes not yet sent are taken back, pushes in
    /// flight finish. Then waits up to `wait` for every outcome to be written; false if some
    /// were still being written then.
    pub async fn stop_pushing(&self, wait: Duration) -> bool {
        self.pushes.stop();
        self.pushes.settled(wait).await
    }

    /// Waits up to `wait` for every background push's outcome to be written.
    pub async fn pushes_settled(&self, wait: Duration) -> bool {
        self.pushes.settled(wait).await
    }
}

/// `refresh.completed` for the webhook: every push task of a refresh holds a clone; when the
/// last one is dropped (all pushes ended), the event goes out with the counts.
pub(crate) struct Completion {
    notifier: Notifier,
    command_uuid: String,
    cert: Option<magicpush_engine::cert::CertificateInfo>,
    delivered: AtomicU64,
    failed: AtomicU64,
    interrupted: AtomicU64,
}

impl Completion {
    fn new(
        notifier: Notifier,
        command_uuid: &str,
        cert: Option<magicpush_engine::cert::CertificateInfo>,
    ) -> Arc<Completion> {
        Arc::new(Completion {
            notifier,
            command_uuid: command_uuid.to_owned(),
            cert,
            delivered: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            interrupted: AtomicU64::new(0),
        })
    }

    fn count(&self, result: &magicpush_engine::PushResult) {
        let counter = match result {
            Ok(_) => &self.delivered,
            Err(PushError::Shutdown) => &self.interrupted,
            Err(_) => &self.failed,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

impl Drop for Completion {
    fn drop(&mut self) {
        let interrupted = *self.interrupted.get_mut();
        if interrupted > 0 {
            // The server is stopping: the refresh did not complete.
            return;
        }
        let (delivered, failed) = (*self.delivered.get_mut(), *self.failed.get_mut());
        let now = Service::now();
        let cert = self.cert.as_ref();
        self.notifier.send(&serde_json::json!({
            "event": crate::pushcert::expiry::names::REFRESH_COMPLETED,
            "topic": cert.map(|c| c.topic()),
            "days_left": cert.map(|c| c.days_left(now)),
            "not_after": cert.map(|c| magicpush_store::rfc3339(c.not_after())),
            "command_uuid": self.command_uuid,
            "pushed": delivered + failed,
            "delivered": delivered,
            "failed": failed,
            "at": magicpush_store::rfc3339(now),
        }));
    }
}

/// Devices whose command and push attempt a refresh records in one store write.
const REFRESH_CHUNK: usize = 2_000;

/// A tenant's pushes handed to the engine together (see [`TopicGroups`]): enough that they
/// share their connection's writes; few enough that each connection's HTTP/2 stream table
/// (which keeps the size it once reached) stays small with a thousand tenants.
const PUSH_GROUP: usize = 64;

/// Most pushes a refresh gathers by topic before it lets every group go: the first pushes
/// start after this many devices are queued and marked, not after the whole fleet.
const PUSH_GROUPS_HELD: usize = 16_384;

/// Most push outcomes recorded in one store write.
const OUTCOME_BATCH: usize = 256;

/// What a push task tells the recorder.
enum Recorded {
    /// The push ended so.
    Outcome(String, PushOutcome),
    /// The push was not sent (stopping).
    Unsent(String),
}

/// The background pushes of the service: how many recorders run, and whether to stop.
#[derive(Debug, Default)]
pub(crate) struct PushTracker {
    stopping: std::sync::atomic::AtomicBool,
    recorders: AtomicU64,
    idle: tokio::sync::Notify,
}

/// Held by a running recorder.
pub(crate) struct RecorderGuard(Arc<PushTracker>);

impl Drop for RecorderGuard {
    fn drop(&mut self) {
        if self.0.recorders.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

impl PushTracker {
    fn start(self: &Arc<Self>) -> RecorderGuard {
        self.recorders.fetch_add(1, Ordering::AcqRel);
        RecorderGuard(Arc::clone(self))
    }

    fn stop(&self) {
        self.stopping.store(true, Ordering::Release);
    }

    fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    async fn settled(&self, wait: Duration) -> bool {
        let until = tokio::time::Instant::now() + wait;
        loop {
            // Registered before the count is read, so the last recorder's wake-up cannot
            // fall between the read and the wait.
            let notified = self.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.recorders.load(Ordering::Acquire) == 0 {
                return true;
            }
            if tokio::time::timeout_at(until, notified).await.is_err() {
                return self.recorders.load(Ordering::Acquire) == 0;
            }
        }
    }
}

/// Tries to write outcomes a few times (an overloaded store sheds writes); counts and logs
/// what could not be written. True if they were written.
async fn write_outcomes(store: &dyn Store, batch: &[(String, PushOutcome)]) -> bool {
    let mut wait = Duration::from_millis(100);
    for attempt in 1..=4 {
        match store.record_push_outcomes(batch, Service::now()).await {
            Ok(()) => return true,
            Err(err) if attempt < 4 => {
                tracing::info!(
                    devices = batch.len(),
                    "push outcomes not recorded yet ({err}); retrying in {wait:?}"
                );
                tokio::time::sleep(wait).await;
                wait *= 4;
            }
            Err(err) => {
                ::metrics::counter!("magicpush_push_outcomes_unrecorded_total")
                    .increment(batch.len() as u64);
                tracing::warn!(
                    devices = batch.len(),
                    first = %batch[0].0,
                    "cannot record push outcomes after {attempt} tries: {err}; these devices keep their pending attempt"
                );
            }
        }
    }
    false
}

/// Records push outcomes as they arrive, up to [`OUTCOME_BATCH`] per write: whatever arrived
/// while the previous write was committing goes into the next one. Ends when every sender is
/// gone and the channel is drained, taking back the attempts of the pushes never sent, then
/// finishing the refresh's `run` in the store.
async fn record_outcomes(
    store: Arc<dyn Store>,
    mut outcomes: mpsc::UnboundedReceiver<Recorded>,
    attempted_at: OffsetDateTime,
    run: Option<String>,
    _running: RecorderGuard,
) {
    let mut received = Vec::with_capacity(OUTCOME_BATCH);
    let mut batch = Vec::with_capacity(OUTCOME_BATCH);
    let mut unsent = Vec::new();
    while outcomes.recv_many(&mut received, OUTCOME_BATCH).await > 0 {
        for r in received.drain(..) {
            match r {
                Recorded::Outcome(udid, outcome) => batch.push((udid, outcome)),
                Recorded::Unsent(udid) => unsent.push(udid),
            }
        }
        if !batch.is_empty() {
            if write_outcomes(&*store, &batch).await {
                if let Some(run) = &run {
                    super::nodes::add_progress(&*store, run, batch.len() as u64, 0).await;
                }
            }
            batch.clear();
        }
    }
    if !unsent.is_empty() {
        match store.withdraw_push_attempts(&unsent, attempted_at).await {
            Ok(n) => {
                tracing::info!(
                    withdrawn = n,
                    "pushes not sent before shutdown: their attempts are taken back (never_pushed)"
                );
                if let Some(run) = &run {
                    super::nodes::add_progress(&*store, run, 0, n).await;
                }
            }
            Err(err) => tracing::warn!(
                devices = unsent.len(),
                "cannot take back the attempts of pushes not sent: {err}"
            ),
        }
    }
    if let Some(run) = run {
        super::nodes::finish_run(&*store, &run).await;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use magicpush_engine::Reason;

    use super::*;
    use crate::service::{PushCertState, ServiceConfig};
    use magicpush_store::MemoryStore;
    use magicpush_testkit::conformance::{authenticate, t, token_update};
    use magicpush_testkit::{FakeOutcome, FakePusher};

    /// A push certificate for the topic the conformance devices enroll with.
    fn push_certificate() -> magicpush_engine::cert::CertificateInfo {
        use magicpush_fixtures::{push_cert, Ca, KeyKind};
        let ca = Ca::new("test", KeyKind::EcdsaP256).unwrap();
        let now = time::OffsetDateTime::now_utc();
        let day = time::Duration::days(1);
        let cert = push_cert(&ca, "test", now - day, now + 300 * day, KeyKind::EcdsaP256).unwrap();
        let info = magicpush_engine::cert::CertificateInfo::from_pem(cert.cert_pem.as_bytes());
        let info = info.unwrap();
        assert_eq!(info.topic(), authenticate("X").topic);
        info
    }

    /// A push certificate for `com.apple.mgmt.External.<uid>`.
    fn tenant_certificate(uid: &str) -> magicpush_engine::cert::CertificateInfo {
        use magicpush_fixtures::{push_cert, Ca, KeyKind};
        let ca = Ca::new("test", KeyKind::EcdsaP256).unwrap();
        let now = time::OffsetDateTime::now_utc();
        let day = time::Duration::days(1);
        let cert = push_cert(&ca, uid, now - day, now + 300 * day, KeyKind::EcdsaP256).unwrap();
        magicpush_engine::cert::CertificateInfo::from_pem(cert.cert_pem.as_bytes()).unwrap()
    }

    /// Devices refreshed by UDID belong to three tenants in turn; their pushes reach the
    /// engine gathered by tenant, a group at a time, so that each tenant's connection carries
    /// them together.
    #[tokio::test]
    async fn a_refresh_by_udid_pushes_each_tenants_devices_together() {
        pushes_go_gathered_by_tenant(RefreshTarget::Devices).await;
    }

    /// A refresh of every tenant walks them one after another, and a tenant's last group goes
    /// as soon as the walk has passed it.
    #[tokio::test]
    async fn a_refresh_of_every_tenant_pushes_each_tenants_devices_together() {
        pushes_go_gathered_by_tenant(|_| RefreshTarget::All).await;
    }

    async fn pushes_go_gathered_by_tenant(target: impl Fn(Vec<String>) -> RefreshTarget) {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let tenants = ["a", "b", "c"].map(tenant_certificate);
        let n = 3 * 200;
        let mut udids = Vec::new();
        for i in 0..n {
            let udid = format!("D{i:05}");
            let topic = tenants[i % 3].topic().to_owned();
            let mut auth = authenticate(&udid);
            auth.topic = topic.clone();
            store.authenticate(&auth, None, t(0)).await.unwrap();
            let mut token = token_update(&udid, 1);
            token.topic = topic;
            store.token_update(&token, t(0)).await.unwrap();
            udids.push(udid);
        }
        let pusher = FakePusher::new();
        let service = Service::new(
            Arc::clone(&store),
            pusher.clone(),
            PushCertState::new(tenants.clone()),
            ServiceConfig::default(),
        );
        let summary = service.refresh(target(udids.clone())).await.unwrap();
        assert_eq!(summary.pushing, n);
        outcomes_recorded(&*store, &udids).await;
        let sent: Vec<String> = pusher
            .sent()
            .iter()
            .map(|p| p.topic.as_deref().unwrap_or_default().to_owned())
            .collect();
        assert_eq!(sent.len(), n);
        // Each group goes out in one run: a tenant's 200 pushes in 4 runs (groups of 64 and
        // the rest), not one run per push as the walk interleaves them.
        let runs = 1 + sent.windows(2).filter(|w| w[0] != w[1]).count();
        let groups = 3 * (n / 3).div_ceil(PUSH_GROUP);
        assert!(
            runs <= groups,
            "{runs} runs of one topic, at most {groups} expected: {sent:?}"
        );
    }

    /// A refresh stopped at shutdown: the push in flight ends and is recorded, the pushes not
    /// yet sent are taken back (`never_pushed`, no false `unreachable` later).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_aborted_refresh_takes_back_what_it_did_not_send() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let udids: Vec<String> = (1..=5).map(|i| format!("ABORT-{i}")).collect();
        for (i, udid) in udids.iter().enumerate() {
            store
                .authenticate(&authenticate(udid), None, t(0))
                .await
                .unwrap();
            store
                .token_update(&token_update(udid, i as u8 + 1), t(1))
                .await
                .unwrap();
        }
        let pusher = FakePusher::new();
        for seed in 1..=5u8 {
            pusher.set_outcome(
                &hex::encode([seed; 32]),
                FakeOutcome::Accept(Duration::from_millis(300)),
            );
        }
        let service = Service::new(
            Arc::clone(&store),
            pusher.clone(),
            PushCertState::new(Some(push_certificate())),
            ServiceConfig {
                push_concurrency: 1,
                ..ServiceConfig::default()
            },
        );
        let summary = service.refresh(RefreshTarget::All).await.unwrap();
        assert_eq!(summary.pushing, 5);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            service.stop_pushing(Duration::from_secs(5)).await,
            "settled"
        );
        assert_eq!(pusher.sent().len(), 1, "one push was in flight");
        let mut pushed = 0;
        for udid in &udids {
            let d = store.device(udid).await.unwrap().unwrap();
            match d.push_outcome {
                Some(PushOutcome::Accepted) => pushed += 1,
                None => assert!(d.last_push_at.is_none(), "{udid} taken back: {d:?}"),
                other => panic!("{udid}: {other:?}"),
            }
        }
        assert_eq!(pushed, 1);
    }

    #[tokio::test]
    async fn without_a_certificate_nothing_is_pushed() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let pusher = FakePusher::new();
        let service = Service::new(
            Arc::clone(&store),
            pusher.clone(),
            PushCertState::new(None),
            ServiceConfig::default(),
        );
        let err = service.refresh(RefreshTarget::All).await.unwrap_err();
        assert!(matches!(err, ServiceError::NoCertificate { .. }), "{err}");
        assert!(err.to_string().contains("no push certificate registered"));
        assert!(pusher.sent().is_empty());
    }

    /// Waits until every listed device has a recorded push outcome.
    async fn outcomes_recorded(store: &dyn Store, udids: &[String]) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let devices = store.devices().await.unwrap();
            let done = devices
                .iter()
                .filter(|d| udids.contains(&d.udid) && d.push_outcome.is_some())
                .count();
            if done == udids.len() {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "only {done} of {} outcomes recorded",
                udids.len()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn refresh_all_spans_chunks_and_records_every_outcome() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let n = 2 * REFRESH_CHUNK + 3;
        let udids: Vec<String> = (0..n).map(|i| format!("D{i:05}")).collect();
        for (i, udid) in udids.iter().enumerate() {
            store
                .authenticate(&authenticate(udid), None, t(0))
                .await
                .unwrap();
            // Device 7 gets its own token, which APNs says is gone.
            let seed = if i == 7 { 2 } else { 1 };
            store
                .token_update(&token_update(udid, seed), t(0))
                .await
                .unwrap();
        }
        store
            .authenticate(&authenticate("no-token"), None, t(0))
            .await
            .unwrap();
        let pusher = FakePusher::new();
        pusher.set_outcome(
            &hex::encode([2u8; 32]),
            FakeOutcome::Fail(PushError::Unregistered {
                reason: Reason::Unregistered,
                timestamp_ms: None,
            }),
        );
        let service = Service::new(
            Arc::clone(&store),
            pusher.clone(),
            PushCertState::new(Some(push_certificate())),
            ServiceConfig::default(),
        );

        let summary = service.refresh(RefreshTarget::All).await.unwrap();
        assert_eq!(summary.requested, n + 1);
        assert_eq!((summary.pushing, summary.enqueued), (n, n));
        assert_eq!(summary.already_queued, 0);
        assert_eq!(summary.skipped.get("no_token"), Some(&1));
        outcomes_recorded(&*store, &udids).await;
        assert_eq!(pusher.sent().len(), n);
        for d in store.devices().await.unwrap() {
            if d.udid == "no-token" {
                assert_eq!(d.last_push_at, None);
                continue;
            }
            let queued = store.queued(&d.udid).await.unwrap();
            assert_eq!(queued.len(), 1, "{}", d.udid);
            assert_eq!(queued[0].uuid, summary.command_uuid);
            assert!(d.last_push_at.is_some(), "{}", d.udid);
            let expected = if d.udid == udids[7] {
                d.push_outcome
                    .as_ref()
                    .is_some_and(PushOutcome::is_token_invalid)
            } else {
                d.push_outcome == Some(PushOutcome::Accepted)
            };
            assert!(expected, "{}: {:?}", d.udid, d.push_outcome);
        }

        // Again: the unregistered device is skipped, the others are pushed without a second
        // DeviceInformation queued.
        let again = service.refresh(RefreshTarget::All).await.unwrap();
        assert_eq!((again.pushing, again.enqueued), (n - 1, 0));
        assert_eq!(again.already_queued, n - 1);
        assert_eq!(again.skipped.get("token_invalid"), Some(&1));
    }
}
