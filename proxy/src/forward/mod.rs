//! Forwarding one request: route → split → balancer → endpoint, with timeouts and retries.
//!
//! `handle` is the entry point for every HTTP request a listener receives. It records the inbound
//! SERVER span, finds the route, applies the route's traffic control (`gate`), the adaptive
//! concurrency limit, the circuit breaker, header rewrites and mirroring, and hands the request to
//! `attempts::send`, which picks endpoints, retries and times out. Every answer the proxy makes
//! itself is built in `answer.rs`.

mod answer;
mod attempts;
mod limit;
mod trailers;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body::Body as _;
use hyper::body::Incoming;

pub(crate) use answer::{ERROR_HEADER, error, failure, no_endpoint};
pub(crate) use attempts::upstream_request;

use crate::body::{self, ProxyBody, Replayable, TeeBody};
use crate::concurrency::Verdict;
use crate::headers::{append_forwarded_for, strip_hop_by_hop};
use crate::retry::Outcome;
use crate::route::{Route, RouteTable};
use crate::telemetry::{RequestFacts, Sampling, SpanRecord, Tracer};
use crate::traffic::MAX_MIRROR_BODY;
use crate::upgrade;
use crate::upstream::Upstream;
use attempts::{AttemptTracing, RequestBody, refused, send};

/// gRPC's `DEADLINE_EXCEEDED`: the upstream gave up on time, a drop like the proxy's own timeout.
const GRPC_DEADLINE_EXCEEDED: u32 = 4;

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
    let sampling = match (listening.side, &listening.tracer) {
        (Side::Inbound, Some(tracer)) => {
            SpanRecord::server(tracer, &facts(&request), client, "inbound")
        }
        _ => Sampling::PassThrough,
    };
    let (mut span, context) = match sampling {
        Sampling::PassThrough => return route_and_send(listening, routes, client, request).await,
        Sampling::Unsampled(context) => {
            context.inject(request.headers_mut());
            return route_and_send(listening, routes, client, request).await;
        }
        Sampling::Record(span, context) => (*span, context),
    };
    // The application's spans become children of this SERVER span.
    context.inject(request.headers_mut());
    let response = route_and_send(listening, routes, client, request).await;
    span.response(response.status(), response.headers());
    let (parts, body) = response.into_parts();
    Response::from_parts(parts, span.finish_with(body))
}

/// The facts about a request that its spans record.
pub(super) fn facts<B>(request: &Request<B>) -> RequestFacts<'_> {
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
    let Some(limiter) = upstream.concurrency() else {
        return admit_and_send(listening, route, upstream, client, request).await;
    };
    // The adaptive limit comes before the circuit breaker: a refused request takes no breaker slot
    // and never waits, and the latency it measures includes any wait for a connection.
    let permit = match limiter.try_acquire() {
        Ok(permit) => permit,
        Err(limit) => {
            let answer = error(
                StatusCode::SERVICE_UNAVAILABLE,
                "concurrency-limit",
                format!(
                    "upstream {:?} is at its adaptive concurrency limit ({limit} in flight)",
                    upstream.name()
                ),
            );
            return refuse(listening, route, upstream, &request, answer);
        }
    };
    let response = admit_and_send(listening, route, upstream, client, request).await;
    permit.finish(verdict(&response));
    response
}

/// How a response feeds the adaptive concurrency limit (see `concurrency::Verdict`): a timeout of
/// the proxy's (or of a proxy further on) or a gRPC `DEADLINE_EXCEEDED` is a drop; any other answer
/// of the proxy's own, a 5xx and a gRPC error say nothing about queueing; the rest are latencies.
fn verdict(response: &Response<ProxyBody>) -> Verdict {
    let headers = response.headers();
    match headers.get(ERROR_HEADER).map(HeaderValue::as_bytes) {
        Some(b"timeout") => return Verdict::TimedOut,
        Some(_) => return Verdict::Ignored,
        None => {}
    }
    match Outcome::of_response(response.status(), headers) {
        Outcome::Grpc(GRPC_DEADLINE_EXCEEDED) => Verdict::TimedOut,
        Outcome::Status(status) if !status.is_server_error() => Verdict::Answered,
        _ => Verdict::Ignored,
    }
}

/// The proxy's own answer for a request refused before any attempt, with its CLIENT span.
fn refuse(
    listening: &Listening,
    route: &Route,
    upstream: &Upstream,
    request: &Request<Incoming>,
    answer: Response<ProxyBody>,
) -> Response<ProxyBody> {
    let tracing = match (listening.side, &listening.tracer) {
        (Side::Outbound, Some(tracer)) => AttemptTracing::new(tracer, request.headers()),
        _ => None,
    };
    refused(
        tracing.as_ref(),
        &facts(request),
        route,
        upstream,
        answer,
        0,
    )
}

/// Forwards a request under the upstream's circuit breaker: header rewrites, mirroring, attempts.
async fn admit_and_send(
    listening: &Listening,
    route: &Route,
    upstream: &Arc<Upstream>,
    client: SocketAddr,
    request: Request<Incoming>,
) -> Response<ProxyBody> {
    // The route timeout covers waiting for a connection slot as well as the attempts.
    let deadline = route.timeout().map(|limit| Instant::now() + limit);
    let is_upgrade = upgrade::is_upgrade(&request);
    let h2 = !is_upgrade && upstream.speaks_h2(request.version() == http::Version::HTTP_2);
    let admission = match limit::until(deadline, upstream.admit(h2, true)).await {
        Some(Ok(admission)) => admission,
        Some(Err(limit)) => {
            let answer = error(
                StatusCode::SERVICE_UNAVAILABLE,
                "overflow",
                format!(
                    "upstream {:?} is at its circuit breaker's {}",
                    upstream.name(),
                    limit.key()
                ),
            );
            return refuse(listening, route, upstream, &request, answer);
        }
        None => return route_timeout(upstream.name(), route.timeout()),
    };
    if is_upgrade {
        // Rare paths' futures are boxed so that they do not grow every request's state machine,
        // which is copied whole into its box (`server.rs`; `pool::send` says the same).
        return Box::pin(upgrade::forward(
            upstream,
            client,
            request,
            route.timeout(),
            admission,
        ))
        .await;
    }
    let (mut parts, body) = request.into_parts();
    strip_hop_by_hop(&mut parts.headers, true);
    append_forwarded_for(&mut parts.headers, client.ip());
    route.policies().request_headers.apply(&mut parts.headers);

    // How the body is held: read whole first only for a mirror (which sends it at the same time)
    // and only if its declared length is small; teed as it streams when retries may need it again;
    // passed straight through otherwise. Streams (gRPC, chunked uploads) are never waited for.
    let mirror = route.policies().mirror.as_ref().filter(|m| m.chosen());
    let retry_cap = route.retry().map(|p| p.max_replay_bytes());
    let mirror_cap = retry_cap.unwrap_or(MAX_MIRROR_BODY);
    let body = if mirror.is_some()
        && body
            .size_hint()
            .exact()
            .is_some_and(|len| len <= mirror_cap)
    {
        match Box::pin(Replayable::read(body)).await {
            Ok(kept) => RequestBody::Buffered(kept),
            Err(e) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "request-body",
                    format!("reading the request body failed: {e}"),
                );
            }
        }
    } else if let Some(cap) = retry_cap {
        RequestBody::Tee(TeeBody::new(body, cap))
    } else {
        RequestBody::Streaming(Some(body))
    };
    match (mirror, &body) {
        (Some(mirror), RequestBody::Buffered(kept)) => mirror.send(&parts, kept),
        (Some(_), _) => {
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
    let attempts = send(route, upstream, &mut parts, body, key, tracing.as_ref());
    let response = limit::until(deadline, attempts)
        .await
        .unwrap_or_else(|| route_timeout(upstream.name(), route.timeout()));
    // The request counts against the circuit breaker until its response has been sent.
    let (mut parts, body) = response.into_parts();
    route.policies().response_headers.apply(&mut parts.headers);
    Response::from_parts(parts, body::hold(body, admission))
}

/// The answer when the route's `limit` expired before `upstream` answered.
fn route_timeout(upstream: &str, limit: Option<std::time::Duration>) -> Response<ProxyBody> {
    let within = limit.map_or_else(String::new, |limit| {
        format!(" within {}", humantime::format_duration(limit))
    });
    error(
        StatusCode::GATEWAY_TIMEOUT,
        "timeout",
        format!("upstream {upstream:?} did not answer{within}"),
    )
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
        Box::pin(tokio::time::sleep(delay)).await;
    }
    injection
        .abort
        .map(|status| error(status, "fault-abort", format!("fault injected: {status}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The size of the future `make` returns, without calling it.
    fn future_size<A, B, C, D, F: Future>(_make: fn(A, B, C, D) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    fn handling(
        listening: &'static Listening,
        routes: &'static RouteTable,
        client: SocketAddr,
        request: Request<Incoming>,
    ) -> impl Future<Output = Response<ProxyBody>> {
        handle(listening, routes, client, request)
    }

    /// Every request's future is built on the stack and copied whole into its box (`server.rs`),
    /// so its size is paid per request. It was 10 KiB before the timeouts stopped doubling what
    /// they wrap (`limit.rs`); a rarely taken await that is not boxed shows up here.
    #[test]
    fn a_request_future_stays_under_six_kib() {
        let size = future_size(handling);
        assert!(size <= 6 * 1024, "the request future is {size} bytes");
    }
}
