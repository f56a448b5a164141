//! [`EnrollmentStore`] on SQLite (schema version 9): challenges by hash, revoked serials, and
//! a device CA row whose key is sealed when a secrets key is configured.

use magicpush_mdm::Secret;
use rusqlite::{params, OptionalExtension};
use time::OffsetDateTime;

use magicpush_store::{
    from_ms, to_ms, EnrollmentStore, StoreFuture, StoredChallenge, StoredDeviceCa,
};

use crate::{db_err, SqliteStore};

/// The CA key's sealing column and row names.
pub(crate) const CA_KEY: (&str, &str) = ("device_ca_key", "1");

impl EnrollmentStore for SqliteStore {
    fn add_challenge<'a>(&'a self, challenge: &'a StoredChallenge) -> StoreFuture<'a, ()> {
        let c = challenge.clone();
        self.write(move |conn| {
            conn.execute(
                "INSERT INTO enrollment_challenges
                     (hash, enrollment_id, invitation_id, created_at, expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    &c.hash[..],
                    c.enrollment_id,
                    c.invitation_id,
                    to_ms(c.created_at),
                    to_ms(c.expires_at)
                ],
            )
            .map_err(db_err("add challenge"))
            .map(drop)
        })
    }

    fn consume_challenge<'a>(
        &'a self,
        hash: &'a [u8; 32],
        at: OffsetDateTime,
    ) -> StoreFuture<'a, Option<String>> {
        let hash = *hash;
        self.write(move |conn| {
            conn.query_row(
                "UPDATE enrollment_challenges SET used_at = ?2
                 WHERE hash = ?1 AND used_at IS NULL AND expires_at > ?2
                 RETURNING enrollment_id",
                params![&hash[..], to_ms(at)],
                |r| r.get(0),
            )
            .optional()
            .map_err(db_err("consume challenge"))
        })
    }

    fn revoke_serial<'a>(
        &'a self,
        serial: &'a str,
        udid: &'a str,
        at: OffsetDateTime,
    ) -> StoreFuture<'a, ()> {
        let (serial, udid) = (serial.to_owned(), udid.to_owned());
        self.write(move |conn| {
            conn.execute(
                "INSERT INTO revoked_certificates (serial, udid, revoked_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (serial) DO NOTHING",
                params![serial, udid, to_ms(at)],
            )
            .map_err(db_err("revoke certificate"))
            .map(drop)
        })
    }

    fn is_revoked<'a>(&'a self, serial: &'a str) -> StoreFuture<'a, bool> {
        let serial = serial.to_owned();
        self.read(move |conn| {
            conn.query_row(
                "SELECT 1 FROM revoked_certificates WHERE serial = ?1",
                params![serial],
                |_| Ok(()),
            )
            .optional()
            .map(|r| r.is_some())
            .map_err(db_err("read revoked certificates"))
        })
    }

    fn device_ca(&self) -> StoreFuture<'_, Option<StoredDeviceCa>> {
        let key = self.secrets.clone();
        self.read(move |conn| {
            let row: Option<(String, Vec<u8>, i64)> = conn
                .query_row(
                    "SELECT cert_pem, key, created_at FROM device_ca WHERE id = 1",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .optional()
                .map_err(db_err("read device CA"))?;
            row.map(|(cert_pem, stored, at)| {
                Ok(StoredDeviceCa {
                    cert_pem,
                    key_pem: SqliteStore::unseal(
                        key.as_deref(),
                        CA_KEY.0,
                        CA_KEY.1,
                        Secret::new(stored),
                    )?,
                    created_at: from_ms(at),
                })
            })
            .transpose()
        })
    }

    fn create_device_ca<'a>(&'a self, ca: &'a StoredDeviceCa) -> StoreFuture<'a, StoredDeviceCa> {
        let sealed = match self.seal(CA_KEY.0, CA_KEY.1, ca.key_pem.clone()) {
            Ok(s) => s,
            Err(e) => return Box::pin(std::future::ready(Err(e))),
        };
        let (cert, at) = (ca.cert_pem.clone(), to_ms(ca.created_at));
        let written = self.write(move |conn| {
            conn.execute(
                "INSERT INTO device_ca (id, cert_pem, key, created_at) VALUES (1, ?1, ?2, ?3)
                 ON CONFLICT (id) DO NOTHING",
                params![cert, sealed.expose(), at],
            )
            .map_err(db_err("create device CA"))
            .map(drop)
        });
        Box::pin(async move {
            written.await?;
            self.device_ca()
                .await?
                .ok_or_else(|| magicpush_store::StoreError::Corrupt {
                    what: "device_ca: the row written is gone".into(),
                })
        })
    }
}
