//! The manifest: the one list of live Parquet files, with their time ranges, and the WAL sequence number
//! up to which every record is in those files.
//!
//! It is a small JSON document replaced atomically (`object_store` puts are all-or-nothing), so a reader
//! sees either the old or the new file set, and a crash between writing a Parquet file and publishing it
//! leaves an orphan that the next start deletes, never a duplicate.

use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use serde::{Deserialize, Serialize};

use crate::StorageError;
use crate::memtable::TimeRange;
use crate::schema::Table;

/// Object path of the manifest inside the store.
pub const MANIFEST_PATH: &str = "manifest.json";

/// A live Parquet file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileMeta {
    /// The table whose rows the file holds.
    pub table: Table,
    /// Object path inside the store.
    pub path: String,
    /// Start of the hour partition (Unix seconds) the file belongs to.
    pub partition: i64,
    /// Earliest row time, Unix nanoseconds.
    pub min_time: i64,
    /// Latest row time, Unix nanoseconds.
    pub max_time: i64,
    /// Row count.
    pub rows: u64,
    /// File size in bytes.
    pub bytes: u64,
}

impl FileMeta {
    /// The rows' time span.
    pub fn time_range(&self) -> TimeRange {
        TimeRange {
            start: self.min_time,
            end: self.max_time,
        }
    }
}

/// The published state of the Parquet side of the store.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Format version of this document.
    pub version: u32,
    /// Every WAL record with a sequence number up to this one is in `files`.
    pub flushed_seq: u64,
    /// Live files.
    pub files: Vec<FileMeta>,
}

impl Manifest {
    const VERSION: u32 = 1;

    /// Reads the manifest, or an empty one when the store is new.
    pub async fn load(store: &dyn ObjectStore) -> Result<Manifest, StorageError> {
        match store.get(&Path::from(MANIFEST_PATH)).await {
            Ok(result) => {
                let bytes = result.bytes().await?;
                serde_json::from_slice(&bytes).map_err(|error| StorageError::Corrupt {
                    what: MANIFEST_PATH.to_owned(),
                    reason: error.to_string(),
                })
            }
            Err(object_store::Error::NotFound { .. }) => Ok(Manifest {
                version: Self::VERSION,
                ..Manifest::default()
            }),
            Err(error) => Err(error.into()),
        }
    }

    /// Publishes the manifest atomically.
    pub async fn save(&self, store: &dyn ObjectStore) -> Result<(), StorageError> {
        let bytes = serde_json::to_vec_pretty(self).map_err(|error| StorageError::Corrupt {
            what: MANIFEST_PATH.to_owned(),
            reason: error.to_string(),
        })?;
        store.put(&Path::from(MANIFEST_PATH), bytes.into()).await?;
        Ok(())
    }

    /// Live files of `table` whose rows may fall in `range`.
    pub fn files_in(&self, table: Table, range: TimeRange) -> Vec<FileMeta> {
        self.files
            .iter()
            .filter(|file| file.table == table && file.time_range().overlaps(&range))
            .cloned()
            .collect()
    }
}
