//! Span export over OTLP/gRPC, through a bounded queue that never slows traffic.
//!
//! Request handling hands finished spans, already encoded as protobuf (`wire`), to `Tracer::record`,
//! which appends them to a batch under a short lock, never waiting: when the queue is full the span
//! is dropped and counted. One background task sends each full batch (and a partial one every flush
//! interval) as an `ExportTraceServiceRequest` with tonic, the batch's bytes sent as they are; a
//! failed export drops its batch and is counted too, so a slow or absent collector costs spans,
//! never latency.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::{Buf, BufMut};
use http::uri::PathAndQuery;
use meshscope_proto::common::{AnyValue, InstrumentationScope, KeyValue, any_value};
use meshscope_proto::prost::Message;
use meshscope_proto::resource::Resource;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tonic::client::Grpc;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::{Channel, Endpoint};

use super::wire;
use crate::config::TelemetryConfig;

/// Name and version of this instrumentation, as OTLP's instrumentation scope.
pub(crate) const SCOPE_NAME: &str = "meshscope-proxy";

/// Counts of what happened to exported items (spans, or metric snapshots), for the log at shutdown
/// and the admin endpoint.
#[derive(Debug, Default)]
pub(crate) struct ExportCounters {
    pub(super) exported: AtomicU64,
    pub(super) dropped: AtomicU64,
    pub(super) failed: AtomicU64,
}

impl ExportCounters {
    /// Items (exported, dropped because the queue was full, lost in failed exports).
    pub(crate) fn totals(&self) -> (u64, u64, u64) {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        (
            load(&self.exported),
            load(&self.dropped),
            load(&self.failed),
        )
    }
}

/// Where finished spans go. Shared by every listener and request.
#[derive(Debug)]
pub(crate) struct Tracer {
    queue: Arc<SpanQueue>,
    sample_ratio: f64,
}

impl Tracer {
    /// Draws whether a trace that starts at this proxy is recorded.
    pub(crate) fn sample_new_trace(&self) -> bool {
        fastrand::f64() < self.sample_ratio
    }

    /// Queues a finished span (an encoded `Span` message), or drops and counts it if the queue is
    /// full.
    pub(crate) fn record(&self, span: &[u8]) {
        self.queue.push(span);
    }
}

impl Drop for Tracer {
    /// The last listener is gone: the export task sends what is queued and ends.
    fn drop(&mut self) {
        self.queue.lock().closed = true;
        self.queue.ready.notify_one();
    }
}

/// The bounded queue between the request path and the export task.
///
/// Spans are appended, already encoded, to the open batch under a short lock; the export task is
/// woken only when a batch is full (or by its flush timer), not per span as a channel receiver
/// would be: with one worker thread that wakeup cost as much as the span itself.
#[derive(Debug)]
struct SpanQueue {
    state: Mutex<QueueState>,
    /// Signalled when a batch fills up or the tracer is gone.
    ready: Notify,
    queue_size: usize,
    batch_size: usize,
    counters: Arc<ExportCounters>,
}

#[derive(Debug, Default)]
struct QueueState {
    /// Full batches waiting for the export task, oldest first.
    full: VecDeque<Batch>,
    /// The batch spans are being added to.
    open: Batch,
    /// Spans in `full` and `open`.
    queued: usize,
    /// No span will be recorded any more.
    closed: bool,
}

/// Spans encoded as consecutive `ScopeSpans.spans` entries.
#[derive(Debug, Default)]
struct Batch {
    encoded: Vec<u8>,
    spans: usize,
}

impl SpanQueue {
    fn lock(&self) -> MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn push(&self, span: &[u8]) {
        let mut state = self.lock();
        if state.queued >= self.queue_size {
            drop(state);
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        state.queued += 1;
        state.open.spans += 1;
        wire::scope_span(&mut state.open.encoded, span);
        if state.open.spans >= self.batch_size {
            // The next batch starts at this one's size, so it rarely grows by reallocation.
            let next = Batch {
                encoded: Vec::with_capacity(state.open.encoded.len()),
                spans: 0,
            };
            let full = std::mem::replace(&mut state.open, next);
            state.full.push_back(full);
            drop(state);
            self.ready.notify_one();
        }
    }

    /// The oldest full batch, or with `partial` the open batch if it has spans.
    fn take(&self, partial: bool) -> Option<Batch> {
        let mut state = self.lock();
        let batch = match state.full.pop_front() {
            Some(batch) => batch,
            None if partial && state.open.spans > 0 => std::mem::take(&mut state.open),
            None => return None,
        };
        state.queued -= batch.spans;
        Some(batch)
    }

    fn closed(&self) -> bool {
        self.lock().closed
    }
}

/// The running exporter: stop it to flush what is queued.
#[derive(Debug)]
pub(crate) struct Exporter {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    counters: Arc<ExportCounters>,
    /// Longest the final flush may take.
    flush_limit: Duration,
}

impl Exporter {
    /// Starts exporting to `config.otlp_endpoint` for service `service`; `None` without an endpoint.
    pub(crate) fn start(
        config: &TelemetryConfig,
        service: &str,
    ) -> Option<(Arc<Tracer>, Exporter)> {
        let channel = channel(config)?;
        let (stop, stopped) = watch::channel(false);
        let counters = Arc::new(ExportCounters::default());
        let queue = Arc::new(SpanQueue {
            state: Mutex::default(),
            ready: Notify::new(),
            queue_size: config.queue_size,
            batch_size: config.batch_size,
            counters: Arc::clone(&counters),
        });
        let scope = InstrumentationScope {
            name: SCOPE_NAME.to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            ..Default::default()
        };
        let batcher = Batcher {
            client: Grpc::new(channel),
            resource: resource(service).encode_to_vec(),
            scope: scope.encode_to_vec(),
            queue: Arc::clone(&queue),
            counters: Arc::clone(&counters),
            failing: false,
        };
        let task = tokio::spawn(batcher.run(stopped, config.flush_interval.0));
        let tracer = Arc::new(Tracer {
            sample_ratio: config.sample_ratio,
            queue,
        });
        let flush_limit = config.export_timeout.0 * 2;
        Some((
            tracer,
            Exporter {
                stop,
                task,
                counters,
                flush_limit,
            },
        ))
    }

    /// The span counters.
    pub(crate) fn counters(&self) -> Arc<ExportCounters> {
        Arc::clone(&self.counters)
    }

    /// Exports what is queued, waiting at most twice the export timeout, and logs the totals.
    pub(crate) async fn stop(self) {
        let _ = self.stop.send(true);
        if tokio::time::timeout(self.flush_limit, self.task)
            .await
            .is_err()
        {
            tracing::warn!("span export did not finish flushing in time");
        }
        let (exported, dropped, failed) = self.counters.totals();
        tracing::info!(exported, dropped, failed, "span export stopped");
    }
}

/// The export task's state.
struct Batcher {
    client: Grpc<Channel>,
    /// The encoded `Resource` and `InstrumentationScope` every export request carries.
    resource: Vec<u8>,
    scope: Vec<u8>,
    queue: Arc<SpanQueue>,
    counters: Arc<ExportCounters>,
    /// Whether the last export failed, so a down collector is logged once, not per batch.
    failing: bool,
}

impl Batcher {
    async fn run(mut self, mut stop: watch::Receiver<bool>, flush: Duration) {
        let mut ticker = tokio::time::interval(flush);
        let queue = Arc::clone(&self.queue);
        loop {
            let partial = tokio::select! {
                () = queue.ready.notified() => queue.closed(),
                _ = ticker.tick() => true,
                _ = stop.changed() => break,
            };
            while let Some(batch) = queue.take(false) {
                self.export(batch).await;
            }
            // A partial batch goes out on the timer, not again and again while spans trickle in.
            if partial && let Some(batch) = queue.take(true) {
                self.export(batch).await;
            }
            if queue.closed() {
                break;
            }
        }
        while let Some(batch) = queue.take(true) {
            self.export(batch).await;
        }
    }

    async fn export(&mut self, batch: Batch) {
        let count = batch.spans as u64;
        let request = EncodedExport {
            header: wire::export_header(&self.resource, &self.scope, batch.encoded.len()),
            spans: batch.encoded,
        };
        let path = PathAndQuery::from_static(EXPORT_PATH);
        let sent = match self.client.ready().await {
            Ok(()) => self
                .client
                .unary(tonic::Request::new(request), path, RawCodec)
                .await
                .map(drop),
            Err(e) => Err(tonic::Status::unavailable(e.to_string())),
        };
        match sent {
            Ok(()) => {
                self.counters.exported.fetch_add(count, Ordering::Relaxed);
                if self.failing {
                    tracing::info!("span export recovered");
                    self.failing = false;
                }
            }
            Err(status) => {
                self.counters.failed.fetch_add(count, Ordering::Relaxed);
                if !self.failing {
                    tracing::warn!(%status, "span export failed; dropping spans until it recovers");
                    self.failing = true;
                }
            }
        }
    }
}

/// The OTLP trace service's export method.
const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// An `ExportTraceServiceRequest` already encoded: its header, then the batch's spans.
struct EncodedExport {
    header: Vec<u8>,
    spans: Vec<u8>,
}

/// A gRPC codec that sends [`EncodedExport`] bytes as they are and ignores the response's content
/// (an `ExportTraceServiceResponse`, whose optional partial-success counts the proxy does not use).
#[derive(Debug, Clone, Copy, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = EncodedExport;
    type Decode = ();
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = EncodedExport;
    type Error = tonic::Status;

    fn encode(&mut self, item: EncodedExport, dst: &mut EncodeBuf<'_>) -> Result<(), Self::Error> {
        // One allocation for the whole batch: grown by `put_slice`, the buffer was reallocated and
        // copied again and again from tonic's 8 KiB start (~275 instructions per span, callgrind).
        dst.reserve(item.header.len() + item.spans.len());
        dst.put_slice(&item.header);
        dst.put_slice(&item.spans);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = ();
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<()>, Self::Error> {
        src.advance(src.remaining());
        Ok(Some(()))
    }
}

/// A lazily connecting channel to `config.otlp_endpoint`, with the export timeout; `None` without an
/// endpoint.
pub(crate) fn channel(config: &TelemetryConfig) -> Option<Channel> {
    let endpoint = config.otlp_endpoint.as_ref()?;
    Some(
        Endpoint::from(endpoint.0.clone())
            .connect_timeout(config.export_timeout.0)
            .timeout(config.export_timeout.0)
            .connect_lazy(),
    )
}

/// The OTLP resource every span and metric of this proxy carries.
pub(crate) fn resource(service: &str) -> Resource {
    Resource {
        attributes: vec![
            string("service.name", service),
            string("telemetry.sdk.name", SCOPE_NAME),
            string("telemetry.sdk.version", env!("CARGO_PKG_VERSION")),
        ],
        ..Default::default()
    }
}

/// A string attribute.
pub(crate) fn string(key: &str, value: impl Into<String>) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        ..Default::default()
    }
}
