//! The streaming service graph and RED metrics: every acknowledged span batch is read once, calls are
//! paired across services (caller's CLIENT/PRODUCER span with the callee's SERVER/CONSUMER child), and
//! per 10-second window the collector keeps, for each edge, requests, failures and client- and
//! server-side latency sketches, and for each (service, operation), requests, errors and a duration sketch.
//!
//! Closed windows are written back into the store as OTLP metric points of the service
//! `meshscope-collector` (the same WAL and Parquet path as any export, so they are durable), which the
//! query engine shows as the `service_edges` and `red_metrics` views. Cumulative counters are served live
//! on the collector's `/metrics`.

mod emit;
pub(crate) mod pairing;

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use meshscope_proto::collector::metrics::v1::ExportMetricsServiceRequest;
use meshscope_storage::RecordBatch;

use crate::fleet::window::Evidence;
use crate::span_rows::SpanRows;
use pairing::{CallKey, Half, Outcome, Peer, Pending};

/// The node name of callers that sent no span of their own.
pub const UNINSTRUMENTED_CALLER: &str = "user";

/// Settings of the graph.
#[derive(Debug, Clone)]
pub struct GraphOptions {
    /// Length of one aggregation window.
    pub window: Duration,
    /// How long a half waits for its partner, and a window for late pairs, before it is closed.
    pub pairing_wait: Duration,
    /// Most calls waiting for their partner; further halves are dropped and counted.
    pub max_pending: usize,
    /// Most distinct edges and (service, operation) series kept; further ones are counted as dropped.
    pub max_series: usize,
}

impl Default for GraphOptions {
    fn default() -> Self {
        GraphOptions {
            window: Duration::from_secs(10),
            pairing_wait: Duration::from_secs(10),
            max_pending: 500_000,
            max_series: 10_000,
        }
    }
}

/// An edge of the graph.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct EdgeKey {
    pub(crate) client: String,
    pub(crate) server: String,
    /// Empty for request/response, `messaging`, `database` or `virtual` otherwise.
    pub(crate) connection_type: &'static str,
}

/// One window's figures of one edge.
#[derive(Default, Clone)]
pub(crate) struct EdgeWindow {
    /// Requests and failures with the caller's latency.
    pub(crate) client: Evidence,
    /// The callee's latency (empty for virtual nodes).
    pub(crate) server: Evidence,
}

/// One window of both aggregates.
#[derive(Default)]
pub(crate) struct Window {
    pub(crate) edges: HashMap<EdgeKey, EdgeWindow>,
    pub(crate) operations: HashMap<(String, String), Evidence>,
}

/// Counters of what the graph did, shown on `/metrics`.
#[derive(Debug, Default)]
pub struct GraphCounters {
    /// Calls with both halves paired.
    pub paired: AtomicU64,
    /// Halves whose partner never came within the pairing wait.
    pub expired: AtomicU64,
    /// Halves dropped because the pending table was full.
    pub dropped_pending: AtomicU64,
    /// Calls or operations dropped because the series cap was reached.
    pub dropped_series: AtomicU64,
    /// Calls whose window had already been closed.
    pub late: AtomicU64,
}

struct State {
    pending: Pending,
    /// Open windows by start second.
    windows: BTreeMap<i64, Window>,
    /// Cumulative (requests, failures) per edge since start, for `/metrics`.
    edge_totals: HashMap<EdgeKey, (u64, u64)>,
    /// Cumulative (requests, errors) per (service, operation) since start.
    operation_totals: HashMap<(String, String), (u64, u64)>,
    /// Windows starting before this second are closed.
    closed_before: i64,
}

/// The streaming service graph and RED aggregation.
pub struct ServiceGraph {
    options: GraphOptions,
    state: Mutex<State>,
    /// What pairing did.
    pub counters: GraphCounters,
}

impl ServiceGraph {
    /// An empty graph.
    pub fn new(options: GraphOptions) -> ServiceGraph {
        ServiceGraph {
            state: Mutex::new(State {
                pending: Pending::new(options.max_pending),
                windows: BTreeMap::new(),
                edge_totals: HashMap::new(),
                operation_totals: HashMap::new(),
                closed_before: i64::MIN,
            }),
            options,
            counters: GraphCounters::default(),
        }
    }

    /// Reads one acknowledged batch of `spans` rows; `now_ms` is the arrival time (Unix ms).
    pub fn observe(&self, batch: &RecordBatch, now_ms: u64) {
        let Some(rows) = SpanRows::of(batch) else {
            return;
        };
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        for row in 0..batch.num_rows() {
            let Some(service) = rows.service(row) else {
                continue;
            };
            let kind = rows.kind.value(row);
            let half = Half {
                service: service.to_owned(),
                failed: rows.failed(row),
                latency_ms: rows.duration.value(row) as f64 / 1e6,
                second: rows.end.value(row).div_euclid(1_000_000_000),
                peer: None,
                messaging: matches!(kind, "producer" | "consumer"),
                fallback: kind == "unspecified",
            };
            match kind {
                "server" | "consumer" => {
                    self.record_operation(&mut state, &half, rows.name.value(row));
                    match rows.key(row, true) {
                        Some(key) => self.file(&mut state, key, false, half, now_ms),
                        None => self.record_from_user(&mut state, &half),
                    }
                }
                "client" | "producer" => {
                    let Some(key) = rows.key(row, false) else {
                        continue;
                    };
                    let half = Half {
                        peer: rows.peer(row),
                        ..half
                    };
                    self.file(&mut state, key, true, half, now_ms);
                }
                // No kind: the parent/child fallback files the span as a possible callee of its
                // parent and a possible caller of its children.
                "unspecified" => {
                    if let Some(key) = rows.key(row, true) {
                        self.file(&mut state, key, false, half.clone(), now_ms);
                    }
                    if let Some(key) = rows.key(row, false) {
                        self.file(&mut state, key, true, half, now_ms);
                    }
                }
                _ => {}
            }
        }
    }

    fn file(&self, state: &mut State, key: CallKey, is_client: bool, half: Half, now_ms: u64) {
        match state.pending.insert(key, is_client, half, now_ms) {
            Ok(Some(outcome)) => self.settle(state, outcome),
            Ok(None) => {}
            Err(_) => {
                self.counters
                    .dropped_pending
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn settle(&self, state: &mut State, outcome: Outcome) {
        match outcome {
            Outcome::Paired { client, server } => {
                if (client.fallback || server.fallback) && client.service == server.service {
                    return;
                }
                self.counters.paired.fetch_add(1, Ordering::Relaxed);
                let key = EdgeKey {
                    client: client.service.clone(),
                    server: server.service.clone(),
                    connection_type: if client.messaging { "messaging" } else { "" },
                };
                self.record_edge(state, key, &client, Some(&server));
            }
            Outcome::LoneClient(client) | Outcome::LoneServer(client) if client.fallback => {}
            Outcome::LoneClient(client) => {
                self.counters.expired.fetch_add(1, Ordering::Relaxed);
                if let Some(Peer { name, kind }) = client.peer.clone() {
                    let key = EdgeKey {
                        client: client.service.clone(),
                        server: name,
                        connection_type: kind,
                    };
                    self.record_edge(state, key, &client, None);
                }
            }
            Outcome::LoneServer(server) => {
                self.counters.expired.fetch_add(1, Ordering::Relaxed);
                self.record_from_user(state, &server);
            }
        }
    }

    /// Counts one call on the edge `key` in the window of `caller` (whose latency and end time it
    /// takes); `callee` adds the server-side latency when the callee reported.
    fn record_edge(&self, state: &mut State, key: EdgeKey, caller: &Half, callee: Option<&Half>) {
        let failed = caller.failed || callee.is_some_and(|callee| callee.failed);
        let Some(window) = self.window(state, caller.second) else {
            return;
        };
        let Some(figures) = self.series(&mut window.edges, key.clone()) else {
            return;
        };
        figures.client.add(failed, caller.latency_ms);
        if let Some(callee) = callee {
            figures.server.add(callee.failed, callee.latency_ms);
        }
        self.count_total(&mut state.edge_totals, key, failed);
    }

    /// A call into `server` from a caller that sent no span: the edge from the virtual node `user`,
    /// timed by the callee on both sides.
    fn record_from_user(&self, state: &mut State, server: &Half) {
        let key = EdgeKey {
            client: UNINSTRUMENTED_CALLER.into(),
            server: server.service.clone(),
            connection_type: "",
        };
        self.record_edge(state, key, server, Some(server));
    }

    fn record_operation(&self, state: &mut State, half: &Half, operation: &str) {
        let Some(window) = self.window(state, half.second) else {
            return;
        };
        let key = (half.service.clone(), operation.to_owned());
        let Some(figures) = self.series(&mut window.operations, key.clone()) else {
            return;
        };
        figures.add(half.failed, half.latency_ms);
        self.count_total(&mut state.operation_totals, key, half.failed);
    }

    /// The figures of series `key` in `map`, or `None` (counted as dropped) when `map` already holds
    /// `max_series` other series.
    fn series<'m, K: std::hash::Hash + Eq, V: Default>(
        &self,
        map: &'m mut HashMap<K, V>,
        key: K,
    ) -> Option<&'m mut V> {
        if !map.contains_key(&key) && map.len() >= self.options.max_series {
            self.counters.dropped_series.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        Some(map.entry(key).or_default())
    }

    fn count_total<K: std::hash::Hash + Eq>(
        &self,
        totals: &mut HashMap<K, (u64, u64)>,
        key: K,
        failed: bool,
    ) {
        if !totals.contains_key(&key) && totals.len() >= self.options.max_series {
            return;
        }
        let total = totals.entry(key).or_default();
        total.0 += 1;
        total.1 += u64::from(failed);
    }

    /// The open window holding `second`, or `None` (counted as late) when it was closed already.
    fn window<'s>(&self, state: &'s mut State, second: i64) -> Option<&'s mut Window> {
        let length = self.options.window.as_secs().max(1) as i64;
        let start = second - second.rem_euclid(length);
        if start < state.closed_before {
            self.counters.late.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        Some(state.windows.entry(start).or_default())
    }

    /// Expires unpaired halves and closes the windows that can no longer change at `now_ms` (Unix
    /// ms); returns their figures as metric points to store, or `None` when nothing closed.
    pub fn tick(&self, now_ms: u64) -> Option<ExportMetricsServiceRequest> {
        let wait_ms = self.options.pairing_wait.as_millis() as u64;
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        for outcome in state.pending.expire(now_ms.saturating_sub(wait_ms)) {
            self.settle(&mut state, outcome);
        }
        let length = self.options.window.as_secs().max(1) as i64;
        // A window closes once its end is older than twice the pairing wait: a half may wait that
        // long, and its partner may have ended up to one wait earlier.
        let close_before = (now_ms.saturating_sub(2 * wait_ms) / 1000) as i64 - length;
        let open = state.windows.split_off(&(close_before + 1));
        let closed = std::mem::replace(&mut state.windows, open);
        state.closed_before = state.closed_before.max(close_before + 1);
        if closed.is_empty() {
            return None;
        }
        Some(emit::metric_points(&closed, length))
    }

    /// Live cumulative counters in Prometheus text format.
    pub fn render_metrics(&self) -> String {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        emit::prometheus(
            &state.edge_totals,
            &state.operation_totals,
            state.pending.len(),
            &self.counters,
        )
    }
}
