//! A bounded list of records kept as one JSON file in the data directory, rewritten whole
//! (atomically, mode 0600) on each change: the certificate history and the expiry events.
//! Without a directory it lives in memory only.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::de::DeserializeOwned;
use serde::Serialize;

use magicpush_store::private::write_private;

/// The list and where it is kept.
#[derive(Debug)]
pub struct Journal<T> {
    file: Option<(PathBuf, &'static str)>,
    limit: usize,
    records: Mutex<Vec<T>>,
}

impl<T: Serialize + DeserializeOwned + Clone> Journal<T> {
    /// Reads `dir/name` if present. A file that does not parse is kept aside as
    /// `name.unreadable` (never overwritten silently) and the list starts empty.
    pub fn load(dir: Option<&Path>, name: &'static str, limit: usize) -> Journal<T> {
        let mut records = Vec::new();
        if let Some(dir) = dir {
            let path = dir.join(name);
            if let Ok(bytes) = std::fs::read(&path) {
                match serde_json::from_slice::<Vec<T>>(&bytes) {
                    Ok(r) => records = r,
                    Err(e) => {
                        let aside = dir.join(format!("{name}.unreadable"));
                        let _ = std::fs::rename(&path, &aside);
                        tracing::warn!(file = %path.display(), aside = %aside.display(), "cannot read {name}: {e}; it was moved aside and a new one starts");
                    }
                }
            }
        }
        Journal {
            file: dir.map(|d| (d.to_path_buf(), name)),
            limit,
            records: Mutex::new(records),
        }
    }

    /// A copy of the records, oldest first.
    pub fn records(&self) -> Vec<T> {
        self.lock().clone()
    }

    /// Changes the records with `change` and saves them; the oldest go beyond the limit. On a
    /// failed save the change is undone and the error returned.
    pub fn update(&self, change: impl FnOnce(&mut Vec<T>)) -> std::io::Result<()> {
        let mut records = self.lock();
        let before = records.clone();
        change(&mut records);
        let excess = records.len().saturating_sub(self.limit);
        records.drain(..excess);
        if let Some((dir, name)) = &self.file {
            let bytes = serde_json::to_vec_pretty(&*records).unwrap_or_default();
            if let Err(e) = write_private(dir, name, &bytes) {
                *records = before;
                return Err(e);
            }
        }
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<T>> {
        // Changes are applied whole; a poisoned lock still holds a consistent list.
        self.records.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_bounded_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let j: Journal<u32> = Journal::load(Some(dir.path()), "j.json", 3);
        for i in 0..5 {
            j.update(|r| r.push(i)).unwrap();
        }
        assert_eq!(j.records(), vec![2, 3, 4]);
        let again: Journal<u32> = Journal::load(Some(dir.path()), "j.json", 3);
        assert_eq!(again.records(), vec![2, 3, 4]);
    }

    #[test]
    fn an_unreadable_file_is_moved_aside() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("j.json"), b"{not json").unwrap();
        let j: Journal<u32> = Journal::load(Some(dir.path()), "j.json", 3);
        assert!(j.records().is_empty());
        assert!(dir.path().join("j.json.unreadable").exists());
    }
}
