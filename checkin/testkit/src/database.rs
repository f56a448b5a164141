//! The PostgreSQL server the tests that need one use.

/// The variable naming it (`.ci/postgres.sh start DIR PORT` prints a URL for it).
pub const URL_VAR: &str = "MAGICPUSH_TEST_DATABASE_URL";

/// The test server's URL. Without one a test that needs it should return at once: this says
/// so on stderr and gives `None`, except under `CI=true`, where CI runs the PostgreSQL tests
/// and a missing server is a failure (this panics).
pub fn test_database_url() -> Option<String> {
    match std::env::var(URL_VAR) {
        Ok(url) if !url.trim().is_empty() => Some(url),
        _ if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("{URL_VAR} is not set: CI runs the PostgreSQL tests (.ci/postgres.sh starts a server)")
        }
        _ => {
            eprintln!("skipped: {URL_VAR} is not set (.ci/postgres.sh start DIR PORT prints one)");
            None
        }
    }
}
