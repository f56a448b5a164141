//! `checkin-bench` at a tiny scale: every mode counts every check-in, and a signed run is also
//! measured against the floor that verifies signatures.

use magicpush_loadtest::bench::checkin::{self, BenchDeviceAuth, CheckinBenchOptions, IdentityKey};

fn options(device_auth: BenchDeviceAuth, compare_device_auth: bool) -> CheckinBenchOptions {
    CheckinBenchOptions {
        devices: 40,
        concurrency: 4,
        device_auth,
        compare_device_auth,
        identity_key: IdentityKey::P256,
        database_url: None,
    }
}

#[test]
fn with_a_database_url_the_server_is_also_measured_on_postgresql() {
    let Some(url) = magicpush_testkit::database::test_database_url() else {
        return;
    };
    let r = checkin::run(&CheckinBenchOptions {
        database_url: Some(url),
        ..options(BenchDeviceAuth::Signature, true)
    })
    .unwrap();
    let pg = r.postgres.as_ref().expect("the PostgreSQL run");
    assert_eq!(pg.checkins, 80);
    assert!(pg.writes_per_commit.is_some_and(|w| w >= 1.0));
    assert_eq!(
        r.ratio_postgres_vs_sqlite,
        Some(pg.checkins_per_s / r.durable.checkins_per_s)
    );
    let other = r.other_device_auth.as_ref().unwrap();
    assert_eq!(other.postgres.as_ref().map(|m| m.checkins), Some(80));
    assert!(other.ratio_postgres_vs_sqlite.is_some());
}

#[test]
fn a_signed_run_is_also_measured_against_a_floor_that_verifies() {
    let r = checkin::run(&options(BenchDeviceAuth::Signature, false)).unwrap();
    let floor = r
        .trivial_verifying
        .as_ref()
        .expect("the verifying floor ran");
    for m in [&r.trivial, floor, &r.memory, &r.durable] {
        assert_eq!(m.checkins, 80, "{}", m.mode);
        assert!(m.checkins_per_s > 0.0, "{}", m.mode);
    }
    let ratios = r.signed_vs_trivial_verifying.as_ref().unwrap();
    assert_eq!(
        ratios.memory,
        r.memory.checkins_per_s / floor.checkins_per_s
    );
    assert_eq!(
        ratios.durable,
        r.durable.checkins_per_s / floor.checkins_per_s
    );
}

#[test]
fn the_verifying_floor_is_the_signed_runs_floor_whichever_runs_first() {
    // Unsigned main runs, signed ones for comparison: the floor's ratios are the signed ones'.
    let r = checkin::run(&options(BenchDeviceAuth::None, true)).unwrap();
    let floor = r
        .trivial_verifying
        .as_ref()
        .expect("the verifying floor ran");
    let signed = r.other_device_auth.as_ref().unwrap();
    assert_eq!(signed.device_auth, BenchDeviceAuth::Signature);
    let ratios = r.signed_vs_trivial_verifying.as_ref().unwrap();
    assert_eq!(
        ratios.durable,
        signed.durable.checkins_per_s / floor.checkins_per_s
    );

    // Nobody signs: no verifying floor.
    let r = checkin::run(&options(BenchDeviceAuth::None, false)).unwrap();
    assert!(r.trivial_verifying.is_none());
    assert!(r.signed_vs_trivial_verifying.is_none());
    assert_eq!(r.durable.checkins, 80);
}
