//! A secret given on the command line or in the environment (`--api-key`, `--password`,
//! `--notify-secret`): its `Debug` never shows it, so a parsed command line can be logged.

use std::convert::Infallible;
use std::fmt;
use std::str::FromStr;

/// The secret's text, redacted in `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct SecretArg(String);

impl SecretArg {
    /// The text itself.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretArg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretArg(<redacted>)")
    }
}

impl FromStr for SecretArg {
    type Err = Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(SecretArg(s.to_owned()))
    }
}
