//! The attempts loop: endpoint picks, per-try timeouts, retries under the budget with backoff, and
//! one CLIENT span per attempt.

use std::sync::Arc;
use std::time::Duration;

use http::header::{self, HeaderValue};
use http::request::Parts;
use http::uri::Authority;
use http::{Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;
use tower::retry::backoff::Backoff;

use super::answer::{error, failure, no_endpoint};
use super::facts;
use crate::body::{self, ProxyBody, Replayable, TeeBody};
use crate::headers::strip_hop_by_hop;
use crate::retry::Outcome;
use crate::route::Route;
use crate::telemetry::{AttemptFacts, SpanRecord, TraceContext, Tracer};
use crate::upstream::Upstream;

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
    parts: &Parts,
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
        let span = tracing.filter(|t| t.trace.sampled).map(|t| {
            let attempt = AttemptFacts {
                route: route.name(),
                upstream: upstream.name(),
                endpoint: endpoint.address(),
                balancer: upstream.balancer_name(),
                retry: retries,
            };
            SpanRecord::attempt(&t.tracer, &facts(&request), t.trace, t.parent, &attempt)
        });
        // The next hop sees this attempt's span as its parent, or, for a new trace that is not
        // recorded, a context saying so.
        let context = match (&span, tracing) {
            (Some(span), _) => span.context(),
            (None, Some(t)) => Some(t.trace.child()),
            (None, None) => None,
        };
        if let Some(context) = context {
            context.inject(request.headers_mut());
        }

        upstream.stats().attempts.increment();
        let in_flight = endpoint.start();
        let per_try = policy.and_then(|p| p.per_try_timeout());
        let result = with_optional_timeout(per_try, client.request(request)).await;
        let (outcome, answer) = match result {
            Some(Ok(response)) => {
                in_flight.finish();
                (
                    Outcome::of_response(response.status(), response.headers()),
                    Ok(response),
                )
            }
            Some(Err(e)) if e.is_connect() => (Outcome::ConnectFailure, Err(e.to_string())),
            Some(Err(e)) => (Outcome::Broken, Err(e.to_string())),
            None => (Outcome::PerTryTimeout, Err("per-try timeout".to_owned())),
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
