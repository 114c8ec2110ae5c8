//! Metrics: OTLP metric exports to rows of `metric_points`.

use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, BooleanBuilder, Float64Builder, Int32Builder, Int64Builder, ListBuilder, RecordBatch,
    StringBuilder, TimestampNanosecondBuilder, UInt32Builder, UInt64Builder,
};
use meshscope_proto::collector::metrics::v1::ExportMetricsServiceRequest;
use meshscope_proto::common::KeyValue;
use meshscope_proto::metrics::exponential_histogram_data_point::Buckets;
use meshscope_proto::metrics::summary_data_point::ValueAtQuantile;
use meshscope_proto::metrics::{Exemplar, Metric, metric, number_data_point};

use super::ConvertError;
use super::context::{
    self, ContextBuilders, EncodedResource, EncodedScope, append_optional, string_builder,
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
pub fn metrics_to_batch(request: &ExportMetricsServiceRequest) -> Result<RecordBatch, ConvertError> {
    let rows = request
        .resource_metrics
        .iter()
        .flat_map(|rm| &rm.scope_metrics)
        .flat_map(|sm| &sm.metrics)
        .map(point_count)
        .sum();
    let mut builders = MetricBuilders::with_capacity(rows);
    for rm in &request.resource_metrics {
        let resource = EncodedResource::new(rm.resource.as_ref(), &rm.schema_url, &mut builders.json)?;
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
                self.append_info(&info("sum", s.aggregation_temporality, Some(s.is_monotonic)))?;
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

    fn append_number(&mut self, p: &meshscope_proto::metrics::NumberDataPoint) -> Result<(), ConvertError> {
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
    fn append_point(&mut self, common: &PointCommon<'_>, v: &PointValues<'_>) -> Result<(), ConvertError> {
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
            ("metric_name", Arc::new(self.metric_name.finish()) as ArrayRef),
            ("metric_description", Arc::new(self.metric_description.finish())),
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
            ("exp_zero_threshold", Arc::new(self.exp_zero_threshold.finish())),
            ("exp_positive_offset", Arc::new(self.exp_positive_offset.finish())),
            (
                "exp_positive_bucket_counts",
                Arc::new(self.exp_positive_bucket_counts.finish()),
            ),
            ("exp_negative_offset", Arc::new(self.exp_negative_offset.finish())),
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
