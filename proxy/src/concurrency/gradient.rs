//! The gradient controller behind `[upstream.adaptive_concurrency]`: arithmetic only, with time
//! passed in, so it is tested deterministically.
//!
//! Latencies are gathered into windows of `sample_window` (extended until `min_samples` arrived).
//! When a window closes, its `sample_percentile` latency is the *sample*, and the *baseline* is a
//! moving average of samples with a time constant of `baseline_window` counted in windows
//! (`baseline_window / sample_window` of them), so an idle spell, which leaves one long window,
//! cannot make the next burst's latency the baseline at once. Then, as in Netflix's Gradient2:
//!
//! ```text
//! gradient = clamp(latency_tolerance × baseline / sample, 0.5, 1)
//! estimate = limit × gradient + √limit            (√limit: room for a queue, as Envoy's)
//! limit    = clamp(limit × (1 − smoothing) + estimate × smoothing, min_limit, max_limit)
//! ```
//!
//! While latency stays within the tolerance the gradient is 1 and the limit grows by the queue
//! headroom; as latency rises the gradient falls and the limit shrinks, by at most half an estimate
//! per window so one slow outlier cannot collapse it. A window in which fewer than half the limit
//! were in flight leaves the limit alone: the caller, not the upstream, was the bottleneck, so its
//! latency says nothing about a higher limit. When latency falls to under half the baseline (a
//! long overload ended and raised the baseline), the baseline is cut by a tenth per window so the
//! limit recovers sooner than the average alone would let it.

use std::time::{Duration, Instant};

use crate::config::AdaptiveConcurrencyConfig;

/// Most latencies a window keeps; beyond it the oldest are overwritten, so memory stays bounded
/// while the percentile still describes the recent traffic.
const MAX_WINDOW_SAMPLES: usize = 1024;
/// The smallest gradient: one window can take at most half of the estimate away.
const MIN_GRADIENT: f64 = 0.5;
/// Baseline over sample beyond which the baseline is cut faster than its average moves.
const RECOVERY_RATIO: f64 = 2.0;
/// Share of the baseline kept per window while recovering.
const RECOVERY_DECAY: f64 = 0.9;

/// The controller's state for one upstream.
#[derive(Debug)]
pub(crate) struct Gradient {
    config: AdaptiveConcurrencyConfig,
    /// The current limit, fractional so small steps accumulate.
    limit: f64,
    /// Long-term latency in seconds; `None` until the first window closed.
    baseline: Option<f64>,
    /// The last closed window's latency in seconds.
    sample: Option<f64>,
    window: Window,
}

/// Latencies gathered since the last limit update.
#[derive(Debug)]
struct Window {
    started: Instant,
    /// Latencies in seconds, at most [`MAX_WINDOW_SAMPLES`].
    latencies: Vec<f64>,
    /// Latencies added, including overwritten ones (the next slot to overwrite is this modulo
    /// the cap).
    added: usize,
    /// The most requests in flight seen by a request of this window when it was admitted.
    max_in_flight: usize,
}

impl Window {
    fn new(started: Instant) -> Self {
        Self {
            started,
            latencies: Vec::new(),
            added: 0,
            max_in_flight: 0,
        }
    }

    fn add(&mut self, latency: f64, in_flight: usize) {
        if self.latencies.len() < MAX_WINDOW_SAMPLES {
            self.latencies.push(latency);
        } else {
            self.latencies[self.added % MAX_WINDOW_SAMPLES] = latency;
        }
        self.added += 1;
        self.max_in_flight = self.max_in_flight.max(in_flight);
    }

    /// The `percentile` (0 < p ≤ 100) of the latencies, nearest rank; `None` when empty.
    fn percentile(&mut self, percentile: f64) -> Option<f64> {
        let count = self.latencies.len();
        if count == 0 {
            return None;
        }
        let rank = ((percentile / 100.0 * count as f64).ceil() as usize).clamp(1, count);
        let (_, value, _) = self
            .latencies
            .select_nth_unstable_by(rank - 1, f64::total_cmp);
        Some(*value)
    }
}

/// What the admin endpoint shows of a controller.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Snapshot {
    /// Long-term latency, once known.
    pub(crate) baseline: Option<Duration>,
    /// The last window's latency, once known.
    pub(crate) sample: Option<Duration>,
}

impl Gradient {
    /// A controller for a validated table, starting at `initial_limit` with an empty window that
    /// opens at `now`.
    pub(crate) fn new(config: &AdaptiveConcurrencyConfig, now: Instant) -> Self {
        Self {
            config: config.clone(),
            limit: f64::from(config.initial_limit),
            baseline: None,
            sample: None,
            window: Window::new(now),
        }
    }

    /// The whole limit: how many requests may be in flight at once.
    pub(crate) fn limit(&self) -> usize {
        self.limit as usize
    }

    /// The latencies the limit was derived from.
    pub(crate) fn snapshot(&self) -> Snapshot {
        Snapshot {
            baseline: self.baseline.map(Duration::from_secs_f64),
            sample: self.sample.map(Duration::from_secs_f64),
        }
    }

    /// Adds the `latency` of a request that ended at `now`, admitted when `in_flight` requests
    /// (itself included) were in flight. Closes the window if it is due, and then returns the new
    /// whole limit.
    pub(crate) fn record(
        &mut self,
        now: Instant,
        latency: Duration,
        in_flight: usize,
    ) -> Option<usize> {
        self.window.add(latency.as_secs_f64(), in_flight);
        let open_for = now.saturating_duration_since(self.window.started);
        if open_for < self.config.sample_window.0
            || self.window.added < self.config.min_samples as usize
        {
            return None;
        }
        let sample = self.window.percentile(self.config.sample_percentile)?;
        let max_in_flight = self.window.max_in_flight;
        self.window = Window::new(now);
        self.update(sample, max_in_flight);
        Some(self.limit())
    }

    /// Applies one closed window's `sample` latency (seconds).
    fn update(&mut self, sample: f64, max_in_flight: usize) {
        // A zero sample (a clock that did not move) would make the ratios below infinite.
        let sample = sample.max(1e-9);
        let mut baseline = match self.baseline {
            None => sample,
            Some(baseline) => {
                let windows = self.config.baseline_window.0.as_secs_f64()
                    / self
                        .config
                        .sample_window
                        .0
                        .as_secs_f64()
                        .max(f64::MIN_POSITIVE);
                let weight = 1.0 - (-1.0 / windows).exp();
                baseline + (sample - baseline) * weight
            }
        };
        if baseline / sample > RECOVERY_RATIO {
            baseline *= RECOVERY_DECAY;
        }
        self.baseline = Some(baseline);
        self.sample = Some(sample);
        if (max_in_flight as f64) < self.limit / 2.0 {
            return;
        }
        let gradient = (self.config.latency_tolerance * baseline / sample).clamp(MIN_GRADIENT, 1.0);
        let estimate = self.limit * gradient + self.limit.sqrt();
        let smoothing = self.config.smoothing;
        self.limit = (self.limit * (1.0 - smoothing) + estimate * smoothing).clamp(
            f64::from(self.config.min_limit),
            f64::from(self.config.max_limit),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// Feeds `windows` windows of `count` requests each taking `latency`, admitted with
    /// `in_flight` in flight, one window per `sample_window`; returns the limit after each.
    fn run(
        gradient: &mut Gradient,
        clock: &mut Instant,
        windows: usize,
        latency: Duration,
        in_flight: usize,
    ) -> Vec<usize> {
        let step = gradient.config.sample_window.0 / 10;
        let mut limits = Vec::new();
        for _ in 0..windows {
            for _ in 0..10 {
                *clock += step;
                if let Some(limit) = gradient.record(*clock, latency, in_flight) {
                    limits.push(limit);
                }
            }
        }
        limits
    }

    fn controller() -> (Gradient, Instant) {
        let start = Instant::now();
        let config = AdaptiveConcurrencyConfig::default();
        (Gradient::new(&config, start), start)
    }

    #[test]
    fn a_window_closes_only_after_its_time_and_enough_samples() {
        let (mut gradient, start) = controller();
        for i in 1..=9 {
            assert_eq!(gradient.record(start + MS * 20 * i, MS * 10, 20), None);
        }
        // At 180 ms the time was up but the window was one sample short; the tenth closes it:
        // 20 × 0.8 + (20 × 1 + √20) × 0.2 = 20.89…
        assert_eq!(gradient.record(start + MS * 190, MS * 10, 20), Some(20));
        assert_eq!(
            gradient.record(start + MS * 200, MS * 10, 20),
            None,
            "a new window opened"
        );
    }

    #[test]
    fn steady_latency_under_load_grows_the_limit_by_the_queue_headroom() {
        let (mut gradient, mut clock) = controller();
        // limit 20 → 20 × 0.8 + (20 + √20) × 0.2 = 20.894…; then 21.81…
        let limits = run(&mut gradient, &mut clock, 2, MS * 10, 20);
        assert_eq!(limits, vec![20, 21]);
        // √limit grows by about smoothing / 2 per window: 4.7 → 14.7 in 100 windows.
        let grown = run(&mut gradient, &mut clock, 100, MS * 10, 1000);
        assert!(
            grown.windows(2).all(|w| w[1] >= w[0]),
            "never shrinks: {grown:?}"
        );
        assert!(
            grown.last().is_some_and(|&l| (190..=230).contains(&l)),
            "{grown:?}"
        );
        assert_eq!(
            gradient.snapshot().baseline,
            Some(Duration::from_secs_f64(0.01))
        );
    }

    #[test]
    fn rising_latency_shrinks_the_limit_until_it_settles_and_recovery_grows_it_back() {
        let (mut gradient, mut clock) = controller();
        run(&mut gradient, &mut clock, 5, MS * 10, 40);
        let before = gradient.limit();
        // Three times the baseline, beyond the 1.5 tolerance: gradient 0.5 at first.
        let falling = run(&mut gradient, &mut clock, 60, MS * 30, 40);
        assert!(falling[0] < before, "{before} then {falling:?}");
        // It settles where the headroom balances the gradient, √limit = 1 / (1 − gradient): about
        // 6 with the baseline crept up to ~12 ms (gradient 0.6), a quarter of where it was.
        let settled = &falling[falling.len() - 10..];
        assert!(settled.iter().all(|&l| l == 6), "{before} then {falling:?}");
        let recovering = run(&mut gradient, &mut clock, 60, MS * 10, 40);
        assert!(
            recovering.last().is_some_and(|&l| l >= 20),
            "grows back once latency is normal: {recovering:?}"
        );
    }

    #[test]
    fn the_gradient_is_clamped_so_one_window_takes_at_most_half_an_estimate() {
        let (mut gradient, mut clock) = controller();
        run(&mut gradient, &mut clock, 1, MS * 10, 20);
        let limit = gradient.limit;
        run(&mut gradient, &mut clock, 1, Duration::from_secs(10), 20);
        let expected = limit * 0.8 + (limit * 0.5 + limit.sqrt()) * 0.2;
        assert!(
            (gradient.limit - expected).abs() < 1e-9,
            "{} vs {expected}",
            gradient.limit
        );
    }

    #[test]
    fn latency_within_the_tolerance_does_not_shrink_the_limit() {
        let (mut gradient, mut clock) = controller();
        run(&mut gradient, &mut clock, 1, MS * 10, 20);
        let limits = run(&mut gradient, &mut clock, 5, MS * 14, 30);
        assert!(limits.windows(2).all(|w| w[1] >= w[0]), "{limits:?}");
    }

    #[test]
    fn an_idle_caller_leaves_the_limit_alone() {
        let (mut gradient, mut clock) = controller();
        run(&mut gradient, &mut clock, 1, MS * 10, 20);
        let limit = gradient.limit();
        // 5 in flight is under half of 20: neither slow nor fast answers move the limit.
        assert!(
            run(&mut gradient, &mut clock, 5, MS * 100, 5)
                .iter()
                .all(|&l| l == limit)
        );
        assert!(
            run(&mut gradient, &mut clock, 5, MS, 5)
                .iter()
                .all(|&l| l == limit)
        );
    }

    #[test]
    fn the_baseline_follows_lasting_change_slowly_and_falls_fast_after_an_overload() {
        let (mut gradient, mut clock) = controller();
        run(&mut gradient, &mut clock, 1, MS * 10, 20);
        // 60 s of 20 ms windows: one time constant, so about 63 % of the way to 20 ms.
        run(&mut gradient, &mut clock, 600, MS * 20, 1);
        let Some(baseline) = gradient.snapshot().baseline else {
            panic!("no baseline")
        };
        let moved = (baseline.as_secs_f64() - 0.010) / 0.010;
        assert!((moved - 0.632).abs() < 0.01, "moved {moved}");
        // Latency back to 5 ms, under half the baseline: cut by a tenth per window besides the
        // average, so within 10 windows the baseline is below 10 ms.
        run(&mut gradient, &mut clock, 10, MS * 5, 1);
        assert!(gradient.snapshot().baseline.is_some_and(|b| b < MS * 10));
    }

    #[test]
    fn an_idle_spell_moves_the_baseline_by_one_window_only() {
        let (mut gradient, mut clock) = controller();
        run(&mut gradient, &mut clock, 1, MS * 10, 1);
        clock += Duration::from_secs(600);
        run(&mut gradient, &mut clock, 1, MS * 50, 1);
        let Some(baseline) = gradient.snapshot().baseline else {
            panic!("no baseline")
        };
        // One window of 600 in the time constant: 40 ms × (1 − e^(−1/600)) ≈ 0.067 ms.
        let moved = baseline.as_secs_f64() - 0.010;
        assert!((moved - 0.0000666).abs() < 1e-6, "moved {moved}");
    }

    #[test]
    fn the_percentile_picks_the_nearest_rank() {
        let mut window = Window::new(Instant::now());
        for latency in [5.0, 1.0, 4.0, 2.0, 3.0] {
            window.add(latency, 1);
        }
        assert_eq!(window.percentile(50.0), Some(3.0));
        assert_eq!(window.percentile(100.0), Some(5.0));
        assert_eq!(window.percentile(1.0), Some(1.0));
        assert_eq!(Window::new(Instant::now()).percentile(50.0), None);
    }

    #[test]
    fn a_window_keeps_at_most_its_cap_of_the_latest_latencies() {
        let mut window = Window::new(Instant::now());
        for i in 0..(MAX_WINDOW_SAMPLES + 10) {
            window.add(i as f64, i);
        }
        assert_eq!(window.latencies.len(), MAX_WINDOW_SAMPLES);
        assert_eq!(
            window.percentile(0.01),
            Some(10.0),
            "the oldest ten are gone"
        );
        assert_eq!(window.max_in_flight, MAX_WINDOW_SAMPLES + 9);
    }
}
