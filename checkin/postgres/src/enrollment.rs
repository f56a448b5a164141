//! [`EnrollmentStore`] on PostgreSQL (schema migration 4): challenges by hash, revoked
//! serials, and the device CA in one row, its key sealed with the secrets key. Nodes starting
//! together each insert their CA if none is there; the first committed wins and every node
//! reads that one back.

use magicpush_store::{
    from_ms, to_ms, EnrollmentStore, StoreError, StoreFuture, StoredChallenge, StoredDeviceCa,
};
use time::OffsetDateTime;

use crate::rows::{exec, get, query_opt};
use crate::PostgresStore;

/// The CA key's sealing column and row names.
const CA_KEY: (&str, &str) = ("device_ca_key", "1");

impl EnrollmentStore for PostgresStore {
    fn add_challenge<'a>(&'a self, challenge: &'a StoredChallenge) -> StoreFuture<'a, ()> {
        let c = challenge.clone();
        self.write(move |conn| {
            Box::pin(async move {
                exec(
                    conn,
                    "add challenge",
                    "INSERT INTO enrollment_challenges
                         (hash, enrollment_id, invitation_id, created_at, expires_at)
                     VALUES ($1, $2, $3, $4, $5)",
                    &[
                        &&c.hash[..],
                        &c.enrollment_id,
                        &c.invitation_id,
                        &to_ms(c.created_at),
                        &to_ms(c.expires_at),
                    ],
                )
                .await
                .map(drop)
            })
        })
    }

    fn consume_challenge<'a>(
        &'a self,
        hash: &'a [u8; 32],
        at: OffsetDateTime,
    ) -> StoreFuture<'a, Option<String>> {
        let hash = hash.to_vec();
        self.write(move |conn| {
            Box::pin(async move {
                const OP: &str = "consume challenge";
                let row = query_opt(
                    conn,
                    OP,
                    "UPDATE enrollment_challenges SET used_at = $2
                     WHERE hash = $1 AND used_at IS NULL AND expires_at > $2
                     RETURNING enrollment_id",
                    &[&hash, &to_ms(at)],
                )
                .await?;
                row.map(|r| get::<String>(&r, 0, OP)).transpose()
            })
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
            Box::pin(async move {
                exec(
                    conn,
                    "revoke certificate",
                    "INSERT INTO revoked_certificates (serial, udid, revoked_at)
                     VALUES ($1, $2, $3) ON CONFLICT (serial) DO NOTHING",
                    &[&serial, &udid, &to_ms(at)],
                )
                .await
                .map(drop)
            })
        })
    }

    fn is_revoked<'a>(&'a self, serial: &'a str) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let c = self.reader().await?;
            let row = query_opt(
                &c,
                "read revoked certificates",
                "SELECT 1 FROM revoked_certificates WHERE serial = $1",
                &[&serial],
            )
            .await?;
            Ok(row.is_some())
        })
    }

    fn device_ca(&self) -> StoreFuture<'_, Option<StoredDeviceCa>> {
        Box::pin(async move {
            const OP: &str = "read device CA";
            let c = self.reader().await?;
            let row = query_opt(
                &c,
                OP,
                "SELECT cert_pem, key, created_at FROM device_ca WHERE id = 1",
                &[],
            )
            .await?;
            row.map(|r| {
                Ok(StoredDeviceCa {
                    cert_pem: get(&r, 0, OP)?,
                    key_pem: self.unseal(CA_KEY.0, CA_KEY.1, get(&r, 1, OP)?)?,
                    created_at: from_ms(get(&r, 2, OP)?),
                })
            })
            .transpose()
        })
    }

    fn create_device_ca<'a>(&'a self, ca: &'a StoredDeviceCa) -> StoreFuture<'a, StoredDeviceCa> {
        let sealed = match self.seal(CA_KEY.0, CA_KEY.1, &ca.key_pem) {
            Ok(s) => s.expose().to_vec(),
            Err(e) => return Box::pin(std::future::ready(Err(e))),
        };
        let (cert, at) = (ca.cert_pem.clone(), to_ms(ca.created_at));
        let written = self.write(move |conn| {
            Box::pin(async move {
                exec(
                    conn,
                    "create device CA",
                    "INSERT INTO device_ca (id, cert_pem, key, created_at)
                     VALUES (1, $1, $2, $3) ON CONFLICT (id) DO NOTHING",
                    &[&cert, &sealed, &at],
                )
                .await
                .map(drop)
            })
        });
        Box::pin(async move {
            written.await?;
            self.device_ca().await?.ok_or_else(|| StoreError::Corrupt {
                what: "device_ca: the row written is gone".into(),
            })
        })
    }
}
