//! The run-time settings on this node (`GET|PUT /v1/settings`): the settings in force, the
//! scheduled collection task they start and stop, and their propagation between nodes.
//!
//! A `PUT` is checked as `serve` checks its flags, stored, then applied here at once: the
//! collection task is restarted with its new period (or stopped), and the next connectivity
//! state computed uses the new window. Other nodes on the same database re-read the stored
//! settings ([`Service::reload_settings`]) when the store's change feed moves (PostgreSQL
//! notifies on a settings write: within a second) and on each heartbeat besides.

use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::task::JoinHandle;

use super::{Service, ServiceError};
use crate::config::format_duration;
use crate::settings::{
    parse_change, resolve, Effective, SettingsError, SettingsView, StartSettings,
};
use magicpush_store::StoredSettings;

/// This node's settings in force and the collection task they run.
#[derive(Debug)]
pub(crate) struct LiveSettings {
    start: StartSettings,
    effective: RwLock<Effective>,
    collector: Mutex<Option<Collector>>,
    /// The stored settings last refused here (another node's flags let them pass, not this
    /// one's): logged once, not at every re-read.
    refused: Mutex<Option<Effective>>,
}

/// The running collection task and its period.
#[derive(Debug)]
struct Collector {
    every: Duration,
    task: JoinHandle<()>,
}

impl LiveSettings {
    /// Before the stored settings are read: the flags' (or the defaults'), no task running.
    pub(crate) fn new(start: StartSettings) -> Self {
        LiveSettings {
            start,
            effective: RwLock::new(resolve(&start, &StoredSettings::default())),
            collector: Mutex::new(None),
            refused: Mutex::new(None),
        }
    }

    fn effective(&self) -> Effective {
        *self.effective.read().unwrap_or_else(|e| e.into_inner())
    }

    fn collector(&self) -> std::sync::MutexGuard<'_, Option<Collector>> {
        self.collector.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl From<SettingsError> for ServiceError {
    fn from(err: SettingsError) -> Self {
        ServiceError::BadRequest(err.to_string())
    }
}

impl Service {
    /// The unreachable window in force: read for every state computed, so a change applies
    /// to the next one.
    pub fn unreachable_after(&self) -> Duration {
        self.settings.effective().unreachable_after
    }

    /// What `serve` was started with.
    pub fn start_settings(&self) -> &StartSettings {
        &self.settings.start
    }

    /// `GET /v1/settings`.
    pub fn settings_view(&self) -> SettingsView {
        let collecting = self
            .settings
            .collector()
            .as_ref()
            .is_some_and(|c| !c.task.is_finished());
        SettingsView::new(&self.settings.effective(), collecting)
    }

    /// At start: reads the stored settings, checks the settings in force (a stored setting
    /// wins over the flag) and applies them, starting the collection task if on. The stored
    /// settings, for the caller to tell which flags they override. Fails if the store
    /// cannot be read or the settings together fail the start check.
    pub async fn load_settings(self: &Arc<Self>) -> Result<StoredSettings, ServiceError> {
        let stored = self.store.settings().await?;
        let effective = resolve(&self.settings.start, &stored);
        effective.check()?;
        self.apply_settings(effective);
        Ok(stored)
    }

    /// `PUT /v1/settings`: checks `body` (any subset of the settings) with the stored
    /// settings it leaves alone, stores it, and applies the result on this node at once.
    pub async fn put_settings(
        self: &Arc<Self>,
        body: &serde_json::Value,
    ) -> Result<SettingsView, ServiceError> {
        let change = parse_change(body)?;
        let stored = self.store.settings().await?.merged(&change);
        let effective = resolve(&self.settings.start, &stored);
        effective.check()?;
        self.store.put_settings(&change, Self::now()).await?;
        tracing::info!(
            collect_every = %effective.collect_every.map_or_else(|| "off".into(), format_duration),
            unreachable_after = %format_duration(effective.unreachable_after),
            "settings changed through PUT /v1/settings"
        );
        self.apply_settings(effective);
        Ok(self.settings_view())
    }

    /// Re-reads the stored settings and applies a change another node made; a combination
    /// that fails the check (another node's flags differ) is logged and left unapplied.
    pub async fn reload_settings(self: &Arc<Self>) -> Result<(), ServiceError> {
        let stored = self.store.settings().await?;
        let effective = resolve(&self.settings.start, &stored);
        if effective == self.settings.effective() {
            return Ok(());
        }
        if let Err(err) = effective.check() {
            let mut refused = self
                .settings
                .refused
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if refused.replace(effective) != Some(effective) {
                tracing::warn!("the stored settings are not applied on this node (its flags differ from the node that stored them): {err}");
            }
            return Ok(());
        }
        tracing::info!(
            collect_every = %effective.collect_every.map_or_else(|| "off".into(), format_duration),
            unreachable_after = %format_duration(effective.unreachable_after),
            "settings changed on another node: applied"
        );
        self.apply_settings(effective);
        Ok(())
    }

    /// Stops the collection task (at shutdown).
    pub fn stop_collector(&self) {
        if let Some(c) = self.settings.collector().take() {
            c.task.abort();
        }
    }

    /// Makes `effective` the settings in force, and the collection task run with its
    /// period: restarted if the period changed, stopped if off.
    fn apply_settings(self: &Arc<Self>, effective: Effective) {
        *self
            .settings
            .effective
            .write()
            .unwrap_or_else(|e| e.into_inner()) = effective;
        let mut collector = self.settings.collector();
        let running = collector
            .as_ref()
            .filter(|c| !c.task.is_finished())
            .map(|c| c.every);
        if running == effective.collect_every {
            return;
        }
        if let Some(old) = collector.take() {
            old.task.abort();
            tracing::info!("scheduled device information collection stopped");
        }
        if let Some(every) = effective.collect_every {
            tracing::info!(every = %format_duration(every), "scheduled device information collection on");
            *collector = Some(Collector {
                every,
                task: self.spawn_collector(every),
            });
        }
    }
}
