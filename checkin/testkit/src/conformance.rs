//! One behavioural test suite every [`Store`] implementation must pass.
//!
//! Each case is a `pub async fn(Arc<dyn Store>)` that panics on a failure; the
//! [`store_conformance!`](crate::store_conformance) macro turns them all into `#[tokio::test]`s
//! in one line:
//!
//! ```ignore
//! magicpush_testkit::store_conformance!((Arc::new(MemoryStore::new()) as Arc<dyn Store>, ()));
//! ```
//!
//! The expression is evaluated once per case and yields the store and a guard kept alive for
//! the case (a temporary directory, say).

use std::sync::Arc;
use std::time::Duration;

use magicpush_engine::DeviceToken;
use plist::{Dictionary, Value};
use time::OffsetDateTime;

use magicpush_mdm::{
    decode_report, Authenticate, Command, DeviceInfo, Report, Secret, Status, TokenUpdate,
    UserChannel, DEVICE_INFORMATION,
};
use magicpush_store::{
    BoundIdentity, Device, EnqueueMode, Enrollment, PushOutcome, Store, StoreError,
    RESULTS_KEPT_PER_DEVICE,
};

/// Generates one `#[tokio::test]` per conformance case. See the [module docs](self).
#[macro_export]
macro_rules! store_conformance {
    ($make:expr) => {
        $crate::store_conformance!(@cases $make;
            authenticate_creates_and_merges,
            token_update_enrolls_then_refreshes,
            user_channel_keeps_device_token,
            check_out_unregisters_until_token_update,
            bootstrap_token_roundtrip,
            unknown_device_writes_fail,
            last_seen_only_moves_forward,
            enqueue_reports_unknown_and_duplicates,
            enqueue_skip_if_queued,
            queue_order_and_results,
            report_outcome_next_command_matches_next_command,
            not_now_stays_queued_and_is_skipped_in_session,
            device_information_updates_device,
            result_for_unknown_command_is_recorded,
            a_repeated_final_report_is_recorded_once,
            old_results_are_pruned,
            push_bookkeeping_and_latency,
            push_outcomes_batch,
            refresh_chunks_queue_and_mark_pushes,
            unregistered_push_stops_pushing_until_token_update,
            listing_and_counting,
            listing_in_pages,
            timestamps_keep_milliseconds,
            concurrent_writes_all_land,
            secrets_are_redacted,
            enrolled_topics_count_enrolled_devices,
            re_authenticate_starts_a_new_enrollment,
            check_out_drops_the_queue,
            delete_device_removes_everything,
            delete_all_devices_empties_the_store,
            delete_topic_devices_keeps_other_tenants,
            topic_pages_hold_one_tenants_devices,
            pages_by_topic_walk_every_tenant_in_turn,
            a_device_moving_tenant_keeps_its_queue_and_results,
            withdrawn_push_attempts_read_never_pushed,
            cancel_command_takes_it_off_every_queue,
            expired_commands_are_not_sent,
            refresh_chunks_keep_the_command_expiry,
            identity_is_bound_at_authenticate,
            identity_rebind_is_recorded,
            identity_of_another_device_is_refused_without_a_write,
            push_certificates_by_topic,
            pushcert_requests_are_bounded_and_ordered,
            pushcert_memos_and_logs,
            tenant_names_by_topic,
            cluster_heartbeats_and_schedules,
            cluster_sweep_takes_back_a_dead_nodes_run,
            settings_are_stored_and_merged,
            challenges_are_used_once,
            invitations_admit_their_uses,
            invitation_devices_are_listed,
            expired_challenges_are_refused,
            revoked_serials_are_kept,
            one_device_ca_is_kept,
        );
    };
    (@cases $make:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let (store, _guard) = $make;
                $crate::conformance::$case(store).await;
            }
        )*
    };
}

/// A fixed, millisecond-aligned instant plus `secs` seconds.
pub fn t(secs: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_780_000_000 + secs).expect("valid fixed timestamp")
}

/// An Authenticate for `udid` with a serial number and model.
pub fn authenticate(udid: &str) -> Authenticate {
    Authenticate {
        udid: udid.into(),
        topic: "com.apple.mgmt.External.test".into(),
        info: DeviceInfo {
            serial_number: Some(format!("SN-{udid}")),
            model: Some("MQ3D2J/A".into()),
            os_version: Some("17.4".into()),
            ..DeviceInfo::default()
        },
    }
}

/// A device-channel TokenUpdate for `udid` with token bytes `[seed; 32]`.
pub fn token_update(udid: &str, seed: u8) -> TokenUpdate {
    TokenUpdate {
        udid: udid.into(),
        topic: "com.apple.mgmt.External.test".into(),
        token: DeviceToken::from_bytes(&[seed; 32]).expect("non-empty token"),
        push_magic: format!("magic-{udid}"),
        unlock_token: Some(Secret::new(b"unlock-secret-bytes".to_vec())),
        awaiting_configuration: false,
        user: None,
    }
}

/// A command report decoded from a real plist, with optional extra keys.
pub fn report(udid: &str, status: Status, uuid: Option<&str>, extra: Dictionary) -> Report {
    let mut d = extra;
    d.insert("UDID".into(), Value::String(udid.into()));
    d.insert("Status".into(), Value::String(status.as_str().into()));
    if let Some(u) = uuid {
        d.insert("CommandUUID".into(), Value::String(u.into()));
    }
    let mut xml = Vec::new();
    Value::Dictionary(d)
        .to_writer_xml(&mut xml)
        .expect("serialise test report");
    decode_report(&xml).expect("test report decodes")
}

fn query_responses(name: &str, os: &str) -> Dictionary {
    let mut q = Dictionary::new();
    q.insert("DeviceName".into(), Value::String(name.into()));
    q.insert("OSVersion".into(), Value::String(os.into()));
    q.insert("BatteryLevel".into(), Value::Real(0.5));
    let mut d = Dictionary::new();
    d.insert("QueryResponses".into(), Value::Dictionary(q));
    d
}

/// Authenticates and enrolls `udid` (a device-channel TokenUpdate) at `at`.
pub async fn enroll(store: &dyn Store, udid: &str, at: OffsetDateTime) {
    store
        .authenticate(&authenticate(udid), None, at)
        .await
        .expect("authenticate");
    store
        .token_update(&token_update(udid, 0xab), at)
        .await
        .expect("token update");
}

#[allow(missing_docs)]
pub async fn authenticate_creates_and_merges(store: Arc<dyn Store>) {
    store
        .authenticate(&authenticate("A"), None, t(0))
        .await
        .unwrap();
    let d = store.device("A").await.unwrap().expect("device exists");
    assert_eq!(d.info.serial_number.as_deref(), Some("SN-A"));
    assert_eq!(d.topic.as_deref(), Some("com.apple.mgmt.External.test"));
    assert_eq!(d.authenticated_at, Some(t(0)));
    assert_eq!(d.last_seen_at, Some(t(0)));
    assert!(!d.is_enrolled() && d.token.is_none() && d.enrolled_at.is_none());

    let mut again = authenticate("A");
    again.info = DeviceInfo {
        os_version: Some("17.5".into()),
        ..DeviceInfo::default()
    };
    store.authenticate(&again, None, t(5)).await.unwrap();
    let d = store.device("A").await.unwrap().unwrap();
    assert_eq!(
        d.info.os_version.as_deref(),
        Some("17.5"),
        "newer fact wins"
    );
    assert_eq!(
        d.info.serial_number.as_deref(),
        Some("SN-A"),
        "absent fact kept"
    );
    assert_eq!(d.authenticated_at, Some(t(5)));
    assert_eq!(store.count().await.unwrap(), 1);
}

#[allow(missing_docs)]
pub async fn token_update_enrolls_then_refreshes(store: Arc<dyn Store>) {
    store
        .authenticate(&authenticate("A"), None, t(0))
        .await
        .unwrap();
    assert!(store.pushable().await.unwrap().is_empty());
    let e = store
        .token_update(&token_update("A", 1), t(1))
        .await
        .unwrap();
    assert_eq!(e, Enrollment::Enrolled);
    let mut second = token_update("A", 2);
    second.unlock_token = None;
    let e = store.token_update(&second, t(2)).await.unwrap();
    assert_eq!(e, Enrollment::Refreshed);
    let d = store.device("A").await.unwrap().unwrap();
    assert_eq!(
        d.enrolled_at,
        Some(t(1)),
        "enrolled_at is the first TokenUpdate"
    );
    assert_eq!(d.token_updated_at, Some(t(2)));
    assert_eq!(d.token.as_deref(), Some("02".repeat(32).as_str()));
    assert_eq!(d.push_magic.as_deref(), Some("magic-A"));
    assert_eq!(
        d.unlock_token.as_ref().map(Secret::expose),
        Some(&b"unlock-secret-bytes"[..]),
        "unlock token kept when a later TokenUpdate omits it"
    );
    let target = d.push_target().expect("pushable");
    assert_eq!(target.token.as_hex(), "02".repeat(32));
    assert_eq!(target.magic, "magic-A");
    // A re-Authenticate starts a new enrollment: kept facts, not pushed until its
    // TokenUpdate (see `re_authenticate_starts_a_new_enrollment`).
    store
        .authenticate(&authenticate("A"), None, t(3))
        .await
        .unwrap();
    assert!(store.pushable().await.unwrap().is_empty());
    let d = store.device("A").await.unwrap().unwrap();
    assert_eq!(d.enrolled_at, Some(t(1)));
    assert_eq!(d.token.as_deref(), Some("02".repeat(32).as_str()));
}

#[allow(missing_docs)]
pub async fn user_channel_keeps_device_token(store: Arc<dyn Store>) {
    enroll(&*store, "A", t(0)).await;
    let mut user = token_update("A", 9);
    user.push_magic = "user-magic".into();
    user.user = Some(UserChannel {
        user_id: "U1".into(),
        short_name: Some("taro".into()),
        long_name: Some("Taro Yamada".into()),
    });
    let e = store.token_update(&user, t(4)).await.unwrap();
    assert_eq!(e, Enrollment::UserChannel);
    let d = store.device("A").await.unwrap().unwrap();
    assert_eq!(d.token.as_deref(), Some("ab".repeat(32).as_str()));
    assert_eq!(d.push_magic.as_deref(), Some("magic-A"));
    assert_eq!(d.token_updated_at, Some(t(0)));
    assert_eq!(d.last_seen_at, Some(t(4)));
    let users = store.users("A").await.unwrap();
    assert_eq!(users.len(), 1);
    assert_eq!(users[0].user_id, "U1");
    assert_eq!(users[0].token, "09".repeat(32));
    assert_eq!(users[0].push_magic, "user-magic");
    assert_eq!(users[0].long_name.as_deref(), Some("Taro Yamada"));
    assert_eq!(users[0].updated_at, t(4));
}

#[allow(missing_docs)]
pub async fn check_out_unregisters_until_token_update(store: Arc<dyn Store>) {
    enroll(&*store, "A", t(0)).await;
    store.check_out("A", t(10)).await.unwrap();
    let d = store.device("A").await.unwrap().unwrap();
    assert_eq!(d.checked_out_at, Some(t(10)));
    assert!(d.is_checked_out());
    assert!(store.pushable().await.unwrap().is_empty());
    let e = store
        .token_update(&token_update("A", 3), t(20))
        .await
        .unwrap();
    assert_eq!(e, Enrollment::Enrolled, "re-enrollment after CheckOut");
    assert_eq!(store.pushable().await.unwrap().len(), 1);
}

#[allow(missing_docs)]
pub async fn bootstrap_token_roundtrip(store: Arc<dyn Store>) {
    enroll(&*store, "A", t(0)).await;
    assert_eq!(store.bootstrap_token("A").await.unwrap(), None);
    let tok = Secret::new(vec![1, 2, 3]);
    store
        .set_bootstrap_token("A", Some(&tok), t(1))
        .await
        .unwrap();
    assert_eq!(store.bootstrap_token("A").await.unwrap(), Some(tok));
    store.set_bootstrap_token("A", None, t(2)).await.unwrap();
    assert_eq!(store.bootstrap_token("A").await.unwrap(), None);
    assert_eq!(store.bootstrap_token("nobody").await.unwrap(), None);
    let err = store
        .set_bootstrap_token("nobody", Some(&Secret::new(vec![1])), t(1))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::UnknownDevice { .. }), "{err:?}");
}

#[allow(missing_docs)]
pub async fn unknown_device_writes_fail(store: Arc<dyn Store>) {
    let unknown =
        |e: StoreError| matches!(e, StoreError::UnknownDevice { ref udid } if udid == "X");
    assert!(unknown(store.check_out("X", t(0)).await.unwrap_err()));
    assert!(unknown(store.touch("X", t(0)).await.unwrap_err()));
    let idle = report("X", Status::Idle, None, Dictionary::new());
    assert!(unknown(store.record_report(&idle, t(0)).await.unwrap_err()));
    assert!(unknown(
        store
            .record_push_outcome("X", &PushOutcome::Accepted, t(0))
            .await
            .unwrap_err()
    ));
    store
        .record_push_attempts(&["X".to_string()], t(0))
        .await
        .expect("unknown devices are skipped silently");
    assert_eq!(store.device("X").await.unwrap(), None);
    assert!(store.queued("X").await.unwrap().is_empty());
    assert!(store
        .next_command("X", false, t(1_000))
        .await
        .unwrap()
        .is_none());
    assert!(!store.has_queued("X", DEVICE_INFORMATION).await.unwrap());
    assert_eq!(store.count().await.unwrap(), 0);
}

#[allow(missing_docs)]
pub async fn last_seen_only_moves_forward(store: Arc<dyn Store>) {
    enroll(&*store, "A", t(10)).await;
    store.touch("A", t(20)).await.unwrap();
    store.touch("A", t(15)).await.unwrap();
    let d = store.device("A").await.unwrap().unwrap();
    assert_eq!(d.last_seen_at, Some(t(20)));
    let idle = report("A", Status::Idle, None, Dictionary::new());
    store.record_report(&idle, t(12)).await.unwrap();
    store.record_report(&idle, t(11)).await.unwrap();
    let d = store.device("A").await.unwrap().unwrap();
    assert_eq!(
        d.last_seen_at,
        Some(t(20)),
        "a late report does not move it back"
    );
    assert_eq!(d.last_report_at, Some(t(12)));
}

#[allow(missing_docs)]
pub async fn enqueue_reports_unknown_and_duplicates(store: Arc<dyn Store>) {
    enroll(&*store, "A", t(0)).await;
    enroll(&*store, "B", t(0)).await;
    let cmd = Command::device_information(&["DeviceName"]);
    let udids: Vec<String> = ["A", "nobody", "B", "A"].map(String::from).to_vec();
    let out = store
        .enqueue(&cmd, &udids, EnqueueMode::Always, t(1))
        .await
        .unwrap();
    assert_eq!(out.command_uuid, cmd.uuid);
    assert_eq!(out.queued, ["A", "B"]);
    assert_eq!(out.unknown, ["nobody"]);
    assert!(out.already_queued.is_empty());
    assert_eq!(store.queued("A").await.unwrap().len(), 1);
    let err = store
        .enqueue(&cmd, &udids, EnqueueMode::Always, t(2))
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::DuplicateCommand { .. }),
        "{err:?}"
    );
    assert_eq!(
        store.queued("A").await.unwrap().len(),
        1,
        "nothing queued twice"
    );
}

#[allow(missing_docs)]
pub async fn enqueue_skip_if_queued(store: Arc<dyn Store>) {
    enroll(&*store, "A", t(0)).await;
    enroll(&*store, "B", t(0)).await;
    let first = Command::device_information(&["DeviceName"]);
    store
        .enqueue(&first, &["A".to_string()], EnqueueMode::Always, t(1))
        .await
        .unwrap();
    assert!(store.has_queued("A", DEVICE_INFORMATION).await.unwrap());
    assert!(!store.has_queued("A", "RestartDevice").await.unwrap());
    assert!(!store.has_queued("B", DEVICE_INFORMATION).await.unwrap());
    let second = Command::device_information(&["DeviceName"]);
    let all = vec!["A".to_string(), "B".to_string()];
    let out = store
        .enqueue(&second, &all, EnqueueMode::SkipIfQueued, t(2))
        .await
        .unwrap();
    assert_eq!(out.queued, ["B"]);
    assert_eq!(out.already_queued, ["A"]);
    let other = Command::new("RestartDevice", Dictionary::new());
    let out = store
        .enqueue(&other, &all, EnqueueMode::SkipIfQueued, t(3))
        .await
        .unwrap();
    assert_eq!(
        out.queued,
        ["A", "B"],
        "another RequestType is not a duplicate"
    );
}

#[allow(missing_docs)]
pub async fn queue_order_and_results(store: Arc<dyn Store>) {
    enroll(&*store, "A", t(0)).await;
    let a = Command::new("ProfileList", Dictionary::new());
    let b = Command::new("CertificateList", Dictionary::new());
    let one = ["A".to_string()];
    store
        .enqueue(&a, &one, EnqueueMode::Always, t(1))
        .await
        .unwrap();
    store
        .enqueue(&b, &one, EnqueueMode::Always, t(1))
        .await
        .unwrap();
    let next = store
        .next_command("A", false, t(1_000))
        .await
        .unwrap()
        .expect("queued");
    assert_eq!(next.uuid, a.uuid, "oldest first, enqueue order breaks ties");
    assert_eq!(next.request_type, "ProfileList");
    assert_eq!(next.body, a.to_xml());
    assert_eq!(next.queued_at, t(1));

    let mut extra = Dictionary::new();
    extra.insert("ProfileList".into(), Value::Array(vec![]));
    let ack = report("A", Status::Acknowledged, Some(&a.uuid), extra);
    let out = store.record_report(&ack, t(2)).await.unwrap();
    assert!(out.known_command && out.dequeued);
    assert_eq!(out.request_type.as_deref(), Some("ProfileList"));
    let next = store
        .next_command("A", true, t(1_000))
        .await
        .unwrap()
        .expect("b queued");
    assert_eq!(next.uuid, b.uuid);

    let mut chain = Dictionary::new();
    let mut item = Dictionary::new();
    item.insert("ErrorCode".into(), Value::Integer(12021.into()));
    item.insert(
        "ErrorDomain".into(),
        Value::String("MCMDMErrorDomain".into()),
    );
    chain.insert(
        "ErrorChain".into(),
        Value::Array(vec![Value::Dictionary(item)]),
    );
    let err = report("A", Status::Error, Some(&b.uuid), chain);
    let out = store.record_report(&err, t(3)).await.unwrap();
    assert!(out.dequeued, "Error ends the command");
    assert!(store
        .next_command("A", false, t(1_000))
        .await
        .unwrap()
        .is_none());

    let results = store.results("A").await.unwrap();
    assert_eq!(results.len(), 2);
    assert_eq!(results[0].status, Status::Acknowledged);
    assert_eq!(results[0].command_uuid, a.uuid);
    assert_eq!(results[0].at, t(2));
    let raw = plist::Value::from_reader_xml(&results[0].raw[..]).expect("raw is an XML plist");
    let raw = raw.as_dictionary().expect("dict");
    assert!(raw.contains_key("ProfileList"), "raw result kept whole");
    assert_eq!(results[1].status, Status::Error);
    assert_eq!(results[1].error_chain.len(), 1);
    assert_eq!(results[1].error_chain[0].code, Some(12021));
    assert_eq!(
        results[1].error_chain[0].domain.as_deref(),
        Some("MCMDMErrorDomain")
    );

    // CommandFormatError also ends a command.
    let c = Command::new("Bogus", Dictionary::new());
    store
        .enqueue(&c, &one, EnqueueMode::Always, t(4))
        .await
        .unwrap();
    let cfe = report(
        "A",
        Status::CommandFormatError,
        Some(&c.uuid),
        Dictionary::new(),
    );
    assert!(store.record_report(&cfe, t(5)).await.unwrap().dequeued);
    assert!(store.queued("A").await.unwrap().is_empty());
}

/// A store that answers the next command with the report (`ReportOutcome::next_command`)
/// answers what `next_command` answers right after it, NotNow skipping included.
#[allow(missing_docs)]
pub async fn report_outcome_next_command_matches_next_command(store: Arc<dyn Store>) {
    enroll(&*store, "A", t(0)).await;
    let a = Command::new("ProfileList", Dictionary::new());
    let b = Command::new("CertificateList", Dictionary::new());
    let one = ["A".to_string()];
    for c in [&a, &b] {
        store
            .enqueue(c, &one, EnqueueMode::Always, t(1))
            .await
            .unwrap();
    }
    let steps = [
        (report("A", Status::Idle, None, Dictionary::new()), false),
        (
            report("A", Status::NotNow, Some(&a.uuid), Dictionary::new()),
            true,
        ),
        (
            report("A", Status::Acknowledged, Some(&b.uuid), Dictionary::new()),
            true,
        ),
        (report("A", Status::Idle, None, Dictionary::new()), false),
        (
            report("A", Status::Acknowledged, Some(&a.uuid), Dictionary::new()),
            true,
        ),
    ];
    let mut answered = Vec::new();
    for (i, (r, skip_not_now)) in steps.iter().enumerate() {
        let mut out = store.record_report(r, t(2 + i as i64)).await.unwrap();
        let expected = store
            .next_command("A", *skip_not_now, t(1_000))
            .await
            .unwrap();
        if let Some(next) = out.next_command.take() {
            assert_eq!(next, expected, "step {i}");
        }
        answered.push(expected.map(|c| c.uuid));
    }
    assert_eq!(
        answered,
        vec![
            Some(a.uuid.clone()),
            Some(b.uuid.clone()),
            None,
            Some(a.uuid.clone()),
            None
        ]
    );
}

#[allow(missing_docs)]
pub async fn not_now_stays_queued_and_is_skipped_in_session(store: Arc<dyn Store>) {
    enroll(&*store, "A", t(0)).await;
    let a = Command::new("InstallProfile", Dictionary::new());
    let b = Command::new("ProfileList", Dictionary::new());
    let one = ["A".to_string()];
    store
        .enqueue(&a, &one, EnqueueMode::Always, t(1))
        .await
        .unwrap();
    store
        .enqueue(&b, &one, EnqueueMode::Always, t(1))
        .await
        .unwrap();
    let nn = report("A", Status::NotNow, Some(&a.uuid), Dictionary::new());
    let out = store.record_report(&nn, t(2)).await.unwrap();
    assert!(out.known_command && !out.dequeued);
    let queued = store.queued("A").await.unwrap();
    assert_eq!(queued.len(), 2, "NotNow keeps the command");
    assert_eq!(queued[0].not_now_at, Some(t(2)));
    let in_session = store
        .next_command("A", true, t(1_000))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        in_session.uuid, b.uuid,
        "NotNow command skipped in the same session"
    );
    let next_session = store
        .next_command("A", false, t(1_000))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(next_session.uuid, a.uuid, "offered again after Idle");
    let ack_b = report("A", Status::Acknowledged, Some(&b.uuid), Dictionary::new());
    store.record_report(&ack_b, t(3)).await.unwrap();
    assert!(store
        .next_command("A", true, t(1_000))
        .await
        .unwrap()
        .is_none());
    assert!(store.has_queued("A", "InstallProfile").await.unwrap());
    let ack_a = report("A", Status::Acknowledged, Some(&a.uuid), Dictionary::new());
    store.record_report(&ack_a, t(4)).await.unwrap();
    assert!(store.queued("A").await.unwrap().is_empty());
    let statuses: Vec<Status> = store
        .results("A")
        .await
        .unwrap()
        .iter()
        .map(|r| r.status)
        .collect();
    assert_eq!(
        statuses,
        [Status::NotNow, Status::Acknowledged, Status::Acknowledged]
    );
}

#[allow(missing_docs)]
pub async fn device_information_updates_device(store: Arc<dyn Store>) {
    enroll(&*store, "A", t(0)).await;
    let cmd = Command::device_information(&["DeviceName", "OSVersion"]);
    store
        .enqueue(&cmd, &["A".to_string()], EnqueueMode::Always, t(1))
        .await
        .unwrap();
    // An Error carrying QueryResponses does not count as collected.
    let err = report(
        "A",
        Status::Error,
        Some(&cmd.uuid),
        query_responses("x", "0"),
    );
    assert!(!store.record_report(&err, t(2)).await.unwrap().info_updated);
    assert_eq!(
        store.device("A").await.unwrap().unwrap().info_collected_at,
        None
    );

    let cmd = Command::device_information(&["DeviceName", "OSVersion"]);
    store
        .enqueue(&cmd, &["A".to_string()], EnqueueMode::Always, t(3))
        .await
        .unwrap();
    let ack = report(
        "A",
        Status::Acknowledged,
        Some(&cmd.uuid),
        query_responses("Taro's iPhone", "17.6"),
    );
    let out = store.record_report(&ack, t(4)).await.unwrap();
    assert!(out.info_updated && out.dequeued);
    assert_eq!(out.request_type.as_deref(), Some(DEVICE_INFORMATION));
    let d = store.device("A").await.unwrap().unwrap();
    assert_eq!(d.info.device_name.as_deref(), Some("Taro's iPhone"));
    assert_eq!(d.info.os_version.as_deref(), Some("17.6"));
    assert_eq!(d.info.serial_number.as_deref(), Some("SN-A"), "kept");
    assert_eq!(d.info_collected_at, Some(t(4)));
    assert!(!store.has_queued("A", DEVICE_INFORMATION).await.unwrap());
}

#[allow(missing_docs)]
pub async fn result_for_unknown_command_is_recorded(store: Arc<dyn Store>) {
    enroll(&*store, "A", t(0)).await;
    let ack = report(
        "A",
        Status::Acknowledged,
        Some("NOT-QUEUED"),
        Dictionary::new(),
    );
    let out = store.record_report(&ack, t(1)).await.unwrap();
    assert!(!out.known_command && !out.dequeued);
    assert_eq!(out.request_type, None);
    let results = store.results("A").await.unwrap();
    assert_eq!(results.len(), 1);
    assert_eq!(results[0].command_uuid, "NOT-QUEUED");
    assert_eq!(results[0].request_type, None);
    // Idle records no result.
    let idle = report("A", Status::Idle, None, Dictionary::new());
    store.record_report(&idle, t(2)).await.unwrap();
    assert_eq!(store.results("A").await.unwrap().len(), 1);
}

/// The same final answer twice (re-sent by the device, or one report reaching two nodes)
/// is one result; another status, or a NotNow, is a result of its own.
pub async fn a_repeated_final_report_is_recorded_once(store: Arc<dyn Store>) {
    enroll(&*store, "A", t(0)).await;
    let a = Command::new("ProfileList", Dictionary::new());
    let b = Command::new("CertificateList", Dictionary::new());
    let one = ["A".to_string()];
    for c in [&a, &b] {
        store
            .enqueue(c, &one, EnqueueMode::Always, t(1))
            .await
            .unwrap();
    }
    let ack = report("A", Status::Acknowledged, Some(&a.uuid), Dictionary::new());
    let first = store.record_report(&ack, t(2)).await.unwrap();
    assert!(first.known_command && first.dequeued);
    let again = store.record_report(&ack, t(3)).await.unwrap();
    assert!(!again.known_command && !again.dequeued, "{again:?}");
    assert_eq!(again.request_type.as_deref(), Some("ProfileList"));
    if let Some(next) = &again.next_command {
        assert_eq!(
            next.as_ref().map(|c| c.uuid.as_str()),
            Some(b.uuid.as_str())
        );
    }
    let results = store.results("A").await.unwrap();
    assert_eq!(results.len(), 1, "{results:?}");
    assert_eq!(results[0].at, t(2), "the first answer is the one kept");
    assert_eq!(
        store
            .next_command("A", false, t(4))
            .await
            .unwrap()
            .map(|c| c.uuid),
        Some(b.uuid.clone()),
        "never handed out again"
    );
    // A command the store never queued: its first answer is recorded, the repeat is not.
    let unknown = report("A", Status::Error, Some("NOT-QUEUED"), Dictionary::new());
    store.record_report(&unknown, t(5)).await.unwrap();
    store.record_report(&unknown, t(6)).await.unwrap();
    assert_eq!(store.results("A").await.unwrap().len(), 2);
    // Another status for the same command is another answer.
    let err = report("A", Status::Error, Some(&a.uuid), Dictionary::new());
    store.record_report(&err, t(7)).await.unwrap();
    assert_eq!(store.results("A").await.unwrap().len(), 3);
    // NotNow keeps the command queued: each one is recorded, as before.
    let nn = report("A", Status::NotNow, Some(&b.uuid), Dictionary::new());
    store.record_report(&nn, t(8)).await.unwrap();
    let out = store.record_report(&nn, t(9)).await.unwrap();
    assert!(out.known_command && !out.dequeued);
    assert_eq!(store.results("A").await.unwrap().len(), 5);
    assert_eq!(store.queued("A").await.unwrap().len(), 1);
}

#[allow(missing_docs)]
pub async fn push_bookkeeping_and_latency(store: Arc<dyn Store>) {
    enroll(&*store, "A", t(0)).await;
    let idle = report("A", Status::Idle, None, Dictionary::new());
    // A report with no push open closes nothing.
    assert!(!store.record_report(&idle, t(1)).await.unwrap().closed_push);

    store
        .record_push_attempts(&["A".to_string()], t(10))
        .await
        .unwrap();
    let d = store.device("A").await.unwrap().unwrap();
    assert_eq!(d.last_push_at, Some(t(10)));
    assert_eq!(d.push_outcome, None, "in flight");
    assert_eq!(d.first_report_after_push_at, None);
    assert_eq!(d.last_report_at, Some(t(1)));

    store
        .record_push_outcome("A", &PushOutcome::Accepted, t(10))
        .await
        .unwrap();
    assert!(store.record_report(&idle, t(13)).await.unwrap().closed_push);
    assert!(!store.record_report(&idle, t(20)).await.unwrap().closed_push);
    let d = store.device("A").await.unwrap().unwrap();
    assert_eq!(d.push_outcome, Some(PushOutcome::Accepted));
    assert_eq!(d.push_outcome_at, Some(t(10)));
    assert_eq!(d.first_report_after_push_at, Some(t(13)));
    assert_eq!(d.last_report_at, Some(t(20)));
    assert_eq!(d.push_latency(), Some(Duration::from_secs(3)));

    // A new attempt reopens: the old answer no longer counts.
    store
        .record_push_attempts(&["A".to_string()], t(30))
        .await
        .unwrap();
    let d = store.device("A").await.unwrap().unwrap();
    assert_eq!(d.first_report_after_push_at, None);
    assert_eq!(d.push_latency(), None);
    let failed = PushOutcome::Failed {
        reason: magicpush_engine::EngineCause::DeadlineExceeded.into(),
    };
    store
        .record_push_outcome("A", &failed, t(31))
        .await
        .unwrap();
    let d = store.device("A").await.unwrap().unwrap();
    assert_eq!(d.push_outcome, Some(failed));
    assert!(d.is_pushable(), "a transient failure does not stop pushing");
}

#[allow(missing_docs)]
pub async fn push_outcomes_batch(store: Arc<dyn Store>) {
    for udid in ["A", "B", "C"] {
        enroll(&*store, udid, t(0)).await;
    }
    let ab = vec!["A".to_string(), "B".to_string()];
    store.record_push_attempts(&ab, t(10)).await.unwrap();
    // A answers before its push outcome is recorded: it must stay answered.
    let idle = report("A", Status::Idle, None, Dictionary::new());
    assert!(store.record_report(&idle, t(12)).await.unwrap().closed_push);
    let gone = PushOutcome::Unregistered {
        reason: "Unregistered".into(),
        timestamp_ms: Some(1_780_000_005_000),
    };
    let outcomes = vec![
        ("A".to_string(), PushOutcome::Accepted),
        ("B".to_string(), gone.clone()),
        ("nobody".to_string(), PushOutcome::Accepted),
        ("C".to_string(), PushOutcome::Accepted),
    ];
    store.record_push_outcomes(&outcomes, t(13)).await.unwrap();
    store.record_push_outcomes(&[], t(14)).await.unwrap();

    let a = store.device("A").await.unwrap().unwrap();
    assert_eq!(a.push_outcome, Some(PushOutcome::Accepted));
    assert_eq!(a.push_outcome_at, Some(t(13)));
    assert_eq!(a.last_push_at, Some(t(10)));
    assert_eq!(a.first_report_after_push_at, Some(t(12)));
    assert_eq!(a.push_latency(), Some(Duration::from_secs(2)));
    assert!(a.is_pushable());

    let b = store.device("B").await.unwrap().unwrap();
    assert_eq!(b.push_outcome, Some(gone));
    assert_eq!(b.first_report_after_push_at, None);
    assert!(!b.is_pushable());

    let c = store.device("C").await.unwrap().unwrap();
    assert_eq!(
        c.last_push_at,
        Some(t(13)),
        "an outcome with no attempt sets it"
    );
    assert_eq!(c.push_outcome, Some(PushOutcome::Accepted));

    assert!(
        store.device("nobody").await.unwrap().is_none(),
        "not created"
    );
    assert_eq!(store.count().await.unwrap(), 3);

    // The same as one write per outcome.
    store
        .record_push_attempts(&["A".to_string()], t(20))
        .await
        .unwrap();
    let failed = PushOutcome::Failed {
        reason: magicpush_engine::EngineCause::DeadlineExceeded.into(),
    };
    store
        .record_push_outcomes(&[("A".to_string(), failed.clone())], t(21))
        .await
        .unwrap();
    let a = store.device("A").await.unwrap().unwrap();
    assert_eq!(a.push_outcome, Some(failed));
    assert_eq!(a.first_report_after_push_at, None);
    assert_eq!(a.last_push_at, Some(t(20)));
}

#[allow(missing_docs)]
pub async fn refresh_chunks_queue_and_mark_pushes(store: Arc<dyn Store>) {
    for udid in ["A", "B", "C"] {
        enroll(&*store, udid, t(0)).await;
    }
    let earlier = Command::device_information(&["DeviceName"]);
    store
        .enqueue(&earlier, &["B".to_string()], EnqueueMode::Always, t(1))
        .await
        .unwrap();
    store
        .record_push_attempts(&["A".to_string()], t(2))
        .await
        .unwrap();
    let idle = report("A", Status::Idle, None, Dictionary::new());
    assert!(store.record_report(&idle, t(3)).await.unwrap().closed_push);
    store
        .record_push_outcome("A", &PushOutcome::Accepted, t(3))
        .await
        .unwrap();

    let cmd = Command::device_information(&["DeviceName", "OSVersion"]);
    let first: Vec<String> = ["A", "B", "X", "A"].map(String::from).to_vec();
    let out = store
        .queue_and_mark_pushes(&cmd, &first, t(10))
        .await
        .unwrap();
    assert_eq!(out.command_uuid, cmd.uuid);
    assert_eq!(out.queued, vec!["A".to_string()]);
    assert_eq!(out.already_queued, vec!["B".to_string()]);
    assert_eq!(out.unknown, vec!["X".to_string()]);
    for udid in ["A", "B"] {
        let d = store.device(udid).await.unwrap().unwrap();
        assert_eq!(d.last_push_at, Some(t(10)), "{udid}: attempt marked");
        assert_eq!(d.push_outcome, None, "{udid}: in flight");
        assert_eq!(d.first_report_after_push_at, None, "{udid}: reopened");
    }
    assert!(store.device("X").await.unwrap().is_none());
    let b_queue: Vec<String> = store
        .queued("B")
        .await
        .unwrap()
        .into_iter()
        .map(|q| q.uuid)
        .collect();
    assert_eq!(b_queue, vec![earlier.uuid.clone()], "not queued twice");

    // A later chunk of the same refresh reuses the stored command.
    let out = store
        .queue_and_mark_pushes(&cmd, &["C".to_string()], t(10))
        .await
        .unwrap();
    assert_eq!(out.queued, vec!["C".to_string()]);
    let next = store
        .next_command("C", false, t(1_000))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((next.uuid, next.body), (cmd.uuid.clone(), cmd.to_xml()));
    assert_eq!(
        store.device("C").await.unwrap().unwrap().last_push_at,
        Some(t(10))
    );
    assert!(matches!(
        store
            .enqueue(&cmd, &["A".to_string()], EnqueueMode::Always, t(11))
            .await,
        Err(StoreError::DuplicateCommand { .. })
    ));

    // A report after the chunk's write answers the push.
    let ack = report(
        "A",
        Status::Acknowledged,
        Some(&cmd.uuid),
        Dictionary::new(),
    );
    let out = store.record_report(&ack, t(12)).await.unwrap();
    assert!(out.closed_push && out.dequeued);
}

#[allow(missing_docs)]
pub async fn unregistered_push_stops_pushing_until_token_update(store: Arc<dyn Store>) {
    enroll(&*store, "A", t(0)).await;
    enroll(&*store, "B", t(0)).await;
    let both = vec!["A".to_string(), "B".to_string()];
    store.record_push_attempts(&both, t(10)).await.unwrap();
    let gone = PushOutcome::Unregistered {
        reason: "Unregistered".into(),
        timestamp_ms: Some(1_780_000_005_000),
    };
    store.record_push_outcome("A", &gone, t(11)).await.unwrap();
    let bad = PushOutcome::Rejected {
        reason: magicpush_engine::Reason::BadDeviceToken.into(),
    };
    store.record_push_outcome("B", &bad, t(11)).await.unwrap();
    let a = store.device("A").await.unwrap().unwrap();
    assert_eq!(a.push_outcome, Some(gone));
    assert!(store.pushable().await.unwrap().is_empty());
    store
        .token_update(&token_update("A", 7), t(20))
        .await
        .unwrap();
    let pushable = store.pushable().await.unwrap();
    assert_eq!(pushable.len(), 1);
    assert_eq!(pushable[0].udid, "A");
}

#[allow(missing_docs)]
pub async fn listing_and_counting(store: Arc<dyn Store>) {
    for udid in ["C", "A", "B"] {
        enroll(&*store, udid, t(0)).await;
    }
    store
        .authenticate(&authenticate("D"), None, t(0))
        .await
        .unwrap();
    let udids: Vec<String> = store
        .devices()
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.udid)
        .collect();
    assert_eq!(udids, ["A", "B", "C", "D"]);
    assert_eq!(store.count().await.unwrap(), 4);
    let pushable: Vec<String> = store
        .pushable()
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.udid)
        .collect();
    assert_eq!(pushable, ["A", "B", "C"], "no token, not pushable");
}

#[allow(missing_docs)]
pub async fn listing_in_pages(store: Arc<dyn Store>) {
    let first = store.devices_page(None, 10).await.unwrap();
    assert!(first.is_empty(), "an empty store has no first page");
    let udids = ["E", "A", "D", "B", "C", "AB"];
    for udid in udids {
        enroll(&*store, udid, t(0)).await;
    }
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    let mut pages = 0;
    loop {
        let page = store.devices_page(after.as_deref(), 2).await.unwrap();
        assert!(page.len() <= 2, "a page holds at most `limit` devices");
        let Some(last) = page.last() else { break };
        after = Some(last.udid.clone());
        seen.extend(page.into_iter().map(|d| d.udid));
        pages += 1;
        assert!(pages <= udids.len(), "the walk ends");
    }
    assert_eq!(
        seen,
        ["A", "AB", "B", "C", "D", "E"],
        "every device once, in UDID order"
    );
    assert_eq!(pages, 3);
    let whole: Vec<Device> = store.devices().await.unwrap();
    let paged = store.devices_page(None, usize::MAX).await.unwrap();
    assert_eq!(
        paged, whole,
        "pages hold the same devices as the whole listing"
    );
    let udids_after = |after: &'static str, limit: usize| {
        let store = Arc::clone(&store);
        async move {
            let page = store.devices_page(Some(after), limit).await.unwrap();
            page.into_iter().map(|d| d.udid).collect::<Vec<String>>()
        }
    };
    assert_eq!(
        udids_after("B", 10).await,
        ["C", "D", "E"],
        "strictly after, even from a UDID that is stored"
    );
    assert_eq!(
        udids_after("BB", 1).await,
        ["C"],
        "from a UDID that is not stored"
    );
    assert!(store.devices_page(Some("E"), 10).await.unwrap().is_empty());
    assert!(store.devices_page(None, 0).await.unwrap().is_empty());
}

#[allow(missing_docs)]
pub async fn timestamps_keep_milliseconds(store: Arc<dyn Store>) {
    let at = t(0) + Duration::from_nanos(123_456_789);
    store
        .authenticate(&authenticate("A"), None, at)
        .await
        .unwrap();
    let d = store.device("A").await.unwrap().unwrap();
    assert_eq!(d.authenticated_at, Some(t(0) + Duration::from_millis(123)));
}

#[allow(missing_docs)]
pub async fn concurrent_writes_all_land(store: Arc<dyn Store>) {
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..200u32 {
        let store = Arc::clone(&store);
        tasks.spawn(async move {
            let udid = format!("D{i:03}");
            store.authenticate(&authenticate(&udid), None, t(0)).await?;
            store.token_update(&token_update(&udid, 1), t(1)).await?;
            store.touch(&udid, t(2)).await
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined.expect("task").expect("write");
    }
    assert_eq!(store.count().await.unwrap(), 200);
    let devices = store.devices().await.unwrap();
    assert!(devices
        .iter()
        .all(|d| d.is_pushable() && d.last_seen_at == Some(t(2))));
}

#[allow(missing_docs)]
pub async fn secrets_are_redacted(store: Arc<dyn Store>) {
    enroll(&*store, "A", t(0)).await;
    store
        .set_bootstrap_token("A", Some(&Secret::new(b"bootstrap-secret".to_vec())), t(1))
        .await
        .unwrap();
    let d = store.device("A").await.unwrap().unwrap();
    let debug = format!("{d:?}");
    assert!(!debug.contains("unlock-secret"), "{debug}");
    assert!(!debug.contains(&format!("{:?}", b"unlock-secret-bytes")));
    assert!(!debug.contains(&format!("{:?}", b"bootstrap-secret")));
    let json = serde_json::to_string(&d).unwrap();
    assert!(!json.contains("unlock") && !json.contains("bootstrap") && !json.contains("magic-A"));
    assert!(json.contains("\"serial_number\":\"SN-A\""), "{json}");
    assert!(json.contains("\"enrolled_at\":\"2026-"), "{json}");
}

#[allow(missing_docs)]
pub async fn old_results_are_pruned(store: Arc<dyn Store>) {
    enroll(&*store, "A", t(0)).await;
    enroll(&*store, "B", t(0)).await;
    let b = report("B", Status::Acknowledged, Some("B-ONLY"), Dictionary::new());
    store.record_report(&b, t(1)).await.unwrap();
    let extra = 5;
    for i in 0..RESULTS_KEPT_PER_DEVICE + extra {
        let uuid = format!("CMD-{i:03}");
        let r = report("A", Status::Acknowledged, Some(&uuid), Dictionary::new());
        store.record_report(&r, t(2 + i as i64)).await.unwrap();
    }
    let kept: Vec<String> = store
        .results("A")
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.command_uuid)
        .collect();
    let want: Vec<String> = (extra..RESULTS_KEPT_PER_DEVICE + extra)
        .map(|i| format!("CMD-{i:03}"))
        .collect();
    assert_eq!(kept, want, "the newest results, oldest first");
    assert_eq!(
        store.results("B").await.unwrap().len(),
        1,
        "other devices untouched"
    );
}

/// An identity with hash `[n; 32]`, bound at `at`.
pub fn identity(n: u8, at: OffsetDateTime) -> BoundIdentity {
    BoundIdentity::new(
        [n; 32],
        format!("O=devices, CN=identity {n}"),
        format!("{n:02X}01"),
        t(86_400 * 365),
        at,
    )
}

/// Authenticate with an identity binds it; without one keeps it; every read shows it.
pub async fn identity_is_bound_at_authenticate(store: Arc<dyn Store>) {
    assert_eq!(
        store.identity_hash("A").await.unwrap(),
        None,
        "unknown device"
    );
    store
        .authenticate(&authenticate("A"), None, t(0))
        .await
        .unwrap();
    assert_eq!(
        store.identity_hash("A").await.unwrap(),
        None,
        "no identity given"
    );
    let previous = store
        .authenticate(&authenticate("A"), Some(&identity(1, t(1))), t(1))
        .await
        .unwrap();
    assert_eq!(previous, None);
    assert_eq!(store.identity_hash("A").await.unwrap(), Some([1; 32]));
    // Other writes and an Authenticate without an identity keep the binding.
    store
        .token_update(&token_update("A", 1), t(2))
        .await
        .unwrap();
    store
        .authenticate(&authenticate("A"), None, t(3))
        .await
        .unwrap();
    assert_eq!(store.identity_hash("A").await.unwrap(), Some([1; 32]));
    let d = store.device("A").await.unwrap().unwrap();
    assert_eq!(d.identity, Some(identity(1, t(1))));
    assert_eq!(
        store.devices().await.unwrap()[0].identity,
        Some(identity(1, t(1)))
    );
    let json = serde_json::to_value(&d).unwrap();
    assert_eq!(json["identity"]["sha256"], hex::encode([1u8; 32]), "{json}");
    assert_eq!(json["identity"]["serial"], "0101");
    assert!(json["identity"]["not_after"].is_string(), "{json}");
}

/// A new certificate at Authenticate replaces the bound one and records it.
pub async fn identity_rebind_is_recorded(store: Arc<dyn Store>) {
    store
        .authenticate(&authenticate("A"), Some(&identity(1, t(0))), t(0))
        .await
        .unwrap();
    // The same certificate again: nothing replaced.
    let previous = store
        .authenticate(&authenticate("A"), Some(&identity(1, t(1))), t(1))
        .await
        .unwrap();
    assert_eq!(previous, Some([1; 32]));
    assert_eq!(
        store
            .device("A")
            .await
            .unwrap()
            .unwrap()
            .identity
            .unwrap()
            .replaced_sha256,
        None
    );
    let previous = store
        .authenticate(&authenticate("A"), Some(&identity(2, t(2))), t(2))
        .await
        .unwrap();
    assert_eq!(previous, Some([1; 32]));
    assert_eq!(store.identity_hash("A").await.unwrap(), Some([2; 32]));
    let bound = store.device("A").await.unwrap().unwrap().identity.unwrap();
    assert_eq!(bound.sha256, [2; 32]);
    assert_eq!(bound.replaced_sha256, Some([1; 32]));
    assert_eq!(bound.bound_at, t(2));
    // The released certificate may now enroll another device.
    store
        .authenticate(&authenticate("B"), Some(&identity(1, t(3))), t(3))
        .await
        .unwrap();
    assert_eq!(store.identity_hash("B").await.unwrap(), Some([1; 32]));
}

/// A certificate bound to one device cannot Authenticate another; that write leaves nothing.
pub async fn identity_of_another_device_is_refused_without_a_write(store: Arc<dyn Store>) {
    store
        .authenticate(&authenticate("A"), Some(&identity(1, t(0))), t(0))
        .await
        .unwrap();
    store
        .authenticate(&authenticate("B"), Some(&identity(2, t(0))), t(0))
        .await
        .unwrap();
    let cmd = Command::new("RestartDevice", Dictionary::new());
    store
        .enqueue(&cmd, &["B".to_owned()], EnqueueMode::Always, t(1))
        .await
        .unwrap();
    let before = store.devices().await.unwrap();
    let err = store
        .authenticate(&authenticate("B"), Some(&identity(1, t(5))), t(5))
        .await
        .unwrap_err();
    assert_eq!(err, StoreError::IdentityInUse { udid: "A".into() });
    // Nor when the refused Authenticate names another topic: the device stays in its tenant.
    let mut elsewhere = authenticate("B");
    elsewhere.topic = "com.apple.mgmt.External.other".into();
    let err = store
        .authenticate(&elsewhere, Some(&identity(1, t(5))), t(5))
        .await
        .unwrap_err();
    assert_eq!(err, StoreError::IdentityInUse { udid: "A".into() });
    let err = store
        .authenticate(&authenticate("C"), Some(&identity(1, t(5))), t(5))
        .await
        .unwrap_err();
    assert_eq!(err, StoreError::IdentityInUse { udid: "A".into() });
    assert_eq!(store.devices().await.unwrap(), before, "nothing written");
    assert_eq!(
        store.queued("B").await.unwrap().len(),
        1,
        "the queue is kept"
    );
    assert_eq!(store.identity_hash("B").await.unwrap(), Some([2; 32]));
    assert_eq!(store.identity_hash("C").await.unwrap(), None);
}

/// Devices count under their topic only while enrolled and not checked out.
pub async fn enrolled_topics_count_enrolled_devices(store: Arc<dyn Store>) {
    assert!(store.enrolled_topics().await.unwrap().is_empty());
    for udid in ["A", "B", "C"] {
        store
            .authenticate(&authenticate(udid), None, t(0))
            .await
            .unwrap();
    }
    store
        .token_update(&token_update("A", 1), t(1))
        .await
        .unwrap();
    let mut other = token_update("B", 2);
    other.topic = "com.apple.mgmt.External.other".into();
    store.token_update(&other, t(1)).await.unwrap();
    // C authenticated only: not enrolled.
    let topics = store.enrolled_topics().await.unwrap();
    assert_eq!(topics.len(), 2, "{topics:?}");
    assert_eq!(topics["com.apple.mgmt.External.test"], 1);
    assert_eq!(topics["com.apple.mgmt.External.other"], 1);
    store.check_out("B", t(2)).await.unwrap();
    let topics = store.enrolled_topics().await.unwrap();
    assert_eq!(topics.len(), 1, "{topics:?}");
    // A TokenUpdate after the CheckOut enrolls again.
    store.token_update(&other, t(3)).await.unwrap();
    assert_eq!(store.enrolled_topics().await.unwrap().len(), 2);
}

/// Authenticate starts a new enrollment: the old one's queue is dropped and the device is not
/// pushed until its next device-channel TokenUpdate.
pub async fn re_authenticate_starts_a_new_enrollment(store: Arc<dyn Store>) {
    store
        .authenticate(&authenticate("A"), None, t(0))
        .await
        .unwrap();
    let d = store.device("A").await.unwrap().unwrap();
    assert!(
        d.awaiting_token_update,
        "a first Authenticate waits for its TokenUpdate"
    );
    let first = store
        .token_update(&token_update("A", 1), t(1))
        .await
        .unwrap();
    assert_eq!(first, Enrollment::Enrolled);
    assert!(store.device("A").await.unwrap().unwrap().is_pushable());
    let erase = Command::new("EraseDevice", Dictionary::new());
    store
        .enqueue(&erase, &["A".to_owned()], EnqueueMode::Always, t(2))
        .await
        .unwrap();
    assert_eq!(store.queued("A").await.unwrap().len(), 1);

    // The device was wiped and enrolls again.
    store
        .authenticate(&authenticate("A"), None, t(3))
        .await
        .unwrap();
    assert!(
        store.queued("A").await.unwrap().is_empty(),
        "the old queue is gone"
    );
    assert!(store
        .next_command("A", false, t(1_000))
        .await
        .unwrap()
        .is_none());
    let d = store.device("A").await.unwrap().unwrap();
    assert!(d.awaiting_token_update);
    assert!(
        !d.is_pushable(),
        "not pushed with the old enrollment's token"
    );
    assert!(store.pushable().await.unwrap().is_empty());
    let again = store
        .token_update(&token_update("A", 2), t(4))
        .await
        .unwrap();
    assert_eq!(
        again,
        Enrollment::Enrolled,
        "the TokenUpdate completes a new enrollment"
    );
    let d = store.device("A").await.unwrap().unwrap();
    assert!(!d.awaiting_token_update && d.is_pushable());
    assert_eq!(store.pushable().await.unwrap().len(), 1);
    // A user-channel TokenUpdate does not complete the device's enrollment.
    store
        .authenticate(&authenticate("A"), None, t(5))
        .await
        .unwrap();
    let mut user = token_update("A", 3);
    user.user = Some(UserChannel {
        user_id: "U".into(),
        short_name: None,
        long_name: None,
    });
    store.token_update(&user, t(6)).await.unwrap();
    assert!(!store.device("A").await.unwrap().unwrap().is_pushable());
}

/// CheckOut ends the enrollment and drops its queue.
pub async fn check_out_drops_the_queue(store: Arc<dyn Store>) {
    store
        .authenticate(&authenticate("A"), None, t(0))
        .await
        .unwrap();
    store
        .token_update(&token_update("A", 1), t(1))
        .await
        .unwrap();
    let cmd = Command::device_information(&["DeviceName"]);
    store
        .enqueue(&cmd, &["A".to_owned()], EnqueueMode::Always, t(2))
        .await
        .unwrap();
    store.check_out("A", t(3)).await.unwrap();
    assert!(store.queued("A").await.unwrap().is_empty());
    store
        .token_update(&token_update("A", 1), t(4))
        .await
        .unwrap();
    assert!(store
        .next_command("A", false, t(1_000))
        .await
        .unwrap()
        .is_none());
}

/// A deleted device is gone with its queue, results, users and identity binding.
pub async fn delete_device_removes_everything(store: Arc<dyn Store>) {
    assert!(!store.delete_device("A").await.unwrap(), "unknown device");
    store
        .authenticate(&authenticate("A"), Some(&identity(1, t(0))), t(0))
        .await
        .unwrap();
    store
        .token_update(&token_update("A", 1), t(1))
        .await
        .unwrap();
    let cmd = Command::device_information(&["DeviceName"]);
    store
        .enqueue(
            &cmd,
            &["A".to_owned(), "B".to_owned()],
            EnqueueMode::Always,
            t(2),
        )
        .await
        .unwrap();
    let err = report(
        "A",
        Status::Error,
        Some("00000000-0000-0000-0000-00000000000F"),
        Dictionary::new(),
    );
    store.record_report(&err, t(3)).await.unwrap();
    assert!(store.delete_device("A").await.unwrap());
    assert!(store.device("A").await.unwrap().is_none());
    assert!(store.queued("A").await.unwrap().is_empty());
    assert!(store.results("A").await.unwrap().is_empty());
    assert!(store.users("A").await.unwrap().is_empty());
    assert_eq!(store.identity_hash("A").await.unwrap(), None);
    assert_eq!(store.count().await.unwrap(), 0);
    // Its certificate is free again; the device may enroll anew.
    store
        .authenticate(&authenticate("C"), Some(&identity(1, t(4))), t(4))
        .await
        .unwrap();
    assert!(!store.delete_device("A").await.unwrap());
}

/// Deleting every device (the new-topic procedure) leaves nothing: no device, queue,
/// binding or command; the certificates may enroll anew.
pub async fn delete_all_devices_empties_the_store(store: Arc<dyn Store>) {
    assert_eq!(store.delete_all_devices().await.unwrap(), 0);
    for (n, udid) in ["A", "B", "C"].into_iter().enumerate() {
        store
            .authenticate(
                &authenticate(udid),
                Some(&identity(n as u8 + 1, t(0))),
                t(0),
            )
            .await
            .unwrap();
        store
            .token_update(&token_update(udid, n as u8 + 1), t(1))
            .await
            .unwrap();
    }
    let cmd = Command::device_information(&["DeviceName"]);
    let all = ["A".to_owned(), "B".to_owned(), "C".to_owned()];
    store
        .enqueue(&cmd, &all, EnqueueMode::Always, t(2))
        .await
        .unwrap();
    assert_eq!(store.delete_all_devices().await.unwrap(), 3);
    assert_eq!(store.count().await.unwrap(), 0);
    assert!(store.enrolled_topics().await.unwrap().is_empty());
    for udid in &all {
        assert!(store.queued(udid).await.unwrap().is_empty());
        assert_eq!(store.identity_hash(udid).await.unwrap(), None);
    }
    assert_eq!(
        store.cancel_command(&cmd.uuid).await.unwrap(),
        None,
        "commands are gone too"
    );
    store
        .authenticate(&authenticate("D"), Some(&identity(1, t(3))), t(3))
        .await
        .unwrap();
    assert_eq!(store.count().await.unwrap(), 1);
}

/// An attempt taken back (never sent) leaves no trace; one that got an outcome, a report, or
/// a later attempt is left alone.
pub async fn withdrawn_push_attempts_read_never_pushed(store: Arc<dyn Store>) {
    for udid in ["A", "B", "C", "D"] {
        enroll(&*store, udid, t(1)).await;
    }
    let all: Vec<String> = ["A", "B", "C", "D"].iter().map(|s| s.to_string()).collect();
    store.record_push_attempts(&all, t(10)).await.unwrap();
    store
        .record_push_outcome("B", &PushOutcome::Accepted, t(11))
        .await
        .unwrap();
    store.record_push_attempts(&all[3..], t(12)).await.unwrap();
    let n = store.withdraw_push_attempts(&all, t(10)).await.unwrap();
    assert_eq!(n, 2, "A and C");
    for (udid, pushed) in [("A", false), ("B", true), ("C", false), ("D", true)] {
        let d = store.device(udid).await.unwrap().unwrap();
        assert_eq!(d.last_push_at.is_some(), pushed, "{udid}");
    }
}

/// A cancelled command leaves every queue; an unknown UUID is told apart.
pub async fn cancel_command_takes_it_off_every_queue(store: Arc<dyn Store>) {
    assert_eq!(store.cancel_command("NOPE").await.unwrap(), None);
    for udid in ["A", "B"] {
        store
            .authenticate(&authenticate(udid), None, t(0))
            .await
            .unwrap();
    }
    let cmd = Command::new("EraseDevice", Dictionary::new());
    let keep = Command::device_information(&["DeviceName"]);
    let both = ["A".to_owned(), "B".to_owned()];
    store
        .enqueue(&cmd, &both, EnqueueMode::Always, t(1))
        .await
        .unwrap();
    store
        .enqueue(&keep, &both, EnqueueMode::Always, t(2))
        .await
        .unwrap();
    assert_eq!(store.cancel_command(&cmd.uuid).await.unwrap(), Some(2));
    for udid in ["A", "B"] {
        let queued = store.queued(udid).await.unwrap();
        assert_eq!(queued.len(), 1, "{udid}");
        assert_eq!(queued[0].uuid, keep.uuid);
    }
    assert_eq!(
        store.cancel_command(&cmd.uuid).await.unwrap(),
        Some(0),
        "already cancelled"
    );
}

/// A command past its expiry is not offered, and the device's next report drops it unsent.
pub async fn expired_commands_are_not_sent(store: Arc<dyn Store>) {
    store
        .authenticate(&authenticate("A"), None, t(0))
        .await
        .unwrap();
    store
        .token_update(&token_update("A", 1), t(1))
        .await
        .unwrap();
    let mut soon = Command::new("EraseDevice", Dictionary::new());
    soon.expires_at = Some(t(10));
    let later = Command::device_information(&["DeviceName"]);
    let a = ["A".to_owned()];
    store
        .enqueue(&soon, &a, EnqueueMode::Always, t(2))
        .await
        .unwrap();
    store
        .enqueue(&later, &a, EnqueueMode::Always, t(3))
        .await
        .unwrap();
    let before = store.next_command("A", false, t(9)).await.unwrap().unwrap();
    assert_eq!(before.uuid, soon.uuid);
    assert_eq!(before.expires_at, Some(t(10)));
    let after = store
        .next_command("A", false, t(10))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(after.uuid, later.uuid, "expired at its expiry time");
    // An Idle report at t(11) drops it and answers with the live one.
    let idle = report("A", Status::Idle, None, Dictionary::new());
    let out = store.record_report(&idle, t(11)).await.unwrap();
    if let Some(next) = out.next_command {
        assert_eq!(next.map(|c| c.uuid), Some(later.uuid.clone()));
    }
    let queued = store.queued("A").await.unwrap();
    assert_eq!(queued.len(), 1, "the expired command left the queue");
    assert_eq!(queued[0].uuid, later.uuid);
}

fn stored_cert(topic: &str, at: i64) -> magicpush_store::StoredPushCert {
    magicpush_store::StoredPushCert {
        topic: topic.to_owned(),
        chain_pem: format!("-----BEGIN CERTIFICATE-----\n{topic}\n-----END CERTIFICATE-----\n"),
        key_pem: Secret::new(format!("key of {topic}").into_bytes()),
        registered_at: t(at),
    }
}

/// Certificates are kept by topic: one per topic, replaced whole, deleted by topic, their keys
/// read back as written.
pub async fn push_certificates_by_topic(store: Arc<dyn Store>) {
    assert!(store.push_certs().await.unwrap().is_empty());
    let a = stored_cert("com.apple.mgmt.External.a", 1);
    let b = stored_cert("com.apple.mgmt.External.b", 2);
    store.put_push_cert(&b).await.unwrap();
    store.put_push_cert(&a).await.unwrap();
    assert_eq!(
        store.push_certs().await.unwrap(),
        vec![a.clone(), b.clone()]
    );
    let mut renewed = stored_cert("com.apple.mgmt.External.a", 3);
    renewed.chain_pem.push_str("renewed");
    store.put_push_cert(&renewed).await.unwrap();
    assert_eq!(
        store.push_certs().await.unwrap(),
        vec![renewed.clone(), b.clone()]
    );
    assert!(store.delete_push_cert(&b.topic).await.unwrap());
    assert!(!store.delete_push_cert(&b.topic).await.unwrap());
    assert_eq!(store.push_certs().await.unwrap(), vec![renewed]);
}

/// Requests are listed oldest first, at most `MAX_PENDING_REQUESTS` of them, never evicted.
pub async fn pushcert_requests_are_bounded_and_ordered(store: Arc<dyn Store>) {
    use magicpush_store::{StoredRequest, MAX_PENDING_REQUESTS};
    let request = |i: usize| StoredRequest {
        id: format!("req-{i:02}"),
        created_at: t(1000 - i as i64),
        facts: format!("{{\"n\": {i}}}"),
        key_pkcs8: Secret::new(vec![i as u8; 8]),
    };
    for i in 0..MAX_PENDING_REQUESTS {
        assert!(store.add_pushcert_request(&request(i)).await.unwrap());
    }
    assert!(
        !store
            .add_pushcert_request(&request(MAX_PENDING_REQUESTS))
            .await
            .unwrap(),
        "full: refused, nothing evicted"
    );
    let listed = store.pushcert_requests().await.unwrap();
    assert_eq!(listed.len(), MAX_PENDING_REQUESTS);
    assert_eq!(listed[0], request(MAX_PENDING_REQUESTS - 1), "oldest first");
    assert_eq!(listed.last().unwrap(), &request(0));
    assert!(store.remove_pushcert_request("req-03").await.unwrap());
    assert!(!store.remove_pushcert_request("req-03").await.unwrap());
    assert!(store
        .add_pushcert_request(&request(MAX_PENDING_REQUESTS))
        .await
        .unwrap());
    assert!(store
        .pushcert_requests()
        .await
        .unwrap()
        .iter()
        .all(|r| r.id != "req-03"));
}

/// Deleting one tenant's devices forgets those enrolled with its topic, with their queues and
/// identity bindings, and leaves every other tenant's devices as they were.
/// [`ListingStore::topic_devices_page`](magicpush_store::ListingStore::topic_devices_page):
/// one topic's devices in UDID order, page by page, none of another topic's (even between
/// them), none twice.
pub async fn topic_pages_hold_one_tenants_devices(store: Arc<dyn Store>) {
    let other = "com.apple.mgmt.External.other";
    let mine = authenticate("X").topic;
    let mut expected = Vec::new();
    for i in 0..11u8 {
        let udid = format!("D{i:02}");
        let mut auth = authenticate(&udid);
        if i % 3 == 1 {
            auth.topic = other.into();
        } else {
            expected.push(udid.clone());
        }
        store.authenticate(&auth, None, t(0)).await.unwrap();
    }
    assert!(store
        .topic_devices_page("com.apple.mgmt.External.none", None, 10)
        .await
        .unwrap()
        .is_empty());
    assert!(store
        .topic_devices_page(&mine, None, 0)
        .await
        .unwrap()
        .is_empty());
    let mut walked = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = store
            .topic_devices_page(&mine, after.as_deref(), 2)
            .await
            .unwrap();
        assert!(page.len() <= 2);
        assert!(page
            .iter()
            .all(|d| d.topic.as_deref() == Some(mine.as_str())));
        let Some(last) = page.last() else { break };
        after = Some(last.udid.clone());
        walked.extend(page.into_iter().map(|d| d.udid));
    }
    assert_eq!(walked, expected);
    let theirs = store.topic_devices_page(other, None, 100).await.unwrap();
    let theirs: Vec<String> = theirs.into_iter().map(|d| d.udid).collect();
    assert_eq!(theirs, ["D01", "D04", "D07", "D10"]);
    let rest = store
        .topic_devices_page(other, Some("D04"), 100)
        .await
        .unwrap();
    assert_eq!(rest.len(), 2);
}

/// [`ListingStore::devices_page_by_topic`](magicpush_store::ListingStore::devices_page_by_topic):
/// every device once, by topic and then UDID, page by page from the last page's
/// `(topic, UDID)`. (Every check-in names a topic; a device stored without one, from before
/// topics were kept, is walked first; the SQLite store's migration test covers it.)
pub async fn pages_by_topic_walk_every_tenant_in_turn(store: Arc<dyn Store>) {
    let (a, b) = ("com.apple.mgmt.External.a", "com.apple.mgmt.External.b");
    for i in 0..9u8 {
        let udid = format!("D{i}");
        let mut auth = authenticate(&udid);
        auth.topic = if i % 2 == 0 { b } else { a }.into();
        store.authenticate(&auth, None, t(0)).await.unwrap();
    }
    assert!(store
        .devices_page_by_topic(None, 0)
        .await
        .unwrap()
        .is_empty());
    let mut walked: Vec<(Option<String>, String)> = Vec::new();
    let mut after: Option<(String, String)> = None;
    loop {
        let cursor = after.as_ref().map(|(t, u)| (t.as_str(), u.as_str()));
        let page = store.devices_page_by_topic(cursor, 3).await.unwrap();
        assert!(page.len() <= 3);
        let Some(last) = page.last() else { break };
        after = Some((last.topic.clone().unwrap_or_default(), last.udid.clone()));
        walked.extend(page.into_iter().map(|d| (d.topic, d.udid)));
    }
    let want: Vec<(Option<String>, String)> = [
        (Some(a), "D1"),
        (Some(a), "D3"),
        (Some(a), "D5"),
        (Some(a), "D7"),
        (Some(b), "D0"),
        (Some(b), "D2"),
        (Some(b), "D4"),
        (Some(b), "D6"),
        (Some(b), "D8"),
    ]
    .into_iter()
    .map(|(t, u)| (t.map(str::to_owned), u.to_owned()))
    .collect();
    assert_eq!(walked, want);
    // From the middle of a tenant, and from past every device.
    let rest = store
        .devices_page_by_topic(Some((a, "D4")), 2)
        .await
        .unwrap();
    let rest: Vec<&str> = rest.iter().map(|d| d.udid.as_str()).collect();
    assert_eq!(rest, ["D5", "D7"]);
    let rest = store
        .devices_page_by_topic(Some((a, "D7")), 2)
        .await
        .unwrap();
    let rest: Vec<&str> = rest.iter().map(|d| d.udid.as_str()).collect();
    assert_eq!(rest, ["D0", "D2"]);
    assert!(store
        .devices_page_by_topic(Some((b, "D8")), 5)
        .await
        .unwrap()
        .is_empty());
}

/// A TokenUpdate naming another topic moves the device to that tenant with its queue and its
/// results (a store that keys them by tenant moves them too), and deleting the old tenant's
/// devices leaves it alone.
pub async fn a_device_moving_tenant_keeps_its_queue_and_results(store: Arc<dyn Store>) {
    enroll(&*store, "M", t(0)).await;
    enroll(&*store, "N", t(0)).await;
    let (a, b) = (
        Command::new("ProfileList", Dictionary::new()),
        Command::new("CertificateList", Dictionary::new()),
    );
    let one = ["M".to_string()];
    for cmd in [&a, &b] {
        store
            .enqueue(cmd, &one, EnqueueMode::Always, t(1))
            .await
            .unwrap();
    }
    let ack = report("M", Status::Acknowledged, Some(&a.uuid), Dictionary::new());
    store.record_report(&ack, t(2)).await.unwrap();
    let other = "com.apple.mgmt.External.other";
    let mut moved = token_update("M", 0xcd);
    moved.topic = other.into();
    store.token_update(&moved, t(3)).await.unwrap();
    let device = store.device("M").await.unwrap().expect("still stored");
    assert_eq!(device.topic.as_deref(), Some(other));
    assert!(store.has_queued("M", "CertificateList").await.unwrap());
    let next = store.next_command("M", false, t(4)).await.unwrap();
    assert_eq!(next.map(|c| c.uuid), Some(b.uuid.clone()));
    let results = store.results("M").await.unwrap();
    assert_eq!(results.len(), 1);
    assert_eq!(results[0].command_uuid, a.uuid);
    // Answered in its new tenant: dequeued, and the same answer again is recorded once.
    let ack = report("M", Status::Acknowledged, Some(&b.uuid), Dictionary::new());
    assert!(store.record_report(&ack, t(5)).await.unwrap().dequeued);
    store.record_report(&ack, t(6)).await.unwrap();
    assert_eq!(store.results("M").await.unwrap().len(), 2);
    assert!(store.queued("M").await.unwrap().is_empty());
    // An Authenticate naming the first topic again moves it back, with its results (a new
    // enrollment's queue starts empty).
    let old = authenticate("X").topic;
    store
        .authenticate(&authenticate("M"), None, t(7))
        .await
        .unwrap();
    let device = store.device("M").await.unwrap().expect("still stored");
    assert_eq!(device.topic.as_deref(), Some(old.as_str()));
    assert_eq!(store.results("M").await.unwrap().len(), 2);
    let mut away = token_update("M", 0xcd);
    away.topic = other.into();
    store.token_update(&away, t(8)).await.unwrap();
    // The old tenant's deletion takes its other device, not this one.
    assert_eq!(store.delete_topic_devices(&old).await.unwrap(), 1);
    assert!(store.device("N").await.unwrap().is_none());
    assert_eq!(store.results("M").await.unwrap().len(), 2);
    assert!(store.delete_device("M").await.unwrap());
    assert!(store.results("M").await.unwrap().is_empty());
}

pub async fn delete_topic_devices_keeps_other_tenants(store: Arc<dyn Store>) {
    let other = "com.apple.mgmt.External.other";
    assert_eq!(store.delete_topic_devices(other).await.unwrap(), 0);
    for (n, udid) in ["A", "B", "C"].into_iter().enumerate() {
        let mut auth = authenticate(udid);
        let mut tu = token_update(udid, n as u8 + 1);
        if udid != "A" {
            auth.topic = other.into();
            tu.topic = other.into();
        }
        store
            .authenticate(&auth, Some(&identity(n as u8 + 1, t(0))), t(0))
            .await
            .unwrap();
        store.token_update(&tu, t(1)).await.unwrap();
    }
    let cmd = Command::device_information(&["DeviceName"]);
    let all = ["A".to_owned(), "B".to_owned(), "C".to_owned()];
    store
        .enqueue(&cmd, &all, EnqueueMode::Always, t(2))
        .await
        .unwrap();
    assert_eq!(store.delete_topic_devices(other).await.unwrap(), 2);
    assert_eq!(store.count().await.unwrap(), 1);
    let topics = store.enrolled_topics().await.unwrap();
    assert_eq!(topics.get("com.apple.mgmt.External.test"), Some(&1));
    assert_eq!(topics.get(other), None);
    assert_eq!(
        store.queued("A").await.unwrap().len(),
        1,
        "A keeps its queue"
    );
    assert!(store.identity_hash("A").await.unwrap().is_some());
    for udid in ["B", "C"] {
        assert!(store.device(udid).await.unwrap().is_none());
        assert!(store.queued(udid).await.unwrap().is_empty());
        assert_eq!(store.identity_hash(udid).await.unwrap(), None);
    }
    // B's identity may enroll anew (its binding went with it).
    let mut again = authenticate("B");
    again.topic = other.into();
    store
        .authenticate(&again, Some(&identity(2, t(3))), t(3))
        .await
        .unwrap();
}

/// Tenants' display names are kept per topic, replaced and cleared.
pub async fn tenant_names_by_topic(store: Arc<dyn Store>) {
    assert!(store.tenant_names().await.unwrap().is_empty());
    store.set_tenant_name("t.a", Some("Acme")).await.unwrap();
    store.set_tenant_name("t.b", Some("Beta")).await.unwrap();
    store.set_tenant_name("t.a", Some("Acme KK")).await.unwrap();
    store.set_tenant_name("t.b", None).await.unwrap();
    let names = store.tenant_names().await.unwrap();
    assert_eq!(names.len(), 1);
    assert_eq!(names.get("t.a").map(String::as_str), Some("Acme KK"));
}

/// Memos are per topic; logs keep their records whole and in order, one log apart from the
/// other.
pub async fn pushcert_memos_and_logs(store: Arc<dyn Store>) {
    use magicpush_store::PushCertLog;
    assert_eq!(store.pushcert_memo("t.a").await.unwrap(), None);
    store
        .set_pushcert_memo("t.a", Some("a@example.jp"))
        .await
        .unwrap();
    store
        .set_pushcert_memo("t.b", Some("b@example.jp"))
        .await
        .unwrap();
    store
        .set_pushcert_memo("t.a", Some("a2@example.jp"))
        .await
        .unwrap();
    assert_eq!(
        store.pushcert_memo("t.a").await.unwrap().as_deref(),
        Some("a2@example.jp")
    );
    store.set_pushcert_memo("t.b", None).await.unwrap();
    assert_eq!(store.pushcert_memo("t.b").await.unwrap(), None);
    let all = store.pushcert_memos().await.unwrap();
    assert_eq!(
        all.into_iter().collect::<Vec<_>>(),
        vec![("t.a".to_owned(), "a2@example.jp".to_owned())],
        "every memo at once"
    );

    let history: Vec<String> = (0..5).map(|i| format!("{{\"h\":{i}}}")).collect();
    store
        .set_pushcert_log(PushCertLog::History, &history)
        .await
        .unwrap();
    store
        .set_pushcert_log(PushCertLog::Events, &history[..1])
        .await
        .unwrap();
    assert_eq!(
        store.pushcert_log(PushCertLog::History).await.unwrap(),
        history
    );
    store
        .set_pushcert_log(PushCertLog::History, &history[2..])
        .await
        .unwrap();
    assert_eq!(
        store.pushcert_log(PushCertLog::History).await.unwrap(),
        history[2..].to_vec()
    );
    assert_eq!(
        store.pushcert_log(PushCertLog::Events).await.unwrap(),
        history[..1].to_vec()
    );
}

/// A command stored by [`magicpush_store::PushStore::queue_and_mark_pushes`] keeps its
/// expiry, as one stored by [`magicpush_store::QueueStore::enqueue`] does.
pub async fn refresh_chunks_keep_the_command_expiry(store: Arc<dyn Store>) {
    enroll(&*store, "A", t(0)).await;
    let mut cmd = Command::device_information(&["DeviceName"]);
    cmd.expires_at = Some(t(10));
    store
        .queue_and_mark_pushes(&cmd, &["A".to_string()], t(1))
        .await
        .unwrap();
    let queued = store.queued("A").await.unwrap();
    assert_eq!(queued.len(), 1);
    assert_eq!(queued[0].expires_at, Some(t(10)));
    assert!(store
        .next_command("A", false, t(10))
        .await
        .unwrap()
        .is_none());
}

/// A node of the cluster cases, heartbeating at `at`.
pub fn node(id: &str, at: OffsetDateTime) -> magicpush_store::cluster::Node {
    magicpush_store::cluster::Node {
        id: id.into(),
        name: format!("node-{id}"),
        version: "0.0.0-test".into(),
        url: format!("http://{id}.test:8080"),
        started_at: t(0),
        last_heartbeat_at: at,
    }
}

/// Heartbeats are listed (a later one replaces the row), silent nodes pruned; a scheduled
/// job starts its period at its first claim and runs once a period.
pub async fn cluster_heartbeats_and_schedules(store: Arc<dyn Store>) {
    store.heartbeat(&node("a", t(1))).await.unwrap();
    store.heartbeat(&node("b", t(2))).await.unwrap();
    store.heartbeat(&node("a", t(3))).await.unwrap();
    let nodes = store.nodes().await.unwrap();
    assert_eq!(nodes, vec![node("a", t(3)), node("b", t(2))]);
    assert_eq!(store.prune_nodes(t(3)).await.unwrap(), 1);
    assert_eq!(store.nodes().await.unwrap(), vec![node("a", t(3))]);

    let every = Duration::from_secs(60);
    assert!(!store
        .claim_schedule("collect", "a", t(0), every)
        .await
        .unwrap());
    assert!(!store
        .claim_schedule("collect", "a", t(59), every)
        .await
        .unwrap());
    assert!(store
        .claim_schedule("collect", "a", t(60), every)
        .await
        .unwrap());
    assert!(!store
        .claim_schedule("collect", "a", t(61), every)
        .await
        .unwrap());
    assert!(store
        .claim_schedule("collect", "a", t(125), every)
        .await
        .unwrap());
    assert!(!store
        .claim_schedule("other", "a", t(125), every)
        .await
        .unwrap());
}

/// A run whose node is dead is swept: the attempts it left unanswered are taken back
/// (`never_pushed`), not those answered (an outcome, a report), not one a later push
/// replaced, and not a live node's run.
pub async fn cluster_sweep_takes_back_a_dead_nodes_run(store: Arc<dyn Store>) {
    use magicpush_store::cluster::{RefreshRunRecord, RunKind, RunState};
    let udids: Vec<String> = ["A", "B", "C", "D", "E"].map(String::from).to_vec();
    for udid in &udids {
        enroll(&*store, udid, t(1)).await;
    }
    store.heartbeat(&node("dead", t(10))).await.unwrap();
    store.heartbeat(&node("live", t(100))).await.unwrap();
    let dead = RefreshRunRecord::begin("run-dead".into(), "dead".into(), t(20));
    assert!(store.begin_refresh_run(&dead).await.unwrap());
    let taken = RefreshRunRecord::begin("run-other".into(), "live".into(), t(20));
    assert!(
        !store.begin_refresh_run(&taken).await.unwrap(),
        "two runs never mark at the same time"
    );
    let mut live = RefreshRunRecord::begin("run-live".into(), "live".into(), t(21));
    live.kind = RunKind::Command;
    assert!(store.begin_refresh_run(&live).await.unwrap());

    let command = Command::device_information(&["DeviceName"]);
    store
        .add_refresh_run_devices(&dead.id, &udids[..4])
        .await
        .unwrap();
    store
        .queue_and_mark_pushes(&command, &udids[..4], t(20))
        .await
        .unwrap();
    store
        .add_refresh_run_devices(&live.id, &udids[4..])
        .await
        .unwrap();
    store
        .queue_and_mark_pushes(&command, &udids[4..], t(21))
        .await
        .unwrap();
    // A: its push answered; B: reported; D: pushed again since; C: nothing.
    store
        .record_push_outcome("A", &PushOutcome::Accepted, t(22))
        .await
        .unwrap();
    store
        .record_report(&report("B", Status::Idle, None, Dictionary::new()), t(23))
        .await
        .unwrap();
    store
        .record_push_attempts(&udids[3..4], t(24))
        .await
        .unwrap();

    let swept = store.sweep_dead_runs(t(50), t(60)).await.unwrap();
    assert_eq!(swept.len(), 1, "{swept:?}");
    assert_eq!(swept[0].id, dead.id);
    assert_eq!(swept[0].state, RunState::Abandoned);
    assert_eq!((swept[0].devices, swept[0].withdrawn), (4, 1));
    assert_eq!(swept[0].finished_at, Some(t(60)));
    let d = |udid: &'static str| {
        let store = Arc::clone(&store);
        async move { store.device(udid).await.unwrap().unwrap() }
    };
    assert_eq!(d("A").await.push_outcome, Some(PushOutcome::Accepted));
    assert_eq!(d("B").await.last_push_at, Some(t(20)));
    assert_eq!(d("C").await.last_push_at, None, "taken back: never_pushed");
    assert_eq!(d("D").await.last_push_at, Some(t(24)));
    assert_eq!(d("E").await.last_push_at, Some(t(21)), "the live node's");
    assert!(
        store
            .sweep_dead_runs(t(50), t(61))
            .await
            .unwrap()
            .is_empty(),
        "swept once"
    );

    store
        .add_refresh_run_progress(&live.id, 1, 0)
        .await
        .unwrap();
    store.finish_refresh_run(&live.id, t(70)).await.unwrap();
    store.finish_refresh_run(&dead.id, t(71)).await.unwrap();
    let runs = store.refresh_runs(10).await.unwrap();
    let states: Vec<(&str, RunState, Option<OffsetDateTime>)> = runs
        .iter()
        .map(|r| (r.id.as_str(), r.state, r.finished_at))
        .collect();
    assert_eq!(
        states,
        vec![
            ("run-live", RunState::Finished, Some(t(70))),
            ("run-dead", RunState::Abandoned, Some(t(60))),
        ]
    );
    assert_eq!(
        (runs[0].devices, runs[0].answered, runs[0].withdrawn),
        (1, 1, 0)
    );
    assert_eq!(
        (runs[0].kind, runs[1].kind),
        (RunKind::Command, RunKind::Refresh)
    );
    assert_eq!(store.refresh_runs(1).await.unwrap().len(), 1);
}

/// Run-time settings: nothing stored reads empty; a write stores only the settings it holds
/// (an earlier one is kept), to the millisecond; a collection turned off reads back as off,
/// not as never set.
pub async fn settings_are_stored_and_merged(store: Arc<dyn Store>) {
    use magicpush_store::StoredSettings;
    assert_eq!(store.settings().await.unwrap(), StoredSettings::default());
    let first = StoredSettings {
        collect_every: Some(Some(Duration::from_secs(24 * 3600))),
        unreachable_after: Some(Duration::from_millis(300_250)),
    };
    store.put_settings(&first, t(0)).await.unwrap();
    assert_eq!(store.settings().await.unwrap(), first);
    let off = StoredSettings {
        collect_every: Some(None),
        unreachable_after: None,
    };
    store.put_settings(&off, t(1_000)).await.unwrap();
    assert_eq!(
        store.settings().await.unwrap(),
        StoredSettings {
            collect_every: Some(None),
            unreachable_after: Some(Duration::from_millis(300_250)),
        }
    );
    let back_on = StoredSettings {
        collect_every: Some(Some(Duration::from_secs(3600))),
        unreachable_after: Some(Duration::from_secs(600)),
    };
    store.put_settings(&back_on, t(2_000)).await.unwrap();
    assert_eq!(store.settings().await.unwrap(), back_on);
}

fn challenge(
    hash: [u8; 32],
    id: &str,
    expires_at: OffsetDateTime,
) -> magicpush_store::StoredChallenge {
    magicpush_store::StoredChallenge {
        hash,
        enrollment_id: id.into(),
        invitation_id: None,
        created_at: t(0),
        expires_at,
    }
}

pub async fn challenges_are_used_once(store: Arc<dyn Store>) {
    let (_, a) = magicpush_store::enrollment::new_challenge();
    let (_, b) = magicpush_store::enrollment::new_challenge();
    store
        .add_challenge(&challenge(a, "enr-a", t(3600)))
        .await
        .unwrap();
    store
        .add_challenge(&challenge(b, "enr-b", t(3600)))
        .await
        .unwrap();
    assert_eq!(
        store.consume_challenge(&a, t(10)).await.unwrap().as_deref(),
        Some("enr-a")
    );
    assert_eq!(
        store.consume_challenge(&a, t(11)).await.unwrap(),
        None,
        "used twice"
    );
    let unknown = magicpush_store::enrollment::challenge_hash("never issued");
    assert_eq!(
        store.consume_challenge(&unknown, t(12)).await.unwrap(),
        None
    );
    // Many takers at once: one wins.
    let tries = (0..8).map(|_| {
        let store = Arc::clone(&store);
        tokio::spawn(async move { store.consume_challenge(&b, t(20)).await.unwrap() })
    });
    let mut won = 0;
    for handle in tries {
        if let Some(id) = handle.await.unwrap() {
            assert_eq!(id, "enr-b");
            won += 1;
        }
    }
    assert_eq!(won, 1);
}

fn invitation(id: &str, uses: u32, expires_at: OffsetDateTime) -> magicpush_store::Invitation {
    magicpush_store::Invitation {
        id: id.into(),
        topic: Some("com.apple.mgmt.External.a".into()),
        note: Some("first floor".into()),
        uses,
        enrolled: 0,
        created_at: t(0),
        expires_at,
        withdrawn_at: None,
    }
}

fn invited(
    invitation_id: &str,
    expires_at: OffsetDateTime,
) -> ([u8; 32], magicpush_store::StoredChallenge) {
    let (_, hash) = magicpush_store::enrollment::new_challenge();
    let mut c = challenge(hash, invitation_id, expires_at);
    c.invitation_id = Some(invitation_id.into());
    (hash, c)
}

/// An invitation hands out challenges while open; its challenges admit as many devices as it
/// has uses, racing ones included; withdrawn or expired, it admits none.
pub async fn invitations_admit_their_uses(store: Arc<dyn Store>) {
    use magicpush_store::{InvitationChallenge as Out, InvitationState as State};
    let inv = invitation("inv-one", 1, t(3600));
    store.add_invitation(&inv).await.unwrap();
    assert_eq!(
        store.invitation("inv-one").await.unwrap(),
        Some(inv.clone())
    );
    assert_eq!(store.invitation("nope").await.unwrap(), None);
    // Fetched three times: three challenges, but one device enrolls.
    let mut hashes = Vec::new();
    for _ in 0..3 {
        let (hash, c) = invited("inv-one", t(3600));
        assert_eq!(
            store.invitation_challenge(&c, t(1)).await.unwrap(),
            Out::Issued(inv.clone())
        );
        hashes.push(hash);
    }
    let tries = hashes.iter().map(|hash| {
        let (store, hash) = (Arc::clone(&store), *hash);
        tokio::spawn(async move { store.consume_challenge(&hash, t(2)).await.unwrap() })
    });
    let mut won = 0;
    for handle in tries {
        if let Some(id) = handle.await.unwrap() {
            assert_eq!(id, "inv-one");
            won += 1;
        }
    }
    assert_eq!(won, 1, "a one-use invitation admits one device");
    let after = store.invitation("inv-one").await.unwrap().unwrap();
    assert_eq!((after.enrolled, after.uses_left()), (1, 0));
    assert_eq!(after.state(t(3)), State::UsedUp);
    let (_, late) = invited("inv-one", t(3600));
    assert_eq!(
        store.invitation_challenge(&late, t(3)).await.unwrap(),
        Out::Closed(State::UsedUp)
    );
    let (_, stray) = invited("nope", t(3600));
    assert_eq!(
        store.invitation_challenge(&stray, t(3)).await.unwrap(),
        Out::Unknown
    );

    // Withdrawn: its outstanding challenge is refused, the first withdrawal time is kept.
    store
        .add_invitation(&invitation("inv-two", 5, t(3600)))
        .await
        .unwrap();
    let (pending, c) = invited("inv-two", t(3600));
    assert!(matches!(
        store.invitation_challenge(&c, t(4)).await.unwrap(),
        Out::Issued(_)
    ));
    assert!(store.withdraw_invitation("inv-two", t(5)).await.unwrap());
    assert!(store.withdraw_invitation("inv-two", t(6)).await.unwrap());
    assert!(!store.withdraw_invitation("nope", t(6)).await.unwrap());
    assert_eq!(store.consume_challenge(&pending, t(7)).await.unwrap(), None);
    let two = store.invitation("inv-two").await.unwrap().unwrap();
    assert_eq!((two.withdrawn_at, two.enrolled), (Some(t(5)), 0));

    // Expired: nothing handed out, nothing admitted.
    store
        .add_invitation(&invitation("inv-three", 5, t(100)))
        .await
        .unwrap();
    let (early, c) = invited("inv-three", t(3600));
    assert!(matches!(
        store.invitation_challenge(&c, t(10)).await.unwrap(),
        Out::Issued(_)
    ));
    assert_eq!(store.consume_challenge(&early, t(100)).await.unwrap(), None);
    let (_, c) = invited("inv-three", t(3600));
    assert_eq!(
        store.invitation_challenge(&c, t(100)).await.unwrap(),
        Out::Closed(State::Expired)
    );

    // A URL fetched in a loop stops adding challenges.
    store
        .add_invitation(&invitation("inv-four", 1, t(3600)))
        .await
        .unwrap();
    let cap = magicpush_store::enrollment::MAX_OUTSTANDING_CHALLENGES;
    for _ in 0..cap {
        let (_, c) = invited("inv-four", t(3600));
        assert!(matches!(
            store.invitation_challenge(&c, t(10)).await.unwrap(),
            Out::Issued(_)
        ));
    }
    let (_, c) = invited("inv-four", t(3600));
    assert_eq!(
        store.invitation_challenge(&c, t(10)).await.unwrap(),
        Out::TooManyOutstanding
    );

    // Newest first.
    let listed: Vec<String> = store
        .invitations()
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.id)
        .collect();
    assert_eq!(listed.len(), 4);
    assert!(listed.iter().all(|id| id.starts_with("inv-")));
}

/// The devices enrolled through an invitation are kept once each, and found both ways.
pub async fn invitation_devices_are_listed(store: Arc<dyn Store>) {
    store
        .add_invitation(&invitation("inv-a", 3, t(3600)))
        .await
        .unwrap();
    store
        .record_invitation_device("inv-a", "UDID-2", t(20))
        .await
        .unwrap();
    store
        .record_invitation_device("inv-a", "UDID-1", t(10))
        .await
        .unwrap();
    store
        .record_invitation_device("inv-a", "UDID-1", t(30))
        .await
        .unwrap();
    store
        .record_invitation_device("inv-b", "UDID-3", t(40))
        .await
        .unwrap();
    let listed = store
        .invitation_devices(&["inv-a".into(), "inv-none".into()])
        .await
        .unwrap();
    let got: Vec<(&str, &str, OffsetDateTime)> = listed
        .iter()
        .map(|d| (d.invitation_id.as_str(), d.udid.as_str(), d.at))
        .collect();
    assert_eq!(
        got,
        vec![("inv-a", "UDID-1", t(10)), ("inv-a", "UDID-2", t(20))]
    );
    let mut of_devices = store
        .device_invitations(&["UDID-3".into(), "UDID-1".into(), "UDID-9".into()])
        .await
        .unwrap();
    of_devices.sort_by(|a, b| a.udid.cmp(&b.udid));
    let got: Vec<(&str, &str)> = of_devices
        .iter()
        .map(|d| (d.udid.as_str(), d.invitation_id.as_str()))
        .collect();
    assert_eq!(got, vec![("UDID-1", "inv-a"), ("UDID-3", "inv-b")]);
}

pub async fn expired_challenges_are_refused(store: Arc<dyn Store>) {
    let (_, a) = magicpush_store::enrollment::new_challenge();
    store
        .add_challenge(&challenge(a, "enr-a", t(60)))
        .await
        .unwrap();
    assert_eq!(store.consume_challenge(&a, t(60)).await.unwrap(), None);
    assert_eq!(
        store.consume_challenge(&a, t(59)).await.unwrap().as_deref(),
        Some("enr-a")
    );

    // Pruning takes the used and the expired, and leaves those still usable.
    let (_, live) = magicpush_store::enrollment::new_challenge();
    let (_, old) = magicpush_store::enrollment::new_challenge();
    store
        .add_challenge(&challenge(live, "enr-live", t(10_000)))
        .await
        .unwrap();
    store
        .add_challenge(&challenge(old, "enr-old", t(100)))
        .await
        .unwrap();
    assert_eq!(store.prune_challenges(t(50)).await.unwrap(), 0);
    assert_eq!(store.prune_challenges(t(5_000)).await.unwrap(), 2);
    assert_eq!(store.prune_challenges(t(5_000)).await.unwrap(), 0);
    assert_eq!(
        store
            .consume_challenge(&live, t(5_001))
            .await
            .unwrap()
            .as_deref(),
        Some("enr-live")
    );
}

pub async fn revoked_serials_are_kept(store: Arc<dyn Store>) {
    assert!(!store.is_revoked("8a01").await.unwrap());
    store.revoke_serial("8a01", "UDID-1", t(0)).await.unwrap();
    store.revoke_serial("8a01", "UDID-1", t(1)).await.unwrap();
    assert!(store.is_revoked("8a01").await.unwrap());
    assert!(!store.is_revoked("8a02").await.unwrap());
}

pub async fn one_device_ca_is_kept(store: Arc<dyn Store>) {
    use magicpush_store::StoredDeviceCa;
    assert_eq!(store.device_ca().await.unwrap(), None);
    let first = StoredDeviceCa {
        cert_pem: "-----BEGIN CERTIFICATE-----\nfirst\n".into(),
        key_pem: Secret::new(b"first key".to_vec()),
        created_at: t(0),
    };
    let second = StoredDeviceCa {
        cert_pem: "second".into(),
        key_pem: Secret::new(b"second key".to_vec()),
        created_at: t(1),
    };
    assert_eq!(store.create_device_ca(&first).await.unwrap(), first);
    assert_eq!(store.create_device_ca(&second).await.unwrap(), first);
    assert_eq!(store.device_ca().await.unwrap(), Some(first));
}
