//! `meshscope proxy`: the sidecar, the same as the standalone `meshscope-proxy` binary.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use tokio_util::sync::CancellationToken;

use crate::signals::cancel_on_signal;
use crate::units::parse_duration;

/// Flags of `meshscope proxy`.
#[derive(Debug, Args)]
pub(crate) struct ProxyArgs {
    /// Proxy configuration file (TOML; see docs/proxy-config.md). Changes are applied while running.
    #[arg(long, short, env = "MESHSCOPE_PROXY_CONFIG")]
    config: PathBuf,
    /// How often the configuration file is checked for changes.
    #[arg(long, env = "MESHSCOPE_PROXY_RELOAD_INTERVAL", default_value = "1s", value_parser = parse_duration)]
    reload_interval: Duration,
}

/// Serves the proxy until SIGTERM or Ctrl-C, then drains.
pub(crate) async fn run(args: ProxyArgs) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));
    meshscope_proxy::run_file(&args.config, args.reload_interval, async move {
        shutdown.cancelled().await
    })
    .await?;
    Ok(())
}
