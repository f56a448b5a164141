//! The admin API's authentication: the bearer key, compared in constant time, or a browser
//! session's cookie (with its CSRF token for a request that changes something; see
//! [`super::session`]).

use subtle::ConstantTimeEq;

use super::error::ApiError;
use super::session::web::Console;

/// The configured admin key, or none (admin API off).
#[derive(Clone, Default)]
pub struct AdminKey(Option<Vec<u8>>);

impl std::fmt::Debug for AdminKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "AdminKey(<set>)"
        } else {
            "AdminKey(<none>)"
        })
    }
}

impl AdminKey {
    /// `None` or an empty key turns the admin API off.
    pub fn new(key: Option<&str>) -> Self {
        AdminKey(key.filter(|k| !k.is_empty()).map(|k| k.as_bytes().to_vec()))
    }

    /// True when a key is configured.
    pub fn is_enabled(&self) -> bool {
        self.0.is_some()
    }

    /// Whether `presented` is the key (constant time but for the length); false with none
    /// configured.
    pub fn matches(&self, presented: &[u8]) -> bool {
        self.0
            .as_ref()
            .is_some_and(|key| bool::from(presented.ct_eq(key)))
    }

    /// Checks an `Authorization` header value. The comparison of the secret bytes takes the
    /// same time wherever they differ (only the key's length can leak).
    pub fn check(&self, authorization: Option<&http::HeaderValue>) -> Result<(), ApiError> {
        if !self.is_enabled() {
            return Err(ApiError::admin_disabled());
        }
        let presented = authorization
            .and_then(|v| v.to_str().ok())
            .and_then(bearer_token)
            .ok_or_else(|| ApiError::unauthorized("missing bearer token"))?;
        if self.matches(presented.as_bytes()) {
            Ok(())
        } else {
            Err(ApiError::unauthorized("wrong API key"))
        }
    }
}

/// The layer over the admin routes: a request without the key or a session is answered here
/// (404 with no key configured, 401 with a wrong or missing one), never routed.
///
/// `Authorization: Bearer <key>` is checked as it always was, whether or not a cookie comes
/// with it. Without it, a `magicpush_session` cookie authenticates the request if its session
/// is alive (401 `not signed in` otherwise); a method other than GET, HEAD and OPTIONS then
/// also needs the session's CSRF token in `X-CSRF-Token` (403 otherwise).
pub(super) async fn require(
    axum::extract::State(console): axum::extract::State<std::sync::Arc<Console>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    let key = console.key();
    let authorization = req.headers().get(http::header::AUTHORIZATION);
    let by_cookie = key.is_enabled()
        && authorization.is_none()
        && super::session::cookie_token(req.headers()).is_some();
    let checked = if by_cookie {
        console
            .authenticate(req.method(), req.headers(), std::time::Instant::now())
            .map(drop)
            .map_err(ApiError::from)
    } else {
        key.check(authorization)
    };
    match checked {
        Ok(()) => next.run(req).await,
        Err(err) => err.into_response(),
    }
}

fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderValue, StatusCode};

    #[test]
    fn bearer_checks() {
        let key = AdminKey::new(Some("s3cret"));
        let hv = |s: &str| HeaderValue::from_str(s).unwrap();
        assert!(key.check(Some(&hv("Bearer s3cret"))).is_ok());
        assert!(key.check(Some(&hv("bearer  s3cret "))).is_ok());
        for bad in [
            "Bearer s3cre",
            "Bearer s3cret2",
            "Basic s3cret",
            "Bearer",
            "s3cret",
        ] {
            let err = key.check(Some(&hv(bad))).unwrap_err();
            assert_eq!(err.status, StatusCode::UNAUTHORIZED, "{bad}");
        }
        assert_eq!(
            key.check(None).unwrap_err().status,
            StatusCode::UNAUTHORIZED
        );
        let off = AdminKey::new(None);
        assert_eq!(
            off.check(Some(&hv("Bearer x"))).unwrap_err().status,
            StatusCode::NOT_FOUND
        );
        assert!(!AdminKey::new(Some("")).is_enabled());
        assert!(key.matches(b"s3cret"));
        assert!(!key.matches(b"s3cre") && !key.matches(b"s3creT") && !key.matches(b""));
        assert!(!off.matches(b""));
    }
}
