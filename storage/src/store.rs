//! The store: WAL + memtable + Parquet files + manifest, and the maintenance that moves rows between them.
//!
//! Invariant: every acknowledged row is in exactly one of (memtable chunks with `seq > flushed_seq`) and
//! (files listed in the manifest). Readers take the manifest first and then only memtable chunks newer
//! than its `flushed_seq`, so a flush in progress never shows a row twice or not at all.

use std::path::{Path as FsPath, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use datafusion::arrow::array::{Array, TimestampNanosecondArray, UInt32Array};
use datafusion::arrow::compute::take_record_batch;
use datafusion::arrow::record_batch::RecordBatch;
use futures::TryStreamExt;
use meshscope_proto::collector::metrics::v1::ExportMetricsServiceRequest;
use meshscope_proto::collector::trace::v1::ExportTraceServiceRequest;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use prost::Message;
use tokio::sync::Notify;

use crate::StorageError;
use crate::compaction;
use crate::convert::{metrics_to_batch, spans_to_batch};
use crate::manifest::{FileMeta, Manifest};
use crate::memtable::{Chunk, Memtable, TimeRange};
use crate::parquet_io;
use crate::schema::Table;
use crate::trace_index::TraceIndex;
use crate::wal::{RecordKind, Wal, WalOptions, WalRecord};

const NANOS_PER_HOUR: i64 = 3_600_000_000_000;

/// How the store behaves; every field has a documented default.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Directory holding `wal/`, `tables/` and `manifest.json`.
    pub data_dir: PathBuf,
    /// Flush the memtable once it holds this many bytes of Arrow data.
    pub flush_bytes: usize,
    /// A flush writes the memtable in slices of at most this many bytes (one file per slice and hour),
    /// so its sorted copies stay small whatever the memtable holds.
    pub flush_slice_bytes: usize,
    /// Flush the memtable once its oldest row has waited this long.
    pub flush_interval: Duration,
    /// Drop Parquet files whose newest row is older than this.
    pub retention: Duration,
    /// Compact a partition once it has this many files smaller than `compaction_file_bytes`.
    pub compaction_min_files: usize,
    /// Files at least this large are left alone by compaction.
    pub compaction_file_bytes: u64,
    /// At most this many files are merged at once (each holds a row group in memory while merging).
    pub compaction_max_files: usize,
    /// Memory for the trace-id index (the `trace_id` bloom filters kept in memory, about 1 byte per
    /// stored span); past it the least recently used files' filters are dropped and read again on use.
    pub trace_index_bytes: usize,
    /// WAL settings.
    pub wal: WalOptions,
}

impl StoreOptions {
    /// Defaults for a store rooted at `data_dir`.
    pub fn new(data_dir: impl Into<PathBuf>) -> StoreOptions {
        StoreOptions {
            data_dir: data_dir.into(),
            flush_bytes: 128 * 1024 * 1024,
            flush_slice_bytes: 32 * 1024 * 1024,
            flush_interval: Duration::from_secs(30),
            retention: Duration::from_secs(7 * 24 * 3600),
            compaction_min_files: 4,
            compaction_file_bytes: 64 * 1024 * 1024,
            compaction_max_files: 8,
            trace_index_bytes: 64 * 1024 * 1024,
            wal: WalOptions::default(),
        }
    }
}

/// What a query reads: the files of the manifest and the memtable rows not yet in them.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Parquet files that may hold matching rows.
    pub files: Vec<FileMeta>,
    /// Memtable batches that may hold matching rows.
    pub batches: Vec<RecordBatch>,
}

/// Durable span and metric storage; see the crate docs for the data flow.
pub struct Store {
    options: StoreOptions,
    wal: Option<Wal>,
    memtable: Arc<Memtable>,
    objects: Arc<dyn ObjectStore>,
    manifest: RwLock<Manifest>,
    /// Serialises every manifest edit (flush, compaction's publish, retention).
    maintenance: tokio::sync::Mutex<()>,
    /// Serialises compactions, which merge outside `maintenance` so flushes go on meanwhile.
    compaction: tokio::sync::Mutex<()>,
    flush_wanted: Notify,
    /// Estimated bytes that running flushes and compactions hold beside the memtable.
    working: Arc<AtomicUsize>,
    trace_index: TraceIndex,
}

/// Memory a flush or compaction holds, counted in [`Store::memory_bytes`] until dropped.
struct WorkingSet {
    bytes: usize,
    working: Arc<AtomicUsize>,
}

impl WorkingSet {
    fn new(working: &Arc<AtomicUsize>, bytes: usize) -> WorkingSet {
        working.fetch_add(bytes, Ordering::AcqRel);
        WorkingSet {
            bytes,
            working: working.clone(),
        }
    }
}

impl Drop for WorkingSet {
    fn drop(&mut self) {
        self.working.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

impl Store {
    /// Opens the store for writing: loads the manifest, deletes unpublished files, replays the WAL.
    pub async fn open(options: StoreOptions) -> Result<Arc<Store>, StorageError> {
        std::fs::create_dir_all(options.data_dir.join("tables"))?;
        let objects: Arc<dyn ObjectStore> =
            Arc::new(LocalFileSystem::new_with_prefix(&options.data_dir)?);
        let manifest = Manifest::load(objects.as_ref()).await?;
        remove_orphans(objects.as_ref(), &manifest).await?;
        let (wal, records, report) = Wal::open(
            &options.data_dir.join("wal"),
            manifest.flushed_seq,
            options.wal,
        )?;
        for problem in &report.truncated {
            tracing::warn!(%problem, "WAL corruption cut off during replay");
        }
        tracing::info!(
            records = report.records,
            segments = report.segments,
            "WAL replayed"
        );
        let store = Store::assemble(options, Some(wal), objects, manifest);
        store.replay(records)?;
        Ok(Arc::new(store))
    }

    /// Opens the store for reading only (for tools beside a running collector): nothing is written,
    /// truncated or deleted; unflushed WAL records are read into memory.
    pub async fn open_read_only(data_dir: &FsPath) -> Result<Arc<Store>, StorageError> {
        if !data_dir.join("manifest.json").exists() && !data_dir.join("wal").exists() {
            return Err(StorageError::NotAStore(data_dir.display().to_string()));
        }
        let objects: Arc<dyn ObjectStore> = Arc::new(LocalFileSystem::new_with_prefix(data_dir)?);
        let manifest = Manifest::load(objects.as_ref()).await?;
        let (records, _) = Wal::read_only(&data_dir.join("wal"), manifest.flushed_seq)?;
        let store = Store::assemble(StoreOptions::new(data_dir), None, objects, manifest);
        store.replay(records)?;
        Ok(Arc::new(store))
    }

    fn assemble(
        options: StoreOptions,
        wal: Option<Wal>,
        objects: Arc<dyn ObjectStore>,
        manifest: Manifest,
    ) -> Store {
        let trace_index = TraceIndex::new(objects.clone(), options.trace_index_bytes);
        Store {
            options,
            wal,
            memtable: Arc::new(Memtable::default()),
            objects,
            manifest: RwLock::new(manifest),
            maintenance: tokio::sync::Mutex::new(()),
            compaction: tokio::sync::Mutex::new(()),
            flush_wanted: Notify::new(),
            working: Arc::new(AtomicUsize::new(0)),
            trace_index,
        }
    }

    fn replay(&self, records: Vec<WalRecord>) -> Result<(), StorageError> {
        for record in records {
            let (table, batch) = decode_record(record.kind, &record.payload)?;
            self.memtable.insert(record.seq, table, batch);
        }
        Ok(())
    }

    /// The object store holding the Parquet files (paths in [`FileMeta::path`] are relative to it).
    pub fn objects(&self) -> Arc<dyn ObjectStore> {
        self.objects.clone()
    }

    /// The in-memory `trace_id` bloom filters of the span files, for trace-id lookups.
    pub fn trace_index(&self) -> &TraceIndex {
        &self.trace_index
    }

    /// Makes an accepted export durable: `payload` (the encoded OTLP request) goes to the WAL and, once
    /// fsynced, `batch` (its rows) becomes visible to queries. Resolves only after both.
    pub async fn append(
        &self,
        kind: RecordKind,
        payload: Vec<u8>,
        batch: RecordBatch,
    ) -> Result<u64, StorageError> {
        let wal = self.wal.as_ref().ok_or(StorageError::ReadOnly)?;
        let table = table_of(kind);
        let memtable = self.memtable.clone();
        let seq = wal
            .append(
                kind,
                payload,
                Box::new(move |seq| memtable.insert(seq, table, batch)),
            )
            .await?;
        if self.memtable.bytes() >= self.options.flush_bytes {
            self.flush_wanted.notify_one();
        }
        Ok(seq)
    }

    /// The rows a query over `table` in `range` must read.
    pub fn snapshot(&self, table: Table, range: TimeRange) -> Snapshot {
        let manifest = self
            .manifest
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let files = manifest.files_in(table, range);
        let batches = self.memtable.snapshot(table, range, manifest.flushed_seq);
        Snapshot { files, batches }
    }

    /// A copy of the current manifest.
    pub fn manifest(&self) -> Manifest {
        self.manifest
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Bytes of Arrow data waiting in the memtable.
    pub fn memtable_bytes(&self) -> usize {
        self.memtable.bytes()
    }

    /// Memory the store holds: the memtable, what running flushes and compactions hold, and the
    /// trace-id index (for admission control).
    pub fn memory_bytes(&self) -> usize {
        self.memtable.bytes() + self.working.load(Ordering::Acquire) + self.trace_index.bytes()
    }

    /// Asks the maintenance loop to flush now, whatever the size and age thresholds (used under memory
    /// pressure).
    pub fn request_flush(&self) {
        self.flush_wanted.notify_one();
    }

    /// Writes every memtable row to Parquet, publishes the files, then drops the flushed WAL segments.
    /// Works in slices of [`StoreOptions::flush_slice_bytes`], oldest first, publishing after each, so
    /// memory is freed as it goes and the sorted copies never exceed one slice.
    pub async fn flush(&self) -> Result<(), StorageError> {
        let _edit = self.maintenance.lock().await;
        let chunks = self.memtable.chunks();
        let mut rest = chunks.as_slice();
        while !rest.is_empty() {
            let mut bytes = 0;
            let len = rest
                .iter()
                .take_while(|chunk| {
                    let fits = bytes == 0 || bytes + chunk.bytes <= self.options.flush_slice_bytes;
                    bytes += chunk.bytes;
                    fits
                })
                .count();
            let (slice, later) = rest.split_at(len);
            self.flush_slice(slice).await?;
            rest = later;
        }
        Ok(())
    }

    /// Flushes consecutive chunks; the caller holds `maintenance`.
    async fn flush_slice(&self, chunks: &[Chunk]) -> Result<(), StorageError> {
        let Some(through) = chunks.last().map(|chunk| chunk.seq) else {
            return Ok(());
        };
        // A concatenated copy and a sorted copy of the slice live while it is encoded.
        let bytes: usize = chunks.iter().map(|chunk| chunk.bytes).sum();
        let _working = WorkingSet::new(&self.working, 2 * bytes);
        let mut new_files = Vec::new();
        for table in Table::ALL {
            let batches: Vec<RecordBatch> = chunks
                .iter()
                .filter(|chunk| chunk.table == table)
                .map(|chunk| chunk.batch.clone())
                .collect();
            if batches.is_empty() {
                continue;
            }
            let partitions =
                tokio::task::spawn_blocking(move || partition_and_encode(table, &batches))
                    .await??;
            for part in partitions {
                new_files.push(self.write_file(table, part).await?);
            }
        }
        let mut manifest = self.manifest();
        manifest.files.extend(new_files);
        manifest.flushed_seq = through;
        self.publish(manifest).await?;
        self.memtable.remove_through(through);
        if let Some(wal) = &self.wal {
            wal.truncate_through(through)?;
        }
        tracing::debug!(through, "memtable slice flushed");
        Ok(())
    }

    async fn write_file(
        &self,
        table: Table,
        part: EncodedPartition,
    ) -> Result<FileMeta, StorageError> {
        let path = new_file_path(table, part.partition);
        let bytes = part.bytes.len() as u64;
        self.objects
            .put(&Path::from(path.as_str()), part.bytes.into())
            .await?;
        self.sync_local(&path)?;
        Ok(FileMeta {
            table,
            path,
            partition: part.partition,
            min_time: part.range.start,
            max_time: part.range.end,
            rows: part.rows as u64,
            bytes,
        })
    }

    /// `object_store` does not fsync; on a local disk we do, so that a published file survives a power
    /// loss once its WAL records are gone.
    fn sync_local(&self, relative: &str) -> Result<(), StorageError> {
        let path = self.options.data_dir.join(relative);
        std::fs::File::open(&path)?.sync_all()?;
        if let Some(parent) = path.parent() {
            std::fs::File::open(parent)?.sync_all()?;
        }
        Ok(())
    }

    async fn publish(&self, manifest: Manifest) -> Result<(), StorageError> {
        manifest.save(self.objects.as_ref()).await?;
        self.sync_local(crate::manifest::MANIFEST_PATH)?;
        {
            let live: std::collections::HashSet<&str> = manifest
                .files
                .iter()
                .map(|file| file.path.as_str())
                .collect();
            self.trace_index.retain(|path| live.contains(path));
        }
        *self
            .manifest
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = manifest;
        Ok(())
    }

    /// Merges the small files of each hour partition that has at least
    /// [`StoreOptions::compaction_min_files`] of them, [`StoreOptions::compaction_max_files`] at a time,
    /// streaming, and repeats until no partition qualifies; returns how many files were merged away.
    /// Flushes go on while it merges: the manifest is locked only to publish, and a merge whose inputs
    /// vanished meanwhile (retention) is dropped.
    pub async fn compact(&self) -> Result<usize, StorageError> {
        let _compacting = self.compaction.lock().await;
        let mut merged = 0;
        loop {
            let groups = self.compaction_groups();
            if groups.is_empty() {
                return Ok(merged);
            }
            let mut progress = 0;
            for (table, partition, files) in groups {
                progress += self.merge(table, partition, files).await?;
            }
            if progress == 0 {
                return Ok(merged);
            }
            merged += progress;
        }
    }

    /// The merges one compaction pass makes: per qualifying partition, its small files smallest first,
    /// in runs of at most `compaction_max_files` (a lone leftover waits for the next pass).
    fn compaction_groups(&self) -> Vec<(Table, i64, Vec<FileMeta>)> {
        let mut partitions: std::collections::BTreeMap<(Table, i64), Vec<FileMeta>> =
            Default::default();
        for file in self.manifest().files {
            if file.bytes < self.options.compaction_file_bytes {
                partitions
                    .entry((file.table, file.partition))
                    .or_default()
                    .push(file);
            }
        }
        let mut groups = Vec::new();
        for ((table, partition), mut files) in partitions {
            if files.len() < self.options.compaction_min_files {
                continue;
            }
            files.sort_by_key(|file| file.bytes);
            for run in files.chunks(self.options.compaction_max_files.max(2)) {
                if run.len() >= 2 {
                    groups.push((table, partition, run.to_vec()));
                }
            }
        }
        groups
    }

    /// Merges `files` into one new file and publishes the swap; returns how many files went away.
    async fn merge(
        &self,
        table: Table,
        partition: i64,
        files: Vec<FileMeta>,
    ) -> Result<usize, StorageError> {
        let working_bytes = files.iter().map(compaction::input_working_bytes).sum();
        let _working = WorkingSet::new(&self.working, working_bytes);
        let path = new_file_path(table, partition);
        let output = Path::from(path.as_str());
        let objects = self.objects.clone();
        let inputs = files.clone();
        let merged_path = output.clone();
        // Decoding and encoding are CPU work: run the merge on a blocking-pool thread, not on a runtime
        // worker that serves ingest.
        let runtime = tokio::runtime::Handle::current();
        let rows = tokio::task::spawn_blocking(move || {
            runtime.block_on(compaction::merge_files(
                objects,
                table,
                &inputs,
                &merged_path,
            ))
        })
        .await??;
        let bytes = self.objects.head(&output).await?.size;
        self.sync_local(&path)?;
        let file = FileMeta {
            table,
            path,
            partition,
            min_time: files.iter().map(|f| f.min_time).min().unwrap_or(0),
            max_time: files.iter().map(|f| f.max_time).max().unwrap_or(0),
            rows,
            bytes,
        };

        let _edit = self.maintenance.lock().await;
        let mut next = self.manifest();
        let all_live = files
            .iter()
            .all(|old| next.files.iter().any(|live| live.path == old.path));
        if !all_live {
            drop(_edit);
            self.delete_later(vec![file]);
            return Ok(0);
        }
        next.files
            .retain(|live| !files.iter().any(|old| old.path == live.path));
        next.files.push(file);
        self.publish(next).await?;
        let count = files.len();
        self.delete_later(files);
        Ok(count)
    }

    /// Drops files whose newest row is older than the retention period; returns how many.
    pub async fn enforce_retention(&self) -> Result<usize, StorageError> {
        let _edit = self.maintenance.lock().await;
        let cutoff = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX)
            - i64::try_from(self.options.retention.as_nanos()).unwrap_or(i64::MAX);
        let mut next = self.manifest();
        let (expired, live): (Vec<FileMeta>, Vec<FileMeta>) = next
            .files
            .into_iter()
            .partition(|file| file.max_time < cutoff);
        if expired.is_empty() {
            return Ok(0);
        }
        next.files = live;
        self.publish(next).await?;
        let count = expired.len();
        self.delete_later(expired);
        Ok(count)
    }

    /// Deletes replaced files after a grace period, so queries that listed them can finish. A crash
    /// before that leaves orphans, which the next start removes.
    fn delete_later(&self, files: Vec<FileMeta>) {
        let objects = self.objects.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(60)).await;
            for file in files {
                if let Err(error) = objects.delete(&Path::from(file.path.as_str())).await {
                    tracing::warn!(path = file.path, %error, "could not delete replaced file");
                }
            }
        });
    }

    /// Runs flushes (by size and age) until `shutdown` resolves, with compaction and retention in a
    /// task of their own so a long merge never delays a flush; then flushes once more and closes the WAL.
    pub async fn run_maintenance(self: Arc<Self>, shutdown: impl std::future::Future<Output = ()>) {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let background = tokio::spawn(self.clone().compact_and_expire(stopped));
        tokio::pin!(shutdown);
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            let wanted = tokio::select! {
                _ = &mut shutdown => break,
                _ = tick.tick() => false,
                _ = self.flush_wanted.notified() => true,
            };
            let aged = self
                .memtable
                .oldest()
                .is_some_and(|t| t.elapsed() >= self.options.flush_interval);
            if (wanted || aged || self.memtable.bytes() >= self.options.flush_bytes)
                && let Err(error) = self.flush().await
            {
                tracing::error!(%error, "flush failed; rows stay in the WAL and memtable");
            }
        }
        // A merge cut short leaves an unpublished file, which the next start removes.
        let _ = stop.send(true);
        if let Err(error) = background.await {
            tracing::error!(%error, "compaction task failed");
        }
        self.close().await;
    }

    /// Every 30 s: compaction, then retention, until `stop` turns true.
    async fn compact_and_expire(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        let period = Duration::from_secs(30);
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        loop {
            tokio::select! {
                _ = stop.changed() => return,
                _ = tick.tick() => {}
            }
            tokio::select! {
                _ = stop.changed() => return,
                result = self.compact() => match result {
                    Ok(0) => {}
                    Ok(merged) => tracing::info!(merged, "compacted small files"),
                    Err(error) => tracing::error!(%error, "compaction failed"),
                },
            }
            match self.enforce_retention().await {
                Ok(0) => {}
                Ok(dropped) => tracing::info!(dropped, "dropped files past retention"),
                Err(error) => tracing::error!(%error, "retention failed"),
            }
        }
    }

    /// Flushes what is in memory and closes the WAL (everything is fsynced).
    pub async fn close(&self) {
        if let Err(error) = self.flush().await {
            tracing::error!(%error, "final flush failed; the WAL still holds the rows");
        }
        if let Some(wal) = &self.wal {
            wal.close();
        }
    }
}

/// A fresh object path in the hour partition starting at `partition` (Unix seconds).
fn new_file_path(table: Table, partition: i64) -> String {
    let hour = chrono::DateTime::from_timestamp(partition, 0).unwrap_or_default();
    format!(
        "tables/{}/date={}/hour={}/{}.parquet",
        table.name(),
        hour.format("%Y-%m-%d"),
        hour.format("%H"),
        uuid::Uuid::new_v4()
    )
}

fn table_of(kind: RecordKind) -> Table {
    match kind {
        RecordKind::Traces => Table::Spans,
        RecordKind::Metrics => Table::MetricPoints,
    }
}

/// Turns a WAL record back into rows (the same conversion the collector applies on ingest).
pub fn decode_record(
    kind: RecordKind,
    payload: &[u8],
) -> Result<(Table, RecordBatch), StorageError> {
    let batch = match kind {
        RecordKind::Traces => spans_to_batch(&ExportTraceServiceRequest::decode(payload)?)?,
        RecordKind::Metrics => metrics_to_batch(&ExportMetricsServiceRequest::decode(payload)?)?,
    };
    Ok((table_of(kind), batch))
}

struct EncodedPartition {
    partition: i64,
    range: TimeRange,
    rows: usize,
    bytes: Bytes,
}

/// Splits rows by hour of their time column, then sorts and encodes each hour as one file.
fn partition_and_encode(
    table: Table,
    batches: &[RecordBatch],
) -> Result<Vec<EncodedPartition>, StorageError> {
    let mut by_hour: std::collections::BTreeMap<i64, Vec<RecordBatch>> = Default::default();
    for batch in batches {
        let Some(times) = batch
            .column_by_name(table.time_column())
            .and_then(|column| column.as_any().downcast_ref::<TimestampNanosecondArray>())
        else {
            continue;
        };
        let mut rows: std::collections::BTreeMap<i64, Vec<u32>> = Default::default();
        for (row, time) in times.values().iter().enumerate() {
            rows.entry(time.div_euclid(NANOS_PER_HOUR))
                .or_default()
                .push(row as u32);
        }
        for (hour, indices) in rows {
            let part = if indices.len() == batch.num_rows() {
                batch.clone()
            } else {
                take_record_batch(batch, &UInt32Array::from(indices))?
            };
            by_hour.entry(hour * 3600).or_default().push(part);
        }
    }
    let mut encoded = Vec::new();
    for (partition, parts) in by_hour {
        if let Some(part) = encode_partition(table, partition, &parts)? {
            encoded.push(part);
        }
    }
    Ok(encoded)
}

fn encode_partition(
    table: Table,
    partition: i64,
    batches: &[RecordBatch],
) -> Result<Option<EncodedPartition>, StorageError> {
    let sorted = parquet_io::sort_rows(table, batches)?;
    let Some(range) = TimeRange::of_batch(table, &sorted) else {
        return Ok(None);
    };
    let bytes = parquet_io::encode(table, &sorted)?;
    Ok(Some(EncodedPartition {
        partition,
        range,
        rows: sorted.num_rows(),
        bytes,
    }))
}

/// Deletes files under `tables/` that the manifest does not list: leftovers of a crash mid-flush or
/// mid-compaction.
async fn remove_orphans(
    objects: &dyn ObjectStore,
    manifest: &Manifest,
) -> Result<(), StorageError> {
    let live: std::collections::HashSet<&str> = manifest
        .files
        .iter()
        .map(|file| file.path.as_str())
        .collect();
    let listed: Vec<_> = objects
        .list(Some(&Path::from("tables")))
        .try_collect()
        .await?;
    for object in listed {
        if !live.contains(object.location.as_ref()) {
            tracing::info!(path = %object.location, "removing unpublished file");
            objects.delete(&object.location).await?;
        }
    }
    Ok(())
}
