//! An upstream service at run time: its endpoints, its balancer, its connection pools, its retry
//! budget, its outlier detection, its circuit breaker and its adaptive concurrency limit.

use std::net::IpAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use http::HeaderMap;
use http::uri::Authority;

use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tower::retry::budget::{Budget, TpsBudget};

use crate::balance::{Balancer, Endpoint};
use crate::body::ProxyBody;
pub(crate) use crate::breaker::Admission;
use crate::breaker::{CircuitBreaker, Limit};
use crate::concurrency::ConcurrencyLimiter;
use crate::config::{
    BalancerKind, CircuitBreakerConfig, EndpointConfig, HashKey, HumanDuration, InboundConfig,
    Protocol, RetryBudgetConfig, UpstreamConfig,
};
use crate::headers::request_key;
use crate::health_check::HealthCheck;
use crate::outlier::OutlierPolicy;
use crate::pool::{self, PoolSettings};
use crate::retry::Outcome;
use crate::stats::UpstreamStats;
use crate::telemetry::FixedAttribute;

/// Most endpoints of an upstream that local and fleet ejections together may leave out before the
/// fleet's are ignored (the collector applies the same cap on its side).
const FLEET_MAX_EJECTED_PERCENT: usize = 50;

/// A pooled HTTP client towards the endpoints.
pub(crate) type HttpClient = Client<HttpConnector, ProxyBody>;

/// A destination service with everything needed to send it a request.
#[derive(Debug)]
pub(crate) struct Upstream {
    name: Arc<str>,
    kind: BalancerKind,
    /// Whether the balancer picks by a request key. Fixed by `kind` (every endpoint set's balancer
    /// is built from it), so requests do not read the current set to learn it.
    uses_key: bool,
    /// `name` and the balancer's name as CLIENT span attributes, encoded once.
    span_name: FixedAttribute,
    span_balancer: FixedAttribute,
    /// The current endpoints and balancer state; replaced whole when discovery changes them.
    set: RwLock<Arc<EndpointSet>>,
    hash_key: Option<HashKey>,
    protocol: Protocol,
    connect_timeout: Duration,
    http1: HttpClient,
    http2: HttpClient,
    /// Idle HTTP/1.1 connections kept per endpoint (the endpoints keep their own pools).
    max_idle: usize,
    budget: TpsBudget,
    outlier: Option<OutlierPolicy>,
    health_check: Option<HealthCheck>,
    panic_threshold: u32,
    breaker: Arc<CircuitBreaker>,
    concurrency: Option<Arc<ConcurrencyLimiter>>,
    stats: UpstreamStats,
}

/// The endpoints an upstream balances over at one moment, with the balancer state built for them.
#[derive(Debug)]
struct EndpointSet {
    endpoints: Vec<Arc<Endpoint>>,
    balancer: Balancer,
}

impl Upstream {
    /// Builds the run-time upstream for a validated `[[upstream]]` table, starting with `endpoints`.
    pub(crate) fn new(config: &UpstreamConfig, endpoints: &[(Authority, u32)]) -> Self {
        let endpoints: Vec<Arc<Endpoint>> = endpoints
            .iter()
            .map(|(address, weight)| Arc::new(Endpoint::new(address.clone(), *weight)))
            .collect();
        let budget = &config.retry_budget;
        let breaker = Arc::new(CircuitBreaker::new(&config.circuit_breaker));
        let idle = breaker.max_idle_per_endpoint();
        let balancer = Balancer::new(config.balancer, &endpoints);
        Self {
            name: config.name.as_str().into(),
            kind: config.balancer,
            uses_key: balancer.uses_key(),
            span_name: FixedAttribute::upstream(&config.name),
            span_balancer: FixedAttribute::balancer(balancer.name()),
            set: RwLock::new(Arc::new(EndpointSet {
                balancer,
                endpoints,
            })),
            hash_key: config.hash_key.clone(),
            protocol: config.protocol,
            connect_timeout: config.connect_timeout.0,
            http1: client(config.connect_timeout.0, false, idle),
            http2: client(config.connect_timeout.0, true, idle),
            max_idle: idle,
            // Validation keeps ttl within 1..=60s and ratio within 0..=1000, which TpsBudget asserts.
            budget: TpsBudget::new(budget.ttl.0, budget.min_per_second, budget.ratio),
            outlier: config
                .outlier_detection
                .as_ref()
                .map(OutlierPolicy::from_config),
            health_check: config
                .health_check
                .as_ref()
                .and_then(HealthCheck::from_config),
            panic_threshold: config.panic_threshold,
            breaker,
            concurrency: config
                .adaptive_concurrency
                .as_ref()
                .map(|adaptive| Arc::new(ConcurrencyLimiter::new(adaptive))),
            stats: UpstreamStats::default(),
        }
    }

    /// The current endpoint set.
    fn current(&self) -> Arc<EndpointSet> {
        match self.set.read() {
            Ok(set) => Arc::clone(&set),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Switches to `wanted` endpoints (address, weight). Endpoints that stay keep their state
    /// (requests in flight, latency estimate, health); the balancer starts afresh over the new set.
    /// Requests already sent to a removed endpoint finish normally. Returns whether anything changed.
    pub(crate) fn replace_endpoints(&self, wanted: &[(Authority, u32)]) -> bool {
        let current = self.current();
        let unchanged = current.endpoints.len() == wanted.len()
            && current
                .endpoints
                .iter()
                .zip(wanted)
                .all(|(have, (address, weight))| {
                    have.address() == address && have.weight() == (*weight).max(1)
                });
        if unchanged {
            return false;
        }
        let endpoints: Vec<Arc<Endpoint>> = wanted
            .iter()
            .map(|(address, weight)| {
                current
                    .endpoints
                    .iter()
                    .find(|e| e.address() == address && e.weight() == (*weight).max(1))
                    .map_or_else(
                        || Arc::new(Endpoint::new(address.clone(), *weight)),
                        Arc::clone,
                    )
            })
            .collect();
        let next = Arc::new(EndpointSet {
            balancer: Balancer::new(self.kind, &endpoints),
            endpoints,
        });
        match self.set.write() {
            Ok(mut set) => *set = next,
            Err(poisoned) => *poisoned.into_inner() = next,
        }
        true
    }

    /// The local application behind the inbound listener: one endpoint, no retries, no ejection.
    pub(crate) fn local_app(name: &str, app: &InboundConfig) -> Self {
        let config = UpstreamConfig {
            name: name.to_owned(),
            balancer: BalancerKind::RoundRobin,
            hash_key: None,
            protocol: app.protocol,
            connect_timeout: app.connect_timeout,
            endpoints: vec![EndpointConfig {
                address: app.app.clone(),
                weight: 1,
            }],
            retry_budget: RetryBudgetConfig {
                ratio: 0.0,
                min_per_second: 0,
                ttl: HumanDuration(Duration::from_secs(1)),
            },
            outlier_detection: None,
            panic_threshold: 0,
            circuit_breaker: CircuitBreakerConfig::default(),
            health_check: None,
            adaptive_concurrency: None,
            endpoints_file: None,
            dns_refresh: None,
        };
        Self::new(&config, &[(app.app.0.clone(), 1)])
    }

    /// The upstream's name, for errors and logs.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// The hash a consistent-hashing balancer uses for a request with `headers` from `client`;
    /// `None` for other balancers or when the request lacks the key.
    pub(crate) fn request_key(&self, headers: &HeaderMap, client: IpAddr) -> Option<u64> {
        if !self.uses_key {
            return None;
        }
        request_key(
            self.hash_key.as_ref().unwrap_or(&HashKey::SourceIp),
            headers,
            client,
        )
    }

    /// Picks an endpoint for a request with hash `key`: never an ejected one (unless so many are
    /// ejected that the panic threshold applies), and not `avoid` (the endpoint that just failed)
    /// when another will do.
    pub(crate) fn pick(
        &self,
        avoid: Option<&Arc<Endpoint>>,
        key: Option<u64>,
    ) -> Option<Arc<Endpoint>> {
        let set = self.current();
        let endpoints = &set.endpoints;
        let now = Instant::now();
        let checks_health = self.outlier.is_some() || self.health_check.is_some();
        let respect_health = checks_health && !self.panicking(endpoints, now);
        // Wall-clock time only for the fleet's ejections, which only adaptive balancing reads.
        let fleet_now = if self.kind == BalancerKind::Adaptive {
            crate::stats::unix_nanos(std::time::SystemTime::now())
        } else {
            0
        };
        let honour_fleet = self.honours_fleet(endpoints, now, fleet_now);
        let healthy = |i: usize| {
            (!respect_health || endpoints[i].health().is_usable(now))
                && !(honour_fleet && endpoints[i].fleet().ejected(fleet_now))
        };
        let not_avoided = |i: usize| avoid.is_none_or(|avoid| !Arc::ptr_eq(avoid, &endpoints[i]));
        let index = set
            .balancer
            .pick(endpoints, key, |i| not_avoided(i) && healthy(i))
            .or_else(|| set.balancer.pick(endpoints, key, healthy))?;
        endpoints.get(index).cloned()
    }

    /// How many endpoints are out of balancing (ejected or failing health checks), and whether so
    /// many are that the panic threshold puts them all back; for spans.
    pub(crate) fn health_view(&self) -> (usize, bool) {
        if self.outlier.is_none() && self.health_check.is_none() {
            return (0, false);
        }
        let set = self.current();
        let now = Instant::now();
        let out = set
            .endpoints
            .iter()
            .filter(|e| !e.health().is_usable(now))
            .count();
        (out, out > 0 && self.panicking(&set.endpoints, now))
    }

    /// Whether the upstream has any endpoints at all (ejected or not).
    pub(crate) fn has_endpoints(&self) -> bool {
        !self.current().endpoints.is_empty()
    }

    /// Whether the fleet's ejections are followed for this pick: only by the `adaptive` balancer, and
    /// only while they and the local ejections together leave out at most
    /// [`FLEET_MAX_EJECTED_PERCENT`] of the endpoints (at least one may always be left out), so a wrong
    /// or stale fleet verdict can never empty an upstream.
    fn honours_fleet(&self, endpoints: &[Arc<Endpoint>], now: Instant, fleet_now: u64) -> bool {
        if self.kind != BalancerKind::Adaptive {
            return false;
        }
        let out = endpoints
            .iter()
            .filter(|e| !e.health().is_usable(now) || e.fleet().ejected(fleet_now))
            .count();
        out <= (endpoints.len() * FLEET_MAX_EJECTED_PERCENT / 100).max(1)
    }

    /// Whether too few `endpoints` are usable (not ejected, not failing health checks), so all of
    /// them are used again.
    fn panicking(&self, endpoints: &[Arc<Endpoint>], now: Instant) -> bool {
        let total = endpoints.len();
        let usable = endpoints
            .iter()
            .filter(|e| e.health().is_usable(now))
            .count();
        let panicking = usable * 100 < total * self.panic_threshold as usize;
        if panicking {
            tracing::debug!(upstream = %self.name, usable, total, "below the panic threshold: ignoring ejections");
        }
        panicking
    }

    /// Runs the outlier policy's success-rate comparison if its window has closed.
    pub(crate) fn evaluate_success_rates(&self) {
        let Some(policy) = &self.outlier else { return };
        for endpoint in policy.evaluate_success_rates(&self.current().endpoints) {
            self.stats.ejections.increment();
            tracing::warn!(upstream = %self.name, endpoint = %endpoint.address(), "endpoint ejected: success rate below its peers");
        }
    }

    /// The active health check, if configured.
    pub(crate) fn health_check(&self) -> Option<&HealthCheck> {
        self.health_check.as_ref()
    }

    /// Reports how an attempt to `endpoint` ended, for outlier detection.
    pub(crate) fn observe(&self, endpoint: &Endpoint, outcome: Outcome) {
        let Some(policy) = &self.outlier else { return };
        if let Some(duration) = policy.observe(&self.current().endpoints, endpoint, outcome) {
            self.stats.ejections.increment();
            tracing::warn!(upstream = %self.name, endpoint = %endpoint.address(), ?duration, "endpoint ejected");
        }
    }

    /// Admits one more request under the circuit breaker, counted until the returned guard is
    /// dropped; `Err` names the limit that is reached. An HTTP/1.1 request (`h2 == false`), an
    /// upgrade or a TCP connection holds a connection slot, waiting in line for one if allowed.
    pub(crate) async fn admit(&self, h2: bool, may_wait: bool) -> Result<Admission, Limit> {
        self.breaker.admit(!h2, may_wait).await
    }

    /// The circuit breaker's state.
    pub(crate) fn breaker(&self) -> &CircuitBreaker {
        &self.breaker
    }

    /// The adaptive concurrency limit, when `[upstream.adaptive_concurrency]` is set.
    pub(crate) fn concurrency(&self) -> Option<&Arc<ConcurrencyLimiter>> {
        self.concurrency.as_ref()
    }

    /// Whether requests to the upstream go out over HTTP/2, for one that arrived over HTTP/2
    /// (`downstream_h2`) or HTTP/1.
    pub(crate) fn speaks_h2(&self, downstream_h2: bool) -> bool {
        match self.protocol {
            Protocol::Auto => downstream_h2,
            Protocol::Http1 => false,
            Protocol::Http2 => true,
        }
    }

    /// The upstream's counters.
    pub(crate) fn stats(&self) -> &UpstreamStats {
        &self.stats
    }

    /// The current endpoints, in order.
    pub(crate) fn endpoints(&self) -> Vec<Arc<Endpoint>> {
        self.current().endpoints.clone()
    }

    /// The balancer's configuration name.
    pub(crate) fn balancer_name(&self) -> &'static str {
        self.current().balancer.name()
    }

    /// The upstream's name and its balancer's, as span attributes.
    pub(crate) fn span_attributes(&self) -> (&FixedAttribute, &FixedAttribute) {
        (&self.span_name, &self.span_balancer)
    }

    /// Limit on opening a connection to an endpoint.
    pub(crate) fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }

    /// The client for a request that arrived over HTTP/2 (`downstream_h2`) or HTTP/1.
    pub(crate) fn client(&self, downstream_h2: bool) -> (&HttpClient, bool) {
        let h2 = self.speaks_h2(downstream_h2);
        (if h2 { &self.http2 } else { &self.http1 }, h2)
    }

    /// How the request path opens and keeps HTTP/1.1 connections to the endpoints.
    pub(crate) fn pool_settings(&self) -> PoolSettings {
        PoolSettings {
            connect_timeout: self.connect_timeout,
            max_idle: self.max_idle,
        }
    }

    /// Counts a request towards the retry budget.
    pub(crate) fn deposit(&self) {
        self.budget.deposit();
    }

    /// Takes one retry from the budget; `false` when the budget is spent.
    pub(crate) fn withdraw(&self) -> bool {
        self.budget.withdraw()
    }
}

fn client(connect_timeout: Duration, http2_only: bool, max_idle: usize) -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(connect_timeout));
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(pool::IDLE_TIMEOUT)
        .pool_max_idle_per_host(max_idle)
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .http2_only(http2_only)
        .build(connector)
}
