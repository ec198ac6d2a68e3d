//! The recorder: the request path hands a record over with `try_send` into a bounded
//! queue and never waits; one writer thread appends them to the file in batches.
//!
//! A full queue (the disk is slow, or stuck) drops the record; a failed write (a full
//! disk) drops the batch. Both are counted and logged at most once a second. A failed
//! write may leave a torn line: the next batch starts on a new line, and replay names
//! the torn line's number. Rotation is not done here: after moving the file away, send
//! SIGHUP (`reopen`), and the writer opens the path anew before its next batch.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};

use prometheus::IntCounter;

use super::record::OutcomeRecord;
use crate::config::RecordOutcomesSpec;
use crate::throttled_log::ThrottledLog;

/// A batch is written once this many bytes are pending, or the queue is empty.
const BATCH_BYTES: usize = 64 * 1024;

/// `gateway_outcome_records_total{result}`: written, dropped_queue_full,
/// dropped_write_error.
#[derive(Clone)]
pub struct RecordCounters {
    pub written: IntCounter,
    pub queue_full: IntCounter,
    pub write_error: IntCounter,
}

impl RecordCounters {
    /// From `Metrics::outcome_records`.
    pub fn new([written, queue_full, write_error]: [IntCounter; 3]) -> Self {
        Self {
            written,
            queue_full,
            write_error,
        }
    }
}

impl std::fmt::Debug for RecordCounters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RecordCounters")
    }
}

#[derive(Debug)]
pub struct Recorder {
    queue: SyncSender<OutcomeRecord>,
    counters: RecordCounters,
    full_log: ThrottledLog,
    /// Set by `reopen`; the writer opens its file anew before the next batch.
    reopen: Arc<AtomicBool>,
    /// The headers a record keeps, from the config the recorder started with.
    pub headers: Vec<http::HeaderName>,
}

/// Where the writer writes: a file it can reopen, or any sink (tests).
type Sink = Box<dyn Write + Send>;

impl Recorder {
    /// Opens (creates, mode 0600: headers may be personal data) the file for appending
    /// and starts the writer thread.
    pub fn open(spec: &RecordOutcomesSpec, counters: RecordCounters) -> std::io::Result<Self> {
        let file = open(&spec.path)?;
        let path = spec.path.clone();
        Self::spawn(
            Box::new(file),
            Some(path),
            spec.queue.get(),
            spec.headers.clone(),
            counters,
        )
    }

    /// Starts a writer thread over any sink (tests use one that blocks or fails).
    pub fn start(
        sink: impl Write + Send + 'static,
        queue: usize,
        headers: Vec<http::HeaderName>,
        counters: RecordCounters,
    ) -> std::io::Result<Self> {
        Self::spawn(Box::new(sink), None, queue, headers, counters)
    }

    fn spawn(
        sink: Sink,
        path: Option<PathBuf>,
        queue: usize,
        headers: Vec<http::HeaderName>,
        counters: RecordCounters,
    ) -> std::io::Result<Self> {
        let (sender, receiver) = sync_channel(queue);
        let reopen = Arc::new(AtomicBool::new(false));
        let writer = Writer {
            sink,
            path,
            reopen: Arc::clone(&reopen),
            counters: counters.clone(),
        };
        std::thread::Builder::new()
            .name("outcome-recorder".into())
            .spawn(move || writer.run(receiver))?;
        Ok(Self {
            queue: sender,
            counters,
            full_log: ThrottledLog::default(),
            reopen,
            headers,
        })
    }

    /// Opens the file anew before the next batch (after it was moved away to rotate it).
    pub fn reopen(&self) {
        self.reopen.store(true, Ordering::Release);
    }

    /// Hands a record to the writer; never blocks. A full queue drops it (counted).
    pub fn record(&self, record: OutcomeRecord) {
        match self.queue.try_send(record) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.counters.queue_full.inc();
                if let Some(skipped) = self.full_log.admit() {
                    tracing::warn!(
                        target: "gateway::record",
                        skipped,
                        "outcome record dropped: the writer is behind (queue full)"
                    );
                }
            }
        }
    }
}

fn open(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
}

/// The writer thread's side.
struct Writer {
    sink: Sink,
    /// The file to reopen on request (None: the sink cannot be reopened).
    path: Option<PathBuf>,
    reopen: Arc<AtomicBool>,
    counters: RecordCounters,
}

impl Writer {
    /// Takes what is queued, writes it in one call, until every sender is gone.
    fn run(mut self, records: Receiver<OutcomeRecord>) {
        let errors = ThrottledLog::default();
        let mut batch: Vec<u8> = Vec::with_capacity(BATCH_BYTES);
        let mut lines: u64 = 0;
        let mut torn = false;
        while let Ok(first) = records.recv() {
            let mut next = Some(first);
            while let Some(record) = next {
                if torn {
                    // The last write may have stopped mid-line: start on a fresh one.
                    batch.push(b'\n');
                    torn = false;
                }
                batch.extend_from_slice(&record.to_line());
                lines += 1;
                next = if batch.len() < BATCH_BYTES {
                    records.try_recv().ok()
                } else {
                    None
                };
            }
            self.reopen_if_asked();
            let sink = &mut self.sink;
            match sink.write_all(&batch).and_then(|()| sink.flush()) {
                Ok(()) => self.counters.written.inc_by(lines),
                Err(e) => {
                    self.counters.write_error.inc_by(lines);
                    torn = true;
                    if let Some(skipped) = errors.admit() {
                        tracing::error!(target: "gateway::record", error = %e, lines, skipped, "outcome records dropped: cannot write");
                    }
                }
            }
            batch.clear();
            lines = 0;
        }
    }

    fn reopen_if_asked(&mut self) {
        if !self.reopen.swap(false, Ordering::AcqRel) {
            return;
        }
        let Some(path) = &self.path else {
            return;
        };
        // On failure the old file is kept: records still go somewhere.
        match open(path) {
            Ok(file) => {
                self.sink = Box::new(file);
                tracing::info!(target: "gateway::record", path = %path.display(), "outcome recording reopened");
            }
            Err(e) => {
                tracing::error!(target: "gateway::record", path = %path.display(), error = %e, "cannot reopen the outcome recording; writing to the old file");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::mpsc::{Sender, channel};
    use std::time::{Duration, Instant};

    use super::*;
    use crate::outcomes::record::FORMAT_VERSION;

    fn counters() -> RecordCounters {
        let vec = prometheus::IntCounterVec::new(prometheus::Opts::new("t", "t"), &["result"])
            .expect("a valid metric");
        RecordCounters {
            written: vec.with_label_values(&["written"]),
            queue_full: vec.with_label_values(&["dropped_queue_full"]),
            write_error: vec.with_label_values(&["dropped_write_error"]),
        }
    }

    fn record(n: u64) -> OutcomeRecord {
        OutcomeRecord {
            v: FORMAT_VERSION,
            at_us: n,
            elapsed_us: 0,
            latency_us: 0,
            route: "r".into(),
            upstream: "u".into(),
            endpoint: None,
            method: "GET".into(),
            path: "/".into(),
            status: Some(200),
            grpc_status: None,
            error: None,
            abandoned: false,
            rejected: None,
            verdict: None,
            config: "h".into(),
            request_headers: Vec::new(),
            response_headers: Vec::new(),
            truncated: false,
        }
    }

    /// A sink whose first write blocks until released, then collects what it is given.
    struct Blocked {
        entered: Option<Sender<()>>,
        release: Arc<Mutex<()>>,
        written: Arc<Mutex<Vec<u8>>>,
    }

    impl Write for Blocked {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if let Some(entered) = self.entered.take() {
                let _ = entered.send(());
            }
            let _released = self.release.lock().unwrap_or_else(|p| p.into_inner());
            self.written
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_stuck_writer_drops_and_counts_without_blocking_the_caller() {
        let release = Arc::new(Mutex::new(()));
        let held = release.lock().expect("not poisoned");
        let (entered, writing) = channel();
        let written = Arc::new(Mutex::new(Vec::new()));
        let sink = Blocked {
            entered: Some(entered),
            release: Arc::clone(&release),
            written: Arc::clone(&written),
        };
        let counters = counters();
        let recorder = Recorder::start(sink, 4, Vec::new(), counters.clone()).expect("a thread");
        recorder.record(record(0));
        // The writer holds record 0 inside its stuck write: the queue (4) fills next.
        writing
            .recv_timeout(Duration::from_secs(10))
            .expect("the writer reached the sink");
        let started = Instant::now();
        for n in 1..=100 {
            recorder.record(record(n));
        }
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "recording waited for the writer: {:?}",
            started.elapsed()
        );
        assert_eq!(counters.queue_full.get(), 96);
        drop(held);
        drop(recorder);
        // The writer ends when the recorder is gone: wait for its last batch.
        let deadline = Instant::now() + Duration::from_secs(10);
        while counters.written.get() < 5 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(counters.written.get(), 5);
        let text =
            String::from_utf8(written.lock().expect("not poisoned").clone()).expect("utf-8 lines");
        assert_eq!(text.lines().count(), 5);
    }

    /// Fails every write after the first `ok` bytes (a disk that fills).
    struct Filling {
        ok: usize,
        written: Arc<Mutex<Vec<u8>>>,
    }

    impl Write for Filling {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if self.ok == 0 {
                return Err(std::io::Error::other("no space left on device"));
            }
            let n = buf.len().min(self.ok);
            self.ok -= n;
            self.written
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_full_disk_counts_write_errors() {
        let written = Arc::new(Mutex::new(Vec::new()));
        let sink = Filling {
            ok: 10,
            written: Arc::clone(&written),
        };
        let counters = counters();
        let recorder = Recorder::start(sink, 16, Vec::new(), counters.clone()).expect("a thread");
        recorder.record(record(1));
        let deadline = Instant::now() + Duration::from_secs(10);
        while counters.write_error.get() < 1 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(counters.write_error.get(), 1);
        assert_eq!(counters.written.get(), 0);
    }
}
