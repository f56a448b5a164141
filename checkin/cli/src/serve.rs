//! `magicpush serve`: the check-in server with its durable store, the APNs client, the admin
//! API and the scheduled collection. Every flag can also come from a `MAGICPUSH_*` variable.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use magicpush_engine::cert::PushCertificate;
use magicpush_engine::Client;
use magicpush_profile::ProfileSigner;
use magicpush_server::profile::{EnrollmentProfiles, PublicUrl};

use magicpush_server::notify::{Notifier, NotifyConfig};
use magicpush_server::pushcert::expiry::Thresholds;
use magicpush_server::pushcert::request::{Subject, VendorIdentity};

use super::push_cert::CertFlags;
use super::secret_arg::SecretArg;
use magicpush_engine::cert::CertificateInfo;
use magicpush_postgres::PostgresStore;
use magicpush_server::config::parse_duration;
use magicpush_server::http::{self, AdminKey, App, DeviceAuth, ListenerSettings, SessionSettings};
use magicpush_server::identity::authenticator::parse_sources;
use magicpush_server::identity::{DeviceAuthenticator, DeviceTrust, IdentitySource};
use magicpush_server::push::{EnginePusher, PushSender};
use magicpush_server::pushcert::legacy;
use magicpush_server::service::pushcert::{check_topics_at_start, from_stored};
use magicpush_server::service::TenantUpdate;
use magicpush_server::service::{
    NodeSettings, PushCertSettings, PushCertState, Service, ServiceConfig,
};
use magicpush_sqlite::{SqliteOptions, SqliteStore};
use magicpush_store::{SecretKey, Store};

/// Runs the MDM check-in server.
#[derive(Debug, clap::Args)]
pub(crate) struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "MAGICPUSH_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Directory for the device database and server state (created if missing). Not with
    /// --database-url, which keeps everything in PostgreSQL.
    #[arg(
        long,
        env = "MAGICPUSH_DATA_DIR",
        required_unless_present = "database_url",
        conflicts_with = "database_url"
    )]
    data_dir: Option<PathBuf>,
    /// Keep the devices, queues, results and push certificates in PostgreSQL instead of
    /// SQLite in --data-dir (`postgres://user:password@host/db?sslmode=verify-full`): several
    /// servers can share one database. Needs --secrets-key-file. The schema is migrated at
    /// start (`magicpush migrate --database-url` does it alone).
    #[arg(long, env = "MAGICPUSH_DATABASE_URL")]
    database_url: Option<SecretArg>,
    /// With --database-url: how often the push certificates are re-read from the database
    /// besides when another node announces a change (a fallback, should an announcement be
    /// missed while the connection listening for them was down).
    #[arg(long, env = "MAGICPUSH_PUSHCERT_SYNC_EVERY", default_value = "30s", value_parser = parse_duration)]
    pushcert_sync_every: Duration,
    /// MDM push certificate: PEM with --key, one PEM file holding the certificate and its
    /// key, or PKCS#12 (.p12, as Keychain exports it; its password from --cert-password-file
    /// or MAGICPUSH_P12_PASSWORD). Repeat it for several tenants (one certificate per topic).
    /// Optional: without it (and none installed through the admin API) the server starts
    /// without pushing — issue a request with POST /v1/pushcert/csr and upload Apple's
    /// certificate with PUT /v1/pushcert.
    #[arg(long, env = "MAGICPUSH_CERT")]
    cert: Vec<PathBuf>,
    /// Private key of a PEM push certificate. With several --cert, one --key per --cert, in
    /// the same order (or none, when each --cert holds its key).
    #[arg(long, env = "MAGICPUSH_KEY", requires = "cert")]
    key: Vec<PathBuf>,
    /// Directory of tenants' push certificates: `<name>.pem` with `<name>.key` (or a `.pem`
    /// holding its key), one pair per tenant; the file name becomes the tenant's display
    /// name when it has none.
    #[arg(long, env = "MAGICPUSH_CERT_DIR")]
    cert_dir: Option<PathBuf>,
    /// File holding the password of a PKCS#12 --cert (its first line).
    #[arg(long, env = "MAGICPUSH_CERT_PASSWORD_FILE", requires = "cert")]
    cert_password_file: Option<PathBuf>,
    /// Password of a PKCS#12 --cert. Prefer MAGICPUSH_P12_PASSWORD or --cert-password-file: a
    /// command line is visible to every local user.
    #[arg(long, env = "MAGICPUSH_P12_PASSWORD", hide_env_values = true)]
    cert_password: Option<SecretArg>,
    /// APNs base URL (default: Apple's production service). For a mock or a proxy.
    #[arg(long, env = "MAGICPUSH_APNS_URL")]
    apns_url: Option<String>,
    /// CA certificate(s) (PEM) to trust for the APNs server, besides the public roots.
    #[arg(long, env = "MAGICPUSH_APNS_CA")]
    apns_ca: Option<PathBuf>,
    /// HTTP proxy for the APNs connections, http://[user:password@]host[:port] (port 80 when
    /// absent): each connection is a CONNECT tunnel with TLS to APNs inside. Give a password
    /// through MAGICPUSH_APNS_PROXY rather than the command line, which every local user can
    /// see; logs and errors show it masked.
    #[arg(long, env = "MAGICPUSH_APNS_PROXY", hide_env_values = true)]
    apns_proxy: Option<SecretArg>,
    /// Most APNs connections of one tenant (topic).
    #[arg(long, env = "MAGICPUSH_APNS_CONNECTIONS", default_value_t = 4)]
    apns_connections: usize,
    /// Most APNs connections of all tenants together: a tenant with pushes to send always
    /// gets one in turn (idle tenants' connections close first to make room).
    #[arg(
        long,
        env = "MAGICPUSH_APNS_MAX_TOTAL_CONNECTIONS",
        default_value_t = 1000
    )]
    apns_max_total_connections: usize,
    /// Admin API key (`Authorization: Bearer <key>`). Without it the admin API is off. Prefer
    /// MAGICPUSH_API_KEY or --api-key-file: a command line is visible to every local user.
    #[arg(long, env = "MAGICPUSH_API_KEY", hide_env_values = true)]
    api_key: Option<SecretArg>,
    /// File holding the admin API key (its first line); it wins over --api-key /
    /// MAGICPUSH_API_KEY.
    #[arg(long, env = "MAGICPUSH_API_KEY_FILE")]
    api_key_file: Option<PathBuf>,
    /// Lifetime of a browser console session (POST /v1/session trades the API key for a
    /// cookie), however much it is used. Sessions live in this node's memory: a restart ends
    /// them, and behind a load balancer the console needs sticky sessions.
    #[arg(long, env = "MAGICPUSH_SESSION_TTL", default_value = "12h", value_parser = parse_duration)]
    session_ttl: Duration,
    /// A browser console session unused for this long ends (each request restarts it).
    #[arg(long, env = "MAGICPUSH_SESSION_IDLE", default_value = "30m", value_parser = parse_duration)]
    session_idle: Duration,
    /// Default e-mail address of push certificate requests (POST /v1/pushcert/csr).
    #[arg(long, env = "MAGICPUSH_CSR_EMAIL")]
    csr_email: Option<String>,
    /// Default common name of push certificate requests (e.g. the company).
    #[arg(long, env = "MAGICPUSH_CSR_CN")]
    csr_cn: Option<String>,
    /// Default country (two letters) of push certificate requests.
    #[arg(long, env = "MAGICPUSH_CSR_COUNTRY")]
    csr_country: Option<String>,
    /// The MDM vendor certificate (PEM) Apple issued: requests are then vendor-signed, ready
    /// for the Apple Push Certificates Portal.
    #[arg(long, env = "MAGICPUSH_VENDOR_CERT", requires = "vendor_key")]
    vendor_cert: Option<PathBuf>,
    /// The MDM vendor certificate's RSA private key (PEM).
    #[arg(long, env = "MAGICPUSH_VENDOR_KEY", requires = "vendor_cert")]
    vendor_key: Option<PathBuf>,
    /// The vendor certificate's chain (PEM: intermediates, root), appended to
    /// PushCertCertificateChain.
    #[arg(long, env = "MAGICPUSH_VENDOR_CHAIN", requires = "vendor_cert")]
    vendor_chain: Option<PathBuf>,
    /// The vendor name in request file names (default: the vendor certificate's O or CN,
    /// else MAGICPUSH).
    #[arg(long, env = "MAGICPUSH_VENDOR_NAME")]
    vendor_name: Option<String>,
    /// Days before the push certificate's expiry at which to warn (log, event, webhook).
    #[arg(long, env = "MAGICPUSH_EXPIRY_WARN_DAYS", default_value = magicpush_server::pushcert::expiry::DEFAULT_THRESHOLDS)]
    expiry_warn_days: String,
    /// Webhook for push certificate and refresh events (JSON POST).
    #[arg(long, env = "MAGICPUSH_NOTIFY_URL")]
    notify_url: Option<String>,
    /// HMAC-SHA256 key of the webhook's X-Magicpush-Signature header.
    #[arg(long, env = "MAGICPUSH_NOTIFY_SECRET", hide_env_values = true)]
    notify_secret: Option<SecretArg>,
    /// File holding the webhook's HMAC key (instead of --notify-secret on the command line);
    /// it wins over --notify-secret / MAGICPUSH_NOTIFY_SECRET.
    #[arg(long, env = "MAGICPUSH_NOTIFY_SECRET_FILE")]
    notify_secret_file: Option<PathBuf>,
    /// Collect device information from every device this often (e.g. 24h). A setting stored
    /// through PUT /v1/settings wins.
    #[arg(long, env = "MAGICPUSH_COLLECT_EVERY", value_parser = parse_duration)]
    collect_every: Option<Duration>,
    /// This server's name among the nodes on one database (`GET /v1/nodes`, `/healthz`);
    /// default: the host name.
    #[arg(long, env = "MAGICPUSH_NODE_NAME")]
    node_name: Option<String>,
    /// How often this node records its heartbeat in the store and sweeps the refreshes of
    /// dead nodes.
    #[arg(long, env = "MAGICPUSH_HEARTBEAT_EVERY", default_value = "5s", value_parser = parse_duration)]
    heartbeat_every: Duration,
    /// A node without a heartbeat for this long is dead: another node takes back the pushes
    /// its refresh left unanswered (at least twice --heartbeat-every).
    #[arg(long, env = "MAGICPUSH_NODE_DEAD_AFTER", default_value = "30s", value_parser = parse_duration)]
    node_dead_after: Duration,
    /// A pushed device that has not answered after this long is `unreachable` [default: 5m].
    /// A setting stored through PUT /v1/settings wins.
    #[arg(long, env = "MAGICPUSH_UNREACHABLE_AFTER", value_parser = parse_duration)]
    unreachable_after: Option<Duration>,
    /// TLS certificate chain (PEM) for the server itself; plain HTTP without it.
    #[arg(long, env = "MAGICPUSH_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, env = "MAGICPUSH_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// The address devices reach this server at, `https://mdm.example.com[:port][/prefix]`:
    /// what enrollment profiles name (ServerURL, CheckInURL, the SCEP URL) and what the
    /// invitations of POST /v1/enrollments point to (`<URL>/enroll/<id>`). Without it,
    /// invitations are off (SCEP with bare challenges still works).
    #[arg(long, env = "MAGICPUSH_PUBLIC_URL", value_parser = parse_public_url)]
    public_url: Option<PublicUrl>,
    /// Certificate chain (PEM) that signs enrollment profiles (CMS), so that devices show
    /// them as verified [default: --tls-cert's].
    #[arg(
        long,
        env = "MAGICPUSH_PROFILE_SIGNING_CERT",
        requires = "profile_signing_key"
    )]
    profile_signing_cert: Option<PathBuf>,
    /// Private key (PEM: ECDSA P-256/P-384 or RSA 2048–4096) of --profile-signing-cert
    /// [default: --tls-key].
    #[arg(
        long,
        env = "MAGICPUSH_PROFILE_SIGNING_KEY",
        requires = "profile_signing_cert"
    )]
    profile_signing_key: Option<PathBuf>,
    /// Put the CA of the server's TLS certificate (the last certificate of --tls-cert) in
    /// enrollment profiles as a root payload, for a server whose certificate devices do not
    /// trust otherwise (a private CA).
    #[arg(
        long,
        env = "MAGICPUSH_PROFILE_INCLUDE_SERVER_CA",
        requires = "tls_cert"
    )]
    profile_include_server_ca: bool,
    /// CA certificate(s) (PEM) that issue the devices' identity certificates besides the
    /// built-in device CA (an outside SCEP or ACME CA). Unless --insecure-no-device-auth,
    /// every device request must carry an identity certificate of the built-in CA or of
    /// these, bound at Authenticate to the device's UDID (403 otherwise, never 401).
    #[arg(long, env = "MAGICPUSH_DEVICE_CA")]
    device_ca: Option<PathBuf>,
    /// Intermediate CA certificate(s) (PEM) between --device-ca and the identities.
    #[arg(long, env = "MAGICPUSH_DEVICE_INTERMEDIATES", requires = "device_ca")]
    device_intermediates: Option<PathBuf>,
    /// Where the identity certificate comes from, tried in order: `signature` (the
    /// Mdm-Signature header, SignMessage in the MDM payload), `tls` (the TLS client
    /// certificate; needs --tls-cert), `header` (a TLS-terminating proxy's header, named with
    /// --device-cert-header).
    #[arg(long, env = "MAGICPUSH_DEVICE_AUTH", default_value = "signature,tls")]
    device_auth: String,
    /// The request header a trusted TLS-terminating proxy puts the client certificate in
    /// (RFC 9440 `Client-Cert: :<base64 DER>:` or nginx's URL-escaped PEM). Read only when
    /// given; the proxy must strip it from client requests.
    #[arg(long, env = "MAGICPUSH_DEVICE_CERT_HEADER")]
    device_cert_header: Option<String>,
    /// Serve device requests WITHOUT authentication: any client that knows a UDID can act as
    /// that device. For tests and labs only.
    #[arg(
        long,
        env = "MAGICPUSH_INSECURE_NO_DEVICE_AUTH",
        conflicts_with = "device_ca"
    )]
    insecure_no_device_auth: bool,
    /// Largest request body accepted, in bytes.
    #[arg(long, env = "MAGICPUSH_MAX_BODY", default_value_t = http::DEFAULT_BODY_LIMIT)]
    max_body: usize,
    /// Pushes in flight at once during a refresh.
    #[arg(long, env = "MAGICPUSH_PUSH_CONCURRENCY", default_value_t = 256)]
    push_concurrency: usize,
    /// Key (32 bytes: raw, 64 hex digits or base64; `openssl rand -hex 32`) that encrypts the
    /// escrowed UnlockTokens and BootstrapTokens and the push certificates' private keys in the
    /// database. Once used, the database cannot be opened without it. Required with
    /// --database-url.
    #[arg(long, env = "MAGICPUSH_SECRETS_KEY_FILE")]
    secrets_key_file: Option<PathBuf>,
    /// Open connections at most; more are closed as soon as they are accepted.
    #[arg(long, env = "MAGICPUSH_MAX_CONNECTIONS", default_value_t = 10_000)]
    max_connections: usize,
    /// Time for a client to send its request headers; the first request's is counted from
    /// accept, so a connection that sends nothing is closed then. On HTTP/1.1 it runs from the moment a
    /// connection waits for its next request, so it also ends an idle keep-alive connection
    /// when it is shorter than --idle-timeout.
    #[arg(long, env = "MAGICPUSH_HEADER_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    header_timeout: Duration,
    /// Time for a whole request body (408 after it).
    #[arg(long, env = "MAGICPUSH_BODY_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    body_timeout: Duration,
    /// Slowest average body rate accepted after the first 5 s, in bytes per second.
    #[arg(long, env = "MAGICPUSH_MIN_BODY_RATE", default_value_t = 1024)]
    min_body_rate: u64,
    /// A connection with nothing in flight for this long is closed (HTTP/2 PINGs do not
    /// count; on HTTP/1.1 a shorter --header-timeout ends it first).
    #[arg(long, env = "MAGICPUSH_IDLE_TIMEOUT", default_value = "120s", value_parser = parse_duration)]
    idle_timeout: Duration,
    /// HTTP/2 keep-alive PING interval (an unanswered PING drops the connection).
    #[arg(long, env = "MAGICPUSH_H2_KEEPALIVE", default_value = "30s", value_parser = parse_duration)]
    h2_keepalive: Duration,
}

pub(crate) fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    init_tracing();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(serve(args))?;
    Ok(ExitCode::SUCCESS)
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only for a terminal: a log file or journal gets plain text. NO_COLOR is honoured.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .try_init();
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    // Install the Prometheus recorder before anything records (the engine does at build).
    http::metrics::handle();
    if args.database_url.is_some() && args.secrets_key_file.is_none() {
        bail!(
            "--database-url needs --secrets-key-file: with PostgreSQL the escrowed tokens and the \
             push certificates' private keys are always encrypted (make a key with \
             `openssl rand -hex 32 > secrets.key`, and keep it: the database cannot be read \
             without it)"
        );
    }
    // Held until `serve` returns: a second server on this directory refuses to start. (Several
    // servers on one PostgreSQL database is what --database-url is for.)
    let _lock = match &args.data_dir {
        Some(dir) => {
            magicpush_store::private::private_dir(dir)
                .with_context(|| format!("cannot create the data directory {}", dir.display()))?;
            Some(super::lock::DataDirLock::acquire(dir)?)
        }
        None => None,
    };
    magicpush_server::config::check_windows(
        args.collect_every,
        args.unreachable_after
            .unwrap_or(magicpush_server::settings::DEFAULT_UNREACHABLE_AFTER),
    )
    .map_err(anyhow::Error::msg)?;
    let node = NodeSettings {
        name: args.node_name.clone().unwrap_or_else(host_name),
        heartbeat_every: args.heartbeat_every,
        dead_after: args.node_dead_after,
    };
    node.check()
        .map_err(|e| anyhow::anyhow!("--heartbeat-every/--node-dead-after: {e}"))?;
    if args.push_concurrency == 0 {
        bail!("--push-concurrency must be at least 1");
    }
    if args.max_body < 1024 {
        bail!("--max-body must be at least 1024 bytes (a check-in is a few hundred)");
    }
    let now = time::OffsetDateTime::now_utc();
    let secrets_key = match &args.secrets_key_file {
        Some(path) => Some(Arc::new(SecretKey::from_file(path)?)),
        None => None,
    };
    let store: Arc<dyn Store> = match (&args.database_url, &args.data_dir, secrets_key) {
        (Some(url), _, Some(key)) => {
            let store = PostgresStore::open(url.expose(), key)
                .await
                .context("cannot open the device store in PostgreSQL (--database-url)")?;
            tracing::info!("device store: PostgreSQL");
            Arc::new(store)
        }
        (None, Some(dir), secrets_key) => {
            let options = SqliteOptions {
                secrets_key,
                ..SqliteOptions::default()
            };
            let store = SqliteStore::open_with(dir, options)
                .with_context(|| format!("cannot open the device store in {}", dir.display()))?;
            let store: Arc<dyn Store> = Arc::new(store);
            let backups = legacy::migrate(dir, &*store, now)
                .await
                .context("cannot move the push certificate's files into the store")?;
            for backup in &backups {
                tracing::info!(backup = %backup.display(), "moved into the store; the file is kept as a backup");
            }
            store
        }
        // clap requires one of --data-dir and --database-url, and the key is checked above.
        _ => bail!("give --data-dir or --database-url (with --secrets-key-file)"),
    };
    let device_ca = Arc::new(match &args.data_dir {
        Some(dir) if args.database_url.is_none() => {
            super::ca::load_or_create(&super::ca::CaHome::Dir(dir)).await?
        }
        _ => super::ca::load_or_create(&super::ca::CaHome::Store(&*store)).await?,
    });
    let device_auth = device_auth(&args, &device_ca)?;
    let stored = store
        .push_certs()
        .await
        .context("cannot read the push certificate from the store")?;
    let from_flags = certificates_from_flags(&args, now)?;
    let certs = choose_certificates(from_flags, now, &stored);
    let infos: Vec<CertificateInfo> = certs.iter().map(|c| c.cert.info().clone()).collect();
    let given_at_start = given_at_start(&infos, &stored);
    for info in &infos {
        tracing::info!(
            subject = %info.subject(),
            topic = %info.topic(),
            not_after = %magicpush_store::rfc3339(info.not_after()),
            days_left = info.days_left(now),
            "push certificate loaded"
        );
    }
    if infos.is_empty() {
        tracing::warn!(
            "{}; check-ins are served, pushes and refreshes are refused until then",
            magicpush_server::service::pushcert::NO_CERTIFICATE
        );
    }
    let names: Vec<(String, String)> = certs
        .iter()
        .filter_map(|c| Some((c.cert.topic().to_owned(), c.name.clone()?)))
        .collect();
    let pushcert_settings = pushcert_settings(&args)?;

    let client_hints = match &device_auth {
        DeviceAuth::Required(a) if a.sources().contains(&IdentitySource::Tls) => {
            Some(a.trust().root_subjects())
        }
        _ => None,
    };
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(
            http::tls::server_config(cert, key, client_hints).context("--tls-cert/--tls-key")?,
        ),
        _ => None,
    };

    if args.apns_connections == 0 || args.apns_max_total_connections == 0 {
        bail!("--apns-connections and --apns-max-total-connections must be at least 1");
    }
    let mut builder = Client::builder()
        .connections(args.apns_connections)
        .max_total_connections(args.apns_max_total_connections);
    if let Some(url) = &args.apns_url {
        let endpoint = url.parse().with_context(|| format!("--apns-url {url}"))?;
        builder = builder.endpoint(endpoint);
    }
    if let Some(url) = &args.apns_proxy {
        builder = builder.proxy(url.expose()).context("--apns-proxy")?;
    }
    if let Some(path) = &args.apns_ca {
        let pem = std::fs::read(path)
            .with_context(|| format!("cannot read --apns-ca {}", path.display()))?;
        builder = builder
            .trust_anchor_pem(&pem)
            .with_context(|| format!("--apns-ca {}", path.display()))?;
    }
    let pusher = Arc::new(
        EnginePusher::new(builder, certs.into_iter().map(|c| c.cert))
            .context("cannot start the APNs client")?,
    );

    let enrolled = store
        .enrolled_topics()
        .await
        .context("cannot read the enrolled devices' topics")?;
    if !infos.is_empty() {
        let topics: Vec<&str> = infos.iter().map(|i| i.topic()).collect();
        check_topics_at_start(&topics, &enrolled)?;
        if enrolled.is_empty() {
            tracing::info!(topics = %topics.join(", "), "no enrolled device yet: the push certificates' topics are the ones devices will enroll with");
        }
    }
    let notifier = match &args.notify_url {
        Some(url) => Some(
            Notifier::spawn(NotifyConfig::new(url.clone(), notify_secret(&args)?))
                .context("the webhook cannot be used")?,
        ),
        None => None,
    };
    let profiles = enrollment_profiles(&args)?;
    let service = Arc::new(
        Service::new(
            store,
            pusher.clone() as Arc<dyn PushSender>,
            PushCertState::with_settings(infos, pushcert_settings, notifier)
                .given_at_start(given_at_start),
            ServiceConfig {
                unreachable_after: args.unreachable_after,
                collect_every: args.collect_every,
                push_concurrency: args.push_concurrency,
                node,
            },
        )
        .with_device_ca(device_ca)
        .with_enrollment_profiles(profiles.map(Arc::new)),
    );

    service
        .load_pushcert_state()
        .await
        .context("cannot read the push certificate's state from the store")?;
    name_tenants(&service, names).await?;
    load_settings(&service).await?;
    let api_key = match &args.api_key_file {
        Some(path) => Some(super::remote::read_key_file(path, "--api-key-file")?),
        None => args.api_key.as_ref().map(|k| k.expose().to_owned()),
    };
    let admin_key = AdminKey::new(api_key.as_deref());
    if !admin_key.is_enabled() {
        tracing::warn!("no --api-key: the admin API is disabled");
    }
    let sessions = SessionSettings {
        ttl: args.session_ttl,
        idle: args.session_idle,
    }
    .check()?;
    let app = Arc::new(
        App::new(service.clone(), admin_key, args.max_body, device_auth).with_sessions(sessions),
    );
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let settings = listener_settings(&args)?;
    let server = http::spawn(listener, tls, app, settings)?;
    tracing::info!(url = %server.url(), "magicpush check-in server listening");
    // One line on stdout for supervisors and tests (the port may have been 0).
    println!("listening on {}", server.url());
    service.set_node_url(&server.url());
    tracing::info!(node = %service.node_name(), node_id = %service.node_id(), "node started");
    let heartbeat = service.spawn_heartbeat();
    let watch = service.spawn_pushcert_watch(PUSHCERT_CHECK_EVERY);
    // Other nodes on the database register, renew and remove certificates too.
    let pushcert_sync = service.spawn_pushcert_sync(args.pushcert_sync_every);

    shutdown_signal().await;
    tracing::info!("shutting down: finishing in-flight requests");
    service.stop_collector();
    watch.abort();
    if let Some(sync) = pushcert_sync {
        sync.abort();
    }
    server.shutdown().await;
    // Pushes not yet sent are taken back; those in flight get up to 10 s to end, then the
    // pool stops (ending the rest) and their outcomes get 5 s more to be written.
    if !service.stop_pushing(Duration::from_secs(10)).await {
        tracing::warn!("pushes still in flight after 10 s: stopping the APNs client");
    }
    pusher.shutdown().await;
    if !service.pushes_settled(Duration::from_secs(5)).await {
        tracing::warn!("some push outcomes were not written before exit");
    }
    heartbeat.abort();
    tracing::info!("stopped");
    Ok(())
}

/// Applies the settings in force (a setting stored through `PUT /v1/settings` wins over its
/// flag), saying which flags a stored setting overrides; this starts the scheduled
/// collection if it is on.
async fn load_settings(service: &Arc<Service>) -> anyhow::Result<()> {
    let stored = service.load_settings().await.context(
        "cannot apply the run-time settings (those stored through PUT /v1/settings win over \
             --collect-every and --unreachable-after)",
    )?;
    for o in magicpush_server::settings::overrides(service.start_settings(), &stored) {
        tracing::warn!("{o}");
    }
    Ok(())
}

/// The host's name (the default node name), `magicpush` if it cannot be read.
fn host_name() -> String {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "magicpush".into())
}

/// How often the push certificate's expiry is checked (thresholds are in days).
const PUSHCERT_CHECK_EVERY: Duration = Duration::from_secs(3600);

/// The certificate's life from the flags: thresholds, request defaults, the vendor identity.
fn pushcert_settings(args: &ServeArgs) -> anyhow::Result<PushCertSettings> {
    let thresholds = Thresholds::parse(&args.expiry_warn_days)
        .map_err(|e| anyhow::anyhow!("--expiry-warn-days: {e}"))?;
    let csr_subject = Subject {
        email: args.csr_email.clone(),
        common_name: args.csr_cn.clone(),
        country: args.csr_country.clone(),
    };
    if csr_subject != Subject::default() {
        // Only the fields given are checked; the request may add the others.
        let probe = Subject {
            common_name: csr_subject.common_name.clone().or(Some("x".into())),
            ..csr_subject.clone()
        };
        probe.validate().map_err(|e| anyhow::anyhow!("--csr-{e}"))?;
    }
    let vendor = match (&args.vendor_cert, &args.vendor_key) {
        (Some(cert), Some(key)) => Some(Arc::new(load_vendor(
            cert,
            key,
            args.vendor_chain.as_deref(),
            args.vendor_name.as_deref(),
        )?)),
        _ => None,
    };
    Ok(PushCertSettings {
        thresholds,
        csr_subject,
        vendor,
        vendor_name: args.vendor_name.clone(),
    })
}

/// The vendor signing identity from its files.
pub(crate) fn load_vendor(
    cert: &std::path::Path,
    key: &std::path::Path,
    chain: Option<&std::path::Path>,
    name: Option<&str>,
) -> anyhow::Result<VendorIdentity> {
    let read = |p: &std::path::Path, flag: &str| {
        std::fs::read(p).with_context(|| format!("cannot read {flag} {}", p.display()))
    };
    let cert_pem = read(cert, "--vendor-cert")?;
    let key_pem = read(key, "--vendor-key")?;
    let chain_pem = chain.map(|c| read(c, "--vendor-chain")).transpose()?;
    Ok(VendorIdentity::from_pem(
        &cert_pem,
        &key_pem,
        chain_pem.as_deref(),
        name,
    )?)
}

/// The webhook secret from --notify-secret or --notify-secret-file (trailing newline
/// dropped).
fn notify_secret(args: &ServeArgs) -> anyhow::Result<Option<String>> {
    if let Some(path) = &args.notify_secret_file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read --notify-secret-file {}", path.display()))?;
        let secret = text.trim_end_matches(['\r', '\n']).to_owned();
        if secret.is_empty() {
            bail!("--notify-secret-file {} is empty", path.display());
        }
        return Ok(Some(secret));
    }
    Ok(args
        .notify_secret
        .as_ref()
        .map(|s| s.expose().to_owned())
        .filter(|s| !s.is_empty()))
}

/// The listener's limits from the flags; a zero duration or rate is refused.
fn listener_settings(args: &ServeArgs) -> anyhow::Result<ListenerSettings> {
    for (flag, d) in [
        ("--header-timeout", args.header_timeout),
        ("--body-timeout", args.body_timeout),
        ("--idle-timeout", args.idle_timeout),
        ("--h2-keepalive", args.h2_keepalive),
    ] {
        if d.is_zero() {
            bail!("{flag} must be longer than 0s");
        }
    }
    if args.min_body_rate == 0 || args.max_connections == 0 {
        bail!("--min-body-rate and --max-connections must be at least 1");
    }
    Ok(ListenerSettings {
        max_connections: args.max_connections,
        header_read_timeout: args.header_timeout,
        body: http::timing::BodyPolicy {
            timeout: args.body_timeout,
            min_rate: args.min_body_rate,
            grace: Duration::from_secs(5).min(args.body_timeout),
        },
        idle_timeout: args.idle_timeout,
        h2_keepalive: args.h2_keepalive,
        ..ListenerSettings::default()
    })
}

/// Device authentication from the flags: on unless `--insecure-no-device-auth`, trusting the
/// built-in device CA and any `--device-ca` roots.
fn device_auth(args: &ServeArgs, builtin: &magicpush_scep::DeviceCa) -> anyhow::Result<DeviceAuth> {
    if args.insecure_no_device_auth {
        tracing::warn!(
            "--insecure-no-device-auth: device requests are NOT authenticated; any client that knows a UDID can act as that device (replace its push token, read its bootstrap token, check it out)"
        );
        return Ok(DeviceAuth::Off);
    }
    let sources = parse_sources(&args.device_auth)?;
    let header = args
        .device_cert_header
        .as_deref()
        .map(|name| {
            ::http::HeaderName::from_bytes(name.trim().as_bytes())
                .with_context(|| format!("--device-cert-header {name:?} is not a header name"))
        })
        .transpose()?;
    if header.is_some() && !sources.contains(&IdentitySource::Header) {
        tracing::warn!("--device-cert-header is set but `header` is not in --device-auth: the header is not read");
    }
    let tls_on = args.tls_cert.is_some();
    if !tls_on && sources.iter().all(|s| *s == IdentitySource::Tls) {
        bail!("--device-auth tls needs --tls-cert (without TLS no device can present a client certificate); add `signature` or `header` to --device-auth, or serve TLS");
    }
    let trust = DeviceTrust::with_builtin(
        builtin.certificate_der(),
        args.device_ca.as_deref(),
        args.device_intermediates.as_deref(),
    )
    .context("--device-ca/--device-intermediates")?;
    let authenticator = DeviceAuthenticator::new(sources, trust, header)?;
    let roots = match &args.device_ca {
        Some(ca) => format!("the built-in device CA and {}", ca.display()),
        None => "the built-in device CA".to_owned(),
    };
    tracing::info!(
        sources = %authenticator.describe(),
        device_ca = %roots,
        "device requests are authenticated{}",
        if tls_on || !authenticator.sources().contains(&IdentitySource::Tls) { "" } else { " (the tls source is idle without --tls-cert)" }
    );
    Ok(DeviceAuth::Required(Arc::new(authenticator)))
}

/// The push certificate to start with: the one given by flags, or the one installed through
/// `PUT /v1/pushcert` (kept in the store), whichever expires later when both exist and have
/// the same topic. Refuses an expired, not-yet-valid, non-MDM or mismatched one.
/// A certificate to start with, and the name its file gives its tenant (`--cert-dir`).
struct Loaded {
    cert: PushCertificate,
    name: Option<String>,
}

/// The certificates of `--cert`/`--key` and `--cert-dir`, each usable now, one per topic.
fn certificates_from_flags(
    args: &ServeArgs,
    now: time::OffsetDateTime,
) -> anyhow::Result<Vec<(Loaded, String)>> {
    if !args.key.is_empty() && args.key.len() != args.cert.len() {
        bail!(
            "{} --cert but {} --key: give one --key per --cert, in the same order (or none, when each --cert holds its key)",
            args.cert.len(),
            args.key.len()
        );
    }
    let mut loaded = Vec::new();
    for (i, cert) in args.cert.iter().enumerate() {
        let flags = CertFlags {
            cert,
            key: args.key.get(i).map(PathBuf::as_path),
            password_file: args.cert_password_file.as_deref(),
            password: args.cert_password.as_ref(),
        };
        let c = super::push_cert::load(&flags)?;
        loaded.push((
            Loaded {
                cert: c,
                name: None,
            },
            format!("--cert {}", cert.display()),
        ));
    }
    if let Some(dir) = &args.cert_dir {
        for (name, pem, key) in cert_dir_pairs(dir)? {
            let flags = CertFlags {
                cert: &pem,
                key: key.as_deref(),
                password_file: None,
                password: None,
            };
            let c = super::push_cert::load(&flags)
                .with_context(|| format!("--cert-dir {}", dir.display()))?;
            loaded.push((
                Loaded {
                    cert: c,
                    name: Some(name),
                },
                format!("{}", pem.display()),
            ));
        }
    }
    let mut seen: std::collections::BTreeMap<String, &str> = Default::default();
    for (l, source) in &loaded {
        check_usable(&l.cert, now).with_context(|| source.clone())?;
        if let Some(first) = seen.insert(l.cert.topic().to_owned(), source) {
            bail!(
                "{first} and {source} are both certificates for topic {}: give one certificate per tenant",
                l.cert.topic()
            );
        }
    }
    Ok(loaded)
}

/// The `<name>.pem` files of a `--cert-dir`, with their `<name>.key` when there is one, by
/// name.
fn cert_dir_pairs(dir: &Path) -> anyhow::Result<Vec<(String, PathBuf, Option<PathBuf>)>> {
    let entries = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read --cert-dir {}", dir.display()))?;
    let mut pairs = Vec::new();
    for entry in entries {
        let path = entry
            .with_context(|| format!("cannot read --cert-dir {}", dir.display()))?
            .path();
        if path.extension().and_then(|e| e.to_str()) != Some("pem") {
            continue;
        }
        let Some(name) = path.file_stem().and_then(|s| s.to_str()).map(str::to_owned) else {
            continue;
        };
        let key = path.with_extension("key");
        pairs.push((name, path, key.is_file().then_some(key)));
    }
    if pairs.is_empty() {
        bail!(
            "--cert-dir {} holds no <name>.pem: put each tenant's certificate there as <name>.pem with its key as <name>.key",
            dir.display()
        );
    }
    pairs.sort();
    Ok(pairs)
}

/// The certificates to start with: every tenant's registered through the admin API (kept in
/// the store), and those of the flags. For a topic in both, the flag's, unless the store's
/// is a later renewal of it (installed with `PUT /v1/pushcert`) that has not expired.
fn choose_certificates(
    from_flags: Vec<(Loaded, String)>,
    now: time::OffsetDateTime,
    stored: &[magicpush_store::StoredPushCert],
) -> Vec<Loaded> {
    let mut chosen: std::collections::BTreeMap<String, Loaded> = Default::default();
    for s in stored {
        match from_stored(s) {
            Ok(cert) => {
                if cert.is_expired(now) {
                    tracing::warn!(topic = %s.topic, "the stored push certificate of this tenant has EXPIRED: its devices cannot be pushed until it is renewed (PUT /v1/pushcert?topic={})", s.topic);
                }
                chosen.insert(s.topic.clone(), Loaded { cert, name: None });
            }
            Err(err) => {
                tracing::warn!(topic = %s.topic, "ignoring the stored push certificate: {err}");
            }
        }
    }
    for (flag, _) in from_flags {
        let topic = flag.cert.topic().to_owned();
        let keep_stored = chosen.get(&topic).is_some_and(|stored| {
            stored.cert.info().not_after() > flag.cert.info().not_after()
                && !stored.cert.is_expired(now)
        });
        if keep_stored {
            tracing::info!(%topic, "using the certificate installed through the admin API, which expires after the one given at start");
            if let Some(stored) = chosen.get_mut(&topic) {
                stored.name = flag.name;
            }
        } else {
            chosen.insert(topic, flag);
        }
    }
    chosen.into_values().collect()
}

/// The certificates started with that the store does not keep (given by the flags), as
/// topic → serial: another node's changes in the store must not undo them.
fn given_at_start(
    infos: &[CertificateInfo],
    stored: &[magicpush_store::StoredPushCert],
) -> Vec<(String, String)> {
    let stored_serials: std::collections::BTreeMap<&str, String> = stored
        .iter()
        .filter_map(|s| {
            Some((
                s.topic.as_str(),
                from_stored(s).ok()?.info().serial().to_owned(),
            ))
        })
        .collect();
    infos
        .iter()
        .filter(|i| stored_serials.get(i.topic()).map(String::as_str) != Some(i.serial()))
        .map(|i| (i.topic().to_owned(), i.serial().to_owned()))
        .collect()
}

/// Gives the tenants of `--cert-dir` their file's name, where they have none yet.
async fn name_tenants(service: &Service, names: Vec<(String, String)>) -> anyhow::Result<()> {
    for (topic, name) in names {
        let unnamed = service
            .pushcert(Some(&topic))
            .map(|v| v.name.is_none())
            .unwrap_or(false);
        if unnamed {
            let update = TenantUpdate {
                name: Some(name),
                apple_id: None,
            };
            service
                .set_tenant(&topic, update)
                .await
                .with_context(|| format!("cannot name the tenant of topic {topic}"))?;
        }
    }
    Ok(())
}

fn check_usable(cert: &PushCertificate, now: time::OffsetDateTime) -> anyhow::Result<()> {
    let info = cert.info();
    if info.is_expired(now) {
        bail!(
            "the push certificate {} expired on {}; renew it in the Apple Push Certificates Portal (\"Renew\", same Apple ID) and start again with the new file",
            info.subject(),
            magicpush_store::rfc3339(info.not_after())
        );
    }
    if info.is_not_yet_valid(now) {
        bail!(
            "the push certificate {} is not valid before {}; check this machine's clock",
            info.subject(),
            magicpush_store::rfc3339(info.not_before())
        );
    }
    Ok(())
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn parse_public_url(text: &str) -> Result<PublicUrl, String> {
    PublicUrl::parse(text).map_err(|e| e.to_string())
}

/// The enrollment profiles `serve` hands out: none without --public-url; signed with
/// --profile-signing-cert/key, else with the TLS certificate and key, else unsigned (warned).
fn enrollment_profiles(args: &ServeArgs) -> anyhow::Result<Option<EnrollmentProfiles>> {
    let Some(url) = args.public_url.clone() else {
        return Ok(None);
    };
    let read = |path: &std::path::Path, flag: &str| {
        std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {flag} {}", path.display()))
    };
    let signer = match (
        &args.profile_signing_cert,
        &args.profile_signing_key,
        &args.tls_cert,
        &args.tls_key,
    ) {
        (Some(cert), Some(key), _, _) => Some(
            ProfileSigner::from_pem(
                &read(cert, "--profile-signing-cert")?,
                &read(key, "--profile-signing-key")?,
            )
            .context("--profile-signing-cert/--profile-signing-key")?,
        ),
        (_, _, Some(cert), Some(key)) => {
            match ProfileSigner::from_pem(&read(cert, "--tls-cert")?, &read(key, "--tls-key")?) {
                Ok(signer) => Some(signer),
                Err(e) => {
                    tracing::warn!(error = %e, "enrollment profiles are UNSIGNED: the TLS certificate cannot sign them; give --profile-signing-cert/--profile-signing-key");
                    None
                }
            }
        }
        _ => None,
    };
    match &signer {
        Some(s) => tracing::info!(signer = %s.subject(), "enrollment profiles are signed"),
        None if args.tls_cert.is_none() => tracing::warn!(
            "enrollment profiles are UNSIGNED (devices show them as not verified): give --profile-signing-cert/--profile-signing-key, or serve TLS with --tls-cert/--tls-key"
        ),
        None => {}
    }
    let server_ca = if args.profile_include_server_ca {
        let path = args
            .tls_cert
            .as_deref()
            .context("--profile-include-server-ca needs --tls-cert")?;
        let pem = read(path, "--tls-cert")?;
        let chain =
            pem::parse_many(&pem).with_context(|| format!("--tls-cert {}", path.display()))?;
        let last = chain
            .into_iter()
            .rfind(|p| p.tag() == "CERTIFICATE")
            .with_context(|| format!("--tls-cert {} holds no certificate", path.display()))?;
        Some(last.into_contents())
    } else {
        None
    };
    if url.is_plain_http() {
        tracing::warn!(public_url = %url, "--public-url is plain http: devices enroll only over https (tests and labs only)");
    }
    tracing::info!(public_url = %url, "enrollment invitations are on: POST /v1/enrollments");
    Ok(Some(EnrollmentProfiles::new(url, signer, server_ca)))
}
