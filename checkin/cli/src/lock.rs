//! One `serve` per data directory: an OS file lock on `<data-dir>/magicpush.lock`, held for
//! the process's life, with the holder's pid written in the file so that a second process
//! can name it.
//!
//! The lock is advisory (`flock` on Unix, `LockFileEx` on Windows) and the kernel drops it
//! when the process ends, however it ends: a killed server leaves no stale lock behind, only
//! a file with its old pid, which the next holder overwrites.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// The lock file's name inside the data directory.
pub(crate) const LOCK_FILE: &str = "magicpush.lock";

/// Why the data directory could not be locked.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LockError {
    /// Another process holds the lock.
    #[error(
        "the data directory {dir} is in use by another magicpush process{pid}: two servers on one \
         directory would serve the same devices with two schedulers and one database. Stop it, or \
         give this one another --data-dir",
        dir = dir.display(),
        pid = pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
    )]
    Held {
        /// The data directory.
        dir: PathBuf,
        /// The holder's pid, when its lock file names it.
        pid: Option<u32>,
    },
    /// The lock file cannot be opened or locked.
    #[error("cannot lock the data directory: {path}: {cause}", path = path.display())]
    Io {
        /// The lock file.
        path: PathBuf,
        /// The cause.
        cause: std::io::Error,
    },
}

/// The held lock; dropping it releases the lock.
#[derive(Debug)]
pub(crate) struct DataDirLock {
    _file: File,
}

impl DataDirLock {
    /// Takes the lock on `dir` (which must exist) without waiting.
    pub(crate) fn acquire(dir: &Path) -> Result<DataDirLock, LockError> {
        let path = dir.join(LOCK_FILE);
        let io = |cause| LockError::Io {
            path: path.clone(),
            cause,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut text = String::new();
                let pid = file
                    .read_to_string(&mut text)
                    .ok()
                    .and_then(|_| text.trim().parse().ok());
                return Err(LockError::Held {
                    dir: dir.to_owned(),
                    pid,
                });
            }
            Err(TryLockError::Error(e)) => return Err(io(e)),
        }
        file.set_len(0).map_err(io)?;
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        writeln!(file, "{}", std::process::id()).map_err(io)?;
        file.flush().map_err(io)?;
        Ok(DataDirLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_with_the_first_ones_pid() {
        let dir = tempfile::tempdir().unwrap();
        let held = DataDirLock::acquire(dir.path()).unwrap();
        let err = DataDirLock::acquire(dir.path()).unwrap_err();
        match &err {
            LockError::Held { pid, .. } => assert_eq!(*pid, Some(std::process::id())),
            other => panic!("{other:?}"),
        }
        let text = err.to_string();
        assert!(
            text.contains(&format!("pid {}", std::process::id())),
            "{text}"
        );
        assert!(text.contains("--data-dir"), "{text}");
        drop(held);
        DataDirLock::acquire(dir.path()).expect("free again once dropped");
    }

    #[test]
    fn a_missing_directory_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        let text = DataDirLock::acquire(&missing).unwrap_err().to_string();
        assert!(text.contains("nope"), "{text}");
    }
}
