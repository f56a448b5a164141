//! The trivial MDM stand-in: the floor a fleet run is measured against (`fleet --baseline`).
//!
//! It takes the identical device traffic and does the least an MDM server can and still let
//! the job finish: every check-in is answered 200 (TokenUpdates leave their token, push
//! magic and topic in memory, the only thing it keeps, since it must push them),
//! `POST /v1/refresh` pushes every token on its topic through the same engine (with every
//! tenant's certificate) to the same mock APNs, each `Idle` report gets one canned
//! DeviceInformation command, and every other report an empty 200. No store, no queue, no
//! connectivity report. Started with an authenticator, it also verifies every
//! device request's `Mdm-Signature` first (403 if it does not verify), as a magicpush server
//! does: the floor of a signed run's own work (`floor_verifying_s`).

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use dashmap::DashMap;
use http_body_util::{BodyExt, Full};
use magicpush_engine::{Client, DevicePush, DeviceToken};
use magicpush_server::identity::DeviceAuthenticator;

use super::pki::signature_verifies;

/// The command every Idle gets (a fixed UUID: the stand-in remembers nothing).
const CANNED_COMMAND: &[u8] = b"<?xml version=\"1.0\" encoding=\"UTF-8\"?>
<!DOCTYPE plist PUBLIC \"-//Apple//DTD PLIST 1.0//EN\" \"http://www.apple.com/DTDs/PropertyList-1.0.dtd\">
<plist version=\"1.0\">
<dict>
<key>Command</key>
<dict>
<key>Queries</key>
<array><string>DeviceName</string><string>OSVersion</string><string>SerialNumber</string></array>
<key>RequestType</key>
<string>DeviceInformation</string>
</dict>
<key>CommandUUID</key>
<string>0F000000-0000-4000-8000-000000000001</string>
</dict>
</plist>
";

/// A running stand-in.
pub struct StandIn {
    addr: SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
}

impl StandIn {
    /// Serves on 127.0.0.1 (a free port), pushing with `client`, at most `push_concurrency`
    /// pushes waiting at once (as the server's `--push-concurrency`); with `verify`, every
    /// device request's signature is verified first.
    pub async fn start(
        client: Client,
        push_concurrency: usize,
        verify: Option<Arc<DeviceAuthenticator>>,
    ) -> std::io::Result<StandIn> {
        let state = Arc::new(State {
            tokens: DashMap::new(),
            client,
            push_concurrency: push_concurrency.max(1),
            verify,
        });
        let (addr, stop) = crate::plain_http::serve(move |req| {
            let state = state.clone();
            async move { state.handle(req).await }
        })
        .await?;
        Ok(StandIn { addr, stop })
    }

    /// Its base URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting (open connections end with their peers).
    pub fn stop(self) {
        let _ = self.stop.send(());
    }
}

struct State {
    /// UDID → (token, push magic, topic), from TokenUpdate.
    tokens: DashMap<String, (DeviceToken, String, Arc<str>)>,
    client: Client,
    push_concurrency: usize,
    /// Verify each device request's `Mdm-Signature` with this.
    verify: Option<Arc<DeviceAuthenticator>>,
}

impl State {
    async fn handle(
        self: &Arc<Self>,
        req: crate::plain_http::Request,
    ) -> crate::plain_http::Response {
        let (parts, body) = req.into_parts();
        let body = match body.collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => return status(400),
        };
        let path = parts.uri.path();
        if let (Some(auth), "/mdm/checkin" | "/mdm/server" | "/mdm") = (&self.verify, path) {
            if !signature_verifies(auth, &parts.headers, &body) {
                return status(403);
            }
        }
        match path {
            "/mdm/checkin" => {
                self.checkin(&body);
                status(200)
            }
            "/mdm/server" | "/mdm" => {
                if contains(&body, b"<string>Idle</string>") {
                    hyper::Response::new(Full::new(Bytes::from_static(CANNED_COMMAND)))
                } else {
                    status(200)
                }
            }
            "/v1/refresh" => {
                let pushing = self.refresh();
                let json = format!("{{\"pushing\": {pushing}}}");
                let mut resp = hyper::Response::new(Full::new(Bytes::from(json)));
                *resp.status_mut() = http::StatusCode::ACCEPTED;
                resp
            }
            _ => status(404),
        }
    }

    /// A TokenUpdate's token, magic and topic are kept; every other check-in is just answered.
    fn checkin(&self, body: &[u8]) {
        if !contains(body, b"<string>TokenUpdate</string>") {
            return;
        }
        let Ok(dict) = plist::from_bytes::<plist::Dictionary>(body) else {
            return;
        };
        let udid = dict.get("UDID").and_then(plist::Value::as_string);
        let magic = dict.get("PushMagic").and_then(plist::Value::as_string);
        let topic = dict.get("Topic").and_then(plist::Value::as_string);
        let token = dict
            .get("Token")
            .and_then(plist::Value::as_data)
            .and_then(|t| DeviceToken::from_bytes(t).ok());
        if let (Some(udid), Some(magic), Some(token), Some(topic)) = (udid, magic, token, topic) {
            self.tokens
                .insert(udid.to_owned(), (token, magic.to_owned(), topic.into()));
        }
    }

    /// Pushes every known token in the background; how many.
    fn refresh(self: &Arc<Self>) -> usize {
        let pushes: Vec<DevicePush> = self
            .tokens
            .iter()
            .map(|e| {
                let (token, magic, topic) = e.value();
                DevicePush::new(token.clone(), magic.clone()).with_topic(topic.clone())
            })
            .collect();
        let n = pushes.len();
        let client = self.client.clone();
        let concurrency = self.push_concurrency;
        tokio::spawn(async move {
            let mut tasks = tokio::task::JoinSet::new();
            for push in pushes {
                let client = client.clone();
                tasks.spawn(async move { client.push(push).await });
                while tasks.len() >= concurrency {
                    tasks.join_next().await;
                }
            }
            while tasks.join_next().await.is_some() {}
        });
        n
    }
}

fn status(code: u16) -> hyper::Response<Full<Bytes>> {
    let mut resp = hyper::Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = http::StatusCode::from_u16(code).unwrap_or(http::StatusCode::OK);
    resp
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
