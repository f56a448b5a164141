//! Run-time settings changed through the admin API (`PUT /v1/settings`) and kept in the
//! store, so that they survive restarts and reach every node on a shared database.
//!
//! Only what an operator set is stored: a setting never set reads as `None`, and the server
//! falls back to its start flag. Durations are kept to the millisecond.

use std::time::Duration;

use time::OffsetDateTime;

use crate::StoreFuture;

/// Key of the scheduled collection's period (`NULL` value: collection off).
pub const COLLECT_EVERY: &str = "collect_every";
/// Key of the window after which an unanswered push makes a device `unreachable`.
pub const UNREACHABLE_AFTER: &str = "unreachable_after";

/// The stored settings; `None` where nothing is stored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoredSettings {
    /// The scheduled collection's period: `Some(None)` stored as off.
    pub collect_every: Option<Option<Duration>>,
    /// The unreachable window.
    pub unreachable_after: Option<Duration>,
}

impl StoredSettings {
    /// `self` with every setting `change` holds written over it.
    pub fn merged(self, change: &StoredSettings) -> StoredSettings {
        StoredSettings {
            collect_every: change.collect_every.or(self.collect_every),
            unreachable_after: change.unreachable_after.or(self.unreachable_after),
        }
    }

    /// The settings as stored rows: `(key, milliseconds or NULL)`, only those set.
    pub fn rows(&self) -> Vec<(&'static str, Option<i64>)> {
        let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        let mut rows = Vec::new();
        if let Some(every) = self.collect_every {
            rows.push((COLLECT_EVERY, every.map(ms)));
        }
        if let Some(after) = self.unreachable_after {
            rows.push((UNREACHABLE_AFTER, Some(ms(after))));
        }
        rows
    }

    /// Reads stored rows back (the inverse of [`StoredSettings::rows`]); unknown keys (a newer
    /// magicpush's) are ignored, a negative or missing duration is [`crate::StoreError::Corrupt`].
    pub fn from_rows(
        rows: impl IntoIterator<Item = (String, Option<i64>)>,
    ) -> Result<StoredSettings, crate::StoreError> {
        let mut out = StoredSettings::default();
        for (key, value) in rows {
            let duration = |v: Option<i64>| -> Result<Option<Duration>, crate::StoreError> {
                v.map(|ms| {
                    u64::try_from(ms).map(Duration::from_millis).map_err(|_| {
                        crate::StoreError::Corrupt {
                            what: format!("settings.{key} = {ms}"),
                        }
                    })
                })
                .transpose()
            };
            match key.as_str() {
                COLLECT_EVERY => out.collect_every = Some(duration(value)?),
                UNREACHABLE_AFTER => {
                    out.unreachable_after =
                        Some(duration(value)?.ok_or_else(|| crate::StoreError::Corrupt {
                            what: format!("settings.{key} is NULL"),
                        })?)
                }
                _ => {}
            }
        }
        Ok(out)
    }
}

/// The run-time settings the admin API changes.
pub trait SettingsStore: Send + Sync {
    /// The stored settings (nothing stored: every field `None`).
    fn settings(&self) -> StoreFuture<'_, StoredSettings>;

    /// Stores every setting `change` holds (the others are kept), recording `at`, in one
    /// write. The caller validates: the store keeps what it is given.
    fn put_settings<'a>(
        &'a self,
        change: &'a StoredSettings,
        at: OffsetDateTime,
    ) -> StoreFuture<'a, ()>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_round_trip_through_rows() {
        let s = StoredSettings {
            collect_every: Some(None),
            unreachable_after: Some(Duration::from_millis(90_500)),
        };
        let rows = s.rows().into_iter().map(|(k, v)| (k.to_owned(), v));
        assert_eq!(StoredSettings::from_rows(rows).unwrap(), s);
        assert_eq!(
            StoredSettings::from_rows(vec![("future_key".into(), Some(1))]).unwrap(),
            StoredSettings::default()
        );
        assert!(StoredSettings::from_rows(vec![(COLLECT_EVERY.into(), Some(-1))]).is_err());
        assert!(StoredSettings::from_rows(vec![(UNREACHABLE_AFTER.into(), None)]).is_err());
    }

    #[test]
    fn a_change_overrides_only_what_it_holds() {
        let old = StoredSettings {
            collect_every: Some(Some(Duration::from_secs(60))),
            unreachable_after: Some(Duration::from_secs(300)),
        };
        let change = StoredSettings {
            collect_every: Some(None),
            unreachable_after: None,
        };
        assert_eq!(
            old.merged(&change),
            StoredSettings {
                collect_every: Some(None),
                unreachable_after: Some(Duration::from_secs(300)),
            }
        );
    }
}
