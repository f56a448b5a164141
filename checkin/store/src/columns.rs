//! A device as the columns of a table row: the one list of those columns, in their order, and
//! each one's value for a [`Device`]. A SQL store selects and writes them in this order;
//! [`writes`](crate::writes) declares each write's effect on them.

use std::borrow::Cow;

use crate::model::{to_ms, Device, PushOutcome};
use magicpush_mdm::Secret;

/// One column of a stored device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(missing_docs)] // Each variant is the column of the `Device` field of the same name.
pub enum Column {
    Udid,
    DeviceName,
    Model,
    ModelName,
    ProductName,
    OsVersion,
    BuildVersion,
    SerialNumber,
    Imei,
    Meid,
    PhoneNumber,
    Topic,
    Token,
    PushMagic,
    UnlockToken,
    BootstrapToken,
    AwaitingConfiguration,
    AuthenticatedAt,
    EnrolledAt,
    TokenUpdatedAt,
    LastSeenAt,
    CheckedOutAt,
    InfoCollectedAt,
    LastPushAt,
    /// [`PushOutcome::kind`].
    PushOutcome,
    /// [`PushOutcome::stored_reason`].
    PushReason,
    /// An `Unregistered` outcome's APNs timestamp.
    PushUnregisteredMs,
    PushOutcomeAt,
    LastReportAt,
    FirstReportAfterPushAt,
    IdentitySha256,
    IdentitySubject,
    IdentitySerial,
    IdentityNotAfter,
    IdentityBoundAt,
    IdentityReplacedSha256,
    AwaitingTokenUpdate,
}

/// A column's value: what a SQL store binds for it. Times are Unix milliseconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value<'a> {
    /// No value (SQL `NULL`).
    Null,
    /// An integer, or a time in Unix milliseconds.
    Int(i64),
    /// A flag.
    Bool(bool),
    /// Text.
    Text(Cow<'a, str>),
    /// Bytes: hashes and (possibly sealed) secrets.
    Bytes(&'a [u8]),
}

impl Value<'_> {
    /// Whether this is [`Value::Null`].
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }
}

fn text(v: &Option<String>) -> Value<'_> {
    v.as_deref()
        .map_or(Value::Null, |s| Value::Text(Cow::Borrowed(s)))
}

fn time(v: Option<time::OffsetDateTime>) -> Value<'static> {
    v.map_or(Value::Null, |t| Value::Int(to_ms(t)))
}

fn secret(v: &Option<Secret>) -> Value<'_> {
    v.as_ref().map_or(Value::Null, |s| Value::Bytes(s.expose()))
}

/// The `push_unregistered_ms` column for an outcome.
fn unregistered_ms(outcome: Option<&PushOutcome>) -> Value<'static> {
    match outcome {
        Some(PushOutcome::Unregistered {
            timestamp_ms: Some(ms),
            ..
        }) => Value::Int(i64::try_from(*ms).unwrap_or(i64::MAX)),
        _ => Value::Null,
    }
}

impl Column {
    /// Every column, in the table's order.
    pub const ALL: [Column; 37] = [
        Column::Udid,
        Column::DeviceName,
        Column::Model,
        Column::ModelName,
        Column::ProductName,
        Column::OsVersion,
        Column::BuildVersion,
        Column::SerialNumber,
        Column::Imei,
        Column::Meid,
        Column::PhoneNumber,
        Column::Topic,
        Column::Token,
        Column::PushMagic,
        Column::UnlockToken,
        Column::BootstrapToken,
        Column::AwaitingConfiguration,
        Column::AuthenticatedAt,
        Column::EnrolledAt,
        Column::TokenUpdatedAt,
        Column::LastSeenAt,
        Column::CheckedOutAt,
        Column::InfoCollectedAt,
        Column::LastPushAt,
        Column::PushOutcome,
        Column::PushReason,
        Column::PushUnregisteredMs,
        Column::PushOutcomeAt,
        Column::LastReportAt,
        Column::FirstReportAfterPushAt,
        Column::IdentitySha256,
        Column::IdentitySubject,
        Column::IdentitySerial,
        Column::IdentityNotAfter,
        Column::IdentityBoundAt,
        Column::IdentityReplacedSha256,
        Column::AwaitingTokenUpdate,
    ];

    /// The column's name in the `devices` table.
    pub fn name(self) -> &'static str {
        match self {
            Column::Udid => "udid",
            Column::DeviceName => "device_name",
            Column::Model => "model",
            Column::ModelName => "model_name",
            Column::ProductName => "product_name",
            Column::OsVersion => "os_version",
            Column::BuildVersion => "build_version",
            Column::SerialNumber => "serial_number",
            Column::Imei => "imei",
            Column::Meid => "meid",
            Column::PhoneNumber => "phone_number",
            Column::Topic => "topic",
            Column::Token => "token",
            Column::PushMagic => "push_magic",
            Column::UnlockToken => "unlock_token",
            Column::BootstrapToken => "bootstrap_token",
            Column::AwaitingConfiguration => "awaiting_configuration",
            Column::AuthenticatedAt => "authenticated_at",
            Column::EnrolledAt => "enrolled_at",
            Column::TokenUpdatedAt => "token_updated_at",
            Column::LastSeenAt => "last_seen_at",
            Column::CheckedOutAt => "checked_out_at",
            Column::InfoCollectedAt => "info_collected_at",
            Column::LastPushAt => "last_push_at",
            Column::PushOutcome => "push_outcome",
            Column::PushReason => "push_reason",
            Column::PushUnregisteredMs => "push_unregistered_ms",
            Column::PushOutcomeAt => "push_outcome_at",
            Column::LastReportAt => "last_report_at",
            Column::FirstReportAfterPushAt => "first_report_after_push_at",
            Column::IdentitySha256 => "identity_sha256",
            Column::IdentitySubject => "identity_subject",
            Column::IdentitySerial => "identity_serial",
            Column::IdentityNotAfter => "identity_not_after",
            Column::IdentityBoundAt => "identity_bound_at",
            Column::IdentityReplacedSha256 => "identity_replaced_sha256",
            Column::AwaitingTokenUpdate => "awaiting_token_update",
        }
    }

    /// This column's value for `d`. Secrets are bound as they are held: a store that seals
    /// them seals the device's copy first.
    pub fn value(self, d: &Device) -> Value<'_> {
        let i = &d.info;
        let id = d.identity.as_ref();
        match self {
            Column::Udid => Value::Text(Cow::Borrowed(&d.udid)),
            Column::DeviceName => text(&i.device_name),
            Column::Model => text(&i.model),
            Column::ModelName => text(&i.model_name),
            Column::ProductName => text(&i.product_name),
            Column::OsVersion => text(&i.os_version),
            Column::BuildVersion => text(&i.build_version),
            Column::SerialNumber => text(&i.serial_number),
            Column::Imei => text(&i.imei),
            Column::Meid => text(&i.meid),
            Column::PhoneNumber => text(&i.phone_number),
            // Stores key devices by (topic, UDID): a device without one is kept under the
            // empty topic, which reads back as none.
            Column::Topic => Value::Text(Cow::Borrowed(d.topic.as_deref().unwrap_or_default())),
            Column::Token => text(&d.token),
            Column::PushMagic => text(&d.push_magic),
            Column::UnlockToken => secret(&d.unlock_token),
            Column::BootstrapToken => secret(&d.bootstrap_token),
            Column::AwaitingConfiguration => Value::Bool(d.awaiting_configuration),
            Column::AuthenticatedAt => time(d.authenticated_at),
            Column::EnrolledAt => time(d.enrolled_at),
            Column::TokenUpdatedAt => time(d.token_updated_at),
            Column::LastSeenAt => time(d.last_seen_at),
            Column::CheckedOutAt => time(d.checked_out_at),
            Column::InfoCollectedAt => time(d.info_collected_at),
            Column::LastPushAt => time(d.last_push_at),
            Column::PushOutcome => d
                .push_outcome
                .as_ref()
                .map_or(Value::Null, |o| Value::Text(Cow::Borrowed(o.kind()))),
            Column::PushReason => d
                .push_outcome
                .as_ref()
                .and_then(PushOutcome::stored_reason)
                .map_or(Value::Null, Value::Text),
            Column::PushUnregisteredMs => unregistered_ms(d.push_outcome.as_ref()),
            Column::PushOutcomeAt => time(d.push_outcome_at),
            Column::LastReportAt => time(d.last_report_at),
            Column::FirstReportAfterPushAt => time(d.first_report_after_push_at),
            Column::IdentitySha256 => id.map_or(Value::Null, |i| Value::Bytes(&i.sha256)),
            Column::IdentitySubject => {
                id.map_or(Value::Null, |i| Value::Text(Cow::Borrowed(&i.subject)))
            }
            Column::IdentitySerial => {
                id.map_or(Value::Null, |i| Value::Text(Cow::Borrowed(&i.serial)))
            }
            Column::IdentityNotAfter => time(id.map(|i| i.not_after)),
            Column::IdentityBoundAt => time(id.map(|i| i.bound_at)),
            Column::IdentityReplacedSha256 => id
                .and_then(|i| i.replaced_sha256.as_ref())
                .map_or(Value::Null, |h| Value::Bytes(h)),
            Column::AwaitingTokenUpdate => Value::Bool(d.awaiting_token_update),
        }
    }

    /// Every column's value for `d`, in [`Column::ALL`]'s order.
    pub fn row(d: &Device) -> Vec<Value<'_>> {
        Column::ALL.iter().map(|c| c.value(d)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_distinct_and_in_table_order() {
        let names: Vec<&str> = Column::ALL.iter().map(|c| c.name()).collect();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), names.len());
        assert_eq!(names[0], "udid");
        assert_eq!(names[36], "awaiting_token_update");
    }

    #[test]
    fn a_new_device_has_only_its_udid_no_topic_and_false_flags() {
        let d = Device::new("u");
        for (c, v) in Column::ALL.iter().zip(Column::row(&d)) {
            match c {
                Column::Udid => assert_eq!(v, Value::Text("u".into())),
                Column::Topic => assert_eq!(v, Value::Text("".into())),
                Column::AwaitingConfiguration | Column::AwaitingTokenUpdate => {
                    assert_eq!(v, Value::Bool(false))
                }
                _ => assert!(v.is_null(), "{c:?}"),
            }
        }
    }
}
