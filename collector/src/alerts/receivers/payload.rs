//! The two bodies receivers get: Alertmanager's webhook notification (so any receiver written for
//! Alertmanager works unchanged) and the `postableAlerts` array of Alertmanager's API v2.

use std::collections::BTreeMap;

use serde_json::{Value, json};

/// An alert as both bodies describe it.
#[derive(Debug, Clone)]
pub struct AlertView {
    /// Every label, `alertname` included.
    pub labels: BTreeMap<String, String>,
    /// Rendered annotations.
    pub annotations: BTreeMap<String, String>,
    /// True while firing, false once resolved.
    pub firing: bool,
    /// When it started firing (Unix ms).
    pub starts_at_ms: i64,
    /// When it resolved, or (for Alertmanager) until when a firing alert is valid.
    pub ends_at_ms: Option<i64>,
    /// Link back to the rule in Meshscope's UI.
    pub generator_url: String,
}

/// RFC 3339 with milliseconds, UTC.
pub fn rfc3339(ms: i64) -> String {
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_millis(time).to_string()
}

/// Alertmanager's identity of an alert: a hash of its sorted labels, as 16 hex digits.
pub fn fingerprint(labels: &BTreeMap<String, String>) -> String {
    use std::hash::Hasher;
    let mut hasher = twox_hash::XxHash64::with_seed(0);
    for (name, value) in labels {
        hasher.write(name.as_bytes());
        hasher.write_u8(0xff);
        hasher.write(value.as_bytes());
        hasher.write_u8(0xff);
    }
    format!("{:016x}", hasher.finish())
}

/// Entries whose value is the same in every map.
fn common(maps: &[&BTreeMap<String, String>]) -> BTreeMap<String, String> {
    let Some((first, rest)) = maps.split_first() else {
        return BTreeMap::new();
    };
    first
        .iter()
        .filter(|(key, value)| rest.iter().all(|map| map.get(*key) == Some(value)))
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect()
}

/// Alertmanager's webhook body (version 4) for one rule's group of alerts. Meshscope groups by
/// `alertname` only, so `groupLabels` is `{alertname}` and `groupKey` is `{}:{alertname="..."}`.
pub fn webhook(receiver: &str, rule: &str, external_url: &str, alerts: &[AlertView]) -> Value {
    let firing = alerts.iter().any(|alert| alert.firing);
    let labels: Vec<_> = alerts.iter().map(|alert| &alert.labels).collect();
    let annotations: Vec<_> = alerts.iter().map(|alert| &alert.annotations).collect();
    let alerts: Vec<Value> = alerts
        .iter()
        .map(|alert| {
            json!({
                "status": if alert.firing { "firing" } else { "resolved" },
                "labels": alert.labels,
                "annotations": alert.annotations,
                "startsAt": rfc3339(alert.starts_at_ms),
                // Alertmanager writes Go's zero time for alerts that have not ended.
                "endsAt": match (alert.firing, alert.ends_at_ms) {
                    (false, Some(ends)) => rfc3339(ends),
                    _ => "0001-01-01T00:00:00Z".to_owned(),
                },
                "generatorURL": alert.generator_url,
                "fingerprint": fingerprint(&alert.labels),
            })
        })
        .collect();
    json!({
        "version": "4",
        "groupKey": format!("{{}}:{{alertname={rule:?}}}"),
        "truncatedAlerts": 0,
        "status": if firing { "firing" } else { "resolved" },
        "receiver": receiver,
        "groupLabels": { "alertname": rule },
        "commonLabels": common(&labels),
        "commonAnnotations": common(&annotations),
        "externalURL": external_url,
        "alerts": alerts,
    })
}

/// The body of `POST /api/v2/alerts`: firing alerts carry an `endsAt` in the future (Alertmanager
/// resolves them by itself if Meshscope stops resending), resolved ones their resolution time.
pub fn alertmanager(alerts: &[AlertView]) -> Value {
    Value::Array(
        alerts
            .iter()
            .map(|alert| {
                let mut body = json!({
                    "labels": alert.labels,
                    "annotations": alert.annotations,
                    "startsAt": rfc3339(alert.starts_at_ms),
                    "generatorURL": alert.generator_url,
                });
                if let Some(ends) = alert.ends_at_ms {
                    body["endsAt"] = json!(rfc3339(ends));
                }
                body
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(service: &str, firing: bool) -> AlertView {
        AlertView {
            labels: BTreeMap::from([
                ("alertname".into(), "errors".into()),
                ("service".into(), service.into()),
                ("severity".into(), "page".into()),
            ]),
            annotations: BTreeMap::from([("summary".into(), format!("{service} fails"))]),
            firing,
            starts_at_ms: 1_700_000_000_000,
            ends_at_ms: (!firing).then_some(1_700_000_060_000),
            generator_url: "http://127.0.0.1:8686/alerts/rules/errors".into(),
        }
    }

    #[test]
    fn webhook_body_has_alertmanagers_fields() {
        let body = webhook(
            "oncall",
            "errors",
            "http://127.0.0.1:8686",
            &[alert("a", true), alert("b", false)],
        );
        assert_eq!(body["version"], "4");
        assert_eq!(body["status"], "firing");
        assert_eq!(body["groupKey"], "{}:{alertname=\"errors\"}");
        assert_eq!(body["groupLabels"], json!({"alertname": "errors"}));
        assert_eq!(
            body["commonLabels"],
            json!({"alertname": "errors", "severity": "page"})
        );
        assert_eq!(body["commonAnnotations"], json!({}));
        assert_eq!(body["alerts"][0]["endsAt"], "0001-01-01T00:00:00Z");
        assert_eq!(body["alerts"][1]["status"], "resolved");
        assert_eq!(body["alerts"][1]["endsAt"], "2023-11-14T22:14:20.000Z");
        assert_eq!(body["alerts"][0]["startsAt"], "2023-11-14T22:13:20.000Z");
        assert_eq!(
            body["alerts"][0]["fingerprint"].as_str().map(str::len),
            Some(16)
        );
        assert_ne!(
            body["alerts"][0]["fingerprint"],
            body["alerts"][1]["fingerprint"]
        );
    }

    #[test]
    fn alertmanager_body_is_a_list_of_postable_alerts() {
        let body = alertmanager(&[alert("a", false)]);
        assert_eq!(body[0]["labels"]["service"], "a");
        assert_eq!(body[0]["endsAt"], "2023-11-14T22:14:20.000Z");
        assert!(body[0].get("status").is_none());
    }
}
