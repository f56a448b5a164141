//! Distinguished names printed the way `openssl x509 -noout -subject` prints them (OpenSSL 3
//! default name options): `C = JP, CN = APSP:…, UID = com.apple.mgmt.External.…`.
//!
//! Rules followed: RDNs in certificate order joined by `", "`, multi-valued RDNs by `" + "`;
//! OpenSSL short names (`CN`, `UID`, `emailAddress`, …) or the dotted OID; a value containing
//! `, + < > ;` or starting with `#`/space or ending with a space is wrapped in double quotes;
//! `"` and `\` are backslash-escaped; control and non-ASCII bytes are printed as `\XX`;
//! BMPString characters beyond ASCII as `\UXXXX`; values of other types as `#` + DER hex.

use std::fmt::Write as _;

use x509_parser::asn1_rs::Tag;
use x509_parser::x509::{AttributeTypeAndValue, X509Name};

/// Formats a name in OpenSSL's default one-line style.
pub(crate) fn openssl_oneline(name: &X509Name<'_>) -> String {
    let mut out = String::new();
    for (i, rdn) in name.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        for (j, attr) in rdn.iter().enumerate() {
            if j > 0 {
                out.push_str(" + ");
            }
            out.push_str(&short_name(attr));
            out.push_str(" = ");
            out.push_str(&value(attr));
        }
    }
    out
}

/// OpenSSL's short name for an attribute type, or its dotted OID.
fn short_name(attr: &AttributeTypeAndValue<'_>) -> String {
    let oid = attr.attr_type().to_id_string();
    let name = match oid.as_str() {
        "2.5.4.3" => "CN",
        "2.5.4.4" => "SN",
        "2.5.4.5" => "serialNumber",
        "2.5.4.6" => "C",
        "2.5.4.7" => "L",
        "2.5.4.8" => "ST",
        "2.5.4.9" => "street",
        "2.5.4.10" => "O",
        "2.5.4.11" => "OU",
        "2.5.4.12" => "title",
        "2.5.4.15" => "businessCategory",
        "2.5.4.17" => "postalCode",
        "2.5.4.41" => "name",
        "2.5.4.42" => "GN",
        "2.5.4.43" => "initials",
        "2.5.4.44" => "generationQualifier",
        "2.5.4.46" => "dnQualifier",
        "2.5.4.65" => "pseudonym",
        "2.5.4.97" => "organizationIdentifier",
        "0.9.2342.19200300.100.1.1" => "UID",
        "0.9.2342.19200300.100.1.25" => "DC",
        "1.2.840.113549.1.9.1" => "emailAddress",
        "1.3.6.1.4.1.311.60.2.1.3" => "jurisdictionC",
        _ => return oid,
    };
    name.to_string()
}

fn value(attr: &AttributeTypeAndValue<'_>) -> String {
    let any = attr.attr_value();
    let data = any.data;
    let chars: Vec<Char> = match any.tag() {
        Tag::Utf8String
        | Tag::PrintableString
        | Tag::Ia5String
        | Tag::NumericString
        | Tag::T61String
        | Tag::VisibleString => data.iter().map(|&b| Char::Byte(b)).collect(),
        Tag::BmpString if data.len() % 2 == 0 => data
            .chunks(2)
            .map(|c| {
                let unit = u16::from_be_bytes([c[0], c[1]]);
                if unit < 0x80 {
                    Char::Byte(unit as u8)
                } else {
                    Char::Wide(unit)
                }
            })
            .collect(),
        _ => return dump(any.tag(), data),
    };
    escape(&chars)
}

enum Char {
    Byte(u8),
    Wide(u16),
}

fn escape(chars: &[Char]) -> String {
    let mut out = String::new();
    let mut quote = false;
    let last = chars.len().saturating_sub(1);
    for (i, c) in chars.iter().enumerate() {
        match *c {
            Char::Wide(u) => {
                let _ = write!(out, "\\U{u:04X}");
            }
            Char::Byte(b @ (b'"' | b'\\')) => {
                out.push('\\');
                out.push(b as char);
            }
            Char::Byte(b @ (b',' | b'+' | b'<' | b'>' | b';')) => {
                quote = true;
                out.push(b as char);
            }
            Char::Byte(b @ (b'#' | b' ')) if i == 0 => {
                quote = true;
                out.push(b as char);
            }
            Char::Byte(b' ') if i == last => {
                quote = true;
                out.push(' ');
            }
            Char::Byte(b) if !(0x20..0x7f).contains(&b) => {
                let _ = write!(out, "\\{b:02X}");
            }
            Char::Byte(b) => out.push(b as char),
        }
    }
    if quote {
        format!("\"{out}\"")
    } else {
        out
    }
}

/// `#` followed by the hex of the whole DER TLV, as OpenSSL dumps unknown value types.
fn dump(tag: Tag, data: &[u8]) -> String {
    let mut der = vec![tag.0 as u8];
    let len = data.len();
    if len < 0x80 {
        der.push(len as u8);
    } else {
        let bytes: Vec<u8> = len
            .to_be_bytes()
            .iter()
            .copied()
            .skip_while(|&b| b == 0)
            .collect();
        der.push(0x80 | bytes.len() as u8);
        der.extend(bytes);
    }
    der.extend_from_slice(data);
    format!("#{}", hex::encode_upper(der))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(s: &str) -> Vec<Char> {
        s.bytes().map(Char::Byte).collect()
    }

    #[test]
    fn plain_values_are_unchanged() {
        assert_eq!(escape(&bytes("APSP:6f1c2a4e-8b3d")), "APSP:6f1c2a4e-8b3d");
    }

    #[test]
    fn specials_quote_the_value_and_quotes_are_escaped() {
        assert_eq!(escape(&bytes("a, b;c")), "\"a, b;c\"");
        assert_eq!(escape(&bytes("q\"u\\o")), "q\\\"u\\\\o");
        assert_eq!(escape(&bytes("#hash")), "\"#hash\"");
        assert_eq!(escape(&bytes("trail ")), "\"trail \"");
    }

    #[test]
    fn non_ascii_bytes_are_hex_escaped() {
        assert_eq!(escape(&bytes("日")), "\\E6\\97\\A5");
        assert_eq!(escape(&[Char::Wide(0x65e5)]), "\\U65E5");
    }
}
