//! The alerting pages: `/alerts` (every rule, its instances and their history, receivers and the
//! delivery log) and the rule editor (a TOML form, so every field of a rule can be edited without
//! JavaScript). Forms post back here; cross-site posts are refused.

use std::collections::BTreeMap;

use askama::Template;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use meshscope_collector::alerts::rule::{Figure, Op};
use meshscope_collector::alerts::{
    Alerts, Instance, PATH_SEGMENT, Rule, RuleStatus, State as AlertState,
};
use serde::Deserialize;

use crate::error::ApiError;
use crate::format;
use crate::ui::page::{Page, PageError, PageResult};

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

/// The rule editor.
#[derive(Template)]
#[template(path = "alert_rule.html")]
pub struct RuleEditor {
    nav: &'static str,
    /// The rule being edited; empty for a new one.
    replaces: String,
    text: String,
    error: Option<String>,
    receivers: String,
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

/// A new rule's starting text.
const NEW_RULE: &str = r#"name = "new-rule"
condition = "> 5"
interval = "30s"
for = "1m"
keep_firing_for = "2m"
receivers = []
red = { scope = "service", figure = "error_rate", range = "5m" }

[labels]
severity = "warning"

[annotations]
summary = "{{ labels.service }}: {{ value | round(1) }}% of requests fail"
"#;

fn editor(alerts: &Alerts, replaces: String, text: String, error: Option<String>) -> RuleEditor {
    RuleEditor {
        nav: "alerts",
        replaces,
        text,
        error,
        receivers: alerts.receiver_names().join(", "),
    }
}

/// `GET /alerts/new`: the editor with an example rule.
pub async fn new_rule(State(alerts): State<Alerts>) -> Page<RuleEditor> {
    Page(editor(&alerts, String::new(), NEW_RULE.to_owned(), None))
}

/// `GET /alerts/rules/{name}`: the editor with the rule as TOML.
pub async fn edit_rule(
    State(alerts): State<Alerts>,
    Path(name): Path<String>,
) -> PageResult<RuleEditor> {
    let status = alerts
        .rule(&name)
        .ok_or_else(|| ApiError::not_found(format!("no alert rule named {name:?}")))?;
    let text = toml::to_string(&status.rule)
        .map_err(|error| ApiError::internal(format!("rule as TOML: {error}")))?;
    Ok(Page(editor(&alerts, name, text, None)))
}

#[derive(Deserialize)]
struct RuleForm {
    #[serde(default)]
    replaces: String,
    text: String,
}

/// Browsers say where a form post comes from; posts from other sites are refused, so a page elsewhere
/// cannot edit rules through a visitor's browser. Clients that send neither header (curl) pass.
fn same_origin(headers: &HeaderMap) -> bool {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(site) = header("sec-fetch-site") {
        return matches!(site, "same-origin" | "none");
    }
    match (header("origin"), header("host")) {
        (Some(origin), Some(host)) => origin
            .split_once("://")
            .is_some_and(|(_, origin_host)| origin_host == host),
        _ => true,
    }
}

fn refuse_cross_site(headers: &HeaderMap) -> Result<(), PageError> {
    if same_origin(headers) {
        Ok(())
    } else {
        Err(PageError(ApiError::forbidden(
            "cross-site form posts are refused",
        )))
    }
}

/// `POST /alerts/rules`: saves the editor's rule (new, or replacing `replaces`); back to `/alerts`, or
/// the editor again with the error.
pub async fn save_rule(
    State(alerts): State<Alerts>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, PageError> {
    refuse_cross_site(&headers)?;
    let form: RuleForm = serde_urlencoded::from_bytes(&body)
        .map_err(|error| ApiError::bad_request(format!("form: {error}")))?;
    let replaces = Some(form.replaces.as_str()).filter(|name| !name.is_empty());
    let saved = match toml::from_str::<Rule>(&form.text) {
        Ok(rule) => {
            if replaces.is_none() && alerts.rule(&rule.name).is_some() {
                Err(format!("a rule named {:?} already exists", rule.name))
            } else {
                let name = rule.name.clone();
                alerts
                    .save_rule(replaces, rule)
                    .await
                    .map(|()| name)
                    .map_err(|error| error.to_string())
            }
        }
        Err(error) => Err(error.to_string()),
    };
    Ok(match saved {
        Ok(name) => Redirect::to(&format!(
            "/alerts#rule-{}",
            percent_encoding::utf8_percent_encode(&name, PATH_SEGMENT)
        ))
        .into_response(),
        Err(error) => {
            let page = editor(&alerts, form.replaces, form.text, Some(error));
            (StatusCode::BAD_REQUEST, Page(page)).into_response()
        }
    })
}

/// `POST /alerts/rules/{name}/delete`.
pub async fn delete_rule(
    State(alerts): State<Alerts>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Redirect, PageError> {
    refuse_cross_site(&headers)?;
    alerts.delete_rule(&name).await.map_err(ApiError::from)?;
    Ok(Redirect::to("/alerts"))
}

#[cfg(test)]
mod tests {
    use super::*;

    use axum::http::header;

    #[test]
    fn cross_site_posts_are_recognised() {
        let mut headers = HeaderMap::new();
        assert!(same_origin(&headers));
        headers.insert(header::HOST, "127.0.0.1:8686".parse().unwrap());
        headers.insert(header::ORIGIN, "http://127.0.0.1:8686".parse().unwrap());
        assert!(same_origin(&headers));
        headers.insert(header::ORIGIN, "http://evil.example".parse().unwrap());
        assert!(!same_origin(&headers));
        headers.insert("sec-fetch-site", "cross-site".parse().unwrap());
        assert!(!same_origin(&headers));
        headers.insert("sec-fetch-site", "same-origin".parse().unwrap());
        assert!(same_origin(&headers));
    }

    #[test]
    fn the_new_rule_example_is_a_valid_rule() {
        let rule: Rule = toml::from_str(NEW_RULE).unwrap();
        assert_eq!(rule.validate(&[]), Ok(()));
    }
}
