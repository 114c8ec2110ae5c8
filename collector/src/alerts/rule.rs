//! One alert rule as written in the rules file, the JSON API or the UI editor, and its validation.
//!
//! Both kinds of query end up as SQL: a RED threshold is turned into a query over the `red_metrics` or
//! `service_edges` view ([`RedQuery::sql`]), so one evaluator runs every rule the same way.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::template;

/// An alert rule: what to query, when it counts as a problem, and whom to tell.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Unique name; also the `alertname` label of its alerts.
    pub name: String,
    /// A threshold on a RED figure of a service, operation or edge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub red: Option<RedQuery>,
    /// A SQL query returning one row per alert instance: a numeric `value` column and label columns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sql: Option<String>,
    /// When an instance's value is a problem, e.g. `"> 5"`.
    pub condition: Condition,
    /// How often the rule is evaluated.
    #[serde(default = "default_interval", with = "duration_text")]
    pub interval: Duration,
    /// How long the condition must hold before an instance fires (pending until then).
    #[serde(default, rename = "for", with = "duration_text")]
    pub for_: Duration,
    /// How long a firing instance keeps firing after the condition stopped holding, so a flapping
    /// figure does not resolve and re-fire at every evaluation.
    #[serde(default, with = "duration_text")]
    pub keep_firing_for: Duration,
    /// Labels added to every instance (they win over the query's labels of the same name).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Annotations such as `summary` and `description`: templates over `labels` and `value`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Names of the receivers notified of this rule's alerts.
    #[serde(default)]
    pub receivers: Vec<String>,
}

/// The default evaluation interval, Prometheus's.
fn default_interval() -> Duration {
    Duration::from_secs(60)
}

/// Which figure of which entity a RED rule watches.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedQuery {
    /// Per service, per (service, operation) or per (client, server) edge.
    pub scope: Scope,
    /// The figure compared with the threshold.
    pub figure: Figure,
    /// Only this service (for an edge: the server side); all services when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// Only this operation (scope `operation`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<String>,
    /// Only edges from this client (scope `edge`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
    /// How far back the windows are aggregated.
    #[serde(default = "default_range", with = "duration_text")]
    pub range: Duration,
    /// Entities with fewer requests in the range are not judged (no alert from one failed call).
    #[serde(default = "default_min_requests")]
    pub min_requests: u64,
}

fn default_range() -> Duration {
    Duration::from_secs(300)
}

fn default_min_requests() -> u64 {
    1
}

/// What a RED rule groups by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// One instance per service.
    Service,
    /// One instance per (service, operation).
    Operation,
    /// One instance per (client, server) edge of the service graph.
    Edge,
}

/// A RED figure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Figure {
    /// Failed requests as a percentage of all requests.
    ErrorRate,
    /// Requests per second.
    Rate,
    /// Median latency in milliseconds.
    P50,
    /// 95th percentile latency in milliseconds.
    P95,
    /// 99th percentile latency in milliseconds.
    P99,
}

/// A comparison of the value with a threshold, written `"> 5"`, `"<= 0.5"`, `"!= 0"`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Condition {
    /// The comparison.
    pub op: Op,
    /// The threshold.
    pub threshold: f64,
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `==`
    Eq,
    /// `!=`
    Ne,
}

impl Op {
    /// Every operator with its text, longest first so `>=` is not read as `>`.
    const ALL: [(&'static str, Op); 6] = [
        (">=", Op::Ge),
        ("<=", Op::Le),
        ("==", Op::Eq),
        ("!=", Op::Ne),
        (">", Op::Gt),
        ("<", Op::Lt),
    ];

    fn text(self) -> &'static str {
        Op::ALL
            .iter()
            .find(|(_, op)| *op == self)
            .map_or("?", |(text, _)| text)
    }
}

impl Condition {
    /// Whether `value` is a problem.
    pub fn holds(&self, value: f64) -> bool {
        let threshold = self.threshold;
        match self.op {
            Op::Gt => value > threshold,
            Op::Ge => value >= threshold,
            Op::Lt => value < threshold,
            Op::Le => value <= threshold,
            Op::Eq => value == threshold,
            Op::Ne => value != threshold,
        }
    }
}

impl std::str::FromStr for Condition {
    type Err = String;

    fn from_str(text: &str) -> Result<Condition, String> {
        let text = text.trim();
        let (op_text, op) = Op::ALL
            .iter()
            .find(|(op_text, _)| text.starts_with(op_text))
            .ok_or_else(|| format!("condition {text:?} must start with >, >=, <, <=, == or !="))?;
        let threshold = text[op_text.len()..]
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|threshold| threshold.is_finite())
            .ok_or_else(|| format!("condition {text:?} needs a number after {op_text}"))?;
        Ok(Condition { op: *op, threshold })
    }
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.op.text(), self.threshold)
    }
}

impl Serialize for Condition {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Condition {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Condition, D::Error> {
        String::deserialize(deserializer)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// Durations as text (`"30s"`, `"1m30s"`), the way every other setting of the collector is written.
pub(crate) mod duration_text {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(
        duration: &Duration,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&humantime::format_duration(*duration))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Duration, D::Error> {
        let text = String::deserialize(deserializer)?;
        humantime::parse_duration(text.trim())
            .map_err(|error| serde::de::Error::custom(format!("duration {text:?}: {error}")))
    }
}

/// The shortest evaluation interval accepted: quicker rules would only load the query engine.
pub const MIN_INTERVAL: Duration = Duration::from_millis(500);

impl Rule {
    /// Checks what serde cannot: exactly one query, sane names and durations, templates that parse,
    /// receivers that exist.
    pub fn validate(&self, receivers: &[String]) -> Result<(), String> {
        if self.name.trim().is_empty() || self.name.len() > 200 {
            return Err("name must be 1 to 200 characters".into());
        }
        if self.name.chars().any(char::is_control) {
            return Err("name must not hold control characters".into());
        }
        match (&self.red, &self.sql) {
            (Some(_), Some(_)) => return Err("give either red or sql, not both".into()),
            (None, None) => return Err("give a query: red = {...} or sql = \"...\"".into()),
            (None, Some(sql)) if sql.trim().is_empty() => return Err("sql is empty".into()),
            (Some(red), None) => red.validate()?,
            (None, Some(_)) => {}
        }
        if self.interval < MIN_INTERVAL {
            return Err(format!("interval must be at least {MIN_INTERVAL:?}"));
        }
        for (name, text) in &self.annotations {
            template::check(text).map_err(|error| format!("annotation {name}: {error}"))?;
        }
        if let Some(unknown) = self.receivers.iter().find(|name| !receivers.contains(name)) {
            return Err(format!(
                "receiver {unknown:?} is not configured (known: {})",
                receivers.join(", ")
            ));
        }
        Ok(())
    }

    /// The SQL the evaluator runs for this rule.
    pub fn query_sql(&self) -> String {
        match (&self.red, &self.sql) {
            (Some(red), _) => red.sql(),
            (None, Some(sql)) => sql.clone(),
            (None, None) => String::new(),
        }
    }
}

impl RedQuery {
    fn validate(&self) -> Result<(), String> {
        if self.range.as_secs() < 1 {
            return Err("red.range must be at least 1s".into());
        }
        if self.operation.is_some() && self.scope != Scope::Operation {
            return Err("red.operation only applies to scope \"operation\"".into());
        }
        if self.client.is_some() && self.scope != Scope::Edge {
            return Err("red.client only applies to scope \"edge\"".into());
        }
        Ok(())
    }

    /// A query over the RED or edge view returning the figure as `value` with the entity as labels.
    ///
    /// Counts are summed over the range; latency quantiles cannot be merged from per-window summaries,
    /// so the worst window's quantile in the range is taken (an alert errs towards firing). Edge latency
    /// is the client side's (what callers experience, including the network and retries).
    pub fn sql(&self) -> String {
        let (view, keys, requests, failures, latency_prefix) = match self.scope {
            Scope::Service => ("red_metrics", &["service"][..], "requests", "errors", ""),
            Scope::Operation => (
                "red_metrics",
                &["service", "operation"][..],
                "requests",
                "errors",
                "",
            ),
            Scope::Edge => (
                "service_edges",
                &["client", "server"][..],
                "requests",
                "failures",
                "client_",
            ),
        };
        let seconds = self.range.as_secs();
        let value = match self.figure {
            Figure::ErrorRate => {
                format!("100.0 * CAST(sum({failures}) AS DOUBLE) / CAST(sum({requests}) AS DOUBLE)")
            }
            Figure::Rate => format!("CAST(sum({requests}) AS DOUBLE) / {seconds}.0"),
            Figure::P50 => format!("max({latency_prefix}p50_ms)"),
            Figure::P95 => format!("max({latency_prefix}p95_ms)"),
            Figure::P99 => format!("max({latency_prefix}p99_ms)"),
        };
        let mut filters = vec![format!("window_end > now() - INTERVAL '{seconds} seconds'")];
        let server_column = if self.scope == Scope::Edge {
            "server"
        } else {
            "service"
        };
        for (column, wanted) in [
            (server_column, &self.service),
            ("operation", &self.operation),
            ("client", &self.client),
        ] {
            if let Some(wanted) = wanted {
                filters.push(format!("{column} = {}", sql_string(wanted)));
            }
        }
        let keys = keys.join(", ");
        format!(
            "SELECT {keys}, {value} AS value FROM {view} WHERE {} GROUP BY {keys} HAVING sum({requests}) >= {}",
            filters.join(" AND "),
            self.min_requests
        )
    }
}

/// A SQL string literal.
fn sql_string(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_parse_and_compare() {
        let cases = [
            ("> 5", 6.0, true),
            ("> 5", 5.0, false),
            (">=5", 5.0, true),
            ("< 0.5", 0.4, true),
            ("<= 1e3", 1000.0, true),
            ("== 0", 0.0, true),
            ("!= 0", 0.0, false),
        ];
        for (text, value, holds) in cases {
            let condition: Condition = text.parse().unwrap_or_else(|error| panic!("{error}"));
            assert_eq!(condition.holds(value), holds, "{text} on {value}");
        }
        for bad in ["5", "> x", "=> 1", "> inf", ""] {
            assert!(bad.parse::<Condition>().is_err(), "{bad:?} accepted");
        }
        assert_eq!(
            ">= 2.5".parse::<Condition>().map(|c| c.to_string()),
            Ok(">= 2.5".to_owned())
        );
    }

    #[test]
    fn red_rules_become_view_queries_with_quoted_filters() {
        let red = RedQuery {
            scope: Scope::Edge,
            figure: Figure::ErrorRate,
            service: Some("pay'ments".into()),
            operation: None,
            client: Some("api".into()),
            range: Duration::from_secs(60),
            min_requests: 3,
        };
        let sql = red.sql();
        assert!(sql.contains("FROM service_edges"), "{sql}");
        assert!(sql.contains("server = 'pay''ments'"), "{sql}");
        assert!(sql.contains("client = 'api'"), "{sql}");
        assert!(sql.contains("INTERVAL '60 seconds'"), "{sql}");
        assert!(sql.contains("sum(failures)"), "{sql}");
        assert!(sql.ends_with(">= 3"), "{sql}");
    }

    #[test]
    fn validation_names_the_problem() {
        let rule: Rule = toml::from_str(
            "name = \"x\"\ncondition = \"> 1\"\nsql = \"SELECT 1 AS value\"\nreceivers = [\"nobody\"]\n",
        )
        .unwrap_or_else(|error| panic!("{error}"));
        let error = rule.validate(&["oncall".into()]).err().unwrap_or_default();
        assert!(error.contains("\"nobody\" is not configured"), "{error}");
        let both = Rule {
            red: Some(RedQuery {
                scope: Scope::Service,
                figure: Figure::P99,
                service: None,
                operation: None,
                client: None,
                range: default_range(),
                min_requests: 1,
            }),
            receivers: vec![],
            ..rule
        };
        let error = both.validate(&[]).err().unwrap_or_default();
        assert!(error.contains("not both"), "{error}");
    }
}
