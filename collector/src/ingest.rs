//! The path every export takes, whichever receiver it came through:
//! admit → decode + validate + convert (on the blocking pool) → WAL fsync → memtable → answer.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use meshscope_proto::collector::metrics::v1::ExportMetricsServiceRequest;
use meshscope_proto::collector::trace::v1::ExportTraceServiceRequest;
use meshscope_storage::convert::{metrics_to_batch, spans_to_batch};
use meshscope_storage::wal::RecordKind;
use meshscope_storage::{RecordBatch, StorageError, Store};
use prost::Message;

use crate::admission::Admission;
use crate::error::IngestError;
use crate::fleet::{FleetHealth, FleetOptions};
use crate::graph::{GraphOptions, ServiceGraph};
use crate::validate::{Rejections, validate_metrics, validate_traces};

/// Which OTLP signal an export carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// `ExportTraceServiceRequest`.
    Traces,
    /// `ExportMetricsServiceRequest`.
    Metrics,
}

/// How the request body is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// Binary protobuf.
    Protobuf,
    /// OTLP/JSON.
    Json,
}

/// Counters of what ingest did, for the collector's own metrics.
#[derive(Debug, Default)]
pub struct IngestStats {
    /// Spans acknowledged.
    pub spans_accepted: AtomicU64,
    /// Spans rejected by validation (reported as partial success).
    pub spans_rejected: AtomicU64,
    /// Metric data points acknowledged.
    pub points_accepted: AtomicU64,
    /// Metric data points rejected by validation.
    pub points_rejected: AtomicU64,
    /// Exports refused as a whole, by any error.
    pub requests_refused: AtomicU64,
}

/// Shared state of both receivers.
pub struct Ingest {
    store: Arc<Store>,
    admission: Admission,
    /// Bounds conversions running at once to the number of cores: more would only queue on the CPU,
    /// hold more memory at a time, and starve the flush that frees the memtable.
    converters: tokio::sync::Semaphore,
    /// Largest accepted body, after decompression.
    pub max_request_bytes: usize,
    /// What has been accepted and refused so far.
    pub stats: IngestStats,
    /// The pooled view of every proxy's calls, fed with each acknowledged batch of spans.
    fleet: Arc<FleetHealth>,
    /// The service graph and RED aggregation, fed with each acknowledged batch of spans.
    graph: ServiceGraph,
}

/// A decoded, validated export ready for the store.
struct Prepared {
    payload: Vec<u8>,
    batch: RecordBatch,
    rows: usize,
    rejections: Rejections,
}

impl Ingest {
    /// Ingest into `store` under a memory budget of `memory_limit` bytes.
    pub fn new(store: Arc<Store>, memory_limit: usize, max_request_bytes: usize) -> Ingest {
        Ingest {
            admission: Admission::new(memory_limit, store.clone()),
            converters: tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map_or(2, |cores| cores.get()),
            ),
            store,
            max_request_bytes,
            stats: IngestStats::default(),
            fleet: Arc::new(FleetHealth::new(FleetOptions::default())),
            graph: ServiceGraph::new(GraphOptions::default()),
        }
    }

    /// Replaces the service graph's settings (windows and pairing wait).
    pub fn with_graph(mut self, options: GraphOptions) -> Ingest {
        self.graph = ServiceGraph::new(options);
        self
    }

    /// Fleet health, computed from the acknowledged CLIENT spans of every proxy.
    pub fn fleet(&self) -> &Arc<FleetHealth> {
        &self.fleet
    }

    /// Bytes reserved by requests being processed now.
    pub fn in_flight_bytes(&self) -> usize {
        self.admission.in_flight_bytes()
    }

    /// The collector's own metrics in Prometheus text format.
    pub fn render_metrics(&self) -> String {
        let stats = &self.stats;
        let counters = [
            (
                "meshscope_spans_accepted_total",
                "Spans acknowledged.",
                &stats.spans_accepted,
            ),
            (
                "meshscope_spans_rejected_total",
                "Spans rejected by validation.",
                &stats.spans_rejected,
            ),
            (
                "meshscope_points_accepted_total",
                "Metric points acknowledged.",
                &stats.points_accepted,
            ),
            (
                "meshscope_points_rejected_total",
                "Metric points rejected by validation.",
                &stats.points_rejected,
            ),
            (
                "meshscope_requests_refused_total",
                "Exports refused as a whole.",
                &stats.requests_refused,
            ),
        ];
        let mut out = String::new();
        for (name, help, value) in counters {
            out += &format!(
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}\n",
                value.load(Ordering::Relaxed)
            );
        }
        let gauges = [
            (
                "meshscope_memtable_bytes",
                "Arrow bytes waiting in the memtable.",
                self.store.memtable_bytes(),
            ),
            (
                "meshscope_in_flight_bytes",
                "Bytes reserved by exports being processed.",
                self.in_flight_bytes(),
            ),
        ];
        for (name, help, value) in gauges {
            out += &format!("# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}\n");
        }
        out += &self.fleet.render_metrics();
        out += &self.graph.render_metrics();
        out
    }

    /// Stores one export; answers with what validation rejected (the OTLP partial success).
    pub async fn export(
        &self,
        signal: Signal,
        encoding: Encoding,
        body: Bytes,
    ) -> Result<Rejections, IngestError> {
        let result = self.try_export(signal, encoding, body).await;
        if result.is_err() {
            self.stats.requests_refused.fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    async fn try_export(
        &self,
        signal: Signal,
        encoding: Encoding,
        body: Bytes,
    ) -> Result<Rejections, IngestError> {
        if body.len() > self.max_request_bytes {
            return Err(IngestError::TooLarge {
                limit: self.max_request_bytes,
            });
        }
        let _permit = self.admission.admit(body.len())?;
        let _converter = self
            .converters
            .acquire()
            .await
            .map_err(|_| IngestError::Unavailable("shutting down".into()))?;
        let prepared = tokio::task::spawn_blocking(move || prepare(signal, encoding, body))
            .await
            .map_err(|error| IngestError::Unavailable(format!("decoder task failed: {error}")))??;
        let (accepted, rejected) = match signal {
            Signal::Traces => (&self.stats.spans_accepted, &self.stats.spans_rejected),
            Signal::Metrics => (&self.stats.points_accepted, &self.stats.points_rejected),
        };
        rejected.fetch_add(prepared.rejections.count.max(0) as u64, Ordering::Relaxed);
        if prepared.rows > 0 {
            let kind = match signal {
                Signal::Traces => RecordKind::Traces,
                Signal::Metrics => RecordKind::Metrics,
            };
            let observed = (signal == Signal::Traces).then(|| prepared.batch.clone());
            self.store
                .append(kind, prepared.payload, prepared.batch)
                .await
                .map_err(unavailable)?;
            if let Some(batch) = observed {
                self.fleet.observe(&batch);
                self.graph.observe(&batch, unix_millis());
            }
            accepted.fetch_add(prepared.rows as u64, Ordering::Relaxed);
        }
        Ok(prepared.rejections)
    }
}

impl Ingest {
    /// Every second, closes the graph windows that can no longer change and stores their figures as
    /// metric points through the ordinary export path (so they are in the WAL before they count), until
    /// `stop` resolves. A window the store refuses (overload) is retried on the next tick.
    pub async fn store_graph_windows(self: Arc<Self>, stop: impl std::future::Future<Output = ()>) {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut waiting: Vec<ExportMetricsServiceRequest> = Vec::new();
        tokio::pin!(stop);
        loop {
            tokio::select! {
                _ = &mut stop => return,
                _ = tick.tick() => {}
            }
            waiting.extend(self.graph.tick(unix_millis()));
            // At most a minute of windows waits for a store that refuses; older ones are dropped.
            if waiting.len() > 60 {
                let dropped = waiting.len() - 60;
                waiting.drain(..dropped);
                tracing::warn!(
                    dropped,
                    "graph windows dropped: the store kept refusing them"
                );
            }
            while let Some(request) = waiting.first() {
                let body = Bytes::from(request.encode_to_vec());
                match self.export(Signal::Metrics, Encoding::Protobuf, body).await {
                    Ok(_) => {
                        waiting.remove(0);
                    }
                    Err(error) => {
                        tracing::debug!(%error, "graph window not stored yet");
                        break;
                    }
                }
            }
        }
    }
}

fn unix_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as u64)
}

fn unavailable(error: StorageError) -> IngestError {
    tracing::error!(%error, "export refused: storage failed");
    IngestError::Unavailable(error.to_string())
}

fn decode<T: Message + Default + serde::de::DeserializeOwned>(
    encoding: Encoding,
    body: &[u8],
) -> Result<T, IngestError> {
    match encoding {
        Encoding::Protobuf => T::decode(body).map_err(|error| IngestError::Undecodable {
            encoding: "protobuf",
            reason: error.to_string(),
        }),
        Encoding::Json => serde_json::from_slice(body).map_err(|error| IngestError::Undecodable {
            encoding: "JSON",
            reason: error.to_string(),
        }),
    }
}

/// Decodes, validates and converts; re-encodes to protobuf for the WAL only when the stored request
/// differs from the received bytes (JSON input, or spans removed by validation).
fn prepare(signal: Signal, encoding: Encoding, body: Bytes) -> Result<Prepared, IngestError> {
    let unchanged =
        |rejections: &Rejections| encoding == Encoding::Protobuf && rejections.count == 0;
    let converted = match signal {
        Signal::Traces => {
            let mut request: ExportTraceServiceRequest = decode(encoding, &body)?;
            let rejections = validate_traces(&mut request);
            let payload = if unchanged(&rejections) {
                body.to_vec()
            } else {
                request.encode_to_vec()
            };
            (payload, spans_to_batch(&request), rejections)
        }
        Signal::Metrics => {
            let mut request: ExportMetricsServiceRequest = decode(encoding, &body)?;
            let rejections = validate_metrics(&mut request);
            let payload = if unchanged(&rejections) {
                body.to_vec()
            } else {
                request.encode_to_vec()
            };
            (payload, metrics_to_batch(&request), rejections)
        }
    };
    let (payload, batch, rejections) = converted;
    let batch = batch.map_err(|error| IngestError::Undecodable {
        encoding: "OTLP",
        reason: error.to_string(),
    })?;
    Ok(Prepared {
        rows: batch.num_rows(),
        payload,
        batch,
        rejections,
    })
}
