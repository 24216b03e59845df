//! A journal's stored form: per entry, the kind byte (with the entry's format in its top bits),
//! the digest, the value's length and the value — except clock reads after the first of their
//! clock, which are stored compactly.

use super::{Call, Entry, Format, HEADER_BYTES, KIND_BITS, Kind, as_number, calls, number};

/// The kind-byte bits (`010`) of a clock read stored compactly: no digest (a clock read's is
/// fixed) and, instead of the 8-byte time, the difference from the read of the same clock
/// before it in the stored bytes, as a zigzag LEB128 varint — 2 to 4 bytes for the reads a
/// guest makes microseconds apart instead of 21. Storage only: decoded, it is the
/// [`Format::V2`] entry it stands for. The first read of each clock in what one [`encode`]
/// writes is stored whole, so a journal's segments decode alone as well as concatenated.
const COMPACT_CLOCK: u8 = 2 << KIND_BITS;

/// Which clock an entry reads, as an index into the last values [`encode`] and [`decode`] keep.
fn clock_slot(kind: Kind) -> Option<usize> {
    match kind {
        Kind::WallClock => Some(0),
        Kind::MonotonicClock => Some(1),
        _ => None,
    }
}

/// The digest every clock read of `kind` has in [`Format::V2`].
fn clock_digest(kind: Kind) -> u64 {
    match kind {
        Kind::WallClock => calls::wall_clock().digest(Format::V2),
        _ => calls::monotonic_clock().digest(Format::V2),
    }
}

/// The time a V2 clock read answered, and which clock: what later reads are stored against.
fn clock_base(e: &Entry) -> Option<(usize, u64)> {
    let slot = clock_slot(e.kind)?;
    if e.format != Format::V2 || e.digest != clock_digest(e.kind) {
        return None;
    }
    Some((slot, as_number(&e.value)?))
}

/// Encodes entries for storage: per entry, the kind byte (with the format in its top bits), the
/// digest, the value's length and the value (integers little endian); a clock read after one of
/// the same clock, compactly (see [`COMPACT_CLOCK`]).
pub fn encode(entries: &[Entry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(entries.iter().map(Entry::size).sum());
    let mut last: [Option<u64>; 2] = [None; 2];
    for e in entries {
        if let Some((slot, value)) = clock_base(e) {
            if let Some(previous) = last[slot] {
                out.push(e.kind as u8 | COMPACT_CLOCK);
                write_varint(&mut out, zigzag(value.wrapping_sub(previous) as i64));
                last[slot] = Some(value);
                continue;
            }
            last[slot] = Some(value);
        }
        out.push(e.kind as u8 | e.format.bits());
        out.extend_from_slice(&e.digest.to_le_bytes());
        // Values are bounded far below 4 GiB (MAX_JOURNAL_BYTES).
        out.extend_from_slice(&(e.value.len() as u32).to_le_bytes());
        out.extend_from_slice(&e.value);
    }
    out
}

/// Bytes the entries took in storage before clock reads were stored compactly (every entry
/// whole), for the benchmark that compares the two.
pub fn plain_size(entries: &[Entry]) -> usize {
    entries.iter().map(Entry::size).sum()
}

/// Decodes stored entries of any format; `None` if the bytes are not a journal (or one of a
/// newer kiln's formats).
pub fn decode(mut bytes: &[u8]) -> Option<Vec<Entry>> {
    let mut out = Vec::new();
    let mut last: [Option<u64>; 2] = [None; 2];
    while !bytes.is_empty() {
        let kind = Kind::from_u8(bytes[0] & ((1 << KIND_BITS) - 1))?;
        if bytes[0] & !((1 << KIND_BITS) - 1) == COMPACT_CLOCK {
            let slot = clock_slot(kind)?;
            let (delta, used) = read_varint(&bytes[1..])?;
            let value = last[slot]?.wrapping_add(unzigzag(delta) as u64);
            last[slot] = Some(value);
            out.push(Entry {
                kind,
                digest: clock_digest(kind),
                value: number(value),
                format: Format::V2,
            });
            bytes = &bytes[1 + used..];
            continue;
        }
        if bytes.len() < HEADER_BYTES {
            return None;
        }
        let format = Format::from_bits(bytes[0])?;
        let digest = u64::from_le_bytes(bytes[1..9].try_into().ok()?);
        let len = u32::from_le_bytes(bytes[9..13].try_into().ok()?) as usize;
        let rest = &bytes[HEADER_BYTES..];
        if rest.len() < len {
            return None;
        }
        let entry = Entry {
            kind,
            digest,
            value: rest[..len].to_vec(),
            format,
        };
        if let Some((slot, value)) = clock_base(&entry) {
            last[slot] = Some(value);
        }
        out.push(entry);
        bytes = &rest[len..];
    }
    Some(out)
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

fn write_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A varint and the bytes it took; `None` if it is cut off or longer than a `u64`.
fn read_varint(bytes: &[u8]) -> Option<(u64, usize)> {
    let mut v = 0u64;
    for (i, b) in bytes.iter().enumerate().take(10) {
        let part = u64::from(b & 0x7f);
        if i == 9 && part > 1 {
            return None;
        }
        v |= part << (7 * i);
        if b & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}
