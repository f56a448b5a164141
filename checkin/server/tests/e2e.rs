//! End to end: the real server on a loopback port with the SQLite store in a temp dir, the
//! engine's APNs client, the mock APNs, and simulated devices that answer pushes.

mod server_common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, StatusCode};
use magicpush_engine::cert::PushCertificate;
use magicpush_engine::Client;
use magicpush_fixtures::plists::{self, Device};
use magicpush_fixtures::TestPki;
use magicpush_loadtest::mock_apns::{MockApns, MockConfig};
use magicpush_server::client::AdminClient;
use magicpush_server::http::{self as mhttp, AdminKey, App, DeviceAuth, ListenerSettings};
use magicpush_server::push::PushSender;
use magicpush_server::service::{PushCertState, Service, ServiceConfig};
use magicpush_sqlite::SqliteStore;
use magicpush_store::Store;
use server_common::{command_of, device, token_hex, API_KEY};

const WAIT: Duration = Duration::from_secs(10);

struct World {
    admin: AdminClient,
    topic: String,
}

impl World {
    async fn put(&self, path: &str, dict: &plist::Dictionary) -> (StatusCode, Bytes) {
        self.admin
            .request(
                Method::PUT,
                path,
                Some((
                    "application/x-apple-aspen-mdm-checkin",
                    Bytes::from(plists::to_xml(dict)),
                )),
            )
            .await
            .expect("device request")
    }

    async fn enroll(&self, d: &Device) {
        let (s, _) = self
            .put("/mdm/checkin", &plists::authenticate(d, &self.topic))
            .await;
        assert_eq!(s, StatusCode::OK);
        let (s, _) = self
            .put("/mdm/checkin", &plists::token_update(d, &self.topic))
            .await;
        assert_eq!(s, StatusCode::OK);
    }

    async fn state(&self, udid: &str) -> String {
        let d = self
            .admin
            .get_json(&format!("/v1/devices/{udid}"))
            .await
            .unwrap();
        d["state"].as_str().unwrap_or_default().to_owned()
    }

    async fn wait_state(&self, udid: &str, want: &str) {
        let until = Instant::now() + WAIT;
        loop {
            let got = self.state(udid).await;
            if got == want {
                return;
            }
            assert!(Instant::now() < until, "{udid}: {got}, wanted {want}");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// What a device does when woken: Idle, run the DeviceInformation it gets, report it.
    async fn answer_push(&self, d: &Device) {
        let (s, body) = self.put("/mdm/server", &plists::report_idle(d)).await;
        assert_eq!(s, StatusCode::OK);
        let (uuid, request_type) = command_of(&body);
        assert_eq!(request_type, "DeviceInformation");
        let (s, body) = self
            .put("/mdm/server", &plists::report_device_information(d, &uuid))
            .await;
        assert_eq!(s, StatusCode::OK);
        assert!(body.is_empty());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enroll_refresh_report_with_mock_apns_and_sqlite() {
    let pki = TestPki::generate().unwrap();
    let online = [device(1), device(2)];
    let gone = device(3);
    let offline = device(4);

    let mut mock_config = MockConfig::default();
    mock_config.unregistered.insert(token_hex(&gone));
    let mock = MockApns::start(
        "127.0.0.1:0".parse().unwrap(),
        &pki.server.cert_pem,
        &pki.server.key_pem,
        pki.ca.cert_pem(),
        mock_config,
    )
    .await
    .unwrap();
    let mut accepted = mock.subscribe_accepted();

    let cert = PushCertificate::from_pem(pki.push.cert_pem.as_bytes(), pki.push.key_pem.as_bytes())
        .unwrap();
    let info = cert.info().clone();
    let client = Client::builder()
        .certificate(cert)
        .endpoint(mock.url().parse().unwrap())
        .trust_anchor_pem(pki.ca.cert_pem().as_bytes())
        .unwrap()
        .deadline(Duration::from_secs(5))
        .build()
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path()).unwrap());
    let service = Arc::new(Service::new(
        store,
        Arc::new(client.clone()) as Arc<dyn PushSender>,
        PushCertState::new(Some(info)),
        ServiceConfig {
            unreachable_after: Some(Duration::from_secs(4)),
            push_concurrency: 16,
            ..ServiceConfig::default()
        },
    ));
    service.load_pushcert_state().await.unwrap();
    let app = Arc::new(App::new(
        service,
        AdminKey::new(Some(API_KEY)),
        mhttp::DEFAULT_BODY_LIMIT,
        // The push → wake → report loop; device identity has its own tests.
        DeviceAuth::Off,
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = mhttp::spawn(listener, None, app, ListenerSettings::default()).unwrap();
    let world = World {
        admin: AdminClient::new(&server.url(), Some(API_KEY.into()), None)
            .unwrap()
            .with_timeout(WAIT),
        topic: pki.topic.clone(),
    };

    for d in online.iter().chain([&gone, &offline]) {
        world.enroll(d).await;
        assert_eq!(world.state(&d.udid).await, "never_pushed");
    }

    let summary = world
        .admin
        .send_json(
            Method::POST,
            "/v1/refresh",
            &serde_json::json!({"all": true}),
        )
        .await
        .unwrap();
    assert_eq!(summary["pushing"], 4, "{summary}");
    assert_eq!(summary["enqueued"], 4, "{summary}");

    // The mock accepts three pushes (the fourth token is unregistered); each carries the
    // device's PushMagic and the certificate's topic.
    let mut woken = HashSet::new();
    while woken.len() < 3 {
        let push = tokio::time::timeout(WAIT, accepted.recv())
            .await
            .expect("pushes reach the mock")
            .expect("mock running");
        assert_eq!(push.topic, pki.topic);
        let d = online
            .iter()
            .chain([&offline])
            .find(|d| token_hex(d) == push.token)
            .expect("a pushed device");
        assert_eq!(push.magic, d.push_magic);
        woken.insert(push.token);
    }
    assert_eq!(mock.accepted_for(&token_hex(&gone)), 0);

    // Woken online devices answer; the offline one does not.
    for d in &online {
        world.answer_push(d).await;
        assert_eq!(world.state(&d.udid).await, "responded");
    }
    world.wait_state(&gone.udid, "unregistered").await;
    assert_eq!(world.state(&offline.udid).await, "pending");
    let report = world.admin.get_json("/v1/connectivity").await.unwrap();
    assert_eq!(report["states"]["responded"], 2, "{report}");
    assert_eq!(report["states"]["unregistered"], 1, "{report}");
    assert_eq!(report["states"]["pending"], 1, "{report}");
    assert!(report["latency_ms"]["p50"].is_u64(), "{report}");

    world.wait_state(&offline.udid, "unreachable").await;

    let csv = world.admin.get_text("/v1/devices.csv").await.unwrap();
    let rows: Vec<Vec<String>> = csv
        .split("\r\n")
        .filter(|l| !l.is_empty())
        .map(|l| l.split(',').map(str::to_owned).collect())
        .collect();
    assert_eq!(rows.len(), 5, "{csv}");
    // UDID, Device name, Model, OS version, Serial number, Collected at, Enrolled at, State, …
    let state_of = |serial: &str| {
        rows.iter()
            .find(|r| r[4] == serial)
            .unwrap_or_else(|| panic!("row for {serial} in {csv}"))[7]
            .clone()
    };
    for d in &online {
        assert_eq!(state_of(&d.serial_number), "responded");
        let row = rows.iter().find(|r| r[4] == d.serial_number).unwrap();
        assert_eq!(row[0], d.udid);
        assert_eq!(row[1], d.device_name);
        assert_eq!(row[3], "18.5");
        assert!(
            !row[5].is_empty(),
            "collected at is set after DeviceInformation"
        );
    }
    assert_eq!(state_of(&gone.serial_number), "unregistered");
    assert_eq!(state_of(&offline.serial_number), "unreachable");

    // A second refresh skips the unregistered token and does not pile up DeviceInformation
    // for the offline device.
    let again = world
        .admin
        .send_json(
            Method::POST,
            "/v1/refresh",
            &serde_json::json!({"all": true}),
        )
        .await
        .unwrap();
    assert_eq!(again["pushing"], 3, "{again}");
    assert_eq!(again["already_queued"], 1, "{again}");
    assert_eq!(again["skipped"]["token_invalid"], 1, "{again}");

    server.shutdown().await;
    client.shutdown().await;
    mock.shutdown().await;
}
