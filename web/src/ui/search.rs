//! Trace search: a form over every search filter (several services at once, which Jaeger cannot do),
//! the hits as a sortable list, and a duration-over-time scatter plot whose dots open the trace.

use std::sync::Arc;

use askama::Template;
use axum::extract::{RawQuery, State};
use meshscope_query::{QueryEngine, SearchRequest, TraceSummary};

use crate::error::ApiError;
use crate::format;
use crate::params::{add_attribute_filter, parse_duration};
use crate::svg::{Point, Scale, Tick};
use crate::ui::page::{Page, PageResult};
use crate::window::{WINDOWS, Window};

/// How the hits can be ordered: parameter value and label.
const SORTS: [(&str, &str); 6] = [
    ("newest", "newest first"),
    ("oldest", "oldest first"),
    ("longest", "longest first"),
    ("shortest", "shortest first"),
    ("spans", "most spans"),
    ("errors", "most errors"),
];

/// Scatter plot size, SVG user units.
const PLOT: (f64, f64) = (900.0, 200.0);
const PLOT_LEFT: f64 = 70.0;
const PLOT_BOTTOM: f64 = 20.0;

/// The form as submitted, kept to fill the form again.
#[derive(Debug, Default)]
pub struct Form {
    services: Vec<String>,
    name: String,
    filters: String,
    status: String,
    min_duration: String,
    max_duration: String,
    lookback: String,
    start: String,
    end: String,
    limit: String,
    sort: String,
}

/// One hit as the list and the plot show it.
pub struct Hit {
    trace_id: String,
    root: String,
    root_service: String,
    start: String,
    duration: String,
    spans: usize,
    errors: usize,
    services: Vec<String>,
    dot: Point,
}

/// The search page.
#[derive(Template)]
#[template(path = "search.html")]
pub struct SearchPage {
    nav: &'static str,
    form: Form,
    all_services: Vec<String>,
    lookbacks: Vec<&'static str>,
    sorts: Vec<(&'static str, &'static str)>,
    /// The query string without `sort`, for the sort links.
    base_query: String,
    hits: Vec<Hit>,
    error: Option<String>,
    plot: (f64, f64),
    plot_left: f64,
    x_ticks: Vec<Tick>,
    y_ticks: Vec<Tick>,
}

impl SearchPage {
    fn is_selected(&self, service: &str) -> bool {
        self.form.services.iter().any(|s| s == service)
    }
}

/// `GET /search`: the form, and the hits of the filters it carries.
pub async fn search(
    State(engine): State<Arc<QueryEngine>>,
    RawQuery(query): RawQuery,
) -> PageResult<SearchPage> {
    let pairs: Vec<(String, String)> =
        serde_urlencoded::from_str(query.as_deref().unwrap_or("")).unwrap_or_default();
    let form = read_form(&pairs);
    let base_query = serde_urlencoded::to_string(
        pairs
            .iter()
            .filter(|(key, _)| key != "sort")
            .collect::<Vec<_>>(),
    )
    .unwrap_or_default();
    let mut page = SearchPage {
        nav: "search",
        all_services: engine.services().await?,
        lookbacks: Window::choices(),
        sorts: SORTS.to_vec(),
        base_query,
        hits: Vec::new(),
        error: None,
        plot: PLOT,
        plot_left: PLOT_LEFT,
        x_ticks: Vec::new(),
        y_ticks: Vec::new(),
        form,
    };
    let now = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX);
    match request(&page.form, now) {
        Err(error) => page.error = Some(error.message().to_owned()),
        Ok(request) => match engine.search(&request).await {
            Ok(mut found) => {
                sort(&mut found, &page.form.sort);
                let range = (
                    request.start_ns.unwrap_or(now - 3_600_000_000_000),
                    request.end_ns.unwrap_or(now),
                );
                place(&mut page, &found, range);
            }
            Err(error) => page.error = Some(ApiError::from(error).message().to_owned()),
        },
    }
    Ok(Page(page))
}

fn read_form(pairs: &[(String, String)]) -> Form {
    let mut form = Form {
        lookback: "1h".to_owned(),
        limit: "20".to_owned(),
        sort: "newest".to_owned(),
        ..Form::default()
    };
    for (key, value) in pairs {
        let slot = match key.as_str() {
            "service" => {
                if !value.is_empty() {
                    form.services.push(value.clone());
                }
                continue;
            }
            "name" => &mut form.name,
            "filters" => &mut form.filters,
            "status" => &mut form.status,
            "min_duration" => &mut form.min_duration,
            "max_duration" => &mut form.max_duration,
            "lookback" => &mut form.lookback,
            "start" => &mut form.start,
            "end" => &mut form.end,
            "limit" => &mut form.limit,
            "sort" => &mut form.sort,
            _ => continue,
        };
        *slot = value.clone();
    }
    form
}

/// A `datetime-local` value (`2026-11-26T05:18`, read as UTC) or RFC 3339, as Unix nanoseconds.
fn form_time(text: &str) -> Result<i64, ApiError> {
    let text = text.trim();
    for pattern in ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S"] {
        if let Ok(time) = chrono::NaiveDateTime::parse_from_str(text, pattern) {
            return time
                .and_utc()
                .timestamp_nanos_opt()
                .ok_or_else(|| ApiError::bad_request(format!("time {text:?} is out of range")));
        }
    }
    crate::params::parse_time(text)
}

fn request(form: &Form, now: i64) -> Result<SearchRequest, ApiError> {
    let mut request = SearchRequest {
        services: form.services.clone(),
        limit: 20,
        ..SearchRequest::default()
    };
    if !form.name.trim().is_empty() {
        request.span_name = Some(form.name.trim().to_owned());
    }
    for line in form.filters.lines().filter(|line| !line.trim().is_empty()) {
        add_attribute_filter(&mut request, line.trim())?;
    }
    match form.status.as_str() {
        "" => {}
        "unset" | "ok" | "error" => request.status = Some(form.status.clone()),
        other => {
            return Err(ApiError::bad_request(format!(
                "status {other:?} must be unset, ok or error"
            )));
        }
    }
    if !form.min_duration.trim().is_empty() {
        request.min_duration_ns = Some(parse_duration(&form.min_duration)?);
    }
    if !form.max_duration.trim().is_empty() {
        request.max_duration_ns = Some(parse_duration(&form.max_duration)?);
    }
    if form.lookback == "custom" {
        if !form.start.trim().is_empty() {
            request.start_ns = Some(form_time(&form.start)?);
        }
        if !form.end.trim().is_empty() {
            request.end_ns = Some(form_time(&form.end)?);
        }
    } else {
        let seconds = WINDOWS
            .iter()
            .find(|(name, _)| *name == form.lookback)
            .map_or(3_600, |(_, seconds)| *seconds);
        request.start_ns = Some(now - seconds * 1_000_000_000);
    }
    if !form.limit.trim().is_empty() {
        request.limit = form
            .limit
            .trim()
            .parse::<usize>()
            .ok()
            .filter(|limit| (1..=1_000).contains(limit))
            .ok_or_else(|| ApiError::bad_request("limit must be 1 to 1000"))?;
    }
    Ok(request)
}

fn sort(found: &mut [TraceSummary], by: &str) {
    let start = |t: &TraceSummary| t.start_time_unix_nano.parse::<i64>().unwrap_or(0);
    match by {
        "oldest" => found.sort_by_key(start),
        "longest" => found.sort_by_key(|t| std::cmp::Reverse(t.duration_ns)),
        "shortest" => found.sort_by_key(|t| t.duration_ns),
        "spans" => found.sort_by_key(|t| std::cmp::Reverse(t.span_count)),
        "errors" => found.sort_by_key(|t| std::cmp::Reverse(t.error_count)),
        _ => found.sort_by_key(|t| std::cmp::Reverse(start(t))),
    }
}

/// Fills the list and places each hit on the scatter plot over the searched time range.
fn place(page: &mut SearchPage, found: &[TraceSummary], range: (i64, i64)) {
    let longest = found.iter().map(|t| t.duration_ns).max().unwrap_or(0) as f64;
    let x = Scale::new(
        (range.0 as f64, range.1 as f64),
        (PLOT_LEFT + 6.0, PLOT.0 - 40.0),
    );
    let y = Scale::new((0.0, longest.max(1.0)), (PLOT.1 - PLOT_BOTTOM - 4.0, 8.0));
    page.x_ticks = x.ticks(5, |ns| format::clock(ns as i64));
    page.y_ticks = y.ticks(4, format::duration);
    page.hits = found
        .iter()
        .map(|t| {
            let start = t.start_time_unix_nano.parse::<i64>().unwrap_or(0);
            Hit {
                trace_id: t.trace_id.clone(),
                root: t.root_name.clone(),
                root_service: t.root_service.clone(),
                start: format::instant(start),
                duration: format::duration(t.duration_ns as f64),
                spans: t.span_count,
                errors: t.error_count,
                services: t.services.clone(),
                dot: Point {
                    x: x.at(start as f64).clamp(PLOT_LEFT, PLOT.0),
                    y: y.at(t.duration_ns as f64),
                },
            }
        })
        .collect();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(pairs: &[(&str, &str)]) -> Form {
        read_form(
            &pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<Vec<_>>(),
        )
    }

    #[test]
    fn the_form_becomes_a_request() {
        let form = form(&[
            ("service", "a"),
            ("service", "b"),
            ("filters", "http.route=/x\nhttp.response.status_code>=500\n"),
            ("status", "error"),
            ("min_duration", "5ms"),
            ("lookback", "15m"),
        ]);
        let request = request(&form, 1_000_000_000_000).unwrap();
        assert_eq!(request.services, vec!["a", "b"]);
        assert_eq!(request.attributes.len(), 1);
        assert_eq!(request.comparisons.len(), 1);
        assert_eq!(request.min_duration_ns, Some(5_000_000));
        assert_eq!(request.start_ns, Some(1_000_000_000_000 - 900_000_000_000));
    }

    #[test]
    fn custom_ranges_read_the_browser_format_as_utc() {
        let form = form(&[("lookback", "custom"), ("start", "1970-01-01T00:01")]);
        assert_eq!(request(&form, 0).unwrap().start_ns, Some(60_000_000_000));
        assert!(request(&form_with_limit("0"), 0).is_err());
    }

    fn form_with_limit(limit: &str) -> Form {
        form(&[("limit", limit)])
    }
}
