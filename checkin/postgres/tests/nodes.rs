//! Two nodes on one database: two [`PostgresStore`]s opened on one schema, each with its own
//! writer connection and its own group-commit transactions, receiving reports for the same
//! devices at the same time (a device's requests spread over nodes by a load balancer, or the
//! same report re-sent to another node after a timeout).
//!
//! The rules checked: every racing Idle gets the head of the queue, never the command behind
//! it; a final report (Acknowledged, Error) reaching both nodes is recorded once and takes its
//! command off the queue once; after its result a command is never handed out again; a NotNow
//! keeps its command queued. Skipped without `MAGICPUSH_TEST_DATABASE_URL`, failing under
//! `CI=true` (see `tests/common`).

use std::sync::Arc;

use magicpush_mdm::{Command, Status};
use magicpush_postgres::PostgresStore;
use magicpush_store::{EnqueueMode, QueuedCommand, ReportOutcome, Store};
use magicpush_testkit::conformance::{enroll, report, t};
use plist::Dictionary;

mod common;
use common::{admin, key, test_url, Schema};

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

/// Enqueues a fresh command for `udid` on `node`; returns it.
async fn enqueue(node: &dyn Store, udid: &str, request_type: &str) -> Command {
    let c = Command::new(request_type, Dictionary::new());
    node.enqueue(&c, &[udid.to_string()], EnqueueMode::Always, t(1))
        .await
        .expect("enqueue");
    c
}

/// Runs `per_node` copies of `f` on each node at once; their answers, node by node.
async fn race<T, F, Fut>(nodes: &[Arc<dyn Store>; 2], per_node: usize, f: F) -> Vec<T>
where
    T: Send + 'static,
    F: Fn(Arc<dyn Store>) -> Fut,
    Fut: std::future::Future<Output = T> + Send + 'static,
{
    let start = Arc::new(tokio::sync::Barrier::new(2 * per_node));
    let mut tasks = Vec::new();
    for i in 0..2 * per_node {
        let fut = f(Arc::clone(&nodes[i % 2]));
        let start = Arc::clone(&start);
        tasks.push(tokio::spawn(async move {
            start.wait().await;
            fut.await
        }));
    }
    let mut out = Vec::new();
    for task in tasks {
        out.push(task.await.expect("task"));
    }
    out
}

/// Result rows for (udid, command, status), counted in the database itself (not through
/// `results`, which a store could filter).
async fn result_rows(schema: &Schema, udid: &str, uuid: &str, status: Status) -> i64 {
    admin(&schema.url())
        .await
        .query_one(
            "SELECT count(*) FROM results WHERE udid = $1 AND uuid = $2 AND status = $3",
            &[&udid, &uuid, &status.as_str()],
        )
        .await
        .expect("count results")
        .get(0)
}

fn uuid_of(next: &Option<QueuedCommand>) -> Option<&str> {
    next.as_ref().map(|c| c.uuid.as_str())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_idles_on_two_nodes_all_get_the_head_of_the_queue() {
    let Some((nodes, _schema)) = two_nodes().await else {
        return;
    };
    let devices: Vec<String> = (0..8).map(|i| format!("IDLE-{i}")).collect();
    let mut heads = Vec::new();
    for udid in &devices {
        enroll(&*nodes[0], udid, t(0)).await;
        let head = enqueue(&*nodes[0], udid, "ProfileList").await;
        enqueue(&*nodes[1], udid, "CertificateList").await;
        heads.push(head.uuid);
    }
    for round in 0..5 {
        let devices = devices.clone();
        let answers = race(&nodes, 16, move |node| {
            let devices = devices.clone();
            async move {
                let mut got = Vec::new();
                for udid in &devices {
                    let idle = report(udid, Status::Idle, None, Dictionary::new());
                    let out = node
                        .record_report(&idle, t(10 + round))
                        .await
                        .expect("idle");
                    let next = node.next_command(udid, false, t(10 + round)).await;
                    got.push((out, next.expect("next command")));
                }
                got
            }
        })
        .await;
        for got in answers {
            for ((out, next), head) in got.iter().zip(&heads) {
                assert_eq!(
                    uuid_of(next),
                    Some(head.as_str()),
                    "next_command after Idle"
                );
                if let Some(in_report) = &out.next_command {
                    assert_eq!(uuid_of(in_report), Some(head.as_str()), "report's next");
                }
            }
        }
    }
}

/// Reports `status` for `uuid` on both nodes at once, `per_node` times each.
async fn race_reports(
    nodes: &[Arc<dyn Store>; 2],
    udid: &str,
    uuid: &str,
    status: Status,
    per_node: usize,
    at: i64,
) -> Vec<ReportOutcome> {
    let r = report(udid, status, Some(uuid), Dictionary::new());
    race(nodes, per_node, move |node| {
        let r = r.clone();
        async move { node.record_report(&r, t(at)).await.expect("report") }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_final_report_reaching_both_nodes_is_recorded_once() {
    let Some((nodes, schema)) = two_nodes().await else {
        return;
    };
    for round in 0..12_i64 {
        let udid = format!("ACK-{round}");
        enroll(&*nodes[0], &udid, t(0)).await;
        let head = enqueue(&*nodes[0], &udid, "ProfileList").await;
        let behind = enqueue(&*nodes[1], &udid, "CertificateList").await;
        let status = if round % 2 == 0 {
            Status::Acknowledged
        } else {
            Status::Error
        };
        let outcomes = race_reports(&nodes, &udid, &head.uuid, status, 3, 2 + round).await;
        let dequeued = outcomes.iter().filter(|o| o.dequeued).count();
        assert_eq!(
            dequeued, 1,
            "{udid}: taken off the queue once: {outcomes:?}"
        );
        assert_eq!(
            result_rows(&schema, &udid, &head.uuid, status).await,
            1,
            "{udid}: one {status:?} result for the command"
        );
        for node in &nodes {
            let results = node.results(&udid).await.expect("results");
            assert_eq!(results.len(), 1, "{udid}: {results:?}");
            assert_eq!(results[0].request_type.as_deref(), Some("ProfileList"));
            // After its result the command is never handed out again, Idle or not.
            for skip_not_now in [false, true] {
                let next = node.next_command(&udid, skip_not_now, t(100)).await;
                assert_eq!(uuid_of(&next.expect("next")), Some(behind.uuid.as_str()));
            }
            let queued: Vec<String> = node
                .queued(&udid)
                .await
                .expect("queued")
                .into_iter()
                .map(|c| c.uuid)
                .collect();
            assert_eq!(queued, vec![behind.uuid.clone()]);
        }
        // Every report's own next command is the one behind: none re-sends the answered one.
        for o in &outcomes {
            if let Some(next) = &o.next_command {
                assert_eq!(uuid_of(next), Some(behind.uuid.as_str()), "{o:?}");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_final_reports_of_many_devices_on_two_nodes() {
    let Some((nodes, schema)) = two_nodes().await else {
        return;
    };
    // Many devices answered at once on both nodes, so that each node's transaction holds
    // several devices' reports, in different orders on the two nodes.
    let devices: Vec<String> = (0..24).map(|i| format!("MANY-{i:02}")).collect();
    let mut heads = Vec::new();
    for udid in &devices {
        enroll(&*nodes[0], udid, t(0)).await;
        heads.push(enqueue(&*nodes[0], udid, "ProfileList").await.uuid);
    }
    let work: Vec<(String, String)> = devices.iter().cloned().zip(heads.clone()).collect();
    let outcomes = race(&nodes, 4, move |node| {
        let mut work = work.clone();
        fastrand::shuffle(&mut work);
        async move {
            let reports = work.iter().map(|(udid, uuid)| {
                let r = report(udid, Status::Acknowledged, Some(uuid), Dictionary::new());
                let node = Arc::clone(&node);
                let udid = udid.clone();
                tokio::spawn(async move {
                    let out = node.record_report(&r, t(5)).await.expect("report");
                    (udid, out.dequeued)
                })
            });
            let mut got = Vec::new();
            for h in reports.collect::<Vec<_>>() {
                got.push(h.await.expect("task"));
            }
            got
        }
    })
    .await;
    for (udid, uuid) in devices.iter().zip(&heads) {
        let dequeued = outcomes
            .iter()
            .flatten()
            .filter(|(u, d)| u == udid && *d)
            .count();
        assert_eq!(dequeued, 1, "{udid}");
        assert_eq!(
            result_rows(&schema, udid, uuid, Status::Acknowledged).await,
            1,
            "{udid}"
        );
        for node in &nodes {
            assert!(node
                .next_command(udid, false, t(9))
                .await
                .unwrap()
                .is_none());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_not_now_on_two_nodes_keeps_the_command_queued() {
    let Some((nodes, schema)) = two_nodes().await else {
        return;
    };
    enroll(&*nodes[0], "NN", t(0)).await;
    let head = enqueue(&*nodes[0], "NN", "ProfileList").await;
    let behind = enqueue(&*nodes[1], "NN", "CertificateList").await;
    let outcomes = race_reports(&nodes, "NN", &head.uuid, Status::NotNow, 2, 3).await;
    assert!(outcomes.iter().all(|o| o.known_command && !o.dequeued));
    // As on one node: each NotNow is a result of its own, and the command stays queued.
    assert_eq!(
        result_rows(&schema, "NN", &head.uuid, Status::NotNow).await,
        4
    );
    for node in &nodes {
        let queued = node.queued("NN").await.unwrap();
        assert_eq!(queued.len(), 2);
        assert_eq!(queued[0].uuid, head.uuid);
        assert_eq!(queued[0].not_now_at, Some(t(3)));
        // Within the session it is skipped; the next Idle offers it again.
        let in_session = node.next_command("NN", true, t(4)).await.unwrap();
        assert_eq!(uuid_of(&in_session), Some(behind.uuid.as_str()));
        let next_session = node.next_command("NN", false, t(4)).await.unwrap();
        assert_eq!(uuid_of(&next_session), Some(head.uuid.as_str()));
    }
    // Its final answer then takes it off, once.
    let outcomes = race_reports(&nodes, "NN", &head.uuid, Status::Acknowledged, 2, 5).await;
    assert_eq!(outcomes.iter().filter(|o| o.dequeued).count(), 1);
    assert_eq!(
        result_rows(&schema, "NN", &head.uuid, Status::Acknowledged).await,
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refresh_on_one_node_and_reports_on_the_other_all_land() {
    let Some((nodes, schema)) = two_nodes().await else {
        return;
    };
    // A refresh's writes (chunks of devices queued and marked, their push outcomes) on one
    // node while the same devices answer, in another order, on the other: every write lands
    // (none fails on a deadlock) and each answer is recorded once.
    let devices: Vec<String> = (0..32).map(|i| format!("MIX-{i:02}")).collect();
    let mut heads = Vec::new();
    for udid in &devices {
        enroll(&*nodes[0], udid, t(0)).await;
        heads.push(enqueue(&*nodes[0], udid, "ProfileList").await.uuid);
    }
    let refresh = {
        let node = Arc::clone(&nodes[0]);
        let devices = devices.clone();
        tokio::spawn(async move {
            for round in 0..6 {
                let command = Command::new("DeviceInformation", Dictionary::new());
                let mut chunk = devices.clone();
                fastrand::shuffle(&mut chunk);
                for part in chunk.chunks(8) {
                    node.queue_and_mark_pushes(&command, part, t(10 + round))
                        .await
                        .expect("queue and mark");
                }
                let mut outcomes: Vec<(String, magicpush_store::PushOutcome)> = chunk
                    .iter()
                    .map(|u| (u.clone(), magicpush_store::PushOutcome::Accepted))
                    .collect();
                fastrand::shuffle(&mut outcomes);
                node.record_push_outcomes(&outcomes, t(10 + round))
                    .await
                    .expect("push outcomes");
            }
        })
    };
    let mut answers = Vec::new();
    for (udid, uuid) in devices.iter().zip(&heads) {
        let node = Arc::clone(&nodes[1]);
        let r = report(udid, Status::Acknowledged, Some(uuid), Dictionary::new());
        answers.push(tokio::spawn(async move {
            node.record_report(&r, t(11)).await.expect("report")
        }));
    }
    for a in answers {
        assert!(a.await.expect("task").dequeued);
    }
    refresh.await.expect("refresh");
    for (udid, uuid) in devices.iter().zip(&heads) {
        assert_eq!(
            result_rows(&schema, udid, uuid, Status::Acknowledged).await,
            1
        );
        let queued = nodes[1].queued(udid).await.unwrap();
        assert!(queued.iter().all(|c| &c.uuid != uuid), "{udid}: {queued:?}");
        assert!(
            !queued.is_empty(),
            "{udid}: the refresh's command is queued"
        );
    }
}
