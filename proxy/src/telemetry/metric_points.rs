//! The proxy's metrics as OTLP data points: the same figures the admin endpoint's `/metrics` shows,
//! read from the running tables at one instant.
//!
//! Counters become cumulative monotonic sums whose start time is when the route or upstream began
//! counting (a reload that rebuilds a route starts it again), latency becomes an explicit-bucket
//! histogram, and breaker figures and adaptive concurrency limits become gauges.

use meshscope_proto::common::KeyValue;
use meshscope_proto::metrics::metric::Data;
use meshscope_proto::metrics::number_data_point::Value;
use meshscope_proto::metrics::{
    AggregationTemporality, Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint, Sum,
};

use super::export::{ExportCounters, string};
use crate::breaker::{CircuitBreaker, Limit};
use crate::build::Tables;
use crate::stats::{LATENCY_BUCKETS, UpstreamStats};

/// Every metric of `tables` (and of span export, when on) at `now`; span counters started at
/// `started` (Unix nanoseconds).
pub(crate) fn collect(
    tables: &Tables,
    spans: Option<&ExportCounters>,
    started: u64,
    now: u64,
) -> Vec<Metric> {
    let mut requests = Vec::new();
    let mut latency = Vec::new();
    let mut rate_limited = Vec::new();
    for plan in &tables.listeners {
        for route in plan.routes.routes() {
            let stats = route.stats();
            let labels = || {
                vec![
                    string("listener", plan.role.as_str()),
                    string("route", route.name()),
                ]
            };
            for (class, count) in stats.responses() {
                let mut attributes = labels();
                attributes.push(string("class", class));
                requests.push(point(attributes, stats.since, now, count));
            }
            rate_limited.push(point(labels(), stats.since, now, stats.rate_limited.get()));
            latency.push(histogram_point(labels(), stats.since, now, stats));
        }
    }
    let mut metrics = vec![
        sum(
            "meshscope.proxy.requests",
            "Requests answered, by listener, route and status class.",
            "{request}",
            requests,
        ),
        Metric {
            name: "meshscope.proxy.request.duration".to_owned(),
            description: "Time from request to response headers, by listener and route.".to_owned(),
            unit: "s".to_owned(),
            data: Some(Data::Histogram(Histogram {
                data_points: latency,
                aggregation_temporality: AggregationTemporality::Cumulative as i32,
            })),
            ..Default::default()
        },
        sum(
            "meshscope.proxy.rate_limited",
            "Requests refused by a route's rate limit.",
            "{request}",
            rate_limited,
        ),
    ];
    metrics.extend(upstream_metrics(tables, now));
    metrics.extend(concurrency_metrics(tables, now));
    if let Some(spans) = spans {
        let (exported, dropped, failed) = spans.totals();
        for (name, description, value) in [
            (
                "meshscope.proxy.spans.exported",
                "Spans sent to the collector.",
                exported,
            ),
            (
                "meshscope.proxy.spans.dropped",
                "Spans dropped because the export queue was full.",
                dropped,
            ),
            (
                "meshscope.proxy.spans.failed",
                "Spans lost in failed exports.",
                failed,
            ),
        ] {
            metrics.push(sum(
                name,
                description,
                "{span}",
                vec![point(Vec::new(), started, now, value)],
            ));
        }
    }
    metrics
}

/// A counter read from an upstream's stats.
type UpstreamCounter = (&'static str, &'static str, fn(&UpstreamStats) -> u64);

/// A gauge read from an upstream's circuit breaker.
type BreakerGauge = (&'static str, &'static str, fn(&CircuitBreaker) -> usize);

fn upstream_metrics(tables: &Tables, now: u64) -> Vec<Metric> {
    let upstreams = tables.upstreams();
    let name = |upstream: &str| vec![string("upstream", upstream)];
    let counters: [UpstreamCounter; 4] = [
        (
            "meshscope.proxy.upstream.attempts",
            "Attempts sent, first tries and retries.",
            |s| s.attempts.get(),
        ),
        ("meshscope.proxy.upstream.retries", "Retries sent.", |s| {
            s.retries.get()
        }),
        (
            "meshscope.proxy.upstream.retry_budget_exhausted",
            "Retries not sent because the retry budget was spent.",
            |s| s.budget_exhausted.get(),
        ),
        (
            "meshscope.proxy.upstream.ejections",
            "Endpoints ejected by outlier detection.",
            |s| s.ejections.get(),
        ),
    ];
    let mut metrics: Vec<Metric> = counters
        .iter()
        .map(|(metric, description, value)| {
            let points = upstreams
                .iter()
                .map(|u| point(name(u.name()), u.stats().since, now, value(u.stats())))
                .collect();
            sum(metric, description, "1", points)
        })
        .collect();
    let mut overflows = Vec::new();
    let mut open = Vec::new();
    for upstream in &upstreams {
        for limit in Limit::ALL {
            let mut attributes = name(upstream.name());
            attributes.push(string("limit", limit.label()));
            let breaker = upstream.breaker();
            overflows.push(point(
                attributes.clone(),
                upstream.stats().since,
                now,
                breaker.overflows(limit),
            ));
            open.push(point(attributes, 0, now, u64::from(breaker.is_open(limit))));
        }
    }
    metrics.push(sum(
        "meshscope.proxy.upstream.overflows",
        "Requests refused by the circuit breaker, by the limit that was reached.",
        "{request}",
        overflows,
    ));
    metrics.push(gauge(
        "meshscope.proxy.upstream.breaker_open",
        "1 while a circuit breaker limit is reached.",
        open,
    ));
    let gauges: [BreakerGauge; 3] = [
        (
            "meshscope.proxy.upstream.requests_active",
            "Requests (and TCP or upgraded connections) in flight.",
            CircuitBreaker::active,
        ),
        (
            "meshscope.proxy.upstream.connections_active",
            "Connection slots in use under max_connections.",
            CircuitBreaker::connections,
        ),
        (
            "meshscope.proxy.upstream.requests_pending",
            "Requests waiting for a connection slot.",
            CircuitBreaker::pending,
        ),
    ];
    for (metric, description, value) in gauges {
        let points = upstreams
            .iter()
            .map(|u| point(name(u.name()), 0, now, value(u.breaker()) as u64))
            .collect();
        metrics.push(gauge(metric, description, points));
    }
    metrics
}

/// The adaptive concurrency limits and their refusals; nothing when no upstream has one.
fn concurrency_metrics(tables: &Tables, now: u64) -> Vec<Metric> {
    let mut limits = Vec::new();
    let mut rejected = Vec::new();
    for upstream in tables.upstreams() {
        let Some(limiter) = upstream.concurrency() else {
            continue;
        };
        let name = || vec![string("upstream", upstream.name())];
        limits.push(point(name(), 0, now, limiter.limit() as u64));
        let since = upstream.stats().since;
        rejected.push(point(name(), since, now, limiter.rejected()));
    }
    if limits.is_empty() {
        return Vec::new();
    }
    vec![
        gauge(
            "meshscope.proxy.upstream.concurrency_limit",
            "Requests the adaptive concurrency limit allows in flight now.",
            limits,
        ),
        sum(
            "meshscope.proxy.upstream.concurrency_rejected",
            "Requests refused by the adaptive concurrency limit.",
            "{request}",
            rejected,
        ),
    ]
}

fn point(attributes: Vec<KeyValue>, start: u64, now: u64, value: u64) -> NumberDataPoint {
    NumberDataPoint {
        attributes,
        start_time_unix_nano: start,
        time_unix_nano: now,
        value: Some(Value::AsInt(i64::try_from(value).unwrap_or(i64::MAX))),
        ..Default::default()
    }
}

fn histogram_point(
    attributes: Vec<KeyValue>,
    start: u64,
    now: u64,
    stats: &crate::stats::RouteStats,
) -> HistogramDataPoint {
    let (cumulative, sum) = stats.latency.snapshot();
    // OTLP counts each bucket on its own; the snapshot is cumulative.
    let bucket_counts: Vec<u64> = cumulative
        .iter()
        .scan(0, |below, &total| {
            let count = total - *below;
            *below = total;
            Some(count)
        })
        .collect();
    HistogramDataPoint {
        attributes,
        start_time_unix_nano: start,
        time_unix_nano: now,
        count: cumulative.last().copied().unwrap_or(0),
        sum: Some(sum),
        bucket_counts,
        explicit_bounds: LATENCY_BUCKETS.to_vec(),
        ..Default::default()
    }
}

fn sum(name: &str, description: &str, unit: &str, data_points: Vec<NumberDataPoint>) -> Metric {
    Metric {
        name: name.to_owned(),
        description: description.to_owned(),
        unit: unit.to_owned(),
        data: Some(Data::Sum(Sum {
            data_points,
            aggregation_temporality: AggregationTemporality::Cumulative as i32,
            is_monotonic: true,
        })),
        ..Default::default()
    }
}

fn gauge(name: &str, description: &str, data_points: Vec<NumberDataPoint>) -> Metric {
    Metric {
        name: name.to_owned(),
        description: description.to_owned(),
        unit: "1".to_owned(),
        data: Some(Data::Gauge(Gauge { data_points })),
        ..Default::default()
    }
}
