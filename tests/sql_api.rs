//! The query side: `POST /api/sql` (JSON, CSV, Arrow IPC; errors; statements that must be refused), the
//! `meshscope sql` command line (`--url` and `--data-dir`), the search API's filters, and the services and
//! operations endpoints — all over a small known data set of three traces.

mod common;

use std::io::Cursor;
use std::time::Duration;

use common::*;
use datafusion::arrow::ipc::reader::StreamReader;
use datafusion::arrow::util::display::array_value_to_string;
use meshscope_proto::collector::trace::v1::ExportTraceServiceRequest;
use meshscope_proto::trace::span::SpanKind;
use meshscope_proto::trace::status::StatusCode;
use meshscope_proto::trace::{Span, Status};
use prost::Message;
use serde_json::Value;

const MINUTE: u64 = 60_000_000_000;
const MS: u64 = 1_000_000;

/// The known data set: three traces at known times.
struct Seeded {
    /// `GET /checkout` (frontend → checkout → payments, one error), 1.5 s, 1 minute ago.
    checkout: Vec<u8>,
    checkout_start: u64,
    /// `GET /products` (frontend → catalog), 20 ms, 5 minutes ago.
    browse: Vec<u8>,
    browse_start: u64,
    /// `GET /health` (frontend only), 2 ms, 10 minutes ago.
    health: Vec<u8>,
    health_start: u64,
    /// The id of the `charge` span (payments).
    charge_span: Vec<u8>,
}

fn server(mut span: Span) -> Span {
    span.kind = SpanKind::Server as i32;
    span
}

fn with_kind(mut span: Span, kind: SpanKind) -> Span {
    span.kind = kind as i32;
    span
}

/// Sends the data set (one request per service, over OTLP/HTTP protobuf) and waits until it is stored.
async fn seed(collector: &Collector) -> Seeded {
    let now = now_unix_nanos();
    let (checkout, browse, health) = (random_trace_id(), random_trace_id(), random_trace_id());
    let (checkout_start, browse_start, health_start) =
        (now - MINUTE, now - 5 * MINUTE, now - 10 * MINUTE);
    let [
        checkout_root,
        checkout_api,
        charge,
        browse_root,
        list,
        health_root,
    ] = std::array::from_fn(|_| random_span_id());

    let mut checkout_root_span = server(span(
        &checkout,
        &checkout_root,
        &[],
        "GET /checkout",
        checkout_start,
        Duration::from_millis(1500),
    ));
    checkout_root_span.attributes = vec![
        kv_str("http.route", "/checkout"),
        kv_str("http.request.method", "GET"),
        kv_str("customer.tier", "gold"),
        kv_int("cart.items", 3),
    ];
    let mut browse_root_span = server(span(
        &browse,
        &browse_root,
        &[],
        "GET /products",
        browse_start,
        Duration::from_millis(20),
    ));
    browse_root_span.attributes = vec![
        kv_str("http.route", "/products"),
        kv_str("customer.tier", "silver"),
    ];
    let health_root_span = server(span(
        &health,
        &health_root,
        &[],
        "GET /health",
        health_start,
        Duration::from_millis(2),
    ));

    let checkout_api_span = server(span(
        &checkout,
        &checkout_api,
        &checkout_root,
        "POST /api/checkout",
        checkout_start + 100 * MS,
        Duration::from_millis(1200),
    ));
    let mut charge_span = with_kind(
        span(
            &checkout,
            &charge,
            &checkout_api,
            "charge",
            checkout_start + 200 * MS,
            Duration::from_millis(800),
        ),
        SpanKind::Client,
    );
    charge_span.status = Some(Status {
        code: StatusCode::Error as i32,
        message: "card declined".to_string(),
    });
    charge_span.attributes = vec![kv_str("payment.method", "card")];
    let list_span = with_kind(
        span(
            &browse,
            &list,
            &browse_root,
            "list products",
            browse_start + 2 * MS,
            Duration::from_millis(15),
        ),
        SpanKind::Internal,
    );

    let requests: Vec<ExportTraceServiceRequest> = vec![
        traces_request(
            "frontend",
            vec![checkout_root_span, browse_root_span, health_root_span],
        ),
        traces_request("checkout", vec![checkout_api_span]),
        traces_request("payments", vec![charge_span]),
        traces_request("catalog", vec![list_span]),
    ];
    for request in requests {
        let response = collector
            .post_otlp(
                "/v1/traces",
                "application/x-protobuf",
                request.encode_to_vec(),
                false,
            )
            .await;
        assert_eq!(export_outcome(&response, Signal::Traces, false).rejected, 0);
    }
    collector
        .wait_for_i64("SELECT count(*) FROM spans", 6)
        .await;
    Seeded {
        checkout,
        checkout_start,
        browse,
        browse_start,
        health,
        health_start,
        charge_span: charge,
    }
}

// ----- POST /api/sql ----------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_answers_json_with_hex_ids_and_helper_functions() {
    let collector = Collector::start("sql-json").await;
    let seeded = seed(&collector).await;
    let checkout_hex = hex::encode(&seeded.checkout);

    let result = collector
        .sql(&format!(
            "SELECT hex_id(trace_id) AS tid, trace_id, span_id, parent_span_id, name, service_name, \
                    duration_ns, status_code, status_message, attr(attributes, 'payment.method') AS method \
             FROM spans WHERE trace_id = unhex_id('{checkout_hex}') AND name = 'charge'"
        ))
        .await;
    assert_eq!(
        result.column_names(),
        [
            "tid",
            "trace_id",
            "span_id",
            "parent_span_id",
            "name",
            "service_name",
            "duration_ns",
            "status_code",
            "status_message",
            "method"
        ]
    );
    for column in &result.columns {
        assert!(
            column.data_type.as_str().is_some_and(|t| !t.is_empty()),
            "column {} has no type: {:?}",
            column.name,
            column.data_type
        );
    }
    assert_eq!(result.rows.len(), 1, "{result:?}");
    let row = &result.rows[0];
    assert_eq!(row["tid"], Value::from(checkout_hex.clone()));
    assert_eq!(
        row["trace_id"],
        Value::from(checkout_hex.clone()),
        "binary ids as lowercase hex"
    );
    assert_eq!(
        row["span_id"],
        Value::from(hex::encode(&seeded.charge_span))
    );
    assert_eq!(row["name"], Value::from("charge"));
    assert_eq!(row["service_name"], Value::from("payments"));
    assert_eq!(as_i64(&row["duration_ns"]), Some(800_000_000));
    assert!(
        row["status_code"]
            .as_str()
            .is_some_and(|s| s.to_lowercase().contains("error")),
        "{row:?}"
    );
    assert_eq!(row["status_message"], Value::from("card declined"));
    assert_eq!(row["method"], Value::from("card"));

    // A root span has a null parent.
    let roots = collector
        .sql("SELECT name FROM spans WHERE parent_span_id IS NULL ORDER BY start_time")
        .await;
    assert_eq!(
        roots.strings("name"),
        [
            Some("GET /health".into()),
            Some("GET /products".into()),
            Some("GET /checkout".into())
        ]
    );

    let per_service = collector
        .sql("SELECT service_name, count(*) AS n FROM spans GROUP BY service_name ORDER BY service_name")
        .await;
    let pairs: Vec<(String, i64)> = per_service
        .rows
        .iter()
        .map(|r| {
            (
                r["service_name"].as_str().unwrap_or_default().to_string(),
                as_i64(&r["n"]).unwrap_or(-1),
            )
        })
        .collect();
    assert_eq!(
        pairs,
        [
            ("catalog".to_string(), 1),
            ("checkout".to_string(), 1),
            ("frontend".to_string(), 3),
            ("payments".to_string(), 1)
        ]
    );

    let tiers = collector
        .sql("SELECT attr(attributes, 'customer.tier') AS tier FROM spans WHERE attr(attributes, 'customer.tier') IS NOT NULL ORDER BY tier")
        .await;
    assert_eq!(
        tiers.strings("tier"),
        [Some("gold".into()), Some("silver".into())]
    );
    let items = collector
        .sql("SELECT attr(attributes, 'cart.items') AS items FROM spans WHERE name = 'GET /checkout'")
        .await;
    assert_eq!(
        items.strings("items"),
        [Some("3".into())],
        "int attribute as text"
    );

    assert_eq!(
        collector
            .sql_i64("SELECT count(*) FROM metric_points")
            .await,
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_answers_csv_and_arrow() {
    let collector = Collector::start("sql-formats").await;
    seed(&collector).await;
    let query =
        "SELECT service_name, count(*) AS n FROM spans GROUP BY service_name ORDER BY service_name";

    let csv = collector.sql_raw(query, "text/csv").await;
    assert_eq!(csv.status, 200, "{}", csv.text());
    assert!(
        csv.content_type().starts_with("text/csv"),
        "Content-Type {:?}",
        csv.content_type()
    );
    let lines: Vec<String> = csv.text().lines().map(str::to_string).collect();
    assert_eq!(
        lines,
        [
            "service_name,n",
            "catalog,1",
            "checkout,1",
            "frontend,3",
            "payments,1"
        ]
    );

    let arrow = collector
        .sql_raw(query, "application/vnd.apache.arrow.stream")
        .await;
    assert_eq!(arrow.status, 200, "{}", arrow.text());
    assert!(
        arrow
            .content_type()
            .starts_with("application/vnd.apache.arrow.stream"),
        "Content-Type {:?}",
        arrow.content_type()
    );
    let reader =
        StreamReader::try_new(Cursor::new(arrow.body.clone()), None).expect("Arrow IPC stream");
    let schema = reader.schema();
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    assert_eq!(names, ["service_name", "n"]);
    let mut rows = Vec::new();
    for batch in reader {
        let batch = batch.expect("record batch");
        for row in 0..batch.num_rows() {
            rows.push((
                array_value_to_string(batch.column(0), row).expect("service"),
                array_value_to_string(batch.column(1), row).expect("count"),
            ));
        }
    }
    let expected: Vec<(String, String)> = [
        ("catalog", "1"),
        ("checkout", "1"),
        ("frontend", "3"),
        ("payments", "1"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(rows, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_format_says_when_the_row_cap_cut_an_answer() {
    let collector = Collector::start("sql-row-cap").await;
    let truncated = |response: &RawResponse| {
        response
            .headers
            .get("meshscope-truncated")
            .and_then(|value| value.to_str().ok())
            .unwrap_or("(no header)")
            .to_owned()
    };
    // One row past the cap of 100,000.
    let over = "SELECT unnest(range(0, 100001)) AS n";

    let json = collector.sql_raw(over, "application/json").await;
    assert_eq!(json.status, 200, "{}", json.text());
    assert_eq!(truncated(&json), "true");
    let body: Value = serde_json::from_slice(&json.body).expect("JSON answer");
    assert_eq!(body["truncated"], Value::Bool(true));
    assert_eq!(body["rows"].as_array().map(Vec::len), Some(100_000));

    let csv = collector.sql_raw(over, "text/csv").await;
    assert_eq!(csv.status, 200, "{}", csv.text());
    assert_eq!(truncated(&csv), "true");
    assert_eq!(csv.text().lines().count(), 1 + 100_000);

    let arrow = collector
        .sql_raw(over, "application/vnd.apache.arrow.stream")
        .await;
    assert_eq!(arrow.status, 200, "{}", arrow.text());
    assert_eq!(truncated(&arrow), "true");
    let rows: usize = StreamReader::try_new(Cursor::new(arrow.body.clone()), None)
        .expect("Arrow IPC stream")
        .map(|batch| batch.expect("record batch").num_rows())
        .sum();
    assert_eq!(rows, 100_000);

    let whole = collector
        .sql_raw("SELECT unnest(range(0, 100000)) AS n", "text/csv")
        .await;
    assert_eq!(whole.status, 200, "{}", whole.text());
    assert_eq!(truncated(&whole), "false");
    assert_eq!(whole.text().lines().count(), 1 + 100_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_errors_and_refused_statements_get_400() {
    let mut collector = Collector::start("sql-errors").await;
    seed(&collector).await;

    for (sql, must_mention) in [
        ("SELEC name FROM spans", ""),
        ("SELECT no_such_column FROM spans", "no_such_column"),
        ("SELECT * FROM no_such_table", "no_such_table"),
        ("SELECT hex_id(name, name, name) FROM spans", ""),
    ] {
        let response = collector.sql_raw(sql, "application/json").await;
        assert_eq!(response.status, 400, "{sql}: {}", response.text());
        let message = response.error_message();
        assert!(!message.is_empty(), "{sql}: empty error message");
        assert!(
            message.contains(must_mention),
            "{sql}: message {message:?} lacks {must_mention:?}"
        );
    }

    let copy_target = TestDir::new("sql-copy-target");
    let copy_file = copy_target.path().join("out.csv");
    let refused = [
        "CREATE TABLE t AS SELECT 1".to_string(),
        "CREATE EXTERNAL TABLE passwd STORED AS CSV LOCATION '/etc/passwd'".to_string(),
        "CREATE VIEW v AS SELECT * FROM spans".to_string(),
        "INSERT INTO spans SELECT * FROM spans".to_string(),
        "DELETE FROM spans".to_string(),
        "UPDATE spans SET name = 'x'".to_string(),
        "DROP TABLE spans".to_string(),
        format!("COPY (SELECT * FROM spans) TO '{}'", copy_file.display()),
        format!("COPY spans TO '{}'", copy_file.display()),
        "SELECT 1; DROP TABLE spans".to_string(),
    ];
    for sql in &refused {
        let response = collector.sql_raw(sql, "application/json").await;
        assert_eq!(
            response.status,
            400,
            "{sql}: expected 400, got: {}",
            response.text()
        );
        assert!(
            !response.error_message().is_empty(),
            "{sql}: empty error message"
        );
    }
    assert!(!copy_file.exists(), "COPY wrote {}", copy_file.display());
    let response = collector
        .sql_raw("SELECT * FROM passwd", "application/json")
        .await;
    assert_eq!(
        response.status,
        400,
        "the external table must not exist: {}",
        response.text()
    );
    assert_eq!(
        collector.sql_i64("SELECT count(*) FROM spans").await,
        6,
        "data changed"
    );

    // A request that is not `{"sql": ...}` JSON.
    let response = reqwest::Client::new()
        .post(format!("{}/api/sql", collector.api_url()))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .expect("POST /api/sql");
    assert!(
        response.status().is_client_error(),
        "malformed /api/sql body: HTTP {}",
        response.status()
    );
    collector.assert_healthy("refused SQL").await;
}

// ----- meshscope sql ----------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_command_line_prints_tables_from_url_and_data_dir() {
    let mut collector = Collector::start("sql-cli").await;
    seed(&collector).await;
    let query =
        "SELECT service_name, count(*) AS n FROM spans GROUP BY service_name ORDER BY service_name";
    let api_url = collector.api_url();

    let output = collector.cli(&["sql", "--url", &api_url, query]).await;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "meshscope sql --url failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_table(&stdout);

    let output = collector
        .cli(&["sql", "--url", &api_url, "SELECT nope FROM spans"])
        .await;
    assert!(
        !output.status.success(),
        "a failing query must fail the command"
    );
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("nope"),
        "the engine's message goes to stderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );

    // Offline, on the data directory of a stopped collector.
    let status = collector.sigterm().await;
    assert!(status.success(), "collector exited with {status}");
    let data_dir = collector.data_dir().display().to_string();
    let output = collector
        .cli(&["sql", "--data-dir", &data_dir, query])
        .await;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "meshscope sql --data-dir failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_table(&stdout);
}

/// The printed table of the per-service count query: a header, then one line per service with its count.
fn assert_table(stdout: &str) {
    let header = stdout
        .lines()
        .position(|line| line.contains("service_name") && line.contains('n'))
        .unwrap_or_else(|| panic!("no header line in:\n{stdout}"));
    for (service, count) in [
        ("catalog", "1"),
        ("checkout", "1"),
        ("frontend", "3"),
        ("payments", "1"),
    ] {
        let line = stdout
            .lines()
            .skip(header + 1)
            .find(|line| {
                line.split(|c: char| !c.is_alphanumeric())
                    .any(|w| w == service)
            })
            .unwrap_or_else(|| panic!("no row for {service} in:\n{stdout}"));
        assert!(
            line.split(|c: char| !c.is_alphanumeric())
                .any(|w| w == count),
            "row {line:?} lacks count {count}"
        );
    }
}

// ----- search, services, operations, traces ------------------------------------------------------------------

/// The trace ids (hex) a search returns, in order.
async fn search(collector: &Collector, query: &str) -> Vec<String> {
    let body = collector.get_json(&format!("/api/search?{query}")).await;
    body["traces"]
        .as_array()
        .unwrap_or_else(|| panic!("search?{query}: no traces array: {body}"))
        .iter()
        .map(|t| t["traceId"].as_str().expect("traceId").to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_filters_traces() {
    let collector = Collector::start("search").await;
    let seeded = seed(&collector).await;
    let [checkout, browse, health] =
        [&seeded.checkout, &seeded.browse, &seeded.health].map(hex::encode);

    let body = collector.get_json("/api/search?limit=20").await;
    let traces = body["traces"].as_array().expect("traces");
    let ids: Vec<&str> = traces
        .iter()
        .map(|t| t["traceId"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        ids,
        [checkout.as_str(), browse.as_str(), health.as_str()],
        "newest first"
    );
    let summary = &traces[0];
    assert_eq!(summary["rootService"], Value::from("frontend"));
    assert_eq!(summary["rootName"], Value::from("GET /checkout"));
    assert_eq!(
        summary["startTimeUnixNano"],
        Value::from(seeded.checkout_start.to_string())
    );
    assert_eq!(as_i64(&summary["durationNs"]), Some(1_500_000_000));
    assert_eq!(as_i64(&summary["spanCount"]), Some(3));
    assert_eq!(as_i64(&summary["errorCount"]), Some(1));
    let mut services: Vec<&str> = summary["services"]
        .as_array()
        .expect("services")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    services.sort();
    assert_eq!(services, ["checkout", "frontend", "payments"]);
    assert_eq!(as_i64(&traces[2]["spanCount"]), Some(1));
    assert_eq!(as_i64(&traces[2]["errorCount"]), Some(0));

    let cases: Vec<(String, Vec<&String>)> = vec![
        ("limit=1".into(), vec![&checkout]),
        ("service=payments".into(), vec![&checkout]),
        ("service=catalog".into(), vec![&browse]),
        (
            "service=catalog&service=payments".into(),
            vec![&checkout, &browse],
        ),
        ("service=frontend".into(), vec![&checkout, &browse, &health]),
        ("service=nobody".into(), vec![]),
        ("status=error".into(), vec![&checkout]),
        ("attr=customer.tier=gold".into(), vec![&checkout]),
        ("attr=customer.tier=silver".into(), vec![&browse]),
        ("attr=http.route=/products".into(), vec![&browse]),
        ("attr=payment.method=card".into(), vec![&checkout]),
        ("name=GET%20/health".into(), vec![&health]),
        ("min_duration=1s".into(), vec![&checkout]),
        ("min_duration=10ms&max_duration=100ms".into(), vec![&browse]),
        ("max_duration=10ms".into(), vec![&health]),
        ("min_duration=1500ms".into(), vec![&checkout]),
        (
            format!("start={}", seeded.browse_start - MINUTE),
            vec![&checkout, &browse],
        ),
        (
            format!("end={}", seeded.browse_start + MINUTE),
            vec![&browse, &health],
        ),
        (
            format!(
                "start={}&end={}",
                rfc3339(seeded.browse_start - MINUTE),
                rfc3339(seeded.browse_start + MINUTE)
            ),
            vec![&browse],
        ),
        (
            format!("start={}", rfc3339(seeded.health_start + MINUTE)),
            vec![&checkout, &browse],
        ),
        // A trace matches when one of its spans meets every filter: the error span is a payments span.
        ("service=payments&status=error".into(), vec![&checkout]),
        ("service=frontend&status=error".into(), vec![]),
        ("service=frontend&min_duration=1s".into(), vec![&checkout]),
        ("service=catalog&min_duration=20ms".into(), vec![]),
        ("status=ok".into(), vec![]),
    ];
    for (query, expected) in cases {
        let got = search(&collector, &query).await;
        let expected: Vec<String> = expected.into_iter().cloned().collect();
        assert_eq!(got, expected, "search?{query}");
    }

    for bad in [
        "min_duration=fast",
        "limit=-3",
        "start=yesterday",
        "status=sideways",
    ] {
        let response = collector.get(&format!("/api/search?{bad}")).await;
        assert_eq!(response.status, 400, "search?{bad}: {}", response.text());
        assert!(!response.error_message().is_empty());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_operations_and_trace_lookup() {
    let collector = Collector::start("services").await;
    let seeded = seed(&collector).await;

    let body = collector.get_json("/api/services").await;
    let mut services: Vec<&str> = body["services"]
        .as_array()
        .unwrap_or_else(|| panic!("{body}"))
        .iter()
        .filter_map(Value::as_str)
        .collect();
    services.sort();
    assert_eq!(services, ["catalog", "checkout", "frontend", "payments"]);

    let body = collector
        .get_json("/api/services/frontend/operations")
        .await;
    let operations = body["operations"]
        .as_array()
        .unwrap_or_else(|| panic!("{body}"));
    let mut names: Vec<&str> = operations
        .iter()
        .filter_map(|o| o["name"].as_str())
        .collect();
    names.sort();
    assert_eq!(names, ["GET /checkout", "GET /health", "GET /products"]);
    for operation in operations {
        let kind = operation["kind"]
            .as_str()
            .unwrap_or_else(|| panic!("no kind: {operation}"));
        assert!(
            kind.to_lowercase().contains("server"),
            "kind of {operation}"
        );
    }
    let body = collector
        .get_json("/api/services/payments/operations")
        .await;
    let operations = body["operations"]
        .as_array()
        .unwrap_or_else(|| panic!("{body}"));
    assert_eq!(operations.len(), 1, "{body}");
    assert_eq!(operations[0]["name"], Value::from("charge"));
    assert!(
        operations[0]["kind"]
            .as_str()
            .is_some_and(|k| k.to_lowercase().contains("client"))
    );

    let view = collector
        .trace(&hex::encode(&seeded.checkout))
        .await
        .expect("checkout trace");
    let names: Vec<&str> = view.spans.iter().map(|s| s.span.name.as_str()).collect();
    assert_eq!(names, ["GET /checkout", "POST /api/checkout", "charge"]);
    assert_eq!(
        view.spans.iter().map(|s| s.depth).collect::<Vec<_>>(),
        [0, 1, 2]
    );
    let services: Vec<Option<String>> = view
        .spans
        .iter()
        .map(|s| {
            string_attr(
                &s.resource.clone().unwrap_or_default().attributes,
                "service.name",
            )
        })
        .collect();
    assert_eq!(
        services,
        [
            Some("frontend".into()),
            Some("checkout".into()),
            Some("payments".into())
        ]
    );

    // Unknown but well-formed: 404. Malformed: 400.
    let unknown = hex::encode(random_trace_id());
    assert_eq!(
        collector
            .get(&format!("/api/traces/{unknown}"))
            .await
            .status,
        404
    );
    for malformed in [
        "xyz",
        "abcd",
        "0123456789abcdef0123456789abcdeg",
        "0123456789abcdef0123456789abcdef00",
    ] {
        let response = collector.get(&format!("/api/traces/{malformed}")).await;
        assert_eq!(
            response.status,
            400,
            "/api/traces/{malformed}: {}",
            response.text()
        );
        assert!(!response.error_message().is_empty());
    }
}

/// Formats Unix nanoseconds as RFC 3339 UTC with nanoseconds, e.g. `2024-05-01T12:00:00.123456789Z`.
fn rfc3339(unix_nanos: u64) -> String {
    let secs = unix_nanos / 1_000_000_000;
    let nanos = unix_nanos % 1_000_000_000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{nanos:09}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[test]
fn rfc3339_formats_known_instants() {
    assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000000000Z");
    assert_eq!(
        rfc3339(951_782_400_000_000_001),
        "2000-02-29T00:00:00.000000001Z"
    );
    assert_eq!(
        rfc3339(1_714_564_800_500_000_000),
        "2024-05-01T12:00:00.500000000Z"
    );
}
