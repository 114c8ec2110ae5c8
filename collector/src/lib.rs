//! The collector's receiving side: OTLP over gRPC and HTTP into the store.
//!
//! Both receivers hand raw bodies to one [`ingest::Ingest`], which admits the request under a memory
//! budget, decodes and validates it off the async workers, and answers only after the store has fsynced
//! it to the WAL.
//!
//! ```text
//! OTLP/gRPC :4317 ─┐
//!                  ├─► Ingest: admission ─► decode+validate+convert (blocking pool) ─► Store::append
//! OTLP/HTTP :4318 ─┤                                │                                  (WAL fsync, memtable)
//! Zipkin v2 JSON ──┘ (on :4318, converted to OTLP first)
//!                                                    ├─► fleet health ─► FleetSignals.Subscribe (gRPC :4317)
//!                                                    └─► service graph + RED ─► metric points (every 10 s window)
//! ```

pub mod admission;
pub mod alerts;
pub mod error;
pub mod fleet;
pub mod graph;
pub mod grpc;
pub mod http;
pub mod ingest;
mod span_rows;
pub mod validate;
pub mod zipkin;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

pub use error::IngestError;
pub use ingest::Ingest;

/// Where the receivers listen.
#[derive(Debug, Clone)]
pub struct ReceiverConfig {
    /// OTLP/gRPC listen address.
    pub grpc_listen: SocketAddr,
    /// OTLP/HTTP listen address.
    pub http_listen: SocketAddr,
}

/// Why the receivers stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A listener could not bind or failed.
    #[error("{what} on {addr}: {source}")]
    Listen {
        /// Which receiver.
        what: &'static str,
        /// Its address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// The gRPC server failed.
    #[error("OTLP/gRPC server: {0}")]
    Grpc(#[from] tonic::transport::Error),
}

/// Binds both receivers, then serves until the futures made by `shutdown` resolve; in-flight exports
/// finish first.
pub async fn serve<F>(
    config: ReceiverConfig,
    ingest: Arc<Ingest>,
    shutdown: impl Fn() -> F,
) -> Result<(), ServeError>
where
    F: Future<Output = ()> + Send + 'static,
{
    let listen_error = |what, addr| move |source| ServeError::Listen { what, addr, source };
    let http_listener = tokio::net::TcpListener::bind(config.http_listen)
        .await
        .map_err(listen_error("OTLP/HTTP", config.http_listen))?;
    let grpc_listener = tokio::net::TcpListener::bind(config.grpc_listen)
        .await
        .map_err(listen_error("OTLP/gRPC", config.grpc_listen))?;
    tracing::info!(grpc = %config.grpc_listen, http = %config.http_listen, "OTLP receivers listening");

    let http =
        axum::serve(http_listener, http::router(ingest.clone())).with_graceful_shutdown(shutdown());
    let graph = tokio::spawn(ingest.clone().store_graph_windows(shutdown()));
    let stop = futures::FutureExt::shared(futures::FutureExt::boxed(shutdown()));
    let grpc = tonic::transport::Server::builder()
        .add_service(fleet::SignalsService::server(ingest.fleet().clone(), stop))
        .add_service(grpc::OtlpGrpcService::<grpc::Traces>::new(ingest.clone()))
        .add_service(grpc::OtlpGrpcService::<grpc::Metrics>::new(ingest))
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(grpc_listener),
            shutdown(),
        );
    let (http, grpc) = tokio::join!(http, grpc);
    let _ = graph.await;
    http.map_err(listen_error("OTLP/HTTP", config.http_listen))?;
    grpc?;
    Ok(())
}
