//! Views over the metric points the collector writes about itself: the service graph's edges and the RED
//! figures per operation, one row per 10-second window (see docs/schema.md).

use std::sync::Arc;

use datafusion::catalog::view::ViewTable;
use datafusion::prelude::SessionContext;

use crate::error::Result;

/// `service_edges`: one row per window and edge, from the `meshscope.graph.*` points.
const SERVICE_EDGES: &str = "
SELECT start_time AS window_start, time AS window_end,
       attr(attributes, 'client') AS client,
       attr(attributes, 'server') AS server,
       attr(attributes, 'connection_type') AS connection_type,
       sum(CASE WHEN metric_name = 'meshscope.graph.requests' THEN value_int END) AS requests,
       sum(CASE WHEN metric_name = 'meshscope.graph.failed_requests' THEN value_int END) AS failures,
       max(CASE WHEN metric_name = 'meshscope.graph.client_latency' THEN quantile_values[1] END) AS client_p50_ms,
       max(CASE WHEN metric_name = 'meshscope.graph.client_latency' THEN quantile_values[2] END) AS client_p95_ms,
       max(CASE WHEN metric_name = 'meshscope.graph.client_latency' THEN quantile_values[3] END) AS client_p99_ms,
       max(CASE WHEN metric_name = 'meshscope.graph.server_latency' THEN quantile_values[1] END) AS server_p50_ms,
       max(CASE WHEN metric_name = 'meshscope.graph.server_latency' THEN quantile_values[2] END) AS server_p95_ms,
       max(CASE WHEN metric_name = 'meshscope.graph.server_latency' THEN quantile_values[3] END) AS server_p99_ms
FROM metric_points
WHERE service_name = 'meshscope-collector' AND metric_name LIKE 'meshscope.graph.%'
GROUP BY 1, 2, 3, 4, 5";

/// `red_metrics`: one row per window, service and operation, from the `meshscope.red.*` points.
const RED_METRICS: &str = "
SELECT start_time AS window_start, time AS window_end,
       attr(attributes, 'service') AS service,
       attr(attributes, 'operation') AS operation,
       sum(CASE WHEN metric_name = 'meshscope.red.requests' THEN value_int END) AS requests,
       sum(CASE WHEN metric_name = 'meshscope.red.errors' THEN value_int END) AS errors,
       max(CASE WHEN metric_name = 'meshscope.red.duration' THEN quantile_values[1] END) AS p50_ms,
       max(CASE WHEN metric_name = 'meshscope.red.duration' THEN quantile_values[2] END) AS p95_ms,
       max(CASE WHEN metric_name = 'meshscope.red.duration' THEN quantile_values[3] END) AS p99_ms
FROM metric_points
WHERE service_name = 'meshscope-collector' AND metric_name LIKE 'meshscope.red.%'
GROUP BY 1, 2, 3, 4";

/// Registers the views on `ctx` (after the tables and `attr` they read).
pub(crate) fn register(ctx: &SessionContext) -> Result<()> {
    for (name, sql) in [
        ("service_edges", SERVICE_EDGES),
        ("red_metrics", RED_METRICS),
    ] {
        // Planning reads only schemas (no data), so it completes without waiting on anything.
        let plan = futures::executor::block_on(ctx.state().create_logical_plan(sql))?;
        ctx.register_table(name, Arc::new(ViewTable::new(plan, Some(sql.to_owned()))))?;
    }
    Ok(())
}
