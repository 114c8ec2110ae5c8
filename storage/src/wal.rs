//! Write-ahead log: checksummed records, group commit, fsync before acknowledgement.
//!
//! Every accepted OTLP export is appended here and acknowledged only once its bytes are on disk. A
//! dedicated writer thread receives appends over a channel, takes every append waiting at that moment
//! as one *group*, writes the group with one `write` and makes it durable with one `fsync`
//! (`File::sync_data`); only then are the records' `on_durable` callbacks run (in sequence order) and
//! their futures completed.
//!
//! # On-disk format
//!
//! The log is a directory of segment files named `wal-{first_seq:020}.log`, where `first_seq` is the
//! sequence number of the first record written to the segment. A segment is a plain concatenation of
//! records:
//!
//! ```text
//! [u32 LE payload_len][u32 LE crc32c(seq bytes, kind byte, payload)][u64 LE seq][u8 kind][payload]
//! ```
//!
//! Sequence numbers are contiguous and increase across segments. The writer moves on to a new segment
//! (between groups) once the current one holds at least [`WalOptions::segment_bytes`]; creating a
//! segment also fsyncs the directory so the new file's name is durable.
//!
//! # Recovery
//!
//! [`Wal::open`] validates every record. A torn or corrupt tail of the last segment (a crash in the middle
//! of a write) is cut off with `set_len`; corruption inside an earlier segment stops the replay of that
//! segment only. Both are described in the [`ReplayReport`]. Records that are already in Parquet
//! (`seq <= after_seq`) are skipped, and [`Wal::truncate_through`] deletes segments that hold nothing else.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::future::Future;
use std::io::{self, Write};
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, mpsc};
use std::thread::{self, JoinHandle, ThreadId};

use tokio::sync::oneshot;

/// Bytes of a record header: payload length, checksum, sequence number, kind.
const HEADER_LEN: usize = 4 + 4 + 8 + 1;

/// Largest payload accepted by [`Wal::append`]; a larger length field on disk is corruption.
const MAX_PAYLOAD_LEN: u32 = 1 << 30;

/// Default [`WalOptions::segment_bytes`]: 64 MiB.
const DEFAULT_SEGMENT_BYTES: u64 = 64 << 20;

/// Errors of the write-ahead log.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    /// A file-system operation on the WAL directory or a segment failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, including the path involved.
        context: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Writing or fsyncing a group of records failed (for example, the disk is full); none of the
    /// group's records is durable. Shared by every record of the failed group.
    #[error("WAL write failed: {0}")]
    Write(#[source] Arc<io::Error>),
    /// The payload is larger than the 1 GiB a record may hold.
    #[error("WAL record payload of {0} bytes exceeds the 1 GiB limit")]
    RecordTooLarge(usize),
    /// The WAL has been closed (or its writer thread is gone); nothing more can be appended.
    #[error("the WAL is closed")]
    Closed,
}

/// Attaches a description of the failed operation to an I/O error.
trait IoContext<T> {
    /// Converts the error into [`WalError::Io`] with the context `what()`.
    fn context(self, what: impl FnOnce() -> String) -> Result<T, WalError>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T, WalError> {
        self.map_err(|source| WalError::Io {
            context: what(),
            source,
        })
    }
}

/// What a record holds; stored as one byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum RecordKind {
    /// An OTLP trace export (`ExportTraceServiceRequest`).
    Traces = 1,
    /// An OTLP metrics export (`ExportMetricsServiceRequest`).
    Metrics = 2,
}

impl RecordKind {
    /// The kind stored as `byte`, if it is a known one.
    fn from_byte(byte: u8) -> Option<Self> {
        match byte {
            1 => Some(Self::Traces),
            2 => Some(Self::Metrics),
            _ => None,
        }
    }
}

/// Tuning of a [`Wal`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalOptions {
    /// Move on to a new segment once the current one holds at least this many bytes (default 64 MiB).
    /// Rotation happens between groups, so a segment may end up somewhat larger.
    pub segment_bytes: u64,
    /// Fsync every group (default `true`). `false` gives up durability and is meant for benchmarks only.
    pub sync: bool,
}

impl Default for WalOptions {
    fn default() -> Self {
        Self {
            segment_bytes: DEFAULT_SEGMENT_BYTES,
            sync: true,
        }
    }
}

/// One record read back from the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalRecord {
    /// Sequence number, assigned by the writer when the record was appended.
    pub seq: u64,
    /// What the payload holds.
    pub kind: RecordKind,
    /// The bytes given to [`Wal::append`].
    pub payload: Vec<u8>,
}

/// What replay found: records read, segments, and any corruption that was cut off.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplayReport {
    /// Number of records replayed, i.e. valid records with `seq > after_seq` (the length of the returned
    /// record list).
    pub records: usize,
    /// Number of segment files found.
    pub segments: usize,
    /// One human-readable description per corruption found: file, offset, reason and how many bytes
    /// were cut off (or, where nothing may be modified, ignored).
    pub truncated: Vec<String>,
}

/// One segment file as the log tracks it.
#[derive(Debug)]
struct Segment {
    /// Sequence number the segment's name carries: no record in it has a smaller one, and every record
    /// in earlier segments has a smaller one.
    first_seq: u64,
    /// Full path of the file.
    path: PathBuf,
    /// Bytes in the file (for the segment being written: bytes made durable so far).
    len: u64,
}

/// State shared between the [`Wal`] handle and its writer thread.
#[derive(Debug)]
struct Shared {
    /// Segments in sequence order; the last one is the segment being written.
    segments: Mutex<Vec<Segment>>,
    /// Number of groups committed (tests check that group commit batches).
    #[cfg(test)]
    groups: std::sync::atomic::AtomicUsize,
    /// Number of upcoming group writes that fail half-way (tests simulate a full disk).
    #[cfg(test)]
    fail_writes: std::sync::atomic::AtomicUsize,
}

/// One append waiting for the writer thread.
struct Request {
    kind: RecordKind,
    payload: Vec<u8>,
    on_durable: Box<dyn FnOnce(u64) + Send>,
    done: oneshot::Sender<Result<u64, WalError>>,
}

/// The write-ahead log. `Send + Sync`; share it through an `Arc`.
pub struct Wal {
    shared: Arc<Shared>,
    /// Channel to the writer thread; `None` once closed.
    sender: Mutex<Option<mpsc::Sender<Request>>>,
    /// The writer thread, until it has been joined.
    writer: Mutex<Option<JoinHandle<()>>>,
    /// Id of the writer thread, so that `close` called from an `on_durable` callback does not join itself.
    writer_id: ThreadId,
}

impl fmt::Debug for Wal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let segments = lock(&self.shared.segments);
        f.debug_struct("Wal")
            .field("segments", &segments.len())
            .field("disk_bytes", &segments.iter().map(|s| s.len).sum::<u64>())
            .finish_non_exhaustive()
    }
}

impl Wal {
    /// Opens (creating if missing) the WAL in `dir`; replays every record with seq > `after_seq`
    /// (records <= after_seq are already in Parquet and are skipped), returning them in seq order.
    /// A torn or corrupt tail of the LAST segment is truncated away (file set_len) and reported; corruption
    /// in an earlier segment is reported and replay of that segment stops there (later segments still replay).
    /// Never panics on any file content. Spawns the writer thread.
    ///
    /// New records are numbered from one past the highest sequence number found (or `after_seq + 1` if
    /// that is larger).
    pub fn open(
        dir: &Path,
        after_seq: u64,
        options: WalOptions,
    ) -> Result<(Wal, Vec<WalRecord>, ReplayReport), WalError> {
        fs::create_dir_all(dir).context(|| format!("creating WAL directory {}", dir.display()))?;
        let Scan {
            records,
            report,
            mut segments,
            highest_seq,
        } = scan(dir, after_seq, Mode::Repair)?;

        // Never number a record below the name of the segment it goes into, so names stay in order.
        let mut next_seq = after_seq.saturating_add(1);
        if let Some(highest) = highest_seq {
            next_seq = next_seq.max(highest.saturating_add(1));
        }
        if let Some(last) = segments.last() {
            next_seq = next_seq.max(last.first_seq);
        }

        let file = match segments.last() {
            Some(last) => OpenOptions::new()
                .append(true)
                .open(&last.path)
                .context(|| format!("opening WAL segment {}", last.path.display()))?,
            None => {
                let (file, segment) = create_segment(dir, next_seq, options.sync)
                    .context(|| format!("creating the first WAL segment in {}", dir.display()))?;
                segments.push(segment);
                file
            }
        };
        let durable_len = segments.last().map_or(0, |s| s.len);

        let shared = Arc::new(Shared {
            segments: Mutex::new(segments),
            #[cfg(test)]
            groups: std::sync::atomic::AtomicUsize::new(0),
            #[cfg(test)]
            fail_writes: std::sync::atomic::AtomicUsize::new(0),
        });
        let writer = Writer {
            dir: dir.to_path_buf(),
            options,
            shared: Arc::clone(&shared),
            file,
            durable_len,
            dirty: false,
            next_seq,
        };
        let (sender, receiver) = mpsc::channel();
        let handle = thread::Builder::new()
            .name("meshscope-wal".to_owned())
            .spawn(move || writer.run(receiver))
            .context(|| "spawning the WAL writer thread".to_owned())?;
        let wal = Wal {
            shared,
            sender: Mutex::new(Some(sender)),
            writer_id: handle.thread().id(),
            writer: Mutex::new(Some(handle)),
        };
        Ok((wal, records, report))
    }

    /// Reads the WAL without modifying anything (for read-only tools while a collector may be running):
    /// same skipping/validation as open, but never truncates, never creates files.
    ///
    /// A missing directory is an empty log. A torn tail of the last segment (possibly a group the running
    /// collector is writing right now) is reported but left in place.
    pub fn read_only(
        dir: &Path,
        after_seq: u64,
    ) -> Result<(Vec<WalRecord>, ReplayReport), WalError> {
        match fs::metadata(dir) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Ok((Vec::new(), ReplayReport::default()));
            }
            other => {
                other.context(|| format!("reading WAL directory {}", dir.display()))?;
            }
        }
        let scan = scan(dir, after_seq, Mode::ReadOnly)?;
        Ok((scan.records, scan.report))
    }

    /// Appends one record. The writer thread batches every append waiting at that moment into one write
    /// and one fsync (group commit). After the fsync succeeds it calls `on_durable(seq)` for each record of
    /// the group IN SEQ ORDER (on the writer thread), then completes the returned future with Ok(seq).
    /// If the write or fsync fails (e.g. disk full), every record of that group gets Err, their
    /// on_durable is NOT called, and the segment is cut back (set_len) to the end of the last durable
    /// record so the file stays valid; later appends may succeed again.
    ///
    /// The record is queued when `append` is called, not when the future is first polled, so records
    /// are numbered in call order; dropping the future does not withdraw the record. Fails with
    /// [`WalError::RecordTooLarge`] for a payload over 1 GiB and [`WalError::Closed`] after
    /// [`close`](Self::close). A panicking `on_durable` is caught and logged.
    pub fn append(
        &self,
        kind: RecordKind,
        payload: Vec<u8>,
        on_durable: Box<dyn FnOnce(u64) + Send>,
    ) -> impl Future<Output = Result<u64, WalError>> + Send + 'static + use<> {
        let submitted = self.submit(kind, payload, on_durable);
        async move {
            match submitted?.await {
                Ok(result) => result,
                // The writer thread is gone without answering.
                Err(_) => Err(WalError::Closed),
            }
        }
    }

    /// Queues an append for the writer thread.
    fn submit(
        &self,
        kind: RecordKind,
        payload: Vec<u8>,
        on_durable: Box<dyn FnOnce(u64) + Send>,
    ) -> Result<oneshot::Receiver<Result<u64, WalError>>, WalError> {
        if payload.len() > MAX_PAYLOAD_LEN as usize {
            return Err(WalError::RecordTooLarge(payload.len()));
        }
        let (done, receiver) = oneshot::channel();
        let sender = lock(&self.sender);
        let sender = sender.as_ref().ok_or(WalError::Closed)?;
        sender
            .send(Request {
                kind,
                payload,
                on_durable,
                done,
            })
            .map_err(|_| WalError::Closed)?;
        Ok(receiver)
    }

    /// Deletes every segment all of whose records have seq <= `seq` (they are safely in Parquet).
    /// Never deletes the segment currently being written.
    pub fn truncate_through(&self, seq: u64) -> Result<(), WalError> {
        let mut segments = lock(&self.shared.segments);
        // Every record of a segment is numbered below the next segment's first_seq.
        let deletable = segments
            .windows(2)
            .take_while(|pair| pair[1].first_seq.saturating_sub(1) <= seq)
            .count();
        let mut removed = 0;
        let result = segments.iter().take(deletable).try_for_each(|segment| {
            match fs::remove_file(&segment.path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(WalError::Io {
                        context: format!("deleting WAL segment {}", segment.path.display()),
                        source,
                    });
                }
            }
            tracing::debug!(path = %segment.path.display(), "deleted WAL segment");
            removed += 1;
            Ok(())
        });
        segments.drain(..removed);
        result
    }

    /// Total bytes in all segment files (for metrics and backpressure).
    pub fn disk_bytes(&self) -> u64 {
        lock(&self.shared.segments).iter().map(|s| s.len).sum()
    }

    /// Stops the writer thread after writing and fsyncing everything already appended; later appends fail
    /// with WalError::Closed. Idempotent. Also called on Drop.
    ///
    /// Blocks until the writer thread has finished, except when called from an `on_durable` callback
    /// (on the writer thread itself), where it only stops further appends.
    pub fn close(&self) {
        // Dropping the sender ends the writer's loop once it has drained the queue.
        drop(lock(&self.sender).take());
        if thread::current().id() == self.writer_id {
            return;
        }
        let mut writer = lock(&self.writer);
        if let Some(handle) = writer.take()
            && handle.join().is_err()
        {
            tracing::error!("the WAL writer thread panicked");
        }
    }
}

impl Drop for Wal {
    fn drop(&mut self) {
        self.close();
    }
}

/// Locks `mutex`, ignoring poisoning (all guarded state stays consistent between statements).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The file name of the segment whose first record is `first_seq`.
fn segment_file_name(first_seq: u64) -> String {
    format!("wal-{first_seq:020}.log")
}

/// The `first_seq` of a segment file name, or `None` if `name` is not one.
fn parse_segment_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("wal-")?.strip_suffix(".log")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Creates the empty segment `first_seq` in `dir` for appending and, with `sync`, fsyncs `dir`.
///
/// An empty file of that name left by an earlier failed attempt is reused; a non-empty one is an error.
fn create_segment(dir: &Path, first_seq: u64, sync: bool) -> io::Result<(File, Segment)> {
    let path = dir.join(segment_file_name(first_seq));
    let file = OpenOptions::new().create(true).append(true).open(&path)?;
    if file.metadata()?.len() != 0 {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!(
                "new WAL segment {} already exists and is not empty",
                path.display()
            ),
        ));
    }
    if sync {
        File::open(dir)?.sync_all()?;
    }
    tracing::debug!(path = %path.display(), "created WAL segment");
    let segment = Segment {
        first_seq,
        path,
        len: 0,
    };
    Ok((file, segment))
}

/// The checksum of a record: crc32c over the sequence number (LE), the kind byte and the payload.
fn record_crc(seq: u64, kind: u8, payload: &[u8]) -> u32 {
    let crc = crc32c::crc32c(&seq.to_le_bytes());
    let crc = crc32c::crc32c_append(crc, &[kind]);
    crc32c::crc32c_append(crc, payload)
}

/// Appends the encoded record to `buf`. `payload` is at most [`MAX_PAYLOAD_LEN`] bytes (checked by
/// [`Wal::append`]).
fn encode_record(buf: &mut Vec<u8>, seq: u64, kind: RecordKind, payload: &[u8]) {
    let kind = kind as u8;
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    buf.extend_from_slice(&len.to_le_bytes());
    buf.extend_from_slice(&record_crc(seq, kind, payload).to_le_bytes());
    buf.extend_from_slice(&seq.to_le_bytes());
    buf.push(kind);
    buf.extend_from_slice(payload);
}

/// The outcome of decoding at one offset of a segment.
#[derive(Debug, PartialEq, Eq)]
enum Decoded<'a> {
    /// The segment ends exactly here.
    End,
    /// A valid record, followed by the next one at `next`.
    Record {
        seq: u64,
        kind: RecordKind,
        payload: &'a [u8],
        next: usize,
    },
    /// The bytes from here on are no valid record, for this reason.
    Corrupt(String),
}

/// Decodes the record at `offset` of `data`; never panics.
fn decode_at(data: &[u8], offset: usize) -> Decoded<'_> {
    let rest = data.get(offset..).unwrap_or_default();
    if rest.is_empty() {
        return Decoded::End;
    }
    let Some(header) = rest.first_chunk::<HEADER_LEN>() else {
        return Decoded::Corrupt(format!(
            "torn record header ({} of {HEADER_LEN} bytes)",
            rest.len()
        ));
    };
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    let seq = u64::from_le_bytes([
        header[8], header[9], header[10], header[11], header[12], header[13], header[14],
        header[15],
    ]);
    let kind = header[16];
    if len > MAX_PAYLOAD_LEN {
        return Decoded::Corrupt(format!("absurd payload length {len}"));
    }
    let len = len as usize;
    let Some(payload) = rest.get(HEADER_LEN..HEADER_LEN + len) else {
        return Decoded::Corrupt(format!(
            "torn record (payload of {len} bytes, only {} present)",
            rest.len() - HEADER_LEN
        ));
    };
    if record_crc(seq, kind, payload) != crc {
        return Decoded::Corrupt(format!("checksum mismatch (record claims seq {seq})"));
    }
    let Some(kind) = RecordKind::from_byte(kind) else {
        return Decoded::Corrupt(format!("unknown record kind {kind}"));
    };
    Decoded::Record {
        seq,
        kind,
        payload,
        next: offset + HEADER_LEN + len,
    }
}

/// Whether a scan may repair the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Truncate a corrupt tail of the last segment ([`Wal::open`]).
    Repair,
    /// Modify nothing ([`Wal::read_only`]).
    ReadOnly,
}

/// The result of reading every segment of a WAL directory.
struct Scan {
    /// Valid records with `seq > after_seq`, in seq order.
    records: Vec<WalRecord>,
    report: ReplayReport,
    /// Every segment in order, with its (possibly truncated) length.
    segments: Vec<Segment>,
    /// The highest sequence number of any valid record, skipped ones included.
    highest_seq: Option<u64>,
}

/// The segment files in `dir`, in sequence order (lengths not yet filled in).
fn list_segments(dir: &Path) -> Result<Vec<Segment>, WalError> {
    let context = || format!("listing WAL directory {}", dir.display());
    let mut segments = Vec::new();
    for entry in fs::read_dir(dir).context(context)? {
        let entry = entry.context(context)?;
        let Some(first_seq) = entry.file_name().to_str().and_then(parse_segment_file_name) else {
            continue;
        };
        if !entry.file_type().context(context)?.is_file() {
            continue;
        }
        segments.push(Segment {
            first_seq,
            path: entry.path(),
            len: 0,
        });
    }
    segments.sort_by_key(|s| s.first_seq);
    Ok(segments)
}

/// Reads and validates every segment in `dir`, keeping records with `seq > after_seq`.
fn scan(dir: &Path, after_seq: u64, mode: Mode) -> Result<Scan, WalError> {
    let mut segments = list_segments(dir)?;
    let mut records = Vec::new();
    let mut truncated = Vec::new();
    let mut highest_seq: Option<u64> = None;
    let count = segments.len();
    for (index, segment) in segments.iter_mut().enumerate() {
        let path = &segment.path;
        let data = fs::read(path).context(|| format!("reading WAL segment {}", path.display()))?;
        segment.len = data.len() as u64;
        let mut offset = 0;
        let corruption = loop {
            match decode_at(&data, offset) {
                Decoded::End => break None,
                Decoded::Corrupt(reason) => break Some(reason),
                Decoded::Record {
                    seq,
                    kind,
                    payload,
                    next,
                } => {
                    highest_seq = Some(highest_seq.map_or(seq, |h| h.max(seq)));
                    if seq > after_seq {
                        records.push(WalRecord {
                            seq,
                            kind,
                            payload: payload.to_vec(),
                        });
                    }
                    offset = next;
                }
            }
        };
        let Some(reason) = corruption else {
            continue;
        };
        let bytes = data.len() - offset;
        let is_last = index + 1 == count;
        let description = match (is_last, mode) {
            (true, Mode::Repair) => {
                let file = OpenOptions::new()
                    .write(true)
                    .open(path)
                    .context(|| format!("opening WAL segment {} to truncate it", path.display()))?;
                file.set_len(offset as u64)
                    .and_then(|()| file.sync_data())
                    .context(|| format!("truncating WAL segment {}", path.display()))?;
                segment.len = offset as u64;
                format!(
                    "{}: offset {offset}: {reason}; {bytes} bytes cut off",
                    path.display()
                )
            }
            (true, Mode::ReadOnly) => format!(
                "{}: offset {offset}: {reason}; {bytes} bytes ignored (read-only, not truncated)",
                path.display()
            ),
            (false, _) => format!(
                "{}: offset {offset}: {reason}; {bytes} bytes ignored (not the last segment, \
                 replay of this segment stopped here)",
                path.display()
            ),
        };
        tracing::warn!("WAL corruption: {description}");
        truncated.push(description);
    }
    records.sort_by_key(|r| r.seq);
    let report = ReplayReport {
        records: records.len(),
        segments: count,
        truncated,
    };
    Ok(Scan {
        records,
        report,
        segments,
        highest_seq,
    })
}

/// The writer thread's state.
struct Writer {
    dir: PathBuf,
    options: WalOptions,
    shared: Arc<Shared>,
    /// The segment being written, opened for appending.
    file: File,
    /// Bytes of the current segment that are valid and durable.
    durable_len: u64,
    /// Whether the current segment may hold bytes past `durable_len` (a failed write could not be cut
    /// back); nothing is written until it has been.
    dirty: bool,
    /// Sequence number of the next record.
    next_seq: u64,
}

impl Writer {
    /// Commits groups until every [`Wal`] sender is gone and the queue is drained.
    fn run(mut self, receiver: mpsc::Receiver<Request>) {
        while let Ok(first) = receiver.recv() {
            let mut group = vec![first];
            group.extend(receiver.try_iter());
            self.commit(group);
        }
    }

    /// Writes and fsyncs one group, then reports the outcome to every record of it.
    fn commit(&mut self, group: Vec<Request>) {
        match self.write_group(&group) {
            Ok(first_seq) => {
                #[cfg(test)]
                self.shared
                    .groups
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                for (index, request) in group.into_iter().enumerate() {
                    let seq = first_seq + index as u64;
                    let Request {
                        on_durable, done, ..
                    } = request;
                    if panic::catch_unwind(AssertUnwindSafe(|| on_durable(seq))).is_err() {
                        tracing::error!(seq, "a WAL on_durable callback panicked");
                    }
                    // The caller may have dropped the future; the record is durable regardless.
                    let _ = done.send(Ok(seq));
                }
            }
            Err(error) => {
                tracing::error!(records = group.len(), %error, "WAL group commit failed");
                let error = Arc::new(error);
                for request in group {
                    let _ = request.done.send(Err(WalError::Write(Arc::clone(&error))));
                }
            }
        }
    }

    /// Writes and fsyncs `group`, returning the sequence number of its first record. On failure the
    /// segment is cut back to `durable_len`.
    fn write_group(&mut self, group: &[Request]) -> io::Result<u64> {
        self.prepare()?;
        let first_seq = self.next_seq;
        let end_seq = first_seq
            .checked_add(group.len() as u64)
            .ok_or_else(|| io::Error::other("WAL sequence numbers exhausted"))?;
        let bytes = group
            .iter()
            .map(|r| HEADER_LEN + r.payload.len())
            .sum::<usize>();
        let mut buf = Vec::with_capacity(bytes);
        for (index, request) in group.iter().enumerate() {
            encode_record(
                &mut buf,
                first_seq + index as u64,
                request.kind,
                &request.payload,
            );
        }
        if let Err(error) = self.write_and_sync(&buf) {
            self.cut_back();
            return Err(error);
        }
        self.next_seq = end_seq;
        self.durable_len += buf.len() as u64;
        if let Some(current) = lock(&self.shared.segments).last_mut() {
            current.len = self.durable_len;
        }
        Ok(first_seq)
    }

    /// Gets the current segment ready for the next group: cuts back a failed write that could not be cut
    /// back before, and moves on to a new segment when the current one is full.
    fn prepare(&mut self) -> io::Result<()> {
        if self.dirty {
            self.file.set_len(self.durable_len)?;
            if self.options.sync {
                self.file.sync_data()?;
            }
            self.dirty = false;
        }
        if self.durable_len > 0 && self.durable_len >= self.options.segment_bytes {
            let (file, segment) = create_segment(&self.dir, self.next_seq, self.options.sync)?;
            self.file = file;
            self.durable_len = 0;
            lock(&self.shared.segments).push(segment);
        }
        Ok(())
    }

    /// Appends `buf` to the current segment and, with `sync`, fsyncs it.
    fn write_and_sync(&mut self, buf: &[u8]) -> io::Result<()> {
        #[cfg(test)]
        if self
            .shared
            .fail_writes
            .fetch_update(
                std::sync::atomic::Ordering::Relaxed,
                std::sync::atomic::Ordering::Relaxed,
                |n| n.checked_sub(1),
            )
            .is_ok()
        {
            self.file.write_all(&buf[..buf.len() / 2])?;
            return Err(io::Error::other("injected write failure"));
        }
        self.file.write_all(buf)?;
        if self.options.sync {
            self.file.sync_data()?;
        }
        Ok(())
    }

    /// Cuts the current segment back to its durable length after a failed write; if even that fails,
    /// marks it dirty so the next group retries before writing.
    fn cut_back(&mut self) {
        let result = self.file.set_len(self.durable_len).and_then(|()| {
            if self.options.sync {
                self.file.sync_data()
            } else {
                Ok(())
            }
        });
        if let Err(error) = result {
            tracing::error!(%error, "cannot cut the WAL segment back after a failed write");
            self.dirty = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    /// A fresh directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> io::Result<Self> {
            let path =
                std::env::temp_dir().join(format!("meshscope-wal-test-{}", uuid::Uuid::new_v4()));
            fs::create_dir_all(&path)?;
            Ok(Self(path))
        }

        fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn noop() -> Box<dyn FnOnce(u64) + Send> {
        Box::new(|_| {})
    }

    fn payload(i: u64, len: usize) -> Vec<u8> {
        (0..len).map(|j| (i as usize * 31 + j * 7) as u8).collect()
    }

    fn kind_of(i: u64) -> RecordKind {
        if i.is_multiple_of(3) {
            RecordKind::Metrics
        } else {
            RecordKind::Traces
        }
    }

    fn expected(seqs: impl IntoIterator<Item = u64>, len: usize) -> Vec<WalRecord> {
        seqs.into_iter()
            .map(|seq| WalRecord {
                seq,
                kind: kind_of(seq),
                payload: payload(seq, len),
            })
            .collect()
    }

    /// Tiny segments: rotation after every few records.
    fn small_segments() -> WalOptions {
        WalOptions {
            segment_bytes: 256,
            sync: true,
        }
    }

    /// Appends records `first..first + count` one by one (one group each), checking their numbers.
    async fn append_records(wal: &Wal, first: u64, count: u64, len: usize) -> TestResult {
        for seq in first..first + count {
            let got = wal.append(kind_of(seq), payload(seq, len), noop()).await?;
            assert_eq!(got, seq);
        }
        Ok(())
    }

    fn segment_files(dir: &Path) -> io::Result<Vec<PathBuf>> {
        let mut files = Vec::new();
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            if entry
                .file_name()
                .to_str()
                .and_then(parse_segment_file_name)
                .is_some()
            {
                files.push(entry.path());
            }
        }
        files.sort();
        Ok(files)
    }

    fn last_segment(dir: &Path) -> Result<PathBuf, Box<dyn std::error::Error>> {
        Ok(segment_files(dir)?.pop().ok_or("no segment files")?)
    }

    fn file_len(path: &Path) -> io::Result<u64> {
        Ok(fs::metadata(path)?.len())
    }

    fn total_file_bytes(dir: &Path) -> io::Result<u64> {
        segment_files(dir)?.iter().map(|p| file_len(p)).sum()
    }

    /// Every file name, length and content in `dir`.
    fn snapshot(dir: &Path) -> io::Result<Vec<(PathBuf, Vec<u8>)>> {
        let mut entries = Vec::new();
        for entry in fs::read_dir(dir)? {
            let path = entry?.path();
            let content = if path.is_file() {
                fs::read(&path)?
            } else {
                Vec::new()
            };
            entries.push((path, content));
        }
        entries.sort();
        Ok(entries)
    }

    /// Encoded size of a record with a `len`-byte payload.
    fn record_size(len: usize) -> u64 {
        (HEADER_LEN + len) as u64
    }

    #[test]
    fn segment_file_names_round_trip() {
        assert_eq!(segment_file_name(42), "wal-00000000000000000042.log");
        assert_eq!(parse_segment_file_name(&segment_file_name(42)), Some(42));
        assert_eq!(
            parse_segment_file_name(&segment_file_name(u64::MAX)),
            Some(u64::MAX)
        );
        assert_eq!(parse_segment_file_name("wal-42.log"), None);
        assert_eq!(
            parse_segment_file_name("wal-0000000000000000004a.log"),
            None
        );
        assert_eq!(
            parse_segment_file_name("wal-+0000000000000000042.log"),
            None
        );
        assert_eq!(
            parse_segment_file_name("wal-99999999999999999999.log"),
            None
        );
        assert_eq!(
            parse_segment_file_name("wal-00000000000000000042.log.tmp"),
            None
        );
    }

    #[tokio::test]
    async fn round_trip_across_rotated_segments() -> TestResult {
        let dir = TempDir::new()?;
        let (wal, records, report) = Wal::open(dir.path(), 0, small_segments())?;
        assert!(records.is_empty());
        assert_eq!(
            report,
            ReplayReport {
                records: 0,
                segments: 0,
                truncated: vec![]
            }
        );
        append_records(&wal, 1, 40, 40).await?;
        assert_eq!(wal.disk_bytes(), total_file_bytes(dir.path())?);
        assert_eq!(wal.disk_bytes(), 40 * record_size(40));
        wal.close();

        let files = segment_files(dir.path())?;
        assert!(
            files.len() >= 5,
            "expected rotation, got {} segments",
            files.len()
        );
        // Each segment is named after its first record; none but the last is under the size limit.
        for (i, file) in files.iter().enumerate() {
            let data = fs::read(file)?;
            let name = file
                .file_name()
                .and_then(|n| n.to_str())
                .ok_or("bad name")?;
            match decode_at(&data, 0) {
                Decoded::Record { seq, .. } => assert_eq!(Some(seq), parse_segment_file_name(name)),
                other => panic!("{name}: {other:?}"),
            }
            if i + 1 < files.len() {
                assert!(data.len() as u64 >= small_segments().segment_bytes);
            }
        }

        let (wal, records, report) = Wal::open(dir.path(), 0, small_segments())?;
        assert_eq!(records, expected(1..=40, 40));
        assert_eq!(report.records, 40);
        assert_eq!(report.segments, files.len());
        assert!(report.truncated.is_empty(), "{:?}", report.truncated);
        assert_eq!(wal.disk_bytes(), 40 * record_size(40));
        Ok(())
    }

    #[tokio::test]
    async fn group_commit_batches_and_calls_on_durable_in_seq_order() -> TestResult {
        let dir = TempDir::new()?;
        let (wal, _, _) = Wal::open(dir.path(), 0, WalOptions::default())?;
        let durable = Arc::new(Mutex::new(Vec::new()));
        let futures: Vec<_> = (1..=1000u64)
            .map(|i| {
                let durable = Arc::clone(&durable);
                wal.append(
                    kind_of(i),
                    payload(i, 100),
                    Box::new(move |seq| lock(&durable).push(seq)),
                )
            })
            .collect();
        let results = futures::future::join_all(futures).await;
        let seqs = results.into_iter().collect::<Result<Vec<_>, _>>()?;
        // Numbered in call order.
        assert_eq!(seqs, (1..=1000).collect::<Vec<_>>());
        assert_eq!(*lock(&durable), (1..=1000).collect::<Vec<_>>());
        let groups = wal.shared.groups.load(Ordering::Relaxed);
        assert!(groups < 1000, "{groups} groups for 1000 records");
        assert!(groups >= 1);

        // The future completes only after on_durable ran.
        let called = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&called);
        let seq = wal
            .append(
                RecordKind::Traces,
                b"x".to_vec(),
                Box::new(move |_| flag.store(true, Ordering::SeqCst)),
            )
            .await?;
        assert_eq!(seq, 1001);
        assert!(called.load(Ordering::SeqCst));
        wal.close();

        let (records, report) = Wal::read_only(dir.path(), 0)?;
        assert_eq!(report.records, 1001);
        assert_eq!(records[..1000], expected(1..=1000, 100)[..]);
        Ok(())
    }

    #[tokio::test]
    async fn concurrent_appends_from_many_tasks() -> TestResult {
        let dir = TempDir::new()?;
        let (wal, _, _) = Wal::open(dir.path(), 0, small_segments())?;
        let wal = Arc::new(wal);
        let durable = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for i in 0..200u64 {
            let wal = Arc::clone(&wal);
            let durable = Arc::clone(&durable);
            tasks.push(tokio::spawn(async move {
                wal.append(
                    RecordKind::Metrics,
                    payload(i, 10),
                    Box::new(move |seq| lock(&durable).push(seq)),
                )
                .await
            }));
        }
        let mut seqs = Vec::new();
        for task in tasks {
            seqs.push(task.await??);
        }
        seqs.sort_unstable();
        assert_eq!(seqs, (1..=200).collect::<Vec<_>>());
        assert_eq!(*lock(&durable), (1..=200).collect::<Vec<_>>());
        wal.close();
        let (records, report) = Wal::read_only(dir.path(), 0)?;
        assert_eq!(records.iter().map(|r| r.seq).collect::<Vec<_>>(), seqs);
        assert!(report.truncated.is_empty());
        Ok(())
    }

    #[tokio::test]
    async fn torn_tail_is_cut_reported_and_earlier_records_survive() -> TestResult {
        let size = record_size(100);
        // Cut points inside the last record: in its payload, in its header, right after the length.
        for cut in [30, size - 5, size - 4, size - 1] {
            let dir = TempDir::new()?;
            let (wal, _, _) = Wal::open(dir.path(), 0, WalOptions::default())?;
            append_records(&wal, 1, 10, 100).await?;
            wal.close();
            let path = last_segment(dir.path())?;
            let len = file_len(&path)?;
            assert_eq!(len, 10 * size);
            OpenOptions::new()
                .write(true)
                .open(&path)?
                .set_len(len - cut)?;

            let (wal, records, report) = Wal::open(dir.path(), 0, WalOptions::default())?;
            assert_eq!(records, expected(1..=9, 100));
            assert_eq!(report.truncated.len(), 1, "{:?}", report.truncated);
            let description = &report.truncated[0];
            assert!(
                description.contains("wal-00000000000000000001.log"),
                "{description}"
            );
            assert!(
                description.contains(&format!("offset {}", 9 * size)),
                "{description}"
            );
            assert!(
                description.contains(&format!("{} bytes cut", size - cut)),
                "{description}"
            );
            assert!(description.contains("torn"), "{description}");
            assert_eq!(file_len(&path)?, 9 * size);
            assert_eq!(wal.disk_bytes(), 9 * size);

            // The lost record's number is reused, and the log is clean afterwards.
            append_records(&wal, 10, 1, 100).await?;
            wal.close();
            let (_, records, report) = Wal::open(dir.path(), 0, WalOptions::default())?;
            assert_eq!(records, expected(1..=10, 100));
            assert!(report.truncated.is_empty(), "{:?}", report.truncated);
        }
        Ok(())
    }

    #[tokio::test]
    async fn flipped_byte_in_last_record_is_caught_by_checksum() -> TestResult {
        let dir = TempDir::new()?;
        let (wal, _, _) = Wal::open(dir.path(), 0, WalOptions::default())?;
        append_records(&wal, 1, 10, 100).await?;
        wal.close();
        let path = last_segment(dir.path())?;
        let mut data = fs::read(&path)?;
        let middle = data.len() - 50;
        data[middle] ^= 0x01;
        fs::write(&path, &data)?;

        let (wal, records, report) = Wal::open(dir.path(), 0, WalOptions::default())?;
        assert_eq!(records, expected(1..=9, 100));
        assert_eq!(report.truncated.len(), 1);
        assert!(
            report.truncated[0].contains("checksum mismatch"),
            "{:?}",
            report.truncated
        );
        assert_eq!(file_len(&path)?, 9 * record_size(100));
        assert_eq!(wal.append(RecordKind::Traces, vec![1], noop()).await?, 10);
        Ok(())
    }

    #[tokio::test]
    async fn corruption_in_an_earlier_segment_stops_only_that_segment() -> TestResult {
        let dir = TempDir::new()?;
        let (wal, _, _) = Wal::open(dir.path(), 0, small_segments())?;
        append_records(&wal, 1, 20, 40).await?;
        wal.close();
        let files = segment_files(dir.path())?;
        assert_eq!(files.len(), 4); // 5 records of 57 bytes each
        // Corrupt the payload of the second record of the second segment (seqs 6..=10).
        let second = &files[1];
        let mut data = fs::read(second)?;
        let at = record_size(40) as usize + HEADER_LEN + 3;
        data[at] ^= 0xFF;
        fs::write(second, &data)?;

        let (wal, records, report) = Wal::open(dir.path(), 0, small_segments())?;
        let seqs: Vec<u64> = (1..=6).chain(11..=20).collect();
        assert_eq!(records, expected(seqs, 40));
        assert_eq!(report.truncated.len(), 1);
        assert!(report.truncated[0].contains("wal-00000000000000000006.log"));
        assert!(report.truncated[0].contains("not the last segment"));
        // Left in place: only the last segment is ever truncated.
        assert_eq!(fs::read(second)?, data);
        assert_eq!(wal.append(RecordKind::Traces, vec![1], noop()).await?, 21);
        Ok(())
    }

    /// Deterministic pseudo-random bytes (xorshift64).
    fn garbage(seed: u64, len: usize) -> Vec<u8> {
        let mut state = seed | 1;
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect()
    }

    #[tokio::test]
    async fn garbage_files_never_panic() -> TestResult {
        let dir = TempDir::new()?;
        for (i, len) in [0usize, 1, 16, 17, 18, 100, 4096, 10_000]
            .into_iter()
            .enumerate()
        {
            fs::write(
                dir.path().join(segment_file_name(i as u64 * 10)),
                garbage(i as u64 + 1, len),
            )?;
        }
        // Absurd and huge-but-allowed lengths, an unknown kind with a valid checksum.
        let mut huge = u32::MAX.to_le_bytes().to_vec();
        huge.extend_from_slice(&[0; 13]);
        fs::write(dir.path().join(segment_file_name(100)), &huge)?;
        let mut big = MAX_PAYLOAD_LEN.to_le_bytes().to_vec();
        big.extend_from_slice(&[0; 20]);
        fs::write(dir.path().join(segment_file_name(110)), &big)?;
        let mut unknown_kind = Vec::new();
        unknown_kind.extend_from_slice(&0u32.to_le_bytes());
        unknown_kind.extend_from_slice(&record_crc(7, 9, &[]).to_le_bytes());
        unknown_kind.extend_from_slice(&7u64.to_le_bytes());
        unknown_kind.push(9);
        fs::write(dir.path().join(segment_file_name(120)), &unknown_kind)?;
        // Things that are not segments are ignored.
        fs::write(dir.path().join("wal-abc.log"), b"junk")?;
        fs::write(dir.path().join("README"), b"junk")?;
        fs::create_dir(dir.path().join(segment_file_name(999_999)))?;

        let before = snapshot(dir.path())?;
        let (records, report) = Wal::read_only(dir.path(), 0)?;
        assert_eq!(snapshot(dir.path())?, before);
        assert_eq!(report.segments, 11);
        assert!(records.is_empty());
        assert_eq!(report.truncated.len(), 10, "{:?}", report.truncated);
        assert!(
            report
                .truncated
                .iter()
                .any(|t| t.contains("absurd payload length"))
        );
        assert!(
            report
                .truncated
                .iter()
                .any(|t| t.contains("unknown record kind 9"))
        );

        let (wal, records, report) = Wal::open(dir.path(), 0, WalOptions::default())?;
        assert!(records.is_empty());
        assert_eq!(report.truncated.len(), 10);
        // The last (corrupt) segment was cut to nothing and is written from here on.
        assert_eq!(file_len(&dir.path().join(segment_file_name(120)))?, 0);
        assert_eq!(
            wal.append(RecordKind::Traces, vec![1, 2], noop()).await?,
            120
        );
        wal.close();
        let (records, _) = Wal::read_only(dir.path(), 0)?;
        assert_eq!(records.len(), 1);
        Ok(())
    }

    #[tokio::test]
    async fn every_truncation_and_byte_flip_of_a_segment_is_handled() -> TestResult {
        let originals = expected(1..=5, 12);
        let mut segment = Vec::new();
        for r in &originals {
            encode_record(&mut segment, r.seq, r.kind, &r.payload);
        }
        let size = record_size(12) as usize;
        let dir = TempDir::new()?;
        let path = dir.path().join(segment_file_name(1));

        for cut in 0..=segment.len() {
            fs::write(&path, &segment[..cut])?;
            let (records, report) = Wal::read_only(dir.path(), 0)?;
            assert_eq!(records, originals[..cut / size]);
            assert_eq!(report.truncated.len(), usize::from(cut % size != 0));
            assert_eq!(file_len(&path)?, cut as u64);

            let (wal, records, report) = Wal::open(dir.path(), 0, WalOptions::default())?;
            assert_eq!(records, originals[..cut / size]);
            assert_eq!(report.truncated.len(), usize::from(cut % size != 0));
            assert_eq!(file_len(&path)?, (cut / size * size) as u64);
            wal.close();
        }

        for at in 0..segment.len() {
            for mask in [0x01u8, 0x80, 0xFF] {
                let mut data = segment.clone();
                data[at] ^= mask;
                fs::write(&path, &data)?;
                let (records, report) = Wal::read_only(dir.path(), 0)?;
                assert_eq!(records, originals[..at / size], "flip {mask:#x} at {at}");
                assert_eq!(report.truncated.len(), 1, "flip {mask:#x} at {at}");
            }
        }
        Ok(())
    }

    #[tokio::test]
    async fn records_up_to_after_seq_are_skipped() -> TestResult {
        let dir = TempDir::new()?;
        let (wal, _, _) = Wal::open(dir.path(), 0, small_segments())?;
        append_records(&wal, 1, 20, 40).await?;
        wal.close();

        let (wal, records, report) = Wal::open(dir.path(), 12, small_segments())?;
        assert_eq!(records, expected(13..=20, 40));
        assert_eq!(report.records, 8);
        assert_eq!(
            wal.append(RecordKind::Traces, payload(21, 40), noop())
                .await?,
            21
        );
        wal.close();

        // Parquet is ahead of the log: numbering continues after after_seq.
        let (wal, records, _) = Wal::open(dir.path(), 100, small_segments())?;
        assert!(records.is_empty());
        assert_eq!(
            wal.append(RecordKind::Metrics, payload(101, 40), noop())
                .await?,
            101
        );
        wal.close();

        let (wal, records, report) = Wal::open(dir.path(), 0, small_segments())?;
        let seqs: Vec<u64> = records.iter().map(|r| r.seq).collect();
        assert_eq!(seqs, (1..=21).chain([101]).collect::<Vec<_>>());
        assert!(report.truncated.is_empty());
        assert_eq!(wal.append(RecordKind::Traces, vec![], noop()).await?, 102);

        let (records, _) = Wal::read_only(dir.path(), 101)?;
        assert_eq!(records.iter().map(|r| r.seq).collect::<Vec<_>>(), [102]);
        assert_eq!(records[0].payload, Vec::<u8>::new());
        Ok(())
    }

    #[tokio::test]
    async fn truncate_through_deletes_only_fully_flushed_segments() -> TestResult {
        let dir = TempDir::new()?;
        let (wal, _, _) = Wal::open(dir.path(), 0, small_segments())?;
        // 5 records per segment: 1..=5, 6..=10, ..., 36..=40 (the current one).
        append_records(&wal, 1, 40, 40).await?;
        let first_seqs = |dir: &Path| -> io::Result<Vec<u64>> {
            Ok(segment_files(dir)?
                .iter()
                .filter_map(|p| p.file_name()?.to_str().and_then(parse_segment_file_name))
                .collect())
        };
        assert_eq!(first_seqs(dir.path())?, [1, 6, 11, 16, 21, 26, 31, 36]);

        wal.truncate_through(0)?;
        wal.truncate_through(4)?;
        assert_eq!(first_seqs(dir.path())?, [1, 6, 11, 16, 21, 26, 31, 36]);
        wal.truncate_through(5)?;
        assert_eq!(first_seqs(dir.path())?, [6, 11, 16, 21, 26, 31, 36]);
        wal.truncate_through(14)?;
        assert_eq!(first_seqs(dir.path())?, [11, 16, 21, 26, 31, 36]);
        assert_eq!(wal.disk_bytes(), total_file_bytes(dir.path())?);
        assert_eq!(wal.disk_bytes(), 30 * record_size(40));

        // Never the segment being written, even when everything in it is flushed.
        wal.truncate_through(u64::MAX)?;
        assert_eq!(first_seqs(dir.path())?, [36]);
        assert_eq!(wal.disk_bytes(), 5 * record_size(40));
        append_records(&wal, 41, 1, 40).await?;
        wal.close();

        let (wal, records, report) = Wal::open(dir.path(), 40, small_segments())?;
        assert_eq!(records, expected([41], 40));
        assert!(report.truncated.is_empty());
        assert_eq!(report.segments, 2); // 36..=40 filled its segment; 41 went into a new one
        drop(wal);
        let (_, records, _) = Wal::open(dir.path(), 0, small_segments())?;
        assert_eq!(records, expected(36..=41, 40));
        Ok(())
    }

    #[tokio::test]
    async fn read_only_modifies_nothing() -> TestResult {
        let dir = TempDir::new()?;
        let missing = dir.path().join("missing");
        let (records, report) = Wal::read_only(&missing, 0)?;
        assert!(records.is_empty());
        assert_eq!(report, ReplayReport::default());
        assert!(!missing.exists());

        let (wal, _, _) = Wal::open(dir.path(), 0, WalOptions::default())?;
        append_records(&wal, 1, 5, 100).await?;
        // Readable while the writer is running.
        let (records, report) = Wal::read_only(dir.path(), 2)?;
        assert_eq!(records, expected(3..=5, 100));
        assert_eq!(report.segments, 1);
        wal.close();

        let path = last_segment(dir.path())?;
        let len = file_len(&path)?;
        OpenOptions::new()
            .write(true)
            .open(&path)?
            .set_len(len - 7)?;
        let before = snapshot(dir.path())?;
        let (records, report) = Wal::read_only(dir.path(), 0)?;
        assert_eq!(records, expected(1..=4, 100));
        assert_eq!(report.truncated.len(), 1);
        assert!(
            report.truncated[0].contains("read-only"),
            "{:?}",
            report.truncated
        );
        assert_eq!(snapshot(dir.path())?, before);

        // Empty directory: nothing is created.
        let empty = TempDir::new()?;
        let (records, report) = Wal::read_only(empty.path(), 0)?;
        assert!(records.is_empty());
        assert_eq!(report, ReplayReport::default());
        assert!(snapshot(empty.path())?.is_empty());
        Ok(())
    }

    #[tokio::test]
    async fn reopen_continues_numbering() -> TestResult {
        let dir = TempDir::new()?;
        let nested = dir.path().join("a").join("wal");
        let (wal, records, _) = Wal::open(&nested, 0, WalOptions::default())?;
        assert!(records.is_empty());
        drop(wal);
        // An empty log starts at 1 again.
        let (wal, _, _) = Wal::open(&nested, 0, WalOptions::default())?;
        append_records(&wal, 1, 3, 8).await?;
        wal.close();
        let (wal, records, _) = Wal::open(&nested, 0, WalOptions::default())?;
        assert_eq!(records, expected(1..=3, 8));
        append_records(&wal, 4, 1, 8).await?;
        drop(wal); // Drop closes too.
        let (wal, records, _) = Wal::open(&nested, 2, WalOptions::default())?;
        assert_eq!(records, expected(3..=4, 8));
        append_records(&wal, 5, 1, 8).await?;
        Ok(())
    }

    #[tokio::test]
    async fn failed_write_is_cut_back_and_later_appends_succeed() -> TestResult {
        let dir = TempDir::new()?;
        let (wal, _, _) = Wal::open(dir.path(), 0, WalOptions::default())?;
        append_records(&wal, 1, 3, 100).await?;
        let path = last_segment(dir.path())?;
        let len = file_len(&path)?;

        wal.shared.fail_writes.store(1, Ordering::Relaxed);
        let called = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&called);
        let result = wal
            .append(
                RecordKind::Traces,
                payload(4, 100),
                Box::new(move |_| flag.store(true, Ordering::SeqCst)),
            )
            .await;
        assert!(matches!(result, Err(WalError::Write(_))), "{result:?}");
        assert!(!called.load(Ordering::SeqCst));
        assert_eq!(file_len(&path)?, len);
        assert_eq!(wal.disk_bytes(), len);

        // The next append takes the failed record's number: the log stays contiguous.
        append_records(&wal, 4, 2, 100).await?;
        wal.close();
        let (_, records, report) = Wal::open(dir.path(), 0, WalOptions::default())?;
        assert_eq!(records, expected(1..=5, 100));
        assert!(report.truncated.is_empty(), "{:?}", report.truncated);
        Ok(())
    }

    #[tokio::test]
    async fn close_flushes_pending_appends_and_rejects_later_ones() -> TestResult {
        let dir = TempDir::new()?;
        let (wal, _, _) = Wal::open(dir.path(), 0, WalOptions::default())?;
        let pending: Vec<_> = (1..=100u64)
            .map(|i| wal.append(kind_of(i), payload(i, 20), noop()))
            .collect();
        wal.close();
        let seqs = futures::future::join_all(pending)
            .await
            .into_iter()
            .collect::<Result<Vec<_>, _>>()?;
        assert_eq!(seqs, (1..=100).collect::<Vec<_>>());
        let after = wal.append(RecordKind::Traces, vec![1], noop()).await;
        assert!(matches!(after, Err(WalError::Closed)), "{after:?}");
        wal.close();
        let (records, _) = Wal::read_only(dir.path(), 0)?;
        assert_eq!(records, expected(1..=100, 20));
        Ok(())
    }

    #[tokio::test]
    async fn close_from_on_durable_does_not_deadlock() -> TestResult {
        let dir = TempDir::new()?;
        let (wal, _, _) = Wal::open(dir.path(), 0, WalOptions::default())?;
        let wal = Arc::new(wal);
        let inner = Arc::clone(&wal);
        let seq = wal
            .append(
                RecordKind::Traces,
                vec![1],
                Box::new(move |_| inner.close()),
            )
            .await?;
        assert_eq!(seq, 1);
        let after = wal.append(RecordKind::Traces, vec![2], noop()).await;
        assert!(matches!(after, Err(WalError::Closed)), "{after:?}");
        wal.close();
        Ok(())
    }

    #[tokio::test]
    async fn panicking_on_durable_does_not_stop_the_writer() -> TestResult {
        let dir = TempDir::new()?;
        let (wal, _, _) = Wal::open(dir.path(), 0, WalOptions::default())?;
        let seq = wal
            .append(
                RecordKind::Traces,
                vec![1],
                Box::new(|_| panic!("callback bug")),
            )
            .await?;
        assert_eq!(seq, 1);
        assert_eq!(wal.append(RecordKind::Traces, vec![2], noop()).await?, 2);
        Ok(())
    }

    #[test]
    fn wal_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync + 'static>() {}
        assert_send_sync::<Wal>();
    }
}
