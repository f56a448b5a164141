//! How each write changes a device record: one place, shared by every store implementation,
//! so that backends differ only in how they persist.

use time::OffsetDateTime;

use super::model::{apply_contact, apply_report, BoundIdentity, Device, Enrollment, PushOutcome};
use magicpush_mdm::{Authenticate, Report, Status, TokenUpdate};

/// An Authenticate starts a new enrollment: the device waits for its TokenUpdate (the
/// caller also drops the old enrollment's queue).
pub fn authenticate(d: &mut Device, msg: &Authenticate, at: OffsetDateTime) {
    d.awaiting_token_update = true;
    d.info.merge(&msg.info);
    d.topic = Some(msg.topic.clone());
    d.authenticated_at = Some(at);
    apply_contact(d, at);
}

/// Binds the identity an Authenticate was signed with (after [`authenticate`]); the one it
/// replaces, if different, is remembered. Returns the hash bound before.
pub fn bind_identity(d: &mut Device, id: &BoundIdentity) -> Option<[u8; 32]> {
    let next = id.replacing(d.identity.as_ref());
    d.identity.replace(next).map(|old| old.sha256)
}

/// Device channel only; the caller routes user-channel updates elsewhere.
pub fn token_update(d: &mut Device, msg: &TokenUpdate, at: OffsetDateTime) -> Enrollment {
    let re_enrolling = d.enrolled_at.is_none()
        || d.is_checked_out()
        || d.is_token_invalidated()
        || d.awaiting_token_update;
    d.awaiting_token_update = false;
    d.token = Some(msg.token.as_hex().to_owned());
    d.push_magic = Some(msg.push_magic.clone());
    if let Some(unlock) = &msg.unlock_token {
        d.unlock_token = Some(unlock.clone());
    }
    d.awaiting_configuration = msg.awaiting_configuration;
    d.topic = Some(msg.topic.clone());
    d.token_updated_at = Some(at);
    if d.enrolled_at.is_none() {
        d.enrolled_at = Some(at);
    }
    apply_contact(d, at);
    if re_enrolling {
        Enrollment::Enrolled
    } else {
        Enrollment::Refreshed
    }
}

pub fn check_out(d: &mut Device, at: OffsetDateTime) {
    d.checked_out_at = Some(at);
    apply_contact(d, at);
}

pub fn push_attempt(d: &mut Device, at: OffsetDateTime) {
    d.last_push_at = Some(at);
    d.push_outcome = None;
    d.push_outcome_at = None;
    d.first_report_after_push_at = None;
}

/// Takes back the attempt marked at `at` if nothing came of it (no outcome, no report):
/// the device has no attempt again. True when taken back.
pub fn withdraw_push_attempt(d: &mut Device, at: OffsetDateTime) -> bool {
    if d.last_push_at == Some(at)
        && d.push_outcome.is_none()
        && d.first_report_after_push_at.is_none()
    {
        d.last_push_at = None;
        return true;
    }
    false
}

pub fn push_outcome(d: &mut Device, outcome: &PushOutcome, at: OffsetDateTime) {
    d.push_outcome = Some(outcome.clone());
    d.push_outcome_at = Some(at);
    if d.last_push_at.is_none() {
        d.last_push_at = Some(at);
    }
}

/// Returns (closed the open push, updated the device facts).
pub fn report(d: &mut Device, report: &Report, at: OffsetDateTime) -> (bool, bool) {
    let closed = apply_report(d, at);
    let mut info_updated = false;
    if report.status == Status::Acknowledged {
        if let Some(info) = report.device_info.as_ref().filter(|i| !i.is_empty()) {
            d.info.merge(info);
            d.info_collected_at = Some(at);
            info_updated = true;
        }
    }
    (closed, info_updated)
}
