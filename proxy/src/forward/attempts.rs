//! The attempts loop: endpoint picks, per-try timeouts, retries under the budget with backoff, and
//! one CLIENT span per attempt.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::{self, HeaderValue};
use http::request::Parts;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderMap, Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;
use tower::retry::backoff::Backoff;

use super::answer::{ERROR_HEADER, error, failure, no_endpoint};
use super::facts;
use super::trailers::read_to_trailers;

/// How long a retryable gRPC response is held for its trailers when the route sets no
/// `per_try_timeout`; a longer stream is passed on as it is.
const TRAILERS_HOLD: Duration = Duration::from_secs(1);
use crate::balance::Endpoint;
use crate::body::{self, ProxyBody, Replayable, TeeBody};
use crate::headers::strip_hop_by_hop;
use crate::pool::{self, Checkin, SendError};
use crate::retry::Outcome;
use crate::route::Route;
use crate::telemetry::{AttemptFacts, RequestFacts, SpanRecord, TraceContext, Tracer};
use crate::upstream::{HttpClient, Upstream};

/// How the attempts of one outbound request are traced: all share a trace and a parent.
pub(super) struct AttemptTracing {
    tracer: Arc<Tracer>,
    /// The caller's span, if it sent one.
    parent: Option<TraceContext>,
    /// Supplies the trace id and the sampling decision: the caller's, or a new trace's.
    trace: TraceContext,
}

impl AttemptTracing {
    /// `None` when the caller's trace is not sampled: then its headers pass through untouched.
    pub(super) fn new(tracer: &Arc<Tracer>, headers: &http::HeaderMap) -> Option<Self> {
        let parent = TraceContext::extract(headers);
        let trace = match parent {
            Some(parent) if !parent.sampled => return None,
            Some(parent) => parent,
            None => TraceContext::root(tracer.sample_new_trace()),
        };
        Some(Self {
            tracer: Arc::clone(tracer),
            parent,
            trace,
        })
    }
}

/// Records a CLIENT span for a request the proxy answered itself before an attempt could be sent
/// (adaptive concurrency limit, circuit breaker overflow, no usable endpoint), naming the decision;
/// returns `answer`.
pub(super) fn refused(
    tracing: Option<&AttemptTracing>,
    request: &RequestFacts<'_>,
    route: &Route,
    upstream: &Upstream,
    answer: Response<ProxyBody>,
    retry: u32,
) -> Response<ProxyBody> {
    let Some(tracing) = tracing.filter(|t| t.trace.sampled) else {
        return answer;
    };
    let decision = match answer.headers().get(ERROR_HEADER).map(|v| v.as_bytes()) {
        Some(b"overflow") => "overflow",
        Some(b"concurrency-limit") => "concurrency-limit",
        Some(b"all-ejected") => "all-ejected",
        _ => "no-endpoints",
    };
    let (ejected, _) = upstream.health_view();
    let (upstream_name, balancer) = upstream.span_attributes();
    let attempt = AttemptFacts {
        route: route.span_name(),
        upstream: upstream_name,
        endpoint: None,
        balancer,
        retry,
        decision: Some(decision),
        ejected,
    };
    let mut span = SpanRecord::attempt(
        &tracing.tracer,
        request,
        tracing.trace,
        tracing.parent,
        &attempt,
    );
    span.response(answer.status(), answer.headers());
    span.finish();
    answer
}

/// The request body as each attempt sees it.
pub(super) enum RequestBody {
    /// Read whole into memory: every attempt gets a copy.
    Buffered(Replayable),
    /// Streamed to the first attempt while a copy is kept, up to a cap.
    Tee(TeeBody),
    /// Passed through as it arrives: only one attempt can have it.
    Streaming(Option<Incoming>),
}

impl RequestBody {
    fn next(&mut self) -> Option<ProxyBody> {
        match self {
            RequestBody::Buffered(kept) => Some(kept.body()),
            RequestBody::Tee(tee) => Some(tee.attempt()),
            RequestBody::Streaming(body) => body.take().map(body::stream),
        }
    }

    /// Whether the whole body has arrived and is kept.
    fn complete(&self) -> bool {
        match self {
            RequestBody::Buffered(_) => true,
            RequestBody::Tee(tee) => tee.complete(),
            RequestBody::Streaming(_) => false,
        }
    }

    /// Whether another attempt can be given the whole body.
    fn can_replay(&self) -> bool {
        match self {
            RequestBody::Buffered(_) => true,
            RequestBody::Tee(tee) => tee.replayable(),
            RequestBody::Streaming(_) => false,
        }
    }
}

/// Sends attempts until one succeeds or retrying is not allowed, and answers with the last result.
pub(super) async fn send(
    route: &Route,
    upstream: &Upstream,
    parts: &mut Parts,
    mut body: RequestBody,
    key: Option<u64>,
    tracing: Option<&AttemptTracing>,
) -> Response<ProxyBody> {
    upstream.deposit();
    let policy = route.retry();
    let mut backoff = policy.map(|p| p.backoff());
    let mut avoid = None;
    let mut retries = 0;
    loop {
        let Some(endpoint) = upstream.pick(avoid.as_ref(), key) else {
            let answer = no_endpoint(upstream);
            let request = RequestFacts {
                method: &parts.method,
                uri: &parts.uri,
                headers: &parts.headers,
                version: parts.version,
            };
            return refused(tracing, &request, route, upstream, answer, retries);
        };
        let Some(attempt_body) = body.next() else {
            return error(
                StatusCode::BAD_GATEWAY,
                "body-consumed",
                "the request body was already sent".to_owned(),
            );
        };
        let (client, h2) = upstream.client(parts.version == Version::HTTP_2);
        // The last possible attempt takes the request's headers instead of a copy: nothing reads
        // them after it is sent (no retry, no held trailers, no refusal of another attempt).
        let last = policy.is_none_or(|p| retries >= p.attempts());
        let headers = if last {
            std::mem::take(&mut parts.headers)
        } else {
            parts.headers.clone()
        };
        let mut request = match build_request(parts, headers, endpoint.address(), attempt_body, h2)
        {
            Ok(request) => request,
            Err(e) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "bad-request",
                    format!("cannot forward this request: {e}"),
                );
            }
        };
        let span = tracing.filter(|t| t.trace.sampled).map(|t| {
            let (ejected, panicking) = upstream.health_view();
            let (upstream_name, balancer) = upstream.span_attributes();
            let attempt = AttemptFacts {
                route: route.span_name(),
                upstream: upstream_name,
                endpoint: Some((endpoint.address(), endpoint.span_attributes())),
                balancer,
                retry: retries,
                decision: panicking.then_some("panic"),
                ejected,
            };
            SpanRecord::attempt(&t.tracer, &facts(&request), t.trace, t.parent, &attempt)
        });
        // The next hop sees this attempt's span as its parent, or, for a new trace that is not
        // recorded, a context saying so.
        let context = match (&span, tracing) {
            (Some(span), _) => Some(span.context()),
            (None, Some(t)) => Some(t.trace.child()),
            (None, None) => None,
        };
        if let Some(context) = context {
            context.inject(request.headers_mut());
        }

        upstream.stats().attempts.increment();
        let in_flight = endpoint.start();
        // The per-try limit and when the attempt started (which also bounds how long trailers are
        // waited for); the clock is read only when there is a limit.
        let per_try = policy
            .and_then(|p| p.per_try_timeout())
            .map(|limit| (limit, Instant::now()));
        // The exchange is made inside each arm rather than kept in a local: a local would stay in
        // the state machine beside the timeout holding it (see `limit.rs`).
        let result = match per_try {
            Some((limit, _)) => {
                tokio::time::timeout(limit, exchange(client, h2, &endpoint, upstream, request))
                    .await
                    .ok()
            }
            None => Some(exchange(client, h2, &endpoint, upstream, request).await),
        };
        // A gRPC status in trailers decides a retry only if the response is read to its trailers
        // before anything is passed on, so that is done while a retry is still possible.
        let read_trailers = policy.filter(|p| {
            retries < p.attempts()
                && is_grpc(&parts.headers)
                && p.retries_grpc_codes(&parts.method)
                && body.complete()
        });
        let (outcome, answer, trailers) = match result {
            Some(Ok((response, checkin))) => {
                in_flight.finish();
                let outcome = Outcome::of_response(response.status(), response.headers());
                match read_trailers.filter(|_| outcome == Outcome::Status(StatusCode::OK)) {
                    Some(policy) => {
                        let hold = per_try.map_or(TRAILERS_HOLD, |(limit, sent)| {
                            limit.saturating_sub(sent.elapsed())
                        });
                        // The connection is not reused after a body read this way.
                        drop(checkin);
                        let reading = read_to_trailers(response, policy.max_replay_bytes(), hold);
                        match Box::pin(reading).await {
                            Ok(peeked) => {
                                let outcome = peeked.trailers.as_ref().map_or(outcome, |t| {
                                    Outcome::of_response(peeked.response.status(), t)
                                });
                                (outcome, Ok(peeked.response), peeked.trailers)
                            }
                            Err(e) => (Outcome::Broken, Err(e.to_string()), None),
                        }
                    }
                    None => {
                        let response = response.map(|body| match checkin {
                            Some(checkin) => pool::pooled_body(body, checkin),
                            None => body::stream(body),
                        });
                        (outcome, Ok(response), None)
                    }
                }
            }
            Some(Err((true, reason))) => (Outcome::ConnectFailure, Err(reason), None),
            Some(Err((false, reason))) => (Outcome::Broken, Err(reason), None),
            None => (
                Outcome::PerTryTimeout,
                Err("per-try timeout".to_owned()),
                None,
            ),
        };
        upstream.observe(&endpoint, outcome);

        let retry = policy.is_some_and(|p| {
            retries < p.attempts() && p.retries(&parts.method, outcome) && body.can_replay()
        });
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
            if let Some(trailers) = &trailers {
                span.trailers(trailers);
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

/// One attempt's exchange with `endpoint`: HTTP/1.1 over the endpoint's own pool (`pool.rs`),
/// HTTP/2 over hyper-util's client. `Err` says whether connecting failed, and why.
fn exchange<'a>(
    client: &'a HttpClient,
    h2: bool,
    endpoint: &'a Arc<Endpoint>,
    upstream: &Upstream,
    request: Request<ProxyBody>,
) -> impl Future<Output = Result<(Response<Incoming>, Option<Checkin>), (bool, String)>> + 'a {
    let settings = upstream.pool_settings();
    // An `async move` block rather than an `async fn`, which would keep `request` twice.
    async move {
        if h2 {
            match client.request(request).await {
                Ok(response) => Ok((response, None)),
                Err(e) => Err((e.is_connect(), e.to_string())),
            }
        } else {
            match pool::send(endpoint, settings, request).await {
                Ok((response, checkin)) => Ok((response, Some(checkin))),
                Err(e) => Err((matches!(e, SendError::Connect(_)), e.to_string())),
            }
        }
    }
}

/// Whether a request is a gRPC call.
fn is_grpc(headers: &http::HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"))
}

/// The downstream answer for the last attempt.
fn finish(
    upstream: &Upstream,
    address: &Authority,
    outcome: Outcome,
    answer: Result<Response<ProxyBody>, String>,
) -> Response<ProxyBody> {
    match answer {
        Ok(mut response) => {
            strip_hop_by_hop(response.headers_mut(), false);
            response
        }
        Err(reason) => failure(upstream, address, outcome, &reason),
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
    build_request(parts, parts.headers.clone(), address, body, h2)
}

/// [`upstream_request`] with `headers` (those of `parts`, copied or taken) in place of a copy.
fn build_request(
    parts: &Parts,
    headers: HeaderMap,
    address: &Authority,
    body: ProxyBody,
    h2: bool,
) -> Result<Request<ProxyBody>, http::Error> {
    // From the parts already parsed: building from strings would parse the path again.
    let mut uri = http::uri::Parts::default();
    uri.scheme = Some(Scheme::HTTP);
    uri.authority = Some(address.clone());
    uri.path_and_query = Some(
        parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/")),
    );
    // Set field by field: `Request::builder` moves the whole head at every step.
    let mut request = Request::new(body);
    *request.uri_mut() = Uri::from_parts(uri)?;
    *request.method_mut() = parts.method.clone();
    *request.version_mut() = if h2 {
        Version::HTTP_2
    } else {
        Version::HTTP_11
    };
    *request.headers_mut() = headers;
    if !h2
        && !request.headers().contains_key(header::HOST)
        && let Some(authority) = parts.uri.authority()
        && let Ok(host) = HeaderValue::from_str(authority.as_str())
    {
        request.headers_mut().insert(header::HOST, host);
    }
    Ok(request)
}
