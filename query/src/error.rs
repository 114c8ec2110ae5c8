//! The query crate's error type, split by what the caller should do about it.

/// Why a query failed.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The query is wrong: syntax, unknown column, forbidden statement. Fix the query.
    #[error("{0}")]
    Invalid(String),
    /// The query ran past its time or memory limit. Narrow it (time range, LIMIT) or raise the limit.
    #[error("{0}")]
    ResourcesExhausted(String),
    /// Something failed inside the engine or the store.
    #[error("{0}")]
    Internal(String),
}

/// Result alias of this crate.
pub type Result<T, E = QueryError> = std::result::Result<T, E>;

impl From<datafusion::error::DataFusionError> for QueryError {
    fn from(error: datafusion::error::DataFusionError) -> Self {
        use datafusion::error::DataFusionError as E;
        match error.find_root() {
            E::SQL(..) | E::Plan(_) | E::SchemaError(..) | E::NotImplemented(_) => {
                QueryError::Invalid(error.strip_backtrace())
            }
            E::ResourcesExhausted(_) => QueryError::ResourcesExhausted(error.strip_backtrace()),
            E::Execution(message) if message.contains("unhex_id") => {
                QueryError::Invalid(error.strip_backtrace())
            }
            _ => QueryError::Internal(error.strip_backtrace()),
        }
    }
}

impl From<meshscope_storage::StorageError> for QueryError {
    fn from(error: meshscope_storage::StorageError) -> Self {
        QueryError::Internal(error.to_string())
    }
}

impl From<meshscope_storage::convert::ConvertError> for QueryError {
    fn from(error: meshscope_storage::convert::ConvertError) -> Self {
        QueryError::Internal(format!("stored span does not convert back: {error}"))
    }
}
