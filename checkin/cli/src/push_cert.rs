//! The push certificate named on the command line (`serve --cert`, `push --cert`), in the
//! forms operators are handed: a PKCS#12 file (`.p12`, as Keychain and Apple's tools export
//! it) with its password, a PEM certificate with `--key`, or one PEM file holding both.

use std::path::Path;

use anyhow::{bail, Context};
use magicpush_engine::cert::{self, CertError, PushCertificate};

use super::secret_arg::SecretArg;

/// Where the certificate and its secrets come from.
pub(crate) struct CertFlags<'a> {
    /// `--cert`: PEM, PEM bundle or PKCS#12 (told apart by content).
    pub(crate) cert: &'a Path,
    /// `--key`: the PEM certificate's private key.
    pub(crate) key: Option<&'a Path>,
    /// `--cert-password-file`: the PKCS#12 password (its first line).
    pub(crate) password_file: Option<&'a Path>,
    /// `--cert-password` / `MAGICPUSH_P12_PASSWORD`.
    pub(crate) password: Option<&'a SecretArg>,
}

/// How to give a PKCS#12 password, for messages.
const HOW_TO_GIVE_PASSWORD: &str =
    "give it with --cert-password-file FILE or the MAGICPUSH_P12_PASSWORD environment variable";

/// Loads the certificate with its key, naming the flag and the cause when it cannot.
pub(crate) fn load(flags: &CertFlags<'_>) -> anyhow::Result<PushCertificate> {
    let path = flags.cert;
    let bytes =
        std::fs::read(path).with_context(|| format!("cannot read --cert {}", path.display()))?;
    let is_pem = bytes.windows(11).any(|w| w == b"-----BEGIN ");
    if !is_pem && cert::is_probably_pkcs12(&bytes) {
        if let Some(key) = flags.key {
            bail!(
                "--cert {} is a PKCS#12 file, which holds its own key: leave out --key {}",
                path.display(),
                key.display()
            );
        }
        let password = password(flags)?;
        let wrong = |e: &CertError| matches!(e.root(), CertError::WrongPassword);
        return match PushCertificate::from_pkcs12_file(path, password.as_deref().unwrap_or("")) {
            Ok(cert) => Ok(cert),
            Err(e) if wrong(&e) && password.is_none() => bail!(
                "--cert {} is a PKCS#12 file protected by a password: {HOW_TO_GIVE_PASSWORD}",
                path.display()
            ),
            Err(e) if wrong(&e) => bail!(
                "--cert {}: wrong PKCS#12 password (the one from {}); the password is the one \
                 chosen when the certificate was exported",
                path.display(),
                password_source(flags)
            ),
            Err(e) => Err(anyhow::Error::new(e).context("--cert")),
        };
    }
    let loaded = match flags.key {
        Some(key) => PushCertificate::from_pem_files(path, key),
        None if is_pem && has_private_key(&bytes) => PushCertificate::from_pem_bundle(&bytes),
        None if is_pem => bail!(
            "--cert {} holds a certificate without its private key: give the key with --key \
             KEY.pem, or use the .p12 file exported with it",
            path.display()
        ),
        None => bail!(
            "--cert {} is neither PEM nor PKCS#12: give the certificate as PEM with --key, or a \
             .p12 file",
            path.display()
        ),
    };
    loaded.map_err(|e| anyhow::Error::new(e).context("the push certificate (--cert/--key)"))
}

fn has_private_key(pem: &[u8]) -> bool {
    pem.windows(11).any(|w| w == b"PRIVATE KEY")
}

/// The PKCS#12 password: the file's first line (wins), else the flag or environment.
fn password(flags: &CertFlags<'_>) -> anyhow::Result<Option<String>> {
    if let Some(path) = flags.password_file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read --cert-password-file {}", path.display()))?;
        let line = text.lines().next().unwrap_or("");
        return Ok(Some(line.trim_end_matches('\r').to_owned()));
    }
    Ok(flags.password.map(|p| p.expose().to_owned()))
}

fn password_source(flags: &CertFlags<'_>) -> String {
    match flags.password_file {
        Some(path) => format!("--cert-password-file {}", path.display()),
        None => "--cert-password / MAGICPUSH_P12_PASSWORD".into(),
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::str::FromStr;

    use super::*;

    fn fixture(name: &str) -> PathBuf {
        magicpush_fixtures::dir().join("certs").join(name)
    }

    fn flags<'a>(cert: &'a Path, key: Option<&'a Path>) -> CertFlags<'a> {
        CertFlags {
            cert,
            key,
            password_file: None,
            password: None,
        }
    }

    #[test]
    fn each_form_loads_and_each_mistake_names_its_flag() {
        let (pem, key) = (fixture("push.pem"), fixture("push.key.pem"));
        let topic = load(&flags(&pem, Some(&key))).unwrap().topic().to_owned();
        let bundle = fixture("push.bundle.pem");
        assert_eq!(load(&flags(&bundle, None)).unwrap().topic(), topic);

        let err = load(&flags(&pem, None)).unwrap_err().to_string();
        assert!(err.contains("--key"), "{err}");

        let p12 = fixture("push.p12");
        let err = load(&flags(&p12, None)).unwrap_err().to_string();
        assert!(err.contains("--cert-password-file"), "{err}");
        let err = load(&flags(&p12, Some(&key))).unwrap_err().to_string();
        assert!(err.contains("leave out --key"), "{err}");

        let wrong = SecretArg::from_str("not-the-password").unwrap();
        let err = load(&CertFlags {
            password: Some(&wrong),
            ..flags(&p12, None)
        })
        .unwrap_err()
        .to_string();
        assert!(err.contains("wrong PKCS#12 password"), "{err}");

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("password");
        std::fs::write(
            &file,
            format!("{}\n", magicpush_fixtures::generate::P12_PASSWORD),
        )
        .unwrap();
        let from_file = CertFlags {
            password_file: Some(&file),
            password: Some(&wrong),
            ..flags(&p12, None)
        };
        assert_eq!(load(&from_file).unwrap().topic(), topic, "the file wins");

        let empty = fixture("push-empty-password.p12");
        assert_eq!(load(&flags(&empty, None)).unwrap().topic(), topic);

        let missing = fixture("nope.pem");
        let err = format!("{:#}", load(&flags(&missing, None)).unwrap_err());
        assert!(err.contains("--cert") && err.contains("nope.pem"), "{err}");
        assert_eq!(err.matches("No such file").count(), 1, "{err}");
    }
}
