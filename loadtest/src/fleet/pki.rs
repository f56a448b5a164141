//! The fleet's certificates: a CA, the mock APNs' server certificate and the MDM push
//! certificate, generated fresh or read from a directory, and written as PEM files the server
//! process reads; and the push certificates of the other tenants (`--topics`), issued by the
//! same CA at every run.

use std::path::{Path, PathBuf};

use std::sync::Arc;

use magicpush_fixtures::{
    device_identity_cert, device_identity_cert_for_key, push_cert, Ca, KeyKind, SharedKey, TestPki,
};
use magicpush_server::identity::{DeviceAuthenticator, DeviceTrust, IdentitySource};
use rustls_pki_types::CertificateDer;

use super::device::SimDevice;
use super::signer::DeviceSigner;
use super::tenants::Tenant;

use super::FleetError;

/// File names, the same as the committed fixtures' `certs/` directory uses.
pub const CA_FILE: &str = "ca.pem";
/// The CA's key: it issues the other tenants' push certificates (`--topics`).
pub const CA_KEY_FILE: &str = "ca.key.pem";
/// The mock APNs' TLS certificate.
pub const SERVER_CERT_FILE: &str = "server.pem";
/// Its key.
pub const SERVER_KEY_FILE: &str = "server.key.pem";
/// The MDM push certificate.
pub const PUSH_CERT_FILE: &str = "push.pem";
/// Its key.
pub const PUSH_KEY_FILE: &str = "push.key.pem";
/// The CA that issues the simulated devices' identity certificates (`--device-ca`).
pub const DEVICE_CA_FILE: &str = "device-ca.pem";
/// Its key (the fleet issues a certificate per device at every run).
pub const DEVICE_CA_KEY_FILE: &str = "device-ca.key.pem";

/// PEM texts of the fleet's certificates and where they are on disk.
#[derive(Clone)]
pub struct FleetPki {
    /// Issues the server and push certificates; the mock trusts push certificates it signed.
    pub ca_pem: String,
    /// That CA with its key, when the set has it (a directory written before the key was
    /// kept has not): needed for more than one tenant.
    pub push_ca: Option<Arc<Ca>>,
    /// Mock APNs TLS certificate (`localhost`, `127.0.0.1`).
    pub server_cert_pem: String,
    /// Its key.
    pub server_key_pem: String,
    /// The MDM push certificate.
    pub push_cert_pem: String,
    /// Its key.
    pub push_key_pem: String,
    /// The push certificate's topic.
    pub topic: String,
    /// Issues the devices' identity certificates.
    pub device_ca: Arc<Ca>,
    /// The directory holding the PEM files.
    pub dir: PathBuf,
}

impl FleetPki {
    /// Reads the set from `dir` if it holds one, otherwise generates a fresh set (ECDSA) and
    /// writes it there.
    pub fn load_or_create(dir: &Path) -> Result<FleetPki, FleetError> {
        if dir.join(CA_FILE).exists() {
            return Self::load(dir);
        }
        let pki = TestPki::generate().map_err(|e| FleetError::Pki(format!("{e:#}")))?;
        let device_ca = Ca::new("magicpush fleet device CA", KeyKind::EcdsaP256)
            .map_err(|e| FleetError::Pki(format!("{e:#}")))?;
        let push_ca_key = pki.ca.key_pem().to_owned();
        let set = FleetPki {
            ca_pem: pki.ca.cert_pem().to_owned(),
            server_cert_pem: pki.server.cert_pem,
            server_key_pem: pki.server.key_pem,
            push_cert_pem: pki.push.cert_pem,
            push_key_pem: pki.push.key_pem,
            topic: pki.topic,
            device_ca: Arc::new(device_ca),
            dir: dir.to_owned(),
            push_ca: Some(Arc::new(pki.ca)),
        };
        std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
        for (name, text) in [
            (CA_FILE, &set.ca_pem),
            (CA_KEY_FILE, &push_ca_key),
            (SERVER_CERT_FILE, &set.server_cert_pem),
            (SERVER_KEY_FILE, &set.server_key_pem),
            (PUSH_CERT_FILE, &set.push_cert_pem),
            (PUSH_KEY_FILE, &set.push_key_pem),
            (DEVICE_CA_FILE, &set.device_ca.cert_pem().to_owned()),
            (DEVICE_CA_KEY_FILE, &set.device_ca.key_pem().to_owned()),
        ] {
            let path = dir.join(name);
            std::fs::write(&path, text).map_err(|e| io(&path, e))?;
        }
        Ok(set)
    }

    fn load(dir: &Path) -> Result<FleetPki, FleetError> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read_to_string(&path).map_err(|e| io(&path, e))
        };
        let push_cert_pem = read(PUSH_CERT_FILE)?;
        let push_key_pem = read(PUSH_KEY_FILE)?;
        let push = magicpush_engine::cert::PushCertificate::from_pem(
            push_cert_pem.as_bytes(),
            push_key_pem.as_bytes(),
        )
        .map_err(|e| FleetError::Pki(format!("{}: {e}", dir.join(PUSH_CERT_FILE).display())))?;
        // A directory from before device identities: add a device CA to it.
        if !dir.join(DEVICE_CA_FILE).exists() {
            let ca = Ca::new("magicpush fleet device CA", KeyKind::EcdsaP256)
                .map_err(|e| FleetError::Pki(format!("{e:#}")))?;
            for (name, text) in [
                (DEVICE_CA_FILE, ca.cert_pem()),
                (DEVICE_CA_KEY_FILE, ca.key_pem()),
            ] {
                let path = dir.join(name);
                std::fs::write(&path, text).map_err(|e| io(&path, e))?;
            }
        }
        let device_ca =
            Ca::from_pem(&read(DEVICE_CA_FILE)?, &read(DEVICE_CA_KEY_FILE)?).map_err(|e| {
                FleetError::Pki(format!("{}: {e:#}", dir.join(DEVICE_CA_FILE).display()))
            })?;
        let ca_pem = read(CA_FILE)?;
        let push_ca = if dir.join(CA_KEY_FILE).exists() {
            let ca = Ca::from_pem(&ca_pem, &read(CA_KEY_FILE)?).map_err(|e| {
                FleetError::Pki(format!("{}: {e:#}", dir.join(CA_KEY_FILE).display()))
            })?;
            Some(Arc::new(ca))
        } else {
            None
        };
        Ok(FleetPki {
            device_ca: Arc::new(device_ca),
            push_ca,
            ca_pem,
            server_cert_pem: read(SERVER_CERT_FILE)?,
            server_key_pem: read(SERVER_KEY_FILE)?,
            topic: push.topic().to_owned(),
            push_cert_pem,
            push_key_pem,
            dir: dir.to_owned(),
        })
    }

    /// An identity certificate (P-256) from the device CA for each device, issued on
    /// `threads` threads; in the devices' order.
    pub fn issue_identities(
        &self,
        devices: &[SimDevice],
        threads: usize,
    ) -> Result<Vec<DeviceSigner>, FleetError> {
        issue_identities(&self.device_ca, devices, threads)
    }

    /// An identity certificate from the device CA for each device, for RSA-2048 keys of a
    /// pool of `pool` (device `i` has key `i % pool`), as `--enroll` devices have: what the
    /// floors of an `--enroll` run sign with, so that the devices' signing costs as much as
    /// in the server's run. Keys generated on their own threads; in the devices' order.
    pub fn issue_rsa_identities(
        &self,
        devices: &[SimDevice],
        pool: usize,
    ) -> Result<Vec<DeviceSigner>, FleetError> {
        let keys = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..pool.max(1))
                .map(|_| scope.spawn(|| SharedKey::generate(KeyKind::Rsa2048)))
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .map_err(|_| FleetError::Pki("RSA key generation panicked".into()))?
                        .map_err(|e| FleetError::Pki(format!("RSA key: {e:#}")))
                })
                .collect::<Result<Vec<_>, _>>()
        })?;
        let mut signers: Vec<DeviceSigner> = Vec::with_capacity(devices.len());
        for (i, d) in devices.iter().enumerate() {
            let key = &keys[i % keys.len()];
            let id = device_identity_cert_for_key(&self.device_ca, &d.udid, key)
                .map_err(|e| FleetError::Pki(format!("{}: {e:#}", d.udid)))?;
            // The first device of a key parses it; the others share it.
            let signer = match signers.get(i % keys.len()) {
                Some(first) if i >= keys.len() => first.with_certificate(&id.cert_der),
                _ => None,
            };
            let signer = match signer {
                Some(s) => s,
                None => DeviceSigner::new(&id.cert_der, &id.key_der)
                    .map_err(|e| FleetError::Pki(format!("{}: {e}", d.udid)))?,
            };
            signers.push(signer);
        }
        Ok(signers)
    }

    /// The fleet's `count` tenants: the first is this set's push certificate (the server's
    /// `--cert`), the others fresh push certificates (P-256, a topic of a random UUID each)
    /// from the same CA, issued on `threads` threads; not written to the directory.
    pub fn tenants(&self, count: usize, threads: usize) -> Result<Vec<Tenant>, FleetError> {
        let first = Tenant {
            topic: self.topic.clone(),
            cert_pem: self.push_cert_pem.clone(),
            key_pem: self.push_key_pem.clone(),
        };
        if count <= 1 {
            return Ok(vec![first]);
        }
        let ca = self.push_ca.as_deref().ok_or_else(|| {
            FleetError::Pki(format!(
                "{} has no {CA_KEY_FILE} to issue the other tenants' push certificates; \
                 use a fresh --pki-dir for --topics above 1",
                self.dir.display()
            ))
        })?;
        let others = count - 1;
        let chunk = others.div_ceil(threads.max(1)).max(1);
        let mut out = Vec::with_capacity(count);
        out.push(first);
        std::thread::scope(|scope| {
            let handles: Vec<_> = (0..others)
                .step_by(chunk)
                .map(|start| {
                    let n = chunk.min(others - start);
                    scope.spawn(move || {
                        (0..n)
                            .map(|_| tenant_cert(ca))
                            .collect::<Result<Vec<_>, _>>()
                    })
                })
                .collect();
            for h in handles {
                let part = h
                    .join()
                    .map_err(|_| FleetError::Pki("issuing push certificates panicked".into()))??;
                out.extend(part);
            }
            Ok(out)
        })
    }

    /// Path of one of the files above.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

impl std::fmt::Debug for FleetPki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FleetPki")
            .field("topic", &self.topic)
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

/// A push certificate for a new topic from `ca`, valid from a day ago for a year.
fn tenant_cert(ca: &Ca) -> Result<Tenant, FleetError> {
    let uuid = uuid::Uuid::new_v4().to_string();
    let now = time::OffsetDateTime::now_utc();
    let day = time::Duration::days(1);
    let ck = push_cert(ca, &uuid, now - day, now + day * 365, KeyKind::EcdsaP256)
        .map_err(|e| FleetError::Pki(format!("push certificate {uuid}: {e:#}")))?;
    Ok(Tenant {
        topic: format!("{}{uuid}", magicpush_fixtures::MDM_TOPIC_PREFIX),
        cert_pem: ck.cert_pem,
        key_pem: ck.key_pem,
    })
}

/// See [`FleetPki::issue_identities`].
pub fn issue_identities(
    ca: &Ca,
    devices: &[SimDevice],
    threads: usize,
) -> Result<Vec<DeviceSigner>, FleetError> {
    let chunk = devices.len().div_ceil(threads.max(1)).max(1);
    std::thread::scope(|scope| {
        let handles: Vec<_> = devices
            .chunks(chunk)
            .map(|part| {
                scope.spawn(move || {
                    part.iter()
                        .map(|d| {
                            let id = device_identity_cert(ca, &d.udid, KeyKind::EcdsaP256)
                                .map_err(|e| FleetError::Pki(format!("{}: {e:#}", d.udid)))?;
                            DeviceSigner::new(&id.cert_der, &id.key_der)
                                .map_err(|e| FleetError::Pki(format!("{}: {e}", d.udid)))
                        })
                        .collect::<Result<Vec<_>, _>>()
                })
            })
            .collect();
        let mut out = Vec::with_capacity(devices.len());
        for h in handles {
            let part = h
                .join()
                .map_err(|_| FleetError::Pki("issuing identities panicked".into()))??;
            out.extend(part);
        }
        Ok(out)
    })
}

fn io(path: &Path, e: std::io::Error) -> FleetError {
    FleetError::Pki(format!("{}: {e}", path.display()))
}

/// The authenticator a magicpush server uses for devices whose identities `ca_der` issued,
/// verifying `Mdm-Signature` only: the servers under test and the floors that verify share it.
pub fn signature_authenticator(ca_der: &[u8]) -> Result<DeviceAuthenticator, String> {
    let trust = DeviceTrust::new(&[CertificateDer::from(ca_der.to_vec())], Vec::new())
        .map_err(|e| format!("device CA: {e}"))?;
    DeviceAuthenticator::new(vec![IdentitySource::Signature], trust, None)
        .map_err(|e| format!("device authenticator: {e}"))
}

/// Whether the request carries a signature `auth` accepts, now: what a verifying floor checks
/// before it answers (a magicpush server refuses the others with 403).
pub fn signature_verifies(
    auth: &DeviceAuthenticator,
    headers: &http::HeaderMap,
    body: &[u8],
) -> bool {
    auth.authenticate(headers, None, body, time::OffsetDateTime::now_utc())
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rsa_identities_share_a_small_pool_and_verify() {
        let dir = tempfile::tempdir().unwrap();
        let pki = FleetPki::load_or_create(dir.path()).unwrap();
        let devices = crate::fleet::device::generate(3, 0.0, 0.0, 7);
        let signers = pki.issue_rsa_identities(&devices, 2).unwrap();
        assert_eq!(signers.len(), 3);
        let auth = signature_authenticator(pki.device_ca.cert_der()).unwrap();
        for signer in &signers {
            let body = b"<plist>rsa</plist>";
            let mut headers = http::HeaderMap::new();
            headers.insert("mdm-signature", signer.sign(body).parse().unwrap());
            assert!(signature_verifies(&auth, &headers, body));
        }
    }

    #[test]
    fn tenants_are_the_push_certificate_then_fresh_topics_from_the_same_ca() {
        let dir = tempfile::tempdir().unwrap();
        let pki = FleetPki::load_or_create(dir.path()).unwrap();
        let one = pki.tenants(1, 2).unwrap();
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].topic, pki.topic);

        let tenants = pki.tenants(5, 2).unwrap();
        assert_eq!(tenants.len(), 5);
        assert_eq!(tenants[0].cert_pem, pki.push_cert_pem);
        let mut topics: Vec<&str> = tenants.iter().map(|t| t.topic.as_str()).collect();
        topics.sort_unstable();
        topics.dedup();
        assert_eq!(topics.len(), 5, "distinct topics");
        for t in &tenants {
            let cert = magicpush_engine::cert::PushCertificate::from_pem(
                t.cert_pem.as_bytes(),
                t.key_pem.as_bytes(),
            )
            .unwrap();
            assert_eq!(cert.topic(), t.topic);
            assert!(t.topic.starts_with(magicpush_fixtures::MDM_TOPIC_PREFIX));
        }

        // The same directory read back can issue more (it kept the CA key); one without the
        // key serves one tenant only.
        let again = FleetPki::load_or_create(dir.path()).unwrap();
        assert_eq!(again.tenants(2, 1).unwrap()[0].topic, pki.topic);
        std::fs::remove_file(dir.path().join(CA_KEY_FILE)).unwrap();
        let old = FleetPki::load_or_create(dir.path()).unwrap();
        assert_eq!(old.tenants(1, 1).unwrap().len(), 1);
        let err = old.tenants(2, 1).unwrap_err().to_string();
        assert!(err.contains(CA_KEY_FILE), "{err}");
    }
}
