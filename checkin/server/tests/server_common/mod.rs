//! Shared by the server tests: a server on 127.0.0.1 with a MemoryStore and a FakePusher, and
//! simulated devices that speak the MDM check-in protocol over HTTP.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, StatusCode};
use magicpush_engine::cert::CertificateInfo;
use magicpush_fixtures::plists::{self, Device};
use magicpush_fixtures::TestPki;
use magicpush_server::client::AdminClient;
use magicpush_server::http::{
    self as mhttp, AdminKey, App, DeviceAuth, ListenerSettings, ServerHandle,
};
use magicpush_server::identity::authenticator::parse_sources;
use magicpush_server::identity::{DeviceAuthenticator, DeviceTrust};
use magicpush_server::push::PushSender;
use magicpush_server::service::{PushCertState, Service, ServiceConfig};
use magicpush_sqlite::{SqliteOptions, SqliteStore};
use magicpush_store::{MemoryStore, SecretKey, Store};
use magicpush_testkit::FakePusher;
use plist::Dictionary;

pub(crate) const API_KEY: &str = "test-admin-key-0123456789";
/// The proxy header a `device_auth` test server reads client certificates from.
pub(crate) const CERT_HEADER: &str = "x-client-cert";

/// How to start a test server.
pub(crate) struct Options {
    pub api_key: Option<&'static str>,
    pub body_limit: usize,
    pub unreachable_after: Duration,
    pub tls: bool,
    /// Device requests need an identity from the test CA (`--device-auth
    /// signature,tls,header`, the header being [`CERT_HEADER`]), bound at Authenticate.
    pub device_auth: bool,
    /// The durable SQLite store (in the test's directory) instead of the in-memory one.
    pub sqlite: bool,
    /// With `sqlite`: escrowed tokens sealed with a secrets key (`--secrets-key-file`).
    pub secrets_key: bool,
    /// Timeouts and limits of the listener.
    pub listener: ListenerSettings,
    /// Start with the test PKI's push certificate (else with none, as on the manual's first
    /// page).
    pub push_cert: bool,
    /// This store instead of the memory or SQLite one (a PostgreSQL store).
    pub store: Option<Arc<dyn Store>>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            api_key: Some(API_KEY),
            body_limit: mhttp::DEFAULT_BODY_LIMIT,
            unreachable_after: Duration::from_secs(300),
            tls: false,
            device_auth: false,
            sqlite: false,
            secrets_key: false,
            listener: ListenerSettings::default(),
            push_cert: true,
            store: None,
        }
    }
}

pub(crate) struct TestServer {
    pub handle: Option<ServerHandle>,
    pub url: String,
    pub pusher: Arc<FakePusher>,
    pub store: Arc<dyn Store>,
    pub service: Arc<Service>,
    pub pki: TestPki,
    /// Authenticated admin client.
    pub admin: AdminClient,
    /// A client without a key (devices, public endpoints).
    pub anon: AdminClient,
    pub dir: tempfile::TempDir,
}

impl TestServer {
    pub(crate) async fn start(opts: Options) -> TestServer {
        let pki = TestPki::generate().expect("test PKI");
        let dir = tempfile::tempdir().expect("tempdir");
        let store: Arc<dyn Store> = if let Some(store) = opts.store.clone() {
            store
        } else if opts.sqlite {
            let options = SqliteOptions {
                secrets_key: opts
                    .secrets_key
                    .then(|| Arc::new(SecretKey::from_bytes(&[7u8; 32]).expect("a 32-byte key"))),
                ..SqliteOptions::default()
            };
            Arc::new(SqliteStore::open_with(&dir.path().join("db"), options).expect("SQLite store"))
        } else {
            Arc::new(MemoryStore::new())
        };
        let pusher = FakePusher::new();
        let info = opts.push_cert.then(|| {
            CertificateInfo::from_pem(pki.push.cert_pem.as_bytes()).expect("push cert info")
        });
        let service = Arc::new(Service::new(
            store.clone(),
            pusher.clone() as Arc<dyn PushSender>,
            PushCertState::new(info),
            ServiceConfig {
                unreachable_after: Some(opts.unreachable_after),
                push_concurrency: 8,
                ..ServiceConfig::default()
            },
        ));
        service
            .load_pushcert_state()
            .await
            .expect("the push certificate's state");
        let device_auth = if opts.device_auth {
            let ca = rustls_pki_types::CertificateDer::from(pki.ca.cert_der().to_vec());
            let trust = DeviceTrust::new(&[ca], Vec::new()).expect("device CA");
            let sources = parse_sources("signature,tls,header").unwrap();
            let header = http::HeaderName::from_static(CERT_HEADER);
            DeviceAuth::Required(Arc::new(
                DeviceAuthenticator::new(sources, trust, Some(header)).expect("authenticator"),
            ))
        } else {
            DeviceAuth::Off
        };
        let hints = match &device_auth {
            DeviceAuth::Required(a) => Some(a.trust().root_subjects()),
            DeviceAuth::Off => None,
        };
        let app = Arc::new(App::new(
            service.clone(),
            AdminKey::new(opts.api_key),
            opts.body_limit,
            device_auth,
        ));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let tls = if opts.tls {
            let cert = dir.path().join("tls.pem");
            let key = dir.path().join("tls.key.pem");
            std::fs::write(&cert, &pki.server.cert_pem).unwrap();
            std::fs::write(&key, &pki.server.key_pem).unwrap();
            Some(mhttp::tls::server_config(&cert, &key, hints).expect("TLS config"))
        } else {
            None
        };
        let handle = mhttp::spawn(listener, tls, app, opts.listener.clone()).expect("spawn");
        let url = handle.url();
        let ca = opts.tls.then(|| pki.ca.cert_pem().as_bytes().to_vec());
        let admin = AdminClient::new(&url, opts.api_key.map(str::to_owned), ca.as_deref())
            .expect("admin client")
            .with_timeout(Duration::from_secs(10));
        let anon = AdminClient::new(&url, None, ca.as_deref())
            .expect("client")
            .with_timeout(Duration::from_secs(10));
        TestServer {
            handle: Some(handle),
            url,
            pusher,
            store,
            service,
            pki,
            admin,
            anon,
            dir,
        }
    }

    pub(crate) fn topic(&self) -> String {
        self.pki.topic.clone()
    }

    /// PUTs a plist to a device endpoint; returns the status and body.
    pub(crate) async fn put(&self, path: &str, dict: &Dictionary) -> (StatusCode, Bytes) {
        self.put_raw(path, plists::to_xml(dict)).await
    }

    pub(crate) async fn put_raw(&self, path: &str, body: Vec<u8>) -> (StatusCode, Bytes) {
        put_with(&self.anon, path, body).await
    }

    /// A client presenting a device identity certificate for `udid` issued by the test CA.
    pub(crate) fn device_client(&self, udid: &str) -> AdminClient {
        let id = magicpush_fixtures::device_identity_cert(
            &self.pki.ca,
            udid,
            magicpush_fixtures::KeyKind::EcdsaP256,
        )
        .expect("device identity");
        AdminClient::new(&self.url, None, Some(self.pki.ca.cert_pem().as_bytes()))
            .unwrap()
            .with_client_identity(id.cert_pem.as_bytes(), id.key_pem.as_bytes())
            .expect("client identity")
    }
}

/// PUTs a body to a device endpoint with `client`.
pub(crate) async fn put_with(
    client: &AdminClient,
    path: &str,
    body: Vec<u8>,
) -> (StatusCode, Bytes) {
    client
        .request(
            Method::PUT,
            path,
            Some(("application/x-apple-aspen-mdm-checkin", Bytes::from(body))),
        )
        .await
        .expect("device request")
}

impl TestServer {
    /// Authenticate + TokenUpdate, both answered 200.
    pub(crate) async fn enroll(&self, dev: &Device) {
        let (s, _) = self
            .put("/mdm/checkin", &plists::authenticate(dev, &self.topic()))
            .await;
        assert_eq!(s, StatusCode::OK, "Authenticate of {}", dev.udid);
        let (s, _) = self
            .put("/mdm/checkin", &plists::token_update(dev, &self.topic()))
            .await;
        assert_eq!(s, StatusCode::OK, "TokenUpdate of {}", dev.udid);
    }

    pub(crate) async fn device_json(&self, udid: &str) -> serde_json::Value {
        self.admin
            .get_json(&format!("/v1/devices/{udid}"))
            .await
            .expect("device json")
    }

    pub(crate) async fn state(&self, udid: &str) -> String {
        self.device_json(udid).await["state"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Waits (bounded) until the device's state is `want`.
    pub(crate) async fn wait_state(&self, udid: &str, want: &str, within: Duration) {
        let until = Instant::now() + within;
        loop {
            let got = self.state(udid).await;
            if got == want {
                return;
            }
            assert!(Instant::now() < until, "{udid}: state {got}, wanted {want}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub(crate) async fn shutdown(&mut self) {
        if let Some(h) = self.handle.take() {
            h.shutdown().await;
        }
    }
}

/// The `n`th simulated device: distinct UDID, serial, token and name.
pub(crate) fn device(n: u8) -> Device {
    let mut d = Device::iphone();
    d.udid = format!("00008110-00000000000000{n:02X}");
    d.serial_number = format!("SERIAL{n:04}");
    d.token = (0u8..32)
        .map(|i| i.wrapping_mul(31).wrapping_add(n))
        .collect();
    d.push_magic = format!("MAGIC-{n}");
    d.device_name = format!("Device {n}");
    d
}

/// Hex of a device's token, as the pusher sees it.
pub(crate) fn token_hex(d: &Device) -> String {
    hex::encode(&d.token)
}

/// The command a device got back: (CommandUUID, RequestType).
pub(crate) fn command_of(body: &[u8]) -> (String, String) {
    let dict: Dictionary = plist::from_bytes(body).expect("command plist");
    let uuid = dict
        .get("CommandUUID")
        .and_then(|v| v.as_string())
        .expect("CommandUUID")
        .to_owned();
    let request_type = dict
        .get("Command")
        .and_then(|v| v.as_dictionary())
        .and_then(|c| c.get("RequestType"))
        .and_then(|v| v.as_string())
        .expect("RequestType")
        .to_owned();
    (uuid, request_type)
}
