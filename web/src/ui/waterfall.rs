//! The model of the trace view, computed once on the server: rows of the waterfall, the critical
//! path, self time, and statistics per service and operation. No I/O, so it is tested with plain
//! spans and timed on 10,000 of them.

use std::collections::{BTreeMap, HashMap};

use meshscope_proto::common::any_value::Value;
use meshscope_proto::resource::Resource;
use meshscope_query::TraceSpan;

use crate::format;

/// What the waterfall needs of one span, whatever its source.
#[derive(Debug, Clone, PartialEq)]
pub struct SpanTimes {
    /// Span id, hex.
    pub id: String,
    /// Index of the parent span in the list, when it is in the trace.
    pub parent: Option<usize>,
    /// Depth in the tree.
    pub depth: usize,
    /// Service name.
    pub service: String,
    /// Span name.
    pub name: String,
    /// Start, Unix nanoseconds.
    pub start: i64,
    /// End, Unix nanoseconds.
    pub end: i64,
    /// Status is error.
    pub error: bool,
}

/// One line of the waterfall.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// Span id, hex.
    pub id: String,
    /// Depth in the tree (indentation).
    pub depth: usize,
    /// Indentation in pixels; capped so very deep traces stay on screen.
    pub indent: usize,
    /// Service name.
    pub service: String,
    /// Index of the service's colour class.
    pub colour: usize,
    /// Span name.
    pub name: String,
    /// Bar start, percent of the trace.
    pub left: String,
    /// Bar width, percent of the trace.
    pub width: String,
    /// Duration, readable.
    pub duration: String,
    /// Status is error.
    pub error: bool,
    /// On the critical path.
    pub critical: bool,
    /// Has child spans (shows the collapse toggle).
    pub has_children: bool,
}

/// Count, total and self time of one service or operation in the trace.
#[derive(Debug, Clone, PartialEq)]
pub struct Stat {
    /// Service.
    pub service: String,
    /// Operation (span name); empty for a per-service line.
    pub operation: String,
    /// Spans.
    pub count: usize,
    /// Spans with status error.
    pub errors: usize,
    /// Sum of durations, readable.
    pub total: String,
    /// Sum of self times (time not covered by a child), readable.
    pub self_time: String,
    /// Self time in nanoseconds, for ordering.
    pub self_ns: i64,
}

/// Everything the trace page draws.
#[derive(Debug, Clone, PartialEq)]
pub struct Waterfall {
    /// Rows in tree order.
    pub rows: Vec<Row>,
    /// Services in colour-class order, with their colour.
    pub services: Vec<(String, String)>,
    /// Per service, then per service and operation, by self time.
    pub by_service: Vec<Stat>,
    /// Per service and operation, by self time.
    pub by_operation: Vec<Stat>,
    /// Earliest start, Unix nanoseconds.
    pub start: i64,
    /// Latest end minus earliest start.
    pub duration_ns: i64,
    /// Spans with status error.
    pub errors: usize,
    /// Deepest depth.
    pub max_depth: usize,
}

/// The `service.name` of a resource, or empty.
pub fn service_of(resource: &Resource) -> String {
    resource
        .attributes
        .iter()
        .find(|kv| kv.key == "service.name")
        .and_then(|kv| kv.value.as_ref())
        .and_then(|value| match &value.value {
            Some(Value::StringValue(name)) => Some(name.clone()),
            _ => None,
        })
        .unwrap_or_default()
}

/// The waterfall inputs of stored spans in tree order.
pub fn times(spans: &[TraceSpan]) -> Vec<SpanTimes> {
    let index: HashMap<&[u8], usize> = spans
        .iter()
        .enumerate()
        .map(|(i, s)| (s.stored.span.span_id.as_slice(), i))
        .collect();
    spans
        .iter()
        .map(|s| {
            let span = &s.stored.span;
            SpanTimes {
                id: hex::encode(&span.span_id),
                parent: index.get(span.parent_span_id.as_slice()).copied(),
                depth: s.depth,
                service: service_of(&s.stored.resource),
                name: span.name.clone(),
                start: span.start_time_unix_nano as i64,
                end: (span.end_time_unix_nano as i64).max(span.start_time_unix_nano as i64),
                error: span.status.as_ref().is_some_and(|status| status.code == 2),
            }
        })
        .collect()
}

const INDENT_PX: usize = 12;
const MAX_INDENT_DEPTH: usize = 40;

/// Lays out the waterfall of spans given in tree order.
pub fn layout(spans: &[SpanTimes]) -> Waterfall {
    let start = spans.iter().map(|s| s.start).min().unwrap_or(0);
    let end = spans.iter().map(|s| s.end).max().unwrap_or(start);
    let total = (end - start).max(1) as f64;
    let mut children: Vec<Vec<usize>> = vec![Vec::new(); spans.len()];
    for (i, span) in spans.iter().enumerate() {
        if let Some(parent) = span.parent.filter(|&p| p != i) {
            children[parent].push(i);
        }
    }
    let critical = critical_path(spans, &children);
    let self_ns: Vec<i64> = (0..spans.len())
        .map(|i| self_time(&spans[i], &children[i], spans))
        .collect();
    let mut colours: Vec<(String, String)> = Vec::new();
    let mut colour_of: HashMap<&str, usize> = HashMap::new();
    for span in spans {
        colour_of.entry(span.service.as_str()).or_insert_with(|| {
            colours.push((span.service.clone(), format::service_colour(&span.service)));
            colours.len() - 1
        });
    }
    let rows = spans
        .iter()
        .enumerate()
        .map(|(i, s)| Row {
            id: s.id.clone(),
            depth: s.depth,
            indent: s.depth.min(MAX_INDENT_DEPTH) * INDENT_PX,
            service: s.service.clone(),
            colour: colour_of.get(s.service.as_str()).copied().unwrap_or(0),
            name: s.name.clone(),
            left: format!("{:.3}", (s.start - start) as f64 / total * 100.0),
            width: format!(
                "{:.3}",
                ((s.end - s.start) as f64 / total * 100.0).max(0.05)
            ),
            duration: format::duration((s.end - s.start) as f64),
            error: s.error,
            critical: critical[i],
            has_children: !children[i].is_empty(),
        })
        .collect();
    Waterfall {
        rows,
        services: colours,
        by_service: stats(spans, &self_ns, false),
        by_operation: stats(spans, &self_ns, true),
        start,
        duration_ns: end - start,
        errors: spans.iter().filter(|s| s.error).count(),
        max_depth: spans.iter().map(|s| s.depth).max().unwrap_or(0),
    }
}

/// The rows as compact JSON for `trace.js`, which draws the rows in view from it:
/// `{"services": [name…], "rows": [[id, depth, indent, colour, name, left, width, duration, flags]…]}`
/// where `colour` indexes `services` and `flags` is 1 error | 2 critical | 4 has children. Every `<`
/// is written as `\u003c`, so the text can sit in a `<script type="application/json">` element
/// unescaped: no span name can end the element.
pub fn rows_json(rows: &[Row], services: &[(String, String)]) -> String {
    type Compact<'a> = (
        &'a str,
        usize,
        usize,
        usize,
        &'a str,
        &'a str,
        &'a str,
        &'a str,
        u8,
    );
    let rows: Vec<Compact> = rows
        .iter()
        .map(|r| {
            (
                r.id.as_str(),
                r.depth,
                r.indent,
                r.colour,
                r.name.as_str(),
                r.left.as_str(),
                r.width.as_str(),
                r.duration.as_str(),
                u8::from(r.error) | (u8::from(r.critical) << 1) | (u8::from(r.has_children) << 2),
            )
        })
        .collect();
    let services: Vec<&str> = services.iter().map(|(name, _)| name.as_str()).collect();
    serde_json::json!({ "services": services, "rows": rows })
        .to_string()
        .replace('<', "\\u003c")
}

/// Marks the spans on the critical path: from each root, walk back from its end through the child
/// that finished last by the cursor, then the one that finished last by the time that child started,
/// and so on, descending into each chosen child the same way. A child still running when a later one
/// started is not on the path: the parent was waiting for the later one. Iterative, as traces can be
/// very deep.
fn critical_path(spans: &[SpanTimes], children: &[Vec<usize>]) -> Vec<bool> {
    let mut on_path = vec![false; spans.len()];
    let mut stack: Vec<(usize, i64)> = spans
        .iter()
        .enumerate()
        .filter(|(_, s)| s.parent.is_none())
        .map(|(i, s)| (i, s.end))
        .collect();
    while let Some((i, limit)) = stack.pop() {
        if std::mem::replace(&mut on_path[i], true) {
            continue;
        }
        let span = &spans[i];
        let mut cursor = span.end.min(limit);
        let mut kids = children[i].clone();
        kids.sort_by_key(|&k| std::cmp::Reverse(spans[k].end));
        for k in kids {
            let kid = &spans[k];
            if kid.end <= cursor && kid.end > span.start {
                stack.push((k, cursor));
                cursor = kid.start;
            }
        }
    }
    on_path
}

/// The part of a span's time that none of its children covers.
fn self_time(span: &SpanTimes, kids: &[usize], spans: &[SpanTimes]) -> i64 {
    let mut covered: Vec<(i64, i64)> = kids
        .iter()
        .map(|&k| (spans[k].start.max(span.start), spans[k].end.min(span.end)))
        .filter(|(a, b)| b > a)
        .collect();
    covered.sort_unstable();
    let mut busy = 0;
    let mut reach = span.start;
    for (a, b) in covered {
        let a = a.max(reach);
        if b > a {
            busy += b - a;
            reach = b;
        }
    }
    (span.end - span.start) - busy
}

fn stats(spans: &[SpanTimes], self_ns: &[i64], per_operation: bool) -> Vec<Stat> {
    let mut groups: BTreeMap<(&str, &str), (usize, usize, i64, i64)> = BTreeMap::new();
    for (span, own) in spans.iter().zip(self_ns) {
        let operation = if per_operation {
            span.name.as_str()
        } else {
            ""
        };
        let entry = groups
            .entry((span.service.as_str(), operation))
            .or_default();
        entry.0 += 1;
        entry.1 += usize::from(span.error);
        entry.2 += span.end - span.start;
        entry.3 += own;
    }
    let mut out: Vec<Stat> = groups
        .into_iter()
        .map(|((service, operation), (count, errors, total, own))| Stat {
            service: service.to_owned(),
            operation: operation.to_owned(),
            count,
            errors,
            total: format::duration(total as f64),
            self_time: format::duration(own as f64),
            self_ns: own,
        })
        .collect();
    out.sort_by_key(|stat| std::cmp::Reverse(stat.self_ns));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(id: &str, parent: Option<usize>, depth: usize, start: i64, end: i64) -> SpanTimes {
        SpanTimes {
            id: id.to_owned(),
            parent,
            depth,
            service: if depth == 0 { "front" } else { "back" }.to_owned(),
            name: id.to_owned(),
            start,
            end,
            error: id == "c",
        }
    }

    /// root [0,100] with a [10,40], b [30,90] (parallel to a), c [92,95] after b.
    fn trace() -> Vec<SpanTimes> {
        vec![
            span("root", None, 0, 0, 100),
            span("a", Some(0), 1, 10, 40),
            span("b", Some(0), 1, 30, 90),
            span("c", Some(0), 1, 92, 95),
        ]
    }

    #[test]
    fn critical_path_follows_the_last_finisher() {
        let waterfall = layout(&trace());
        let critical: Vec<&str> = waterfall
            .rows
            .iter()
            .filter(|r| r.critical)
            .map(|r| r.id.as_str())
            .collect();
        assert_eq!(critical, vec!["root", "b", "c"]);
    }

    #[test]
    fn self_time_excludes_children_once() {
        let spans = trace();
        // Children cover [10,90] and [92,95]: 83 of the root's 100.
        assert_eq!(self_time(&spans[0], &[1, 2, 3], &spans), 17);
        let waterfall = layout(&spans);
        let back = waterfall
            .by_service
            .iter()
            .find(|s| s.service == "back")
            .unwrap();
        assert_eq!((back.count, back.errors, back.self_ns), (3, 1, 93));
    }

    #[test]
    fn bars_are_placed_in_percent() {
        let waterfall = layout(&trace());
        assert_eq!(waterfall.rows[2].left, "30.000");
        assert_eq!(waterfall.rows[2].width, "60.000");
        assert!(waterfall.rows[0].has_children && !waterfall.rows[1].has_children);
        assert_eq!(waterfall.errors, 1);
    }

    #[test]
    fn rows_json_is_compact_and_cannot_close_its_script_element() {
        let mut spans = trace();
        spans[3].name = "</script><script>alert(1)</script>".to_owned();
        let waterfall = layout(&spans);
        let json = rows_json(&waterfall.rows[2..], &waterfall.services);
        assert!(!json.contains('<'), "{json}");
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(value["services"], serde_json::json!(["front", "back"]));
        assert_eq!(
            value["rows"][0],
            serde_json::json!([
                "b",
                1,
                12,
                1,
                "b",
                "30.000",
                "60.000",
                waterfall.rows[2].duration,
                2
            ])
        );
        assert_eq!(value["rows"][1][4], "</script><script>alert(1)</script>");
        assert_eq!(value["rows"][1][8], 3);
    }

    #[test]
    fn a_chain_of_ten_thousand_spans_lays_out() {
        let spans: Vec<SpanTimes> = (0..10_000_usize)
            .map(|i| {
                span(
                    &i.to_string(),
                    i.checked_sub(1),
                    i,
                    i as i64,
                    20_000 - i as i64,
                )
            })
            .collect();
        let waterfall = layout(&spans);
        assert_eq!(waterfall.rows.len(), 10_000);
        assert!(waterfall.rows.iter().all(|r| r.critical));
        assert_eq!(waterfall.rows[9_999].indent, MAX_INDENT_DEPTH * INDENT_PX);
    }
}
