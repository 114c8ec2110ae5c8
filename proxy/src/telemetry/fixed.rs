//! Span attributes whose values repeat: those the configuration fixes (a route's name, an upstream's
//! name and balancer, an endpoint's address), encoded when the route, upstream or endpoint is built,
//! and the request's method and HTTP version, encoded once per process. Each span copies them in as
//! bytes rather than encoding them again for every request.

use std::sync::LazyLock;

use http::uri::Authority;
use http::{Method, Version};

use super::wire;

/// The methods whose `http.request.method` attribute is encoded once ([`FixedAttribute::write_method`]).
const METHODS: [Method; 9] = [
    Method::GET,
    Method::POST,
    Method::PUT,
    Method::DELETE,
    Method::HEAD,
    Method::OPTIONS,
    Method::PATCH,
    Method::CONNECT,
    Method::TRACE,
];

/// `http.request.method` of each of [`METHODS`], and `network.protocol.version` of each HTTP
/// version: every span has both, so they are encoded on first use rather than per span.
static COMMON: LazyLock<Common> = LazyLock::new(|| Common {
    methods: METHODS.map(|m| FixedAttribute::string("http.request.method", m.as_str())),
    versions: ["0.9", "1.0", "1.1", "2", "3"]
        .map(|v| FixedAttribute::string("network.protocol.version", v)),
});

/// The encoded attributes of [`COMMON`], indexed like [`METHODS`] and by HTTP version.
struct Common {
    methods: [FixedAttribute; METHODS.len()],
    versions: [FixedAttribute; 5],
}

/// One or more attributes, already encoded as entries of a span's `attributes`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FixedAttribute(Box<[u8]>);

impl FixedAttribute {
    /// `meshscope.route`: the route that matched.
    pub(crate) fn route(name: &str) -> Self {
        Self::string("meshscope.route", name)
    }

    /// `meshscope.upstream.service`: the upstream the split chose.
    pub(crate) fn upstream(name: &str) -> Self {
        Self::string("meshscope.upstream.service", name)
    }

    /// `meshscope.balancer`: the upstream's balancing policy.
    pub(crate) fn balancer(name: &str) -> Self {
        Self::string("meshscope.balancer", name)
    }

    /// `server.address`, `server.port` and `meshscope.upstream.endpoint` of one endpoint, encoded
    /// when it joins its upstream's set (about 1.2k instructions less per span, bench/README.md).
    pub(crate) fn endpoint(address: &Authority) -> Self {
        let mut encoded = Vec::new();
        wire::string_attribute(&mut encoded, "server.address", &[address.host()]);
        if let Some(port) = address.port_u16() {
            wire::int_attribute(&mut encoded, "server.port", i64::from(port));
        }
        wire::string_attribute(
            &mut encoded,
            "meshscope.upstream.endpoint",
            &[address.as_str()],
        );
        Self(encoded.into_boxed_slice())
    }

    /// Writes `http.request.method`: the encoded attribute for a standard method, else the method's
    /// name encoded now.
    pub(super) fn write_method(span: &mut Vec<u8>, method: &Method) {
        match METHODS.iter().position(|m| m == method) {
            Some(i) => COMMON.methods[i].write(span),
            None => wire::string_attribute(span, "http.request.method", &[method.as_str()]),
        }
    }

    /// Writes `network.protocol.version` (`1.1`, `2`…).
    pub(super) fn write_version(span: &mut Vec<u8>, version: Version) {
        let i = match version {
            Version::HTTP_09 => 0,
            Version::HTTP_10 => 1,
            Version::HTTP_2 => 3,
            Version::HTTP_3 => 4,
            _ => 2,
        };
        COMMON.versions[i].write(span);
    }

    fn string(key: &str, value: &str) -> Self {
        let mut encoded = Vec::new();
        wire::string_attribute(&mut encoded, key, &[value]);
        Self(encoded.into_boxed_slice())
    }

    /// Appends the attribute to an encoded span.
    pub(super) fn write(&self, span: &mut Vec<u8>) {
        span.extend_from_slice(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use meshscope_proto::common::{KeyValue, any_value::Value};
    use meshscope_proto::prost::Message;
    use meshscope_proto::trace::Span;

    use super::*;
    use crate::telemetry::wire::tests::attribute;

    fn string(key: &str, value: &str) -> KeyValue {
        attribute(key, Value::StringValue(value.to_owned()))
    }

    /// Copied into a span, the fixed attributes decode with prost as the attributes they stand for,
    /// in the order they were written, next to one encoded per request.
    #[test]
    fn fixed_attributes_decode_as_the_attributes_they_stand_for() {
        let mut span = Vec::new();
        FixedAttribute::route("checkout").write(&mut span);
        FixedAttribute::upstream("payments-v2").write(&mut span);
        wire::string_attribute(&mut span, "meshscope.upstream.endpoint", &["10.0.0.1:80"]);
        FixedAttribute::balancer("peak_ewma").write(&mut span);
        let long = "r".repeat(200);
        FixedAttribute::route(&long).write(&mut span);

        let decoded = Span::decode(span.as_slice()).unwrap();
        assert_eq!(
            decoded.attributes,
            vec![
                string("meshscope.route", "checkout"),
                string("meshscope.upstream.service", "payments-v2"),
                string("meshscope.upstream.endpoint", "10.0.0.1:80"),
                string("meshscope.balancer", "peak_ewma"),
                string("meshscope.route", &long),
            ]
        );
    }

    /// An endpoint's attributes decode as its host, port and address; a port-less authority has no
    /// `server.port`, and an IPv6 host keeps its brackets as `Authority::host` gives it.
    #[test]
    fn endpoint_attributes_decode_as_host_port_and_address() {
        for (text, host, port) in [
            ("10.0.0.1:8080", "10.0.0.1", Some(8080)),
            ("api.svc", "api.svc", None),
            ("[::1]:443", "[::1]", Some(443)),
        ] {
            let mut span = Vec::new();
            FixedAttribute::endpoint(&text.parse().unwrap()).write(&mut span);
            let decoded = Span::decode(span.as_slice()).unwrap();
            let mut expected = vec![string("server.address", host)];
            expected.extend(port.map(|p| attribute("server.port", Value::IntValue(p))));
            expected.push(string("meshscope.upstream.endpoint", text));
            assert_eq!(decoded.attributes, expected, "{text}");
        }
    }

    /// Methods and versions decode as their names, the standard ones from the table and any other
    /// encoded on the spot.
    #[test]
    fn methods_and_versions_decode_as_their_names() {
        let custom = Method::from_bytes(b"PURGE").unwrap();
        let mut span = Vec::new();
        for method in METHODS.iter().chain([&custom]) {
            FixedAttribute::write_method(&mut span, method);
        }
        for version in [
            Version::HTTP_09,
            Version::HTTP_10,
            Version::HTTP_11,
            Version::HTTP_2,
            Version::HTTP_3,
        ] {
            FixedAttribute::write_version(&mut span, version);
        }
        let decoded = Span::decode(span.as_slice()).unwrap();
        let mut expected: Vec<KeyValue> = METHODS
            .iter()
            .chain([&custom])
            .map(|m| string("http.request.method", m.as_str()))
            .collect();
        expected
            .extend(["0.9", "1.0", "1.1", "2", "3"].map(|v| string("network.protocol.version", v)));
        assert_eq!(decoded.attributes, expected);
    }
}
