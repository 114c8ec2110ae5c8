//! An open-loop HTTP/1.1 load generator at a fixed request rate, for measuring the latency a proxy
//! adds at a given load (wrk2 is not packaged in Debian; h2load's `--rate` paces connections, not
//! requests).
//!
//! `fixed_rate URL RATE SECONDS`: sends `RATE` GETs per second for `SECONDS` over pooled keep-alive
//! connections on one thread, each timed from the moment it was *scheduled* (so a stall counts
//! against every request it delays: no coordinated omission), and prints
//! `requests=N errors=E p50_us=.. p90_us=.. p99_us=.. p999_us=.. max_us=..`.

use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: fixed_rate URL RATE SECONDS";
    let url: hyper::Uri = args.next().ok_or(usage)?.parse()?;
    let rate: u32 = args.next().ok_or(usage)?.parse()?;
    let seconds: u32 = args.next().ok_or(usage)?.parse()?;
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    // Warm the pool so connection setup is not measured.
    for _ in 0..4 {
        let response = client.get(url.clone()).await?;
        response.into_body().collect().await?;
    }
    let total = u64::from(rate) * u64::from(seconds);
    let interval = Duration::from_secs(1) / rate;
    let start = Instant::now();
    let (done, mut results) = tokio::sync::mpsc::unbounded_channel();
    for i in 0..total {
        let scheduled = start + interval * u32::try_from(i)?;
        tokio::time::sleep_until(scheduled.into()).await;
        let (client, url, done) = (client.clone(), url.clone(), done.clone());
        tokio::spawn(async move {
            let outcome = async {
                let response = client.get(url).await?;
                let ok = response.status().is_success();
                response.into_body().collect().await?;
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>(ok)
            }
            .await;
            let _ = done.send((scheduled.elapsed(), matches!(outcome, Ok(true))));
        });
    }
    drop(done);
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut errors = 0u64;
    while let Some((latency, ok)) = results.recv().await {
        if ok {
            histogram.saturating_record(u64::try_from(latency.as_micros())?);
        } else {
            errors += 1;
        }
    }
    println!(
        "requests={} errors={errors} p50_us={} p90_us={} p99_us={} p999_us={} max_us={}",
        histogram.len(),
        histogram.value_at_quantile(0.5),
        histogram.value_at_quantile(0.9),
        histogram.value_at_quantile(0.99),
        histogram.value_at_quantile(0.999),
        histogram.max()
    );
    Ok(())
}
