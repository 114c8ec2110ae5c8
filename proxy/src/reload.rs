//! Hot reload: applying a new configuration to a running proxy without dropping a request.
//!
//! Each listener reads its route table from a `tokio::sync::watch` channel when a request arrives,
//! so a reload is one pointer swap per listener: requests already running keep the tables they
//! started with, new requests get the new ones. Listener addresses cannot change this way (that
//! needs new sockets); such a reload is refused and the running configuration stays.
//!
//! The file is watched by polling its contents rather than with inotify: polling works on every
//! filesystem and survives the rename-over and symlink swaps that editors and Kubernetes ConfigMaps
//! use, which break inotify watches, and one small read per second costs nothing.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use crate::build::{Tables, build};
use crate::config::{self, Config};
use crate::route::RouteTable;
use crate::server::ProxyError;
use crate::upstream::Upstream;

/// What a reload swaps: the running configuration, its tables, and the channels listeners read
/// the tables from. The admin endpoint reads it too.
#[derive(Debug)]
pub(crate) struct Live {
    config: Config,
    tables: Tables,
    routes: Vec<watch::Sender<Arc<RouteTable>>>,
    tcp: Vec<watch::Sender<Arc<Upstream>>>,
}

impl Live {
    /// Live state for `config` and its freshly built `tables`, whose HTTP listeners read from
    /// `routes` and TCP listeners from `tcp` (each in the tables' order).
    pub(crate) fn new(
        config: Config,
        tables: Tables,
        routes: Vec<watch::Sender<Arc<RouteTable>>>,
        tcp: Vec<watch::Sender<Arc<Upstream>>>,
    ) -> Self {
        Self {
            config,
            tables,
            routes,
            tcp,
        }
    }

    /// The running configuration.
    pub(crate) fn config(&self) -> &Config {
        &self.config
    }

    /// The running tables.
    pub(crate) fn tables(&self) -> &Tables {
        &self.tables
    }
}

/// Applies new configurations to a running [`Proxy`](crate::Proxy); cheap to clone.
#[derive(Debug, Clone)]
pub struct ReloadHandle {
    live: Arc<Mutex<Live>>,
}

impl ReloadHandle {
    pub(crate) fn new(live: Arc<Mutex<Live>>) -> Self {
        Self { live }
    }

    /// Switches the proxy to a validated `config`. Fails, changing nothing, if the listener
    /// addresses differ from the running ones.
    pub fn reload(&self, config: &Config) -> Result<(), ProxyError> {
        let mut live = match self.live.lock() {
            Ok(live) => live,
            Err(poisoned) => poisoned.into_inner(),
        };
        let next = build(config, Some(&live.tables))?;
        let (running, wanted) = (live.tables.listen_addresses(), next.listen_addresses());
        if running != wanted {
            return Err(ProxyError::ListenersChanged {
                running: describe(&running),
                wanted: describe(&wanted),
            });
        }
        for (sender, plan) in live.routes.iter().zip(&next.listeners) {
            sender.send_replace(Arc::clone(&plan.routes));
        }
        for (sender, plan) in live.tcp.iter().zip(&next.tcp) {
            sender.send_replace(Arc::clone(&plan.upstream));
        }
        live.tables = next;
        live.config = config.clone();
        Ok(())
    }

    /// Polls `path` every `interval` and applies each new version of it. `applied` is the text
    /// already running. A file that cannot be read or does not validate is logged with its file, line
    /// and reason, and the running configuration keeps serving. Runs until dropped.
    pub async fn watch_file(self, path: PathBuf, mut applied: String, interval: Duration) {
        let name = path.display().to_string();
        let mut last_read_error = None;
        loop {
            tokio::time::sleep(interval).await;
            let text = match tokio::fs::read_to_string(&path).await {
                Ok(text) => text,
                Err(e) => {
                    let message = e.to_string();
                    if last_read_error.as_ref() != Some(&message) {
                        tracing::warn!(
                            file = name,
                            error = message,
                            "cannot read the configuration"
                        );
                        last_read_error = Some(message);
                    }
                    continue;
                }
            };
            last_read_error = None;
            if text == applied {
                continue;
            }
            match config::parse(&text, &name).map(|config| self.reload(&config)) {
                Ok(Ok(())) => tracing::info!(file = name, "configuration reloaded"),
                Ok(Err(e)) => tracing::error!(
                    "{name}: new configuration not applied, the previous one keeps serving: {e}"
                ),
                Err(e) => tracing::error!(
                    "new configuration rejected, the previous one keeps serving:\n{e}"
                ),
            }
            applied = text;
        }
    }
}

fn describe(listeners: &[(String, std::net::SocketAddr)]) -> String {
    let parts: Vec<String> = listeners
        .iter()
        .map(|(role, address)| format!("{role} {address}"))
        .collect();
    parts.join(", ")
}
