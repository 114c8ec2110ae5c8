//! The official OpenTelemetry Python SDK as a client: `tests/python/send_traces.py` exports traces and
//! metrics through the SDK's OTLP/gRPC exporter and its OTLP/HTTP protobuf exporter, and prints what it
//! sent. Every span must read back through `GET /api/traces` equal to that description, and the metric data
//! points must be in `metric_points` with their values.
//!
//! Needs the virtualenv made by `scripts/test.sh` (`MESHSCOPE_TEST_PYTHON`); without it these tests fail.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;
use serde::Deserialize;
use serde_json::Value;

/// Runs `send_traces.py <signal>` against the collector and returns its JSON description.
async fn run_python_sdk(python: &Path, collector: &Collector, signal: &str) -> Value {
    let mut command = Command::new(python);
    command
        .arg(python_script("send_traces.py"))
        .arg(signal)
        .args(["--grpc-endpoint", &collector.grpc_endpoint()])
        .args(["--http-endpoint", &collector.otlp_http_endpoint()]);
    let output = run_command(command, Duration::from_secs(120)).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "send_traces.py {signal} failed ({}):\n{stderr}",
        output.status
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.trim_start().starts_with('{'),
        "send_traces.py printed no JSON:\n{stdout}\nstderr:\n{stderr}"
    );
    parse_json_exact_doubles(&stdout)
}

/// One span of the script's description.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DescribedSpan {
    transport: String,
    resource: meshscope_proto::resource::Resource,
    resource_schema_url: String,
    scope: meshscope_proto::common::InstrumentationScope,
    scope_schema_url: String,
    span: meshscope_proto::trace::Span,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_traces_read_back_field_by_field() {
    let python = python();
    let collector = Collector::start("python-traces").await;
    let description = run_python_sdk(&python, &collector, "traces").await;
    let described: Vec<DescribedSpan> =
        serde_json::from_value(description["spans"].clone()).expect("description of spans");

    // The script must have exercised what this test is about.
    assert_eq!(described.len(), 14, "7 spans per transport");
    for transport in ["grpc", "http"] {
        let spans: Vec<&DescribedSpan> = described
            .iter()
            .filter(|d| d.transport == transport)
            .collect();
        assert_eq!(spans.len(), 7, "{transport}");
        let consume = spans
            .iter()
            .find(|d| d.span.name == format!("{transport} consume order"))
            .expect("consume span");
        assert!(consume.span.dropped_attributes_count > 0);
        assert!(consume.span.dropped_events_count > 0);
        assert!(consume.span.dropped_links_count > 0);
        assert!(
            consume
                .span
                .events
                .iter()
                .all(|e| e.dropped_attributes_count > 0)
        );
        assert!(
            consume
                .span
                .links
                .iter()
                .all(|l| l.dropped_attributes_count > 0)
        );
        assert_eq!(
            consume.span.trace_state,
            "meshscope=t61rcWkgMzE,vendor=opaque"
        );
        assert!(
            spans
                .iter()
                .any(|d| d.span.status.as_ref().is_some_and(|s| s.code == 2))
        );
        assert!(spans.iter().any(|d| !d.span.links.is_empty()));
    }

    let mut by_trace: BTreeMap<Vec<u8>, Vec<SpanRecord>> = BTreeMap::new();
    for d in &described {
        by_trace
            .entry(d.span.trace_id.clone())
            .or_default()
            .push(SpanRecord {
                resource: d.resource.clone(),
                resource_schema_url: d.resource_schema_url.clone(),
                scope: d.scope.clone(),
                scope_schema_url: d.scope_schema_url.clone(),
                span: d.span.clone(),
            });
    }
    assert_eq!(by_trace.len(), 4, "two traces per transport");
    for (trace_id, expected) in &by_trace {
        let trace_hex = hex::encode(trace_id);
        let view = collector.wait_for_trace(&trace_hex, expected.len()).await;
        assert_trace_matches(&view, expected);

        // The same spans through SQL: count, service and scope columns.
        let service =
            string_attr(&expected[0].resource.attributes, "service.name").expect("service.name");
        let rows = collector
            .sql(&format!(
                "SELECT count(*) AS n, min(service_name) AS min_service, max(service_name) AS max_service, \
                        min(scope_name) AS scope, min(resource_schema_url) AS schema \
                 FROM spans WHERE trace_id = unhex_id('{trace_hex}')"
            ))
            .await;
        let row = &rows.rows[0];
        assert_eq!(
            row.get("n").and_then(as_i64),
            Some(expected.len() as i64),
            "{row:?}"
        );
        assert_eq!(
            row.get("min_service").and_then(Value::as_str),
            Some(service.as_str())
        );
        assert_eq!(
            row.get("max_service").and_then(Value::as_str),
            Some(service.as_str())
        );
        assert_eq!(
            row.get("scope").and_then(Value::as_str),
            Some("io.meshscope.e2e.python")
        );
        assert_eq!(
            row.get("schema").and_then(Value::as_str),
            Some("https://opentelemetry.io/schemas/1.26.0")
        );
    }

    let services = collector.get_json("/api/services").await;
    for service in ["py-grpc-shop", "py-http-shop"] {
        assert!(
            services["services"]
                .as_array()
                .is_some_and(|s| s.contains(&Value::from(service))),
            "{service} missing from /api/services: {services}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_metrics_of_every_kind_are_stored() {
    let python = python();
    let collector = Collector::start("python-metrics").await;
    let description = run_python_sdk(&python, &collector, "metrics").await;
    let metrics = description["metrics"]
        .as_array()
        .expect("metrics description");
    assert_eq!(metrics.len(), 14, "7 metrics per transport");
    let expected_points: i64 = metrics
        .iter()
        .map(|m| m["points"].as_array().map_or(0, |p| p.len() as i64))
        .sum();
    collector
        .wait_for_i64(
            "SELECT count(*) FROM metric_points WHERE service_name IN ('py-grpc-metrics', 'py-http-metrics')",
            expected_points,
        )
        .await;

    // Every kind the SDK makes arrived, over both transports.
    let kinds = collector
        .sql(
            "SELECT DISTINCT metric_type FROM metric_points \
             WHERE service_name IN ('py-grpc-metrics', 'py-http-metrics') ORDER BY metric_type",
        )
        .await;
    let kinds: Vec<String> = kinds.strings("metric_type").into_iter().flatten().collect();
    assert_eq!(
        kinds,
        ["exponential_histogram", "gauge", "histogram", "sum"]
    );

    for metric in metrics {
        let name = metric["name"].as_str().expect("name");
        let service = metric["service"].as_str().expect("service");
        for point in metric["points"].as_array().expect("points") {
            let label = point["point"].as_str().expect("point label");
            let rows = collector
                .sql(&format!(
                    "SELECT service_name, scope_name, scope_version, metric_type, is_monotonic, \
                            value_int, value_double, count, sum, min, max \
                     FROM metric_points \
                     WHERE metric_name = '{name}' AND attr(attributes, 'point') = '{label}'"
                ))
                .await;
            assert_eq!(rows.rows.len(), 1, "{name} point {label}: {rows:?}");
            let row = &rows.rows[0];
            let context = format!("{name} point {label}: {row:?}");
            assert_eq!(
                row.get("service_name").and_then(Value::as_str),
                Some(service),
                "{context}"
            );
            assert_eq!(
                row.get("scope_name").and_then(Value::as_str),
                Some("io.meshscope.e2e.python.metrics"),
                "{context}"
            );
            assert_eq!(
                row.get("scope_version").and_then(Value::as_str),
                Some("4.5.6"),
                "{context}"
            );
            assert_eq!(row.get("metric_type"), Some(&metric["type"]), "{context}");
            if let Some(monotonic) = metric["monotonic"].as_bool() {
                assert_eq!(
                    row.get("is_monotonic"),
                    Some(&Value::Bool(monotonic)),
                    "{context}"
                );
            }
            for (field, column) in [
                ("valueInt", "value_int"),
                ("valueDouble", "value_double"),
                ("count", "count"),
                ("sum", "sum"),
                ("min", "min"),
                ("max", "max"),
            ] {
                if let Some(want) = point.get(field).and_then(as_f64) {
                    let got = row.get(column).and_then(as_f64);
                    assert_eq!(got, Some(want), "{column} of {context}");
                }
            }
        }
    }
}
