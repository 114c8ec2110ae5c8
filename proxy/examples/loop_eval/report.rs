//! What one run of one policy in one scenario comes to: the figures issue 5 asks for.

use std::time::Duration;

use hdrhistogram::Histogram;

use crate::load::Outcome;
use crate::upstream::Received;

/// How long the bad endpoint must go without a request for its callers to count as having stopped.
pub(crate) const QUIET: Duration = Duration::from_secs(3);

/// The figures of one run.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct Summary {
    /// Requests the clients sent.
    pub(crate) requests: usize,
    /// Of those, the ones that did not get a 2xx answer.
    pub(crate) failed: usize,
    /// Failed requests sent from 2 s after the onset on.
    pub(crate) failed_after_2s: usize,
    /// `1 - failed / requests`, in percent.
    pub(crate) success_percent: f64,
    /// 99th percentile of client latency (all requests), in milliseconds.
    pub(crate) p99_ms: f64,
    /// Requests the endpoints received per request the clients sent (retries make it exceed 1).
    pub(crate) amplification: f64,
    /// From the onset until the bad endpoint went `QUIET` without a request from any proxy; `None`
    /// when that never happened before the end of the run.
    pub(crate) stop_seconds: Option<f64>,
    /// Share of the endpoints' requests that went to the bad endpoint from 2 s after the onset to the
    /// end (a healthy one of ten gets about 10 %).
    pub(crate) bad_share_after_2s_percent: f64,
    /// Client proxies that still sent to the bad endpoint from 2 s after the onset on.
    pub(crate) proxies_after_2s: usize,
}

/// Sums up one run: the clients' outcomes, and what each endpoint received (`bad` is the index of the
/// faulty one), for a fault starting at `onset` in a run of `length`.
pub(crate) fn summarize(
    outcomes: &[Outcome],
    received: &[Vec<Received>],
    bad: usize,
    onset: Duration,
    length: Duration,
) -> Summary {
    let requests = outcomes.len();
    let failed = outcomes.iter().filter(|outcome| !outcome.ok).count();
    let mut latencies =
        Histogram::<u64>::new_with_bounds(1, 120_000_000, 3).expect("valid histogram bounds");
    for outcome in outcomes {
        latencies.saturating_record(outcome.latency.as_micros().try_into().unwrap_or(u64::MAX));
    }
    let total_received: usize = received.iter().map(Vec::len).sum();
    let late = onset + Duration::from_secs(2);
    let late_all = received
        .iter()
        .flatten()
        .filter(|request| request.at >= late)
        .count();
    let late_bad: Vec<&Received> = received[bad]
        .iter()
        .filter(|request| request.at >= late)
        .collect();
    let mut late_proxies: Vec<u16> = late_bad.iter().map(|request| request.client).collect();
    late_proxies.sort_unstable();
    late_proxies.dedup();
    Summary {
        requests,
        failed,
        failed_after_2s: outcomes
            .iter()
            .filter(|outcome| !outcome.ok && outcome.at >= late)
            .count(),
        success_percent: percent(requests - failed, requests),
        p99_ms: latencies.value_at_quantile(0.99) as f64 / 1000.0,
        amplification: total_received as f64 / requests.max(1) as f64,
        stop_seconds: stop_time(&received[bad], onset, length).map(|d| d.as_secs_f64()),
        bad_share_after_2s_percent: percent(late_bad.len(), late_all),
        proxies_after_2s: late_proxies.len(),
    }
}

/// Time from `onset` to the last request the bad endpoint received before its first `QUIET` gap.
fn stop_time(bad: &[Received], onset: Duration, length: Duration) -> Option<Duration> {
    let mut times: Vec<Duration> = bad
        .iter()
        .map(|request| request.at)
        .filter(|at| *at >= onset)
        .collect();
    times.sort();
    let mut last = onset;
    for at in times {
        if at - last >= QUIET {
            return Some(last - onset);
        }
        last = at;
    }
    (length.saturating_sub(last) >= QUIET).then(|| last - onset)
}

fn percent(part: usize, whole: usize) -> f64 {
    if whole == 0 {
        return 0.0;
    }
    100.0 * part as f64 / whole as f64
}
