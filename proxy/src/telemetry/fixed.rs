//! Span attributes whose values the configuration fixes (a route's name, an upstream's name and
//! balancer): encoded once, when the route or upstream is built, and copied into each span as bytes
//! rather than encoded again for every request.

use super::wire;

/// One string attribute, already encoded as an entry of a span's `attributes`.
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
    use meshscope_proto::common::{AnyValue, KeyValue, any_value::Value};
    use meshscope_proto::prost::Message;
    use meshscope_proto::trace::Span;

    use super::*;

    fn string(key: &str, value: &str) -> KeyValue {
        KeyValue {
            key: key.to_owned(),
            value: Some(AnyValue {
                value: Some(Value::StringValue(value.to_owned())),
            }),
            ..Default::default()
        }
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
}
