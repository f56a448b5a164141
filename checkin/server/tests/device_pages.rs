//! The device list a page at a time (`GET /v1/devices?limit=N[&cursor=C]`), with its state
//! and search filters, over HTTP.

mod server_common;

use http::{Method, StatusCode};
use magicpush_server::service::paging::SCAN_FLOOR;
use magicpush_testkit::conformance::{authenticate, t, token_update};
use serde_json::Value;
use server_common::*;

/// `n` devices `PAGE-0000`…: every other one enrolled (`never_pushed`, the rest `no_token`),
/// every tenth named `Kiosk <i>`; in the memory store, or (`sqlite`) the durable one.
async fn fleet_in(n: usize, sqlite: bool) -> (TestServer, Vec<String>) {
    let srv = TestServer::start(Options {
        sqlite,
        ..Options::default()
    })
    .await;
    let udids: Vec<String> = (0..n).map(|i| format!("PAGE-{i:04}")).collect();
    // Concurrent, so that SQLite's group commit takes them in a few commits.
    let mut writes = tokio::task::JoinSet::new();
    for (i, udid) in udids.iter().enumerate() {
        let (store, udid) = (srv.store.clone(), udid.clone());
        writes.spawn(async move {
            let mut msg = authenticate(&udid);
            if i % 10 == 0 {
                msg.info.device_name = Some(format!("Kiosk {i}"));
            }
            store.authenticate(&msg, None, t(0)).await.unwrap();
            if i % 2 == 0 {
                store
                    .token_update(&token_update(&udid, 1), t(0))
                    .await
                    .unwrap();
            }
        });
    }
    while let Some(written) = writes.join_next().await {
        written.unwrap();
    }
    (srv, udids)
}

async fn fleet(n: usize) -> (TestServer, Vec<String>) {
    fleet_in(n, false).await
}

async fn get(srv: &TestServer, path: &str) -> (StatusCode, Value) {
    let (status, body) = srv.admin.request(Method::GET, path, None).await.unwrap();
    let json = serde_json::from_slice(&body)
        .unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {}", String::from_utf8_lossy(&body)));
    (status, json)
}

/// Every page from the first, following `next_cursor` until it is null: the UDIDs in the order
/// served, and the pages' sizes.
async fn walk(srv: &TestServer, query: &str) -> (Vec<String>, Vec<usize>) {
    let (mut udids, mut sizes) = (Vec::new(), Vec::new());
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/devices?{query}&cursor={c}"),
            None => format!("/v1/devices?{query}"),
        };
        let (status, page) = get(srv, &path).await;
        assert_eq!(status, StatusCode::OK, "{path}: {page}");
        assert!(page["generated_at"].is_string(), "{page}");
        let devices = page["devices"].as_array().expect("a devices array");
        sizes.push(devices.len());
        for d in devices {
            assert!(d["state"].is_string(), "a device view: {d}");
            udids.push(d["udid"].as_str().unwrap().to_owned());
        }
        match &page["next_cursor"] {
            Value::Null => return (udids, sizes),
            Value::String(c) => cursor = Some(c.clone()),
            other => panic!("next_cursor is a string or null, got {other}"),
        }
        assert!(sizes.len() < 10_000, "the walk does not end");
    }
}

/// In the memory store and in SQLite: the pages hold the fleet, and each is full but the last.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_of_seven_hold_every_device_once_in_udid_order() {
    for sqlite in [false, true] {
        let (srv, udids) = fleet_in(300, sqlite).await;
        let (listed, sizes) = walk(&srv, "limit=7").await;
        assert_eq!(
            listed, udids,
            "every device once, in UDID order (sqlite: {sqlite})"
        );
        assert_eq!(sizes.len(), 300usize.div_ceil(7), "{sizes:?}");
        assert!(
            sizes[..sizes.len() - 1].iter().all(|&n| n == 7),
            "{sizes:?}"
        );

        let (listed, _) = walk(&srv, "limit=7&state=never_pushed&q=kiosk").await;
        let enrolled_kiosks: Vec<String> = udids.iter().step_by(10).cloned().collect();
        assert_eq!(listed, enrolled_kiosks, "sqlite: {sqlite}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_and_search_filter_the_pages_and_the_streamed_list() {
    let (srv, udids) = fleet(300).await;
    let enrolled: Vec<String> = udids.iter().step_by(2).cloned().collect();
    let (listed, _) = walk(&srv, "limit=7&state=never_pushed").await;
    assert_eq!(listed, enrolled);

    // By name, ignoring case.
    let kiosks: Vec<String> = udids.iter().step_by(10).cloned().collect();
    let (listed, _) = walk(&srv, "limit=7&q=kIOSK").await;
    assert_eq!(listed, kiosks);
    // By serial (`SN-<udid>`) and UDID, trimmed.
    let (listed, _) = walk(&srv, "limit=3&q=%20sn-page-012%20").await;
    assert_eq!(listed, udids[120..130].to_vec());
    let (listed, _) = walk(&srv, "limit=3&q=page-0299").await;
    assert_eq!(listed, vec!["PAGE-0299".to_owned()]);
    // Both filters at once.
    let (listed, _) = walk(&srv, "limit=4&state=no_token&q=page-01").await;
    let odd: Vec<String> = udids[100..200].iter().skip(1).step_by(2).cloned().collect();
    assert_eq!(listed, odd);

    // Without limit, q filters the streamed list and the CSV export too.
    let (status, all) = get(&srv, "/v1/devices?q=KIOSK").await;
    assert_eq!(status, StatusCode::OK);
    let streamed: Vec<&str> = all
        .as_array()
        .expect("the streamed array")
        .iter()
        .map(|d| d["udid"].as_str().unwrap())
        .collect();
    assert_eq!(streamed, kiosks);
    let csv = srv.admin.get_text("/v1/devices.csv?q=kiosk").await.unwrap();
    assert_eq!(csv.lines().count(), kiosks.len() + 1, "{csv}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_limit_cursor_or_search_is_a_400_that_says_what_to_send() {
    let (srv, _) = fleet(3).await;
    let cases = [
        ("/v1/devices?limit=0", "1 to 1000"),
        ("/v1/devices?limit=1001", "1 to 1000"),
        ("/v1/devices?limit=ten", "1 to 1000"),
        ("/v1/devices?limit=5&cursor=%21%21", "next_cursor"),
        ("/v1/devices?limit=5&cursor=UEFHRS0wMDAx", "next_cursor"),
        ("/v1/devices?cursor=abc", "give limit"),
        ("/v1/devices?limit=5&q=%20%20", "leave q out"),
        ("/v1/devices?state=asleep&limit=5", "unknown state"),
        ("/v1/devices?limit=5&page=2", "unknown field"),
        ("/v1/devices.csv?limit=5", "not limit or cursor"),
    ];
    for (path, says) in cases {
        let (status, body) = get(&srv, path).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {body}");
        let message = body["error"].as_str().unwrap_or_default();
        assert!(
            message.contains(says),
            "{path}: {message:?} should say {says:?}"
        );
    }
}

/// A filter matching nothing over a fleet larger than the scan bound: the first request stops
/// at the bound with an empty page and a cursor, the next reads the rest and ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filter_matching_nothing_answers_empty_pages_until_the_end() {
    let (srv, _) = fleet(SCAN_FLOOR + 200).await;
    let (status, first) = get(&srv, "/v1/devices?limit=1&q=no-such-device").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(first["devices"], serde_json::json!([]));
    assert!(first["next_cursor"].is_string(), "keep going: {first}");

    let (listed, sizes) = walk(&srv, "limit=1&q=no-such-device").await;
    assert!(listed.is_empty());
    assert_eq!(sizes, vec![0, 0], "one bounded scan, then the rest");

    // A match past the bound is found on the page after the empty one, which reads on to
    // the end (room for two: it does not stop at the match).
    let (listed, sizes) = walk(&srv, &format!("limit=2&q=PAGE-{}", SCAN_FLOOR + 150)).await;
    assert_eq!(listed, vec![format!("PAGE-{}", SCAN_FLOOR + 150)]);
    assert_eq!(sizes, vec![0, 1]);
}
