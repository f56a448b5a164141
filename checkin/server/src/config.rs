//! Server settings shared by the CLI and tests, and the duration syntax the flags use.

use std::time::Duration;

/// A duration flag that is not `<number><unit>…` with units `ms`, `s`, `m`, `h`, `d`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {text:?}: {why} (expected e.g. 30s, 5m, 24h, 1h30m, 500ms)")]
pub struct DurationError {
    /// The text that was given.
    pub text: String,
    /// What is wrong with it.
    pub why: &'static str,
}

/// How long a push may take before the engine ends it (the engine's default deadline): a
/// device cannot be judged unreachable before this.
pub const PUSH_DEADLINE: Duration = Duration::from_secs(30);

/// The longest unreachable window: a device pushed and silent for a month is unreachable.
pub const MAX_UNREACHABLE_AFTER: Duration = Duration::from_secs(30 * 86_400);
/// The longest collection period: a year.
pub const MAX_COLLECT_EVERY: Duration = Duration::from_secs(366 * 86_400);

/// The server's time windows, checked together at start: `--unreachable-after` must be longer
/// than a push's deadline (else devices turn `unreachable` while their push is still under
/// way), and `--collect-every`, when given, more than zero and no shorter than
/// `--unreachable-after` (else each collection starts before the last one's answers could be
/// judged); neither longer than its maximum.
pub fn check_windows(
    collect_every: Option<Duration>,
    unreachable_after: Duration,
) -> Result<(), String> {
    if unreachable_after <= PUSH_DEADLINE {
        return Err(format!(
            "--unreachable-after {} must be longer than a push's deadline ({}): a device would be marked unreachable while its push is still under way",
            format_duration(unreachable_after),
            format_duration(PUSH_DEADLINE)
        ));
    }
    if unreachable_after > MAX_UNREACHABLE_AFTER {
        return Err(format!(
            "--unreachable-after {} is longer than {}: a pushed device would be shown as updating for that long",
            format_duration(unreachable_after),
            format_duration(MAX_UNREACHABLE_AFTER)
        ));
    }
    match collect_every {
        Some(every) if every > MAX_COLLECT_EVERY => Err(format!(
            "--collect-every {} is longer than {} (leave it out, or set it off, to collect only on demand)",
            format_duration(every),
            format_duration(MAX_COLLECT_EVERY)
        )),
        Some(every) if every.is_zero() => Err(
            "--collect-every must be longer than 0s (leave it out to collect only on demand)"
                .to_owned(),
        ),
        Some(every) if every < unreachable_after => Err(format!(
            "--collect-every {} is shorter than --unreachable-after {}: each collection would start before the devices of the last one could be judged",
            format_duration(every),
            format_duration(unreachable_after)
        )),
        _ => Ok(()),
    }
}

/// Parses `30s`, `5m`, `24h`, `2d`, `500ms`, and sums like `1h30m`. A bare number is refused:
/// the unit is never guessed.
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let err = |why| DurationError {
        text: text.to_owned(),
        why,
    };
    let s = text.trim();
    if s.is_empty() {
        return Err(err("empty"));
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(err("expected a number"));
        }
        let value: u64 = rest[..digits]
            .parse()
            .map_err(|_| err("number too large"))?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let part = match unit {
            "ms" => Duration::from_millis(value),
            "s" => Duration::from_secs(value),
            "m" => Duration::from_secs(value.checked_mul(60).ok_or_else(|| err("too large"))?),
            "h" => Duration::from_secs(value.checked_mul(3600).ok_or_else(|| err("too large"))?),
            "d" => Duration::from_secs(value.checked_mul(86_400).ok_or_else(|| err("too large"))?),
            "" => return Err(err("missing unit")),
            _ => return Err(err("unknown unit")),
        };
        total = total.checked_add(part).ok_or_else(|| err("too large"))?;
    }
    Ok(total)
}

/// Formats a duration the way [`parse_duration`] reads it (largest exact units).
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        return "0s".to_owned();
    }
    if !ms.is_multiple_of(1000) {
        return format!("{ms}ms");
    }
    let mut secs = d.as_secs();
    let mut out = String::new();
    for (unit, size) in [("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)] {
        if secs >= size {
            out.push_str(&format!("{}{unit}", secs / size));
            secs %= size;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_are_checked_together() {
        let m = |n: u64| Duration::from_secs(60 * n);
        assert!(check_windows(None, m(5)).is_ok());
        assert!(check_windows(Some(m(24 * 60)), m(5)).is_ok());
        assert!(check_windows(Some(m(5)), m(5)).is_ok());
        let zero = check_windows(Some(Duration::ZERO), m(5)).unwrap_err();
        assert!(
            zero.contains("--collect-every must be longer than 0s"),
            "{zero}"
        );
        let short = check_windows(Some(m(1)), m(5)).unwrap_err();
        assert!(
            short.contains("shorter than --unreachable-after"),
            "{short}"
        );
        let window = check_windows(None, Duration::from_secs(10)).unwrap_err();
        assert!(window.contains("deadline"), "{window}");
        // Bounded above: an absurd window is a typo, and time arithmetic must not overflow.
        assert!(check_windows(Some(MAX_COLLECT_EVERY), MAX_UNREACHABLE_AFTER).is_ok());
        let long = check_windows(None, MAX_UNREACHABLE_AFTER + Duration::from_secs(1));
        assert!(long.unwrap_err().contains("longer than 30d"));
        let long = check_windows(Some(Duration::from_secs(u64::MAX / 2)), m(5));
        assert!(long.unwrap_err().contains("longer than 366d"));
    }

    #[test]
    fn durations_parse() {
        let cases = [
            ("30s", Some(30_000)),
            ("5m", Some(300_000)),
            ("24h", Some(86_400_000)),
            ("2d", Some(172_800_000)),
            ("500ms", Some(500)),
            ("1h30m", Some(5_400_000)),
            (" 10s ", Some(10_000)),
            ("", None),
            ("10", None),
            ("s", None),
            ("10x", None),
            ("-5s", None),
            ("1.5h", None),
            ("99999999999999999999s", None),
        ];
        for (text, want) in cases {
            let got = parse_duration(text).ok().map(|d| d.as_millis() as u64);
            assert_eq!(got, want, "{text:?}");
        }
    }

    #[test]
    fn durations_round_trip() {
        for text in ["30s", "5m", "1d", "1h30m", "250ms"] {
            let d = parse_duration(text).unwrap();
            assert_eq!(format_duration(d), text);
            assert_eq!(parse_duration(&format_duration(d)).unwrap(), d);
        }
    }
}
