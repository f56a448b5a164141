//! Table-driven decoding tests over the committed fixture plists (`fixtures/plists/`) and
//! variants derived from them: every message type and status, binary plists, and malformed,
//! truncated, wrongly typed and unknown input.

use magicpush_mdm::{
    decode, decode_checkin, decode_report, Checkin, Command, DecodeError, Message, Status,
    DEVICE_INFORMATION_QUERIES,
};
use plist::{Dictionary, Value};

const UDID: &str = "00008110-001A2B3C4D5E6F70";
const TOPIC: &str = "com.apple.mgmt.External.6f1c2a4e-8b3d-4f5a-9c7e-1d2b3a4c5e6f";

fn fixture(name: &str) -> Vec<u8> {
    magicpush_fixtures::read(&format!("plists/{name}.plist"))
}

fn fixture_dict(name: &str) -> Dictionary {
    Value::from_reader_xml(&fixture(name)[..])
        .expect("fixture parses")
        .into_dictionary()
        .expect("fixture is a dictionary")
}

fn xml(d: &Dictionary) -> Vec<u8> {
    let mut out = Vec::new();
    Value::Dictionary(d.clone())
        .to_writer_xml(&mut out)
        .unwrap();
    out
}

fn binary(d: &Dictionary) -> Vec<u8> {
    let mut out = Vec::new();
    Value::Dictionary(d.clone())
        .to_writer_binary(&mut out)
        .unwrap();
    out
}

fn with(name: &str, key: &str, v: Option<Value>) -> Dictionary {
    let mut d = fixture_dict(name);
    match v {
        Some(v) => d.insert(key.into(), v),
        None => d.remove(key),
    };
    d
}

fn s(v: &str) -> Option<Value> {
    Some(Value::String(v.into()))
}

#[test]
fn every_fixture_decodes_to_its_kind() {
    let table: &[(&str, &str)] = &[
        ("authenticate", "Authenticate"),
        ("token-update", "TokenUpdate"),
        ("token-update-user", "TokenUpdate"),
        ("checkout", "CheckOut"),
        ("set-bootstrap-token", "SetBootstrapToken"),
        ("get-bootstrap-token", "GetBootstrapToken"),
        ("report-idle", "Idle"),
        ("report-acknowledged-device-information", "Acknowledged"),
        ("report-error", "Error"),
        ("report-notnow", "NotNow"),
    ];
    for (name, kind) in table {
        let body = fixture(name);
        for (format, bytes) in [
            ("xml", body.clone()),
            ("binary", binary(&fixture_dict(name))),
        ] {
            let got = match decode(&bytes) {
                Ok(Message::Checkin(c)) => {
                    assert_eq!(c.udid(), Some(UDID), "{name} {format}");
                    assert_eq!(decode_checkin(&bytes).unwrap(), c);
                    assert!(matches!(
                        decode_report(&bytes),
                        Err(DecodeError::WrongEndpoint { .. })
                    ));
                    c.message_type().to_owned()
                }
                Ok(Message::Report(r)) => {
                    assert_eq!(r.udid, UDID, "{name} {format}");
                    assert_eq!(decode_report(&bytes).unwrap(), r);
                    assert!(matches!(
                        decode_checkin(&bytes),
                        Err(DecodeError::WrongEndpoint { .. })
                    ));
                    r.status.as_str().to_owned()
                }
                Err(e) => panic!("{name} ({format}) failed: {e}"),
            };
            assert_eq!(&got, kind, "{name} ({format})");
        }
    }
}

#[test]
fn authenticate_fields() {
    let Checkin::Authenticate(a) = decode_checkin(&fixture("authenticate")).unwrap() else {
        panic!("not Authenticate");
    };
    assert_eq!(a.topic, TOPIC);
    assert_eq!(a.info.serial_number.as_deref(), Some("F2LXK0ABHG7J"));
    assert_eq!(a.info.device_name.as_deref(), Some("営業部 iPhone 07"));
    assert_eq!(a.info.model.as_deref(), Some("MPUF3J/A"));
    assert_eq!(a.info.model_name.as_deref(), Some("iPhone"));
    assert_eq!(a.info.product_name.as_deref(), Some("iPhone15,4"));
    assert_eq!(a.info.os_version.as_deref(), Some("18.5"));
    assert_eq!(a.info.build_version.as_deref(), Some("22F76"));
    assert_eq!(a.info.imei.as_deref(), Some("35 328708 123456 7"));
    assert_eq!(a.info.meid.as_deref(), Some("35328708123456"));
}

#[test]
fn token_update_fields_and_user_channel() {
    let Checkin::TokenUpdate(t) = decode_checkin(&fixture("token-update")).unwrap() else {
        panic!("not TokenUpdate");
    };
    let raw = fixture_dict("token-update");
    let token_bytes = raw.get("Token").and_then(Value::as_data).unwrap();
    assert_eq!(t.token.as_hex(), hex::encode(token_bytes));
    assert_eq!(t.token.as_hex().len(), 64);
    assert_eq!(t.push_magic, "8A1C6E0F-3B9D-4C2A-9E57-1D4F6B8A2C30");
    assert!(t.unlock_token.is_some());
    assert!(!t.awaiting_configuration);
    assert!(t.user.is_none());
    let debug = format!("{t:?}");
    assert!(debug.contains("redacted"), "{debug}");

    let Checkin::TokenUpdate(u) = decode_checkin(&fixture("token-update-user")).unwrap() else {
        panic!("not TokenUpdate");
    };
    let user = u.user.expect("user channel");
    assert_eq!(user.user_id, "9A8B7C6D-5E4F-4A3B-2C1D-0E9F8A7B6C5D");
    assert_eq!(user.short_name.as_deref(), Some("hyamada"));
    assert_eq!(user.long_name.as_deref(), Some("Hanako Yamada"));
    assert!(u.unlock_token.is_none());

    // EnrollmentID identifies a User Enrollment device.
    let mut d = with("token-update", "UDID", None);
    d.insert("EnrollmentID".into(), Value::String("ENR-1".into()));
    assert_eq!(decode_checkin(&xml(&d)).unwrap().udid(), Some("ENR-1"));
    // AwaitingConfiguration true.
    let d = with(
        "token-update",
        "AwaitingConfiguration",
        Some(Value::Boolean(true)),
    );
    let Checkin::TokenUpdate(t) = decode_checkin(&xml(&d)).unwrap() else {
        panic!()
    };
    assert!(t.awaiting_configuration);
}

#[test]
fn bootstrap_token_messages() {
    let Checkin::SetBootstrapToken(b) = decode_checkin(&fixture("set-bootstrap-token")).unwrap()
    else {
        panic!()
    };
    assert_eq!(
        b.token.as_ref().map(|t| t.expose().to_vec()),
        Some(b"bootstrap-token-fixture-0123456789abcdef".to_vec())
    );
    let d = with("set-bootstrap-token", "BootstrapToken", None);
    let Checkin::SetBootstrapToken(b) = decode_checkin(&xml(&d)).unwrap() else {
        panic!()
    };
    assert!(b.token.is_none(), "absent token clears");
    assert!(matches!(
        decode_checkin(&fixture("get-bootstrap-token")).unwrap(),
        Checkin::GetBootstrapToken(g) if g.udid == UDID
    ));
}

#[test]
fn reports_fields() {
    let r = decode_report(&fixture("report-acknowledged-device-information")).unwrap();
    assert_eq!(r.status, Status::Acknowledged);
    assert_eq!(
        r.command_uuid.as_deref(),
        Some("3F1E5C2A-7B4D-4E8F-9A06-2C1D3B5E7F90")
    );
    let info = r.device_info.as_ref().expect("QueryResponses parsed");
    assert_eq!(info.phone_number.as_deref(), Some("+81 90-1234-5678"));
    assert_eq!(info.os_version.as_deref(), Some("18.5"));
    assert!(r.raw.contains_key("QueryResponses"), "raw kept whole");
    let again = Value::from_reader_xml(&r.raw_xml()[..]).unwrap();
    assert_eq!(again.as_dictionary(), Some(&r.raw));

    let e = decode_report(&fixture("report-error")).unwrap();
    assert_eq!(e.error_chain.len(), 2);
    assert_eq!(e.error_chain[0].code, Some(12021));
    assert_eq!(e.error_chain[0].domain.as_deref(), Some("MCMDMErrorDomain"));
    assert_eq!(
        e.error_chain[1].us_english_description.as_deref(),
        Some("The profile could not be installed.")
    );
    assert_eq!(
        e.error_chain[0].localized_description.as_deref(),
        Some("コマンド形式が無効です。")
    );

    let idle = decode_report(&fixture("report-idle")).unwrap();
    assert_eq!((idle.status, idle.command_uuid), (Status::Idle, None));

    let cfe = with("report-notnow", "Status", s("CommandFormatError"));
    assert_eq!(
        decode_report(&xml(&cfe)).unwrap().status,
        Status::CommandFormatError
    );

    // A wrongly typed QueryResponses value is skipped, not fatal (results are lenient).
    let mut d = fixture_dict("report-acknowledged-device-information");
    if let Some(Value::Dictionary(q)) = d.get_mut("QueryResponses") {
        q.insert("OSVersion".into(), Value::Integer(18.into()));
    }
    let r = decode_report(&xml(&d)).unwrap();
    assert_eq!(r.device_info.unwrap().os_version, None);
}

#[test]
fn unsupported_message_types_are_recognised() {
    for mt in [
        "UserAuthenticate",
        "DeclarativeManagement",
        "GetToken",
        "ReturnToService",
    ] {
        let d = with("checkout", "MessageType", s(mt));
        match decode_checkin(&xml(&d)).unwrap() {
            Checkin::Unsupported { message_type, udid } => {
                assert_eq!(message_type, mt);
                assert_eq!(udid.as_deref(), Some(UDID));
            }
            other => panic!("{mt}: {other:?}"),
        }
    }
}

/// One malformed-input case: name, body, the error it must be, a fragment its text must contain.
type BadCase = (
    &'static str,
    Vec<u8>,
    fn(&DecodeError) -> bool,
    &'static str,
);

fn bad_inputs() -> Vec<BadCase> {
    let auth = fixture("authenticate");
    let report = fixture("report-error");
    vec![
        (
            "empty",
            vec![],
            |e| matches!(e, DecodeError::Empty),
            "empty",
        ),
        (
            "whitespace",
            b"  \n".to_vec(),
            |e| matches!(e, DecodeError::Empty),
            "empty",
        ),
        (
            "garbage",
            b"hello".to_vec(),
            |e| matches!(e, DecodeError::NotAPlist { .. }),
            "XML",
        ),
        (
            "json",
            br#"{"MessageType":"Authenticate"}"#.to_vec(),
            |e| matches!(e, DecodeError::NotAPlist { .. }),
            "not a valid",
        ),
        (
            "ascii plist",
            br#"{ MessageType = Authenticate; UDID = X; }"#.to_vec(),
            |e| matches!(e, DecodeError::NotAPlist { .. }),
            "plist",
        ),
        (
            "truncated xml",
            auth[..auth.len() / 2].to_vec(),
            |e| matches!(e, DecodeError::NotAPlist { .. }),
            "XML",
        ),
        (
            "truncated binary",
            {
                let b = binary(&fixture_dict("authenticate"));
                b[..b.len() - 20].to_vec()
            },
            |e| {
                matches!(
                    e,
                    DecodeError::NotAPlist {
                        format: "binary",
                        ..
                    }
                )
            },
            "binary",
        ),
        (
            "bplist header only",
            b"bplist00".to_vec(),
            |e| matches!(e, DecodeError::NotAPlist { .. }),
            "binary",
        ),
        (
            "top-level array",
            br#"<?xml version="1.0"?><plist version="1.0"><array/></plist>"#.to_vec(),
            |e| matches!(e, DecodeError::NotADictionary { got: "array" }),
            "array",
        ),
        (
            "no kind",
            xml(&with("report-idle", "Status", None)),
            |e| matches!(e, DecodeError::UnknownKind),
            "neither",
        ),
        (
            "both kinds",
            xml(&with("report-idle", "MessageType", s("Authenticate"))),
            |e| matches!(e, DecodeError::AmbiguousKind),
            "both",
        ),
        (
            "unknown message type",
            xml(&with("authenticate", "MessageType", s("Frobnicate"))),
            |e| matches!(e, DecodeError::UnknownMessageType(m) if m == "Frobnicate"),
            "Frobnicate",
        ),
        (
            "unknown status",
            xml(&with("report-idle", "Status", s("Done"))),
            |e| matches!(e, DecodeError::UnknownStatus(s) if s == "Done"),
            "Done",
        ),
        (
            "MessageType not a string",
            xml(&with(
                "authenticate",
                "MessageType",
                Some(Value::Integer(1.into())),
            )),
            |e| matches!(e, DecodeError::WrongType { key, expected: "string", got: "integer" } if key == "MessageType"),
            "expected string, got integer",
        ),
        (
            "no UDID",
            xml(&with("authenticate", "UDID", None)),
            |e| matches!(e, DecodeError::MissingKey { key } if key == "UDID"),
            "missing key UDID",
        ),
        (
            "empty UDID",
            xml(&with("authenticate", "UDID", s(""))),
            |e| matches!(e, DecodeError::InvalidValue { key, .. } if key == "UDID"),
            "UDID",
        ),
        (
            "UDID wrong type",
            xml(&with("checkout", "UDID", Some(Value::Boolean(true)))),
            |e| matches!(e, DecodeError::WrongType { key, .. } if key == "UDID"),
            "got boolean",
        ),
        (
            "no Topic",
            xml(&with("authenticate", "Topic", None)),
            |e| matches!(e, DecodeError::MissingKey { key } if key == "Topic"),
            "Topic",
        ),
        (
            "OSVersion wrong type",
            xml(&with("authenticate", "OSVersion", Some(Value::Real(18.5)))),
            |e| matches!(e, DecodeError::WrongType { key, got: "real", .. } if key == "OSVersion"),
            "OSVersion",
        ),
        (
            "no Token",
            xml(&with("token-update", "Token", None)),
            |e| matches!(e, DecodeError::MissingKey { key } if key == "Token"),
            "Token",
        ),
        (
            "Token as string",
            xml(&with("token-update", "Token", s("abcd"))),
            |e| matches!(e, DecodeError::WrongType { key, expected: "data", got: "string" } if key == "Token"),
            "expected data",
        ),
        (
            "empty Token",
            xml(&with("token-update", "Token", Some(Value::Data(vec![])))),
            |e| matches!(e, DecodeError::InvalidValue { key, .. } if key == "Token"),
            "Token",
        ),
        (
            "no PushMagic",
            xml(&with("token-update", "PushMagic", None)),
            |e| matches!(e, DecodeError::MissingKey { key } if key == "PushMagic"),
            "PushMagic",
        ),
        (
            "UnlockToken as string",
            xml(&with("token-update", "UnlockToken", s("x"))),
            |e| matches!(e, DecodeError::WrongType { key, .. } if key == "UnlockToken"),
            "UnlockToken",
        ),
        (
            "AwaitingConfiguration as string",
            xml(&with("token-update", "AwaitingConfiguration", s("no"))),
            |e| matches!(e, DecodeError::WrongType { key, expected: "boolean", .. } if key == "AwaitingConfiguration"),
            "boolean",
        ),
        (
            "BootstrapToken as string",
            xml(&with("set-bootstrap-token", "BootstrapToken", s("x"))),
            |e| matches!(e, DecodeError::WrongType { key, .. } if key == "BootstrapToken"),
            "BootstrapToken",
        ),
        (
            "no CommandUUID",
            xml(&with("report-notnow", "CommandUUID", None)),
            |e| matches!(e, DecodeError::MissingKey { key } if key == "CommandUUID"),
            "CommandUUID",
        ),
        (
            "Status wrong type",
            xml(&with("report-idle", "Status", Some(Value::Boolean(false)))),
            |e| matches!(e, DecodeError::WrongType { key, .. } if key == "Status"),
            "Status",
        ),
        (
            "ErrorChain not an array",
            xml(&with("report-error", "ErrorChain", s("bad"))),
            |e| matches!(e, DecodeError::WrongType { key, expected: "array", .. } if key == "ErrorChain"),
            "ErrorChain",
        ),
        (
            "ErrorChain item not a dict",
            xml(&with(
                "report-error",
                "ErrorChain",
                Some(Value::Array(vec![Value::Integer(1.into())])),
            )),
            |e| matches!(e, DecodeError::WrongType { key, .. } if key == "ErrorChain[0]"),
            "ErrorChain[0]",
        ),
        (
            "ErrorCode as string",
            {
                let mut d = fixture_dict("report-error");
                if let Some(Value::Array(items)) = d.get_mut("ErrorChain") {
                    if let Some(Value::Dictionary(first)) = items.get_mut(1) {
                        first.insert("ErrorCode".into(), Value::String("4001".into()));
                    }
                }
                xml(&d)
            },
            |e| matches!(e, DecodeError::WrongType { key, expected: "integer", .. } if key == "ErrorChain[1].ErrorCode"),
            "ErrorChain[1].ErrorCode",
        ),
        (
            "truncated report",
            report[..report.len() - 30].to_vec(),
            |e| matches!(e, DecodeError::NotAPlist { .. }),
            "XML",
        ),
    ]
}

#[test]
fn malformed_input_is_a_typed_error_with_a_reason() {
    for (case, body, is_expected, fragment) in bad_inputs() {
        let err = match decode(&body) {
            Ok(m) => panic!("{case}: decoded {m:?}"),
            Err(e) => e,
        };
        assert!(is_expected(&err), "{case}: got {err:?}");
        let text = err.to_string();
        assert!(
            text.contains(fragment),
            "{case}: {text:?} lacks {fragment:?}"
        );
    }
}

#[test]
fn no_input_panics() {
    // Every prefix of every fixture, XML and binary, plus byte flips: decode must return,
    // never panic (the test harness would report a panic as a failure).
    let names = [
        "authenticate",
        "token-update",
        "token-update-user",
        "checkout",
        "set-bootstrap-token",
        "get-bootstrap-token",
        "report-idle",
        "report-acknowledged-device-information",
        "report-error",
        "report-notnow",
    ];
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for name in names {
        for body in [fixture(name), binary(&fixture_dict(name))] {
            for end in (0..body.len()).step_by(7) {
                let _ = decode(&body[..end]);
            }
            for _ in 0..200 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let mut mutated = body.clone();
                let i = (seed as usize) % mutated.len();
                mutated[i] ^= (seed >> 32) as u8 | 1;
                let _ = decode(&mutated);
            }
        }
    }
}

#[test]
fn command_encoding_roundtrips() {
    let cmd = Command::device_information(DEVICE_INFORMATION_QUERIES);
    assert_eq!(cmd.uuid.len(), 36);
    assert_eq!(cmd.uuid, cmd.uuid.to_ascii_uppercase());
    let v = Value::from_reader_xml(&cmd.to_xml()[..]).unwrap();
    let top = v.as_dictionary().unwrap();
    assert_eq!(
        top.get("CommandUUID").and_then(Value::as_string),
        Some(cmd.uuid.as_str())
    );
    let inner = top.get("Command").and_then(Value::as_dictionary).unwrap();
    assert_eq!(
        inner.get("RequestType").and_then(Value::as_string),
        Some("DeviceInformation")
    );
    let queries: Vec<&str> = inner
        .get("Queries")
        .and_then(Value::as_array)
        .unwrap()
        .iter()
        .filter_map(Value::as_string)
        .collect();
    assert_eq!(queries, DEVICE_INFORMATION_QUERIES);
    assert!(queries.contains(&"SerialNumber") && queries.contains(&"OSVersion"));
    assert_ne!(
        Command::device_information(&[]).uuid,
        Command::device_information(&[]).uuid
    );

    // A params RequestType cannot override the command's.
    let mut params = Dictionary::new();
    params.insert("RequestType".into(), Value::String("EraseDevice".into()));
    params.insert("Identifier".into(), Value::String("com.example".into()));
    let cmd = Command::new("RemoveProfile", params);
    let v = Value::from_reader_xml(&cmd.to_xml()[..]).unwrap();
    let inner = v
        .as_dictionary()
        .and_then(|d| d.get("Command"))
        .and_then(Value::as_dictionary)
        .unwrap();
    assert_eq!(
        inner.get("RequestType").and_then(Value::as_string),
        Some("RemoveProfile")
    );
    assert_eq!(
        inner.get("Identifier").and_then(Value::as_string),
        Some("com.example")
    );
}

#[test]
fn bootstrap_token_response_encoding() {
    let body = magicpush_mdm::bootstrap_token_response(Some(b"tok"));
    let v = Value::from_reader_xml(&body[..]).unwrap();
    assert_eq!(
        v.as_dictionary()
            .and_then(|d| d.get("BootstrapToken"))
            .and_then(Value::as_data),
        Some(&b"tok"[..])
    );
    let body = magicpush_mdm::bootstrap_token_response(None);
    let v = Value::from_reader_xml(&body[..]).unwrap();
    assert!(v.as_dictionary().unwrap().is_empty());
}

#[test]
fn deep_nesting_is_rejected_without_crashing() {
    // 200,000 nested arrays inside an otherwise valid report: parsing this into a value and
    // dropping it would overflow a 2 MiB stack and abort the process.
    let n = 200_000;
    let mut body = String::from(
        r#"<?xml version="1.0"?><plist version="1.0"><dict><key>Status</key><string>Idle</string><key>UDID</key><string>X</string><key>Deep</key>"#,
    );
    body.push_str(&"<array>".repeat(n));
    body.push_str(&"</array>".repeat(n));
    body.push_str("</dict></plist>");
    let mut nested = Value::Array(vec![]);
    for _ in 0..100 {
        nested = Value::Array(vec![nested]);
    }
    let mut d = fixture_dict("report-idle");
    d.insert("Deep".into(), nested);
    let bin = binary(&d);
    let worker = std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(move || (decode(body.as_bytes()), decode(&bin)))
        .unwrap();
    let (from_xml, from_binary) = worker.join().expect("no stack overflow");
    for r in [from_xml, from_binary] {
        let err = r.unwrap_err();
        assert!(matches!(err, DecodeError::TooComplex { .. }), "{err:?}");
        assert!(err.to_string().contains("nested deeper than"), "{err}");
    }
}
