//! The admin API key of a live server: read from its file, or a fresh random one written
//! there, readable by its owner only.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use super::LiveError;

/// The key in `path` (its first line, trimmed), or a fresh one (32 random bytes as hex)
/// written there with mode 0600 when the file does not exist.
pub(crate) fn read_or_create(path: &Path) -> Result<String, LiveError> {
    let err = |what: &'static str| {
        move |source: std::io::Error| LiveError::KeyFile {
            path: path.to_owned(),
            what,
            source,
        }
    };
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let key = text.lines().next().unwrap_or("").trim().to_owned();
            if key.is_empty() {
                return Err(LiveError::EmptyKeyFile {
                    path: path.to_owned(),
                });
            }
            Ok(key)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            use ring::rand::SecureRandom;
            let mut bytes = [0u8; 32];
            ring::rand::SystemRandom::new()
                .fill(&mut bytes)
                .map_err(|_| err("generate")(std::io::Error::other("no random bytes")))?;
            let key = hex::encode(bytes);
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(err("create the directory of"))?;
            }
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(err("create"))?;
            writeln!(file, "{key}").map_err(err("write"))?;
            Ok(key)
        }
        Err(e) => Err(err("read")(e)),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn a_missing_file_gets_a_private_fresh_key_that_is_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys/admin.key");
        let key = read_or_create(&path).unwrap();
        assert_eq!(key.len(), 64);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(read_or_create(&path).unwrap(), key);

        std::fs::write(&path, "  my-key  \nrest\n").unwrap();
        assert_eq!(read_or_create(&path).unwrap(), "my-key");
        std::fs::write(&path, "\n").unwrap();
        assert!(matches!(
            read_or_create(&path),
            Err(LiveError::EmptyKeyFile { .. })
        ));
    }
}
