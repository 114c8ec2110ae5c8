//! The compatibility layers against a real collector: the Jaeger query API (`/jaeger/api/…`) answers
//! in Jaeger's documented JSON shapes, checked field by field, and Zipkin v2 JSON posted to
//! `/api/v2/spans` reads back through the native trace API and the Jaeger API. Also the numeric
//! attribute comparisons of search, which the Jaeger route does not offer.

mod common;

use std::time::Duration;

use common::*;
use meshscope_proto::trace::span::{Event, Link, SpanKind};
use meshscope_proto::trace::{ResourceSpans, Status};
use serde_json::{Value, json};

/// frontend `GET /` (server) → frontend `call api` (client) → api `handle` (server, error, event, link).
struct Fixture {
    trace_id: Vec<u8>,
    root: Vec<u8>,
    client: Vec<u8>,
    server: Vec<u8>,
    linked_trace: Vec<u8>,
    linked_span: Vec<u8>,
    start: u64,
}

async fn send_fixture(collector: &Collector) -> Fixture {
    let fixture = Fixture {
        trace_id: random_trace_id(),
        root: random_span_id(),
        client: random_span_id(),
        server: random_span_id(),
        linked_trace: random_trace_id(),
        linked_span: random_span_id(),
        start: now_unix_nanos() - 2_000_000_000,
    };
    let ms = Duration::from_millis;
    let mut root = span(
        &fixture.trace_id,
        &fixture.root,
        &[],
        "GET /",
        fixture.start,
        ms(30),
    );
    root.attributes = vec![
        kv_str("http.route", "/"),
        kv_int("http.response.status_code", 200),
    ];
    let mut client = span(
        &fixture.trace_id,
        &fixture.client,
        &fixture.root,
        "call api",
        fixture.start + 2_000_000,
        ms(20),
    );
    client.kind = SpanKind::Client as i32;
    let mut server = span(
        &fixture.trace_id,
        &fixture.server,
        &fixture.client,
        "handle",
        fixture.start + 3_000_000,
        ms(15),
    );
    server.attributes = vec![
        kv("ratio", double_value(0.25)),
        kv("cached", bool_value(false)),
        kv("blob", bytes_value(&[0xff, 0x00])),
        kv("retries", int_value(2)),
    ];
    server.status = Some(Status {
        code: 2,
        message: "upstream reset".to_owned(),
    });
    server.trace_state = "vendor=x".to_owned();
    server.events = vec![Event {
        time_unix_nano: fixture.start + 4_000_000,
        name: "retry".to_owned(),
        attributes: vec![kv_int("attempt", 1)],
        ..Default::default()
    }];
    server.links = vec![Link {
        trace_id: fixture.linked_trace.clone(),
        span_id: fixture.linked_span.clone(),
        ..Default::default()
    }];
    let mut request = traces_request("frontend", vec![root, client]);
    let api: ResourceSpans = traces_request("api", vec![server]).resource_spans.remove(0);
    request.resource_spans.push(api);
    collector.export_grpc(request).await;
    collector
        .wait_for_trace(&hex::encode(&fixture.trace_id), 3)
        .await;
    fixture
}

fn tag<'a>(tags: &'a Value, key: &str) -> &'a Value {
    tags.as_array()
        .expect("tags is a list")
        .iter()
        .find(|t| t["key"] == key)
        .unwrap_or_else(|| panic!("no tag {key} in {tags}"))
}

fn assert_envelope(body: &Value, total: usize) {
    assert_eq!(body["total"], json!(total), "{body}");
    assert_eq!(body["limit"], json!(0));
    assert_eq!(body["offset"], json!(0));
    assert_eq!(body["errors"], Value::Null);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jaeger_api_answers_in_jaeger_shapes() {
    let collector = Collector::start("jaeger-api").await;
    let f = send_fixture(&collector).await;
    let trace_hex = hex::encode(&f.trace_id);

    let services = collector.get_json("/jaeger/api/services").await;
    assert_envelope(&services, 2);
    assert_eq!(services["data"], json!(["api", "frontend"]));

    let operations = collector
        .get_json("/jaeger/api/services/frontend/operations")
        .await;
    assert_envelope(&operations, 2);
    assert_eq!(operations["data"], json!(["GET /", "call api"]));
    let typed = collector
        .get_json("/jaeger/api/operations?service=frontend&spanKind=client")
        .await;
    assert_eq!(
        typed["data"],
        json!([{"name": "call api", "spanKind": "client"}])
    );

    let one = collector
        .get_json(&format!("/jaeger/api/traces/{trace_hex}"))
        .await;
    assert_eq!(one["errors"], Value::Null);
    let trace = &one["data"][0];
    assert_eq!(trace["traceID"], json!(trace_hex));
    assert_eq!(trace["warnings"], Value::Null);
    let spans = trace["spans"].as_array().expect("spans");
    assert_eq!(spans.len(), 3);
    let by_id = |id: &[u8]| {
        spans
            .iter()
            .find(|s| s["spanID"] == json!(hex::encode(id)))
            .unwrap_or_else(|| panic!("span {} missing", hex::encode(id)))
    };
    let root = by_id(&f.root);
    assert_eq!(root["traceID"], json!(trace_hex));
    assert_eq!(root["operationName"], json!("GET /"));
    assert_eq!(root["references"], json!([]));
    assert_eq!(root["startTime"], json!(f.start / 1_000));
    assert_eq!(root["duration"], json!(30_000));
    assert_eq!(root["flags"], json!(0));
    assert_eq!(root["logs"], json!([]));
    assert_eq!(root["warnings"], Value::Null);
    assert_eq!(
        tag(&root["tags"], "http.route"),
        &json!({"key": "http.route", "type": "string", "value": "/"})
    );
    assert_eq!(
        tag(&root["tags"], "http.response.status_code"),
        &json!({"key": "http.response.status_code", "type": "int64", "value": 200})
    );
    assert_eq!(tag(&root["tags"], "span.kind")["value"], json!("server"));
    let frontend_process = root["processID"].as_str().expect("processID");
    assert_eq!(
        trace["processes"][frontend_process]["serviceName"],
        json!("frontend")
    );
    assert_eq!(trace["processes"][frontend_process]["tags"], json!([]));

    let client = by_id(&f.client);
    assert_eq!(
        client["references"],
        json!([{"refType": "CHILD_OF", "traceID": trace_hex, "spanID": hex::encode(&f.root)}])
    );
    assert_eq!(client["processID"], root["processID"]);
    assert_eq!(tag(&client["tags"], "span.kind")["value"], json!("client"));

    let server = by_id(&f.server);
    assert_ne!(server["processID"], root["processID"]);
    let api_process = server["processID"].as_str().expect("processID");
    assert_eq!(trace["processes"][api_process]["serviceName"], json!("api"));
    assert_eq!(
        server["references"],
        json!([
            {"refType": "CHILD_OF", "traceID": trace_hex, "spanID": hex::encode(&f.client)},
            {"refType": "FOLLOWS_FROM", "traceID": hex::encode(&f.linked_trace), "spanID": hex::encode(&f.linked_span)}
        ])
    );
    assert_eq!(tag(&server["tags"], "ratio")["type"], json!("float64"));
    assert_eq!(tag(&server["tags"], "ratio")["value"], json!(0.25));
    assert_eq!(tag(&server["tags"], "cached")["type"], json!("bool"));
    assert_eq!(tag(&server["tags"], "cached")["value"], json!(false));
    assert_eq!(tag(&server["tags"], "blob")["type"], json!("binary"));
    assert_eq!(tag(&server["tags"], "blob")["value"], json!("/wA="));
    assert_eq!(tag(&server["tags"], "error")["value"], json!(true));
    assert_eq!(tag(&server["tags"], "error")["type"], json!("bool"));
    assert_eq!(
        tag(&server["tags"], "otel.status_description")["value"],
        json!("upstream reset")
    );
    assert_eq!(
        tag(&server["tags"], "w3c.tracestate")["value"],
        json!("vendor=x")
    );
    assert_eq!(
        tag(&server["tags"], "otel.scope.name")["value"],
        json!("meshscope-e2e")
    );
    assert_eq!(
        server["logs"],
        json!([{"timestamp": (f.start + 4_000_000) / 1_000, "fields": [
            {"key": "event", "type": "string", "value": "retry"},
            {"key": "attempt", "type": "int64", "value": 1}
        ]}])
    );

    // Search: Grafana's parameters, several services at once, tags as JSON.
    let start_us = f.start / 1_000 - 1_000_000;
    let end_us = f.start / 1_000 + 10_000_000;
    let found = collector
        .get_json(&format!(
            "/jaeger/api/traces?service=api&operation=handle&tags=%7B%22error%22%3A%22true%22%7D&minDuration=10ms&maxDuration=1s&start={start_us}&end={end_us}&limit=10"
        ))
        .await;
    assert_envelope(&found, 1);
    assert_eq!(found["data"][0]["traceID"], json!(trace_hex));
    assert_eq!(found["data"][0]["spans"].as_array().map(Vec::len), Some(3));
    let none = collector
        .get_json(&format!(
            "/jaeger/api/traces?service=api&minDuration=1s&start={start_us}&end={end_us}"
        ))
        .await;
    assert_envelope(&none, 0);
    assert_eq!(none["data"], json!([]));
    let lookback = collector
        .get_json("/jaeger/api/traces?service=frontend&service=api&lookback=1h&tag=http.route:/")
        .await;
    assert_eq!(lookback["total"], json!(1), "{lookback}");

    // Dependencies in milliseconds.
    let end_ms = now_unix_nanos() / 1_000_000 + 1_000;
    let deps = collector
        .get_json(&format!(
            "/jaeger/api/dependencies?endTs={end_ms}&lookback=3600000"
        ))
        .await;
    assert_envelope(&deps, 1);
    assert_eq!(
        deps["data"],
        json!([{"parent": "frontend", "child": "api", "callCount": 1}])
    );

    // Errors come in Jaeger's envelope.
    let missing = collector
        .get(&format!(
            "/jaeger/api/traces/{}",
            hex::encode(random_trace_id())
        ))
        .await;
    assert_eq!(missing.status, 404);
    let body = missing.json();
    assert_eq!(body["data"], Value::Null);
    assert_eq!(body["errors"][0]["code"], json!(404));
    let bad = collector.get("/jaeger/api/traces?limit=0").await;
    assert_eq!(bad.status, 400);
    assert_eq!(bad.json()["errors"][0]["code"], json!(400));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zipkin_v2_json_reads_back_through_the_trace_apis() {
    let collector = Collector::start("zipkin").await;
    let now_us = now_unix_nanos() / 1_000 - 1_000_000;
    let payload = json!([
        {
            "traceId": "86154a4ba6e91385", "id": "86154a4ba6e91385", "name": "get /users",
            "kind": "SERVER", "timestamp": now_us, "duration": 4_000,
            "localEndpoint": {"serviceName": "zipkin-frontend", "ipv4": "10.1.1.1", "port": 8080},
            "tags": {"http.path": "/users", "error": "timeout"},
            "annotations": [{"timestamp": now_us + 1_000, "value": "ws"}]
        },
        {
            "traceId": "86154a4ba6e91385", "id": "4d1e00c0db9010db", "parentId": "86154a4ba6e91385",
            "name": "select users", "kind": "CLIENT", "timestamp": now_us + 500, "duration": 2_000,
            "localEndpoint": {"serviceName": "zipkin-frontend"},
            "remoteEndpoint": {"serviceName": "mysql", "ipv4": "10.1.1.9", "port": 3306}
        }
    ]);
    let response = collector
        .post_otlp(
            "/api/v2/spans",
            "application/json",
            payload.to_string().into_bytes(),
            true,
        )
        .await;
    assert_eq!(response.status, 202, "{}", response.text());

    let trace_hex = "000000000000000086154a4ba6e91385";
    let view = collector.wait_for_trace(trace_hex, 2).await;
    let root = view.span(&hex::decode("86154a4ba6e91385").expect("hex"));
    assert_eq!(root.span.name, "get /users");
    assert_eq!(root.span.kind, SpanKind::Server as i32);
    assert_eq!(root.span.start_time_unix_nano, now_us * 1_000);
    assert_eq!(root.span.end_time_unix_nano, (now_us + 4_000) * 1_000);
    assert!(root.span.parent_span_id.is_empty());
    assert_eq!(
        string_attr(
            &root.resource.as_ref().expect("resource").attributes,
            "service.name"
        )
        .as_deref(),
        Some("zipkin-frontend")
    );
    assert_eq!(
        string_attr(&root.span.attributes, "http.path").as_deref(),
        Some("/users")
    );
    assert_eq!(
        string_attr(&root.span.attributes, "network.local.address").as_deref(),
        Some("10.1.1.1")
    );
    let status = root.span.status.as_ref().expect("status");
    assert_eq!((status.code, status.message.as_str()), (2, "timeout"));
    assert_eq!(root.span.events[0].name, "ws");
    assert_eq!(root.span.events[0].time_unix_nano, (now_us + 1_000) * 1_000);
    let child = view.span(&hex::decode("4d1e00c0db9010db").expect("hex"));
    assert_eq!(
        child.span.parent_span_id,
        hex::decode("86154a4ba6e91385").expect("hex")
    );
    assert_eq!(child.span.kind, SpanKind::Client as i32);
    assert_eq!(
        string_attr(&child.span.attributes, "peer.service").as_deref(),
        Some("mysql")
    );

    // Jaeger prints a 64-bit trace id in 16 digits, and finds it by them.
    let jaeger = collector
        .get_json("/jaeger/api/traces/86154a4ba6e91385")
        .await;
    assert_eq!(jaeger["data"][0]["traceID"], json!("86154a4ba6e91385"));
    assert_eq!(jaeger["data"][0]["spans"].as_array().map(Vec::len), Some(2));

    // Bad payloads are refused with a reason and leave the stored data alone.
    let bad = collector
        .post_otlp(
            "/api/v2/spans",
            "application/json",
            br#"[{"traceId": "nothex", "id": "4d1e00c0db9010db"}]"#.to_vec(),
            false,
        )
        .await;
    assert_eq!(bad.status, 400);
    assert!(bad.text().contains("traceId"), "{}", bad.text());
    let wrong_type = collector
        .post_otlp(
            "/api/v2/spans",
            "application/x-thrift",
            b"x".to_vec(),
            false,
        )
        .await;
    assert_eq!(wrong_type.status, 415);
    collector.wait_for_trace(trace_hex, 2).await;
}

/// The numeric attribute comparisons the search form and `/api/search` offer, on a promoted column
/// (`http.response.status_code`) and on an attribute kept in the JSON column (`retries`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_compares_attributes_numerically() {
    let collector = Collector::start("numeric-search").await;
    let f = send_fixture(&collector).await;
    let trace_hex = hex::encode(&f.trace_id);
    let hits = |query: &'static str| {
        let collector = &collector;
        async move {
            let answer = collector.get_json(&format!("/api/search?{query}")).await;
            answer["traces"]
                .as_array()
                .expect("traces")
                .iter()
                .map(|t| t["traceId"].as_str().expect("id").to_owned())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        hits("attr=http.response.status_code%3E%3D200").await,
        vec![trace_hex.clone()]
    );
    assert_eq!(
        hits("attr=http.response.status_code%3E200").await,
        Vec::<String>::new()
    );
    assert_eq!(hits("attr=retries%3E1").await, vec![trace_hex.clone()]);
    assert_eq!(hits("attr=retries%3C%3D1").await, Vec::<String>::new());
    assert_eq!(hits("attr=retries!%3D3").await, vec![trace_hex.clone()]);
    // Text that is no number never matches a comparison.
    assert_eq!(hits("attr=http.route%3E0").await, Vec::<String>::new());
    let bad = collector.get("/api/search?attr=retries%3Emany").await;
    assert_eq!(bad.status, 400);
}
