//! The trace view: waterfall with a collapsible span tree, critical path, per-service colours,
//! statistics, and span details that `trace.js` fills from the trace's JSON on click. The HTML holds
//! the first screen of rows; every row also travels as compact JSON, from which `trace.js` draws only
//! the rows in view (a virtual list), so a trace of any size is whole and usable at once.

use std::sync::Arc;

use askama::Template;
use axum::extract::{Path, State};
use meshscope_query::QueryEngine;

use crate::error::ApiError;
use crate::format;
use crate::svg::{Scale, Tick};
use crate::ui::page::{Page, PageResult};
use crate::ui::waterfall::{self, Waterfall};

/// Rows drawn into the HTML: the first screen, painted before any script runs, and the whole trace
/// when it is this small and scripts are off. `trace.js` replaces them with its virtual list.
const HTML_ROWS: usize = 150;

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
    /// Every row as JSON (`waterfall::rows_json`), already safe inside a script element.
    rows_json: String,
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
    let rows_json = waterfall::rows_json(&waterfall.rows, &waterfall.services);
    waterfall.rows.truncate(HTML_ROWS);
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
        rows_json,
        ticks,
    }))
}
