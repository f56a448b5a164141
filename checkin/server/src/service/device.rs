//! Device-facing dispatch: a decoded check-in or command report becomes store writes, and a
//! report is answered with the next queued command.

use super::{certauth, Service, ServiceError};
use crate::identity::{DeviceIdentity, Refusal};
use magicpush_mdm::{self as mdm, bootstrap_token_response, Checkin, Message, Report, Status};
use magicpush_store::{BoundIdentity, Enrollment, QueuedCommand, StoreError};

/// Which URL the body came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `/mdm/checkin`: check-in messages only.
    Checkin,
    /// `/mdm/server`: command reports only.
    Server,
    /// `/mdm`: either, dispatched on the body.
    Either,
}

/// What the device gets back with its 200.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceReply {
    /// An empty body.
    Empty,
    /// An XML plist: a command, or a GetBootstrapToken answer.
    Plist(Vec<u8>),
}

impl Service {
    /// Handles one device request body. `Ok` means every write it caused is durable.
    pub async fn device_message(
        &self,
        endpoint: Endpoint,
        body: &[u8],
    ) -> Result<DeviceReply, ServiceError> {
        self.device_request(endpoint, body, None).await
    }

    /// [`Service::device_message`] for a request whose identity certificate was verified:
    /// the message must be allowed for that identity ([`super::certauth`]), or it is refused
    /// with [`ServiceError::Identity`] before anything is written.
    pub async fn device_request(
        &self,
        endpoint: Endpoint,
        body: &[u8],
        identity: Option<&DeviceIdentity>,
    ) -> Result<DeviceReply, ServiceError> {
        let message = match endpoint {
            Endpoint::Checkin => Message::Checkin(mdm::decode_checkin(body)?),
            Endpoint::Server => Message::Report(mdm::decode_report(body)?),
            Endpoint::Either => mdm::decode(body)?,
        };
        let Some(identity) = identity else {
            return self.dispatch(message, None).await;
        };
        match certauth::requirement(&message) {
            certauth::Requirement::Bind => {
                // Only an Authenticate can bind a certificate, so only it reads the revoked
                // serials: a revoked certificate's device was deleted with its binding, and
                // every other message needs the binding (checked below), which it no longer
                // has. The check-in path keeps one store read per message.
                if self.device_ca().is_some() && self.is_revoked(&identity.serial).await? {
                    return Err(ServiceError::Identity {
                        udid: message_udid(&message),
                        refusal: crate::identity::Refusal::Revoked {
                            subject: identity.subject.clone(),
                            serial: identity.serial.clone(),
                        },
                    });
                }
                let invited = self.invitation_of(&message, identity).await?;
                let now = Self::now();
                let bound = certauth::to_bound(identity, now);
                let reply = self.dispatch(message, Some(&bound)).await?;
                if let Some((invitation, udid)) = invited {
                    self.store
                        .record_invitation_device(&invitation, &udid, now)
                        .await?;
                }
                Ok(reply)
            }
            certauth::Requirement::Bound { udid } => {
                let bound = self.store.identity_hash(udid).await?;
                certauth::check_bound(udid, identity, bound).map_err(|refusal| {
                    ServiceError::Identity {
                        udid: Some(udid.to_owned()),
                        refusal,
                    }
                })?;
                self.dispatch(message, None).await
            }
            certauth::Requirement::Nothing => self.dispatch(message, None).await,
        }
    }

    /// Whether the certificate of serial `serial` (hex, as [`DeviceIdentity::serial`]) was
    /// revoked. Revocations are recorded for the built-in CA's certificates, whose serials
    /// are random 128-bit numbers; a serial that is not hex is never revoked.
    pub(crate) async fn is_revoked(&self, serial: &str) -> Result<bool, ServiceError> {
        let Some(key) = serial_key(serial) else {
            return Ok(false);
        };
        Ok(self.store.is_revoked(&key).await?)
    }

    async fn dispatch(
        &self,
        message: Message,
        bind: Option<&BoundIdentity>,
    ) -> Result<DeviceReply, ServiceError> {
        match message {
            Message::Checkin(checkin) => self.checkin(checkin, bind).await,
            Message::Report(report) => self.report(report).await,
        }
    }

    async fn checkin(
        &self,
        checkin: Checkin,
        bind: Option<&BoundIdentity>,
    ) -> Result<DeviceReply, ServiceError> {
        let now = Self::now();
        self.metrics.checkin(checkin.message_type());
        match checkin {
            Checkin::Authenticate(msg) => {
                self.check_topic(&msg.udid, &msg.topic)?;
                let previous = match self.store.authenticate(&msg, bind, now).await {
                    Ok(previous) => previous,
                    Err(StoreError::IdentityInUse { udid: other }) => {
                        return Err(ServiceError::Identity {
                            udid: Some(msg.udid.clone()),
                            refusal: Refusal::InUse(format!(
                                "the identity certificate is already bound to device {other}; \
                                 each device enrolls with its own certificate"
                            )),
                        });
                    }
                    Err(e) => return Err(e.into()),
                };
                match (bind, previous) {
                    (Some(id), Some(old)) if old != id.sha256 => {
                        ::metrics::counter!("magicpush_identity_rebinds_total").increment(1);
                        tracing::info!(
                            udid = %msg.udid,
                            new_sha256 = %hex::encode(id.sha256),
                            old_sha256 = %hex::encode(old),
                            subject = %id.subject,
                            "Authenticate with a new identity certificate: re-enrollment, the old certificate is no longer accepted"
                        );
                    }
                    _ => tracing::info!(udid = %msg.udid, "Authenticate"),
                }
            }
            Checkin::TokenUpdate(msg) => {
                self.check_topic(&msg.udid, &msg.topic)?;
                let enrollment = self.store.token_update(&msg, now).await?;
                if enrollment == Enrollment::Enrolled {
                    tracing::info!(udid = %msg.udid, "enrolled");
                    self.metrics.enrolled();
                }
            }
            Checkin::CheckOut(msg) => match self.store.check_out(&msg.udid, now).await {
                // Nothing to forget about a device never seen; the device only needs a 200.
                Ok(()) | Err(StoreError::UnknownDevice { .. }) => {
                    tracing::info!(udid = %msg.udid, "CheckOut");
                }
                Err(e) => return Err(e.into()),
            },
            Checkin::SetBootstrapToken(msg) => {
                self.store
                    .set_bootstrap_token(&msg.udid, msg.token.as_ref(), now)
                    .await?;
            }
            Checkin::GetBootstrapToken(msg) => {
                self.store.touch(&msg.udid, now).await?;
                let token = self.store.bootstrap_token(&msg.udid).await?;
                return Ok(DeviceReply::Plist(bootstrap_token_response(
                    token.as_ref().map(|t| t.expose()),
                )));
            }
            Checkin::Unsupported { message_type, .. } => {
                return Err(ServiceError::Unsupported { message_type });
            }
        }
        Ok(DeviceReply::Empty)
    }

    async fn report(&self, report: Report) -> Result<DeviceReply, ServiceError> {
        let now = Self::now();
        self.metrics.report(report.status);
        let mut outcome = self.store.record_report(&report, now).await?;
        if outcome.closed_push {
            self.metrics.push_answered();
        }
        if report.user_id.is_some() {
            // Commands are queued for the device channel; a user channel gets none.
            return Ok(DeviceReply::Empty);
        }
        let skip_not_now = report.status != Status::Idle;
        let next = match outcome.next_command.take() {
            Some(next) => next,
            None => {
                self.store
                    .next_command(&report.udid, skip_not_now, now)
                    .await?
            }
        };
        match next {
            Some(mut command) => {
                if command.request_type == super::refresh::CLEAR_PASSCODE {
                    self.fill_unlock_token(&report.udid, &mut command).await?;
                }
                tracing::debug!(udid = %report.udid, uuid = %command.uuid, request_type = %command.request_type, "sending command");
                Ok(DeviceReply::Plist(command.body))
            }
            None => Ok(DeviceReply::Empty),
        }
    }

    /// A `ClearPasscode` queued without its `UnlockToken` gets the device's escrowed one, from
    /// the sealed column, as it is handed out. One queued with a token (an admin's own) is sent
    /// as it is.
    async fn fill_unlock_token(
        &self,
        udid: &str,
        command: &mut QueuedCommand,
    ) -> Result<(), ServiceError> {
        let has_token = plist::from_bytes::<plist::Dictionary>(&command.body)
            .ok()
            .and_then(|top| {
                top.get("Command")?
                    .as_dictionary()?
                    .get("UnlockToken")
                    .cloned()
            })
            .is_some();
        if has_token {
            return Ok(());
        }
        let token = self.store.device(udid).await?.and_then(|d| d.unlock_token);
        match token.and_then(|t| mdm::with_unlock_token(&command.body, t.expose())) {
            Some(body) => command.body = body,
            None => tracing::warn!(
                %udid,
                uuid = %command.uuid,
                "ClearPasscode sent without an UnlockToken: the device no longer has one escrowed"
            ),
        }
        Ok(())
    }

    /// A check-in's topic must be a tenant's, once any certificate is registered: a device
    /// enrolled with another topic could never be pushed. Refused with 403 (a 401 would make
    /// the device delete its profile), counted by reason. While no certificate is registered
    /// at all, every topic is served.
    fn check_topic(&self, udid: &str, topic: &str) -> Result<(), ServiceError> {
        let watch = self.pushcert.watch();
        if watch.serves(topic) {
            return Ok(());
        }
        ::metrics::counter!("magicpush_checkin_refusals_total", "reason" => "unregistered_topic")
            .increment(1);
        Err(ServiceError::UnregisteredTopic {
            udid: udid.to_owned(),
            topic: topic.to_owned(),
            registered: watch.some_topics(),
        })
    }
}

/// The stored key of a hex serial ([`magicpush_store::enrollment::serial_key`]).
pub fn serial_key(serial_hex: &str) -> Option<String> {
    hex::decode(serial_hex)
        .ok()
        .map(|bytes| magicpush_store::enrollment::serial_key(&bytes))
}

/// The device a message is about, for a refusal's log.
fn message_udid(message: &Message) -> Option<String> {
    match message {
        Message::Checkin(Checkin::Authenticate(a)) => Some(a.udid.clone()),
        Message::Checkin(c) => c.udid().map(str::to_owned),
        Message::Report(r) => Some(r.udid.clone()),
    }
}
