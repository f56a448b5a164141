//! The run-time settings (`GET|PUT /v1/settings`) as decisions without I/O: which value wins
//! (a stored setting over the start flag, the flag over the default), what a `PUT` body
//! asks for, and the check every combination passes ([`crate::config::check_windows`], as
//! at start).
//!
//! The settings: `collect_every`, the scheduled collection's period (`None`: off), and
//! `unreachable_after`, the window after which an unanswered push makes a device
//! `unreachable`.

use std::time::Duration;
use utoipa::ToSchema;

use serde::Serialize;
use serde_json::Value;

use crate::config::{check_windows, format_duration, parse_duration};
use magicpush_store::StoredSettings;

/// The unreachable window when neither a flag nor a stored setting gives one.
pub const DEFAULT_UNREACHABLE_AFTER: Duration = Duration::from_secs(300);

/// Where a setting in force comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// Stored through `PUT /v1/settings`: wins over the flag.
    Stored,
    /// The `serve` flag (or its environment variable).
    Flag,
    /// Neither: the built-in default (collection off, 5 minutes).
    Default,
}

/// What `serve` was started with; `None` where the flag was not given.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StartSettings {
    /// `--collect-every`.
    pub collect_every: Option<Duration>,
    /// `--unreachable-after`.
    pub unreachable_after: Option<Duration>,
}

/// The settings in force, each with its source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Effective {
    /// The scheduled collection's period; `None`: off.
    pub collect_every: Option<Duration>,
    /// Where `collect_every` comes from.
    pub collect_every_source: Source,
    /// The unreachable window.
    pub unreachable_after: Duration,
    /// Where `unreachable_after` comes from.
    pub unreachable_after_source: Source,
}

impl Effective {
    /// The windows checked together, as at start.
    pub fn check(&self) -> Result<(), SettingsError> {
        check_windows(self.collect_every, self.unreachable_after).map_err(SettingsError::Windows)
    }
}

/// The settings in force: a stored setting wins over the flag, the flag over the default.
pub fn resolve(start: &StartSettings, stored: &StoredSettings) -> Effective {
    let (collect_every, collect_every_source) = match (stored.collect_every, start.collect_every) {
        (Some(every), _) => (every, Source::Stored),
        (None, Some(every)) => (Some(every), Source::Flag),
        (None, None) => (None, Source::Default),
    };
    let (unreachable_after, unreachable_after_source) =
        match (stored.unreachable_after, start.unreachable_after) {
            (Some(after), _) => (after, Source::Stored),
            (None, Some(after)) => (after, Source::Flag),
            (None, None) => (DEFAULT_UNREACHABLE_AFTER, Source::Default),
        };
    Effective {
        collect_every,
        collect_every_source,
        unreachable_after,
        unreachable_after_source,
    }
}

/// A stored setting used instead of a flag given with another value (`serve` logs it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Override {
    /// The flag, `--collect-every` or `--unreachable-after`.
    pub flag: &'static str,
    /// The flag's value, as [`format_duration`] writes it.
    pub given: String,
    /// The stored value (`off` for a collection turned off).
    pub stored: String,
}

impl std::fmt::Display for Override {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} given, but the stored setting {} (changed through PUT /v1/settings) is used; PUT /v1/settings to change it",
            self.flag, self.given, self.stored
        )
    }
}

/// The flags given whose value a stored setting replaces.
pub fn overrides(start: &StartSettings, stored: &StoredSettings) -> Vec<Override> {
    let mut out = Vec::new();
    if let (Some(given), Some(kept)) = (start.collect_every, stored.collect_every) {
        if kept != Some(given) {
            out.push(Override {
                flag: "--collect-every",
                given: format_duration(given),
                stored: kept.map_or_else(|| "off".to_owned(), format_duration),
            });
        }
    }
    if let (Some(given), Some(kept)) = (start.unreachable_after, stored.unreachable_after) {
        if kept != given {
            out.push(Override {
                flag: "--unreachable-after",
                given: format_duration(given),
                stored: format_duration(kept),
            });
        }
    }
    out
}

/// Why a `PUT /v1/settings` (or the settings found at start) is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingsError {
    /// The body is not a JSON object.
    #[error("the settings must be a JSON object such as {{\"collect_every\": \"24h\", \"unreachable_after\": \"5m\"}}")]
    NotAnObject,
    /// A key that is not a setting.
    #[error("unknown setting {key:?} (the settings: collect_every, unreachable_after)")]
    UnknownKey {
        /// The key sent.
        key: String,
    },
    /// A value that is not a duration (or `off` where allowed).
    #[error("{key}: {why}")]
    BadValue {
        /// The setting.
        key: &'static str,
        /// What is wrong and what is expected.
        why: String,
    },
    /// The settings together fail [`check_windows`].
    #[error("{0}")]
    Windows(String),
}

/// The settings a `PUT /v1/settings` body asks to store: any subset of
/// `{"collect_every": "24h" | "off" | null | <seconds>, "unreachable_after": "10m" | <seconds>}`.
/// Durations are read as `serve` reads its flags ([`parse_duration`]).
pub fn parse_change(body: &Value) -> Result<StoredSettings, SettingsError> {
    let map = body.as_object().ok_or(SettingsError::NotAnObject)?;
    let mut change = StoredSettings::default();
    for (key, value) in map {
        match key.as_str() {
            "collect_every" => {
                change.collect_every = Some(match value {
                    Value::Null => None,
                    Value::String(s) if s.trim() == "off" => None,
                    other => Some(duration_value("collect_every", other)?),
                })
            }
            "unreachable_after" => {
                change.unreachable_after = Some(duration_value("unreachable_after", value)?)
            }
            other => {
                return Err(SettingsError::UnknownKey {
                    key: other.to_owned(),
                })
            }
        }
    }
    Ok(change)
}

/// A duration written as text (`"5m"`) or as whole seconds (`300`).
fn duration_value(key: &'static str, value: &Value) -> Result<Duration, SettingsError> {
    let bad = |why: String| SettingsError::BadValue { key, why };
    match value {
        Value::String(s) => parse_duration(s).map_err(|e| bad(e.to_string())),
        Value::Number(n) => n.as_u64().map(Duration::from_secs).ok_or_else(|| {
            bad(format!(
                "{n} is not a whole number of seconds (or write a duration such as \"5m\")"
            ))
        }),
        Value::Null if key == "unreachable_after" => Err(bad(
            "cannot be turned off: give a duration such as \"5m\"".into(),
        )),
        other => Err(bad(format!(
            "expected a duration such as \"5m\" or a number of seconds, not {other}"
        ))),
    }
}

/// `GET /v1/settings`: the settings in force on this node. Durations twice: as text for
/// people (`"24h"`), in seconds for programs.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, ToSchema)]
pub struct SettingsView {
    /// The scheduled collection's period; `null`: off.
    #[schema(required = true)]
    pub collect_every: Option<String>,
    /// The same in seconds.
    #[schema(required = true)]
    pub collect_every_s: Option<u64>,
    /// The unreachable window.
    pub unreachable_after: String,
    /// The same in seconds.
    pub unreachable_after_s: u64,
    /// Where each comes from: `stored`, `flag` or `default`.
    pub source: SourcesView,
    /// Whether this node's collection task runs (it claims each run through the store, so
    /// one node of several runs each collection).
    pub collecting: bool,
}

/// [`SettingsView::source`].
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq, ToSchema)]
pub struct SourcesView {
    /// Of `collect_every`.
    pub collect_every: Source,
    /// Of `unreachable_after`.
    pub unreachable_after: Source,
}

impl SettingsView {
    /// The view of `effective`; `collecting`: whether the collection task runs.
    pub fn new(effective: &Effective, collecting: bool) -> Self {
        SettingsView {
            collect_every: effective.collect_every.map(format_duration),
            collect_every_s: effective.collect_every.map(|d| d.as_secs()),
            unreachable_after: format_duration(effective.unreachable_after),
            unreachable_after_s: effective.unreachable_after.as_secs(),
            source: SourcesView {
                collect_every: effective.collect_every_source,
                unreachable_after: effective.unreachable_after_source,
            },
            collecting,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const H: Duration = Duration::from_secs(3600);
    const M: Duration = Duration::from_secs(60);

    #[test]
    fn a_stored_setting_wins_over_the_flag_and_the_flag_over_the_default() {
        let none = StartSettings::default();
        let flags = StartSettings {
            collect_every: Some(H),
            unreachable_after: Some(10 * M),
        };
        let nothing = StoredSettings::default();
        let e = resolve(&none, &nothing);
        assert_eq!(
            (e.collect_every, e.collect_every_source),
            (None, Source::Default)
        );
        assert_eq!(
            (e.unreachable_after, e.unreachable_after_source),
            (5 * M, Source::Default)
        );
        let e = resolve(&flags, &nothing);
        assert_eq!(
            (e.collect_every, e.collect_every_source),
            (Some(H), Source::Flag)
        );
        assert_eq!(
            (e.unreachable_after, e.unreachable_after_source),
            (10 * M, Source::Flag)
        );
        let off = StoredSettings {
            collect_every: Some(None),
            unreachable_after: Some(20 * M),
        };
        let e = resolve(&flags, &off);
        assert_eq!(
            (e.collect_every, e.collect_every_source),
            (None, Source::Stored)
        );
        assert_eq!(
            (e.unreachable_after, e.unreachable_after_source),
            (20 * M, Source::Stored)
        );
    }

    #[test]
    fn only_flags_given_with_another_value_are_overridden() {
        let flags = StartSettings {
            collect_every: Some(H),
            unreachable_after: Some(5 * M),
        };
        let stored = StoredSettings {
            collect_every: Some(Some(24 * H)),
            unreachable_after: Some(5 * M),
        };
        let o = overrides(&flags, &stored);
        assert_eq!(o.len(), 1);
        assert_eq!(
            o[0].to_string(),
            "--collect-every 1h given, but the stored setting 1d (changed through PUT /v1/settings) is used; PUT /v1/settings to change it"
        );
        let off = StoredSettings {
            collect_every: Some(None),
            ..StoredSettings::default()
        };
        assert_eq!(overrides(&flags, &off)[0].stored, "off");
        assert!(overrides(&StartSettings::default(), &stored).is_empty());
    }

    #[test]
    fn a_change_is_any_subset_of_the_settings() {
        let c = parse_change(&json!({"collect_every": "24h"})).unwrap();
        assert_eq!(c.collect_every, Some(Some(24 * H)));
        assert_eq!(c.unreachable_after, None);
        for off in [
            json!({"collect_every": "off"}),
            json!({"collect_every": null}),
        ] {
            assert_eq!(parse_change(&off).unwrap().collect_every, Some(None));
        }
        let c = parse_change(&json!({"unreachable_after": 600, "collect_every": 7200})).unwrap();
        assert_eq!(c.unreachable_after, Some(10 * M));
        assert_eq!(c.collect_every, Some(Some(2 * H)));
        assert_eq!(parse_change(&json!({})).unwrap(), StoredSettings::default());
    }

    #[test]
    fn a_bad_change_names_what_is_wrong() {
        let err = |v| parse_change(&v).unwrap_err().to_string();
        assert!(err(json!([])).contains("JSON object"));
        assert!(err(json!({"colect_every": "1h"})).contains("unknown setting \"colect_every\""));
        assert!(err(json!({"collect_every": "1.5h"})).contains("collect_every: invalid duration"));
        assert!(err(json!({"unreachable_after": null})).contains("cannot be turned off"));
        assert!(err(json!({"unreachable_after": -5})).contains("whole number of seconds"));
        assert!(err(json!({"unreachable_after": true})).contains("expected a duration"));
    }

    #[test]
    fn settings_in_force_are_checked_as_at_start() {
        let e = resolve(
            &StartSettings::default(),
            &StoredSettings {
                collect_every: Some(Some(M)),
                unreachable_after: None,
            },
        );
        let err = e.check().unwrap_err().to_string();
        assert!(err.contains("shorter than --unreachable-after"), "{err}");
    }

    #[test]
    fn the_view_has_text_and_seconds() {
        let e = resolve(
            &StartSettings {
                collect_every: Some(24 * H),
                unreachable_after: None,
            },
            &StoredSettings::default(),
        );
        let v = serde_json::to_value(SettingsView::new(&e, true)).unwrap();
        assert_eq!(
            v,
            json!({"collect_every": "1d", "collect_every_s": 86400, "unreachable_after": "5m",
                   "unreachable_after_s": 300, "collecting": true,
                   "source": {"collect_every": "flag", "unreachable_after": "default"}})
        );
    }
}
