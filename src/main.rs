//! The `meshscope` command: wiring of the library crates into runnable roles.
//!
//! ```text
//! meshscope demo        collector + a demo shop of services behind sidecars
//! meshscope collector   OTLP receivers + store + query API
//! meshscope proxy       the sidecar proxy (same as the `meshscope-proxy` binary)
//! meshscope sql         one SQL query against a collector or a data dir
//! ```

mod collector_cmd;
mod demo;
mod proxy_cmd;
mod signals;
mod sql_cmd;
mod units;

use clap::{Parser, Subcommand};

/// mimalloc instead of glibc malloc: ingest allocates and frees many small buffers on many threads, where
/// glibc's per-thread arenas cost CPU and keep freed memory resident (measured in bench/README.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Threads of the blocking pool (file IO, decoding, compaction) per core. Tokio's default of 512 let a
/// compaction spread its reads over ~30 threads, and each thread's allocator heap kept its freed buffers:
/// RSS grew to 1.2 GiB during one compaction pass (bench/README.md). More threads than this only queue on
/// the CPU anyway.
const MAX_BLOCKING_THREADS_PER_CORE: usize = 4;

/// Meshscope: a service mesh that watches itself, and its trace backend.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log filter, e.g. "info" or "meshscope_storage=debug".
    #[arg(long, global = true, env = "MESHSCOPE_LOG", default_value = "info")]
    log: String,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the collector: OTLP in (gRPC :4317, HTTP :4318), durable storage, the query API (:8686).
    Collector(Box<collector_cmd::CollectorArgs>),
    /// Run the demo: collector, UI and a small shop of services behind sidecars, with traffic and a
    /// fault switch.
    Demo(Box<demo::DemoArgs>),
    /// Run the sidecar proxy from a configuration file (hot-reloaded).
    Proxy(proxy_cmd::ProxyArgs),
    /// Run one SQL query and print the result.
    Sql(sql_cmd::SqlArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Turns transparent huge pages off for this process. mimalloc advises huge pages for its segments, and
/// the collector frees and refills tens of megabytes a second (memtable batches, flush buffers): each
/// refill faulted in a fresh 2 MiB page that the kernel zeroed first: 8–19 % of ingest CPU, 1.4 % with
/// 4 KiB pages. Side by side, ingest measured 0.99–1.21× the spans/s (bench/README.md, "Ingest without
/// transparent huge pages").
fn disable_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    if let Err(error) = rustix::thread::disable_transparent_huge_pages(true) {
        tracing::warn!(%error, "could not turn transparent huge pages off; running with them");
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_new(&cli.log)?)
        .with_writer(std::io::stderr)
        .init();
    disable_transparent_huge_pages();
    let cores = std::thread::available_parallelism().map_or(2, |cores| cores.get());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(MAX_BLOCKING_THREADS_PER_CORE * cores)
        .build()?;
    runtime.block_on(async {
        match cli.command {
            Command::Collector(args) => collector_cmd::run(args.settings()?).await,
            Command::Demo(args) => demo::run(*args).await,
            Command::Proxy(args) => proxy_cmd::run(args).await,
            Command::Sql(args) => sql_cmd::run(args).await,
        }
    })
}
