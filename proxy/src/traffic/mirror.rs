//! Mirroring: a copy of a share of a route's requests goes to a shadow upstream, whose answers are
//! read and thrown away. The copy's `Host` gets a `-shadow` suffix, as Istio does, so the shadow
//! service can tell mirrored traffic apart.

use std::sync::Arc;
use std::time::Duration;

use http::header::{HOST, HeaderValue};
use http::request::Parts;
use http::{HeaderMap, Version};
use http_body_util::BodyExt;

use crate::body::Replayable;
use crate::forward::upstream_request;
use crate::upstream::Upstream;

/// Largest request body mirrored when the route keeps no body for retries (bodies are mirrored only
/// when their length is declared and within the cap).
pub(crate) const MAX_MIRROR_BODY: u64 = 64 * 1024;

/// Longest a mirrored request may take before it is dropped.
const MIRROR_TIMEOUT: Duration = Duration::from_secs(30);

/// A compiled `[outbound.route.mirror]` table.
#[derive(Debug)]
pub(crate) struct Mirror {
    upstream: Arc<Upstream>,
    percent: f64,
}

impl Mirror {
    /// Mirroring `percent`% of requests to `upstream`.
    pub(crate) fn new(upstream: Arc<Upstream>, percent: f64) -> Self {
        Self { upstream, percent }
    }

    /// Draws whether this request is mirrored.
    pub(crate) fn chosen(&self) -> bool {
        fastrand::f64() * 100.0 < self.percent
    }

    /// Sends a copy of the request (`parts` with `body`) in the background.
    pub(crate) fn send(&self, parts: &Parts, body: &Replayable) {
        let upstream = Arc::clone(&self.upstream);
        let Some(endpoint) = upstream.pick(None, None) else {
            return;
        };
        let (client, h2) = upstream.client(parts.version == Version::HTTP_2);
        let Ok(mut request) = upstream_request(parts, endpoint.address(), body.body(), h2) else {
            return;
        };
        shadow_host(request.headers_mut());
        let client = client.clone();
        tokio::spawn(async move {
            // A copy never waits for a connection: it is sent now or not at all.
            let Ok(_admitted) = upstream.admit(h2, false).await else {
                return;
            };
            let in_flight = endpoint.start();
            let exchange = async {
                let response = client.request(request).await?;
                response.into_body().collect().await.map_err(Into::into)
            };
            match tokio::time::timeout(MIRROR_TIMEOUT, exchange).await {
                Ok(Ok(_)) => in_flight.finish(),
                Ok(Err::<_, Box<dyn std::error::Error + Send + Sync>>(e)) => {
                    tracing::debug!(upstream = upstream.name(), error = %e, "mirrored request failed");
                }
                Err(_) => tracing::debug!(upstream = upstream.name(), "mirrored request timed out"),
            }
        });
    }
}

/// `Host: reviews` becomes `Host: reviews-shadow` (a port is kept after the suffix).
fn shadow_host(headers: &mut HeaderMap) {
    let Some(host) = headers.get(HOST).and_then(|v| v.to_str().ok()) else {
        return;
    };
    let shadow = match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => {
            format!("{name}-shadow:{port}")
        }
        _ => format!("{host}-shadow"),
    };
    if let Ok(value) = HeaderValue::try_from(shadow) {
        headers.insert(HOST, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shadow_host_keeps_the_port() {
        let mut headers = HeaderMap::new();
        headers.insert(HOST, HeaderValue::from_static("reviews:9080"));
        shadow_host(&mut headers);
        assert_eq!(headers[HOST], "reviews-shadow:9080");
        headers.insert(HOST, HeaderValue::from_static("reviews"));
        shadow_host(&mut headers);
        assert_eq!(headers[HOST], "reviews-shadow");
    }
}
