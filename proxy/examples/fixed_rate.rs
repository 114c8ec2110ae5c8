//! An open-loop HTTP/1.1 load generator at a fixed request rate, for measuring the latency a proxy
//! adds at a given load (wrk2 is not packaged in Debian; h2load's `--rate` paces connections, not
//! requests).
//!
//! `fixed_rate URL RATE SECONDS`: sends `RATE` GETs per second for `SECONDS` over pooled keep-alive
//! connections, each timed from the moment it was *scheduled* (so a stall counts against every
//! request it delays: no coordinated omission), and prints
//! `requests=N errors=E p50_us=.. p90_us=.. p99_us=.. p999_us=.. max_us=.. late_p99_us=..`, where
//! `late_p99_us` is how late the pacer handed requests over (its own precision).
//!
//! Pacing is done by a dedicated thread, not by tokio's timer: tokio rounds every sleep up to its
//! 1 ms tick, so a `sleep_until` fired up to a millisecond after the scheduled instant and that
//! lateness was counted as latency (direct p50 measured ~800 µs on loopback). The pacer thread
//! sleeps in the kernel with a 1 ns timer slack and hands each request to a one-thread runtime.

use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

type Error = Box<dyn std::error::Error + Send + Sync>;

fn main() -> Result<(), Error> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: fixed_rate URL RATE SECONDS";
    let url: hyper::Uri = args.next().ok_or(usage)?.parse()?;
    let rate: u32 = args.next().ok_or(usage)?.parse()?;
    let seconds: u32 = args.next().ok_or(usage)?.parse()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    // Warm the pool so connection setup is not measured.
    runtime.block_on(async {
        for _ in 0..4 {
            let response = client.get(url.clone()).await?;
            response.into_body().collect().await?;
        }
        Ok::<_, Error>(())
    })?;
    let total = u64::from(rate) * u64::from(seconds);
    let interval = Duration::from_secs(1) / rate;
    let (done, mut results) = tokio::sync::mpsc::unbounded_channel();
    let handle = runtime.handle().clone();
    let pacer = std::thread::spawn(move || {
        set_timer_slack_to_one_nanosecond();
        let mut late = histogram();
        let start = Instant::now();
        for i in 0..total {
            let scheduled = start + interval * u32::try_from(i).expect("fewer than 2^32 requests");
            let now = Instant::now();
            if let Some(wait) = scheduled.checked_duration_since(now) {
                std::thread::sleep(wait);
            }
            late.saturating_record(micros(scheduled.elapsed()));
            let (client, url, done) = (client.clone(), url.clone(), done.clone());
            handle.spawn(async move {
                let outcome = async {
                    let response = client.get(url).await?;
                    let ok = response.status().is_success();
                    response.into_body().collect().await?;
                    Ok::<_, Error>(ok)
                }
                .await;
                let _ = done.send((scheduled.elapsed(), matches!(outcome, Ok(true))));
            });
        }
        late
    });
    let mut latencies = histogram();
    let mut errors = 0u64;
    runtime.block_on(async {
        while let Some((latency, ok)) = results.recv().await {
            if ok {
                latencies.saturating_record(micros(latency));
            } else {
                errors += 1;
            }
        }
    });
    let late = pacer.join().map_err(|_| "the pacer thread panicked")?;
    println!(
        "requests={} errors={errors} p50_us={} p90_us={} p99_us={} p999_us={} max_us={} late_p99_us={}",
        latencies.len(),
        latencies.value_at_quantile(0.5),
        latencies.value_at_quantile(0.9),
        latencies.value_at_quantile(0.99),
        latencies.value_at_quantile(0.999),
        latencies.max(),
        late.value_at_quantile(0.99)
    );
    Ok(())
}

/// A histogram of microseconds, 1 µs to 60 s at 3 significant digits.
fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("the bounds are valid")
}

/// `duration` in whole microseconds, saturating.
fn micros(duration: Duration) -> u64 {
    duration.as_micros().try_into().unwrap_or(u64::MAX)
}

/// Linux lets a sleeping thread wake up to its timer slack (50 µs by default) late, to batch wakeups;
/// a pacer wants its wakeups on time.
fn set_timer_slack_to_one_nanosecond() {
    if rustix::thread::set_current_timer_slack(std::num::NonZeroU64::new(1)).is_err() {
        eprintln!("fixed_rate: PR_SET_TIMERSLACK failed; pacing keeps the default 50 µs slack");
    }
}
