//! The declared writes against the rules: for random stored devices and messages, the rule run
//! on the whole device must leave exactly the row the declaration leaves when merged into it.

use magicpush_engine::{DeviceToken, EngineCause, Reason};
use magicpush_mdm::{Authenticate, DeviceInfo, Report, Secret, Status, TokenUpdate};
use proptest::prelude::*;
use time::OffsetDateTime;

use super::*;
use crate::logic;
use crate::model::{BoundIdentity, PushOutcome};

const UDID: &str = "device-1";

fn t(secs: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_780_000_000 + secs).expect("valid timestamp")
}

/// Times from a handful of seconds, so that equal, earlier and later all come up.
fn time() -> impl Strategy<Value = OffsetDateTime> {
    (0i64..6).prop_map(t)
}

fn opt_time() -> impl Strategy<Value = Option<OffsetDateTime>> {
    prop::option::of(time())
}

fn opt_text() -> impl Strategy<Value = Option<String>> {
    prop::option::of(prop::sample::select(vec!["a", "b"]).prop_map(String::from))
}

fn info() -> impl Strategy<Value = DeviceInfo> {
    (
        (opt_text(), opt_text(), opt_text(), opt_text(), opt_text()),
        (opt_text(), opt_text(), opt_text(), opt_text(), opt_text()),
    )
        .prop_map(|((a, b, c, d, e), (f, g, h, i, j))| DeviceInfo {
            device_name: a,
            model: b,
            model_name: c,
            product_name: d,
            os_version: e,
            build_version: f,
            serial_number: g,
            imei: h,
            meid: i,
            phone_number: j,
        })
}

fn hash() -> impl Strategy<Value = [u8; 32]> {
    (1u8..4).prop_map(|b| [b; 32])
}

fn identity() -> impl Strategy<Value = BoundIdentity> {
    (hash(), opt_text(), time(), time(), prop::option::of(hash())).prop_map(
        |(sha256, subject, not_after, bound_at, replaced_sha256)| BoundIdentity {
            sha256,
            subject: subject.unwrap_or_default(),
            serial: format!("{:02X}", sha256[0]),
            not_after,
            bound_at,
            replaced_sha256,
        },
    )
}

fn outcome() -> impl Strategy<Value = PushOutcome> {
    prop_oneof![
        Just(PushOutcome::Accepted),
        prop::option::of(0u64..3).prop_map(|timestamp_ms| PushOutcome::Unregistered {
            reason: Reason::Unregistered,
            timestamp_ms,
        }),
        Just(PushOutcome::Rejected {
            reason: Reason::BadDeviceToken.into()
        }),
        Just(PushOutcome::Failed {
            reason: EngineCause::DeadlineExceeded.into()
        }),
    ]
}

fn secret() -> impl Strategy<Value = Option<Secret>> {
    prop::option::of((1u8..3).prop_map(|b| Secret::new(vec![b; 4])))
}

/// A stored device with any mix of columns set.
fn device() -> impl Strategy<Value = Device> {
    (
        (
            info(),
            opt_text(),
            opt_text(),
            opt_text(),
            secret(),
            secret(),
        ),
        (
            any::<bool>(),
            any::<bool>(),
            opt_time(),
            opt_time(),
            opt_time(),
        ),
        (
            opt_time(),
            opt_time(),
            opt_time(),
            opt_time(),
            prop::option::of(outcome()),
        ),
        (
            opt_time(),
            opt_time(),
            opt_time(),
            prop::option::of(identity()),
        ),
    )
        .prop_map(|(a, b, c, d)| {
            let mut dev = Device::new(UDID);
            (dev.info, dev.topic, dev.token, dev.push_magic) = (a.0, a.1, a.2, a.3);
            (dev.unlock_token, dev.bootstrap_token) = (a.4, a.5);
            (dev.awaiting_configuration, dev.awaiting_token_update) = (b.0, b.1);
            (dev.authenticated_at, dev.enrolled_at, dev.token_updated_at) = (b.2, b.3, b.4);
            (dev.last_seen_at, dev.checked_out_at, dev.info_collected_at) = (c.0, c.1, c.2);
            (dev.last_push_at, dev.push_outcome) = (c.3, c.4);
            (dev.push_outcome_at, dev.last_report_at) = (d.0, d.1);
            (dev.first_report_after_push_at, dev.identity) = (d.2, d.3);
            dev
        })
}

/// A fresh device holding `old`'s values of the columns a rule decides on.
fn fresh(old: Option<&Device>, reads: &[Column]) -> Device {
    let mut d = Device::new(UDID);
    let Some(old) = old else { return d };
    for col in reads {
        match col {
            Column::EnrolledAt => d.enrolled_at = old.enrolled_at,
            Column::CheckedOutAt => d.checked_out_at = old.checked_out_at,
            Column::TokenUpdatedAt => d.token_updated_at = old.token_updated_at,
            Column::PushOutcome | Column::PushReason | Column::PushUnregisteredMs => {
                d.push_outcome = old.push_outcome.clone()
            }
            Column::PushOutcomeAt => d.push_outcome_at = old.push_outcome_at,
            Column::LastSeenAt => d.last_seen_at = old.last_seen_at,
            Column::AwaitingTokenUpdate => d.awaiting_token_update = old.awaiting_token_update,
            Column::LastReportAt => d.last_report_at = old.last_report_at,
            Column::LastPushAt => d.last_push_at = old.last_push_at,
            Column::FirstReportAfterPushAt => {
                d.first_report_after_push_at = old.first_report_after_push_at
            }
            other => panic!("no copy for {other:?}"),
        }
    }
    d
}

/// Asserts that `write`, merging `fresh` into `old`, leaves `whole`'s row.
fn check(write: &DeviceWrite, old: Option<&Device>, fresh: &Device, whole: &Device) {
    let merged = write.apply(old, fresh).expect("the write changes the row");
    let expected = Column::row(whole);
    for (i, col) in Column::ALL.iter().enumerate() {
        assert_eq!(
            merged[i],
            expected[i],
            "{}: column {}",
            write.name,
            col.name()
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn authenticate_matches_its_rule(
        old in prop::option::of(device()),
        info in info(),
        topic in opt_text(),
        id in prop::option::of(identity()),
        at in time(),
    ) {
        let msg = Authenticate { udid: UDID.into(), topic: topic.unwrap_or_default(), info };
        // The store fills `replaced_sha256`; the caller's identity carries none.
        let id = id.map(|mut i| { i.replaced_sha256 = None; i });
        let mut whole = old.clone().unwrap_or_else(|| Device::new(UDID));
        logic::authenticate(&mut whole, &msg, at);
        let mut new = fresh(None, &[]);
        logic::authenticate(&mut new, &msg, at);
        if let Some(id) = &id {
            logic::bind_identity(&mut whole, id);
            logic::bind_identity(&mut new, id);
        }
        check(&AUTHENTICATE, old.as_ref(), &new, &whole);
    }

    #[test]
    fn token_update_matches_its_rule(
        old in prop::option::of(device()),
        unlock in secret(),
        awaiting in any::<bool>(),
        at in time(),
    ) {
        let msg = TokenUpdate {
            udid: UDID.into(),
            topic: "topic".into(),
            token: DeviceToken::from_bytes(&[7; 32]).expect("a token"),
            push_magic: "magic".into(),
            unlock_token: unlock,
            awaiting_configuration: awaiting,
            user: None,
        };
        let mut whole = old.clone().unwrap_or_else(|| Device::new(UDID));
        let expected = logic::token_update(&mut whole, &msg, at);
        let mut new = fresh(old.as_ref(), &TOKEN_UPDATE_READS);
        prop_assert_eq!(logic::token_update(&mut new, &msg, at), expected);
        check(&TOKEN_UPDATE, old.as_ref(), &new, &whole);
    }

    #[test]
    fn report_matches_its_rule(
        old in device(),
        acknowledged in any::<bool>(),
        facts in prop::option::of(info()),
        at in time(),
    ) {
        let report = Report {
            udid: UDID.into(),
            user_id: None,
            status: if acknowledged { Status::Acknowledged } else { Status::Idle },
            command_uuid: None,
            error_chain: Vec::new(),
            device_info: facts,
            raw: plist::Dictionary::new(),
        };
        let mut whole = old.clone();
        let expected = logic::report(&mut whole, &report, at);
        let mut new = fresh(Some(&old), &REPORT_READS);
        prop_assert_eq!(logic::report(&mut new, &report, at), expected);
        let write = if expected.1 { &REPORT_WITH_INFO } else { &REPORT };
        check(write, Some(&old), &new, &whole);
    }

    #[test]
    fn push_bookkeeping_matches_its_rules(
        old in device(),
        outcome in outcome(),
        at in time(),
    ) {
        let mut whole = old.clone();
        logic::push_attempt(&mut whole, at);
        let mut new = fresh(None, &[]);
        logic::push_attempt(&mut new, at);
        check(&PUSH_ATTEMPT, Some(&old), &new, &whole);

        let mut whole = old.clone();
        logic::push_outcome(&mut whole, &outcome, at);
        let mut new = fresh(None, &[]);
        logic::push_outcome(&mut new, &outcome, at);
        check(&PUSH_OUTCOME, Some(&old), &new, &whole);
    }

    #[test]
    fn save_is_the_device_as_given(old in prop::option::of(device()), new in device()) {
        check(&SAVE, old.as_ref(), &new, &new);
    }
}

#[test]
fn an_update_of_an_unknown_device_changes_nothing() {
    assert!(REPORT.apply(None, &Device::new(UDID)).is_none());
    assert!(PUSH_OUTCOME.apply(None, &Device::new(UDID)).is_none());
}

#[test]
fn every_write_renders_in_both_dialects() {
    for write in ALL {
        for dialect in [Dialect::Sqlite, Dialect::Postgres] {
            let sql = write.sql(dialect);
            let params = write.values(&Device::new(UDID)).len();
            let highest = dialect.placeholder(params);
            assert!(sql.contains(&highest), "{}: {sql}", write.name);
            assert!(
                !sql.contains(&dialect.placeholder(params + 1)),
                "{}",
                write.name
            );
        }
    }
}

#[test]
fn a_push_outcome_renders_as_an_update_keeping_the_first_attempt() {
    assert_eq!(
        PUSH_OUTCOME.sql(Dialect::Sqlite),
        "UPDATE devices SET push_outcome = ?2, push_reason = ?3, push_unregistered_ms = ?4, \
         push_outcome_at = ?5, last_push_at = COALESCE(devices.last_push_at, ?6) \
         WHERE udid = ?1"
    );
    let auth = AUTHENTICATE.sql(Dialect::Postgres);
    assert!(
        auth.starts_with("INSERT INTO devices (udid, device_name,"),
        "{auth}"
    );
    assert!(
        auth.contains("identity_subject = CASE WHEN excluded.identity_sha256 IS NULL THEN devices.identity_subject ELSE excluded.identity_subject END"),
        "{auth}"
    );
}

/// SQLite keys devices by (topic, UDID): its upserts insert the topic but never set it on a
/// stored device (its store moves a device whose topic changes); PostgreSQL's set it.
#[test]
fn sqlite_upserts_leave_the_topic_key_alone() {
    for write in [&AUTHENTICATE, &TOKEN_UPDATE, &SAVE] {
        let sqlite = write.sql(Dialect::Sqlite);
        let (insert, update) = sqlite.split_once("DO UPDATE SET").unwrap();
        assert!(insert.contains(", topic,"), "{sqlite}");
        assert!(!update.contains("topic ="), "{sqlite}");
        let postgres = write.sql(Dialect::Postgres);
        assert!(postgres.contains("topic = excluded.topic"), "{postgres}");
    }
}
