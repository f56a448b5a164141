//! [`PushCertStore`] on SQLite: the push certificates' state in five small tables, written
//! through the same writer (and so the same group commits) as the devices. Private keys are
//! sealed with the secrets key when there is one, bound to their table and row.

use rusqlite::{params, Connection, OptionalExtension};

use magicpush_mdm::Secret;
use magicpush_store::pushcerts::{
    PushCertLog, PushCertStore, StoredPushCert, StoredRequest, MAX_PENDING_REQUESTS,
};
use magicpush_store::{from_ms, to_ms, StoreError, StoreFuture};

use crate::{db_err, SqliteStore};

/// The secret columns' names, for sealing (a key sealed for one cannot be read as another).
pub(crate) const CERT_KEY: &str = "pushcert_key";
pub(crate) const REQUEST_KEY: &str = "pushcert_request_key";

impl PushCertStore for SqliteStore {
    fn push_certs(&self) -> StoreFuture<'_, Vec<StoredPushCert>> {
        let key = self.secrets.clone();
        self.read(move |c| {
            let mut stmt = c
                .prepare_cached(
                    "SELECT topic, chain_pem, key, registered_at FROM pushcert_certificates
                     ORDER BY topic",
                )
                .map_err(db_err("read push certificates"))?;
            let rows = stmt
                .query_map([], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, Vec<u8>>(2)?,
                        r.get::<_, i64>(3)?,
                    ))
                })
                .map_err(db_err("read push certificates"))?;
            let mut out = Vec::new();
            for row in rows {
                let (topic, chain_pem, sealed, at) =
                    row.map_err(db_err("read push certificates"))?;
                let key_pem = Self::unseal(key.as_deref(), CERT_KEY, &topic, Secret::new(sealed))?;
                out.push(StoredPushCert {
                    topic,
                    chain_pem,
                    key_pem,
                    registered_at: from_ms(at),
                });
            }
            Ok(out)
        })
    }

    fn put_push_cert<'a>(&'a self, cert: &'a StoredPushCert) -> StoreFuture<'a, ()> {
        let sealed = match self.seal(CERT_KEY, &cert.topic, cert.key_pem.clone()) {
            Ok(s) => s,
            Err(e) => return Box::pin(std::future::ready(Err(e))),
        };
        let (topic, chain, at) = (
            cert.topic.clone(),
            cert.chain_pem.clone(),
            cert.registered_at,
        );
        self.write(move |c| {
            c.execute(
                "INSERT INTO pushcert_certificates (topic, chain_pem, key, registered_at)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (topic) DO UPDATE SET chain_pem = excluded.chain_pem,
                   key = excluded.key, registered_at = excluded.registered_at",
                params![topic, chain, sealed.expose(), to_ms(at)],
            )
            .map(drop)
            .map_err(db_err("write push certificate"))
        })
    }

    fn delete_push_cert<'a>(&'a self, topic: &'a str) -> StoreFuture<'a, bool> {
        let topic = topic.to_owned();
        self.write(move |c| {
            c.execute(
                "DELETE FROM pushcert_certificates WHERE topic = ?1",
                [topic],
            )
            .map(|n| n > 0)
            .map_err(db_err("delete push certificate"))
        })
    }

    fn pushcert_requests(&self) -> StoreFuture<'_, Vec<StoredRequest>> {
        let key = self.secrets.clone();
        self.read(move |c| {
            let mut stmt = c
                .prepare_cached(
                    "SELECT id, created_at, facts, key FROM pushcert_requests
                     ORDER BY created_at, id",
                )
                .map_err(db_err("read push certificate requests"))?;
            let rows = stmt
                .query_map([], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, Vec<u8>>(3)?,
                    ))
                })
                .map_err(db_err("read push certificate requests"))?;
            let mut out = Vec::new();
            for row in rows {
                let (id, at, facts, sealed) =
                    row.map_err(db_err("read push certificate requests"))?;
                let key_pkcs8 =
                    Self::unseal(key.as_deref(), REQUEST_KEY, &id, Secret::new(sealed))?;
                out.push(StoredRequest {
                    id,
                    created_at: from_ms(at),
                    facts,
                    key_pkcs8,
                });
            }
            Ok(out)
        })
    }

    fn add_pushcert_request<'a>(&'a self, request: &'a StoredRequest) -> StoreFuture<'a, bool> {
        let sealed = match self.seal(REQUEST_KEY, &request.id, request.key_pkcs8.clone()) {
            Ok(s) => s,
            Err(e) => return Box::pin(std::future::ready(Err(e))),
        };
        let (id, at, facts) = (
            request.id.clone(),
            request.created_at,
            request.facts.clone(),
        );
        self.write(move |c| {
            let waiting: i64 = c
                .query_row(
                    "SELECT count(*) FROM pushcert_requests WHERE id != ?1",
                    [&id],
                    |r| r.get(0),
                )
                .map_err(db_err("write push certificate request"))?;
            if waiting >= MAX_PENDING_REQUESTS as i64 {
                return Ok(false);
            }
            c.execute(
                "INSERT OR REPLACE INTO pushcert_requests (id, created_at, facts, key)
                 VALUES (?1, ?2, ?3, ?4)",
                params![id, to_ms(at), facts, sealed.expose()],
            )
            .map(|_| true)
            .map_err(db_err("write push certificate request"))
        })
    }

    fn remove_pushcert_request<'a>(&'a self, id: &'a str) -> StoreFuture<'a, bool> {
        let id = id.to_owned();
        self.write(move |c| {
            c.execute("DELETE FROM pushcert_requests WHERE id = ?1", [id])
                .map(|n| n > 0)
                .map_err(db_err("delete push certificate request"))
        })
    }

    fn pushcert_memo<'a>(&'a self, topic: &'a str) -> StoreFuture<'a, Option<String>> {
        let topic = topic.to_owned();
        self.read(move |c| {
            c.query_row(
                "SELECT apple_id FROM pushcert_memos WHERE topic = ?1",
                [topic],
                |r| r.get(0),
            )
            .optional()
            .map_err(db_err("read Apple ID memo"))
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
        self.read(|c| {
            let mut stmt = c
                .prepare_cached("SELECT topic, apple_id FROM pushcert_memos")
                .map_err(db_err("read Apple ID memos"))?;
            let rows = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .map_err(db_err("read Apple ID memos"))?;
            rows.collect::<Result<_, _>>()
                .map_err(db_err("read Apple ID memos"))
        })
    }

    fn tenant_names(&self) -> StoreFuture<'_, std::collections::BTreeMap<String, String>> {
        self.read(|c| {
            let mut stmt = c
                .prepare_cached("SELECT topic, name FROM tenant_names")
                .map_err(db_err("read tenant names"))?;
            let rows = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .map_err(db_err("read tenant names"))?;
            rows.collect::<Result<_, _>>()
                .map_err(db_err("read tenant names"))
        })
    }

    fn set_tenant_name<'a>(&'a self, topic: &'a str, name: Option<&'a str>) -> StoreFuture<'a, ()> {
        self.set_by_topic(TopicText::NAME, topic, name)
    }

    fn pushcert_log(&self, log: PushCertLog) -> StoreFuture<'_, Vec<String>> {
        self.read(move |c| read_log(c, log))
    }

    fn set_pushcert_log<'a>(
        &'a self,
        log: PushCertLog,
        records: &'a [String],
    ) -> StoreFuture<'a, ()> {
        let records = records.to_vec();
        self.write(move |c| {
            let failed = db_err("write push certificate log");
            c.execute("DELETE FROM pushcert_logs WHERE log = ?1", [log.as_str()])
                .map_err(failed)?;
            let mut insert = c
                .prepare_cached("INSERT INTO pushcert_logs (log, seq, record) VALUES (?1, ?2, ?3)")
                .map_err(db_err("write push certificate log"))?;
            for (seq, record) in records.iter().enumerate() {
                insert
                    .execute(params![log.as_str(), seq as i64, record])
                    .map_err(db_err("write push certificate log"))?;
            }
            Ok(())
        })
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
        upsert: "INSERT INTO pushcert_memos (topic, apple_id) VALUES (?1, ?2)
                 ON CONFLICT (topic) DO UPDATE SET apple_id = excluded.apple_id",
        delete: "DELETE FROM pushcert_memos WHERE topic = ?1",
        op: "write Apple ID memo",
    };
    const NAME: TopicText = TopicText {
        upsert: "INSERT INTO tenant_names (topic, name) VALUES (?1, ?2)
                 ON CONFLICT (topic) DO UPDATE SET name = excluded.name",
        delete: "DELETE FROM tenant_names WHERE topic = ?1",
        op: "write tenant name",
    };
}

impl SqliteStore {
    /// Sets (`Some`) or clears (`None`) the text `what` keeps for `topic`.
    fn set_by_topic<'a>(
        &'a self,
        what: TopicText,
        topic: &str,
        text: Option<&str>,
    ) -> StoreFuture<'a, ()> {
        let (topic, text) = (topic.to_owned(), text.map(str::to_owned));
        self.write(move |c| {
            match text {
                Some(t) => c.execute(what.upsert, params![topic, t]),
                None => c.execute(what.delete, [topic]),
            }
            .map(drop)
            .map_err(db_err(what.op))
        })
    }
}

fn read_log(c: &Connection, log: PushCertLog) -> Result<Vec<String>, StoreError> {
    let mut stmt = c
        .prepare_cached("SELECT record FROM pushcert_logs WHERE log = ?1 ORDER BY seq")
        .map_err(db_err("read push certificate log"))?;
    let rows = stmt
        .query_map([log.as_str()], |r| r.get::<_, String>(0))
        .map_err(db_err("read push certificate log"))?;
    rows.collect::<Result<_, _>>()
        .map_err(db_err("read push certificate log"))
}
