//! What the store keeps: devices, queued commands, results, and push bookkeeping.

use std::time::Duration;

use magicpush_engine::{Cause, DevicePush, DeviceToken, PushError, PushResult, Reason};
use serde::{Serialize, Serializer};
use time::OffsetDateTime;

use magicpush_mdm::{DeviceInfo, ErrorChainItem, Secret, Status};

/// Timestamps are kept to the millisecond by every store; this drops finer precision so that
/// what was written compares equal to what is read back.
pub fn truncate_ms(t: OffsetDateTime) -> OffsetDateTime {
    let ns = t.nanosecond();
    t.replace_nanosecond(ns - ns % 1_000_000).unwrap_or(t)
}

/// Milliseconds since the Unix epoch.
pub fn to_ms(t: OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

/// The inverse of [`to_ms`], in UTC. Out-of-range values (a corrupt row) clamp to the epoch.
pub fn from_ms(ms: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// RFC 3339 text (UTC), as the admin API and CSV show timestamps.
pub fn rfc3339(t: OffsetDateTime) -> String {
    t.to_offset(time::UtcOffset::UTC)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.unix_timestamp().to_string())
}

fn ser_opt_time<S: Serializer>(t: &Option<OffsetDateTime>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => s.serialize_some(&rfc3339(*t)),
        None => s.serialize_none(),
    }
}

/// How the last push to a device ended, derived from the engine's [`PushResult`].
///
/// Its reasons are typed ([`Reason`] for APNs's own, [`Cause`] where the engine's outcomes
/// may stand too). The admin API shows them as text (`ExpiredToken`, `DeadlineExceeded`); a
/// store keeps their stable stored names ([`Cause::stored_name`]), which never mistake an
/// engine outcome for an APNs reason of the same spelling.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum PushOutcome {
    /// APNs answered 200. Not proof of delivery: only the device's next report is.
    Accepted,
    /// APNs answered 410: the token is gone (MDM profile removed, device erased).
    Unregistered {
        /// `Unregistered` or `ExpiredToken`.
        #[serde(serialize_with = "as_text")]
        reason: Reason,
        /// APNs's timestamp (ms since the epoch) of when the token became invalid, if sent.
        timestamp_ms: Option<u64>,
    },
    /// APNs refused this push permanently (400 `BadDeviceToken`, `DeviceTokenNotForTopic`, …).
    Rejected {
        /// The reason, verbatim.
        #[serde(serialize_with = "as_text")]
        reason: Cause,
    },
    /// The push never got an answer for the device: the engine gave up (deadline, retries),
    /// the certificate was refused, or the client shut down.
    Failed {
        /// The reason (`DeadlineExceeded`, `ServiceUnavailable`, `BadCertificate`, …).
        #[serde(serialize_with = "as_text")]
        reason: Cause,
    },
}

fn as_text<T: std::fmt::Display, S: serde::Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

impl PushOutcome {
    /// Maps the engine's result for one push.
    pub fn from_result(result: &PushResult) -> Self {
        match result {
            Ok(_) => PushOutcome::Accepted,
            Err(PushError::Unregistered {
                reason,
                timestamp_ms,
            }) => PushOutcome::Unregistered {
                reason: reason.clone(),
                timestamp_ms: *timestamp_ms,
            },
            Err(e @ PushError::Rejected { .. }) => PushOutcome::Rejected { reason: e.reason() },
            Err(e) => PushOutcome::Failed { reason: e.reason() },
        }
    }

    /// The reason, `None` for [`PushOutcome::Accepted`].
    pub fn reason(&self) -> Option<Cause> {
        match self {
            PushOutcome::Accepted => None,
            PushOutcome::Unregistered { reason, .. } => Some(Cause::Apns(reason.clone())),
            PushOutcome::Rejected { reason } | PushOutcome::Failed { reason } => {
                Some(reason.clone())
            }
        }
    }

    /// The reason's stable stored name (`apns:ExpiredToken`, `engine:deadline_exceeded`),
    /// `None` for [`PushOutcome::Accepted`].
    pub fn stored_reason(&self) -> Option<std::borrow::Cow<'static, str>> {
        match self {
            PushOutcome::Accepted => None,
            PushOutcome::Unregistered { reason, .. } => Some(reason.stored_name()),
            PushOutcome::Rejected { reason } | PushOutcome::Failed { reason } => {
                Some(reason.stored_name())
            }
        }
    }

    /// The outcome of kind `kind` (as [`PushOutcome::kind`] names it) with a stored reason, as
    /// a store reads it back. A reason stored before the names were typed (the engine's text,
    /// `ExpiredToken`, `DeadlineExceeded`) reads as [`Cause::from_legacy`] does. `None` for an
    /// unknown kind.
    pub fn from_stored(
        kind: &str,
        reason: Option<&str>,
        timestamp_ms: Option<u64>,
    ) -> Option<PushOutcome> {
        // A stored name reads as itself; older text as it was meant.
        let cause = || Cause::from_legacy(reason.unwrap_or_default());
        Some(match kind {
            "accepted" => PushOutcome::Accepted,
            "unregistered" => PushOutcome::Unregistered {
                reason: match cause() {
                    Cause::Apns(r) => r,
                    // A 410 is APNs's answer; any other text is kept as its reason.
                    other => Reason::new(other.to_string()),
                },
                timestamp_ms,
            },
            "rejected" => PushOutcome::Rejected { reason: cause() },
            "failed" => PushOutcome::Failed { reason: cause() },
            _ => return None,
        })
    }

    /// True when the outcome says the stored token is wrong or gone (410, or 400
    /// `BadDeviceToken` / `DeviceTokenNotForTopic`): do not push it again before a new
    /// TokenUpdate.
    pub fn is_token_invalid(&self) -> bool {
        match self {
            PushOutcome::Unregistered { .. } => true,
            PushOutcome::Rejected { reason } => {
                *reason == Reason::BadDeviceToken || *reason == Reason::DeviceTokenNotForTopic
            }
            _ => false,
        }
    }

    /// The short kind stored in the database: `accepted`, `unregistered`, `rejected`, `failed`.
    pub fn kind(&self) -> &'static str {
        match self {
            PushOutcome::Accepted => "accepted",
            PushOutcome::Unregistered { .. } => "unregistered",
            PushOutcome::Rejected { .. } => "rejected",
            PushOutcome::Failed { .. } => "failed",
        }
    }
}

/// Everything the store knows about one device. Timestamps are UTC, millisecond precision.
///
/// `Debug` redacts the unlock and bootstrap tokens; `Serialize` (for the admin API) leaves out
/// the unlock token, bootstrap token and push magic, and flattens [`DeviceInfo`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Device {
    /// UDID, or EnrollmentID for User Enrollment.
    pub udid: String,
    /// The facts from Authenticate and the last DeviceInformation result merged.
    #[serde(flatten)]
    pub info: DeviceInfo,
    /// Push topic the device enrolled with.
    pub topic: Option<String>,
    /// Device-channel APNs token, lowercase hex.
    pub token: Option<String>,
    /// `PushMagic` of the device channel.
    #[serde(skip)]
    pub push_magic: Option<String>,
    /// `UnlockToken`. Never logged.
    #[serde(skip)]
    pub unlock_token: Option<Secret>,
    /// Escrowed bootstrap token. Never logged.
    #[serde(skip)]
    pub bootstrap_token: Option<Secret>,
    /// `AwaitingConfiguration` of the last device-channel TokenUpdate.
    pub awaiting_configuration: bool,
    /// An Authenticate started a new enrollment and no device-channel TokenUpdate has
    /// followed: the stored token belongs to the old one, so the device is not pushed.
    pub awaiting_token_update: bool,
    /// Last Authenticate.
    #[serde(serialize_with = "ser_opt_time")]
    pub authenticated_at: Option<OffsetDateTime>,
    /// First device-channel TokenUpdate (enrollment completed). Kept across re-enrollments.
    #[serde(serialize_with = "ser_opt_time")]
    pub enrolled_at: Option<OffsetDateTime>,
    /// Last device-channel TokenUpdate.
    #[serde(serialize_with = "ser_opt_time")]
    pub token_updated_at: Option<OffsetDateTime>,
    /// Last contact of any kind (check-in or report).
    #[serde(serialize_with = "ser_opt_time")]
    pub last_seen_at: Option<OffsetDateTime>,
    /// Last CheckOut.
    #[serde(serialize_with = "ser_opt_time")]
    pub checked_out_at: Option<OffsetDateTime>,
    /// When a DeviceInformation result last updated [`Device::info`].
    #[serde(serialize_with = "ser_opt_time")]
    pub info_collected_at: Option<OffsetDateTime>,
    /// Last push attempt.
    #[serde(serialize_with = "ser_opt_time")]
    pub last_push_at: Option<OffsetDateTime>,
    /// Outcome of the last push attempt; `None` while it is in flight or if never pushed.
    pub push_outcome: Option<PushOutcome>,
    /// When [`Device::push_outcome`] was recorded.
    #[serde(serialize_with = "ser_opt_time")]
    pub push_outcome_at: Option<OffsetDateTime>,
    /// Last command report (any status, Idle included).
    #[serde(serialize_with = "ser_opt_time")]
    pub last_report_at: Option<OffsetDateTime>,
    /// First report at or after [`Device::last_push_at`]; `None` while the push is unanswered.
    #[serde(serialize_with = "ser_opt_time")]
    pub first_report_after_push_at: Option<OffsetDateTime>,
    /// The identity certificate the enrollment is bound to (set at Authenticate when device
    /// authentication is on).
    pub identity: Option<BoundIdentity>,
}

/// The identity certificate an enrollment is bound to: every message for the device after
/// its Authenticate must come with this certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BoundIdentity {
    /// SHA-256 of the certificate's DER (lower-case hex in JSON).
    #[serde(serialize_with = "ser_hex")]
    pub sha256: [u8; 32],
    /// Its subject.
    pub subject: String,
    /// Its serial number, upper-case hex.
    pub serial: String,
    /// End of its validity.
    #[serde(serialize_with = "ser_time")]
    pub not_after: OffsetDateTime,
    /// The Authenticate that bound it.
    #[serde(serialize_with = "ser_time")]
    pub bound_at: OffsetDateTime,
    /// The certificate it replaced, when the device re-enrolled with another one.
    #[serde(serialize_with = "ser_opt_hex")]
    pub replaced_sha256: Option<[u8; 32]>,
}

impl BoundIdentity {
    /// The identity to bind at an Authenticate at `at` (`replaced_sha256` is the store's to
    /// fill).
    pub fn new(
        sha256: [u8; 32],
        subject: String,
        serial: String,
        not_after: OffsetDateTime,
        at: OffsetDateTime,
    ) -> Self {
        BoundIdentity {
            sha256,
            subject,
            serial,
            not_after: truncate_ms(not_after),
            bound_at: truncate_ms(at),
            replaced_sha256: None,
        }
    }

    /// `self` bound in place of `previous` (the device's binding before this Authenticate).
    pub(crate) fn replacing(&self, previous: Option<&BoundIdentity>) -> BoundIdentity {
        let mut next = self.clone();
        next.replaced_sha256 = match previous {
            Some(p) if p.sha256 != self.sha256 => Some(p.sha256),
            Some(p) => p.replaced_sha256,
            None => None,
        };
        next
    }
}

fn ser_time<S: Serializer>(t: &OffsetDateTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&rfc3339(*t))
}

fn ser_hex<S: Serializer>(h: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&hex::encode(h))
}

fn ser_opt_hex<S: Serializer>(h: &Option<[u8; 32]>, s: S) -> Result<S::Ok, S::Error> {
    match h {
        Some(h) => s.serialize_some(&hex::encode(h)),
        None => s.serialize_none(),
    }
}

impl Device {
    /// A device with only its identifier set.
    pub fn new(udid: impl Into<String>) -> Self {
        Device {
            udid: udid.into(),
            info: DeviceInfo::default(),
            topic: None,
            token: None,
            push_magic: None,
            unlock_token: None,
            bootstrap_token: None,
            awaiting_configuration: false,
            awaiting_token_update: false,
            authenticated_at: None,
            enrolled_at: None,
            token_updated_at: None,
            last_seen_at: None,
            checked_out_at: None,
            info_collected_at: None,
            last_push_at: None,
            push_outcome: None,
            push_outcome_at: None,
            last_report_at: None,
            first_report_after_push_at: None,
            identity: None,
        }
    }

    /// Enrollment completed (a device-channel TokenUpdate) and a token is stored.
    pub fn is_enrolled(&self) -> bool {
        self.enrolled_at.is_some() && self.token.is_some() && self.push_magic.is_some()
    }

    /// A CheckOut arrived and no TokenUpdate came after it.
    pub fn is_checked_out(&self) -> bool {
        match (self.checked_out_at, self.token_updated_at) {
            (Some(out), Some(tok)) => out >= tok,
            (Some(_), None) => true,
            (None, _) => false,
        }
    }

    /// The last push said the token is wrong or gone and no TokenUpdate came after it.
    pub fn is_token_invalidated(&self) -> bool {
        let Some(outcome) = &self.push_outcome else {
            return false;
        };
        if !outcome.is_token_invalid() {
            return false;
        }
        match (self.push_outcome_at, self.token_updated_at) {
            (Some(o), Some(t)) => o >= t,
            _ => true,
        }
    }

    /// May be pushed: enrolled, token present, not checked out, token not invalidated, not
    /// between a new Authenticate and its TokenUpdate.
    pub fn is_pushable(&self) -> bool {
        self.is_enrolled()
            && !self.is_checked_out()
            && !self.is_token_invalidated()
            && !self.awaiting_token_update
    }

    /// What the engine needs to push this device, if it is pushable and its token is valid hex:
    /// its token and PushMagic, on the certificate of the topic it enrolled with.
    pub fn push_target(&self) -> Option<DevicePush> {
        if !self.is_pushable() {
            return None;
        }
        let token = DeviceToken::from_hex(self.token.as_deref()?).ok()?;
        let push = DevicePush::new(token, self.push_magic.clone()?);
        Some(match self.topic.as_deref() {
            Some(topic) => push.with_topic(topic),
            None => push,
        })
    }

    /// From the last push attempt to the first report after it, if the device has reported.
    pub fn push_latency(&self) -> Option<Duration> {
        let d = self.first_report_after_push_at? - self.last_push_at?;
        Duration::try_from(d).ok()
    }
}

/// What a device-channel or user-channel TokenUpdate did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enrollment {
    /// The first device-channel TokenUpdate: the device is now enrolled and may be pushed.
    Enrolled,
    /// A later device-channel TokenUpdate (token refreshed or re-sent).
    Refreshed,
    /// A user-channel TokenUpdate: the user was recorded, the device token untouched.
    UserChannel,
}

/// Whether [`super::QueueStore::enqueue`] queues a command for devices that already have one of the
/// same RequestType queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnqueueMode {
    /// Queue for every known device.
    Always,
    /// Skip devices with a queued command of the same RequestType (a refresh does not pile up
    /// DeviceInformation commands for a device that is offline).
    SkipIfQueued,
}

/// What [`super::QueueStore::enqueue`] did, per device.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct EnqueueOutcome {
    /// The command's UUID (the same for every device it was queued for).
    pub command_uuid: String,
    /// Devices the command was queued for, in the order given.
    pub queued: Vec<String>,
    /// Devices skipped under [`EnqueueMode::SkipIfQueued`].
    pub already_queued: Vec<String>,
    /// UDIDs the store does not know; nothing was queued for them.
    pub unknown: Vec<String>,
}

/// A queued command, ready to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedCommand {
    /// `CommandUUID`.
    pub uuid: String,
    /// `RequestType`.
    pub request_type: String,
    /// The XML plist body the device receives.
    pub body: Vec<u8>,
    /// When it was queued for this device.
    pub queued_at: OffsetDateTime,
    /// The last NotNow for it from this device, if any.
    pub not_now_at: Option<OffsetDateTime>,
    /// Not sent after this time.
    pub expires_at: Option<OffsetDateTime>,
}

/// One recorded command result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandResult {
    /// The device.
    pub udid: String,
    /// `CommandUUID` as reported.
    pub command_uuid: String,
    /// The command's RequestType, if the command is known to the store.
    pub request_type: Option<String>,
    /// The status reported.
    pub status: Status,
    /// The report's `ErrorChain`.
    pub error_chain: Vec<ErrorChainItem>,
    /// The whole report as an XML plist.
    pub raw: Vec<u8>,
    /// When it was recorded.
    pub at: OffsetDateTime,
}

/// What [`super::QueueStore::record_report`] did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReportOutcome {
    /// The report answered a command queued for this device.
    pub known_command: bool,
    /// That command's RequestType, if known.
    pub request_type: Option<String>,
    /// The command left the queue (Acknowledged, Error, CommandFormatError).
    pub dequeued: bool,
    /// A DeviceInformation result updated the device record.
    pub info_updated: bool,
    /// This was the first report after the last push; the push is now answered.
    pub closed_push: bool,
    /// The device's next command, read in the same transaction as the report (what
    /// [`super::QueueStore::next_command`] would answer, skipping NotNow ones unless the report
    /// was Idle); `None` when the store did not look (then ask `next_command`).
    pub next_command: Option<Option<super::QueuedCommand>>,
}

/// A user channel recorded from a user-channel TokenUpdate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// The device.
    pub udid: String,
    /// `UserID`.
    pub user_id: String,
    /// `UserShortName`.
    pub short_name: Option<String>,
    /// `UserLongName`.
    pub long_name: Option<String>,
    /// User-channel token, hex.
    pub token: String,
    /// User-channel PushMagic.
    pub push_magic: String,
    /// Last TokenUpdate for this user.
    pub updated_at: OffsetDateTime,
}

/// Internal: every store resolves a report's effect on the device the same way.
pub fn apply_contact(d: &mut Device, at: OffsetDateTime) {
    if d.last_seen_at.is_none_or(|s| s < at) {
        d.last_seen_at = Some(at);
    }
}

/// Internal: a report at `at` closes the open push, if any. Returns true if it did.
pub(crate) fn apply_report(d: &mut Device, at: OffsetDateTime) -> bool {
    apply_contact(d, at);
    if d.last_report_at.is_none_or(|r| r < at) {
        d.last_report_at = Some(at);
    }
    match d.last_push_at {
        Some(p) if d.first_report_after_push_at.is_none() && at >= p => {
            d.first_report_after_push_at = Some(at);
            true
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use magicpush_engine::{Delivered, EngineCause, PushError, Reason};

    use super::*;

    #[test]
    fn push_outcome_from_engine_result() {
        let ok: PushResult = Ok(Delivered {
            apns_id: "id".into(),
            latency: Duration::from_millis(3),
            attempts: 1,
        });
        assert_eq!(PushOutcome::from_result(&ok), PushOutcome::Accepted);
        let gone: PushResult = Err(PushError::Unregistered {
            reason: Reason::ExpiredToken,
            timestamp_ms: Some(7),
        });
        let o = PushOutcome::from_result(&gone);
        assert_eq!(
            o,
            PushOutcome::Unregistered {
                reason: Reason::ExpiredToken,
                timestamp_ms: Some(7)
            }
        );
        assert!(o.is_token_invalid());
        let bad: PushResult = Err(PushError::Rejected {
            status: 400,
            reason: Reason::new("SomethingNew").into(),
        });
        let o = PushOutcome::from_result(&bad);
        assert_eq!(
            o.reason().map(|r| r.to_string()).as_deref(),
            Some("SomethingNew"),
            "unknown reasons kept verbatim"
        );
        assert!(!o.is_token_invalid());
        let bad_token: PushResult = Err(PushError::Rejected {
            status: 400,
            reason: Reason::BadDeviceToken.into(),
        });
        assert!(PushOutcome::from_result(&bad_token).is_token_invalid());
        let late: PushResult = Err(PushError::DeadlineExceeded {
            deadline: Duration::from_secs(1),
            attempts: 3,
            last: None,
            connect_error: None,
        });
        assert_eq!(
            PushOutcome::from_result(&late),
            PushOutcome::Failed {
                reason: EngineCause::DeadlineExceeded.into()
            }
        );
        let json = serde_json::to_string(&PushOutcome::from_result(&gone)).unwrap();
        assert_eq!(
            json,
            r#"{"outcome":"unregistered","reason":"ExpiredToken","timestamp_ms":7}"#
        );
    }

    /// What a store writes reads back the same; an engine outcome and an APNs reason of the
    /// same spelling stay apart; text stored before the names were typed still reads.
    #[test]
    fn push_outcomes_round_trip_through_their_stored_names() {
        let outcomes = [
            PushOutcome::Accepted,
            PushOutcome::Unregistered {
                reason: Reason::Unregistered,
                timestamp_ms: Some(9),
            },
            PushOutcome::Rejected {
                reason: Reason::new("SomethingNew").into(),
            },
            PushOutcome::Failed {
                reason: EngineCause::Shutdown.into(),
            },
            PushOutcome::Failed {
                reason: Reason::Shutdown.into(),
            },
            PushOutcome::Failed {
                reason: EngineCause::HttpStatus(502).into(),
            },
        ];
        for o in &outcomes {
            let stored = o.stored_reason();
            let timestamp = match o {
                PushOutcome::Unregistered { timestamp_ms, .. } => *timestamp_ms,
                _ => None,
            };
            let back = PushOutcome::from_stored(o.kind(), stored.as_deref(), timestamp);
            assert_eq!(back.as_ref(), Some(o), "{stored:?}");
        }
        assert_ne!(outcomes[3].stored_reason(), outcomes[4].stored_reason());
        assert_eq!(
            PushOutcome::from_stored("failed", Some("DeadlineExceeded"), None),
            Some(PushOutcome::Failed {
                reason: EngineCause::DeadlineExceeded.into()
            }),
            "the engine's old text"
        );
        assert_eq!(
            PushOutcome::from_stored("unregistered", Some("ExpiredToken"), None),
            Some(PushOutcome::Unregistered {
                reason: Reason::ExpiredToken,
                timestamp_ms: None
            })
        );
        assert_eq!(PushOutcome::from_stored("bogus", None, None), None);
    }

    #[test]
    fn push_target_needs_valid_enrollment() {
        let mut d = Device::new("A");
        assert!(d.push_target().is_none());
        d.token = Some("ABCD".into());
        d.push_magic = Some("m".into());
        d.enrolled_at = Some(OffsetDateTime::UNIX_EPOCH);
        d.token_updated_at = d.enrolled_at;
        let p = d.push_target().expect("pushable");
        assert_eq!((p.token.as_hex(), p.magic.as_str()), ("abcd", "m"));
        d.token = Some("not hex".into());
        assert!(d.push_target().is_none());
    }

    #[test]
    fn millisecond_roundtrip() {
        let t = OffsetDateTime::from_unix_timestamp_nanos(1_780_000_000_123_456_789).unwrap();
        assert_eq!(from_ms(to_ms(t)), truncate_ms(t));
        assert_eq!(to_ms(truncate_ms(t)), 1_780_000_000_123);
        assert_eq!(rfc3339(truncate_ms(t)), "2026-05-28T20:26:40.123Z");
    }
}
