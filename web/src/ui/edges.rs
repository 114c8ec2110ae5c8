//! The call graph of a window, derived with SQL from parent/child spans (not from the `service_edges`
//! view, whose per-10 s quantiles cannot give an arbitrary window's p95; docs/ui.md): an edge wherever
//! a span's parent belongs to another service, plus edges from virtual
//! nodes — `user` for server spans nobody instrumented called, and a database or remote peer (from
//! `db.system` / `peer.service`) for client spans that no instrumented service answered.

use meshscope_query::QueryEngine;

use crate::error::ApiError;
use crate::format;
use crate::rows::{self, num_of, str_of};
use crate::window::Window;

/// Name of the virtual node standing for callers that are not instrumented.
pub const USER_NODE: &str = "user";

/// One caller → callee edge with its figures.
#[derive(Debug, Clone, PartialEq)]
pub struct Edge {
    /// Calling service (or [`USER_NODE`]).
    pub caller: String,
    /// Called service, database or peer.
    pub callee: String,
    /// True when the caller is not an instrumented service.
    pub virtual_caller: bool,
    /// True when the callee is not an instrumented service.
    pub virtual_callee: bool,
    /// Calls in the window.
    pub calls: f64,
    /// Failed calls.
    pub errors: f64,
    /// 95th percentile duration, nanoseconds.
    pub p95_ns: f64,
}

impl Edge {
    /// Share of calls that failed.
    pub fn error_share(&self) -> f64 {
        self.errors / self.calls.max(1.0)
    }

    /// `12/s · 0.5% · p95 3 ms`, the label printed on the graph.
    pub fn label(&self, window: &Window) -> String {
        format!(
            "{} · {} · p95 {}",
            format::rate(self.calls / window.seconds as f64),
            format::percent(self.error_share()),
            format::duration(self.p95_ns)
        )
    }
}

const FIGURES: &str = "count(*) AS calls, \
    sum(CASE WHEN c.status_code = 'error' THEN 1 ELSE 0 END) AS errors, \
    approx_percentile_cont(0.95) WITHIN GROUP (ORDER BY c.duration_ns) AS p95";

/// Every edge of the window. Parents may have started before the window: they are looked up in the
/// hour before it too.
pub async fn edges(engine: &QueryEngine, window: &Window) -> Result<Vec<Edge>, ApiError> {
    let params = || {
        vec![
            rows::timestamp(window.start_ns()),
            rows::timestamp(window.end_ns),
            rows::timestamp(window.start_ns() - 3_600_000_000_000),
        ]
    };
    let services = format!(
        "SELECT p.service_name AS caller, c.service_name AS callee, {FIGURES} \
         FROM spans c JOIN spans p ON c.trace_id = p.trace_id AND c.parent_span_id = p.span_id \
         WHERE c.start_time >= $1 AND c.start_time < $2 AND p.start_time >= $3 \
         AND c.service_name IS NOT NULL AND p.service_name IS NOT NULL \
         AND c.service_name <> p.service_name GROUP BY 1, 2"
    );
    let uninstrumented_callers = format!(
        "SELECT c.service_name AS callee, {FIGURES} \
         FROM spans c LEFT JOIN spans p ON c.trace_id = p.trace_id AND c.parent_span_id = p.span_id \
         AND p.start_time >= $3 \
         WHERE c.start_time >= $1 AND c.start_time < $2 AND c.kind IN ('server', 'consumer') \
         AND c.service_name IS NOT NULL AND p.span_id IS NULL GROUP BY 1"
    );
    let uninstrumented_callees = format!(
        "SELECT c.service_name AS caller, COALESCE(c.peer_service, c.db_system) AS callee, {FIGURES} \
         FROM spans c LEFT JOIN spans k ON k.trace_id = c.trace_id AND k.parent_span_id = c.span_id \
         AND k.start_time >= $3 \
         WHERE c.start_time >= $1 AND c.start_time < $2 AND c.kind IN ('client', 'producer') \
         AND (c.peer_service IS NOT NULL OR c.db_system IS NOT NULL) \
         AND c.service_name IS NOT NULL AND k.span_id IS NULL GROUP BY 1, 2"
    );
    let edge =
        |row: &rows::Row, caller: String, callee: String, virtual_caller, virtual_callee| Edge {
            caller,
            callee,
            virtual_caller,
            virtual_callee,
            calls: num_of(row, "calls"),
            errors: num_of(row, "errors"),
            p95_ns: num_of(row, "p95"),
        };
    let mut all = Vec::new();
    for row in rows::query(engine, &services, params()).await? {
        all.push(edge(
            &row,
            str_of(&row, "caller"),
            str_of(&row, "callee"),
            false,
            false,
        ));
    }
    for row in rows::query(engine, &uninstrumented_callers, params()).await? {
        all.push(edge(
            &row,
            USER_NODE.to_owned(),
            str_of(&row, "callee"),
            true,
            false,
        ));
    }
    for row in rows::query(engine, &uninstrumented_callees, params()).await? {
        all.push(edge(
            &row,
            str_of(&row, "caller"),
            str_of(&row, "callee"),
            false,
            true,
        ));
    }
    all.sort_by(|a, b| (&a.caller, &a.callee).cmp(&(&b.caller, &b.callee)));
    Ok(all)
}
