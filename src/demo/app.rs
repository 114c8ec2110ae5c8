//! The demo's application instances: tiny HTTP services that wait a little, call their dependencies
//! through their own sidecar's outbound listener (forwarding the trace context, as any instrumented app
//! must), and answer. Each has a fault switch the demo's control endpoint flips.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

/// Trace-context headers an application forwards from its request to the requests it makes.
const PROPAGATED: [&str; 3] = ["traceparent", "tracestate", "b3"];

/// An injected fault: a share of requests answered 503, and extra latency on every request.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub(crate) struct Fault {
    /// Share of requests (0–1) answered 503.
    pub(crate) error_rate: f64,
    /// Added to every request.
    pub(crate) delay_ms: u64,
}

/// A dependency call: which upstream service (the `Host` its sidecar routes on) and path.
#[derive(Debug, Clone)]
pub(crate) struct Call {
    /// Path prefix of the incoming requests that make this call.
    pub(crate) when: &'static str,
    /// Upstream service name.
    pub(crate) service: &'static str,
    /// Path to request.
    pub(crate) path: &'static str,
}

/// One running instance's behaviour.
pub(crate) struct App {
    /// Typical own work per request, before faults.
    pub(crate) work: Duration,
    /// Calls made, in order, through `outbound`.
    pub(crate) calls: Vec<Call>,
    /// The sidecar's outbound listener.
    pub(crate) outbound: Option<SocketAddr>,
    /// The fault currently injected.
    pub(crate) fault: Arc<Mutex<Fault>>,
    /// Client for dependency calls.
    pub(crate) http: reqwest::Client,
}

/// Serves `app` on `listener` until `stop` resolves.
pub(crate) async fn serve(
    app: Arc<App>,
    listener: tokio::net::TcpListener,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let router = axum::Router::new().fallback(handle).with_state(app);
    axum::serve(listener, router)
        .with_graceful_shutdown(stop)
        .await
}

async fn handle(State(app): State<Arc<App>>, headers: HeaderMap, uri: Uri) -> Response {
    let fault = *app.fault.lock().unwrap_or_else(|e| e.into_inner());
    let jitter = app.work.mul_f64(0.5 + fastrand::f64());
    tokio::time::sleep(jitter + Duration::from_millis(fault.delay_ms)).await;
    if fastrand::f64() < fault.error_rate {
        return (StatusCode::SERVICE_UNAVAILABLE, "injected fault\n").into_response();
    }
    let Some(outbound) = app.outbound else {
        return (StatusCode::OK, "ok\n").into_response();
    };
    for call in app
        .calls
        .iter()
        .filter(|call| uri.path().starts_with(call.when))
    {
        let mut request = app
            .http
            .get(format!("http://{outbound}{}", call.path))
            .header(reqwest::header::HOST, call.service);
        for name in PROPAGATED {
            if let Some(value) = headers.get(name) {
                request = request.header(name, value.as_bytes());
            }
        }
        match request.send().await {
            Ok(response) if response.status().is_success() => {}
            Ok(response) => {
                let text = format!("{} answered {}\n", call.service, response.status());
                return (StatusCode::BAD_GATEWAY, text).into_response();
            }
            Err(error) => {
                let text = format!("{} unreachable: {error}\n", call.service);
                return (StatusCode::BAD_GATEWAY, text).into_response();
            }
        }
    }
    (StatusCode::OK, "ok\n").into_response()
}
