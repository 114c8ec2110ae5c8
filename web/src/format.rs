//! How numbers and instants read on the pages: durations with a unit, UTC times, rates, colours.

use chrono::{DateTime, Utc};

/// `850 ns`, `12.3 µs`, `4.56 ms`, `1.23 s`, `2.5 min`: three significant figures, the unit a person
/// expects for that size.
pub fn duration(ns: f64) -> String {
    let abs = ns.abs();
    let (value, unit) = if abs < 1e3 {
        (ns, "ns")
    } else if abs < 1e6 {
        (ns / 1e3, "µs")
    } else if abs < 1e9 {
        (ns / 1e6, "ms")
    } else if abs < 120e9 {
        (ns / 1e9, "s")
    } else {
        (ns / 60e9, "min")
    };
    format!("{} {unit}", significant(value))
}

/// A number with three significant figures and no trailing zeros.
pub fn significant(value: f64) -> String {
    let abs = value.abs();
    let decimals = if abs >= 100.0 || abs == 0.0 {
        0
    } else if abs >= 10.0 {
        1
    } else if abs >= 1.0 {
        2
    } else {
        // Below one, keep three significant digits: 0.000278, not 0.
        (-abs.log10()).ceil() as usize + 2
    };
    let text = format!("{value:.decimals$}");
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        text
    }
}

/// Unix nanoseconds as `2026-11-26 05:18:23.123` (UTC).
pub fn instant(unix_ns: i64) -> String {
    DateTime::<Utc>::from_timestamp_nanos(unix_ns)
        .format("%Y-%m-%d %H:%M:%S%.3f")
        .to_string()
}

/// Unix milliseconds as RFC 3339 (`2026-11-26T05:18:23.123Z`), the form the search page reads.
pub fn rfc3339_ms(unix_ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(unix_ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Unix nanoseconds as `05:18:23`, for plot axes.
pub fn clock(unix_ns: i64) -> String {
    DateTime::<Utc>::from_timestamp_nanos(unix_ns)
        .format("%H:%M:%S")
        .to_string()
}

/// A rate per second, e.g. `12.5/s` or `0.03/s`.
pub fn rate(per_second: f64) -> String {
    format!("{}/s", significant(per_second))
}

/// A share as a percentage, e.g. `2.5%`.
pub fn percent(share: f64) -> String {
    format!("{}%", significant(share * 100.0))
}

/// A stable colour for a service, so the same service has the same colour on every page.
pub fn service_colour(service: &str) -> String {
    // FNV-1a: tiny, stable across builds and platforms (std's hasher is neither promised).
    let mut hash: u32 = 0x811c_9dc5;
    for byte in service.bytes() {
        hash = (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193);
    }
    format!("hsl({}, 62%, 52%)", hash % 360)
}

/// Health class of an error share: `ok`, `warn` (≥ 1%) or `bad` (≥ 5%), for colouring.
pub fn health(error_share: f64) -> &'static str {
    if error_share >= 0.05 {
        "bad"
    } else if error_share >= 0.01 {
        "warn"
    } else {
        "ok"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_pick_a_readable_unit() {
        assert_eq!(duration(850.0), "850 ns");
        assert_eq!(duration(12_345.0), "12.3 µs");
        assert_eq!(duration(4_560_000.0), "4.56 ms");
        assert_eq!(duration(1_000_000_000.0), "1 s");
        assert_eq!(duration(150e9), "2.5 min");
        assert_eq!(rate(1.0 / 3600.0), "0.000278/s");
        assert_eq!(rate(0.5), "0.5/s");
    }

    #[test]
    fn instants_are_utc() {
        assert_eq!(instant(1_500_000_000), "1970-01-01 00:00:01.500");
    }

    #[test]
    fn colours_are_stable() {
        assert_eq!(service_colour("api"), service_colour("api"));
        assert_ne!(service_colour("api"), service_colour("web"));
    }
}
