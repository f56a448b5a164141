//! [`EnrollmentStore`] on PostgreSQL (schema migrations 4 and 5): challenges by hash, revoked
//! serials, the device CA in one row, its key sealed with the secrets key, and enrollment
//! invitations with the devices enrolled through them. Nodes starting together each insert
//! their CA if none is there; the first committed wins and every node reads that one back.
//! A check and the write it guards lock the row they read (`FOR UPDATE`), so two nodes
//! cannot both admit the last use of an invitation or both use one challenge.

use magicpush_store::enrollment::{
    MAX_LISTED_DEVICES, MAX_LISTED_INVITATIONS, MAX_OUTSTANDING_CHALLENGES,
};
use magicpush_store::{
    from_ms, to_ms, EnrollmentStore, Invitation, InvitationChallenge, InvitationDevice,
    InvitationState, StoreError, StoreFuture, StoredChallenge, StoredDeviceCa,
};
use time::OffsetDateTime;

use crate::rows::{exec, get, query, query_opt};
use crate::PostgresStore;

/// The CA key's sealing column and row names.
const CA_KEY: (&str, &str) = ("device_ca_key", "1");

impl EnrollmentStore for PostgresStore {
    fn add_challenge<'a>(&'a self, challenge: &'a StoredChallenge) -> StoreFuture<'a, ()> {
        let c = challenge.clone();
        self.write(move |conn| Box::pin(async move { insert_challenge(conn, &c).await }))
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
                let at = to_ms(at);
                let Some(row) = query_opt(
                    conn,
                    OP,
                    "SELECT enrollment_id, invitation_id FROM enrollment_challenges
                     WHERE hash = $1 AND used_at IS NULL AND expires_at > $2 FOR UPDATE",
                    &[&hash, &at],
                )
                .await?
                else {
                    return Ok(None);
                };
                let enrollment_id: String = get(&row, 0, OP)?;
                if let Some(invitation) = get::<Option<String>>(&row, 1, OP)? {
                    let counted = exec(
                        conn,
                        OP,
                        "UPDATE enrollment_invitations SET enrolled = enrolled + 1
                         WHERE id = $1 AND withdrawn_at IS NULL AND expires_at > $2
                           AND enrolled < uses",
                        &[&invitation, &at],
                    )
                    .await?;
                    if counted == 0 {
                        return Ok(None);
                    }
                }
                exec(
                    conn,
                    OP,
                    "UPDATE enrollment_challenges SET used_at = $2 WHERE hash = $1",
                    &[&hash, &at],
                )
                .await?;
                Ok(Some(enrollment_id))
            })
        })
    }

    fn prune_challenges(&self, before: OffsetDateTime) -> StoreFuture<'_, u64> {
        self.write(move |conn| {
            Box::pin(async move {
                exec(
                    conn,
                    "prune challenges",
                    "DELETE FROM enrollment_challenges
                     WHERE coalesce(used_at, expires_at) < $1 OR expires_at < $1",
                    &[&to_ms(before)],
                )
                .await
            })
        })
    }

    fn add_invitation<'a>(&'a self, invitation: &'a Invitation) -> StoreFuture<'a, ()> {
        let i = invitation.clone();
        self.write(move |conn| {
            Box::pin(async move {
                exec(
                    conn,
                    "add invitation",
                    "INSERT INTO enrollment_invitations
                         (id, topic, note, uses, enrolled, created_at, expires_at, withdrawn_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                    &[
                        &i.id,
                        &i.topic,
                        &i.note,
                        &i64::from(i.uses),
                        &i64::from(i.enrolled),
                        &to_ms(i.created_at),
                        &to_ms(i.expires_at),
                        &i.withdrawn_at.map(to_ms),
                    ],
                )
                .await
                .map(drop)
            })
        })
    }

    fn invitation<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Option<Invitation>> {
        Box::pin(async move {
            let c = self.reader().await?;
            let sql = format!("{INVITATION_SELECT} WHERE id = $1");
            let row = query_opt(&c, INVITATION_OP, &sql, &[&id]).await?;
            row.map(|r| invitation_row(&r)).transpose()
        })
    }

    fn invitations(&self) -> StoreFuture<'_, Vec<Invitation>> {
        Box::pin(async move {
            let c = self.reader().await?;
            let sql = format!(
                "{INVITATION_SELECT} ORDER BY created_at DESC, id ASC LIMIT {MAX_LISTED_INVITATIONS}"
            );
            let rows = query(&c, INVITATION_OP, &sql, &[]).await?;
            rows.iter().map(invitation_row).collect()
        })
    }

    fn withdraw_invitation<'a>(&'a self, id: &'a str, at: OffsetDateTime) -> StoreFuture<'a, bool> {
        let id = id.to_owned();
        self.write(move |conn| {
            Box::pin(async move {
                exec(
                    conn,
                    "withdraw invitation",
                    "UPDATE enrollment_invitations SET withdrawn_at = coalesce(withdrawn_at, $2)
                     WHERE id = $1",
                    &[&id, &to_ms(at)],
                )
                .await
                .map(|n| n > 0)
            })
        })
    }

    fn invitation_challenge<'a>(
        &'a self,
        challenge: &'a StoredChallenge,
        at: OffsetDateTime,
    ) -> StoreFuture<'a, InvitationChallenge> {
        let c = challenge.clone();
        self.write(move |conn| {
            Box::pin(async move {
                let Some(id) = c.invitation_id.clone() else {
                    return Ok(InvitationChallenge::Unknown);
                };
                let sql = format!("{INVITATION_SELECT} WHERE id = $1 FOR UPDATE");
                let Some(row) = query_opt(conn, INVITATION_OP, &sql, &[&id]).await? else {
                    return Ok(InvitationChallenge::Unknown);
                };
                let invitation = invitation_row(&row)?;
                let state = invitation.state(at);
                if state != InvitationState::Open {
                    return Ok(InvitationChallenge::Closed(state));
                }
                const OP: &str = "count an invitation's challenges";
                let outstanding: i64 = get(
                    &query_opt(
                        conn,
                        OP,
                        "SELECT count(*) FROM enrollment_challenges
                         WHERE invitation_id = $1 AND used_at IS NULL AND expires_at > $2",
                        &[&id, &to_ms(at)],
                    )
                    .await?
                    .ok_or_else(|| StoreError::Corrupt {
                        what: "count(*) gave no row".into(),
                    })?,
                    0,
                    OP,
                )?;
                if outstanding >= i64::from(MAX_OUTSTANDING_CHALLENGES) {
                    return Ok(InvitationChallenge::TooManyOutstanding);
                }
                insert_challenge(conn, &c).await?;
                Ok(InvitationChallenge::Issued(invitation))
            })
        })
    }

    fn record_invitation_device<'a>(
        &'a self,
        invitation_id: &'a str,
        udid: &'a str,
        at: OffsetDateTime,
    ) -> StoreFuture<'a, ()> {
        let (invitation, udid) = (invitation_id.to_owned(), udid.to_owned());
        self.write(move |conn| {
            Box::pin(async move {
                exec(
                    conn,
                    "record an invitation's device",
                    "INSERT INTO enrollment_invitation_devices (invitation_id, udid, enrolled_at)
                     VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                    &[&invitation, &udid, &to_ms(at)],
                )
                .await
                .map(drop)
            })
        })
    }

    fn invitation_devices<'a>(
        &'a self,
        ids: &'a [String],
    ) -> StoreFuture<'a, Vec<InvitationDevice>> {
        Box::pin(async move {
            let c = self.reader().await?;
            let rows = query(
                &c,
                DEVICES_OP,
                "SELECT d.invitation_id, d.udid, d.enrolled_at
                 FROM unnest($1::text[]) AS i(id)
                 CROSS JOIN LATERAL (
                     SELECT invitation_id, udid, enrolled_at FROM enrollment_invitation_devices
                     WHERE invitation_id = i.id ORDER BY enrolled_at, udid LIMIT $2) AS d",
                &[&ids, &(MAX_LISTED_DEVICES as i64)],
            )
            .await?;
            rows.iter().map(device_row).collect()
        })
    }

    fn device_invitations<'a>(
        &'a self,
        udids: &'a [String],
    ) -> StoreFuture<'a, Vec<InvitationDevice>> {
        Box::pin(async move {
            let c = self.reader().await?;
            let rows = query(
                &c,
                DEVICES_OP,
                "SELECT invitation_id, udid, enrolled_at FROM enrollment_invitation_devices
                 WHERE udid = ANY($1)",
                &[&udids],
            )
            .await?;
            rows.iter().map(device_row).collect()
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

const INVITATION_OP: &str = "read invitation";
const DEVICES_OP: &str = "read an invitation's devices";
const INVITATION_SELECT: &str = "SELECT id, topic, note, uses, enrolled, created_at, expires_at,
    withdrawn_at FROM enrollment_invitations";

fn count(row: &tokio_postgres::Row, i: usize) -> Result<u32, StoreError> {
    let n: i64 = get(row, i, INVITATION_OP)?;
    u32::try_from(n).map_err(|_| StoreError::Corrupt {
        what: format!("enrollment_invitations: count {n} out of range"),
    })
}

fn invitation_row(r: &tokio_postgres::Row) -> Result<Invitation, StoreError> {
    Ok(Invitation {
        id: get(r, 0, INVITATION_OP)?,
        topic: get(r, 1, INVITATION_OP)?,
        note: get(r, 2, INVITATION_OP)?,
        uses: count(r, 3)?,
        enrolled: count(r, 4)?,
        created_at: from_ms(get(r, 5, INVITATION_OP)?),
        expires_at: from_ms(get(r, 6, INVITATION_OP)?),
        withdrawn_at: get::<Option<i64>>(r, 7, INVITATION_OP)?.map(from_ms),
    })
}

fn device_row(r: &tokio_postgres::Row) -> Result<InvitationDevice, StoreError> {
    Ok(InvitationDevice {
        invitation_id: get(r, 0, DEVICES_OP)?,
        udid: get(r, 1, DEVICES_OP)?,
        at: from_ms(get(r, 2, DEVICES_OP)?),
    })
}

async fn insert_challenge(
    conn: &deadpool_postgres::ClientWrapper,
    c: &StoredChallenge,
) -> Result<(), StoreError> {
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
}
