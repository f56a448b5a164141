//! No panic reachable from the builder: every out-of-range setting is an error from
//! `build()`, and endpoints are validated where they are made.

use std::time::Duration;

use magicpush_engine::cert::PushCertificate;
use magicpush_engine::pool::backoff::Backoff;
use magicpush_engine::pool::plan::RetryPolicy;
use magicpush_engine::{Client, ClientBuilder, ClientError, Endpoint, Expiration};
use magicpush_fixtures::TestPki;

fn base(cert: &PushCertificate) -> ClientBuilder {
    Client::builder()
        .certificate(cert.clone())
        .endpoint(Endpoint::custom("127.0.0.1", 9).unwrap())
}

#[tokio::test]
async fn bad_settings_are_errors_not_panics() {
    let pki = TestPki::generate().unwrap();
    let cert = PushCertificate::from_pem(pki.push.cert_pem.as_bytes(), pki.push.key_pem.as_bytes())
        .unwrap();
    let zero = Duration::ZERO;
    let huge = Duration::MAX;
    let bad_backoff = Backoff {
        base: Duration::from_secs(2),
        max: Duration::from_secs(1),
    };
    let zero_backoff = Backoff {
        base: zero,
        max: zero,
    };
    let cases: Vec<(&str, ClientBuilder)> = vec![
        ("deadline 0", base(&cert).deadline(zero)),
        ("deadline MAX", base(&cert).deadline(huge)),
        ("keepalive 0", base(&cert).keepalive(zero)),
        ("keepalive MAX", base(&cert).keepalive(huge)),
        ("ping_timeout 0", base(&cert).ping_timeout(zero)),
        ("connect_timeout 0", base(&cert).connect_timeout(zero)),
        ("connect_timeout MAX", base(&cert).connect_timeout(huge)),
        ("connections MAX", base(&cert).connections(usize::MAX)),
        (
            "streams MAX",
            base(&cert).max_streams_per_connection(usize::MAX),
        ),
        ("queue MAX", base(&cert).queue_capacity(usize::MAX)),
        (
            "expiration MAX",
            base(&cert).expiration(Expiration::After(huge)),
        ),
        (
            "reconnect max < base",
            base(&cert).reconnect_backoff(bad_backoff),
        ),
        ("reconnect 0", base(&cert).reconnect_backoff(zero_backoff)),
        (
            "rejected 0",
            base(&cert).certificate_rejected_backoff(zero_backoff),
        ),
        (
            "retry 0 attempts",
            base(&cert).retry_policy(RetryPolicy {
                max_attempts: 0,
                ..RetryPolicy::default()
            }),
        ),
        (
            "retry backoff 0",
            base(&cert).retry_policy(RetryPolicy {
                backoff: zero_backoff,
                ..RetryPolicy::default()
            }),
        ),
        ("idle_timeout 0", base(&cert).idle_timeout(zero)),
        ("idle_timeout MAX", base(&cert).idle_timeout(huge)),
        ("total queued MAX", base(&cert).max_total_queued(usize::MAX)),
        (
            "total connections MAX",
            base(&cert).max_total_connections(usize::MAX),
        ),
    ];
    for (name, builder) in cases {
        match builder.build() {
            Err(ClientError::InvalidSetting { setting, why }) => {
                assert!(!why.is_empty(), "{name}: {setting}");
            }
            Err(other) => panic!("{name}: unexpected {other}"),
            Ok(client) => {
                client.shutdown().await;
                panic!("{name}: accepted");
            }
        }
    }
    // Zero counts are raised to one, not refused; the defaults build.
    let ok = base(&cert)
        .connections(0)
        .queue_capacity(0)
        .max_streams_per_connection(0);
    ok.build().unwrap().shutdown().await;
    // A client without certificates builds: they may be added later. Until then a push
    // fails at once.
    let empty = Client::builder().build().unwrap();
    assert!(empty.topics().is_empty());
    let push = magicpush_engine::DevicePush::new(
        magicpush_engine::DeviceToken::from_hex("00ff").unwrap(),
        "m",
    );
    assert!(matches!(
        empty.push(push).await,
        Err(magicpush_engine::PushError::NoCertificate)
    ));
    empty.shutdown().await;
}

#[test]
fn endpoints_are_validated_where_they_are_made() {
    for bad in ["https://:1", "https://x:0", "https://a b:1", "ftp://x"] {
        assert!(bad.parse::<Endpoint>().is_err(), "{bad}");
    }
    assert!(Endpoint::custom("", 1).is_err());
    assert!(Endpoint::custom("x", 0).is_err());
    assert!(Endpoint::custom("not a host", 1).is_err());
}
