//! A TCP forwarder to stand between a client and a server and be cut: the server becomes
//! unreachable (no listener, every connection through it dropped) without being stopped,
//! and comes back on the same port when restored. The PostgreSQL outage tests put it between
//! a store and the shared test database.

use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

/// Forwards `127.0.0.1:`[`Forwarder::port`] to a target address until cut.
#[derive(Debug)]
pub struct Forwarder {
    port: u16,
    target: SocketAddr,
    task: Option<JoinHandle<()>>,
}

impl Forwarder {
    /// Listens on a free loopback port and forwards each connection to `target`.
    pub async fn start(target: SocketAddr) -> std::io::Result<Forwarder> {
        let listener = listen(0)?;
        let port = listener.local_addr()?.port();
        let task = Some(tokio::spawn(forward(listener, target)));
        Ok(Forwarder { port, target, task })
    }

    /// The port clients connect to.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The target becomes unreachable: the listener closes and every connection through it
    /// is dropped.
    pub async fn cut(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }

    /// Forwards again, on the same port.
    pub fn restore(&mut self) -> std::io::Result<()> {
        if self.task.is_none() {
            let listener = listen(self.port)?;
            self.task = Some(tokio::spawn(forward(listener, self.target)));
        }
        Ok(())
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

fn listen(port: u16) -> std::io::Result<TcpListener> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(SocketAddr::from(([127, 0, 0, 1], port)))?;
    socket.listen(64)
}

/// Accepts and copies both ways. Aborting this task drops the listener and, with the
/// `JoinSet`, every connection it holds.
async fn forward(listener: TcpListener, target: SocketAddr) {
    let mut conns = JoinSet::new();
    loop {
        while conns.try_join_next().is_some() {}
        let Ok((mut inbound, _)) = listener.accept().await else {
            continue;
        };
        conns.spawn(async move {
            if let Ok(mut outbound) = TcpStream::connect(target).await {
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            }
        });
    }
}

/// `url` (`postgres://user@host:port/db?…`) with its `host:port` replaced by
/// `127.0.0.1:port`, and the `host:port` it had.
pub fn redirect_url(url: &str, port: u16) -> Option<(String, String)> {
    let start = url
        .find('@')
        .map(|i| i + 1)
        .or_else(|| url.find("://").map(|i| i + 3))?;
    let end = start + url[start..].find('/')?;
    let via = format!("{}127.0.0.1:{port}{}", &url[..start], &url[end..]);
    Some((via, url[start..end].to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_redirected_through_the_forwarder() {
        let (via, host) =
            redirect_url("postgres://postgres@127.0.0.1:55452/db?sslmode=disable", 9).unwrap();
        assert_eq!(via, "postgres://postgres@127.0.0.1:9/db?sslmode=disable");
        assert_eq!(host, "127.0.0.1:55452");
        let (via, host) = redirect_url("postgres://db.example:5432/x", 7).unwrap();
        assert_eq!(via, "postgres://127.0.0.1:7/x");
        assert_eq!(host, "db.example:5432");
    }
}
