//! Files that hold secrets (the device database with unlock and bootstrap tokens, the push
//! certificate's key): the data directory is 0700 and every file in it 0600, temporary files
//! included — created with that mode, never chmod-ed after the fact. Unix only; elsewhere the
//! platform's defaults apply.

use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// Creates `dir` (and its parents) if needed and makes it 0700. Tightens an existing
/// directory that is open to others, saying so.
pub fn private_dir(dir: &Path) -> std::io::Result<()> {
    if dir.is_dir() {
        return restrict(dir, 0o700);
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)
}

/// Makes an existing file 0600 (for files another library creates, such as SQLite's WAL,
/// which takes its mode from the database file).
pub fn restrict_file(path: &Path) -> std::io::Result<()> {
    match std::fs::metadata(path) {
        Ok(_) => restrict(path, 0o600),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Creates `path` empty with mode 0600 if it does not exist (so that whoever opens it next
/// inherits the mode), or tightens it.
pub fn create_private_file(path: &Path) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(false);
    set_mode(&mut options, 0o600);
    drop(options.open(path)?);
    restrict(path, 0o600)
}

/// Writes `bytes` to `dir/name` atomically — a temporary file of its own (mode 0600), fsync,
/// rename, fsync of the directory — so that a reader sees the old file or the new one, and
/// two writers never write into one temporary file.
pub fn write_private(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    private_dir(dir)?;
    let tmp = dir.join(format!(
        ".{name}.{}.{}.tmp",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    set_mode(&mut options, 0o600);
    let written = (|| {
        let mut file = options.open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&tmp, dir.join(name))
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(unix)]
fn set_mode(options: &mut std::fs::OpenOptions, mode: u32) {
    use std::os::unix::fs::OpenOptionsExt;
    options.mode(mode);
}

#[cfg(not(unix))]
fn set_mode(_: &mut std::fs::OpenOptions, _: u32) {}

#[cfg(unix)]
fn restrict(path: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let current = std::fs::metadata(path)?.permissions().mode() & 0o777;
    if current & !mode != 0 {
        tracing::warn!(
            path = %path.display(),
            "{:o} lets others read secrets: changing it to {mode:o}",
            current
        );
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

#[cfg(not(unix))]
fn restrict(_: &Path, _: u32) -> std::io::Result<()> {
    Ok(())
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn directories_and_files_are_private() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        private_dir(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        private_dir(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700, "an existing open directory is tightened");

        write_private(&dir, "secret.pem", b"one").unwrap();
        assert_eq!(mode(&dir.join("secret.pem")), 0o600);
        write_private(&dir, "secret.pem", b"two").unwrap();
        assert_eq!(std::fs::read(dir.join("secret.pem")).unwrap(), b"two");
        let leftovers: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "no temporary file left behind");

        let db = dir.join("db");
        create_private_file(&db).unwrap();
        assert_eq!(mode(&db), 0o600);
        std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
        restrict_file(&db).unwrap();
        assert_eq!(mode(&db), 0o600);
        restrict_file(&dir.join("missing")).unwrap();
    }

    #[test]
    fn concurrent_writers_do_not_interleave() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_owned();
        let a = vec![b'a'; 1 << 20];
        let b = vec![b'b'; 1 << 20];
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| write_private(&dir, "bundle.pem", &a).unwrap());
                s.spawn(|| write_private(&dir, "bundle.pem", &b).unwrap());
            }
        });
        let got = std::fs::read(dir.join("bundle.pem")).unwrap();
        assert!(got == a || got == b, "a mix of two uploads");
    }
}
