//! Alerting end to end, against real peers: an error burst sent over OTLP makes a RED rule fire and then
//! resolve, which a real Prometheus Alertmanager (Debian's `prometheus-alertmanager`, started here)
//! and a webhook server of the test receive; a broken rule reports its error without stopping the
//! others; a receiver that is down is retried until it comes back; rules edited over the API and the
//! UI's forms, and alert states, survive a restart.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use common::*;
use meshscope_proto::trace::span::SpanKind;
use meshscope_proto::trace::{Status, status::StatusCode};
use serde_json::{Value, json};

/// One-second graph windows that are stored about two seconds after they close.
const FAST_WINDOWS: [&str; 4] = ["--graph-window", "1s", "--graph-pairing-wait", "1s"];
/// How long the alerting tests wait for a notification to arrive.
const ALERT_DEADLINE: Duration = Duration::from_secs(60);

/// The Debian package's binary; `scripts/test.sh` installs it.
const ALERTMANAGER: &str = "/usr/bin/prometheus-alertmanager";

// ---------------------------------------------------------------------------------------------------------
// A webhook server that records what it is sent
// ---------------------------------------------------------------------------------------------------------

/// Bodies received, with the path they were posted to.
type Received = Arc<Mutex<Vec<(String, Value)>>>;

/// An HTTP server on a fixed loopback port recording every JSON POST; it can be started late, so a
/// receiver sees it down first.
struct WebhookServer {
    addr: SocketAddr,
    received: Received,
    task: Option<tokio::task::JoinHandle<()>>,
}

async fn record(
    State(received): State<Received>,
    uri: axum::http::Uri,
    body: Bytes,
) -> &'static str {
    let value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    received
        .lock()
        .expect("received")
        .push((uri.path().to_owned(), value));
    "ok"
}

impl WebhookServer {
    /// A server on a free port, not yet listening.
    fn reserved() -> WebhookServer {
        WebhookServer {
            addr: free_ports()[0],
            received: Received::default(),
            task: None,
        }
    }

    async fn start(&mut self) {
        let listener = tokio::net::TcpListener::bind(self.addr)
            .await
            .expect("bind webhook port");
        let app = Router::new()
            .route("/{*path}", post(record))
            .with_state(self.received.clone());
        self.task = Some(tokio::spawn(async move {
            axum::serve(listener, app).await.expect("webhook server");
        }));
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Bodies posted to `path` so far.
    fn bodies(&self, path: &str) -> Vec<Value> {
        self.received
            .lock()
            .expect("received")
            .iter()
            .filter(|(p, _)| p == path)
            .map(|(_, body)| body.clone())
            .collect()
    }

    /// Waits for a body posted to `path` that `matches`.
    async fn wait_for(&self, what: &str, path: &str, matches: impl Fn(&Value) -> bool) -> Value {
        eventually_within(ALERT_DEADLINE, || async {
            self.bodies(path).into_iter().find(|body| matches(body))
        })
        .await
        .unwrap_or_else(|| {
            panic!(
                "no {what} posted to {path} within {ALERT_DEADLINE:?}; got: {:?}",
                self.bodies(path)
            )
        })
    }
}

impl Drop for WebhookServer {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// Prometheus Alertmanager
// ---------------------------------------------------------------------------------------------------------

/// A real Alertmanager on a free loopback port, routing every alert to the test's webhook within a
/// second; killed when dropped.
struct Alertmanager {
    process: Child,
    url: String,
    _dir: TestDir,
}

impl Alertmanager {
    async fn start(webhook_url: &str) -> Alertmanager {
        assert!(
            Path::new(ALERTMANAGER).exists(),
            "{ALERTMANAGER} is missing: run the suite through scripts/test.sh, which installs Debian's \
             prometheus-alertmanager (as root: apt-get install prometheus-alertmanager)"
        );
        let dir = TestDir::new("alertmanager");
        let config = dir.path().join("alertmanager.yml");
        std::fs::write(
            &config,
            format!(
                "route:\n  receiver: test\n  group_by: [alertname]\n  group_wait: 1s\n  group_interval: 1s\n  repeat_interval: 1h\n\
                 receivers:\n  - name: test\n    webhook_configs:\n      - url: {webhook_url}\n        send_resolved: true\n"
            ),
        )
        .expect("write alertmanager config");
        let addr = free_ports()[0];
        let log = std::fs::File::create(dir.path().join("alertmanager.log")).expect("log file");
        let process = Command::new(ALERTMANAGER)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--cluster.listen-address=")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .expect("start prometheus-alertmanager");
        let alertmanager = Alertmanager {
            process,
            url: format!("http://{addr}"),
            _dir: dir,
        };
        let client = reqwest::Client::new();
        let ready = eventually_within(Duration::from_secs(30), || async {
            let response = client
                .get(format!("{}/-/ready", alertmanager.url))
                .send()
                .await
                .ok()?;
            response.status().is_success().then_some(())
        })
        .await;
        assert!(ready.is_some(), "Alertmanager did not get ready in 30 s");
        alertmanager
    }

    /// `GET /api/v2/alerts`: the alerts Alertmanager holds as active.
    async fn alerts(&self) -> Vec<Value> {
        let body: Value = reqwest::get(format!("{}/api/v2/alerts", self.url))
            .await
            .expect("GET Alertmanager alerts")
            .json()
            .await
            .expect("Alertmanager alerts JSON");
        body.as_array().cloned().unwrap_or_default()
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

// ---------------------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------------------

/// Writes a rules file into a fresh directory (kept alive by the returned guard).
fn rules_file(name: &str, text: &str) -> (TestDir, String) {
    let dir = TestDir::new(name);
    let path = dir.path().join("rules.toml");
    std::fs::write(&path, text).expect("write rules file");
    let path = path.display().to_string();
    (dir, path)
}

async fn start_collector(name: &str, rules: &str) -> Collector {
    let mut args = FAST_WINDOWS.to_vec();
    args.extend(["--alert-rules", rules]);
    Collector::start_with(name, &args).await
}

/// A server span `POST /charge`, failed or not, that just ended.
fn request_span(failed: bool) -> meshscope_proto::trace::Span {
    let mut span = span(
        &random_trace_id(),
        &random_span_id(),
        &[],
        "POST /charge",
        now_unix_nanos() - 5_000_000,
        Duration::from_millis(4),
    );
    span.kind = SpanKind::Server as i32;
    if failed {
        span.status = Some(Status {
            code: StatusCode::Error as i32,
            message: "card declined".into(),
        });
    }
    span
}

/// Sends, every 200 ms until stopped, failing requests of `payments` and healthy ones of `catalog`.
fn error_burst(collector: &Collector) -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let endpoint = collector.grpc_endpoint();
    tokio::spawn(async move {
        use meshscope_proto::collector::trace::v1::trace_service_client::TraceServiceClient;
        let mut client = TraceServiceClient::connect(endpoint)
            .await
            .expect("connect OTLP/gRPC");
        while !flag.load(Ordering::Relaxed) {
            for (service, failed) in [("payments", true), ("catalog", false)] {
                let spans = (0..5).map(|_| request_span(failed)).collect();
                client
                    .export(traces_request(service, spans))
                    .await
                    .expect("export spans");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    stop
}

/// The instances of `rule` from `GET /api/alerts/rules/{rule}`.
async fn rule_status(collector: &Collector, rule: &str) -> Value {
    collector
        .get_json(&format!("/api/alerts/rules/{rule}"))
        .await
}

/// Waits until an instance of `rule` is in `state`; returns the instance.
async fn wait_for_state(collector: &Collector, rule: &str, state: &str) -> Value {
    eventually_within(ALERT_DEADLINE, || async {
        let status = rule_status(collector, rule).await;
        status["instances"]
            .as_array()?
            .iter()
            .find(|i| i["state"] == state)
            .cloned()
    })
    .await
    .unwrap_or_else(|| panic!("rule {rule} has no {state} instance within {ALERT_DEADLINE:?}"))
}

fn alertname(alert: &Value) -> &str {
    alert["labels"]["alertname"].as_str().unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------------------

#[tokio::test]
async fn an_error_burst_fires_then_resolves_at_alertmanager_and_a_webhook() {
    let mut hooks = WebhookServer::reserved();
    hooks.start().await;
    let alertmanager = Alertmanager::start(&hooks.url("/from-alertmanager")).await;
    let (_dir, rules) = rules_file(
        "alert-burst",
        &format!(
            r#"
resend_interval = "2s"

[[receiver]]
name = "hook"
kind = "webhook"
url = "{hook}"

[[receiver]]
name = "am"
kind = "alertmanager"
url = "{am}"

[[rule]]
name = "high-error-rate"
condition = "> 50"
interval = "1s"
for = "1s"
keep_firing_for = "1s"
receivers = ["hook", "am"]
red = {{ scope = "service", figure = "error_rate", range = "6s" }}
labels = {{ severity = "page" }}
annotations = {{ summary = "{{{{ labels.service }}}} fails {{{{ value | int }}}}% of requests" }}
"#,
            hook = hooks.url("/meshscope"),
            am = alertmanager.url
        ),
    );
    let collector = start_collector("alert-burst", &rules).await;
    let burst = error_burst(&collector);

    // Firing: the rule's own state, Alertmanager's API, the webhook's generic payload.
    let firing = wait_for_state(&collector, "high-error-rate", "firing").await;
    assert_eq!(firing["labels"]["service"], "payments", "{firing}");
    let am_alert = eventually_within(ALERT_DEADLINE, || async {
        alertmanager
            .alerts()
            .await
            .into_iter()
            .find(|alert| alertname(alert) == "high-error-rate")
    })
    .await
    .expect("Alertmanager holds the firing alert");
    assert_eq!(am_alert["labels"]["service"], "payments", "{am_alert}");
    assert_eq!(am_alert["labels"]["severity"], "page", "{am_alert}");
    assert_eq!(am_alert["status"]["state"], "active", "{am_alert}");
    assert_eq!(
        am_alert["annotations"]["summary"], "payments fails 100% of requests",
        "{am_alert}"
    );
    assert_eq!(
        am_alert["generatorURL"],
        format!("{}/alerts/rules/high-error-rate", collector.api_url())
    );
    let webhook = hooks
        .wait_for("a firing notification", "/meshscope", |body| {
            body["status"] == "firing"
        })
        .await;
    assert_eq!(webhook["version"], "4");
    assert_eq!(webhook["receiver"], "hook");
    assert_eq!(webhook["groupKey"], "{}:{alertname=\"high-error-rate\"}");
    assert_eq!(
        webhook["groupLabels"],
        json!({"alertname": "high-error-rate"})
    );
    assert_eq!(webhook["externalURL"], collector.api_url());
    assert_eq!(webhook["commonLabels"]["severity"], "page");
    let alerts = webhook["alerts"].as_array().expect("alerts");
    assert_eq!(alerts.len(), 1, "only payments fails: {webhook}");
    let alert = &alerts[0];
    assert_eq!(alert["status"], "firing");
    assert_eq!(alert["labels"]["service"], "payments");
    assert_eq!(alert["endsAt"], "0001-01-01T00:00:00Z");
    assert!(
        alert["startsAt"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{alert}"
    );
    assert_eq!(
        alert["fingerprint"].as_str().map(str::len),
        Some(16),
        "{alert}"
    );
    // Alertmanager routed it on to its own webhook receiver.
    hooks
        .wait_for(
            "Alertmanager's firing notification",
            "/from-alertmanager",
            |body| {
                body["status"] == "firing" && body["commonLabels"]["alertname"] == "high-error-rate"
            },
        )
        .await;

    // The UI shows the firing instance with a link to example traces, and the link finds them.
    let page = collector.get("/alerts").await;
    assert_eq!(page.status, 200);
    let html = page.text();
    assert!(html.contains("class=\"instance firing\""), "{html}");
    let link = html
        .split("class=\"traces\" href=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("a traces link")
        .replace("&amp;", "&");
    assert!(
        link.contains("service=payments") && link.contains("status=error"),
        "{link}"
    );
    let search = collector.get(&link).await;
    assert_eq!(search.status, 200, "{link}");
    assert!(
        search.text().contains("POST /charge"),
        "the linked search lists the failing requests: {link}"
    );

    // The burst ends: the alert resolves everywhere.
    burst.store(true, Ordering::Relaxed);
    wait_for_state(&collector, "high-error-rate", "resolved").await;
    let resolved = hooks
        .wait_for("a resolved notification", "/meshscope", |body| {
            body["status"] == "resolved"
        })
        .await;
    assert_eq!(resolved["alerts"][0]["status"], "resolved");
    assert_ne!(resolved["alerts"][0]["endsAt"], "0001-01-01T00:00:00Z");
    hooks
        .wait_for(
            "Alertmanager's resolved notification",
            "/from-alertmanager",
            |body| {
                body["status"] == "resolved"
                    && body["commonLabels"]["alertname"] == "high-error-rate"
            },
        )
        .await;
    let still_active: Vec<Value> = alertmanager
        .alerts()
        .await
        .into_iter()
        .filter(|alert| alertname(alert) == "high-error-rate")
        .collect();
    assert!(still_active.is_empty(), "{still_active:?}");
    let deliveries = collector.get_json("/api/alerts/deliveries").await;
    let delivered = |receiver: &str, status: &str| {
        deliveries["deliveries"].as_array().is_some_and(|log| {
            log.iter().any(|d| {
                d["receiver"] == receiver && d["status"] == status && d["outcome"] == "delivered"
            })
        })
    };
    for receiver in ["hook", "am"] {
        for status in ["firing", "resolved"] {
            assert!(
                delivered(receiver, status),
                "{receiver} {status}: {deliveries}"
            );
        }
    }
}

#[tokio::test]
async fn a_broken_rule_reports_its_error_and_the_others_keep_working() {
    let (_dir, rules) = rules_file(
        "alert-broken",
        r#"
[[rule]]
name = "broken-sql"
condition = "> 0"
interval = "1s"
sql = "SELECT service, count(*) AS value FROM no_such_table GROUP BY service"

[[rule]]
name = "no-value"
condition = "> 0"
interval = "1s"
sql = "SELECT 1 AS v"

[[rule]]
name = "always"
condition = ">= 1"
interval = "1s"
sql = "SELECT 'x' AS thing, 1.0 AS value"
"#,
    );
    let collector = start_collector("alert-broken", &rules).await;
    let firing = wait_for_state(&collector, "always", "firing").await;
    assert_eq!(firing["labels"]["thing"], "x");
    let error_of = |status: Value| status["last_error"].as_str().unwrap_or_default().to_owned();
    let broken = eventually("the broken rule's error", || async {
        Some(error_of(rule_status(&collector, "broken-sql").await)).filter(|e| !e.is_empty())
    })
    .await;
    assert!(broken.contains("no_such_table"), "{broken}");
    let no_value = eventually("the value-less rule's error", || async {
        Some(error_of(rule_status(&collector, "no-value").await)).filter(|e| !e.is_empty())
    })
    .await;
    assert!(no_value.contains("no `value` column"), "{no_value}");
    assert!(
        rule_status(&collector, "always").await["last_error"].is_null(),
        "the healthy rule has no error"
    );

    let html = collector.get("/alerts").await.text();
    let section = html
        .split("data-rule=\"broken-sql\"")
        .nth(1)
        .expect("the broken rule's section");
    let section = section.split("<section").next().unwrap_or_default();
    assert!(
        section.contains("class=\"error rule-error\"") && section.contains("no_such_table"),
        "{section}"
    );
}

#[tokio::test]
async fn a_receiver_outage_is_retried_until_it_recovers() {
    let mut hooks = WebhookServer::reserved();
    let (_dir, rules) = rules_file(
        "alert-outage",
        &format!(
            r#"
[[receiver]]
name = "flaky"
kind = "webhook"
url = "{hook}"
timeout = "2s"
backoff = "300ms"
max_backoff = "1s"
max_attempts = 60

[[rule]]
name = "always"
condition = "> 0"
interval = "1s"
receivers = ["flaky"]
sql = "SELECT 'x' AS thing, 1.0 AS value"
"#,
            hook = hooks.url("/hook")
        ),
    );
    let collector = start_collector("alert-outage", &rules).await;
    let retries = eventually_within(ALERT_DEADLINE, || async {
        let log = collector.get_json("/api/alerts/deliveries").await;
        let retrying = log["deliveries"]
            .as_array()?
            .iter()
            .filter(|d| d["outcome"] == "retrying")
            .count();
        (retrying >= 2).then_some(log)
    })
    .await
    .expect("failed attempts are logged while the receiver is down");
    assert!(
        retries["receivers"][0]["failed_attempts"].as_u64() >= Some(2),
        "{retries}"
    );
    // Evaluation went on while the receiver was down.
    wait_for_state(&collector, "always", "firing").await;

    hooks.start().await;
    let body = hooks
        .wait_for("the retried notification", "/hook", |body| {
            body["status"] == "firing"
        })
        .await;
    assert_eq!(body["alerts"][0]["labels"]["thing"], "x");
    let log = eventually("a delivered retry in the log", || async {
        let log = collector.get_json("/api/alerts/deliveries").await;
        let delivered_late = log["deliveries"]
            .as_array()?
            .iter()
            .any(|d| d["outcome"] == "delivered" && d["attempt"].as_u64() > Some(1));
        delivered_late.then_some(log)
    })
    .await;
    assert!(
        log["receivers"][0]["delivered"].as_u64() >= Some(1),
        "{log}"
    );
    let page = collector.get("/alerts").await.text();
    assert!(
        page.contains("retrying") && page.contains("delivered"),
        "{page}"
    );
}

#[tokio::test]
async fn rules_edited_over_the_api_and_forms_and_alert_state_survive_a_restart() {
    let (_dir, rules) = rules_file(
        "alert-edit",
        r#"
[[rule]]
name = "from-file"
condition = "> 0"
interval = "1s"
sql = "SELECT 'file' AS origin, 1.0 AS value"
"#,
    );
    let mut collector = start_collector("alert-edit", &rules).await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let api = |path: &str| format!("{}{path}", collector.api_url());

    // Create over the JSON API; a bad rule is refused with its reason.
    let created = http
        .post(api("/api/alerts/rules"))
        .json(&json!({
            "name": "via-api",
            "condition": ">= 2",
            "interval": "1s",
            "for": "1s",
            "sql": "SELECT 'api' AS origin, 2.0 AS value",
            "labels": {"team": "core"},
            "annotations": {"summary": "{{ labels.origin }} is {{ value }}"}
        }))
        .send()
        .await
        .expect("POST rule");
    assert_eq!(created.status(), 201);
    let bad = http
        .post(api("/api/alerts/rules"))
        .json(&json!({"name": "bad", "condition": "about 3", "sql": "SELECT 1 AS value"}))
        .send()
        .await
        .expect("POST bad rule");
    assert_eq!(bad.status(), 400);
    let message = bad.text().await.unwrap_or_default();
    assert!(message.contains("condition"), "{message}");

    // Edit the file's rule and delete nothing yet, through the UI's form.
    let edit_page = collector.get("/alerts/rules/from-file").await.text();
    assert!(edit_page.contains("name=\"text\""), "{edit_page}");
    let form = serde_urlencoded::to_string([
        ("replaces", "from-file"),
        (
            "text",
            "name = \"from-file\"\ncondition = \"> 0\"\ninterval = \"1s\"\nsql = \"SELECT 'edited' AS origin, 1.0 AS value\"\n",
        ),
    ])
    .expect("form");
    let saved = http
        .post(api("/alerts/rules"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("origin", collector.api_url())
        .body(form)
        .send()
        .await
        .expect("POST form");
    assert_eq!(saved.status(), 303);
    let broken_form =
        serde_urlencoded::to_string([("replaces", ""), ("text", "name = ")]).expect("form");
    let refused = http
        .post(api("/alerts/rules"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(broken_form)
        .send()
        .await
        .expect("POST broken form");
    assert_eq!(refused.status(), 400);
    assert!(
        refused
            .text()
            .await
            .unwrap_or_default()
            .contains("id=\"rule-error\"")
    );
    let cross_site = http
        .post(api("/alerts/rules/from-file/delete"))
        .header("origin", "http://elsewhere.example")
        .send()
        .await
        .expect("POST cross-site");
    assert_eq!(cross_site.status(), 403);

    let firing = wait_for_state(&collector, "via-api", "firing").await;
    assert_eq!(firing["annotations"]["summary"], "api is 2.0");
    let fired_at = firing["fired_at_ms"].clone();
    eventually("the edited file rule's instance", || async {
        let status = rule_status(&collector, "from-file").await;
        (status["origin"] == "store"
            && status["instances"][0]["labels"]["origin"] == "edited"
            && status["instances"][0]["state"] == "firing")
            .then_some(())
    })
    .await;
    let all = collector.get_json("/api/alerts").await;
    assert!(
        all["alerts"]
            .as_array()
            .is_some_and(|a| a.iter().any(|i| i["rule"] == "via-api")),
        "{all}"
    );

    // Restart: the edits and the firing state (with its start time) are back.
    let status = collector.sigterm().await;
    assert!(status.success(), "collector exited with {status}");
    assert!(collector.data_dir().join("alerts/state.json").exists());
    collector.restart().await;
    let restored = rule_status(&collector, "via-api").await;
    assert_eq!(restored["instances"][0]["state"], "firing", "{restored}");
    assert_eq!(
        restored["instances"][0]["fired_at_ms"], fired_at,
        "{restored}"
    );
    let edited = rule_status(&collector, "from-file").await;
    assert!(
        edited["query"]
            .as_str()
            .is_some_and(|q| q.contains("edited")),
        "{edited}"
    );

    // Delete through the form and the API; both stay deleted after another restart.
    let deleted = http
        .post(format!(
            "{}/alerts/rules/from-file/delete",
            collector.api_url()
        ))
        .send()
        .await
        .expect("POST delete");
    assert_eq!(deleted.status(), 303);
    let deleted = http
        .delete(format!("{}/api/alerts/rules/via-api", collector.api_url()))
        .send()
        .await
        .expect("DELETE rule");
    assert_eq!(deleted.status(), 204);
    collector.sigterm().await;
    collector.restart().await;
    let rules = collector.get_json("/api/alerts/rules").await;
    assert_eq!(rules["rules"], json!([]), "{rules}");
    assert_eq!(collector.get("/api/alerts/rules/via-api").await.status, 404);
}
