//! Endpoint discovery: an upstream's endpoints can come from a file that is rewritten while the
//! proxy runs, and host names among them can be re-resolved on an interval (one endpoint per
//! address, as Envoy's strict DNS). Changes are applied with `Upstream::replace_endpoints`, so
//! endpoints that stay keep their state and requests in flight to removed ones finish.
//!
//! One task (`run`) checks every upstream that has a source to watch once a second. Files are
//! polled by content, for the same reasons as the configuration file (see `reload.rs`).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::uri::Authority;
use tokio::sync::watch;

use crate::config::{self, ConfigError, UpstreamConfig};
use crate::reload::Live;
use crate::upstream::Upstream;

/// How often sources are checked (DNS names only when their own interval is up).
const TICK: Duration = Duration::from_secs(1);

/// An upstream's endpoint sources and what was last seen from them.
#[derive(Debug)]
pub(crate) struct Discovery {
    file: Option<PathBuf>,
    dns_refresh: Option<Duration>,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// The file's text as last read, to notice changes.
    file_text: Option<String>,
    /// The last read error, to log each distinct one once.
    file_error: Option<String>,
    /// Endpoints as declared (names not yet resolved).
    declared: Vec<(Authority, u32)>,
    /// Addresses last found for each declared name, kept when a lookup fails.
    resolved: HashMap<Authority, Vec<Authority>>,
    /// When names are next resolved.
    next_lookup: Instant,
}

impl Discovery {
    /// The sources of a validated `[[upstream]]` table and the endpoints to start with (the file is
    /// read now; names are resolved at the first check).
    pub(crate) fn new(
        config: &UpstreamConfig,
    ) -> Result<(Self, Vec<(Authority, u32)>), ConfigError> {
        let (declared, file_text) = match &config.endpoints_file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                })?;
                (read_endpoints(&text, path)?, Some(text))
            }
            None => (
                config
                    .endpoints
                    .iter()
                    .map(|e| (e.address.0.clone(), e.weight))
                    .collect(),
                None,
            ),
        };
        let discovery = Self {
            file: config.endpoints_file.clone(),
            dns_refresh: config.dns_refresh.map(|d| d.0),
            state: Mutex::new(State {
                file_text,
                file_error: None,
                declared: declared.clone(),
                resolved: HashMap::new(),
                next_lookup: Instant::now(),
            }),
        };
        Ok((discovery, declared))
    }

    /// Whether there is anything to watch.
    pub(crate) fn is_active(&self) -> bool {
        self.file.is_some() || self.dns_refresh.is_some()
    }

    /// Re-reads the file if it changed and re-resolves names if due, then gives `upstream` the
    /// resulting endpoints.
    async fn refresh(&self, upstream: &Upstream) {
        let mut changed = false;
        if let Some(path) = &self.file {
            changed = self.reread(path, upstream.name()).await;
        }
        let (declared, lookup_due) = {
            let state = self.lock();
            (
                state.declared.clone(),
                self.dns_refresh.is_some() && Instant::now() >= state.next_lookup,
            )
        };
        if !changed && !lookup_due {
            return;
        }
        let endpoints = match self.dns_refresh {
            Some(every) => {
                let endpoints = self.resolve(&declared, upstream.name()).await;
                let now = Instant::now();
                self.lock().next_lookup = now.checked_add(every).unwrap_or(now);
                endpoints
            }
            None => declared,
        };
        if upstream.replace_endpoints(&endpoints) {
            let addresses: Vec<&str> = endpoints.iter().map(|(a, _)| a.as_str()).collect();
            tracing::info!(upstream = upstream.name(), ?addresses, "endpoints changed");
        }
    }

    /// Reads the endpoints file; returns whether it holds a new valid list.
    async fn reread(&self, path: &PathBuf, upstream: &str) -> bool {
        let text = match tokio::fs::read_to_string(path).await {
            Ok(text) => text,
            Err(e) => {
                let message = e.to_string();
                let mut state = self.lock();
                if state.file_error.as_ref() != Some(&message) {
                    tracing::warn!(upstream, file = %path.display(), error = message, "cannot read the endpoints file");
                    state.file_error = Some(message);
                }
                return false;
            }
        };
        let mut state = self.lock();
        state.file_error = None;
        if state.file_text.as_ref() == Some(&text) {
            return false;
        }
        let parsed = read_endpoints(&text, path);
        state.file_text = Some(text);
        match parsed {
            Ok(declared) => {
                state.declared = declared;
                true
            }
            Err(e) => {
                tracing::error!(
                    upstream,
                    "endpoints file rejected, the previous endpoints stay:\n{e}"
                );
                false
            }
        }
    }

    /// `declared` with every host name replaced by the addresses it resolves to now (or, if the
    /// lookup fails, to what it resolved to before).
    async fn resolve(
        &self,
        declared: &[(Authority, u32)],
        upstream: &str,
    ) -> Vec<(Authority, u32)> {
        let mut endpoints = Vec::new();
        for (name, weight) in declared {
            if name
                .host()
                .trim_matches(['[', ']'])
                .parse::<std::net::IpAddr>()
                .is_ok()
            {
                endpoints.push((name.clone(), *weight));
                continue;
            }
            let port = name.port_u16().unwrap_or(80);
            let found: Option<Vec<Authority>> = match tokio::net::lookup_host((name.host(), port))
                .await
            {
                Ok(addresses) => {
                    let mut found: Vec<Authority> = addresses
                        .filter_map(|address| {
                            Authority::try_from(address.to_string().as_str()).ok()
                        })
                        .collect();
                    found.sort_by(|a, b| a.as_str().cmp(b.as_str()));
                    found.dedup();
                    Some(found)
                }
                Err(e) => {
                    tracing::warn!(upstream, name = name.as_str(), error = %e, "DNS lookup failed; keeping the previous addresses");
                    None
                }
            };
            let mut state = self.lock();
            let addresses = match found {
                Some(found) => {
                    state.resolved.insert(name.clone(), found.clone());
                    found
                }
                None => state
                    .resolved
                    .get(name)
                    .cloned()
                    .unwrap_or_else(|| vec![name.clone()]),
            };
            endpoints.extend(addresses.into_iter().map(|address| (address, *weight)));
        }
        endpoints
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        match self.state.lock() {
            Ok(state) => state,
            Err(poisoned) => poisoned.into_inner(),
        }
    }
}

fn read_endpoints(
    text: &str,
    path: &std::path::Path,
) -> Result<Vec<(Authority, u32)>, ConfigError> {
    let endpoints = config::parse_endpoints(text, &path.display().to_string())?;
    Ok(endpoints
        .into_iter()
        .map(|e| (e.address.0, e.weight))
        .collect())
}

/// Checks every upstream's sources each second until `stop` is raised.
pub(crate) async fn run(live: Arc<Mutex<Live>>, mut stop: watch::Receiver<bool>) {
    let mut ticker = tokio::time::interval(TICK);
    loop {
        tokio::select! {
            _ = stop.wait_for(|stop| *stop) => break,
            _ = ticker.tick() => {}
        }
        let watched = {
            let live = match live.lock() {
                Ok(live) => live,
                Err(poisoned) => poisoned.into_inner(),
            };
            live.tables().discovered()
        };
        for (discovery, upstream) in watched {
            discovery.refresh(&upstream).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn discovery(declared: Vec<(Authority, u32)>, refresh: Option<Duration>) -> Discovery {
        Discovery {
            file: None,
            dns_refresh: refresh,
            state: Mutex::new(State {
                file_text: None,
                file_error: None,
                declared,
                resolved: HashMap::new(),
                next_lookup: Instant::now(),
            }),
        }
    }

    #[tokio::test]
    async fn names_resolve_to_one_endpoint_per_address_and_ips_stay() {
        let declared = vec![
            (Authority::from_static("localhost:8080"), 3),
            (Authority::from_static("10.0.0.1:80"), 1),
        ];
        let d = discovery(declared, Some(Duration::from_secs(5)));
        let declared = d.lock().declared.clone();
        let resolved = d.resolve(&declared, "t").await;
        assert!(
            resolved
                .iter()
                .any(|(a, w)| a.as_str() == "127.0.0.1:8080" && *w == 3),
            "{resolved:?}"
        );
        assert!(resolved.iter().any(|(a, _)| a.as_str() == "10.0.0.1:80"));
        assert!(resolved.iter().all(|(a, _)| a.host() != "localhost"));
    }

    #[tokio::test]
    async fn a_failed_lookup_keeps_the_previous_addresses() {
        let name = Authority::from_static("no-such-host.invalid:80");
        let d = discovery(vec![(name.clone(), 1)], Some(Duration::from_secs(5)));
        d.lock()
            .resolved
            .insert(name.clone(), vec![Authority::from_static("10.9.9.9:80")]);
        let resolved = d.resolve(&[(name, 1)], "t").await;
        assert_eq!(resolved, vec![(Authority::from_static("10.9.9.9:80"), 1)]);
    }
}
