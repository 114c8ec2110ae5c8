//! The store's life cycle on a real directory: append, flush, crash and replay, compaction, retention,
//! orphan removal. Each check counts rows where queries would find them (memtable ∪ manifest files).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use meshscope_proto::collector::trace::v1::ExportTraceServiceRequest;
use meshscope_proto::common::{AnyValue, KeyValue, any_value};
use meshscope_proto::resource::Resource;
use meshscope_proto::trace::{ResourceSpans, ScopeSpans, Span};
use meshscope_storage::convert::spans_to_batch;
use meshscope_storage::wal::RecordKind;
use meshscope_storage::{Store, StoreOptions, Table, TimeRange};
use prost::Message;

fn temp_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("meshscope-store-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn now_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_nanos() as u64
}

/// A request of `count` spans of one trace, starting at `start` nanoseconds.
fn request(tag: u8, count: usize, start: u64) -> ExportTraceServiceRequest {
    let spans = (0..count)
        .map(|i| Span {
            trace_id: vec![tag; 16],
            span_id: [[tag; 4], (i as u32 + 1).to_be_bytes()].concat(),
            name: format!("op-{i}"),
            start_time_unix_nano: start + i as u64,
            end_time_unix_nano: start + i as u64 + 1_000,
            ..Default::default()
        })
        .collect();
    let service = KeyValue {
        key: "service.name".into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue("svc".into())),
        }),
        ..Default::default()
    };
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![service],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

async fn append(store: &Store, request: &ExportTraceServiceRequest) {
    let batch = spans_to_batch(request).expect("convert");
    store
        .append(RecordKind::Traces, request.encode_to_vec(), batch)
        .await
        .expect("append");
}

/// Rows a query would see: memtable batches plus the rows of every listed file.
fn visible_rows(store: &Store) -> u64 {
    let snapshot = store.snapshot(Table::Spans, TimeRange::ALL);
    let memtable: usize = snapshot.batches.iter().map(|b| b.num_rows()).sum();
    memtable as u64 + snapshot.files.iter().map(|f| f.rows).sum::<u64>()
}

fn options(dir: &PathBuf) -> StoreOptions {
    let mut options = StoreOptions::new(dir);
    options.compaction_min_files = 3;
    options
}

#[tokio::test]
async fn flushed_rows_move_from_memtable_to_parquet_exactly_once() {
    let dir = temp_dir();
    let store = Store::open(options(&dir)).await.expect("open");
    append(&store, &request(1, 10, now_nanos())).await;
    assert_eq!(
        store.snapshot(Table::Spans, TimeRange::ALL).batches.len(),
        1
    );
    store.flush().await.expect("flush");
    let snapshot = store.snapshot(Table::Spans, TimeRange::ALL);
    assert!(
        snapshot.batches.is_empty(),
        "flushed rows must leave the memtable"
    );
    assert_eq!(snapshot.files.len(), 1);
    assert_eq!(visible_rows(&store), 10);
    store.close().await;
    drop(store);

    let reopened = Store::open(options(&dir)).await.expect("reopen");
    assert_eq!(
        visible_rows(&reopened),
        10,
        "replay must skip records already in Parquet"
    );
}

#[tokio::test]
async fn unflushed_rows_are_replayed_after_a_crash() {
    let dir = temp_dir();
    let store = Store::open(options(&dir)).await.expect("open");
    append(&store, &request(2, 5, now_nanos())).await;
    store.flush().await.expect("flush");
    append(&store, &request(3, 7, now_nanos())).await;
    // No close: the process "dies" with 7 rows only in the WAL.
    drop(store);

    let reopened = Store::open(options(&dir)).await.expect("reopen");
    assert_eq!(visible_rows(&reopened), 12);
    assert_eq!(
        reopened
            .snapshot(Table::Spans, TimeRange::ALL)
            .batches
            .len(),
        1
    );
}

#[tokio::test]
async fn compaction_merges_small_files_of_one_hour() {
    let dir = temp_dir();
    let store = Store::open(options(&dir)).await.expect("open");
    let start = now_nanos();
    for tag in 10..14 {
        append(&store, &request(tag, 20, start)).await;
        store.flush().await.expect("flush");
    }
    assert_eq!(store.manifest().files.len(), 4);
    let merged = store.compact().await.expect("compact");
    assert_eq!(merged, 4);
    let manifest = store.manifest();
    assert_eq!(manifest.files.len(), 1);
    assert_eq!(manifest.files[0].rows, 80);
    assert_eq!(visible_rows(&store), 80);
}

#[tokio::test]
async fn compaction_merges_in_runs_of_max_files_until_settled_in_sort_order() {
    let dir = temp_dir();
    let mut opts = options(&dir);
    opts.compaction_max_files = 3;
    opts.compaction_min_files = 2;
    let store = Store::open(opts).await.expect("open");
    let start = now_nanos();
    for tag in [17, 11, 15, 12, 14] {
        append(&store, &request(tag, 20, start)).await;
        store.flush().await.expect("flush");
    }
    // Pass 1 merges 3 + 2 files; pass 2 merges the two results.
    assert_eq!(store.compact().await.expect("compact"), 7);
    let manifest = store.manifest();
    assert_eq!(manifest.files.len(), 1);
    assert_eq!(manifest.files[0].rows, 100);
    assert_eq!(visible_rows(&store), 100);

    let bytes = std::fs::read(dir.join(&manifest.files[0].path)).expect("read merged file");
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReader::try_new(
        bytes::Bytes::from(bytes),
        1024,
    )
    .expect("parquet");
    let mut keys = Vec::new();
    for batch in reader {
        let batch = batch.expect("batch");
        let ids = batch
            .column_by_name("trace_id")
            .expect("trace_id")
            .as_any()
            .downcast_ref::<datafusion::arrow::array::BinaryArray>()
            .expect("binary")
            .clone();
        let starts = batch
            .column_by_name("start_time")
            .expect("start_time")
            .as_any()
            .downcast_ref::<datafusion::arrow::array::TimestampNanosecondArray>()
            .expect("timestamps")
            .clone();
        keys.extend((0..batch.num_rows()).map(|i| (ids.value(i).to_vec(), starts.value(i))));
    }
    assert_eq!(keys.len(), 100);
    assert!(
        keys.windows(2).all(|pair| pair[0] <= pair[1]),
        "a merged file keeps the (start minute, trace_id, start_time) order"
    );
}

#[tokio::test]
async fn flush_writes_the_memtable_in_bounded_slices() {
    let dir = temp_dir();
    let mut opts = options(&dir);
    opts.flush_slice_bytes = 1;
    let store = Store::open(opts).await.expect("open");
    let start = now_nanos();
    for tag in 50..53 {
        append(&store, &request(tag, 10, start)).await;
    }
    store.flush().await.expect("flush");
    let manifest = store.manifest();
    assert_eq!(manifest.files.len(), 3, "one file per slice");
    assert_eq!(manifest.flushed_seq, 3);
    assert_eq!(
        store.memory_bytes(),
        0,
        "memtable and working set are empty"
    );
    assert_eq!(visible_rows(&store), 30);
    store.close().await;
    drop(store);
    let reopened = Store::open(options(&dir)).await.expect("reopen");
    assert_eq!(visible_rows(&reopened), 30);
}

#[tokio::test]
async fn retention_drops_old_files_only() {
    let dir = temp_dir();
    let mut opts = options(&dir);
    opts.retention = Duration::from_secs(3600);
    let store = Store::open(opts).await.expect("open");
    let three_hours_ago = now_nanos() - 3 * 3_600_000_000_000;
    append(&store, &request(20, 4, three_hours_ago)).await;
    append(&store, &request(21, 6, now_nanos())).await;
    store.flush().await.expect("flush");
    assert_eq!(
        store.manifest().files.len(),
        2,
        "one file per hour partition"
    );
    assert_eq!(store.enforce_retention().await.expect("retention"), 1);
    assert_eq!(visible_rows(&store), 6);
}

#[tokio::test]
async fn unpublished_files_are_removed_on_start() {
    let dir = temp_dir();
    let store: Arc<Store> = Store::open(options(&dir)).await.expect("open");
    append(&store, &request(30, 3, now_nanos())).await;
    store.close().await;
    drop(store);
    let orphan = dir.join("tables/spans/date=2000-01-01/hour=00/orphan.parquet");
    std::fs::create_dir_all(orphan.parent().expect("parent")).expect("mkdir");
    std::fs::write(&orphan, b"left by a crash mid-flush").expect("write orphan");

    let reopened = Store::open(options(&dir)).await.expect("reopen");
    assert!(!orphan.exists(), "an unlisted file must be deleted");
    assert_eq!(visible_rows(&reopened), 3);
}

#[tokio::test]
async fn read_only_open_sees_everything_and_changes_nothing() {
    let dir = temp_dir();
    let store = Store::open(options(&dir)).await.expect("open");
    append(&store, &request(40, 2, now_nanos())).await;
    store.flush().await.expect("flush");
    append(&store, &request(41, 3, now_nanos())).await;

    let reader = Store::open_read_only(&dir).await.expect("read-only");
    assert_eq!(visible_rows(&reader), 5);
    let batch = spans_to_batch(&request(42, 1, now_nanos())).expect("convert");
    assert!(
        reader
            .append(RecordKind::Traces, Vec::new(), batch)
            .await
            .is_err()
    );
    assert!(
        Store::open_read_only(&dir.join("nothing-here"))
            .await
            .is_err()
    );
}
