//! The trace view: waterfall with a collapsible span tree, critical path, per-service colours,
//! statistics, and span details that `trace.js` fills from the trace's JSON on click. A large trace
//! has only its first rows in the HTML; the others travel as compact JSON that `trace.js` draws.

use std::sync::Arc;

use askama::Template;
use axum::extract::{Path, State};
use meshscope_query::QueryEngine;

use crate::error::ApiError;
use crate::format;
use crate::svg::{Scale, Tick};
use crate::ui::page::{Page, PageResult};
use crate::ui::waterfall::{self, Waterfall};

/// Rows drawn into the HTML. A trace with more spans sends the rest as JSON (`waterfall::rows_json`)
/// for `trace.js` to draw after the first paint: 10,000 rows of markup take the browser over a second
/// to parse, and these fill a tall screen several times over.
const HTML_ROWS: usize = 400;

/// The trace page.
#[derive(Template)]
#[template(path = "trace.html")]
pub struct TracePage {
    nav: &'static str,
    trace_id: String,
    root: String,
    start: String,
    duration: String,
    /// Spans in the trace.
    spans: usize,
    /// The model, with only the rows the HTML holds.
    waterfall: Waterfall,
    /// The other rows as JSON, already safe inside a script element; empty when there are none.
    more_rows: String,
    ticks: Vec<Tick>,
}

/// `GET /trace/{trace_id}`: the whole trace.
pub async fn trace(
    State(engine): State<Arc<QueryEngine>>,
    Path(trace_id): Path<String>,
) -> PageResult<TracePage> {
    let id = hex::decode(trace_id.trim())
        .ok()
        .filter(|id| id.len() == 16)
        .ok_or_else(|| {
            ApiError::bad_request(format!("{trace_id:?} is not a trace id (32 hex digits)"))
        })?;
    let spans = engine.trace(&id).await?;
    let first = spans
        .first()
        .ok_or_else(|| ApiError::not_found(format!("no spans of trace {}", hex::encode(&id))))?;
    let root = format!(
        "{}: {}",
        waterfall::service_of(&first.stored.resource),
        first.stored.span.name
    );
    let mut waterfall = waterfall::layout(&waterfall::times(&spans));
    let spans = waterfall.rows.len();
    let more_rows = if spans > HTML_ROWS {
        let rest = waterfall.rows.split_off(HTML_ROWS);
        waterfall::rows_json(&rest, &waterfall.services)
    } else {
        String::new()
    };
    let duration = waterfall.duration_ns as f64;
    let ticks = Scale::new((0.0, duration), (0.0, 100.0)).ticks(5, format::duration);
    Ok(Page(TracePage {
        nav: "search",
        trace_id: hex::encode(&id),
        root,
        start: format::instant(waterfall.start),
        duration: format::duration(duration),
        spans,
        waterfall,
        more_rows,
        ticks,
    }))
}
