//! A receiver's settings as written in the rules file, with their defaults and checks.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::alerts::rule::duration_text;

/// The protocol a receiver speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Alertmanager's webhook body POSTed to `url`.
    Webhook,
    /// `POST {url}/api/v2/alerts` of a Prometheus Alertmanager.
    Alertmanager,
}

/// A receiver as configured in the rules file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiverConfig {
    /// Name that rules refer to.
    pub name: String,
    /// Protocol.
    pub kind: Kind,
    /// The webhook URL, or the Alertmanager's base URL (`http://host:9093`).
    pub url: String,
    /// Limit of one attempt, connection included.
    #[serde(default = "default_timeout", with = "duration_text")]
    pub timeout: Duration,
    /// Attempts per notification before it is given up.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// Wait before the first retry; doubled after each failure.
    #[serde(default = "default_backoff", with = "duration_text")]
    pub backoff: Duration,
    /// Longest wait between attempts.
    #[serde(default = "default_max_backoff", with = "duration_text")]
    pub max_backoff: Duration,
    /// Notifications waiting at most; past it the oldest is dropped.
    #[serde(default = "default_queue")]
    pub queue: usize,
}

fn default_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_max_attempts() -> u32 {
    8
}
fn default_backoff() -> Duration {
    Duration::from_secs(1)
}
fn default_max_backoff() -> Duration {
    Duration::from_secs(60)
}
fn default_queue() -> usize {
    1000
}

impl ReceiverConfig {
    /// Checks the URL and bounds.
    pub fn validate(&self) -> Result<(), String> {
        let url = reqwest::Url::parse(&self.url)
            .map_err(|error| format!("url {:?}: {error}", self.url))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!("url {:?} must be http or https", self.url));
        }
        if self.max_attempts == 0 || self.queue == 0 {
            return Err("max_attempts and queue must be at least 1".into());
        }
        if self.timeout.is_zero() {
            return Err("timeout must be more than 0".into());
        }
        Ok(())
    }

    /// Where notifications are POSTed.
    pub(super) fn endpoint(&self) -> String {
        match self.kind {
            Kind::Webhook => self.url.clone(),
            Kind::Alertmanager => format!("{}/api/v2/alerts", self.url.trim_end_matches('/')),
        }
    }
}
