//! Listeners: binding sockets, accepting HTTP/1.1 and HTTP/2 connections, draining on shutdown.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::balance::Endpoint;
use crate::config::Config;
use crate::forward;
use crate::route::{Route, RouteTable};
use crate::upstream::Upstream;

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
    /// A route names an upstream that does not exist (a configuration that skipped validation).
    #[error("route {route:?} refers to an unknown upstream")]
    UnknownUpstream {
        /// The route's name.
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
}

/// A proxy whose sockets are bound and whose routes are built, ready to serve.
#[derive(Debug)]
pub struct Proxy {
    listeners: Vec<Listener>,
    addresses: BoundAddresses,
    drain_timeout: Duration,
}

/// One bound socket and the routes its requests follow.
#[derive(Debug)]
struct Listener {
    role: String,
    socket: TcpListener,
    routes: Arc<RouteTable>,
}

impl Proxy {
    /// Builds upstreams and routes from a validated `config` and binds every listener.
    pub async fn bind(config: &Config) -> Result<Proxy, ProxyError> {
        let upstreams: HashMap<String, Arc<Upstream>> = config
            .upstreams
            .iter()
            .map(|u| (u.name.clone(), Arc::new(Upstream::from_config(u))))
            .collect();

        let mut listeners = Vec::new();
        let mut addresses = BoundAddresses {
            inbound: None,
            outbound: Vec::new(),
        };
        if let Some(inbound) = &config.inbound {
            let app = Upstream::local_app(
                &format!("{} (local app)", config.service.name),
                Endpoint::new(inbound.app.0.clone(), 1),
                inbound.protocol,
                inbound.connect_timeout.0,
            );
            let routes = RouteTable::new(vec![Route::to_one(
                "inbound",
                Arc::new(app),
                inbound.timeout.map(|t| t.0),
            )]);
            let listener = Listener::bind("inbound".to_owned(), inbound.listen, routes).await?;
            addresses.inbound = Some(listener.local_addr(inbound.listen));
            listeners.push(listener);
        }
        for (i, outbound) in config.outbound.iter().enumerate() {
            let routes = outbound
                .routes
                .iter()
                .map(|r| {
                    Route::from_config(r, &upstreams).ok_or_else(|| ProxyError::UnknownUpstream {
                        route: r.name.clone(),
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            let listener = Listener::bind(
                format!("outbound[{i}]"),
                outbound.listen,
                RouteTable::new(routes),
            )
            .await?;
            addresses
                .outbound
                .push(listener.local_addr(outbound.listen));
            listeners.push(listener);
        }
        if let Some(endpoint) = &config.telemetry.otlp_endpoint {
            tracing::info!(%endpoint, "OTLP endpoint configured; span export is not implemented yet");
        }
        Ok(Proxy {
            listeners,
            addresses,
            drain_timeout: config.service.drain_timeout.0,
        })
    }

    /// Where the listeners are.
    pub fn addresses(&self) -> &BoundAddresses {
        &self.addresses
    }

    /// Serves until `shutdown` completes, then stops accepting, lets in-flight requests finish for up
    /// to the configured drain timeout, and closes what is left.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) {
        let graceful = Arc::new(GracefulShutdown::new());
        let (stop_accepting, stop_rx) = watch::channel(false);
        let (force_close, force_rx) = watch::channel(false);
        let mut accept_loops = JoinSet::new();
        for listener in self.listeners {
            tracing::info!(role = listener.role, address = ?listener.socket.local_addr().ok(), "listening");
            accept_loops.spawn(listener.accept_loop(
                Arc::clone(&graceful),
                stop_rx.clone(),
                force_rx.clone(),
            ));
        }
        shutdown.await;
        let _ = stop_accepting.send(true);
        while accept_loops.join_next().await.is_some() {}
        let Ok(graceful) = Arc::try_unwrap(graceful) else {
            let _ = force_close.send(true);
            return;
        };
        tracing::info!(connections = graceful.count(), "draining");
        if tokio::time::timeout(self.drain_timeout, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!(drain_timeout = ?self.drain_timeout, "drain timed out; closing remaining connections");
            let _ = force_close.send(true);
        }
    }
}

/// Binds and serves `config` until `shutdown` completes: the whole proxy in one call.
pub async fn run(config: &Config, shutdown: impl Future<Output = ()>) -> Result<(), ProxyError> {
    Proxy::bind(config).await?.serve(shutdown).await;
    Ok(())
}

impl Listener {
    async fn bind(
        role: String,
        address: SocketAddr,
        routes: RouteTable,
    ) -> Result<Self, ProxyError> {
        let socket = TcpListener::bind(address)
            .await
            .map_err(|source| ProxyError::Bind {
                role: role.clone(),
                address,
                source,
            })?;
        Ok(Self {
            role,
            socket,
            routes: Arc::new(routes),
        })
    }

    fn local_addr(&self, configured: SocketAddr) -> SocketAddr {
        self.socket.local_addr().unwrap_or(configured)
    }

    /// Accepts connections until told to stop; each connection is served on its own task, speaking
    /// HTTP/1.1 or HTTP/2 (prior knowledge) as the client's first bytes say.
    async fn accept_loop(
        self,
        graceful: Arc<GracefulShutdown>,
        mut stop: watch::Receiver<bool>,
        force: watch::Receiver<bool>,
    ) {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder.http1().timer(TokioTimer::new());
        builder.http2().timer(TokioTimer::new());
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
            let routes = Arc::clone(&self.routes);
            let service = service_fn(move |request| {
                let routes = Arc::clone(&routes);
                async move { Ok::<_, Infallible>(forward::handle(&routes, peer, request).await) }
            });
            let connection = graceful.watch(
                builder
                    .serve_connection(TokioIo::new(stream), service)
                    .into_owned(),
            );
            let mut force = force.clone();
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
