//! Recording outcomes (`server.record_outcomes`): one JSON line per finished exchange
//! with an upstream, and per request a breaker turned away, for `gateway replay`.
//!
//! `record.rs` is the line format (shared with `replay/`), `recorder.rs` the bounded
//! queue and writer thread that keep the request path from ever waiting on the disk.

mod record;
mod recorder;

pub use record::{
    FORMAT_VERSION, HeaderList, MAX_HEADER_VALUE, MAX_HEADERS, MAX_LINE, MAX_PATH, OutcomeRecord,
    RecordedResult, cut, select_headers,
};
pub use recorder::{RecordCounters, Recorder};
