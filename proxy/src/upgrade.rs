//! HTTP/1.1 `Upgrade` pass-through (WebSocket and any other upgraded protocol).
//!
//! The handshake is proxied like a request, with `Connection: upgrade` and `Upgrade` kept. If the
//! upstream answers `101 Switching Protocols`, both connections are taken over from hyper and bytes
//! are copied both ways until either side closes. The endpoint counts the tunnel as in flight for as
//! long as it is open, so `least_connections` sees open WebSockets. There are no retries: an upgrade
//! is not idempotent.

use std::net::SocketAddr;
use std::time::Duration;

use http::header::{CONNECTION, HeaderValue, UPGRADE};
use http::{Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

use crate::body::{self, ProxyBody};
use crate::forward::{error, failure, no_endpoint, upstream_request};
use crate::headers::{append_forwarded_for, strip_hop_by_hop};
use crate::retry::Outcome;
use crate::upstream::{Admission, Upstream};

/// Whether `request` asks to switch protocols on its HTTP/1.1 connection.
pub(crate) fn is_upgrade<B>(request: &Request<B>) -> bool {
    request.version() == Version::HTTP_11
        && request.headers().get_all(UPGRADE).iter().any(|protocol| {
            // `h2c` is the proxy's own business (h2c.rs); one it declined is served as HTTP/1.1.
            !protocol.as_bytes().eq_ignore_ascii_case(b"h2c")
        })
        && request
            .headers()
            .get_all(CONNECTION)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .any(|token| token.trim().eq_ignore_ascii_case("upgrade"))
}

/// Proxies an upgrade handshake to `upstream` and, on `101`, splices the two connections.
pub(crate) async fn forward(
    upstream: &Upstream,
    client: SocketAddr,
    mut request: Request<Incoming>,
    timeout: Option<Duration>,
    admission: Admission,
) -> Response<ProxyBody> {
    let downstream = hyper::upgrade::on(&mut request);
    let (mut parts, body) = request.into_parts();
    let protocol = parts.headers.get(UPGRADE).cloned();
    strip_hop_by_hop(&mut parts.headers, true);
    append_forwarded_for(&mut parts.headers, client.ip());
    parts
        .headers
        .insert(CONNECTION, HeaderValue::from_static("upgrade"));
    if let Some(protocol) = protocol {
        parts.headers.insert(UPGRADE, protocol);
    }

    let key = upstream.request_key(&parts.headers, client.ip());
    let Some(endpoint) = upstream.pick(None, key) else {
        return no_endpoint(upstream);
    };
    let request = match upstream_request(&parts, endpoint.address(), body::stream(body), false) {
        Ok(request) => request,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad-request",
                format!("cannot forward this request: {e}"),
            );
        }
    };
    let (client, _) = upstream.client(false);
    let in_flight = endpoint.start();
    let sent = client.request(request);
    let answer = match timeout {
        Some(limit) => match tokio::time::timeout(limit, sent).await {
            Ok(answer) => answer,
            Err(_) => {
                upstream.observe(&endpoint, Outcome::PerTryTimeout);
                return failure(
                    upstream,
                    endpoint.address(),
                    Outcome::PerTryTimeout,
                    "timed out",
                );
            }
        },
        None => sent.await,
    };
    let mut response = match answer {
        Ok(response) => response,
        Err(e) => {
            let outcome = if e.is_connect() {
                Outcome::ConnectFailure
            } else {
                Outcome::Broken
            };
            upstream.observe(&endpoint, outcome);
            return failure(upstream, endpoint.address(), outcome, &e.to_string());
        }
    };
    upstream.observe(&endpoint, Outcome::Status(response.status()));
    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        in_flight.finish();
        let (mut parts, body) = response.into_parts();
        strip_hop_by_hop(&mut parts.headers, false);
        return Response::from_parts(parts, body::hold(body::stream(body), admission));
    }

    let upstream_side = hyper::upgrade::on(&mut response);
    let address = endpoint.address().clone();
    tokio::spawn(async move {
        // Dropped when the tunnel closes: the endpoint counts it as in flight, and the circuit
        // breaker as active, until then.
        let _tunnel = (in_flight, admission);
        match (downstream.await, upstream_side.await) {
            (Ok(down), Ok(up)) => {
                let (mut down, mut up) = (TokioIo::new(down), TokioIo::new(up));
                if let Err(e) = tokio::io::copy_bidirectional(&mut down, &mut up).await {
                    tracing::debug!(%address, error = %e, "upgraded connection ended with an error");
                }
            }
            (down, up) => {
                tracing::debug!(%address, downstream = ?down.err(), upstream = ?up.err(), "upgrade failed");
            }
        }
    });
    let (mut parts, _) = response.into_parts();
    let protocol = parts.headers.get(UPGRADE).cloned();
    strip_hop_by_hop(&mut parts.headers, false);
    parts
        .headers
        .insert(CONNECTION, HeaderValue::from_static("upgrade"));
    if let Some(protocol) = protocol {
        parts.headers.insert(UPGRADE, protocol);
    }
    Response::from_parts(parts, body::text(String::new()))
}
