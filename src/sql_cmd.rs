//! `meshscope sql`: one query against a running collector's API or directly against a data dir.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, ValueEnum};
use datafusion::arrow::ipc::reader::StreamReader;
use meshscope_query::{QueryEngine, QueryLimits, QueryResult};
use meshscope_storage::Store;

/// How to print the result.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum Format {
    /// A boxed text table.
    Table,
    /// CSV with a header line.
    Csv,
    /// `{"columns", "rows"}` JSON.
    Json,
}

/// Flags of `meshscope sql`.
#[derive(Debug, Args)]
pub(crate) struct SqlArgs {
    /// The statement, e.g. "SELECT service_name, count(*) FROM spans GROUP BY 1".
    query: String,
    /// API of a running collector.
    #[arg(
        long,
        env = "MESHSCOPE_URL",
        default_value = "http://127.0.0.1:8686",
        conflicts_with = "data_dir"
    )]
    url: String,
    /// Read a data dir directly instead (read-only; safe beside a running collector).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
}

/// Runs the query and prints the result.
pub(crate) async fn run(args: SqlArgs) -> anyhow::Result<()> {
    let result = match &args.data_dir {
        Some(dir) => {
            let store = Store::open_read_only(dir).await?;
            QueryEngine::new(store, QueryLimits::default())?
                .sql(&args.query)
                .await?
        }
        None => remote(&args.url, &args.query).await?,
    };
    let output = match args.format {
        Format::Table => result.to_table()?,
        Format::Csv => String::from_utf8_lossy(&result.to_csv()?).into_owned(),
        Format::Json => serde_json::to_string_pretty(&result.to_json()?)?,
    };
    println!("{output}");
    if result.truncated {
        eprintln!("(result truncated at the row limit)");
    }
    Ok(())
}

/// Asks the API for an Arrow IPC stream, so types survive the trip.
async fn remote(url: &str, query: &str) -> anyhow::Result<QueryResult> {
    let response = reqwest::Client::new()
        .post(format!("{}/api/sql", url.trim_end_matches('/')))
        .header("accept", "application/vnd.apache.arrow.stream")
        .json(&serde_json::json!({ "sql": query }))
        .send()
        .await
        .with_context(|| format!("no collector answering at {url}"))?;
    let status = response.status();
    let body = response.bytes().await?;
    if !status.is_success() {
        let message = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
            .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
        anyhow::bail!("{status}: {message}");
    }
    let reader = StreamReader::try_new(body.as_ref(), None)?;
    let schema = reader.schema();
    let batches = reader.collect::<Result<Vec<_>, _>>()?;
    Ok(QueryResult {
        schema,
        batches,
        truncated: false,
    })
}
