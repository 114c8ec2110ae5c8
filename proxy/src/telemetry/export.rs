//! Span export over OTLP/gRPC, through a bounded queue that never slows traffic.
//!
//! Request handling hands finished spans to `Tracer::record`, which only tries to enqueue: when the
//! queue is full the span is dropped and counted. One background task batches the queue (by size or
//! every flush interval) and sends `ExportTraceServiceRequest`s with tonic; a failed export drops its
//! batch and is counted too, so a slow or absent collector costs spans, never latency.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use meshscope_proto::collector::trace::v1::ExportTraceServiceRequest;
use meshscope_proto::collector::trace::v1::trace_service_client::TraceServiceClient;
use meshscope_proto::common::{AnyValue, InstrumentationScope, KeyValue, any_value};
use meshscope_proto::resource::Resource;
use meshscope_proto::trace::{ResourceSpans, ScopeSpans, Span};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tonic::transport::{Channel, Endpoint};

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
    queue: mpsc::Sender<Span>,
    counters: Arc<ExportCounters>,
    sample_ratio: f64,
}

impl Tracer {
    /// Draws whether a trace that starts at this proxy is recorded.
    pub(crate) fn sample_new_trace(&self) -> bool {
        fastrand::f64() < self.sample_ratio
    }

    /// Queues a finished span, or drops and counts it if the queue is full.
    pub(crate) fn record(&self, span: Span) {
        if self.queue.try_send(span).is_err() {
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
        }
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
        let (queue, spans) = mpsc::channel(config.queue_size);
        let (stop, stopped) = watch::channel(false);
        let counters = Arc::new(ExportCounters::default());
        let batcher = Batcher {
            client: TraceServiceClient::new(channel),
            resource: resource(service),
            batch_size: config.batch_size,
            counters: Arc::clone(&counters),
            failing: false,
        };
        let task = tokio::spawn(batcher.run(spans, stopped, config.flush_interval.0));
        let tracer = Arc::new(Tracer {
            sample_ratio: config.sample_ratio,
            queue,
            counters: Arc::clone(&counters),
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
    client: TraceServiceClient<Channel>,
    resource: Resource,
    batch_size: usize,
    counters: Arc<ExportCounters>,
    /// Whether the last export failed, so a down collector is logged once, not per batch.
    failing: bool,
}

impl Batcher {
    async fn run(
        mut self,
        mut spans: mpsc::Receiver<Span>,
        mut stop: watch::Receiver<bool>,
        flush: Duration,
    ) {
        let mut batch = Vec::with_capacity(self.batch_size);
        let mut ticker = tokio::time::interval(flush);
        loop {
            tokio::select! {
                span = spans.recv() => match span {
                    Some(span) => {
                        batch.push(span);
                        if batch.len() >= self.batch_size {
                            self.export(std::mem::take(&mut batch)).await;
                        }
                    }
                    None => break,
                },
                _ = ticker.tick() => {
                    if !batch.is_empty() {
                        self.export(std::mem::take(&mut batch)).await;
                    }
                }
                _ = stop.changed() => break,
            }
        }
        while let Ok(span) = spans.try_recv() {
            batch.push(span);
            if batch.len() >= self.batch_size {
                self.export(std::mem::take(&mut batch)).await;
            }
        }
        if !batch.is_empty() {
            self.export(batch).await;
        }
    }

    async fn export(&mut self, spans: Vec<Span>) {
        let count = spans.len() as u64;
        let request = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(self.resource.clone()),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: SCOPE_NAME.to_owned(),
                        version: env!("CARGO_PKG_VERSION").to_owned(),
                        ..Default::default()
                    }),
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        match self.client.export(request).await {
            Ok(_) => {
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

/// An integer attribute.
pub(crate) fn int(key: &str, value: i64) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::IntValue(value)),
        }),
        ..Default::default()
    }
}
