//! The trace-id index: the `trace_id` bloom filters of the span files, held in memory.
//!
//! Span files are sorted by start minute first, so the trace-id statistics of a row group span most of
//! the id space and can rarely rule a trace out; only the bloom filters can. Read from disk on every lookup
//! without a time hint, they were almost all of the bytes a lookup read. Kept here, a lookup tests every
//! row group of every file in memory and opens only the row groups that may hold the trace.
//!
//! Files are immutable, so a cached filter never goes stale. The store drops the entries of files the
//! manifest no longer lists whenever it publishes one ([`TraceIndex::retain`]), and the least recently
//! used files go when the filters exceed the byte budget. Cost: the filters' own size, 32 KiB per row
//! group of 32k spans (about 1 byte per span) with the current writer settings.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use object_store::ObjectStore;
use object_store::path::Path;
use parquet::arrow::ParquetRecordBatchStreamBuilder;
use parquet::bloom_filter::Sbbf;

use crate::StorageError;
use crate::manifest::FileMeta;
use crate::parquet_io::StoredFileReader;

/// Name of the indexed column.
const COLUMN: &str = "trace_id";

/// The `trace_id` bloom filters of one file, one per row group.
#[derive(Debug)]
pub struct FileFilters {
    /// `None`: the row group has no filter, so it may hold any trace.
    row_groups: Vec<Option<Sbbf>>,
}

impl FileFilters {
    /// Per row group, whether it may hold a span of any of `ids`.
    pub fn candidates(&self, ids: &[&[u8]]) -> Vec<bool> {
        self.row_groups
            .iter()
            .map(|filter| match filter {
                Some(filter) => ids.iter().any(|id| filter.check(*id)),
                None => true,
            })
            .collect()
    }

    /// Bytes the filters hold.
    pub fn bytes(&self) -> usize {
        let blocks: usize = self.row_groups.iter().flatten().map(Sbbf::num_blocks).sum();
        blocks * 32 + self.row_groups.len() * size_of::<Option<Sbbf>>()
    }
}

struct Entry {
    filters: Arc<FileFilters>,
    last_used: u64,
}

#[derive(Default)]
struct State {
    files: HashMap<String, Entry>,
    bytes: usize,
    clock: u64,
}

/// The in-memory `trace_id` bloom filters of the span files, bounded by a byte budget.
pub struct TraceIndex {
    objects: Arc<dyn ObjectStore>,
    budget: usize,
    state: Mutex<State>,
}

impl TraceIndex {
    /// An empty index reading files from `objects`, holding at most `budget` bytes of filters.
    pub fn new(objects: Arc<dyn ObjectStore>, budget: usize) -> TraceIndex {
        TraceIndex {
            objects,
            budget,
            state: Mutex::new(State::default()),
        }
    }

    /// The filters of `file`, from memory or read from the file (and then kept, budget permitting).
    pub async fn filters(&self, file: &FileMeta) -> Result<Arc<FileFilters>, StorageError> {
        if let Some(filters) = self.cached(&file.path) {
            return Ok(filters);
        }
        let filters = Arc::new(self.read(file).await?);
        self.insert(&file.path, filters.clone());
        Ok(filters)
    }

    /// Drops the entries of files for which `live` is false (files the manifest no longer lists).
    pub fn retain(&self, live: impl Fn(&str) -> bool) {
        let mut state = self.lock();
        let mut freed = 0;
        state.files.retain(|path, entry| {
            let keep = live(path);
            if !keep {
                freed += entry.filters.bytes();
            }
            keep
        });
        state.bytes -= freed;
    }

    /// Bytes of filters held.
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }

    /// Files whose filters are held.
    pub fn files(&self) -> usize {
        self.lock().files.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn cached(&self, path: &str) -> Option<Arc<FileFilters>> {
        let mut state = self.lock();
        state.clock += 1;
        let now = state.clock;
        let entry = state.files.get_mut(path)?;
        entry.last_used = now;
        Some(entry.filters.clone())
    }

    fn insert(&self, path: &str, filters: Arc<FileFilters>) {
        let size = filters.bytes();
        if size > self.budget {
            return;
        }
        let mut state = self.lock();
        while state.bytes + size > self.budget {
            let Some(oldest) = state
                .files
                .iter()
                .min_by_key(|(_, entry)| entry.last_used)
                .map(|(path, _)| path.clone())
            else {
                break;
            };
            if let Some(entry) = state.files.remove(&oldest) {
                state.bytes -= entry.filters.bytes();
            }
        }
        state.clock += 1;
        let last_used = state.clock;
        if let Some(previous) = state
            .files
            .insert(path.to_owned(), Entry { filters, last_used })
        {
            state.bytes -= previous.filters.bytes();
        }
        state.bytes += size;
    }

    async fn read(&self, file: &FileMeta) -> Result<FileFilters, StorageError> {
        let reader = StoredFileReader::new(
            self.objects.clone(),
            Path::from(file.path.as_str()),
            file.bytes,
        );
        let mut builder = ParquetRecordBatchStreamBuilder::new(reader).await?;
        let metadata = builder.metadata().clone();
        let column = metadata
            .file_metadata()
            .schema_descr()
            .columns()
            .iter()
            .position(|column| column.path().string() == COLUMN);
        let mut row_groups = Vec::with_capacity(metadata.num_row_groups());
        for row_group in 0..metadata.num_row_groups() {
            row_groups.push(match column {
                Some(column) => {
                    builder
                        .get_row_group_column_bloom_filter(row_group, column)
                        .await?
                }
                None => None,
            });
        }
        Ok(FileFilters { row_groups })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filters(ids: &[&[u8]], row_groups: usize) -> Arc<FileFilters> {
        let mut filter = Sbbf::new_with_num_of_bytes(1024);
        for id in ids {
            filter.insert(*id);
        }
        Arc::new(FileFilters {
            row_groups: (0..row_groups).map(|_| Some(filter.clone())).collect(),
        })
    }

    fn index(budget: usize) -> TraceIndex {
        TraceIndex::new(Arc::new(object_store::memory::InMemory::new()), budget)
    }

    #[test]
    fn candidates_follow_the_filters_and_missing_filters_match_everything() {
        let file = FileFilters {
            row_groups: vec![filters(&[b"a".as_slice()], 1).row_groups[0].clone(), None],
        };
        assert_eq!(file.candidates(&[b"a".as_slice()]), vec![true, true]);
        assert!(!file.candidates(&[b"zzzz-not-there".as_slice()])[0]);
    }

    #[test]
    fn the_least_recently_used_file_goes_when_over_budget() {
        let one = filters(&[b"x".as_slice()], 1);
        let index = index(2 * one.bytes());
        index.insert("a", one.clone());
        index.insert("b", one.clone());
        assert!(index.cached("a").is_some());
        index.insert("c", one.clone());
        assert!(index.cached("a").is_some());
        assert!(index.cached("b").is_none());
        assert!(index.cached("c").is_some());
        assert_eq!(index.bytes(), 2 * one.bytes());
    }

    #[test]
    fn retain_drops_files_no_longer_listed() {
        let one = filters(&[b"x".as_slice()], 2);
        let index = index(usize::MAX);
        index.insert("live", one.clone());
        index.insert("gone", one.clone());
        index.retain(|path| path == "live");
        assert_eq!(index.files(), 1);
        assert_eq!(index.bytes(), one.bytes());
        assert!(index.cached("gone").is_none());
    }

    #[test]
    fn a_file_larger_than_the_budget_is_not_kept() {
        let index = index(16);
        index.insert("big", filters(&[b"x".as_slice()], 1));
        assert_eq!(index.files(), 0);
    }
}
