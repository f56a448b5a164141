//! `/v1/enrollments`: enrollment invitations (their URLs answer profiles at `/enroll/{id}`,
//! see [`crate::http::enroll`]) and bare one-time SCEP challenges.
//!
//! | route | request | answer |
//! |---|---|---|
//! | `POST /v1/enrollments` | `{"topic"?, "expires_in"?: "24h", "uses"?: 1, "note"?}` | 201 `{"id", "url", "expires_at", "uses_left", "topic", "note", "uses", "enrolled", "state", "created_at", "withdrawn_at", "devices"}`; 400 bad values (1 minute to 30 days; 1 to 100,000 uses; a note of at most 200 characters); 404 unknown topic; 409 without `--public-url`, the built-in CA or a push certificate |
//! | `GET /v1/enrollments` | | `{"enrollments": [as above, the newest 1,000 first, each with "devices": [{"udid", "enrolled_at"}], 1,000 at most]}` |
//! | `DELETE /v1/enrollments/{id}` | | the invitation, withdrawn: its URL answers 410 and its profiles' challenges are refused; 404 if unknown |
//! | `POST /v1/enrollments/challenge` | `{"enrollment_id"?, "expires_in"?: "1h"}` or nothing | 201 `{"challenge", "enrollment_id", "expires_at"}`: a one-time SCEP challenge outside any invitation |

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{decoded, parse_json, Admin, Limited};
use crate::http::error::ApiError;
use crate::http::openapi::ErrorBody;
use crate::service::enrollment::{InvitationRequest, InvitationView};

/// `POST /v1/enrollments`'s body.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct InvitationBody {
    /// The tenant whose topic the profile names; left out: the only tenant.
    topic: Option<String>,
    /// How long the URL hands out profiles, e.g. `24h` (1 minute to 30 days; default 24 hours).
    expires_in: Option<String>,
    /// How many devices may enroll through it (1 to 100,000; default 1).
    uses: Option<u32>,
    /// A note for the operator (at most 200 characters).
    note: Option<String>,
}

/// A device enrolled through an invitation.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)] // The schema of `InvitedDevice`, which is what is serialized.
pub(super) struct InvitedDeviceDoc {
    udid: String,
    /// Its Authenticate (RFC 3339).
    enrolled_at: String,
}

/// An enrollment invitation.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)] // The schema of `InvitationView`, which is what is serialized.
pub(super) struct Invitation {
    /// The invitation's id: the secret in its URL.
    id: String,
    /// What a device opens: `{--public-url}/enroll/{id}`.
    url: String,
    /// The tenant's topic the profile names.
    topic: Option<String>,
    note: Option<String>,
    /// Devices that may enroll through it.
    uses: u32,
    /// Devices that may still enroll.
    uses_left: u32,
    /// Devices that got their certificate through it.
    enrolled: u32,
    /// `open`, `used_up`, `expired` or `withdrawn`.
    state: String,
    created_at: String,
    expires_at: String,
    withdrawn_at: Option<String>,
    /// The devices that authenticated with a certificate from it.
    devices: Vec<InvitedDeviceDoc>,
}

/// `GET /v1/enrollments`.
#[derive(Serialize, ToSchema)]
pub(super) struct InvitationList {
    #[schema(value_type = Vec<Invitation>)]
    enrollments: Vec<InvitationView>,
}

#[utoipa::path(
    post,
    path = "/v1/enrollments",
    tag = "admin",
    summary = "Create an enrollment invitation",
    description = "A URL (`url`, its `id` the secret) that answers an enrollment profile with a fresh one-time SCEP challenge for each fetch, while devices may still enroll through it (`uses`). Each certificate issued through it carries its id; the devices that then authenticate are listed with it.",
    request_body(content = Option<InvitationBody>, description = "The tenant, lifetime, uses and note; left out: the only tenant, 24 hours, one device"),
    responses(
        (status = 201, description = "The invitation", body = Invitation),
        (status = 400, description = "A malformed body or value", body = ErrorBody),
        (status = 404, description = "No tenant has the topic", body = ErrorBody),
        (status = 409, description = "No --public-url, no built-in device CA or no push certificate", body = ErrorBody),
    )
)]
pub(super) async fn create(
    State(admin): State<Admin>,
    Limited(bytes): Limited,
) -> Result<impl IntoResponse, ApiError> {
    let body: InvitationBody = if bytes.trim_ascii().is_empty() {
        InvitationBody::default()
    } else {
        parse_json(&bytes)?
    };
    let expires_in = body
        .expires_in
        .as_deref()
        .map(crate::config::parse_duration)
        .transpose()
        .map_err(|e| ApiError::bad_request(format!("expires_in: {e}")))?;
    let view = admin
        .service
        .create_invitation(InvitationRequest {
            topic: body.topic,
            expires_in,
            uses: body.uses,
            note: body.note,
        })
        .await?;
    Ok((StatusCode::CREATED, Json(view)))
}

#[utoipa::path(
    get,
    path = "/v1/enrollments",
    tag = "admin",
    summary = "Enrollment invitations with their devices",
    responses(
        (status = 200, description = "The newest 1,000 invitations, newest first", body = InvitationList),
        (status = 409, description = "No --public-url or no built-in device CA", body = ErrorBody),
    )
)]
pub(super) async fn list(State(admin): State<Admin>) -> Result<Json<InvitationList>, ApiError> {
    Ok(Json(InvitationList {
        enrollments: admin.service.invitations().await?,
    }))
}

#[utoipa::path(
    delete,
    path = "/v1/enrollments/{id}",
    tag = "admin",
    summary = "Withdraw an enrollment invitation",
    params(("id" = String, Path, description = "The invitation's id")),
    responses(
        (status = 200, description = "The invitation, withdrawn", body = Invitation),
        (status = 400, description = "The id is not UTF-8 once percent-decoded", body = ErrorBody),
        (status = 404, description = "No such invitation", body = ErrorBody),
        (status = 409, description = "No --public-url or no built-in device CA", body = ErrorBody),
    )
)]
pub(super) async fn withdraw(
    State(admin): State<Admin>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<InvitationView>, ApiError> {
    let id = decoded(id, "invitation id")?;
    Ok(Json(admin.service.withdraw_invitation(&id).await?))
}

/// `POST /v1/enrollments/challenge`'s body.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct ChallengeRequest {
    /// The enrollment id the issued certificate carries (1–64 characters: letters, digits,
    /// `-`, `_`, `.`); left out: a random one.
    enrollment_id: Option<String>,
    /// How long the challenge may be used, e.g. `1h` (1 minute to 30 days; default 1 hour).
    expires_in: Option<String>,
}

/// A one-time SCEP challenge.
#[derive(Debug, Serialize, ToSchema)]
struct IssuedChallenge {
    /// The challenge, for the CSR's challengePassword (shown once: only its hash is kept).
    challenge: String,
    /// The enrollment id the issued certificate carries.
    enrollment_id: String,
    /// After this instant the challenge is refused (RFC 3339).
    expires_at: String,
}

/// A challenge's default and bounds.
const CHALLENGE_TTL: std::time::Duration = std::time::Duration::from_secs(3600);
const CHALLENGE_TTL_MIN: std::time::Duration = std::time::Duration::from_secs(60);
const CHALLENGE_TTL_MAX: std::time::Duration = std::time::Duration::from_secs(30 * 24 * 3600);

#[utoipa::path(
    post,
    path = "/v1/enrollments/challenge",
    tag = "admin",
    summary = "Create a one-time SCEP challenge",
    description = "A challenge for `/scep` (the built-in device CA): a device enrolls once with it (the CSR's challengePassword), and its certificate carries the enrollment id.",
    request_body(content = Option<ChallengeRequest>, description = "The enrollment id and lifetime; left out: a random id, one hour"),
    responses(
        (status = 201, description = "The challenge (shown once)", body = IssuedChallenge),
        (status = 400, description = "A malformed body, enrollment id or duration", body = ErrorBody),
        (status = 409, description = "This server has no built-in device CA", body = ErrorBody),
    )
)]
pub(super) async fn create_challenge(
    State(admin): State<Admin>,
    Limited(bytes): Limited,
) -> Result<impl IntoResponse, ApiError> {
    let request: ChallengeRequest = if bytes.trim_ascii().is_empty() {
        ChallengeRequest::default()
    } else {
        parse_json(&bytes)?
    };
    if admin.service.device_ca().is_none() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "this server has no built-in device CA: /scep is off",
        ));
    }
    let enrollment_id = match request.enrollment_id {
        Some(id) => {
            let ok = !id.is_empty()
                && id.len() <= magicpush_scep::MAX_ENROLLMENT_ID
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
            if !ok {
                return Err(ApiError::bad_request(format!(
                    "enrollment_id {id:?} must be 1 to {} characters: letters, digits, '-', '_', '.'",
                    magicpush_scep::MAX_ENROLLMENT_ID
                )));
            }
            id
        }
        None => {
            let (random, _) = magicpush_store::enrollment::new_challenge();
            format!("enr-{}", &random[..16])
        }
    };
    let ttl = match request.expires_in.as_deref() {
        Some(text) => crate::config::parse_duration(text)
            .map_err(|e| ApiError::bad_request(format!("expires_in: {e}")))?,
        None => CHALLENGE_TTL,
    };
    if !(CHALLENGE_TTL_MIN..=CHALLENGE_TTL_MAX).contains(&ttl) {
        return Err(ApiError::bad_request(
            "expires_in must be 1 minute to 30 days",
        ));
    }
    let (challenge, hash) = magicpush_store::enrollment::new_challenge();
    let now = magicpush_store::truncate_ms(time::OffsetDateTime::now_utc());
    let expires_at = now + ttl;
    admin
        .service
        .store()
        .add_challenge(&magicpush_store::StoredChallenge {
            hash,
            enrollment_id: enrollment_id.clone(),
            invitation_id: None,
            created_at: now,
            expires_at,
        })
        .await
        .map_err(crate::service::ServiceError::from)?;
    tracing::info!(%enrollment_id, expires_at = %magicpush_store::rfc3339(expires_at), "SCEP challenge created");
    Ok((
        StatusCode::CREATED,
        Json(IssuedChallenge {
            challenge,
            enrollment_id,
            expires_at: magicpush_store::rfc3339(expires_at),
        }),
    ))
}
