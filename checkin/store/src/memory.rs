//! An in-memory [`Store`] for tests. Not durable.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};

use time::OffsetDateTime;

use super::model::{
    apply_contact, truncate_ms, BoundIdentity, CommandResult, Device, EnqueueMode, EnqueueOutcome,
    Enrollment, PushOutcome, QueuedCommand, ReportOutcome, User,
};
use super::pushcerts::{
    PushCertLog, PushCertStore, StoredPushCert, StoredRequest, MAX_PENDING_REQUESTS,
};
use super::{
    logic, CheckinStore, IdentityStore, ListingStore, PushStore, QueueStore, Store, StoreError,
    StoreFuture, RESULTS_KEPT_PER_DEVICE,
};
use magicpush_mdm::{Authenticate, Command, Report, Secret, Status, TokenUpdate};

struct Queued {
    uuid: String,
    queued_at: OffsetDateTime,
    not_now_at: Option<OffsetDateTime>,
}

struct StoredCommand {
    request_type: String,
    body: Vec<u8>,
    expires_at: Option<OffsetDateTime>,
}

#[derive(Default)]
struct Inner {
    /// Boxed: a B-tree moves its values when nodes fill and split, and a device is large.
    devices: BTreeMap<String, Box<Device>>,
    users: BTreeMap<(String, String), User>,
    commands: HashMap<String, StoredCommand>,
    /// Per device, in enqueue order.
    queues: HashMap<String, Vec<Queued>>,
    results: Vec<CommandResult>,
    /// Identity certificate hash → the device bound to it.
    identities: HashMap<[u8; 32], String>,
    /// The push certificates' state.
    pushcerts: BTreeMap<String, StoredPushCert>,
    requests: Vec<StoredRequest>,
    memos: BTreeMap<String, String>,
    tenant_names: BTreeMap<String, String>,
    logs: BTreeMap<PushCertLog, Vec<String>>,
}

impl Inner {
    fn device_mut(&mut self, udid: &str) -> Result<&mut Device, StoreError> {
        self.devices
            .get_mut(udid)
            .map(|d| &mut **d)
            .ok_or_else(|| StoreError::UnknownDevice { udid: udid.into() })
    }

    /// Whether `udid` has a command of `request_type` queued.
    fn has_queued(&self, udid: &str, request_type: &str) -> bool {
        self.queues.get(udid).is_some_and(|q| {
            q.iter().any(|e| {
                self.commands
                    .get(&e.uuid)
                    .is_some_and(|c| c.request_type == request_type)
            })
        })
    }

    /// Queues `command` for `udid` unless `skip_if_queued` and one of its type is already
    /// there; records which it was in `out`.
    fn queue(
        &mut self,
        udid: &str,
        command: &Command,
        skip_if_queued: bool,
        at: OffsetDateTime,
        out: &mut EnqueueOutcome,
    ) {
        if skip_if_queued && self.has_queued(udid, &command.request_type) {
            out.already_queued.push(udid.to_owned());
            return;
        }
        self.queues
            .entry(udid.to_owned())
            .or_default()
            .push(Queued {
                uuid: command.uuid.clone(),
                queued_at: at,
                not_now_at: None,
            });
        out.queued.push(udid.to_owned());
    }

    fn queued_command(&self, q: &Queued) -> Option<QueuedCommand> {
        let c = self.commands.get(&q.uuid)?;
        Some(QueuedCommand {
            uuid: q.uuid.clone(),
            request_type: c.request_type.clone(),
            body: c.body.clone(),
            queued_at: q.queued_at,
            not_now_at: q.not_now_at,
            expires_at: c.expires_at,
        })
    }
}

/// A [`Store`] kept in a mutex-protected map. Every operation completes immediately.
#[derive(Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
    /// Nodes, schedules and refresh runs (one node: in memory like the rest).
    cluster: crate::cluster::ClusterMemory,
    /// What `PUT /v1/settings` stored.
    settings: Mutex<crate::StoredSettings>,
    /// Challenges, revoked serials, the device CA.
    enrollment: Mutex<EnrollmentMemory>,
}

/// [`crate::EnrollmentStore`]'s state in memory.
#[derive(Default)]
struct EnrollmentMemory {
    /// Challenges by hash, with when they were used.
    challenges:
        std::collections::HashMap<[u8; 32], (crate::StoredChallenge, Option<OffsetDateTime>)>,
    revoked: std::collections::HashSet<String>,
    ca: Option<crate::StoredDeviceCa>,
    invitations: std::collections::HashMap<String, crate::Invitation>,
    /// (invitation, device) → its Authenticate.
    invitation_devices: std::collections::BTreeMap<(String, String), OffsetDateTime>,
}

crate::cluster_in_memory!(MemoryStore);

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        MemoryStore::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain data behind, still consistent enough
        // for a test store; keep going rather than poisoning every later call.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn run<'a, T: Send + 'a>(
        &'a self,
        f: impl FnOnce(&mut Inner) -> Result<T, StoreError>,
    ) -> StoreFuture<'a, T> {
        let result = f(&mut self.lock());
        Box::pin(std::future::ready(result))
    }
}

impl crate::SettingsStore for MemoryStore {
    fn settings(&self) -> StoreFuture<'_, crate::StoredSettings> {
        let stored = *self.settings.lock().unwrap_or_else(|e| e.into_inner());
        Box::pin(std::future::ready(Ok(stored)))
    }

    fn put_settings<'a>(
        &'a self,
        change: &'a crate::StoredSettings,
        _at: OffsetDateTime,
    ) -> StoreFuture<'a, ()> {
        let mut stored = self.settings.lock().unwrap_or_else(|e| e.into_inner());
        *stored = stored.merged(change);
        Box::pin(std::future::ready(Ok(())))
    }
}

impl crate::EnrollmentStore for MemoryStore {
    fn add_challenge<'a>(&'a self, challenge: &'a crate::StoredChallenge) -> StoreFuture<'a, ()> {
        let mut e = self.enrollment.lock().unwrap_or_else(|e| e.into_inner());
        e.challenges
            .insert(challenge.hash, (challenge.clone(), None));
        Box::pin(std::future::ready(Ok(())))
    }

    fn consume_challenge<'a>(
        &'a self,
        hash: &'a [u8; 32],
        at: OffsetDateTime,
    ) -> StoreFuture<'a, Option<String>> {
        let mut e = self.enrollment.lock().unwrap_or_else(|e| e.into_inner());
        let e = &mut *e;
        let out = match e.challenges.get_mut(hash) {
            Some((c, used)) if used.is_none() && c.expires_at > at => {
                let invitation = c.invitation_id.as_ref().map(|id| e.invitations.get_mut(id));
                match invitation {
                    None => {
                        *used = Some(at);
                        Some(c.enrollment_id.clone())
                    }
                    Some(Some(i)) if i.state(at) == crate::InvitationState::Open => {
                        i.enrolled += 1;
                        *used = Some(at);
                        Some(c.enrollment_id.clone())
                    }
                    Some(_) => None,
                }
            }
            _ => None,
        };
        Box::pin(std::future::ready(Ok(out)))
    }

    fn prune_challenges(&self, before: OffsetDateTime) -> StoreFuture<'_, u64> {
        let mut e = self.enrollment.lock().unwrap_or_else(|e| e.into_inner());
        let was = e.challenges.len();
        e.challenges.retain(|_, (c, used)| {
            used.unwrap_or(c.expires_at) >= before && c.expires_at >= before
        });
        Box::pin(std::future::ready(Ok((was - e.challenges.len()) as u64)))
    }

    fn add_invitation<'a>(&'a self, invitation: &'a crate::Invitation) -> StoreFuture<'a, ()> {
        let mut e = self.enrollment.lock().unwrap_or_else(|e| e.into_inner());
        e.invitations
            .insert(invitation.id.clone(), invitation.clone());
        Box::pin(std::future::ready(Ok(())))
    }

    fn invitation<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Option<crate::Invitation>> {
        let e = self.enrollment.lock().unwrap_or_else(|e| e.into_inner());
        Box::pin(std::future::ready(Ok(e.invitations.get(id).cloned())))
    }

    fn invitations(&self) -> StoreFuture<'_, Vec<crate::Invitation>> {
        let e = self.enrollment.lock().unwrap_or_else(|e| e.into_inner());
        let mut all: Vec<_> = e.invitations.values().cloned().collect();
        all.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(a.id.cmp(&b.id)));
        all.truncate(crate::enrollment::MAX_LISTED_INVITATIONS);
        Box::pin(std::future::ready(Ok(all)))
    }

    fn withdraw_invitation<'a>(&'a self, id: &'a str, at: OffsetDateTime) -> StoreFuture<'a, bool> {
        let mut e = self.enrollment.lock().unwrap_or_else(|e| e.into_inner());
        let found = match e.invitations.get_mut(id) {
            Some(i) => {
                i.withdrawn_at.get_or_insert(crate::model::truncate_ms(at));
                true
            }
            None => false,
        };
        Box::pin(std::future::ready(Ok(found)))
    }

    fn invitation_challenge<'a>(
        &'a self,
        challenge: &'a crate::StoredChallenge,
        at: OffsetDateTime,
    ) -> StoreFuture<'a, crate::InvitationChallenge> {
        use crate::InvitationChallenge as Out;
        let mut e = self.enrollment.lock().unwrap_or_else(|e| e.into_inner());
        let id = challenge.invitation_id.as_deref().unwrap_or_default();
        let out = match e.invitations.get(id).cloned() {
            None => Out::Unknown,
            Some(i) if i.state(at) != crate::InvitationState::Open => Out::Closed(i.state(at)),
            Some(i) => {
                let outstanding = e
                    .challenges
                    .values()
                    .filter(|(c, used)| {
                        used.is_none()
                            && c.expires_at > at
                            && c.invitation_id.as_deref() == Some(id)
                    })
                    .count();
                if outstanding >= crate::enrollment::MAX_OUTSTANDING_CHALLENGES as usize {
                    Out::TooManyOutstanding
                } else {
                    e.challenges
                        .insert(challenge.hash, (challenge.clone(), None));
                    Out::Issued(i)
                }
            }
        };
        Box::pin(std::future::ready(Ok(out)))
    }

    fn record_invitation_device<'a>(
        &'a self,
        invitation_id: &'a str,
        udid: &'a str,
        at: OffsetDateTime,
    ) -> StoreFuture<'a, ()> {
        let mut e = self.enrollment.lock().unwrap_or_else(|e| e.into_inner());
        e.invitation_devices
            .entry((invitation_id.to_owned(), udid.to_owned()))
            .or_insert(crate::model::truncate_ms(at));
        Box::pin(std::future::ready(Ok(())))
    }

    fn invitation_devices<'a>(
        &'a self,
        ids: &'a [String],
    ) -> StoreFuture<'a, Vec<crate::InvitationDevice>> {
        let e = self.enrollment.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = Vec::new();
        for id in ids {
            let mut of_one: Vec<_> = e
                .invitation_devices
                .range((id.clone(), String::new())..)
                .take_while(|((i, _), _)| i == id)
                .map(|((i, u), at)| crate::InvitationDevice {
                    invitation_id: i.clone(),
                    udid: u.clone(),
                    at: *at,
                })
                .collect();
            of_one.sort_by(|a, b| a.at.cmp(&b.at).then(a.udid.cmp(&b.udid)));
            of_one.truncate(crate::enrollment::MAX_LISTED_DEVICES);
            out.extend(of_one);
        }
        Box::pin(std::future::ready(Ok(out)))
    }

    fn device_invitations<'a>(
        &'a self,
        udids: &'a [String],
    ) -> StoreFuture<'a, Vec<crate::InvitationDevice>> {
        let e = self.enrollment.lock().unwrap_or_else(|e| e.into_inner());
        let out = e
            .invitation_devices
            .iter()
            .filter(|((_, u), _)| udids.contains(u))
            .map(|((i, u), at)| crate::InvitationDevice {
                invitation_id: i.clone(),
                udid: u.clone(),
                at: *at,
            })
            .collect();
        Box::pin(std::future::ready(Ok(out)))
    }

    fn revoke_serial<'a>(
        &'a self,
        serial: &'a str,
        _udid: &'a str,
        _at: OffsetDateTime,
    ) -> StoreFuture<'a, ()> {
        let mut e = self.enrollment.lock().unwrap_or_else(|e| e.into_inner());
        e.revoked.insert(serial.to_owned());
        Box::pin(std::future::ready(Ok(())))
    }

    fn is_revoked<'a>(&'a self, serial: &'a str) -> StoreFuture<'a, bool> {
        let e = self.enrollment.lock().unwrap_or_else(|e| e.into_inner());
        Box::pin(std::future::ready(Ok(e.revoked.contains(serial))))
    }

    fn device_ca(&self) -> StoreFuture<'_, Option<crate::StoredDeviceCa>> {
        let e = self.enrollment.lock().unwrap_or_else(|e| e.into_inner());
        Box::pin(std::future::ready(Ok(e.ca.clone())))
    }

    fn create_device_ca<'a>(
        &'a self,
        ca: &'a crate::StoredDeviceCa,
    ) -> StoreFuture<'a, crate::StoredDeviceCa> {
        let mut e = self.enrollment.lock().unwrap_or_else(|e| e.into_inner());
        let kept = e.ca.get_or_insert_with(|| ca.clone()).clone();
        Box::pin(std::future::ready(Ok(kept)))
    }
}

impl PushCertStore for MemoryStore {
    fn push_certs(&self) -> StoreFuture<'_, Vec<StoredPushCert>> {
        self.run(|s| Ok(s.pushcerts.values().cloned().collect()))
    }

    fn put_push_cert<'a>(&'a self, cert: &'a StoredPushCert) -> StoreFuture<'a, ()> {
        self.run(|s| {
            s.pushcerts.insert(cert.topic.clone(), cert.clone());
            Ok(())
        })
    }

    fn delete_push_cert<'a>(&'a self, topic: &'a str) -> StoreFuture<'a, bool> {
        self.run(|s| Ok(s.pushcerts.remove(topic).is_some()))
    }

    fn pushcert_requests(&self) -> StoreFuture<'_, Vec<StoredRequest>> {
        self.run(|s| Ok(s.requests.clone()))
    }

    fn add_pushcert_request<'a>(&'a self, request: &'a StoredRequest) -> StoreFuture<'a, bool> {
        self.run(|s| {
            if s.requests.len() >= MAX_PENDING_REQUESTS {
                return Ok(false);
            }
            s.requests.retain(|r| r.id != request.id);
            s.requests.push(request.clone());
            // Oldest first, as SQLite lists them.
            s.requests
                .sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
            Ok(true)
        })
    }

    fn remove_pushcert_request<'a>(&'a self, id: &'a str) -> StoreFuture<'a, bool> {
        self.run(|s| {
            let before = s.requests.len();
            s.requests.retain(|r| r.id != id);
            Ok(s.requests.len() < before)
        })
    }

    fn pushcert_memo<'a>(&'a self, topic: &'a str) -> StoreFuture<'a, Option<String>> {
        self.run(|s| Ok(s.memos.get(topic).cloned()))
    }

    fn set_pushcert_memo<'a>(
        &'a self,
        topic: &'a str,
        apple_id: Option<&'a str>,
    ) -> StoreFuture<'a, ()> {
        self.run(|s| {
            match apple_id {
                Some(a) => s.memos.insert(topic.to_owned(), a.to_owned()),
                None => s.memos.remove(topic),
            };
            Ok(())
        })
    }

    fn pushcert_memos(&self) -> StoreFuture<'_, BTreeMap<String, String>> {
        self.run(|s| Ok(s.memos.clone()))
    }

    fn tenant_names(&self) -> StoreFuture<'_, BTreeMap<String, String>> {
        self.run(|s| Ok(s.tenant_names.clone()))
    }

    fn set_tenant_name<'a>(&'a self, topic: &'a str, name: Option<&'a str>) -> StoreFuture<'a, ()> {
        self.run(|s| {
            match name {
                Some(n) => s.tenant_names.insert(topic.to_owned(), n.to_owned()),
                None => s.tenant_names.remove(topic),
            };
            Ok(())
        })
    }

    fn pushcert_log(&self, log: PushCertLog) -> StoreFuture<'_, Vec<String>> {
        self.run(move |s| Ok(s.logs.get(&log).cloned().unwrap_or_default()))
    }

    fn set_pushcert_log<'a>(
        &'a self,
        log: PushCertLog,
        records: &'a [String],
    ) -> StoreFuture<'a, ()> {
        self.run(move |s| {
            s.logs.insert(log, records.to_vec());
            Ok(())
        })
    }
}

impl CheckinStore for MemoryStore {
    fn authenticate<'a>(
        &'a self,
        msg: &'a Authenticate,
        identity: Option<&'a BoundIdentity>,
        at: OffsetDateTime,
    ) -> StoreFuture<'a, Option<[u8; 32]>> {
        let at = truncate_ms(at);
        self.run(|s| {
            if let Some(id) = identity {
                match s.identities.get(&id.sha256) {
                    Some(other) if *other != msg.udid => {
                        return Err(StoreError::IdentityInUse {
                            udid: other.clone(),
                        })
                    }
                    _ => {}
                }
            }
            let d = s
                .devices
                .entry(msg.udid.clone())
                .or_insert_with(|| Box::new(Device::new(msg.udid.clone())));
            logic::authenticate(d, msg, at);
            // A new enrollment: the old one's queued commands must not reach it.
            s.queues.remove(&msg.udid);
            let Some(id) = identity else {
                return Ok(None);
            };
            let previous = logic::bind_identity(d, id);
            if let Some(old) = previous {
                s.identities.remove(&old);
            }
            s.identities.insert(id.sha256, msg.udid.clone());
            Ok(previous)
        })
    }

    fn delete_device<'a>(&'a self, udid: &'a str) -> StoreFuture<'a, bool> {
        self.run(|s| {
            let Some(d) = s.devices.remove(udid) else {
                return Ok(false);
            };
            if let Some(id) = d.identity {
                s.identities.remove(&id.sha256);
            }
            s.queues.remove(udid);
            s.users.retain(|(u, _), _| u != udid);
            s.results.retain(|r| r.udid != udid);
            Ok(true)
        })
    }

    fn delete_topic_devices<'a>(&'a self, topic: &'a str) -> StoreFuture<'a, u64> {
        self.run(|s| {
            let gone: Vec<String> = s
                .devices
                .values()
                .filter(|d| d.topic.as_deref() == Some(topic))
                .map(|d| d.udid.clone())
                .collect();
            for udid in &gone {
                if let Some(id) = s.devices.remove(udid).and_then(|d| d.identity) {
                    s.identities.remove(&id.sha256);
                }
                s.queues.remove(udid);
                s.users.retain(|(u, _), _| u != udid);
                s.results.retain(|r| &r.udid != udid);
            }
            Ok(gone.len() as u64)
        })
    }

    fn delete_all_devices(&self) -> StoreFuture<'_, u64> {
        self.run(|s| {
            let n = s.devices.len() as u64;
            s.devices.clear();
            s.identities.clear();
            s.queues.clear();
            s.users.clear();
            s.results.clear();
            s.commands.clear();
            Ok(n)
        })
    }

    fn token_update<'a>(
        &'a self,
        msg: &'a TokenUpdate,
        at: OffsetDateTime,
    ) -> StoreFuture<'a, Enrollment> {
        let at = truncate_ms(at);
        self.run(|s| {
            let d = s
                .devices
                .entry(msg.udid.clone())
                .or_insert_with(|| Box::new(Device::new(msg.udid.clone())));
            let Some(user) = &msg.user else {
                return Ok(logic::token_update(d, msg, at));
            };
            apply_contact(d, at);
            s.users.insert(
                (msg.udid.clone(), user.user_id.clone()),
                User {
                    udid: msg.udid.clone(),
                    user_id: user.user_id.clone(),
                    short_name: user.short_name.clone(),
                    long_name: user.long_name.clone(),
                    token: msg.token.as_hex().to_owned(),
                    push_magic: msg.push_magic.clone(),
                    updated_at: at,
                },
            );
            Ok(Enrollment::UserChannel)
        })
    }

    fn check_out<'a>(&'a self, udid: &'a str, at: OffsetDateTime) -> StoreFuture<'a, ()> {
        let at = truncate_ms(at);
        self.run(|s| {
            logic::check_out(s.device_mut(udid)?, at);
            s.queues.remove(udid);
            Ok(())
        })
    }

    fn set_bootstrap_token<'a>(
        &'a self,
        udid: &'a str,
        token: Option<&'a Secret>,
        at: OffsetDateTime,
    ) -> StoreFuture<'a, ()> {
        let at = truncate_ms(at);
        self.run(|s| {
            let d = s.device_mut(udid)?;
            d.bootstrap_token = token.cloned();
            apply_contact(d, at);
            Ok(())
        })
    }

    fn bootstrap_token<'a>(&'a self, udid: &'a str) -> StoreFuture<'a, Option<Secret>> {
        self.run(|s| Ok(s.devices.get(udid).and_then(|d| d.bootstrap_token.clone())))
    }

    fn touch<'a>(&'a self, udid: &'a str, at: OffsetDateTime) -> StoreFuture<'a, ()> {
        let at = truncate_ms(at);
        self.run(|s| {
            apply_contact(s.device_mut(udid)?, at);
            Ok(())
        })
    }

    fn users<'a>(&'a self, udid: &'a str) -> StoreFuture<'a, Vec<User>> {
        self.run(|s| {
            Ok(s.users
                .values()
                .filter(|u| u.udid == udid)
                .cloned()
                .collect())
        })
    }
}

impl IdentityStore for MemoryStore {
    fn identity_hash<'a>(&'a self, udid: &'a str) -> StoreFuture<'a, Option<[u8; 32]>> {
        self.run(|s| {
            Ok(s.devices
                .get(udid)
                .and_then(|d| d.identity.as_ref().map(|i| i.sha256)))
        })
    }
}

impl QueueStore for MemoryStore {
    fn cancel_command<'a>(&'a self, uuid: &'a str) -> StoreFuture<'a, Option<usize>> {
        self.run(|s| {
            if !s.commands.contains_key(uuid) {
                return Ok(None);
            }
            let mut taken = 0;
            for q in s.queues.values_mut() {
                let before = q.len();
                q.retain(|e| e.uuid != uuid);
                taken += before - q.len();
            }
            Ok(Some(taken))
        })
    }

    fn enqueue<'a>(
        &'a self,
        command: &'a Command,
        udids: &'a [String],
        mode: EnqueueMode,
        at: OffsetDateTime,
    ) -> StoreFuture<'a, EnqueueOutcome> {
        let at = truncate_ms(at);
        self.run(|s| {
            if s.commands.contains_key(&command.uuid) {
                return Err(StoreError::DuplicateCommand {
                    uuid: command.uuid.clone(),
                });
            }
            let mut out = EnqueueOutcome {
                command_uuid: command.uuid.clone(),
                ..EnqueueOutcome::default()
            };
            for udid in dedup(udids) {
                if !s.devices.contains_key(udid) {
                    out.unknown.push(udid.clone());
                    continue;
                }
                s.queue(
                    udid,
                    command,
                    mode == EnqueueMode::SkipIfQueued,
                    at,
                    &mut out,
                );
            }
            s.commands.insert(
                command.uuid.clone(),
                StoredCommand {
                    request_type: command.request_type.clone(),
                    body: command.to_xml(),
                    expires_at: command.expires_at.map(truncate_ms),
                },
            );
            Ok(out)
        })
    }

    fn has_queued<'a>(&'a self, udid: &'a str, request_type: &'a str) -> StoreFuture<'a, bool> {
        self.run(|s| Ok(s.has_queued(udid, request_type)))
    }

    fn next_command<'a>(
        &'a self,
        udid: &'a str,
        skip_not_now: bool,
        at: OffsetDateTime,
    ) -> StoreFuture<'a, Option<QueuedCommand>> {
        let at = truncate_ms(at);
        self.run(|s| {
            let Some(q) = s.queues.get(udid) else {
                return Ok(None);
            };
            Ok(q.iter()
                .filter(|e| !(skip_not_now && e.not_now_at.is_some()))
                .filter_map(|e| s.queued_command(e))
                .find(|c| c.expires_at.is_none_or(|x| x > at)))
        })
    }

    fn queued<'a>(&'a self, udid: &'a str) -> StoreFuture<'a, Vec<QueuedCommand>> {
        self.run(|s| {
            Ok(s.queues
                .get(udid)
                .map(|q| q.iter().filter_map(|e| s.queued_command(e)).collect())
                .unwrap_or_default())
        })
    }

    fn record_report<'a>(
        &'a self,
        report: &'a Report,
        at: OffsetDateTime,
    ) -> StoreFuture<'a, ReportOutcome> {
        let at = truncate_ms(at);
        self.run(|s| {
            let d = s.device_mut(&report.udid)?;
            let (closed_push, info_updated) = logic::report(d, report, at);
            // Expired commands leave the queue unsent.
            let commands = &s.commands;
            if let Some(q) = s.queues.get_mut(&report.udid) {
                q.retain(|e| {
                    commands
                        .get(&e.uuid)
                        .and_then(|c| c.expires_at)
                        .is_none_or(|x| x > at)
                });
            }
            let mut out = ReportOutcome {
                closed_push,
                info_updated,
                ..ReportOutcome::default()
            };
            let Some(uuid) = report
                .command_uuid
                .as_ref()
                .filter(|_| report.status != Status::Idle)
            else {
                return Ok(out);
            };
            let queue = s.queues.entry(report.udid.clone()).or_default();
            if let Some(pos) = queue.iter().position(|e| &e.uuid == uuid) {
                out.known_command = true;
                if report.status.is_final() {
                    queue.remove(pos);
                    out.dequeued = true;
                } else if report.status == Status::NotNow {
                    queue[pos].not_now_at = Some(at);
                }
            }
            out.request_type = s.commands.get(uuid).map(|c| c.request_type.clone());
            if report.status.is_final() && !out.known_command {
                let repeat = s.results.iter().any(|r| {
                    r.udid == report.udid && &r.command_uuid == uuid && r.status == report.status
                });
                if repeat {
                    return Ok(out);
                }
            }
            s.results.push(CommandResult {
                udid: report.udid.clone(),
                command_uuid: uuid.clone(),
                request_type: out.request_type.clone(),
                status: report.status,
                error_chain: report.error_chain.clone(),
                raw: report.raw_xml(),
                at,
            });
            let mine = s.results.iter().filter(|r| r.udid == report.udid).count();
            if mine > RESULTS_KEPT_PER_DEVICE {
                let mut drop = mine - RESULTS_KEPT_PER_DEVICE;
                s.results.retain(|r| {
                    let old = drop > 0 && r.udid == report.udid;
                    drop -= usize::from(old);
                    !old
                });
            }
            Ok(out)
        })
    }

    fn results<'a>(&'a self, udid: &'a str) -> StoreFuture<'a, Vec<CommandResult>> {
        self.run(|s| {
            Ok(s.results
                .iter()
                .filter(|r| r.udid == udid)
                .cloned()
                .collect())
        })
    }
}

impl PushStore for MemoryStore {
    fn record_push_attempts<'a>(
        &'a self,
        udids: &'a [String],
        at: OffsetDateTime,
    ) -> StoreFuture<'a, ()> {
        let at = truncate_ms(at);
        self.run(|s| {
            for udid in udids {
                if let Some(d) = s.devices.get_mut(udid) {
                    logic::push_attempt(d, at);
                }
            }
            Ok(())
        })
    }

    fn withdraw_push_attempts<'a>(
        &'a self,
        udids: &'a [String],
        attempted_at: OffsetDateTime,
    ) -> StoreFuture<'a, u64> {
        let at = truncate_ms(attempted_at);
        self.run(|s| {
            let mut n = 0;
            for udid in udids {
                if let Some(d) = s.devices.get_mut(udid) {
                    if logic::withdraw_push_attempt(d, at) {
                        n += 1;
                    }
                }
            }
            Ok(n)
        })
    }

    fn record_push_outcome<'a>(
        &'a self,
        udid: &'a str,
        outcome: &'a PushOutcome,
        at: OffsetDateTime,
    ) -> StoreFuture<'a, ()> {
        let at = truncate_ms(at);
        self.run(|s| {
            logic::push_outcome(s.device_mut(udid)?, outcome, at);
            Ok(())
        })
    }

    fn queue_and_mark_pushes<'a>(
        &'a self,
        command: &'a Command,
        udids: &'a [String],
        at: OffsetDateTime,
    ) -> StoreFuture<'a, EnqueueOutcome> {
        let at = truncate_ms(at);
        self.run(|s| {
            let mut out = EnqueueOutcome {
                command_uuid: command.uuid.clone(),
                ..EnqueueOutcome::default()
            };
            for udid in dedup(udids) {
                let Some(d) = s.devices.get_mut(udid) else {
                    out.unknown.push(udid.clone());
                    continue;
                };
                logic::push_attempt(d, at);
                s.queue(udid, command, true, at, &mut out);
            }
            s.commands
                .entry(command.uuid.clone())
                .or_insert_with(|| StoredCommand {
                    request_type: command.request_type.clone(),
                    body: command.to_xml(),
                    expires_at: command.expires_at.map(truncate_ms),
                });
            Ok(out)
        })
    }

    fn record_push_outcomes<'a>(
        &'a self,
        outcomes: &'a [(String, PushOutcome)],
        at: OffsetDateTime,
    ) -> StoreFuture<'a, ()> {
        let at = truncate_ms(at);
        self.run(|s| {
            for (udid, outcome) in outcomes {
                if let Some(d) = s.devices.get_mut(udid) {
                    logic::push_outcome(d, outcome, at);
                }
            }
            Ok(())
        })
    }
}

impl ListingStore for MemoryStore {
    fn enrolled_topics(&self) -> StoreFuture<'_, std::collections::BTreeMap<String, u64>> {
        self.run(|s| {
            let mut out = std::collections::BTreeMap::new();
            for d in s.devices.values() {
                if d.is_enrolled() && !d.is_checked_out() {
                    *out.entry(d.topic.clone().unwrap_or_default()).or_insert(0) += 1;
                }
            }
            Ok(out)
        })
    }

    fn devices(&self) -> StoreFuture<'_, Vec<Device>> {
        self.run(|s| Ok(s.devices.values().map(|d| (**d).clone()).collect()))
    }

    fn devices_page<'a>(
        &'a self,
        after: Option<&'a str>,
        limit: usize,
    ) -> StoreFuture<'a, Vec<Device>> {
        use std::ops::Bound;
        let from = after.map_or(Bound::Unbounded, Bound::Excluded);
        self.run(move |s| {
            Ok(s.devices
                .range::<str, _>((from, Bound::Unbounded))
                .take(limit)
                .map(|(_, d)| (**d).clone())
                .collect())
        })
    }

    fn topic_devices_page<'a>(
        &'a self,
        topic: &'a str,
        after: Option<&'a str>,
        limit: usize,
    ) -> StoreFuture<'a, Vec<Device>> {
        use std::ops::Bound;
        let from = after.map_or(Bound::Unbounded, Bound::Excluded);
        self.run(move |s| {
            Ok(s.devices
                .range::<str, _>((from, Bound::Unbounded))
                .filter(|(_, d)| d.topic.as_deref() == Some(topic))
                .take(limit)
                .map(|(_, d)| (**d).clone())
                .collect())
        })
    }

    fn devices_page_by_topic<'a>(
        &'a self,
        after: Option<(&'a str, &'a str)>,
        limit: usize,
    ) -> StoreFuture<'a, Vec<Device>> {
        self.run(move |s| {
            fn key(d: &Device) -> (&str, &str) {
                (d.topic.as_deref().unwrap_or_default(), d.udid.as_str())
            }
            let mut page: Vec<&Device> = s
                .devices
                .values()
                .map(|d| &**d)
                .filter(|d| after.is_none_or(|after| key(d) > after))
                .collect();
            page.sort_unstable_by(|a, b| key(a).cmp(&key(b)));
            page.truncate(limit);
            Ok(page.into_iter().cloned().collect())
        })
    }

    fn device<'a>(&'a self, udid: &'a str) -> StoreFuture<'a, Option<Device>> {
        self.run(|s| Ok(s.devices.get(udid).map(|d| (**d).clone())))
    }

    fn pushable(&self) -> StoreFuture<'_, Vec<Device>> {
        self.run(|s| {
            Ok(s.devices
                .values()
                .filter(|d| d.is_pushable())
                .map(|d| (**d).clone())
                .collect())
        })
    }

    fn count(&self) -> StoreFuture<'_, usize> {
        self.run(|s| Ok(s.devices.len()))
    }
}

impl Store for MemoryStore {
    fn health(&self) -> StoreFuture<'_, ()> {
        self.run(|_| Ok(()))
    }
}

/// `udids` without repeats, first occurrence kept.
pub fn dedup(udids: &[String]) -> Vec<&String> {
    let mut seen = std::collections::HashSet::new();
    udids.iter().filter(|u| seen.insert(u.as_str())).collect()
}
