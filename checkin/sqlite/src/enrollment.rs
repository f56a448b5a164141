//! [`EnrollmentStore`] on SQLite (schema versions 9 and 10): challenges by hash, revoked
//! serials, a device CA row whose key is sealed when a secrets key is configured, and
//! enrollment invitations with the devices enrolled through them. Every write runs on the
//! one writer, so a check and the write it guards cannot interleave with another's.

use magicpush_mdm::Secret;
use rusqlite::{params, OptionalExtension};
use time::OffsetDateTime;

use magicpush_store::enrollment::{
    MAX_LISTED_DEVICES, MAX_LISTED_INVITATIONS, MAX_OUTSTANDING_CHALLENGES,
};
use magicpush_store::{
    from_ms, to_ms, EnrollmentStore, Invitation, InvitationChallenge, InvitationDevice,
    InvitationState, StoreFuture, StoredChallenge, StoredDeviceCa,
};

use crate::{db_err, SqliteStore};

/// The CA key's sealing column and row names.
pub(crate) const CA_KEY: (&str, &str) = ("device_ca_key", "1");

impl EnrollmentStore for SqliteStore {
    fn add_challenge<'a>(&'a self, challenge: &'a StoredChallenge) -> StoreFuture<'a, ()> {
        let c = challenge.clone();
        self.write(move |conn| insert_challenge(conn, &c))
    }

    fn consume_challenge<'a>(
        &'a self,
        hash: &'a [u8; 32],
        at: OffsetDateTime,
    ) -> StoreFuture<'a, Option<String>> {
        let hash = *hash;
        self.write(move |conn| {
            let used: Option<(String, Option<String>)> = conn
                .query_row(
                    "UPDATE enrollment_challenges SET used_at = ?2
                     WHERE hash = ?1 AND used_at IS NULL AND expires_at > ?2
                       AND (invitation_id IS NULL OR invitation_id IN (
                           SELECT id FROM enrollment_invitations
                           WHERE withdrawn_at IS NULL AND expires_at > ?2
                             AND enrolled < uses))
                     RETURNING enrollment_id, invitation_id",
                    params![&hash[..], to_ms(at)],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()
                .map_err(db_err("consume challenge"))?;
            if let Some((_, Some(invitation))) = &used {
                conn.execute(
                    "UPDATE enrollment_invitations SET enrolled = enrolled + 1 WHERE id = ?1",
                    params![invitation],
                )
                .map_err(db_err("count an invitation's enrollment"))?;
            }
            Ok(used.map(|u| u.0))
        })
    }

    fn prune_challenges(&self, before: OffsetDateTime) -> StoreFuture<'_, u64> {
        self.write(move |conn| {
            conn.execute(
                "DELETE FROM enrollment_challenges
                 WHERE coalesce(used_at, expires_at) < ?1 OR expires_at < ?1",
                params![to_ms(before)],
            )
            .map_err(db_err("prune challenges"))
            .map(|n| n as u64)
        })
    }

    fn add_invitation<'a>(&'a self, invitation: &'a Invitation) -> StoreFuture<'a, ()> {
        let i = invitation.clone();
        self.write(move |conn| {
            conn.execute(
                "INSERT INTO enrollment_invitations
                     (id, topic, note, uses, enrolled, created_at, expires_at, withdrawn_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    i.id,
                    i.topic,
                    i.note,
                    i.uses,
                    i.enrolled,
                    to_ms(i.created_at),
                    to_ms(i.expires_at),
                    i.withdrawn_at.map(to_ms)
                ],
            )
            .map_err(db_err("add invitation"))
            .map(drop)
        })
    }

    fn invitation<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Option<Invitation>> {
        let id = id.to_owned();
        self.read(move |conn| {
            conn.query_row(
                &format!("{INVITATION_SELECT} WHERE id = ?1"),
                params![id],
                invitation_row,
            )
            .optional()
            .map_err(db_err("read invitation"))
        })
    }

    fn invitations(&self) -> StoreFuture<'_, Vec<Invitation>> {
        self.read(move |conn| {
            let mut stmt = conn
                .prepare(&format!(
                    "{INVITATION_SELECT} ORDER BY created_at DESC, id ASC LIMIT {MAX_LISTED_INVITATIONS}"
                ))
                .map_err(db_err("list invitations"))?;
            let rows = stmt
                .query_map([], invitation_row)
                .map_err(db_err("list invitations"))?;
            rows.collect::<Result<_, _>>()
                .map_err(db_err("list invitations"))
        })
    }

    fn withdraw_invitation<'a>(&'a self, id: &'a str, at: OffsetDateTime) -> StoreFuture<'a, bool> {
        let id = id.to_owned();
        self.write(move |conn| {
            conn.execute(
                "UPDATE enrollment_invitations SET withdrawn_at = coalesce(withdrawn_at, ?2)
                 WHERE id = ?1",
                params![id, to_ms(at)],
            )
            .map_err(db_err("withdraw invitation"))
            .map(|n| n > 0)
        })
    }

    fn invitation_challenge<'a>(
        &'a self,
        challenge: &'a StoredChallenge,
        at: OffsetDateTime,
    ) -> StoreFuture<'a, InvitationChallenge> {
        let c = challenge.clone();
        self.write(move |conn| {
            let Some(id) = c.invitation_id.clone() else {
                return Ok(InvitationChallenge::Unknown);
            };
            let invitation = conn
                .query_row(
                    &format!("{INVITATION_SELECT} WHERE id = ?1"),
                    params![id],
                    invitation_row,
                )
                .optional()
                .map_err(db_err("read invitation"))?;
            let Some(invitation) = invitation else {
                return Ok(InvitationChallenge::Unknown);
            };
            let state = invitation.state(at);
            if state != InvitationState::Open {
                return Ok(InvitationChallenge::Closed(state));
            }
            let outstanding: i64 = conn
                .query_row(
                    "SELECT count(*) FROM enrollment_challenges
                     WHERE invitation_id = ?1 AND used_at IS NULL AND expires_at > ?2",
                    params![id, to_ms(at)],
                    |r| r.get(0),
                )
                .map_err(db_err("count an invitation's challenges"))?;
            if outstanding >= i64::from(MAX_OUTSTANDING_CHALLENGES) {
                return Ok(InvitationChallenge::TooManyOutstanding);
            }
            insert_challenge(conn, &c)?;
            Ok(InvitationChallenge::Issued(invitation))
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
            conn.execute(
                "INSERT INTO enrollment_invitation_devices (invitation_id, udid, enrolled_at)
                 VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
                params![invitation, udid, to_ms(at)],
            )
            .map_err(db_err("record an invitation's device"))
            .map(drop)
        })
    }

    fn invitation_devices<'a>(
        &'a self,
        ids: &'a [String],
    ) -> StoreFuture<'a, Vec<InvitationDevice>> {
        let ids = ids.to_vec();
        self.read(move |conn| {
            let mut stmt = conn
                .prepare(
                    "SELECT invitation_id, udid, enrolled_at FROM enrollment_invitation_devices
                     WHERE invitation_id = ?1 ORDER BY enrolled_at, udid LIMIT ?2",
                )
                .map_err(db_err("list an invitation's devices"))?;
            let mut out = Vec::new();
            for id in &ids {
                let rows = stmt
                    .query_map(params![id, MAX_LISTED_DEVICES as i64], device_row)
                    .map_err(db_err("list an invitation's devices"))?;
                for row in rows {
                    out.push(row.map_err(db_err("list an invitation's devices"))?);
                }
            }
            Ok(out)
        })
    }

    fn device_invitations<'a>(
        &'a self,
        udids: &'a [String],
    ) -> StoreFuture<'a, Vec<InvitationDevice>> {
        let udids = udids.to_vec();
        self.read(move |conn| {
            let mut stmt = conn
                .prepare(
                    "SELECT invitation_id, udid, enrolled_at FROM enrollment_invitation_devices
                     WHERE udid = ?1",
                )
                .map_err(db_err("read devices' invitations"))?;
            let mut out = Vec::new();
            for udid in &udids {
                let rows = stmt
                    .query_map(params![udid], device_row)
                    .map_err(db_err("read devices' invitations"))?;
                for row in rows {
                    out.push(row.map_err(db_err("read devices' invitations"))?);
                }
            }
            Ok(out)
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

const INVITATION_SELECT: &str = "SELECT id, topic, note, uses, enrolled, created_at, expires_at,
    withdrawn_at FROM enrollment_invitations";

fn invitation_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Invitation> {
    Ok(Invitation {
        id: r.get(0)?,
        topic: r.get(1)?,
        note: r.get(2)?,
        uses: r.get(3)?,
        enrolled: r.get(4)?,
        created_at: from_ms(r.get(5)?),
        expires_at: from_ms(r.get(6)?),
        withdrawn_at: r.get::<_, Option<i64>>(7)?.map(from_ms),
    })
}

fn device_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<InvitationDevice> {
    Ok(InvitationDevice {
        invitation_id: r.get(0)?,
        udid: r.get(1)?,
        at: from_ms(r.get(2)?),
    })
}

fn insert_challenge(
    conn: &rusqlite::Connection,
    c: &StoredChallenge,
) -> Result<(), magicpush_store::StoreError> {
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
}
