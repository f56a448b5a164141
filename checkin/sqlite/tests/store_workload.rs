//! The fleet's store workload without HTTP: enroll, refresh-all, push outcomes, Idle and
//! Acknowledged reports, against [`SqliteStore`], with many writers in flight so group commit
//! batches as it does under the fleet. Prints each phase's wall time.
//!
//! A measurement, not a check: ignored by default. Run it in release mode:
//! `MAGICPUSH_WORKLOAD_DEVICES=50000 cargo test --release -p magicpush-sqlite --test store_workload -- --ignored --nocapture`
//! (the default is 20,000 devices). It still asserts that every write landed.

use std::sync::Arc;
use std::time::Instant;

use magicpush_mdm::{Command, Status, DEVICE_INFORMATION_QUERIES};
use magicpush_sqlite::SqliteStore;
use magicpush_store::{PushOutcome, Store};
use magicpush_testkit::conformance::{authenticate, report, t, token_update};
use plist::{Dictionary, Value};

/// Writers in flight at once (the fleet keeps about this many connections busy).
const IN_FLIGHT: usize = 256;

fn device_count() -> usize {
    std::env::var("MAGICPUSH_WORKLOAD_DEVICES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000)
}

/// A counter of this process's I/O so far, from `/proc/self/io` (0 where absent): `syscr`,
/// read calls, shows the writer's page-cache misses; `wchar`, bytes written, the WAL frames
/// and checkpoints the writes cost.
fn io_counter(name: &str) -> u64 {
    std::fs::read_to_string("/proc/self/io")
        .ok()
        .and_then(|io| {
            io.lines().find_map(|l| {
                l.strip_prefix(name)
                    .and_then(|v| v.strip_prefix(": "))
                    .and_then(|v| v.trim().parse().ok())
            })
        })
        .unwrap_or(0)
}

/// Read calls and megabytes written so far.
fn io_now() -> (u64, u64) {
    (io_counter("syscr"), io_counter("wchar") / 1_000_000)
}

fn query_responses(udid: &str) -> Dictionary {
    let mut q = Dictionary::new();
    for (k, v) in [
        ("BuildVersion", "21E236"),
        ("DeviceName", "iPhone of someone"),
        ("IMEI", "35 111111 111111 1"),
        ("Model", "MQ3D2J/A"),
        ("ModelName", "iPhone"),
        ("OSVersion", "17.4.1"),
        ("ProductName", "iPhone15,2"),
        ("SerialNumber", "F2LXXXXXXXXX"),
    ] {
        q.insert(k.into(), Value::String(v.into()));
    }
    q.insert("IsSupervised".into(), Value::Boolean(true));
    q.insert("UDID".into(), Value::String(udid.into()));
    let mut d = Dictionary::new();
    d.insert("QueryResponses".into(), Value::Dictionary(q));
    d
}

/// How long each write waited for its commit, in µs: a checkpoint on the writer thread shows
/// in the tail.
#[derive(Default)]
struct Waits(std::sync::Mutex<Vec<u64>>);

impl Waits {
    async fn time<T>(&self, write: impl std::future::Future<Output = T>) -> T {
        let started = Instant::now();
        let out = write.await;
        let us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.0.lock().unwrap().push(us);
        out
    }

    /// `p50/p99/p99.9/max` in ms.
    fn summary(&self) -> String {
        let mut v = std::mem::take(&mut *self.0.lock().unwrap());
        v.sort_unstable();
        let at = |q: f64| v.get(((v.len() as f64 * q) as usize).min(v.len().saturating_sub(1)));
        let ms = |x: Option<&u64>| x.map_or(0.0, |&us| us as f64 / 1000.0);
        format!(
            "{:.1}/{:.1}/{:.1}/{:.1}",
            ms(at(0.5)),
            ms(at(0.99)),
            ms(at(0.999)),
            ms(v.last())
        )
    }
}

/// Runs `each(udid)` for every device, `IN_FLIGHT` at a time.
async fn for_all<F, Fut>(udids: &Arc<Vec<String>>, each: F)
where
    F: Fn(String) -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let tasks: Vec<_> = (0..IN_FLIGHT)
        .map(|lane| {
            let udids = Arc::clone(udids);
            let each = each.clone();
            tokio::spawn(async move {
                for udid in udids.iter().skip(lane).step_by(IN_FLIGHT) {
                    each(udid.clone()).await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("workload task");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement; run in release mode with --ignored --nocapture"]
async fn fleet_store_workload() {
    let n = device_count();
    let dir = tempfile::tempdir().unwrap();
    if let Ok(keep) = std::env::var("MAGICPUSH_WORKLOAD_KEEP") {
        println!("keeping the database in {keep}");
    }
    let data_dir = std::env::var("MAGICPUSH_WORKLOAD_KEEP")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| dir.path().to_owned());
    let sqlite = Arc::new(SqliteStore::open(&data_dir).unwrap());
    let store: Arc<dyn Store> = sqlite.clone();
    let udids: Arc<Vec<String>> = Arc::new(
        (0..n)
            .map(|i| {
                uuid::Uuid::from_u128(0x5eed_0000_0000_0000 ^ (i as u128 * 0x9e37_79b9_7f4a_7c15))
                    .to_string()
                    .to_uppercase()
            })
            .collect(),
    );

    let mut io = vec![io_now()];
    let enroll_waits = Arc::new(Waits::default());
    let started = Instant::now();
    let s = Arc::clone(&store);
    let waits = Arc::clone(&enroll_waits);
    for_all(&udids, move |udid| {
        let s = Arc::clone(&s);
        let waits = Arc::clone(&waits);
        async move {
            waits
                .time(s.authenticate(&authenticate(&udid), None, t(0)))
                .await
                .unwrap();
            waits
                .time(s.token_update(&token_update(&udid, 7), t(0)))
                .await
                .unwrap();
        }
    })
    .await;
    let enroll = started.elapsed();
    io.push(io_now());

    let started = Instant::now();
    let devices = store.devices().await.unwrap();
    let listed = started.elapsed();
    assert_eq!(devices.len(), n);
    let command = Command::device_information(DEVICE_INFORMATION_QUERIES);
    let all: Vec<String> = devices.into_iter().map(|d| d.udid).collect();
    let mut outcome_writes = Vec::new();
    for chunk in all.chunks(2_000) {
        let queued = store
            .queue_and_mark_pushes(&command, chunk, t(10))
            .await
            .unwrap();
        assert_eq!(queued.queued.len(), chunk.len());
        for outcomes in chunk.chunks(256) {
            let s = Arc::clone(&store);
            let outcomes: Vec<(String, PushOutcome)> = outcomes
                .iter()
                .map(|u| (u.clone(), PushOutcome::Accepted))
                .collect();
            outcome_writes.push(tokio::spawn(async move {
                s.record_push_outcomes(&outcomes, t(10)).await.unwrap();
            }));
        }
    }
    for w in outcome_writes {
        w.await.unwrap();
    }
    let refresh = started.elapsed();
    io.push(io_now());

    // Devices answer in the order they were pushed: the refresh's, by UDID.
    let pushed = Arc::new(all);
    let started = Instant::now();
    let s = Arc::clone(&store);
    let uuid = command.uuid.clone();
    for_all(&pushed, move |udid| {
        let s = Arc::clone(&s);
        let uuid = uuid.clone();
        async move {
            let idle = report(&udid, Status::Idle, None, Dictionary::new());
            let out = s.record_report(&idle, t(11)).await.unwrap();
            let next = out.next_command.flatten().expect("a command is queued");
            assert_eq!(next.uuid, uuid);
            let ack = report(
                &udid,
                Status::Acknowledged,
                Some(&uuid),
                query_responses(&udid),
            );
            let out = s.record_report(&ack, t(12)).await.unwrap();
            assert!(out.dequeued);
            assert_eq!(out.next_command, Some(None));
        }
    })
    .await;
    let reports = started.elapsed();
    io.push(io_now());
    let reads: Vec<u64> = io.windows(2).map(|w| w[1].0 - w[0].0).collect();
    let written_mb: Vec<u64> = io.windows(2).map(|w| w[1].1 - w[0].1).collect();

    let responded = store
        .devices()
        .await
        .unwrap()
        .iter()
        .filter(|d| d.first_report_after_push_at.is_some() && d.info_collected_at.is_some())
        .count();
    assert_eq!(responded, n);
    let stats = sqlite.commit_stats();
    let size = |name: &str| {
        std::fs::metadata(data_dir.join(name))
            .map(|m| m.len() / 1_000_000)
            .unwrap_or(0)
    };
    let (db_mb, wal_mb) = (size("magicpush.sqlite3"), size("magicpush.sqlite3-wal"));
    println!(
        "devices={n} enroll_s={:.3} refresh_s={:.3} (list {:.3}) reports_s={:.3} total_s={:.3} commits={} writes={} db_mb={db_mb} wal_mb={wal_mb} read_calls(enroll,refresh,reports)={reads:?} written_mb(enroll,refresh,reports)={written_mb:?} enroll_wait_ms(p50/p99/p99.9/max)={}",
        enroll.as_secs_f64(),
        refresh.as_secs_f64(),
        listed.as_secs_f64(),
        reports.as_secs_f64(),
        (enroll + refresh + reports).as_secs_f64(),
        stats.commits,
        stats.writes,
        enroll_waits.summary(),
    );
}
