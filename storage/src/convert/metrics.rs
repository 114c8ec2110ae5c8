//! Metrics: OTLP metric exports to rows of `metric_points`.

use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, ArrowPrimitiveType, BooleanBuilder, Float64Builder, Int32Builder, Int64Builder,
    ListBuilder, PrimitiveBuilder, RecordBatch, StringBuilder, TimestampNanosecondBuilder,
    UInt32Builder, UInt64Builder,
};
use meshscope_proto::collector::metrics::v1::ExportMetricsServiceRequest;
use meshscope_proto::common::KeyValue;
use meshscope_proto::metrics::exponential_histogram_data_point::Buckets;
use meshscope_proto::metrics::summary_data_point::ValueAtQuantile;
use meshscope_proto::metrics::{Exemplar, Metric, NumberDataPoint, metric, number_data_point};

use super::ConvertError;
use super::context::{
    self, ContextBuilders, EncodedResource, EncodedScope, append_optional_n, string_builder,
    timestamp_builder,
};
use super::json::{self, ExemplarsJson, KeyValuesJson};
use crate::schema::METRIC_POINTS_SCHEMA;

/// OTLP metrics export -> one RecordBatch with METRIC_POINTS_SCHEMA, one row per data point of every kind
/// (gauge, sum, histogram, exponential histogram, summary).
///
/// Rows follow the order of the request; a metric without data or without points gives no rows. Per
/// kind: gauge and sum points fill `value_double` or `value_int`; histograms fill `count`, `sum`, `min`,
/// `max`, `bucket_counts` and `explicit_bounds`; exponential histograms fill `count`, `sum`, `min`, `max`
/// and the `exp_*` columns (a missing bucket range leaves its offset and counts null); summaries fill
/// `count`, `sum`, `quantiles` and `quantile_values`. Other value columns are null. `aggregation_temporality`
/// is `delta`, `cumulative`, null when unspecified or not applicable, or the decimal number of an unknown
/// value; `is_monotonic` is set for sums only; a zero start time is stored as null.
pub fn metrics_to_batch(
    request: &ExportMetricsServiceRequest,
) -> Result<RecordBatch, ConvertError> {
    let rows = request
        .resource_metrics
        .iter()
        .flat_map(|rm| &rm.scope_metrics)
        .flat_map(|sm| &sm.metrics)
        .map(point_count)
        .sum();
    let mut builders = MetricBuilders::with_capacity(rows);
    for rm in &request.resource_metrics {
        let resource =
            EncodedResource::new(rm.resource.as_ref(), &rm.schema_url, &mut builders.json)?;
        for sm in &rm.scope_metrics {
            let scope_rows: usize = sm.metrics.iter().map(point_count).sum();
            if scope_rows == 0 {
                continue;
            }
            let scope = EncodedScope::new(sm.scope.as_ref(), &sm.schema_url, &mut builders.json)?;
            builders.context.append_n(&resource, &scope, scope_rows);
            for m in &sm.metrics {
                builders.append_metric(m)?;
            }
        }
    }
    builders.finish()
}

/// Number of data points (rows) of a metric.
fn point_count(metric: &Metric) -> usize {
    match &metric.data {
        Some(metric::Data::Gauge(g)) => g.data_points.len(),
        Some(metric::Data::Sum(s)) => s.data_points.len(),
        Some(metric::Data::Histogram(h)) => h.data_points.len(),
        Some(metric::Data::ExponentialHistogram(h)) => h.data_points.len(),
        Some(metric::Data::Summary(s)) => s.data_points.len(),
        None => 0,
    }
}

/// The metric-level columns, shared by all points of a metric.
struct MetricInfo<'a> {
    metric: &'a Metric,
    metric_type: &'static str,
    temporality: i32,
    is_monotonic: Option<bool>,
    points: usize,
}

/// The columns every data point fills.
struct PointCommon<'a> {
    attributes: &'a [KeyValue],
    start_time_unix_nano: u64,
    time_unix_nano: u64,
    flags: u32,
    exemplars: &'a [Exemplar],
}

/// The kind-specific value columns of a data point; `None` stores null.
#[derive(Default)]
struct PointValues<'a> {
    value_double: Option<f64>,
    value_int: Option<i64>,
    count: Option<u64>,
    sum: Option<f64>,
    min: Option<f64>,
    max: Option<f64>,
    bucket_counts: Option<&'a [u64]>,
    explicit_bounds: Option<&'a [f64]>,
    exp_scale: Option<i32>,
    exp_zero_count: Option<u64>,
    exp_zero_threshold: Option<f64>,
    exp_positive: Option<&'a Buckets>,
    exp_negative: Option<&'a Buckets>,
    quantiles: Option<&'a [ValueAtQuantile]>,
}

/// Column builders of `metric_points` (after the context columns), plus a reused JSON buffer.
struct MetricBuilders {
    context: ContextBuilders,
    metric_name: StringBuilder,
    metric_description: StringBuilder,
    metric_unit: StringBuilder,
    metric_metadata: StringBuilder,
    metric_type: StringBuilder,
    aggregation_temporality: StringBuilder,
    is_monotonic: BooleanBuilder,
    attributes: StringBuilder,
    start_time: TimestampNanosecondBuilder,
    time: TimestampNanosecondBuilder,
    flags: UInt32Builder,
    value_double: Float64Builder,
    value_int: Int64Builder,
    count: UInt64Builder,
    sum: Float64Builder,
    min: Float64Builder,
    max: Float64Builder,
    bucket_counts: ListBuilder<UInt64Builder>,
    explicit_bounds: ListBuilder<Float64Builder>,
    exp_scale: Int32Builder,
    exp_zero_count: UInt64Builder,
    exp_zero_threshold: Float64Builder,
    exp_positive_offset: Int32Builder,
    exp_positive_bucket_counts: ListBuilder<UInt64Builder>,
    exp_negative_offset: Int32Builder,
    exp_negative_bucket_counts: ListBuilder<UInt64Builder>,
    quantiles: ListBuilder<Float64Builder>,
    quantile_values: ListBuilder<Float64Builder>,
    exemplars: StringBuilder,
    json: Vec<u8>,
}

impl MetricBuilders {
    fn with_capacity(rows: usize) -> Self {
        Self {
            context: ContextBuilders::with_capacity(rows),
            metric_name: string_builder(rows),
            metric_description: string_builder(rows),
            metric_unit: string_builder(rows),
            metric_metadata: string_builder(rows),
            metric_type: string_builder(rows),
            aggregation_temporality: string_builder(rows),
            is_monotonic: BooleanBuilder::with_capacity(rows),
            attributes: StringBuilder::with_capacity(rows, rows * 128),
            start_time: timestamp_builder(rows),
            time: timestamp_builder(rows),
            flags: UInt32Builder::with_capacity(rows),
            value_double: Float64Builder::with_capacity(rows),
            value_int: Int64Builder::with_capacity(rows),
            count: UInt64Builder::with_capacity(rows),
            sum: Float64Builder::with_capacity(rows),
            min: Float64Builder::with_capacity(rows),
            max: Float64Builder::with_capacity(rows),
            bucket_counts: ListBuilder::with_capacity(UInt64Builder::new(), rows),
            explicit_bounds: ListBuilder::with_capacity(Float64Builder::new(), rows),
            exp_scale: Int32Builder::with_capacity(rows),
            exp_zero_count: UInt64Builder::with_capacity(rows),
            exp_zero_threshold: Float64Builder::with_capacity(rows),
            exp_positive_offset: Int32Builder::with_capacity(rows),
            exp_positive_bucket_counts: ListBuilder::with_capacity(UInt64Builder::new(), rows),
            exp_negative_offset: Int32Builder::with_capacity(rows),
            exp_negative_bucket_counts: ListBuilder::with_capacity(UInt64Builder::new(), rows),
            quantiles: ListBuilder::with_capacity(Float64Builder::new(), rows),
            quantile_values: ListBuilder::with_capacity(Float64Builder::new(), rows),
            exemplars: string_builder(rows),
            json: Vec::with_capacity(1024),
        }
    }

    /// Appends one row per data point of `m` (the context columns are appended per scope group).
    fn append_metric(&mut self, m: &Metric) -> Result<(), ConvertError> {
        let Some(data) = &m.data else {
            return Ok(());
        };
        let info = |metric_type, temporality, is_monotonic| MetricInfo {
            metric: m,
            metric_type,
            temporality,
            is_monotonic,
            points: point_count(m),
        };
        match data {
            metric::Data::Gauge(g) => {
                self.append_info(&info("gauge", 0, None))?;
                for p in &g.data_points {
                    self.append_number(p)?;
                }
            }
            metric::Data::Sum(s) => {
                self.append_info(&info(
                    "sum",
                    s.aggregation_temporality,
                    Some(s.is_monotonic),
                ))?;
                for p in &s.data_points {
                    self.append_number(p)?;
                }
            }
            metric::Data::Histogram(h) => {
                self.append_info(&info("histogram", h.aggregation_temporality, None))?;
                for p in &h.data_points {
                    let common = PointCommon {
                        attributes: &p.attributes,
                        start_time_unix_nano: p.start_time_unix_nano,
                        time_unix_nano: p.time_unix_nano,
                        flags: p.flags,
                        exemplars: &p.exemplars,
                    };
                    let values = PointValues {
                        count: Some(p.count),
                        sum: p.sum,
                        min: p.min,
                        max: p.max,
                        bucket_counts: Some(&p.bucket_counts),
                        explicit_bounds: Some(&p.explicit_bounds),
                        ..PointValues::default()
                    };
                    self.append_point(&common, &values)?;
                }
            }
            metric::Data::ExponentialHistogram(h) => {
                self.append_info(&info(
                    "exponential_histogram",
                    h.aggregation_temporality,
                    None,
                ))?;
                for p in &h.data_points {
                    let common = PointCommon {
                        attributes: &p.attributes,
                        start_time_unix_nano: p.start_time_unix_nano,
                        time_unix_nano: p.time_unix_nano,
                        flags: p.flags,
                        exemplars: &p.exemplars,
                    };
                    let values = PointValues {
                        count: Some(p.count),
                        sum: p.sum,
                        min: p.min,
                        max: p.max,
                        exp_scale: Some(p.scale),
                        exp_zero_count: Some(p.zero_count),
                        exp_zero_threshold: Some(p.zero_threshold),
                        exp_positive: p.positive.as_ref(),
                        exp_negative: p.negative.as_ref(),
                        ..PointValues::default()
                    };
                    self.append_point(&common, &values)?;
                }
            }
            metric::Data::Summary(s) => {
                self.append_info(&info("summary", 0, None))?;
                for p in &s.data_points {
                    let common = PointCommon {
                        attributes: &p.attributes,
                        start_time_unix_nano: p.start_time_unix_nano,
                        time_unix_nano: p.time_unix_nano,
                        flags: p.flags,
                        exemplars: &[],
                    };
                    let values = PointValues {
                        count: Some(p.count),
                        sum: Some(p.sum),
                        quantiles: Some(&p.quantile_values),
                        ..PointValues::default()
                    };
                    self.append_point(&common, &values)?;
                }
            }
        }
        Ok(())
    }

    /// Appends the metric-level columns for all points of a metric at once.
    fn append_info(&mut self, info: &MetricInfo<'_>) -> Result<(), ConvertError> {
        let (m, n) = (info.metric, info.points);
        self.metric_name.append_value_n(&m.name, n);
        append_optional_n(&mut self.metric_description, &m.description, n);
        append_optional_n(&mut self.metric_unit, &m.unit, n);
        json::encode_into(&mut self.json, &KeyValuesJson::all(&m.metadata))?;
        self.metric_metadata
            .append_value_n(json::as_text(&self.json)?, n);
        self.metric_type.append_value_n(info.metric_type, n);
        match info.temporality {
            0 => self.aggregation_temporality.append_nulls(n),
            1 => self.aggregation_temporality.append_value_n("delta", n),
            2 => self.aggregation_temporality.append_value_n("cumulative", n),
            other => self
                .aggregation_temporality
                .append_value_n(other.to_string(), n),
        }
        match info.is_monotonic {
            Some(monotonic) => self.is_monotonic.append_n(n, monotonic),
            None => self.is_monotonic.append_nulls(n),
        }
        Ok(())
    }

    fn append_number(&mut self, p: &NumberDataPoint) -> Result<(), ConvertError> {
        let common = PointCommon {
            attributes: &p.attributes,
            start_time_unix_nano: p.start_time_unix_nano,
            time_unix_nano: p.time_unix_nano,
            flags: p.flags,
            exemplars: &p.exemplars,
        };
        let values = match p.value {
            Some(number_data_point::Value::AsDouble(d)) => PointValues {
                value_double: Some(d),
                ..PointValues::default()
            },
            Some(number_data_point::Value::AsInt(i)) => PointValues {
                value_int: Some(i),
                ..PointValues::default()
            },
            None => PointValues::default(),
        };
        self.append_point(&common, &values)
    }

    /// Appends the point-level columns of one row.
    fn append_point(
        &mut self,
        common: &PointCommon<'_>,
        v: &PointValues<'_>,
    ) -> Result<(), ConvertError> {
        json::encode_into(&mut self.json, &KeyValuesJson::all(common.attributes))?;
        self.attributes.append_value(json::as_text(&self.json)?);
        let start = common.start_time_unix_nano;
        self.start_time
            .append_option((start != 0).then_some(start.cast_signed()));
        self.time.append_value(common.time_unix_nano.cast_signed());
        self.flags.append_value(common.flags);
        self.value_double.append_option(v.value_double);
        self.value_int.append_option(v.value_int);
        self.count.append_option(v.count);
        self.sum.append_option(v.sum);
        self.min.append_option(v.min);
        self.max.append_option(v.max);
        append_list(&mut self.bucket_counts, v.bucket_counts);
        append_list(&mut self.explicit_bounds, v.explicit_bounds);
        self.exp_scale.append_option(v.exp_scale);
        self.exp_zero_count.append_option(v.exp_zero_count);
        self.exp_zero_threshold.append_option(v.exp_zero_threshold);
        self.exp_positive_offset
            .append_option(v.exp_positive.map(|b| b.offset));
        append_list(
            &mut self.exp_positive_bucket_counts,
            v.exp_positive.map(|b| &b.bucket_counts[..]),
        );
        self.exp_negative_offset
            .append_option(v.exp_negative.map(|b| b.offset));
        append_list(
            &mut self.exp_negative_bucket_counts,
            v.exp_negative.map(|b| &b.bucket_counts[..]),
        );
        match v.quantiles {
            Some(quantiles) => {
                for q in quantiles {
                    self.quantiles.values().append_value(q.quantile);
                    self.quantile_values.values().append_value(q.value);
                }
                self.quantiles.append(true);
                self.quantile_values.append(true);
            }
            None => {
                self.quantiles.append_null();
                self.quantile_values.append_null();
            }
        }
        json::encode_into(&mut self.json, &ExemplarsJson(common.exemplars))?;
        self.exemplars.append_value(json::as_text(&self.json)?);
        Ok(())
    }

    fn finish(mut self) -> Result<RecordBatch, ConvertError> {
        let mut columns: Vec<(&'static str, ArrayRef)> =
            Vec::with_capacity(METRIC_POINTS_SCHEMA.fields().len());
        columns.extend(self.context.finish());
        columns.extend([
            (
                "metric_name",
                Arc::new(self.metric_name.finish()) as ArrayRef,
            ),
            (
                "metric_description",
                Arc::new(self.metric_description.finish()),
            ),
            ("metric_unit", Arc::new(self.metric_unit.finish())),
            ("metric_metadata", Arc::new(self.metric_metadata.finish())),
            ("metric_type", Arc::new(self.metric_type.finish())),
            (
                "aggregation_temporality",
                Arc::new(self.aggregation_temporality.finish()),
            ),
            ("is_monotonic", Arc::new(self.is_monotonic.finish())),
            ("attributes", Arc::new(self.attributes.finish())),
            ("start_time", Arc::new(self.start_time.finish())),
            ("time", Arc::new(self.time.finish())),
            ("flags", Arc::new(self.flags.finish())),
            ("value_double", Arc::new(self.value_double.finish())),
            ("value_int", Arc::new(self.value_int.finish())),
            ("count", Arc::new(self.count.finish())),
            ("sum", Arc::new(self.sum.finish())),
            ("min", Arc::new(self.min.finish())),
            ("max", Arc::new(self.max.finish())),
            ("bucket_counts", Arc::new(self.bucket_counts.finish())),
            ("explicit_bounds", Arc::new(self.explicit_bounds.finish())),
            ("exp_scale", Arc::new(self.exp_scale.finish())),
            ("exp_zero_count", Arc::new(self.exp_zero_count.finish())),
            (
                "exp_zero_threshold",
                Arc::new(self.exp_zero_threshold.finish()),
            ),
            (
                "exp_positive_offset",
                Arc::new(self.exp_positive_offset.finish()),
            ),
            (
                "exp_positive_bucket_counts",
                Arc::new(self.exp_positive_bucket_counts.finish()),
            ),
            (
                "exp_negative_offset",
                Arc::new(self.exp_negative_offset.finish()),
            ),
            (
                "exp_negative_bucket_counts",
                Arc::new(self.exp_negative_bucket_counts.finish()),
            ),
            ("quantiles", Arc::new(self.quantiles.finish())),
            ("quantile_values", Arc::new(self.quantile_values.finish())),
            ("exemplars", Arc::new(self.exemplars.finish())),
        ]);
        context::assemble(&METRIC_POINTS_SCHEMA, columns)
    }
}

/// Appends a list, or null.
fn append_list<T: ArrowPrimitiveType>(
    builder: &mut ListBuilder<PrimitiveBuilder<T>>,
    values: Option<&[T::Native]>,
) {
    match values {
        Some(values) => {
            builder.values().append_slice(values);
            builder.append(true);
        }
        None => builder.append_null(),
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{
        Array, BooleanArray, Float64Array, Int32Array, Int64Array, ListArray, StringArray,
        TimestampNanosecondArray, UInt32Array, UInt64Array,
    };
    use meshscope_proto::common::any_value::Value;
    use meshscope_proto::common::{AnyValue, InstrumentationScope};
    use meshscope_proto::metrics::{
        ExponentialHistogram, ExponentialHistogramDataPoint, Gauge, Histogram, HistogramDataPoint,
        ResourceMetrics, ScopeMetrics, Sum, Summary, SummaryDataPoint, exemplar,
    };
    use meshscope_proto::resource::Resource;

    use super::*;

    fn kv(key: &str, value: Value) -> KeyValue {
        KeyValue {
            key: key.to_owned(),
            value: Some(AnyValue { value: Some(value) }),
            key_strindex: 0,
        }
    }

    fn metric(name: &str, data: Option<metric::Data>) -> Metric {
        Metric {
            name: name.to_owned(),
            description: String::new(),
            unit: String::new(),
            metadata: Vec::new(),
            data,
        }
    }

    fn request() -> ExportMetricsServiceRequest {
        let gauge = Metric {
            description: "queue depth".to_owned(),
            unit: "{item}".to_owned(),
            metadata: vec![kv("meta", Value::BoolValue(true))],
            ..metric(
                "queue.depth",
                Some(metric::Data::Gauge(Gauge {
                    data_points: vec![
                        NumberDataPoint {
                            attributes: vec![kv("queue", Value::StringValue("a".to_owned()))],
                            start_time_unix_nano: 0,
                            time_unix_nano: 1_000,
                            exemplars: vec![Exemplar {
                                filtered_attributes: Vec::new(),
                                time_unix_nano: 999,
                                span_id: vec![1; 8],
                                trace_id: vec![2; 16],
                                value: Some(exemplar::Value::AsDouble(f64::NAN)),
                            }],
                            flags: 1,
                            value: Some(number_data_point::Value::AsDouble(2.5)),
                        },
                        NumberDataPoint {
                            time_unix_nano: 2_000,
                            value: Some(number_data_point::Value::AsInt(-7)),
                            ..NumberDataPoint::default()
                        },
                    ],
                })),
            )
        };
        let sum = metric(
            "requests",
            Some(metric::Data::Sum(Sum {
                data_points: vec![NumberDataPoint {
                    start_time_unix_nano: 500,
                    time_unix_nano: 3_000,
                    value: Some(number_data_point::Value::AsInt(10)),
                    ..NumberDataPoint::default()
                }],
                aggregation_temporality: 2,
                is_monotonic: true,
            })),
        );
        let histogram = metric(
            "latency",
            Some(metric::Data::Histogram(Histogram {
                data_points: vec![HistogramDataPoint {
                    start_time_unix_nano: 100,
                    time_unix_nano: 4_000,
                    count: 6,
                    sum: Some(12.5),
                    bucket_counts: vec![1, 2, 3],
                    explicit_bounds: vec![1.0, 5.0],
                    min: Some(0.5),
                    max: None,
                    ..HistogramDataPoint::default()
                }],
                aggregation_temporality: 1,
            })),
        );
        let exponential = metric(
            "latency.exp",
            Some(metric::Data::ExponentialHistogram(ExponentialHistogram {
                data_points: vec![ExponentialHistogramDataPoint {
                    time_unix_nano: 5_000,
                    count: 9,
                    sum: Some(3.0),
                    scale: -2,
                    zero_count: 1,
                    positive: Some(Buckets {
                        offset: 3,
                        bucket_counts: vec![4, 4],
                    }),
                    negative: None,
                    min: Some(-1.0),
                    max: Some(8.0),
                    zero_threshold: 0.001,
                    ..ExponentialHistogramDataPoint::default()
                }],
                aggregation_temporality: 7,
            })),
        );
        let summary = metric(
            "rtt",
            Some(metric::Data::Summary(Summary {
                data_points: vec![SummaryDataPoint {
                    time_unix_nano: 6_000,
                    count: 4,
                    sum: 10.0,
                    quantile_values: vec![
                        ValueAtQuantile {
                            quantile: 0.5,
                            value: 2.0,
                        },
                        ValueAtQuantile {
                            quantile: 0.99,
                            value: 4.0,
                        },
                    ],
                    ..SummaryDataPoint::default()
                }],
            })),
        );
        ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                resource: Some(Resource {
                    attributes: vec![kv("service.name", Value::StringValue("mesh".to_owned()))],
                    dropped_attributes_count: 0,
                    entity_refs: Vec::new(),
                }),
                scope_metrics: vec![
                    ScopeMetrics {
                        scope: Some(InstrumentationScope {
                            name: "meter".to_owned(),
                            ..InstrumentationScope::default()
                        }),
                        metrics: vec![
                            gauge,
                            metric("no.data", None),
                            sum,
                            histogram,
                            exponential,
                            summary,
                        ],
                        schema_url: String::new(),
                    },
                    ScopeMetrics {
                        metrics: vec![metric(
                            "no.points",
                            Some(metric::Data::Gauge(Gauge::default())),
                        )],
                        ..ScopeMetrics::default()
                    },
                ],
                schema_url: String::new(),
            }],
        }
    }

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    fn col<'a, T: 'static>(batch: &'a RecordBatch, name: &str) -> Result<&'a T, String> {
        batch
            .column_by_name(name)
            .and_then(|c| c.as_any().downcast_ref::<T>())
            .ok_or_else(|| format!("no column {name} of the expected type"))
    }

    fn strings(batch: &RecordBatch, name: &str) -> Result<Vec<Option<String>>, String> {
        let a = col::<StringArray>(batch, name)?;
        Ok((0..a.len())
            .map(|i| a.is_valid(i).then(|| a.value(i).to_owned()))
            .collect())
    }

    fn values<T, A: Array + 'static>(
        batch: &RecordBatch,
        name: &str,
        get: impl Fn(&A, usize) -> T,
    ) -> Result<Vec<Option<T>>, String> {
        let a = col::<A>(batch, name)?;
        Ok((0..a.len())
            .map(|i| a.is_valid(i).then(|| get(a, i)))
            .collect())
    }

    fn list<A: Array + 'static, T>(
        batch: &RecordBatch,
        name: &str,
        get: impl Fn(&A, usize) -> T,
    ) -> Result<Vec<Option<Vec<T>>>, String> {
        let a = col::<ListArray>(batch, name)?;
        let mut out = Vec::new();
        for i in 0..a.len() {
            if a.is_null(i) {
                out.push(None);
                continue;
            }
            let inner = a.value(i);
            let inner = inner
                .as_any()
                .downcast_ref::<A>()
                .ok_or_else(|| format!("unexpected item type in {name}"))?;
            out.push(Some((0..inner.len()).map(|j| get(inner, j)).collect()));
        }
        Ok(out)
    }

    #[test]
    fn every_kind_of_point() -> TestResult {
        let batch = metrics_to_batch(&request())?;
        assert_eq!(batch.schema(), *METRIC_POINTS_SCHEMA);
        assert_eq!(batch.num_rows(), 6);
        let s = |v: &str| Some(v.to_owned());

        assert_eq!(strings(&batch, "service_name")?, vec![s("mesh"); 6]);
        assert_eq!(strings(&batch, "resource_attributes")?, vec![s("[]"); 6]);
        assert_eq!(strings(&batch, "scope_name")?, vec![s("meter"); 6]);
        assert_eq!(
            strings(&batch, "metric_name")?,
            vec![
                s("queue.depth"),
                s("queue.depth"),
                s("requests"),
                s("latency"),
                s("latency.exp"),
                s("rtt")
            ]
        );
        assert_eq!(
            strings(&batch, "metric_type")?,
            vec![
                s("gauge"),
                s("gauge"),
                s("sum"),
                s("histogram"),
                s("exponential_histogram"),
                s("summary")
            ]
        );
        assert_eq!(
            strings(&batch, "metric_description")?,
            vec![s("queue depth"), s("queue depth"), None, None, None, None]
        );
        assert_eq!(strings(&batch, "metric_unit")?[0], s("{item}"));
        assert_eq!(strings(&batch, "metric_unit")?[2], None);
        assert_eq!(
            strings(&batch, "metric_metadata")?[0],
            s(r#"[{"key":"meta","value":{"boolValue":true}}]"#)
        );
        assert_eq!(strings(&batch, "metric_metadata")?[2], s("[]"));
        assert_eq!(
            strings(&batch, "aggregation_temporality")?,
            vec![None, None, s("cumulative"), s("delta"), s("7"), None]
        );
        assert_eq!(
            values(&batch, "is_monotonic", BooleanArray::value)?,
            vec![None, None, Some(true), None, None, None]
        );
        assert_eq!(
            strings(&batch, "attributes")?[0],
            s(r#"[{"key":"queue","value":{"stringValue":"a"}}]"#)
        );
        assert_eq!(strings(&batch, "attributes")?[1], s("[]"));
        assert_eq!(
            values(&batch, "start_time", TimestampNanosecondArray::value)?,
            vec![None, None, Some(500), Some(100), None, None]
        );
        assert_eq!(
            values(&batch, "time", TimestampNanosecondArray::value)?,
            vec![
                Some(1_000),
                Some(2_000),
                Some(3_000),
                Some(4_000),
                Some(5_000),
                Some(6_000)
            ]
        );
        assert_eq!(
            values(&batch, "flags", UInt32Array::value)?,
            vec![Some(1), Some(0), Some(0), Some(0), Some(0), Some(0)]
        );
        assert_eq!(
            values(&batch, "value_double", Float64Array::value)?,
            vec![Some(2.5), None, None, None, None, None]
        );
        assert_eq!(
            values(&batch, "value_int", Int64Array::value)?,
            vec![None, Some(-7), Some(10), None, None, None]
        );
        assert_eq!(
            values(&batch, "count", UInt64Array::value)?,
            vec![None, None, None, Some(6), Some(9), Some(4)]
        );
        assert_eq!(
            values(&batch, "sum", Float64Array::value)?,
            vec![None, None, None, Some(12.5), Some(3.0), Some(10.0)]
        );
        assert_eq!(
            values(&batch, "min", Float64Array::value)?,
            vec![None, None, None, Some(0.5), Some(-1.0), None]
        );
        assert_eq!(
            values(&batch, "max", Float64Array::value)?,
            vec![None, None, None, None, Some(8.0), None]
        );
        assert_eq!(
            list(&batch, "bucket_counts", UInt64Array::value)?,
            vec![None, None, None, Some(vec![1, 2, 3]), None, None]
        );
        assert_eq!(
            list(&batch, "explicit_bounds", Float64Array::value)?,
            vec![None, None, None, Some(vec![1.0, 5.0]), None, None]
        );
        assert_eq!(
            values(&batch, "exp_scale", Int32Array::value)?,
            vec![None, None, None, None, Some(-2), None]
        );
        assert_eq!(
            values(&batch, "exp_zero_count", UInt64Array::value)?[4],
            Some(1)
        );
        assert_eq!(
            values(&batch, "exp_zero_threshold", Float64Array::value)?[4],
            Some(0.001)
        );
        assert_eq!(
            values(&batch, "exp_positive_offset", Int32Array::value)?,
            vec![None, None, None, None, Some(3), None]
        );
        assert_eq!(
            list(&batch, "exp_positive_bucket_counts", UInt64Array::value)?[4],
            Some(vec![4, 4])
        );
        assert_eq!(
            values(&batch, "exp_negative_offset", Int32Array::value)?[4],
            None
        );
        assert_eq!(
            list(&batch, "exp_negative_bucket_counts", UInt64Array::value)?[4],
            None
        );
        assert_eq!(
            list(&batch, "quantiles", Float64Array::value)?,
            vec![None, None, None, None, None, Some(vec![0.5, 0.99])]
        );
        assert_eq!(
            list(&batch, "quantile_values", Float64Array::value)?,
            vec![None, None, None, None, None, Some(vec![2.0, 4.0])]
        );
        let exemplars = strings(&batch, "exemplars")?;
        assert_eq!(
            exemplars[0],
            s(concat!(
                r#"[{"filteredAttributes":[],"timeUnixNano":"999","#,
                r#""spanId":"0101010101010101","traceId":"02020202020202020202020202020202","#,
                r#""asDouble":"NaN"}]"#
            ))
        );
        assert_eq!(exemplars[1..], vec![s("[]"); 5][..]);
        Ok(())
    }

    #[test]
    fn no_points_no_rows() -> TestResult {
        let batch = metrics_to_batch(&ExportMetricsServiceRequest::default())?;
        assert_eq!(batch.num_rows(), 0);
        assert_eq!(batch.schema(), *METRIC_POINTS_SCHEMA);
        Ok(())
    }
}
