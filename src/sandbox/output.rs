//! Capture of a guest's logs: `log` import calls and stdout/stderr lines, in the order written,
//! with per-attempt caps so a chatty guest cannot grow host memory or the run's stored log
//! without bound.
//!
//! The caps count every line the attempt kept — whether it is still in the buffer or was already
//! taken out by an effect that stored it ([`LogBuffer::drain`]) — and each line costs its text
//! and attributes plus [`LINE_OVERHEAD`] bytes, so empty lines are not free. A checkpointed
//! attempt keeps its count across the checkpoint without storing it anywhere: while the journal
//! replays, the guest writes again exactly the lines the recorded execution kept, and the buffer
//! counts them against the caps without keeping them (they are stored already), so when the
//! replay ends the count is where the checkpoint left it. Lines the cap dropped while replaying
//! were dropped, and noted, by the recorded execution; they are not noted again.
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::AsyncWrite;
use wasmtime_wasi::async_trait;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

use super::limits::Activity;
use crate::model::{LogLevel, LogLine, now_ms};

/// Most log lines kept per attempt; later lines are counted, not stored.
const MAX_LINES: usize = 10_000;
/// Most log bytes kept per attempt (text, attributes and each line's overhead).
const MAX_BYTES: usize = 4 << 20;
/// What a line costs against [`MAX_BYTES`] besides its text: its row (attempt, time, level)
/// is stored whatever the text, so an empty line is not free.
const LINE_OVERHEAD: usize = 64;
/// A single line longer than this is cut (and marked) so one line cannot use the whole budget.
const MAX_LINE: usize = 64 << 10;
/// How much a guest may write to stdout/stderr in one `write` call.
const STREAM_BUDGET: usize = 64 << 10;

/// The log lines of one attempt.
pub struct LogBuffer {
    attempt: u32,
    lines: Vec<LogLine>,
    /// Lines the attempt kept so far: in `lines`, taken out by effects, or kept before a
    /// checkpoint (counted again by the replay).
    kept: usize,
    /// What those lines cost, overhead included.
    bytes: usize,
    dropped: u64,
    /// Unterminated stdout / stderr text.
    partial: [Vec<u8>; 2],
    /// Set while the journal replays: the lines were stored by the execution that recorded it.
    replaying: Option<Arc<std::sync::atomic::AtomicBool>>,
}

impl LogBuffer {
    pub fn new(attempt: u32) -> LogBuffer {
        LogBuffer {
            attempt,
            lines: Vec::new(),
            kept: 0,
            bytes: 0,
            dropped: 0,
            partial: [Vec::new(), Vec::new()],
            replaying: None,
        }
    }

    /// Drops lines while `replaying` is set.
    pub fn mute_while(&mut self, replaying: Arc<std::sync::atomic::AtomicBool>) {
        self.replaying = Some(replaying);
    }

    /// Adds one line, or counts it as dropped once the caps are reached. While the journal
    /// replays, the line only counts against the caps: the recorded execution stored it.
    pub fn push(&mut self, level: LogLevel, mut message: String, attributes: Option<String>) {
        let replaying = self
            .replaying
            .as_ref()
            .is_some_and(|r| r.load(std::sync::atomic::Ordering::Relaxed));
        if message.len() > MAX_LINE {
            let mut cut = MAX_LINE;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push_str(" … [line truncated]");
        }
        let cost = LINE_OVERHEAD + message.len() + attributes.as_ref().map_or(0, String::len);
        if self.kept >= MAX_LINES || self.bytes + cost > MAX_BYTES {
            if !replaying {
                self.dropped += 1;
            }
            return;
        }
        self.kept += 1;
        self.bytes += cost;
        if replaying {
            return;
        }
        self.lines.push(LogLine {
            attempt: self.attempt,
            at: log_time(),
            level,
            message,
            attributes,
        });
    }

    fn write_stream(&mut self, level: LogLevel, bytes: &[u8]) {
        let index = usize::from(level == LogLevel::Error);
        let mut partial = std::mem::take(&mut self.partial[index]);
        for &b in bytes {
            if b == b'\n' {
                self.push_partial(level, &mut partial);
            } else if partial.len() < MAX_LINE + 1 {
                partial.push(b);
            }
        }
        self.partial[index] = partial;
    }

    fn push_partial(&mut self, level: LogLevel, partial: &mut Vec<u8>) {
        let text = String::from_utf8_lossy(partial)
            .trim_end_matches('\r')
            .to_owned();
        partial.clear();
        self.push(level, text, None);
    }

    /// The last `n` lines written to stderr, joined: usually a guest panic message.
    pub fn last_error_lines(&self, n: usize) -> String {
        let mut lines: Vec<&str> = self
            .lines
            .iter()
            .rev()
            .filter(|l| l.level == LogLevel::Error && l.attributes.is_none())
            .take(n)
            .map(|l| l.message.as_str())
            .collect();
        let tail = String::from_utf8_lossy(&self.partial[1]).into_owned();
        lines.reverse();
        let mut text = lines.join(" ");
        if !tail.is_empty() {
            text.push(' ');
            text.push_str(&tail);
        }
        text.trim().to_owned()
    }

    /// The complete lines so far, for storing with an effect; they still count against the caps.
    pub fn drain(&mut self) -> Vec<LogLine> {
        std::mem::take(&mut self.lines)
    }

    /// Puts back lines [`LogBuffer::drain`] took that were not stored after all.
    pub fn restore(&mut self, mut lines: Vec<LogLine>) {
        lines.append(&mut self.lines);
        self.lines = lines;
    }

    /// Finishes the attempt's log: flushes unterminated lines and notes dropped ones.
    pub fn take(&mut self) -> Vec<LogLine> {
        for (index, level) in [(0, LogLevel::Info), (1, LogLevel::Error)] {
            let mut partial = std::mem::take(&mut self.partial[index]);
            if !partial.is_empty() {
                self.push_partial(level, &mut partial);
            }
        }
        let mut lines = std::mem::take(&mut self.lines);
        if self.dropped > 0 {
            lines.push(LogLine {
                attempt: self.attempt,
                at: log_time(),
                level: LogLevel::Warn,
                message: format!(
                    "{} log lines dropped: an attempt keeps at most {MAX_LINES} lines and {MAX_BYTES} bytes (each line counting {LINE_OVERHEAD} bytes besides its text)",
                    self.dropped
                ),
                attributes: None,
            });
        }
        lines
    }
}

/// A guest's stdout or stderr, feeding the attempt's [`LogBuffer`] line by line as it writes, so
/// stream lines and `log` calls keep their order and nothing is in flight when the attempt ends.
#[derive(Clone)]
pub struct GuestOutput {
    logs: Arc<Mutex<LogBuffer>>,
    level: LogLevel,
    /// Touched by each write to stdout; not by stderr, where a refused allocator writes before
    /// it aborts (see `limits`).
    activity: Option<Activity>,
}

impl GuestOutput {
    pub(crate) fn new(
        logs: Arc<Mutex<LogBuffer>>,
        level: LogLevel,
        activity: Option<Activity>,
    ) -> GuestOutput {
        GuestOutput {
            logs,
            level,
            activity,
        }
    }

    fn append(&self, bytes: &[u8]) {
        if let Some(activity) = &self.activity {
            activity.touch();
        }
        self.logs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .write_stream(self.level, bytes);
    }
}

impl IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[async_trait]
impl Pollable for GuestOutput {
    async fn ready(&mut self) {}
}

#[async_trait]
impl OutputStream for GuestOutput {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.append(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(STREAM_BUDGET)
    }
}

impl AsyncWrite for GuestOutput {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.append(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Timestamp for a log line written now.
fn log_time() -> i64 {
    now_ms()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_bytes_become_lines_and_unterminated_text_is_kept() {
        let mut buf = LogBuffer::new(1);
        buf.write_stream(LogLevel::Info, b"one\ntw");
        buf.write_stream(LogLevel::Info, b"o\nthree");
        let lines = buf.take();
        let texts: Vec<&str> = lines.iter().map(|l| l.message.as_str()).collect();
        assert_eq!(texts, ["one", "two", "three"]);
    }

    #[test]
    fn too_many_lines_are_counted_not_kept() {
        let mut buf = LogBuffer::new(1);
        for i in 0..MAX_LINES + 5 {
            buf.push(LogLevel::Info, format!("line {i}"), None);
        }
        let lines = buf.take();
        assert_eq!(lines.len(), MAX_LINES + 1);
        assert!(
            lines
                .last()
                .unwrap()
                .message
                .starts_with("5 log lines dropped")
        );
    }

    #[test]
    fn lines_taken_by_effects_still_count_against_the_cap() {
        let mut buf = LogBuffer::new(1);
        let mut stored = 0;
        for _ in 0..MAX_LINES + 100 {
            buf.push(LogLevel::Info, String::new(), None);
            stored += buf.drain().len();
        }
        stored += buf.take().len();
        assert_eq!(stored, MAX_LINES + 1, "the lines and the note");
    }

    #[test]
    fn each_line_costs_its_overhead() {
        // 10,000 lines of 400 bytes fit in the byte cap by their text alone, not with their rows.
        let mut buf = LogBuffer::new(1);
        for _ in 0..MAX_LINES {
            buf.push(LogLevel::Info, "x".repeat(400), None);
        }
        let kept = buf.take().len() - 1;
        assert_eq!(kept, MAX_BYTES / (400 + LINE_OVERHEAD));
    }

    #[test]
    fn a_replay_counts_the_lines_it_does_not_store_again() {
        let replaying = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let mut buf = LogBuffer::new(1);
        buf.mute_while(replaying.clone());
        for i in 0..MAX_LINES + 7 {
            if i == MAX_LINES / 2 + 3 {
                replaying.store(false, std::sync::atomic::Ordering::Relaxed);
            }
            buf.push(LogLevel::Info, format!("line {i}"), None);
        }
        let lines = buf.take();
        assert_eq!(
            lines.len(),
            MAX_LINES / 2 - 3 + 1,
            "the rest of the cap and the note"
        );
        assert_eq!(lines[0].message, format!("line {}", MAX_LINES / 2 + 3));
        assert!(
            lines
                .last()
                .unwrap()
                .message
                .starts_with("7 log lines dropped")
        );
    }

    #[test]
    fn a_huge_line_is_cut() {
        let mut buf = LogBuffer::new(1);
        buf.push(LogLevel::Info, "é".repeat(MAX_LINE), None);
        let line = &buf.take()[0];
        assert!(line.message.len() < MAX_LINE + 32);
        assert!(line.message.ends_with("[line truncated]"));
    }
}
