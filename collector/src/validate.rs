//! Validation of OTLP exports before they are stored.
//!
//! Invalid spans and data points are removed from the request in place and counted, so that one bad item
//! never fails a whole export: the rest is stored and the client gets an OTLP partial-success answer
//! built from [`Rejections`].
//!
//! ```text
//! request ──validate_traces / validate_metrics──► request without invalid items ──► storage
//!                          └──► Rejections { count, message } ──► partial_success
//! ```
//!
//! Locations in messages are indexes in the request as received: `span 2 of scope 0`, with
//! `of resource R` added when the request has several resource groups.

use meshscope_proto::collector::metrics::v1::ExportMetricsServiceRequest;
use meshscope_proto::collector::trace::v1::ExportTraceServiceRequest;
use meshscope_proto::common::{InstrumentationScope, KeyValue};
use meshscope_proto::metrics::{
    Exemplar, ExponentialHistogramDataPoint, HistogramDataPoint, Metric, NumberDataPoint,
    SummaryDataPoint, metric,
};
use meshscope_proto::resource::Resource;
use meshscope_proto::trace::Span;
use meshscope_proto::trace::span::Link;
use meshscope_storage::convert::{MAX_STORED_TIME_NANOS, attributes_deeper_than};

/// Deepest AnyValue nesting accepted (arrays/kvlists inside each other).
///
/// A scalar value has depth 0 and an array or kvlist one more than its deepest element, so a plain
/// array of strings has depth 1.
pub const MAX_ANY_VALUE_DEPTH: usize = 32;

/// Most distinct reasons listed in [`Rejections::message`].
const MAX_REASONS: usize = 3;

/// What validation removed from a request, for the OTLP partial_success answer.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Rejections {
    /// Number of spans (or metric data points) removed.
    pub count: i64,
    /// Empty when nothing was removed; otherwise up to 3 distinct reasons joined by "; ", e.g.
    /// "span 2 of scope 0: trace_id must be 16 bytes, got 3". Each distinct problem is listed once, at the
    /// first place it was found.
    pub message: String,
}

/// Counts rejected items and keeps the first occurrence of the first few distinct problems.
#[derive(Default)]
struct Tally {
    count: i64,
    /// (problem, "location: problem") of each distinct problem kept.
    reasons: Vec<(String, String)>,
}

impl Tally {
    /// Records `n` items rejected for `problem`, found at the location `location` describes.
    fn reject(&mut self, n: usize, problem: String, location: impl FnOnce() -> String) {
        self.count = self
            .count
            .saturating_add(i64::try_from(n).unwrap_or(i64::MAX));
        if self.reasons.len() < MAX_REASONS && self.reasons.iter().all(|(p, _)| *p != problem) {
            let message = format!("{}: {problem}", location());
            self.reasons.push((problem, message));
        }
    }

    fn finish(self) -> Rejections {
        let messages: Vec<String> = self
            .reasons
            .into_iter()
            .map(|(_, message)| message)
            .collect();
        Rejections {
            count: self.count,
            message: messages.join("; "),
        }
    }
}

/// Where a scope group is, for messages.
#[derive(Clone, Copy)]
struct Place {
    resource: usize,
    /// Whether the request has several resource groups, so the resource index is worth naming.
    several_resources: bool,
    scope: usize,
}

impl Place {
    fn resource_suffix(self) -> String {
        if self.several_resources {
            format!(" of resource {}", self.resource)
        } else {
            String::new()
        }
    }

    fn scope(self) -> String {
        format!("scope {}{}", self.scope, self.resource_suffix())
    }

    fn resource(self) -> String {
        format!("resource {}", self.resource)
    }
}

/// Removes invalid spans in place and reports them. Invalid: trace_id not 16 bytes or all zero; span_id not 8 bytes or all zero; parent_span_id neither empty nor 8 bytes; a link with invalid ids; start/end time > i64::MAX; any AnyValue (in attributes, event/link attributes) nested deeper than MAX_ANY_VALUE_DEPTH.
///
/// Resource or scope attributes nested too deep reject every span of their group. Groups emptied by the
/// removal are dropped; groups that were empty to begin with are kept.
pub fn validate_traces(request: &mut ExportTraceServiceRequest) -> Rejections {
    let mut tally = Tally::default();
    let several_resources = request.resource_spans.len() > 1;
    let mut resource_index = 0;
    request.resource_spans.retain_mut(|rs| {
        let resource = resource_index;
        resource_index += 1;
        let before: usize = rs.scope_spans.iter().map(|ss| ss.spans.len()).sum();
        let mut place = Place {
            resource,
            several_resources,
            scope: 0,
        };
        if let Some(problem) = resource_problem(rs.resource.as_ref()) {
            if before > 0 {
                tally.reject(before, problem, || place.resource());
            }
            rs.scope_spans.clear();
            return before == 0;
        }
        let mut scope_index = 0;
        rs.scope_spans.retain_mut(|ss| {
            place.scope = scope_index;
            scope_index += 1;
            let scope_before = ss.spans.len();
            if let Some(problem) = scope_problem(ss.scope.as_ref()) {
                if scope_before > 0 {
                    tally.reject(scope_before, problem, || place.scope());
                }
                ss.spans.clear();
            } else {
                let mut span_index = 0;
                ss.spans.retain(|span| {
                    let index = span_index;
                    span_index += 1;
                    match span_problem(span) {
                        None => true,
                        Some(problem) => {
                            tally.reject(1, problem, || {
                                format!("span {index} of {}", place.scope())
                            });
                            false
                        }
                    }
                });
            }
            scope_before == 0 || !ss.spans.is_empty()
        });
        before == 0 || !rs.scope_spans.is_empty()
    });
    tally.finish()
}

/// Same for metrics: removes data points whose times exceed i64::MAX or whose attributes nest too deep; count = rejected data points.
///
/// Exemplar attributes count as the point's attributes. Metric metadata, resource or scope attributes
/// nested too deep reject every point of their metric or group. Metrics and groups emptied by the removal
/// are dropped; those that were empty to begin with are kept.
pub fn validate_metrics(request: &mut ExportMetricsServiceRequest) -> Rejections {
    let mut tally = Tally::default();
    let several_resources = request.resource_metrics.len() > 1;
    let mut resource_index = 0;
    request.resource_metrics.retain_mut(|rm| {
        let resource = resource_index;
        resource_index += 1;
        let before: usize = rm
            .scope_metrics
            .iter()
            .flat_map(|sm| &sm.metrics)
            .map(point_count)
            .sum();
        let mut place = Place {
            resource,
            several_resources,
            scope: 0,
        };
        if let Some(problem) = resource_problem(rm.resource.as_ref()) {
            if before > 0 {
                tally.reject(before, problem, || place.resource());
            }
            rm.scope_metrics.clear();
            return before == 0;
        }
        let mut scope_index = 0;
        rm.scope_metrics.retain_mut(|sm| {
            place.scope = scope_index;
            scope_index += 1;
            let scope_before: usize = sm.metrics.iter().map(point_count).sum();
            if let Some(problem) = scope_problem(sm.scope.as_ref()) {
                if scope_before > 0 {
                    tally.reject(scope_before, problem, || place.scope());
                }
                sm.metrics.clear();
                return scope_before == 0;
            }
            let mut metric_index = 0;
            sm.metrics.retain_mut(|m| {
                let index = metric_index;
                metric_index += 1;
                let metric_before = point_count(m);
                let where_ = |point: Option<usize>| {
                    let point = point.map_or(String::new(), |p| format!("data point {p} of "));
                    format!("{point}metric {index} of {}", place.scope())
                };
                if nests_too_deep(&m.metadata) {
                    if metric_before > 0 {
                        let problem = format!("metadata {}", too_deep_message());
                        tally.reject(metric_before, problem, || where_(None));
                    }
                    m.data = None;
                } else {
                    retain_valid_points(m, &mut |point, problem| {
                        tally.reject(1, problem, || where_(Some(point)));
                    });
                }
                metric_before == 0 || point_count(m) > 0
            });
            scope_before == 0 || !sm.metrics.is_empty()
        });
        before == 0 || !rm.scope_metrics.is_empty()
    });
    tally.finish()
}

fn too_deep_message() -> String {
    format!("attribute values nested deeper than {MAX_ANY_VALUE_DEPTH} levels")
}

fn resource_problem(resource: Option<&Resource>) -> Option<String> {
    resource
        .is_some_and(|r| nests_too_deep(&r.attributes))
        .then(|| format!("resource {}", too_deep_message()))
}

fn scope_problem(scope: Option<&InstrumentationScope>) -> Option<String> {
    scope
        .is_some_and(|s| nests_too_deep(&s.attributes))
        .then(|| format!("scope {}", too_deep_message()))
}

/// The first reason `span` cannot be stored, if any.
fn span_problem(span: &Span) -> Option<String> {
    if let Some(problem) = id_problem("trace_id", &span.trace_id, 16) {
        return Some(problem);
    }
    if let Some(problem) = id_problem("span_id", &span.span_id, 8) {
        return Some(problem);
    }
    let parent = span.parent_span_id.len();
    if parent != 0 && parent != 8 {
        return Some(format!(
            "parent_span_id must be empty or 8 bytes, got {parent}"
        ));
    }
    if let Some(problem) = time_problem("start_time_unix_nano", span.start_time_unix_nano) {
        return Some(problem);
    }
    if let Some(problem) = time_problem("end_time_unix_nano", span.end_time_unix_nano) {
        return Some(problem);
    }
    if nests_too_deep(&span.attributes) {
        return Some(too_deep_message());
    }
    for (i, event) in span.events.iter().enumerate() {
        if nests_too_deep(&event.attributes) {
            return Some(format!("event {i}: {}", too_deep_message()));
        }
    }
    span.links
        .iter()
        .enumerate()
        .find_map(|(i, link)| link_problem(link).map(|problem| format!("link {i}: {problem}")))
}

fn link_problem(link: &Link) -> Option<String> {
    id_problem("trace_id", &link.trace_id, 16)
        .or_else(|| id_problem("span_id", &link.span_id, 8))
        .or_else(|| nests_too_deep(&link.attributes).then(too_deep_message))
}

/// Checks that an id has `len` bytes, not all zero.
fn id_problem(name: &str, id: &[u8], len: usize) -> Option<String> {
    if id.len() != len {
        Some(format!("{name} must be {len} bytes, got {}", id.len()))
    } else if id.iter().all(|b| *b == 0) {
        Some(format!("{name} must not be all zero"))
    } else {
        None
    }
}

fn time_problem(name: &str, nanos: u64) -> Option<String> {
    (nanos > MAX_STORED_TIME_NANOS).then(|| format!("{name} exceeds i64::MAX"))
}

/// Whether any attribute value nests arrays/kvlists deeper than [`MAX_ANY_VALUE_DEPTH`].
fn nests_too_deep(attrs: &[KeyValue]) -> bool {
    attributes_deeper_than(attrs, MAX_ANY_VALUE_DEPTH)
}

/// Number of data points of a metric.
fn point_count(m: &Metric) -> usize {
    match &m.data {
        Some(metric::Data::Gauge(g)) => g.data_points.len(),
        Some(metric::Data::Sum(s)) => s.data_points.len(),
        Some(metric::Data::Histogram(h)) => h.data_points.len(),
        Some(metric::Data::ExponentialHistogram(h)) => h.data_points.len(),
        Some(metric::Data::Summary(s)) => s.data_points.len(),
        None => 0,
    }
}

/// What validation looks at in a data point of any kind.
trait DataPoint {
    fn attributes(&self) -> &[KeyValue];
    fn start_time_unix_nano(&self) -> u64;
    fn time_unix_nano(&self) -> u64;
    fn exemplars(&self) -> &[Exemplar];
}

macro_rules! data_point {
    ($ty:ty, |$point:ident| $exemplars:expr) => {
        impl DataPoint for $ty {
            fn attributes(&self) -> &[KeyValue] {
                &self.attributes
            }
            fn start_time_unix_nano(&self) -> u64 {
                self.start_time_unix_nano
            }
            fn time_unix_nano(&self) -> u64 {
                self.time_unix_nano
            }
            fn exemplars(&self) -> &[Exemplar] {
                let $point = self;
                $exemplars
            }
        }
    };
}

data_point!(NumberDataPoint, |point| &point.exemplars);
data_point!(HistogramDataPoint, |point| &point.exemplars);
data_point!(ExponentialHistogramDataPoint, |point| &point.exemplars);
data_point!(SummaryDataPoint, |_point| &[]);

/// The first reason a data point cannot be stored, if any.
fn point_problem(point: &impl DataPoint) -> Option<String> {
    time_problem("start_time_unix_nano", point.start_time_unix_nano())
        .or_else(|| time_problem("time_unix_nano", point.time_unix_nano()))
        .or_else(|| nests_too_deep(point.attributes()).then(too_deep_message))
        .or_else(|| {
            point
                .exemplars()
                .iter()
                .position(|e| nests_too_deep(&e.filtered_attributes))
                .map(|i| format!("exemplar {i}: {}", too_deep_message()))
        })
}

/// Removes the invalid data points of `m`, calling `reject` with each one's index and problem.
fn retain_valid_points(m: &mut Metric, reject: &mut dyn FnMut(usize, String)) {
    match &mut m.data {
        Some(metric::Data::Gauge(g)) => retain_points(&mut g.data_points, reject),
        Some(metric::Data::Sum(s)) => retain_points(&mut s.data_points, reject),
        Some(metric::Data::Histogram(h)) => retain_points(&mut h.data_points, reject),
        Some(metric::Data::ExponentialHistogram(h)) => retain_points(&mut h.data_points, reject),
        Some(metric::Data::Summary(s)) => retain_points(&mut s.data_points, reject),
        None => {}
    }
}

fn retain_points<P: DataPoint>(points: &mut Vec<P>, reject: &mut dyn FnMut(usize, String)) {
    let mut index = 0;
    points.retain(|point| {
        let i = index;
        index += 1;
        match point_problem(point) {
            None => true,
            Some(problem) => {
                reject(i, problem);
                false
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use meshscope_proto::common::any_value::Value;
    use meshscope_proto::common::{AnyValue, ArrayValue, KeyValueList};
    use meshscope_proto::metrics::{
        ExponentialHistogram, Gauge, Histogram, ResourceMetrics, ScopeMetrics, Sum, Summary,
    };
    use meshscope_proto::trace::span::Event;
    use meshscope_proto::trace::{ResourceSpans, ScopeSpans};
    use meshscope_storage::convert::any_value_deeper_than;

    use super::*;

    fn good_span() -> Span {
        Span {
            trace_id: vec![1; 16],
            span_id: vec![2; 8],
            start_time_unix_nano: 10,
            end_time_unix_nano: 20,
            ..Span::default()
        }
    }

    fn string(key: &str) -> KeyValue {
        KeyValue {
            key: key.to_owned(),
            value: Some(AnyValue {
                value: Some(Value::StringValue("v".to_owned())),
            }),
            key_strindex: 0,
        }
    }

    /// A value with `depth` levels of arrays and kvlists (alternating) around a string.
    fn nested(depth: usize) -> AnyValue {
        let mut value = AnyValue {
            value: Some(Value::StringValue("leaf".to_owned())),
        };
        for level in 0..depth {
            value = AnyValue {
                value: Some(if level % 2 == 0 {
                    Value::ArrayValue(ArrayValue {
                        values: vec![value],
                    })
                } else {
                    Value::KvlistValue(KeyValueList {
                        values: vec![KeyValue {
                            key: "k".to_owned(),
                            value: Some(value),
                            key_strindex: 0,
                        }],
                    })
                }),
            };
        }
        value
    }

    fn deep(depth: usize) -> Vec<KeyValue> {
        vec![
            string("plain"),
            KeyValue {
                key: "deep".to_owned(),
                value: Some(nested(depth)),
                key_strindex: 0,
            },
        ]
    }

    fn traces(spans: Vec<Span>) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans,
                    ..ScopeSpans::default()
                }],
                ..ResourceSpans::default()
            }],
        }
    }

    /// Validates one bad span next to a good one; returns the message.
    fn reject_one(bad: Span) -> String {
        let mut request = traces(vec![good_span(), bad]);
        let rejections = validate_traces(&mut request);
        assert_eq!(rejections.count, 1, "{}", rejections.message);
        assert_eq!(
            request.resource_spans[0].scope_spans[0].spans,
            vec![good_span()]
        );
        rejections.message
    }

    #[test]
    fn valid_spans_pass_untouched() {
        let mut span = good_span();
        span.parent_span_id = vec![3; 8];
        span.start_time_unix_nano = MAX_STORED_TIME_NANOS;
        span.attributes = deep(MAX_ANY_VALUE_DEPTH);
        let mut request = traces(vec![span]);
        request.resource_spans.push(ResourceSpans::default());
        let original = request.clone();
        assert_eq!(validate_traces(&mut request), Rejections::default());
        assert_eq!(request, original);
    }

    #[test]
    fn trace_id_rules() {
        let mut span = good_span();
        span.trace_id = vec![1, 2, 3];
        assert_eq!(
            reject_one(span),
            "span 1 of scope 0: trace_id must be 16 bytes, got 3"
        );
        let mut span = good_span();
        span.trace_id = vec![0; 16];
        assert_eq!(
            reject_one(span),
            "span 1 of scope 0: trace_id must not be all zero"
        );
    }

    #[test]
    fn span_id_rules() {
        let mut span = good_span();
        span.span_id = Vec::new();
        assert_eq!(
            reject_one(span),
            "span 1 of scope 0: span_id must be 8 bytes, got 0"
        );
        let mut span = good_span();
        span.span_id = vec![0; 8];
        assert_eq!(
            reject_one(span),
            "span 1 of scope 0: span_id must not be all zero"
        );
    }

    #[test]
    fn parent_span_id_rule() {
        let mut span = good_span();
        span.parent_span_id = vec![1; 16];
        assert_eq!(
            reject_one(span),
            "span 1 of scope 0: parent_span_id must be empty or 8 bytes, got 16"
        );
    }

    #[test]
    fn link_id_rules() {
        let link = Link {
            trace_id: vec![1; 16],
            span_id: vec![1; 8],
            ..Link::default()
        };
        let mut span = good_span();
        span.links = vec![
            link.clone(),
            Link {
                span_id: vec![0; 8],
                ..link.clone()
            },
        ];
        assert_eq!(
            reject_one(span),
            "span 1 of scope 0: link 1: span_id must not be all zero"
        );
        let mut span = good_span();
        span.links = vec![Link {
            trace_id: vec![1; 15],
            ..link
        }];
        assert_eq!(
            reject_one(span),
            "span 1 of scope 0: link 0: trace_id must be 16 bytes, got 15"
        );
    }

    #[test]
    fn time_rules() {
        let mut span = good_span();
        span.start_time_unix_nano = MAX_STORED_TIME_NANOS + 1;
        assert_eq!(
            reject_one(span),
            "span 1 of scope 0: start_time_unix_nano exceeds i64::MAX"
        );
        let mut span = good_span();
        span.end_time_unix_nano = u64::MAX;
        assert!(reject_one(span).contains("end_time_unix_nano"));
    }

    #[test]
    fn nesting_rules_for_span_event_and_link_attributes() {
        let mut span = good_span();
        span.attributes = deep(MAX_ANY_VALUE_DEPTH + 1);
        assert_eq!(
            reject_one(span),
            "span 1 of scope 0: attribute values nested deeper than 32 levels"
        );

        let mut span = good_span();
        span.events = vec![
            Event::default(),
            Event {
                attributes: deep(MAX_ANY_VALUE_DEPTH + 1),
                ..Event::default()
            },
        ];
        assert!(reject_one(span).contains("event 1: attribute values nested deeper"));

        let mut span = good_span();
        span.links = vec![Link {
            trace_id: vec![1; 16],
            span_id: vec![1; 8],
            attributes: deep(MAX_ANY_VALUE_DEPTH + 1),
            ..Link::default()
        }];
        assert!(reject_one(span).contains("link 0: attribute values nested deeper"));
    }

    #[test]
    fn depth_counts_containers() {
        assert!(!any_value_deeper_than(&nested(0), 0));
        assert!(any_value_deeper_than(&nested(1), 0));
        assert!(!any_value_deeper_than(
            &nested(MAX_ANY_VALUE_DEPTH),
            MAX_ANY_VALUE_DEPTH
        ));
        assert!(any_value_deeper_than(
            &nested(MAX_ANY_VALUE_DEPTH + 1),
            MAX_ANY_VALUE_DEPTH
        ));
        assert!(any_value_deeper_than(&nested(1000), MAX_ANY_VALUE_DEPTH));
    }

    #[test]
    fn deep_resource_or_scope_rejects_the_group() {
        let mut request = ExportTraceServiceRequest {
            resource_spans: vec![
                ResourceSpans {
                    resource: Some(Resource {
                        attributes: deep(MAX_ANY_VALUE_DEPTH + 1),
                        ..Resource::default()
                    }),
                    scope_spans: vec![
                        ScopeSpans {
                            spans: vec![good_span(), good_span()],
                            ..ScopeSpans::default()
                        },
                        ScopeSpans {
                            spans: vec![good_span()],
                            ..ScopeSpans::default()
                        },
                    ],
                    ..ResourceSpans::default()
                },
                ResourceSpans {
                    scope_spans: vec![
                        ScopeSpans {
                            scope: Some(InstrumentationScope {
                                attributes: deep(MAX_ANY_VALUE_DEPTH + 1),
                                ..InstrumentationScope::default()
                            }),
                            spans: vec![good_span(), good_span()],
                            ..ScopeSpans::default()
                        },
                        ScopeSpans {
                            spans: vec![good_span()],
                            ..ScopeSpans::default()
                        },
                    ],
                    ..ResourceSpans::default()
                },
            ],
        };
        let rejections = validate_traces(&mut request);
        assert_eq!(rejections.count, 5);
        assert_eq!(
            rejections.message,
            "resource 0: resource attribute values nested deeper than 32 levels; \
             scope 0 of resource 1: scope attribute values nested deeper than 32 levels"
        );
        // The emptied resource and scope groups are gone; the valid scope remains.
        assert_eq!(request.resource_spans.len(), 1);
        assert_eq!(request.resource_spans[0].scope_spans.len(), 1);
        assert_eq!(request.resource_spans[0].scope_spans[0].spans.len(), 1);
    }

    #[test]
    fn message_keeps_three_distinct_reasons() {
        let mut zero_trace = good_span();
        zero_trace.trace_id = vec![0; 16];
        let mut short_span = good_span();
        short_span.span_id = vec![1; 4];
        let mut long_parent = good_span();
        long_parent.parent_span_id = vec![1; 9];
        let mut late = good_span();
        late.end_time_unix_nano = u64::MAX;
        let mut request = traces(vec![
            zero_trace.clone(),
            good_span(),
            zero_trace,
            short_span,
            long_parent,
            late,
        ]);
        let rejections = validate_traces(&mut request);
        assert_eq!(rejections.count, 5);
        assert_eq!(
            rejections.message,
            "span 0 of scope 0: trace_id must not be all zero; \
             span 3 of scope 0: span_id must be 8 bytes, got 4; \
             span 4 of scope 0: parent_span_id must be empty or 8 bytes, got 9"
        );
        assert_eq!(
            request.resource_spans[0].scope_spans[0].spans,
            vec![good_span()]
        );
    }

    #[test]
    fn emptied_groups_are_dropped() {
        let mut bad = good_span();
        bad.span_id = vec![1];
        let mut request = traces(vec![bad]);
        let rejections = validate_traces(&mut request);
        assert_eq!(rejections.count, 1);
        assert!(request.resource_spans.is_empty());
    }

    fn number(time: u64) -> NumberDataPoint {
        NumberDataPoint {
            time_unix_nano: time,
            ..NumberDataPoint::default()
        }
    }

    fn metrics(metrics: Vec<Metric>) -> ExportMetricsServiceRequest {
        ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                scope_metrics: vec![ScopeMetrics {
                    metrics,
                    ..ScopeMetrics::default()
                }],
                ..ResourceMetrics::default()
            }],
        }
    }

    fn gauge(points: Vec<NumberDataPoint>) -> Metric {
        Metric {
            name: "g".to_owned(),
            data: Some(metric::Data::Gauge(Gauge {
                data_points: points,
            })),
            ..Metric::default()
        }
    }

    #[test]
    fn metric_time_rules() {
        let mut late_start = number(1);
        late_start.start_time_unix_nano = MAX_STORED_TIME_NANOS + 1;
        let mut request = metrics(vec![gauge(vec![number(1), number(u64::MAX), late_start])]);
        let rejections = validate_metrics(&mut request);
        assert_eq!(rejections.count, 2);
        assert_eq!(
            rejections.message,
            "data point 1 of metric 0 of scope 0: time_unix_nano exceeds i64::MAX; \
             data point 2 of metric 0 of scope 0: start_time_unix_nano exceeds i64::MAX"
        );
        assert_eq!(
            request.resource_metrics[0].scope_metrics[0].metrics[0],
            gauge(vec![number(1)])
        );
    }

    #[test]
    fn metric_nesting_rules_for_every_kind() {
        let kinds = vec![
            Metric {
                data: Some(metric::Data::Sum(Sum {
                    data_points: vec![NumberDataPoint {
                        attributes: deep(MAX_ANY_VALUE_DEPTH + 1),
                        ..NumberDataPoint::default()
                    }],
                    ..Sum::default()
                })),
                ..Metric::default()
            },
            Metric {
                data: Some(metric::Data::Histogram(Histogram {
                    data_points: vec![
                        HistogramDataPoint::default(),
                        HistogramDataPoint {
                            exemplars: vec![Exemplar {
                                filtered_attributes: deep(MAX_ANY_VALUE_DEPTH + 1),
                                ..Exemplar::default()
                            }],
                            ..HistogramDataPoint::default()
                        },
                    ],
                    ..Histogram::default()
                })),
                ..Metric::default()
            },
            Metric {
                data: Some(metric::Data::ExponentialHistogram(ExponentialHistogram {
                    data_points: vec![ExponentialHistogramDataPoint {
                        attributes: deep(MAX_ANY_VALUE_DEPTH + 1),
                        ..ExponentialHistogramDataPoint::default()
                    }],
                    ..ExponentialHistogram::default()
                })),
                ..Metric::default()
            },
            Metric {
                data: Some(metric::Data::Summary(Summary {
                    data_points: vec![
                        SummaryDataPoint {
                            time_unix_nano: u64::MAX,
                            ..SummaryDataPoint::default()
                        },
                        SummaryDataPoint {
                            attributes: deep(MAX_ANY_VALUE_DEPTH),
                            ..SummaryDataPoint::default()
                        },
                    ],
                })),
                ..Metric::default()
            },
        ];
        let mut request = metrics(kinds);
        let rejections = validate_metrics(&mut request);
        assert_eq!(rejections.count, 4);
        assert_eq!(
            rejections.message,
            "data point 0 of metric 0 of scope 0: attribute values nested deeper than 32 levels; \
             data point 1 of metric 1 of scope 0: exemplar 0: attribute values nested deeper than \
             32 levels; data point 0 of metric 3 of scope 0: time_unix_nano exceeds i64::MAX"
        );
        // Emptied metrics are dropped; the histogram and summary keep their valid point.
        let kept = &request.resource_metrics[0].scope_metrics[0].metrics;
        assert_eq!(kept.len(), 2);
        assert!(kept.iter().all(|m| point_count(m) == 1));
    }

    #[test]
    fn deep_metadata_resource_or_scope_rejects_all_points() {
        let mut deep_metadata = gauge(vec![number(1), number(2)]);
        deep_metadata.metadata = deep(MAX_ANY_VALUE_DEPTH + 1);
        let mut request = metrics(vec![deep_metadata, gauge(vec![number(3)])]);
        request.resource_metrics.push(ResourceMetrics {
            resource: Some(Resource {
                attributes: deep(MAX_ANY_VALUE_DEPTH + 1),
                ..Resource::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![gauge(vec![number(1); 3])],
                ..ScopeMetrics::default()
            }],
            ..ResourceMetrics::default()
        });
        request.resource_metrics.push(ResourceMetrics {
            scope_metrics: vec![ScopeMetrics {
                scope: Some(InstrumentationScope {
                    attributes: deep(MAX_ANY_VALUE_DEPTH + 1),
                    ..InstrumentationScope::default()
                }),
                metrics: vec![gauge(vec![number(1); 4])],
                ..ScopeMetrics::default()
            }],
            ..ResourceMetrics::default()
        });
        let rejections = validate_metrics(&mut request);
        assert_eq!(rejections.count, 9);
        assert_eq!(
            rejections.message,
            "metric 0 of scope 0 of resource 0: metadata attribute values nested deeper than 32 \
             levels; resource 1: resource attribute values nested deeper than 32 levels; scope 0 \
             of resource 2: scope attribute values nested deeper than 32 levels"
        );
        assert_eq!(request.resource_metrics.len(), 1);
        assert_eq!(
            request.resource_metrics[0].scope_metrics[0].metrics,
            vec![gauge(vec![number(3)])]
        );
    }

    #[test]
    fn valid_metrics_pass_untouched() {
        let mut request = metrics(vec![
            gauge(vec![number(MAX_STORED_TIME_NANOS)]),
            Metric::default(),
        ]);
        let original = request.clone();
        assert_eq!(validate_metrics(&mut request), Rejections::default());
        assert_eq!(request, original);
    }
}
