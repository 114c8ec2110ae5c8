//! Trace lookups and search over a real store on disk: several flushed files, then compaction. Checks
//! that the trace-id index answers lookups exactly (every span, nothing else), forgets files compaction
//! replaced, and that search over time slices returns the same newest traces as a full scan would.

use std::path::PathBuf;
use std::sync::Arc;

use meshscope_proto::collector::trace::v1::ExportTraceServiceRequest;
use meshscope_proto::common::{AnyValue, KeyValue, any_value};
use meshscope_proto::resource::Resource;
use meshscope_proto::trace::{ResourceSpans, ScopeSpans, Span};
use meshscope_query::{QueryEngine, QueryLimits, SearchRequest};
use meshscope_storage::convert::spans_to_batch;
use meshscope_storage::wal::RecordKind;
use meshscope_storage::{Store, StoreOptions};
use prost::Message;

const SERVICES: [&str; 3] = ["cart", "frontend", "payment"];
const SECOND: u64 = 1_000_000_000;

fn temp_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("meshscope-lookups-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn string(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        ..Default::default()
    }
}

fn trace_id(trace: u32) -> Vec<u8> {
    // Spread over the id space, so traces interleave with one another in the sorted files.
    let mixed = trace.wrapping_mul(2_654_435_761);
    [mixed.to_be_bytes(), trace.to_be_bytes(), [7; 4], [9; 4]].concat()
}

/// Trace `trace`: one span per service, starting at `start`, 20 ms long; the frontend span of every
/// third trace carries `user_agent.original = okhttp`.
fn trace(trace: u32, start: u64) -> ExportTraceServiceRequest {
    let resource_spans = SERVICES
        .iter()
        .enumerate()
        .map(|(i, service)| {
            let agent = if trace.is_multiple_of(3) {
                "okhttp"
            } else {
                "curl"
            };
            let span = Span {
                trace_id: trace_id(trace),
                span_id: [trace.to_be_bytes(), (i as u32 + 1).to_be_bytes()].concat(),
                parent_span_id: if i == 0 {
                    Vec::new()
                } else {
                    [trace.to_be_bytes(), 1u32.to_be_bytes()].concat()
                },
                name: format!("{service}-op"),
                start_time_unix_nano: start + i as u64,
                end_time_unix_nano: start + i as u64 + 20_000_000,
                attributes: vec![string("user_agent.original", agent)],
                ..Default::default()
            };
            ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![string("service.name", service)],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans: vec![span],
                    ..Default::default()
                }],
                ..Default::default()
            }
        })
        .collect();
    ExportTraceServiceRequest { resource_spans }
}

async fn append(store: &Store, request: &ExportTraceServiceRequest) {
    let batch = spans_to_batch(request).expect("convert");
    store
        .append(RecordKind::Traces, request.encode_to_vec(), batch)
        .await
        .expect("append");
}

/// The start of a whole hour a few hours ago, so every trace lands in one partition.
fn hour_start() -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    (now / 3600 - 3) * 3600 * SECOND
}

/// A store holding `traces` traces one second apart from `base`, written as `files` flushed files.
async fn store_with(traces: u32, files: u32, base: u64) -> (Arc<Store>, PathBuf) {
    let dir = temp_dir();
    let mut options = StoreOptions::new(&dir);
    options.compaction_min_files = 2;
    let store = Store::open(options).await.expect("open");
    for t in 0..traces {
        append(&store, &trace(t, base + u64::from(t) * SECOND)).await;
        if (t + 1).is_multiple_of(traces / files) {
            store.flush().await.expect("flush");
        }
    }
    store.flush().await.expect("flush");
    (store, dir)
}

fn span_ids(spans: &[meshscope_query::TraceSpan]) -> Vec<Vec<u8>> {
    let mut ids: Vec<Vec<u8>> = spans
        .iter()
        .map(|s| s.stored.span.span_id.clone())
        .collect();
    ids.sort();
    ids
}

fn expected_span_ids(trace: u32) -> Vec<Vec<u8>> {
    (1..=SERVICES.len() as u32)
        .map(|i| [trace.to_be_bytes(), i.to_be_bytes()].concat())
        .collect()
}

/// The one number a `SELECT count(*) …` answers.
async fn count(engine: &QueryEngine, sql: &str) -> i64 {
    let result = engine.sql(sql).await.expect("sql");
    result.batches[0]
        .column(0)
        .as_any()
        .downcast_ref::<datafusion::arrow::array::Int64Array>()
        .expect("count")
        .value(0)
}

/// Asserts that `spans` spans are stored and that `end_time − start_time` of each, read through SQL, is
/// the 20 ms every test trace's spans were sent with. `end_time` is asked for first and a stored column
/// sits between the two, so the scan must compute the derived column and keep the asked order.
async fn assert_every_span_lasts_20ms(engine: &QueryEngine, spans: usize, stage: &str) {
    let nanos = |array: &dyn datafusion::arrow::array::Array| -> Vec<i64> {
        array
            .as_any()
            .downcast_ref::<datafusion::arrow::array::TimestampNanosecondArray>()
            .expect("timestamps")
            .values()
            .to_vec()
    };
    let rows = engine
        .sql("SELECT end_time, name, start_time FROM spans")
        .await
        .expect("sql");
    let mut durations = Vec::new();
    for batch in &rows.batches {
        let (ends, starts) = (nanos(batch.column(0)), nanos(batch.column(2)));
        durations.extend(ends.iter().zip(&starts).map(|(end, start)| end - start));
    }
    assert_eq!(durations.len(), spans, "{stage}");
    assert!(
        durations.iter().all(|d| *d == 20_000_000),
        "{stage}: every span was sent 20 ms long"
    );
}

#[tokio::test]
async fn trace_lookups_are_exact_and_the_index_forgets_compacted_files() {
    let (store, dir) = store_with(120, 4, hour_start()).await;
    let engine = QueryEngine::new(store.clone(), QueryLimits::default()).expect("engine");
    assert_eq!(store.manifest().files.len(), 4);

    for t in [0, 41, 77, 119] {
        let spans = engine.trace(&trace_id(t)).await.expect("trace");
        assert_eq!(span_ids(&spans), expected_span_ids(t), "trace {t}");
    }
    assert!(
        engine
            .trace(&trace_id(999))
            .await
            .expect("trace")
            .is_empty()
    );
    assert_eq!(store.trace_index().files(), 4);
    assert!(store.trace_index().bytes() > 0);

    let merged = store.compact().await.expect("compact");
    assert_eq!(merged, 4);
    assert_eq!(
        store.trace_index().files(),
        0,
        "entries of replaced files must go when the manifest drops them"
    );
    assert_eq!(store.trace_index().bytes(), 0);
    for t in [3, 64, 118] {
        let spans = engine.trace(&trace_id(t)).await.expect("trace");
        assert_eq!(
            span_ids(&spans),
            expected_span_ids(t),
            "trace {t} after compaction"
        );
    }
    assert_eq!(store.trace_index().files(), 1);

    let sql = format!(
        "SELECT count(*) AS n FROM spans WHERE trace_id IN (unhex_id('{}'), unhex_id('{}'))",
        hex::encode(trace_id(5)),
        hex::encode(trace_id(6))
    );
    assert_eq!(count(&engine, &sql).await, 2 * SERVICES.len() as i64);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn search_over_time_slices_returns_the_newest_matching_traces() {
    let base = hour_start();
    let (store, dir) = store_with(300, 3, base).await;
    let engine = QueryEngine::new(store, QueryLimits::default()).expect("engine");
    let request = |limit: usize, start: u64, end: u64| SearchRequest {
        services: vec!["frontend".into()],
        attributes: vec![("user_agent.original".into(), "okhttp".into())],
        min_duration_ns: Some(10_000_000),
        start_ns: Some(start as i64),
        end_ns: Some(end as i64),
        limit,
        ..Default::default()
    };
    // Traces 0..300 start one second apart; every third matches. Newest first, as a full scan ranks them.
    let newest = |limit: usize, last: u32| -> Vec<String> {
        (0..=last)
            .rev()
            .filter(|t| t.is_multiple_of(3))
            .take(limit)
            .map(|t| hex::encode(trace_id(t)))
            .collect()
    };
    let cases = [
        // The newest slice alone holds enough matches.
        (5, base, base + 299 * SECOND, 297),
        // Matches must be gathered from every slice, down to the oldest.
        (100, base, base + 299 * SECOND, 297),
        // The range ends before the newest traces; the end is inclusive.
        (20, base + 10 * SECOND, base + 150 * SECOND + 1, 150),
    ];
    for (limit, start, end, last) in cases {
        let found: Vec<String> = engine
            .search(&request(limit, start, end))
            .await
            .expect("search")
            .into_iter()
            .map(|summary| summary.trace_id)
            .collect();
        let expected: Vec<String> = newest(limit, last)
            .into_iter()
            .filter(|id| {
                let t =
                    u32::from_be_bytes(hex::decode(id).expect("hex")[4..8].try_into().expect("4"));
                base + u64::from(t) * SECOND >= start
            })
            .collect();
        assert_eq!(found, expected, "limit {limit}");
    }
    let summary = &engine
        .search(&request(1, base, base + 299 * SECOND))
        .await
        .expect("search")[0];
    assert_eq!(summary.span_count, SERVICES.len());
    assert_eq!(summary.root_service, "cart");
    let _ = std::fs::remove_dir_all(dir);
}

/// Files do not store `end_time`; read back from them (rows, a filter on it, the trace API), before and
/// after compaction, it must equal what was sent.
#[tokio::test]
async fn end_times_read_from_files_equal_those_sent() {
    let base = hour_start();
    let (store, dir) = store_with(30, 3, base).await;
    let engine = QueryEngine::new(store.clone(), QueryLimits::default()).expect("engine");
    for stage in ["flushed files", "compacted file"] {
        assert_every_span_lasts_20ms(&engine, 30 * SERVICES.len(), stage).await;

        // Trace 10's last span ends at base + 10 s + 2 ns + 20 ms; traces 11..29 end after it.
        let cutoff = base + 10 * SECOND + 2 + 20_000_000;
        let sql =
            format!("SELECT count(*) FROM spans WHERE end_time > to_timestamp_nanos({cutoff})");
        assert_eq!(
            count(&engine, &sql).await,
            19 * SERVICES.len() as i64,
            "{stage}"
        );

        let spans = engine.trace(&trace_id(7)).await.expect("trace");
        assert_eq!(spans.len(), SERVICES.len(), "{stage}");
        for span in &spans {
            let span = &span.stored.span;
            assert_eq!(
                span.end_time_unix_nano,
                span.start_time_unix_nano + 20_000_000,
                "{stage}"
            );
        }
        store.compact().await.expect("compact");
    }
    assert_eq!(store.manifest().files.len(), 1);
    let _ = std::fs::remove_dir_all(dir);
}

/// A span file written before `end_time` was dropped (it holds the column, and the service-first order)
/// is still read with the right end times, and compaction merges it with a newer file.
#[tokio::test]
async fn files_that_still_hold_end_time_are_read_and_compacted() {
    use datafusion::arrow::array::{Array, TimestampNanosecondArray};
    use datafusion::arrow::compute::concat_batches;
    use datafusion::arrow::record_batch::RecordBatch;
    use datafusion::parquet::arrow::ArrowWriter;
    use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReader;
    use meshscope_storage::Table;

    let base = hour_start();
    let (store, dir) = store_with(10, 1, base).await;
    assert_eq!(store.manifest().files.len(), 1);
    let old = store.manifest().files[0].clone();
    drop(store);

    // Rewrite the flushed file as the old format did: every table column, `end_time` included.
    let path = dir.join(&old.path);
    let bytes = bytes::Bytes::from(std::fs::read(&path).expect("read file"));
    let batches: Vec<RecordBatch> = ParquetRecordBatchReader::try_new(bytes, 1024)
        .expect("parquet")
        .collect::<Result<_, _>>()
        .expect("batches");
    let stored = concat_batches(&Table::Spans.file_schema(), &batches).expect("concat");
    let starts = stored
        .column_by_name("start_time")
        .and_then(|c| c.as_any().downcast_ref::<TimestampNanosecondArray>())
        .expect("start_time");
    let ends = TimestampNanosecondArray::from(
        (0..starts.len())
            .map(|row| starts.value(row) + 20_000_000)
            .collect::<Vec<_>>(),
    )
    .with_timezone("UTC");
    let schema = Table::Spans.schema();
    let columns = schema
        .fields()
        .iter()
        .map(|field| match field.name().as_str() {
            "end_time" => Arc::new(ends.clone()) as Arc<dyn Array>,
            name => stored.column_by_name(name).expect("column").clone(),
        })
        .collect();
    let full = RecordBatch::try_new(schema.clone(), columns).expect("full batch");
    let mut buffer = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut buffer, schema, None).expect("writer");
    writer.write(&full).expect("write");
    writer.close().expect("close");
    std::fs::write(&path, &buffer).expect("rewrite file");
    let manifest_path = dir.join("manifest.json");
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&manifest_path).expect("manifest")).expect("json");
    manifest["files"][0]["bytes"] = serde_json::json!(buffer.len());
    std::fs::write(&manifest_path, manifest.to_string()).expect("write manifest");

    let mut options = StoreOptions::new(&dir);
    options.compaction_min_files = 2;
    let store = Store::open(options).await.expect("reopen");
    for t in 10..20 {
        append(&store, &trace(t, base + u64::from(t) * SECOND)).await;
    }
    store.flush().await.expect("flush");
    let engine = QueryEngine::new(store.clone(), QueryLimits::default()).expect("engine");
    for stage in ["old and new files", "merged file"] {
        assert_every_span_lasts_20ms(&engine, 20 * SERVICES.len(), stage).await;
        let spans = engine.trace(&trace_id(3)).await.expect("trace");
        assert_eq!(span_ids(&spans), expected_span_ids(3), "{stage}");
        if stage == "old and new files" {
            assert_eq!(store.manifest().files.len(), 2);
            assert_eq!(store.compact().await.expect("compact"), 2);
        }
    }
    assert_eq!(store.manifest().files.len(), 1);
    let _ = std::fs::remove_dir_all(dir);
}

/// In a file whose `trace_id` column spans many pages, lookups of one id and of twenty are exact: the
/// trace-id index narrows each id to the pages whose bounds hold it.
#[tokio::test]
async fn lookups_in_a_file_of_many_trace_id_pages_are_exact() {
    use datafusion::parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions};
    use datafusion::parquet::file::metadata::PageIndexPolicy;

    let dir = temp_dir();
    let store = Store::open(StoreOptions::new(&dir)).await.expect("open");
    let base = hour_start();
    for chunk in 0..30u32 {
        let mut request = ExportTraceServiceRequest::default();
        for t in chunk * 100..(chunk + 1) * 100 {
            request
                .resource_spans
                .extend(trace(t, base + u64::from(t) * 1_000_000).resource_spans);
        }
        append(&store, &request).await;
    }
    store.flush().await.expect("flush");
    let file = store.manifest().files[0].clone();
    let bytes = bytes::Bytes::from(std::fs::read(dir.join(&file.path)).expect("read"));
    let metadata = ArrowReaderMetadata::load(
        &bytes,
        ArrowReaderOptions::new().with_page_index_policy(PageIndexPolicy::Required),
    )
    .expect("metadata");
    let column = metadata
        .metadata()
        .file_metadata()
        .schema_descr()
        .columns()
        .iter()
        .position(|c| c.name() == "trace_id")
        .expect("trace_id");
    let pages: usize = metadata
        .metadata()
        .offset_index()
        .expect("page index")
        .iter()
        .map(|row_group| row_group[column].page_locations().len())
        .sum();
    assert!(
        pages >= 4,
        "the test needs several trace_id pages, got {pages}"
    );

    let engine = QueryEngine::new(store.clone(), QueryLimits::default()).expect("engine");
    let sample: Vec<u32> = (0..20).map(|i| i * 149 + 7).collect();
    for &t in &sample {
        let spans = engine.trace(&trace_id(t)).await.expect("trace");
        assert_eq!(span_ids(&spans), expected_span_ids(t), "trace {t}");
    }
    let ids: Vec<String> = sample
        .iter()
        .map(|&t| format!("unhex_id('{}')", hex::encode(trace_id(t))))
        .collect();
    let sql = format!(
        "SELECT count(*) FROM spans WHERE trace_id IN ({})",
        ids.join(", ")
    );
    assert_eq!(
        count(&engine, &sql).await,
        (sample.len() * SERVICES.len()) as i64
    );
    let _ = std::fs::remove_dir_all(dir);
}
