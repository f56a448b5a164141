//! The check-in service: what the server does with a decoded message or an admin request,
//! between the HTTP edge ([`crate::http`]) and the [`Store`].
//!
//! - `device`: check-ins and command reports → store writes, the next queued command.
//! - [`refresh`]: "refresh" (enqueue DeviceInformation, push, record outcomes, its run in
//!   the store) and commands.
//! - [`tenants`]: the customers served, one per push certificate topic: their listing with
//!   device counts, names and memos.
//! - [`pushcert`]: each tenant's push certificate: details and state, adding a tenant, hot
//!   renewal (E320), removal, history, expiry warnings.
//! - [`pushcert_request`]: issuing push certificate requests (CSR, vendor-signed).
//! - [`pushcert_sync`]: several nodes on one store: what another node changed in the push
//!   certificates reaches this node's engine.
//! - [`nodes`]: this server as a node among several on one store: heartbeats, the sweep of
//!   dead nodes' refresh runs, the scheduled collection's claim, `GET /v1/nodes`.
//! - `settings`: the run-time settings (`GET|PUT /v1/settings`) on this node: the
//!   collection task they run, the unreachable window, changes made on other nodes.
//! - [`views`]: devices with their connectivity state, the CSV export, the report.
//! - [`paging`], [`search`]: one page of the device list after a cursor, and its search.
//! - [`enrollment`]: enrollment invitations and the profiles their URLs answer.

use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;
use tokio::sync::Semaphore;

use crate::identity::Refusal;
use crate::push::PushSender;
use magicpush_mdm::DecodeError;
use magicpush_store::{Store, StoreError};

mod certauth;
pub mod csv;
mod device;
pub mod enrollment;
pub mod listing;
mod metrics;
pub mod nodes;
pub mod paging;
pub mod pushcert;
pub mod pushcert_request;
pub mod pushcert_sync;
pub mod refresh;
pub mod search;
mod settings;
pub mod tenants;
mod topic_groups;
pub mod views;

pub use device::{serial_key, DeviceReply, Endpoint};
pub use nodes::{NodeSettings, NodesView};
pub use paging::{Cursor, PageLimit, PagingError};
pub use pushcert::PushCertView;
pub use pushcert_request::IssuedRequest;
pub use refresh::{CommandRequest, RefreshSummary, RefreshTarget};
pub use search::Search;
pub use tenants::{PushCertSettings, PushCertState, TenantList, TenantSummary, TenantUpdate};
pub use views::{ConnectivityReport, DeviceCommands, DeviceFilter, DevicePage, DeviceView};

/// Settings of the service.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// `--unreachable-after`: a device that has not reported this long after an accepted
    /// push is `unreachable`. `None`: 5 minutes. A stored setting wins
    /// ([`crate::settings::resolve`]).
    pub unreachable_after: Option<Duration>,
    /// `--collect-every`: the scheduled collection's period; `None`: off. A stored setting
    /// wins. The collection starts with [`Service::load_settings`].
    pub collect_every: Option<Duration>,
    /// Pushes in flight at once from refreshes. Default 256.
    pub push_concurrency: usize,
    /// This node's name, heartbeat and the window after which other nodes are dead.
    pub node: NodeSettings,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        ServiceConfig {
            unreachable_after: None,
            collect_every: None,
            push_concurrency: 256,
            node: NodeSettings::default(),
        }
    }
}

/// Why a request could not be served. Mapped to HTTP statuses in one place,
/// `crate::http::error`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceError {
    /// The device's body is not an acceptable check-in or report.
    #[error("{0}")]
    Decode(#[from] DecodeError),
    /// A check-in MessageType this server does not offer.
    #[error("MessageType {message_type} is not supported by this server")]
    Unsupported {
        /// As sent.
        message_type: String,
    },
    /// A report or check-in for a device that never authenticated.
    #[error("unknown device {udid}: it must Authenticate and send a TokenUpdate first")]
    UnknownDevice {
        /// The identifier sent.
        udid: String,
    },
    /// An admin request about a device the store does not hold.
    #[error("no device {udid}")]
    NoDevice {
        /// The identifier asked for.
        udid: String,
    },
    /// An admin request about a command no queue holds.
    #[error("no command {uuid}")]
    UnknownCommand {
        /// The command's UUID, as asked.
        uuid: String,
    },
    /// A command whose UUID is already queued or recorded.
    #[error("command {uuid} already exists")]
    DuplicateCommand {
        /// The UUID asked for.
        uuid: String,
    },
    /// A push (a refresh, a command sent with a push) while no push certificate is
    /// registered; `waiting` names the requests issued for Apple's certificate.
    #[error("{}", pushcert::no_certificate_message(waiting))]
    NoCertificate {
        /// The file names of the requests issued and waiting, oldest first.
        waiting: Vec<String>,
    },
    /// E320: a renewal whose certificate has another topic than the tenant's. A renewal
    /// never changes a tenant's topic: its devices accept pushes for their own topic only.
    #[error("{}", topic_change_message(refusal, current, new, *enrolled, *other_tenant))]
    TopicChange {
        /// The tenant's topic.
        current: String,
        /// The uploaded certificate's topic.
        new: String,
        /// Devices enrolled with the tenant's topic.
        enrolled: u64,
        /// Whether the uploaded certificate's topic is another tenant's.
        other_tenant: bool,
        /// The renewal check's refusal, which says how to renew instead.
        refusal: Box<magicpush_engine::cert::RenewalError>,
    },
    /// A per-tenant request named a topic no tenant has (404).
    #[error("no tenant has topic {topic}{}", if known.is_empty() { String::new() } else { format!(" (the tenants: {known})") })]
    UnknownTenant {
        /// The topic named.
        topic: String,
        /// Some of the tenants' topics.
        known: String,
    },
    /// A per-tenant request named no topic while several tenants are registered (400).
    #[error("{count} tenants are registered ({topics}): name one with ?topic=<topic>")]
    TopicRequired {
        /// How many.
        count: usize,
        /// Some of their topics.
        topics: String,
    },
    /// `POST /v1/topics` with the certificate of a tenant already registered (409).
    #[error("topic {topic} is already a tenant's: to renew its certificate use PUT /v1/pushcert?topic={topic}")]
    TenantExists {
        /// The topic.
        topic: String,
    },
    /// An admin request that is not well-formed.
    #[error("{0}")]
    BadRequest(String),
    /// A device list page asked for with a bad `limit`, `cursor` or `q` (400).
    #[error("{0}")]
    Paging(#[from] PagingError),
    /// A check-in names a topic no push certificate of this server has (403, never 401): the
    /// device enrolled with another server's profile, or before the topic changed. Nothing
    /// is written. (While no certificate is registered at all, every topic is served.)
    #[error("device {udid}: topic {topic} has no push certificate on this server (its topics: {registered}); the device's enrollment profile is another server's or predates a topic change: remove it and enroll again")]
    UnregisteredTopic {
        /// The device.
        udid: String,
        /// The topic the check-in names.
        topic: String,
        /// Some of the topics this server pushes with.
        registered: String,
    },
    /// The request's device identity does not allow this message (403, never 401).
    #[error("{refusal}")]
    Identity {
        /// The device the message is about, when it could be read.
        udid: Option<String>,
        /// Why.
        refusal: Refusal,
    },
    /// The thing asked for does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The request conflicts with the current state (a renewal that does not expire later,
    /// a full list of pending requests, …).
    #[error("{0}")]
    Conflict(String),
    /// Well-formed but not acceptable (422): a certificate no issued request matches.
    #[error("{0}")]
    Unprocessable(String),
    /// The store failed.
    #[error("store: {0}")]
    Store(StoreError),
    /// The server's own state directory could not be written.
    #[error("{0}")]
    Persist(String),
    /// A streamed listing's producer stopped before the end (it panicked, or the runtime is
    /// shutting down): the text sent so far is not the whole listing.
    #[error("the device listing stopped before its end")]
    ListingCut,
}

/// The E320 refusal of a renewal with another topic, and what to do instead.
fn topic_change_message(
    refusal: &magicpush_engine::cert::RenewalError,
    current: &str,
    new: &str,
    enrolled: u64,
    other_tenant: bool,
) -> String {
    let instead = if other_tenant {
        format!("the certificate is tenant {new}'s: renew that tenant with PUT /v1/pushcert?topic={new}")
    } else {
        format!("if it is a new customer's certificate, add it as a tenant with POST /v1/topics; to move tenant {current} to topic {new}, its devices must re-enroll: delete them (DELETE /v1/devices?all=true&confirm={current}) and the tenant (DELETE /v1/pushcert?topic={current}) first")
    };
    format!("{refusal} ({enrolled} device(s) are enrolled with topic {current}; {instead})")
}

impl From<StoreError> for ServiceError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::UnknownDevice { udid } => ServiceError::UnknownDevice { udid },
            StoreError::DuplicateCommand { uuid } => ServiceError::DuplicateCommand { uuid },
            other => ServiceError::Store(other),
        }
    }
}

/// The check-in service. Cheap to share: hold it in an `Arc`.
pub struct Service {
    store: Arc<dyn Store>,
    pusher: Arc<dyn PushSender>,
    pushcert: PushCertState,
    config: ServiceConfig,
    push_slots: Arc<Semaphore>,
    pushes: Arc<refresh::PushTracker>,
    metrics: metrics::DeviceMetrics,
    node: nodes::ThisNode,
    settings: settings::LiveSettings,
    /// The built-in device CA (`/scep`), when the server has one.
    device_ca: Option<Arc<magicpush_scep::DeviceCa>>,
    /// Enrollment profiles (`--public-url`), when the server hands them out.
    profiles: Option<Arc<crate::profile::EnrollmentProfiles>>,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Service {
    /// A service over `store`, pushing with `pusher`. `pushcert` describes the certificate the
    /// pusher uses (see [`PushCertState::new`]).
    pub fn new(
        store: Arc<dyn Store>,
        pusher: Arc<dyn PushSender>,
        pushcert: PushCertState,
        config: ServiceConfig,
    ) -> Self {
        let push_slots = Arc::new(Semaphore::new(config.push_concurrency.max(1)));
        let node = nodes::ThisNode::new(config.node.clone(), Self::now());
        let start = crate::settings::StartSettings {
            collect_every: config.collect_every,
            unreachable_after: config.unreachable_after,
        };
        Service {
            node,
            settings: settings::LiveSettings::new(start),
            store,
            pusher,
            pushcert,
            config,
            push_slots,
            pushes: Arc::default(),
            metrics: metrics::DeviceMetrics::default(),
            device_ca: None,
            profiles: None,
        }
    }

    /// The same service with the built-in device CA: `/scep` answers with it, and the
    /// certificates it issued are revoked when their device is deleted.
    pub fn with_device_ca(mut self, ca: Arc<magicpush_scep::DeviceCa>) -> Self {
        self.device_ca = Some(ca);
        self
    }

    /// The same service handing out enrollment profiles (`GET /enroll/{id}`) for the
    /// invitations of `POST /v1/enrollments`; they need the built-in device CA too.
    pub fn with_enrollment_profiles(
        mut self,
        profiles: Option<Arc<crate::profile::EnrollmentProfiles>>,
    ) -> Self {
        self.profiles = profiles;
        self
    }

    /// The built-in device CA, if any.
    pub fn device_ca(&self) -> Option<&Arc<magicpush_scep::DeviceCa>> {
        self.device_ca.as_ref()
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The settings.
    pub fn config(&self) -> &ServiceConfig {
        &self.config
    }

    /// Liveness: the store's writer is alive and progressing, and it answers a read.
    pub async fn health(&self) -> Result<(), ServiceError> {
        self.store.health().await?;
        Ok(())
    }

    /// The current time, UTC. One place, so every write of one request uses one clock.
    pub(crate) fn now() -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }
}
