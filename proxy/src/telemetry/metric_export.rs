//! Metric export over OTLP/gRPC, on an interval, through the same kind of bounded path as spans.
//!
//! ```text
//! every metrics_interval: snapshot of the tables ──try_send──► queue (4) ──► exporter task ──► collector
//!                                   full queue: dropped and counted │  failed export: counted
//! ```
//!
//! Taking a snapshot reads atomics under the live-state lock for a moment; nothing on the request
//! path waits for export. Points are cumulative, so a dropped or failed export loses resolution, not
//! counts: the next one carries the totals. At shutdown one last snapshot is sent and flushed.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use meshscope_proto::collector::metrics::v1::ExportMetricsServiceRequest;
use meshscope_proto::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use meshscope_proto::common::InstrumentationScope;
use meshscope_proto::metrics::{ResourceMetrics, ScopeMetrics};
use meshscope_proto::resource::Resource;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tonic::transport::Channel;

use super::export::{ExportCounters, SCOPE_NAME, channel, resource};
use super::metric_points::collect;
use crate::config::TelemetryConfig;
use crate::reload::Live;
use crate::stats::unix_nanos;

/// Snapshots waiting for export; beyond this a snapshot is dropped and counted.
const QUEUE: usize = 4;

/// The running metric export: stop it for a final snapshot and flush.
#[derive(Debug)]
pub(crate) struct MetricExporter {
    stop: watch::Sender<bool>,
    sampler: JoinHandle<()>,
    sender: JoinHandle<()>,
    counters: Arc<ExportCounters>,
    flush_limit: Duration,
}

/// Where snapshots come from.
struct Sampler {
    live: Arc<Mutex<Live>>,
    spans: Option<Arc<ExportCounters>>,
    resource: Resource,
    started: u64,
    queue: mpsc::Sender<ExportMetricsServiceRequest>,
    counters: Arc<ExportCounters>,
}

impl MetricExporter {
    /// Starts exporting the metrics of `live` (and `spans`' counters) for `service`; `None` without
    /// an endpoint or with metrics export turned off.
    pub(crate) fn start(
        config: &TelemetryConfig,
        service: &str,
        live: Arc<Mutex<Live>>,
        spans: Option<Arc<ExportCounters>>,
    ) -> Option<Self> {
        if !config.metrics {
            return None;
        }
        let client = MetricsServiceClient::new(channel(config)?);
        let (queue, snapshots) = mpsc::channel(QUEUE);
        let (stop, stopped) = watch::channel(false);
        let counters = Arc::new(ExportCounters::default());
        let sampler = Sampler {
            live,
            spans,
            resource: resource(service),
            started: unix_nanos(SystemTime::now()),
            queue,
            counters: Arc::clone(&counters),
        };
        Some(Self {
            stop,
            sampler: tokio::spawn(sampler.run(config.metrics_interval.0, stopped)),
            sender: tokio::spawn(send(client, snapshots, Arc::clone(&counters))),
            counters,
            flush_limit: config.export_timeout.0 * 2,
        })
    }

    /// The snapshot counters.
    pub(crate) fn counters(&self) -> Arc<ExportCounters> {
        Arc::clone(&self.counters)
    }

    /// Sends a last snapshot and waits (at most twice the export timeout) until it is exported.
    pub(crate) async fn stop(self) {
        let _ = self.stop.send(true);
        let flushed = async {
            let _ = self.sampler.await;
            let _ = self.sender.await;
        };
        if tokio::time::timeout(self.flush_limit, flushed)
            .await
            .is_err()
        {
            tracing::warn!("metric export did not finish flushing in time");
        }
    }
}

impl Sampler {
    async fn run(self, interval: Duration, mut stop: watch::Receiver<bool>) {
        let mut ticker = tokio::time::interval(interval);
        // The first tick is immediate: skip it so the first snapshot has an interval of traffic.
        ticker.tick().await;
        loop {
            tokio::select! {
                _ = ticker.tick() => {
                    if self.queue.try_send(self.snapshot()).is_err() {
                        self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                    }
                }
                _ = stop.changed() => break,
            }
        }
        // The last snapshot may wait for room: nothing else is sent any more.
        let _ = self.queue.send(self.snapshot()).await;
    }

    fn snapshot(&self) -> ExportMetricsServiceRequest {
        let now = unix_nanos(SystemTime::now());
        let metrics = match self.live.lock() {
            Ok(live) => collect(live.tables(), self.spans.as_deref(), self.started, now),
            Err(poisoned) => collect(
                poisoned.into_inner().tables(),
                self.spans.as_deref(),
                self.started,
                now,
            ),
        };
        ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                resource: Some(self.resource.clone()),
                scope_metrics: vec![ScopeMetrics {
                    scope: Some(InstrumentationScope {
                        name: SCOPE_NAME.to_owned(),
                        version: env!("CARGO_PKG_VERSION").to_owned(),
                        ..Default::default()
                    }),
                    metrics,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }
}

/// Exports snapshots as they come until the sampler is gone; a down collector is logged once.
async fn send(
    mut client: MetricsServiceClient<Channel>,
    mut snapshots: mpsc::Receiver<ExportMetricsServiceRequest>,
    counters: Arc<ExportCounters>,
) {
    let mut failing = false;
    while let Some(request) = snapshots.recv().await {
        match client.export(request).await {
            Ok(_) => {
                counters.exported.fetch_add(1, Ordering::Relaxed);
                if failing {
                    tracing::info!("metric export recovered");
                    failing = false;
                }
            }
            Err(status) => {
                counters.failed.fetch_add(1, Ordering::Relaxed);
                if !failing {
                    tracing::warn!(%status, "metric export failed; retrying with the next snapshot");
                    failing = true;
                }
            }
        }
    }
}
