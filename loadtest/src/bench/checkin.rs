//! The check-in benchmark: device check-ins per second against the magicpush server with its
//! durable SQLite store, side by side in one run with the same server on the in-memory store
//! and with a bare hyper server that answers a trivial 200 — so the cost of durability (and of
//! the server's own work) shows as a ratio, not as a number that depends on the machine.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use http::HeaderMap;
use http_body_util::{BodyExt, Full};
use magicpush_server::http::{self as server, App, DeviceAuth, ListenerSettings};
use magicpush_server::identity::DeviceAuthenticator;
use magicpush_sqlite::SqliteStore;
use magicpush_store::{MemoryStore, Store};
use serde::Serialize;
use tokio::net::TcpListener;

use crate::fleet::conn::{DeviceConn, CHECKIN_TYPE};
use crate::fleet::device::{generate, SimDevice};
use crate::fleet::pki::{issue_identities, signature_authenticator, signature_verifies};
use crate::fleet::signer::DeviceSigner;
use magicpush_fixtures::{device_identity_cert_for_key, Ca, KeyKind, SharedKey};

/// What to measure.
#[derive(Debug, Clone)]
pub struct CheckinBenchOptions {
    /// Simulated devices; each sends Authenticate then TokenUpdate (two check-ins).
    pub devices: usize,
    /// Concurrent keep-alive connections.
    pub concurrency: usize,
    /// How the devices authenticate in the main runs.
    pub device_auth: BenchDeviceAuth,
    /// Also run the in-memory and durable servers the other way, in the same run, so the
    /// cost of verifying signatures shows as a ratio.
    pub compare_device_auth: bool,
    /// The devices' key type.
    pub identity_key: IdentityKey,
    /// Also run the server on PostgreSQL at this URL, in a schema of its own.
    pub database_url: Option<String>,
}

/// The key type of the simulated devices' identities.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum IdentityKey {
    /// ECDSA P-256, a key per device (hardware-bound ACME identities).
    P256,
    /// RSA 2048 (what SCEP identities mostly are): one key shared by every device, each with
    /// its own certificate — the server's work is the same, and a key per device would take
    /// hours to generate.
    Rsa2048,
}

/// Device authentication in a bench run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum BenchDeviceAuth {
    /// Each device has its own P-256 identity and signs every check-in (`Mdm-Signature`);
    /// the server verifies the signature and the certificate and binds it at Authenticate.
    Signature,
    /// No signatures; the server does not authenticate devices.
    None,
}

/// One server variant's result.
#[derive(Debug, Clone, Serialize)]
pub struct ModeResult {
    pub mode: &'static str,
    pub checkins: u64,
    pub elapsed_s: f64,
    pub checkins_per_s: f64,
    /// Writes per commit: how well group commit batched (SQLite and PostgreSQL modes).
    pub writes_per_commit: Option<f64>,
}

/// The whole run; `--json` prints this.
#[derive(Debug, Clone, Serialize)]
pub struct CheckinBenchReport {
    pub devices: usize,
    pub concurrency: usize,
    /// How the devices of `trivial`, `memory` and `durable` authenticated.
    pub device_auth: BenchDeviceAuth,
    /// Their identities' key type, when they signed.
    pub identity_key: IdentityKey,
    pub trivial: ModeResult,
    pub memory: ModeResult,
    /// The durable SQLite store.
    pub durable: ModeResult,
    /// With `--database-url`: the same server on the PostgreSQL store.
    pub postgres: Option<ModeResult>,
    /// PostgreSQL / SQLite (`durable`) check-ins per second.
    pub ratio_postgres_vs_sqlite: Option<f64>,
    /// durable / trivial check-ins per second.
    pub ratio_durable_vs_trivial: f64,
    /// durable / memory check-ins per second.
    pub ratio_durable_vs_memory: f64,
    /// With `--compare-device-auth`: the same servers with the other device authentication.
    pub other_device_auth: Option<OtherAuth>,
    /// With signatures in this run: one verification (CMS parse, ECDSA P-256, the kept chain
    /// verdict) measured alone on this machine, microseconds per check-in.
    pub verify_us_per_checkin: Option<f64>,
    /// When any run signs: the trivial server that also verifies every signature, with the
    /// magicpush servers' own authenticator (chain verdicts kept), and stores nothing. The
    /// floor of the signed runs, which the trivial 200 server is not: it verifies nothing.
    pub trivial_verifying: Option<ModeResult>,
    /// The signed runs against that floor: in-memory and durable check-ins/s over
    /// `trivial_verifying`'s.
    pub signed_vs_trivial_verifying: Option<SignedFloorRatios>,
}

/// The signed runs over the verifying floor (see [`CheckinBenchReport::trivial_verifying`]).
#[derive(Debug, Clone, Serialize)]
pub struct SignedFloorRatios {
    pub memory: f64,
    pub durable: f64,
}

/// The comparison runs of `--compare-device-auth`.
#[derive(Debug, Clone, Serialize)]
pub struct OtherAuth {
    pub device_auth: BenchDeviceAuth,
    pub memory: ModeResult,
    pub durable: ModeResult,
    pub postgres: Option<ModeResult>,
    /// PostgreSQL / SQLite check-ins per second with this device authentication.
    pub ratio_postgres_vs_sqlite: Option<f64>,
    /// Check-ins/s with signatures over without, durable store.
    pub durable_signature_over_none: f64,
    /// Check-ins/s with signatures over without, in-memory store.
    pub memory_signature_over_none: f64,
}

/// One device's two check-ins, built (and signed) before the clock starts.
#[derive(Clone)]
struct Checkin {
    body: Vec<u8>,
    signature: Option<String>,
}

/// Every device's check-ins, and what the servers need to verify them.
struct Workload {
    checkins: Arc<Vec<[Checkin; 2]>>,
    device_ca_der: Option<Vec<u8>>,
}

const TOPIC: &str = "com.apple.mgmt.External.bench";

/// Runs the variants one after the other on one runtime.
pub fn run(opts: &CheckinBenchOptions) -> anyhow::Result<CheckinBenchReport> {
    let devices = generate(opts.devices, 0.0, 0.0, 7);
    let needs_signatures =
        opts.device_auth == BenchDeviceAuth::Signature || opts.compare_device_auth;
    let (signed, unsigned) = workloads(&devices, needs_signatures, opts.identity_key)?;
    let main = match opts.device_auth {
        BenchDeviceAuth::Signature => &signed,
        BenchDeviceAuth::None => &unsigned,
    };
    let verify_us_per_checkin = (opts.device_auth == BenchDeviceAuth::Signature)
        .then(|| verify_cost(&signed))
        .transpose()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let trivial = {
            let (addr, stop) = trivial_server().await?;
            let r = drive("trivial", addr, main, opts).await?;
            let _ = stop.send(());
            r
        };
        let trivial_verifying = match signed.device_ca_der.as_deref() {
            Some(ca) => {
                let (addr, stop) = trivial_verifying_server(Arc::new(authenticator(ca)?)).await?;
                let r = drive("trivial+verify", addr, &signed, opts).await?;
                let _ = stop.send(());
                Some(r)
            }
            None => None,
        };
        let (memory, durable, postgres) = store_runs(main, opts).await?;
        let other_device_auth = if opts.compare_device_auth {
            let (other, auth) = match opts.device_auth {
                BenchDeviceAuth::Signature => (&unsigned, BenchDeviceAuth::None),
                BenchDeviceAuth::None => (&signed, BenchDeviceAuth::Signature),
            };
            let (o_memory, o_durable, o_postgres) = store_runs(other, opts).await?;
            let (sig, none) = match auth {
                BenchDeviceAuth::None => ((&memory, &durable), (&o_memory, &o_durable)),
                BenchDeviceAuth::Signature => ((&o_memory, &o_durable), (&memory, &durable)),
            };
            Some(OtherAuth {
                device_auth: auth,
                durable_signature_over_none: sig.1.checkins_per_s / none.1.checkins_per_s,
                memory_signature_over_none: sig.0.checkins_per_s / none.0.checkins_per_s,
                ratio_postgres_vs_sqlite: o_postgres
                    .as_ref()
                    .map(|p| p.checkins_per_s / o_durable.checkins_per_s),
                memory: o_memory,
                durable: o_durable,
                postgres: o_postgres,
            })
        } else {
            None
        };
        let signed_runs = match (opts.device_auth, &other_device_auth) {
            (BenchDeviceAuth::Signature, _) => Some((&memory, &durable)),
            (BenchDeviceAuth::None, Some(o)) => Some((&o.memory, &o.durable)),
            (BenchDeviceAuth::None, None) => None,
        };
        let signed_vs_trivial_verifying = match (signed_runs, &trivial_verifying) {
            (Some((m, d)), Some(floor)) => Some(SignedFloorRatios {
                memory: m.checkins_per_s / floor.checkins_per_s,
                durable: d.checkins_per_s / floor.checkins_per_s,
            }),
            _ => None,
        };
        Ok(CheckinBenchReport {
            devices: opts.devices,
            concurrency: opts.concurrency,
            device_auth: opts.device_auth,
            identity_key: opts.identity_key,
            ratio_durable_vs_trivial: durable.checkins_per_s / trivial.checkins_per_s,
            ratio_durable_vs_memory: durable.checkins_per_s / memory.checkins_per_s,
            ratio_postgres_vs_sqlite: postgres
                .as_ref()
                .map(|p| p.checkins_per_s / durable.checkins_per_s),
            trivial,
            memory,
            durable,
            postgres,
            other_device_auth,
            verify_us_per_checkin,
            trivial_verifying,
            signed_vs_trivial_verifying,
        })
    })
}

/// The in-memory, the SQLite and (with a database URL) the PostgreSQL server, one after the
/// other, for `work`.
async fn store_runs(
    work: &Workload,
    opts: &CheckinBenchOptions,
) -> anyhow::Result<(ModeResult, ModeResult, Option<ModeResult>)> {
    let memory = {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let (addr, handle) = magicpush_server(store, work).await?;
        let r = drive("memory", addr, work, opts).await?;
        handle.shutdown().await;
        r
    };
    let durable = {
        let dir = tempfile::tempdir()?;
        let sqlite = Arc::new(SqliteStore::open(dir.path()).context("opening SQLite")?);
        let store: Arc<dyn Store> = sqlite.clone();
        let (addr, handle) = magicpush_server(store, work).await?;
        let mut r = drive("durable", addr, work, opts).await?;
        handle.shutdown().await;
        let stats = sqlite.commit_stats();
        r.writes_per_commit = Some(stats.writes as f64 / stats.commits.max(1) as f64);
        r
    };
    let postgres = match &opts.database_url {
        Some(url) => Some(postgres_run(url, work, opts).await?),
        None => None,
    };
    Ok((memory, durable, postgres))
}

/// The server on PostgreSQL at `url`, in a fresh schema dropped after the run. The store seals
/// its secrets (PostgreSQL requires a secrets key), which the SQLite run does not: a few
/// microseconds of AES per TokenUpdate.
async fn postgres_run(
    url: &str,
    work: &Workload,
    opts: &CheckinBenchOptions,
) -> anyhow::Result<ModeResult> {
    let schema = format!("bench_{:016x}", fastrand::u64(..));
    let (admin, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .context("connecting to --database-url (the bench connects without TLS)")?;
    let conn = tokio::spawn(conn);
    admin
        .batch_execute(&format!("CREATE SCHEMA {schema}"))
        .await
        .context("creating the bench's schema")?;
    let sep = if url.contains('?') { '&' } else { '?' };
    let in_schema = format!("{url}{sep}options=-csearch_path%3D{schema}");
    let mut key = [0u8; 32];
    key.iter_mut().for_each(|b| *b = fastrand::u8(..));
    let key = Arc::new(magicpush_postgres::SecretKey::from_bytes(&key).context("secrets key")?);
    let run = async {
        let pg = Arc::new(
            magicpush_postgres::PostgresStore::open(&in_schema, key)
                .await
                .context("opening PostgreSQL")?,
        );
        let store: Arc<dyn Store> = pg.clone();
        let (addr, handle) = magicpush_server(store, work).await?;
        let mut r = drive("postgres", addr, work, opts).await?;
        handle.shutdown().await;
        let stats = pg.commit_stats();
        r.writes_per_commit = Some(stats.writes as f64 / stats.commits.max(1) as f64);
        anyhow::Ok(r)
    };
    let result = run.await;
    let dropped = admin
        .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .await;
    conn.abort();
    let r = result?;
    dropped.context("dropping the bench's schema")?;
    Ok(r)
}

/// The same check-ins signed (when asked) and unsigned.
fn workloads(
    devices: &[SimDevice],
    sign: bool,
    key: IdentityKey,
) -> anyhow::Result<(Workload, Workload)> {
    let bodies: Vec<[Vec<u8>; 2]> = devices
        .iter()
        .map(|d| [d.authenticate(TOPIC), d.token_update(TOPIC)])
        .collect();
    let unsigned = Workload {
        checkins: Arc::new(
            bodies
                .iter()
                .map(|[a, t]| {
                    [a, t].map(|b| Checkin {
                        body: b.clone(),
                        signature: None,
                    })
                })
                .collect(),
        ),
        device_ca_der: None,
    };
    if !sign {
        return Ok((
            Workload {
                checkins: Arc::new(Vec::new()),
                device_ca_der: None,
            },
            unsigned,
        ));
    }
    let ca = Ca::new("checkin-bench device CA", KeyKind::EcdsaP256)
        .map_err(|e| anyhow::anyhow!("{e:#}"))?;
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let signers = match key {
        IdentityKey::P256 => issue_identities(&ca, devices, threads)?,
        IdentityKey::Rsa2048 => {
            let key =
                SharedKey::generate(KeyKind::Rsa2048).map_err(|e| anyhow::anyhow!("{e:#}"))?;
            let mut signers = Vec::with_capacity(devices.len());
            let mut base: Option<DeviceSigner> = None;
            for d in devices {
                let id = device_identity_cert_for_key(&ca, &d.udid, &key)
                    .map_err(|e| anyhow::anyhow!("{e:#}"))?;
                let signer = match &base {
                    Some(b) => b.with_certificate(&id.cert_der).context("an RSA signer")?,
                    None => {
                        let first = DeviceSigner::new(&id.cert_der, key.der())?;
                        base = first.with_certificate(&id.cert_der);
                        first
                    }
                };
                signers.push(signer);
            }
            signers
        }
    };
    // Signing (RSA especially) is slow: spread it over the cores, before any clock starts.
    let chunk = bodies.len().div_ceil(threads).max(1);
    let checkins: Vec<[Checkin; 2]> = std::thread::scope(|scope| {
        let parts: Vec<_> = bodies
            .chunks(chunk)
            .zip(signers.chunks(chunk))
            .map(|(bodies, signers)| {
                scope.spawn(move || {
                    bodies
                        .iter()
                        .zip(signers)
                        .map(|([a, t], signer)| {
                            [a, t].map(|body| Checkin {
                                signature: Some(signer.sign(body)),
                                body: body.clone(),
                            })
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        parts
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect()
    });
    anyhow::ensure!(checkins.len() == devices.len(), "signing failed");
    let signed = Workload {
        checkins: Arc::new(checkins),
        device_ca_der: Some(ca.cert_der().to_vec()),
    };
    Ok((signed, unsigned))
}

fn authenticator(ca_der: &[u8]) -> anyhow::Result<DeviceAuthenticator> {
    signature_authenticator(ca_der).map_err(anyhow::Error::msg)
}

/// Microseconds per verification of a steady device (its chain verdict kept), measured over
/// the workload's check-ins after one pass that fills the verdict cache.
fn verify_cost(work: &Workload) -> anyhow::Result<f64> {
    let ca = work
        .device_ca_der
        .as_deref()
        .context("signed workload without a CA")?;
    let auth = authenticator(ca)?;
    let sample: Vec<(HeaderMap, &[u8])> = work
        .checkins
        .iter()
        .take(2000)
        .flat_map(|pair| pair.iter())
        .map(|c| {
            let mut headers = HeaderMap::new();
            if let Some(sig) = &c.signature {
                if let Ok(v) = http::HeaderValue::from_str(sig) {
                    headers.insert("mdm-signature", v);
                }
            }
            (headers, c.body.as_slice())
        })
        .collect();
    let now = time::OffsetDateTime::now_utc();
    for (headers, body) in &sample {
        auth.authenticate(headers, None, body, now)?;
    }
    let rounds = 3;
    let started = Instant::now();
    for _ in 0..rounds {
        for (headers, body) in &sample {
            auth.authenticate(headers, None, body, now)?;
        }
    }
    Ok(started.elapsed().as_secs_f64() * 1e6 / (rounds * sample.len()).max(1) as f64)
}

/// [`trivial_server`] that also verifies each request's `Mdm-Signature` with `auth` (403 on a
/// refusal) and stores nothing: the floor of the signed runs.
async fn trivial_verifying_server(
    auth: Arc<DeviceAuthenticator>,
) -> anyhow::Result<(SocketAddr, tokio::sync::oneshot::Sender<()>)> {
    Ok(
        crate::plain_http::serve(move |req: crate::plain_http::Request| {
            let auth = Arc::clone(&auth);
            async move {
                let (parts, body) = req.into_parts();
                let body = body
                    .collect()
                    .await
                    .map(|b| b.to_bytes())
                    .unwrap_or_default();
                let mut answer = hyper::Response::new(Full::new(Bytes::new()));
                if !signature_verifies(&auth, &parts.headers, &body) {
                    *answer.status_mut() = http::StatusCode::FORBIDDEN;
                }
                answer
            }
        })
        .await?,
    )
}

/// Sends every device's Authenticate and TokenUpdate over `concurrency` connections.
async fn drive(
    mode: &'static str,
    addr: SocketAddr,
    work: &Workload,
    opts: &CheckinBenchOptions,
) -> anyhow::Result<ModeResult> {
    let checkins = work.checkins.clone();
    let workers = opts.concurrency.clamp(1, checkins.len().max(1));
    let authority = addr.to_string();
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..workers {
        let checkins = checkins.clone();
        let authority = authority.clone();
        tasks.spawn(async move {
            let mut conn = DeviceConn::new(addr, &authority, Duration::from_secs(30));
            let mut sent = 0u64;
            for pair in checkins.iter().skip(w).step_by(workers) {
                for c in pair {
                    let (status, answer) = conn
                        .put(
                            "/mdm/checkin",
                            CHECKIN_TYPE,
                            c.body.clone(),
                            c.signature.clone(),
                        )
                        .await?;
                    if !status.is_success() {
                        anyhow::bail!(
                            "{mode}: check-in answered {status}: {}",
                            String::from_utf8_lossy(&answer)
                        );
                    }
                    sent += 1;
                }
            }
            Ok::<u64, anyhow::Error>(sent)
        });
    }
    let mut checkins = 0;
    while let Some(done) = tasks.join_next().await {
        checkins += done??;
    }
    let elapsed = start.elapsed().as_secs_f64();
    Ok(ModeResult {
        mode,
        checkins,
        elapsed_s: elapsed,
        checkins_per_s: checkins as f64 / elapsed,
        writes_per_commit: None,
    })
}

/// The magicpush server (routing, plist decoding, service, `store`) on a loopback port.
async fn magicpush_server(
    store: Arc<dyn Store>,
    work: &Workload,
) -> anyhow::Result<(SocketAddr, server::ServerHandle)> {
    let device_auth = match &work.device_ca_der {
        Some(ca) => DeviceAuth::Required(Arc::new(authenticator(ca)?)),
        None => DeviceAuth::Off,
    };
    let app = Arc::new(App::with_pusher(
        store,
        magicpush_testkit::FakePusher::new(),
        device_auth,
    ));
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let handle = server::spawn(listener, None, app, ListenerSettings::default())?;
    Ok((handle.local_addr(), handle))
}

/// A bare hyper server on the same runtime that reads the body and answers 200: the ceiling
/// of the HTTP path on this machine.
async fn trivial_server() -> anyhow::Result<(SocketAddr, tokio::sync::oneshot::Sender<()>)> {
    Ok(
        crate::plain_http::serve(|req: crate::plain_http::Request| async move {
            let _ = req.into_body().collect().await;
            hyper::Response::new(Full::new(Bytes::new()))
        })
        .await?,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The verifying floor does verify: it answers the devices of its own CA, and refuses
    /// signatures by identities another CA issued.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_verifying_floor_refuses_a_signature_it_cannot_verify() {
        let opts = CheckinBenchOptions {
            devices: 4,
            concurrency: 2,
            device_auth: BenchDeviceAuth::Signature,
            compare_device_auth: false,
            identity_key: IdentityKey::P256,
            database_url: None,
        };
        let devices = generate(opts.devices, 0.0, 0.0, 7);
        let (ours, _) = workloads(&devices, true, opts.identity_key).unwrap();
        let (theirs, _) = workloads(&devices, true, opts.identity_key).unwrap();
        let ca = ours.device_ca_der.as_deref().unwrap();
        let (addr, stop) = trivial_verifying_server(Arc::new(authenticator(ca).unwrap()))
            .await
            .unwrap();
        let good = drive("trivial+verify", addr, &ours, &opts).await.unwrap();
        assert_eq!(good.checkins, 8);
        let refused = drive("trivial+verify", addr, &theirs, &opts)
            .await
            .unwrap_err();
        assert!(refused.to_string().contains("403"), "{refused:#}");
        let _ = stop.send(());
    }
}
