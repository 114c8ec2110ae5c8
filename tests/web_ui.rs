//! The web UI in a real browser: Debian's headless Chromium, driven through chromedriver with the
//! `fantoccini` WebDriver client, against a real collector filled by the OpenTelemetry Python SDK
//! (`tests/python/send_web_traces.py`).
//!
//! Needs `chromium` and `chromium-driver` (installed by `scripts/test.sh`) and the Python virtualenv.
//! Every wait is bounded; the browser and driver only listen on loopback and are killed on drop.

mod common;

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use meshscope_proto::trace::Status;
use serde_json::{Value, json};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// How long any one element or condition is waited for.
const UI_DEADLINE: Duration = Duration::from_secs(20);

/// A chromedriver process with one headless Chromium session and a fresh profile.
struct Browser {
    client: Client,
    driver: Child,
    _profile: TestDir,
}

impl Browser {
    async fn start(name: &str) -> Browser {
        for path in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                Path::new(path).exists(),
                "{path} is missing: run the suite through scripts/test.sh, which installs Debian's chromium and chromium-driver"
            );
        }
        let profile = TestDir::new(&format!("{name}-chromium"));
        let port = free_ports()[0].port();
        // Its own process group, so that dropping the browser can end Chromium too: Chromium's
        // processes outlive a killed chromedriver otherwise.
        let driver = Command::new(CHROMEDRIVER)
            .process_group(0)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let url = format!("http://127.0.0.1:{port}");
        let args = vec![
            "--headless".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--no-first-run".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--disable-sync".to_owned(),
            "--disable-quic".to_owned(),
            "--window-size=1400,1000".to_owned(),
            format!("--user-data-dir={}", profile.path().display()),
        ];
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".to_owned(),
            json!({ "binary": CHROMIUM, "args": args }),
        );
        let deadline = Instant::now() + UI_DEADLINE;
        let client = loop {
            let attempt =
                ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
                    .capabilities(capabilities.clone())
                    .connect(&url)
                    .await;
            match attempt {
                Ok(client) => break client,
                Err(error) if Instant::now() > deadline => {
                    panic!("no WebDriver session from chromedriver on {url}: {error}")
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        };
        Browser {
            client,
            driver,
            _profile: profile,
        }
    }

    async fn goto(&self, url: &str) {
        self.client
            .goto(url)
            .await
            .unwrap_or_else(|e| panic!("open {url}: {e}"));
    }

    /// The first element matching `css`, waited for.
    async fn find(&self, css: &str) -> Element {
        self.client
            .wait()
            .at_most(UI_DEADLINE)
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no element {css:?} within {UI_DEADLINE:?}: {e}"))
    }

    /// Types `text` into the trace page's filter box, emptied first, with the page scrolled to the
    /// top (so a match deep in the trace is off screen until the filter brings it into view).
    async fn filter(&self, text: &str) {
        self.eval("window.scrollTo(0, 0); return true;").await;
        let filter = self.find("#filter").await;
        filter.clear().await.expect("clear the filter");
        filter.send_keys(text).await.expect("type into the filter");
    }

    /// Runs `script` (a function body) and returns its value.
    async fn eval(&self, script: &str) -> Value {
        self.client
            .execute(script, vec![])
            .await
            .unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
    }

    /// Polls `script` until it returns true.
    async fn wait_until(&self, what: &str, script: &str) {
        let deadline = Instant::now() + UI_DEADLINE;
        while self.eval(script).await != Value::Bool(true) {
            assert!(
                Instant::now() < deadline,
                "{what}: not true within {UI_DEADLINE:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn text(&self, css: &str) -> String {
        self.find(css)
            .await
            .text()
            .await
            .unwrap_or_else(|e| panic!("text of {css}: {e}"))
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let group = format!("-{}", self.driver.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// Runs `send_web_traces.py <what>` and returns the trace ids it reports.
async fn python_sends(collector: &Collector, what: &str) -> Vec<String> {
    let mut command = Command::new(python());
    command
        .arg(python_script("send_web_traces.py"))
        .arg(what)
        .args(["--http-endpoint", &collector.otlp_http_endpoint()]);
    let output = run_command(command, Duration::from_secs(120)).await;
    assert!(
        output.status.success(),
        "send_web_traces.py {what} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let answer: Value =
        serde_json::from_slice(&output.stdout).expect("JSON from send_web_traces.py");
    answer["traceIds"]
        .as_array()
        .expect("traceIds")
        .iter()
        .map(|id| id.as_str().expect("hex id").to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_open_trace_expand_span_read_attribute() {
    let collector = Collector::start("web-search").await;
    let ids = python_sends(&collector, "shop").await;
    collector.wait_for_trace(&ids[0], 4).await;
    let browser = Browser::start("web-search").await;
    let base = collector.api_url();

    browser.goto(&format!("{base}/search")).await;
    // Two services at once, the way Jaeger cannot.
    browser
        .eval(
            "for (const o of document.querySelectorAll('#service option')) \
             o.selected = (o.value === 'frontend' || o.value === 'checkout-api'); return true;",
        )
        .await;
    browser
        .find("#filters")
        .await
        .send_keys("order.id=A-1001")
        .await
        .expect("type a filter");
    browser.find("#find").await.click().await.expect("search");
    // The answer replaces the results table, so a link found before the swap goes stale: the links are
    // read in one script, until they are the search's answer.
    let wanted = json!([&ids[0]]);
    eventually(
        &format!("the results to link only trace {}", ids[0]),
        || async {
            let links = browser
                .eval(
                    "return [...document.querySelectorAll('#results a.trace-link')] \
                 .map(a => a.textContent);",
                )
                .await;
            (links == wanted).then_some(())
        },
    )
    .await;
    let link = browser.find("#results a.trace-link").await;
    let rows = browser
        .eval("return document.querySelectorAll('#results tbody tr').length;")
        .await;
    assert_eq!(rows, json!(1), "one trace matches order.id=A-1001");
    // The scatter plot has a dot linking to the same trace.
    let dot = browser
        .eval(&format!(
            "return document.querySelectorAll('#scatter a[href=\"/trace/{}\"]').length;",
            ids[0]
        ))
        .await;
    assert_eq!(dot, json!(1));
    link.click().await.expect("open the trace");

    browser.find("#waterfall .r").await;
    assert_eq!(browser.text("#trace-id").await, ids[0]);
    let spans = browser
        .eval("return document.querySelectorAll('#waterfall .r').length;")
        .await;
    assert_eq!(spans, json!(4));
    // Collapse the root: its three descendants hide; expand again.
    browser
        .find("#waterfall .r[data-d='0'] button.t")
        .await
        .click()
        .await
        .expect("collapse");
    let visible =
        "return [...document.querySelectorAll('#waterfall .r')].filter(r => !r.hidden).length;";
    assert_eq!(browser.eval(visible).await, json!(1));
    browser
        .find("#waterfall .r[data-d='0'] button.t")
        .await
        .click()
        .await
        .expect("expand");
    assert_eq!(browser.eval(visible).await, json!(4));
    // The erroring span is marked, and the critical path is highlighted.
    let error_rows = browser
        .eval("return [...document.querySelectorAll('#waterfall .r.err .n')].map(n => n.textContent);")
        .await;
    assert_eq!(error_rows, json!(["POST /orders"]));
    let critical = browser
        .eval("return document.querySelectorAll('#waterfall .r.cp').length;")
        .await;
    assert!(
        critical.as_u64().unwrap_or(0) >= 2,
        "critical path: {critical}"
    );

    // Open the server span and read its attribute.
    browser
        .eval(
            "[...document.querySelectorAll('#waterfall .r')].find(r => r.querySelector('.n').textContent === 'POST /orders').querySelector('.n').click(); return true;",
        )
        .await;
    browser
        .wait_until(
            "details show the attribute",
            "return [...document.querySelectorAll('#details th')].some(th => th.textContent === 'order.id');",
        )
        .await;
    let value = browser
        .eval("return [...document.querySelectorAll('#details th')].find(th => th.textContent === 'order.id').nextElementSibling.textContent;")
        .await;
    assert_eq!(value, json!("A-1001"));
    let details = browser.text("#details").await;
    assert!(
        details.contains("order.validated"),
        "event shown: {details}"
    );
    assert!(
        details.contains("payment backend unavailable"),
        "status shown: {details}"
    );
    assert!(
        details.contains("checkout-api"),
        "resource shown: {details}"
    );

    // The filter box highlights matching spans, attribute values included.
    browser.filter("postgresql").await;
    browser
        .wait_until(
            "the db span is highlighted",
            "return document.querySelectorAll('#waterfall .r.hit').length === 1;",
        )
        .await;
    // Statistics list self time per service.
    let stats = browser.text("#stats-service").await;
    assert!(
        stats.contains("frontend") && stats.contains("checkout-api"),
        "{stats}"
    );
    let json_link = browser
        .eval("return document.querySelector('#json-link').getAttribute('href');")
        .await;
    assert_eq!(json_link, json!(format!("/api/traces/{}", ids[0])));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_console_runs_a_query_and_shows_rows() {
    let collector = Collector::start("web-sql").await;
    let ids = python_sends(&collector, "shop").await;
    collector.wait_for_trace(&ids[0], 4).await;
    let browser = Browser::start("web-sql").await;
    browser.goto(&format!("{}/sql", collector.api_url())).await;
    let query = "SELECT service_name, count(*) AS spans FROM spans GROUP BY service_name ORDER BY service_name";
    browser
        .find("#sql")
        .await
        .send_keys(query)
        .await
        .expect("type SQL");
    browser.find("#run").await.click().await.expect("run");
    browser.find("#result tbody tr").await;
    let cells = browser
        .eval("return [...document.querySelectorAll('#result tbody tr')].map(r => [...r.cells].map(c => c.textContent));")
        .await;
    assert_eq!(cells, json!([["checkout-api", "3"], ["frontend", "2"]]));
    let csv = browser
        .eval("return document.querySelector('#csv').getAttribute('href');")
        .await;
    let csv = collector.get(csv.as_str().expect("csv link")).await;
    assert_eq!(csv.status, 200);
    assert_eq!(
        csv.text(),
        "service_name,spans\ncheckout-api,3\nfrontend,2\n"
    );
    // A result with a time column and numbers is charted.
    browser
        .goto(&format!(
            "{}/sql?q={}",
            collector.api_url(),
            "SELECT%20start_time%2C%20duration_ns%20FROM%20spans"
        ))
        .await;
    browser.find("#chart polyline.series").await;
    // Errors show inline, and the history (localStorage) keeps the queries that ran.
    browser
        .goto(&format!("{}/sql?q=SELEC%20nonsense", collector.api_url()))
        .await;
    let error = browser.text("#sql-error").await;
    assert!(!error.is_empty());
    let history = browser.text("#history").await;
    assert!(
        history.contains("GROUP BY service_name"),
        "history: {history}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_graph_shows_expected_edges() {
    let collector = Collector::start("web-graph").await;
    let ids = python_sends(&collector, "shop").await;
    collector.wait_for_trace(&ids[0], 4).await;
    let browser = Browser::start("web-graph").await;
    browser
        .goto(&format!("{}/graph", collector.api_url()))
        .await;
    browser.find("#graph g.edge").await;
    let edges = browser
        .eval("return [...document.querySelectorAll('#graph g.edge')].map(g => g.dataset.caller + ' -> ' + g.dataset.callee).sort();")
        .await;
    assert_eq!(
        edges,
        json!([
            "checkout-api -> postgresql",
            "frontend -> checkout-api",
            "user -> checkout-api",
            "user -> frontend"
        ])
    );
    let virtual_nodes = browser
        .eval("return [...document.querySelectorAll('#graph g.node.virtual')].map(g => g.dataset.name).sort();")
        .await;
    assert_eq!(virtual_nodes, json!(["postgresql", "user"]));
    // The failing call is drawn red.
    let health = browser
        .eval("return document.querySelector('#graph g.edge[data-caller=\"frontend\"]').classList.contains('bad');")
        .await;
    assert_eq!(health, json!(true));

    // The service page lists the same neighbours, and the overview lists both services.
    browser
        .goto(&format!("{}/services/checkout-api", collector.api_url()))
        .await;
    let callers = browser.text("#callers").await;
    assert!(
        callers.contains("frontend") && callers.contains("user"),
        "{callers}"
    );
    assert!(browser.text("#callees").await.contains("postgresql"));
    browser.find("svg.histogram rect").await;
    browser.goto(&collector.api_url()).await;
    let services = browser.text("#services").await;
    assert!(
        services.contains("frontend") && services.contains("checkout-api"),
        "{services}"
    );
}

/// Texts the hostile spans carry (kept in step with send_web_traces.py).
const HOSTILE_NAME: &str = "<script id=injected-name>alert(2)</script> &amp; &lt;b&gt; \"q\" 'q'";
const HOSTILE_SERVICE: &str = "svc\"'><img src=x id=injected-service onerror=alert(1)>";

/// Asserts the page ran no injected code and holds no injected element, and that `texts` are shown.
async fn assert_inert(browser: &Browser, page: &str, texts: &[&str]) {
    assert!(
        browser.client.get_alert_text().await.is_err(),
        "{page}: an alert dialog is open"
    );
    let injected = browser
        .eval("return [...document.querySelectorAll('[id^=injected]')].map(e => e.outerHTML.slice(0, 80));")
        .await;
    assert_eq!(injected, json!([]), "{page}: injected elements exist");
    // Every script is one of ours from /static/, or a JSON data block (never executed).
    let scripts = browser
        .eval("return [...document.scripts].filter(s => s.type !== 'application/json').map(s => s.getAttribute('src'));")
        .await;
    for script in scripts.as_array().expect("scripts") {
        assert!(
            script
                .as_str()
                .is_some_and(|src| src.starts_with("/static/")),
            "{page}: unexpected script {script}"
        );
    }
    let body = browser.eval("return document.body.innerText;").await;
    let body = body.as_str().expect("body text");
    for text in texts {
        assert!(body.contains(text), "{page}: {text:?} not shown as text");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_content_is_inert_text_on_every_page() {
    let collector = Collector::start("web-hostile").await;
    let ids = python_sends(&collector, "hostile").await;
    collector.wait_for_trace(&ids[0], 2).await;
    let base = collector.api_url();
    let browser = Browser::start("web-hostile").await;
    let service = urlencode(HOSTILE_SERVICE);

    let pages = [
        ("overview", format!("{base}/"), vec![HOSTILE_SERVICE]),
        (
            "service",
            format!("{base}/services/{service}"),
            vec![HOSTILE_SERVICE],
        ),
        (
            "search",
            format!("{base}/search?service={service}"),
            vec![HOSTILE_NAME, HOSTILE_SERVICE],
        ),
        (
            "graph",
            format!("{base}/graph"),
            vec!["<b id=injected-peer>db</b>"],
        ),
        (
            "sql",
            format!(
                "{base}/sql?q={}",
                urlencode("SELECT name, status_message, attributes FROM spans ORDER BY name")
            ),
            vec![
                HOSTILE_NAME,
                "<iframe id=injected-status src=javascript:alert(7)>",
            ],
        ),
        (
            "trace",
            format!("{base}/trace/{}", ids[0]),
            vec![HOSTILE_NAME],
        ),
    ];
    for (page, url, texts) in &pages {
        let response = collector
            .get(url.strip_prefix(&base).expect("own URL"))
            .await;
        assert_eq!(response.status, 200, "{page}: {}", response.text());
        let policy = response
            .headers
            .get("content-security-policy")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        assert!(
            policy.contains("script-src 'self'"),
            "{page}: no script policy: {policy:?}"
        );
        browser.goto(url).await;
        browser.find("main").await;
        assert_inert(&browser, page, texts).await;
    }

    // The trace's span details: every hostile attribute shown as text.
    browser
        .eval("document.querySelector('#waterfall .r[data-d=\"0\"] .n').click(); return true;")
        .await;
    browser
        .wait_until(
            "details of the hostile span",
            "return [...document.querySelectorAll('#details th')].some(th => th.textContent === 'big');",
        )
        .await;
    let big = browser
        .eval("return [...document.querySelectorAll('#details th')].find(th => th.textContent === 'big').nextElementSibling.textContent.length;")
        .await;
    assert_eq!(big, json!(100_000 + "<b id=injected-big></b>".len()));
    assert_inert(
        &browser,
        "trace details",
        &[
            "\"'`",
            "&amp; &lt;script&gt; &#x3C;",
            "\u{202e}evil.exe",
            "Z\u{351}\u{364}\u{306}a\u{300}\u{301}\u{302}lgo\u{308}\u{308}",
            "<img src=x id=injected-key onerror=alert(4)>",
            "<script id=injected-event>alert(5)</script>",
            "</textarea><svg id=injected-svg onload=alert(6)>",
            "<iframe id=injected-status src=javascript:alert(7)>",
            "bytes (base64) //48c2NyaXB0",
        ],
    )
    .await;
    // The filter box takes markup as a plain search string.
    browser.filter("<script").await;
    browser
        .wait_until(
            "the hostile span is highlighted",
            "return document.querySelectorAll('#waterfall .r.hit').length >= 1;",
        )
        .await;
    assert_inert(&browser, "trace filter", &[]).await;
}

/// Percent-encodes `text` for a path segment or a query value (space as `%20`, which both accept).
fn urlencode(text: &str) -> String {
    serde_urlencoded::to_string([("x", text)])
        .expect("urlencode")
        .trim_start_matches("x=")
        .replace('+', "%20")
}

/// A 10,000-span trace (a fan-out of 100 calls with 99 children each, plus a root): its page loads
/// and `trace.js`'s virtual list holds only the rows in view, yet the whole trace is there: the last
/// span is drawn when scrolled to, the filter finds a span deep in the trace and scrolls to it, a
/// hostile name deep in the trace stays text, collapsing hides a subtree, and a link to a deep span
/// scrolls to it. Prints the server time, the browser's navigation timings and when the list was
/// ready, the figures docs/ui.md reports; performance is not asserted here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_span_trace_renders() {
    let collector = Collector::start("web-10k").await;
    let trace_id = random_trace_id();
    let start = now_unix_nanos() - 60_000_000_000;
    let root_id = random_span_id();
    let mut all = vec![span(
        &trace_id,
        &root_id,
        &[],
        "GET /report",
        start,
        Duration::from_secs(50),
    )];
    for call in 0..100u64 {
        let call_id = random_span_id();
        let call_start = start + call * 400_000_000;
        let mut parent = span(
            &trace_id,
            &call_id,
            &root_id,
            &format!("call {call}"),
            call_start,
            Duration::from_millis(390),
        );
        if call % 10 == 0 {
            parent.status = Some(Status {
                code: 2,
                message: "failed".to_owned(),
            });
        }
        all.push(parent);
        for leaf in 0..99u64 {
            let mut child = span(
                &trace_id,
                &random_span_id(),
                &call_id,
                &format!("query {}", leaf % 7),
                call_start + leaf * 3_000_000,
                Duration::from_millis(2),
            );
            child.attributes = vec![kv_int("row", leaf as i64)];
            all.push(child);
        }
    }
    all.truncate(10_000);
    // Deep in the trace, far past the rows the HTML holds: a span found by its attribute, and one
    // with a name that would end the page's row data if it were not escaped.
    all[9_000]
        .attributes
        .push(kv_str("needle", "deep-needle-9000"));
    all[9_500].name = "</script><script id=injected-deep>alert(8)</script>".to_owned();
    let needle = hex::encode(&all[9_000].span_id);
    let last = hex::encode(&all[9_999].span_id);
    for chunk in all.chunks(2_000) {
        collector
            .export_grpc(traces_request(
                if chunk[0].parent_span_id.is_empty() {
                    "gateway"
                } else {
                    "reports"
                },
                chunk.to_vec(),
            ))
            .await;
    }
    let trace_hex = hex::encode(&trace_id);
    collector.wait_for_trace(&trace_hex, 10_000).await;

    let url = format!("{}/trace/{trace_hex}", collector.api_url());
    let server = Instant::now();
    let page = collector.get(&format!("/trace/{trace_hex}")).await;
    let server_ms = server.elapsed().as_millis();
    assert_eq!(page.status, 200);
    let browser = Browser::start("web-10k").await;
    // The browser is warmed on another page (fonts, styles, script); the trace page is loaded once,
    // since it prefetches its span details when loaded, which would compete with a second load. The
    // reqwest request above already warmed the collector.
    browser.goto(&format!("{}/sql", collector.api_url())).await;
    browser.goto(&url).await;
    let timing = browser
        .eval(
            "const n = performance.getEntriesByType('navigation')[0]; \
             const paint = Object.fromEntries(performance.getEntriesByType('paint').map(p => [p.name, p.startTime])); \
             return {response: n.responseEnd, firstPaint: paint['first-contentful-paint'], dom: n.domContentLoadedEventEnd, load: n.loadEventEnd, bytes: n.transferSize};",
        )
        .await;
    // Time until the waterfall is on screen: the next frame after load.
    let painted = browser
        .eval("return new Promise(done => requestAnimationFrame(() => done(performance.now())));")
        .await;
    let ready = browser
        .eval("return performance.getEntriesByName('waterfall-ready')[0].startTime;")
        .await;
    let in_dom = browser
        .eval("return document.querySelectorAll('#waterfall .r').length;")
        .await;
    println!(
        "10k-span trace page: server {server_ms} ms for {} bytes (reqwest); browser navigation timings (ms since navigation start): {timing}; first frame after load at {painted} ms; whole trace usable (virtual list ready) at {ready} ms; {in_dom} rows in the DOM",
        page.body.len()
    );
    assert!(
        in_dom.as_u64().is_some_and(|n| (1..500).contains(&n)),
        "only the rows in view are in the DOM: {in_dom}"
    );
    // The list is as tall as all 10,000 rows, and scrolled to its end, the last span is drawn there.
    let shown = browser
        .eval(&format!(
            "const list = document.getElementById('rows'); \
             window.scrollTo(0, Math.ceil(window.scrollY + list.getBoundingClientRect().bottom - window.innerHeight)); \
             return new Promise(done => requestAnimationFrame(() => requestAnimationFrame(() => {{ \
               const r = document.querySelector('#waterfall .r[data-id=\"{last}\"]'); \
               if (!r) return done(null); const box = r.getBoundingClientRect(); \
               done([box.top >= 0 && box.bottom <= window.innerHeight, r.querySelector('.n').textContent, \
                     list.getBoundingClientRect().height]); }})));"
        ))
        .await;
    let row_px = 22.0;
    assert_eq!(shown[0], json!(true), "last row on screen: {shown}");
    assert_eq!(shown[1], json!("query 6"));
    assert_eq!(shown[2].as_f64(), Some(10_000.0 * row_px), "{shown}");
    // A hostile name deep in the trace: the filter finds it by name and scrolls to it; it is text.
    browser.filter("injected-deep").await;
    browser
        .wait_until(
            "the hostile deep span is scrolled to and highlighted",
            "const hits = [...document.querySelectorAll('#waterfall .r.hit')]; \
             return hits.length === 1 && hits[0].getBoundingClientRect().top >= 0 \
               && hits[0].getBoundingClientRect().bottom <= window.innerHeight \
               && hits[0].querySelector('.n').textContent.includes('<script id=injected-deep>');",
        )
        .await;
    let injected = browser
        .eval("return document.querySelectorAll('[id^=injected]').length;")
        .await;
    assert_eq!(injected, json!(0));
    // The filter finds a span deep in the trace by its attribute value (from the span details).
    browser.filter("deep-needle-9000").await;
    browser
        .wait_until(
            "the deep span is scrolled to and highlighted",
            &format!(
                "const hits = document.querySelectorAll('#waterfall .r.hit'); \
                 return hits.length === 1 && hits[0].dataset.id === '{needle}' \
                   && hits[0].getBoundingClientRect().top >= 0 \
                   && hits[0].getBoundingClientRect().bottom <= window.innerHeight;"
            ),
        )
        .await;
    // Collapsing the root leaves one row, and the list shrinks to it; expanding brings all back.
    browser.eval("window.scrollTo(0, 0); return true;").await;
    browser
        .find("#waterfall .r[data-d='0'] button.t")
        .await
        .click()
        .await
        .expect("collapse the root");
    let collapsed = browser
        .eval("return [document.querySelectorAll('#waterfall .r').length, document.getElementById('rows').getBoundingClientRect().height];")
        .await;
    assert_eq!(collapsed[0], json!(1), "{collapsed}");
    assert_eq!(collapsed[1].as_f64(), Some(row_px), "{collapsed}");
    browser
        .find("#expand-all")
        .await
        .click()
        .await
        .expect("expand all");
    let expanded = browser
        .eval("return document.getElementById('rows').getBoundingClientRect().height;")
        .await;
    assert_eq!(expanded.as_f64(), Some(10_000.0 * row_px));
    // A link to a span far past the rows in the HTML scrolls to it.
    browser.goto(&format!("{}/sql", collector.api_url())).await;
    browser.goto(&format!("{url}#{needle}")).await;
    browser
        .wait_until(
            "the linked deep span is scrolled into view",
            &format!(
                "const r = document.querySelector('#waterfall .r[data-id=\"{needle}\"]'); \
                 if (!r) return false; const box = r.getBoundingClientRect(); \
                 return r.classList.contains('selected') && box.top >= 0 && box.bottom <= window.innerHeight;"
            ),
        )
        .await;
}

/// Replaces the text of the alert rule editor and saves it.
async fn save_rule_text(browser: &Browser, text: &str) {
    let editor = browser.find("#rule-text").await;
    editor.clear().await.expect("clear the editor");
    editor.send_keys(text).await.expect("type the rule");
    browser
        .find("#save")
        .await
        .click()
        .await
        .expect("click save");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alert_rules_are_created_edited_and_deleted_in_the_browser() {
    let collector = Collector::start("web-alerts").await;
    let base = collector.api_url();
    let browser = Browser::start("web-alerts").await;
    browser.goto(&format!("{base}/alerts")).await;
    browser.find("#no-rules").await;

    // Create: a rule whose name, labels and summary are hostile markup.
    browser
        .find("#new-rule")
        .await
        .click()
        .await
        .expect("new rule");
    let rule = "name = \"<img src=x id=injected-rule onerror=alert(3)>\"\n\
                condition = \"> 0\"\n\
                interval = \"1s\"\n\
                sql = \"SELECT '<b id=injected-label>pay</b>' AS service, 1.0 AS value\"\n\
                annotations = { summary = \"{{ labels.service }} <i id=injected-summary>x</i>\" }\n";
    save_rule_text(&browser, rule).await;
    browser.find("section.rule").await;
    eventually("the rule's instance firing", || async {
        let alerts = collector.get_json("/api/alerts").await;
        (alerts["alerts"][0]["state"] == "firing").then_some(())
    })
    .await;
    browser.goto(&format!("{base}/alerts")).await;
    browser.find("tr.instance.firing").await;
    assert_inert(
        &browser,
        "alerts",
        &[
            "<img src=x id=injected-rule onerror=alert(3)>",
            "service=<b id=injected-label>pay</b>",
            "<b id=injected-label>pay</b> <i id=injected-summary>x</i>",
        ],
    )
    .await;
    let traces = browser
        .find("tr.instance.firing a.traces")
        .await
        .attr("href")
        .await
        .expect("href")
        .unwrap_or_default();
    assert!(
        traces.starts_with("/search?service=%3Cb") && traces.contains("status=error"),
        "{traces}"
    );

    // A broken edit is refused in place, with the reason.
    browser
        .find("section.rule h2 a")
        .await
        .click()
        .await
        .expect("open the editor");
    save_rule_text(
        &browser,
        "name = \"x\"\ncondition = \"about 1\"\nsql = \"SELECT 1 AS value\"\n",
    )
    .await;
    let error = browser.text("#rule-error").await;
    assert!(error.contains("condition"), "{error}");

    // Edit: rename and change the condition; the instance follows the new rule.
    save_rule_text(
        &browser,
        "name = \"payments\"\ncondition = \">= 1\"\ninterval = \"1s\"\nsql = \"SELECT 'pay' AS service, 1.0 AS value\"\n",
    )
    .await;
    let section = browser.text("section.rule").await;
    assert!(
        section.contains("payments") && section.contains(">= 1"),
        "{section}"
    );
    let rules = collector.get_json("/api/alerts/rules").await;
    assert_eq!(rules["rules"].as_array().map(Vec::len), Some(1), "{rules}");
    assert_eq!(rules["rules"][0]["rule"]["name"], "payments");

    // Delete.
    browser
        .find("section.rule h2 a")
        .await
        .click()
        .await
        .expect("open the editor");
    browser.find("#delete").await.click().await.expect("delete");
    browser.find("#no-rules").await;
    assert_eq!(
        collector.get_json("/api/alerts/rules").await["rules"],
        json!([])
    );
}
