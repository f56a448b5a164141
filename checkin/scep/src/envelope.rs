//! The pkcsPKIEnvelope (RFC 8894 §3.2.2): a CMS EnvelopedData (RFC 5652 §6) with one
//! key-transport recipient (RSA PKCS#1 v1.5) and a CBC content cipher. [`open`] decrypts a
//! request's envelope with the CA key; [`seal`] envelopes a reply to the requester's
//! certificate with the cipher the request used.

use cms::cert::IssuerAndSerialNumber;
use cms::content_info::{CmsVersion, ContentInfo};
use cms::enveloped_data::{
    EncryptedContentInfo, EnvelopedData, KeyTransRecipientInfo, RecipientIdentifier, RecipientInfo,
    RecipientInfos,
};
use der::asn1::{Any, ObjectIdentifier, OctetString, SetOfVec};
use der::{Decode, Encode, EncodingRules, Tagged};
use rand_core::CryptoRngCore;
use rsa::{Pkcs1v15Encrypt, RsaPrivateKey, RsaPublicKey};
use x509_cert::spki::AlgorithmIdentifierOwned;
use x509_cert::Certificate;

use crate::error::{FailInfo, Refusal};
use crate::oid;

/// The content cipher of an envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentCipher {
    /// AES-128-CBC (iOS's default).
    Aes128Cbc,
    /// AES-192-CBC.
    Aes192Cbc,
    /// AES-256-CBC.
    Aes256Cbc,
    /// DES-EDE3-CBC.
    DesEde3Cbc,
    /// Single DES-CBC: weak, but what scepclient 2.1 sends whatever the caps say.
    DesCbc,
}

impl ContentCipher {
    pub(crate) fn from_oid(oid: &ObjectIdentifier) -> Option<ContentCipher> {
        Some(match *oid {
            o if o == oid::AES128_CBC => ContentCipher::Aes128Cbc,
            o if o == oid::AES192_CBC => ContentCipher::Aes192Cbc,
            o if o == oid::AES256_CBC => ContentCipher::Aes256Cbc,
            o if o == oid::DES_EDE3_CBC => ContentCipher::DesEde3Cbc,
            o if o == oid::DES_CBC => ContentCipher::DesCbc,
            _ => return None,
        })
    }

    fn oid(self) -> ObjectIdentifier {
        match self {
            ContentCipher::Aes128Cbc => oid::AES128_CBC,
            ContentCipher::Aes192Cbc => oid::AES192_CBC,
            ContentCipher::Aes256Cbc => oid::AES256_CBC,
            ContentCipher::DesEde3Cbc => oid::DES_EDE3_CBC,
            ContentCipher::DesCbc => oid::DES_CBC,
        }
    }

    fn key_len(self) -> usize {
        match self {
            ContentCipher::Aes128Cbc => 16,
            ContentCipher::Aes192Cbc | ContentCipher::DesEde3Cbc => 24,
            ContentCipher::Aes256Cbc => 32,
            ContentCipher::DesCbc => 8,
        }
    }

    fn iv_len(self) -> usize {
        match self {
            ContentCipher::DesEde3Cbc | ContentCipher::DesCbc => 8,
            _ => 16,
        }
    }

    /// CBC decryption with PKCS#7 padding; `None` on a bad key/IV length or padding.
    fn decrypt(self, key: &[u8], iv: &[u8], data: &[u8]) -> Option<Vec<u8>> {
        use cbc::cipher::{block_padding::Pkcs7, BlockModeDecrypt, KeyIvInit};
        fn run<C>(key: &[u8], iv: &[u8], data: &[u8]) -> Option<Vec<u8>>
        where
            cbc::Decryptor<C>: KeyIvInit + BlockModeDecrypt,
            C: cbc::cipher::BlockCipherDecrypt,
        {
            cbc::Decryptor::<C>::new_from_slices(key, iv)
                .ok()?
                .decrypt_padded_vec::<Pkcs7>(data)
                .ok()
        }
        match self {
            ContentCipher::Aes128Cbc => run::<aes::Aes128>(key, iv, data),
            ContentCipher::Aes192Cbc => run::<aes::Aes192>(key, iv, data),
            ContentCipher::Aes256Cbc => run::<aes::Aes256>(key, iv, data),
            ContentCipher::DesEde3Cbc => run::<des::TdesEde3>(key, iv, data),
            ContentCipher::DesCbc => run::<des::Des>(key, iv, data),
        }
    }

    fn encrypt(self, key: &[u8], iv: &[u8], data: &[u8]) -> Option<Vec<u8>> {
        use cbc::cipher::{block_padding::Pkcs7, BlockModeEncrypt, KeyIvInit};
        fn run<C>(key: &[u8], iv: &[u8], data: &[u8]) -> Option<Vec<u8>>
        where
            cbc::Encryptor<C>: KeyIvInit + BlockModeEncrypt,
            C: cbc::cipher::BlockCipherEncrypt,
        {
            Some(
                cbc::Encryptor::<C>::new_from_slices(key, iv)
                    .ok()?
                    .encrypt_padded_vec::<Pkcs7>(data),
            )
        }
        match self {
            ContentCipher::Aes128Cbc => run::<aes::Aes128>(key, iv, data),
            ContentCipher::Aes192Cbc => run::<aes::Aes192>(key, iv, data),
            ContentCipher::Aes256Cbc => run::<aes::Aes256>(key, iv, data),
            ContentCipher::DesEde3Cbc => run::<des::TdesEde3>(key, iv, data),
            ContentCipher::DesCbc => run::<des::Des>(key, iv, data),
        }
    }
}

/// What [`open`] found: the plaintext and the cipher (to answer with the same).
#[derive(Debug)]
pub(crate) struct Opened {
    pub(crate) plaintext: Vec<u8>,
    pub(crate) cipher: ContentCipher,
}

fn refuse(fail_info: FailInfo, reason: impl Into<String>) -> Refusal {
    Refusal::new(fail_info, reason)
}

/// The parts of an EnvelopedData (RFC 5652 §6.1) this crate reads, decoded field by field:
/// `cms`'s own type refuses the constructed `[0] IMPLICIT OCTET STRING` Go clients send.
struct LooseEnveloped {
    recip_infos: RecipientInfos,
    content_enc_alg: AlgorithmIdentifierOwned,
    encrypted_content: Option<Vec<u8>>,
}

impl LooseEnveloped {
    fn decode(any: &Any) -> Option<LooseEnveloped> {
        let items: Vec<Any> = any.decode_as_encoding(EncodingRules::Ber).ok()?;
        // version, [0] originatorInfo OPTIONAL, recipientInfos, encryptedContentInfo,
        // [1] unprotectedAttrs OPTIONAL.
        let mut fields = items
            .iter()
            .skip(1)
            .filter(|i| !i.tag().is_context_specific());
        let recip_infos: RecipientInfos =
            fields.next()?.decode_as_encoding(EncodingRules::Ber).ok()?;
        let eci: Vec<Any> = fields.next()?.decode_as_encoding(EncodingRules::Ber).ok()?;
        let (alg, rest) = match eci.as_slice() {
            [_content_type, alg, rest @ ..] => (alg, rest),
            _ => return None,
        };
        let content_enc_alg: AlgorithmIdentifierOwned =
            alg.decode_as_encoding(EncodingRules::Ber).ok()?;
        let encrypted_content = match rest {
            [] => None,
            [c] if c.tag().is_context_specific() => Some(crate::ber::octet_string_contents(
                c.tag().is_constructed(),
                c.value(),
            )?),
            _ => return None,
        };
        Some(LooseEnveloped {
            recip_infos,
            content_enc_alg,
            encrypted_content,
        })
    }
}

/// Decrypts a pkcsPKIEnvelope (a ContentInfo holding EnvelopedData, BER or DER) addressed to
/// `ca_cert` with `ca_key`.
pub(crate) fn open(
    envelope: &[u8],
    ca_cert: &Certificate,
    ca_key: &RsaPrivateKey,
    rng: &mut impl CryptoRngCore,
) -> Result<Opened, Refusal> {
    let bad = |what: &str, e: der::Error| {
        refuse(
            FailInfo::BadMessageCheck,
            format!("the envelope's {what}: {e}"),
        )
    };
    let info = ContentInfo::from_ber(envelope).map_err(|e| bad("ContentInfo", e))?;
    if info.content_type != oid::ID_ENVELOPED_DATA {
        return Err(refuse(
            FailInfo::BadMessageCheck,
            format!("the envelope is {}, not EnvelopedData", info.content_type),
        ));
    }
    let enveloped = LooseEnveloped::decode(&info.content).ok_or_else(|| {
        refuse(
            FailInfo::BadMessageCheck,
            "the envelope is not a readable EnvelopedData",
        )
    })?;
    let content_enc_alg = &enveloped.content_enc_alg;
    let cipher = ContentCipher::from_oid(&content_enc_alg.oid).ok_or_else(|| {
        refuse(
            FailInfo::BadAlg,
            format!("content cipher {}", content_enc_alg.oid),
        )
    })?;
    let iv: OctetString = content_enc_alg
        .parameters
        .as_ref()
        .ok_or_else(|| refuse(FailInfo::BadMessageCheck, "the cipher has no IV"))?
        .decode_as_encoding(EncodingRules::Ber)
        .map_err(|e| bad("IV", e))?;
    if iv.as_bytes().len() != cipher.iv_len() {
        return Err(refuse(
            FailInfo::BadMessageCheck,
            "the IV has the wrong length",
        ));
    }

    // The recipient addressed to this CA, by issuer and serial number.
    let tbs = ca_cert.tbs_certificate();
    let ktri = enveloped
        .recip_infos
        .0
        .iter()
        .find_map(|ri| match ri {
            RecipientInfo::Ktri(k) => match &k.rid {
                RecipientIdentifier::IssuerAndSerialNumber(isn)
                    if &isn.issuer == tbs.issuer() && &isn.serial_number == tbs.serial_number() =>
                {
                    Some(k)
                }
                _ => None,
            },
            _ => None,
        })
        .ok_or_else(|| {
            refuse(
                FailInfo::BadMessageCheck,
                "no key-transport recipient is this CA's certificate",
            )
        })?;
    if ktri.key_enc_alg.oid != oid::RSA_ENCRYPTION {
        return Err(refuse(
            FailInfo::BadAlg,
            format!("key transport {}", ktri.key_enc_alg.oid),
        ));
    }
    // PKCS#1 v1.5 decryption with blinding. A padding failure is not told apart from a
    // content failure (both end as badMessageCheck, after the same work: a random key is used
    // instead), so that the reply is no padding oracle.
    let key = match ca_key.decrypt_blinded(rng, Pkcs1v15Encrypt, ktri.enc_key.as_bytes()) {
        Ok(k) if k.len() == cipher.key_len() => k,
        _ => {
            let mut k = vec![0u8; cipher.key_len()];
            rng.fill_bytes(&mut k);
            k
        }
    };
    let ciphertext = enveloped
        .encrypted_content
        .as_deref()
        .ok_or_else(|| refuse(FailInfo::BadMessageCheck, "the envelope has no content"))?;
    let plaintext = cipher
        .decrypt(&key, iv.as_bytes(), ciphertext)
        .ok_or_else(|| {
            refuse(
                FailInfo::BadMessageCheck,
                "the envelope does not decrypt with this CA's key",
            )
        })?;
    Ok(Opened { plaintext, cipher })
}

/// Envelopes `plaintext` to `recipient` (an RSA certificate) with `cipher`: a fresh content key
/// and IV, the key encrypted with RSA PKCS#1 v1.5. Returns the ContentInfo's DER.
pub(crate) fn seal(
    plaintext: &[u8],
    recipient: &Certificate,
    cipher: ContentCipher,
    rng: &mut impl CryptoRngCore,
) -> Result<Vec<u8>, String> {
    use rsa::pkcs8::DecodePublicKey;
    let tbs = recipient.tbs_certificate();
    let spki = tbs.subject_public_key_info();
    if spki.algorithm.oid != oid::RSA_ENCRYPTION {
        return Err("the requester's certificate has no RSA key to envelope to".into());
    }
    let public = RsaPublicKey::from_public_key_der(&spki.to_der().map_err(|e| e.to_string())?)
        .map_err(|e| format!("the requester's RSA key: {e}"))?;

    let mut key = vec![0u8; cipher.key_len()];
    rng.fill_bytes(&mut key);
    let mut iv = vec![0u8; cipher.iv_len()];
    rng.fill_bytes(&mut iv);
    let ciphertext = cipher
        .encrypt(&key, &iv, plaintext)
        .ok_or("the content cipher refused its key")?;
    let enc_key = public
        .encrypt(rng, Pkcs1v15Encrypt, &key)
        .map_err(|e| format!("key transport: {e}"))?;

    let der_err = |e: der::Error| e.to_string();
    let ktri = KeyTransRecipientInfo {
        version: CmsVersion::V0,
        rid: RecipientIdentifier::IssuerAndSerialNumber(IssuerAndSerialNumber {
            issuer: tbs.issuer().clone(),
            serial_number: tbs.serial_number().clone(),
        }),
        key_enc_alg: AlgorithmIdentifierOwned {
            oid: oid::RSA_ENCRYPTION,
            parameters: Some(Any::null()),
        },
        enc_key: OctetString::new(enc_key).map_err(der_err)?,
    };
    let enveloped = EnvelopedData {
        version: CmsVersion::V0,
        originator_info: None,
        recip_infos: RecipientInfos(
            SetOfVec::try_from(vec![RecipientInfo::Ktri(ktri)]).map_err(der_err)?,
        ),
        encrypted_content: EncryptedContentInfo {
            content_type: oid::ID_DATA,
            content_enc_alg: AlgorithmIdentifierOwned {
                oid: cipher.oid(),
                parameters: Some(
                    Any::encode_from(&OctetString::new(iv).map_err(der_err)?).map_err(der_err)?,
                ),
            },
            encrypted_content: Some(OctetString::new(ciphertext).map_err(der_err)?),
        },
        unprotected_attrs: None,
    };
    let info = ContentInfo {
        content_type: oid::ID_ENVELOPED_DATA,
        content: Any::encode_from(&enveloped).map_err(der_err)?,
    };
    info.to_der().map_err(der_err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_cipher_round_trips() {
        for cipher in [
            ContentCipher::Aes128Cbc,
            ContentCipher::Aes192Cbc,
            ContentCipher::Aes256Cbc,
            ContentCipher::DesEde3Cbc,
            ContentCipher::DesCbc,
        ] {
            let key = vec![7u8; cipher.key_len()];
            let iv = vec![9u8; cipher.iv_len()];
            let ct = cipher.encrypt(&key, &iv, b"a certificate").unwrap();
            assert_eq!(ct.len() % cipher.iv_len(), 0);
            assert_eq!(
                cipher.decrypt(&key, &iv, &ct).unwrap(),
                b"a certificate",
                "{cipher:?}"
            );
            assert!(ContentCipher::from_oid(&cipher.oid()) == Some(cipher));
        }
    }

    #[test]
    fn a_wrong_key_length_is_refused_not_a_panic() {
        assert!(ContentCipher::Aes128Cbc
            .decrypt(&[0; 5], &[0; 16], &[0; 16])
            .is_none());
        assert!(ContentCipher::DesCbc
            .decrypt(&[0; 8], &[0; 8], &[0; 7])
            .is_none());
    }
}
