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
mod pairing;

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use meshscope_proto::collector::metrics::v1::ExportMetricsServiceRequest;
use meshscope_storage::RecordBatch;
use meshscope_storage::arrow::array::{Array, AsArray};
use meshscope_storage::arrow::datatypes::{Int64Type, TimestampNanosecondType};

use crate::fleet::window::Evidence;
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
        let Some(rows) = Rows::of(batch) else {
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
                        None => self.record_edge(
                            &mut state,
                            UNINSTRUMENTED_CALLER.into(),
                            None,
                            Some(&half),
                            "",
                        ),
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
                let kind = if client.messaging { "messaging" } else { "" };
                self.record_edge(
                    state,
                    client.service.clone(),
                    Some(&client),
                    Some(&server),
                    kind,
                );
            }
            Outcome::LoneClient(client) | Outcome::LoneServer(client) if client.fallback => {}
            Outcome::LoneClient(client) => {
                self.counters.expired.fetch_add(1, Ordering::Relaxed);
                if let Some(Peer { name, kind }) = client.peer.clone() {
                    self.record_edge_to(state, client.service.clone(), name, &client, kind);
                }
            }
            Outcome::LoneServer(server) => {
                self.counters.expired.fetch_add(1, Ordering::Relaxed);
                self.record_edge(state, UNINSTRUMENTED_CALLER.into(), None, Some(&server), "");
            }
        }
    }

    /// An edge from `client` to the callee `server` (its service names the node).
    fn record_edge(
        &self,
        state: &mut State,
        client: String,
        caller: Option<&Half>,
        server: Option<&Half>,
        kind: &'static str,
    ) {
        let Some(callee) = server.or(caller) else {
            return;
        };
        let key = EdgeKey {
            client,
            server: callee.service.clone(),
            connection_type: kind,
        };
        let timing = caller.unwrap_or(callee);
        let failed = caller.is_some_and(|c| c.failed) || server.is_some_and(|s| s.failed);
        let Some(window) = self.window(state, timing.second) else {
            return;
        };
        if !window.edges.contains_key(&key) && window.edges.len() >= self.options.max_series {
            self.counters.dropped_series.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let figures = window.edges.entry(key.clone()).or_default();
        figures.client.add(failed, timing.latency_ms);
        if let Some(server) = server {
            figures.server.add(server.failed, server.latency_ms);
        }
        self.count_total(&mut state.edge_totals, key, failed);
    }

    /// An edge from `client` to a virtual node `server` no span of which arrived.
    fn record_edge_to(
        &self,
        state: &mut State,
        client: String,
        server: String,
        caller: &Half,
        kind: &'static str,
    ) {
        let Some(window) = self.window(state, caller.second) else {
            return;
        };
        let key = EdgeKey {
            client,
            server,
            connection_type: kind,
        };
        if !window.edges.contains_key(&key) && window.edges.len() >= self.options.max_series {
            self.counters.dropped_series.fetch_add(1, Ordering::Relaxed);
            return;
        }
        window
            .edges
            .entry(key.clone())
            .or_default()
            .client
            .add(caller.failed, caller.latency_ms);
        self.count_total(&mut state.edge_totals, key, caller.failed);
    }

    fn record_operation(&self, state: &mut State, half: &Half, operation: &str) {
        let Some(window) = self.window(state, half.second) else {
            return;
        };
        let key = (half.service.clone(), operation.to_owned());
        if !window.operations.contains_key(&key)
            && window.operations.len() >= self.options.max_series
        {
            self.counters.dropped_series.fetch_add(1, Ordering::Relaxed);
            return;
        }
        window
            .operations
            .entry(key.clone())
            .or_default()
            .add(half.failed, half.latency_ms);
        self.count_total(&mut state.operation_totals, key, half.failed);
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

/// The span columns the graph reads.
struct Rows<'a> {
    trace_id: &'a meshscope_storage::arrow::array::BinaryArray,
    span_id: &'a meshscope_storage::arrow::array::BinaryArray,
    parent: &'a meshscope_storage::arrow::array::BinaryArray,
    kind: &'a meshscope_storage::arrow::array::StringArray,
    service: &'a meshscope_storage::arrow::array::StringArray,
    name: &'a meshscope_storage::arrow::array::StringArray,
    status: &'a meshscope_storage::arrow::array::StringArray,
    http: &'a meshscope_storage::arrow::array::Int64Array,
    duration: &'a meshscope_storage::arrow::array::Int64Array,
    end: &'a meshscope_storage::arrow::array::TimestampNanosecondArray,
    peer_service: &'a meshscope_storage::arrow::array::StringArray,
    db_system: &'a meshscope_storage::arrow::array::StringArray,
    server_address: &'a meshscope_storage::arrow::array::StringArray,
}

impl<'a> Rows<'a> {
    fn of(batch: &'a RecordBatch) -> Option<Rows<'a>> {
        let column = |name: &str| batch.column_by_name(name);
        let text = |name: &str| column(name)?.as_string_opt::<i32>();
        let binary = |name: &str| column(name)?.as_binary_opt::<i32>();
        Some(Rows {
            trace_id: binary("trace_id")?,
            span_id: binary("span_id")?,
            parent: binary("parent_span_id")?,
            kind: text("kind")?,
            service: text("service_name")?,
            name: text("name")?,
            status: text("status_code")?,
            http: column("http_response_status_code")?.as_primitive_opt::<Int64Type>()?,
            duration: column("duration_ns")?.as_primitive_opt::<Int64Type>()?,
            end: column("end_time")?.as_primitive_opt::<TimestampNanosecondType>()?,
            peer_service: text("peer_service")?,
            db_system: text("db_system")?,
            server_address: text("server_address")?,
        })
    }

    fn service(&self, row: usize) -> Option<&'a str> {
        self.service.is_valid(row).then(|| self.service.value(row))
    }

    fn failed(&self, row: usize) -> bool {
        self.status.value(row) == "error"
            || (self.http.is_valid(row) && self.http.value(row) >= 500)
    }

    /// The call key: the span's own id for a caller, its parent's for a callee (`None` for a root).
    fn key(&self, row: usize, callee: bool) -> Option<CallKey> {
        let trace: [u8; 16] = self.trace_id.value(row).try_into().ok()?;
        let id = if callee {
            if self.parent.is_null(row) {
                return None;
            }
            self.parent.value(row)
        } else {
            self.span_id.value(row)
        };
        Some((trace, id.try_into().ok()?))
    }

    fn peer(&self, row: usize) -> Option<Peer> {
        let named = |column: &StringArrayRef<'a>| {
            (column.is_valid(row) && !column.value(row).is_empty())
                .then(|| column.value(row).to_owned())
        };
        if let Some(name) = named(&self.peer_service) {
            return Some(Peer {
                name,
                kind: "virtual",
            });
        }
        if let Some(name) = named(&self.db_system) {
            return Some(Peer {
                name,
                kind: "database",
            });
        }
        named(&self.server_address).map(|name| Peer {
            name,
            kind: "virtual",
        })
    }
}

type StringArrayRef<'a> = &'a meshscope_storage::arrow::array::StringArray;
