//! `magicpush-loadtest fleet --enroll`: every device gets its identity from the server first
//! (an invitation's profile, then SCEP at `/scep` with a pooled RSA-2048 key) and signs its
//! check-ins with the certificate issued; the counts are as exact as without enrollment.

use std::path::PathBuf;
use std::process::Command;

fn exe() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_magicpush-loadtest"))
}

/// 50 devices on two tenants (an invitation each), some offline and unregistered: every one
/// enrolls, checks in with its issued certificate, and the run passes with exact counts.
#[test]
fn fifty_devices_enroll_through_scep_and_the_counts_are_exact() {
    let out = Command::new(exe())
        .args([
            "fleet",
            "--enroll",
            "--devices",
            "50",
            "--topics",
            "2",
            "--offline-fraction",
            "0.1",
            "--unregistered-fraction",
            "0.1",
            "--connections",
            "8",
            "--wait-s",
            "60",
            "--json",
        ])
        .output()
        .expect("run magicpush-loadtest fleet --enroll");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let last = stdout.lines().last().expect("some output");
    let v: serde_json::Value = serde_json::from_str(last).expect("JSON on the last line");

    // Every device got a certificate from /scep, and checked in with it.
    assert_eq!(v["devices"], 50, "{last}");
    assert_eq!(v["enrollments"], 50, "{last}");
    assert_eq!(v["enrolled"], 50, "{last}");
    assert!(v["enroll_s"].as_f64().unwrap() > 0.0, "{last}");
    let rate = v["enrollments_per_s"].as_f64().unwrap();
    let expected = 50.0 / v["enroll_s"].as_f64().unwrap();
    assert!((rate - expected).abs() <= 0.1 * expected + 0.1, "{last}");
    assert_eq!(v["enroll_key_pool"], 8, "{last}");
    // One invitation per tenant (25 devices each, under the 96 of one invitation).
    assert_eq!(v["invitations"], 2, "{last}");
    // --json measures the floors, which run without enrollment.
    assert_eq!(v["floor_without_enrollment"], true, "{last}");
    assert!(v["floor_s"].as_f64().is_some(), "{last}");

    // Counts exact, as without enrollment.
    let online = v["injected"]["online"].as_u64().unwrap();
    assert_eq!(v["injected"]["offline"], 5, "{last}");
    assert_eq!(v["injected"]["unregistered"], 5, "{last}");
    assert_eq!(online, 40, "{last}");
    assert_eq!(v["errors"], 0, "{last}");
    assert_eq!(v["lost"], 0, "{last}");
    assert_eq!(v["misplaced"], 0, "{last}");
    assert_eq!(v["counts_match"], true, "{last}");
    assert_eq!(v["states"]["responded"], online, "{last}");
    assert_eq!(v["states"]["unregistered"], 5, "{last}");
    assert_eq!(v["reported"], online, "{last}");
    assert_eq!(v["pushes"], 50, "{last}");
    assert_eq!(
        (v["topics"].as_u64(), v["topics_exact"].as_u64()),
        (Some(2), Some(2))
    );
    // The node got, per device, the profile, the PKIOperation and two check-ins; the
    // GetCACert once; Idle and Acknowledged per online device.
    let nodes = v["nodes"].as_array().expect("nodes");
    assert_eq!(nodes.len(), 1, "{last}");
    assert_eq!(nodes[0]["requests"], 1 + 50 * 4 + 2 * online, "{last}");
}

/// `--enroll` without signatures is refused before anything starts.
#[test]
fn enroll_needs_signed_devices() {
    let out = Command::new(exe())
        .args([
            "fleet",
            "--enroll",
            "--device-auth",
            "none",
            "--devices",
            "5",
        ])
        .output()
        .expect("run magicpush-loadtest fleet");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--enroll needs --device-auth signature"),
        "{stderr}"
    );
}
