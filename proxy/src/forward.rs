//! Forwarding one request: route → split → balancer → endpoint, with timeouts and retries.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::{self, HeaderValue};
use http::request::Parts;
use http::uri::Authority;
use http::{Request, Response, StatusCode, Uri, Version};
use http_body::Body as _;
use hyper::body::Incoming;
use tower::retry::backoff::Backoff;

use crate::body::{self, ProxyBody, Replayable};
use crate::headers::{append_forwarded_for, strip_hop_by_hop};
use crate::retry::Outcome;
use crate::route::{Route, RouteTable};
use crate::telemetry::{AttemptFacts, RequestFacts, SpanRecord, TraceContext, Tracer};
use crate::traffic::MAX_MIRROR_BODY;
use crate::upgrade;
use crate::upstream::Upstream;

/// Header naming why the proxy itself answered, so clients and tests can tell it from the app.
pub(crate) const ERROR_HEADER: &str = "x-meshscope-error";

/// Which side of the mesh a listener is on; it decides which spans are recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    /// Mesh → local application: one SERVER span per request.
    Inbound,
    /// Local application → mesh: one CLIENT span per attempt.
    Outbound,
}

/// What a listener hands to each of its requests besides the route table.
#[derive(Debug, Clone)]
pub(crate) struct Listening {
    /// The listener's side.
    pub(crate) side: Side,
    /// Where spans go; `None` when telemetry is off.
    pub(crate) tracer: Option<Arc<Tracer>>,
}

/// Answers one downstream request from `client` using `routes`. Never fails: every problem becomes
/// an HTTP error response with a plain-text reason.
pub(crate) async fn handle(
    listening: &Listening,
    routes: &RouteTable,
    client: SocketAddr,
    mut request: Request<Incoming>,
) -> Response<ProxyBody> {
    let server_span = match (listening.side, &listening.tracer) {
        (Side::Inbound, Some(tracer)) => {
            SpanRecord::server(tracer, &facts(&request), client, "inbound")
        }
        _ => None,
    };
    let Some((mut span, context)) = server_span else {
        return route_and_send(listening, routes, client, request).await;
    };
    // The application's spans become children of this SERVER span.
    context.inject(request.headers_mut());
    let response = route_and_send(listening, routes, client, request).await;
    span.response(response.status(), response.headers());
    let (parts, body) = response.into_parts();
    Response::from_parts(parts, span.finish_with(body))
}

/// The facts about a request that its spans record.
fn facts<B>(request: &Request<B>) -> RequestFacts<'_> {
    RequestFacts {
        method: request.method(),
        uri: request.uri(),
        headers: request.headers(),
        version: request.version(),
    }
}

async fn route_and_send(
    listening: &Listening,
    routes: &RouteTable,
    client: SocketAddr,
    request: Request<Incoming>,
) -> Response<ProxyBody> {
    let Some(route) = routes.find(&request) else {
        let reason = format!(
            "no route matches {} {}",
            request.method(),
            request.uri().path()
        );
        return error(StatusCode::NOT_FOUND, "no-route", reason);
    };
    let started = Instant::now();
    let response = on_route(listening, route, client, request).await;
    route.stats().record(response.status(), started.elapsed());
    response
}

/// Forwards a request that matched `route`.
async fn on_route(
    listening: &Listening,
    route: &Route,
    client: SocketAddr,
    mut request: Request<Incoming>,
) -> Response<ProxyBody> {
    let Some(upstream) = route.pick_upstream() else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "no-upstream",
            format!("route {:?} has no upstream", route.name()),
        );
    };
    if let Some(answer) = gate(route, request.headers_mut(), client).await {
        return answer;
    }
    let Some(admission) = upstream.admit() else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "overflow",
            format!(
                "upstream {:?} is at its circuit breaker's max_requests",
                upstream.name()
            ),
        );
    };
    if upgrade::is_upgrade(&request) {
        return upgrade::forward(upstream, client, request, route.timeout(), admission).await;
    }
    let (mut parts, body) = request.into_parts();
    strip_hop_by_hop(&mut parts.headers, true);
    append_forwarded_for(&mut parts.headers, client.ip());
    route.policies().request_headers.apply(&mut parts.headers);

    // A body can be sent again only if it was kept; it is kept only when a retry or a mirror could
    // need it and its declared length is within the cap, so streams (gRPC, chunked uploads) are
    // never buffered.
    let mirror = route.policies().mirror.as_ref().filter(|m| m.chosen());
    let retry_cap = route
        .retry()
        .filter(|p| p.allows_method(&parts.method))
        .map(|p| p.max_replay_bytes());
    let replay_cap = retry_cap.or(mirror.map(|_| MAX_MIRROR_BODY));
    let body = match replay_cap {
        Some(cap) if body.size_hint().exact().is_some_and(|len| len <= cap) => {
            match Replayable::read(body).await {
                Ok(kept) => RequestBody::Replayable(kept),
                Err(e) => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "request-body",
                        format!("reading the request body failed: {e}"),
                    );
                }
            }
        }
        _ => RequestBody::Streaming(Some(body)),
    };
    match (mirror, &body) {
        (Some(mirror), RequestBody::Replayable(kept)) => mirror.send(&parts, kept),
        (Some(_), RequestBody::Streaming(_)) => {
            tracing::debug!(
                route = route.name(),
                "not mirrored: the body is streamed or too large"
            );
        }
        (None, _) => {}
    }

    let tracing = match (listening.side, &listening.tracer) {
        (Side::Outbound, Some(tracer)) => AttemptTracing::new(tracer, &parts.headers),
        _ => None,
    };
    let key = upstream.request_key(&parts.headers, client.ip());
    let attempts = send(route, upstream, &parts, body, key, tracing.as_ref());
    let response = match route.timeout() {
        None => attempts.await,
        Some(limit) => match tokio::time::timeout(limit, attempts).await {
            Ok(response) => response,
            Err(_) => error(
                StatusCode::GATEWAY_TIMEOUT,
                "timeout",
                format!(
                    "upstream {:?} did not answer within {}",
                    upstream.name(),
                    humantime::format_duration(limit)
                ),
            ),
        },
    };
    // The request counts against the circuit breaker until its response has been sent.
    let (mut parts, body) = response.into_parts();
    route.policies().response_headers.apply(&mut parts.headers);
    Response::from_parts(parts, body::hold(body, admission))
}

/// Rate limit and injected faults, in that order: the proxy's own answer instead of forwarding, if
/// any. Fault control headers are removed from `headers`.
async fn gate(
    route: &Route,
    headers: &mut http::HeaderMap,
    client: SocketAddr,
) -> Option<Response<ProxyBody>> {
    let policies = route.policies();
    if let Some(limit) = &policies.rate_limit
        && let Err(wait) = limit.check(headers, client.ip())
    {
        route.stats().rate_limited.increment();
        let seconds = wait.as_secs_f64().ceil().max(1.0) as u64;
        let mut answer = error(
            StatusCode::TOO_MANY_REQUESTS,
            "rate-limited",
            format!("rate limit reached; retry in {seconds}s"),
        );
        answer
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        return Some(answer);
    }
    let injection = policies
        .fault
        .as_ref()
        .map(|f| f.decide(headers))
        .unwrap_or_default();
    if let Some(delay) = injection.delay {
        tokio::time::sleep(delay).await;
    }
    injection
        .abort
        .map(|status| error(status, "fault-abort", format!("fault injected: {status}")))
}

/// How the attempts of one outbound request are traced: all share a trace and a parent.
struct AttemptTracing {
    tracer: Arc<Tracer>,
    /// The caller's span, if it sent one.
    parent: Option<TraceContext>,
    /// Supplies the trace id: the caller's, or a new trace's.
    trace: TraceContext,
}

impl AttemptTracing {
    /// `None` when the caller's trace is not sampled: then its headers pass through untouched.
    fn new(tracer: &Arc<Tracer>, headers: &http::HeaderMap) -> Option<Self> {
        let parent = TraceContext::extract(headers);
        if parent.is_some_and(|p| !p.sampled) {
            return None;
        }
        Some(Self {
            tracer: Arc::clone(tracer),
            parent,
            trace: parent.unwrap_or_else(TraceContext::root),
        })
    }
}

/// The request body as each attempt sees it.
enum RequestBody {
    /// Kept in memory: every attempt gets a copy.
    Replayable(Replayable),
    /// Passed through as it arrives: only one attempt can have it.
    Streaming(Option<Incoming>),
}

impl RequestBody {
    fn next(&mut self) -> Option<ProxyBody> {
        match self {
            RequestBody::Replayable(kept) => Some(kept.body()),
            RequestBody::Streaming(body) => body.take().map(body::stream),
        }
    }

    fn can_replay(&self) -> bool {
        matches!(self, RequestBody::Replayable(_))
    }
}

/// Sends attempts until one succeeds or retrying is not allowed, and answers with the last result.
async fn send(
    route: &Route,
    upstream: &Upstream,
    parts: &Parts,
    mut body: RequestBody,
    key: Option<u64>,
    tracing: Option<&AttemptTracing>,
) -> Response<ProxyBody> {
    upstream.deposit();
    let policy = route
        .retry()
        .filter(|p| body.can_replay() && p.allows_method(&parts.method));
    let mut backoff = policy.map(|p| p.backoff());
    let mut avoid = None;
    let mut retries = 0;
    loop {
        let Some(endpoint) = upstream.pick(avoid.as_ref(), key) else {
            return no_endpoint(upstream);
        };
        let Some(attempt_body) = body.next() else {
            return error(
                StatusCode::BAD_GATEWAY,
                "body-consumed",
                "the request body was already sent".to_owned(),
            );
        };
        let (client, h2) = upstream.client(parts.version == Version::HTTP_2);
        let mut request = match upstream_request(parts, endpoint.address(), attempt_body, h2) {
            Ok(request) => request,
            Err(e) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "bad-request",
                    format!("cannot forward this request: {e}"),
                );
            }
        };
        let span = tracing.map(|t| {
            let attempt = AttemptFacts {
                route: route.name(),
                upstream: upstream.name(),
                endpoint: endpoint.address(),
                balancer: upstream.balancer_name(),
                retry: retries,
            };
            SpanRecord::attempt(&t.tracer, &facts(&request), t.trace, t.parent, &attempt)
        });
        if let Some(context) = span.as_ref().and_then(SpanRecord::context) {
            context.inject(request.headers_mut());
        }

        upstream.stats().attempts.increment();
        let in_flight = endpoint.start();
        let per_try = policy.and_then(|p| p.per_try_timeout());
        let result = with_optional_timeout(per_try, client.request(request)).await;
        let (outcome, answer) = match result {
            Some(Ok(response)) => {
                in_flight.finish();
                (Outcome::Status(response.status()), Ok(response))
            }
            Some(Err(e)) if e.is_connect() => (Outcome::ConnectFailure, Err(e.to_string())),
            Some(Err(e)) => (Outcome::Broken, Err(e.to_string())),
            None => (Outcome::PerTryTimeout, Err("per-try timeout".to_owned())),
        };
        upstream.observe(&endpoint, outcome);

        let retry = policy.is_some_and(|p| retries < p.attempts() && p.retries(outcome));
        if !retry || !upstream.withdraw() {
            if retry {
                upstream.stats().budget_exhausted.increment();
                tracing::debug!(upstream = upstream.name(), "retry budget exhausted");
            }
            let response = finish(upstream, endpoint.address(), outcome, answer);
            return match span {
                Some(mut span) => {
                    span.response(response.status(), response.headers());
                    let (parts, body) = response.into_parts();
                    Response::from_parts(parts, span.finish_with(body))
                }
                None => response,
            };
        }
        tracing::debug!(upstream = upstream.name(), endpoint = %endpoint.address(), ?outcome, "retrying");
        if let Some(mut span) = span {
            match &answer {
                Ok(response) => span.response(response.status(), response.headers()),
                Err(_) => span.failed(outcome.error_kind()),
            }
            span.finish();
        }
        drop(answer);
        if let Some(backoff) = backoff.as_mut() {
            backoff.next_backoff().await;
        }
        retries += 1;
        upstream.stats().retries.increment();
        avoid = Some(endpoint);
    }
}

/// Runs `future`, giving up after `limit` if there is one; `None` means it timed out.
async fn with_optional_timeout<F: Future>(limit: Option<Duration>, future: F) -> Option<F::Output> {
    match limit {
        Some(limit) => tokio::time::timeout(limit, future).await.ok(),
        None => Some(future.await),
    }
}

/// The downstream answer for the last attempt.
fn finish(
    upstream: &Upstream,
    address: &Authority,
    outcome: Outcome,
    answer: Result<Response<Incoming>, String>,
) -> Response<ProxyBody> {
    match answer {
        Ok(response) => {
            let (mut parts, body) = response.into_parts();
            strip_hop_by_hop(&mut parts.headers, false);
            Response::from_parts(parts, body::stream(body))
        }
        Err(reason) => failure(upstream, address, outcome, &reason),
    }
}

/// The proxy's own answer when an attempt to `address` got no response.
pub(crate) fn failure(
    upstream: &Upstream,
    address: &Authority,
    outcome: Outcome,
    reason: &str,
) -> Response<ProxyBody> {
    let name = upstream.name();
    let (status, text) = match outcome {
        Outcome::ConnectFailure => (
            StatusCode::BAD_GATEWAY,
            format!("cannot connect to upstream {name:?} at {address}: {reason}"),
        ),
        Outcome::PerTryTimeout => (
            StatusCode::GATEWAY_TIMEOUT,
            format!("upstream {name:?} at {address} timed out"),
        ),
        Outcome::Broken | Outcome::Status(_) => (
            StatusCode::BAD_GATEWAY,
            format!("upstream {name:?} at {address} failed: {reason}"),
        ),
    };
    error(status, outcome.error_kind(), text)
}

/// The proxy's answer when `upstream` has no endpoint to offer.
pub(crate) fn no_endpoint(upstream: &Upstream) -> Response<ProxyBody> {
    let name = upstream.name();
    if upstream.has_endpoints() {
        let reason = format!("every endpoint of upstream {name:?} is ejected");
        error(StatusCode::SERVICE_UNAVAILABLE, "all-ejected", reason)
    } else {
        let reason = format!("upstream {name:?} has no endpoints");
        error(StatusCode::SERVICE_UNAVAILABLE, "no-endpoints", reason)
    }
}

/// The request to send to `address`: same method, path, headers and body; HTTP version of the
/// upstream; `Host` kept, or taken from the original URI when an HTTP/2 request goes out as HTTP/1.
pub(crate) fn upstream_request(
    parts: &Parts,
    address: &Authority,
    body: ProxyBody,
    h2: bool,
) -> Result<Request<ProxyBody>, http::Error> {
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let uri = Uri::builder()
        .scheme("http")
        .authority(address.clone())
        .path_and_query(path)
        .build()?;
    let mut request = Request::builder()
        .method(parts.method.clone())
        .uri(uri)
        .version(if h2 {
            Version::HTTP_2
        } else {
            Version::HTTP_11
        })
        .body(body)?;
    *request.headers_mut() = parts.headers.clone();
    if !h2
        && !request.headers().contains_key(header::HOST)
        && let Some(authority) = parts.uri.authority()
        && let Ok(host) = HeaderValue::from_str(authority.as_str())
    {
        request.headers_mut().insert(header::HOST, host);
    }
    Ok(request)
}

/// A response from the proxy itself.
pub(crate) fn error(status: StatusCode, kind: &'static str, reason: String) -> Response<ProxyBody> {
    let mut response = Response::new(body::text(format!("meshscope-proxy: {reason}\n")));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(ERROR_HEADER, HeaderValue::from_static(kind));
    response
}
