//! `meshscope collector`: settings from defaults → config file → environment → flags, then wiring of
//! store, receivers, query engine and API server, and an orderly shutdown on SIGTERM.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use meshscope_collector::{Ingest, ReceiverConfig};
use meshscope_query::{QueryEngine, QueryLimits};
use meshscope_storage::{Store, StoreOptions};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::units::{parse_bytes, parse_duration};

/// Flags of `meshscope collector`. Each also reads the environment variable named beside it, and the
/// config file key of the same name with underscores (`--memory-limit` ↔ `memory_limit`).
#[derive(Debug, Args)]
pub(crate) struct CollectorArgs {
    /// TOML config file; unknown keys are errors. Flags and environment variables override it.
    #[arg(long, env = "MESHSCOPE_CONFIG")]
    config: Option<PathBuf>,
    /// Directory for the WAL, Parquet files and manifest [default: ./meshscope-data].
    #[arg(long, env = "MESHSCOPE_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// OTLP/gRPC listen address [default: 127.0.0.1:4317].
    #[arg(long, env = "MESHSCOPE_OTLP_GRPC_LISTEN")]
    otlp_grpc_listen: Option<SocketAddr>,
    /// OTLP/HTTP listen address; also serves the collector's own /metrics [default: 127.0.0.1:4318].
    #[arg(long, env = "MESHSCOPE_OTLP_HTTP_LISTEN")]
    otlp_http_listen: Option<SocketAddr>,
    /// Web UI and HTTP API listen address (SQL, traces, search, Jaeger API) [default: 127.0.0.1:8686].
    #[arg(long, env = "MESHSCOPE_API_LISTEN")]
    api_listen: Option<SocketAddr>,
    /// Memory budget for requests in flight plus unflushed rows; past it exports are refused with a
    /// retryable error [default: 1GiB].
    #[arg(long, env = "MESHSCOPE_MEMORY_LIMIT")]
    memory_limit: Option<String>,
    /// Largest export body accepted, after decompression [default: 16MiB].
    #[arg(long, env = "MESHSCOPE_MAX_REQUEST_BYTES")]
    max_request_bytes: Option<String>,
    /// Flush the memtable to Parquet when its oldest row is this old [default: 10s].
    #[arg(long, env = "MESHSCOPE_FLUSH_INTERVAL")]
    flush_interval: Option<String>,
    /// Flush the memtable when it holds this much Arrow data [default: a quarter of the memory limit,
    /// at most 128MiB].
    #[arg(long, env = "MESHSCOPE_FLUSH_BYTES")]
    flush_bytes: Option<String>,
    /// Drop Parquet files whose newest row is older than this [default: 7d].
    #[arg(long, env = "MESHSCOPE_RETENTION")]
    retention: Option<String>,
    /// Wall-clock limit of one query [default: 30s].
    #[arg(long, env = "MESHSCOPE_QUERY_TIMEOUT")]
    query_timeout: Option<String>,
    /// Memory limit of one query's operators [default: 512MiB].
    #[arg(long, env = "MESHSCOPE_QUERY_MEMORY")]
    query_memory: Option<String>,
}

/// The config file; every key optional, unknown keys refused.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    data_dir: Option<PathBuf>,
    otlp_grpc_listen: Option<SocketAddr>,
    otlp_http_listen: Option<SocketAddr>,
    api_listen: Option<SocketAddr>,
    memory_limit: Option<toml::Spanned<String>>,
    max_request_bytes: Option<toml::Spanned<String>>,
    flush_interval: Option<toml::Spanned<String>>,
    flush_bytes: Option<toml::Spanned<String>>,
    retention: Option<toml::Spanned<String>>,
    query_timeout: Option<toml::Spanned<String>>,
    query_memory: Option<toml::Spanned<String>>,
}

/// Fully resolved settings.
#[derive(Debug, Clone)]
pub(crate) struct CollectorSettings {
    /// Store location and flush/retention policy.
    pub(crate) store: StoreOptions,
    /// Receiver addresses.
    pub(crate) receivers: ReceiverConfig,
    /// API address.
    pub(crate) api_listen: SocketAddr,
    /// Memory budget of ingest.
    pub(crate) memory_limit: usize,
    /// Largest export body.
    pub(crate) max_request_bytes: usize,
    /// Per-query limits.
    pub(crate) query: QueryLimits,
}

/// Collects every bad setting, so the user fixes them in one go.
struct Problems {
    file: String,
    source: String,
    found: Vec<String>,
}

impl Problems {
    /// A value from flag/env (`flag`) or file (`spanned`), parsed, or the default.
    fn value<T>(
        &mut self,
        name: &str,
        flag: Option<String>,
        spanned: Option<toml::Spanned<String>>,
        default: T,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> T {
        let (text, origin) = match (flag, spanned) {
            (Some(text), _) => (text, format!("--{}", name.replace('_', "-"))),
            (None, Some(spanned)) => {
                let line = self.source[..spanned.span().start.min(self.source.len())]
                    .lines()
                    .count()
                    .max(1);
                (
                    spanned.into_inner(),
                    format!("{}:{line}: {name}", self.file),
                )
            }
            (None, None) => return default,
        };
        parse(&text).unwrap_or_else(|error| {
            self.found.push(format!("{origin}: {error}"));
            default
        })
    }
}

fn read_file(path: Option<&Path>) -> anyhow::Result<(FileConfig, String, String)> {
    let Some(path) = path else {
        return Ok((FileConfig::default(), String::new(), String::new()));
    };
    let source = std::fs::read_to_string(path)
        .with_context(|| format!("reading config {}", path.display()))?;
    let config =
        toml::from_str(&source).map_err(|error| anyhow::anyhow!("{}: {error}", path.display()))?;
    Ok((config, source, path.display().to_string()))
}

impl CollectorArgs {
    /// Resolves defaults → file → environment → flags; reports every bad value at once.
    pub(crate) fn settings(self) -> anyhow::Result<CollectorSettings> {
        let (file, source, file_name) = read_file(self.config.as_deref())?;
        let mut problems = Problems {
            file: file_name,
            source,
            found: Vec::new(),
        };
        let memory_limit = problems.value(
            "memory_limit",
            self.memory_limit,
            file.memory_limit,
            1 << 30,
            parse_bytes,
        );
        let max_request_bytes = problems.value(
            "max_request_bytes",
            self.max_request_bytes,
            file.max_request_bytes,
            16 << 20,
            parse_bytes,
        );
        let flush_bytes = problems.value(
            "flush_bytes",
            self.flush_bytes,
            file.flush_bytes,
            (memory_limit / 4).min(128 << 20),
            parse_bytes,
        );
        let flush_interval = problems.value(
            "flush_interval",
            self.flush_interval,
            file.flush_interval,
            Duration::from_secs(10),
            parse_duration,
        );
        let retention = problems.value(
            "retention",
            self.retention,
            file.retention,
            Duration::from_secs(7 * 86_400),
            parse_duration,
        );
        let defaults = QueryLimits::default();
        let query_timeout = problems.value(
            "query_timeout",
            self.query_timeout,
            file.query_timeout,
            defaults.timeout,
            parse_duration,
        );
        let query_memory = problems.value(
            "query_memory",
            self.query_memory,
            file.query_memory,
            defaults.memory_bytes,
            parse_bytes,
        );
        if !problems.found.is_empty() {
            anyhow::bail!("invalid settings:\n  {}", problems.found.join("\n  "));
        }
        let data_dir = self
            .data_dir
            .or(file.data_dir)
            .unwrap_or_else(|| PathBuf::from("meshscope-data"));
        let mut store = StoreOptions::new(data_dir);
        store.flush_bytes = flush_bytes;
        store.flush_interval = flush_interval;
        store.retention = retention;
        let address = |flag: Option<SocketAddr>, file: Option<SocketAddr>, default: &str| {
            flag.or(file).unwrap_or_else(|| {
                default
                    .parse()
                    .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 0)))
            })
        };
        Ok(CollectorSettings {
            store,
            receivers: ReceiverConfig {
                grpc_listen: address(
                    self.otlp_grpc_listen,
                    file.otlp_grpc_listen,
                    "127.0.0.1:4317",
                ),
                http_listen: address(
                    self.otlp_http_listen,
                    file.otlp_http_listen,
                    "127.0.0.1:4318",
                ),
            },
            api_listen: address(self.api_listen, file.api_listen, "127.0.0.1:8686"),
            memory_limit,
            max_request_bytes,
            query: QueryLimits {
                timeout: query_timeout,
                memory_bytes: query_memory,
                ..defaults
            },
        })
    }
}

/// Runs the collector until SIGTERM or Ctrl-C: then stops accepting, lets in-flight exports finish,
/// flushes the memtable, fsyncs and returns.
pub(crate) async fn run(settings: CollectorSettings) -> anyhow::Result<()> {
    let data_dir = settings.store.data_dir.clone();
    let store = Store::open(settings.store)
        .await
        .with_context(|| format!("opening store in {}", data_dir.display()))?;
    let ingest = Arc::new(Ingest::new(
        store.clone(),
        settings.memory_limit,
        settings.max_request_bytes,
    ));
    let engine = Arc::new(QueryEngine::new(store.clone(), settings.query)?);

    let shutdown = CancellationToken::new();
    let maintenance_stop = CancellationToken::new();
    let maintenance = tokio::spawn(
        store
            .clone()
            .run_maintenance(maintenance_stop.clone().cancelled_owned()),
    );

    let api_listener = tokio::net::TcpListener::bind(settings.api_listen)
        .await
        .with_context(|| format!("binding the API on {}", settings.api_listen))?;
    let api = async {
        let served = axum::serve(api_listener, meshscope_web::app(engine))
            .with_graceful_shutdown(shutdown.clone().cancelled_owned())
            .await;
        shutdown.cancel();
        served
    };
    let token = shutdown.clone();
    let receivers = async {
        let served = meshscope_collector::serve(settings.receivers, ingest, move || {
            token.clone().cancelled_owned()
        })
        .await;
        shutdown.cancel();
        served
    };
    tracing::info!(api = %settings.api_listen, data_dir = %data_dir.display(), "collector running");
    tokio::spawn(crate::signals::cancel_on_signal(shutdown.clone()));

    let (receivers, api) = tokio::join!(receivers, api);
    maintenance_stop.cancel();
    maintenance.await.context("maintenance task")?;
    receivers?;
    api.context("API server")?;
    tracing::info!("collector stopped cleanly");
    Ok(())
}
