//! [`PushCertStore`] on PostgreSQL: the push certificates' state in five small tables,
//! written through the same writer (and so the same group commits) as the devices. Private
//! keys are sealed with the secrets key, bound to their table and row. Every write also
//! notifies the other nodes in its transaction (`listen`), which
//! [`PushCertStore::pushcert_changes`] hands to the server.

use deadpool_postgres::ClientWrapper;
use magicpush_store::pushcerts::{
    PushCertLog, PushCertStore, StoredPushCert, StoredRequest, MAX_PENDING_REQUESTS,
};
use magicpush_store::{from_ms, to_ms, PushCertChanges, StoreError, StoreFuture};

use crate::listen::{self, Listener, Origin};
use crate::rows::{exec, get, query, query_opt};
use crate::PostgresStore;

/// Tells the other nodes that the push certificates' state changed, in the write's own
/// transaction: the notification is sent only if it commits (see [`listen`]).
async fn announce(c: &ClientWrapper, origin: &str) -> Result<(), StoreError> {
    exec(
        c,
        "announce a push certificate change",
        listen::NOTIFY_SQL,
        &[&origin],
    )
    .await
    .map(drop)
}

/// The secret columns' names, for sealing (the SQLite store's names: a key sealed for one
/// cannot be read as another).
pub(crate) const CERT_KEY: &str = "pushcert_key";
pub(crate) const REQUEST_KEY: &str = "pushcert_request_key";

impl PushCertStore for PostgresStore {
    fn push_certs(&self) -> StoreFuture<'_, Vec<StoredPushCert>> {
        Box::pin(async move {
            const OP: &str = "read push certificates";
            let c = self.reader().await?;
            let rows = query(
                &c,
                OP,
                "SELECT topic, chain_pem, key, registered_at FROM pushcert_certificates
                 ORDER BY topic",
                &[],
            )
            .await?;
            rows.iter()
                .map(|r| {
                    let topic: String = get(r, 0, OP)?;
                    let key_pem = self.unseal(CERT_KEY, &topic, get(r, 2, OP)?)?;
                    Ok(StoredPushCert {
                        chain_pem: get(r, 1, OP)?,
                        key_pem,
                        registered_at: from_ms(get(r, 3, OP)?),
                        topic,
                    })
                })
                .collect()
        })
    }

    fn put_push_cert<'a>(&'a self, cert: &'a StoredPushCert) -> StoreFuture<'a, ()> {
        let sealed = match self.seal(CERT_KEY, &cert.topic, &cert.key_pem) {
            Ok(s) => s.expose().to_vec(),
            Err(e) => return Box::pin(std::future::ready(Err(e))),
        };
        let (topic, chain, at) = (
            cert.topic.clone(),
            cert.chain_pem.clone(),
            to_ms(cert.registered_at),
        );
        let origin = self.origin.clone();
        self.write(move |c| {
            Box::pin(async move {
                exec(
                    c,
                    "write push certificate",
                    "INSERT INTO pushcert_certificates (topic, chain_pem, key, registered_at)
                     VALUES ($1, $2, $3, $4)
                     ON CONFLICT (topic) DO UPDATE SET chain_pem = excluded.chain_pem,
                       key = excluded.key, registered_at = excluded.registered_at",
                    &[&topic, &chain, &sealed, &at],
                )
                .await?;
                announce(c, &origin).await
            })
        })
    }

    fn delete_push_cert<'a>(&'a self, topic: &'a str) -> StoreFuture<'a, bool> {
        let topic = topic.to_owned();
        let origin = self.origin.clone();
        self.write(move |c| {
            Box::pin(async move {
                let n = exec(
                    c,
                    "delete push certificate",
                    "DELETE FROM pushcert_certificates WHERE topic = $1",
                    &[&topic],
                )
                .await?;
                if n > 0 {
                    announce(c, &origin).await?;
                }
                Ok(n > 0)
            })
        })
    }

    fn pushcert_requests(&self) -> StoreFuture<'_, Vec<StoredRequest>> {
        Box::pin(async move {
            const OP: &str = "read push certificate requests";
            let c = self.reader().await?;
            let rows = query(
                &c,
                OP,
                "SELECT id, created_at, facts, key FROM pushcert_requests ORDER BY created_at, id",
                &[],
            )
            .await?;
            rows.iter()
                .map(|r| {
                    let id: String = get(r, 0, OP)?;
                    let key_pkcs8 = self.unseal(REQUEST_KEY, &id, get(r, 3, OP)?)?;
                    Ok(StoredRequest {
                        created_at: from_ms(get(r, 1, OP)?),
                        facts: get(r, 2, OP)?,
                        key_pkcs8,
                        id,
                    })
                })
                .collect()
        })
    }

    fn add_pushcert_request<'a>(&'a self, request: &'a StoredRequest) -> StoreFuture<'a, bool> {
        let sealed = match self.seal(REQUEST_KEY, &request.id, &request.key_pkcs8) {
            Ok(s) => s.expose().to_vec(),
            Err(e) => return Box::pin(std::future::ready(Err(e))),
        };
        let (id, at, facts) = (
            request.id.clone(),
            to_ms(request.created_at),
            request.facts.clone(),
        );
        let origin = self.origin.clone();
        self.write(move |c| {
            Box::pin(async move {
                const OP: &str = "write push certificate request";
                let row = query_opt(
                    c,
                    OP,
                    "SELECT count(*) FROM pushcert_requests WHERE id <> $1",
                    &[&id],
                )
                .await?;
                let waiting: i64 = match row {
                    Some(r) => get(&r, 0, OP)?,
                    None => 0,
                };
                if waiting >= MAX_PENDING_REQUESTS as i64 {
                    return Ok(false);
                }
                exec(
                    c,
                    OP,
                    "INSERT INTO pushcert_requests (id, created_at, facts, key)
                     VALUES ($1, $2, $3, $4)
                     ON CONFLICT (id) DO UPDATE SET created_at = excluded.created_at,
                       facts = excluded.facts, key = excluded.key",
                    &[&id, &at, &facts, &sealed],
                )
                .await?;
                announce(c, &origin).await?;
                Ok(true)
            })
        })
    }

    fn remove_pushcert_request<'a>(&'a self, id: &'a str) -> StoreFuture<'a, bool> {
        let id = id.to_owned();
        let origin = self.origin.clone();
        self.write(move |c| {
            Box::pin(async move {
                let n = exec(
                    c,
                    "delete push certificate request",
                    "DELETE FROM pushcert_requests WHERE id = $1",
                    &[&id],
                )
                .await?;
                if n > 0 {
                    announce(c, &origin).await?;
                }
                Ok(n > 0)
            })
        })
    }

    fn pushcert_memo<'a>(&'a self, topic: &'a str) -> StoreFuture<'a, Option<String>> {
        Box::pin(async move {
            const OP: &str = "read Apple ID memo";
            let c = self.reader().await?;
            let row = query_opt(
                &c,
                OP,
                "SELECT apple_id FROM pushcert_memos WHERE topic = $1",
                &[&topic],
            )
            .await?;
            row.map(|r| get(&r, 0, OP)).transpose()
        })
    }

    fn set_pushcert_memo<'a>(
        &'a self,
        topic: &'a str,
        apple_id: Option<&'a str>,
    ) -> StoreFuture<'a, ()> {
        self.set_by_topic(TopicText::MEMO, topic, apple_id)
    }

    fn pushcert_memos(&self) -> StoreFuture<'_, std::collections::BTreeMap<String, String>> {
        Box::pin(async move {
            const OP: &str = "read Apple ID memos";
            let c = self.reader().await?;
            let rows = query(&c, OP, "SELECT topic, apple_id FROM pushcert_memos", &[]).await?;
            rows.iter()
                .map(|r| Ok((get(r, 0, OP)?, get(r, 1, OP)?)))
                .collect()
        })
    }

    fn tenant_names(&self) -> StoreFuture<'_, std::collections::BTreeMap<String, String>> {
        Box::pin(async move {
            const OP: &str = "read tenant names";
            let c = self.reader().await?;
            let rows = query(&c, OP, "SELECT topic, name FROM tenant_names", &[]).await?;
            rows.iter()
                .map(|r| Ok((get(r, 0, OP)?, get(r, 1, OP)?)))
                .collect()
        })
    }

    fn set_tenant_name<'a>(&'a self, topic: &'a str, name: Option<&'a str>) -> StoreFuture<'a, ()> {
        self.set_by_topic(TopicText::NAME, topic, name)
    }

    fn pushcert_log(&self, log: PushCertLog) -> StoreFuture<'_, Vec<String>> {
        Box::pin(async move {
            const OP: &str = "read push certificate log";
            let c = self.reader().await?;
            let rows = query(
                &c,
                OP,
                "SELECT record FROM pushcert_logs WHERE log = $1 ORDER BY seq",
                &[&log.as_str()],
            )
            .await?;
            rows.iter().map(|r| get(r, 0, OP)).collect()
        })
    }

    fn set_pushcert_log<'a>(
        &'a self,
        log: PushCertLog,
        records: &'a [String],
    ) -> StoreFuture<'a, ()> {
        let records = records.to_vec();
        let origin = self.origin.clone();
        self.write(move |c| {
            Box::pin(async move {
                const OP: &str = "write push certificate log";
                let name = log.as_str();
                exec(c, OP, "DELETE FROM pushcert_logs WHERE log = $1", &[&name]).await?;
                if !records.is_empty() {
                    // One statement: each record with its place in the log.
                    exec(
                        c,
                        OP,
                        "INSERT INTO pushcert_logs (log, seq, record)
                         SELECT $1, r.n - 1, r.record
                         FROM unnest($2::text[]) WITH ORDINALITY AS r (record, n)",
                        &[&name, &records],
                    )
                    .await?;
                }
                announce(c, &origin).await
            })
        })
    }

    fn pushcert_changes(&self) -> Option<PushCertChanges> {
        let listener = self.listener.get_or_init(|| {
            Listener::start(self.url.clone(), Origin::clone(&self.origin), &self.runtime)
        });
        Some(listener.subscribe())
    }
}

/// A text kept per topic: its table's upsert and delete, and what a failure was doing.
struct TopicText {
    upsert: &'static str,
    delete: &'static str,
    op: &'static str,
}

impl TopicText {
    const MEMO: TopicText = TopicText {
        upsert: "INSERT INTO pushcert_memos (topic, apple_id) VALUES ($1, $2)
                 ON CONFLICT (topic) DO UPDATE SET apple_id = excluded.apple_id",
        delete: "DELETE FROM pushcert_memos WHERE topic = $1",
        op: "write Apple ID memo",
    };
    const NAME: TopicText = TopicText {
        upsert: "INSERT INTO tenant_names (topic, name) VALUES ($1, $2)
                 ON CONFLICT (topic) DO UPDATE SET name = excluded.name",
        delete: "DELETE FROM tenant_names WHERE topic = $1",
        op: "write tenant name",
    };
}

impl PostgresStore {
    /// Sets (`Some`) or clears (`None`) the text `what` keeps for `topic`.
    fn set_by_topic<'a>(
        &'a self,
        what: TopicText,
        topic: &str,
        text: Option<&str>,
    ) -> StoreFuture<'a, ()> {
        let (topic, text) = (topic.to_owned(), text.map(str::to_owned));
        let origin = self.origin.clone();
        self.write(move |c| {
            Box::pin(async move {
                match text {
                    Some(t) => exec(c, what.op, what.upsert, &[&topic, &t]).await,
                    None => exec(c, what.op, what.delete, &[&topic]).await,
                }?;
                announce(c, &origin).await
            })
        })
    }
}
