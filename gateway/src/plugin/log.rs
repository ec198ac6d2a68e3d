//! A plugin's log output (`host.log`, stdout, stderr): every line escaped so that it
//! stays one line and cannot pass for another, cut to a maximum length, and written
//! only within the plugin's budget of lines and bytes per second. Lines over budget are
//! dropped and counted (`gateway_plugin_log_dropped_total`), with at most one warning a
//! second saying how many. One `PluginLog` serves all instances of a plugin.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use prometheus::IntCounter;

use super::bindings::host::LogLevel;
use crate::config::{MAX_LOG_BYTES_PER_SECOND, MAX_LOG_LINES_PER_SECOND};
use crate::throttled_log::ThrottledLog;

/// Longest line written for a plugin, escapes included; the rest is cut and the cut
/// marked.
pub const MAX_LOG_LINE: usize = 4096;

/// Where one plugin's lines go, and what they may cost.
pub struct PluginLog {
    plugin: Arc<str>,
    budget: LogBudget,
    dropped: IntCounter,
    /// Dropped since the last warning said so.
    unreported: AtomicU64,
    warned: ThrottledLog,
}

impl PluginLog {
    pub fn new(
        plugin: Arc<str>,
        lines_per_second: u32,
        bytes_per_second: u64,
        dropped: IntCounter,
    ) -> Self {
        Self {
            plugin,
            budget: LogBudget::new(lines_per_second, bytes_per_second),
            dropped,
            unreported: AtomicU64::new(0),
            warned: ThrottledLog::default(),
        }
    }

    /// Writes `message` (a line from `stream`: `log`, `stdout` or `stderr`) at `level`,
    /// if the budget allows; `cut` bytes of it were already left out by the caller.
    pub fn emit(&self, level: LogLevel, stream: &str, message: &[u8], cut: usize) {
        // Over budget already: not worth escaping.
        if !self.budget.has_room() {
            self.drop_line();
            return;
        }
        let line = escape_line(message, cut);
        if !self.budget.admit(line.len()) {
            self.drop_line();
            return;
        }
        // Drops not yet reported are reported with the next line that is written, at
        // most once a second: the count is then complete for the second that dropped them.
        if self.unreported.load(Ordering::Relaxed) > 0 {
            self.report_drops();
        }
        let plugin = &*self.plugin;
        match level {
            LogLevel::Trace => tracing::trace!(target: "gateway::plugin", plugin, stream, "{line}"),
            LogLevel::Debug => tracing::debug!(target: "gateway::plugin", plugin, stream, "{line}"),
            LogLevel::Info => tracing::info!(target: "gateway::plugin", plugin, stream, "{line}"),
            LogLevel::Warn => tracing::warn!(target: "gateway::plugin", plugin, stream, "{line}"),
            LogLevel::Error => tracing::error!(target: "gateway::plugin", plugin, stream, "{line}"),
        }
    }

    fn drop_line(&self) {
        self.dropped.inc();
        self.unreported.fetch_add(1, Ordering::Relaxed);
        self.report_drops();
    }

    /// A warning with the drops since the last one, if none was written this second.
    fn report_drops(&self) {
        if self.warned.admit().is_none() {
            return;
        }
        let dropped = self.unreported.swap(0, Ordering::Relaxed);
        if dropped > 0 {
            tracing::warn!(
                target: "gateway::plugin",
                plugin = %self.plugin,
                dropped,
                lines_per_second = self.budget.lines,
                bytes_per_second = self.budget.bytes,
                "plugin log over budget: lines dropped since the last warning"
            );
        }
    }
}

/// `message` as one line of text: invalid UTF-8 replaced, trailing whitespace trimmed,
/// every character that could end the line, start another or restyle a terminal
/// escaped, and cut at `MAX_LOG_LINE` bytes with a marker saying how much was left out
/// (`cut`: bytes the caller already left out).
pub fn escape_line(message: &[u8], cut: usize) -> String {
    let text = String::from_utf8_lossy(message);
    let text = text.trim_end();
    let mut line = String::with_capacity(text.len().min(MAX_LOG_LINE));
    let mut kept = 0;
    // Where the line is cut should a marker be needed: (line length, text bytes kept).
    let mut cut_point = (0, 0);
    let mut escaped = String::new();
    for c in text.chars() {
        escaped.clear();
        escape_char(c, &mut escaped);
        if line.len() + escaped.len() > MAX_LOG_LINE {
            break;
        }
        line.push_str(&escaped);
        kept += c.len_utf8();
        if line.len() <= MAX_LOG_LINE - MARKER_ROOM {
            cut_point = (line.len(), kept);
        }
    }
    if cut > 0 || kept < text.len() {
        let (length, kept) = cut_point;
        line.truncate(length);
        let left_out = cut.saturating_add(text.len() - kept);
        let _ = write!(line, " [truncated: {left_out} more bytes]");
    }
    line
}

/// Room for ` [truncated: N more bytes]` with N up to 20 digits.
const MARKER_ROOM: usize = 48;

fn escape_char(c: char, out: &mut String) {
    match c {
        '\\' => out.push_str("\\\\"),
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        // C0, DEL and C1 (NEL among them), line and paragraph separators, and the
        // bidirectional controls that make text display in another order than it reads.
        c if c.is_control()
            || matches!(
                c,
                '\u{2028}' | '\u{2029}' | '\u{061c}' | '\u{200e}' | '\u{200f}'
            )
            || ('\u{202a}'..='\u{202e}').contains(&c)
            || ('\u{2066}'..='\u{2069}').contains(&c) =>
        {
            let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
        }
        c => out.push(c),
    }
}

/// Lines and bytes a plugin may write per second, counted in one atomic word so that
/// instances on different threads share it without a lock and without overshooting.
struct LogBudget {
    lines: u32,
    bytes: u64,
    started: Instant,
    /// second (22 bits, since `started`, wrapping) | lines (17 bits) | bytes (25 bits).
    /// A wrapped second could only be mistaken for the current one after no line at
    /// all for exactly a multiple of 48.5 days; that second would then start partly used.
    used: AtomicU64,
}

const LINE_BITS: u32 = 17;
const BYTE_BITS: u32 = 25;
const SECOND_MASK: u64 = (1 << (64 - LINE_BITS - BYTE_BITS)) - 1;
const LINE_MASK: u64 = (1 << LINE_BITS) - 1;
const BYTE_MASK: u64 = (1 << BYTE_BITS) - 1;

// The packed counters hold any budget a config may give.
const _: () = assert!(MAX_LOG_LINES_PER_SECOND as u64 <= LINE_MASK);
const _: () = assert!(MAX_LOG_BYTES_PER_SECOND <= BYTE_MASK);

fn pack(second: u64, lines: u64, bytes: u64) -> u64 {
    ((second & SECOND_MASK) << (LINE_BITS + BYTE_BITS)) | (lines << BYTE_BITS) | bytes
}

fn unpack(word: u64) -> (u64, u64, u64) {
    (
        word >> (LINE_BITS + BYTE_BITS),
        (word >> BYTE_BITS) & LINE_MASK,
        word & BYTE_MASK,
    )
}

impl LogBudget {
    fn new(lines: u32, bytes: u64) -> Self {
        Self {
            lines: lines.min(MAX_LOG_LINES_PER_SECOND),
            bytes: bytes.min(MAX_LOG_BYTES_PER_SECOND),
            started: Instant::now(),
            // Second 0 with nothing used; `pack` of the real second 0 is the same.
            used: AtomicU64::new(0),
        }
    }

    fn second(&self) -> u64 {
        self.started.elapsed().as_secs() & SECOND_MASK
    }

    /// Lines and bytes used so far in `second`.
    fn used_in(&self, second: u64, word: u64) -> (u64, u64) {
        let (at, lines, bytes) = unpack(word);
        if at == second { (lines, bytes) } else { (0, 0) }
    }

    /// Whether a line could still be written this second (a cheap test before escaping).
    fn has_room(&self) -> bool {
        self.has_room_at(self.second())
    }

    fn has_room_at(&self, second: u64) -> bool {
        let (lines, bytes) = self.used_in(second, self.used.load(Ordering::Relaxed));
        lines < u64::from(self.lines) && bytes < self.bytes
    }

    /// Takes one line of `len` bytes from this second's budget, if it is left.
    fn admit(&self, len: usize) -> bool {
        self.admit_at(self.second(), len)
    }

    fn admit_at(&self, second: u64, len: usize) -> bool {
        let len = u64::try_from(len).unwrap_or(u64::MAX);
        let mut word = self.used.load(Ordering::Relaxed);
        loop {
            let (lines, bytes) = self.used_in(second, word);
            if lines >= u64::from(self.lines) || len > self.bytes.saturating_sub(bytes) {
                return false;
            }
            let next = pack(second, lines + 1, bytes + len);
            match self
                .used
                .compare_exchange_weak(word, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return true,
                Err(current) => word = current,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_stays_one_line_and_forges_nothing() {
        let hostile = "ok\nINFO gateway: forged\r\t\x1b[31mred\u{7f}\u{85}nel\u{2028}ls\u{2029}ps\u{202e}rtl\u{2066}\\n";
        assert_eq!(
            escape_line(hostile.as_bytes(), 0),
            "ok\\nINFO gateway: forged\\r\\t\\u{1b}[31mred\\u{7f}\\u{85}nel\\u{2028}ls\\u{2029}ps\\u{202e}rtl\\u{2066}\\\\n"
        );
        // Text, quotes and other scripts are left alone; trailing whitespace goes.
        assert_eq!(
            escape_line("café \"quoted\" {\"json\": 1} 日本  \n".as_bytes(), 0),
            "café \"quoted\" {\"json\": 1} 日本"
        );
        // Bytes that are not UTF-8 become U+FFFD.
        assert_eq!(escape_line(b"caf\xe9", 0), "caf\u{fffd}");
    }

    #[test]
    fn a_long_line_is_cut_with_a_marker_saying_how_much() {
        let long = "x".repeat(10_000);
        let line = escape_line(long.as_bytes(), 0);
        assert!(line.len() <= MAX_LOG_LINE, "{}", line.len());
        let kept = MAX_LOG_LINE - MARKER_ROOM;
        assert_eq!(
            line,
            format!(
                "{} [truncated: {} more bytes]",
                &long[..kept],
                10_000 - kept
            )
        );
        // A line that fits is kept whole, marker room or not.
        let fits = "y".repeat(MAX_LOG_LINE);
        assert_eq!(escape_line(fits.as_bytes(), 0), fits);
        // Bytes the caller already left out are added to the count.
        let line = escape_line(b"short", 123);
        assert_eq!(line, "short [truncated: 123 more bytes]");
        // Escapes count towards the length: a line of escapes is cut too.
        let escapes = "\x1b".repeat(2_000);
        let line = escape_line(escapes.as_bytes(), 0);
        assert!(line.len() <= MAX_LOG_LINE, "{}", line.len());
        assert!(line.ends_with("more bytes]"), "{line}");
        // Never in the middle of an escape or a character.
        assert!(
            !line.contains("\\u{1b [") && !line.contains("\\u{ "),
            "{line}"
        );
        let wide = "日".repeat(3_000);
        let line = escape_line(wide.as_bytes(), 0);
        assert!(line.len() <= MAX_LOG_LINE);
        assert!(line.starts_with("日日"));
    }

    #[test]
    fn the_budget_counts_lines_and_bytes_per_second() {
        let budget = LogBudget::new(3, 100);
        assert!(budget.admit_at(7, 10));
        assert!(budget.admit_at(7, 10));
        assert!(budget.admit_at(7, 10));
        assert!(!budget.has_room_at(7));
        assert!(!budget.admit_at(7, 1), "a fourth line in the same second");
        // A new second starts afresh.
        assert!(budget.has_room_at(8));
        assert!(budget.admit_at(8, 60));
        assert!(!budget.admit_at(8, 41), "bytes: 60 + 41 > 100");
        assert!(budget.admit_at(8, 40));
        assert!(!budget.has_room_at(8));
        // A line larger than the whole budget is never written.
        assert!(!budget.admit_at(9, 101));
        assert!(budget.admit_at(9, 100));
        // A budget of nothing writes nothing.
        let silent = LogBudget::new(0, 64 << 10);
        assert!(!silent.has_room_at(0));
        assert!(!silent.admit_at(0, 1));
    }

    #[test]
    fn the_budget_holds_across_threads() {
        let budget = Arc::new(LogBudget::new(1_000, MAX_LOG_BYTES_PER_SECOND));
        let admitted: u64 = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..4)
                .map(|_| {
                    let budget = Arc::clone(&budget);
                    scope.spawn(move || (0..10_000).filter(|_| budget.admit_at(5, 10)).count())
                })
                .collect();
            workers
                .into_iter()
                .map(|w| w.join().map_or(0, |n| n as u64))
                .sum()
        });
        assert_eq!(admitted, 1_000);
    }

    #[test]
    fn packing_round_trips_at_the_limits() {
        let word = pack(
            SECOND_MASK,
            u64::from(MAX_LOG_LINES_PER_SECOND),
            MAX_LOG_BYTES_PER_SECOND,
        );
        assert_eq!(
            unpack(word),
            (
                SECOND_MASK,
                u64::from(MAX_LOG_LINES_PER_SECOND),
                MAX_LOG_BYTES_PER_SECOND
            )
        );
        // The second wraps instead of spilling into the counters.
        assert_eq!(unpack(pack(SECOND_MASK + 1, 1, 2)), (0, 1, 2));
    }

    #[test]
    fn dropped_lines_are_counted() {
        let dropped = IntCounter::new("dropped", "test").expect("counter");
        let silent = PluginLog::new("test".into(), 0, 1 << 20, dropped.clone());
        for _ in 0..5 {
            silent.emit(LogLevel::Info, "log", b"line", 0);
        }
        assert_eq!(dropped.get(), 5);
    }
}
