//! Header handling every proxied message gets (hop-by-hop removal, `x-forwarded-for`), and reading
//! request keys (header, cookie, client address) for hashing and rate limits.

use std::net::IpAddr;

use http::header::{self, COOKIE, HeaderMap, HeaderName, HeaderValue};

use crate::balance::hash;
use crate::config::HashKey;

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1), so a proxy must not
/// forward them, and `Upgrade`. `te` is handled separately: `te: trailers` must reach a gRPC server.
/// `Connection` comes first: its bit in `strip_hop_by_hop`'s mask is 1.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Removes hop-by-hop headers, including any named in `Connection`, and `Upgrade`.
/// For requests, `te` survives only as `te: trailers`; responses lose it entirely.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap, is_request: bool) {
    // Most requests carry none of these: one pass over the names is much cheaper than a removal
    // (a hash and a probe) per candidate, which callgrind showed as 7% of a proxied request.
    let (mut found, mut te) = (0u8, false);
    for name in headers.keys() {
        if let Some(i) = HOP_BY_HOP.iter().position(|candidate| candidate == name) {
            found |= 1 << i;
        }
        te |= name == header::TE;
    }
    if found == 0 && !te {
        return;
    }
    // Most responses do carry one (`Connection: keep-alive`): only the names found are removed.
    // Names listed in `Connection` are read once, and only those that are not candidates anyway
    // (it usually lists `keep-alive` or `close`) are parsed and removed: testing every present
    // name against the list was ~2k instructions per proxied response (callgrind).
    let listed: Vec<HeaderName> = if found & 1 == 0 {
        Vec::new()
    } else {
        headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .map(str::trim)
            .filter(|token| {
                !HOP_BY_HOP
                    .iter()
                    .any(|candidate| token.eq_ignore_ascii_case(candidate.as_str()))
            })
            .filter_map(|token| HeaderName::from_bytes(token.as_bytes()).ok())
            .collect()
    };
    for (i, name) in HOP_BY_HOP.iter().enumerate() {
        if found & (1 << i) != 0 {
            headers.remove(name);
        }
    }
    for name in &listed {
        headers.remove(name);
    }
    if !te {
        return;
    }
    let wants_trailers = headers
        .get_all(header::TE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|part| part.trim().eq_ignore_ascii_case("trailers"));
    headers.remove(header::TE);
    if is_request && wants_trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
}

/// Appends the client's address to `x-forwarded-for`, keeping what earlier proxies wrote.
pub(crate) fn append_forwarded_for(headers: &mut HeaderMap, client: IpAddr) {
    let name = HeaderName::from_static("x-forwarded-for");
    let earlier: Vec<&str> = headers
        .get_all(&name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    if earlier.is_empty() {
        headers.insert(name, address_value(client));
        return;
    }
    if let Ok(value) = HeaderValue::try_from(format!("{}, {client}", earlier.join(", "))) {
        headers.insert(name, value);
    }
}

thread_local! {
    /// The last client address formatted on this thread. A sidecar sees few callers (its app, a few
    /// peers), and formatting the address for every request cost 4% of a proxied request.
    static LAST_ADDRESS: std::cell::RefCell<Option<(IpAddr, HeaderValue)>> =
        const { std::cell::RefCell::new(None) };
}

/// `client` as a header value (cheap to clone: it shares its bytes).
fn address_value(client: IpAddr) -> HeaderValue {
    LAST_ADDRESS.with_borrow_mut(|last| match last {
        Some((ip, value)) if *ip == client => value.clone(),
        _ => {
            let value = HeaderValue::from_maybe_shared(bytes::Bytes::from(client.to_string()))
                .unwrap_or_else(|_| HeaderValue::from_static("unknown"));
            *last = Some((client, value.clone()));
            value
        }
    })
}

/// The stable hash of a request's `key` (a header, a cookie or the client's address), for
/// consistent hashing and per-caller rate limits; `None` when the request lacks the header or cookie.
pub(crate) fn request_key(key: &HashKey, headers: &HeaderMap, client: IpAddr) -> Option<u64> {
    match key {
        HashKey::SourceIp => Some(match client {
            IpAddr::V4(ip) => hash(&ip.octets()),
            IpAddr::V6(ip) => hash(&ip.octets()),
        }),
        HashKey::Header(name) => headers
            .get(name.as_str())
            .map(|value| hash(value.as_bytes())),
        HashKey::Cookie(name) => cookie(headers, name).map(|value| hash(value.as_bytes())),
    }
}

/// The value of cookie `name` in the request's `Cookie` headers.
fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .find_map(|pair| pair.trim().strip_prefix(name)?.strip_prefix('='))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_cookies_among_several() {
        let mut headers = HeaderMap::new();
        headers.append(COOKIE, HeaderValue::from_static("theme=dark; session=abc"));
        headers.append(COOKIE, HeaderValue::from_static("sessionx=no"));
        assert_eq!(cookie(&headers, "session"), Some("abc"));
        assert_eq!(cookie(&headers, "theme"), Some("dark"));
        assert_eq!(cookie(&headers, "missing"), None);
    }

    #[test]
    fn strips_listed_and_standard_hop_headers() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        headers.insert("x-secret", HeaderValue::from_static("1"));
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert(header::TE, HeaderValue::from_static("gzip, trailers"));
        headers.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut headers, true);
        let mut names: Vec<&str> = headers.keys().map(|k| k.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, vec!["te", "x-kept"]);
        assert_eq!(headers[header::TE], "trailers");
    }

    #[test]
    fn responses_lose_te_and_a_te_listed_in_connection_goes_too() {
        let mut response = HeaderMap::new();
        response.insert(header::CONNECTION, HeaderValue::from_static("keep-alive"));
        response.insert(header::TE, HeaderValue::from_static("trailers"));
        response.insert(header::CONTENT_LENGTH, HeaderValue::from_static("3"));
        strip_hop_by_hop(&mut response, false);
        let names: Vec<&str> = response.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, vec!["content-length"]);

        let mut request = HeaderMap::new();
        request.insert(header::CONNECTION, HeaderValue::from_static("TE"));
        request.insert(header::TE, HeaderValue::from_static("trailers"));
        strip_hop_by_hop(&mut request, true);
        assert!(request.is_empty());
    }

    #[test]
    fn forwarded_for_appends() {
        let mut headers = HeaderMap::new();
        append_forwarded_for(&mut headers, [10, 0, 0, 1].into());
        append_forwarded_for(&mut headers, [10, 0, 0, 2].into());
        assert_eq!(headers["x-forwarded-for"], "10.0.0.1, 10.0.0.2");
    }
}
