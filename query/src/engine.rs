//! The query engine: a DataFusion session over the store, with the limits that make it safe to expose.
//!
//! The SQL surface is read-only (no DDL, DML or other statements such as COPY or SET), and every query
//! runs under a timeout, a memory pool limit and a row cap. Only the store's own tables are registered;
//! DataFusion's file-reading table functions are not, and `CREATE EXTERNAL TABLE` is DDL, so SQL cannot
//! reach files outside the store.

use std::sync::Arc;
use std::time::Duration;

use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::{DataFrame, SQLOptions, SessionConfig, SessionContext};
use futures::StreamExt;
use meshscope_storage::{Store, Table};

use crate::error::{QueryError, Result};
use crate::format::QueryResult;
use crate::table::{STORE_URL, StoreTable};

/// Bounds on every query.
#[derive(Debug, Clone)]
pub struct QueryLimits {
    /// Wall-clock limit per query.
    pub timeout: Duration,
    /// Memory the engine may use for one query's operators (sorts, joins, aggregates).
    pub memory_bytes: usize,
    /// Rows returned at most; the rest are cut and the result marked truncated.
    pub max_rows: usize,
}

impl Default for QueryLimits {
    fn default() -> Self {
        QueryLimits {
            timeout: Duration::from_secs(30),
            memory_bytes: 512 * 1024 * 1024,
            max_rows: 100_000,
        }
    }
}

/// SQL and trace queries over one store.
pub struct QueryEngine {
    ctx: SessionContext,
    limits: QueryLimits,
}

impl QueryEngine {
    /// An engine over `store` with the tables `spans` and `metric_points` and the helper functions.
    pub fn new(store: Arc<Store>, limits: QueryLimits) -> Result<QueryEngine> {
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_limit(limits.memory_bytes, 1.0)
            .build_arc()?;
        let url = ObjectStoreUrl::parse(STORE_URL)?;
        runtime.register_object_store(url.as_ref(), store.objects());
        let mut config = SessionConfig::new().with_information_schema(true);
        let parquet = &mut config.options_mut().execution.parquet;
        parquet.pushdown_filters = true;
        parquet.bloom_filter_on_read = true;
        let ctx = SessionContext::new_with_config_rt(config, runtime);
        for table in Table::ALL {
            ctx.register_table(
                table.name(),
                Arc::new(StoreTable::new(store.clone(), table)),
            )?;
        }
        crate::udf::register(&ctx);
        crate::views::register(&ctx)?;
        Ok(QueryEngine { ctx, limits })
    }

    /// The DataFusion session, for building queries with the DataFrame API.
    pub fn context(&self) -> &SessionContext {
        &self.ctx
    }

    /// Runs one read-only SQL statement.
    pub async fn sql(&self, text: &str) -> Result<QueryResult> {
        let options = SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false);
        let frame = self
            .bounded(self.ctx.sql_with_options(text, options))
            .await?;
        self.collect(frame).await
    }

    /// Runs a DataFrame under the limits, collecting at most `max_rows` rows.
    pub async fn collect(&self, frame: DataFrame) -> Result<QueryResult> {
        let max_rows = self.limits.max_rows;
        self.bounded(async move {
            let schema = Arc::new(frame.schema().as_arrow().clone());
            let mut stream = frame.execute_stream().await?;
            let mut batches = Vec::new();
            let mut rows = 0;
            let mut truncated = false;
            while let Some(batch) = stream.next().await {
                let batch = batch?;
                if rows + batch.num_rows() > max_rows {
                    batches.push(batch.slice(0, max_rows - rows));
                    truncated = true;
                    break;
                }
                rows += batch.num_rows();
                batches.push(batch);
            }
            Ok(QueryResult {
                schema,
                batches,
                truncated,
            })
        })
        .await
    }

    async fn bounded<T>(
        &self,
        work: impl Future<Output = std::result::Result<T, datafusion::error::DataFusionError>>,
    ) -> Result<T> {
        match tokio::time::timeout(self.limits.timeout, work).await {
            Ok(result) => Ok(result?),
            Err(_) => Err(QueryError::ResourcesExhausted(format!(
                "query ran longer than the {:?} limit; narrow the time range or add a LIMIT",
                self.limits.timeout
            ))),
        }
    }
}
