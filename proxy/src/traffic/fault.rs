//! Fault injection: delaying or failing a share of a route's requests, to test how callers cope.

use std::time::Duration;

use http::{HeaderMap, StatusCode};

use crate::config::FaultConfig;

/// Request header asking for a delay, honoured only with `header_control`.
const DELAY_HEADER: &str = "x-meshscope-fault-delay";
/// Request header asking for an abort status, honoured only with `header_control`.
const ABORT_HEADER: &str = "x-meshscope-fault-abort";

/// A compiled `[outbound.route.fault]` table.
#[derive(Debug)]
pub(crate) struct Fault {
    delay: Option<Duration>,
    delay_percent: f64,
    abort: Option<StatusCode>,
    abort_percent: f64,
    header_control: bool,
}

/// What to do to one request.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Injection {
    /// Wait this long first.
    pub(crate) delay: Option<Duration>,
    /// Then answer this status instead of forwarding.
    pub(crate) abort: Option<StatusCode>,
}

impl Fault {
    /// The fault for a validated table.
    pub(crate) fn from_config(config: &FaultConfig) -> Self {
        Self {
            delay: config.delay.map(|d| d.0),
            delay_percent: config.delay_percent,
            abort: config
                .abort_status
                .and_then(|s| StatusCode::from_u16(s).ok()),
            abort_percent: config.abort_percent,
            header_control: config.header_control,
        }
    }

    /// Draws the faults for one request. With `header_control`, the fault headers are read (they
    /// win over the configured faults) and removed so the upstream never sees them.
    pub(crate) fn decide(&self, headers: &mut HeaderMap) -> Injection {
        let mut injection = Injection {
            delay: self.delay.filter(|_| chance(self.delay_percent)),
            abort: self.abort.filter(|_| chance(self.abort_percent)),
        };
        if self.header_control {
            let text = |headers: &HeaderMap, name| {
                headers
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
            };
            if let Some(delay) =
                text(headers, DELAY_HEADER).and_then(|v| humantime::parse_duration(&v).ok())
            {
                injection.delay = Some(delay);
            }
            if let Some(status) = text(headers, ABORT_HEADER)
                .and_then(|v| v.parse::<u16>().ok())
                .and_then(|s| StatusCode::from_u16(s).ok())
            {
                injection.abort = Some(status);
            }
            headers.remove(DELAY_HEADER);
            headers.remove(ABORT_HEADER);
        }
        injection
    }
}

/// True for `percent`% of calls.
fn chance(percent: f64) -> bool {
    fastrand::f64() * 100.0 < percent
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn fault(delay_percent: f64, abort_percent: f64, header_control: bool) -> Fault {
        Fault {
            delay: Some(Duration::from_millis(5)),
            delay_percent,
            abort: Some(StatusCode::SERVICE_UNAVAILABLE),
            abort_percent,
            header_control,
        }
    }

    #[test]
    fn percentages_hold_at_the_extremes_and_roughly_between() {
        assert_eq!(
            fault(0.0, 0.0, false).decide(&mut HeaderMap::new()),
            Injection::default()
        );
        let always = fault(100.0, 100.0, false).decide(&mut HeaderMap::new());
        assert_eq!(always.abort, Some(StatusCode::SERVICE_UNAVAILABLE));
        let some = fault(0.0, 25.0, false);
        let aborted = (0..4000)
            .filter(|_| some.decide(&mut HeaderMap::new()).abort.is_some())
            .count();
        assert!((800..1200).contains(&aborted), "{aborted}");
    }

    #[test]
    fn headers_ask_for_faults_only_when_allowed_and_are_removed() {
        let mut headers = HeaderMap::new();
        headers.insert(DELAY_HEADER, HeaderValue::from_static("150ms"));
        headers.insert(ABORT_HEADER, HeaderValue::from_static("418"));
        let decided = fault(0.0, 0.0, true).decide(&mut headers);
        assert_eq!(decided.delay, Some(Duration::from_millis(150)));
        assert_eq!(decided.abort, Some(StatusCode::IM_A_TEAPOT));
        assert!(headers.is_empty());
        let mut kept = HeaderMap::new();
        kept.insert(ABORT_HEADER, HeaderValue::from_static("418"));
        assert_eq!(
            fault(0.0, 0.0, false).decide(&mut kept),
            Injection::default()
        );
    }
}
