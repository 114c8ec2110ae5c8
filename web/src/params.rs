//! Parsing of human-friendly query parameters: durations and instants.

use meshscope_query::{CompareOp, Comparison, SearchRequest};

use crate::error::ApiError;

/// Adds one attribute filter to `request`: `key=value` (text equality) or a numeric comparison
/// `key>5`, `key>=5`, `key<5`, `key<=5`, `key!=5`, split at the first operator.
pub fn add_attribute_filter(request: &mut SearchRequest, text: &str) -> Result<(), ApiError> {
    let at = text.find(['=', '<', '>', '!']).ok_or_else(|| {
        ApiError::bad_request(format!("filter {text:?} must be key=value or key>number"))
    })?;
    let key = text[..at].trim();
    let rest = &text[at..];
    let op_len = if rest.len() > 1 && rest.as_bytes()[1] == b'=' && !rest.starts_with('=') {
        2
    } else {
        1
    };
    let (op, value) = (&rest[..op_len], rest[op_len..].trim());
    if key.is_empty() {
        return Err(ApiError::bad_request(format!("filter {text:?} has no key")));
    }
    if op == "=" {
        request.attributes.push((key.to_owned(), value.to_owned()));
        return Ok(());
    }
    let op = CompareOp::parse(op)
        .ok_or_else(|| ApiError::bad_request(format!("filter {text:?}: unknown operator")))?;
    let value = value.parse::<f64>().map_err(|_| {
        ApiError::bad_request(format!("filter {text:?}: {value:?} is not a number"))
    })?;
    request.comparisons.push(Comparison {
        key: key.to_owned(),
        op,
        value,
    });
    Ok(())
}

/// `150ms`, `2s`, `500us`, `1.5m`, `3h`, or a bare integer of nanoseconds.
pub fn parse_duration(text: &str) -> Result<i64, ApiError> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let scale = match unit.trim() {
        "" | "ns" => 1.0,
        "us" | "µs" => 1e3,
        "ms" => 1e6,
        "s" => 1e9,
        "m" => 60e9,
        "h" => 3600e9,
        _ => {
            return Err(ApiError::bad_request(format!(
                "duration {text:?}: unknown unit"
            )));
        }
    };
    let value: f64 = number.parse().map_err(|_| {
        ApiError::bad_request(format!(
            "duration {text:?} must look like 150ms, 2s or 1500000"
        ))
    })?;
    Ok((value * scale) as i64)
}

/// RFC 3339 (`2026-11-25T10:00:00Z`) or Unix nanoseconds.
pub fn parse_time(text: &str) -> Result<i64, ApiError> {
    let text = text.trim();
    if let Ok(nanos) = text.parse::<i64>() {
        return Ok(nanos);
    }
    chrono::DateTime::parse_from_rfc3339(text)
        .ok()
        .and_then(|time| time.timestamp_nanos_opt())
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "time {text:?} must be RFC 3339 or Unix nanoseconds"
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("150ms").unwrap(), 150_000_000);
        assert_eq!(parse_duration("2s").unwrap(), 2_000_000_000);
        assert_eq!(parse_duration("1.5m").unwrap(), 90_000_000_000);
        assert_eq!(parse_duration("42").unwrap(), 42);
        assert!(parse_duration("2 fortnights").is_err());
    }

    #[test]
    fn attribute_filters() {
        let mut request = SearchRequest::default();
        add_attribute_filter(&mut request, "http.route=/a=b").unwrap();
        add_attribute_filter(&mut request, "http.response.status_code>=500").unwrap();
        add_attribute_filter(&mut request, "retries < 3").unwrap();
        assert_eq!(
            request.attributes,
            vec![("http.route".to_owned(), "/a=b".to_owned())]
        );
        assert_eq!(request.comparisons[0].op, CompareOp::GreaterOrEqual);
        assert_eq!(request.comparisons[0].value, 500.0);
        assert_eq!(request.comparisons[1].key, "retries");
        assert_eq!(request.comparisons[1].op, CompareOp::Less);
        for bad in ["novalue", "=x", "n>fast", "n!x"] {
            assert!(add_attribute_filter(&mut request, bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn times() {
        assert_eq!(parse_time("1000").unwrap(), 1000);
        assert_eq!(parse_time("1970-01-01T00:00:01Z").unwrap(), 1_000_000_000);
        assert!(parse_time("yesterday").is_err());
    }
}
