//! HTTP/1.1 connections to one endpoint, kept for reuse by the request path.
//!
//! Written here rather than taken from hyper-util's pooled client (which still serves HTTP/2,
//! upgrades, mirrors and health checks): per request that client clones itself, hashes the pool
//! key with SipHash into a shared map, races a checkout against a lazy connect, and spawns a task
//! per HTTP/1.1 response that puts the connection back once it is idle — 16 % of a proxied
//! request's instructions in a callgrind profile, and a second task wakeup per request. Here the
//! endpoint, already chosen by the balancer, owns its idle connections in a short list behind a
//! mutex, and a connection goes back when its response body has ended, with no task. As in
//! hyper-util, a request that could not be started on a reused connection (closed by the peer
//! while idle) is sent again on another one, and idle connections expire after a while.

use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::uri::Authority;
use http::{Request, Response, Uri};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::balance::Endpoint;
use crate::body::{BoxError, ProxyBody};

/// Idle connections are closed after this long (hyper-util's pool was given the same).
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// An endpoint's idle HTTP/1.1 connections, most recently used last.
#[derive(Default)]
pub(crate) struct Http1Pool {
    idle: Mutex<Vec<IdleConnection>>,
}

impl fmt::Debug for Http1Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Http1Pool")
            .field("idle", &self.lock().len())
            .finish()
    }
}

struct IdleConnection {
    sender: SendRequest<ProxyBody>,
    since: Instant,
}

/// How an upstream's connections are opened and kept.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PoolSettings {
    /// Limit on opening a connection.
    pub(crate) connect_timeout: Duration,
    /// Idle connections kept per endpoint.
    pub(crate) max_idle: usize,
}

/// Why a request got no response.
#[derive(Debug)]
pub(crate) enum SendError {
    /// No connection could be opened.
    Connect(String),
    /// The connection failed while the request was sent or the response awaited.
    Request(hyper::Error),
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::Connect(reason) => write!(f, "connect: {reason}"),
            SendError::Request(e) => e.fmt(f),
        }
    }
}

impl Http1Pool {
    fn lock(&self) -> MutexGuard<'_, Vec<IdleConnection>> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The most recently used idle connection that is still open, dropping expired and closed ones.
    fn checkout(&self, now: Instant) -> Option<SendRequest<ProxyBody>> {
        let mut idle = self.lock();
        while let Some(connection) = idle.pop() {
            if now.saturating_duration_since(connection.since) >= IDLE_TIMEOUT {
                // The rest are older still.
                idle.clear();
                return None;
            }
            if !connection.sender.is_closed() {
                return Some(connection.sender);
            }
        }
        None
    }

    fn checkin(&self, sender: SendRequest<ProxyBody>, max_idle: usize) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.lock();
        if idle.len() < max_idle {
            idle.push(IdleConnection {
                sender,
                since: Instant::now(),
            });
        }
    }
}

/// Sends `request` (absolute URI, as for hyper-util's client) to `endpoint` over an idle
/// connection or a new one, in origin form with a `Host` header. The connection is returned to
/// the pool by [`pooled_body`] once the response body has ended.
pub(crate) async fn send(
    endpoint: &Arc<Endpoint>,
    settings: PoolSettings,
    mut request: Request<ProxyBody>,
) -> Result<(Response<Incoming>, Checkin), SendError> {
    origin_form(&mut request, endpoint.address());
    loop {
        let (mut sender, reused) = match endpoint.connections().checkout(Instant::now()) {
            Some(sender) => (sender, true),
            None => (
                // Boxed, as the other rarely taken awaits of the request path: an inline future
                // would grow every request's state machine, which is copied when it is boxed
                // (`server.rs`).
                Box::pin(connect(endpoint.address(), settings.connect_timeout)).await?,
                false,
            ),
        };
        if let Err(e) = sender.ready().await {
            if reused {
                continue;
            }
            return Err(SendError::Request(e));
        }
        match sender.try_send_request(request).await {
            Ok(response) => {
                let checkin = Checkin {
                    endpoint: Arc::clone(endpoint),
                    sender,
                    max_idle: settings.max_idle,
                };
                return Ok((response, checkin));
            }
            Err(mut e) => match e.take_message() {
                // Never started: the reused connection had closed; try another.
                Some(unsent) if reused => request = unsent,
                _ => return Err(SendError::Request(e.into_error())),
            },
        }
    }
}

/// Rewrites the URI to origin form (`/path?query`) and adds `Host: address` if the request has no
/// `Host`, as hyper-util's client does for HTTP/1.
fn origin_form(request: &mut Request<ProxyBody>, address: &Authority) {
    let uri = request.uri_mut();
    let path = uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
    *uri = Uri::from(path);
    if !request.headers().contains_key(header::HOST)
        && let Ok(host) = HeaderValue::from_str(address.as_str())
    {
        request.headers_mut().insert(header::HOST, host);
    }
}

async fn connect(
    address: &Authority,
    timeout: Duration,
) -> Result<SendRequest<ProxyBody>, SendError> {
    let stream = match tokio::time::timeout(timeout, TcpStream::connect(address.as_str())).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => return Err(SendError::Connect(e.to_string())),
        Err(_) => return Err(SendError::Connect("timed out".to_owned())),
    };
    let _ = stream.set_nodelay(true);
    let (sender, connection) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| SendError::Connect(e.to_string()))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "upstream connection ended with an error");
        }
    });
    Ok(sender)
}

/// A connection whose response is being read; it goes back to its endpoint's pool when the
/// response body has ended (see [`pooled_body`]), and is closed if the body is abandoned.
pub(crate) struct Checkin {
    endpoint: Arc<Endpoint>,
    sender: SendRequest<ProxyBody>,
    max_idle: usize,
}

impl Checkin {
    fn done(self) {
        self.endpoint
            .connections()
            .checkin(self.sender, self.max_idle);
    }
}

/// `body` streamed through unchanged; when it ends, `checkin`'s connection is free again.
pub(crate) fn pooled_body(body: Incoming, checkin: Checkin) -> ProxyBody {
    Pooled {
        body,
        checkin: Some(checkin),
    }
    .boxed_unsync()
}

struct Pooled {
    body: Incoming,
    checkin: Option<Checkin>,
}

impl Body for Pooled {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        match polled {
            Poll::Ready(None) => {
                if let Some(checkin) = self.checkin.take() {
                    checkin.done();
                }
                Poll::Ready(None)
            }
            Poll::Ready(Some(result)) => Poll::Ready(Some(result.map_err(BoxError::from))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for Pooled {
    /// A body dropped once it has ended (hyper does not poll an empty one) frees its connection;
    /// one dropped part-read leaves the connection unusable, so it is closed.
    fn drop(&mut self) {
        if self.body.is_end_stream()
            && let Some(checkin) = self.checkin.take()
        {
            checkin.done();
        }
    }
}
