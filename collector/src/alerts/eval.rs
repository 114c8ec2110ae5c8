//! The evaluator: one task per rule runs its query every interval, feeds the rows through the state
//! machine and queues notifications; a writer task saves the state after changes.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::receivers::payload::{self, AlertView};
use super::receivers::{Kind, Notification};
use super::state::{self, Instance, Observation, State, Timing};
use super::{
    AlertError, AlertRow, Inner, InstanceStatus, Origin, Rule, RuleStatus, lock, now_ms, persist,
    template,
};

/// What is saved of a rule in `state.json`: its instances and last evaluation.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(super) struct SavedRule {
    instances: BTreeMap<String, Instance>,
    last_evaluation_ms: Option<i64>,
    last_error: Option<String>,
}

/// The layout of `state.json`.
#[derive(Debug, Default, Serialize, Deserialize)]
struct StateFile {
    version: u32,
    rules: BTreeMap<String, SavedRule>,
}

/// A rule with everything its evaluations produced.
pub(super) struct RuleRuntime {
    rule: Rule,
    origin: Origin,
    saved: SavedRule,
    last_duration_ms: u64,
    /// When each receiver was last sent this rule's alerts (not saved: after a restart, firing alerts
    /// are sent again once, as Prometheus does).
    last_sent_ms: HashMap<String, i64>,
}

impl RuleRuntime {
    pub(super) fn new(rule: Rule, origin: Origin, saved: SavedRule) -> RuleRuntime {
        RuleRuntime {
            rule,
            origin,
            saved,
            last_duration_ms: 0,
            last_sent_ms: HashMap::new(),
        }
    }

    pub(super) fn into_saved(self) -> SavedRule {
        self.saved
    }

    pub(super) fn status(&self) -> RuleStatus {
        let mut instances: Vec<InstanceStatus> = self
            .saved
            .instances
            .values()
            .map(|instance| InstanceStatus {
                fingerprint: payload::fingerprint(&instance.labels),
                instance: instance.clone(),
            })
            .collect();
        let rank = |state: State| match state {
            State::Firing => 0,
            State::Pending => 1,
            State::Resolved => 2,
            State::Inactive => 3,
        };
        instances.sort_by_key(|i| rank(i.instance.state));
        RuleStatus {
            rule: self.rule.clone(),
            origin: self.origin,
            query: self.rule.query_sql(),
            last_evaluation_ms: self.saved.last_evaluation_ms,
            last_duration_ms: self.last_duration_ms,
            last_error: self.saved.last_error.clone(),
            instances,
        }
    }
}

/// The saved state of every rule, or nothing when there is no file yet. A file that does not parse is
/// moved aside to `state.json.bad` and alerting starts afresh: alert state is not worth keeping the
/// collector (and its ingest) from starting.
pub(super) fn load_state(data_dir: &Path) -> Result<BTreeMap<String, SavedRule>, AlertError> {
    let path = persist::path(data_dir, persist::STATE_FILE);
    let Some(text) = persist::read(&path)? else {
        return Ok(BTreeMap::new());
    };
    match serde_json::from_str::<StateFile>(&text) {
        Ok(file) => Ok(file.rules),
        Err(error) => {
            let aside = path.with_extension("json.bad");
            tracing::warn!(%error, file = %path.display(), aside = %aside.display(), "alert state unreadable; starting without it");
            std::fs::rename(&path, &aside).map_err(|error| AlertError::Io(path.clone(), error))?;
            Ok(BTreeMap::new())
        }
    }
}

/// Writes `state.json` from the current state.
pub(super) async fn save_state(inner: &Arc<Inner>) -> Result<(), AlertError> {
    let file = StateFile {
        version: 1,
        rules: lock(&inner.rules)
            .iter()
            .map(|(name, runtime)| (name.clone(), runtime.saved.clone()))
            .collect(),
    };
    let bytes = serde_json::to_vec(&file)
        .map_err(|error| AlertError::Invalid(format!("alert state: {error}")))?;
    let path = persist::path(&inner.data_dir, persist::STATE_FILE);
    tokio::task::spawn_blocking(move || persist::write_atomic(&path, &bytes))
        .await
        .map_err(|error| AlertError::Invalid(format!("alert state writer: {error}")))?
}

/// Saves the state whenever an evaluation or edit changed it, at most once a second.
pub(super) async fn write_state_on_change(inner: Arc<Inner>) {
    loop {
        inner.dirty.notified().await;
        if let Err(error) = save_state(&inner).await {
            tracing::warn!(%error, "alert state not saved");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Starts (or restarts, after an edit) the evaluation task of the rule `name`.
pub(super) fn restart_evaluator(inner: &Arc<Inner>, name: &str) {
    let Some(rule) = lock(&inner.rules).get(name).map(|r| r.rule.clone()) else {
        return;
    };
    let task = tokio::spawn(evaluate_forever(inner.clone(), rule));
    if let Some(previous) = lock(&inner.evaluators).insert(name.to_owned(), task) {
        previous.abort();
    }
}

async fn evaluate_forever(inner: Arc<Inner>, rule: Rule) {
    let mut tick = tokio::time::interval(rule.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        evaluate(&inner, &rule).await;
    }
}

/// One evaluation of `rule`: query, advance states, queue notifications. A failed query keeps every
/// instance as it was and is shown as the rule's error.
async fn evaluate(inner: &Arc<Inner>, rule: &Rule) {
    let started = Instant::now();
    let sql = rule.query_sql();
    let result = inner.query.rows(&sql).await;
    let now = now_ms();
    let mut outgoing = Vec::new();
    {
        let mut rules = lock(&inner.rules);
        let Some(runtime) = rules.get_mut(&rule.name).filter(|r| r.rule == *rule) else {
            return;
        };
        runtime.saved.last_evaluation_ms = Some(now);
        runtime.last_duration_ms = started.elapsed().as_millis() as u64;
        match result {
            Err(error) => {
                tracing::debug!(rule = %rule.name, %error, "alert rule failed");
                runtime.saved.last_error = Some(error);
            }
            Ok(rows) => {
                runtime.saved.last_error = None;
                let observations = rows
                    .into_iter()
                    .filter_map(|row| observe(rule, row))
                    .collect();
                let timing = Timing {
                    for_: rule.for_,
                    keep_firing_for: rule.keep_firing_for,
                };
                let changed = state::step(&mut runtime.saved.instances, observations, now, timing);
                outgoing = notifications(inner, runtime, &changed, now);
            }
        }
    }
    for (receiver, notification) in outgoing {
        if let Some(receiver) = inner.receivers.get(&receiver) {
            receiver.enqueue(notification);
        }
    }
    inner.dirty.notify_one();
}

/// A row as the state machine sees it: labels are `alertname`, the row's columns, then the rule's
/// labels (which win); NULL values are left out.
fn observe(rule: &Rule, row: AlertRow) -> Option<Observation> {
    let value = row.value.filter(|value| !value.is_nan())?;
    let mut labels = row.labels;
    labels.insert("alertname".into(), rule.name.clone());
    labels.extend(rule.labels.clone());
    let annotations = rule
        .annotations
        .iter()
        .map(|(name, text)| (name.clone(), template::render(text, &labels, value)))
        .collect();
    Some(Observation {
        key: serde_json::to_string(&labels).unwrap_or_default(),
        labels,
        annotations,
        value,
        holds: rule.condition.holds(value),
    })
}

/// The notifications this evaluation owes each receiver of the rule.
///
/// Alertmanager receivers get every firing and resolved instance whenever something changed and
/// again every `resend_interval` (Alertmanager deduplicates; firing alerts carry an `endsAt` four
/// resend intervals ahead, so Alertmanager resolves them itself if Meshscope goes away). Webhooks get
/// firing instances plus those that just resolved, when something changed, and a reminder every
/// `repeat_interval` while any instance fires.
fn notifications(
    inner: &Inner,
    runtime: &mut RuleRuntime,
    changed: &[String],
    now: i64,
) -> Vec<(String, Notification)> {
    let rule = &runtime.rule;
    let generator_url = format!(
        "{}/alerts/rules/{}",
        inner.external_url,
        percent_encoding::utf8_percent_encode(&rule.name, super::PATH_SEGMENT)
    );
    let view = |instance: &Instance, ends_if_firing: Option<i64>| AlertView {
        labels: instance.labels.clone(),
        annotations: instance.annotations.clone(),
        firing: instance.state == State::Firing,
        starts_at_ms: instance.fired_at_ms.unwrap_or(now),
        ends_at_ms: if instance.state == State::Firing {
            ends_if_firing
        } else {
            instance.resolved_at_ms
        },
        generator_url: generator_url.clone(),
    };
    let instances = &runtime.saved.instances;
    let any_firing = instances.values().any(|i| i.state == State::Firing);
    let mut out = Vec::new();
    for name in &rule.receivers {
        let Some(receiver) = inner.receivers.get(name) else {
            continue;
        };
        let since_last = runtime.last_sent_ms.get(name).map(|last| now - last);
        let (due, alerts) = match receiver.config().kind {
            Kind::Alertmanager => {
                let resend = inner.file.resend_interval;
                let valid_for = 4 * resend.max(rule.interval).as_millis() as i64;
                let alerts: Vec<AlertView> = instances
                    .values()
                    .filter(|i| matches!(i.state, State::Firing | State::Resolved))
                    .map(|i| view(i, Some(now + valid_for)))
                    .collect();
                let resend_due = since_last.is_none_or(|ms| ms >= resend.as_millis() as i64);
                (!changed.is_empty() || resend_due, alerts)
            }
            Kind::Webhook => {
                let alerts: Vec<AlertView> = instances
                    .iter()
                    .filter(|(key, i)| {
                        i.state == State::Firing
                            || (i.state == State::Resolved && changed.contains(key))
                    })
                    .map(|(_, i)| view(i, None))
                    .collect();
                let repeat = inner.file.repeat_interval.as_millis() as i64;
                let repeat_due = any_firing && since_last.is_none_or(|ms| ms >= repeat);
                (!changed.is_empty() || repeat_due, alerts)
            }
        };
        if !due || alerts.is_empty() {
            continue;
        }
        let body = match receiver.config().kind {
            Kind::Alertmanager => payload::alertmanager(&alerts),
            Kind::Webhook => payload::webhook(name, &rule.name, &inner.external_url, &alerts),
        };
        runtime.last_sent_ms.insert(name.clone(), now);
        out.push((
            name.clone(),
            Notification {
                rule: rule.name.clone(),
                status: if alerts.iter().any(|a| a.firing) {
                    "firing"
                } else {
                    "resolved"
                },
                alerts: alerts.len(),
                body,
            },
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unreadable_state_file_is_moved_aside() {
        let dir = std::env::temp_dir().join(format!("meshscope-state-{}", std::process::id()));
        let path = persist::path(&dir, persist::STATE_FILE);
        persist::write_atomic(&path, b"{\"version\": 1, \"rules\": {").unwrap();
        assert_eq!(load_state(&dir).unwrap(), BTreeMap::new());
        assert!(!path.exists());
        assert!(dir.join("alerts/state.json.bad").exists());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
