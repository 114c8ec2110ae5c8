//! Rate, errors and duration ("RED") per group of spans over a window, with a sparkline of the rate:
//! the figures of the services overview and of a service's operations.

use std::collections::HashMap;

use datafusion::common::ScalarValue;
use meshscope_query::QueryEngine;

use crate::error::ApiError;
use crate::format;
use crate::rows::{self, num_of, str_of};
use crate::svg;
use crate::window::{BUCKETS, Window};

/// Spans that stand for a request into a service: server and consumer spans, and roots.
pub const ENTRY_SPANS: &str = "(kind IN ('server', 'consumer') OR parent_span_id IS NULL)";

/// Width and height of a sparkline, SVG user units.
pub const SPARK_SIZE: (f64, f64) = (120.0, 24.0);

/// The figures of one group, ready to print.
#[derive(Debug, Clone)]
pub struct Red {
    /// Service or operation name.
    pub name: String,
    /// Spans in the window.
    pub calls: i64,
    /// Calls per second.
    pub rate: String,
    /// Share of calls with status error, as text.
    pub errors: String,
    /// `ok`, `warn` or `bad`.
    pub health: &'static str,
    /// Median duration.
    pub p50: String,
    /// 95th percentile duration.
    pub p95: String,
    /// 99th percentile duration.
    pub p99: String,
    /// Polyline points of calls per bucket over the window.
    pub sparkline: String,
}

/// What to group and filter: `group` and `filter` are SQL written here, never user text; user values
/// go in `params`, bound from `$3` on (`$1`, `$2` are the window's ends).
pub struct RedQuery<'a> {
    /// The grouping column.
    pub group: &'a str,
    /// Extra `WHERE` conjuncts.
    pub filter: &'a str,
    /// Values for `$3…`.
    pub params: Vec<ScalarValue>,
}

/// The figures of each group over `window`, sorted by name.
pub async fn red(
    engine: &QueryEngine,
    window: &Window,
    query: RedQuery<'_>,
) -> Result<Vec<Red>, ApiError> {
    let RedQuery {
        group,
        filter,
        params,
    } = query;
    let mut bound = vec![
        rows::timestamp(window.start_ns()),
        rows::timestamp(window.end_ns),
    ];
    bound.extend(params);
    let scope = format!(
        "FROM spans WHERE start_time >= $1 AND start_time < $2 AND {group} IS NOT NULL AND {filter}"
    );
    let totals = rows::query(
        engine,
        &format!(
            "SELECT {group} AS name, count(*) AS calls, \
             sum(CASE WHEN status_code = 'error' THEN 1 ELSE 0 END) AS errors, \
             approx_percentile_cont(0.5) WITHIN GROUP (ORDER BY duration_ns) AS p50, \
             approx_percentile_cont(0.95) WITHIN GROUP (ORDER BY duration_ns) AS p95, \
             approx_percentile_cont(0.99) WITHIN GROUP (ORDER BY duration_ns) AS p99 \
             {scope} GROUP BY {group} ORDER BY {group}"
        ),
        bound.clone(),
    )
    .await?;
    let bucket = window.bucket_seconds();
    let series = rows::query(
        engine,
        &format!(
            "SELECT {group} AS name, \
             CAST(date_bin(INTERVAL '{bucket} seconds', start_time, TIMESTAMP '1970-01-01T00:00:00Z') AS BIGINT) AS bucket, \
             count(*) AS calls {scope} GROUP BY 1, 2"
        ),
        bound,
    )
    .await?;
    let first_bucket = window.start_ns() / (bucket * 1_000_000_000);
    let mut counts: HashMap<String, Vec<f64>> = HashMap::new();
    for row in &series {
        let index = (num_of(row, "bucket") as i64 / (bucket * 1_000_000_000)) - first_bucket;
        let values = counts
            .entry(str_of(row, "name"))
            .or_insert_with(|| vec![0.0; BUCKETS as usize + 1]);
        if let Some(slot) = usize::try_from(index).ok().and_then(|i| values.get_mut(i)) {
            *slot += num_of(row, "calls");
        }
    }
    Ok(totals
        .iter()
        .map(|row| {
            let name = str_of(row, "name");
            let calls = num_of(row, "calls");
            let share = num_of(row, "errors") / calls.max(1.0);
            let values = counts.remove(&name).unwrap_or_default();
            Red {
                calls: calls as i64,
                rate: format::rate(calls / window.seconds as f64),
                errors: format::percent(share),
                health: format::health(share),
                p50: format::duration(num_of(row, "p50")),
                p95: format::duration(num_of(row, "p95")),
                p99: format::duration(num_of(row, "p99")),
                sparkline: svg::polyline(&values, SPARK_SIZE.0, SPARK_SIZE.1),
                name,
            }
        })
        .collect())
}
