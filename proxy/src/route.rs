//! Route tables: which route a request takes, and which upstream of its split it goes to.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, Method, Request};
use regex::Regex;

use crate::config::{
    FaultConfig, HeaderMatchConfig, HeaderRewriteConfig, InboundConfig, MatchConfig,
    RateLimitConfig, RouteConfig,
};
use crate::retry::RetryPolicy;
use crate::stats::RouteStats;
use crate::telemetry::FixedAttribute;
use crate::traffic::{Fault, HeaderOps, Mirror, RateLimiter};
use crate::upstream::Upstream;

/// Routes of one listener, tried in order.
#[derive(Debug)]
pub(crate) struct RouteTable {
    routes: Vec<Route>,
}

impl RouteTable {
    /// Routes in the given order.
    pub(crate) fn new(routes: Vec<Route>) -> Self {
        Self { routes }
    }

    /// The routes, in order.
    pub(crate) fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// The first route whose match accepts `request`.
    pub(crate) fn find<B>(&self, request: &Request<B>) -> Option<&Route> {
        self.routes
            .iter()
            .find(|route| route.matcher.accepts(request))
    }
}

/// One route: its match, its weighted destinations and its policies.
#[derive(Debug)]
pub(crate) struct Route {
    name: Arc<str>,
    /// `name` as its CLIENT spans' attribute, encoded once.
    span_name: FixedAttribute,
    matcher: Matcher,
    splits: Vec<(Arc<Upstream>, u32)>,
    total_weight: u64,
    timeout: Option<Duration>,
    retry: Option<RetryPolicy>,
    policies: TrafficPolicies,
    stats: RouteStats,
}

/// A route's traffic control (see `traffic/`).
#[derive(Debug)]
pub(crate) struct TrafficPolicies {
    /// Token-bucket limit.
    pub(crate) rate_limit: Option<RateLimiter>,
    /// Injected delays and aborts.
    pub(crate) fault: Option<Fault>,
    /// Request header rewrites.
    pub(crate) request_headers: HeaderOps,
    /// Response header rewrites.
    pub(crate) response_headers: HeaderOps,
    /// Shadow traffic.
    pub(crate) mirror: Option<Mirror>,
}

impl TrafficPolicies {
    fn new(
        rate_limit: Option<&RateLimitConfig>,
        fault: Option<&FaultConfig>,
        headers: &HeaderRewriteConfig,
        mirror: Option<Mirror>,
    ) -> Self {
        Self {
            rate_limit: rate_limit.map(RateLimiter::from_config),
            fault: fault.map(Fault::from_config),
            request_headers: HeaderOps::from_config(&headers.request),
            response_headers: HeaderOps::from_config(&headers.response),
            mirror,
        }
    }
}

impl Route {
    /// The inbound listener's one route: everything to the local application `app`, under the
    /// `[inbound]` table's timeout, rate limit, faults and header rewrites.
    pub(crate) fn inbound(app: Arc<Upstream>, config: &InboundConfig) -> Self {
        Self {
            name: "inbound".into(),
            span_name: FixedAttribute::route("inbound"),
            matcher: Matcher::default(),
            splits: vec![(app, 1)],
            total_weight: 1,
            timeout: config.timeout.map(|t| t.0),
            retry: None,
            policies: TrafficPolicies::new(
                config.rate_limit.as_ref(),
                config.fault.as_ref(),
                &config.headers,
                None,
            ),
            stats: RouteStats::default(),
        }
    }

    /// Builds a validated `[[outbound.route]]`, resolving upstream names in `upstreams`.
    /// `None` if an upstream is unknown, which validation has already ruled out.
    pub(crate) fn from_config(
        config: &RouteConfig,
        upstreams: &HashMap<String, Arc<Upstream>>,
    ) -> Option<Self> {
        let named: Vec<(&str, u32)> = match &config.upstream {
            Some(name) => vec![(name.as_str(), 1)],
            None => config
                .splits
                .iter()
                .map(|s| (s.upstream.as_str(), s.weight))
                .collect(),
        };
        let splits = named
            .into_iter()
            .map(|(name, weight)| upstreams.get(name).map(|u| (Arc::clone(u), weight)))
            .collect::<Option<Vec<_>>>()?;
        let total_weight = splits.iter().map(|(_, w)| u64::from(*w)).sum();
        let mirror = match &config.mirror {
            Some(mirror) => Some(Mirror::new(
                Arc::clone(upstreams.get(&mirror.upstream)?),
                mirror.percent,
            )),
            None => None,
        };
        let policies = TrafficPolicies::new(
            config.rate_limit.as_ref(),
            config.fault.as_ref(),
            &config.headers,
            mirror,
        );
        Some(Self {
            name: config.name.as_str().into(),
            span_name: FixedAttribute::route(&config.name),
            matcher: Matcher::from_config(&config.matches),
            splits,
            total_weight,
            timeout: config.timeout.map(|t| t.0),
            retry: config.retry.as_ref().and_then(RetryPolicy::from_config),
            policies,
            stats: RouteStats::default(),
        })
    }

    /// The route's counters.
    pub(crate) fn stats(&self) -> &RouteStats {
        &self.stats
    }

    /// The route's traffic control.
    pub(crate) fn policies(&self) -> &TrafficPolicies {
        &self.policies
    }

    /// The route's name.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// The route's name as a span attribute.
    pub(crate) fn span_name(&self) -> &FixedAttribute {
        &self.span_name
    }

    /// Limit on waiting for response headers across all attempts.
    pub(crate) fn timeout(&self) -> Option<Duration> {
        self.timeout
    }

    /// The retry policy, if any.
    pub(crate) fn retry(&self) -> Option<&RetryPolicy> {
        self.retry.as_ref()
    }

    /// Draws an upstream from the split in proportion to the weights.
    pub(crate) fn pick_upstream(&self) -> Option<&Arc<Upstream>> {
        if self.splits.len() == 1 {
            return self.splits.first().map(|(upstream, _)| upstream);
        }
        let mut point = fastrand::u64(..self.total_weight.max(1));
        for (upstream, weight) in &self.splits {
            if point < u64::from(*weight) {
                return Some(upstream);
            }
            point -= u64::from(*weight);
        }
        self.splits.last().map(|(upstream, _)| upstream)
    }
}

/// Compiled request conditions; all must hold.
#[derive(Debug, Default)]
struct Matcher {
    host: Option<String>,
    path: Option<PathMatch>,
    method: Option<Method>,
    headers: Vec<(HeaderName, HeaderMatch)>,
}

#[derive(Debug)]
enum PathMatch {
    Prefix(String),
    Exact(String),
    Regex(Regex),
}

#[derive(Debug)]
enum HeaderMatch {
    Exact(String),
    Prefix(String),
    Regex(Regex),
    Present(bool),
}

impl Matcher {
    fn from_config(config: &MatchConfig) -> Self {
        let path = if let Some(prefix) = &config.path_prefix {
            Some(PathMatch::Prefix(prefix.clone()))
        } else if let Some(exact) = &config.path_exact {
            Some(PathMatch::Exact(exact.clone()))
        } else {
            config
                .path_regex
                .as_ref()
                .map(|p| PathMatch::Regex(p.0.clone()))
        };
        let headers = config
            .headers
            .iter()
            .filter_map(|(name, rule)| {
                let name = HeaderName::from_bytes(name.as_bytes()).ok()?;
                Some((name, HeaderMatch::from_config(rule)?))
            })
            .collect();
        Self {
            host: config.host.as_ref().map(|h| h.to_ascii_lowercase()),
            path,
            method: config.method.as_ref().map(|m| m.0.clone()),
            headers,
        }
    }

    fn accepts<B>(&self, request: &Request<B>) -> bool {
        if let Some(method) = &self.method
            && request.method() != method
        {
            return false;
        }
        if let Some(host) = &self.host
            && !request_host(request.uri(), request.headers())
                .is_some_and(|h| h.eq_ignore_ascii_case(host))
        {
            return false;
        }
        let path = request.uri().path();
        let path_ok = match &self.path {
            None => true,
            Some(PathMatch::Prefix(prefix)) => path.starts_with(prefix.as_str()),
            Some(PathMatch::Exact(exact)) => path == exact,
            Some(PathMatch::Regex(regex)) => regex.is_match(path),
        };
        path_ok
            && self
                .headers
                .iter()
                .all(|(name, rule)| rule.accepts(request.headers().get(name)))
    }
}

impl HeaderMatch {
    fn from_config(config: &HeaderMatchConfig) -> Option<Self> {
        if let Some(exact) = &config.exact {
            Some(HeaderMatch::Exact(exact.clone()))
        } else if let Some(prefix) = &config.prefix {
            Some(HeaderMatch::Prefix(prefix.clone()))
        } else if let Some(regex) = &config.regex {
            Some(HeaderMatch::Regex(regex.0.clone()))
        } else {
            config.present.map(HeaderMatch::Present)
        }
    }

    fn accepts(&self, value: Option<&http::HeaderValue>) -> bool {
        let text = value.and_then(|v| v.to_str().ok());
        match (self, text) {
            (HeaderMatch::Present(wanted), _) => value.is_some() == *wanted,
            (HeaderMatch::Exact(exact), Some(text)) => text == exact,
            (HeaderMatch::Prefix(prefix), Some(text)) => text.starts_with(prefix.as_str()),
            (HeaderMatch::Regex(regex), Some(text)) => regex.is_match(text),
            (_, None) => false,
        }
    }
}

/// The host the client asked for, without port: the URI authority (HTTP/2, absolute-form) or `Host`.
pub(crate) fn request_host<'r>(
    uri: &'r http::Uri,
    headers: &'r http::HeaderMap,
) -> Option<&'r str> {
    let authority = match uri.authority() {
        Some(authority) => authority.as_str(),
        None => headers.get(http::header::HOST)?.to_str().ok()?,
    };
    let host = match authority.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => authority,
    };
    Some(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matcher(toml_match: &str) -> Matcher {
        let config: MatchConfig = match toml::from_str(toml_match) {
            Ok(config) => config,
            Err(e) => panic!("bad test match: {e}"),
        };
        Matcher::from_config(&config)
    }

    fn request(method: &str, uri: &str, headers: &[(&str, &str)]) -> Request<()> {
        let mut builder = Request::builder().method(method).uri(uri);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        match builder.body(()) {
            Ok(request) => request,
            Err(e) => panic!("bad test request: {e}"),
        }
    }

    #[test]
    fn path_method_header_and_host() {
        let m = matcher(
            "path_prefix = \"/api\"\nmethod = \"GET\"\nhost = \"Reviews\"\nheaders = { x-user = { regex = \"j.*n\" } }",
        );
        let ok = [("host", "reviews:9080"), ("x-user", "jason")];
        assert!(m.accepts(&request("GET", "/api/v1", &ok)));
        assert!(!m.accepts(&request("POST", "/api/v1", &ok)));
        assert!(!m.accepts(&request("GET", "/web", &ok)));
        assert!(!m.accepts(&request(
            "GET",
            "/api",
            &[("host", "reviews"), ("x-user", "jasonx")]
        )));
        assert!(!m.accepts(&request(
            "GET",
            "/api",
            &[("host", "ratings"), ("x-user", "jason")]
        )));
        assert!(m.accepts(&request("GET", "http://reviews/api", &[("x-user", "jan")])));
    }

    #[test]
    fn exact_regex_and_presence() {
        assert!(matcher("path_exact = \"/a\"").accepts(&request("GET", "/a", &[])));
        assert!(!matcher("path_exact = \"/a\"").accepts(&request("GET", "/a/b", &[])));
        let by_regex = matcher("path_regex = \"/items/[0-9]+\"");
        assert!(by_regex.accepts(&request("GET", "/items/42", &[])));
        assert!(
            !by_regex.accepts(&request("GET", "/items/42/x", &[])),
            "regexes are anchored"
        );
        let absent = matcher("headers = { x-canary = { present = false } }");
        assert!(absent.accepts(&request("GET", "/", &[])));
        assert!(!absent.accepts(&request("GET", "/", &[("x-canary", "1")])));
    }
}
