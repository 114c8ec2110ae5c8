//! The SQL console: example queries, the result as a table, errors inline, CSV download, and a line
//! chart when the result has a time column and numeric columns. `sql.js` keeps a history of queries in
//! the browser's localStorage.

use std::sync::Arc;

use askama::Template;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Float64Type, Int64Type};
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use meshscope_query::{QueryEngine, QueryResult};
use serde::Deserialize;

use crate::error::ApiError;
use crate::format;
use crate::svg::{self, Scale, Tick};
use crate::ui::page::{Page, PageResult};

/// Rows shown on the page; the CSV download has them all.
const SHOWN_ROWS: usize = 1_000;
/// Series drawn at most.
const MAX_SERIES: usize = 6;
const CHART: (f64, f64) = (900.0, 240.0);
const CHART_LEFT: f64 = 70.0;
const CHART_BOTTOM: f64 = 22.0;

/// Queries offered as starting points: label and SQL.
const EXAMPLES: [(&str, &str); 5] = [
    (
        "Slowest spans of the last hour",
        "SELECT service_name, name, duration_ns / 1e6 AS ms, hex_id(trace_id) AS trace\nFROM spans\nWHERE start_time > now() - INTERVAL '1 hour'\nORDER BY duration_ns DESC\nLIMIT 20",
    ),
    (
        "Requests and errors per minute",
        "SELECT date_bin(INTERVAL '1 minute', start_time, TIMESTAMP '1970-01-01T00:00:00Z') AS minute,\n       count(*) AS requests,\n       sum(CASE WHEN status_code = 'error' THEN 1 ELSE 0 END) AS errors\nFROM spans\nWHERE start_time > now() - INTERVAL '1 hour'\nGROUP BY 1 ORDER BY 1",
    ),
    (
        "p99 latency per service",
        "SELECT service_name,\n       approx_percentile_cont(0.99) WITHIN GROUP (ORDER BY duration_ns) / 1e6 AS p99_ms,\n       count(*) AS spans\nFROM spans\nGROUP BY service_name ORDER BY p99_ms DESC",
    ),
    (
        "HTTP 5xx by route",
        "SELECT service_name, http_route, count(*) AS failures\nFROM spans\nWHERE http_response_status_code >= 500\nGROUP BY 1, 2 ORDER BY failures DESC",
    ),
    (
        "Columns of the spans table",
        "SELECT column_name, data_type\nFROM information_schema.columns\nWHERE table_name = 'spans'",
    ),
];

/// `?q=` on the console and the CSV download.
#[derive(Debug, Default, Deserialize)]
pub struct SqlParam {
    /// The statement.
    pub q: Option<String>,
}

/// One plotted column.
pub struct Series {
    name: String,
    points: String,
}

/// The chart of a result with a time column.
pub struct Chart {
    time_column: String,
    series: Vec<Series>,
    x_ticks: Vec<Tick>,
    y_ticks: Vec<Tick>,
}

/// The console page.
#[derive(Template)]
#[template(path = "sql.html")]
pub struct SqlPage {
    nav: &'static str,
    query: String,
    examples: Vec<(&'static str, &'static str)>,
    columns: Vec<String>,
    rows: Vec<Vec<String>>,
    total_rows: usize,
    truncated: bool,
    error: Option<String>,
    chart: Option<Chart>,
    chart_size: (f64, f64),
    chart_left: f64,
    ran: bool,
}

/// `GET /sql?q=…`: the console, with the result of `q` when given.
pub async fn console(
    State(engine): State<Arc<QueryEngine>>,
    Query(param): Query<SqlParam>,
) -> PageResult<SqlPage> {
    let query = param.q.unwrap_or_default();
    let mut page = SqlPage {
        nav: "sql",
        examples: EXAMPLES.to_vec(),
        columns: Vec::new(),
        rows: Vec::new(),
        total_rows: 0,
        truncated: false,
        error: None,
        chart: None,
        chart_size: CHART,
        chart_left: CHART_LEFT,
        ran: !query.trim().is_empty(),
        query,
    };
    if page.ran {
        match engine.sql(&page.query).await {
            Ok(result) => fill(&mut page, &result),
            Err(error) => page.error = Some(ApiError::from(error).message().to_owned()),
        }
    }
    Ok(Page(page))
}

/// `GET /sql/csv?q=…`: the whole result as a CSV file download.
pub async fn csv(
    State(engine): State<Arc<QueryEngine>>,
    Query(param): Query<SqlParam>,
) -> Result<Response, ApiError> {
    let query = param.q.unwrap_or_default();
    if query.trim().is_empty() {
        return Err(ApiError::bad_request("no SQL given"));
    }
    let result = engine.sql(&query).await?;
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"meshscope-query.csv\"",
            ),
        ],
        result.to_csv()?,
    )
        .into_response())
}

fn fill(page: &mut SqlPage, result: &QueryResult) {
    page.columns = result
        .schema
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    page.truncated = result.truncated;
    let options = FormatOptions::default().with_null("NULL");
    for batch in &result.batches {
        page.total_rows += batch.num_rows();
        let formatters: Result<Vec<_>, _> = batch
            .columns()
            .iter()
            .map(|column| ArrayFormatter::try_new(column.as_ref(), &options))
            .collect();
        let Ok(formatters) = formatters else {
            page.error = Some("a column of the result cannot be shown as text".to_owned());
            return;
        };
        for row in 0..batch.num_rows() {
            if page.rows.len() >= SHOWN_ROWS {
                break;
            }
            page.rows.push(
                formatters
                    .iter()
                    .map(|formatter| formatter.value(row).to_string())
                    .collect(),
            );
        }
    }
    page.chart = chart(result);
}

/// A line per numeric column over the first timestamp column, when the result has both.
fn chart(result: &QueryResult) -> Option<Chart> {
    let fields = result.schema.fields();
    let time = fields
        .iter()
        .position(|f| matches!(f.data_type(), DataType::Timestamp(_, _)))?;
    let numeric: Vec<usize> = fields
        .iter()
        .enumerate()
        .filter(|(_, f)| f.data_type().is_numeric())
        .map(|(i, _)| i)
        .take(MAX_SERIES)
        .collect();
    if numeric.is_empty() {
        return None;
    }
    let mut points: Vec<Vec<(f64, f64)>> = vec![Vec::new(); numeric.len()];
    for batch in &result.batches {
        let times = cast(batch.column(time), &DataType::Int64).ok()?;
        let times = times.as_primitive::<Int64Type>();
        for (slot, &column) in numeric.iter().enumerate() {
            let values = cast(batch.column(column), &DataType::Float64).ok()?;
            let values = values.as_primitive::<Float64Type>();
            for row in 0..batch.num_rows() {
                if times.is_valid(row) && values.is_valid(row) {
                    points[slot].push((times.value(row) as f64, values.value(row)));
                }
            }
        }
    }
    let all = points.iter().flatten();
    let (mut t0, mut t1, mut top) = (f64::MAX, f64::MIN, 0.0_f64);
    for (t, v) in all {
        t0 = t0.min(*t);
        t1 = t1.max(*t);
        top = top.max(*v);
    }
    if t0 > t1 {
        return None;
    }
    // The time column's unit: seconds, milli-, micro- or nanoseconds, as Arrow casts it to Int64.
    let to_ns = match fields[time].data_type() {
        DataType::Timestamp(unit, _) => match unit {
            datafusion::arrow::datatypes::TimeUnit::Second => 1e9,
            datafusion::arrow::datatypes::TimeUnit::Millisecond => 1e6,
            datafusion::arrow::datatypes::TimeUnit::Microsecond => 1e3,
            datafusion::arrow::datatypes::TimeUnit::Nanosecond => 1.0,
        },
        _ => 1.0,
    };
    let x = Scale::new((t0, t1), (CHART_LEFT + 6.0, CHART.0 - 40.0));
    let y = Scale::new(
        (0.0, top.max(f64::MIN_POSITIVE)),
        (CHART.1 - CHART_BOTTOM - 4.0, 8.0),
    );
    Some(Chart {
        time_column: fields[time].name().clone(),
        series: numeric
            .iter()
            .zip(points.iter_mut())
            .map(|(&column, line)| {
                line.sort_by(|a, b| a.0.total_cmp(&b.0));
                Series {
                    name: fields[column].name().clone(),
                    points: svg::polyline_xy(line, x, y),
                }
            })
            .collect(),
        x_ticks: x.ticks(5, |t| format::clock((t * to_ns) as i64)),
        y_ticks: y.ticks(4, format::significant),
    })
}
