//! Shared harness of the end-to-end tests.
//!
//! [`Collector`] runs the real `meshscope collector` binary on free loopback ports with a fresh data
//! directory, waits for `/api/health`, talks to its OTLP and HTTP API ports, and kills it when dropped (also
//! when the test panics, in which case the collector's output is printed and its directory is kept).
//! The rest are OTLP builders ([`kv`], [`span`], [`traces_request`], ...), the comparison of spans read back
//! through `GET /api/traces` ([`assert_trace_matches`]) and bounded waits ([`eventually`], [`run_command`]).
//!
//! Every wait here has a deadline, so a misbehaving collector fails a test instead of hanging it.

// Each test binary uses its own subset of the helpers, through a private `mod common`.
#![allow(dead_code, unreachable_pub)]

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use meshscope_proto::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use meshscope_proto::collector::trace::v1::ExportTraceServiceRequest;
use meshscope_proto::collector::trace::v1::trace_service_client::TraceServiceClient;
use meshscope_proto::common::{
    AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList, any_value,
};
use meshscope_proto::resource::Resource;
use meshscope_proto::trace::{ResourceSpans, ScopeSpans, Span, Status};
use serde::Deserialize;
use serde_json::Value;
use tonic::transport::Channel;

/// The product binary under test.
pub const MESHSCOPE: &str = env!("CARGO_BIN_EXE_meshscope");

/// The binary the collector tests start: `MESHSCOPE_TEST_BIN` when set (e.g. a release build, for the
/// timings the web UI test prints), else the build under test.
pub fn collector_binary() -> String {
    std::env::var("MESHSCOPE_TEST_BIN").unwrap_or_else(|_| MESHSCOPE.to_owned())
}

/// How long a collector may take to answer `/api/health` after it was started.
pub const STARTUP_DEADLINE: Duration = Duration::from_secs(30);
/// How long the tests wait for acknowledged data to show up in queries. The product promises about one
/// second; the margin keeps a loaded 2-core CI machine from making the suite flaky.
pub const QUERY_DEADLINE: Duration = Duration::from_secs(10);
/// How long a collector may take to exit after SIGTERM.
pub const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------------------------
// Temporary directories
// ---------------------------------------------------------------------------------------------------------

/// A fresh directory under the system temp dir, removed on drop unless the test is panicking (then it is
/// kept for inspection and its path printed).
#[derive(Debug)]
pub struct TestDir {
    path: PathBuf,
}

impl TestDir {
    /// Creates `$TMPDIR/meshscope-e2e-<name>-<pid>-<unique>`.
    pub fn new(name: &str) -> TestDir {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let unique = format!(
            "{}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed),
            hex::encode(random_bytes(4))
        );
        let path = std::env::temp_dir().join(format!("meshscope-e2e-{name}-{unique}"));
        std::fs::create_dir_all(&path).expect("create test directory");
        TestDir { path }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("test failed: kept test directory {}", self.path.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// The collector process
// ---------------------------------------------------------------------------------------------------------

/// A running `meshscope collector` process on its own loopback ports and data directory.
///
/// Dropping it kills the process (SIGKILL). [`Collector::restart`] starts a new process on the same data
/// directory (with new ports) after [`Collector::sigkill`] or [`Collector::sigterm`].
pub struct Collector {
    name: String,
    // Declared before `dir` so the process is gone before its directory is removed.
    process: Option<Child>,
    dir: TestDir,
    extra_args: Vec<String>,
    generation: u32,
    /// OTLP/gRPC listener.
    pub grpc_addr: SocketAddr,
    /// OTLP/HTTP listener.
    pub http_addr: SocketAddr,
    /// JSON API listener.
    pub api_addr: SocketAddr,
    http: reqwest::Client,
}

/// An HTTP answer kept whole: status, headers and body bytes.
#[derive(Debug)]
pub struct RawResponse {
    /// HTTP status code.
    pub status: u16,
    /// Response headers.
    pub headers: reqwest::header::HeaderMap,
    /// Response body.
    pub body: Vec<u8>,
}

impl RawResponse {
    /// The `Content-Type` header, or "" when absent.
    pub fn content_type(&self) -> &str {
        self.headers
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// The body as (lossy) text, for messages.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON; panics with the body when it is not JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "response (HTTP {}) is not JSON ({e}): {}",
                self.status,
                self.text()
            )
        })
    }

    /// The `message` of an API error body `{"error": "message"}`; panics if the body has no such field.
    pub fn error_message(&self) -> String {
        match self.json().get("error") {
            Some(Value::String(message)) => message.clone(),
            _ => panic!(
                "expected an error body {{\"error\": \"...\"}}, got HTTP {}: {}",
                self.status,
                self.text()
            ),
        }
    }
}

impl Collector {
    /// Starts a collector with only the required arguments.
    pub async fn start(name: &str) -> Collector {
        Collector::start_with(name, &[]).await
    }

    /// Starts a collector with extra command-line arguments (e.g. `["--max-request-bytes", "65536"]`).
    pub async fn start_with(name: &str, extra_args: &[&str]) -> Collector {
        let dir = TestDir::new(name);
        std::fs::create_dir_all(dir.path().join("data")).expect("create data dir");
        std::fs::create_dir_all(dir.path().join("logs")).expect("create logs dir");
        let placeholder: SocketAddr = "127.0.0.1:0".parse().expect("address");
        let mut collector = Collector {
            name: name.to_string(),
            process: None,
            dir,
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            generation: 0,
            grpc_addr: placeholder,
            http_addr: placeholder,
            api_addr: placeholder,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("reqwest client"),
        };
        collector.launch().await;
        collector
    }

    /// Starts a new process on the same data directory; the previous one must have been stopped.
    pub async fn restart(&mut self) {
        assert!(
            self.process.is_none(),
            "restart() needs the previous collector process stopped first"
        );
        self.launch().await;
    }

    /// The collector's data directory (`--data-dir`).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The process id of the running collector.
    pub fn pid(&self) -> u32 {
        self.process
            .as_ref()
            .expect("collector is not running")
            .id()
    }

    /// `http://127.0.0.1:<api port>`.
    pub fn api_url(&self) -> String {
        format!("http://{}", self.api_addr)
    }

    /// `http://127.0.0.1:<otlp grpc port>`, for tonic clients and SDK exporters.
    pub fn grpc_endpoint(&self) -> String {
        format!("http://{}", self.grpc_addr)
    }

    /// `http://127.0.0.1:<otlp http port>`, the base URL of `/v1/traces` and `/v1/metrics`.
    pub fn otlp_http_endpoint(&self) -> String {
        format!("http://{}", self.http_addr)
    }

    fn log_path(&self, generation: u32) -> PathBuf {
        self.dir
            .path()
            .join("logs")
            .join(format!("collector-{generation}.log"))
    }

    /// Spawns the process on new free ports and waits for `/api/health`; retries on new ports when the
    /// process died because a port was taken in the meantime.
    async fn launch(&mut self) {
        for attempt in 1..=3 {
            let [grpc, http, api] = free_ports();
            self.grpc_addr = grpc;
            self.http_addr = http;
            self.api_addr = api;
            self.generation += 1;
            let log_path = self.log_path(self.generation);
            let log = std::fs::File::create(&log_path).expect("create collector log");
            let mut command = Command::new(collector_binary());
            // Only the flags below configure the collector, whatever the developer's environment holds.
            command.env_clear();
            command
                .arg("collector")
                .arg("--data-dir")
                .arg(self.data_dir())
                .args(["--otlp-grpc-listen", &grpc.to_string()])
                .args(["--otlp-http-listen", &http.to_string()])
                .args(["--api-listen", &api.to_string()])
                .args(&self.extra_args)
                .envs(std::env::vars().filter(|(k, _)| !k.starts_with("MESHSCOPE_")))
                .env("RUST_BACKTRACE", "1")
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("clone log handle"))
                .stderr(log);
            let child = command
                .spawn()
                .unwrap_or_else(|e| panic!("spawn {MESHSCOPE}: {e}"));
            self.process = Some(child);
            match self.wait_healthy().await {
                Ok(()) => return,
                Err(exit) => {
                    self.process = None;
                    let log = read_lossy(&log_path);
                    let port_taken = log.contains("in use") || log.contains("AddrInUse");
                    if port_taken && attempt < 3 {
                        eprintln!("collector lost a port race, retrying: {log}");
                        continue;
                    }
                    panic!(
                        "collector `{}` exited during startup ({exit}); its output:\n{log}",
                        self.name
                    );
                }
            }
        }
    }

    /// Polls `/api/health` until it answers `{"status":"ok"}`; `Err` when the process exited first.
    async fn wait_healthy(&mut self) -> Result<(), ExitStatus> {
        let deadline = Instant::now() + STARTUP_DEADLINE;
        loop {
            if let Some(status) = self.try_wait() {
                return Err(status);
            }
            if self.is_healthy().await {
                return Ok(());
            }
            if Instant::now() > deadline {
                let log = read_lossy(&self.log_path(self.generation));
                panic!(
                    "collector `{}` did not answer /api/health with {{\"status\":\"ok\"}} within {:?}; its output:\n{log}",
                    self.name, STARTUP_DEADLINE
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn try_wait(&mut self) -> Option<ExitStatus> {
        let child = self.process.as_mut()?;
        child.try_wait().expect("try_wait on collector")
    }

    /// Whether `GET /api/health` answers 200 `{"status":"ok"}` right now.
    pub async fn is_healthy(&self) -> bool {
        let request = self
            .http
            .get(format!("{}/api/health", self.api_url()))
            .timeout(Duration::from_secs(2));
        match request.send().await {
            Ok(response) if response.status().as_u16() == 200 => response
                .json::<Value>()
                .await
                .map(|body| body.get("status") == Some(&Value::from("ok")))
                .unwrap_or(false),
            _ => false,
        }
    }

    /// Asserts that the collector process is still running and healthy.
    pub async fn assert_healthy(&mut self, context: &str) {
        if let Some(status) = self.try_wait() {
            panic!("collector exited ({status}) after {context}");
        }
        assert!(
            self.is_healthy().await,
            "collector no longer answers /api/health after {context}"
        );
    }

    /// Kills the process with SIGKILL and reaps it.
    pub fn sigkill(&mut self) {
        let mut child = self.process.take().expect("collector is not running");
        child.kill().expect("SIGKILL collector");
        child.wait().expect("wait for killed collector");
    }

    /// Sends SIGTERM and waits (bounded) for the process to exit; returns its exit status.
    pub async fn sigterm(&mut self) -> ExitStatus {
        let pid = self.pid();
        let status = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("run kill -TERM");
        assert!(status.success(), "kill -TERM {pid} failed");
        let deadline = Instant::now() + SHUTDOWN_DEADLINE;
        loop {
            if let Some(status) = self.try_wait() {
                self.process = None;
                return status;
            }
            if Instant::now() > deadline {
                panic!(
                    "collector did not exit within {SHUTDOWN_DEADLINE:?} after SIGTERM; its output:\n{}",
                    read_lossy(&self.log_path(self.generation))
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Output of every process generation, for failure messages.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for generation in 1..=self.generation {
            let text = read_lossy(&self.log_path(generation));
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(300)..];
            out.push_str(&format!(
                "----- collector `{}` process #{generation} output (last {} lines) -----\n{}\n",
                self.name,
                tail.len(),
                tail.join("\n")
            ));
        }
        out
    }

    // ----- HTTP helpers ------------------------------------------------------------------------------

    /// `GET <api>/<path_and_query>`, kept whole.
    pub async fn get(&self, path_and_query: &str) -> RawResponse {
        let url = format!("{}{}", self.api_url(), path_and_query);
        let response = self
            .http
            .get(&url)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        raw(response).await
    }

    /// `GET <api>/<path_and_query>` that must answer 200 with JSON.
    pub async fn get_json(&self, path_and_query: &str) -> Value {
        let response = self.get(path_and_query).await;
        assert_eq!(
            response.status,
            200,
            "GET {path_and_query}: {}",
            response.text()
        );
        response.json()
    }

    /// `POST /api/sql` with an `Accept` header, kept whole.
    pub async fn sql_raw(&self, sql: &str, accept: &str) -> RawResponse {
        let url = format!("{}/api/sql", self.api_url());
        let response = self
            .http
            .post(&url)
            .header(reqwest::header::ACCEPT, accept)
            .json(&serde_json::json!({ "sql": sql }))
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {url}: {e}"));
        raw(response).await
    }

    /// Runs a query that must succeed, as JSON.
    pub async fn sql(&self, sql: &str) -> SqlResult {
        let response = self.sql_raw(sql, "application/json").await;
        assert_eq!(
            response.status,
            200,
            "SQL failed: {sql}\n{}",
            response.text()
        );
        let result: SqlResult = serde_json::from_slice(&response.body).unwrap_or_else(|e| {
            panic!(
                "SQL answer is not {{columns, rows, truncated}} ({e}): {}",
                response.text()
            )
        });
        // A test reading a capped answer would miss rows without noticing.
        assert!(!result.truncated, "SQL answer cut at the row limit: {sql}");
        result
    }

    /// Runs a query whose answer is one row with one integer column (e.g. `SELECT count(*) ...`).
    pub async fn sql_i64(&self, sql: &str) -> i64 {
        let result = self.sql(sql).await;
        assert_eq!(
            result.rows.len(),
            1,
            "expected one row from {sql}, got {result:?}"
        );
        let column = &result.columns[0].name;
        result.rows[0]
            .get(column)
            .and_then(as_i64)
            .unwrap_or_else(|| panic!("no integer in {result:?} from {sql}"))
    }

    /// Polls an integer query until it returns `expected` (bounded by [`QUERY_DEADLINE`]).
    pub async fn wait_for_i64(&self, sql: &str, expected: i64) {
        let deadline = Instant::now() + QUERY_DEADLINE;
        loop {
            let value = self.sql_i64(sql).await;
            if value == expected {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "`{sql}` returned {value}, expected {expected} within {QUERY_DEADLINE:?}\n{}",
                    self.logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `GET /api/traces/{id}`: `None` on 404; panics on other non-200 answers.
    pub async fn trace(&self, trace_id_hex: &str) -> Option<TraceView> {
        let response = self.get(&format!("/api/traces/{trace_id_hex}")).await;
        match response.status {
            404 => None,
            200 => Some(
                serde_json::from_value(parse_json_exact_doubles(&response.text())).unwrap_or_else(
                    |e| {
                        panic!(
                            "GET /api/traces/{trace_id_hex}: not a trace ({e}): {}",
                            response.text()
                        )
                    },
                ),
            ),
            status => panic!(
                "GET /api/traces/{trace_id_hex}: HTTP {status}: {}",
                response.text()
            ),
        }
    }

    /// Polls `GET /api/traces/{id}` until the trace has `span_count` spans (bounded by [`QUERY_DEADLINE`]).
    pub async fn wait_for_trace(&self, trace_id_hex: &str, span_count: usize) -> TraceView {
        let deadline = Instant::now() + QUERY_DEADLINE;
        loop {
            let view = self.trace(trace_id_hex).await;
            let found = view.as_ref().map(|v| v.spans.len());
            if found == Some(span_count) {
                return view.expect("checked above");
            }
            if Instant::now() > deadline {
                panic!(
                    "trace {trace_id_hex} did not reach {span_count} spans within {QUERY_DEADLINE:?} (last seen: {found:?} spans)"
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `POST <otlp http>/<path>` with a content type, optionally gzip-compressed, kept whole.
    pub async fn post_otlp(
        &self,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
        gzip: bool,
    ) -> RawResponse {
        let url = format!("{}{}", self.otlp_http_endpoint(), path);
        let mut request = self
            .http
            .post(&url)
            .header(reqwest::header::CONTENT_TYPE, content_type);
        let body = if gzip {
            request = request.header(reqwest::header::CONTENT_ENCODING, "gzip");
            gzip_bytes(&body)
        } else {
            body
        };
        let response = request
            .body(body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {url}: {e}"));
        raw(response).await
    }

    /// A gRPC client of the OTLP trace service.
    pub async fn trace_client(&self) -> TraceServiceClient<Channel> {
        TraceServiceClient::new(self.grpc_channel().await)
    }

    /// A gRPC client of the OTLP metrics service.
    pub async fn metrics_client(&self) -> MetricsServiceClient<Channel> {
        MetricsServiceClient::new(self.grpc_channel().await)
    }

    /// A connected channel to the OTLP/gRPC port.
    pub async fn grpc_channel(&self) -> Channel {
        tonic::transport::Endpoint::from_shared(self.grpc_endpoint())
            .expect("endpoint")
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(30))
            .connect()
            .await
            .unwrap_or_else(|e| panic!("connect to {}: {e}", self.grpc_endpoint()))
    }

    /// Exports a trace request over gRPC and asserts it was fully accepted.
    pub async fn export_grpc(&self, request: ExportTraceServiceRequest) {
        let response = self
            .trace_client()
            .await
            .export(request)
            .await
            .unwrap_or_else(|status| panic!("gRPC export failed: {status:?}"))
            .into_inner();
        let rejected = response
            .partial_success
            .as_ref()
            .map_or(0, |p| p.rejected_spans);
        assert_eq!(
            rejected, 0,
            "gRPC export was partially rejected: {response:?}"
        );
    }

    /// Runs `meshscope <args>` (e.g. the `sql` subcommand) with a deadline.
    pub async fn cli(&self, args: &[&str]) -> Output {
        let mut command = Command::new(MESHSCOPE);
        command.args(args);
        run_command(command, Duration::from_secs(60)).await
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        if let Some(mut child) = self.process.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
    }
}

/// Parses JSON whose `doubleValue` numbers must keep every bit.
///
/// serde_json (without its `float_roundtrip` feature) may parse a decimal number one ULP off, which would
/// blame the collector for the test client's rounding. The `doubleValue` tokens are therefore quoted before
/// parsing and converted afterwards with the standard library's exact `str::parse::<f64>`.
pub fn parse_json_exact_doubles(text: &str) -> Value {
    const KEY: &str = "\"doubleValue\"";
    let mut quoted = String::with_capacity(text.len() + 64);
    let mut rest = text;
    while let Some(at) = rest.find(KEY) {
        let (before, after) = rest.split_at(at + KEY.len());
        quoted.push_str(before);
        rest = after;
        // A key, not text inside a string (where the quote would be escaped).
        if before[..at].ends_with('\\') {
            continue;
        }
        let colon = rest.len() - rest.trim_start().len();
        if !rest[colon..].starts_with(':') {
            continue;
        }
        let value_start =
            colon + 1 + (rest[colon + 1..].len() - rest[colon + 1..].trim_start().len());
        let token_len = rest[value_start..]
            .find(|c: char| !(c.is_ascii_digit() || "+-.eE".contains(c)))
            .unwrap_or(rest.len() - value_start);
        if token_len > 0 {
            quoted.push_str(&rest[..value_start]);
            quoted.push('"');
            quoted.push_str(&rest[value_start..value_start + token_len]);
            quoted.push('"');
            rest = &rest[value_start + token_len..];
        }
    }
    quoted.push_str(rest);
    let mut value: Value =
        serde_json::from_str(&quoted).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
    unquote_doubles(&mut value);
    value
}

fn unquote_doubles(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (key, item) in map.iter_mut() {
                if key == "doubleValue" {
                    if let Value::String(token) = item {
                        let exact: f64 = token
                            .parse()
                            .unwrap_or_else(|e| panic!("doubleValue {token:?}: {e}"));
                        *item =
                            serde_json::Number::from_f64(exact).map_or(Value::Null, Value::Number);
                    }
                } else {
                    unquote_doubles(item);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(unquote_doubles),
        _ => {}
    }
}

async fn raw(response: reqwest::Response) -> RawResponse {
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response
        .bytes()
        .await
        .map(|b| b.to_vec())
        .unwrap_or_else(|e| panic!("reading response body: {e}"));
    RawResponse {
        status,
        headers,
        body,
    }
}

/// Three distinct free loopback ports (bound together, then released for the collector).
pub fn free_ports() -> [SocketAddr; 3] {
    let listeners: Vec<TcpListener> = (0..3)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind a free port"))
        .collect();
    let addrs: Vec<SocketAddr> = listeners
        .iter()
        .map(|l| l.local_addr().expect("local addr"))
        .collect();
    [addrs[0], addrs[1], addrs[2]]
}

fn read_lossy(path: &Path) -> String {
    let mut bytes = Vec::new();
    if let Ok(mut file) = std::fs::File::open(path) {
        let _ = file.read_to_end(&mut bytes);
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Gzip-compresses bytes.
pub fn gzip_bytes(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).expect("gzip");
    encoder.finish().expect("gzip")
}

// ---------------------------------------------------------------------------------------------------------
// API answers
// ---------------------------------------------------------------------------------------------------------

/// The JSON answer of `POST /api/sql`.
#[derive(Debug, Deserialize)]
pub struct SqlResult {
    /// Result columns, in order.
    pub columns: Vec<SqlColumn>,
    /// One object per row, keyed by column name.
    pub rows: Vec<serde_json::Map<String, Value>>,
    /// Whether the engine cut the answer at its row limit.
    pub truncated: bool,
}

/// One column of a [`SqlResult`].
#[derive(Debug, Deserialize)]
pub struct SqlColumn {
    /// Column name.
    pub name: String,
    /// Column type as the engine names it.
    #[serde(rename = "type")]
    pub data_type: Value,
}

impl SqlResult {
    /// The names of the columns, in order.
    pub fn column_names(&self) -> Vec<&str> {
        self.columns.iter().map(|c| c.name.as_str()).collect()
    }

    /// The text of `column` in every row (null as None).
    pub fn strings(&self, column: &str) -> Vec<Option<String>> {
        self.rows
            .iter()
            .map(|row| row.get(column).and_then(|v| v.as_str().map(str::to_string)))
            .collect()
    }
}

/// Which OTLP export an answer belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// `/v1/traces`, `ExportTraceServiceResponse`.
    Traces,
    /// `/v1/metrics`, `ExportMetricsServiceResponse`.
    Metrics,
}

/// The partial-success part of an OTLP export answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExportOutcome {
    /// `rejected_spans` or `rejected_data_points`.
    pub rejected: i64,
    /// `error_message`.
    pub error_message: String,
}

/// Decodes a successful (HTTP 200) OTLP/HTTP export answer, checking that it comes in the encoding of the
/// request (`json` or protobuf) as the OTLP spec requires.
pub fn export_outcome(response: &RawResponse, signal: Signal, json: bool) -> ExportOutcome {
    use prost::Message;
    assert_eq!(
        response.status,
        200,
        "OTLP/HTTP export failed: {}",
        response.text()
    );
    let content_type = response.content_type();
    if json {
        assert!(
            content_type.starts_with("application/json"),
            "answer to a JSON export must be JSON, got Content-Type {content_type:?}"
        );
        let body = response.json();
        let partial = body.get("partialSuccess").cloned().unwrap_or(Value::Null);
        let count_field = match signal {
            Signal::Traces => "rejectedSpans",
            Signal::Metrics => "rejectedDataPoints",
        };
        ExportOutcome {
            rejected: partial.get(count_field).and_then(as_i64).unwrap_or(0),
            error_message: partial
                .get("errorMessage")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
        }
    } else {
        assert!(
            content_type.starts_with("application/x-protobuf"),
            "answer to a protobuf export must be protobuf, got Content-Type {content_type:?}"
        );
        match signal {
            Signal::Traces => {
                let decoded =
                    meshscope_proto::collector::trace::v1::ExportTraceServiceResponse::decode(
                        response.body.as_slice(),
                    )
                    .expect("answer decodes as ExportTraceServiceResponse");
                let partial = decoded.partial_success.unwrap_or_default();
                ExportOutcome {
                    rejected: partial.rejected_spans,
                    error_message: partial.error_message,
                }
            }
            Signal::Metrics => {
                let decoded =
                    meshscope_proto::collector::metrics::v1::ExportMetricsServiceResponse::decode(
                        response.body.as_slice(),
                    )
                    .expect("answer decodes as ExportMetricsServiceResponse");
                let partial = decoded.partial_success.unwrap_or_default();
                ExportOutcome {
                    rejected: partial.rejected_data_points,
                    error_message: partial.error_message,
                }
            }
        }
    }
}

/// Whether a SQL JSON row holds NULL in `column` (written as `null`, or left out of the row object).
pub fn is_null(row: &serde_json::Map<String, Value>, column: &str) -> bool {
    row.get(column).is_none_or(Value::is_null)
}

/// A JSON number, or a string holding an integer, as i64.
pub fn as_i64(value: &Value) -> Option<i64> {
    match value {
        Value::Number(n) => n
            .as_i64()
            .or_else(|| n.as_u64().and_then(|u| i64::try_from(u).ok())),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// A JSON number, or a string holding a number, as f64.
pub fn as_f64(value: &Value) -> Option<f64> {
    match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// The answer of `GET /api/traces/{id}`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TraceView {
    /// Lowercase hex trace id.
    pub trace_id: String,
    /// Spans in tree order.
    pub spans: Vec<TraceSpan>,
}

/// One span of a [`TraceView`], with its resource and scope.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TraceSpan {
    /// Depth in the span tree (0 for a root).
    pub depth: u32,
    /// The span's resource.
    #[serde(default)]
    pub resource: Option<Resource>,
    /// The resource's schema url.
    #[serde(default)]
    pub resource_schema_url: Option<String>,
    /// The span's instrumentation scope.
    #[serde(default)]
    pub scope: Option<InstrumentationScope>,
    /// The scope's schema url.
    #[serde(default)]
    pub scope_schema_url: Option<String>,
    /// The span itself.
    pub span: Span,
}

impl TraceView {
    /// The span with this id; panics if absent.
    pub fn span(&self, span_id: &[u8]) -> &TraceSpan {
        self.spans
            .iter()
            .find(|s| s.span.span_id == span_id)
            .unwrap_or_else(|| {
                panic!(
                    "span {} not in trace {}",
                    hex::encode(span_id),
                    self.trace_id
                )
            })
    }

    /// The span with this name; panics if absent or ambiguous.
    pub fn span_named(&self, name: &str) -> &TraceSpan {
        let found: Vec<&TraceSpan> = self.spans.iter().filter(|s| s.span.name == name).collect();
        assert_eq!(
            found.len(),
            1,
            "expected one span named {name:?} in trace {}",
            self.trace_id
        );
        found[0]
    }
}

// ---------------------------------------------------------------------------------------------------------
// Comparing spans read back with spans sent
// ---------------------------------------------------------------------------------------------------------

/// A span as sent, with the resource and scope it was sent under.
#[derive(Debug, Clone, PartialEq)]
pub struct SpanRecord {
    /// Resource of the enclosing `ResourceSpans`.
    pub resource: Resource,
    /// `ResourceSpans.schema_url`.
    pub resource_schema_url: String,
    /// Scope of the enclosing `ScopeSpans`.
    pub scope: InstrumentationScope,
    /// `ScopeSpans.schema_url`.
    pub scope_schema_url: String,
    /// The span.
    pub span: Span,
}

/// Every span of a request with its resource and scope.
pub fn flatten_request(request: &ExportTraceServiceRequest) -> Vec<SpanRecord> {
    let mut out = Vec::new();
    for resource_spans in &request.resource_spans {
        for scope_spans in &resource_spans.scope_spans {
            for span in &scope_spans.spans {
                out.push(SpanRecord {
                    resource: resource_spans.resource.clone().unwrap_or_default(),
                    resource_schema_url: resource_spans.schema_url.clone(),
                    scope: scope_spans.scope.clone().unwrap_or_default(),
                    scope_schema_url: scope_spans.schema_url.clone(),
                    span: span.clone(),
                });
            }
        }
    }
    out
}

/// Sorts a key-value list by key, recursively into kvlist and array values (attribute order carries no
/// meaning in OTLP, so a store may return it differently).
pub fn sort_attributes(attributes: &mut [KeyValue]) {
    for kv in attributes.iter_mut() {
        if let Some(value) = kv.value.as_mut() {
            sort_any_value(value);
        }
    }
    attributes.sort_by(|a, b| a.key.cmp(&b.key));
}

fn sort_any_value(value: &mut AnyValue) {
    match value.value.as_mut() {
        Some(any_value::Value::KvlistValue(list)) => sort_attributes(&mut list.values),
        Some(any_value::Value::ArrayValue(array)) => {
            array.values.iter_mut().for_each(sort_any_value)
        }
        _ => {}
    }
}

/// The canonical form of a span for comparison: sorted attribute lists everywhere, and an absent status
/// written as the (equivalent) default status.
pub fn normalize_span(span: &mut Span) {
    sort_attributes(&mut span.attributes);
    for event in &mut span.events {
        sort_attributes(&mut event.attributes);
    }
    for link in &mut span.links {
        sort_attributes(&mut link.attributes);
    }
    span.status.get_or_insert_with(Status::default);
}

/// The canonical form of a resource for comparison.
pub fn normalize_resource(resource: &mut Resource) {
    sort_attributes(&mut resource.attributes);
}

/// The canonical form of a scope for comparison.
pub fn normalize_scope(scope: &mut InstrumentationScope) {
    sort_attributes(&mut scope.attributes);
}

fn normalized(record: &SpanRecord) -> SpanRecord {
    let mut record = record.clone();
    normalize_span(&mut record.span);
    normalize_resource(&mut record.resource);
    normalize_scope(&mut record.scope);
    record
}

/// Asserts that a trace read back holds exactly the `expected` spans — every field of every span, its
/// resource, scope and schema urls, compared after [`normalize_span`] — and that they come in tree order
/// with correct depths (see [`assert_tree_order`]).
pub fn assert_trace_matches(view: &TraceView, expected: &[SpanRecord]) {
    assert_eq!(
        view.spans.len(),
        expected.len(),
        "trace {} has {} spans, expected {}: got {:?}",
        view.trace_id,
        view.spans.len(),
        expected.len(),
        view.spans.iter().map(|s| &s.span.name).collect::<Vec<_>>()
    );
    for want in expected {
        let want = normalized(want);
        let got = view.span(&want.span.span_id);
        let got = normalized(&SpanRecord {
            resource: got.resource.clone().unwrap_or_default(),
            resource_schema_url: got.resource_schema_url.clone().unwrap_or_default(),
            scope: got.scope.clone().unwrap_or_default(),
            scope_schema_url: got.scope_schema_url.clone().unwrap_or_default(),
            span: got.span.clone(),
        });
        let name = &want.span.name;
        let differences = [
            json_diff("span", &to_json(&got.span), &to_json(&want.span)),
            json_diff(
                "resource",
                &to_json(&got.resource),
                &to_json(&want.resource),
            ),
            json_diff("scope", &to_json(&got.scope), &to_json(&want.scope)),
            json_diff(
                "resourceSchemaUrl",
                &to_json(&got.resource_schema_url),
                &to_json(&want.resource_schema_url),
            ),
            json_diff(
                "scopeSchemaUrl",
                &to_json(&got.scope_schema_url),
                &to_json(&want.scope_schema_url),
            ),
        ]
        .concat();
        assert!(
            differences.is_empty(),
            "trace {}: span {name:?} read back differs from what was sent (got / sent):\n  {}",
            view.trace_id,
            differences.join("\n  ")
        );
        assert_eq!(got, want, "span {name:?} differs beyond its OTLP/JSON form");
    }
    assert_tree_order(view);
}

fn to_json<T: serde::Serialize>(value: &T) -> Value {
    serde_json::to_value(value).expect("OTLP/JSON serialization")
}

/// The differences between two JSON values, one line per differing leaf: `path: got / want`. Lists of
/// key-value objects are addressed by key (`attributes[http.route]`), other lists by index.
pub fn json_diff(path: &str, got: &Value, want: &Value) -> Vec<String> {
    match (got, want) {
        (Value::Object(g), Value::Object(w)) => {
            let mut keys: Vec<&String> = g.keys().chain(w.keys()).collect();
            keys.sort();
            keys.dedup();
            keys.into_iter()
                .flat_map(|k| {
                    json_diff(
                        &format!("{path}.{k}"),
                        g.get(k).unwrap_or(&Value::Null),
                        w.get(k).unwrap_or(&Value::Null),
                    )
                })
                .collect()
        }
        (Value::Array(g), Value::Array(w)) => {
            let key_of = |v: &Value| v.get("key").and_then(Value::as_str).map(str::to_string);
            let keyed = g.iter().chain(w.iter()).all(|v| key_of(v).is_some());
            if keyed && !(g.is_empty() && w.is_empty()) {
                let mut keys: Vec<String> = g.iter().chain(w.iter()).filter_map(key_of).collect();
                keys.sort();
                keys.dedup();
                keys.into_iter()
                    .flat_map(|k| {
                        let find = |list: &Vec<Value>| {
                            list.iter()
                                .find(|v| key_of(v).as_deref() == Some(k.as_str()))
                                .map(|v| v.get("value").cloned().unwrap_or(Value::Null))
                                .unwrap_or_else(|| Value::from("<absent>"))
                        };
                        json_diff(&format!("{path}[{k}]"), &find(g), &find(w))
                    })
                    .collect()
            } else if g.len() != w.len() {
                vec![format!(
                    "{path}: {} items / {} items: {got} / {want}",
                    g.len(),
                    w.len()
                )]
            } else {
                g.iter()
                    .zip(w)
                    .enumerate()
                    .flat_map(|(i, (g, w))| json_diff(&format!("{path}[{i}]"), g, w))
                    .collect()
            }
        }
        _ if got == want => vec![],
        _ => vec![format!("{path}: {got} / {want}")],
    }
}

/// Asserts that the spans of a trace come in tree order: a depth-first pre-order where every span follows
/// its parent, siblings (and roots) by non-decreasing start time, and `depth` is the parent's plus one.
/// A span whose parent is not in the trace is shown as a root: depth 0.
pub fn assert_tree_order(view: &TraceView) {
    let ids: HashSet<&[u8]> = view
        .spans
        .iter()
        .map(|s| s.span.span_id.as_slice())
        .collect();
    let names: HashMap<&[u8], &str> = view
        .spans
        .iter()
        .map(|s| (s.span.span_id.as_slice(), s.span.name.as_str()))
        .collect();
    let order: Vec<&str> = view.spans.iter().map(|s| s.span.name.as_str()).collect();
    // Path from the current root to the previous span: (span id, depth).
    let mut stack: Vec<(&[u8], u32)> = Vec::new();
    // Last start time seen among the children of each parent ("" = roots).
    let mut last_start: HashMap<&[u8], u64> = HashMap::new();
    for entry in &view.spans {
        let span = &entry.span;
        let parent: &[u8] = if ids.contains(span.parent_span_id.as_slice()) {
            &span.parent_span_id
        } else {
            &[]
        };
        if parent.is_empty() {
            stack.clear();
        } else {
            while stack.last().is_some_and(|(id, _)| *id != parent) {
                stack.pop();
            }
            let Some(&(_, parent_depth)) = stack.last() else {
                panic!(
                    "trace {}: span {:?} does not directly follow its parent {:?}'s subtree; order: {order:?}",
                    view.trace_id, span.name, names[parent]
                );
            };
            assert_eq!(
                entry.depth,
                parent_depth + 1,
                "trace {}: span {:?} has depth {}, its parent {:?} has {parent_depth}",
                view.trace_id,
                span.name,
                entry.depth,
                names[parent]
            );
        }
        if parent.is_empty() {
            assert_eq!(
                entry.depth, 0,
                "trace {}: span {:?} has no parent in the trace, so it is a root of depth 0",
                view.trace_id, span.name
            );
        }
        let previous = last_start.insert(parent, span.start_time_unix_nano);
        if let Some(previous) = previous {
            assert!(
                previous <= span.start_time_unix_nano,
                "trace {}: sibling {:?} starts before the sibling listed ahead of it; order: {order:?}",
                view.trace_id,
                span.name
            );
        }
        stack.push((&span.span_id, entry.depth));
    }
}

// ---------------------------------------------------------------------------------------------------------
// OTLP builders
// ---------------------------------------------------------------------------------------------------------

/// `n` random bytes (never all zero).
pub fn random_bytes(n: usize) -> Vec<u8> {
    use std::hash::{BuildHasher, Hasher, RandomState};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let state = RandomState::new();
    let mut out = Vec::with_capacity(n + 8);
    while out.len() < n {
        let mut hasher = state.build_hasher();
        hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
        hasher.write_u128(now_unix_nanos() as u128);
        out.extend_from_slice(&hasher.finish().to_le_bytes());
    }
    out.truncate(n);
    if out.iter().all(|b| *b == 0) {
        out[0] = 1;
    }
    out
}

/// A random 16-byte trace id.
pub fn random_trace_id() -> Vec<u8> {
    random_bytes(16)
}

/// A random 8-byte span id.
pub fn random_span_id() -> Vec<u8> {
    random_bytes(8)
}

/// Nanoseconds since the Unix epoch.
pub fn now_unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos() as u64
}

/// A string `AnyValue`.
pub fn string_value(s: &str) -> AnyValue {
    AnyValue {
        value: Some(any_value::Value::StringValue(s.to_string())),
    }
}

/// An int `AnyValue`.
pub fn int_value(i: i64) -> AnyValue {
    AnyValue {
        value: Some(any_value::Value::IntValue(i)),
    }
}

/// A double `AnyValue`.
pub fn double_value(d: f64) -> AnyValue {
    AnyValue {
        value: Some(any_value::Value::DoubleValue(d)),
    }
}

/// A bool `AnyValue`.
pub fn bool_value(b: bool) -> AnyValue {
    AnyValue {
        value: Some(any_value::Value::BoolValue(b)),
    }
}

/// A bytes `AnyValue`.
pub fn bytes_value(b: &[u8]) -> AnyValue {
    AnyValue {
        value: Some(any_value::Value::BytesValue(b.to_vec())),
    }
}

/// An array `AnyValue`.
pub fn array_value(values: Vec<AnyValue>) -> AnyValue {
    AnyValue {
        value: Some(any_value::Value::ArrayValue(ArrayValue { values })),
    }
}

/// A kvlist `AnyValue`.
pub fn kvlist_value(values: Vec<KeyValue>) -> AnyValue {
    AnyValue {
        value: Some(any_value::Value::KvlistValue(KeyValueList { values })),
    }
}

/// A key-value pair.
pub fn kv(key: &str, value: AnyValue) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(value),
        ..Default::default()
    }
}

/// A string attribute.
pub fn kv_str(key: &str, value: &str) -> KeyValue {
    kv(key, string_value(value))
}

/// An int attribute.
pub fn kv_int(key: &str, value: i64) -> KeyValue {
    kv(key, int_value(value))
}

/// The value of a string attribute, if `attributes` has one under `key`.
pub fn string_attr(attributes: &[KeyValue], key: &str) -> Option<String> {
    attributes.iter().find(|kv| kv.key == key).and_then(|kv| {
        match kv.value.as_ref()?.value.as_ref()? {
            any_value::Value::StringValue(s) => Some(s.clone()),
            _ => None,
        }
    })
}

/// An `AnyValue` of `depth` nested arrays around a string (depth 1 = the bare string).
pub fn nested_array_value(depth: usize) -> AnyValue {
    let mut value = string_value("bottom");
    for _ in 1..depth {
        value = array_value(vec![value]);
    }
    value
}

/// A span with the basic fields set (server kind, status unset, no attributes).
pub fn span(
    trace_id: &[u8],
    span_id: &[u8],
    parent_span_id: &[u8],
    name: &str,
    start_unix_nano: u64,
    duration: Duration,
) -> Span {
    Span {
        trace_id: trace_id.to_vec(),
        span_id: span_id.to_vec(),
        parent_span_id: parent_span_id.to_vec(),
        name: name.to_string(),
        kind: meshscope_proto::trace::span::SpanKind::Server as i32,
        start_time_unix_nano: start_unix_nano,
        end_time_unix_nano: start_unix_nano + duration.as_nanos() as u64,
        ..Default::default()
    }
}

/// A request with one resource (`service.name` = `service`) and one scope holding `spans`.
pub fn traces_request(service: &str, spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv_str("service.name", service)],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "meshscope-e2e".to_string(),
                    version: "1.0.0".to_string(),
                    ..Default::default()
                }),
                spans,
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
}

/// A request of `n` fresh root spans of one new trace (1 ms apart, 5 ms long, ending now).
pub fn simple_trace_request(service: &str, n: usize) -> (ExportTraceServiceRequest, Vec<u8>) {
    let trace_id = random_trace_id();
    let start = now_unix_nanos() - 1_000_000_000;
    let spans = (0..n)
        .map(|i| {
            span(
                &trace_id,
                &random_span_id(),
                &[],
                &format!("op-{i}"),
                start + i as u64 * 1_000_000,
                Duration::from_millis(5),
            )
        })
        .collect();
    (traces_request(service, spans), trace_id)
}

// ---------------------------------------------------------------------------------------------------------
// Waiting and subprocesses
// ---------------------------------------------------------------------------------------------------------

/// Polls `probe` every 50 ms until it returns `Some`, for at most `timeout`; `None` on timeout.
pub async fn eventually_within<T, F, Fut>(timeout: Duration, mut probe: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe().await {
            return Some(value);
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Like [`eventually_within`] with [`QUERY_DEADLINE`], panicking with `what` on timeout.
pub async fn eventually<T, F, Fut>(what: &str, probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    eventually_within(QUERY_DEADLINE, probe)
        .await
        .unwrap_or_else(|| panic!("timed out after {QUERY_DEADLINE:?} waiting for {what}"))
}

/// Runs a command to completion with captured output; kills it and panics after `timeout`.
pub async fn run_command(mut command: Command, timeout: Duration) -> Output {
    tokio::task::spawn_blocking(move || {
        let description = format!("{command:?}");
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {description}: {e}"));
        let stdout = drain(child.stdout.take().expect("stdout"));
        let stderr = drain(child.stderr.take().expect("stderr"));
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                let stdout = stdout.join().unwrap_or_default();
                let stderr = stderr.join().unwrap_or_default();
                panic!(
                    "{description} did not finish within {timeout:?}\nstdout:\n{}\nstderr:\n{}",
                    String::from_utf8_lossy(&stdout),
                    String::from_utf8_lossy(&stderr)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        Output {
            status,
            stdout: stdout.join().unwrap_or_default(),
            stderr: stderr.join().unwrap_or_default(),
        }
    })
    .await
    .expect("command runner thread")
}

fn drain(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        bytes
    })
}

/// The Python interpreter of the test virtualenv (`MESHSCOPE_TEST_PYTHON`, set by `scripts/test.sh`).
/// Panics — failing the test, never skipping it — when it is not set up.
pub fn python() -> PathBuf {
    const HOW: &str = "run the suite through scripts/test.sh, which creates .venv with the pinned \
                       OpenTelemetry Python SDK (tests/python/requirements.txt) and sets MESHSCOPE_TEST_PYTHON";
    let Some(path) = std::env::var_os("MESHSCOPE_TEST_PYTHON") else {
        panic!("MESHSCOPE_TEST_PYTHON is not set: {HOW}");
    };
    let path = PathBuf::from(path);
    assert!(
        path.exists(),
        "MESHSCOPE_TEST_PYTHON={} does not exist: {HOW}",
        path.display()
    );
    path
}

/// A file of `tests/python/`.
pub fn python_script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("python")
        .join(name)
}
