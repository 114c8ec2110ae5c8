//! The trace-id index: the `trace_id` bloom filters and page bounds of the span files, held in memory.
//!
//! Span files are sorted by start minute first, so the trace-id statistics of a row group span most of
//! the id space and can rarely rule a trace out; only the bloom filters can. Read from disk on every lookup
//! without a time hint, they were almost all of the bytes a lookup read. Kept here, a lookup tests every
//! row group of every file in memory and opens only the row groups that may hold the trace. Within a row
//! group, the page bounds of `trace_id` (from the page index) narrow each id the filter lets through to
//! the pages that may hold it: the engine's own page pruning can only test the page against all ids of
//! a lookup at once, which for a search's 20 ids keeps most pages of every row group.
//!
//! Files are immutable, so a cached filter never goes stale. The store drops the entries of files the
//! manifest no longer lists whenever it publishes one ([`TraceIndex::retain`]), and the least recently
//! used files go when the filters exceed the byte budget. Cost: the filters' own size, 32 KiB per row
//! group of 32k spans (about 1 byte per span) with the current writer settings, plus ~90 bytes per
//! `trace_id` page (about 16 per row group).

use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Arc, Mutex};

use object_store::ObjectStore;
use object_store::path::Path;
use parquet::arrow::ParquetRecordBatchStreamBuilder;
use parquet::arrow::arrow_reader::{ArrowReaderOptions, RowSelection};
use parquet::bloom_filter::Sbbf;
use parquet::file::metadata::{PageIndexPolicy, ParquetMetaData};
use parquet::file::page_index::column_index::ColumnIndexMetaData;

use crate::StorageError;
use crate::manifest::FileMeta;
use crate::parquet_io::StoredFileReader;

/// Name of the indexed column.
const COLUMN: &str = "trace_id";

/// What the index keeps of one row group: its `trace_id` bloom filter and page bounds.
#[derive(Debug)]
struct RowGroupIndex {
    /// `None`: the row group has no filter, so it may hold any trace.
    filter: Option<Sbbf>,
    /// Rows in the row group.
    rows: usize,
    /// `None`: no page index, so any row may hold any trace the filter lets through.
    pages: Option<TracePages>,
}

/// The `trace_id` pages of one row group, from the file's page index.
#[derive(Debug)]
struct TracePages {
    /// The first row of each page.
    starts: Vec<usize>,
    /// The smallest and largest id of each page.
    bounds: Vec<(Vec<u8>, Vec<u8>)>,
}

/// The `trace_id` bloom filters and page bounds of one file, per row group.
#[derive(Debug)]
pub struct FileFilters {
    row_groups: Vec<RowGroupIndex>,
}

impl FileFilters {
    /// Per row group, the rows that may hold a span of one of `ids`: `None` when none may (the whole
    /// row group when its pages are not known). The bloom filter picks the ids the row group may hold,
    /// and only the pages whose id range holds one of those are kept, so a search's 20 ids cost one page
    /// each where they may be, not every page one of them falls in.
    pub fn candidate_rows(&self, ids: &[&[u8]]) -> Vec<Option<RowSelection>> {
        self.row_groups
            .iter()
            .map(|group| {
                let present: Vec<&[u8]> = ids
                    .iter()
                    .copied()
                    .filter(|id| group.filter.as_ref().is_none_or(|f| f.check(*id)))
                    .collect();
                if present.is_empty() {
                    return None;
                }
                let Some(pages) = &group.pages else {
                    return Some(RowSelection::from_consecutive_ranges(
                        std::iter::once(0..group.rows),
                        group.rows,
                    ));
                };
                let mut ranges: Vec<Range<usize>> = Vec::new();
                for (page, (min, max)) in pages.bounds.iter().enumerate() {
                    let holds = present
                        .iter()
                        .any(|id| min.as_slice() <= *id && *id <= max.as_slice());
                    if !holds {
                        continue;
                    }
                    let start = pages.starts[page];
                    let end = pages.starts.get(page + 1).copied().unwrap_or(group.rows);
                    match ranges.last_mut() {
                        Some(last) if last.end == start => last.end = end,
                        _ => ranges.push(start..end),
                    }
                }
                (!ranges.is_empty())
                    .then(|| RowSelection::from_consecutive_ranges(ranges.into_iter(), group.rows))
            })
            .collect()
    }

    /// Bytes the filters and page bounds hold.
    pub fn bytes(&self) -> usize {
        let blocks: usize = self
            .row_groups
            .iter()
            .filter_map(|group| group.filter.as_ref())
            .map(Sbbf::num_blocks)
            .sum();
        let pages: usize = self
            .row_groups
            .iter()
            .filter_map(|group| group.pages.as_ref())
            .map(|pages| {
                let ids: usize = pages
                    .bounds
                    .iter()
                    .map(|(min, max)| min.len() + max.len())
                    .sum();
                ids + pages.bounds.len() * (size_of::<(Vec<u8>, Vec<u8>)>() + size_of::<usize>())
            })
            .sum();
        blocks * 32 + pages + self.row_groups.len() * size_of::<RowGroupIndex>()
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
        let options = ArrowReaderOptions::new().with_page_index_policy(PageIndexPolicy::Optional);
        let mut builder =
            ParquetRecordBatchStreamBuilder::new_with_options(reader, options).await?;
        let metadata = builder.metadata().clone();
        let column = metadata
            .file_metadata()
            .schema_descr()
            .columns()
            .iter()
            .position(|column| column.path().string() == COLUMN);
        let mut row_groups = Vec::with_capacity(metadata.num_row_groups());
        for row_group in 0..metadata.num_row_groups() {
            let filter = match column {
                Some(column) => {
                    builder
                        .get_row_group_column_bloom_filter(row_group, column)
                        .await?
                }
                None => None,
            };
            row_groups.push(RowGroupIndex {
                filter,
                rows: usize::try_from(metadata.row_group(row_group).num_rows()).unwrap_or(0),
                pages: column.and_then(|column| trace_pages(&metadata, row_group, column)),
            });
        }
        Ok(FileFilters { row_groups })
    }
}

/// The `trace_id` page bounds of `row_group` from the file's page index, if it has a complete one.
fn trace_pages(metadata: &ParquetMetaData, row_group: usize, column: usize) -> Option<TracePages> {
    let locations = metadata
        .offset_index()?
        .get(row_group)?
        .get(column)?
        .page_locations();
    let ColumnIndexMetaData::BYTE_ARRAY(index) =
        metadata.column_index()?.get(row_group)?.get(column)?
    else {
        return None;
    };
    let mut starts = Vec::with_capacity(locations.len());
    let mut bounds = Vec::with_capacity(locations.len());
    for (page, location) in locations.iter().enumerate() {
        starts.push(usize::try_from(location.first_row_index).ok()?);
        bounds.push((
            index.min_value(page)?.to_vec(),
            index.max_value(page)?.to_vec(),
        ));
    }
    Some(TracePages { starts, bounds })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rows `start..end` of a row group of `total` rows, as `candidate_rows` gives them.
    fn rows(start: usize, end: usize, total: usize) -> RowSelection {
        RowSelection::from_consecutive_ranges(std::iter::once(start..end), total)
    }

    fn bloom(ids: &[&[u8]]) -> Sbbf {
        let mut filter = Sbbf::new_with_num_of_bytes(1024);
        for id in ids {
            filter.insert(*id);
        }
        filter
    }

    fn filters(ids: &[&[u8]], row_groups: usize) -> Arc<FileFilters> {
        Arc::new(FileFilters {
            row_groups: (0..row_groups)
                .map(|_| RowGroupIndex {
                    filter: Some(bloom(ids)),
                    rows: 10,
                    pages: None,
                })
                .collect(),
        })
    }

    fn index(budget: usize) -> TraceIndex {
        TraceIndex::new(Arc::new(object_store::memory::InMemory::new()), budget)
    }

    #[test]
    fn candidates_follow_the_filters_and_missing_filters_match_everything() {
        let file = FileFilters {
            row_groups: vec![
                RowGroupIndex {
                    filter: Some(bloom(&[b"a".as_slice()])),
                    rows: 10,
                    pages: None,
                },
                RowGroupIndex {
                    filter: None,
                    rows: 7,
                    pages: None,
                },
            ],
        };
        assert_eq!(
            file.candidate_rows(&[b"a".as_slice()]),
            vec![Some(rows(0, 10, 10)), Some(rows(0, 7, 7))]
        );
        assert_eq!(
            file.candidate_rows(&[b"zzzz-not-there".as_slice()])[0],
            None
        );
    }

    #[test]
    fn each_id_keeps_only_the_pages_of_row_groups_whose_filter_lets_it_through() {
        let pages = || TracePages {
            starts: vec![0, 10, 20, 30],
            bounds: vec![
                (b"a".to_vec(), b"c".to_vec()),
                (b"d".to_vec(), b"f".to_vec()),
                (b"g".to_vec(), b"i".to_vec()),
                (b"j".to_vec(), b"l".to_vec()),
            ],
        };
        let file = FileFilters {
            row_groups: vec![
                RowGroupIndex {
                    filter: Some(bloom(&[b"e".as_slice(), b"h".as_slice()])),
                    rows: 35,
                    pages: Some(pages()),
                },
                RowGroupIndex {
                    filter: Some(bloom(&[b"k".as_slice()])),
                    rows: 35,
                    pages: Some(pages()),
                },
            ],
        };
        // "e" and "h" sit in adjacent pages of the first row group; "k", which its filter rules out
        // there, only in the last page of the second, which runs to the end of the row group.
        assert_eq!(
            file.candidate_rows(&[b"e".as_slice(), b"h".as_slice(), b"k".as_slice()]),
            vec![Some(rows(10, 30, 35)), Some(rows(30, 35, 35))]
        );
        assert_eq!(
            file.candidate_rows(&[b"b".as_slice(), b"k".as_slice()])[1],
            Some(rows(30, 35, 35))
        );
        // An id the bloom filter lets through but no page's bounds hold rules the row group out.
        let outside = FileFilters {
            row_groups: vec![RowGroupIndex {
                filter: None,
                rows: 35,
                pages: Some(pages()),
            }],
        };
        assert_eq!(outside.candidate_rows(&[b"z".as_slice()]), vec![None]);
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
