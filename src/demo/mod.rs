//! `meshscope demo`: the collector with its UI, and a small shop of services, each instance behind its
//! own Meshscope sidecar, with steady traffic and a switch to inject faults.
//!
//! ```text
//! load ─► frontend ─► api ─┬─► catalog ×2
//!                          └─► orders ─┬─► payments ×2
//!                                      └─► postgres (no sidecar: a virtual node in the graph)
//! ```
//!
//! Every sidecar exports spans to the collector and balances `adaptive`, so faults injected into one
//! instance show up in traces, the service graph and the fleet signals within seconds.

mod app;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use clap::Args;
use meshscope_collector::alerts::AlertsConfig;
use tokio_util::sync::CancellationToken;

use crate::collector_cmd::CollectorArgs;
use app::{App, Call, Fault};

/// Flags of `meshscope demo`: the collector's, plus the demo's own.
#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    #[command(flatten)]
    collector: CollectorArgs,
    /// First of the loopback ports the sidecars listen on (each instance takes ten).
    #[arg(long, env = "MESHSCOPE_DEMO_BASE_PORT", default_value_t = 17000)]
    base_port: u16,
    /// Requests per second the load generator sends to the frontend.
    #[arg(long, env = "MESHSCOPE_DEMO_RATE", default_value_t = 20)]
    rate: u32,
    /// Listen address of the fault switch (`POST /fault/{instance}?error_rate=1&delay_ms=300`).
    #[arg(
        long,
        env = "MESHSCOPE_DEMO_CONTROL_LISTEN",
        default_value = "127.0.0.1:8687"
    )]
    control_listen: SocketAddr,
}

/// One service instance of the demo.
struct Instance {
    name: &'static str,
    service: &'static str,
    work_ms: u64,
    calls: Vec<Call>,
    sidecar: bool,
}

/// The shop: which instances exist and whom they call.
fn topology() -> Vec<Instance> {
    let call = |when, service, path| Call {
        when,
        service,
        path,
    };
    let instance = |name, service, work_ms, calls, sidecar| Instance {
        name,
        service,
        work_ms,
        calls,
        sidecar,
    };
    vec![
        instance(
            "frontend-1",
            "frontend",
            2,
            vec![
                call("/checkout", "api", "/checkout"),
                call("/", "api", "/products"),
            ],
            true,
        ),
        instance(
            "api-1",
            "api",
            3,
            vec![
                call("/", "catalog", "/items"),
                call("/checkout", "orders", "/orders"),
            ],
            true,
        ),
        instance("catalog-1", "catalog", 4, vec![], true),
        instance("catalog-2", "catalog", 4, vec![], true),
        instance(
            "orders-1",
            "orders",
            5,
            vec![
                call("/", "postgres", "/query"),
                call("/", "payments", "/charge"),
            ],
            true,
        ),
        instance("payments-1", "payments", 8, vec![], true),
        instance("payments-2", "payments", 8, vec![], true),
        instance("postgres-1", "postgres", 1, vec![], false),
    ]
}

/// Ports of instance number `index`: sidecar inbound, outbound, admin.
fn ports(base: u16, index: usize) -> (u16, u16, u16) {
    let first = base + 10 * index as u16;
    (first, first + 1, first + 2)
}

/// The sidecar configuration of one instance, whose application listens on `app`.
fn sidecar_config(
    instance: &Instance,
    index: usize,
    app: SocketAddr,
    base: u16,
    all: &[Instance],
    collector: SocketAddr,
) -> String {
    let (inbound, outbound, admin) = ports(base, index);
    let mut config = format!(
        "[service]\nname = \"{}\"\ndrain_timeout = \"2s\"\n\n\
         [inbound]\nlisten = \"127.0.0.1:{inbound}\"\napp = \"{app}\"\n\n\
         [admin]\nlisten = \"127.0.0.1:{admin}\"\n\n\
         [telemetry]\notlp_endpoint = \"http://{collector}\"\nflush_interval = \"500ms\"\n",
        instance.service
    );
    let mut upstreams: Vec<&str> = instance.calls.iter().map(|call| call.service).collect();
    upstreams.sort();
    upstreams.dedup();
    if upstreams.is_empty() {
        return config;
    }
    config += &format!("\n[[outbound]]\nlisten = \"127.0.0.1:{outbound}\"\n");
    for upstream in &upstreams {
        config += &format!(
            "\n[[outbound.route]]\nname = \"{upstream}\"\nmatch = {{ host = \"{upstream}\" }}\nupstream = \"{upstream}\"\ntimeout = \"2s\"\n\n\
             [outbound.route.retry]\nattempts = 2\non = [\"connect-failure\", \"gateway-error\"]\n"
        );
    }
    for upstream in &upstreams {
        let endpoints: Vec<String> = all
            .iter()
            .enumerate()
            .filter(|(_, other)| other.service == *upstream)
            .map(|(i, _)| format!("{{ address = \"127.0.0.1:{}\" }}", ports(base, i).0))
            .collect();
        config += &format!(
            "\n[[upstream]]\nname = \"{upstream}\"\nbalancer = \"adaptive\"\nendpoints = [{}]\n",
            endpoints.join(", ")
        );
    }
    config
}

/// Shared state of the fault switch.
struct Control {
    faults: BTreeMap<&'static str, Arc<Mutex<Fault>>>,
}

#[derive(serde::Deserialize)]
struct FaultQuery {
    #[serde(default)]
    error_rate: f64,
    #[serde(default)]
    delay_ms: u64,
}

async fn list_faults(State(control): State<Arc<Control>>) -> Json<BTreeMap<&'static str, Fault>> {
    Json(
        control
            .faults
            .iter()
            .map(|(name, fault)| (*name, *fault.lock().unwrap_or_else(|e| e.into_inner())))
            .collect(),
    )
}

async fn set_fault(
    State(control): State<Arc<Control>>,
    Path(instance): Path<String>,
    Query(query): Query<FaultQuery>,
) -> Response {
    let Some(fault) = control.faults.get(instance.as_str()) else {
        let names: Vec<&str> = control.faults.keys().copied().collect();
        let text = format!(
            "no instance {instance:?}; instances: {}\n",
            names.join(", ")
        );
        return (StatusCode::NOT_FOUND, text).into_response();
    };
    if !(0.0..=1.0).contains(&query.error_rate) {
        return (
            StatusCode::BAD_REQUEST,
            "error_rate must be within 0 and 1\n",
        )
            .into_response();
    }
    *fault.lock().unwrap_or_else(|e| e.into_inner()) = Fault {
        error_rate: query.error_rate,
        delay_ms: query.delay_ms,
    };
    tracing::info!(
        instance,
        error_rate = query.error_rate,
        delay_ms = query.delay_ms,
        "fault set"
    );
    (StatusCode::OK, "fault set\n").into_response()
}

async fn clear_fault(
    State(control): State<Arc<Control>>,
    Path(instance): Path<String>,
) -> Response {
    match control.faults.get(instance.as_str()) {
        Some(fault) => {
            *fault.lock().unwrap_or_else(|e| e.into_inner()) = Fault::default();
            tracing::info!(instance, "fault cleared");
            (StatusCode::OK, "fault cleared\n").into_response()
        }
        None => (StatusCode::NOT_FOUND, "no such instance\n").into_response(),
    }
}

/// Sends `rate` requests per second to the frontend's sidecar until `stop`.
async fn generate_load(frontend: SocketAddr, rate: u32, stop: CancellationToken) {
    let http = reqwest::Client::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1) / rate.max(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let paths = ["/", "/", "/products", "/checkout"];
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let path = paths[fastrand::usize(..paths.len())];
        let request = http
            .get(format!("http://{frontend}{path}"))
            .timeout(Duration::from_secs(5))
            .send();
        tokio::spawn(async move {
            let _ = request.await;
        });
    }
}

/// The demo's alert rules unless `--alert-rules` names others: failing edges and slow operations.
const DEMO_ALERT_RULES: &str = include_str!("alerts.toml");

/// Runs the demo until SIGTERM or Ctrl-C.
pub(crate) async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let mut settings = args
        .collector
        .settings_with_data_dir("meshscope-demo-data")?;
    if settings.alerts.rules.is_empty() && settings.alerts.receivers.is_empty() {
        settings.alerts = AlertsConfig::parse(DEMO_ALERT_RULES, "src/demo/alerts.toml")?;
    }
    let grpc = settings.receivers.grpc_listen;
    let api = settings.api_listen;
    let shutdown = CancellationToken::new();
    tokio::spawn(crate::signals::cancel_on_signal(shutdown.clone()));
    let collector_stop = shutdown.clone();
    let collector = tokio::spawn(async move {
        let result = crate::collector_cmd::run_until(settings, collector_stop.clone()).await;
        collector_stop.cancel();
        result
    });
    wait_for_port(grpc, &shutdown).await?;

    let instances = topology();
    let http = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(32)
        .build()?;
    let mut faults = BTreeMap::new();
    let mut tasks = tokio::task::JoinSet::new();
    for (index, instance) in instances.iter().enumerate() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let app_addr = listener.local_addr()?;
        let fault = Arc::new(Mutex::new(Fault::default()));
        faults.insert(instance.name, fault.clone());
        let (_, outbound, _) = ports(args.base_port, index);
        let app = Arc::new(App {
            work: Duration::from_millis(instance.work_ms),
            calls: instance.calls.clone(),
            outbound: (!instance.calls.is_empty())
                .then(|| SocketAddr::from(([127, 0, 0, 1], outbound))),
            fault,
            http: http.clone(),
        });
        let stop = shutdown.clone();
        tasks.spawn(async move {
            let _ = app::serve(app, listener, stop.cancelled_owned()).await;
        });
        // Instances without a sidecar are reached directly: give them the sidecar's inbound port.
        let config = if instance.sidecar {
            sidecar_config(instance, index, app_addr, args.base_port, &instances, grpc)
        } else {
            direct_config(instance, index, app_addr, args.base_port)
        };
        let config = meshscope_proxy::config::parse(&config, instance.name)
            .map_err(|error| anyhow::anyhow!("demo sidecar of {}: {error}", instance.name))?;
        let stop = shutdown.clone();
        tasks.spawn(async move {
            if let Err(error) = meshscope_proxy::run(&config, stop.cancelled_owned()).await {
                tracing::error!(%error, "demo sidecar failed");
            }
        });
    }
    let (frontend, _, _) = ports(args.base_port, 0);
    tasks.spawn(generate_load(
        SocketAddr::from(([127, 0, 0, 1], frontend)),
        args.rate,
        shutdown.clone(),
    ));
    let control = Arc::new(Control { faults });
    let router = axum::Router::new()
        .route("/", axum::routing::get(list_faults))
        .route(
            "/fault/{instance}",
            axum::routing::post(set_fault).delete(clear_fault),
        )
        .with_state(control);
    let control_listener = tokio::net::TcpListener::bind(args.control_listen)
        .await
        .with_context(|| format!("binding the fault switch on {}", args.control_listen))?;
    let stop = shutdown.clone();
    tasks.spawn(async move {
        let _ = axum::serve(control_listener, router)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await;
    });

    println!(
        "Meshscope demo running: {} instances behind sidecars, {} requests/s.",
        instances.len(),
        args.rate
    );
    println!("  UI and API:      http://{api}/");
    println!("  Alerts:          http://{api}/alerts");
    println!("  OTLP/gRPC:       http://{grpc}  (spans of every sidecar arrive here)");
    println!(
        "  Try SQL:         meshscope sql \"SELECT * FROM service_edges ORDER BY window_end DESC LIMIT 10\""
    );
    println!(
        "  Inject a fault:  curl -X POST 'http://{}/fault/payments-2?error_rate=1'",
        args.control_listen
    );
    println!(
        "  Clear it:        curl -X DELETE http://{}/fault/payments-2",
        args.control_listen
    );
    println!("  Instances:       curl http://{}/", args.control_listen);
    println!("Ctrl-C stops everything.");

    shutdown.cancelled().await;
    while tasks.join_next().await.is_some() {}
    collector.await.context("collector task")?
}

/// A pass-through sidecar for an instance that has none of its own (it stands for a database the mesh
/// does not manage): plain TCP forwarding from its inbound port, so callers reach a stable address.
fn direct_config(instance: &Instance, index: usize, app: SocketAddr, base: u16) -> String {
    let (inbound, _, _) = ports(base, index);
    format!(
        "[service]\nname = \"{}\"\n\n[[tcp]]\nlisten = \"127.0.0.1:{inbound}\"\nupstream = \"app\"\n\n\
         [[upstream]]\nname = \"app\"\nendpoints = [{{ address = \"{app}\" }}]\n",
        instance.service
    )
}

/// Waits until `addr` accepts connections (the collector is up), or fails after 30 s.
async fn wait_for_port(addr: SocketAddr, shutdown: &CancellationToken) -> anyhow::Result<()> {
    for _ in 0..300 {
        if shutdown.is_cancelled() {
            anyhow::bail!("stopped before the collector came up");
        }
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("the collector did not listen on {addr} within 30 s")
}
