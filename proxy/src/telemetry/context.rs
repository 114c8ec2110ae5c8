//! Trace context on the wire: W3C `traceparent` (read and written) and Zipkin B3 (read only).
//!
//! Parsed by hand: it is two small fixed formats, and the OpenTelemetry SDK's propagators would pull
//! in the whole SDK for them.

use http::HeaderMap;
use http::header::{HeaderName, HeaderValue};

// Constants rather than `&str`s: a lookup by `&str` parses the name first, and every traced
// request looks up all of these (they are usually absent).
const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
/// W3C `tracestate`, passed on untouched and recorded on spans.
pub(crate) const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");
const B3: HeaderName = HeaderName::from_static("b3");
const B3_SAMPLED: HeaderName = HeaderName::from_static("x-b3-sampled");
const B3_FLAGS: HeaderName = HeaderName::from_static("x-b3-flags");
const B3_TRACE_ID: HeaderName = HeaderName::from_static("x-b3-traceid");
const B3_SPAN_ID: HeaderName = HeaderName::from_static("x-b3-spanid");

/// Bits of the trace headers found in a request (see `TraceContext::extract`).
const TRACEPARENT_BIT: u8 = 1;
const B3_BIT: u8 = 2;
const B3_MULTI_BIT: u8 = 4;

/// The identity of one span and whether its trace is being recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TraceContext {
    /// The trace, 16 bytes, never all zero.
    pub(crate) trace_id: [u8; 16],
    /// The span, 8 bytes, never all zero.
    pub(crate) span_id: [u8; 8],
    /// Whether the trace is sampled (recorded).
    pub(crate) sampled: bool,
}

impl TraceContext {
    /// The start of a new trace, recorded or not.
    pub(crate) fn root(sampled: bool) -> Self {
        Self {
            trace_id: nonzero_u128().to_be_bytes(),
            span_id: nonzero_u64().to_be_bytes(),
            sampled,
        }
    }

    /// A new span in the same trace.
    pub(crate) fn child(&self) -> Self {
        Self {
            span_id: nonzero_u64().to_be_bytes(),
            ..*self
        }
    }

    /// The caller's context: `traceparent` if valid, else B3 (single `b3` header, then `x-b3-*`).
    pub(crate) fn extract(headers: &HeaderMap) -> Option<Self> {
        // Which of the names are present, from one pass over the request's names: most requests
        // carry none of them, and a hashed lookup of an absent name cost more than comparing a
        // request's few names (callgrind: three lookups were ~500 instructions per request).
        let mut present = 0u8;
        for name in headers.keys() {
            present |= match name.as_str() {
                "traceparent" => TRACEPARENT_BIT,
                "b3" => B3_BIT,
                "x-b3-spanid" | "x-b3-traceid" | "x-b3-sampled" | "x-b3-flags" => B3_MULTI_BIT,
                _ => 0,
            };
        }
        if present == 0 {
            return None;
        }
        let text = |name: HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
        if present & TRACEPARENT_BIT != 0
            && let Some(context) = text(TRACEPARENT).and_then(parse_traceparent)
        {
            return Some(context);
        }
        if present & B3_BIT != 0
            && let Some(context) = text(B3).and_then(parse_b3_single)
        {
            return Some(context);
        }
        if present & B3_MULTI_BIT == 0 {
            return None;
        }
        // Without a span id there is no B3 context; checked first, as most requests have none.
        let span = text(B3_SPAN_ID)?;
        let sampled = match (text(B3_SAMPLED), text(B3_FLAGS)) {
            (_, Some("1")) => true,
            (Some(flag), _) => flag == "1" || flag.eq_ignore_ascii_case("true"),
            (None, _) => true,
        };
        Some(Self {
            trace_id: trace_id(text(B3_TRACE_ID)?)?,
            span_id: span_id(span)?,
            sampled,
        })
    }

    /// Writes this context as the `traceparent` the next hop sees; `tracestate` is left as it is.
    pub(crate) fn inject(&self, headers: &mut HeaderMap) {
        // Written in place: formatting with `format!` and two hex strings was 6% of a traced request.
        let mut text = *b"00-00000000000000000000000000000000-0000000000000000-00";
        write_hex(&self.trace_id, &mut text[3..35]);
        write_hex(&self.span_id, &mut text[36..52]);
        if self.sampled {
            text[54] = b'1';
        }
        if let Ok(value) = HeaderValue::from_bytes(&text) {
            headers.insert(TRACEPARENT, value);
        }
    }
}

/// Lowercase hex of `bytes` into `out`, two digits per byte (`out` is exactly twice as long).
///
/// By hand rather than `hex::encode_to_slice`, whose checked, iterator-based loop cost about as
/// much as the rest of writing `traceparent` (callgrind, bench/README.md).
fn write_hex(bytes: &[u8], out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (byte, pair) in bytes.iter().zip(out.chunks_exact_mut(2)) {
        pair[0] = DIGITS[usize::from(byte >> 4)];
        pair[1] = DIGITS[usize::from(byte & 0x0f)];
    }
}

fn nonzero_u128() -> u128 {
    fastrand::u128(1..)
}

fn nonzero_u64() -> u64 {
    fastrand::u64(1..)
}

/// `version-traceid-spanid-flags`; versions above 00 may append fields, version ff is invalid.
fn parse_traceparent(value: &str) -> Option<TraceContext> {
    let mut parts = value.trim().split('-');
    let version = parts.next()?;
    let (trace, span, flags) = (parts.next()?, parts.next()?, parts.next()?);
    if version.len() != 2
        || version.eq_ignore_ascii_case("ff")
        || (version == "00" && parts.next().is_some())
    {
        return None;
    }
    if trace.len() != 32 || span.len() != 16 || flags.len() != 2 {
        return None;
    }
    let mut flag_byte = [0u8; 1];
    hex::decode_to_slice(flags, &mut flag_byte).ok()?;
    Some(TraceContext {
        trace_id: trace_id(trace)?,
        span_id: span_id(span)?,
        sampled: flag_byte[0] & 1 == 1,
    })
}

/// `traceid-spanid[-sampled[-parentspanid]]`; a lone sampling flag carries no ids.
fn parse_b3_single(value: &str) -> Option<TraceContext> {
    let mut parts = value.trim().split('-');
    let (trace, span) = (parts.next()?, parts.next()?);
    let sampled = !matches!(parts.next(), Some("0"));
    Some(TraceContext {
        trace_id: trace_id(trace)?,
        span_id: span_id(span)?,
        sampled,
    })
}

/// A 32-hex-digit trace id, or a 16-digit (64-bit B3) one padded on the left; not all zero.
fn trace_id(text: &str) -> Option<[u8; 16]> {
    let mut id = [0u8; 16];
    match text.len() {
        32 => hex::decode_to_slice(text, &mut id).ok()?,
        16 => hex::decode_to_slice(text, &mut id[8..]).ok()?,
        _ => return None,
    }
    (id != [0; 16]).then_some(id)
}

/// A 16-hex-digit span id, not all zero.
fn span_id(text: &str) -> Option<[u8; 8]> {
    let mut id = [0u8; 8];
    hex::decode_to_slice(text, &mut id).ok()?;
    (id != [0; 8]).then_some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn traceparent_round_trip() {
        let text = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let Some(context) = TraceContext::extract(&headers(&[("traceparent", text)])) else {
            panic!("valid traceparent rejected");
        };
        assert!(context.sampled);
        let mut out = HeaderMap::new();
        context.inject(&mut out);
        assert_eq!(out["traceparent"], text);
    }

    #[test]
    fn invalid_traceparents_are_ignored() {
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-xyz-00f067aa0ba902b7-01",
        ] {
            assert_eq!(
                TraceContext::extract(&headers(&[("traceparent", bad)])),
                None,
                "{bad}"
            );
        }
        let future = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-extra";
        assert_eq!(
            TraceContext::extract(&headers(&[("traceparent", future)])).map(|c| c.sampled),
            Some(false)
        );
    }

    #[test]
    fn b3_single_and_multi() {
        let single = headers(&[("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1")]);
        let Some(context) = TraceContext::extract(&single) else {
            panic!("b3 rejected")
        };
        assert_eq!(hex::encode(context.span_id), "e457b5a2e4d86bd1");
        let multi = headers(&[
            ("x-b3-traceid", "a3ce929d0e0e4736"),
            ("x-b3-spanid", "00f067aa0ba902b7"),
            ("x-b3-sampled", "0"),
        ]);
        let Some(context) = TraceContext::extract(&multi) else {
            panic!("x-b3 rejected")
        };
        assert_eq!(
            hex::encode(context.trace_id),
            "0000000000000000a3ce929d0e0e4736"
        );
        assert!(!context.sampled);
        assert_eq!(TraceContext::extract(&headers(&[("b3", "1")])), None);
    }

    #[test]
    fn other_headers_carry_no_context_and_an_invalid_traceparent_falls_back_to_b3() {
        let other = headers(&[("user-agent", "curl"), ("x-b3", "1"), ("b33", "1")]);
        assert_eq!(TraceContext::extract(&other), None);
        let both = headers(&[
            ("traceparent", "00-xyz-00f067aa0ba902b7-01"),
            ("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1"),
        ]);
        let context = TraceContext::extract(&both).map(|c| hex::encode(c.span_id));
        assert_eq!(context.as_deref(), Some("e457b5a2e4d86bd1"));
    }

    #[test]
    fn hex_digits_match_the_hex_crate() {
        let bytes: Vec<u8> = (0..=255).collect();
        let mut out = vec![0u8; 512];
        write_hex(&bytes, &mut out);
        assert_eq!(out, hex::encode(&bytes).into_bytes());
    }

    #[test]
    fn children_share_the_trace() {
        let root = TraceContext::root(true);
        let child = root.child();
        assert_eq!(root.trace_id, child.trace_id);
        assert_ne!(root.span_id, child.span_id);
    }
}
