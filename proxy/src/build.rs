//! Turning a validated configuration into the tables each listener serves from.
//!
//! Used at start-up and on every reload. On a reload, an `[[upstream]]` whose table did not change
//! keeps its run-time object, and with it its connection pools, balancer state, latency estimates and
//! retry budget; only changed or new upstreams start fresh.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use crate::config::{Config, UpstreamConfig};
use crate::discovery::Discovery;
use crate::forward::Side;
use crate::route::{Route, RouteTable};
use crate::server::ProxyError;
use crate::upstream::Upstream;

/// Everything built from one configuration.
#[derive(Debug)]
pub(crate) struct Tables {
    /// One entry per HTTP listener: the inbound one first (if any), then the outbound ones in order.
    pub(crate) listeners: Vec<ListenerPlan>,
    /// One entry per `[[tcp]]` listener, in order.
    pub(crate) tcp: Vec<TcpPlan>,
    upstreams: HashMap<String, BuiltUpstream>,
    /// The inbound listener's local application, if there is one.
    local_app: Option<Arc<Upstream>>,
}

/// An `[[upstream]]` as built, with the table it was built from and its endpoint sources.
#[derive(Debug)]
struct BuiltUpstream {
    config: UpstreamConfig,
    upstream: Arc<Upstream>,
    discovery: Arc<Discovery>,
}

/// A listener to run: its name, its configured address and its routes.
#[derive(Debug)]
pub(crate) struct ListenerPlan {
    /// `inbound` or `outbound[i]`, for logs and errors.
    pub(crate) role: String,
    /// The configured socket address.
    pub(crate) listen: SocketAddr,
    /// Inbound (to the local app) or outbound (to the mesh).
    pub(crate) side: Side,
    /// The routes its requests follow.
    pub(crate) routes: Arc<RouteTable>,
}

/// A TCP listener to run: its name, its configured address and where its connections go.
#[derive(Debug)]
pub(crate) struct TcpPlan {
    /// `tcp[i]`, for logs and errors.
    pub(crate) role: String,
    /// The configured socket address.
    pub(crate) listen: SocketAddr,
    /// The upstream whose endpoints receive the connections.
    pub(crate) upstream: Arc<Upstream>,
}

impl Tables {
    /// The configured addresses of all listeners, HTTP then TCP, in order.
    pub(crate) fn listen_addresses(&self) -> Vec<(String, SocketAddr)> {
        let http = self.listeners.iter().map(|l| (l.role.clone(), l.listen));
        let tcp = self.tcp.iter().map(|l| (l.role.clone(), l.listen));
        http.chain(tcp).collect()
    }

    /// Every upstream, the local application first, then the `[[upstream]]`s by name.
    pub(crate) fn upstreams(&self) -> Vec<&Arc<Upstream>> {
        let mut named: Vec<_> = self.upstreams.iter().collect();
        named.sort_by(|a, b| a.0.cmp(b.0));
        self.local_app
            .iter()
            .chain(named.into_iter().map(|(_, built)| &built.upstream))
            .collect()
    }

    /// The upstreams whose endpoints come from a file or DNS, with their sources.
    pub(crate) fn discovered(&self) -> Vec<(Arc<Discovery>, Arc<Upstream>)> {
        self.upstreams
            .values()
            .filter(|built| built.discovery.is_active())
            .map(|built| (Arc::clone(&built.discovery), Arc::clone(&built.upstream)))
            .collect()
    }
}

/// Builds the tables for a validated `config`, reusing unchanged upstreams from `previous`.
pub(crate) fn build(config: &Config, previous: Option<&Tables>) -> Result<Tables, ProxyError> {
    let mut upstreams = HashMap::new();
    for wanted in &config.upstreams {
        let kept = previous
            .and_then(|p| p.upstreams.get(&wanted.name))
            .filter(|built| built.config == *wanted);
        let built = match kept {
            Some(built) => BuiltUpstream {
                config: wanted.clone(),
                upstream: Arc::clone(&built.upstream),
                discovery: Arc::clone(&built.discovery),
            },
            None => {
                let (discovery, endpoints) =
                    Discovery::new(wanted).map_err(|source| ProxyError::Endpoints {
                        upstream: wanted.name.clone(),
                        source,
                    })?;
                BuiltUpstream {
                    config: wanted.clone(),
                    upstream: Arc::new(Upstream::new(wanted, &endpoints)),
                    discovery: Arc::new(discovery),
                }
            }
        };
        upstreams.insert(wanted.name.clone(), built);
    }
    let by_name: HashMap<String, Arc<Upstream>> = upstreams
        .iter()
        .map(|(name, built)| (name.clone(), Arc::clone(&built.upstream)))
        .collect();

    let mut listeners = Vec::new();
    let mut local_app = None;
    if let Some(inbound) = &config.inbound {
        let app = Arc::new(Upstream::local_app(
            &format!("{} (local app)", config.service.name),
            inbound,
        ));
        local_app = Some(Arc::clone(&app));
        let route = Route::inbound(app, inbound);
        listeners.push(ListenerPlan {
            role: "inbound".to_owned(),
            listen: inbound.listen,
            side: Side::Inbound,
            routes: Arc::new(RouteTable::new(vec![route])),
        });
    }
    for (i, outbound) in config.outbound.iter().enumerate() {
        let routes = outbound
            .routes
            .iter()
            .map(|r| {
                Route::from_config(r, &by_name).ok_or_else(|| ProxyError::UnknownUpstream {
                    route: format!("route {:?}", r.name),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        listeners.push(ListenerPlan {
            role: format!("outbound[{i}]"),
            listen: outbound.listen,
            side: Side::Outbound,
            routes: Arc::new(RouteTable::new(routes)),
        });
    }
    let tcp = config
        .tcp
        .iter()
        .enumerate()
        .map(|(i, tcp)| {
            let upstream =
                by_name
                    .get(&tcp.upstream)
                    .ok_or_else(|| ProxyError::UnknownUpstream {
                        route: format!("tcp[{i}]"),
                    })?;
            Ok(TcpPlan {
                role: format!("tcp[{i}]"),
                listen: tcp.listen,
                upstream: Arc::clone(upstream),
            })
        })
        .collect::<Result<Vec<_>, ProxyError>>()?;
    Ok(Tables {
        listeners,
        tcp,
        upstreams,
        local_app,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(b_weight: u32) -> Config {
        let text = format!(
            "[service]\nname = \"s\"\n[[outbound]]\nlisten = \"127.0.0.1:0\"\nroute = [{{ name = \"r\", upstream = \"a\" }}]\n\
             [[upstream]]\nname = \"a\"\nendpoints = [{{ address = \"a:1\" }}]\n\
             [[upstream]]\nname = \"b\"\nendpoints = [{{ address = \"b:1\", weight = {b_weight} }}]\n"
        );
        match crate::config::parse(&text, "t.toml") {
            Ok(config) => config,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn reload_keeps_unchanged_upstreams_only() {
        let (first, second) = (config(1), config(2));
        let Ok(old) = build(&first, None) else {
            panic!("build failed")
        };
        let Ok(new) = build(&second, Some(&old)) else {
            panic!("build failed")
        };
        let same =
            |name: &str| Arc::ptr_eq(&old.upstreams[name].upstream, &new.upstreams[name].upstream);
        assert!(
            same("a"),
            "unchanged upstream a keeps its pools and balancer state"
        );
        assert!(!same("b"), "changed upstream b is rebuilt");
    }
}
