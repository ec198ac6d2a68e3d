//! Reading a recording: every line checked, kept in a compact form, sorted by the time
//! each attempt was admitted (lines are written when exchanges end, so out of order).

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::Path;

use crate::outcomes::{HeaderList, OutcomeRecord, RecordedResult};

use super::ReplayError;

/// One recorded attempt (or refusal).
#[derive(Debug, Clone)]
pub struct Entry {
    /// 1-based line in the recording.
    pub line: usize,
    pub at_us: u64,
    pub elapsed_us: u64,
    pub latency_us: u64,
    /// Index into `Recording::upstreams`.
    pub upstream: usize,
    pub result: RecordedResult,
    /// What a predicate plugin reads; kept only for upstreams that have one.
    pub exchange: Option<Box<Exchanged>>,
}

/// The request and response as far as they were recorded.
#[derive(Debug, Clone, Default)]
pub struct Exchanged {
    pub route: String,
    pub method: String,
    pub path: String,
    pub request_headers: HeaderList,
    pub response_headers: HeaderList,
}

#[derive(Debug, Default)]
pub struct Recording {
    /// Sorted by `at_us`, then line.
    pub entries: Vec<Entry>,
    pub upstreams: Vec<String>,
    /// Each upstream's first line.
    pub first_lines: BTreeMap<String, usize>,
    /// Hashes of the configs that were live, with their line counts.
    pub configs: BTreeMap<String, u64>,
    /// Lines read (blank ones aside), every upstream's.
    pub lines: usize,
}

/// Reads `path`, keeping `only` one upstream's lines when given; `keep_exchange` says
/// for which upstreams headers, method and path are needed.
/// Longest line replay reads: four times what the recorder writes at most.
const LINE_LIMIT: usize = 4 * crate::outcomes::MAX_LINE;

pub fn read(
    path: &Path,
    only: Option<&str>,
    keep_exchange: &dyn Fn(&str) -> bool,
) -> Result<Recording, ReplayError> {
    let file = std::fs::File::open(path).map_err(|source| ReplayError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let mut reader = std::io::BufReader::with_capacity(1 << 20, file);
    let mut recording = Recording::default();
    let mut index: BTreeMap<String, (usize, bool)> = BTreeMap::new();
    let mut buffer = Vec::new();
    let mut number = 0;
    loop {
        buffer.clear();
        // A line is read up to a bound (what the recorder writes, with room to spare):
        // a file that is not a recording cannot make replay buffer gigabytes.
        let read = std::io::Read::take(&mut reader, LINE_LIMIT as u64)
            .read_until(b'\n', &mut buffer)
            .map_err(|source| ReplayError::Read {
                path: path.to_path_buf(),
                source,
            })?;
        if read == 0 {
            break;
        }
        number += 1;
        if buffer.len() >= LINE_LIMIT && buffer.last() != Some(&b'\n') {
            return Err(ReplayError::Line {
                path: path.to_path_buf(),
                line: number,
                message: format!("longer than {LINE_LIMIT} bytes: not a line the gateway wrote"),
            });
        }
        let line = buffer.trim_ascii();
        if line.is_empty() {
            continue;
        }
        let bad = |message: String| ReplayError::Line {
            path: path.to_path_buf(),
            line: number,
            message,
        };
        let record: OutcomeRecord =
            serde_json::from_slice(line).map_err(|e| bad(format!("not an outcome record: {e}")))?;
        let result = record.result().map_err(bad)?;
        recording.lines += 1;
        if only.is_some_and(|name| name != record.upstream) {
            continue;
        }
        *recording.configs.entry(record.config.clone()).or_default() += 1;
        let (upstream, keep) = match index.get(&record.upstream) {
            Some(known) => *known,
            None => {
                let known = (recording.upstreams.len(), keep_exchange(&record.upstream));
                recording.upstreams.push(record.upstream.clone());
                recording
                    .first_lines
                    .insert(record.upstream.clone(), number);
                index.insert(record.upstream.clone(), known);
                known
            }
        };
        recording.entries.push(Entry {
            line: number,
            at_us: record.at_us,
            elapsed_us: record.elapsed_us,
            latency_us: record.latency_us,
            upstream,
            result,
            exchange: keep.then(|| {
                Box::new(Exchanged {
                    route: record.route,
                    method: record.method,
                    path: record.path,
                    request_headers: record.request_headers,
                    response_headers: record.response_headers,
                })
            }),
        });
    }
    recording
        .entries
        .sort_by_key(|entry| (entry.at_us, entry.line));
    Ok(recording)
}
