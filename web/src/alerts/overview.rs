//! `/alerts`: every rule, its instances and their history with links to example traces, the receivers
//! and the delivery log.

use std::collections::BTreeMap;

use askama::Template;
use axum::extract::State;
use meshscope_collector::alerts::rule::{Figure, Op};
use meshscope_collector::alerts::{
    Alerts, Instance, PATH_SEGMENT, Rule, RuleStatus, State as AlertState,
};

use crate::format;
use crate::ui::page::Page;

/// Deliveries shown on the page (the API has the whole log).
const DELIVERIES_SHOWN: usize = 50;

/// How far before an alert became active its trace link starts.
const TRACE_LEAD_MS: i64 = 5 * 60 * 1000;

/// One instance as the page shows it.
pub struct InstanceView {
    state: &'static str,
    labels: String,
    value: String,
    since: String,
    summary: String,
    history: Vec<String>,
    traces: Option<String>,
}

/// One rule as the page shows it.
pub struct RuleView {
    name: String,
    edit: String,
    origin: &'static str,
    condition: String,
    query: String,
    timing: String,
    receivers: String,
    last_evaluation: String,
    error: Option<String>,
    firing: usize,
    pending: usize,
    instances: Vec<InstanceView>,
}

/// One delivery attempt as the page shows it.
pub struct DeliveryView {
    at: String,
    receiver: String,
    rule: String,
    status: &'static str,
    alerts: usize,
    attempt: u32,
    outcome: &'static str,
    detail: String,
}

/// One receiver as the page shows it.
pub struct ReceiverView {
    name: String,
    kind: String,
    url: String,
    counters: String,
}

/// `/alerts`.
#[derive(Template)]
#[template(path = "alerts.html")]
pub struct AlertsPage {
    nav: &'static str,
    rules: Vec<RuleView>,
    receivers: Vec<ReceiverView>,
    deliveries: Vec<DeliveryView>,
}

fn time(ms: i64) -> String {
    format!("{} UTC", format::instant(ms.saturating_mul(1_000_000)))
}

/// The name an enum has in the rules file (`error_rate`, `alertmanager`).
fn name_of<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|value| value.as_str().map(str::to_owned))
        .unwrap_or_default()
}

fn describe_condition(rule: &Rule) -> String {
    let what = match &rule.red {
        Some(red) => {
            let mut entity = name_of(&red.scope);
            for value in [&red.client, &red.service, &red.operation]
                .into_iter()
                .flatten()
            {
                entity.push(' ');
                entity.push_str(value);
            }
            format!(
                "{} of {entity} over {}",
                name_of(&red.figure),
                humantime::format_duration(red.range)
            )
        }
        None => "SQL value".to_owned(),
    };
    format!("{what} {}", rule.condition)
}

/// A link to the search page for traces like the ones that made the instance fire: its service (and
/// operation) over the time it was active; errors only, or only slow traces for a latency rule.
fn traces_link(rule: &Rule, instance: &Instance) -> Option<String> {
    let labels = &instance.labels;
    let service = ["service", "server", "service_name"]
        .iter()
        .find_map(|key| labels.get(*key))?;
    let start = instance
        .active_at_ms
        .or(instance.fired_at_ms)
        .unwrap_or(instance.changed_ms)
        - rule
            .red
            .as_ref()
            .map_or(TRACE_LEAD_MS, |red| red.range.as_millis() as i64);
    let end = instance
        .resolved_at_ms
        .unwrap_or_else(meshscope_collector::alerts::now_ms);
    let mut query = vec![("service", service.clone())];
    if let Some(operation) = labels.get("operation") {
        query.push(("name", operation.clone()));
    }
    let latency = rule
        .red
        .as_ref()
        .is_some_and(|red| matches!(red.figure, Figure::P50 | Figure::P95 | Figure::P99));
    if latency && matches!(rule.condition.op, Op::Gt | Op::Ge) {
        query.push(("min_duration", format!("{}ms", rule.condition.threshold)));
    } else {
        query.push(("status", "error".to_owned()));
    }
    query.push(("start", format::rfc3339_ms(start)));
    query.push(("end", format::rfc3339_ms(end)));
    serde_urlencoded::to_string(query)
        .ok()
        .map(|query| format!("/search?{query}"))
}

fn labels_text(labels: &BTreeMap<String, String>) -> String {
    labels
        .iter()
        .filter(|(name, _)| *name != "alertname")
        .map(|(name, value)| format!("{name}={value}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn instance_view(rule: &Rule, instance: &Instance) -> InstanceView {
    InstanceView {
        state: instance.state.name(),
        labels: labels_text(&instance.labels),
        value: format::significant(instance.value),
        since: time(instance.changed_ms),
        summary: instance
            .annotations
            .get("summary")
            .cloned()
            .unwrap_or_default(),
        history: instance
            .history
            .iter()
            .rev()
            .map(|t| {
                format!(
                    "{} {} → {} (value {})",
                    time(t.at_ms),
                    t.from.name(),
                    t.to.name(),
                    format::significant(t.value)
                )
            })
            .collect(),
        traces: traces_link(rule, instance),
    }
}

fn rule_view(status: RuleStatus) -> RuleView {
    let rule = &status.rule;
    let count = |state| {
        status
            .instances
            .iter()
            .filter(|i| i.instance.state == state)
            .count()
    };
    RuleView {
        name: rule.name.clone(),
        edit: format!(
            "/alerts/rules/{}",
            percent_encoding::utf8_percent_encode(&rule.name, PATH_SEGMENT)
        ),
        origin: match status.origin {
            meshscope_collector::alerts::Origin::File => "rules file",
            meshscope_collector::alerts::Origin::Store => "edited here",
        },
        condition: describe_condition(rule),
        query: status.query.clone(),
        timing: format!(
            "every {}, for {}, keep firing for {}",
            humantime::format_duration(rule.interval),
            humantime::format_duration(rule.for_),
            humantime::format_duration(rule.keep_firing_for)
        ),
        receivers: rule.receivers.join(", "),
        last_evaluation: status.last_evaluation_ms.map_or_else(
            || "not yet".to_owned(),
            |ms| format!("{} ({} ms)", time(ms), status.last_duration_ms),
        ),
        error: status.last_error.clone(),
        firing: count(AlertState::Firing),
        pending: count(AlertState::Pending),
        instances: status
            .instances
            .iter()
            .map(|i| instance_view(rule, &i.instance))
            .collect(),
    }
}

/// `GET /alerts`.
pub async fn overview(State(alerts): State<Alerts>) -> Page<AlertsPage> {
    Page(AlertsPage {
        nav: "alerts",
        rules: alerts.rules().into_iter().map(rule_view).collect(),
        receivers: alerts
            .receivers()
            .into_iter()
            .map(|r| ReceiverView {
                kind: name_of(&r.kind),
                counters: format!(
                    "{} queued, {} delivered, {} failed attempts, {} given up, {} dropped",
                    r.queued, r.delivered, r.failed_attempts, r.given_up, r.dropped
                ),
                name: r.name,
                url: r.url,
            })
            .collect(),
        deliveries: alerts
            .deliveries()
            .into_iter()
            .take(DELIVERIES_SHOWN)
            .map(|d| DeliveryView {
                at: time(d.at_ms),
                detail: match (d.http_status, d.error) {
                    (_, Some(error)) => error,
                    (Some(status), None) => format!("HTTP {status} in {} ms", d.duration_ms),
                    (None, None) => String::new(),
                },
                receiver: d.receiver,
                rule: d.rule,
                status: d.status,
                alerts: d.alerts,
                attempt: d.attempt,
                outcome: d.outcome,
            })
            .collect(),
    })
}
