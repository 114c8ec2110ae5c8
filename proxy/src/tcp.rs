//! Plain TCP forwarding for ports that do not speak HTTP (databases, caches, custom protocols).
//!
//! Each accepted connection is given to an endpoint of the listener's upstream, chosen by its
//! balancer, and bytes are copied both ways until either side closes. A failed connect moves on to
//! another endpoint (nothing has been sent yet, so this is always safe). The endpoint counts the
//! connection as in flight while it is open, which is what `least_connections` and `least_request`
//! compare.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderMap;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::task::TaskTracker;

use crate::retry::Outcome;
use crate::upstream::Upstream;

/// Connect attempts per accepted connection, each to a different endpoint when there is one.
const MAX_CONNECT_ATTEMPTS: usize = 3;
/// Pause after a failed `accept` (e.g. out of file descriptors) so the loop does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// A bound TCP forwarding socket and the channel its current upstream is read from.
#[derive(Debug)]
pub(crate) struct TcpForwarder {
    /// `tcp[i]`, for logs.
    pub(crate) role: String,
    /// The bound socket.
    pub(crate) socket: TcpListener,
    /// The upstream, replaced on reload.
    pub(crate) upstream: watch::Receiver<Arc<Upstream>>,
}

impl TcpForwarder {
    /// Accepts connections until `stop`; each is forwarded on a task tracked by `tunnels`, and cut
    /// when `force` is raised.
    pub(crate) async fn accept_loop(
        self,
        tunnels: TaskTracker,
        mut stop: watch::Receiver<bool>,
        force: watch::Receiver<bool>,
    ) {
        loop {
            let accepted = tokio::select! {
                _ = stop.wait_for(|stop| *stop) => break,
                accepted = self.socket.accept() => accepted,
            };
            let (stream, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(role = self.role, error = %e, "accept failed");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            };
            let upstream = Arc::clone(&self.upstream.borrow());
            let mut force = force.clone();
            tunnels.spawn(async move {
                tokio::select! {
                    () = tunnel(&upstream, stream, peer) => {}
                    _ = force.wait_for(|force| *force) => {}
                }
            });
        }
    }
}

/// Connects `downstream` to an endpoint of `upstream` and copies bytes both ways until one side
/// closes. Gives up (closing `downstream`) when no endpoint accepts a connection.
async fn tunnel(upstream: &Arc<Upstream>, mut downstream: TcpStream, peer: SocketAddr) {
    let _ = downstream.set_nodelay(true);
    let _admission = match upstream.admit(false, true).await {
        Ok(admission) => admission,
        Err(limit) => {
            tracing::debug!(upstream = upstream.name(), %peer, limit = limit.key(), "circuit breaker open; closing");
            return;
        }
    };
    // TCP has no headers: only a `source_ip` hash key applies; header and cookie keys pick at random.
    let key = upstream.request_key(&HeaderMap::new(), peer.ip());
    let mut avoid = None;
    for _ in 0..MAX_CONNECT_ATTEMPTS {
        let Some(endpoint) = upstream.pick(avoid.as_ref(), key) else {
            tracing::debug!(upstream = upstream.name(), %peer, "no endpoints; closing");
            return;
        };
        let in_flight = endpoint.start();
        let address = endpoint.address().as_str();
        match tokio::time::timeout(upstream.connect_timeout(), TcpStream::connect(address)).await {
            Ok(Ok(mut connection)) => {
                upstream.observe(&endpoint, Outcome::Status(http::StatusCode::OK));
                let _ = connection.set_nodelay(true);
                if let Err(e) =
                    tokio::io::copy_bidirectional(&mut downstream, &mut connection).await
                {
                    tracing::debug!(%peer, endpoint = address, error = %e, "TCP connection ended with an error");
                }
                drop(in_flight);
                return;
            }
            Ok(Err(e)) => tracing::debug!(endpoint = address, error = %e, "TCP connect failed"),
            Err(_) => tracing::debug!(endpoint = address, "TCP connect timed out"),
        }
        upstream.observe(&endpoint, Outcome::ConnectFailure);
        avoid = Some(endpoint);
    }
    tracing::warn!(upstream = upstream.name(), %peer, "no endpoint accepted the connection; closing it");
}
