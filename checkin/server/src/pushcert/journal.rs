//! A bounded list of records kept in the store as one of its push certificate logs
//! ([`PushCertLog`]): the certificate history and the expiry events. Read at start (and again
//! when another node changed it), held in memory for the admin API's reads, and written
//! through to the store on each change.

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
        let records = self.read(store).await?;
        *self.lock() = records;
        Ok(())
    }

    /// The records kept in `store` (those that parse).
    async fn read<S: PushCertStore + ?Sized>(&self, store: &S) -> Result<Vec<T>, StoreError> {
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
        Ok(records)
    }

    /// A copy of the records, oldest first.
    pub fn records(&self) -> Vec<T> {
        self.lock().clone()
    }

    /// Changes the records with `change` and writes them to `store`; the oldest go beyond the
    /// limit. When the write fails nothing changes and the error is returned.
    ///
    /// The change applies to the records as stored now, not as last read: another node
    /// sharing the store may have added some since, and they are kept. Two nodes changing
    /// the log at the same instant may still race (each writes the log whole): the later
    /// write keeps its change and may lose the other's, which is rare (these logs change on
    /// an admin's registration or a daily expiry check) and bounded to that one record.
    pub async fn update<S: PushCertStore + ?Sized>(
        &self,
        store: &S,
        change: impl FnOnce(&mut Vec<T>),
    ) -> Result<(), StoreError> {
        let _one_at_a_time = self.writing.lock().await;
        let mut records = self.read(store).await?;
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
    async fn a_change_keeps_what_another_node_stored_meanwhile() {
        let store = MemoryStore::new();
        let (here, there): (Journal<u32>, Journal<u32>) = (
            Journal::new(PushCertLog::History, 10),
            Journal::new(PushCertLog::History, 10),
        );
        here.update(&store, |r| r.push(1)).await.unwrap();
        there.update(&store, |r| r.push(2)).await.unwrap();
        here.update(&store, |r| r.push(3)).await.unwrap();
        assert_eq!(here.records(), vec![1, 2, 3]);
        there.load(&store).await.unwrap();
        assert_eq!(there.records(), vec![1, 2, 3]);
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
