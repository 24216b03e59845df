//! The journal: what a guest observed from the host, so a checkpointed run can be replayed.
//!
//! wasmtime cannot save a guest's stack, so a run that waits long is dropped and later executed
//! again from the start; every host call the guest makes is answered from the journal (its kind
//! and request digest checked) until the journal ends, and from then on live — recorded again for
//! the next checkpoint. Journaled: wall- and monotonic-clock reads, waits, wait-token creation and
//! results, child runs and their results, metadata reads and changes, outbound HTTP outcomes, and
//! the times `stat` answers in `/tmp`. Randomness is not journaled: it comes from a per-run seed.
//! Log lines are not journaled either; they are not stored again while replaying, since the first
//! execution already stored them.
//!
//! Entries are kept in memory while the guest runs; the engine persists the new ones with the
//! checkpoint. A guest that reads the clock without end only fills the journal up to
//! [`MAX_JOURNAL_BYTES`]; a checkpoint past that fails the run instead of storing it.
//!
//! Each stored entry says in which [`Format`] its digest and value are written (`calls` and
//! `values` define both, per call); a replay compares each entry with the call's digest in that
//! entry's format and reads its value the same way, so journals stored by an earlier kiln still
//! replay after an upgrade.

pub mod calls;
mod canon;
mod stored;
pub mod values;

pub use stored::{decode, encode, plain_size};
pub use values::{JournalValue, as_number, number};

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::limits::Activity;

/// Most bytes of journal one attempt may hold (replayed and recorded together); past it the
/// attempt's next checkpoint or effect fails it.
pub const MAX_JOURNAL_BYTES: usize = 64 << 20;

/// The kind of a journaled host call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    WallClock = 1,
    MonotonicClock = 2,
    Wait = 3,
    CreateToken = 4,
    /// The completion of a token the guest waited for.
    TokenResult = 5,
    /// The guest suspended waiting for a token here (the result follows on a later execution).
    TokenPending = 6,
    /// Child runs triggered (their ids), or why the items were refused.
    Trigger = 7,
    /// How the child runs the guest waited for ended.
    ChildrenResult = 8,
    /// The guest suspended waiting for child runs here.
    ChildrenPending = 9,
    /// Metadata read.
    MetadataRead = 10,
    /// Metadata changed (the new metadata, or why the change was refused).
    MetadataWrite = 11,
    /// An outbound HTTP request's outcome (the response, or the error the guest got). Its value
    /// starts with the request's number in the attempt: responses arrive in their own time, so
    /// they are matched by that number, not by their place among the other calls.
    Http = 12,
    /// The times `stat` or `stat-at` answered for a file in the scratch directory.
    FileTimes = 13,
}

impl Kind {
    fn from_u8(b: u8) -> Option<Kind> {
        match b {
            1 => Some(Kind::WallClock),
            2 => Some(Kind::MonotonicClock),
            3 => Some(Kind::Wait),
            4 => Some(Kind::CreateToken),
            5 => Some(Kind::TokenResult),
            6 => Some(Kind::TokenPending),
            7 => Some(Kind::Trigger),
            8 => Some(Kind::ChildrenResult),
            9 => Some(Kind::ChildrenPending),
            10 => Some(Kind::MetadataRead),
            11 => Some(Kind::MetadataWrite),
            12 => Some(Kind::Http),
            13 => Some(Kind::FileTimes),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::WallClock => "wall-clock.now",
            Kind::MonotonicClock => "monotonic-clock.now",
            Kind::Wait => "wait",
            Kind::CreateToken => "wait.create-token",
            Kind::TokenResult | Kind::TokenPending => "wait.for-token",
            Kind::Trigger => "tasks.trigger",
            Kind::ChildrenResult | Kind::ChildrenPending => "tasks.wait",
            Kind::MetadataRead => "metadata.get",
            Kind::MetadataWrite => "metadata.update",
            Kind::Http => "http.outgoing-handler.handle",
            Kind::FileTimes => "filesystem.stat",
        }
    }
}

/// How an entry's digest and value are written. Stored in the top bits of the entry's kind byte
/// (the low five hold the [`Kind`]), so every entry says how to read it and a journal may hold
/// entries of several formats: those an earlier kiln recorded before the checkpoint, then those
/// recorded after the upgrade.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// What kiln wrote before formats had numbers (bits `000`): digests over separated parts,
    /// some of them Rust `Debug` text; values as serde JSON. Replayed, never written.
    V1,
    /// Digests and values in the canonical encoding (`canon`), field by field (bits `001`).
    V2,
}

impl Format {
    /// The format new entries are written in.
    pub const CURRENT: Format = Format::V2;

    /// The format's number, the first byte of every digest written in it.
    pub fn number(self) -> u8 {
        match self {
            Format::V1 => 1,
            Format::V2 => 2,
        }
    }

    fn bits(self) -> u8 {
        match self {
            Format::V1 => 0,
            Format::V2 => 1 << KIND_BITS,
        }
    }

    fn from_bits(bits: u8) -> Option<Format> {
        match bits >> KIND_BITS {
            0 => Some(Format::V1),
            1 => Some(Format::V2),
            _ => None,
        }
    }

    /// Whether entries of this format record calls of `kind` (a later format may journal calls
    /// an earlier one answered live; replaying an earlier journal answers them live again).
    pub fn journals(self, kind: Kind) -> bool {
        match self {
            Format::V1 => (kind as u8) <= Kind::Http as u8,
            Format::V2 => true,
        }
    }
}

/// Bits of the kind byte that hold the [`Kind`].
const KIND_BITS: u32 = 5;

/// A journaled host call as a replay matches it: its digest in each [`Format`] (defined in
/// [`calls`]).
pub trait Call {
    fn digest(&self, format: Format) -> u64;
}

impl<F: Fn(Format) -> u64> Call for F {
    fn digest(&self, format: Format) -> u64 {
        self(format)
    }
}

/// One answered host call: its kind, a digest of its arguments, the answer, and the format both
/// are written in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub kind: Kind,
    pub digest: u64,
    pub value: Vec<u8>,
    pub format: Format,
}

impl Entry {
    /// An entry in the current format.
    pub fn new(kind: Kind, digest: u64, value: Vec<u8>) -> Entry {
        Entry {
            kind,
            digest,
            value,
            format: Format::CURRENT,
        }
    }

    /// Bytes the entry takes encoded.
    fn size(&self) -> usize {
        HEADER_BYTES + self.value.len()
    }
}

/// Bytes of an entry before its value: kind and format, digest, value length.
const HEADER_BYTES: usize = 1 + 8 + 4;

/// A host call that did not match the journal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Divergence(pub String);

impl fmt::Display for Divergence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Divergence {}

/// The journal of one execution: entries to replay, then entries recorded live.
#[derive(Debug, Default)]
pub struct Journal {
    replay: VecDeque<Entry>,
    /// Recorded HTTP outcomes by request number (taken out of the order of the other calls).
    http: std::collections::HashMap<u32, Entry>,
    /// Position of the next replayed entry, for messages.
    position: usize,
    recorded: Vec<Entry>,
    /// The first divergence seen (a clock read cannot fail, so it is remembered here).
    diverged: Option<Divergence>,
    /// Set once recording stopped at [`MAX_JOURNAL_BYTES`].
    overflowed: bool,
    /// Bytes of the whole journal: replayed and recorded (for the cap).
    total_bytes: usize,
    /// True while entries remain to replay; shared with the log capture, which drops lines then.
    replaying_flag: Arc<AtomicBool>,
    /// Touched by every call the journal answers: the guest went on (see `limits`).
    activity: Activity,
}

impl Journal {
    /// A journal that replays `entries` first.
    pub fn replaying(entries: Vec<Entry>) -> Journal {
        let total_bytes = entries.iter().map(Entry::size).sum();
        let (http, calls): (Vec<Entry>, Vec<Entry>) =
            entries.into_iter().partition(|e| e.kind == Kind::Http);
        Journal {
            replaying_flag: Arc::new(AtomicBool::new(!calls.is_empty())),
            total_bytes,
            replay: calls.into(),
            http: http
                .into_iter()
                .filter_map(|e| Some((http_number(&e.value)?, e)))
                .collect(),
            ..Journal::default()
        }
    }

    /// The recorded outcome of outbound request number `number` (without its number), if the
    /// recorded run got one; a divergence if that request went elsewhere.
    pub fn http_replayed(
        &mut self,
        number: u32,
        call: &impl Call,
    ) -> Result<Option<Vec<u8>>, Divergence> {
        self.activity.touch();
        let Some(entry) = self.http.remove(&number) else {
            return Ok(None);
        };
        let digest = call.digest(entry.format);
        if entry.digest != digest {
            let d = Divergence(format!(
                "on replay, outbound HTTP request #{} ({digest:016x}) is not the one the recorded run sent ({:016x}); the task must reach its waits the same way every time",
                number + 1,
                entry.digest
            ));
            self.diverged = Some(d.clone());
            return Err(d);
        }
        // HTTP outcomes are encoded alike in every format.
        Ok(Some(entry.value[4..].to_vec()))
    }

    /// Records the outcome of outbound request number `number`.
    pub fn record_http(&mut self, number: u32, call: &impl Call, outcome: &[u8]) {
        let mut value = Vec::with_capacity(4 + outcome.len());
        value.extend_from_slice(&number.to_le_bytes());
        value.extend_from_slice(outcome);
        self.record(Kind::Http, call, value);
    }

    /// What the journal's calls count into (the memory limiter reads it).
    pub(crate) fn activity(&self) -> Activity {
        self.activity.clone()
    }

    /// A flag that is true while entries remain to replay.
    pub fn replaying_flag(&self) -> Arc<AtomicBool> {
        self.replaying_flag.clone()
    }

    /// Whether calls are still answered from the journal.
    pub fn is_replaying(&self) -> bool {
        !self.replay.is_empty()
    }

    /// Answers a host call whose value is written alike in every format (a number): from the
    /// journal while replaying (the kind and digest must match), else with `live()`, recorded.
    /// While replaying entries of a format that did not journal this kind, the call is answered
    /// live and not recorded, as that format did.
    pub fn call(
        &mut self,
        kind: Kind,
        call: &impl Call,
        live: impl FnOnce() -> Vec<u8>,
    ) -> Result<Vec<u8>, Divergence> {
        if self
            .replay
            .front()
            .is_some_and(|e| !e.format.journals(kind))
        {
            return Ok(live());
        }
        if let Some(entry) = self.replayed(kind, call)? {
            return Ok(entry.value);
        }
        let value = live();
        self.record(kind, call, value.clone());
        Ok(value)
    }

    /// The recorded entry of a host call while replaying (its kind and its digest in the entry's
    /// format must match), or `None` once the journal has ended and the call must be answered
    /// live. The entry's format says how to read its value.
    pub fn replayed(&mut self, kind: Kind, call: &impl Call) -> Result<Option<Entry>, Divergence> {
        self.activity.touch();
        if let Some(d) = &self.diverged {
            return Err(d.clone());
        }
        let Some(expected) = self.replay.front() else {
            return Ok(None);
        };
        let digest = call.digest(expected.format);
        if expected.kind != kind || expected.digest != digest {
            let d = Divergence(format!(
                "on replay, host call #{} was {} ({:016x}) but the recorded run made {} ({:016x}) there; the task must reach its waits the same way every time",
                self.position + 1,
                kind.name(),
                digest,
                expected.kind.name(),
                expected.digest
            ));
            self.diverged = Some(d.clone());
            return Err(d);
        }
        self.position += 1;
        let entry = self.replay.pop_front();
        if self.replay.is_empty() {
            self.replaying_flag.store(false, Ordering::Relaxed);
        }
        Ok(entry)
    }

    /// Whether the next recorded call is of this kind and digest (without taking it).
    pub fn next_is(&self, kind: Kind, call: &impl Call) -> bool {
        self.replay
            .front()
            .is_some_and(|e| e.kind == kind && e.digest == call.digest(e.format))
    }

    /// Puts back entries taken for a flush that did not happen, ahead of any recorded since.
    pub fn restore(&mut self, mut entries: Vec<Entry>) {
        entries.append(&mut self.recorded);
        self.recorded = entries;
    }

    /// Takes the markers a suspended call left (one per execution that suspended there).
    pub fn skip_markers(&mut self, marker: Kind, call: &impl Call) -> Result<(), Divergence> {
        while self.next_is(marker, call) {
            self.replayed(marker, call)?;
        }
        Ok(())
    }

    /// Records a call answered live, in the current format.
    pub fn record(&mut self, kind: Kind, call: &impl Call, value: Vec<u8>) {
        self.activity.touch();
        let entry = Entry::new(kind, call.digest(Format::CURRENT), value);
        if self.total_bytes + entry.size() > MAX_JOURNAL_BYTES {
            self.overflowed = true;
        } else {
            self.total_bytes += entry.size();
            self.recorded.push(entry);
        }
    }

    /// The divergence seen, if any.
    pub fn divergence(&self) -> Option<&Divergence> {
        self.diverged.as_ref()
    }

    /// Why the execution ended out of step with the journal, if it did: a divergence, or the
    /// guest finished before using every recorded call.
    pub fn unfinished(&self) -> Option<Divergence> {
        if let Some(d) = &self.diverged {
            return Some(d.clone());
        }
        self.replay.front().map(|next| {
            Divergence(format!(
                "on replay the task ended before host call #{} ({}) that the recorded run made; the task must reach its waits the same way every time",
                self.position + 1,
                next.kind.name()
            ))
        })
    }

    /// The entries recorded live, for the checkpoint; an error if the journal overflowed.
    pub fn take_recorded(&mut self) -> Result<Vec<Entry>, String> {
        if self.overflowed {
            return Err(format!(
                "the attempt's journal (what it observed from the host: clock reads, waits, token and child results, metadata) passed {} MiB; make fewer or smaller host calls before waiting",
                MAX_JOURNAL_BYTES >> 20
            ));
        }
        Ok(std::mem::take(&mut self.recorded))
    }
}

fn http_number(value: &[u8]) -> Option<u32> {
    Some(u32::from_le_bytes(value.get(..4)?.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A call whose digest is `d` in every format.
    fn fixed(d: u64) -> impl Call {
        move |_: Format| d
    }

    #[test]
    fn entries_round_trip_and_garbage_is_refused() {
        let entries = vec![
            Entry::new(Kind::WallClock, 0, number(1_700_000_000_000_000_000)),
            Entry {
                format: Format::V1,
                ..Entry::new(Kind::TokenResult, 5, br#"{"ok":true}"#.to_vec())
            },
        ];
        let bytes = encode(&entries);
        assert_eq!(
            bytes[0], 0x21,
            "the current format is in the kind byte's top bits"
        );
        assert_eq!(decode(&bytes).unwrap(), entries);
        assert_eq!(decode(&bytes[..bytes.len() - 1]), None, "truncated");
        assert_eq!(decode(&[0x1f; HEADER_BYTES]), None, "unknown kind");
        assert_eq!(
            decode(&[0xe1; HEADER_BYTES]),
            None,
            "a format this kiln does not know"
        );
        assert_eq!(
            decode(&[0x41, 0x02]),
            None,
            "a compact clock read with no read before it"
        );
        assert_eq!(decode(&[1; 5]), None);
    }

    #[test]
    fn clock_reads_are_stored_compactly_and_decode_to_what_was_recorded() {
        let wall = |ns: u64| {
            Entry::new(
                Kind::WallClock,
                calls::wall_clock().digest(Format::V2),
                number(ns),
            )
        };
        let mono = |ns: u64| {
            Entry::new(
                Kind::MonotonicClock,
                calls::monotonic_clock().digest(Format::V2),
                number(ns),
            )
        };
        let t = 1_700_000_000_000_000_000u64;
        let mut entries = vec![mono(t), wall(t), mono(t + 1_500)];
        // A wall clock may go back (a manual clock, a step of NTP).
        entries.push(wall(t - 3_000_000));
        entries.push(Entry::new(Kind::Wait, 7, number(42)));
        entries.extend((1..=100).map(|i| mono(t + 1_500 + i * 900)));
        entries.push(mono(u64::MAX));
        entries.push(mono(0));
        let bytes = encode(&entries);
        assert_eq!(decode(&bytes).unwrap(), entries);
        let plain = plain_size(&entries);
        assert!(
            bytes.len() * 5 < plain,
            "{} bytes compact vs {plain} plain",
            bytes.len()
        );
        // Segments encoded one after another decode concatenated, and each alone.
        let (a, b) = entries.split_at(50);
        let mut both = encode(a);
        let second = encode(b);
        both.extend_from_slice(&second);
        assert_eq!(decode(&both).unwrap(), entries);
        assert_eq!(decode(&second).unwrap(), b);
        // A varint cut off, or longer than a u64, is not a journal.
        assert_eq!(decode(&bytes[..bytes.len() - 1]), None);
        let mut long = encode(&entries[..1]);
        long.push(0x42);
        long.extend_from_slice(&[0xff; 10]);
        long.push(0x01);
        assert_eq!(decode(&long), None);
    }

    /// A journal as the kiln before numbered formats stored it: a wall-clock read, then a
    /// one-hour `for-duration` wait (kind byte, digest, length, value; no format bits).
    #[test]
    fn a_journal_stored_before_formats_had_numbers_replays() {
        let mut stored = vec![1];
        stored.extend_from_slice(&0u64.to_le_bytes());
        stored.extend_from_slice(&8u32.to_le_bytes());
        stored.extend_from_slice(&1_700_000_000_000_000_000u64.to_le_bytes());
        stored.push(3);
        stored.extend_from_slice(&0x27c6_484d_b7bb_247du64.to_le_bytes());
        stored.extend_from_slice(&8u32.to_le_bytes());
        stored.extend_from_slice(&1_700_003_600_000u64.to_le_bytes());
        let entries = decode(&stored).unwrap();
        assert!(entries.iter().all(|e| e.format == Format::V1));

        let mut j = Journal::replaying(entries);
        let clock = j
            .call(Kind::WallClock, &calls::wall_clock(), || number(0))
            .unwrap();
        assert_eq!(as_number(&clock), Some(1_700_000_000_000_000_000));
        let wait = j
            .replayed(Kind::Wait, &calls::for_duration(3_600_000))
            .unwrap()
            .unwrap();
        assert_eq!(as_number(&wait.value), Some(1_700_003_600_000));
        assert!(j.unfinished().is_none());
        // What the run records after the upgrade is in the current format.
        j.call(Kind::WallClock, &calls::wall_clock(), || number(9))
            .unwrap();
        let recorded = j.take_recorded().unwrap();
        assert_eq!(recorded[0].format, Format::CURRENT);
        assert_eq!(recorded[0].digest, calls::wall_clock().digest(Format::V2));
    }

    #[test]
    fn calls_an_older_format_answered_live_stay_live_while_it_replays() {
        assert!(!Format::V1.journals(Kind::FileTimes));
        let mut j = Journal::replaying(vec![Entry {
            format: Format::V1,
            ..Entry::new(Kind::Wait, 1, number(7))
        }]);
        // The first format did not journal file times: answered live, not recorded, and the
        // replay goes on where it was.
        assert_eq!(
            j.call(Kind::FileTimes, &fixed(5), || number(3)),
            Ok(number(3))
        );
        assert!(j.replayed(Kind::Wait, &fixed(1)).unwrap().is_some());
        assert!(j.take_recorded().unwrap().is_empty());
        // Once it has ended, they are journaled.
        j.call(Kind::FileTimes, &fixed(5), || number(3)).unwrap();
        assert_eq!(j.take_recorded().unwrap().len(), 1);
    }

    #[test]
    fn replay_answers_from_the_record_then_goes_live() {
        let mut j = Journal::replaying(vec![Entry::new(Kind::MonotonicClock, 0, number(7))]);
        assert!(j.is_replaying());
        assert_eq!(
            j.call(Kind::MonotonicClock, &fixed(0), || number(99)),
            Ok(number(7))
        );
        assert!(!j.is_replaying());
        assert_eq!(
            j.call(Kind::MonotonicClock, &fixed(0), || number(99)),
            Ok(number(99))
        );
        assert_eq!(j.take_recorded().unwrap().len(), 1);
        assert!(j.unfinished().is_none());
    }

    #[test]
    fn a_different_call_on_replay_is_a_divergence_naming_both() {
        let mut j = Journal::replaying(vec![Entry::new(Kind::Wait, 1, number(7))]);
        let d = j.call(Kind::Wait, &fixed(2), || number(0)).unwrap_err();
        assert!(d.0.contains("wait") && d.0.contains("#1"), "{d}");
        // Sticky: later calls fail the same way.
        assert!(j.call(Kind::WallClock, &fixed(0), || number(0)).is_err());
        assert!(j.unfinished().is_some());
    }

    #[test]
    fn ending_before_the_record_does_is_a_divergence() {
        let j = Journal::replaying(vec![Entry::new(Kind::Wait, 1, number(7))]);
        assert!(j.unfinished().unwrap().0.contains("ended before"));
    }

    #[test]
    fn recording_stops_at_the_cap_and_the_checkpoint_is_refused() {
        let mut j = Journal::default();
        for _ in 0..=(MAX_JOURNAL_BYTES / (HEADER_BYTES + 8)) {
            j.call(Kind::MonotonicClock, &fixed(0), || number(1))
                .unwrap();
        }
        assert!(j.total_bytes <= MAX_JOURNAL_BYTES);
        assert!(j.take_recorded().is_err());
    }
}
