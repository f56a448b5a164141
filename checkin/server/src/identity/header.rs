//! A device certificate forwarded by a TLS-terminating proxy in a request header (named with
//! `--device-cert-header`; never read otherwise). Two forms:
//!
//! - RFC 9440 `Client-Cert`: a structured-field byte sequence, `:<base64 of the DER>:`;
//! - nginx's `$ssl_client_escaped_cert`: the PEM certificate, URL-escaped.
//!
//! The proxy must remove any such header a client sent itself, or clients could claim any
//! certificate; the README shows the nginx lines that do.

use base64::Engine as _;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

use super::Refusal;

/// Largest header value accepted (a certificate is 1–2 KB; a PEM escaped, about 3).
pub const MAX_CERT_HEADER: usize = 16 * 1024;

/// The DER certificate in a proxy header's value.
pub fn parse(name: &str, value: &[u8]) -> Result<Vec<u8>, Refusal> {
    let err = |detail: String| Refusal::HeaderMalformed {
        header: name.to_owned(),
        detail,
    };
    if value.len() > MAX_CERT_HEADER {
        return Err(err(format!(
            "{} bytes, more than the {MAX_CERT_HEADER} accepted",
            value.len()
        )));
    }
    let value = value.trim_ascii();
    if let Some(inner) = value.strip_prefix(b":") {
        let inner = inner
            .strip_suffix(b":")
            .ok_or_else(|| err("an RFC 9440 value must end with ':'".into()))?;
        return base64::engine::general_purpose::STANDARD
            .decode(inner)
            .map_err(|e| err(format!("not base64 between the colons: {e}")));
    }
    let pem = percent_decode(value).ok_or_else(|| err("a bad %-escape".into()))?;
    if !pem.windows(11).any(|w| w == b"-----BEGIN ") {
        return Err(err(
            "neither an RFC 9440 ':base64:' value nor a URL-escaped PEM certificate".into(),
        ));
    }
    let cert = CertificateDer::from_pem_slice(&pem).map_err(|e| err(format!("PEM: {e}")))?;
    Ok(cert.as_ref().to_vec())
}

/// `%XX` escapes decoded; `None` for a truncated or non-hex escape. (The admin API's paths
/// use it too.)
pub(crate) fn percent_decode(input: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        if input[i] == b'%' {
            let hex = input.get(i + 1..i + 3)?;
            let text = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(text, 16).ok()?);
            i += 3;
        } else {
            out.push(input[i]);
            i += 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DER: &[u8] = &[0x30, 0x03, 0x02, 0x01, 0x05];

    fn pem() -> String {
        let b64 = base64::engine::general_purpose::STANDARD.encode(DER);
        format!("-----BEGIN CERTIFICATE-----\n{b64}\n-----END CERTIFICATE-----\n")
    }

    #[test]
    fn rfc9440_byte_sequence() {
        let b64 = base64::engine::general_purpose::STANDARD.encode(DER);
        assert_eq!(
            parse("Client-Cert", format!(":{b64}:").as_bytes()).unwrap(),
            DER
        );
        assert_eq!(
            parse("Client-Cert", format!(" :{b64}: ").as_bytes()).unwrap(),
            DER
        );
    }

    #[test]
    fn nginx_escaped_pem() {
        let escaped: String = pem()
            .bytes()
            .map(|b| match b {
                b'\n' => "%0A".to_owned(),
                b' ' => "%20".to_owned(),
                b'+' => "%2B".to_owned(),
                b'/' => "%2F".to_owned(),
                b'=' => "%3D".to_owned(),
                b => (b as char).to_string(),
            })
            .collect();
        assert_eq!(parse("X-Ssl-Client-Cert", escaped.as_bytes()).unwrap(), DER);
    }

    #[test]
    fn malformed_values_are_refused_with_the_header_name() {
        for bad in [
            &b":AAAA"[..],
            b":!!!:",
            b"MIIB",
            b"-----BEGIN%2",
            b"%ZZ-----BEGIN CERTIFICATE-----",
            b"-----BEGIN CERTIFICATE-----%0Anot base64%0A-----END CERTIFICATE-----",
        ] {
            let err = parse("Client-Cert", bad).unwrap_err();
            assert_eq!(err.reason(), "header_malformed", "{bad:?}");
            assert!(err.to_string().contains("Client-Cert"));
        }
        let huge = vec![b'A'; MAX_CERT_HEADER + 1];
        assert_eq!(parse("h", &huge).unwrap_err().reason(), "header_malformed");
    }
}
