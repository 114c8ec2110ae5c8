//! The configuration file's shape, one Rust type per TOML table.
//!
//! Every table denies unknown keys so a typo is an error rather than a silently ignored setting.
//! Values with a syntax of their own (durations, addresses, regexes, methods, URLs) are parsed while the
//! file is read, so their errors carry the TOML line and column. Cross-field rules live in `validate`.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use http::uri::{Authority, Scheme};
use serde::{Deserialize, Serialize};

/// A whole proxy configuration file.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The service this proxy sits beside.
    pub service: ServiceConfig,
    /// Traffic coming in to the local application; absent for a proxy that only sends.
    #[serde(default)]
    pub inbound: Option<InboundConfig>,
    /// Listeners the local application sends its outgoing requests to (`[[outbound]]`).
    #[serde(default)]
    pub outbound: Vec<OutboundConfig>,
    /// Plain TCP forwarding for ports that do not speak HTTP (`[[tcp]]`).
    #[serde(default)]
    pub tcp: Vec<TcpConfig>,
    /// The services that outbound routes send to (`[[upstream]]`).
    #[serde(default, rename = "upstream")]
    pub upstreams: Vec<UpstreamConfig>,
    /// Where spans and metrics go.
    #[serde(default)]
    pub telemetry: TelemetryConfig,
    /// The admin endpoint (`/ready`, `/metrics`, `/config`, `/endpoints`); none if absent.
    #[serde(default)]
    pub admin: Option<AdminConfig>,
}

/// `[admin]`: the proxy's own HTTP endpoint for health, metrics and state.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Socket to serve on; keep it on loopback or a private interface.
    pub listen: SocketAddr,
}

/// `[service]`: who this proxy speaks for.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    /// The local service's name, used in telemetry and error messages.
    pub name: String,
    /// How long shutdown waits for in-flight requests before closing connections.
    #[serde(default = "defaults::drain_timeout")]
    pub drain_timeout: HumanDuration,
    /// Whether the worker threads poll for I/O without ever sleeping (HAProxy's `busy-polling`):
    /// lower, steadier latency where a sleeping CPU is slow to wake (virtual machines), for a
    /// worker core that is always busy.
    #[serde(default)]
    pub busy_poll: bool,
}

/// `[inbound]`: requests from the mesh to the local application.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct InboundConfig {
    /// Socket the proxy accepts mesh traffic on.
    pub listen: SocketAddr,
    /// The local application, `host:port`.
    pub app: Address,
    /// HTTP version spoken to the application.
    #[serde(default)]
    pub protocol: Protocol,
    /// Limit on establishing a connection to the application.
    #[serde(default = "defaults::connect_timeout")]
    pub connect_timeout: HumanDuration,
    /// Limit on waiting for the application's response headers; none if absent.
    #[serde(default)]
    pub timeout: Option<HumanDuration>,
    /// Token-bucket rate limit on requests to the application (e.g. per calling service).
    #[serde(default)]
    pub rate_limit: Option<RateLimitConfig>,
    /// Injected delays and aborts before the application.
    #[serde(default)]
    pub fault: Option<FaultConfig>,
    /// Header rewrites on requests to the application and its responses.
    #[serde(default)]
    pub headers: HeaderRewriteConfig,
}

/// `[[outbound]]`: a listener for the local application's outgoing requests, with its routes.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OutboundConfig {
    /// Socket the local application sends to.
    pub listen: SocketAddr,
    /// Routes, tried in order; the first that matches wins (`[[outbound.route]]`).
    #[serde(default, rename = "route")]
    pub routes: Vec<RouteConfig>,
}

/// `[[tcp]]`: a port whose connections are forwarded byte for byte to an upstream's endpoints.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TcpConfig {
    /// Socket to accept connections on.
    pub listen: SocketAddr,
    /// Name of the `[[upstream]]` whose endpoints receive the connections.
    pub upstream: String,
}

/// `[[outbound.route]]`: which requests go where, and under which timeout and retry policy.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Name shown in logs and errors.
    pub name: String,
    /// Conditions a request must meet; an empty match takes every request.
    #[serde(default, rename = "match")]
    pub matches: MatchConfig,
    /// Shorthand for a single split of weight 1 to this upstream.
    #[serde(default)]
    pub upstream: Option<String>,
    /// Weighted destinations (`[[outbound.route.split]]`), for canaries and migrations.
    #[serde(default, rename = "split")]
    pub splits: Vec<SplitConfig>,
    /// Limit on waiting for response headers, across all attempts.
    #[serde(default)]
    pub timeout: Option<HumanDuration>,
    /// Retry policy; no retries if absent.
    #[serde(default)]
    pub retry: Option<RetryConfig>,
    /// Token-bucket rate limit; none if absent.
    #[serde(default)]
    pub rate_limit: Option<RateLimitConfig>,
    /// Injected delays and aborts, for testing resilience; none if absent.
    #[serde(default)]
    pub fault: Option<FaultConfig>,
    /// Header rewrites on the request and the response.
    #[serde(default)]
    pub headers: HeaderRewriteConfig,
    /// A copy of some requests sent to a shadow upstream, its answers discarded.
    #[serde(default)]
    pub mirror: Option<MirrorConfig>,
}

/// `[outbound.route.rate_limit]`: a token bucket, for the whole route or one per caller.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Sustained rate: tokens added per second.
    pub requests_per_second: f64,
    /// Bucket size: requests allowed in a burst; defaults to one second's worth (at least 1).
    #[serde(default)]
    pub burst: Option<u32>,
    /// One bucket per value of this key (`{ header = "x-api-key" }`, `{ cookie = "..." }` or
    /// `"source_ip"`); one bucket for the route if absent.
    #[serde(default)]
    pub per: Option<HashKey>,
}

/// `[outbound.route.fault]`: faults injected before forwarding.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FaultConfig {
    /// Delay added before forwarding.
    #[serde(default)]
    pub delay: Option<HumanDuration>,
    /// Share of requests delayed, in percent.
    #[serde(default = "defaults::percent_all")]
    pub delay_percent: f64,
    /// Status answered instead of forwarding.
    #[serde(default)]
    pub abort_status: Option<u16>,
    /// Share of requests aborted, in percent.
    #[serde(default = "defaults::percent_all")]
    pub abort_percent: f64,
    /// Let requests ask for a fault with `x-meshscope-fault-delay: 200ms` and
    /// `x-meshscope-fault-abort: 503` (for tests; never in production).
    #[serde(default)]
    pub header_control: bool,
}

/// `[outbound.route.headers]`: header changes on the way in and out.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderRewriteConfig {
    /// Changes to the request before it is sent upstream.
    #[serde(default)]
    pub request: HeaderOpsConfig,
    /// Changes to the response before it is returned.
    #[serde(default)]
    pub response: HeaderOpsConfig,
}

/// Header operations, applied in the order remove, set, add.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderOpsConfig {
    /// Headers to replace (or create), by name.
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    /// Headers to append a value to, by name.
    #[serde(default)]
    pub add: BTreeMap<String, String>,
    /// Headers to delete.
    #[serde(default)]
    pub remove: Vec<String>,
}

/// `[outbound.route.mirror]`: shadow traffic.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MirrorConfig {
    /// The `[[upstream]]` that receives the copies.
    pub upstream: String,
    /// Share of requests copied, in percent.
    #[serde(default = "defaults::percent_all")]
    pub percent: f64,
}

/// `[outbound.route.match]`: request conditions, all of which must hold.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MatchConfig {
    /// Host (authority without port), compared case-insensitively.
    #[serde(default)]
    pub host: Option<String>,
    /// Path starts with this.
    #[serde(default)]
    pub path_prefix: Option<String>,
    /// Path equals this.
    #[serde(default)]
    pub path_exact: Option<String>,
    /// Path matches this regex as a whole.
    #[serde(default)]
    pub path_regex: Option<Pattern>,
    /// Request method.
    #[serde(default)]
    pub method: Option<MethodName>,
    /// Header conditions by header name.
    #[serde(default)]
    pub headers: BTreeMap<String, HeaderMatchConfig>,
}

/// One header condition: exactly one of its fields is set.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderMatchConfig {
    /// Value equals this.
    #[serde(default)]
    pub exact: Option<String>,
    /// Value starts with this.
    #[serde(default)]
    pub prefix: Option<String>,
    /// Value matches this regex as a whole.
    #[serde(default)]
    pub regex: Option<Pattern>,
    /// Header is present (`true`) or absent (`false`).
    #[serde(default)]
    pub present: Option<bool>,
}

/// `[[outbound.route.split]]`: one weighted destination of a route.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SplitConfig {
    /// Name of an `[[upstream]]`.
    pub upstream: String,
    /// Relative share of requests; 0 turns the split off.
    #[serde(default = "defaults::weight")]
    pub weight: u32,
}

/// `[outbound.route.retry]`: when and how a failed attempt is tried again.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// Retries after the first attempt.
    pub attempts: u32,
    /// Limit on each attempt's wait for response headers.
    #[serde(default)]
    pub per_try_timeout: Option<HumanDuration>,
    /// Failures that are retried.
    #[serde(default = "defaults::retry_on")]
    pub on: Vec<RetryOn>,
    /// First backoff; each later one doubles, plus up to 100% jitter.
    #[serde(default = "defaults::backoff_base")]
    pub backoff_base: HumanDuration,
    /// Ceiling on any backoff.
    #[serde(default = "defaults::backoff_max")]
    pub backoff_max: HumanDuration,
    /// Retry methods that are not idempotent (POST, PATCH, ...) too.
    #[serde(default)]
    pub retry_non_idempotent: bool,
    /// Largest request body kept in memory so it can be sent again.
    #[serde(default = "defaults::max_replay_bytes")]
    pub max_replay_bytes: u64,
}

/// A failure class that a retry policy can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub enum RetryOn {
    /// The TCP connection to the endpoint could not be made.
    #[serde(rename = "connect-failure")]
    ConnectFailure,
    /// Any 5xx response, a connect failure, or a per-try timeout (Envoy's `5xx`).
    #[serde(rename = "5xx")]
    ServerError,
    /// 502, 503 or 504, a connect failure, or a per-try timeout (Envoy's `gateway-error`).
    #[serde(rename = "gateway-error")]
    GatewayError,
    /// The connection failed before response headers arrived (Envoy's `reset`).
    #[serde(rename = "reset")]
    Reset,
    /// A gRPC answer with status CANCELLED (1).
    #[serde(rename = "cancelled")]
    GrpcCancelled,
    /// A gRPC answer with status DEADLINE_EXCEEDED (4).
    #[serde(rename = "deadline-exceeded")]
    GrpcDeadlineExceeded,
    /// A gRPC answer with status RESOURCE_EXHAUSTED (8).
    #[serde(rename = "resource-exhausted")]
    GrpcResourceExhausted,
    /// A gRPC answer with status INTERNAL (13).
    #[serde(rename = "internal")]
    GrpcInternal,
    /// A gRPC answer with status UNAVAILABLE (14).
    #[serde(rename = "unavailable")]
    GrpcUnavailable,
}

/// `[[upstream]]`: a destination service, its endpoints and how to spread load over them.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// Name that routes refer to.
    pub name: String,
    /// Load balancing policy across the endpoints.
    #[serde(default)]
    pub balancer: BalancerKind,
    /// What `ring_hash` and `maglev` hash; required by them, refused by the others.
    #[serde(default)]
    pub hash_key: Option<HashKey>,
    /// HTTP version spoken to the endpoints.
    #[serde(default)]
    pub protocol: Protocol,
    /// Limit on establishing a connection to an endpoint.
    #[serde(default = "defaults::connect_timeout")]
    pub connect_timeout: HumanDuration,
    /// The instances of the service (`[[upstream.endpoints]]` or an inline array).
    #[serde(default)]
    pub endpoints: Vec<EndpointConfig>,
    /// A file listing the endpoints instead (`endpoints = [...]`), re-read whenever it changes.
    #[serde(default)]
    pub endpoints_file: Option<PathBuf>,
    /// Re-resolve endpoint host names this often, one endpoint per address found; names are
    /// resolved at each new connection if absent.
    #[serde(default)]
    pub dns_refresh: Option<HumanDuration>,
    /// Cap on retries sent to this upstream.
    #[serde(default)]
    pub retry_budget: RetryBudgetConfig,
    /// Ejecting endpoints that keep failing; off if absent.
    #[serde(default)]
    pub outlier_detection: Option<OutlierConfig>,
    /// Below this percentage of usable (not ejected) endpoints, ejections are ignored and load is
    /// spread over all endpoints (Envoy's healthy panic threshold).
    #[serde(default = "defaults::panic_threshold")]
    pub panic_threshold: u32,
    /// Limits on concurrent work sent to this upstream.
    #[serde(default)]
    pub circuit_breaker: CircuitBreakerConfig,
    /// Active HTTP health checks of every endpoint; none if absent.
    #[serde(default)]
    pub health_check: Option<HealthCheckConfig>,
    /// A limit on requests in flight that follows the upstream's latency; off if absent.
    #[serde(default)]
    pub adaptive_concurrency: Option<AdaptiveConcurrencyConfig>,
}

/// `[upstream.outlier_detection]`: when an endpoint is taken out of rotation, and for how long.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OutlierConfig {
    /// Consecutive 5xx responses (or connect failures, resets, per-try timeouts) that eject; 0 = off.
    #[serde(default = "defaults::consecutive_5xx")]
    pub consecutive_5xx: u32,
    /// Consecutive 502/503/504 responses (or connect failures, resets, per-try timeouts) that eject;
    /// 0 = off.
    #[serde(default)]
    pub consecutive_gateway_errors: u32,
    /// First ejection's length; the n-th ejection of an endpoint lasts n times this.
    #[serde(default = "defaults::base_ejection_time")]
    pub base_ejection_time: HumanDuration,
    /// Ceiling on one ejection's length.
    #[serde(default = "defaults::max_ejection_time")]
    pub max_ejection_time: HumanDuration,
    /// Most endpoints (in percent) ejected at once; one may always be.
    #[serde(default = "defaults::max_ejection_percent")]
    pub max_ejection_percent: u32,
    /// Eject endpoints whose success rate over each `success_rate_interval` is below the mean of
    /// their peers by more than this many standard deviations (Envoy's 1.9); off if absent.
    #[serde(default)]
    pub success_rate_stdev_factor: Option<f64>,
    /// The window success rates are measured over.
    #[serde(default = "defaults::success_rate_interval")]
    pub success_rate_interval: HumanDuration,
    /// Requests an endpoint needs in a window for its rate to count.
    #[serde(default = "defaults::success_rate_min_requests")]
    pub success_rate_min_requests: u64,
    /// Endpoints with enough requests needed before any is compared to the others.
    #[serde(default = "defaults::success_rate_min_hosts")]
    pub success_rate_min_hosts: usize,
}

/// `[upstream.health_check]`: a periodic `GET` to each endpoint; a 2xx answer is a pass.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckConfig {
    /// Path requested.
    #[serde(default = "defaults::health_path")]
    pub path: String,
    /// Time between checks of an endpoint.
    #[serde(default = "defaults::health_interval")]
    pub interval: HumanDuration,
    /// Limit on one check; a slower answer is a failure.
    #[serde(default = "defaults::health_timeout")]
    pub timeout: HumanDuration,
    /// Consecutive failures that mark an endpoint unhealthy.
    #[serde(default = "defaults::health_unhealthy_threshold")]
    pub unhealthy_threshold: u32,
    /// Consecutive passes that mark an unhealthy endpoint healthy again.
    #[serde(default = "defaults::health_healthy_threshold")]
    pub healthy_threshold: u32,
}

/// `[upstream.circuit_breaker]`: limits that protect an upstream from a surge; beyond them requests
/// fail fast with 503 instead of piling up.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CircuitBreakerConfig {
    /// Requests (or TCP connections) in flight to the upstream at once; unlimited if absent.
    #[serde(default)]
    pub max_requests: Option<u32>,
    /// Connections in use to the upstream's endpoints at once (HTTP/1.1 requests, upgraded and TCP
    /// connections each hold one); unlimited if absent.
    #[serde(default)]
    pub max_connections: Option<u32>,
    /// Requests waiting for a connection when `max_connections` are in use; unlimited if absent,
    /// `0` to never wait.
    #[serde(default)]
    pub max_pending_requests: Option<u32>,
}

/// `[upstream.adaptive_concurrency]`: a limit on requests in flight to the upstream that the proxy
/// learns from latency (a gradient controller, as Netflix's Gradient2), so an upstream that slows
/// down under load gets less of it without anyone having to know its capacity. Requests beyond the
/// limit fail fast with 503.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AdaptiveConcurrencyConfig {
    /// The limit never falls below this, so some requests always get through and measure recovery.
    #[serde(default = "defaults::concurrency_min_limit")]
    pub min_limit: u32,
    /// The limit never grows above this.
    #[serde(default = "defaults::concurrency_max_limit")]
    pub max_limit: u32,
    /// The limit before the first sample window has closed (and after a reload that changes the
    /// upstream).
    #[serde(default = "defaults::concurrency_initial_limit")]
    pub initial_limit: u32,
    /// How often the limit is recalculated from the latencies sampled since the last time.
    #[serde(default = "defaults::concurrency_sample_window")]
    pub sample_window: HumanDuration,
    /// Latencies a window needs before it counts; a quieter window is extended.
    #[serde(default = "defaults::concurrency_min_samples")]
    pub min_samples: u32,
    /// Which percentile of a window's latencies stands for the window (50 = the median).
    #[serde(default = "defaults::concurrency_sample_percentile")]
    pub sample_percentile: f64,
    /// How far latency may rise above the baseline before the limit shrinks (1.5 = by half).
    #[serde(default = "defaults::concurrency_latency_tolerance")]
    pub latency_tolerance: f64,
    /// Share of each new estimate taken into the limit (1 = jump straight to it).
    #[serde(default = "defaults::concurrency_smoothing")]
    pub smoothing: f64,
    /// Time constant of the baseline latency's moving average, counted in windows
    /// (`baseline_window / sample_window`): how long a lasting change of latency takes to become
    /// the new normal while traffic flows.
    #[serde(default = "defaults::concurrency_baseline_window")]
    pub baseline_window: HumanDuration,
}

impl Default for AdaptiveConcurrencyConfig {
    fn default() -> Self {
        Self {
            min_limit: defaults::concurrency_min_limit(),
            max_limit: defaults::concurrency_max_limit(),
            initial_limit: defaults::concurrency_initial_limit(),
            sample_window: defaults::concurrency_sample_window(),
            min_samples: defaults::concurrency_min_samples(),
            sample_percentile: defaults::concurrency_sample_percentile(),
            latency_tolerance: defaults::concurrency_latency_tolerance(),
            smoothing: defaults::concurrency_smoothing(),
            baseline_window: defaults::concurrency_baseline_window(),
        }
    }
}

/// One instance of an upstream service.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointConfig {
    /// `host:port` of the instance.
    pub address: Address,
    /// Relative share for the weighted balancers.
    #[serde(default = "defaults::weight")]
    pub weight: u32,
}

/// The contents of an `endpoints_file`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointsFile {
    /// The endpoints, as in an `[[upstream]]` table.
    #[serde(default)]
    pub endpoints: Vec<EndpointConfig>,
}

/// `[upstream.retry_budget]`: retries allowed as a share of recent requests, plus a floor.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RetryBudgetConfig {
    /// Retries allowed per request sent (0.2 = one retry per five requests).
    #[serde(default = "defaults::budget_ratio")]
    pub ratio: f32,
    /// Retries always allowed per second, whatever the traffic.
    #[serde(default = "defaults::budget_min_per_second")]
    pub min_per_second: u32,
    /// How long a request counts towards the budget (1s to 60s).
    #[serde(default = "defaults::budget_ttl")]
    pub ttl: HumanDuration,
}

impl Default for RetryBudgetConfig {
    fn default() -> Self {
        Self {
            ratio: defaults::budget_ratio(),
            min_per_second: defaults::budget_min_per_second(),
            ttl: defaults::budget_ttl(),
        }
    }
}

/// `[telemetry]`: span and metric export. Without `otlp_endpoint` no spans are made, trace headers
/// pass through untouched and metrics are only on the admin endpoint.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    /// OTLP/gRPC collector URL, e.g. `http://127.0.0.1:4317`.
    #[serde(default)]
    pub otlp_endpoint: Option<OtlpEndpoint>,
    /// Finished spans waiting for export; beyond this, new spans are dropped and counted.
    #[serde(default = "defaults::queue_size")]
    pub queue_size: usize,
    /// Spans per export request.
    #[serde(default = "defaults::batch_size")]
    pub batch_size: usize,
    /// Longest a span waits in a partial batch.
    #[serde(default = "defaults::flush_interval")]
    pub flush_interval: HumanDuration,
    /// Limit on connecting to the collector and on each export request.
    #[serde(default = "defaults::export_timeout")]
    pub export_timeout: HumanDuration,
    /// Share (0 to 1) of traces starting at this proxy that are recorded; a caller's decision,
    /// carried in its trace context, is always followed.
    #[serde(default = "defaults::sample_ratio")]
    pub sample_ratio: f64,
    /// Collector to take fleet signals from, for upstreams with `balancer = "adaptive"`; defaults
    /// to `otlp_endpoint` (the collector serves both on its OTLP/gRPC port).
    #[serde(default)]
    pub signals_endpoint: Option<OtlpEndpoint>,
    /// Whether the proxy's own metrics are exported to `otlp_endpoint` too.
    #[serde(default = "defaults::yes")]
    pub metrics: bool,
    /// Time between two metric exports.
    #[serde(default = "defaults::metrics_interval")]
    pub metrics_interval: HumanDuration,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            otlp_endpoint: None,
            signals_endpoint: None,
            queue_size: defaults::queue_size(),
            batch_size: defaults::batch_size(),
            flush_interval: defaults::flush_interval(),
            export_timeout: defaults::export_timeout(),
            sample_ratio: defaults::sample_ratio(),
            metrics: true,
            metrics_interval: defaults::metrics_interval(),
        }
    }
}

/// Load balancing policy of an upstream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BalancerKind {
    /// Each endpoint in turn.
    RoundRobin,
    /// In turn, in proportion to weight, interleaved (nginx's smooth algorithm).
    WeightedRoundRobin,
    /// Uniformly at random.
    Random,
    /// At random, in proportion to weight.
    WeightedRandom,
    /// The less busy of two random endpoints (fewest requests in flight, per unit of weight).
    #[default]
    LeastRequest,
    /// The endpoint with the fewest open requests per unit of weight, scanning all of them (HAProxy's
    /// `leastconn`: each request holds one upstream connection or stream); ties go in turn.
    LeastConnections,
    /// The cheaper of two random endpoints, cost = peak-sensitive latency average × (in flight + 1).
    PeakEwma,
    /// Like `peak_ewma`, with each cost divided by the collector's fleet-wide weight for the endpoint,
    /// and endpoints the fleet ejects left out (see docs/signals.md).
    Adaptive,
    /// Consistent hashing of `hash_key` on a ring (Ketama-style, as Envoy's `RING_HASH`).
    RingHash,
    /// Consistent hashing of `hash_key` with a Maglev lookup table.
    Maglev,
    /// Hash of the client's IP address modulo the number of endpoints (nginx's `ip_hash`).
    SourceIpHash,
}

/// What the consistent-hashing balancers hash: `{ header = "x-user" }`, `{ cookie = "session" }` or
/// `"source_ip"`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HashKey {
    /// The value of this request header.
    Header(String),
    /// The value of this cookie.
    Cookie(String),
    /// The client's IP address.
    SourceIp,
}

/// HTTP version used towards an upstream or the local application.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    /// The version the request arrived with.
    #[default]
    Auto,
    /// HTTP/1.1.
    Http1,
    /// HTTP/2 over cleartext with prior knowledge (h2c).
    Http2,
}

/// A duration written as text: `250ms`, `2s`, `1m 30s`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "String", into = "String")]
pub struct HumanDuration(pub Duration);

impl TryFrom<String> for HumanDuration {
    type Error = String;
    fn try_from(text: String) -> Result<Self, Self::Error> {
        humantime::parse_duration(&text)
            .map(HumanDuration)
            .map_err(|e| format!("invalid duration {text:?} ({e}); write e.g. \"250ms\" or \"2s\""))
    }
}

impl From<HumanDuration> for String {
    fn from(duration: HumanDuration) -> String {
        duration.to_string()
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

/// A `host:port` network address (an IP or a DNS name, and a port).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "String", into = "String")]
pub struct Address(pub Authority);

impl TryFrom<String> for Address {
    type Error = String;
    fn try_from(text: String) -> Result<Self, Self::Error> {
        let authority = Authority::from_str(&text)
            .map_err(|e| format!("invalid address {text:?} ({e}); write host:port"))?;
        if authority.port_u16().is_none() {
            return Err(format!("address {text:?} has no port; write host:port"));
        }
        if text.contains('@') {
            return Err(format!("address {text:?} must not contain credentials"));
        }
        Ok(Address(authority))
    }
}

impl From<Address> for String {
    fn from(address: Address) -> String {
        address.to_string()
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A regular expression that must match a whole value (it is anchored when compiled).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(try_from = "String", into = "String")]
pub struct Pattern(pub regex::Regex);

impl TryFrom<String> for Pattern {
    type Error = String;
    fn try_from(text: String) -> Result<Self, Self::Error> {
        regex::Regex::new(&format!("^(?:{text})$"))
            .map(Pattern)
            .map_err(|e| format!("invalid regex {text:?}: {e}"))
    }
}

impl From<Pattern> for String {
    /// The regex as written in the file (without the anchoring added when it was compiled).
    fn from(pattern: Pattern) -> String {
        let text = pattern.0.as_str();
        let unanchored = text
            .strip_prefix("^(?:")
            .and_then(|inner| inner.strip_suffix(")$"));
        unanchored.unwrap_or(text).to_owned()
    }
}

/// An HTTP method name such as `GET`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "String", into = "String")]
pub struct MethodName(pub http::Method);

impl TryFrom<String> for MethodName {
    type Error = String;
    fn try_from(text: String) -> Result<Self, Self::Error> {
        http::Method::from_bytes(text.as_bytes())
            .map(MethodName)
            .map_err(|_| format!("invalid HTTP method {text:?}"))
    }
}

impl From<MethodName> for String {
    fn from(method: MethodName) -> String {
        method.0.to_string()
    }
}

/// The URL of an OTLP/gRPC collector (`http://host:port`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "String", into = "String")]
pub struct OtlpEndpoint(pub http::Uri);

impl TryFrom<String> for OtlpEndpoint {
    type Error = String;
    fn try_from(text: String) -> Result<Self, Self::Error> {
        let uri = http::Uri::from_str(&text).map_err(|e| format!("invalid URL {text:?}: {e}"))?;
        if uri.scheme() != Some(&Scheme::HTTP) || uri.authority().is_none() {
            return Err(format!(
                "OTLP endpoint {text:?} must look like http://host:4317 (TLS is not supported yet)"
            ));
        }
        Ok(OtlpEndpoint(uri))
    }
}

impl From<OtlpEndpoint> for String {
    fn from(endpoint: OtlpEndpoint) -> String {
        endpoint.to_string()
    }
}

impl fmt::Display for OtlpEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Default values, named so the reference in docs/proxy-config.md can point at them.
mod defaults {
    use super::{HumanDuration, RetryOn};
    use std::time::Duration;

    pub(super) fn drain_timeout() -> HumanDuration {
        HumanDuration(Duration::from_secs(10))
    }
    pub(super) fn connect_timeout() -> HumanDuration {
        HumanDuration(Duration::from_secs(1))
    }
    pub(super) fn weight() -> u32 {
        1
    }
    pub(super) fn retry_on() -> Vec<RetryOn> {
        vec![RetryOn::ConnectFailure, RetryOn::GatewayError]
    }
    pub(super) fn backoff_base() -> HumanDuration {
        HumanDuration(Duration::from_millis(25))
    }
    pub(super) fn backoff_max() -> HumanDuration {
        HumanDuration(Duration::from_millis(250))
    }
    pub(super) fn max_replay_bytes() -> u64 {
        64 * 1024
    }
    pub(super) fn budget_ratio() -> f32 {
        0.2
    }
    pub(super) fn budget_min_per_second() -> u32 {
        10
    }
    pub(super) fn budget_ttl() -> HumanDuration {
        HumanDuration(Duration::from_secs(10))
    }
    pub(super) fn percent_all() -> f64 {
        100.0
    }
    pub(super) fn panic_threshold() -> u32 {
        50
    }
    pub(super) fn consecutive_5xx() -> u32 {
        5
    }
    pub(super) fn base_ejection_time() -> HumanDuration {
        HumanDuration(Duration::from_secs(30))
    }
    pub(super) fn max_ejection_time() -> HumanDuration {
        HumanDuration(Duration::from_secs(300))
    }
    pub(super) fn max_ejection_percent() -> u32 {
        10
    }
    pub(super) fn queue_size() -> usize {
        2048
    }
    pub(super) fn batch_size() -> usize {
        512
    }
    pub(super) fn flush_interval() -> HumanDuration {
        HumanDuration(Duration::from_secs(1))
    }
    pub(super) fn success_rate_interval() -> HumanDuration {
        HumanDuration(Duration::from_secs(10))
    }
    pub(super) fn success_rate_min_requests() -> u64 {
        100
    }
    pub(super) fn success_rate_min_hosts() -> usize {
        5
    }
    pub(super) fn health_path() -> String {
        "/health".to_owned()
    }
    pub(super) fn health_interval() -> HumanDuration {
        HumanDuration(Duration::from_secs(5))
    }
    pub(super) fn health_timeout() -> HumanDuration {
        HumanDuration(Duration::from_secs(1))
    }
    pub(super) fn health_unhealthy_threshold() -> u32 {
        2
    }
    pub(super) fn health_healthy_threshold() -> u32 {
        1
    }
    pub(super) fn sample_ratio() -> f64 {
        1.0
    }
    pub(super) fn yes() -> bool {
        true
    }
    pub(super) fn metrics_interval() -> HumanDuration {
        HumanDuration(Duration::from_secs(10))
    }
    pub(super) fn export_timeout() -> HumanDuration {
        HumanDuration(Duration::from_secs(5))
    }
    // Adaptive concurrency, see docs/proxy-config.md for why these values.
    pub(super) fn concurrency_min_limit() -> u32 {
        4
    }
    pub(super) fn concurrency_max_limit() -> u32 {
        1000
    }
    pub(super) fn concurrency_initial_limit() -> u32 {
        20
    }
    pub(super) fn concurrency_sample_window() -> HumanDuration {
        HumanDuration(Duration::from_millis(100))
    }
    pub(super) fn concurrency_min_samples() -> u32 {
        10
    }
    pub(super) fn concurrency_sample_percentile() -> f64 {
        50.0
    }
    pub(super) fn concurrency_latency_tolerance() -> f64 {
        1.5
    }
    pub(super) fn concurrency_smoothing() -> f64 {
        0.2
    }
    pub(super) fn concurrency_baseline_window() -> HumanDuration {
        HumanDuration(Duration::from_secs(60))
    }
}
