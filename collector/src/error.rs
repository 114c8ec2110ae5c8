//! One error type for both receivers, so OTLP/gRPC and OTLP/HTTP answer the same failure the same way.
//!
//! | variant        | gRPC                                  | HTTP                      | client should |
//! |----------------|---------------------------------------|---------------------------|---------------|
//! | Undecodable    | INVALID_ARGUMENT                      | 400                       | not retry     |
//! | UnsupportedMediaType | —                               | 415                       | not retry     |
//! | TooLarge       | OUT_OF_RANGE (also tonic's own answer)  | 413                       | not retry     |
//! | Overloaded     | RESOURCE_EXHAUSTED + RetryInfo         | 429 + Retry-After         | retry later   |
//! | Unavailable    | UNAVAILABLE + RetryInfo                | 503 + Retry-After         | retry later   |

use std::time::Duration;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// Why an export was refused as a whole.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The body is not a valid OTLP message in the declared encoding.
    #[error("request body does not decode as OTLP {encoding}: {reason}")]
    Undecodable {
        /// "protobuf" or "JSON".
        encoding: &'static str,
        /// The decoder's message.
        reason: String,
    },
    /// The HTTP content type is neither `application/x-protobuf` nor `application/json`.
    #[error("unsupported content type {0:?}: use application/x-protobuf or application/json")]
    UnsupportedMediaType(String),
    /// The (decompressed) body exceeds the configured limit.
    #[error("request body exceeds the limit of {limit} bytes")]
    TooLarge {
        /// The limit, in bytes.
        limit: usize,
    },
    /// Accepting the request would exceed the memory limit; retry after the hinted delay.
    #[error("collector memory limit reached ({used} of {limit} bytes in use); retry later")]
    Overloaded {
        /// Bytes in use now.
        used: usize,
        /// The configured limit.
        limit: usize,
    },
    /// The store cannot take writes now (disk full, I/O error, shutting down); retry later.
    #[error("storage unavailable: {0}; retry later")]
    Unavailable(String),
}

/// How long clients are asked to wait before retrying a refused export.
pub const RETRY_AFTER: Duration = Duration::from_secs(1);

impl IngestError {
    /// The HTTP status of this failure.
    pub fn http_status(&self) -> u16 {
        match self {
            IngestError::Undecodable { .. } => 400,
            IngestError::UnsupportedMediaType(_) => 415,
            IngestError::TooLarge { .. } => 413,
            IngestError::Overloaded { .. } => 429,
            IngestError::Unavailable(_) => 503,
        }
    }

    /// True when the client should retry after [`RETRY_AFTER`].
    pub fn retryable(&self) -> bool {
        matches!(
            self,
            IngestError::Overloaded { .. } | IngestError::Unavailable(_)
        )
    }

    /// The gRPC status code of this failure.
    pub fn grpc_code(&self) -> Code {
        match self {
            IngestError::Undecodable { .. } | IngestError::UnsupportedMediaType(_) => {
                Code::InvalidArgument
            }
            IngestError::TooLarge { .. } => Code::OutOfRange,
            IngestError::Overloaded { .. } => Code::ResourceExhausted,
            IngestError::Unavailable(_) => Code::Unavailable,
        }
    }

    /// The gRPC status, with `google.rpc.RetryInfo` when the failure is retryable (the OTLP spec makes
    /// RESOURCE_EXHAUSTED retryable only with it).
    pub fn to_status(&self) -> Status {
        if self.retryable() {
            Status::with_error_details(
                self.grpc_code(),
                self.to_string(),
                ErrorDetails::with_retry_info(Some(RETRY_AFTER)),
            )
        } else {
            Status::new(self.grpc_code(), self.to_string())
        }
    }
}
