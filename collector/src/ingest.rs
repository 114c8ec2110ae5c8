//! The path every export takes, whichever receiver it came through:
//! admit → decode + validate + convert (on the blocking pool) → WAL fsync → memtable → answer.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use meshscope_proto::collector::metrics::v1::ExportMetricsServiceRequest;
use meshscope_proto::collector::trace::v1::ExportTraceServiceRequest;
use meshscope_storage::convert::{metrics_to_batch, spans_from_protobuf, spans_to_batch};
use meshscope_storage::wal::RecordKind;
use meshscope_storage::{RecordBatch, StorageError, Store};
use prost::Message;

use crate::admission::Admission;
use crate::error::IngestError;
use crate::fleet::{FleetHealth, FleetOptions};
use crate::graph::{GraphOptions, ServiceGraph};
use crate::validate::{MAX_ANY_VALUE_DEPTH, Rejections, validate_metrics, validate_traces};

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
        // The converter permit is held while the request is decoded and converted, not while it waits
        // for its WAL group's fsync: held across the fsync, it let no more than one request per core
        // into a group, and the cores idled while the disk synced.
        let converter = self
            .converters
            .acquire()
            .await
            .map_err(|_| IngestError::Unavailable("shutting down".into()))?;
        let prepared = tokio::task::spawn_blocking(move || prepare(signal, encoding, body))
            .await
            .map_err(|error| IngestError::Unavailable(format!("decoder task failed: {error}")))??;
        drop(converter);
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
///
/// A protobuf trace export whose spans are all valid, the usual case, is read straight from its bytes
/// ([`spans_from_protobuf`]); anything else is decoded by prost, validated and converted.
fn prepare(signal: Signal, encoding: Encoding, body: Bytes) -> Result<Prepared, IngestError> {
    if signal == Signal::Traces
        && encoding == Encoding::Protobuf
        && let Ok(batch) = spans_from_protobuf(&body, MAX_ANY_VALUE_DEPTH)
    {
        return Ok(Prepared {
            rows: batch.num_rows(),
            payload: body.to_vec(),
            batch,
            rejections: Rejections::default(),
        });
    }
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

#[cfg(test)]
mod tests {
    use meshscope_proto::common::any_value::Value;
    use meshscope_proto::common::{AnyValue, ArrayValue, KeyValue};
    use meshscope_proto::resource::Resource;
    use meshscope_proto::trace::span::{Event, Link};
    use meshscope_proto::trace::{ResourceSpans, ScopeSpans, Span, Status};

    use super::*;

    fn attribute(key: &str, value: Value) -> KeyValue {
        KeyValue {
            key: key.to_owned(),
            value: Some(AnyValue { value: Some(value) }),
            key_strindex: 0,
        }
    }

    fn mesh_request() -> ExportTraceServiceRequest {
        let span = |i: u8| Span {
            trace_id: vec![i + 1; 16],
            span_id: vec![i + 2; 8],
            parent_span_id: if i.is_multiple_of(2) {
                vec![9; 8]
            } else {
                Vec::new()
            },
            name: format!("GET /items/{i}"),
            kind: 3,
            start_time_unix_nano: 1_700_000_000_000_000_000 + u64::from(i),
            end_time_unix_nano: 1_700_000_000_001_000_000,
            attributes: vec![
                attribute("http.request.method", Value::StringValue("GET".to_owned())),
                attribute("http.response.status_code", Value::IntValue(200)),
                attribute("meshscope.retry.attempt", Value::IntValue(i64::from(i))),
                attribute("sampled", Value::BoolValue(true)),
                attribute("ratio", Value::DoubleValue(0.5)),
                attribute(
                    "tags",
                    Value::ArrayValue(ArrayValue {
                        values: vec![AnyValue {
                            value: Some(Value::StringValue("a".to_owned())),
                        }],
                    }),
                ),
            ],
            events: vec![Event {
                name: "retry".to_owned(),
                ..Event::default()
            }],
            links: vec![Link {
                trace_id: vec![5; 16],
                span_id: vec![6; 8],
                ..Link::default()
            }],
            status: Some(Status {
                message: "ok".to_owned(),
                code: 1,
            }),
            ..Span::default()
        };
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![attribute(
                        "service.name",
                        Value::StringValue("checkout".to_owned()),
                    )],
                    ..Resource::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans: (0..4).map(span).collect(),
                    ..ScopeSpans::default()
                }],
                schema_url: String::new(),
            }],
        }
    }

    /// The direct read must never store anything the prost path would not store as it is: whenever it
    /// succeeds on damaged bytes, prost decodes them, validation rejects nothing, and the rows are the
    /// same. Damage: one byte changed, or the request cut short, at seeded pseudo-random places.
    #[test]
    fn direct_read_agrees_with_prost_and_validation_on_damaged_requests() {
        let original = mesh_request().encode_to_vec();
        assert!(spans_from_protobuf(&original, MAX_ANY_VALUE_DEPTH).is_ok());
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let (mut read_directly, mut given_up) = (0, 0);
        for round in 0..5000 {
            let mut bytes = original.clone();
            let at = (next() % bytes.len() as u64) as usize;
            if round % 10 == 0 {
                bytes.truncate(at);
            } else {
                bytes[at] = next() as u8;
            }
            let Ok(batch) = spans_from_protobuf(&bytes, MAX_ANY_VALUE_DEPTH) else {
                given_up += 1;
                continue;
            };
            read_directly += 1;
            let mut decoded = ExportTraceServiceRequest::decode(&bytes[..])
                .unwrap_or_else(|e| panic!("round {round}: read directly, prost refuses: {e}"));
            let rejections = validate_traces(&mut decoded);
            assert_eq!(rejections.count, 0, "round {round}: {}", rejections.message);
            assert_eq!(batch, spans_to_batch(&decoded).unwrap(), "round {round}");
        }
        // Both outcomes must occur, or the test checks nothing.
        assert!(
            read_directly > 500 && given_up > 500,
            "{read_directly} / {given_up}"
        );
    }
}
