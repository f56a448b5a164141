//! What the CLI tests share: a `magicpush serve` child process that has said where it
//! listens, killed when dropped.

use std::io::{BufRead, BufReader};
use std::process::Child;
use std::time::Duration;

/// How long a `serve` may take to print `listening on URL` (a debug build on a busy machine,
/// a device CA made at first start).
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A running `serve`, killed (and reaped) when dropped.
pub(crate) struct Serve {
    pub(crate) child: Child,
    /// `http://127.0.0.1:PORT`, from its `listening on` line.
    pub(crate) url: String,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Serve {
    /// Waits for `child` (spawned with its stdout piped) to print `listening on URL`. `None`
    /// if it does not within [`START_TIMEOUT`] (it is killed then) or exits first.
    pub(crate) fn listening(mut child: Child) -> Option<Serve> {
        let stdout = child.stdout.take().expect("serve's stdout is piped");
        let mut serve = Serve {
            child,
            url: String::new(),
        };
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("listening on ") {
                    let _ = tx.send(url.to_owned());
                }
            }
        });
        serve.url = rx.recv_timeout(START_TIMEOUT).ok()?;
        Some(serve)
    }
}
