//! The magicpush server under test, run as a child process so its memory is measured apart
//! from the load generator's. The child is this program's hidden `serve-child` subcommand,
//! which runs the checkin library's `magicpush serve` unchanged.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::FleetError;

/// How long the child may take to print its address.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the child may take to exit after its stdin closes.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// What the child is started with.
#[derive(Debug, Clone)]
pub struct ServeSettings {
    /// Program that understands `serve-child` (normally `magicpush-loadtest` itself).
    pub exe: PathBuf,
    /// Where the server keeps its devices.
    pub store: NodeStore,
    /// Push certificate and key (PEM files).
    pub cert: PathBuf,
    /// Push key.
    pub key: PathBuf,
    /// The mock APNs' URL and the CA it is trusted with.
    pub apns_url: String,
    /// CA for the mock APNs' TLS certificate.
    pub apns_ca: PathBuf,
    /// Admin API key.
    pub api_key: String,
    /// The server's `--unreachable-after`.
    pub unreachable_after: Duration,
    /// The server's `--push-concurrency`.
    pub push_concurrency: usize,
    /// `RUST_LOG` of the server when ours is unset (None: warnings, except serve's start-up
    /// notes, such as the one that device requests are not authenticated).
    pub log_filter: Option<String>,
    /// How the server authenticates the devices.
    pub device_auth: ServeDeviceAuth,
}

/// How a started server authenticates the devices.
#[derive(Debug, Clone)]
pub enum ServeDeviceAuth {
    /// `--device-ca`: the devices sign their requests with identities this CA issued.
    Ca(PathBuf),
    /// Its built-in device CA (no `--device-ca`), devices enrolling at its `/scep`, and
    /// `--public-url` its own address (the invitations and profiles name it).
    BuiltIn,
    /// `--insecure-no-device-auth`.
    Insecure,
}

/// Where a started server keeps its devices.
#[derive(Clone)]
pub enum NodeStore {
    /// SQLite in this data directory (one server per directory: it is locked).
    Sqlite {
        /// `--data-dir`.
        data_dir: PathBuf,
    },
    /// PostgreSQL, which several servers (nodes) can share.
    Postgres {
        /// Given to the child in `MAGICPUSH_DATABASE_URL`, not on its command line, which
        /// every local user can read (the URL may hold a password).
        url: String,
        /// `--secrets-key-file` (required with PostgreSQL; one key for all the nodes).
        secrets_key_file: PathBuf,
    },
}

impl std::fmt::Debug for NodeStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NodeStore::Sqlite { data_dir } => f
                .debug_struct("Sqlite")
                .field("data_dir", data_dir)
                .finish(),
            // Not the URL: it may hold a password.
            NodeStore::Postgres {
                secrets_key_file, ..
            } => f
                .debug_struct("Postgres")
                .field("secrets_key_file", secrets_key_file)
                .finish_non_exhaustive(),
        }
    }
}

/// How a child is launched, beyond what it serves with ([`ServeSettings`]): the fleet's
/// defaults, or those of a long-running server a person uses (`demo`).
#[derive(Debug, Clone)]
pub struct Launch {
    /// `--listen` (port 0: any free port).
    pub listen: SocketAddr,
    /// Give the server `--api-key-file` instead of the key on its command line.
    pub api_key_file: Option<PathBuf>,
    /// Keep the child's log (stderr): pass each line on to ours and remember the last
    /// [`LOG_TAIL`] for [`ServerProcess::log_tail`]. Otherwise it inherits our stderr.
    pub keep_log: bool,
    /// Start the child in a process group of its own, so that a terminal's Ctrl-C reaches
    /// only us and we stop it in order ([`ServerProcess::terminate`]).
    pub own_process_group: bool,
    /// Give the server `--public-url http://<its address>` whatever its device
    /// authentication ([`ServeDeviceAuth::BuiltIn`] always does), so that it hands out
    /// enrollment invitations: with `--device-ca` its built-in device CA is there too.
    pub public_url: bool,
}

impl Default for Launch {
    fn default() -> Self {
        Launch {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            api_key_file: None,
            keep_log: false,
            own_process_group: false,
            public_url: false,
        }
    }
}

/// `listen` with a port free now (bound and let go): the child binds it a moment later.
fn free_port(listen: SocketAddr) -> Result<SocketAddr, FleetError> {
    std::net::TcpListener::bind(listen)
        .and_then(|l| l.local_addr())
        .map_err(|e| FleetError::Server {
            detail: format!("no free port on {}: {e}", listen.ip()),
        })
}

/// Log lines of the child kept with [`Launch::keep_log`].
pub const LOG_TAIL: usize = 20;

/// A running server child. Stops it when dropped.
#[derive(Debug)]
pub struct ServerProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    url: String,
    log: Arc<Mutex<VecDeque<String>>>,
}

impl ServerProcess {
    /// Starts the child and waits for its `listening on <url>` line.
    pub fn spawn(settings: &ServeSettings) -> Result<ServerProcess, FleetError> {
        Self::spawn_with(settings, &Launch::default())
    }

    /// [`ServerProcess::spawn`] launched as `launch` says.
    pub fn spawn_with(
        settings: &ServeSettings,
        launch: &Launch,
    ) -> Result<ServerProcess, FleetError> {
        let mut listen = launch.listen;
        let public_url =
            launch.public_url || matches!(settings.device_auth, ServeDeviceAuth::BuiltIn);
        if public_url && listen.port() == 0 {
            // `--public-url` needs the port before the server has it: a free one now.
            listen = free_port(listen)?;
        }
        let mut cmd = Command::new(&settings.exe);
        cmd.arg("serve-child")
            .arg("--listen")
            .arg(listen.to_string())
            .arg("--cert")
            .arg(&settings.cert)
            .arg("--key")
            .arg(&settings.key)
            .arg("--apns-url")
            .arg(&settings.apns_url)
            .arg("--apns-ca")
            .arg(&settings.apns_ca)
            .arg("--unreachable-after")
            .arg(format!("{}s", settings.unreachable_after.as_secs().max(1)))
            .arg("--push-concurrency")
            .arg(settings.push_concurrency.to_string());
        match &launch.api_key_file {
            Some(file) => cmd.arg("--api-key-file").arg(file),
            None => cmd.arg("--api-key").arg(&settings.api_key),
        };
        match &settings.device_auth {
            ServeDeviceAuth::Ca(ca) => {
                cmd.arg("--device-ca").arg(ca);
            }
            ServeDeviceAuth::BuiltIn => {}
            ServeDeviceAuth::Insecure => {
                cmd.arg("--insecure-no-device-auth");
            }
        }
        if public_url {
            cmd.arg("--public-url").arg(format!("http://{listen}"));
        }
        match &settings.store {
            NodeStore::Sqlite { data_dir } => cmd.arg("--data-dir").arg(data_dir),
            NodeStore::Postgres {
                secrets_key_file, ..
            } => cmd.arg("--secrets-key-file").arg(secrets_key_file),
        };
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(if launch.keep_log {
                Stdio::piped()
            } else {
                Stdio::inherit()
            });
        if launch.own_process_group {
            std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        }
        // The flags above are the whole configuration: no MAGICPUSH_* from our environment.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("MAGICPUSH_") {
                cmd.env_remove(name);
            }
        }
        if let NodeStore::Postgres { url, .. } = &settings.store {
            cmd.env("MAGICPUSH_DATABASE_URL", url);
        }
        if std::env::var_os("RUST_LOG").is_none() {
            let filter = settings
                .log_filter
                .as_deref()
                .unwrap_or("warn,magicpush_cli::serve=error");
            cmd.env("RUST_LOG", filter);
        }
        let mut child = cmd.spawn().map_err(|e| FleetError::Server {
            detail: format!("cannot start {} serve-child: {e}", settings.exe.display()),
        })?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take();
        let log = Arc::new(Mutex::new(VecDeque::with_capacity(LOG_TAIL)));
        if let Some(stderr) = child.stderr.take() {
            let log = log.clone();
            std::thread::spawn(move || keep_log(stderr, &log));
        }
        let (tx, rx) = std::sync::mpsc::channel();
        if let Some(stdout) = stdout {
            std::thread::spawn(move || {
                let mut tx = Some(tx);
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    if let Some(url) = line.strip_prefix("listening on ") {
                        if let Some(tx) = tx.take() {
                            let _ = tx.send(url.trim().to_owned());
                        }
                    }
                }
            });
        }
        let mut process = ServerProcess {
            child,
            stdin,
            url: String::new(),
            log,
        };
        match rx.recv_timeout(START_TIMEOUT) {
            Ok(url) => process.url = url,
            Err(_) => {
                let status = process.child.try_wait().ok().flatten();
                return Err(FleetError::Server {
                    detail: match status {
                        Some(s) => format!("the server exited before listening ({s})"),
                        None => format!("the server did not listen within {START_TIMEOUT:?}"),
                    },
                });
            }
        }
        Ok(process)
    }

    /// The server's base URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Peak resident memory of the child so far (Linux), in MiB.
    pub fn peak_rss_mb(&self) -> Option<f64> {
        crate::rss::peak_rss_mb_of(self.pid())
    }

    /// The child's exit status once it has exited (`None` while it runs).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// The last lines the child logged (with [`Launch::keep_log`]; empty otherwise).
    pub fn log_tail(&self) -> Vec<String> {
        let log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        log.iter().cloned().collect()
    }

    /// Stops the child as a supervisor does: SIGTERM, so that `serve` finishes its in-flight
    /// requests and closes its store; then waits up to `grace`, then [`ServerProcess::stop`].
    /// Its exit status, if it exited.
    pub fn terminate(mut self, grace: Duration) -> Option<ExitStatus> {
        if self.exited().is_none() {
            // Our own child, not yet reaped (try_wait saw it running; only we wait for it).
            let pid = i32::try_from(self.child.id())
                .ok()
                .and_then(rustix::process::Pid::from_raw);
            if let Some(pid) = pid {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
            }
            let deadline = std::time::Instant::now() + grace;
            while self.exited().is_none() && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let status = self.exited();
        if status.is_some() {
            return status;
        }
        self.stop_inner();
        self.exited()
    }

    /// Closes the child's stdin (it exits at EOF; everything it answered is already durable)
    /// and waits; kills it if it does not exit in time.
    pub fn stop(mut self) {
        self.stop_inner();
    }

    fn stop_inner(&mut self) {
        drop(self.stdin.take());
        let deadline = std::time::Instant::now() + STOP_TIMEOUT;
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) => return,
                Ok(None) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => break,
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Passes the child's log lines on to our stderr, keeping the last [`LOG_TAIL`].
fn keep_log(stderr: std::process::ChildStderr, log: &Mutex<VecDeque<String>>) {
    for line in BufReader::new(stderr).lines() {
        let Ok(line) = line else { break };
        let _ = writeln!(std::io::stderr(), "{line}");
        let mut log = log.lock().unwrap_or_else(|e| e.into_inner());
        if log.len() == LOG_TAIL {
            log.pop_front();
        }
        log.push_back(line);
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.stop_inner();
        }
    }
}

/// The body of `serve-child`: exit when stdin reaches EOF (the parent is done or died), and
/// otherwise run `magicpush serve` with `args`.
pub fn serve_child_main(args: &[std::ffi::OsString]) -> std::process::ExitCode {
    std::thread::spawn(|| {
        let mut sink = Vec::new();
        let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
        std::process::exit(0);
    });
    let argv = ["magicpush".into(), "serve".into()]
        .into_iter()
        .chain(args.iter().cloned())
        .collect::<Vec<std::ffi::OsString>>();
    magicpush_cli::main_from(argv)
}
