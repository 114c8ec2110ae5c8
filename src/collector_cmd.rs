//! `meshscope collector`: settings from defaults → config file → environment → flags, then wiring of
//! store, receivers, query engine and API server, and an orderly shutdown on SIGTERM.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use meshscope_collector::alerts::{AlertOptions, Alerts, AlertsConfig};
use meshscope_collector::graph::GraphOptions;
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
    /// retryable error, as they are while the process's resident memory is over it and at least 1/8
    /// of it waits unflushed [default: 1GiB].
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
    /// Parquet files at least this large are left alone by compaction [default: 64MiB].
    #[arg(long, env = "MESHSCOPE_COMPACTION_FILE_BYTES")]
    compaction_file_bytes: Option<String>,
    /// Compact an hour's files once it has this many small ones [default: 4].
    #[arg(long, env = "MESHSCOPE_COMPACTION_MIN_FILES")]
    compaction_min_files: Option<String>,
    /// Merge at most this many files at once; each holds about one row group while merging
    /// [default: 8].
    #[arg(long, env = "MESHSCOPE_COMPACTION_MAX_FILES")]
    compaction_max_files: Option<String>,
    /// Length of one service-graph and RED window [default: 10s].
    #[arg(long, env = "MESHSCOPE_GRAPH_WINDOW")]
    graph_window: Option<String>,
    /// How long a client or server span waits for its partner before it counts as unpaired
    /// [default: 10s].
    #[arg(long, env = "MESHSCOPE_GRAPH_PAIRING_WAIT")]
    graph_pairing_wait: Option<String>,
    /// Wall-clock limit of one query [default: 30s].
    #[arg(long, env = "MESHSCOPE_QUERY_TIMEOUT")]
    query_timeout: Option<String>,
    /// Memory limit of one query's operators [default: 512MiB].
    #[arg(long, env = "MESHSCOPE_QUERY_MEMORY")]
    query_memory: Option<String>,
    /// Alert rules and receivers (TOML, see docs/alerts.md) [default: none; rules can still be created
    /// in the UI].
    #[arg(long, env = "MESHSCOPE_ALERT_RULES")]
    alert_rules: Option<PathBuf>,
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
    compaction_file_bytes: Option<toml::Spanned<String>>,
    compaction_min_files: Option<toml::Spanned<u64>>,
    compaction_max_files: Option<toml::Spanned<u64>>,
    graph_window: Option<toml::Spanned<String>>,
    graph_pairing_wait: Option<toml::Spanned<String>>,
    query_timeout: Option<toml::Spanned<String>>,
    query_memory: Option<toml::Spanned<String>>,
    alert_rules: Option<PathBuf>,
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
    /// Service graph windows.
    pub(crate) graph: GraphOptions,
    /// Alert rules and receivers from the rules file.
    pub(crate) alerts: AlertsConfig,
}

/// Collects every bad setting, so the user fixes them in one go.
struct Problems {
    file: String,
    source: String,
    found: Vec<String>,
}

impl Problems {
    /// A value from flag/env (`flag`) or file (`spanned`), parsed, or the default.
    fn value<T, S: ToString>(
        &mut self,
        name: &str,
        flag: Option<String>,
        spanned: Option<toml::Spanned<S>>,
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
                    spanned.into_inner().to_string(),
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

/// A number of files, at least `least` (a merge needs two inputs).
fn parse_file_count(text: &str, least: usize) -> Result<usize, String> {
    match text.trim().parse::<usize>() {
        Ok(count) if count >= least => Ok(count),
        Ok(count) => Err(format!("{count} is too few: at least {least}")),
        Err(error) => Err(format!("{text:?} is not a count of files: {error}")),
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
        self.settings_with_data_dir("meshscope-data")
    }

    /// Like [`CollectorArgs::settings`], with `data_dir` as the default data directory.
    pub(crate) fn settings_with_data_dir(
        self,
        default_data_dir: &str,
    ) -> anyhow::Result<CollectorSettings> {
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
        let store_defaults = StoreOptions::new(PathBuf::new());
        let compaction_file_bytes = problems.value(
            "compaction_file_bytes",
            self.compaction_file_bytes,
            file.compaction_file_bytes,
            store_defaults.compaction_file_bytes,
            |text| parse_bytes(text).map(|bytes| bytes as u64),
        );
        let compaction_min_files = problems.value(
            "compaction_min_files",
            self.compaction_min_files,
            file.compaction_min_files,
            store_defaults.compaction_min_files,
            |text| parse_file_count(text, 2),
        );
        let compaction_max_files = problems.value(
            "compaction_max_files",
            self.compaction_max_files,
            file.compaction_max_files,
            store_defaults.compaction_max_files,
            |text| parse_file_count(text, 2),
        );
        let graph_defaults = GraphOptions::default();
        let graph_window = problems.value(
            "graph_window",
            self.graph_window,
            file.graph_window,
            graph_defaults.window,
            |text| {
                parse_duration(text).and_then(|window| {
                    if window.as_secs() >= 1 && window.subsec_nanos() == 0 {
                        Ok(window)
                    } else {
                        Err(format!("{text:?} is not a whole number of seconds"))
                    }
                })
            },
        );
        let graph_pairing_wait = problems.value(
            "graph_pairing_wait",
            self.graph_pairing_wait,
            file.graph_pairing_wait,
            graph_defaults.pairing_wait,
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
        let alerts = match self.alert_rules.or(file.alert_rules) {
            None => AlertsConfig::default(),
            Some(path) => AlertsConfig::load(&path).unwrap_or_else(|error| {
                problems.found.push(format!("alert rules: {error}"));
                AlertsConfig::default()
            }),
        };
        if !problems.found.is_empty() {
            anyhow::bail!("invalid settings:\n  {}", problems.found.join("\n  "));
        }
        let data_dir = self
            .data_dir
            .or(file.data_dir)
            .unwrap_or_else(|| PathBuf::from(default_data_dir));
        let mut store = StoreOptions::new(data_dir);
        store.flush_bytes = flush_bytes;
        store.flush_interval = flush_interval;
        store.retention = retention;
        store.compaction_file_bytes = compaction_file_bytes;
        store.compaction_min_files = compaction_min_files;
        store.compaction_max_files = compaction_max_files;
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
            graph: GraphOptions {
                window: graph_window,
                pairing_wait: graph_pairing_wait,
                ..graph_defaults
            },
            alerts,
        })
    }
}

/// Runs the collector until SIGTERM or Ctrl-C: then stops accepting, lets in-flight exports finish,
/// flushes the memtable, fsyncs and returns.
pub(crate) async fn run(settings: CollectorSettings) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    tokio::spawn(crate::signals::cancel_on_signal(shutdown.clone()));
    run_until(settings, shutdown).await
}

/// Runs the collector until `shutdown` is cancelled (or a server fails, which cancels it), then stops
/// as [`run`] does.
pub(crate) async fn run_until(
    settings: CollectorSettings,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let data_dir = settings.store.data_dir.clone();
    let store = Store::open(settings.store)
        .await
        .with_context(|| format!("opening store in {}", data_dir.display()))?;
    let ingest = Arc::new(
        Ingest::new(
            store.clone(),
            settings.memory_limit,
            settings.max_request_bytes,
        )
        .with_graph(settings.graph),
    );
    let engine = Arc::new(QueryEngine::new(store.clone(), settings.query)?);
    let alerts = Alerts::start(
        settings.alerts,
        AlertOptions {
            data_dir: data_dir.clone(),
            external_url: format!("http://{}", settings.api_listen),
        },
        Arc::new(meshscope_web::alerts::query::EngineAlertQuery(
            engine.clone(),
        )),
    )?;

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
        let served = axum::serve(api_listener, meshscope_web::app(engine, alerts.clone()))
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

    let (receivers, api) = tokio::join!(receivers, api);
    alerts.shutdown().await;
    maintenance_stop.cancel();
    maintenance.await.context("maintenance task")?;
    receivers?;
    api.context("API server")?;
    tracing::info!("collector stopped cleanly");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: CollectorArgs,
    }

    fn settings(file: &str, flags: &[&str]) -> anyhow::Result<CollectorSettings> {
        let dir = std::env::temp_dir().join(format!("meshscope-settings-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let path = dir.join(format!("{}.toml", flags.len()));
        std::fs::write(&path, file)?;
        let mut argv = vec!["collector", "--config", path.to_str().unwrap_or_default()];
        argv.extend_from_slice(flags);
        Cli::try_parse_from(argv)?.args.settings()
    }

    #[test]
    fn compaction_settings_come_from_file_then_flags() -> anyhow::Result<()> {
        let file = "compaction_min_files = 6\ncompaction_max_files = 3\ncompaction_file_bytes = \"8MiB\"\n";
        let from_file = settings(file, &[])?.store;
        assert_eq!(from_file.compaction_min_files, 6);
        assert_eq!(from_file.compaction_max_files, 3);
        assert_eq!(from_file.compaction_file_bytes, 8 << 20);
        let flagged = settings(file, &["--compaction-max-files", "12"])?.store;
        assert_eq!(flagged.compaction_max_files, 12);
        assert_eq!(flagged.compaction_min_files, 6);
        Ok(())
    }

    #[test]
    fn alert_rules_come_from_the_config_key_and_their_problems_stop_the_start() {
        let dir =
            std::env::temp_dir().join(format!("meshscope-alert-settings-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let rules = dir.join("rules.toml");
        std::fs::write(
            &rules,
            "[[rule]]\nname = \"a\"\ncondition = \"> 1\"\nsql = \"SELECT 1.0 AS value\"\n",
        )
        .unwrap();
        let key = format!("alert_rules = {:?}\n", rules.display().to_string());
        let loaded = settings(&key, &[]).unwrap();
        assert_eq!(loaded.alerts.rules.len(), 1);
        assert_eq!(loaded.alerts.rules[0].name, "a");
        std::fs::write(&rules, "[[rule]]\nname = \"a\"\ncondition = \"over 1\"\n").unwrap();
        let error = settings(&key, &[])
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            error.contains("alert rules:") && error.contains("condition"),
            "{error}"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn bad_compaction_settings_name_their_line() {
        let error = settings("retention = \"1d\"\ncompaction_max_files = 1\n", &[])
            .err()
            .map(|error| error.to_string())
            .unwrap_or_default();
        assert!(
            error.contains(":2: compaction_max_files: 1 is too few"),
            "{error}"
        );
    }
}
