//! Errors at the HTTP edge: every failure becomes a status and a message in one place.

use http::StatusCode;

/// A failed request: the status and what the client should read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status}: {message}")]
pub struct ApiError {
    /// The HTTP status to answer with.
    pub status: StatusCode,
    /// A human-readable reason.
    pub message: String,
    /// Seconds for a `Retry-After` header (an overloaded store).
    pub retry_after: Option<u32>,
}

impl ApiError {
    /// An error with this status and message.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            retry_after: None,
        }
    }

    /// 400.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// 401 — admin API only; device endpoints never answer 401.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, message)
    }

    /// 404.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    /// 404 "admin API disabled".
    pub fn admin_disabled() -> Self {
        Self::not_found("admin API disabled: start the server with --api-key (MAGICPUSH_API_KEY)")
    }

    /// 500 with the cause (server-side failures such as the store).
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }

    /// 503.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, message)
    }
}

impl From<crate::service::ServiceError> for ApiError {
    /// The one place service errors become statuses. Device endpoints never see 401.
    fn from(err: crate::service::ServiceError) -> Self {
        use crate::service::ServiceError as E;
        use crate::store::StoreError;
        let status = match &err {
            E::Decode(_) | E::BadRequest(_) | E::UnknownDevice { .. } => StatusCode::BAD_REQUEST,
            // Apple: a 410 to UserAuthenticate tells the device not to set up the user channel.
            E::Unsupported { message_type } if message_type == "UserAuthenticate" => {
                StatusCode::GONE
            }
            E::Unsupported { .. } => StatusCode::BAD_REQUEST,
            E::Identity { .. } => StatusCode::FORBIDDEN,
            E::NotFound(_) => StatusCode::NOT_FOUND,
            E::Conflict(_) => StatusCode::CONFLICT,
            E::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            E::Store(StoreError::Closed | StoreError::Overloaded { .. }) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            E::Store(_) | E::Persist(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let overloaded = matches!(&err, E::Store(StoreError::Overloaded { .. }));
        if status.is_server_error() && !overloaded {
            tracing::error!("request failed: {err}");
        }
        let mut api = ApiError::new(status, err.to_string());
        if overloaded {
            api.retry_after = Some(1);
        }
        api
    }
}
