//! Fleet signals: a subscription to the collector's `FleetSignals` service for every upstream that
//! balances `adaptive`, applying each update's verdicts to the matching endpoints.
//!
//! The task follows reloads (it resubscribes when the set of adaptive upstreams or the collector
//! changes) and reconnects with a growing pause when the collector is unreachable; meanwhile the
//! verdicts it applied expire and the balancer falls back to plain peak-EWMA.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::Uri;
use meshscope_proto::signals::fleet_signals_client::FleetSignalsClient;
use meshscope_proto::signals::{SignalsUpdate, SubscribeRequest};
use tokio::sync::watch;

use crate::config::BalancerKind;
use crate::reload::Live;
use crate::upstream::Upstream;

/// How often the task looks at the configuration for a changed subscription.
const RECHECK: Duration = Duration::from_secs(1);
/// Longest pause between connection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// What to subscribe to under the running configuration: collector and upstream names.
fn wanted(live: &Mutex<Live>) -> (Option<Uri>, Vec<String>, String) {
    let live = match live.lock() {
        Ok(live) => live,
        Err(poisoned) => poisoned.into_inner(),
    };
    let config = live.config();
    let collector = config
        .telemetry
        .signals_endpoint
        .as_ref()
        .or(config.telemetry.otlp_endpoint.as_ref())
        .map(|endpoint| endpoint.0.clone());
    let mut services: Vec<String> = config
        .upstreams
        .iter()
        .filter(|upstream| upstream.balancer == BalancerKind::Adaptive)
        .map(|upstream| upstream.name.clone())
        .collect();
    services.sort();
    (collector, services, config.service.name.clone())
}

fn upstreams(live: &Mutex<Live>) -> Vec<Arc<Upstream>> {
    let live = match live.lock() {
        Ok(live) => live,
        Err(poisoned) => poisoned.into_inner(),
    };
    live.tables()
        .upstreams()
        .into_iter()
        .map(Arc::clone)
        .collect()
}

/// Applies one update to the endpoints of the running upstreams it names; returns how many
/// endpoints got a verdict.
fn apply(live: &Mutex<Live>, update: &SignalsUpdate) -> usize {
    let upstreams = upstreams(live);
    let mut applied = 0;
    for service in &update.services {
        let Some(upstream) = upstreams.iter().find(|u| u.name() == service.service) else {
            continue;
        };
        for endpoint in upstream.endpoints() {
            let address = endpoint.address().as_str();
            if let Some(health) = service.endpoints.iter().find(|h| h.address == address) {
                endpoint.fleet().apply(
                    health.weight,
                    health.ejected_until_unix_nano,
                    health.expires_unix_nano,
                );
                applied += 1;
            }
        }
    }
    applied
}

/// Runs until `stop` turns true.
pub(crate) async fn run(live: Arc<Mutex<Live>>, mut stop: watch::Receiver<bool>) {
    let mut backoff = Duration::from_millis(200);
    loop {
        let (collector, services, proxy) = wanted(&live);
        let Some(collector) = collector.filter(|_| !services.is_empty()) else {
            tokio::select! {
                _ = stop.wait_for(|stop| *stop) => return,
                _ = tokio::time::sleep(RECHECK) => continue,
            }
        };
        let subscribed = subscribe(&live, &collector, &services, &proxy, &mut stop);
        match subscribed.await {
            Ended::Stopped => return,
            Ended::Changed => backoff = Duration::from_millis(200),
            Ended::Failed(reason) => {
                tracing::debug!(%collector, reason, "fleet signals unavailable; retrying");
                tokio::select! {
                    _ = stop.wait_for(|stop| *stop) => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// Why a subscription ended.
enum Ended {
    Stopped,
    Changed,
    Failed(String),
}

async fn subscribe(
    live: &Arc<Mutex<Live>>,
    collector: &Uri,
    services: &[String],
    proxy: &str,
    stop: &mut watch::Receiver<bool>,
) -> Ended {
    let channel = tonic::transport::Endpoint::from(collector.clone())
        .connect_timeout(Duration::from_secs(1))
        .tcp_nodelay(true);
    let mut client = match channel.connect().await {
        Ok(channel) => FleetSignalsClient::new(channel),
        Err(error) => return Ended::Failed(error.to_string()),
    };
    let request = SubscribeRequest {
        proxy_id: format!("{proxy}/{}", std::process::id()),
        services: services.to_vec(),
    };
    let mut updates = match client.subscribe(request).await {
        Ok(response) => response.into_inner(),
        Err(status) => return Ended::Failed(status.to_string()),
    };
    tracing::info!(%collector, ?services, "subscribed to fleet signals");
    let mut recheck = tokio::time::interval(RECHECK);
    loop {
        tokio::select! {
            _ = stop.wait_for(|stop| *stop) => return Ended::Stopped,
            _ = recheck.tick() => {
                let (now_collector, now_services, _) = wanted(live);
                if now_collector.as_ref() != Some(collector) || now_services != services {
                    return Ended::Changed;
                }
            }
            message = updates.message() => match message {
                Ok(Some(update)) => {
                    let applied = apply(live, &update);
                    tracing::trace!(applied, "fleet signals applied");
                }
                Ok(None) => return Ended::Failed("the collector ended the stream".into()),
                Err(status) => return Ended::Failed(status.to_string()),
            },
        }
    }
}
