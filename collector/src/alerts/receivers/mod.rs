//! Delivery of notifications to receivers, apart from evaluation: each receiver has a bounded queue and
//! one worker that posts, retries with exponential backoff and logs every attempt. Evaluation only
//! pushes onto the queue, which never waits: when a receiver is down long enough for its queue to fill,
//! the oldest notification is dropped and counted, so a dead receiver costs memory bounded by its queue
//! and never slows evaluation or ingest.

pub mod config;
pub mod payload;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::Serialize;
use serde_json::Value;
use tokio::sync::Notify;

use super::now_ms;
pub use config::{Kind, ReceiverConfig};

/// Entries kept in the delivery log.
pub const LOG_CAPACITY: usize = 200;

/// One notification waiting for its receiver.
#[derive(Debug, Clone)]
pub struct Notification {
    /// The rule it is about.
    pub rule: String,
    /// `firing` or `resolved` (the group's status).
    pub status: &'static str,
    /// How many alerts it carries.
    pub alerts: usize,
    /// The JSON body.
    pub body: Value,
}

/// One attempt to deliver, as the delivery log shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Delivery {
    /// When the attempt ended (Unix ms).
    pub at_ms: i64,
    /// The receiver.
    pub receiver: String,
    /// The rule.
    pub rule: String,
    /// The notification's status.
    pub status: &'static str,
    /// Alerts in it.
    pub alerts: usize,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// `delivered`, `retrying`, `failed` (gave up) or `dropped` (queue full).
    pub outcome: &'static str,
    /// The receiver's HTTP status, when it answered.
    pub http_status: Option<u16>,
    /// What went wrong.
    pub error: Option<String>,
    /// How long the attempt took.
    pub duration_ms: u64,
}

/// Counters of one receiver, for the API and UI.
#[derive(Debug, Clone, Serialize)]
pub struct ReceiverStatus {
    /// Name.
    pub name: String,
    /// Protocol.
    pub kind: Kind,
    /// Where it posts.
    pub url: String,
    /// Notifications waiting now.
    pub queued: usize,
    /// Notifications delivered.
    pub delivered: u64,
    /// Failed attempts (each retry counts).
    pub failed_attempts: u64,
    /// Notifications given up after the last attempt.
    pub given_up: u64,
    /// Notifications dropped because the queue was full.
    pub dropped: u64,
}

/// The bounded log of delivery attempts, newest last.
#[derive(Debug, Default)]
pub struct DeliveryLog {
    entries: Mutex<VecDeque<Delivery>>,
}

impl DeliveryLog {
    fn push(&self, delivery: Delivery) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() == LOG_CAPACITY {
            entries.pop_front();
        }
        entries.push_back(delivery);
    }

    /// Every entry, newest first.
    pub fn newest_first(&self) -> Vec<Delivery> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.iter().rev().cloned().collect()
    }
}

/// One receiver: its settings, queue, counters and HTTP client.
pub struct Receiver {
    config: ReceiverConfig,
    queue: Mutex<VecDeque<Notification>>,
    wake: Notify,
    client: reqwest::Client,
    delivered: AtomicU64,
    failed_attempts: AtomicU64,
    given_up: AtomicU64,
    dropped: AtomicU64,
    log: Arc<DeliveryLog>,
}

impl Receiver {
    /// A receiver with an empty queue; [`Receiver::run`] delivers.
    pub fn new(config: ReceiverConfig, log: Arc<DeliveryLog>) -> Result<Receiver, String> {
        let client = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            .user_agent(concat!("meshscope/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|error| format!("receiver {}: {error}", config.name))?;
        Ok(Receiver {
            config,
            queue: Mutex::new(VecDeque::new()),
            wake: Notify::new(),
            client,
            delivered: AtomicU64::new(0),
            failed_attempts: AtomicU64::new(0),
            given_up: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            log,
        })
    }

    /// The receiver's settings.
    pub fn config(&self) -> &ReceiverConfig {
        &self.config
    }

    /// Queues a notification without waiting; drops (and logs) the oldest one when the queue is full.
    pub fn enqueue(&self, notification: Notification) {
        let dropped = {
            let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
            let dropped = (queue.len() >= self.config.queue)
                .then(|| queue.pop_front())
                .flatten();
            queue.push_back(notification);
            dropped
        };
        if let Some(dropped) = dropped {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(receiver = %self.config.name, rule = %dropped.rule, "alert notification dropped: queue full");
            self.record(&dropped, 0, "dropped", None, Some("queue full".into()), 0);
        }
        self.wake.notify_one();
    }

    /// Counters for the API and UI.
    pub fn status(&self) -> ReceiverStatus {
        ReceiverStatus {
            name: self.config.name.clone(),
            kind: self.config.kind,
            url: self.config.url.clone(),
            queued: self.queue.lock().unwrap_or_else(|e| e.into_inner()).len(),
            delivered: self.delivered.load(Ordering::Relaxed),
            failed_attempts: self.failed_attempts.load(Ordering::Relaxed),
            given_up: self.given_up.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
        }
    }

    /// Delivers queued notifications one at a time, forever (the task is aborted at shutdown).
    pub async fn run(self: Arc<Self>) {
        loop {
            let next = self
                .queue
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .pop_front();
            match next {
                Some(notification) => self.deliver(&notification).await,
                None => self.wake.notified().await,
            }
        }
    }

    /// Posts one notification, retrying failures with exponential backoff up to `max_attempts`.
    async fn deliver(&self, notification: &Notification) {
        let mut wait = self.config.backoff;
        for attempt in 1..=self.config.max_attempts {
            let started = Instant::now();
            let result = self
                .client
                .post(self.config.endpoint())
                .json(&notification.body)
                .send()
                .await;
            let took = started.elapsed().as_millis() as u64;
            let (http_status, error, retryable) = match result {
                Ok(response) if response.status().is_success() => {
                    self.delivered.fetch_add(1, Ordering::Relaxed);
                    let status = Some(response.status().as_u16());
                    self.record(notification, attempt, "delivered", status, None, took);
                    return;
                }
                Ok(response) => {
                    let status = response.status();
                    let text = response.text().await.unwrap_or_default();
                    let retryable = status.is_server_error() || status.as_u16() == 429;
                    let message = format!(
                        "HTTP {status}: {}",
                        text.chars().take(300).collect::<String>()
                    );
                    (Some(status.as_u16()), message, retryable)
                }
                Err(error) => (None, error_chain(&error), true),
            };
            self.failed_attempts.fetch_add(1, Ordering::Relaxed);
            let last = !retryable || attempt == self.config.max_attempts;
            let outcome = if last { "failed" } else { "retrying" };
            tracing::warn!(receiver = %self.config.name, attempt, %error, outcome, "alert notification not delivered");
            self.record(
                notification,
                attempt,
                outcome,
                http_status,
                Some(error),
                took,
            );
            if last {
                self.given_up.fetch_add(1, Ordering::Relaxed);
                return;
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(self.config.max_backoff);
        }
    }

    fn record(
        &self,
        notification: &Notification,
        attempt: u32,
        outcome: &'static str,
        http_status: Option<u16>,
        error: Option<String>,
        duration_ms: u64,
    ) {
        self.log.push(Delivery {
            at_ms: now_ms(),
            receiver: self.config.name.clone(),
            rule: notification.rule.clone(),
            status: notification.status,
            alerts: notification.alerts,
            attempt,
            outcome,
            http_status,
            error,
            duration_ms,
        });
    }
}

/// An error with its causes ("error sending request: connection refused"), since reqwest's top-level
/// message alone rarely says what failed.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn receiver(queue: usize) -> Receiver {
        let config: ReceiverConfig = toml::from_str(&format!(
            "name = \"r\"\nkind = \"webhook\"\nurl = \"http://127.0.0.1:9/\"\nqueue = {queue}\n"
        ))
        .unwrap();
        config.validate().unwrap();
        Receiver::new(config, Arc::default()).unwrap()
    }

    fn notification(rule: &str) -> Notification {
        Notification {
            rule: rule.into(),
            status: "firing",
            alerts: 1,
            body: Value::Null,
        }
    }

    #[test]
    fn a_full_queue_drops_the_oldest_and_counts_it() {
        let receiver = receiver(2);
        for rule in ["a", "b", "c"] {
            receiver.enqueue(notification(rule));
        }
        let status = receiver.status();
        assert_eq!((status.queued, status.dropped), (2, 1));
        let queued: Vec<String> = receiver
            .queue
            .lock()
            .unwrap()
            .iter()
            .map(|n| n.rule.clone())
            .collect();
        assert_eq!(queued, ["b", "c"]);
        let log = receiver.log.newest_first();
        assert_eq!((log[0].rule.as_str(), log[0].outcome), ("a", "dropped"));
    }

    /// A receiver of `url` that tries `max_attempts` times, 100 ms apart, 300 ms each.
    fn quick(url: String, max_attempts: u32) -> Arc<Receiver> {
        let mut config = receiver(10).config;
        config.url = url;
        config.max_attempts = max_attempts;
        config.timeout = Duration::from_millis(300);
        config.backoff = Duration::from_millis(100);
        Arc::new(Receiver::new(config, Arc::default()).unwrap())
    }

    /// Waits (at most 10 s) until the receiver's log has `entries` entries; returns them, oldest first.
    async fn log_of(receiver: &Receiver, entries: usize) -> Vec<Delivery> {
        for _ in 0..200 {
            let mut log = receiver.log.newest_first();
            if log.len() >= entries {
                log.reverse();
                return log;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "fewer than {entries} deliveries: {:?}",
            receiver.log.newest_first()
        );
    }

    #[tokio::test]
    async fn a_receiver_that_never_answers_times_out_and_is_retried() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        // Accepts connections and never answers.
        let silent = tokio::spawn(async move {
            let mut open = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                open.push(socket);
            }
        });
        let receiver = quick(url, 2);
        let worker = tokio::spawn(receiver.clone().run());
        receiver.enqueue(notification("hung"));
        let log = log_of(&receiver, 2).await;
        let outcomes: Vec<&str> = log.iter().map(|d| d.outcome).collect();
        assert_eq!(outcomes, ["retrying", "failed"]);
        assert!(log.iter().all(|d| d.duration_ms >= 250), "{log:?}");
        assert!(
            log[0]
                .error
                .as_deref()
                .is_some_and(|e| e.contains("timed out")),
            "{log:?}"
        );
        assert_eq!(receiver.status().given_up, 1);
        worker.abort();
        silent.abort();
    }

    #[tokio::test]
    async fn a_refused_body_is_not_retried() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let mut request = [0u8; 4096];
                let _ = socket.read(&mut request).await;
                let _ = socket
                    .write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 3\r\nconnection: close\r\n\r\nbad")
                    .await;
            }
        });
        let receiver = quick(url, 5);
        let worker = tokio::spawn(receiver.clone().run());
        receiver.enqueue(notification("refused"));
        let log = log_of(&receiver, 1).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(receiver.log.newest_first().len(), 1, "retried a 400");
        assert_eq!((log[0].outcome, log[0].http_status), ("failed", Some(400)));
        assert!(log[0].error.as_deref().is_some_and(|e| e.contains("bad")));
        worker.abort();
        server.abort();
    }

    #[test]
    fn alertmanager_receivers_post_to_the_v2_api() {
        let mut config = receiver(1).config;
        config.kind = Kind::Alertmanager;
        config.url = "http://am:9093/".into();
        assert_eq!(config.endpoint(), "http://am:9093/api/v2/alerts");
        config.url = "ftp://x".into();
        assert!(config.validate().is_err());
    }
}
