//! Crash safety: an acknowledged export is durable.
//!
//! Four concurrent gRPC clients stream exports of 64 spans each and record the span ids of every export the
//! collector acknowledged. The collector is killed with SIGKILL mid-stream (twice, restarting on the same
//! data directory each time), or stopped with SIGTERM; after the restart every acknowledged span must be
//! queryable exactly once.

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;
use tokio::task::JoinHandle;

const SERVICE: &str = "crash-stream";
const SPANS_PER_EXPORT: usize = 64;
const CLIENTS: usize = 4;
/// How long the clients stream before the collector is stopped.
const STREAM_FOR: Duration = Duration::from_millis(1500);

/// Concurrent exporters recording the span ids of acknowledged exports.
struct Streamer {
    acked: Arc<Mutex<Vec<String>>>,
    /// Errors before the collector was stopped, other than overload answers.
    unexpected: Arc<Mutex<Vec<String>>>,
    stopping: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Streamer {
    async fn start(collector: &Collector) -> Streamer {
        let acked = Arc::new(Mutex::new(Vec::new()));
        let unexpected = Arc::new(Mutex::new(Vec::new()));
        let stopping = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for _ in 0..CLIENTS {
            let mut client = collector.trace_client().await;
            let (acked, unexpected, stopping) =
                (acked.clone(), unexpected.clone(), stopping.clone());
            tasks.push(tokio::spawn(async move {
                // Bounded even if the collector never stops answering.
                let deadline = Instant::now() + Duration::from_secs(60);
                while Instant::now() < deadline {
                    let (request, _) = simple_trace_request(SERVICE, SPANS_PER_EXPORT);
                    let ids: Vec<String> = flatten_request(&request)
                        .iter()
                        .map(|r| hex::encode(&r.span.span_id))
                        .collect();
                    match client.export(request).await {
                        Ok(response) => {
                            let rejected = response
                                .into_inner()
                                .partial_success
                                .map_or(0, |p| p.rejected_spans);
                            if rejected == 0 {
                                acked.lock().expect("acked").extend(ids);
                            } else {
                                unexpected
                                    .lock()
                                    .expect("errors")
                                    .push(format!("{rejected} valid spans rejected"));
                            }
                        }
                        Err(_) if stopping.load(Ordering::SeqCst) => break,
                        Err(status) => {
                            let overload = matches!(
                                status.code(),
                                tonic::Code::ResourceExhausted | tonic::Code::Unavailable
                            );
                            if !overload {
                                unexpected
                                    .lock()
                                    .expect("errors")
                                    .push(format!("{status:?}"));
                            }
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                }
            }));
        }
        Streamer {
            acked,
            unexpected,
            stopping,
            tasks,
        }
    }

    /// Streams for [`STREAM_FOR`] (and at least until something was acknowledged), then announces the
    /// stop; the caller kills or stops the collector right after.
    async fn run_then_stop(&self) {
        tokio::time::sleep(STREAM_FOR).await;
        let acked = self.acked.clone();
        eventually("a first acknowledged export", || {
            let n = acked.lock().expect("acked").len();
            async move { (n > 0).then_some(()) }
        })
        .await;
        self.stopping.store(true, Ordering::SeqCst);
    }

    /// Waits for the clients to notice the stop; returns the acknowledged span ids.
    async fn finish(self) -> Vec<String> {
        for task in self.tasks {
            tokio::time::timeout(Duration::from_secs(90), task)
                .await
                .expect("streaming client did not stop")
                .expect("streaming client panicked");
        }
        let unexpected = self.unexpected.lock().expect("errors").clone();
        assert!(
            unexpected.is_empty(),
            "exports failed while the collector was up: {unexpected:?}"
        );
        let acked = self.acked.lock().expect("acked").clone();
        eprintln!("{} spans acknowledged", acked.len());
        acked
    }
}

/// Asserts that every acknowledged span is stored, and that no span is stored twice.
async fn assert_all_present_once(collector: &Collector, acked: &[String]) {
    // Wait until at least the acknowledged spans are visible (replay may still be finishing).
    let stored = eventually("replayed spans to be queryable", || async {
        let n = collector
            .sql_i64(&format!(
                "SELECT count(*) FROM spans WHERE service_name = '{SERVICE}'"
            ))
            .await;
        (n >= acked.len() as i64).then_some(n)
    })
    .await;

    let duplicates = collector
        .sql(
            "SELECT hex_id(span_id) AS id, count(*) AS n FROM spans \
             GROUP BY hex_id(span_id) HAVING count(*) > 1 LIMIT 20",
        )
        .await;
    assert!(
        duplicates.rows.is_empty(),
        "spans stored more than once (of {stored}): {:?}",
        duplicates.rows
    );

    // Read in sixteen parts, by the first hex digit of the id: one query's answer is capped at the
    // engine's 100,000 rows, and a fast machine acknowledges more spans than that over two cycles.
    let mut present: HashSet<String> = HashSet::new();
    for digit in "0123456789abcdef".chars() {
        let result = collector
            .sql(&format!(
                "SELECT hex_id(span_id) AS id FROM spans \
                 WHERE service_name = '{SERVICE}' AND starts_with(hex_id(span_id), '{digit}')"
            ))
            .await;
        present.extend(
            result
                .rows
                .iter()
                .filter_map(|row| row.get("id").and_then(Value::as_str))
                .map(str::to_owned),
        );
    }
    let missing: Vec<&String> = acked
        .iter()
        .filter(|id| !present.contains(id.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged spans are missing after restart, e.g. {:?}",
        missing.len(),
        acked.len(),
        &missing[..missing.len().min(5)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_stream_loses_no_acknowledged_span() {
    let mut collector = Collector::start("crash-sigkill").await;
    let mut acked = Vec::new();
    for cycle in 1..=2 {
        let streamer = Streamer::start(&collector).await;
        streamer.run_then_stop().await;
        collector.sigkill();
        acked.extend(streamer.finish().await);

        collector.restart().await;
        assert_all_present_once(&collector, &acked).await;
        eprintln!(
            "cycle {cycle}: {} acknowledged spans all present once",
            acked.len()
        );
    }
    // Still accepting after two crashes.
    let (request, trace_id) = simple_trace_request("after-crash", 3);
    collector.export_grpc(request).await;
    collector.wait_for_trace(&hex::encode(trace_id), 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_stream_exits_zero_and_keeps_every_acknowledged_span() {
    let mut collector = Collector::start("crash-sigterm-stream").await;
    let streamer = Streamer::start(&collector).await;
    streamer.run_then_stop().await;
    let status = collector.sigterm().await;
    let acked = streamer.finish().await;
    assert!(
        status.success(),
        "collector exited with {status} on SIGTERM"
    );

    collector.restart().await;
    assert_all_present_once(&collector, &acked).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_when_idle_exits_zero_and_data_survives_restart() {
    let mut collector = Collector::start("crash-sigterm-idle").await;
    let (request, trace_id) = simple_trace_request("idle-service", 10);
    let sent = flatten_request(&request);
    collector.export_grpc(request).await;
    let trace_hex = hex::encode(&trace_id);
    collector.wait_for_trace(&trace_hex, 10).await;

    let status = collector.sigterm().await;
    assert!(
        status.success(),
        "collector exited with {status} on SIGTERM"
    );

    collector.restart().await;
    let view = collector.wait_for_trace(&trace_hex, 10).await;
    assert_trace_matches(&view, &sent);
    collector
        .wait_for_i64(
            "SELECT count(*) FROM spans WHERE service_name = 'idle-service'",
            10,
        )
        .await;
}

/// Whether a Parquet file exists anywhere under `dir`.
fn has_parquet_file(dir: &std::path::Path) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    entries.flatten().any(|entry| {
        let path = entry.path();
        if path.is_dir() {
            has_parquet_file(&path)
        } else {
            path.extension().is_some_and(|e| e == "parquet")
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flushed_and_unflushed_spans_are_queried_together_and_replayed_once() {
    let mut collector = Collector::start_with("crash-flush", &["--flush-interval", "1s"]).await;
    let (first, _) = simple_trace_request(SERVICE, 10);
    let mut acked: Vec<String> = flatten_request(&first)
        .iter()
        .map(|r| hex::encode(&r.span.span_id))
        .collect();
    collector.export_grpc(first).await;
    let data_dir = collector.data_dir();
    eventually_within(Duration::from_secs(20), || {
        let found = has_parquet_file(&data_dir);
        async move { found.then_some(()) }
    })
    .await
    .expect("a Parquet file in the data directory after --flush-interval 1s");

    // Right after a flush, the next spans are in the memtable (and WAL) only.
    let (second, _) = simple_trace_request(SERVICE, 10);
    acked.extend(
        flatten_request(&second)
            .iter()
            .map(|r| hex::encode(&r.span.span_id)),
    );
    collector.export_grpc(second).await;
    assert_all_present_once(&collector, &acked).await;

    collector.sigkill();
    collector.restart().await;
    assert_all_present_once(&collector, &acked).await;
    assert_eq!(
        collector
            .sql_i64(&format!(
                "SELECT count(*) FROM spans WHERE service_name = '{SERVICE}'"
            ))
            .await,
        20,
        "replaying the WAL must not duplicate spans already flushed to Parquet"
    );
}
