//! A push certificate as an admin uploads it: a PEM bundle (certificate + key), or PKCS#12.
#![no_main]
use magicpush_engine::cert::PushCertificate;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = PushCertificate::from_pem_bundle(data);
    let _ = PushCertificate::from_pkcs12(data, "secret");
    let _ = magicpush_engine::cert::CertificateInfo::from_pem(data);
});
