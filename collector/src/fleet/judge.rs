//! Judging each endpoint against its peers: a weight, and an ejection when the evidence is strong.
//!
//! Written by hand because the policy is ours: it mirrors Envoy's outlier detection (success rate and
//! consecutive failures judged per endpoint, a growing ejection time, a max ejected percent) but runs on
//! the pooled evidence of every proxy, so a fleet of low-rate callers reaches the minimum evidence that
//! none of them reaches alone.

use std::time::Duration;

use crate::fleet::window::Evidence;

/// What the judgement sees of one endpoint: the whole window, and its last few seconds, so a sudden
/// onset is not diluted by the healthy seconds before it.
#[derive(Clone, Default)]
pub(crate) struct Observed {
    /// The whole window.
    pub(crate) window: Evidence,
    /// The last `JudgeOptions::recent` seconds of it.
    pub(crate) recent: Evidence,
}

/// The knobs of the judgement; the defaults are documented in docs/signals.md.
#[derive(Debug, Clone)]
pub struct JudgeOptions {
    /// Fewer requests than this in the window: no judgement, weight 1.
    pub min_requests: u64,
    /// Fewer failures than this: never ejected for failures.
    pub min_failures: u64,
    /// Ejected when the failure rate exceeds the peers' median failure rate by this much, over the
    /// whole window or over its last `recent` seconds (each with the minimum evidence).
    pub failure_rate_margin: f64,
    /// Length of the recent part of the window, in seconds.
    pub recent_seconds: u32,
    /// Ejected when the median latency is at least this many times the peers' median…
    pub latency_ratio: f64,
    /// …and at least this much slower in absolute terms.
    pub latency_margin_ms: f64,
    /// A slower endpoint is down-weighted (weight = peers' p50 / its p50) only when its p50 over the
    /// recent seconds exceeds the peers' by at least this much; smaller differences are left to each
    /// proxy's peak-EWMA. Judged on recent evidence only, so a down-weight that starves the endpoint
    /// of traffic lapses with that evidence instead of holding itself in place for the whole window.
    pub latency_weight_margin_ms: f64,
    /// First ejection time; the n-th consecutive ejection lasts n times this, up to `max_ejection`.
    pub base_ejection: Duration,
    /// Longest ejection.
    pub max_ejection: Duration,
    /// At most this percentage of a service's endpoints are ejected at once (the worst first).
    pub max_ejected_percent: u32,
}

impl Default for JudgeOptions {
    fn default() -> Self {
        JudgeOptions {
            min_requests: 5,
            min_failures: 3,
            failure_rate_margin: 0.1,
            recent_seconds: 2,
            latency_ratio: 5.0,
            latency_margin_ms: 100.0,
            latency_weight_margin_ms: 5.0,
            base_ejection: Duration::from_secs(10),
            max_ejection: Duration::from_secs(120),
            max_ejected_percent: 50,
        }
    }
}

/// The remembered ejection of one endpoint.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Ejection {
    /// Unix nanoseconds until which the endpoint is ejected (0: not ejected).
    pub(crate) until: u64,
    /// Consecutive ejections, growing the next ejection's length; reset by a healthy judgement.
    pub(crate) count: u32,
}

/// The verdict on one endpoint for one update.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Verdict {
    /// Weight in [0, 1].
    pub(crate) weight: f64,
    /// Why the endpoint is down-weighted or ejected; empty when healthy.
    pub(crate) reason: String,
}

/// The figures of one endpoint the judgement compares.
struct Figures {
    requests: u64,
    failures: u64,
    failure_rate: f64,
    recent_requests: u64,
    recent_failures: u64,
    recent_failure_rate: f64,
    p50: f64,
    recent_p50: f64,
}

/// Judges every endpoint of one service at `now` (Unix nanoseconds), updating their ejections.
/// `endpoints` pairs what was observed of each endpoint with its remembered ejection.
pub(crate) fn judge(
    options: &JudgeOptions,
    now: u64,
    endpoints: &mut [(&Observed, &mut Ejection)],
) -> Vec<Verdict> {
    let figures: Vec<Figures> = endpoints
        .iter()
        .map(|(observed, _)| Figures {
            requests: observed.window.requests,
            failures: observed.window.failures,
            failure_rate: 1.0 - observed.window.success_rate(),
            recent_requests: observed.recent.requests,
            recent_failures: observed.recent.failures,
            recent_failure_rate: 1.0 - observed.recent.success_rate(),
            p50: observed.window.latency_quantile(0.5),
            recent_p50: observed.recent.latency_quantile(0.5),
        })
        .collect();
    let judged: Vec<usize> = (0..figures.len())
        .filter(|&i| figures[i].requests >= options.min_requests)
        .collect();
    let peer_failure_rate = median(judged.iter().map(|&i| figures[i].failure_rate));
    let peer_p50 = median(judged.iter().map(|&i| figures[i].p50));
    let recently_judged: Vec<usize> = (0..figures.len())
        .filter(|&i| figures[i].recent_requests >= options.min_requests)
        .collect();
    let peer_recent_failure_rate = median(
        recently_judged
            .iter()
            .map(|&i| figures[i].recent_failure_rate),
    );
    let peer_recent_p50 = median(recently_judged.iter().map(|&i| figures[i].recent_p50));

    // Candidates for a new ejection, worst first, so the cap keeps the worst ones out.
    let mut bad: Vec<(usize, f64, String)> = Vec::new();
    let mut verdicts: Vec<Verdict> = figures
        .iter()
        .map(|_| Verdict {
            weight: 1.0,
            reason: String::new(),
        })
        .collect();
    for &i in &judged {
        let f = &figures[i];
        let excess_failures = f.failure_rate - peer_failure_rate;
        let slowness = if peer_p50 > 0.0 {
            f.p50 / peer_p50
        } else {
            1.0
        };
        let recent_slowness = if recently_judged.contains(&i) && peer_recent_p50 > 0.0 {
            f.recent_p50 / peer_recent_p50
        } else {
            1.0
        };
        let success_factor =
            ((1.0 - f.failure_rate) / (1.0 - peer_failure_rate).max(1e-9)).min(1.0);
        let recently_slower = recent_slowness > 1.0
            && f.recent_p50 - peer_recent_p50 >= options.latency_weight_margin_ms;
        let latency_factor = if recently_slower {
            (1.0 / recent_slowness).clamp(0.05, 1.0)
        } else {
            1.0
        };
        verdicts[i].weight = (success_factor * success_factor * latency_factor).clamp(0.01, 1.0);
        let excess_recent_failures = f.recent_failure_rate - peer_recent_failure_rate;
        if f.failures >= options.min_failures && excess_failures >= options.failure_rate_margin {
            let reason = format!(
                "failure rate {:.1}% vs peers' {:.1}% over {} requests",
                f.failure_rate * 100.0,
                peer_failure_rate * 100.0,
                f.requests
            );
            bad.push((i, excess_failures, reason));
        } else if f.recent_requests >= options.min_requests
            && f.recent_failures >= options.min_failures
            && excess_recent_failures >= options.failure_rate_margin
        {
            let reason = format!(
                "failure rate {:.1}% vs peers' {:.1}% over the last {} s ({} requests)",
                f.recent_failure_rate * 100.0,
                peer_recent_failure_rate * 100.0,
                options.recent_seconds,
                f.recent_requests
            );
            bad.push((i, excess_recent_failures, reason));
        } else if slowness >= options.latency_ratio && f.p50 - peer_p50 >= options.latency_margin_ms
        {
            let reason = format!("p50 {:.0} ms vs peers' {:.0} ms", f.p50, peer_p50);
            bad.push((
                i,
                slowness / options.latency_ratio * options.failure_rate_margin,
                reason,
            ));
        } else if recent_slowness >= options.latency_ratio
            && f.recent_p50 - peer_recent_p50 >= options.latency_margin_ms
        {
            let reason = format!(
                "p50 {:.0} ms vs peers' {:.0} ms over the last {} s",
                f.recent_p50, peer_recent_p50, options.recent_seconds
            );
            bad.push((
                i,
                recent_slowness / options.latency_ratio * options.failure_rate_margin,
                reason,
            ));
        } else if verdicts[i].weight < 1.0 {
            verdicts[i].reason = format!(
                "success {:.1}%, p50 {:.0} ms vs peers' {:.0} ms over the last {} s",
                (1.0 - f.failure_rate) * 100.0,
                f.recent_p50,
                peer_recent_p50,
                options.recent_seconds
            );
        }
    }
    bad.sort_by(|a, b| b.1.total_cmp(&a.1));

    let limit = endpoints.len() * options.max_ejected_percent as usize / 100;
    let mut ejected = endpoints
        .iter()
        .filter(|(_, ejection)| ejection.until > now)
        .count();
    let bad_set: Vec<usize> = bad.iter().map(|(i, _, _)| *i).collect();
    for (i, _, reason) in bad {
        let ejection = &mut *endpoints[i].1;
        if ejection.until > now {
            verdicts[i].reason = reason;
            continue;
        }
        if ejected >= limit {
            verdicts[i].reason = format!("{reason} (not ejected: max ejected percent reached)");
            continue;
        }
        ejection.count += 1;
        let length = (options.base_ejection * ejection.count).min(options.max_ejection);
        ejection.until = now + length.as_nanos() as u64;
        ejected += 1;
        verdicts[i].reason = reason;
    }
    for (i, (_, ejection)) in endpoints.iter_mut().enumerate() {
        if ejection.until > now {
            verdicts[i].weight = 0.0;
            if verdicts[i].reason.is_empty() {
                verdicts[i].reason = "ejected earlier; waiting for the ejection to end".into();
            }
        } else if judged.contains(&i) && !bad_set.contains(&i) && ejection.count > 0 {
            // Healthy on fresh evidence after its ejection ended: the next ejection starts short again.
            ejection.count = 0;
        }
    }
    verdicts
}

/// The median of `values` (0 for none).
fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut values: Vec<f64> = values.collect();
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let middle = values.len() / 2;
    if values.len() % 2 == 1 {
        values[middle]
    } else {
        (values[middle - 1] + values[middle]) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: u64 = 1_000_000_000;

    fn evidence(requests: u64, failures: u64, latency_ms: f64) -> Evidence {
        let mut evidence = Evidence::default();
        for i in 0..requests {
            evidence.add(i < failures, latency_ms);
        }
        evidence
    }

    /// Judges endpoints observed over the whole window only (no recent evidence).
    fn run(
        evidences: &[Evidence],
        ejections: &mut [Ejection],
        now: u64,
        options: &JudgeOptions,
    ) -> Vec<Verdict> {
        let observed: Vec<Observed> = evidences
            .iter()
            .map(|window| Observed {
                window: window.clone(),
                recent: Evidence::default(),
            })
            .collect();
        judge_observed(&observed, ejections, now, options)
    }

    /// Judges endpoints observed over the window and its recent seconds.
    fn judge_observed(
        observed: &[Observed],
        ejections: &mut [Ejection],
        now: u64,
        options: &JudgeOptions,
    ) -> Vec<Verdict> {
        let mut pairs: Vec<(&Observed, &mut Ejection)> =
            observed.iter().zip(ejections.iter_mut()).collect();
        judge(options, now, &mut pairs)
    }

    /// Nine peers with ten healthy seconds at 3 ms, the last two of them as recent evidence.
    fn healthy_peers() -> Vec<Observed> {
        let healthy = Observed {
            window: evidence(100, 0, 3.0),
            recent: evidence(20, 0, 3.0),
        };
        vec![healthy; 9]
    }

    #[test]
    fn a_sudden_onset_is_judged_on_the_recent_seconds() {
        // Eight seconds of health, then failures: 9 % over the window, 40 % over the last two seconds.
        let mut observed = healthy_peers();
        let mut window = evidence(92, 0, 3.0);
        window.merge(&evidence(8, 8, 3.0));
        let mut recent = evidence(12, 0, 3.0);
        recent.merge(&evidence(8, 8, 3.0));
        observed.push(Observed { window, recent });
        let mut ejections = [Ejection::default(); 10];
        let verdicts = judge_observed(&observed, &mut ejections, SECOND, &JudgeOptions::default());
        assert_eq!(verdicts[9].weight, 0.0, "{:?}", verdicts[9]);
        assert!(
            verdicts[9]
                .reason
                .contains("over the last 2 s (20 requests)"),
            "{:?}",
            verdicts[9]
        );

        // The same 8 % over the window without the recent burst is below the margin.
        observed[9].recent = evidence(20, 0, 3.0);
        let mut fresh = [Ejection::default(); 10];
        let verdicts = judge_observed(&observed, &mut fresh, SECOND, &JudgeOptions::default());
        assert!(verdicts[9].weight > 0.0, "{:?}", verdicts[9]);
    }

    #[test]
    fn a_failing_endpoint_is_ejected_and_its_peers_keep_full_weight() {
        let mut evidences: Vec<Evidence> = (0..9).map(|_| evidence(20, 0, 3.0)).collect();
        evidences.push(evidence(20, 20, 1.0));
        let mut ejections = vec![Ejection::default(); 10];
        let verdicts = run(
            &evidences,
            &mut ejections,
            100 * SECOND,
            &JudgeOptions::default(),
        );
        assert_eq!(verdicts[9].weight, 0.0);
        assert!(
            verdicts[9].reason.contains("failure rate 100.0%"),
            "{:?}",
            verdicts[9]
        );
        assert_eq!(ejections[9].until, 110 * SECOND);
        assert!(
            verdicts[..9]
                .iter()
                .all(|v| v.weight == 1.0 && v.reason.is_empty())
        );
    }

    #[test]
    fn twenty_percent_errors_are_ejected_but_thin_evidence_is_not() {
        let mut evidences: Vec<Evidence> = (0..9).map(|_| evidence(50, 0, 3.0)).collect();
        evidences.push(evidence(50, 10, 3.0));
        let mut ejections = vec![Ejection::default(); 10];
        let verdicts = run(&evidences, &mut ejections, SECOND, &JudgeOptions::default());
        assert_eq!(verdicts[9].weight, 0.0);

        evidences[9] = evidence(4, 4, 3.0);
        let mut fresh = vec![Ejection::default(); 10];
        let verdicts = run(&evidences, &mut fresh, SECOND, &JudgeOptions::default());
        assert_eq!(
            verdicts[9].weight, 1.0,
            "4 requests are below the minimum evidence"
        );
    }

    #[test]
    fn a_slow_endpoint_is_ejected_and_a_slightly_slow_one_down_weighted() {
        let mut evidences: Vec<Evidence> = (0..7).map(|_| evidence(30, 0, 3.0)).collect();
        evidences.push(evidence(30, 0, 303.0));
        evidences.push(evidence(30, 0, 12.0));
        evidences.push(evidence(30, 0, 6.0));
        let observed: Vec<Observed> = evidences
            .iter()
            .map(|e| Observed {
                window: e.clone(),
                recent: e.clone(),
            })
            .collect();
        let mut ejections = [Ejection::default(); 10];
        let verdicts = judge_observed(&observed, &mut ejections, SECOND, &JudgeOptions::default());
        assert_eq!(verdicts[7].weight, 0.0);
        assert!(
            verdicts[7].reason.starts_with("p50 30"),
            "{:?}",
            verdicts[7]
        );
        assert!(
            (0.2..0.3).contains(&verdicts[8].weight),
            "9 ms slower than its peers: {:?}",
            verdicts[8]
        );
        assert_eq!(
            verdicts[9].weight, 1.0,
            "3 ms slower is below the margin, left to peak-EWMA: {:?}",
            verdicts[9]
        );
    }

    #[test]
    fn a_sudden_slowdown_is_judged_on_the_recent_seconds() {
        // Eight healthy seconds, then 300 ms answers: the window's p50 is still fast, the last two
        // seconds' is not.
        let mut observed = healthy_peers();
        let mut window = evidence(80, 0, 3.0);
        window.merge(&evidence(8, 0, 303.0));
        observed.push(Observed {
            window,
            recent: evidence(8, 0, 303.0),
        });
        let mut ejections = [Ejection::default(); 10];
        let verdicts = judge_observed(&observed, &mut ejections, SECOND, &JudgeOptions::default());
        assert_eq!(verdicts[9].weight, 0.0, "{:?}", verdicts[9]);
        assert!(
            verdicts[9].reason.contains("over the last 2 s"),
            "{:?}",
            verdicts[9]
        );
    }

    #[test]
    fn a_latency_down_weight_lapses_when_the_endpoint_gets_no_recent_traffic() {
        // The window remembers a slow start, but the down-weight steered traffic away, so the last
        // seconds hold too few requests to judge: the weight returns to 1 and traffic comes back.
        let mut observed = healthy_peers();
        observed.push(Observed {
            window: evidence(12, 0, 15.0),
            recent: evidence(2, 0, 15.0),
        });
        let mut ejections = [Ejection::default(); 10];
        let verdicts = judge_observed(&observed, &mut ejections, SECOND, &JudgeOptions::default());
        assert_eq!(verdicts[9].weight, 1.0, "{:?}", verdicts[9]);

        observed[9].recent = evidence(10, 0, 15.0);
        let verdicts = judge_observed(&observed, &mut ejections, SECOND, &JudgeOptions::default());
        assert!(verdicts[9].weight < 0.3, "{:?}", verdicts[9]);
    }

    #[test]
    fn at_most_the_max_percent_is_ejected_worst_first() {
        let mut evidences: Vec<Evidence> = (0..4).map(|_| evidence(20, 0, 3.0)).collect();
        evidences.push(evidence(20, 20, 3.0));
        evidences.push(evidence(20, 10, 3.0));
        evidences.push(evidence(20, 16, 3.0));
        let options = JudgeOptions {
            max_ejected_percent: 30,
            ..JudgeOptions::default()
        };
        let mut ejections = vec![Ejection::default(); 7];
        let verdicts = run(&evidences, &mut ejections, SECOND, &options);
        let ejected: Vec<usize> = (0..7).filter(|&i| verdicts[i].weight == 0.0).collect();
        assert_eq!(
            ejected,
            vec![4, 6],
            "the two worst of three bad, 30% of 7 rounds down to 2"
        );
        assert!(verdicts[5].reason.contains("max ejected percent"));
    }

    #[test]
    fn ejections_grow_while_the_endpoint_stays_bad_and_reset_once_healthy() {
        let mut evidences: Vec<Evidence> = (0..5).map(|_| evidence(20, 0, 3.0)).collect();
        evidences.push(evidence(20, 20, 3.0));
        let options = JudgeOptions::default();
        let mut ejections = vec![Ejection::default(); 6];
        run(&evidences, &mut ejections, 0, &options);
        assert_eq!(ejections[5].until, 10 * SECOND);
        run(&evidences, &mut ejections, 5 * SECOND, &options);
        assert_eq!(
            ejections[5].until,
            10 * SECOND,
            "still ejected: not extended"
        );
        run(&evidences, &mut ejections, 11 * SECOND, &options);
        assert_eq!(
            ejections[5].until,
            31 * SECOND,
            "second ejection lasts twice as long"
        );
        evidences[5] = evidence(20, 0, 3.0);
        let verdicts = run(&evidences, &mut ejections, 32 * SECOND, &options);
        assert_eq!((verdicts[5].weight, ejections[5].count), (1.0, 0));
    }
}
