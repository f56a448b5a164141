//! Unit tests of the whole flow: replays of real scepclient requests (tests/data), requests
//! built here to reach each refusal, and hostile bytes.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cms::content_info::ContentInfo;
use der::{Decode, Encode, EncodingRules};
use rand_core::OsRng;
use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::RsaPrivateKey;
use x509_cert::Certificate;

use crate::attrs::{octet_string, printable};
use crate::client::{self, ClientError, EnrollmentRequest, MessageSpec, Requester};
use crate::envelope::{self, ContentCipher};
use crate::{
    enrollment_id_of, handle, message, reply, CertificateId, ChallengeStore, DeviceCa, Digest,
    FailInfo, MessageType, NothingRevoked, PkiResponse, PkiStatus, RevocationCheck, ScepError,
    MAX_MESSAGE,
};

const CA_PEM: &str = include_str!("../tests/data/ca.pem");
const CA_KEY: &str = include_str!("../tests/data/ca.key.pem");
const CLIENT_KEY: &str = include_str!("../tests/data/scepclient-key.pem");
const PKCSREQ: &[u8] = include_bytes!("../tests/data/scepclient-pkcsreq.der");
const RENEWALREQ: &[u8] = include_bytes!("../tests/data/scepclient-renewalreq.der");

fn ca() -> DeviceCa {
    DeviceCa::from_pem(CA_PEM, CA_KEY).unwrap()
}

/// Challenges: (secret, enrollment id, expiry), consumed once.
struct Challenges(Vec<(String, String, SystemTime)>);

impl Challenges {
    fn one(secret: &str, id: &str) -> Challenges {
        Challenges(vec![(
            secret.into(),
            id.into(),
            SystemTime::now() + Duration::from_secs(3600),
        )])
    }
}

impl ChallengeStore for Challenges {
    fn consume(&mut self, challenge: &str, now: SystemTime) -> Option<String> {
        let i = self
            .0
            .iter()
            .position(|(s, _, _)| crate::ct_eq(s.as_bytes(), challenge.as_bytes()))?;
        let (_, id, expires) = self.0.remove(i);
        (now <= expires).then_some(id)
    }
}

struct RevokeAll;
impl RevocationCheck for RevokeAll {
    fn is_revoked(&self, _: &CertificateId) -> bool {
        true
    }
}

fn run(request: &[u8], challenges: &mut Challenges, now: SystemTime) -> PkiResponse {
    handle(request, &ca(), challenges, &NothingRevoked, now, &mut OsRng).unwrap()
}

fn refused(response: &PkiResponse) -> FailInfo {
    assert_eq!(response.status, PkiStatus::Failure, "{response:?}");
    response.fail_info.unwrap()
}

/// A CertRep read back as a client reads it (the client's reader: signature by the CA,
/// attributes, the enveloped certificate decrypted with the requester's key), with the
/// attributes every reply has unwrapped.
struct ReadBack {
    status: String,
    fail_info: Option<String>,
    recipient_nonce: Vec<u8>,
    transaction_id: String,
    digest: Digest,
    certificate: Option<Certificate>,
    cipher: Option<ContentCipher>,
}

fn read_back(
    bytes: &[u8],
    ca: &DeviceCa,
    recipient: &Certificate,
    key: &RsaPrivateKey,
) -> ReadBack {
    let rep = client::read_cert_rep(bytes, ca.certificate(), recipient, key).unwrap();
    ReadBack {
        status: rep.status.unwrap(),
        fail_info: rep.fail_info,
        recipient_nonce: rep.recipient_nonce.unwrap(),
        transaction_id: rep.transaction_id,
        digest: rep.digest,
        certificate: rep.certificate,
        cipher: rep.cipher,
    }
}

fn client_key() -> RsaPrivateKey {
    RsaPrivateKey::from_pkcs1_pem(CLIENT_KEY).unwrap()
}

fn common_name(cert: &Certificate) -> String {
    crate::ca::name_attribute(cert.tbs_certificate().subject(), crate::oid::AT_COMMON_NAME).unwrap()
}

#[test]
fn a_real_scepclient_pkcsreq_is_answered_and_the_reply_decrypts() {
    let ca = ca();
    let request = message::parse(PKCSREQ).unwrap();
    assert_eq!(request.message_type, Some(MessageType::PkcsReq));
    assert_eq!(request.digest, Some(Digest::Sha1));

    let mut challenges = Challenges::one("good-1", "enr-A");
    let response = run(PKCSREQ, &mut challenges, SystemTime::now());
    assert_eq!(response.status, PkiStatus::Success, "{:?}", response.reason);
    assert_eq!(response.enrollment_id.as_deref(), Some("enr-A"));

    let back = read_back(&response.bytes, &ca, &request.signer, &client_key());
    assert_eq!(back.status, "0");
    assert_eq!(back.fail_info, None);
    assert_eq!(back.recipient_nonce, request.sender_nonce);
    assert_eq!(back.transaction_id, request.transaction_id);
    assert_eq!(back.digest, Digest::Sha1, "the request's digest");
    assert_eq!(
        back.cipher,
        Some(ContentCipher::DesCbc),
        "the request's cipher"
    );
    let cert = back.certificate.unwrap();
    assert_eq!(cert.to_der().unwrap(), response.certificate.unwrap());
    assert_eq!(
        cert.tbs_certificate().issuer(),
        ca.certificate().tbs_certificate().subject()
    );
    assert_eq!(common_name(&cert), "device-a");
    assert_eq!(enrollment_id_of(&cert).as_deref(), Some("enr-A"));
    assert!(ca.issued(&cert));

    // One-time: the same request again is refused.
    assert_eq!(
        refused(&run(PKCSREQ, &mut challenges, SystemTime::now())),
        FailInfo::BadRequest
    );
}

#[test]
fn wrong_and_expired_challenges_are_bad_requests() {
    let now = SystemTime::now();
    assert_eq!(
        refused(&run(PKCSREQ, &mut Challenges::one("other", "enr"), now)),
        FailInfo::BadRequest
    );
    let mut expired = Challenges(vec![(
        "good-1".into(),
        "enr".into(),
        now - Duration::from_secs(1),
    )]);
    let response = run(PKCSREQ, &mut expired, now);
    assert_eq!(refused(&response), FailInfo::BadRequest);
    assert!(response.reason.unwrap().contains("challenge"));
    // The FAILURE reply is signed and carries the failInfo, no content.
    let request = message::parse(PKCSREQ).unwrap();
    let back = read_back(&response.bytes, &ca(), &request.signer, &client_key());
    assert_eq!(back.status, "2");
    assert_eq!(back.fail_info.as_deref(), Some("2"));
    assert!(back.certificate.is_none());
}

/// The renewal fixture's signer certificate is valid from its notBefore for a year.
fn renewal_time() -> (SystemTime, SystemTime) {
    let request = message::parse(RENEWALREQ).unwrap();
    let validity = request.signer.tbs_certificate().validity();
    (
        UNIX_EPOCH + validity.not_before.to_unix_duration() + Duration::from_secs(3600),
        UNIX_EPOCH + validity.not_after.to_unix_duration() + Duration::from_secs(1),
    )
}

#[test]
fn a_real_scepclient_renewal_keeps_the_enrollment_id() {
    let (valid, expired) = renewal_time();
    let ca = ca();
    let request = message::parse(RENEWALREQ).unwrap();
    assert_eq!(request.message_type, Some(MessageType::RenewalReq));
    let mut none = Challenges(vec![]);
    let response = handle(
        RENEWALREQ,
        &ca,
        &mut none,
        &NothingRevoked,
        valid,
        &mut OsRng,
    )
    .unwrap();
    assert_eq!(response.status, PkiStatus::Success, "{:?}", response.reason);
    assert_eq!(response.enrollment_id.as_deref(), Some("enr-A"));
    let back = read_back(&response.bytes, &ca, &request.signer, &client_key());
    assert_eq!(
        enrollment_id_of(&back.certificate.unwrap()).as_deref(),
        Some("enr-A")
    );

    let revoked = handle(RENEWALREQ, &ca, &mut none, &RevokeAll, valid, &mut OsRng).unwrap();
    assert_eq!(refused(&revoked), FailInfo::BadRequest);
    let late = handle(
        RENEWALREQ,
        &ca,
        &mut none,
        &NothingRevoked,
        expired,
        &mut OsRng,
    )
    .unwrap();
    assert_eq!(refused(&late), FailInfo::BadTime);

    // Another CA did not issue the signer's certificate.
    let other = DeviceCa::generate("Other", SystemTime::now(), &mut OsRng).unwrap();
    let foreign = handle(
        RENEWALREQ,
        &other,
        &mut none,
        &NothingRevoked,
        valid,
        &mut OsRng,
    )
    .unwrap();
    // Its envelope is not addressed to the other CA either: that is found first.
    assert_eq!(refused(&foreign), FailInfo::BadMessageCheck);
}

// --- Requests built here, to reach each refusal. ---

/// A requester: the fixture client key and a self-signed certificate for it.
fn requester() -> Requester {
    Requester::new(&client_key()).unwrap()
}

/// A CSR for the requester's key, CN `cn` and a requested OU (which the enrollment id must
/// win over), with `challenge` if given.
fn csr(requester: &Requester, cn: &str, challenge: Option<&str>) -> Vec<u8> {
    requester.csr(cn, Some("requested OU"), challenge).unwrap()
}

type Build<'a> = MessageSpec<'a>;

fn build(requester: &Requester, inner: &[u8], b: &Build<'_>) -> Vec<u8> {
    requester.message(inner, b, &mut OsRng).unwrap()
}

fn standard<'a>(recipient: &'a Certificate) -> Build<'a> {
    Build {
        message_type: "19",
        cipher: ContentCipher::Aes128Cbc,
        digest: Digest::Sha256,
        recipient,
        transaction_id: Some("tx-1"),
        sender_nonce: Some(&[7; 16]),
    }
}

#[test]
fn every_cipher_and_digest_is_answered_in_kind() {
    let ca = ca();
    let r = requester();
    let inner = csr(&r, "iPad", Some("s3cret"));
    for cipher in [
        ContentCipher::Aes128Cbc,
        ContentCipher::Aes256Cbc,
        ContentCipher::DesEde3Cbc,
        ContentCipher::DesCbc,
    ] {
        for digest in [Digest::Sha1, Digest::Sha256, Digest::Sha384, Digest::Sha512] {
            let request = build(
                &r,
                &inner,
                &Build {
                    cipher,
                    digest,
                    ..standard(ca.certificate())
                },
            );
            let response = run(
                &request,
                &mut Challenges::one("s3cret", "enr-7"),
                SystemTime::now(),
            );
            assert_eq!(
                response.status,
                PkiStatus::Success,
                "{cipher:?} {digest:?} {:?}",
                response.reason
            );
            let back = read_back(&response.bytes, &ca, &r.certificate, &r.key);
            assert_eq!(back.cipher, Some(cipher));
            assert_eq!(back.digest, digest);
            assert_eq!(back.transaction_id, "tx-1");
            assert_eq!(back.recipient_nonce, [7; 16]);
            let cert = back.certificate.unwrap();
            assert_eq!(common_name(&cert), "iPad");
            assert_eq!(
                enrollment_id_of(&cert).as_deref(),
                Some("enr-7"),
                "not the requested OU"
            );
        }
    }
}

#[test]
fn each_refusal_has_its_fail_info() {
    let ca = ca();
    let r = requester();
    let good = csr(&r, "iPad", Some("s3cret"));
    let now = SystemTime::now();
    let answer = |request: &[u8]| run(request, &mut Challenges::one("s3cret", "enr"), now);

    // Enveloped to another certificate (the requester's own): not for this CA.
    let other = build(&r, &good, &standard(&r.certificate));
    assert_eq!(refused(&answer(&other)), FailInfo::BadMessageCheck);

    // An unsupported content cipher: AES-128-CBC's OID turned into AES-128-GCM's.
    let aes128_cbc = [
        0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x01, 0x02,
    ];
    let mut sealed = envelope::seal(
        &good,
        ca.certificate(),
        ContentCipher::Aes128Cbc,
        &mut OsRng,
    )
    .unwrap();
    let at = sealed.windows(11).position(|w| w == aes128_cbc).unwrap();
    sealed[at + 10] = 0x06;
    let attrs = vec![
        printable(crate::oid::SCEP_MESSAGE_TYPE, "19").unwrap(),
        printable(crate::oid::SCEP_TRANSACTION_ID, "tx").unwrap(),
        octet_string(crate::oid::SCEP_SENDER_NONCE, &[1; 16]).unwrap(),
    ];
    let request =
        reply::signed_message(&r.certificate, &r.key, Digest::Sha256, attrs, Some(sealed)).unwrap();
    assert_eq!(refused(&answer(&request)), FailInfo::BadAlg);

    // An unsupported digest: SHA-256's OID turned into SHA-224's (everywhere it appears).
    let sha256 = [
        0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01,
    ];
    let mut request = build(&r, &good, &standard(ca.certificate()));
    let mut i = 0;
    while let Some(at) = request[i..].windows(11).position(|w| w == sha256) {
        request[i + at + 10] = 0x04;
        i += at + 11;
    }
    let response = answer(&request);
    assert_eq!(refused(&response), FailInfo::BadAlg);
    // Answered with SHA-256, the digest this CA falls back to.
    let back = read_back(&response.bytes, &ca, &r.certificate, &r.key);
    assert_eq!(back.digest, Digest::Sha256);

    // A bad signature: one bit of it flipped (it is the message's last bytes).
    let mut request = build(&r, &good, &standard(ca.certificate()));
    let last = request.len() - 1;
    request[last] ^= 1;
    assert_eq!(refused(&answer(&request)), FailInfo::BadMessageCheck);

    // CertPoll (20), GetCert (21), a CertRep sent as a request (3), a non-number.
    for t in ["20", "21", "3", "x"] {
        let request = build(
            &r,
            &good,
            &Build {
                message_type: t,
                ..standard(ca.certificate())
            },
        );
        assert_eq!(refused(&answer(&request)), FailInfo::BadRequest, "{t}");
    }

    // No challenge in the CSR; a CSR with a broken self-signature; not a CSR at all.
    let request = build(&r, &csr(&r, "iPad", None), &standard(ca.certificate()));
    assert_eq!(refused(&answer(&request)), FailInfo::BadRequest);
    let mut broken = good.clone();
    let last = broken.len() - 1;
    broken[last] ^= 1;
    let request = build(&r, &broken, &standard(ca.certificate()));
    assert_eq!(refused(&answer(&request)), FailInfo::BadRequest);
    let request = build(&r, b"not a CSR", &standard(ca.certificate()));
    assert_eq!(refused(&answer(&request)), FailInfo::BadRequest);

    // A CSR for another key than the signer's (PKCSReq).
    let other_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let foreign = Requester {
        key: r.key.clone(),
        certificate: r.certificate.clone(),
        signing_key: other_key,
    };
    let request = build(
        &r,
        &csr(&foreign, "iPad", Some("s3cret")),
        &standard(ca.certificate()),
    );
    assert_eq!(refused(&answer(&request)), FailInfo::BadRequest);

    // A renewal signed with a self-signed certificate.
    let request = build(
        &r,
        &good,
        &Build {
            message_type: "17",
            ..standard(ca.certificate())
        },
    );
    assert_eq!(refused(&answer(&request)), FailInfo::BadRequest);
}

#[test]
fn unanswerable_messages_are_typed_errors() {
    let ca = ca();
    let r = requester();
    let good = csr(&r, "iPad", Some("s3cret"));
    let call = |bytes: &[u8]| {
        handle(
            bytes,
            &ca,
            &mut Challenges(vec![]),
            &NothingRevoked,
            SystemTime::now(),
            &mut OsRng,
        )
    };
    assert!(matches!(call(b""), Err(ScepError::Malformed(_))));
    assert!(matches!(
        call(b"garbage bytes"),
        Err(ScepError::Malformed(_))
    ));
    assert_eq!(
        call(&vec![0x30; MAX_MESSAGE + 1]).unwrap_err(),
        ScepError::Oversized(MAX_MESSAGE + 1)
    );
    // An EnvelopedData where a SignedData belongs.
    let sealed = envelope::seal(
        &good,
        ca.certificate(),
        ContentCipher::Aes128Cbc,
        &mut OsRng,
    )
    .unwrap();
    assert!(matches!(call(&sealed), Err(ScepError::NotSignedData(_))));
    // A certs-only SignedData: no signer.
    let degenerate = reply::degenerate(&[ca.certificate_der()]).unwrap();
    assert_eq!(call(&degenerate).unwrap_err(), ScepError::SignerCount(0));
    // No transactionID, no senderNonce.
    let request = build(
        &r,
        &good,
        &Build {
            transaction_id: None,
            ..standard(ca.certificate())
        },
    );
    assert_eq!(
        call(&request).unwrap_err(),
        ScepError::MissingAttribute("transactionID")
    );
    let request = build(
        &r,
        &good,
        &Build {
            sender_nonce: None,
            ..standard(ca.certificate())
        },
    );
    assert_eq!(
        call(&request).unwrap_err(),
        ScepError::MissingAttribute("senderNonce")
    );
}

#[test]
fn every_prefix_of_a_real_message_is_refused_without_panic() {
    let ca = ca();
    for len in 0..PKCSREQ.len() {
        let mut challenges = Challenges::one("good-1", "enr");
        let result = handle(
            &PKCSREQ[..len],
            &ca,
            &mut challenges,
            &NothingRevoked,
            SystemTime::now(),
            &mut OsRng,
        );
        match result {
            Err(_) => {}
            Ok(r) => assert_eq!(r.status, PkiStatus::Failure, "prefix {len}"),
        }
    }
}

#[test]
fn single_byte_changes_never_panic() {
    let ca = ca();
    // Every 7th byte, three ways: a sample that crosses every structure of the message.
    for i in (0..PKCSREQ.len()).step_by(7) {
        for x in [0x01u8, 0x80, 0xff] {
            let mut bytes = PKCSREQ.to_vec();
            bytes[i] ^= x;
            let mut challenges = Challenges::one("good-1", "enr");
            if let Ok(r) = handle(
                &bytes,
                &ca,
                &mut challenges,
                &NothingRevoked,
                SystemTime::now(),
                &mut OsRng,
            ) {
                // Only the unsigned parts (the certificate's own signature, lengths the BER
                // reader tolerates) may change and still enroll.
                if r.status == PkiStatus::Success {
                    assert!(challenges.0.is_empty());
                }
            }
        }
    }
}

#[test]
fn a_ber_envelope_parses_and_the_ber_walker_is_used() {
    // The scepclient fixture's envelope content is a constructed [0]: parsed above; here the
    // content is also decoded by cms's strict type to show why the walker is needed.
    let request = message::parse(PKCSREQ).unwrap();
    let info = ContentInfo::from_ber(request.content.as_deref().unwrap()).unwrap();
    let strict: Result<cms::enveloped_data::EnvelopedData, _> =
        info.content.decode_as_encoding(EncodingRules::Ber);
    assert!(
        strict.is_err(),
        "der 0.8 refuses the constructed definite form"
    );
    let opened = envelope::open(
        request.content.as_deref().unwrap(),
        ca().certificate(),
        ca().key(),
        &mut OsRng,
    )
    .unwrap();
    assert_eq!(opened.cipher, ContentCipher::DesCbc);
}

#[test]
fn the_two_step_api_asks_one_question() {
    use crate::{prepare, Policy, Question, Verdict};
    let ca = ca();
    let now = SystemTime::now();

    let prepared = prepare(PKCSREQ, &ca, now, &mut OsRng).unwrap();
    assert_eq!(prepared.question(), Question::Challenge("good-1"));
    assert_eq!(prepared.message_type(), Some(MessageType::PkcsReq));
    let response = prepared
        .answer(
            &ca,
            Verdict::Enroll("enr-async".into()),
            &Policy::default(),
            now,
            &mut OsRng,
        )
        .unwrap();
    assert_eq!(response.status, PkiStatus::Success);
    assert_eq!(response.enrollment_id.as_deref(), Some("enr-async"));

    let prepared = prepare(PKCSREQ, &ca, now, &mut OsRng).unwrap();
    let response = prepared
        .answer(&ca, Verdict::Refuse, &Policy::default(), now, &mut OsRng)
        .unwrap();
    assert_eq!(refused(&response), FailInfo::BadRequest);

    let (valid, _) = renewal_time();
    let prepared = prepare(RENEWALREQ, &ca, valid, &mut OsRng).unwrap();
    let Question::Revoked(id) = prepared.question() else {
        panic!("a renewal asks about revocation");
    };
    assert_eq!(id.enrollment_id, "enr-A");
    assert_eq!(id.serial_hex.len() % 2, 0);
    assert_eq!(id.sha256_hex.len(), 64);

    // A request refused by the CA alone asks nothing: no challenge is spent on it.
    let mut bad = PKCSREQ.to_vec();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    let prepared = prepare(&bad, &ca, now, &mut OsRng).unwrap();
    assert_eq!(prepared.question(), Question::None);
    let response = prepared
        .answer(
            &ca,
            Verdict::Enroll("ignored".into()),
            &Policy::default(),
            now,
            &mut OsRng,
        )
        .unwrap();
    assert_eq!(refused(&response), FailInfo::BadMessageCheck);
}

#[test]
fn the_policy_sets_the_device_validity() {
    use crate::{handle_with, Policy};
    let response = handle_with(
        PKCSREQ,
        &ca(),
        &mut Challenges::one("good-1", "enr"),
        &NothingRevoked,
        &Policy {
            device_validity: Duration::from_secs(7 * 86400),
        },
        SystemTime::now(),
        &mut OsRng,
    )
    .unwrap();
    let cert = Certificate::from_der(&response.certificate.unwrap()).unwrap();
    let v = cert.tbs_certificate().validity();
    let span = v.not_after.to_unix_duration() - v.not_before.to_unix_duration();
    assert_eq!(span, Duration::from_secs(7 * 86400) + crate::BACKDATE);
}

// --- The client: a device enrolling through `handle`. ---

fn enrollment<'a>(ca: &'a DeviceCa, challenge: &'a str) -> EnrollmentRequest<'a> {
    EnrollmentRequest {
        common_name: "UDID-0001",
        challenge,
        ca_cert_der: ca.certificate_der(),
        cipher: ContentCipher::Aes128Cbc,
    }
}

#[test]
fn the_client_enrolls_through_handle() {
    let ca = ca();
    let key = client_key();
    let (request, pending) =
        client::pkcs_req(&key, &enrollment(&ca, "one-time"), &mut OsRng).unwrap();
    let mut challenges = Challenges::one("one-time", "enr-fleet");
    let response = run(&request, &mut challenges, SystemTime::now());
    assert_eq!(response.status, PkiStatus::Success, "{:?}", response.reason);
    assert!(challenges.0.is_empty(), "the challenge is used up");

    let issued = pending.open(&response.bytes).unwrap();
    assert_eq!(Some(&issued), response.certificate.as_ref());
    let cert = Certificate::from_der(&issued).unwrap();
    assert!(ca.issued(&cert));
    assert_eq!(common_name(&cert), "UDID-0001");
    assert_eq!(enrollment_id_of(&cert).as_deref(), Some("enr-fleet"));
    // For the device key.
    use rsa::pkcs8::EncodePublicKey;
    let spki = cert
        .tbs_certificate()
        .subject_public_key_info()
        .to_der()
        .unwrap();
    assert_eq!(
        spki,
        key.to_public_key().to_public_key_der().unwrap().as_bytes()
    );

    // One signer certificate for two requests of the same key (devices sharing a key).
    let signer = client::RequestSigner::new(&key).unwrap();
    let mut two = Challenges(vec![]);
    for (secret, id) in [("a", "enr-a"), ("b", "enr-b")] {
        two.0.push((
            secret.into(),
            id.into(),
            SystemTime::now() + Duration::from_secs(60),
        ));
    }
    for (secret, id) in [("a", "enr-a"), ("b", "enr-b")] {
        let (request, pending) = signer
            .pkcs_req(&enrollment(&ca, secret), &mut OsRng)
            .unwrap();
        let response = run(&request, &mut two, SystemTime::now());
        let cert = Certificate::from_der(&pending.open(&response.bytes).unwrap()).unwrap();
        assert_eq!(enrollment_id_of(&cert).as_deref(), Some(id));
    }

    // Another request's answer is not this one's.
    let (_, other) = client::pkcs_req(&key, &enrollment(&ca, "one-time"), &mut OsRng).unwrap();
    assert!(matches!(
        other.open(&response.bytes),
        Err(ClientError::TransactionId { .. })
    ));
    // Nor is an answer signed by another CA.
    let foreign = DeviceCa::generate("Other", SystemTime::now(), &mut OsRng).unwrap();
    let (request, pending) =
        client::pkcs_req(&key, &enrollment(&foreign, "x"), &mut OsRng).unwrap();
    let answer = handle(
        &request,
        &foreign,
        &mut Challenges::one("x", "enr"),
        &NothingRevoked,
        SystemTime::now(),
        &mut OsRng,
    )
    .unwrap();
    assert!(pending.open(&answer.bytes).is_ok());
    let mismatched = client::pkcs_req(&key, &enrollment(&ca, "x"), &mut OsRng)
        .unwrap()
        .1;
    assert!(matches!(
        mismatched.open(&answer.bytes),
        Err(ClientError::Signature(_))
    ));
    assert!(matches!(
        pending.open(b"not a reply"),
        Err(ClientError::Malformed(_))
    ));
}

#[test]
fn a_refused_challenge_is_the_fail_info_as_an_error() {
    let ca = ca();
    let key = client_key();
    let (request, pending) = client::pkcs_req(&key, &enrollment(&ca, "wrong"), &mut OsRng).unwrap();
    let mut challenges = Challenges::one("right", "enr");
    let response = run(&request, &mut challenges, SystemTime::now());
    assert_eq!(refused(&response), FailInfo::BadRequest);
    assert_eq!(
        pending.open(&response.bytes).unwrap_err(),
        ClientError::Refused(FailInfo::BadRequest)
    );
    // A used challenge is refused the same way.
    let mut once = Challenges::one("once", "enr");
    let (first, _) = client::pkcs_req(&key, &enrollment(&ca, "once"), &mut OsRng).unwrap();
    assert_eq!(
        run(&first, &mut once, SystemTime::now()).status,
        PkiStatus::Success
    );
    let (again, pending) = client::pkcs_req(&key, &enrollment(&ca, "once"), &mut OsRng).unwrap();
    let response = run(&again, &mut once, SystemTime::now());
    assert_eq!(
        pending.open(&response.bytes).unwrap_err(),
        ClientError::Refused(FailInfo::BadRequest)
    );
}
