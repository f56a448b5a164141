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
    /// The id a server-side failure is logged under (`X-Request-Id`, and in the JSON body).
    pub request_id: Option<String>,
    /// What a program (the console) needs beside the message, as JSON keys of its own.
    pub detail: Option<ErrorDetail>,
}

/// The fields an error adds to `{"error": …}` for a program to act on without reading the
/// message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorDetail {
    /// E320: `{"code": "E320", "registered_topic", "new_topic"}`.
    TopicChange {
        /// The tenant's topic, which a renewal keeps.
        registered_topic: String,
        /// The uploaded certificate's topic.
        new_topic: String,
    },
}

impl ErrorDetail {
    /// Adds the detail's keys to the error's JSON object.
    pub fn write_into(&self, value: &mut serde_json::Value) {
        match self {
            ErrorDetail::TopicChange {
                registered_topic,
                new_topic,
            } => {
                value["code"] = "E320".into();
                value["registered_topic"] = registered_topic.as_str().into();
                value["new_topic"] = new_topic.as_str().into();
            }
        }
    }
}

impl ApiError {
    /// An error with this status and message.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            retry_after: None,
            request_id: None,
            detail: None,
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

/// `Retry-After` (seconds) while the database does not answer.
pub const UNAVAILABLE_RETRY_AFTER: u32 = 5;

impl From<crate::service::ServiceError> for ApiError {
    /// The one place service errors become statuses. Device endpoints never see 401.
    fn from(err: crate::service::ServiceError) -> Self {
        use crate::service::ServiceError as E;
        use magicpush_store::StoreError;
        let status = match &err {
            E::Decode(_) | E::BadRequest(_) | E::Paging(_) | E::UnknownDevice { .. } => {
                StatusCode::BAD_REQUEST
            }
            // Apple: a 410 to UserAuthenticate tells the device not to set up the user channel.
            E::Unsupported { message_type } if message_type == "UserAuthenticate" => {
                StatusCode::GONE
            }
            E::Unsupported { .. } => StatusCode::BAD_REQUEST,
            E::Identity { .. } | E::UnregisteredTopic { .. } => StatusCode::FORBIDDEN,
            E::TopicRequired { .. } => StatusCode::BAD_REQUEST,
            E::NoDevice { .. }
            | E::UnknownCommand { .. }
            | E::UnknownTenant { .. }
            | E::NotFound(_) => StatusCode::NOT_FOUND,
            // A state the request cannot change as it is: a push with no certificate to push
            // with, a command UUID in use, a topic change that would orphan enrolled devices.
            E::NoCertificate { .. }
            | E::DuplicateCommand { .. }
            | E::TopicChange { .. }
            | E::TenantExists { .. }
            | E::Conflict(_) => StatusCode::CONFLICT,
            E::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            E::Store(
                StoreError::Closed | StoreError::Overloaded { .. } | StoreError::Unavailable { .. },
            ) => StatusCode::SERVICE_UNAVAILABLE,
            E::Store(_) | E::Persist(_) | E::ListingCut => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let overloaded = matches!(&err, E::Store(StoreError::Overloaded { .. }));
        if status.is_server_error() && !overloaded {
            // The detail (SQLite's message, a path) goes to the log; the client reads what
            // failed in an operator's terms and the id to find the detail under.
            let id = uuid::Uuid::new_v4().simple().to_string();
            tracing::error!(request_id = %id, "request failed: {err}");
            let what = match &err {
                E::Store(StoreError::Closed) => {
                    "storage unavailable: the store is closed (the server is stopping)"
                }
                E::Store(StoreError::Unavailable { .. }) => {
                    "storage unavailable: the database does not answer; retry shortly"
                }
                E::Store(_) => "storage unavailable",
                E::Persist(_) => "cannot save the server's state in its data directory",
                _ => "internal error",
            };
            let mut api = ApiError::new(
                status,
                format!("{what} (request id {id}: the server's log has the detail)"),
            );
            api.request_id = Some(id);
            if matches!(&err, E::Store(StoreError::Unavailable { .. })) {
                // The store reconnects by itself: the device tries again.
                api.retry_after = Some(UNAVAILABLE_RETRY_AFTER);
            }
            return api;
        }
        let mut api = ApiError::new(status, err.to_string());
        if let E::TopicChange { current, new, .. } = &err {
            api.detail = Some(ErrorDetail::TopicChange {
                registered_topic: current.clone(),
                new_topic: new.clone(),
            });
        }
        if overloaded {
            api.retry_after = Some(1);
        }
        api
    }
}

/// The admin API's answer: `{"error": "…"}` (see [`super::body::json_error`]).
impl axum::response::IntoResponse for ApiError {
    fn into_response(self) -> axum::response::Response {
        super::body::json_error(&self).map(axum::body::Body::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::ServiceError;
    use magicpush_store::StoreError;

    #[test]
    fn server_errors_carry_no_internal_text() {
        let err = ServiceError::Store(StoreError::Database {
            op: "commit",
            detail: "disk I/O error: /var/lib/magicpush/devices.db-wal".into(),
        });
        let api = ApiError::from(err);
        assert_eq!(api.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(
            api.message.starts_with("storage unavailable (request id "),
            "{}",
            api.message
        );
        assert!(!api.message.contains("disk I/O") && !api.message.contains("/var/lib"));
        let id = api.request_id.unwrap();
        assert!(api.message.contains(&id));
        let api = ApiError::from(ServiceError::Persist(
            "cannot save /secret/path: EACCES".into(),
        ));
        assert!(!api.message.contains("/secret"), "{}", api.message);
        // Client errors keep their explanation.
        let api = ApiError::from(ServiceError::BadRequest("udids is empty".into()));
        assert_eq!(api.message, "udids is empty");
        assert!(api.request_id.is_none());
    }

    #[test]
    fn domain_errors_have_their_status_and_the_services_words() {
        let cases = [
            (
                ServiceError::NoDevice { udid: "U1".into() },
                StatusCode::NOT_FOUND,
                "no device U1",
            ),
            (
                ServiceError::UnknownCommand { uuid: "C1".into() },
                StatusCode::NOT_FOUND,
                "no command C1",
            ),
            (
                ServiceError::from(StoreError::DuplicateCommand { uuid: "C1".into() }),
                StatusCode::CONFLICT,
                "command C1 already exists",
            ),
            (
                ServiceError::NoCertificate {
                    waiting: vec!["a.csr".into(), "b.csr".into()],
                },
                StatusCode::CONFLICT,
                "(requests issued and waiting: a.csr, b.csr)",
            ),
        ];
        for (err, status, words) in cases {
            let api = ApiError::from(err);
            assert_eq!(api.status, status, "{}", api.message);
            assert!(api.message.ends_with(words), "{}", api.message);
        }
    }
}
