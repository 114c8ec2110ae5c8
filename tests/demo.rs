//! `meshscope demo` end to end: the real binary starts the collector and the shop behind sidecars; the
//! traffic's spans arrive from every service, the service graph shows the calls, and a fault injected
//! into one payments instance gets it ejected by the other sidecars through the fleet signals.

mod common;

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;

/// Kills the demo when the test ends, however it ends.
struct Demo(Child);

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Loopback ports the demo's sidecars take from the start of a block (each instance ten).
const SIDECAR_PORTS: u16 = 80;

/// A free block of 100 loopback ports starting at a multiple of 100: the sidecars take the first 80,
/// the collector and the fault switch four more. The blocks lie below the kernel's ephemeral range
/// (32768 and up), so no outgoing connection can take a port between this check and the demo's bind,
/// as it once did with a port the kernel had picked for a probe.
fn free_port_block() -> u16 {
    for _ in 0..50 {
        let base = 20_000 + 100 * fastrand::u16(..120);
        let block: Vec<_> = (base..base + SIDECAR_PORTS + 4)
            .map(|port| TcpListener::bind(("127.0.0.1", port)))
            .collect();
        if block.iter().all(Result::is_ok) {
            return base;
        }
    }
    panic!("no free block of loopback ports");
}

#[tokio::test]
async fn the_demo_serves_traffic_and_the_fleet_ejects_a_faulty_instance() {
    let dir = TestDir::new("demo");
    let base = free_port_block();
    let [grpc, http, api, control] = std::array::from_fn(|i| base + SIDECAR_PORTS + i as u16);
    let args = [
        "demo".to_owned(),
        "--data-dir".into(),
        dir.path().join("data").display().to_string(),
        "--otlp-grpc-listen".into(),
        format!("127.0.0.1:{grpc}"),
        "--otlp-http-listen".into(),
        format!("127.0.0.1:{http}"),
        "--api-listen".into(),
        format!("127.0.0.1:{api}"),
        "--control-listen".into(),
        format!("127.0.0.1:{control}"),
        "--base-port".into(),
        base.to_string(),
        "--rate".into(),
        "40".into(),
    ];
    let log =
        std::fs::File::create(dir.path().join("demo.log")).unwrap_or_else(|e| panic!("log: {e}"));
    let child = Command::new(MESHSCOPE)
        .args(&args)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("start the demo: {e}"));
    let _demo = Demo(child);
    let http_client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap_or_else(|e| panic!("client: {e}"));
    let logs = || std::fs::read_to_string(dir.path().join("demo.log")).unwrap_or_default();

    // Spans of every service with a sidecar arrive.
    let sql = "SELECT DISTINCT service_name FROM spans ORDER BY service_name";
    let services = eventually_within(Duration::from_secs(40), || async {
        let response = http_client
            .post(format!("http://127.0.0.1:{api}/api/sql"))
            .header("content-type", "application/json")
            .body(serde_json::json!({ "sql": sql }).to_string())
            .send()
            .await
            .ok()?;
        let rows: serde_json::Value = response.json().await.ok()?;
        let names: Vec<String> = rows["rows"]
            .as_array()?
            .iter()
            .filter_map(|row| row["service_name"].as_str().map(str::to_owned))
            .collect();
        (names.len() == 5).then_some(names)
    })
    .await
    .unwrap_or_else(|| panic!("spans of five services within 40 s; demo log:\n{}", logs()));
    assert_eq!(
        services,
        ["api", "catalog", "frontend", "orders", "payments"]
    );

    // The demo's built-in alert rules are loaded and their queries run without error.
    let rules = eventually_within(Duration::from_secs(20), || async {
        let rules = get_json(
            &http_client,
            format!("http://127.0.0.1:{api}/api/alerts/rules"),
        )
        .await?;
        let rules = rules["rules"].as_array()?.clone();
        rules
            .iter()
            .all(|rule| rule["last_evaluation_ms"].is_i64())
            .then_some(rules)
    })
    .await
    .unwrap_or_else(|| {
        panic!(
            "the demo's alert rules were not evaluated; demo log:\n{}",
            logs()
        )
    });
    let names: Vec<&str> = rules
        .iter()
        .filter_map(|rule| rule["rule"]["name"].as_str())
        .collect();
    assert_eq!(names, ["failing-edges", "slow-operations"]);
    for rule in &rules {
        assert!(rule["last_error"].is_null(), "{rule}");
    }

    // One payments instance fails every request: the orders sidecar is told to stop using it.
    let fault = http_client
        .post(format!(
            "http://127.0.0.1:{control}/fault/payments-2?error_rate=1"
        ))
        .send()
        .await
        .unwrap_or_else(|e| panic!("set a fault: {e}"));
    assert_eq!(fault.status(), 200);
    let orders_admin = base + 10 * 4 + 2;
    let payments_2 = format!("127.0.0.1:{}", base + 10 * 6);
    let ejected = eventually_within(Duration::from_secs(20), || async {
        let view = get_json(
            &http_client,
            format!("http://127.0.0.1:{orders_admin}/endpoints"),
        )
        .await?;
        let payments = view["upstreams"]
            .as_array()?
            .iter()
            .find(|upstream| upstream["name"] == "payments")?;
        let endpoint = payments["endpoints"]
            .as_array()?
            .iter()
            .find(|endpoint| endpoint["address"] == payments_2.as_str())?;
        (endpoint["fleet_ejected"] == true).then_some(())
    })
    .await;
    assert!(
        ejected.is_some(),
        "the fleet never ejected payments-2 within 20 s; demo log:\n{}",
        logs()
    );

    let unknown = http_client
        .post(format!(
            "http://127.0.0.1:{control}/fault/nobody?error_rate=1"
        ))
        .send()
        .await
        .unwrap_or_else(|e| panic!("set a fault: {e}"));
    assert_eq!(unknown.status(), 404);
}

/// GET `url` as JSON; `None` while the demo is not answering yet.
async fn get_json(client: &reqwest::Client, url: String) -> Option<serde_json::Value> {
    client.get(url).send().await.ok()?.json().await.ok()
}
