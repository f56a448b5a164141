//! The identity hashes of concurrent requests, read in one query.
//!
//! Every authenticated request asks which certificate its device is bound to. The SQLite
//! store answers from memory; this one cannot, since another node may bind the device to a
//! new certificate, so each answer comes from the database. One query per request would take
//! a round trip and a pooled connection each, in competition with every other read. Instead
//! the lookups asked while one query is running wait together and the next query answers all
//! of them (`udid = ANY($1)`): one connection, as many queries as the database answers one
//! after another, each for every request that came meanwhile.

use std::collections::HashMap;

use deadpool_postgres::Pool;
use tokio::sync::{mpsc, oneshot};

use tokio_postgres::types::Type;

use crate::rows::hash_column;
use crate::{pool_err, StoreError};

/// Lookups answered by one query at most.
const MAX_BATCH: usize = 512;

/// Lookups waiting at most; a request waits for room beyond that.
const QUEUE: usize = 4_096;

type Answer = Result<Option<[u8; 32]>, StoreError>;

/// Where identity lookups are asked; the task answering them ends with it.
pub(crate) struct IdentityReads {
    asks: mpsc::Sender<(String, oneshot::Sender<Answer>)>,
}

impl IdentityReads {
    /// Starts the task that answers lookups with connections from `pool`.
    pub(crate) fn start(pool: Pool) -> IdentityReads {
        let (asks, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run(pool, rx));
        IdentityReads { asks }
    }

    /// The identity hash `udid` is bound to, read from the database.
    pub(crate) async fn get(&self, udid: &str) -> Answer {
        let (tx, rx) = oneshot::channel();
        let closed = || StoreError::Closed;
        self.asks
            .send((udid.to_owned(), tx))
            .await
            .map_err(|_| closed())?;
        rx.await.map_err(|_| closed())?
    }
}

async fn run(pool: Pool, mut asks: mpsc::Receiver<(String, oneshot::Sender<Answer>)>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while asks.recv_many(&mut batch, MAX_BATCH).await > 0 {
        match read(&pool, &batch).await {
            Ok(mut found) => {
                for (udid, tx) in batch.drain(..) {
                    let value = found.remove(&udid).flatten();
                    let _ = tx.send(hash_column(&udid, "identity_sha256", value));
                }
            }
            Err(e) => {
                for (_, tx) in batch.drain(..) {
                    let _ = tx.send(Err(e.clone()));
                }
            }
        }
    }
}

/// The stored identity column of each device asked for that exists.
async fn read(
    pool: &Pool,
    batch: &[(String, oneshot::Sender<Answer>)],
) -> Result<HashMap<String, Option<Vec<u8>>>, StoreError> {
    const OP: &str = "read device identities";
    let udids: Vec<&str> = batch.iter().map(|(u, _)| u.as_str()).collect();
    let c = pool.get().await.map_err(pool_err(OP))?;
    // Unnamed, so planned for these devices each time (see `writer::begin`).
    let rows = c
        .query_typed(
            "SELECT udid, identity_sha256 FROM devices WHERE udid = ANY($1)",
            &[(&udids, Type::TEXT_ARRAY)],
        )
        .await
        .map_err(crate::pg_err(OP))?;
    rows.iter()
        .map(|row| {
            let udid: String = row.try_get(0).map_err(crate::pg_err(OP))?;
            let hash: Option<Vec<u8>> = row.try_get(1).map_err(crate::pg_err(OP))?;
            Ok((udid, hash))
        })
        .collect()
}
