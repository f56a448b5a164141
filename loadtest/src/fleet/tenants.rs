//! The fleet's tenants (`--topics`): one push certificate and topic each, the devices spread
//! over them, the others than the first (the server's `--cert`) registered through the admin
//! API's `POST /v1/topics`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, StatusCode};
use magicpush_server::client::AdminClient;

use super::device::Role;
use super::FleetError;

/// The admin route that adds a tenant: the certificate and key PEM, as `PUT /v1/pushcert`
/// takes them; 201 with a JSON body when added, 409 when the topic is already there.
pub const REGISTER_ROUTE: &str = "/v1/topics";

/// Registrations in flight at once.
pub const REGISTER_CONCURRENCY: usize = 8;

/// One tenant: a push certificate (PEM) and its topic.
#[derive(Clone)]
pub struct Tenant {
    /// `com.apple.mgmt.External.<uuid>`.
    pub topic: String,
    /// The push certificate.
    pub cert_pem: String,
    /// Its private key.
    pub key_pem: String,
}

impl std::fmt::Debug for Tenant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tenant")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

/// The tenant (index into the tenants) of device `device` out of `tenants`: round robin, so
/// tenants differ by one device at most.
pub fn tenant_of(device: usize, tenants: usize) -> usize {
    device % tenants.max(1)
}

/// Per tenant, the enrolled devices whose push the mock must accept (online and offline;
/// unregistered tokens are answered 410).
pub fn accepted_by_tenant(
    roles: impl IntoIterator<Item = Role>,
    enrolled: &[bool],
    tenants: usize,
) -> Vec<u64> {
    let mut out = vec![0; tenants.max(1)];
    for (i, (role, enrolled)) in roles.into_iter().zip(enrolled).enumerate() {
        if *enrolled && matches!(role, Role::Online | Role::Offline) {
            out[tenant_of(i, tenants)] += 1;
        }
    }
    out
}

/// Registers `tenants` with the server, [`REGISTER_CONCURRENCY`] at once; the wall time (zero
/// for none). The first failure ends it (the fleet cannot run with a tenant missing).
pub async fn register(admin: &AdminClient, tenants: &[Tenant]) -> Result<Duration, FleetError> {
    if tenants.is_empty() {
        return Ok(Duration::ZERO);
    }
    let started = Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let tenants: Arc<[Tenant]> = tenants.into();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..REGISTER_CONCURRENCY.min(tenants.len()) {
        let (admin, tenants, next) = (admin.clone(), tenants.clone(), next.clone());
        workers.spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(tenant) = tenants.get(i) else {
                    return Ok(());
                };
                register_one(&admin, tenant).await?;
            }
        });
    }
    while let Some(done) = workers.join_next().await {
        let outcome = done.map_err(|e| FleetError::Admin {
            what: "POST /v1/topics",
            detail: format!("a registration task failed: {e}"),
        })?;
        if let Err(e) = outcome {
            workers.abort_all();
            return Err(e);
        }
    }
    Ok(started.elapsed())
}

async fn register_one(admin: &AdminClient, tenant: &Tenant) -> Result<(), FleetError> {
    let body = Bytes::from(format!("{}{}", tenant.cert_pem, tenant.key_pem));
    let err = |detail: String| FleetError::Register {
        topic: tenant.topic.clone(),
        detail,
    };
    let (status, answer) = admin
        .request(
            Method::POST,
            REGISTER_ROUTE,
            Some(("application/x-pem-file", body)),
        )
        .await
        .map_err(|e| err(e.to_string()))?;
    registered(status, &answer).map_err(err)
}

/// Whether an answer to `POST /v1/topics` says the tenant was added; why not otherwise.
fn registered(status: StatusCode, body: &[u8]) -> Result<(), String> {
    // The server's `{"error": …}`, else the body as text.
    let text = || {
        let t = serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v.get("error")?.as_str().map(str::to_owned))
            .unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_owned());
        if t.is_empty() {
            t
        } else {
            format!(": {t}")
        }
    };
    match status {
        StatusCode::CREATED => serde_json::from_slice::<serde_json::Value>(body)
            .map(drop)
            .map_err(|e| format!("201 but the body is not JSON ({e}){}", text())),
        StatusCode::CONFLICT => Err(format!(
            "409: the server already has this topic (a fleet registers fresh topics only){}",
            text()
        )),
        StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED => Err(format!(
            "{status}{}: this server has no POST {REGISTER_ROUTE}, which --topics above 1 needs",
            text()
        )),
        _ => Err(format!("{status}{}", text())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_go_round_robin_over_the_tenants() {
        assert_eq!(
            (0..7).map(|i| tenant_of(i, 3)).collect::<Vec<_>>(),
            [0, 1, 2, 0, 1, 2, 0]
        );
        // One tenant: everyone on it (and a zero count cannot divide by zero).
        assert!((0..5).all(|i| tenant_of(i, 1) == 0 && tenant_of(i, 0) == 0));
    }

    #[test]
    fn accepted_pushes_expected_per_tenant() {
        use Role::*;
        let roles = [Online, Offline, Unregistered, Online, Online, Offline];
        let enrolled = [true, true, true, true, false, true];
        // Tenant 0: devices 0 (online), 2 (unregistered: 410), 4 (not enrolled).
        // Tenant 1: devices 1 (offline), 3 (online), 5 (offline).
        assert_eq!(accepted_by_tenant(roles, &enrolled, 2), [1, 3]);
        assert_eq!(accepted_by_tenant(roles, &enrolled, 1), [4]);
        // More tenants than devices: the rest expect nothing.
        assert_eq!(
            accepted_by_tenant(roles[..2].iter().copied(), &enrolled[..2], 4),
            [1, 1, 0, 0]
        );
    }

    #[test]
    fn only_201_with_json_is_a_registration() {
        assert_eq!(registered(StatusCode::CREATED, br#"{"topic":"t"}"#), Ok(()));
        let not_json = registered(StatusCode::CREATED, b"ok").unwrap_err();
        assert!(not_json.contains("not JSON"), "{not_json}");
        let exists = registered(StatusCode::CONFLICT, br#"{"error":"topic exists"}"#).unwrap_err();
        assert!(exists.starts_with("409"), "{exists}");
        for status in [StatusCode::NOT_FOUND, StatusCode::METHOD_NOT_ALLOWED] {
            let missing =
                registered(status, br#"{"error":"no route for /v1/topics"}"#).unwrap_err();
            assert!(
                missing.contains(": no route for /v1/topics: this server has no POST /v1/topics"),
                "{missing}"
            );
        }
        // 200 is not the contract's answer either.
        assert!(registered(StatusCode::OK, b"{}").is_err());
    }
}
