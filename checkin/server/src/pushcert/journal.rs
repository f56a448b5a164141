//! A bounded list of records kept in the store as one of its push certificate logs
//! ([`PushCertLog`]): the certificate history and the expiry events. Read once at start, held
//! in memory for the admin API's reads, and written through to the store on each change.

use std::sync::Mutex;

use serde::de::DeserializeOwned;
use serde::Serialize;

use magicpush_store::{PushCertLog, PushCertStore, StoreError};

/// The list and the log it is kept in.
#[derive(Debug)]
pub struct Journal<T> {
    log: PushCertLog,
    limit: usize,
    records: Mutex<Vec<T>>,
    /// Held through a change and its write, so that two changes at once are applied one after
    /// the other, neither lost.
    writing: tokio::sync::Mutex<()>,
}

impl<T: Serialize + DeserializeOwned + Clone> Journal<T> {
    /// An empty list for `log`, before [`Journal::load`].
    pub fn new(log: PushCertLog, limit: usize) -> Journal<T> {
        Journal {
            log,
            limit,
            records: Mutex::new(Vec::new()),
            writing: tokio::sync::Mutex::new(()),
        }
    }

    /// Reads the log from `store`. A record that does not parse (written by a newer build, or
    /// edited by hand) is skipped with a warning and stays in the store until the next change.
    pub async fn load<S: PushCertStore + ?Sized>(&self, store: &S) -> Result<(), StoreError> {
        let stored = store.pushcert_log(self.log).await?;
        let mut records = Vec::with_capacity(stored.len());
        for text in stored {
            match serde_json::from_str::<T>(&text) {
                Ok(r) => records.push(r),
                Err(e) => tracing::warn!(
                    log = self.log.as_str(),
                    "a push certificate {} record cannot be read and is skipped: {e}",
                    self.log.as_str()
                ),
            }
        }
        *self.lock() = records;
        Ok(())
    }

    /// A copy of the records, oldest first.
    pub fn records(&self) -> Vec<T> {
        self.lock().clone()
    }

    /// Changes the records with `change` and writes them to `store`; the oldest go beyond the
    /// limit. When the write fails nothing changes and the error is returned.
    pub async fn update<S: PushCertStore + ?Sized>(
        &self,
        store: &S,
        change: impl FnOnce(&mut Vec<T>),
    ) -> Result<(), StoreError> {
        let _one_at_a_time = self.writing.lock().await;
        let mut records = self.records();
        change(&mut records);
        let excess = records.len().saturating_sub(self.limit);
        records.drain(..excess);
        let texts: Vec<String> = records
            .iter()
            .map(|r| serde_json::to_string(r).unwrap_or_default())
            .collect();
        store.set_pushcert_log(self.log, &texts).await?;
        *self.lock() = records;
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<T>> {
        // Replaced whole; a poisoned lock still holds a consistent list.
        self.records.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use magicpush_store::MemoryStore;

    use super::*;

    #[tokio::test]
    async fn saved_bounded_and_read_back() {
        let store = MemoryStore::new();
        let j: Journal<u32> = Journal::new(PushCertLog::Events, 3);
        for i in 0..5 {
            j.update(&store, |r| r.push(i)).await.unwrap();
        }
        assert_eq!(j.records(), vec![2, 3, 4]);
        let again: Journal<u32> = Journal::new(PushCertLog::Events, 3);
        again.load(&store).await.unwrap();
        assert_eq!(again.records(), vec![2, 3, 4]);
    }

    #[tokio::test]
    async fn an_unreadable_record_is_skipped() {
        let store = MemoryStore::new();
        let stored = ["1".to_owned(), "{not json".to_owned(), "3".to_owned()];
        store
            .set_pushcert_log(PushCertLog::History, &stored)
            .await
            .unwrap();
        let j: Journal<u32> = Journal::new(PushCertLog::History, 10);
        j.load(&store).await.unwrap();
        assert_eq!(j.records(), vec![1, 3]);
    }
}
