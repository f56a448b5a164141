//! Two nodes on one database coordinating: [`PostgresStore`]s opened on one schema see each
//! other's heartbeats, claim a scheduled job one at a time, and one sweeps the refresh run a
//! dead node left behind. Skipped without `MAGICPUSH_TEST_DATABASE_URL`, failing under
//! `CI=true` (see `tests/common`).

use std::sync::Arc;
use std::time::Duration;

use magicpush_mdm::{Command, Status};
use magicpush_postgres::PostgresStore;
use magicpush_store::cluster::{RefreshRunRecord, RunState};
use magicpush_store::{PushOutcome, Store};
use magicpush_testkit::conformance::{enroll, node, report, t};
use plist::Dictionary;

mod common;
use common::{key, test_url, Schema};

/// Two nodes on one fresh schema.
async fn two_nodes() -> Option<([Arc<dyn Store>; 2], Schema)> {
    let url = test_url()?;
    let schema = Schema::new(&url).await;
    let a = PostgresStore::open(&schema.url(), key())
        .await
        .expect("open node a");
    let b = PostgresStore::open(&schema.url(), key())
        .await
        .expect("open node b");
    Some(([Arc::new(a), Arc::new(b)], schema))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_node_lists_both_heartbeats() {
    let Some(([a, b], _schema)) = two_nodes().await else {
        return;
    };
    a.heartbeat(&node("a", t(1))).await.unwrap();
    b.heartbeat(&node("b", t(2))).await.unwrap();
    a.heartbeat(&node("a", t(5))).await.unwrap();
    for store in [&a, &b] {
        assert_eq!(
            store.nodes().await.unwrap(),
            vec![node("a", t(5)), node("b", t(2))]
        );
    }
}

/// Eight claims race at each instant, four from each node: one runs the job, once per
/// period.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_of_racing_nodes_claims_the_schedule_each_period() {
    let Some((nodes, _schema)) = two_nodes().await else {
        return;
    };
    let every = Duration::from_secs(60);
    let race = |at: i64| {
        let nodes = nodes.clone();
        async move {
            let start = Arc::new(tokio::sync::Barrier::new(8));
            let mut tasks = Vec::new();
            for i in 0..8 {
                let (store, start) = (Arc::clone(&nodes[i % 2]), Arc::clone(&start));
                tasks.push(tokio::spawn(async move {
                    start.wait().await;
                    let id = if i % 2 == 0 { "a" } else { "b" };
                    store.claim_schedule("collect", id, t(at), every).await
                }));
            }
            let mut won = 0;
            for task in tasks {
                won += usize::from(task.await.unwrap().unwrap());
            }
            won
        }
    };
    assert_eq!(race(0).await, 0, "the first claim starts the period");
    assert_eq!(race(30).await, 0);
    assert_eq!(race(60).await, 1);
    assert_eq!(race(61).await, 0);
    assert_eq!(race(120).await, 1);
}

/// Node `dead` marked four devices and died (its heartbeat stopped); node `live` is pushing
/// its own. Node `live` sweeps: the dead run's unanswered devices read `never_pushed` again,
/// the answered ones and the live run are untouched, and the run is abandoned for both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_node_sweeps_a_dead_nodes_run() {
    let Some(([dead, live], _schema)) = two_nodes().await else {
        return;
    };
    let udids: Vec<String> = (0..6).map(|i| format!("SWEEP-{i}")).collect();
    for udid in &udids {
        enroll(&*dead, udid, t(1)).await;
    }
    dead.heartbeat(&node("dead", t(10))).await.unwrap();
    live.heartbeat(&node("live", t(100))).await.unwrap();
    let command = Command::device_information(&["DeviceName"]);
    let run = RefreshRunRecord::begin("run-dead".into(), "dead".into(), t(20));
    assert!(dead.begin_refresh_run(&run).await.unwrap());
    dead.add_refresh_run_devices(&run.id, &udids[..4])
        .await
        .unwrap();
    dead.queue_and_mark_pushes(&command, &udids[..4], t(20))
        .await
        .unwrap();
    dead.record_push_outcome(&udids[0], &PushOutcome::Accepted, t(21))
        .await
        .unwrap();
    let idle = report(&udids[1], Status::Idle, None, Dictionary::new());
    live.record_report(&idle, t(22)).await.unwrap();
    // Two runs at one millisecond: refused, the live node takes the next one.
    let clash = RefreshRunRecord::begin("run-live".into(), "live".into(), t(20));
    assert!(!live.begin_refresh_run(&clash).await.unwrap());
    let mine = RefreshRunRecord::begin(
        "run-live".into(),
        "live".into(),
        clash.attempted_at + time::Duration::milliseconds(1),
    );
    assert!(live.begin_refresh_run(&mine).await.unwrap());
    live.add_refresh_run_devices(&mine.id, &udids[4..])
        .await
        .unwrap();
    live.queue_and_mark_pushes(&command, &udids[4..], mine.attempted_at)
        .await
        .unwrap();

    // Not dead yet at the first sweep's window.
    assert!(live.sweep_dead_runs(t(5), t(30)).await.unwrap().is_empty());
    let swept = live.sweep_dead_runs(t(50), t(60)).await.unwrap();
    assert_eq!(swept.len(), 1);
    assert_eq!(
        (swept[0].state, swept[0].devices, swept[0].withdrawn),
        (RunState::Abandoned, 4, 2)
    );
    assert!(dead.sweep_dead_runs(t(50), t(61)).await.unwrap().is_empty());
    let state = |i: usize| {
        let (store, udid) = (Arc::clone(&dead), udids[i].clone());
        async move { store.device(&udid).await.unwrap().unwrap() }
    };
    assert_eq!(state(0).await.push_outcome, Some(PushOutcome::Accepted));
    assert_eq!(state(1).await.last_push_at, Some(t(20)), "it reported");
    assert_eq!(state(2).await.last_push_at, None);
    assert_eq!(state(3).await.last_push_at, None);
    for i in 4..6 {
        assert_eq!(state(i).await.last_push_at, Some(mine.attempted_at));
    }
    // Either node reads the runs.
    for store in [&dead, &live] {
        let runs = store.refresh_runs(10).await.unwrap();
        let ids: Vec<(&str, RunState)> = runs.iter().map(|r| (r.id.as_str(), r.state)).collect();
        assert_eq!(
            ids,
            vec![
                ("run-live", RunState::Running),
                ("run-dead", RunState::Abandoned)
            ]
        );
    }
    live.finish_refresh_run(&mine.id, t(70)).await.unwrap();
    assert_eq!(
        dead.refresh_runs(1).await.unwrap()[0].state,
        RunState::Finished
    );
}
