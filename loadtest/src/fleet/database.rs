//! The PostgreSQL database of a fleet run (`--database-url`): a schema of its own per run, so
//! that runs on one database (several engineers, CI beside the store's tests) never see each
//! other's devices, and the database is left as it was: the schema is dropped at the end.
//! Its name goes to the nodes in the URL's `options` (`search_path`), as `checkin-bench
//! --database-url` does; each node migrates it at start (the migrations take an advisory
//! lock, so nodes starting together migrate once).

use std::fmt;

use super::FleetError;

/// A run's schema, created on [`RunSchema::create`] and dropped by [`RunSchema::drop_schema`].
pub struct RunSchema {
    name: String,
    /// The URL the nodes connect with: the given one with the schema as `search_path`.
    url: String,
    client: tokio_postgres::Client,
    connection: tokio::task::JoinHandle<()>,
}

impl fmt::Debug for RunSchema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The URL may hold a password.
        f.debug_struct("RunSchema")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// The error with its causes (tokio-postgres' own message is often just "error connecting to
/// server", the why is in its source).
fn db_err(what: &'static str, e: impl std::error::Error) -> FleetError {
    let mut detail = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        detail.push_str(": ");
        detail.push_str(&cause.to_string());
        source = cause.source();
    }
    FleetError::Database { what, detail }
}

impl RunSchema {
    /// Connects to `url` and creates a fresh schema `fleet_<16 hex digits>`. The fleet's own
    /// connection is plain TCP (as `checkin-bench`'s): `url` must allow it
    /// (`sslmode=disable` or `prefer`, a loopback server); the nodes connect as the URL says.
    pub async fn create(url: &str) -> Result<RunSchema, FleetError> {
        let name = format!("fleet_{:016x}", fastrand::u64(..));
        let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .map_err(|e| {
                db_err(
                    "connect to --database-url (plain TCP: the fleet creates its schema without TLS)",
                    e,
                )
            })?;
        let connection = tokio::spawn(async move {
            let _ = conn.await;
        });
        if let Err(e) = client.batch_execute(&format!("CREATE SCHEMA {name}")).await {
            connection.abort();
            return Err(db_err("CREATE SCHEMA", e));
        }
        Ok(RunSchema {
            url: in_schema(url, &name),
            name,
            client,
            connection,
        })
    }

    /// The schema's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The URL the nodes use: `search_path` is the run's schema.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Drops the schema and everything the nodes put in it. Call it once the nodes stopped
    /// (a node's open transaction would make the drop wait for it).
    pub async fn drop_schema(self) -> Result<(), FleetError> {
        let dropped = self
            .client
            .batch_execute(&format!("DROP SCHEMA {} CASCADE", self.name))
            .await;
        self.connection.abort();
        dropped.map_err(|e| db_err("DROP SCHEMA", e))
    }
}

/// `url` with `options=-csearch_path=<schema>` added to its query.
fn in_schema(url: &str, schema: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}options=-csearch_path%3D{schema}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schema_goes_into_the_query() {
        assert_eq!(
            in_schema("postgres://u@127.0.0.1:5432/db", "fleet_1"),
            "postgres://u@127.0.0.1:5432/db?options=-csearch_path%3Dfleet_1"
        );
        assert_eq!(
            in_schema("postgres://u@h/db?sslmode=disable", "fleet_2"),
            "postgres://u@h/db?sslmode=disable&options=-csearch_path%3Dfleet_2"
        );
    }
}
