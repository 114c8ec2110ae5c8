//! Answers the proxy makes itself: a plain-text reason and an `x-meshscope-error` kind.

use http::header::{self, HeaderName, HeaderValue};
use http::uri::Authority;
use http::{Response, StatusCode};

use crate::body::{self, ProxyBody};
use crate::retry::Outcome;
use crate::upstream::Upstream;

/// Header naming why the proxy itself answered, so clients and tests can tell it from the app.
/// (Header names used on every request are constants: a lookup by `&str` parses the name first.)
pub(crate) const ERROR_HEADER: HeaderName = HeaderName::from_static("x-meshscope-error");

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
        Outcome::Broken | Outcome::Status(_) | Outcome::Grpc(_) => (
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
