//! The store: WAL + memtable + Parquet files + manifest, and the maintenance that moves rows between them.
//!
//! Invariant: every acknowledged row is in exactly one of (memtable chunks with `seq > flushed_seq`) and
//! (files listed in the manifest). Readers take the manifest first and then only memtable chunks newer
//! than its `flushed_seq`, so a flush in progress never shows a row twice or not at all.

use std::path::{Path as FsPath, PathBuf};
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
use crate::convert::{metrics_to_batch, spans_to_batch};
use crate::manifest::{FileMeta, Manifest};
use crate::memtable::{Memtable, TimeRange};
use crate::parquet_io;
use crate::schema::Table;
use crate::wal::{RecordKind, Wal, WalOptions, WalRecord};

const NANOS_PER_HOUR: i64 = 3_600_000_000_000;

/// How the store behaves; every field has a documented default.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Directory holding `wal/`, `tables/` and `manifest.json`.
    pub data_dir: PathBuf,
    /// Flush the memtable once it holds this many bytes of Arrow data.
    pub flush_bytes: usize,
    /// Flush the memtable once its oldest row has waited this long.
    pub flush_interval: Duration,
    /// Drop Parquet files whose newest row is older than this.
    pub retention: Duration,
    /// Compact a partition once it has this many files smaller than `compaction_file_bytes`.
    pub compaction_min_files: usize,
    /// Files at least this large are left alone by compaction.
    pub compaction_file_bytes: u64,
    /// WAL settings.
    pub wal: WalOptions,
}

impl StoreOptions {
    /// Defaults for a store rooted at `data_dir`.
    pub fn new(data_dir: impl Into<PathBuf>) -> StoreOptions {
        StoreOptions {
            data_dir: data_dir.into(),
            flush_bytes: 128 * 1024 * 1024,
            flush_interval: Duration::from_secs(30),
            retention: Duration::from_secs(7 * 24 * 3600),
            compaction_min_files: 4,
            compaction_file_bytes: 64 * 1024 * 1024,
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
    /// Serialises every manifest edit (flush, compaction, retention).
    maintenance: tokio::sync::Mutex<()>,
    flush_wanted: Notify,
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
            options.wal.clone(),
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
        Store {
            options,
            wal,
            memtable: Arc::new(Memtable::default()),
            objects,
            manifest: RwLock::new(manifest),
            maintenance: tokio::sync::Mutex::new(()),
            flush_wanted: Notify::new(),
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

    /// Bytes of Arrow data waiting in the memtable (for admission control).
    pub fn memtable_bytes(&self) -> usize {
        self.memtable.bytes()
    }

    /// Asks the maintenance loop to flush now, whatever the size and age thresholds (used under memory
    /// pressure).
    pub fn request_flush(&self) {
        self.flush_wanted.notify_one();
    }

    /// Writes every memtable row to Parquet, publishes the files, then drops the flushed WAL segments.
    pub async fn flush(&self) -> Result<(), StorageError> {
        let _edit = self.maintenance.lock().await;
        let chunks = self.memtable.chunks();
        let Some(through) = chunks.last().map(|chunk| chunk.seq) else {
            return Ok(());
        };
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
        tracing::debug!(through, "memtable flushed");
        Ok(())
    }

    async fn write_file(
        &self,
        table: Table,
        part: EncodedPartition,
    ) -> Result<FileMeta, StorageError> {
        let hour = chrono::DateTime::from_timestamp(part.partition, 0).unwrap_or_default();
        let path = format!(
            "tables/{}/date={}/hour={}/{}.parquet",
            table.name(),
            hour.format("%Y-%m-%d"),
            hour.format("%H"),
            uuid::Uuid::new_v4()
        );
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
        *self
            .manifest
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = manifest;
        Ok(())
    }

    /// Merges small files of one hour partition into one; returns how many files were merged away.
    pub async fn compact(&self) -> Result<usize, StorageError> {
        let _edit = self.maintenance.lock().await;
        let manifest = self.manifest();
        let mut groups: std::collections::BTreeMap<(Table, i64), Vec<FileMeta>> =
            Default::default();
        for file in manifest
            .files
            .iter()
            .filter(|f| f.bytes < self.options.compaction_file_bytes)
        {
            groups
                .entry((file.table, file.partition))
                .or_default()
                .push(file.clone());
        }
        let mut merged = 0;
        for ((table, partition), files) in groups {
            if files.len() < self.options.compaction_min_files {
                continue;
            }
            let mut batches = Vec::new();
            for file in &files {
                let bytes = self
                    .objects
                    .get(&Path::from(file.path.as_str()))
                    .await?
                    .bytes()
                    .await?;
                batches.extend(parquet_io::decode(table, bytes)?);
            }
            let encoded =
                tokio::task::spawn_blocking(move || encode_partition(table, partition, &batches))
                    .await??;
            let Some(part) = encoded else { continue };
            let file = self.write_file(table, part).await?;
            let mut next = self.manifest();
            next.files
                .retain(|live| !files.iter().any(|old| old.path == live.path));
            next.files.push(file);
            self.publish(next).await?;
            merged += files.len();
            self.delete_later(files);
        }
        Ok(merged)
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

    /// Runs flushes (by size and age), compaction and retention until `shutdown` resolves, then flushes
    /// once more and closes the WAL.
    pub async fn run_maintenance(self: Arc<Self>, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut ticks: u64 = 0;
        loop {
            let wanted = tokio::select! {
                _ = &mut shutdown => break,
                _ = tick.tick() => {
                    ticks += 1;
                    false
                }
                _ = self.flush_wanted.notified() => true,
            };
            let aged = self
                .memtable
                .oldest()
                .is_some_and(|t| t.elapsed() >= self.options.flush_interval);
            if wanted || aged || self.memtable.bytes() >= self.options.flush_bytes {
                if let Err(error) = self.flush().await {
                    tracing::error!(%error, "flush failed; rows stay in the WAL and memtable");
                }
            }
            if ticks % 30 == 0 {
                match self.compact().await {
                    Ok(0) => {}
                    Ok(merged) => tracing::info!(merged, "compacted small files"),
                    Err(error) => tracing::error!(%error, "compaction failed"),
                }
                match self.enforce_retention().await {
                    Ok(0) => {}
                    Ok(dropped) => tracing::info!(dropped, "dropped files past retention"),
                    Err(error) => tracing::error!(%error, "retention failed"),
                }
            }
        }
        self.close().await;
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
