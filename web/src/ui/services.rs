//! The services overview (home page) and the page of one service: its operations, latency histogram,
//! callers and callees.

use std::sync::Arc;

use askama::Template;
use axum::extract::{Path, Query, State};
use meshscope_query::QueryEngine;

use crate::format;
use crate::rows::{self, num_of};
use crate::svg::{self, Bar};
use crate::ui::edges::{self, Edge};
use crate::ui::page::{Page, PageResult};
use crate::ui::red::{self, ENTRY_SPANS, Red, RedQuery, SPARK_SIZE};
use crate::window::{Window, WindowParam};

/// The home page.
#[derive(Template)]
#[template(path = "services.html")]
pub struct Overview {
    nav: &'static str,
    window: Window,
    windows: Vec<&'static str>,
    spark: (f64, f64),
    services: Vec<Red>,
    idle: Vec<String>,
}

/// `GET /`: every service with rate, error share and latency percentiles over the window.
pub async fn overview(
    State(engine): State<Arc<QueryEngine>>,
    Query(param): Query<WindowParam>,
) -> PageResult<Overview> {
    let window = Window::ending_now(param.window.as_deref());
    let services = red::red(
        &engine,
        &window,
        RedQuery {
            group: "service_name",
            filter: ENTRY_SPANS,
            params: vec![],
        },
    )
    .await?;
    let idle = engine
        .services()
        .await?
        .into_iter()
        .filter(|name| !services.iter().any(|red| &red.name == name))
        .collect();
    Ok(Page(Overview {
        nav: "services",
        window,
        windows: Window::choices(),
        spark: SPARK_SIZE,
        services,
        idle,
    }))
}

/// A neighbour in the call graph, with the figures of the calls between the two.
pub struct Neighbour {
    name: String,
    is_virtual: bool,
    label: String,
    health: &'static str,
}

/// One service's page.
#[derive(Template)]
#[template(path = "service.html")]
pub struct ServicePage {
    nav: &'static str,
    service: String,
    window: Window,
    windows: Vec<&'static str>,
    spark: (f64, f64),
    operations: Vec<Red>,
    histogram: Vec<Bar>,
    histogram_size: (f64, f64),
    callers: Vec<Neighbour>,
    callees: Vec<Neighbour>,
}

const HISTOGRAM_SIZE: (f64, f64) = (640.0, 180.0);

/// `GET /services/{service}`: operations with their figures, latency histogram, callers and callees.
pub async fn service(
    State(engine): State<Arc<QueryEngine>>,
    Path(service): Path<String>,
    Query(param): Query<WindowParam>,
) -> PageResult<ServicePage> {
    let window = Window::ending_now(param.window.as_deref());
    let operations = red::red(
        &engine,
        &window,
        RedQuery {
            group: "name",
            filter: "service_name = $3",
            params: vec![rows::text(&service)],
        },
    )
    .await?;
    let histogram = latency_histogram(&engine, &window, &service).await?;
    let edges = edges::edges(&engine, &window).await?;
    let neighbour = |edge: &Edge, name: &str, is_virtual: bool| Neighbour {
        name: name.to_owned(),
        is_virtual,
        label: edge.label(&window),
        health: format::health(edge.error_share()),
    };
    let callers = edges
        .iter()
        .filter(|edge| edge.callee == service && !edge.virtual_callee)
        .map(|edge| neighbour(edge, &edge.caller, edge.virtual_caller))
        .collect();
    let callees = edges
        .iter()
        .filter(|edge| edge.caller == service && !edge.virtual_caller)
        .map(|edge| neighbour(edge, &edge.callee, edge.virtual_callee))
        .collect();
    Ok(Page(ServicePage {
        nav: "services",
        service,
        window,
        windows: Window::choices(),
        spark: SPARK_SIZE,
        operations,
        histogram,
        histogram_size: HISTOGRAM_SIZE,
        callers,
        callees,
    }))
}

/// Durations of the service's entry spans in buckets of half a power of two (√2 apart), so the
/// shape of a long tail shows on one plot; buckets in between that hold nothing are drawn empty.
async fn latency_histogram(
    engine: &QueryEngine,
    window: &Window,
    service: &str,
) -> Result<Vec<Bar>, crate::error::ApiError> {
    let counts = rows::query(
        engine,
        &format!(
            "SELECT CAST(floor(log2(CAST(greatest(duration_ns, 1) AS DOUBLE)) * 2) AS BIGINT) AS bucket, \
             count(*) AS spans FROM spans \
             WHERE start_time >= $1 AND start_time < $2 AND service_name = $3 AND {ENTRY_SPANS} \
             GROUP BY 1 ORDER BY 1"
        ),
        vec![
            rows::timestamp(window.start_ns()),
            rows::timestamp(window.end_ns),
            rows::text(service),
        ],
    )
    .await?;
    let buckets: Vec<(i64, f64)> = counts
        .iter()
        .map(|row| (num_of(row, "bucket") as i64, num_of(row, "spans")))
        .collect();
    let (Some(first), Some(last)) = (buckets.first(), buckets.last()) else {
        return Ok(Vec::new());
    };
    let items: Vec<(String, String, f64)> = (first.0..=last.0)
        .map(|bucket| {
            let count = buckets
                .iter()
                .find(|(b, _)| *b == bucket)
                .map_or(0.0, |(_, count)| *count);
            let low = 2f64.powf(bucket as f64 / 2.0);
            let high = 2f64.powf((bucket + 1) as f64 / 2.0);
            let label = if bucket % 2 == 0 {
                format::duration(low)
            } else {
                String::new()
            };
            let title = format!(
                "{} – {}: {} spans",
                format::duration(low),
                format::duration(high),
                count
            );
            (label, title, count)
        })
        .collect();
    Ok(svg::bars(&items, HISTOGRAM_SIZE.0, HISTOGRAM_SIZE.1, 20.0))
}
