//! The streaming service graph and RED metrics end to end: a trace crossing four services (one of them
//! an uninstrumented database) is exported in pieces and out of order, and a trace without span kinds
//! crosses two more; the collector pairs the calls,
//! stores each closed window, and the `service_edges` and `red_metrics` views and `/metrics` show it.

mod common;

use std::time::Duration;

use common::*;
use meshscope_proto::trace::span::SpanKind;
use meshscope_proto::trace::{Span, Status, status::StatusCode};

/// One-second windows and pairing wait, so windows close within seconds.
const FAST_WINDOWS: &[&str] = &["--graph-window", "1s", "--graph-pairing-wait", "1s"];

fn call_span(
    trace: &[u8],
    id: &[u8],
    parent: &[u8],
    name: &str,
    kind: SpanKind,
    failed: bool,
) -> Span {
    let mut span = span(
        trace,
        id,
        parent,
        name,
        now_unix_nanos() - 20_000_000,
        Duration::from_millis(10),
    );
    span.kind = kind as i32;
    if failed {
        span.status = Some(Status {
            code: StatusCode::Error as i32,
            message: "boom".into(),
        });
    }
    span
}

#[tokio::test]
async fn calls_are_paired_across_services_and_stored_per_window() {
    let collector = Collector::start_with("service-graph", FAST_WINDOWS).await;
    let trace = random_trace_id();
    let [
        front_server,
        front_client,
        api_server,
        api_db,
        api_pay,
        pay_server,
    ] = std::array::from_fn::<_, 6, _>(|_| random_span_id());

    // The callee's half of api → payments arrives first.
    collector
        .export_grpc(traces_request(
            "payments",
            vec![call_span(
                &trace,
                &pay_server,
                &api_pay,
                "POST /charge",
                SpanKind::Server,
                true,
            )],
        ))
        .await;
    let mut db = call_span(
        &trace,
        &api_db,
        &api_server,
        "SELECT orders",
        SpanKind::Client,
        false,
    );
    db.attributes = vec![kv_str("db.system", "postgresql")];
    collector
        .export_grpc(traces_request(
            "api",
            vec![
                call_span(
                    &trace,
                    &api_server,
                    &front_client,
                    "GET /orders",
                    SpanKind::Server,
                    false,
                ),
                db,
                call_span(
                    &trace,
                    &api_pay,
                    &api_server,
                    "POST",
                    SpanKind::Client,
                    true,
                ),
            ],
        ))
        .await;
    collector
        .export_grpc(traces_request(
            "frontend",
            vec![
                call_span(&trace, &front_server, &[], "GET /", SpanKind::Server, false),
                call_span(
                    &trace,
                    &front_client,
                    &front_server,
                    "GET",
                    SpanKind::Client,
                    false,
                ),
            ],
        ))
        .await;

    // Spans without a kind pair by parent/child when their services differ.
    let untyped = random_trace_id();
    let (batch_root, worker_child) = (random_span_id(), random_span_id());
    for (service, id, parent) in [
        ("batch", &batch_root, &vec![]),
        ("worker", &worker_child, &batch_root),
    ] {
        let mut untyped_span = call_span(&untyped, id, parent, "step", SpanKind::Server, false);
        untyped_span.kind = SpanKind::Unspecified as i32;
        collector
            .export_grpc(traces_request(service, vec![untyped_span]))
            .await;
    }

    let edges_sql = "SELECT client, server, connection_type, sum(requests) AS requests, \
                     sum(failures) AS failures, max(client_p50_ms) AS client_p50 \
                     FROM service_edges GROUP BY 1, 2, 3 ORDER BY 1, 2";
    let edges = eventually_within(Duration::from_secs(20), || async {
        let result = collector.sql(edges_sql).await;
        (result.rows.len() == 5).then_some(result.rows)
    })
    .await;
    let edges = match edges {
        Some(edges) => edges,
        None => panic!(
            "four edges within 20 s: {:?}",
            collector.sql(edges_sql).await.rows
        ),
    };
    let summary: Vec<(String, String, String, i64, i64)> = edges
        .iter()
        .map(|row| {
            (
                row["client"].as_str().unwrap_or_default().to_owned(),
                row["server"].as_str().unwrap_or_default().to_owned(),
                row["connection_type"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                row["requests"].as_i64().unwrap_or(-1),
                row["failures"].as_i64().unwrap_or(-1),
            )
        })
        .collect();
    let expected = [
        ("api", "payments", "", 1, 1),
        ("api", "postgresql", "database", 1, 0),
        ("batch", "worker", "", 1, 0),
        ("frontend", "api", "", 1, 0),
        ("user", "frontend", "", 1, 0),
    ]
    .map(|(c, s, k, r, f)| (c.to_owned(), s.to_owned(), k.to_owned(), r, f));
    assert_eq!(summary, expected.to_vec());
    for row in &edges {
        let p50 = row["client_p50"].as_f64().unwrap_or_default();
        assert!(
            (9.8..10.2).contains(&p50),
            "client p50 of 10 ms spans: {row:?}"
        );
    }

    let red = collector
        .sql(
            "SELECT service, operation, sum(requests) AS requests, sum(errors) AS errors \
             FROM red_metrics GROUP BY 1, 2 ORDER BY 1, 2",
        )
        .await
        .rows;
    let red: Vec<(String, String, i64, i64)> = red
        .iter()
        .map(|row| {
            (
                row["service"].as_str().unwrap_or_default().to_owned(),
                row["operation"].as_str().unwrap_or_default().to_owned(),
                row["requests"].as_i64().unwrap_or(-1),
                row["errors"].as_i64().unwrap_or(-1),
            )
        })
        .collect();
    assert_eq!(
        red,
        vec![
            ("api".into(), "GET /orders".into(), 1, 0),
            ("frontend".into(), "GET /".into(), 1, 0),
            ("payments".into(), "POST /charge".into(), 1, 1),
        ]
    );

    let metrics = reqwest::get(format!("{}/metrics", collector.otlp_http_endpoint()))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics text");
    for line in [
        "meshscope_edge_requests_total{client=\"frontend\",server=\"api\",connection_type=\"\"} 1",
        "meshscope_edge_failed_requests_total{client=\"api\",server=\"payments\",connection_type=\"\"} 1",
        "meshscope_operation_errors_total{service=\"payments\",operation=\"POST /charge\"} 1",
        "meshscope_graph_paired_total 3",
        "meshscope_graph_pending 0",
    ] {
        assert!(metrics.contains(line), "missing {line:?} in:\n{metrics}");
    }
}

/// The value of an unlabelled counter or gauge in Prometheus text.
fn metric_value(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .find_map(|line| {
            line.strip_prefix(name)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no {name} in:\n{metrics}"))
}

#[tokio::test]
async fn at_most_a_thousandth_of_calls_stay_unpaired_when_halves_arrive_out_of_order() {
    let collector = Collector::start_with(
        "service-graph-pairing",
        &["--graph-window", "1s", "--graph-pairing-wait", "10s"],
    )
    .await;
    const CALLS: usize = 5_000;
    let mut clients = Vec::with_capacity(CALLS);
    let mut servers = Vec::with_capacity(CALLS);
    for _ in 0..CALLS {
        let trace = random_trace_id();
        let client_id = random_span_id();
        clients.push(call_span(
            &trace,
            &client_id,
            &[],
            "GET /items",
            SpanKind::Client,
            false,
        ));
        servers.push(call_span(
            &trace,
            &random_span_id(),
            &client_id,
            "GET /items",
            SpanKind::Server,
            false,
        ));
    }
    // Callee halves of the first half of the calls arrive before their callers', the rest after, in
    // batches of 500 that interleave the two services.
    let (early_servers, late_servers) = servers.split_at(CALLS / 2);
    let mut batches: Vec<(&str, Vec<Span>)> = Vec::new();
    for chunk in early_servers.chunks(500) {
        batches.push(("catalog", chunk.to_vec()));
    }
    for chunk in clients.chunks(500) {
        batches.push(("frontend", chunk.to_vec()));
    }
    for chunk in late_servers.chunks(500) {
        batches.push(("catalog", chunk.to_vec()));
    }
    for (service, spans) in batches {
        collector.export_grpc(traces_request(service, spans)).await;
    }

    let url = format!("{}/metrics", collector.otlp_http_endpoint());
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let (paired, expired) = loop {
        let metrics = reqwest::get(&url)
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("metrics text");
        let paired = metric_value(&metrics, "meshscope_graph_paired_total");
        let expired = metric_value(&metrics, "meshscope_graph_expired_total");
        let pending = metric_value(&metrics, "meshscope_graph_pending");
        if pending == 0 && paired + expired > 0 {
            break (paired, expired);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "calls still pending after 30 s:\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        expired * 1000 <= CALLS as u64,
        "{expired} of {CALLS} calls stayed unpaired ({paired} paired)"
    );
    assert_eq!(paired + expired, CALLS as u64);
}
