//! Fleet-wide endpoint health: every proxy's CLIENT spans pooled per (upstream service, endpoint) over a
//! sliding window, each endpoint judged against its peers, and the verdicts streamed back to the proxies
//! (the `FleetSignals` gRPC service).

mod judge;
mod service;
pub(crate) mod window;

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use meshscope_proto::signals::{EndpointHealth, ServiceHealth, SignalsUpdate};
use meshscope_storage::RecordBatch;

pub use judge::JudgeOptions;
pub use service::SignalsService;

use crate::span_rows::SpanRows;
use judge::{Ejection, Observed, judge};
use window::{Evidence, Window};

/// Settings of the fleet view.
#[derive(Debug, Clone)]
pub struct FleetOptions {
    /// Length of the sliding window, in whole seconds.
    pub window: Duration,
    /// How often subscribers get an update.
    pub update_interval: Duration,
    /// Services that received spans are judged again at most this often as spans arrive, and a new
    /// ejection is pushed to subscribers at once rather than at their next `update_interval` tick.
    pub eager_judge_interval: Duration,
    /// Proxies ignore an update's entries after this long.
    pub signal_ttl: Duration,
    /// At most this many (service, endpoint) pairs are tracked; spans of further ones are counted
    /// in `meshscope_fleet_endpoints_dropped_total` and ignored.
    pub max_endpoints: usize,
    /// Endpoints without a request for this long are forgotten.
    pub idle_expiry: Duration,
    /// How endpoints are judged.
    pub judge: JudgeOptions,
}

impl Default for FleetOptions {
    fn default() -> Self {
        FleetOptions {
            window: Duration::from_secs(10),
            update_interval: Duration::from_millis(500),
            eager_judge_interval: Duration::from_millis(100),
            signal_ttl: Duration::from_secs(5),
            max_endpoints: 100_000,
            idle_expiry: Duration::from_secs(300),
            judge: JudgeOptions::default(),
        }
    }
}

/// The window and ejection state of one endpoint.
struct EndpointState {
    window: Window,
    ejection: Ejection,
}

/// The endpoints of one upstream service, by address.
type Endpoints = HashMap<String, EndpointState>;

/// What `observe` and `update` share under one lock.
#[derive(Default)]
struct Pool {
    /// service → endpoint → state.
    services: HashMap<String, Endpoints>,
    /// Services that received spans since the last eager judgement.
    touched: HashSet<String>,
    /// When the last eager judgement ran.
    last_eager: Option<Instant>,
}

/// The pooled view of every proxy's calls; fed by ingest, read by subscribers.
pub struct FleetHealth {
    options: FleetOptions,
    pool: Mutex<Pool>,
    /// Counts new ejections found by eager judgement; subscribers wake on a change.
    ejections: tokio::sync::watch::Sender<u64>,
    tracked: AtomicU64,
    /// Spans ignored because `max_endpoints` was reached.
    pub dropped: AtomicU64,
    /// CLIENT spans counted.
    pub observed: AtomicU64,
}

impl FleetHealth {
    /// An empty view.
    pub fn new(options: FleetOptions) -> FleetHealth {
        FleetHealth {
            options,
            pool: Mutex::new(Pool::default()),
            ejections: tokio::sync::watch::Sender::new(0),
            tracked: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            observed: AtomicU64::new(0),
        }
    }

    /// The settings this view runs with.
    pub fn options(&self) -> &FleetOptions {
        &self.options
    }

    /// Changes whenever spans just observed made an endpoint ejected, so a subscriber can send an update
    /// at once instead of at its next tick.
    pub fn ejections(&self) -> tokio::sync::watch::Receiver<u64> {
        self.ejections.subscribe()
    }

    /// Counts the CLIENT spans of an acknowledged batch of `spans` rows that name an upstream service
    /// and endpoint (`meshscope.upstream.service`, `meshscope.upstream.endpoint`). A span fails when its
    /// status is error or its HTTP status is 5xx.
    pub fn observe(&self, batch: &RecordBatch) {
        let Some(rows) = SpanRows::of(batch) else {
            return;
        };
        let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
        let Pool {
            services, touched, ..
        } = &mut *pool;
        let window_seconds = self.options.window.as_secs().max(1) as usize;
        let mut observed = 0;
        for row in 0..batch.num_rows() {
            if rows.kind.value(row) != "client" {
                continue;
            }
            let Some((service, endpoint)) = rows.upstream(row) else {
                continue;
            };
            let second = rows.end.value(row).div_euclid(1_000_000_000);
            let latency_ms = rows.duration.value(row) as f64 / 1e6;
            let endpoints = services.entry(service.to_owned()).or_default();
            let state = match endpoints.get_mut(endpoint) {
                Some(state) => state,
                None => {
                    if self.tracked.load(Ordering::Relaxed) >= self.options.max_endpoints as u64 {
                        self.dropped.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    self.tracked.fetch_add(1, Ordering::Relaxed);
                    endpoints
                        .entry(endpoint.to_owned())
                        .or_insert_with(|| EndpointState {
                            window: Window::new(window_seconds),
                            ejection: Ejection::default(),
                        })
                }
            };
            state.window.record(second, rows.failed(row), latency_ms);
            if !touched.contains(service) {
                touched.insert(service.to_owned());
            }
            observed += 1;
        }
        self.observed.fetch_add(observed, Ordering::Relaxed);
        self.judge_eagerly(&mut pool);
    }

    /// Judges the services that received spans, at most every `eager_judge_interval`, and tells
    /// subscribers when that ejected an endpoint.
    fn judge_eagerly(&self, pool: &mut Pool) {
        let due = pool
            .last_eager
            .is_none_or(|last| last.elapsed() >= self.options.eager_judge_interval);
        if !due || pool.touched.is_empty() {
            return;
        }
        pool.last_eager = Some(Instant::now());
        let now = Clock::at(SystemTime::now(), &self.options);
        let mut ejected = false;
        for service in std::mem::take(&mut pool.touched) {
            if let Some(endpoints) = pool.services.get_mut(&service) {
                ejected |= judge_service(&self.options, endpoints, &now).newly_ejected;
            }
        }
        if ejected {
            self.ejections.send_modify(|count| *count += 1);
        }
    }

    /// Judges every endpoint of `wanted` services (all services when empty) at `now` and returns the
    /// update to send; forgets endpoints idle past `idle_expiry`.
    pub fn update(&self, wanted: &[String], now: SystemTime) -> SignalsUpdate {
        let now = Clock::at(now, &self.options);
        let idle_seconds = self.options.idle_expiry.as_secs() as i64;
        let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = Vec::new();
        for (name, endpoints) in pool.services.iter_mut() {
            let before = endpoints.len();
            endpoints.retain(|_, state| {
                state.window.last_second() > now.second - idle_seconds
                    || state.ejection.until > now.nanos
            });
            self.tracked
                .fetch_sub((before - endpoints.len()) as u64, Ordering::Relaxed);
            if !wanted.is_empty() && !wanted.iter().any(|w| w == name) {
                continue;
            }
            let judged = judge_service(&self.options, endpoints, &now);
            out.push(ServiceHealth {
                service: name.clone(),
                endpoints: judged.health,
                requests: judged.total.requests,
                success_rate: judged.total.success_rate(),
            });
        }
        out.sort_by(|a, b| a.service.cmp(&b.service));
        SignalsUpdate {
            generated_unix_nano: now.nanos,
            window_millis: self.options.window.as_millis() as u32,
            services: out,
        }
    }

    /// The view's own metrics in Prometheus text format.
    pub fn render_metrics(&self) -> String {
        format!(
            "# HELP meshscope_fleet_spans_observed_total CLIENT spans counted into fleet health.\n\
             # TYPE meshscope_fleet_spans_observed_total counter\n\
             meshscope_fleet_spans_observed_total {}\n\
             # HELP meshscope_fleet_endpoints_dropped_total Spans ignored because the endpoint cap was reached.\n\
             # TYPE meshscope_fleet_endpoints_dropped_total counter\n\
             meshscope_fleet_endpoints_dropped_total {}\n\
             # HELP meshscope_fleet_endpoints Endpoints tracked.\n\
             # TYPE meshscope_fleet_endpoints gauge\n\
             meshscope_fleet_endpoints {}\n",
            self.observed.load(Ordering::Relaxed),
            self.dropped.load(Ordering::Relaxed),
            self.tracked.load(Ordering::Relaxed),
        )
    }
}

/// One instant of judgement in the units the windows and signals use.
struct Clock {
    /// Unix nanoseconds.
    nanos: u64,
    /// Unix seconds, the windows' bucket key.
    second: i64,
    /// When entries of an update made now expire, in Unix nanoseconds.
    expires: u64,
}

impl Clock {
    fn at(now: SystemTime, options: &FleetOptions) -> Clock {
        let nanos = now
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Clock {
            nanos,
            second: (nanos / 1_000_000_000) as i64,
            expires: nanos + options.signal_ttl.as_nanos() as u64,
        }
    }
}

/// The judgement of one service's endpoints.
struct Judged {
    /// Each endpoint's health, sorted by address.
    health: Vec<EndpointHealth>,
    /// The evidence of all endpoints together.
    total: Evidence,
    /// An endpoint not ejected before is ejected now.
    newly_ejected: bool,
}

/// Judges every endpoint of one service at `now`, updating their ejections.
fn judge_service(options: &FleetOptions, endpoints: &mut Endpoints, now: &Clock) -> Judged {
    let recent = i64::from(options.judge.recent_seconds);
    let mut addresses: Vec<&String> = Vec::with_capacity(endpoints.len());
    let mut observed: Vec<Observed> = Vec::with_capacity(endpoints.len());
    let mut ejections: Vec<&mut Ejection> = Vec::with_capacity(endpoints.len());
    for (address, state) in endpoints.iter_mut() {
        addresses.push(address);
        observed.push(Observed {
            window: state.window.total(now.second),
            recent: state.window.recent(now.second, recent),
        });
        ejections.push(&mut state.ejection);
    }
    let was_ejected: Vec<bool> = ejections.iter().map(|e| e.until > now.nanos).collect();
    let mut pairs: Vec<(&Observed, &mut Ejection)> = observed
        .iter()
        .zip(ejections.iter_mut().map(|e| &mut **e))
        .collect();
    let verdicts = judge(&options.judge, now.nanos, &mut pairs);
    let newly_ejected = pairs
        .iter()
        .zip(&was_ejected)
        .any(|((_, ejection), was)| !was && ejection.until > now.nanos);
    let mut total = Evidence::default();
    let mut health: Vec<EndpointHealth> = verdicts
        .into_iter()
        .enumerate()
        .map(|(i, verdict)| {
            let evidence = &observed[i].window;
            total.merge(evidence);
            EndpointHealth {
                address: addresses[i].clone(),
                weight: verdict.weight,
                success_rate: evidence.success_rate(),
                requests: evidence.requests,
                latency_p50_ms: evidence.latency_quantile(0.5),
                latency_p90_ms: evidence.latency_quantile(0.9),
                latency_p99_ms: evidence.latency_quantile(0.99),
                ejected_until_unix_nano: pairs[i].1.until,
                reason: verdict.reason,
                expires_unix_nano: now.expires,
            }
        })
        .collect();
    health.sort_by(|a, b| a.address.cmp(&b.address));
    Judged {
        health,
        total,
        newly_ejected,
    }
}
