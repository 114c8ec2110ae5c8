//! The real processes of a run: one Meshscope collector and one Meshscope proxy per client, each proxy
//! configured with the policy under test and exporting its spans to the collector.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// A balancing and ejection policy under comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Policy {
    /// Each endpoint in turn, no ejection: what a client without a mesh does.
    RoundRobin,
    /// Local P2C over peak-EWMA cost (Linkerd's default), no ejection.
    PeakEwma,
    /// Round robin with local outlier ejection at Envoy's defaults.
    Outlier,
    /// Meshscope's adaptive balancer, fed by the collector's fleet signals.
    Adaptive,
}

impl Policy {
    /// The `[[upstream]]` keys that select this policy.
    fn upstream_keys(self) -> &'static str {
        match self {
            Policy::RoundRobin => "balancer = \"round_robin\"\n",
            Policy::PeakEwma => "balancer = \"peak_ewma\"\n",
            // Envoy's outlier-detection defaults: 5 consecutive 5xx, 30 s base ejection, at most 10 %
            // ejected, and success-rate ejection at 1.9 standard deviations over 10 s windows of at
            // least 100 requests on at least 5 hosts.
            Policy::Outlier => {
                "balancer = \"round_robin\"\n\n[upstream.outlier_detection]\nconsecutive_5xx = 5\n\
                 base_ejection_time = \"30s\"\nmax_ejection_percent = 10\n\
                 success_rate_stdev_factor = 1.9\nsuccess_rate_interval = \"10s\"\n\
                 success_rate_min_requests = 100\nsuccess_rate_min_hosts = 5\n"
            }
            Policy::Adaptive => "balancer = \"adaptive\"\n",
        }
    }
}

/// Ports of a run's collector.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CollectorPorts {
    /// OTLP/gRPC, also the signals stream.
    pub(crate) grpc: u16,
    /// OTLP/HTTP.
    pub(crate) http: u16,
    /// The HTTP API, whose `/api/health` says it is up.
    pub(crate) api: u16,
}

/// A running collector, killed when dropped.
pub(crate) struct Collector {
    child: Child,
}

impl Drop for Collector {
    fn drop(&mut self) {
        kill(&mut self.child);
    }
}

impl Collector {
    /// Starts `binary collector` on `data_dir` and waits until its API answers.
    pub(crate) async fn start(
        binary: &Path,
        data_dir: &Path,
        ports: CollectorPorts,
        log: &Path,
    ) -> anyhow::Result<Collector> {
        let log_file = std::fs::File::options()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("opening {}", log.display()))?;
        let child = Command::new(binary)
            .arg("collector")
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--otlp-grpc-listen")
            .arg(format!("127.0.0.1:{}", ports.grpc))
            .arg("--otlp-http-listen")
            .arg(format!("127.0.0.1:{}", ports.http))
            .arg("--api-listen")
            .arg(format!("127.0.0.1:{}", ports.api))
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let mut collector = Collector { child };
        let health = format!("http://127.0.0.1:{}/api/health", ports.api);
        wait_ready(&mut collector.child, &health, "collector").await?;
        Ok(collector)
    }

    /// Kills it at once (SIGKILL), as a crash would.
    pub(crate) fn kill(self) {
        drop(self);
    }
}

/// One client's sidecar: its outbound listener and admin port.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ProxyPorts {
    /// Where the client sends its requests.
    pub(crate) outbound: u16,
    /// `/ready`, `/endpoints`.
    pub(crate) admin: u16,
}

/// The configuration file of client proxy `client`.
pub(crate) fn proxy_config(
    client: usize,
    ports: ProxyPorts,
    policy: Policy,
    endpoints: &[SocketAddr],
    collector_grpc: u16,
) -> String {
    let endpoints: Vec<String> = endpoints
        .iter()
        .map(|address| format!("{{ address = \"{address}\" }}"))
        .collect();
    // The retry policy is Istio's default: two attempts, on connect failures and gateway errors.
    format!(
        "[service]\nname = \"client-{client}\"\ndrain_timeout = \"1s\"\n\n\
         [admin]\nlisten = \"127.0.0.1:{admin}\"\n\n\
         [telemetry]\notlp_endpoint = \"http://127.0.0.1:{collector_grpc}\"\nflush_interval = \"250ms\"\n\n\
         [[outbound]]\nlisten = \"127.0.0.1:{outbound}\"\n\n\
         [[outbound.route]]\nname = \"svc\"\nmatch = {{ host = \"svc\" }}\nupstream = \"svc\"\ntimeout = \"2s\"\n\n\
         [outbound.route.retry]\nattempts = 2\non = [\"connect-failure\", \"gateway-error\"]\n\n\
         [[upstream]]\nname = \"svc\"\nendpoints = [{}]\n{}",
        endpoints.join(", "),
        policy.upstream_keys(),
        admin = ports.admin,
        outbound = ports.outbound,
    )
}

/// A running client proxy, killed when dropped.
pub(crate) struct Proxy {
    child: Child,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        kill(&mut self.child);
    }
}

/// SIGKILL, then reap, so its ports are free when this returns.
fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

impl Proxy {
    /// Writes `config` under `dir` and starts `binary --config` on it, waiting until it is ready.
    pub(crate) async fn start(
        binary: &Path,
        dir: &Path,
        client: usize,
        config: &str,
        admin: u16,
    ) -> anyhow::Result<Proxy> {
        let config_path: PathBuf = dir.join(format!("client-{client}.toml"));
        std::fs::write(&config_path, config)?;
        let log = std::fs::File::create(dir.join(format!("client-{client}.log")))?;
        let child = Command::new(binary)
            .arg("--config")
            .arg(&config_path)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let mut proxy = Proxy { child };
        let ready = format!("http://127.0.0.1:{admin}/ready");
        wait_ready(&mut proxy.child, &ready, "proxy").await?;
        Ok(proxy)
    }
}

/// Polls `url` until it answers 200, failing if `child` exits or 20 s pass.
async fn wait_ready(child: &mut Child, url: &str, what: &str) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait()? {
            bail!("{what} exited with {status} before it was ready");
        }
        if let Ok(response) = client.get(url).send().await
            && response.status().is_success()
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{what} not ready at {url} after 20 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
