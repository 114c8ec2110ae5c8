//! The time windows the pages offer ("last 15 minutes" …), and the bucket width of their plots.

use serde::Deserialize;

/// The windows a user can pick, as (name, seconds).
pub const WINDOWS: [(&str, i64); 6] = [
    ("5m", 300),
    ("15m", 900),
    ("1h", 3_600),
    ("6h", 21_600),
    ("24h", 86_400),
    ("7d", 604_800),
];

/// Points in every time-series plot.
pub const BUCKETS: i64 = 30;

/// A window ending now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Its name, one of [`WINDOWS`].
    pub name: &'static str,
    /// Its length.
    pub seconds: i64,
    /// Its end, Unix nanoseconds.
    pub end_ns: i64,
}

/// The `?window=` query parameter shared by the overview, service and graph pages.
#[derive(Debug, Default, Deserialize)]
pub struct WindowParam {
    /// A name from [`WINDOWS`]; unknown or missing means one hour.
    pub window: Option<String>,
}

impl Window {
    /// The named window ending now; one hour when the name is unknown.
    pub fn ending_now(name: Option<&str>) -> Window {
        let (name, seconds) = WINDOWS
            .iter()
            .copied()
            .find(|(candidate, _)| Some(*candidate) == name)
            .unwrap_or(WINDOWS[2]);
        Window {
            name,
            seconds,
            end_ns: chrono::Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX),
        }
    }

    /// Its start, Unix nanoseconds.
    pub fn start_ns(&self) -> i64 {
        self.end_ns - self.seconds * 1_000_000_000
    }

    /// The width of one plot bucket, seconds (at least one).
    pub fn bucket_seconds(&self) -> i64 {
        (self.seconds / BUCKETS).max(1)
    }

    /// The names of every window, for the picker.
    pub fn choices() -> Vec<&'static str> {
        WINDOWS.iter().map(|(name, _)| *name).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_names_fall_back_to_an_hour() {
        assert_eq!(Window::ending_now(Some("2y")).seconds, 3_600);
        assert_eq!(Window::ending_now(Some("5m")).bucket_seconds(), 10);
    }
}
