//! `POST /v1/pushcert/csr` and friends: issuing push certificate requests, the first page of
//! the seed's manual ("CSR発行"). The key stays here as a pending key until Apple's
//! certificate for it is uploaded (`PUT /v1/pushcert` without a key).

use serde::Serialize;
use utoipa::ToSchema;

use crate::pushcert::pending::PendingRequest;
use crate::pushcert::request::{self, Subject};
use magicpush_store::rfc3339;

use super::{Service, ServiceError};

/// The answer of `POST /v1/pushcert/csr`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct IssuedRequest {
    /// The pending request's id (`DELETE /v1/pushcert/csr/{id}` withdraws it).
    pub id: String,
    /// `PushCertificate_<VENDOR>_<YYYYMMDDHHMM>.csr`.
    pub file_name: String,
    /// Whether the file is the vendor-signed request Apple's portal takes (else a PEM CSR for
    /// a vendor's signing service).
    pub vendor_signed: bool,
    /// The file's text.
    pub request: String,
}

impl Service {
    /// Issues a request: a new pending RSA-2048 key and its file. Fields of `subject` that are
    /// `None` take the `--csr-*` defaults.
    pub async fn issue_pushcert_request(
        &self,
        subject: Subject,
    ) -> Result<IssuedRequest, ServiceError> {
        let defaults = &self.pushcert.settings().csr_subject;
        let subject = Subject {
            email: subject.email.or_else(|| defaults.email.clone()),
            common_name: subject.common_name.or_else(|| defaults.common_name.clone()),
            country: subject.country.or_else(|| defaults.country.clone()),
        };
        if subject.email.is_none() && subject.common_name.is_none() {
            return Err(ServiceError::BadRequest(
                "the request needs a subject: send {\"common_name\": …} and/or {\"email\": …} \
                 in the body, or start the server with --csr-cn and --csr-email \
                 (MAGICPUSH_CSR_CN, MAGICPUSH_CSR_EMAIL) as defaults"
                    .into(),
            ));
        }
        subject
            .validate()
            .map_err(|e| ServiceError::BadRequest(e.to_string()))?;
        let _one_at_a_time = self.pushcert_update().await?;
        // Checked before the key is made (a fraction of a second of CPU); `add` checks again.
        if self.pushcert.pending.is_full() {
            return Err(ServiceError::Conflict(
                crate::pushcert::pending::PendingError::Full.to_string(),
            ));
        }
        let now = Self::now();
        // The RSA key takes a fraction of a second of CPU: not on an async worker.
        let vendor = self.pushcert.settings().vendor.clone();
        let vendor_name = self.pushcert.settings().vendor_name.clone();
        let issued = tokio::task::spawn_blocking(move || {
            request::issue(&subject, vendor.as_deref(), vendor_name.as_deref(), now)
        })
        .await
        .map_err(|e| ServiceError::Persist(format!("the request was not made: {e}")))?
        .map_err(|e| ServiceError::BadRequest(e.to_string()))?;
        let id = uuid::Uuid::new_v4().simple().to_string();
        let pending = PendingRequest {
            id: id.clone(),
            file_name: issued.file_name.clone(),
            created_at: rfc3339(now),
            vendor_signed: issued.vendor_signed,
            subject: issued.subject.clone(),
            public_key_sha256: issued.public_key_sha256.clone(),
            request: issued.text.clone(),
        };
        let key = issued.key_pkcs8;
        self.pushcert
            .pending
            .add(&*self.store, pending, key, now)
            .await
            .map_err(|e| match e {
                crate::pushcert::pending::PendingError::Full => {
                    ServiceError::Conflict(e.to_string())
                }
                crate::pushcert::pending::PendingError::Store(e) => ServiceError::from(e),
            })?;
        tracing::info!(file = %issued.file_name, vendor_signed = issued.vendor_signed, subject = %issued.subject, "push certificate request issued");
        Ok(IssuedRequest {
            id,
            file_name: issued.file_name,
            vendor_signed: issued.vendor_signed,
            request: issued.text,
        })
    }

    /// `GET /v1/pushcert/csr`: the last issued request still waiting.
    pub fn latest_pushcert_request(&self) -> Result<PendingRequest, ServiceError> {
        self.pushcert.pending.latest().ok_or_else(|| {
            ServiceError::NotFound(
                "no request is waiting for Apple's certificate: issue one with POST /v1/pushcert/csr".into(),
            )
        })
    }

    /// `GET /v1/pushcert/requests`: the pending requests, oldest first, without their text.
    pub fn pushcert_requests(&self) -> Vec<PendingRequest> {
        self.pushcert.pending.list()
    }

    /// `DELETE /v1/pushcert/csr/{id}`: withdraws a pending request and destroys its key.
    pub async fn withdraw_pushcert_request(&self, id: &str) -> Result<(), ServiceError> {
        let _one_at_a_time = self.pushcert_update().await?;
        match self.pushcert.pending.retire(&*self.store, id).await {
            Ok(true) => {
                tracing::warn!(request = %id, "pending push certificate request withdrawn; its key is destroyed");
                Ok(())
            }
            Ok(false) => Err(ServiceError::NotFound(format!("no pending request {id}"))),
            Err(e) => Err(e.into()),
        }
    }
}
