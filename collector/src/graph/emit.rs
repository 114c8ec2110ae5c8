//! Closed graph windows as OTLP metric points (stored like any export), and live totals as Prometheus
//! text.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;
use std::sync::atomic::Ordering;

use meshscope_proto::collector::metrics::v1::ExportMetricsServiceRequest;
use meshscope_proto::common::{AnyValue, InstrumentationScope, KeyValue, any_value};
use meshscope_proto::metrics::summary_data_point::ValueAtQuantile;
use meshscope_proto::metrics::{
    AggregationTemporality, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum, Summary,
    SummaryDataPoint, metric, number_data_point,
};
use meshscope_proto::resource::Resource;

use crate::fleet::window::Evidence;
use crate::graph::{EdgeKey, GraphCounters, Window};

/// `service.name` of the points the collector writes about the graph.
pub(crate) const SELF_SERVICE: &str = "meshscope-collector";

/// Quantiles kept of every latency sketch, in this order in `quantile_values`.
pub(crate) const QUANTILES: [f64; 3] = [0.5, 0.95, 0.99];

fn text(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        ..Default::default()
    }
}

/// Builds metric points named `name.*` for one series.
struct Series<'a> {
    start: u64,
    end: u64,
    attributes: Vec<KeyValue>,
    metrics: &'a mut BTreeMap<&'static str, Metric>,
}

impl Series<'_> {
    fn count(&mut self, name: &'static str, value: u64) {
        let metric = self.metrics.entry(name).or_insert_with(|| Metric {
            name: name.into(),
            unit: "{request}".into(),
            data: Some(metric::Data::Sum(Sum {
                data_points: Vec::new(),
                aggregation_temporality: AggregationTemporality::Delta as i32,
                is_monotonic: true,
            })),
            ..Default::default()
        });
        if let Some(metric::Data::Sum(sum)) = &mut metric.data {
            sum.data_points.push(NumberDataPoint {
                attributes: self.attributes.clone(),
                start_time_unix_nano: self.start,
                time_unix_nano: self.end,
                value: Some(number_data_point::Value::AsInt(value as i64)),
                ..Default::default()
            });
        }
    }

    fn latency(&mut self, name: &'static str, evidence: &Evidence) {
        if evidence.requests == 0 {
            return;
        }
        let metric = self.metrics.entry(name).or_insert_with(|| Metric {
            name: name.into(),
            unit: "ms".into(),
            data: Some(metric::Data::Summary(Summary {
                data_points: Vec::new(),
            })),
            ..Default::default()
        });
        if let Some(metric::Data::Summary(summary)) = &mut metric.data {
            summary.data_points.push(SummaryDataPoint {
                attributes: self.attributes.clone(),
                start_time_unix_nano: self.start,
                time_unix_nano: self.end,
                count: evidence.requests,
                sum: evidence.latency_ms.sum().unwrap_or(0.0),
                quantile_values: QUANTILES
                    .iter()
                    .map(|&quantile| ValueAtQuantile {
                        quantile,
                        value: evidence.latency_quantile(quantile),
                    })
                    .collect(),
                ..Default::default()
            });
        }
    }
}

/// The figures of closed windows (by start second, each `length` seconds long) as one export.
pub(crate) fn metric_points(
    windows: &BTreeMap<i64, Window>,
    length: i64,
) -> ExportMetricsServiceRequest {
    let mut metrics = BTreeMap::new();
    for (&start, window) in windows {
        let start_nanos = start.max(0) as u64 * 1_000_000_000;
        let end_nanos = (start + length).max(0) as u64 * 1_000_000_000;
        let mut edges: Vec<_> = window.edges.iter().collect();
        edges.sort_by(|a, b| a.0.cmp(b.0));
        for (edge, figures) in edges {
            let mut series = Series {
                start: start_nanos,
                end: end_nanos,
                attributes: vec![
                    text("client", &edge.client),
                    text("server", &edge.server),
                    text("connection_type", edge.connection_type),
                ],
                metrics: &mut metrics,
            };
            series.count("meshscope.graph.requests", figures.client.requests);
            series.count("meshscope.graph.failed_requests", figures.client.failures);
            series.latency("meshscope.graph.client_latency", &figures.client);
            series.latency("meshscope.graph.server_latency", &figures.server);
        }
        let mut operations: Vec<_> = window.operations.iter().collect();
        operations.sort_by(|a, b| a.0.cmp(b.0));
        for ((service, operation), figures) in operations {
            let mut series = Series {
                start: start_nanos,
                end: end_nanos,
                attributes: vec![text("service", service), text("operation", operation)],
                metrics: &mut metrics,
            };
            series.count("meshscope.red.requests", figures.requests);
            series.count("meshscope.red.errors", figures.failures);
            series.latency("meshscope.red.duration", figures);
        }
    }
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![text("service.name", SELF_SERVICE)],
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(InstrumentationScope {
                    name: "meshscope.graph".into(),
                    ..Default::default()
                }),
                metrics: metrics.into_values().collect(),
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
}

/// A Prometheus label value: backslash, double quote and newline escaped.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Cumulative totals since start, and the pairing counters.
pub(crate) fn prometheus(
    edges: &HashMap<EdgeKey, (u64, u64)>,
    operations: &HashMap<(String, String), (u64, u64)>,
    pending: usize,
    counters: &GraphCounters,
) -> String {
    let mut edges: Vec<(String, (u64, u64))> = edges
        .iter()
        .map(|(edge, totals)| {
            let labels = format!(
                "client=\"{}\",server=\"{}\",connection_type=\"{}\"",
                label(&edge.client),
                label(&edge.server),
                edge.connection_type
            );
            (labels, *totals)
        })
        .collect();
    edges.sort();
    let mut operations: Vec<(String, (u64, u64))> = operations
        .iter()
        .map(|((service, operation), totals)| {
            let labels = format!(
                "service=\"{}\",operation=\"{}\"",
                label(service),
                label(operation)
            );
            (labels, *totals)
        })
        .collect();
    operations.sort();
    let mut out = String::new();
    let families = [
        (
            "meshscope_edge_requests_total",
            "Calls between services, paired from client and server spans.",
            &edges,
            false,
        ),
        (
            "meshscope_edge_failed_requests_total",
            "Failed calls between services.",
            &edges,
            true,
        ),
        (
            "meshscope_operation_requests_total",
            "Requests served, by service and operation (SERVER and CONSUMER spans).",
            &operations,
            false,
        ),
        (
            "meshscope_operation_errors_total",
            "Requests that failed, by service and operation.",
            &operations,
            true,
        ),
    ];
    for (name, help, series, failures) in families {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        for (labels, (requests, failed)) in series {
            let value = if failures { failed } else { requests };
            let _ = writeln!(out, "{name}{{{labels}}} {value}");
        }
    }
    let counts = [
        (
            "meshscope_graph_paired_total",
            "Calls whose client and server spans were paired.",
            &counters.paired,
        ),
        (
            "meshscope_graph_expired_total",
            "Spans whose partner did not arrive within the pairing wait.",
            &counters.expired,
        ),
        (
            "meshscope_graph_dropped_pending_total",
            "Spans dropped because the pairing table was full.",
            &counters.dropped_pending,
        ),
        (
            "meshscope_graph_dropped_series_total",
            "Calls dropped because the series cap was reached.",
            &counters.dropped_series,
        ),
        (
            "meshscope_graph_late_total",
            "Calls whose window had already closed.",
            &counters.late,
        ),
    ];
    for (name, help, value) in counts {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
            value.load(Ordering::Relaxed)
        );
    }
    let _ = writeln!(
        out,
        "# HELP meshscope_graph_pending Spans waiting for their partner.\n# TYPE meshscope_graph_pending gauge\nmeshscope_graph_pending {pending}"
    );
    out
}
