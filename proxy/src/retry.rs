//! Retry policies: which failures are retried, how many times, with what backoff.
//!
//! Backoff comes from `tower::retry::backoff` and the budget from `tower::retry::budget` (kept per
//! upstream, see `upstream.rs`); the attempt loop itself is in `forward/attempts.rs`, because the tower `Retry`
//! middleware cannot pick a new endpoint per attempt or stream a body it is not allowed to keep.

use std::time::Duration;

use http::header::HeaderName;
use http::{Method, StatusCode};
use tower::retry::backoff::{ExponentialBackoff, ExponentialBackoffMaker, MakeBackoff};
use tower::util::rng::HasherRng;

/// The header (or trailer) carrying a gRPC call's status code.
pub(crate) const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");

use crate::config::{RetryConfig, RetryOn};

/// Backoff jitter as a fraction of the base delay: each wait is uniform in `[base, 2 × base]`, capped.
const JITTER: f64 = 1.0;

/// How one attempt ended, as far as retrying is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Response headers arrived with this status.
    Status(StatusCode),
    /// A non-zero gRPC status arrived, in the response headers (a trailers-only gRPC error) or in
    /// trailers read before the response was passed on.
    Grpc(u32),
    /// No TCP connection could be made.
    ConnectFailure,
    /// The per-try timeout expired.
    PerTryTimeout,
    /// The connection failed after it was made (reset, protocol error).
    Broken,
}

impl Outcome {
    /// The proxy's name for a failed outcome, used in `x-meshscope-error` and a span's `error.type`.
    pub(crate) fn error_kind(self) -> &'static str {
        match self {
            Outcome::ConnectFailure => "connect-failure",
            Outcome::PerTryTimeout => "timeout",
            Outcome::Broken | Outcome::Status(_) | Outcome::Grpc(_) => "upstream-reset",
        }
    }

    /// The outcome of a response: its gRPC status if it carries a non-zero one in its headers,
    /// else its HTTP status.
    pub(crate) fn of_response(status: StatusCode, headers: &http::HeaderMap) -> Self {
        let grpc = headers
            .get(GRPC_STATUS)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u32>().ok())
            .filter(|code| *code != 0);
        grpc.map_or(Outcome::Status(status), Outcome::Grpc)
    }
}

/// A compiled `[outbound.route.retry]` table.
#[derive(Debug)]
pub(crate) struct RetryPolicy {
    attempts: u32,
    per_try_timeout: Option<Duration>,
    on: Vec<RetryOn>,
    backoff: ExponentialBackoffMaker,
    retry_non_idempotent: bool,
    max_replay_bytes: u64,
}

impl RetryPolicy {
    /// The policy for a validated retry table; `None` when it allows no retries.
    pub(crate) fn from_config(config: &RetryConfig) -> Option<Self> {
        if config.attempts == 0 {
            return None;
        }
        let backoff = ExponentialBackoffMaker::new(
            config.backoff_base.0,
            config.backoff_max.0,
            JITTER,
            HasherRng::default(),
        )
        .ok()?;
        Some(Self {
            attempts: config.attempts,
            per_try_timeout: config.per_try_timeout.map(|t| t.0),
            on: config.on.clone(),
            backoff,
            retry_non_idempotent: config.retry_non_idempotent,
            max_replay_bytes: config.max_replay_bytes,
        })
    }

    /// Retries allowed after the first attempt.
    pub(crate) fn attempts(&self) -> u32 {
        self.attempts
    }

    /// Limit on each attempt.
    pub(crate) fn per_try_timeout(&self) -> Option<Duration> {
        self.per_try_timeout
    }

    /// Largest body kept for replay.
    pub(crate) fn max_replay_bytes(&self) -> u64 {
        self.max_replay_bytes
    }

    /// Whether any outcome of a request with this method may be retried. Otherwise only a connect
    /// failure is, since nothing reached the server.
    fn allows_method(&self, method: &Method) -> bool {
        self.retry_non_idempotent || method.is_idempotent()
    }

    /// A fresh backoff sequence for one request.
    pub(crate) fn backoff(&self) -> ExponentialBackoff {
        self.backoff.clone().make_backoff()
    }

    /// Whether a gRPC call with `method` may be retried on some gRPC status, which is then worth
    /// reading from the response's trailers before the response is passed on.
    pub(crate) fn retries_grpc_codes(&self, method: &Method) -> bool {
        self.allows_method(method)
            && self.on.iter().any(|condition| {
                matches!(
                    condition,
                    RetryOn::GrpcCancelled
                        | RetryOn::GrpcDeadlineExceeded
                        | RetryOn::GrpcResourceExhausted
                        | RetryOn::GrpcInternal
                        | RetryOn::GrpcUnavailable
                )
            })
    }

    /// Whether an attempt of a `method` request that ended with `outcome` should be tried again.
    pub(crate) fn retries(&self, method: &Method, outcome: Outcome) -> bool {
        if !self.allows_method(method) && outcome != Outcome::ConnectFailure {
            return false;
        }
        self.on.iter().any(|condition| matches(*condition, outcome))
    }
}

fn matches(condition: RetryOn, outcome: Outcome) -> bool {
    match (condition, outcome) {
        (_, Outcome::ConnectFailure) => true,
        (RetryOn::ServerError, Outcome::Status(status)) => status.is_server_error(),
        (RetryOn::GatewayError, Outcome::Status(status)) => matches!(status.as_u16(), 502..=504),
        (
            RetryOn::ServerError | RetryOn::GatewayError,
            Outcome::PerTryTimeout | Outcome::Broken,
        ) => true,
        (RetryOn::Reset, Outcome::Broken) => true,
        (RetryOn::GrpcCancelled, Outcome::Grpc(1))
        | (RetryOn::GrpcDeadlineExceeded, Outcome::Grpc(4))
        | (RetryOn::GrpcResourceExhausted, Outcome::Grpc(8))
        | (RetryOn::GrpcInternal, Outcome::Grpc(13))
        | (RetryOn::GrpcUnavailable, Outcome::Grpc(14)) => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions() {
        let s = |code: u16| Outcome::Status(StatusCode::from_u16(code).unwrap_or(StatusCode::OK));
        assert!(matches(RetryOn::ConnectFailure, Outcome::ConnectFailure));
        assert!(!matches(RetryOn::ConnectFailure, s(503)));
        assert!(!matches(RetryOn::ConnectFailure, Outcome::PerTryTimeout));
        assert!(matches(RetryOn::GatewayError, s(503)));
        assert!(!matches(RetryOn::GatewayError, s(500)));
        assert!(matches(RetryOn::ServerError, s(500)));
        assert!(!matches(RetryOn::ServerError, s(404)));
        assert!(matches(RetryOn::GatewayError, Outcome::PerTryTimeout));
        assert!(matches(RetryOn::Reset, Outcome::Broken));
        assert!(!matches(RetryOn::Reset, s(503)));
        assert!(matches(RetryOn::GrpcUnavailable, Outcome::Grpc(14)));
        assert!(!matches(RetryOn::GrpcUnavailable, Outcome::Grpc(13)));
        assert!(
            !matches(RetryOn::ServerError, Outcome::Grpc(14)),
            "a gRPC error is an HTTP 200"
        );
    }

    #[test]
    fn grpc_status_in_headers_is_the_outcome() {
        let mut headers = http::HeaderMap::new();
        assert_eq!(
            Outcome::of_response(StatusCode::OK, &headers),
            Outcome::Status(StatusCode::OK)
        );
        headers.insert("grpc-status", http::HeaderValue::from_static("0"));
        assert_eq!(
            Outcome::of_response(StatusCode::OK, &headers),
            Outcome::Status(StatusCode::OK)
        );
        headers.insert("grpc-status", http::HeaderValue::from_static("14"));
        assert_eq!(
            Outcome::of_response(StatusCode::OK, &headers),
            Outcome::Grpc(14)
        );
    }
}
