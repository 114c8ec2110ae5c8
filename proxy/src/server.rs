//! Listeners: binding sockets, accepting HTTP/1.1 and HTTP/2 connections, draining on shutdown.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::task::{AbortOnDropHandle, TaskTracker};

use crate::admin::{self, AdminState};
use crate::body::ProxyBody;
use crate::build::build;
use crate::config::{self, Config, ConfigError};
use crate::discovery;
use crate::forward::{self, Listening, Side};
use crate::h2c;
use crate::health_check;
use crate::reload::{Live, ReloadHandle};
use crate::route::RouteTable;
use crate::tcp::TcpForwarder;
use crate::telemetry::{Exporter, MetricExporter};

/// Pause after a failed `accept` (e.g. out of file descriptors) so the loop does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// A listener's socket could not be bound.
    #[error("cannot listen on {address} ({role}): {source}")]
    Bind {
        /// `inbound` or `outbound[i]`.
        role: String,
        /// The configured address.
        address: SocketAddr,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The configuration file could not be read or is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A reload asked for different listener addresses, which needs a restart.
    #[error(
        "listener addresses cannot change while running (running: {running}; new file: {wanted}); restart the proxy to apply"
    )]
    ListenersChanged {
        /// The running listeners.
        running: String,
        /// The listeners the new configuration asks for.
        wanted: String,
    },
    /// An upstream's endpoints file could not be read or is invalid.
    #[error("upstream {upstream:?}: {source}")]
    Endpoints {
        /// The upstream.
        upstream: String,
        /// What is wrong with the file.
        source: ConfigError,
    },
    /// A route or TCP listener names an upstream that does not exist (a configuration that skipped
    /// validation).
    #[error("{route} refers to an unknown upstream")]
    UnknownUpstream {
        /// `route "name"` or `tcp[i]`.
        route: String,
    },
}

/// Addresses the listeners actually bound, useful when the configuration asked for port 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoundAddresses {
    /// The inbound listener, if configured.
    pub inbound: Option<SocketAddr>,
    /// The outbound listeners, in configuration order.
    pub outbound: Vec<SocketAddr>,
    /// The TCP forwarding listeners, in configuration order.
    pub tcp: Vec<SocketAddr>,
    /// The admin endpoint, if configured.
    pub admin: Option<SocketAddr>,
}

/// A proxy whose sockets are bound and whose routes are built, ready to serve.
#[derive(Debug)]
pub struct Proxy {
    listeners: Vec<Listener>,
    addresses: BoundAddresses,
    drain_timeout: Duration,
    busy_poll: bool,
    admin: Option<TcpListener>,
    exporter: Option<Exporter>,
    metric_exporter: Option<MetricExporter>,
    forwarders: Vec<TcpForwarder>,
    live: Arc<Mutex<Live>>,
}

/// One bound socket and the channel its current route table is read from.
#[derive(Debug)]
struct Listener {
    role: String,
    socket: TcpListener,
    listening: Arc<Listening>,
    routes: watch::Receiver<Arc<RouteTable>>,
}

impl Proxy {
    /// Builds upstreams and routes from a validated `config` and binds every listener.
    pub async fn bind(config: &Config) -> Result<Proxy, ProxyError> {
        let tables = build(config, None)?;
        let exporter = Exporter::start(&config.telemetry, &config.service.name);
        if let Some(endpoint) = &config.telemetry.otlp_endpoint {
            tracing::info!(%endpoint, "exporting spans");
        }
        let tracer = exporter.as_ref().map(|(tracer, _)| Arc::clone(tracer));
        let mut listeners = Vec::new();
        let mut senders = Vec::new();
        let mut addresses = BoundAddresses {
            inbound: None,
            outbound: Vec::new(),
            tcp: Vec::new(),
            admin: None,
        };
        for plan in &tables.listeners {
            let socket = bind(&plan.role, plan.listen).await?;
            let bound = socket.local_addr().unwrap_or(plan.listen);
            match plan.side {
                Side::Inbound => addresses.inbound = Some(bound),
                Side::Outbound => addresses.outbound.push(bound),
            }
            let (sender, routes) = watch::channel(Arc::clone(&plan.routes));
            senders.push(sender);
            listeners.push(Listener {
                role: plan.role.clone(),
                socket,
                listening: Arc::new(Listening {
                    side: plan.side,
                    tracer: tracer.clone(),
                }),
                routes,
            });
        }
        let mut forwarders = Vec::new();
        let mut tcp_senders = Vec::new();
        for plan in &tables.tcp {
            let socket = bind(&plan.role, plan.listen).await?;
            addresses
                .tcp
                .push(socket.local_addr().unwrap_or(plan.listen));
            let (sender, upstream) = watch::channel(Arc::clone(&plan.upstream));
            tcp_senders.push(sender);
            forwarders.push(TcpForwarder {
                role: plan.role.clone(),
                socket,
                upstream,
            });
        }
        let admin = match &config.admin {
            Some(admin) => {
                let socket = bind("admin", admin.listen).await?;
                addresses.admin = Some(socket.local_addr().unwrap_or(admin.listen));
                Some(socket)
            }
            None => None,
        };
        let exporter = exporter.map(|(_, exporter)| exporter);
        let live = Arc::new(Mutex::new(Live::new(
            config.clone(),
            tables,
            senders,
            tcp_senders,
        )));
        let metric_exporter = MetricExporter::start(
            &config.telemetry,
            &config.service.name,
            Arc::clone(&live),
            exporter.as_ref().map(Exporter::counters),
        );
        Ok(Proxy {
            admin,
            exporter,
            metric_exporter,
            listeners,
            addresses,
            drain_timeout: config.service.drain_timeout.0,
            busy_poll: config.service.busy_poll,
            forwarders,
            live,
        })
    }

    /// A handle that applies new configurations while the proxy serves.
    pub fn reload_handle(&self) -> ReloadHandle {
        ReloadHandle::new(Arc::clone(&self.live))
    }

    /// Where the listeners are.
    pub fn addresses(&self) -> &BoundAddresses {
        &self.addresses
    }

    /// Serves until `shutdown` completes, then stops accepting, lets in-flight requests finish for up
    /// to the configured drain timeout, and closes what is left.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) {
        // Held for the whole of `serve`: dropped at its end, or with it, they stop.
        let _spinners: Vec<AbortOnDropHandle<()>> = if self.busy_poll {
            let workers = tokio::runtime::Handle::current().metrics().num_workers();
            (0..workers)
                .map(|_| AbortOnDropHandle::new(tokio::spawn(spin())))
                .collect()
        } else {
            Vec::new()
        };
        let graceful = Arc::new(GracefulShutdown::new());
        let (stop_accepting, stop_rx) = watch::channel(false);
        let (force_close, force_rx) = watch::channel(false);
        let mut accept_loops = JoinSet::new();
        let tunnels = TaskTracker::new();
        // The admin endpoint outlives the drain, answering `/ready` with 503 meanwhile.
        let (stop_admin, admin_stop_rx) = watch::channel(false);
        let discovery = tokio::spawn(discovery::run(Arc::clone(&self.live), stop_rx.clone()));
        let health_checks =
            tokio::spawn(health_check::run(Arc::clone(&self.live), stop_rx.clone()));
        let signals = tokio::spawn(crate::signals::run(Arc::clone(&self.live), stop_rx.clone()));
        let admin = self.admin.map(|socket| {
            let state = AdminState {
                live: Arc::clone(&self.live),
                spans: self.exporter.as_ref().map(Exporter::counters),
                metric_exports: self.metric_exporter.as_ref().map(MetricExporter::counters),
                draining: stop_rx.clone(),
            };
            tokio::spawn(admin::serve(socket, state, admin_stop_rx))
        });
        for forwarder in self.forwarders {
            tracing::info!(role = forwarder.role, address = ?forwarder.socket.local_addr().ok(), "forwarding TCP");
            accept_loops.spawn(forwarder.accept_loop(
                tunnels.clone(),
                stop_rx.clone(),
                force_rx.clone(),
            ));
        }
        for listener in self.listeners {
            tracing::info!(role = listener.role, address = ?listener.socket.local_addr().ok(), "listening");
            accept_loops.spawn(listener.accept_loop(
                Arc::clone(&graceful),
                h2c::Lifecycle {
                    stop: stop_rx.clone(),
                    force: force_rx.clone(),
                    tracker: tunnels.clone(),
                },
            ));
        }
        shutdown.await;
        let _ = stop_accepting.send(true);
        while accept_loops.join_next().await.is_some() {}
        let _ = discovery.await;
        let _ = health_checks.await;
        let _ = signals.await;
        tunnels.close();
        match Arc::try_unwrap(graceful) {
            Ok(graceful) => {
                tracing::info!(
                    http_connections = graceful.count(),
                    tcp_connections = tunnels.len(),
                    "draining"
                );
                let drained = async { tokio::join!(graceful.shutdown(), tunnels.wait()) };
                if tokio::time::timeout(self.drain_timeout, drained)
                    .await
                    .is_err()
                {
                    tracing::warn!(drain_timeout = ?self.drain_timeout, "drain timed out; closing remaining connections");
                    let _ = force_close.send(true);
                }
            }
            Err(_) => {
                let _ = force_close.send(true);
            }
        }
        // Spans of the drained requests are queued by now: flush them.
        if let Some(exporter) = self.exporter {
            exporter.stop().await;
        }
        // After the spans, so the last snapshot counts them.
        if let Some(metric_exporter) = self.metric_exporter {
            metric_exporter.stop().await;
        }
        let _ = stop_admin.send(true);
        if let Some(admin) = admin {
            let _ = admin.await;
        }
    }
}

/// Keeps a worker thread out of the poller's sleep (`[service] busy_poll`). tokio runs a task
/// that yields again only after polling for I/O without blocking, so while one is always ready
/// the worker never sleeps in `epoll_wait`, and an arriving request is seen at once instead of
/// after the CPU wakes: on a virtual machine that wake took hundreds of microseconds at the 99th
/// percentile (bench/README.md, "Busy polling").
async fn spin() {
    loop {
        tokio::task::yield_now().await;
    }
}

/// Binds the socket of listener `role`.
async fn bind(role: &str, address: SocketAddr) -> Result<TcpListener, ProxyError> {
    TcpListener::bind(address)
        .await
        .map_err(|source| ProxyError::Bind {
            role: role.to_owned(),
            address,
            source,
        })
}

/// Binds and serves `config` until `shutdown` completes, without watching any file.
pub async fn run(config: &Config, shutdown: impl Future<Output = ()>) -> Result<(), ProxyError> {
    Proxy::bind(config).await?.serve(shutdown).await;
    Ok(())
}

/// Loads the configuration file at `path`, serves it until `shutdown` completes, and applies each
/// valid new version of the file, checked every `reload_interval`: the whole sidecar in one call.
pub async fn run_file(
    path: &Path,
    reload_interval: Duration,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ProxyError> {
    let text = tokio::fs::read_to_string(path)
        .await
        .map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
    let config = config::parse(&text, &path.display().to_string())?;
    let proxy = Proxy::bind(&config).await?;
    let watcher = tokio::spawn(proxy.reload_handle().watch_file(
        path.to_owned(),
        text,
        reload_interval,
    ));
    proxy.serve(shutdown).await;
    watcher.abort();
    Ok(())
}

impl Listener {
    /// Accepts connections until told to stop; each connection is served on its own task, speaking
    /// HTTP/1.1 or HTTP/2 (prior knowledge) as the client's first bytes say, and switching from
    /// HTTP/1.1 to HTTP/2 when a request asks for `Upgrade: h2c`.
    async fn accept_loop(self, graceful: Arc<GracefulShutdown>, lifecycle: h2c::Lifecycle) {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder.http1().timer(TokioTimer::new());
        builder.http2().timer(TokioTimer::new());
        let mut stop = lifecycle.stop.clone();
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
            let _ = stream.set_nodelay(true);
            let handler = Arc::new(Handler {
                routes: self.routes.clone(),
                listening: Arc::clone(&self.listening),
                peer,
                lifecycle: lifecycle.clone(),
            });
            let service = service_fn(move |request| Arc::clone(&handler).serve(request));
            let connection = graceful.watch(
                builder
                    .serve_connection_with_upgrades(TokioIo::new(stream), service)
                    .into_owned(),
            );
            let mut force = lifecycle.force.clone();
            tokio::spawn(async move {
                tokio::select! {
                    result = connection => if let Err(e) = result {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    },
                    _ = force.wait_for(|force| *force) => {}
                }
            });
        }
    }
}

/// What serving one connection's requests needs.
struct Handler {
    routes: watch::Receiver<Arc<RouteTable>>,
    listening: Arc<Listening>,
    peer: SocketAddr,
    lifecycle: h2c::Lifecycle,
}

impl Handler {
    /// Serves a request as it arrived on the connection: an `Upgrade: h2c` request switches the
    /// connection to HTTP/2 and is answered there, anything else is forwarded.
    async fn serve(
        self: Arc<Self>,
        request: Request<Incoming>,
    ) -> Result<Response<ProxyBody>, Infallible> {
        if let Some(frame) = h2c::upgrade_frame(&request) {
            let lifecycle = self.lifecycle.clone();
            let h2 = service_fn(move |request| Arc::clone(&self).forward(request));
            return Ok(h2c::switch(request, frame, h2, lifecycle));
        }
        self.forward(request).await
    }

    async fn forward(
        self: Arc<Self>,
        request: Request<Incoming>,
    ) -> Result<Response<ProxyBody>, Infallible> {
        // The table current when the request arrives serves it to the end, reloads or not.
        let table = Arc::clone(&self.routes.borrow());
        // Boxed: the request's whole state machine (routing, breaker, attempts, spans) is kilobytes,
        // and hyper moves the service future it is given (into each HTTP/2 stream's task, into the
        // HTTP/1 dispatcher's slot). Moving a pointer instead cut an HTTP/2 request from ~168k to
        // ~67k instructions under callgrind, and CPU per request for HTTP/1.1 too (bench/README.md).
        let handled = Box::pin(forward::handle(&self.listening, &table, self.peer, request));
        Ok(handled.await)
    }
}
