//! Alerting: rules over spans and RED metrics, evaluated on their own intervals, with per-instance
//! state that survives restarts, and notifications to webhooks and Prometheus Alertmanager.
//!
//! ```text
//! rules file ─┐                      ┌─► state.json (data dir, after each change)
//! rules store ┴─► one task per rule ─┤
//!  (data dir)     AlertQuery (SQL) ──┴─► state machine ─► receiver queues ─► webhook / Alertmanager
//! ```
//!
//! The collector does not link the query engine: rules reach the data through the [`AlertQuery`]
//! trait, which the web crate implements over DataFusion. `docs/alerts.md` is the user's guide.

pub mod config;
mod eval;
pub mod persist;
pub mod receivers;
pub mod rule;
pub mod state;
pub mod template;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use serde::Serialize;
use tokio::task::JoinHandle;

pub use config::{AlertsConfig, Origin, RuleStore};
pub use receivers::{Delivery, ReceiverStatus};
pub use rule::Rule;
pub use state::{Instance, State};

use eval::RuleRuntime;
use receivers::{DeliveryLog, Receiver};

/// Runs a rule's SQL for the evaluator; implemented over the query engine by the web crate.
pub trait AlertQuery: Send + Sync + 'static {
    /// The rows of `sql`: each a numeric `value` (`None` when NULL) and the other columns as labels.
    /// An `Err` is shown as the rule's evaluation error.
    fn rows<'a>(&'a self, sql: &'a str) -> BoxFuture<'a, Result<Vec<AlertRow>, String>>;
}

/// One row of a rule's query.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertRow {
    /// Every column but `value`, as text.
    pub labels: BTreeMap<String, String>,
    /// The `value` column; rows where it is NULL are left out of the evaluation.
    pub value: Option<f64>,
}

/// What can go wrong managing alerts.
#[derive(Debug, thiserror::Error)]
pub enum AlertError {
    /// A rule, receiver or file is not acceptable.
    #[error("{0}")]
    Invalid(String),
    /// No rule of that name.
    #[error("no alert rule named {0:?}")]
    NotFound(String),
    /// Reading or writing a file failed.
    #[error("{path}: {error}", path = .0.display(), error = .1)]
    Io(PathBuf, std::io::Error),
}

/// What to percent-encode of a rule name in a URL path segment: all but RFC 3986's unreserved characters.
pub const PATH_SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Milliseconds since the Unix epoch, the clock of alert states.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as i64)
}

/// One rule with its evaluation state, for the API and UI.
#[derive(Debug, Clone, Serialize)]
pub struct RuleStatus {
    /// The rule.
    pub rule: Rule,
    /// Where it is defined.
    pub origin: Origin,
    /// The SQL it runs (generated for RED rules).
    pub query: String,
    /// When it was last evaluated (Unix ms).
    pub last_evaluation_ms: Option<i64>,
    /// How long that took.
    pub last_duration_ms: u64,
    /// Why the last evaluation failed, if it did.
    pub last_error: Option<String>,
    /// Its instances, firing first.
    pub instances: Vec<InstanceStatus>,
}

/// One instance with its Alertmanager fingerprint.
#[derive(Debug, Clone, Serialize)]
pub struct InstanceStatus {
    /// Hash of the labels, as Alertmanager computes identity.
    pub fingerprint: String,
    /// The instance.
    #[serde(flatten)]
    pub instance: Instance,
}

/// Where alerting keeps its files and how it links back to the UI.
#[derive(Debug, Clone)]
pub struct AlertOptions {
    /// The collector's data dir; alerting uses `<data_dir>/alerts/`.
    pub data_dir: PathBuf,
    /// Base URL of the UI for links in notifications, unless the rules file sets `external_url`.
    pub external_url: String,
}

/// The running alerting: a cheap handle shared by the API and the evaluator tasks.
#[derive(Clone)]
pub struct Alerts {
    inner: Arc<Inner>,
}

struct Inner {
    file: AlertsConfig,
    data_dir: PathBuf,
    external_url: String,
    query: Arc<dyn AlertQuery>,
    receivers: BTreeMap<String, Arc<Receiver>>,
    log: Arc<DeliveryLog>,
    /// Serialises edits, so two saves of the store never interleave.
    store: tokio::sync::Mutex<RuleStore>,
    rules: Mutex<BTreeMap<String, RuleRuntime>>,
    evaluators: Mutex<HashMap<String, JoinHandle<()>>>,
    background: Mutex<Vec<JoinHandle<()>>>,
    dirty: tokio::sync::Notify,
}

impl Alerts {
    /// Loads the rules store and saved state from the data dir, then starts one evaluator per rule, one
    /// worker per receiver and the state writer. Must run inside a tokio runtime.
    pub fn start(
        file: AlertsConfig,
        options: AlertOptions,
        query: Arc<dyn AlertQuery>,
    ) -> Result<Alerts, AlertError> {
        let store = RuleStore::load(&options.data_dir)?;
        let names: Vec<String> = file.receivers.iter().map(|r| r.name.clone()).collect();
        for (rule, _) in store.effective(&file.rules) {
            rule.validate(&names).map_err(|error| {
                AlertError::Invalid(format!(
                    "{}: rule {:?}: {error}",
                    persist::path(&options.data_dir, persist::RULES_FILE).display(),
                    rule.name
                ))
            })?;
        }
        let log = Arc::new(DeliveryLog::default());
        let mut receivers = BTreeMap::new();
        for config in &file.receivers {
            let receiver =
                Receiver::new(config.clone(), log.clone()).map_err(AlertError::Invalid)?;
            receivers.insert(config.name.clone(), Arc::new(receiver));
        }
        let mut saved = eval::load_state(&options.data_dir)?;
        let rules = store
            .effective(&file.rules)
            .into_iter()
            .map(|(rule, origin)| {
                let runtime = saved.remove(&rule.name).unwrap_or_default();
                (rule.name.clone(), RuleRuntime::new(rule, origin, runtime))
            })
            .collect();
        let external_url = file
            .external_url
            .clone()
            .unwrap_or(options.external_url)
            .trim_end_matches('/')
            .to_owned();
        let inner = Arc::new(Inner {
            file,
            data_dir: options.data_dir,
            external_url,
            query,
            receivers,
            log,
            store: tokio::sync::Mutex::new(store),
            rules: Mutex::new(rules),
            evaluators: Mutex::new(HashMap::new()),
            background: Mutex::new(Vec::new()),
            dirty: tokio::sync::Notify::new(),
        });
        let mut background = Vec::new();
        for receiver in inner.receivers.values() {
            background.push(tokio::spawn(receiver.clone().run()));
        }
        background.push(tokio::spawn(eval::write_state_on_change(inner.clone())));
        *lock(&inner.background) = background;
        let names: Vec<String> = lock(&inner.rules).keys().cloned().collect();
        for name in names {
            eval::restart_evaluator(&inner, &name);
        }
        Ok(Alerts { inner })
    }

    /// Every rule with its state, in name order.
    pub fn rules(&self) -> Vec<RuleStatus> {
        lock(&self.inner.rules)
            .values()
            .map(RuleRuntime::status)
            .collect()
    }

    /// One rule with its state.
    pub fn rule(&self, name: &str) -> Option<RuleStatus> {
        lock(&self.inner.rules).get(name).map(RuleRuntime::status)
    }

    /// Names of the configured receivers (receivers are defined only in the rules file).
    pub fn receiver_names(&self) -> Vec<String> {
        self.inner.receivers.keys().cloned().collect()
    }

    /// Every receiver's counters.
    pub fn receivers(&self) -> Vec<ReceiverStatus> {
        self.inner.receivers.values().map(|r| r.status()).collect()
    }

    /// The delivery log, newest first.
    pub fn deliveries(&self) -> Vec<Delivery> {
        self.inner.log.newest_first()
    }

    /// Creates a rule (`replaces` = `None`) or replaces the rule named `replaces` (which may rename it);
    /// persists the change in the rules store and (re)starts its evaluation.
    pub async fn save_rule(&self, replaces: Option<&str>, rule: Rule) -> Result<(), AlertError> {
        rule.validate(&self.receiver_names())
            .map_err(|error| AlertError::Invalid(format!("rule {:?}: {error}", rule.name)))?;
        let mut store = self.inner.store.lock().await;
        {
            let rules = lock(&self.inner.rules);
            if let Some(old) = replaces
                && !rules.contains_key(old)
            {
                return Err(AlertError::NotFound(old.to_owned()));
            }
            if replaces != Some(rule.name.as_str()) && rules.contains_key(&rule.name) {
                return Err(AlertError::Invalid(format!(
                    "a rule named {:?} already exists",
                    rule.name
                )));
            }
        }
        let mut next = store.clone();
        next.upsert(&self.inner.file.rules, replaces, rule.clone());
        next.save(&self.inner.data_dir)?;
        *store = next;
        if let Some(old) = replaces.filter(|old| *old != rule.name) {
            self.forget(old);
        }
        let name = rule.name.clone();
        {
            let mut rules = lock(&self.inner.rules);
            let previous = rules
                .remove(&name)
                .map(RuleRuntime::into_saved)
                .unwrap_or_default();
            rules.insert(
                name.clone(),
                RuleRuntime::new(rule, Origin::Store, previous),
            );
        }
        eval::restart_evaluator(&self.inner, &name);
        self.inner.dirty.notify_one();
        Ok(())
    }

    /// Deletes a rule, persisting the deletion in the rules store; its instances are dropped without
    /// notifications (as when a rule is removed from Prometheus).
    pub async fn delete_rule(&self, name: &str) -> Result<(), AlertError> {
        let mut store = self.inner.store.lock().await;
        if !lock(&self.inner.rules).contains_key(name) {
            return Err(AlertError::NotFound(name.to_owned()));
        }
        let mut next = store.clone();
        next.remove(&self.inner.file.rules, name);
        next.save(&self.inner.data_dir)?;
        *store = next;
        self.forget(name);
        self.inner.dirty.notify_one();
        Ok(())
    }

    fn forget(&self, name: &str) {
        if let Some(task) = lock(&self.inner.evaluators).remove(name) {
            task.abort();
        }
        lock(&self.inner.rules).remove(name);
    }

    /// Stops every task and writes the state one last time.
    pub async fn shutdown(&self) {
        for (_, task) in lock(&self.inner.evaluators).drain() {
            task.abort();
        }
        for task in lock(&self.inner.background).drain(..) {
            task.abort();
        }
        if let Err(error) = eval::save_state(&self.inner).await {
            tracing::warn!(%error, "alert state not saved at shutdown");
        }
    }
}

/// Locks a mutex, carrying on with the data if a panicking thread poisoned it.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
