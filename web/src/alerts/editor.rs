//! The rule editor: a rule as TOML in a form, so every field can be edited without JavaScript, saved
//! or deleted with plain form posts; cross-site posts are refused.

use askama::Template;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use meshscope_collector::alerts::{Alerts, PATH_SEGMENT, Rule};
use serde::Deserialize;

use crate::error::ApiError;
use crate::ui::page::{Page, PageError, PageResult};

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
