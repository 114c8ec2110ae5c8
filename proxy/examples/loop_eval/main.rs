//! The evaluation harness of the feedback loop (issue 5): many client proxies, each sending a rate so
//! low that no single one has enough local evidence, to ten endpoints of one service; one endpoint goes
//! bad; each balancing policy runs the same seeded traffic in turn, and the harness reports client
//! success, p99 latency, retry amplification and how long the fleet kept sending to the bad endpoint.
//!
//! Run through `bench/loop.sh`, which builds the binaries; `loop_eval --help` lists the knobs.

mod fleet;
mod load;
mod report;
mod upstream;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;

use fleet::{Collector, CollectorPorts, Policy, Proxy, ProxyPorts};
use report::Summary;
use upstream::{Endpoint, Fault};

/// What goes wrong at the onset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Scenario {
    /// One endpoint answers every request 503.
    Unavailable,
    /// One endpoint answers 20 % of requests 500.
    Errors,
    /// One endpoint becomes 300 ms slower.
    Slow,
    /// One endpoint answers 503 on `/b` only (half the traffic).
    Route,
    /// One endpoint answers 503 while the collector is down (killed 3 s before the onset, back 5 s
    /// after it).
    CollectorOutage,
}

impl Scenario {
    fn fault(self) -> Fault {
        match self {
            Scenario::Unavailable | Scenario::CollectorOutage => Fault::Unavailable,
            Scenario::Errors => Fault::Errors(0.2),
            Scenario::Slow => Fault::Slow(Duration::from_millis(300)),
            Scenario::Route => Fault::FailsPath("/b"),
        }
    }
}

#[derive(Debug, Parser)]
struct Args {
    /// The standalone proxy binary (`meshscope-proxy`).
    #[arg(long)]
    proxy: PathBuf,
    /// The `meshscope` binary, run as `meshscope collector`.
    #[arg(long)]
    meshscope: PathBuf,
    /// Directory for configs, logs, the collector's data and each run's `bad-endpoint.csv` (when the bad
    /// endpoint received each request, from which client) and `requests.csv` (every client request:
    /// when it was scheduled, its latency, whether it succeeded).
    #[arg(long)]
    work_dir: PathBuf,
    /// Client proxies.
    #[arg(long, default_value_t = 20)]
    clients: usize,
    /// Requests per second each client sends (Poisson arrivals).
    #[arg(long, default_value_t = 10.0)]
    rate: f64,
    /// Endpoints of the service.
    #[arg(long, default_value_t = 10)]
    endpoints: usize,
    /// Length of each run, in seconds.
    #[arg(long, default_value_t = 30)]
    seconds: u64,
    /// When the fault starts, in seconds from the start of a run.
    #[arg(long, default_value_t = 5)]
    onset: u64,
    /// Seed of the arrivals, the paths and the endpoints' random errors.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Scenarios to run, comma-separated.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "unavailable,errors,slow,route,collector-outage"
    )]
    scenarios: Vec<Scenario>,
    /// Policies to compare, comma-separated.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "round-robin,peak-ewma,outlier,adaptive"
    )]
    policies: Vec<Policy>,
    /// First loopback port used; the endpoints take the next `endpoints`, each run a fresh block.
    #[arg(long, default_value_t = 21000)]
    base_port: u16,
    /// Also write every summary here, as JSON lines.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(
        args.onset + 6 < args.seconds,
        "--seconds must exceed --onset by more than 6"
    );
    std::fs::create_dir_all(&args.work_dir)?;
    let mut endpoints = Vec::new();
    for i in 0..args.endpoints {
        let address = SocketAddr::from(([127, 0, 0, 1], args.base_port + i as u16));
        let endpoint = Endpoint::start(address, args.seed ^ ((i as u64) << 32))
            .await
            .with_context(|| format!("binding endpoint {address}"))?;
        endpoints.push(endpoint);
    }
    let bad = fastrand::Rng::with_seed(args.seed).usize(0..args.endpoints);
    println!(
        "loop_eval: {} clients × {} req/s → {} endpoints (bad: #{bad} {}), {} s runs, fault at {} s, seed {}",
        args.clients,
        args.rate,
        args.endpoints,
        endpoints[bad].address,
        args.seconds,
        args.onset,
        args.seed
    );
    let mut json = match &args.json {
        Some(path) => Some(std::fs::File::create(path)?),
        None => None,
    };
    let mut run = 0;
    let mut all = Vec::new();
    for &scenario in &args.scenarios {
        let mut results = Vec::new();
        for &policy in &args.policies {
            let summary = run_one(&args, &endpoints, bad, scenario, policy, run).await?;
            run += 1;
            if let Some(file) = json.as_mut() {
                use std::io::Write;
                let line = serde_json::json!({
                    "scenario": format!("{scenario:?}"),
                    "policy": format!("{policy:?}"),
                    "summary": summary,
                });
                writeln!(file, "{line}")?;
            }
            results.push((policy, summary));
        }
        print_table(scenario, &results);
        all.extend(
            results
                .into_iter()
                .map(|(policy, summary)| (scenario, policy, summary)),
        );
    }
    print_targets(&all);
    Ok(())
}

/// Issue 5's targets, for the scenarios and policies that ran.
fn print_targets(all: &[(Scenario, Policy, Summary)]) {
    let find = |scenario, policy| {
        all.iter()
            .find(|(s, p, _)| *s == scenario && *p == policy)
            .map(|(_, _, summary)| summary)
    };
    let verdict = |met: bool| if met { "met" } else { "MISSED" };
    println!("\n### Targets\n");
    if let Some(adaptive) = find(Scenario::Unavailable, Policy::Adaptive) {
        println!(
            "- 100 %-503, adaptive success ≥ 99.99 %: {:.3} % — {}",
            adaptive.success_percent,
            verdict(adaptive.success_percent >= 99.99)
        );
        println!(
            "- 100 %-503, adaptive amplification ≤ 1.2×: {:.3}× — {}",
            adaptive.amplification,
            verdict(adaptive.amplification <= 1.2)
        );
        let stop = adaptive.stop_seconds;
        println!(
            "- 100 %-503, every proxy stopped within 2 s of the onset: {} — {}",
            stop.map_or_else(|| "never".to_owned(), |s| format!("{s:.2} s")),
            verdict(stop.is_some_and(|s| s <= 2.0))
        );
    }
    if let (Some(adaptive), Some(outlier)) = (
        find(Scenario::Errors, Policy::Adaptive),
        find(Scenario::Errors, Policy::Outlier),
    ) {
        let ratio = outlier.failed as f64 / adaptive.failed.max(1) as f64;
        println!(
            "- 20 %-errors, ≥ 5× fewer failed requests than local outlier ejection: {} vs {} ({ratio:.1}×) — {}",
            adaptive.failed,
            outlier.failed,
            verdict(ratio >= 5.0)
        );
    }
    if let (Some(adaptive), Some(local)) = (
        find(Scenario::CollectorOutage, Policy::Adaptive),
        find(Scenario::CollectorOutage, Policy::PeakEwma),
    ) {
        println!(
            "- collector down, adaptive no worse than local peak EWMA (success at least as high, p99 within 1.2×): success {:.3} % vs {:.3} %, p99 {:.1} vs {:.1} ms — {}",
            adaptive.success_percent,
            local.success_percent,
            adaptive.p99_ms,
            local.p99_ms,
            verdict(
                adaptive.success_percent >= local.success_percent
                    && adaptive.p99_ms <= local.p99_ms * 1.2
            )
        );
    }
}

/// One policy through one scenario: fresh collector and proxies, the same seeded traffic as the other
/// policies, the fault at the onset.
async fn run_one(
    args: &Args,
    endpoints: &[Endpoint],
    bad: usize,
    scenario: Scenario,
    policy: Policy,
    run: usize,
) -> anyhow::Result<Summary> {
    let block = args.base_port + 100 + (run * (2 * args.clients + 4)) as u16;
    let collector_ports = CollectorPorts {
        grpc: block,
        http: block + 1,
        api: block + 2,
    };
    let dir = args
        .work_dir
        .join(format!("{run:02}-{scenario:?}-{policy:?}"));
    std::fs::create_dir_all(&dir)?;
    let data_dir = dir.join("data");
    let collector_log = dir.join("collector.log");
    let mut collector =
        Some(Collector::start(&args.meshscope, &data_dir, collector_ports, &collector_log).await?);
    let addresses: Vec<SocketAddr> = endpoints.iter().map(|e| e.address).collect();
    let mut proxies = Vec::new();
    let mut outbound = Vec::new();
    for client in 0..args.clients {
        let ports = ProxyPorts {
            outbound: block + 4 + 2 * client as u16,
            admin: block + 5 + 2 * client as u16,
        };
        let config = fleet::proxy_config(client, ports, policy, &addresses, collector_ports.grpc);
        proxies.push(Proxy::start(&args.proxy, &dir, client, &config, ports.admin).await?);
        outbound.push(ports.outbound);
    }

    let run_start = Instant::now();
    for endpoint in endpoints {
        endpoint.reset(run_start);
    }
    let length = Duration::from_secs(args.seconds);
    let onset = Duration::from_secs(args.onset);
    let mut clients = Vec::new();
    for (client, port) in outbound.iter().enumerate() {
        // The same arrivals for every policy of a scenario.
        let seed = args.seed.wrapping_mul(1_000_003) + (scenario as u64) * 10_000 + client as u64;
        clients.push(tokio::spawn(load::run_client(
            client as u16,
            *port,
            args.rate,
            run_start,
            length,
            seed,
        )));
    }

    let at = |offset: Duration| tokio::time::sleep_until((run_start + offset).into());
    if scenario == Scenario::CollectorOutage {
        at(onset - Duration::from_secs(3)).await;
        if let Some(running) = collector.take() {
            running.kill();
        }
    }
    at(onset).await;
    endpoints[bad].set_fault(scenario.fault());
    if scenario == Scenario::CollectorOutage {
        at(onset + Duration::from_secs(5)).await;
        collector = Some(
            Collector::start(&args.meshscope, &data_dir, collector_ports, &collector_log).await?,
        );
    }

    let mut outcomes = Vec::new();
    for client in clients {
        outcomes.extend(client.await?);
    }
    let received: Vec<_> = endpoints.iter().map(Endpoint::received).collect();
    let timeline: String = received[bad]
        .iter()
        .map(|request| format!("{:.3},{}\n", request.at.as_secs_f64(), request.client))
        .collect();
    std::fs::write(
        dir.join("bad-endpoint.csv"),
        format!("seconds,client\n{timeline}"),
    )?;
    let requests: String = outcomes
        .iter()
        .map(|o| {
            let latency_ms = o.latency.as_secs_f64() * 1e3;
            format!("{:.3},{latency_ms:.2},{}\n", o.at.as_secs_f64(), o.ok)
        })
        .collect();
    std::fs::write(
        dir.join("requests.csv"),
        format!("seconds,latency_ms,ok\n{requests}"),
    )?;
    drop(proxies);
    drop(collector);
    Ok(report::summarize(&outcomes, &received, bad, onset, length))
}

fn print_table(scenario: Scenario, results: &[(Policy, Summary)]) {
    println!("\n### {scenario:?}\n");
    println!(
        "| policy | requests | success % | failed | failed from onset+2 s | p99 ms | amplification | all stopped after (s) | bad endpoint's share from onset+2 s | proxies still sending from onset+2 s |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (policy, s) in results {
        let stop = s
            .stop_seconds
            .map_or_else(|| "never".to_owned(), |seconds| format!("{seconds:.2}"));
        println!(
            "| {policy:?} | {} | {:.3} | {} | {} | {:.1} | {:.3} | {stop} | {:.2} % | {} |",
            s.requests,
            s.success_percent,
            s.failed,
            s.failed_after_2s,
            s.p99_ms,
            s.amplification,
            s.bad_share_after_2s_percent,
            s.proxies_after_2s,
        );
    }
}
