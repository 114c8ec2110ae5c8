//! The admin endpoint: the proxy's own health, metrics and state, over plain HTTP.
//!
//! | path | answers |
//! |---|---|
//! | `/ready` | `200 ready` while serving, `503 draining` once shutdown has begun |
//! | `/metrics` | Prometheus text: requests and latency per route, retries, budget, breaker and ejection counts per upstream, in-flight and ejection state per endpoint, span export counts |
//! | `/config` | the running configuration as TOML, defaults filled in |
//! | `/endpoints` | JSON: every upstream's endpoints and their live state, and its adaptive concurrency limit |

use std::convert::Infallible;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::body::{self, ProxyBody};
use crate::breaker::{CircuitBreaker, Limit};
use crate::concurrency::ConcurrencyLimiter;
use crate::reload::Live;
use crate::stats::{LATENCY_BUCKETS, UpstreamStats};
use crate::telemetry::ExportCounters;
use crate::upstream::Upstream;

/// What the admin endpoint reads.
#[derive(Debug, Clone)]
pub(crate) struct AdminState {
    /// The running configuration and tables.
    pub(crate) live: Arc<Mutex<Live>>,
    /// Span export counters, when telemetry is on.
    pub(crate) spans: Option<Arc<ExportCounters>>,
    /// Metric export counters, when metrics are exported.
    pub(crate) metric_exports: Option<Arc<ExportCounters>>,
    /// Raised when shutdown begins.
    pub(crate) draining: watch::Receiver<bool>,
}

/// Serves the admin endpoint on `socket` until `stop` is raised.
pub(crate) async fn serve(socket: TcpListener, state: AdminState, mut stop: watch::Receiver<bool>) {
    let builder = auto::Builder::new(TokioExecutor::new());
    loop {
        let (stream, _) = tokio::select! {
            _ = stop.wait_for(|stop| *stop) => break,
            accepted = socket.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    continue;
                }
            },
        };
        let state = state.clone();
        let service = service_fn(move |request| {
            let answer = answer(&state, &request);
            async move { Ok::<_, Infallible>(answer) }
        });
        let connection = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        tokio::spawn(connection);
    }
}

fn answer(state: &AdminState, request: &Request<Incoming>) -> Response<ProxyBody> {
    if request.method() != Method::GET {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "GET only\n".to_owned(),
        );
    }
    let live = match state.live.lock() {
        Ok(live) => live,
        Err(poisoned) => poisoned.into_inner(),
    };
    match request.uri().path() {
        "/ready" if *state.draining.borrow() => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "draining\n".to_owned(),
        ),
        "/ready" => text(StatusCode::OK, "text/plain", "ready\n".to_owned()),
        "/metrics" => text(
            StatusCode::OK,
            "text/plain; version=0.0.4",
            metrics(
                &live,
                state.spans.as_deref(),
                state.metric_exports.as_deref(),
            ),
        ),
        "/config" => match toml::to_string(live.config()) {
            Ok(config) => text(StatusCode::OK, "application/toml", config),
            Err(e) => text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "text/plain",
                format!("cannot render the configuration: {e}\n"),
            ),
        },
        "/endpoints" => text(StatusCode::OK, "application/json", endpoints(&live)),
        _ => text(
            StatusCode::NOT_FOUND,
            "text/plain",
            "try /ready, /metrics, /config or /endpoints\n".to_owned(),
        ),
    }
}

fn text(status: StatusCode, content_type: &'static str, body: String) -> Response<ProxyBody> {
    let mut response = Response::new(body::text(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// A per-upstream counter: its name, its help text, and how to read it.
type UpstreamMetric = (&'static str, &'static str, fn(&UpstreamStats) -> u64);

/// Prometheus text exposition of every counter.
/// A gauge read from an upstream's circuit breaker: name, help, value.
type BreakerGauge = (&'static str, &'static str, fn(&CircuitBreaker) -> usize);

/// The circuit breakers' overflow counts by limit, their state, and the figures the limits apply to.
fn breaker_metrics(out: &mut String, upstreams: &[&Arc<Upstream>]) {
    family(
        out,
        "upstream_overflows_total",
        "counter",
        "Requests refused by the circuit breaker, by the limit that was reached.",
    );
    for upstream in upstreams {
        for limit in Limit::ALL {
            let _ = writeln!(
                out,
                "meshscope_proxy_upstream_overflows_total{{upstream=\"{}\",limit=\"{}\"}} {}",
                escape(upstream.name()),
                limit.label(),
                upstream.breaker().overflows(limit)
            );
        }
    }
    family(
        out,
        "upstream_breaker_open",
        "gauge",
        "1 while a circuit breaker limit is reached (the next request would overflow or wait).",
    );
    for upstream in upstreams {
        for limit in Limit::ALL {
            let _ = writeln!(
                out,
                "meshscope_proxy_upstream_breaker_open{{upstream=\"{}\",limit=\"{}\"}} {}",
                escape(upstream.name()),
                limit.label(),
                u8::from(upstream.breaker().is_open(limit))
            );
        }
    }
    let gauges: [BreakerGauge; 3] = [
        (
            "upstream_requests_active",
            "Requests (and TCP or upgraded connections) in flight to an upstream.",
            CircuitBreaker::active,
        ),
        (
            "upstream_connections_active",
            "Connection slots in use under max_connections (0 without that limit).",
            CircuitBreaker::connections,
        ),
        (
            "upstream_requests_pending",
            "Requests waiting for a connection slot.",
            CircuitBreaker::pending,
        ),
    ];
    for (name, help, value) in gauges {
        family(out, name, "gauge", help);
        for upstream in upstreams {
            let _ = writeln!(
                out,
                "meshscope_proxy_{name}{{upstream=\"{}\"}} {}",
                escape(upstream.name()),
                value(upstream.breaker())
            );
        }
    }
}

/// A family read from an adaptive concurrency limiter: name, type, help, value.
type ConcurrencyFamily = (
    &'static str,
    &'static str,
    &'static str,
    fn(&ConcurrencyLimiter) -> u64,
);

/// The adaptive concurrency limits: where each stands, what it admitted and what it refused. Only
/// upstreams with `[upstream.adaptive_concurrency]` appear.
fn concurrency_metrics(out: &mut String, upstreams: &[&Arc<Upstream>]) {
    let limited: Vec<_> = upstreams
        .iter()
        .filter_map(|upstream| Some((upstream.name(), upstream.concurrency()?)))
        .collect();
    let families: [ConcurrencyFamily; 3] = [
        (
            "upstream_concurrency_limit",
            "gauge",
            "The adaptive concurrency limit: requests allowed in flight to an upstream now.",
            |l| l.limit() as u64,
        ),
        (
            "upstream_concurrency_in_flight",
            "gauge",
            "Requests admitted by the adaptive limit and waiting for response headers.",
            |l| l.in_flight() as u64,
        ),
        (
            "upstream_concurrency_rejected_total",
            "counter",
            "Requests refused (503 concurrency-limit) by the adaptive concurrency limit.",
            ConcurrencyLimiter::rejected,
        ),
    ];
    for (name, kind, help, value) in families {
        family(out, name, kind, help);
        for (upstream, limiter) in &limited {
            let _ = writeln!(
                out,
                "meshscope_proxy_{name}{{upstream=\"{}\"}} {}",
                escape(upstream),
                value(limiter)
            );
        }
    }
}

fn metrics(
    live: &Live,
    spans: Option<&ExportCounters>,
    metric_exports: Option<&ExportCounters>,
) -> String {
    let mut out = String::new();
    let tables = live.tables();
    family(
        &mut out,
        "requests_total",
        "counter",
        "Requests answered, by listener, route and status class.",
    );
    for plan in &tables.listeners {
        for route in plan.routes.routes() {
            let labels = format!(
                "listener=\"{}\",route=\"{}\"",
                escape(&plan.role),
                escape(route.name())
            );
            for (class, count) in route.stats().responses() {
                let _ = writeln!(
                    out,
                    "meshscope_proxy_requests_total{{{labels},class=\"{class}\"}} {count}"
                );
            }
        }
    }
    family(
        &mut out,
        "request_duration_seconds",
        "histogram",
        "Time from request to response headers, by listener and route.",
    );
    for plan in &tables.listeners {
        for route in plan.routes.routes() {
            let labels = format!(
                "listener=\"{}\",route=\"{}\"",
                escape(&plan.role),
                escape(route.name())
            );
            let (cumulative, sum) = route.stats().latency.snapshot();
            for (bound, count) in LATENCY_BUCKETS
                .iter()
                .map(|b| b.to_string())
                .chain(["+Inf".to_owned()])
                .zip(&cumulative)
            {
                let _ = writeln!(
                    out,
                    "meshscope_proxy_request_duration_seconds_bucket{{{labels},le=\"{bound}\"}} {count}"
                );
            }
            let total = cumulative.last().copied().unwrap_or(0);
            let _ = writeln!(
                out,
                "meshscope_proxy_request_duration_seconds_sum{{{labels}}} {sum}"
            );
            let _ = writeln!(
                out,
                "meshscope_proxy_request_duration_seconds_count{{{labels}}} {total}"
            );
        }
    }
    family(
        &mut out,
        "rate_limited_total",
        "counter",
        "Requests refused by a route's rate limit.",
    );
    for plan in &tables.listeners {
        for route in plan.routes.routes() {
            let labels = format!(
                "listener=\"{}\",route=\"{}\"",
                escape(&plan.role),
                escape(route.name())
            );
            let _ = writeln!(
                out,
                "meshscope_proxy_rate_limited_total{{{labels}}} {}",
                route.stats().rate_limited.get()
            );
        }
    }

    let upstreams = tables.upstreams();
    let per_upstream: [UpstreamMetric; 4] = [
        (
            "upstream_attempts_total",
            "Attempts sent, first tries and retries.",
            |s| s.attempts.get(),
        ),
        ("upstream_retries_total", "Retries sent.", |s| {
            s.retries.get()
        }),
        (
            "upstream_retry_budget_exhausted_total",
            "Retries not sent because the retry budget was spent.",
            |s| s.budget_exhausted.get(),
        ),
        (
            "upstream_ejections_total",
            "Endpoints ejected by outlier detection.",
            |s| s.ejections.get(),
        ),
    ];
    for (name, help, value) in per_upstream {
        family(&mut out, name, "counter", help);
        for upstream in &upstreams {
            let _ = writeln!(
                out,
                "meshscope_proxy_{name}{{upstream=\"{}\"}} {}",
                escape(upstream.name()),
                value(upstream.stats())
            );
        }
    }
    breaker_metrics(&mut out, &upstreams);
    concurrency_metrics(&mut out, &upstreams);
    let now = Instant::now();
    family(
        &mut out,
        "endpoint_in_flight",
        "gauge",
        "Requests (or TCP connections) in flight to an endpoint.",
    );
    for upstream in &upstreams {
        for endpoint in upstream.endpoints() {
            let labels = format!(
                "upstream=\"{}\",endpoint=\"{}\"",
                escape(upstream.name()),
                escape(endpoint.address().as_str())
            );
            let _ = writeln!(
                out,
                "meshscope_proxy_endpoint_in_flight{{{labels}}} {}",
                endpoint.in_flight()
            );
        }
    }
    family(
        &mut out,
        "endpoint_ejected",
        "gauge",
        "1 while an endpoint is ejected by outlier detection.",
    );
    for upstream in &upstreams {
        for endpoint in upstream.endpoints() {
            let labels = format!(
                "upstream=\"{}\",endpoint=\"{}\"",
                escape(upstream.name()),
                escape(endpoint.address().as_str())
            );
            let ejected = u8::from(endpoint.health().is_ejected(now));
            let _ = writeln!(
                out,
                "meshscope_proxy_endpoint_ejected{{{labels}}} {ejected}"
            );
        }
    }
    family(
        &mut out,
        "endpoint_failing_health_checks",
        "gauge",
        "1 while an endpoint is marked unhealthy by active health checks.",
    );
    for upstream in &upstreams {
        for endpoint in upstream.endpoints() {
            let labels = format!(
                "upstream=\"{}\",endpoint=\"{}\"",
                escape(upstream.name()),
                escape(endpoint.address().as_str())
            );
            let failing = u8::from(endpoint.health().fails_checks());
            let _ = writeln!(
                out,
                "meshscope_proxy_endpoint_failing_health_checks{{{labels}}} {failing}"
            );
        }
    }
    if let Some(spans) = spans {
        let (exported, dropped, failed) = spans.totals();
        for (name, help, value) in [
            (
                "spans_exported_total",
                "Spans the collector accepted.",
                exported,
            ),
            (
                "spans_dropped_total",
                "Spans dropped because the export queue was full.",
                dropped,
            ),
            (
                "spans_failed_total",
                "Spans lost in failed exports.",
                failed,
            ),
        ] {
            family(&mut out, name, "counter", help);
            let _ = writeln!(out, "meshscope_proxy_{name} {value}");
        }
    }
    if let Some(exports) = metric_exports {
        let (exported, dropped, failed) = exports.totals();
        for (name, help, value) in [
            (
                "metric_exports_total",
                "Metric snapshots the collector accepted.",
                exported,
            ),
            (
                "metric_exports_dropped_total",
                "Metric snapshots dropped because the export queue was full.",
                dropped,
            ),
            (
                "metric_exports_failed_total",
                "Metric snapshots lost in failed exports.",
                failed,
            ),
        ] {
            family(&mut out, name, "counter", help);
            let _ = writeln!(out, "meshscope_proxy_{name} {value}");
        }
    }
    out
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(
        out,
        "# HELP meshscope_proxy_{name} {help}\n# TYPE meshscope_proxy_{name} {kind}"
    );
}

/// A label value with `\`, `"` and newlines escaped, as the text format requires.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Every upstream's endpoints and their live state, as JSON.
fn endpoints(live: &Live) -> String {
    let now = Instant::now();
    let fleet_now = crate::stats::unix_nanos(std::time::SystemTime::now());
    let upstreams: Vec<serde_json::Value> = live
        .tables()
        .upstreams()
        .iter()
        .map(|upstream| {
            let endpoints: Vec<serde_json::Value> = upstream
                .endpoints()
                .iter()
                .map(|endpoint| {
                    let health = endpoint.health();
                    let (consecutive_5xx, consecutive_gateway_errors) = health.streaks();
                    serde_json::json!({
                        "address": endpoint.address().as_str(),
                        "weight": endpoint.weight(),
                        "in_flight": endpoint.in_flight(),
                        "latency_estimate_ms": endpoint.rtt_estimate(now).as_secs_f64() * 1000.0,
                        "ejected_for_seconds": health.ejected_for(now).map(|left| left.as_secs_f64()),
                        "ejections": health.ejections(),
                        "failing_health_checks": health.fails_checks(),
                        "consecutive_5xx": consecutive_5xx,
                        "consecutive_gateway_errors": consecutive_gateway_errors,
                        "fleet_weight": endpoint.fleet().weight(fleet_now),
                        "fleet_ejected": endpoint.fleet().ejected(fleet_now),
                    })
                })
                .collect();
            serde_json::json!({
                "name": upstream.name(),
                "balancer": upstream.balancer_name(),
                "adaptive_concurrency": upstream.concurrency().map(|limiter| {
                    let snapshot = limiter.snapshot();
                    let ms = |latency: Option<std::time::Duration>| {
                        latency.map(|l| l.as_secs_f64() * 1000.0)
                    };
                    serde_json::json!({
                        "limit": limiter.limit(),
                        "in_flight": limiter.in_flight(),
                        "rejected": limiter.rejected(),
                        "baseline_latency_ms": ms(snapshot.baseline),
                        "sample_latency_ms": ms(snapshot.sample),
                    })
                }),
                "endpoints": endpoints,
            })
        })
        .collect();
    let document = serde_json::json!({ "upstreams": upstreams });
    format!("{document:#}\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
