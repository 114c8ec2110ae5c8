//! Trace search, and the service and operation lists that feed search forms.
//!
//! Search runs in two steps: find the newest traces with at least one span matching every filter, then
//! summarise each of those traces over all of its spans. Filters are built with the DataFrame API, never
//! by pasting user text into SQL.

use std::collections::{BTreeSet, HashMap};

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::{DataType, TimestampNanosecondType};
use datafusion::common::ScalarValue;
use datafusion::functions_aggregate::expr_fn::max;
use datafusion::logical_expr::Expr;
use datafusion::logical_expr::utils::conjunction;
use datafusion::prelude::{cast, col, lit, try_cast};
use meshscope_storage::schema::PROMOTED_SPAN_ATTRIBUTES;
use serde::Serialize;

use crate::engine::QueryEngine;
use crate::error::{QueryError, Result};
use crate::format::QueryResult;

/// What to look for; every given filter must hold for one span of a matching trace.
#[derive(Debug, Clone, Default)]
pub struct SearchRequest {
    /// Any of these services (empty: any service).
    pub services: Vec<String>,
    /// Exact span name.
    pub span_name: Option<String>,
    /// `key = value` on a span or resource attribute (promoted columns included).
    pub attributes: Vec<(String, String)>,
    /// Numeric comparisons on attributes (`http.response.status_code >= 500`); a value that is not a
    /// number never matches.
    pub comparisons: Vec<Comparison>,
    /// `unset`, `ok` or `error`.
    pub status: Option<String>,
    /// Minimum span duration, nanoseconds.
    pub min_duration_ns: Option<i64>,
    /// Maximum span duration, nanoseconds.
    pub max_duration_ns: Option<i64>,
    /// Earliest span start, Unix nanoseconds.
    pub start_ns: Option<i64>,
    /// Latest span start, Unix nanoseconds.
    pub end_ns: Option<i64>,
    /// Most traces to return.
    pub limit: usize,
}

/// A numeric comparison of an attribute with a constant.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    /// Attribute key (span or resource; promoted columns included).
    pub key: String,
    /// How to compare.
    pub op: CompareOp,
    /// The constant.
    pub value: f64,
}

/// The comparison operators search understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareOp {
    /// `<`
    Less,
    /// `<=`
    LessOrEqual,
    /// `>`
    Greater,
    /// `>=`
    GreaterOrEqual,
    /// `!=`
    NotEqual,
}

impl CompareOp {
    /// Parses `<`, `<=`, `>`, `>=` or `!=`.
    pub fn parse(text: &str) -> Option<CompareOp> {
        Some(match text {
            "<" => CompareOp::Less,
            "<=" => CompareOp::LessOrEqual,
            ">" => CompareOp::Greater,
            ">=" => CompareOp::GreaterOrEqual,
            "!=" => CompareOp::NotEqual,
            _ => return None,
        })
    }

    fn apply(self, left: Expr, right: Expr) -> Expr {
        match self {
            CompareOp::Less => left.lt(right),
            CompareOp::LessOrEqual => left.lt_eq(right),
            CompareOp::Greater => left.gt(right),
            CompareOp::GreaterOrEqual => left.gt_eq(right),
            CompareOp::NotEqual => left.not_eq(right),
        }
    }
}

/// One search hit.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TraceSummary {
    /// Trace id, hex.
    pub trace_id: String,
    /// Service of the root span (or of the earliest span when the root is missing).
    pub root_service: String,
    /// Name of that span.
    pub root_name: String,
    /// Earliest span start, Unix nanoseconds (a string, as in OTLP/JSON).
    pub start_time_unix_nano: String,
    /// Latest end minus earliest start.
    pub duration_ns: i64,
    /// Spans in the trace.
    pub span_count: usize,
    /// Spans with status error.
    pub error_count: usize,
    /// Services taking part, sorted.
    pub services: Vec<String>,
}

/// An operation (span name and kind) of a service.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Operation {
    /// Span name.
    pub name: String,
    /// Span kind.
    pub kind: String,
}

fn timestamp(nanos: i64) -> Expr {
    lit(ScalarValue::TimestampNanosecond(
        Some(nanos),
        Some("UTC".into()),
    ))
}

/// The filter matching one attribute: the promoted column when the key has one, else the JSON columns.
fn attribute_filter(key: &str, value: &str) -> Expr {
    let json = |column: &str| {
        Expr::ScalarFunction(datafusion::logical_expr::expr::ScalarFunction::new_udf(
            std::sync::Arc::new(crate::udf::attr_udf()),
            vec![col(column), lit(key)],
        ))
        .eq(lit(value))
    };
    let mut filter = json("attributes").or(json("resource_attributes"));
    if let Some((_, column, _)) = PROMOTED_SPAN_ATTRIBUTES
        .iter()
        .find(|(attribute, _, _)| *attribute == key)
    {
        filter = cast(col(*column), DataType::Utf8View)
            .eq(lit(value))
            .or(filter);
    }
    if key == "service.name" {
        filter = col("service_name").eq(lit(value)).or(filter);
    }
    filter
}

/// The filter for a numeric comparison: the promoted column when the key has one, else the attribute
/// text of the JSON columns read as a number (`try_cast`: text that is no number gives NULL, no match).
fn comparison_filter(comparison: &Comparison) -> Expr {
    let Comparison { key, op, value } = comparison;
    let number = |expr: Expr| try_cast(expr, DataType::Float64);
    let json = |column: &str| {
        op.apply(
            number(Expr::ScalarFunction(
                datafusion::logical_expr::expr::ScalarFunction::new_udf(
                    std::sync::Arc::new(crate::udf::attr_udf()),
                    vec![col(column), lit(key.as_str())],
                ),
            )),
            lit(*value),
        )
    };
    let mut filter = json("attributes").or(json("resource_attributes"));
    if let Some((_, column, _)) = PROMOTED_SPAN_ATTRIBUTES
        .iter()
        .find(|(attribute, _, _)| attribute == key)
    {
        filter = op.apply(number(col(*column)), lit(*value)).or(filter);
    }
    filter
}

impl SearchRequest {
    /// The filters of the request other than its time range, cheapest first: Parquet evaluates pushed
    /// filters in this order, each only on the rows that passed the ones before, so the attribute JSON
    /// is parsed only for spans of the right service, status, name and duration.
    fn filters(&self) -> Vec<Expr> {
        let mut filters = Vec::new();
        if !self.services.is_empty() {
            filters.push(col("service_name").in_list(
                self.services.iter().map(|s| lit(s.as_str())).collect(),
                false,
            ));
        }
        if let Some(min) = self.min_duration_ns {
            filters.push(col("duration_ns").gt_eq(lit(min)));
        }
        if let Some(max) = self.max_duration_ns {
            filters.push(col("duration_ns").lt_eq(lit(max)));
        }
        if let Some(status) = &self.status {
            filters.push(col("status_code").eq(lit(status.to_ascii_lowercase())));
        }
        if let Some(name) = &self.span_name {
            filters.push(col("name").eq(lit(name.as_str())));
        }
        for (key, value) in &self.attributes {
            filters.push(attribute_filter(key, value));
        }
        for comparison in &self.comparisons {
            filters.push(comparison_filter(comparison));
        }
        filters
    }
}

/// A part of the searched time range; slices are searched newest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Slice {
    /// Earliest start, inclusive.
    start: Option<i64>,
    /// Latest start, inclusive for the newest slice and exclusive for the others.
    end: Option<i64>,
    end_inclusive: bool,
}

impl Slice {
    fn filters(self) -> Vec<Expr> {
        let mut filters = Vec::new();
        if let Some(start) = self.start {
            filters.push(col("start_time").gt_eq(timestamp(start)));
        }
        if let Some(end) = self.end {
            let end = timestamp(end);
            filters.push(if self.end_inclusive {
                col("start_time").lt_eq(end)
            } else {
                col("start_time").lt(end)
            });
        }
        filters
    }
}

/// Parts the newest slice covers of a bounded range; each older slice is twice as long as the one after
/// it, so a range takes at most five passes: 1/16, 1/16, 1/8, 1/4 and 1/2 of it.
const FIRST_SLICE_PARTS: i64 = 16;

/// The time range of `request` cut into disjoint slices, newest first. Spans are stored clustered by
/// start minute, so a narrow slice reads few row groups; when the newest slice already
/// holds enough matching traces, the older ones are never read. An unbounded range is one slice.
fn slices(request: &SearchRequest) -> Vec<Slice> {
    let whole = Slice {
        start: request.start_ns,
        end: request.end_ns,
        end_inclusive: true,
    };
    let (Some(start), Some(end)) = (request.start_ns, request.end_ns) else {
        return vec![whole];
    };
    let length = end.saturating_sub(start);
    if length < FIRST_SLICE_PARTS {
        return vec![whole];
    }
    let mut slices = Vec::new();
    let mut upper = end;
    let mut covered = length / FIRST_SLICE_PARTS;
    while covered < length {
        let lower = end.saturating_sub(covered);
        slices.push(Slice {
            start: Some(lower),
            end: Some(upper),
            end_inclusive: upper == end,
        });
        upper = lower;
        covered = covered.saturating_mul(2);
    }
    slices.push(Slice {
        start: Some(start),
        end: Some(upper),
        end_inclusive: upper == end,
    });
    slices
}

impl QueryEngine {
    /// The newest traces matching `request`, summarised.
    pub async fn search(&self, request: &SearchRequest) -> Result<Vec<TraceSummary>> {
        let limit = request.limit.max(1);
        let mut ids: Vec<Vec<u8>> = Vec::new();
        for slice in slices(request) {
            for id in self.newest_matching(request, slice, limit).await? {
                if !ids.contains(&id) {
                    ids.push(id);
                }
            }
            if ids.len() >= limit {
                break;
            }
        }
        ids.truncate(limit);
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let members = ids
            .iter()
            .map(|id| lit(ScalarValue::Binary(Some(id.clone()))))
            .collect();
        let spans = self
            .context()
            .table("spans")
            .await?
            .filter(col("trace_id").in_list(members, false))?
            .select_columns(&[
                "trace_id",
                "parent_span_id",
                "service_name",
                "name",
                "start_time",
                "end_time",
                "status_code",
            ])?;
        let mut summaries = summarise(&self.collect(spans).await?)?;
        let rank: HashMap<String, usize> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| (hex::encode(id), i))
            .collect();
        summaries.sort_by_key(|summary| rank.get(&summary.trace_id).copied().unwrap_or(usize::MAX));
        Ok(summaries)
    }

    /// Ids of the (at most `limit`) traces with the newest span in `slice` matching `request`, newest
    /// first. A trace's rank is its newest matching span, so ranks from a newer slice all beat ranks
    /// from an older one, and the slices' lists concatenate into the ranking of the whole range.
    async fn newest_matching(
        &self,
        request: &SearchRequest,
        slice: Slice,
        limit: usize,
    ) -> Result<Vec<Vec<u8>>> {
        // Time bounds go right after the service filter: both are cheap, and time prunes row groups.
        let mut all = request.filters();
        let rest = all.split_off(usize::from(!request.services.is_empty()));
        all.extend(slice.filters());
        all.extend(rest);
        let mut matching = self.context().table("spans").await?;
        if let Some(filter) = conjunction(all) {
            matching = matching.filter(filter)?;
        }
        let newest = matching
            .aggregate(
                vec![col("trace_id")],
                vec![max(col("start_time")).alias("latest")],
            )?
            .sort(vec![col("latest").sort(false, false)])?
            .limit(0, Some(limit))?;
        binary_column(&self.collect(newest).await?, "trace_id")
    }

    /// Every service that has reported spans, sorted.
    pub async fn services(&self) -> Result<Vec<String>> {
        let frame = self
            .context()
            .table("spans")
            .await?
            .filter(col("service_name").is_not_null())?
            .aggregate(vec![col("service_name")], vec![])?
            .sort(vec![col("service_name").sort(true, false)])?;
        let result = self.collect(frame).await?;
        let mut services = Vec::new();
        for batch in &result.batches {
            services.extend(
                batch
                    .column(0)
                    .as_string_view()
                    .iter()
                    .flatten()
                    .map(str::to_owned),
            );
        }
        Ok(services)
    }

    /// The operations (name and kind) a service has reported, sorted.
    pub async fn operations(&self, service: &str) -> Result<Vec<Operation>> {
        let frame = self
            .context()
            .table("spans")
            .await?
            .filter(col("service_name").eq(lit(service)))?
            .aggregate(vec![col("name"), col("kind")], vec![])?;
        let result = self.collect(frame).await?;
        let mut operations = BTreeSet::new();
        for batch in &result.batches {
            let names = batch.column(0).as_string_view();
            let kinds = batch.column(1).as_string_view();
            for (name, kind) in names.iter().zip(kinds.iter()) {
                if let (Some(name), Some(kind)) = (name, kind) {
                    operations.insert(Operation {
                        name: name.to_owned(),
                        kind: kind.to_owned(),
                    });
                }
            }
        }
        Ok(operations.into_iter().collect())
    }
}

fn binary_column(result: &QueryResult, name: &str) -> Result<Vec<Vec<u8>>> {
    let mut values = Vec::new();
    for batch in &result.batches {
        let column = batch
            .column_by_name(name)
            .ok_or_else(|| QueryError::Internal(format!("search result lacks column {name}")))?;
        values.extend(
            column
                .as_binary::<i32>()
                .iter()
                .flatten()
                .map(<[u8]>::to_vec),
        );
    }
    Ok(values)
}

#[derive(Default)]
struct Accumulator {
    start: i64,
    end: i64,
    spans: usize,
    errors: usize,
    services: BTreeSet<String>,
    root: Option<(bool, i64, String, String)>,
}

/// Folds the spans of several traces into one summary per trace.
fn summarise(result: &QueryResult) -> Result<Vec<TraceSummary>> {
    let mut traces: HashMap<Vec<u8>, Accumulator> = HashMap::new();
    let missing = |name: &str| QueryError::Internal(format!("search result lacks column {name}"));
    for batch in &result.batches {
        let get = |name: &str| batch.column_by_name(name).ok_or_else(|| missing(name));
        let trace_ids = get("trace_id")?.as_binary::<i32>().clone();
        let parents = get("parent_span_id")?.as_binary::<i32>().clone();
        let services = get("service_name")?.as_string_view().clone();
        let names = get("name")?.as_string_view().clone();
        let starts = get("start_time")?
            .as_primitive::<TimestampNanosecondType>()
            .clone();
        let ends = get("end_time")?
            .as_primitive::<TimestampNanosecondType>()
            .clone();
        let statuses = get("status_code")?.as_string_view().clone();
        for row in 0..batch.num_rows() {
            let entry = traces
                .entry(trace_ids.value(row).to_vec())
                .or_insert_with(|| Accumulator {
                    start: i64::MAX,
                    end: i64::MIN,
                    ..Default::default()
                });
            let (start, end) = (starts.value(row), ends.value(row));
            entry.start = entry.start.min(start);
            entry.end = entry.end.max(end);
            entry.spans += 1;
            entry.errors += usize::from(statuses.value(row) == "error");
            let service = if services.is_null(row) {
                String::new()
            } else {
                services.value(row).to_owned()
            };
            if !service.is_empty() {
                entry.services.insert(service.clone());
            }
            // The root is the span without a parent; failing that, the earliest span.
            let is_root = parents.is_null(row) || parents.value(row).is_empty();
            let candidate = (is_root, start, service, names.value(row).to_owned());
            let better = match &entry.root {
                None => true,
                Some((root, root_start, _, _)) => {
                    (is_root && !root) || (is_root == *root && start < *root_start)
                }
            };
            if better {
                entry.root = Some(candidate);
            }
        }
    }
    Ok(traces
        .into_iter()
        .map(|(id, acc)| {
            let (_, _, root_service, root_name) = acc.root.unwrap_or_default();
            TraceSummary {
                trace_id: hex::encode(id),
                root_service,
                root_name,
                start_time_unix_nano: acc.start.to_string(),
                duration_ns: acc.end.saturating_sub(acc.start),
                span_count: acc.spans,
                error_count: acc.errors,
                services: acc.services.into_iter().collect(),
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(start: Option<i64>, end: Option<i64>) -> SearchRequest {
        SearchRequest {
            start_ns: start,
            end_ns: end,
            limit: 20,
            ..Default::default()
        }
    }

    #[test]
    fn a_bounded_range_is_cut_newest_first_into_doubling_slices() {
        let slices = slices(&request(Some(0), Some(1600)));
        let bounds: Vec<(Option<i64>, Option<i64>, bool)> = slices
            .iter()
            .map(|slice| (slice.start, slice.end, slice.end_inclusive))
            .collect();
        assert_eq!(
            bounds,
            vec![
                (Some(1500), Some(1600), true),
                (Some(1400), Some(1500), false),
                (Some(1200), Some(1400), false),
                (Some(800), Some(1200), false),
                (Some(0), Some(800), false),
            ]
        );
    }

    #[test]
    fn slices_cover_odd_and_huge_ranges_without_gaps() {
        for (start, end) in [(5, 1_000_003), (i64::MIN, i64::MAX), (-40, 17)] {
            let slices = slices(&request(Some(start), Some(end)));
            assert_eq!(slices[0].end, Some(end));
            assert!(slices[0].end_inclusive);
            assert_eq!(slices.last().and_then(|slice| slice.start), Some(start));
            for pair in slices.windows(2) {
                assert_eq!(pair[0].start, pair[1].end);
                assert!(!pair[1].end_inclusive);
            }
            assert!(slices.len() <= 6);
        }
    }

    #[test]
    fn unbounded_or_tiny_ranges_are_one_slice() {
        for (start, end) in [(None, Some(10)), (Some(10), None), (Some(0), Some(3))] {
            let slices = slices(&request(start, end));
            assert_eq!(
                slices,
                vec![Slice {
                    start,
                    end,
                    end_inclusive: true
                }]
            );
        }
    }
}
