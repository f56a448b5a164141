//! Enrollment invitations: a URL an operator hands to a device's user, which answers an
//! enrollment profile (SCEP payload with a fresh one-time challenge, MDM payload naming the
//! tenant's topic) while devices may still enroll through it.
//!
//! - The invitation's id is the URL's secret (160 random bits). The challenges handed out
//!   with its profiles belong to it: each admits one device, only while the invitation is
//!   open (not withdrawn, not expired, uses left), checked atomically where it is used
//!   ([`magicpush_store::EnrollmentStore::consume_challenge`]). A profile fetched twice gets
//!   two challenges, but a one-use invitation still admits one device.
//! - The certificate the built-in CA issues with such a challenge carries the invitation's
//!   id as its enrollment id (subject OU). The Authenticate that follows is tied to it: a
//!   topic other than the invitation's is refused (403), and the device is recorded as
//!   enrolled through the invitation (`GET /v1/enrollments`, and `invitation` in the device
//!   list).

use std::sync::Arc;
use std::time::Duration;

use magicpush_mdm::{Checkin, Message};
use magicpush_store::enrollment::{new_challenge, new_invitation_id};
use magicpush_store::{Invitation, InvitationChallenge, InvitationState, StoredChallenge};
use serde::Serialize;
use time::OffsetDateTime;

use super::{Service, ServiceError};
use crate::identity::{DeviceIdentity, Refusal};
use crate::profile::EnrollmentProfiles;

/// An invitation's default lifetime and its bounds.
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(24 * 3600);
const MIN_LIFETIME: Duration = Duration::from_secs(60);
const MAX_LIFETIME: Duration = Duration::from_secs(30 * 24 * 3600);
/// The most devices one invitation may enroll.
pub const MAX_USES: u32 = 100_000;
/// The longest note kept.
pub const MAX_NOTE: usize = 200;

/// `POST /v1/enrollments`, parsed.
#[derive(Debug, Clone, Default)]
pub struct InvitationRequest {
    /// The tenant; `None`: the only one.
    pub topic: Option<String>,
    /// Lifetime; `None`: [`DEFAULT_LIFETIME`].
    pub expires_in: Option<Duration>,
    /// Devices that may enroll; `None`: 1.
    pub uses: Option<u32>,
    /// The operator's note.
    pub note: Option<String>,
}

/// An invitation as the admin API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct InvitationView {
    /// Its id (the secret in its URL).
    pub id: String,
    /// `{public URL}/enroll/{id}`: what a device opens.
    pub url: String,
    /// The tenant its profile names.
    pub topic: Option<String>,
    /// The operator's note.
    pub note: Option<String>,
    /// Devices that may enroll through it.
    pub uses: u32,
    /// Devices that may still enroll.
    pub uses_left: u32,
    /// Devices that got their certificate through it.
    pub enrolled: u32,
    /// `open`, `used_up`, `expired` or `withdrawn`.
    pub state: &'static str,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub expires_at: String,
    /// RFC 3339, when withdrawn.
    pub withdrawn_at: Option<String>,
    /// The devices that authenticated with a certificate from it (at most
    /// [`magicpush_store::enrollment::MAX_LISTED_DEVICES`]).
    pub devices: Vec<InvitedDevice>,
}

/// A device enrolled through an invitation.
#[derive(Debug, Clone, Serialize)]
pub struct InvitedDevice {
    /// The device.
    pub udid: String,
    /// Its Authenticate (RFC 3339).
    pub enrolled_at: String,
}

/// Why `GET /enroll/{id}` answers no profile.
#[derive(Debug, thiserror::Error)]
pub enum ProfileRefusal {
    /// No invitation has this id (404).
    #[error("no enrollment invitation at this address")]
    Unknown,
    /// The invitation hands out nothing any more (410).
    #[error("this enrollment invitation is {}: ask your administrator for a new one", closed_word(*.0))]
    Closed(InvitationState),
    /// Its tenant's push certificate was removed since: a device could not check in (410).
    #[error("this enrollment invitation's tenant ({0}) is no longer served: ask your administrator for a new one")]
    TenantGone(String),
    /// Too many of its profiles wait unused (429).
    #[error(
        "too many profiles of this invitation wait to be installed: install one, or retry later"
    )]
    TooMany,
    /// The store or the profile signer failed (503).
    #[error("{0}")]
    Unavailable(String),
}

fn closed_word(state: InvitationState) -> &'static str {
    match state {
        InvitationState::Open => "open",
        InvitationState::UsedUp => "used up",
        InvitationState::Expired => "expired",
        InvitationState::Withdrawn => "withdrawn",
    }
}

/// Whether `id` has the shape of an invitation id (lowercase hex of 160 bits): anything else
/// is unknown without asking the store.
pub fn is_invitation_id(id: &str) -> bool {
    id.len() == 40
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// An enrollment id as logs show it: an invitation's id (a URL's secret) cut to its first 8
/// characters, any other whole.
pub fn loggable_enrollment_id(id: &str) -> String {
    if is_invitation_id(id) {
        format!("{}…", &id[..8])
    } else {
        id.to_owned()
    }
}

impl Service {
    /// What enrollment needs beyond the device CA: the public URL and the profile signer.
    pub fn enrollment_profiles(&self) -> Option<&Arc<EnrollmentProfiles>> {
        self.profiles.as_ref()
    }

    fn enrollment_ready(&self) -> Result<&Arc<EnrollmentProfiles>, ServiceError> {
        if self.device_ca().is_none() {
            return Err(ServiceError::Conflict(
                "this server has no built-in device CA (it was started with --device-ca \
                 only): enrollment invitations need it"
                    .into(),
            ));
        }
        self.profiles.as_ref().ok_or_else(|| {
            ServiceError::Conflict(
                "enrollment invitations need the server's public address: start serve with \
                 --public-url https://<the address devices reach>"
                    .into(),
            )
        })
    }

    /// Creates an invitation (`POST /v1/enrollments`).
    pub async fn create_invitation(
        &self,
        request: InvitationRequest,
    ) -> Result<InvitationView, ServiceError> {
        let profiles = self.enrollment_ready()?;
        let tenant = self.tenant(request.topic.as_deref()).map_err(|e| match e {
            ServiceError::NotFound(_) => ServiceError::Conflict(
                "no push certificate is registered: the profile names its topic, so register \
                 one first (PUT /v1/pushcert)"
                    .into(),
            ),
            other => other,
        })?;
        let lifetime = request.expires_in.unwrap_or(DEFAULT_LIFETIME);
        if !(MIN_LIFETIME..=MAX_LIFETIME).contains(&lifetime) {
            return Err(ServiceError::BadRequest(
                "expires_in must be 1 minute to 30 days".into(),
            ));
        }
        let uses = request.uses.unwrap_or(1);
        if !(1..=MAX_USES).contains(&uses) {
            return Err(ServiceError::BadRequest(format!(
                "uses must be 1 to {MAX_USES}"
            )));
        }
        let note = match request.note.map(|n| n.trim().to_owned()) {
            Some(n) if n.chars().count() > MAX_NOTE => {
                return Err(ServiceError::BadRequest(format!(
                    "note must be at most {MAX_NOTE} characters"
                )))
            }
            Some(n) if n.chars().any(char::is_control) => {
                return Err(ServiceError::BadRequest(
                    "note must not hold control characters".into(),
                ))
            }
            Some(n) if n.is_empty() => None,
            other => other,
        };
        let now = magicpush_store::truncate_ms(Self::now());
        let invitation = Invitation {
            id: new_invitation_id(),
            topic: Some(tenant.info().topic().to_owned()),
            note,
            uses,
            enrolled: 0,
            created_at: now,
            expires_at: now + lifetime,
            withdrawn_at: None,
        };
        self.store.add_invitation(&invitation).await?;
        tracing::info!(
            topic = invitation.topic.as_deref().unwrap_or(""),
            uses,
            expires_at = %magicpush_store::rfc3339(invitation.expires_at),
            "enrollment invitation created"
        );
        Ok(view(profiles, &invitation, Vec::new(), now))
    }

    /// Every invitation with its devices, newest first (`GET /v1/enrollments`).
    pub async fn invitations(&self) -> Result<Vec<InvitationView>, ServiceError> {
        let profiles = self.enrollment_ready()?;
        let all = self.store.invitations().await?;
        let ids: Vec<String> = all.iter().map(|i| i.id.clone()).collect();
        let mut devices = self.store.invitation_devices(&ids).await?;
        let now = Self::now();
        Ok(all
            .iter()
            .map(|i| {
                let (mine, rest): (Vec<_>, Vec<_>) =
                    devices.drain(..).partition(|d| d.invitation_id == i.id);
                devices = rest;
                let mine = mine
                    .into_iter()
                    .map(|d| InvitedDevice {
                        udid: d.udid,
                        enrolled_at: magicpush_store::rfc3339(d.at),
                    })
                    .collect();
                view(profiles, i, mine, now)
            })
            .collect())
    }

    /// Withdraws invitation `id` (`DELETE /v1/enrollments/{id}`): its URL answers 410 and
    /// its unused challenges are refused from now on.
    pub async fn withdraw_invitation(&self, id: &str) -> Result<InvitationView, ServiceError> {
        let profiles = self.enrollment_ready()?;
        let unknown = || ServiceError::NotFound(format!("no enrollment invitation {id}"));
        if !is_invitation_id(id) {
            return Err(unknown());
        }
        let now = Self::now();
        if !self.store.withdraw_invitation(id, now).await? {
            return Err(unknown());
        }
        let invitation = self.store.invitation(id).await?.ok_or_else(unknown)?;
        tracing::info!(
            topic = invitation.topic.as_deref().unwrap_or(""),
            enrolled = invitation.enrolled,
            "enrollment invitation withdrawn"
        );
        let devices = self
            .store
            .invitation_devices(&[id.to_owned()])
            .await?
            .into_iter()
            .map(|d| InvitedDevice {
                udid: d.udid,
                enrolled_at: magicpush_store::rfc3339(d.at),
            })
            .collect();
        Ok(view(profiles, &invitation, devices, now))
    }

    /// The enrollment profile of invitation `id` with a fresh challenge (`GET
    /// /enroll/{id}`), signed when the server has a signer.
    pub async fn enrollment_profile(&self, id: &str) -> Result<Vec<u8>, ProfileRefusal> {
        let (Some(profiles), Some(ca)) = (self.profiles.as_ref(), self.device_ca()) else {
            return Err(ProfileRefusal::Unknown);
        };
        if !is_invitation_id(id) {
            return Err(ProfileRefusal::Unknown);
        }
        let now = magicpush_store::truncate_ms(Self::now());
        let (challenge, hash) = new_challenge();
        let unavailable =
            |e: magicpush_store::StoreError| ProfileRefusal::Unavailable(e.to_string());
        // The challenge lives as long as its invitation: the checks that matter (uses left,
        // not withdrawn) are made when it is used.
        let Some(invitation) = self.store.invitation(id).await.map_err(unavailable)? else {
            return Err(ProfileRefusal::Unknown);
        };
        let topic = invitation.topic.clone().unwrap_or_default();
        // No challenge for a tenant that is gone: its devices' check-ins would be refused.
        let tenant = self
            .tenant(Some(&topic))
            .map_err(|_| ProfileRefusal::TenantGone(topic.clone()))?;
        let stored = StoredChallenge {
            hash,
            enrollment_id: id.to_owned(),
            invitation_id: Some(id.to_owned()),
            created_at: now,
            expires_at: invitation.expires_at,
        };
        match self
            .store
            .invitation_challenge(&stored, now)
            .await
            .map_err(unavailable)?
        {
            InvitationChallenge::Issued(_) => {}
            InvitationChallenge::Unknown => return Err(ProfileRefusal::Unknown),
            InvitationChallenge::Closed(state) => return Err(ProfileRefusal::Closed(state)),
            InvitationChallenge::TooManyOutstanding => return Err(ProfileRefusal::TooMany),
        }
        let name = super::tenants::read(&tenant.name).clone();
        profiles
            .profile(&topic, name.as_deref(), &challenge, ca)
            .map_err(|e| ProfileRefusal::Unavailable(e.to_string()))
    }

    /// At an Authenticate with `identity`: the invitation its certificate came through, if
    /// any, with the device's UDID to record; a topic other than the invitation's is refused.
    pub(crate) async fn invitation_of(
        &self,
        message: &Message,
        identity: &DeviceIdentity,
    ) -> Result<Option<(String, String)>, ServiceError> {
        let Message::Checkin(Checkin::Authenticate(auth)) = message else {
            return Ok(None);
        };
        let Some(id) = identity.enrollment_id.as_deref() else {
            return Ok(None);
        };
        if self.device_ca().is_none() || !is_invitation_id(id) {
            return Ok(None);
        }
        let Some(invitation) = self.store.invitation(id).await? else {
            return Ok(None);
        };
        if let Some(invited) = invitation.topic.as_deref() {
            if invited != auth.topic {
                return Err(ServiceError::Identity {
                    udid: Some(auth.udid.clone()),
                    refusal: Refusal::OtherTenant {
                        subject: identity.subject.clone(),
                        invited: invited.to_owned(),
                        topic: auth.topic.clone(),
                    },
                });
            }
        }
        Ok(Some((invitation.id, auth.udid.clone())))
    }
}

fn view(
    profiles: &EnrollmentProfiles,
    i: &Invitation,
    devices: Vec<InvitedDevice>,
    now: OffsetDateTime,
) -> InvitationView {
    InvitationView {
        id: i.id.clone(),
        url: profiles.invitation_url(&i.id),
        topic: i.topic.clone(),
        note: i.note.clone(),
        uses: i.uses,
        uses_left: i.uses_left(),
        enrolled: i.enrolled,
        state: i.state(now).as_str(),
        created_at: magicpush_store::rfc3339(i.created_at),
        expires_at: magicpush_store::rfc3339(i.expires_at),
        withdrawn_at: i.withdrawn_at.map(magicpush_store::rfc3339),
        devices,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invitation_ids_are_checked_by_shape() {
        let id = new_invitation_id();
        assert!(is_invitation_id(&id), "{id}");
        assert!(!is_invitation_id(&id.to_uppercase()));
        assert!(!is_invitation_id(&id[1..]));
        assert!(!is_invitation_id("../../etc/passwd"));
        assert!(!is_invitation_id(""));
        assert_eq!(loggable_enrollment_id(&id), format!("{}…", &id[..8]));
        assert_eq!(loggable_enrollment_id("enr-1"), "enr-1");
    }

    #[test]
    fn refusals_explain_themselves() {
        let gone = ProfileRefusal::Closed(InvitationState::UsedUp).to_string();
        assert!(gone.contains("used up"), "{gone}");
        assert!(ProfileRefusal::Unknown
            .to_string()
            .contains("no enrollment"));
    }
}
