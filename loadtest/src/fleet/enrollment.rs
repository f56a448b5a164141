//! `--enroll`: each device gets its identity from the server, as a real one does, before it
//! checks in. The fleet creates its tenants' invitations (`POST /v1/enrollments`, one per
//! [`DEVICES_PER_INVITATION`] devices of a tenant, `uses` = those devices); each device fetches
//! its invitation's profile (`GET` the invitation's path, on the node it talks to), reads the
//! SCEP challenge and subject and the MDM topic, and enrolls at `/scep` (PKCSReq with its
//! RSA-2048 key from the [`KeyPool`]). The certificate issued signs its check-ins and reports
//! from then on.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use http::{Method, StatusCode};
use magicpush_scep::client::EnrollmentRequest;
use magicpush_scep::rand_core::OsRng;
use magicpush_scep::ContentCipher;
use magicpush_server::client::AdminClient;
use magicpush_store::enrollment::MAX_OUTSTANDING_CHALLENGES;

use super::device::SimDevice;
use super::keypool::KeyPool;
use super::nodes::{NodeConns, NodeRoutes, PROFILE_REQUEST, SCEP_REQUEST};
use super::profile::{path_of, EnrollmentProfile};
use super::signer::DeviceSigner;
use super::tenants::tenant_of;
use super::{admin_err, Failures, FleetError, Progress};

/// How long the run's invitations stay valid.
const INVITATION_LIFETIME: &str = "24h";

/// Devices of a tenant per invitation. The server refuses a profile (429) while
/// [`MAX_OUTSTANDING_CHALLENGES`] of an invitation's profiles wait unused; an invitation for
/// fewer devices than that (a margin for a profile fetched again after a broken connection)
/// never gets there, however many devices enroll at once.
pub(crate) const DEVICES_PER_INVITATION: usize = MAX_OUTSTANDING_CHALLENGES as usize - 4;

/// How often a device asks again for a profile refused with 429, a second apart.
const PROFILE_ATTEMPTS: usize = 5;

/// What the enrollment phase needs.
pub(crate) struct EnrollPhase<'a> {
    pub(crate) devices: &'a Arc<Vec<SimDevice>>,
    /// The tenants' topics: device `i` enrolls on `topics[tenant_of(i)]`'s invitation.
    pub(crate) topics: &'a Arc<[String]>,
    pub(crate) routes: &'a Arc<NodeRoutes>,
    pub(crate) admin: &'a AdminClient,
    pub(crate) keys: &'a Arc<KeyPool>,
    pub(crate) connections: usize,
    pub(crate) progress: &'a Arc<Progress>,
    pub(crate) failures: &'a Arc<Failures>,
}

/// What the enrollment phase gave the devices.
pub(crate) struct Identities {
    /// Per device, its signer: the certificate issued to it, or (when its enrollment failed)
    /// the CA's certificate, which the server refuses; such a device is not checked in.
    pub(crate) signers: Arc<Vec<DeviceSigner>>,
    /// Per device: it has its certificate.
    pub(crate) issued: Vec<bool>,
    /// First profile request through the last certificate issued, in seconds.
    pub(crate) seconds: f64,
    /// Invitations created.
    pub(crate) invitations: u64,
    /// Creating them (and GetCACert), before `seconds`, in seconds.
    pub(crate) invite_seconds: f64,
}

impl Identities {
    /// Certificates issued.
    pub(crate) fn count(&self) -> u64 {
        self.issued.iter().filter(|i| **i).count() as u64
    }
}

/// Creates the invitations, then every device fetches its profile and enrolls, on
/// `connections` workers.
pub(crate) async fn enroll_identities(p: EnrollPhase<'_>) -> Result<Identities, FleetError> {
    let invite_started = Instant::now();
    let invitations = Arc::new(invite(p.admin, p.devices.len(), p.topics).await?);
    let ca_cert = ca_certificate(&mut p.routes.conns()).await?;
    let invite_seconds = invite_started.elapsed().as_secs_f64();
    let started = Instant::now();

    let n = p.devices.len();
    let workers = p.connections.clamp(1, n);
    let slots: Arc<Vec<Mutex<Option<DeviceSigner>>>> =
        Arc::new((0..n).map(|_| Mutex::new(None)).collect());
    let issued: Arc<Vec<AtomicBool>> = Arc::new((0..n).map(|_| AtomicBool::new(false)).collect());
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..workers {
        let (devices, topics, invitations) =
            (p.devices.clone(), p.topics.clone(), invitations.clone());
        let (keys, ca_cert, slots, issued) = (
            p.keys.clone(),
            ca_cert.clone(),
            slots.clone(),
            issued.clone(),
        );
        let (progress, failures) = (p.progress.clone(), p.failures.clone());
        let mut conn = p.routes.conns();
        tasks.spawn(async move {
            for (i, d) in devices.iter().enumerate().skip(w).step_by(workers) {
                let device = Device {
                    index: i,
                    udid: &d.udid,
                    invitation: invitations.path_of(i),
                    topic: &topics[tenant_of(i, topics.len())],
                };
                match enroll_one(&mut conn, &device, &keys, &ca_cert).await {
                    Ok(signer) => {
                        *lock(&slots[i]) = Some(signer);
                        issued[i].store(true, Ordering::Relaxed);
                    }
                    Err(why) => failures.record(format!("SCEP enrollment {}: {why}", d.udid)),
                }
                progress.identified.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    let seconds = started.elapsed().as_secs_f64();

    let mut signers = Vec::with_capacity(n);
    for (i, slot) in slots.iter().enumerate() {
        let signer = match lock(slot).take() {
            Some(signer) => signer,
            None => DeviceSigner::with_rsa_key(&ca_cert, &p.keys.key_of(i).signing)
                .map_err(|e| FleetError::Pki(e.to_string()))?,
        };
        signers.push(signer);
    }
    Ok(Identities {
        signers: Arc::new(signers),
        issued: issued.iter().map(|i| i.load(Ordering::Relaxed)).collect(),
        seconds,
        invitations: invitations.paths.len() as u64,
        invite_seconds,
    })
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The run's invitations: their paths, and which one each device uses.
struct Invitations {
    paths: Vec<String>,
    /// Per device, its index in `paths`.
    of_device: Vec<usize>,
}

impl Invitations {
    fn path_of(&self, device: usize) -> &str {
        &self.paths[self.of_device[device]]
    }
}

/// Which invitation of its tenant device `i` uses: its rank among the tenant's devices, by
/// [`DEVICES_PER_INVITATION`].
fn chunk_of(device: usize, tenants: usize) -> usize {
    device / tenants.max(1) / DEVICES_PER_INVITATION
}

/// The invitations: per tenant, one per [`DEVICES_PER_INVITATION`] of its devices, with
/// exactly as many uses as devices.
async fn invite(
    admin: &AdminClient,
    devices: usize,
    topics: &[String],
) -> Result<Invitations, FleetError> {
    let tenants = topics.len();
    // (tenant, chunk) → devices, in device order.
    let mut groups: std::collections::BTreeMap<(usize, usize), Vec<usize>> = Default::default();
    for i in 0..devices {
        groups
            .entry((tenant_of(i, tenants), chunk_of(i, tenants)))
            .or_default()
            .push(i);
    }
    let mut invitations = Invitations {
        paths: Vec::with_capacity(groups.len()),
        of_device: vec![0; devices],
    };
    for ((tenant, chunk), members) in groups {
        let body = serde_json::json!({
            "topic": topics[tenant],
            "expires_in": INVITATION_LIFETIME,
            "uses": members.len(),
            "note": format!("magicpush-loadtest fleet, tenant {} part {}", tenant + 1, chunk + 1),
        });
        let answer = admin
            .send_json(Method::POST, "/v1/enrollments", &body)
            .await
            .map_err(|e| admin_err("POST /v1/enrollments", e))?;
        let url = answer["url"]
            .as_str()
            .ok_or_else(|| admin_err("POST /v1/enrollments", format!("no url in {answer}")))?;
        for i in members {
            invitations.of_device[i] = invitations.paths.len();
        }
        invitations.paths.push(path_of(url).to_owned());
    }
    Ok(invitations)
}

/// `GET /scep?operation=GetCACert`: the CA certificate (DER), once per run (the nodes share
/// one CA).
async fn ca_certificate(conn: &mut NodeConns) -> Result<Arc<[u8]>, FleetError> {
    let (status, body) = conn
        .send(
            0,
            SCEP_REQUEST,
            Method::GET,
            "/scep?operation=GetCACert",
            "GET /scep?operation=GetCACert",
            None,
            Bytes::new(),
        )
        .await?;
    if status != StatusCode::OK {
        return Err(FleetError::Device {
            path: "GET /scep?operation=GetCACert",
            detail: format!(
                "answered {status} (is the server's built-in device CA on?): {}",
                String::from_utf8_lossy(&body).trim()
            ),
        });
    }
    Ok(body.to_vec().into())
}

/// One device, as the enrollment phase sees it.
struct Device<'a> {
    index: usize,
    udid: &'a str,
    /// The path of its tenant's invitation.
    invitation: &'a str,
    /// Its tenant's topic, which the profile must name.
    topic: &'a str,
}

/// Profile, then SCEP: the device's signer with the certificate issued to it.
async fn enroll_one(
    conn: &mut NodeConns,
    d: &Device<'_>,
    keys: &Arc<KeyPool>,
    ca_cert: &Arc<[u8]>,
) -> Result<DeviceSigner, String> {
    let mut attempt = 1;
    let (status, body) = loop {
        let (status, body) = conn
            .send(
                d.index,
                PROFILE_REQUEST,
                Method::GET,
                d.invitation,
                "GET /enroll/{id}",
                None,
                Bytes::new(),
            )
            .await
            .map_err(|e| e.to_string())?;
        if status != StatusCode::TOO_MANY_REQUESTS || attempt == PROFILE_ATTEMPTS {
            break (status, body);
        }
        attempt += 1;
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    };
    if status != StatusCode::OK {
        return Err(format!(
            "the profile answered {status}: {}",
            String::from_utf8_lossy(&body).trim()
        ));
    }
    let profile = EnrollmentProfile::read(&body).map_err(|e| e.to_string())?;
    if profile.topic != d.topic {
        return Err(format!(
            "the profile's topic is {}, the tenant's {}",
            profile.topic, d.topic
        ));
    }
    let common_name = profile.common_name_for(d.udid);

    // The device's own work (a CSR and two signatures, later a decryption), off the async
    // threads. The signer certificate is its pool key's, made once.
    let (index, keys2, ca) = (d.index, keys.clone(), ca_cert.clone());
    let challenge = profile.challenge.clone();
    let (message, pending) = tokio::task::spawn_blocking(move || {
        keys2.key_of(index).scep.pkcs_req(
            &EnrollmentRequest {
                common_name: &common_name,
                challenge: &challenge,
                ca_cert_der: &ca,
                cipher: ContentCipher::Aes128Cbc,
            },
            &mut OsRng,
        )
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| e.to_string())?;

    let separator = if profile.scep_path.contains('?') {
        '&'
    } else {
        '?'
    };
    let path = format!("{}{separator}operation=PKIOperation", profile.scep_path);
    let (status, reply) = conn
        .send(
            d.index,
            SCEP_REQUEST,
            Method::POST,
            &path,
            "POST /scep?operation=PKIOperation",
            Some(magicpush_scep::PKI_MESSAGE_CONTENT_TYPE),
            Bytes::from(message),
        )
        .await
        .map_err(|e| e.to_string())?;
    if status != StatusCode::OK {
        return Err(format!(
            "PKIOperation answered {status}: {}",
            String::from_utf8_lossy(&reply).trim()
        ));
    }
    let certificate = tokio::task::spawn_blocking(move || pending.open(&reply))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    DeviceSigner::with_rsa_key(&certificate, &keys.key_of(d.index).signing)
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_invitation_has_fewer_devices_than_the_server_keeps_profiles_unused() {
        for tenants in [1, 3] {
            let mut per: std::collections::HashMap<(usize, usize), usize> = Default::default();
            for i in 0..1000 {
                *per.entry((tenant_of(i, tenants), chunk_of(i, tenants)))
                    .or_default() += 1;
            }
            assert!(per.values().all(|n| *n <= DEVICES_PER_INVITATION));
            assert_eq!(per.values().sum::<usize>(), 1000);
            assert_eq!(
                per.len(),
                (0..tenants)
                    .map(|t| (1000 - t)
                        .div_ceil(tenants)
                        .div_ceil(DEVICES_PER_INVITATION))
                    .sum::<usize>()
            );
        }
    }
}
