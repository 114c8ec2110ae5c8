//! The rules file (`--alert-rules`) and the rules store in the data dir that keeps edits made from the
//! UI or API.
//!
//! The file belongs to the operator (it may be read-only, generated or under version control), so the
//! collector never rewrites it. Edits go to `<data_dir>/alerts/rules.toml` as an overlay: a rule there
//! replaces the file's rule of the same name, and a deleted file rule is remembered by name. The
//! effective set is the file's rules, minus deleted ones, with overrides applied, plus new rules.

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::receivers::ReceiverConfig;
use super::rule::{Rule, duration_text};
use super::{AlertError, persist};

/// Everything the rules file holds.
#[derive(Debug, Clone)]
pub struct AlertsConfig {
    /// Base URL of this collector's UI in links sent to receivers; `http://<api listen address>` when
    /// absent.
    pub external_url: Option<String>,
    /// How often firing alerts are sent again to Alertmanager receivers (Prometheus's resend delay).
    pub resend_interval: Duration,
    /// How often a webhook is reminded of a rule's alerts that are still firing.
    pub repeat_interval: Duration,
    /// The receivers.
    pub receivers: Vec<ReceiverConfig>,
    /// The rules.
    pub rules: Vec<Rule>,
}

/// No file: no rules or receivers, the documented intervals.
impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            external_url: None,
            resend_interval: default_resend(),
            repeat_interval: default_repeat(),
            receivers: Vec::new(),
            rules: Vec::new(),
        }
    }
}

fn default_resend() -> Duration {
    Duration::from_secs(60)
}

fn default_repeat() -> Duration {
    Duration::from_secs(4 * 3600)
}

/// The file as written, with each rule's position for error messages.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SpannedFile {
    #[serde(default)]
    external_url: Option<String>,
    #[serde(default = "default_resend", with = "duration_text")]
    resend_interval: Duration,
    #[serde(default = "default_repeat", with = "duration_text")]
    repeat_interval: Duration,
    #[serde(default)]
    receiver: Vec<toml::Spanned<ReceiverConfig>>,
    #[serde(default)]
    rule: Vec<toml::Spanned<Rule>>,
}

/// The 1-based line of a byte offset.
fn line_of(source: &str, offset: usize) -> usize {
    source.as_bytes()[..offset.min(source.len())]
        .iter()
        .filter(|byte| **byte == b'\n')
        .count()
        + 1
}

impl AlertsConfig {
    /// Reads and checks a rules file; every problem is reported with the file and line.
    pub fn load(path: &Path) -> Result<AlertsConfig, AlertError> {
        let source = std::fs::read_to_string(path)
            .map_err(|error| AlertError::Io(path.to_path_buf(), error))?;
        AlertsConfig::parse(&source, &path.display().to_string())
    }

    /// Parses and checks the text of a rules file named `file` in messages.
    pub fn parse(source: &str, file: &str) -> Result<AlertsConfig, AlertError> {
        let spanned: SpannedFile = toml::from_str(source)
            .map_err(|error| AlertError::Invalid(format!("{file}: {error}")))?;
        let mut problems = Vec::new();
        let mut receivers = Vec::new();
        for receiver in spanned.receiver {
            let line = line_of(source, receiver.span().start);
            let receiver = receiver.into_inner();
            if let Err(error) = receiver.validate() {
                problems.push(format!(
                    "{file}:{line}: receiver {:?}: {error}",
                    receiver.name
                ));
            }
            if receivers
                .iter()
                .any(|r: &ReceiverConfig| r.name == receiver.name)
            {
                problems.push(format!(
                    "{file}:{line}: receiver {:?} is defined twice",
                    receiver.name
                ));
            }
            receivers.push(receiver);
        }
        let names: Vec<String> = receivers.iter().map(|r| r.name.clone()).collect();
        let mut rules: Vec<Rule> = Vec::new();
        for rule in spanned.rule {
            let line = line_of(source, rule.span().start);
            let rule = rule.into_inner();
            if let Err(error) = rule.validate(&names) {
                problems.push(format!("{file}:{line}: rule {:?}: {error}", rule.name));
            }
            if rules.iter().any(|r| r.name == rule.name) {
                problems.push(format!(
                    "{file}:{line}: rule {:?} is defined twice",
                    rule.name
                ));
            }
            rules.push(rule);
        }
        if !problems.is_empty() {
            return Err(AlertError::Invalid(problems.join("\n")));
        }
        Ok(AlertsConfig {
            external_url: spanned.external_url,
            resend_interval: spanned.resend_interval,
            repeat_interval: spanned.repeat_interval,
            receivers,
            rules,
        })
    }
}

/// Where the effective version of a rule comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// The rules file, unchanged.
    File,
    /// Created or edited from the UI or API (kept in the data dir).
    Store,
}

/// The overlay of UI and API edits, `<data_dir>/alerts/rules.toml`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleStore {
    /// Names of file rules deleted from the UI or API.
    #[serde(default)]
    pub deleted: Vec<String>,
    /// Rules created or edited from the UI or API.
    #[serde(default, rename = "rule")]
    pub rules: Vec<Rule>,
}

impl RuleStore {
    /// Reads the store from the data dir; an absent file is an empty store.
    pub fn load(data_dir: &Path) -> Result<RuleStore, AlertError> {
        let path = persist::path(data_dir, persist::RULES_FILE);
        match persist::read(&path)? {
            None => Ok(RuleStore::default()),
            Some(text) => toml::from_str(&text)
                .map_err(|error| AlertError::Invalid(format!("{}: {error}", path.display()))),
        }
    }

    /// Writes the store atomically.
    pub fn save(&self, data_dir: &Path) -> Result<(), AlertError> {
        let text = toml::to_string(self)
            .map_err(|error| AlertError::Invalid(format!("rules store: {error}")))?;
        persist::write_atomic(
            &persist::path(data_dir, persist::RULES_FILE),
            text.as_bytes(),
        )
    }

    /// The effective rules: file rules (minus deleted, with overrides), then rules only in the store.
    pub fn effective(&self, file: &[Rule]) -> Vec<(Rule, Origin)> {
        let mut rules: Vec<(Rule, Origin)> = file
            .iter()
            .filter(|rule| !self.deleted.contains(&rule.name))
            .map(
                |rule| match self.rules.iter().find(|r| r.name == rule.name) {
                    Some(edited) => (edited.clone(), Origin::Store),
                    None => (rule.clone(), Origin::File),
                },
            )
            .collect();
        for rule in &self.rules {
            if !rules.iter().any(|(r, _)| r.name == rule.name) {
                rules.push((rule.clone(), Origin::Store));
            }
        }
        rules
    }

    /// Records `rule` as the new version of `replaces` (or a new rule when `None`).
    pub fn upsert(&mut self, file: &[Rule], replaces: Option<&str>, rule: Rule) {
        if let Some(old) = replaces.filter(|old| *old != rule.name) {
            self.remove(file, old);
        }
        self.deleted.retain(|name| *name != rule.name);
        self.rules.retain(|r| r.name != rule.name);
        self.rules.push(rule);
    }

    /// Records the deletion of `name`.
    pub fn remove(&mut self, file: &[Rule], name: &str) {
        self.rules.retain(|r| r.name != name);
        if file.iter().any(|r| r.name == name) && !self.deleted.iter().any(|d| d == name) {
            self.deleted.push(name.to_owned());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
external_url = "http://meshscope.example:8686"

[[receiver]]
name = "oncall"
kind = "webhook"
url = "http://127.0.0.1:9000/hook"

[[rule]]
name = "payments-errors"
condition = "> 5"
for = "30s"
receivers = ["oncall"]
red = { scope = "service", figure = "error_rate", service = "payments", range = "1m" }
labels = { severity = "page" }
annotations = { summary = "{{ labels.service }} fails {{ value }}%" }

[[rule]]
name = "slow"
condition = ">= 250"
interval = "15s"
sql = "SELECT service, max(p99_ms) AS value FROM red_metrics GROUP BY service"
"#;

    #[test]
    fn the_documented_example_parses() {
        let config = AlertsConfig::parse(FILE, "rules.toml").unwrap();
        assert_eq!(config.rules.len(), 2);
        assert_eq!(config.rules[0].for_, Duration::from_secs(30));
        assert_eq!(config.rules[1].interval, Duration::from_secs(15));
        assert_eq!(config.receivers[0].max_attempts, 8);
        assert_eq!(config.resend_interval, Duration::from_secs(60));
    }

    #[test]
    fn problems_name_file_and_line() {
        let broken = FILE.replace("receivers = [\"oncall\"]", "receivers = [\"pager\"]");
        let error = AlertsConfig::parse(&broken, "rules.toml")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("rules.toml:9: rule \"payments-errors\""),
            "{error}"
        );
        let typo = AlertsConfig::parse("[[rule]]\nname = \"x\"\nthreshold = 1\n", "f.toml")
            .unwrap_err()
            .to_string();
        assert!(typo.contains("unknown field `threshold`"), "{typo}");
    }

    #[test]
    fn the_store_overlays_the_file() {
        let file = AlertsConfig::parse(FILE, "rules.toml").unwrap().rules;
        let mut store = RuleStore::default();
        let mut edited = file[1].clone();
        edited.condition = "> 1".parse().unwrap();
        store.upsert(&file, Some("slow"), edited.clone());
        let mut renamed = file[0].clone();
        renamed.name = "payments-failures".into();
        store.upsert(&file, Some("payments-errors"), renamed);
        let effective: Vec<(String, Origin)> = store
            .effective(&file)
            .into_iter()
            .map(|(rule, origin)| (rule.name, origin))
            .collect();
        assert_eq!(
            effective,
            [
                ("slow".to_owned(), Origin::Store),
                ("payments-failures".to_owned(), Origin::Store)
            ]
        );
        let text = toml::to_string(&store).unwrap();
        let back: RuleStore = toml::from_str(&text).unwrap();
        assert_eq!(back, store);
        store.remove(&file, "payments-failures");
        store.upsert(&file, None, file[0].clone());
        assert_eq!(store.effective(&file).len(), 2);
    }
}
