//! An upstream service at run time: its endpoints, its balancer, its connection pools, its retry budget.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderMap;
use http::header::COOKIE;

use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tower::retry::budget::{Budget, TpsBudget};

use crate::balance::{Balancer, Endpoint, hash};
use crate::body::ProxyBody;
use crate::config::{BalancerKind, HashKey, Protocol, RetryBudgetConfig, UpstreamConfig};

/// Idle pooled connections are closed after this long.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// A pooled HTTP client towards the endpoints.
pub(crate) type HttpClient = Client<HttpConnector, ProxyBody>;

/// A destination service with everything needed to send it a request.
#[derive(Debug)]
pub(crate) struct Upstream {
    name: Arc<str>,
    endpoints: Vec<Arc<Endpoint>>,
    balancer: Balancer,
    hash_key: Option<HashKey>,
    protocol: Protocol,
    connect_timeout: Duration,
    http1: HttpClient,
    http2: HttpClient,
    budget: TpsBudget,
}

impl Upstream {
    /// Builds the run-time upstream for a validated `[[upstream]]` table.
    pub(crate) fn from_config(config: &UpstreamConfig) -> Self {
        let endpoints: Vec<Arc<Endpoint>> = config
            .endpoints
            .iter()
            .map(|e| Arc::new(Endpoint::new(e.address.0.clone(), e.weight)))
            .collect();
        let mut upstream = Self::new(
            &config.name,
            endpoints,
            config.balancer,
            config.protocol,
            config.connect_timeout.0,
            &config.retry_budget,
        );
        upstream.hash_key = config.hash_key.clone();
        upstream
    }

    /// The local application behind the inbound listener, as a one-endpoint upstream.
    pub(crate) fn local_app(
        name: &str,
        endpoint: Endpoint,
        protocol: Protocol,
        connect_timeout: Duration,
    ) -> Self {
        let no_retries = RetryBudgetConfig {
            ratio: 0.0,
            min_per_second: 0,
            ttl: crate::config::HumanDuration(Duration::from_secs(1)),
        };
        Self::new(
            name,
            vec![Arc::new(endpoint)],
            BalancerKind::RoundRobin,
            protocol,
            connect_timeout,
            &no_retries,
        )
    }

    fn new(
        name: &str,
        endpoints: Vec<Arc<Endpoint>>,
        balancer: BalancerKind,
        protocol: Protocol,
        connect_timeout: Duration,
        budget: &RetryBudgetConfig,
    ) -> Self {
        let balancer = Balancer::new(balancer, &endpoints);
        Self {
            name: name.into(),
            endpoints,
            balancer,
            hash_key: None,
            protocol,
            connect_timeout,
            http1: client(connect_timeout, false),
            http2: client(connect_timeout, true),
            // Validation keeps ttl within 1..=60s and ratio within 0..=1000, which TpsBudget asserts.
            budget: TpsBudget::new(budget.ttl.0, budget.min_per_second, budget.ratio),
        }
    }

    /// The upstream's name, for errors and logs.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// The hash a consistent-hashing balancer uses for a request with `headers` from `client`;
    /// `None` for other balancers or when the request lacks the key.
    pub(crate) fn request_key(&self, headers: &HeaderMap, client: IpAddr) -> Option<u64> {
        if !self.balancer.uses_key() {
            return None;
        }
        let source_ip = || match client {
            IpAddr::V4(ip) => hash(&ip.octets()),
            IpAddr::V6(ip) => hash(&ip.octets()),
        };
        match &self.hash_key {
            None | Some(HashKey::SourceIp) => Some(source_ip()),
            Some(HashKey::Header(name)) => headers
                .get(name.as_str())
                .map(|value| hash(value.as_bytes())),
            Some(HashKey::Cookie(name)) => {
                cookie(headers, name).map(|value| hash(value.as_bytes()))
            }
        }
    }

    /// Picks an endpoint for a request with hash `key`, steering away from `avoid` when possible.
    pub(crate) fn pick(
        &self,
        avoid: Option<usize>,
        key: Option<u64>,
    ) -> Option<(usize, &Arc<Endpoint>)> {
        let index = self.balancer.pick(&self.endpoints, avoid, key)?;
        self.endpoints.get(index).map(|endpoint| (index, endpoint))
    }

    /// The balancer's configuration name.
    pub(crate) fn balancer_name(&self) -> &'static str {
        self.balancer.name()
    }

    /// Limit on opening a connection to an endpoint.
    pub(crate) fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }

    /// The client for a request that arrived over HTTP/2 (`downstream_h2`) or HTTP/1.
    pub(crate) fn client(&self, downstream_h2: bool) -> (&HttpClient, bool) {
        let h2 = match self.protocol {
            Protocol::Auto => downstream_h2,
            Protocol::Http1 => false,
            Protocol::Http2 => true,
        };
        (if h2 { &self.http2 } else { &self.http1 }, h2)
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

/// The value of cookie `name` in the request's `Cookie` headers.
fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .find_map(|pair| pair.trim().strip_prefix(name)?.strip_prefix('='))
}

fn client(connect_timeout: Duration, http2_only: bool) -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(connect_timeout));
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .http2_only(http2_only)
        .build(connector)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_cookies_among_several() {
        let mut headers = HeaderMap::new();
        headers.append(
            COOKIE,
            http::HeaderValue::from_static("theme=dark; session=abc"),
        );
        headers.append(COOKIE, http::HeaderValue::from_static("sessionx=no"));
        assert_eq!(cookie(&headers, "session"), Some("abc"));
        assert_eq!(cookie(&headers, "theme"), Some("dark"));
        assert_eq!(cookie(&headers, "missing"), None);
    }
}
