//! The journal's canonical encoding: how a call's arguments are digested and how an answer is
//! stored, written out field by field so that neither depends on how Rust prints or serde
//! serializes a type.
//!
//! Every field is written in a fixed order as one of a few primitives: a tag byte (an enum's
//! variant, `Option`'s presence, a `bool`), a little-endian `u32`/`u64`, an `f64`'s bits, and
//! bytes prefixed by their `u32` length (strings, lists' counts). A digest is FNV-1a (64 bits)
//! over such an encoding that starts with the format's number and the call's name, so the same
//! call digests alike on every host and version of kiln. Changing what a call or value writes
//! changes every journal already stored: it must come with a new [`super::Format`], never in place
//! (the pinned values in `calls` and `values` fail if it happens by accident).

/// Where an encoding goes: a byte buffer (a value) or a running digest.
pub(super) trait Sink {
    fn put(&mut self, bytes: &[u8]);
}

impl Sink for Vec<u8> {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

/// FNV-1a, 64 bits: defined by its two constants, so it is the same everywhere.
#[derive(Debug, Clone, Copy)]
pub(super) struct Fnv(pub(super) u64);

impl Fnv {
    pub(super) const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
}

impl Sink for Fnv {
    fn put(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(Fnv::PRIME);
        }
    }
}

/// Writes the canonical encoding into a [`Sink`].
pub(super) struct Canon<S>(S);

impl Canon<Fnv> {
    /// The digest of one call under format `format`: its number, then the call's name.
    pub(super) fn call(format: u8, name: &str) -> Canon<Fnv> {
        Canon(Fnv(Fnv::OFFSET)).tag(format).str(name)
    }

    pub(super) fn finish(self) -> u64 {
        self.0.0
    }
}

impl Canon<Vec<u8>> {
    pub(super) fn value() -> Canon<Vec<u8>> {
        Canon(Vec::new())
    }

    pub(super) fn bytes_out(self) -> Vec<u8> {
        self.0
    }
}

impl<S: Sink> Canon<S> {
    /// One byte: an enum's variant, or a presence flag.
    pub(super) fn tag(mut self, tag: u8) -> Self {
        self.0.put(&[tag]);
        self
    }

    pub(super) fn bool(self, b: bool) -> Self {
        self.tag(u8::from(b))
    }

    pub(super) fn u32(mut self, n: u32) -> Self {
        self.0.put(&n.to_le_bytes());
        self
    }

    pub(super) fn u64(mut self, n: u64) -> Self {
        self.0.put(&n.to_le_bytes());
        self
    }

    /// An `f64` as its IEEE 754 bits (so `-0.0` and `0.0` differ, and NaNs keep their payload).
    pub(super) fn f64(self, x: f64) -> Self {
        self.u64(x.to_bits())
    }

    /// A count (of a list's items, of a byte string's bytes). Lengths a guest can hand the host
    /// are below 4 GiB (wasm32), so they fit; saturating keeps a wrong one from wrapping.
    pub(super) fn len(self, n: usize) -> Self {
        self.u32(u32::try_from(n).unwrap_or(u32::MAX))
    }

    pub(super) fn bytes(mut self, b: &[u8]) -> Self {
        self = self.len(b.len());
        self.0.put(b);
        self
    }

    pub(super) fn str(self, s: &str) -> Self {
        self.bytes(s.as_bytes())
    }

    pub(super) fn opt_str(self, s: Option<&str>) -> Self {
        match s {
            None => self.tag(0),
            Some(s) => self.tag(1).str(s),
        }
    }

    pub(super) fn opt_u64(self, n: Option<u64>) -> Self {
        match n {
            None => self.tag(0),
            Some(n) => self.tag(1).u64(n),
        }
    }

    /// A list: its count, then each item as `each` writes it.
    pub(super) fn list<T>(self, items: &[T], each: impl Fn(Self, &T) -> Self) -> Self {
        items.iter().fold(self.len(items.len()), each)
    }
}

/// Reads the canonical encoding back; every method is `None` on bytes that do not fit.
pub(super) struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    pub(super) fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader(bytes)
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, tail) = (self.0.get(..n)?, self.0.get(n..)?);
        self.0 = tail;
        Some(head)
    }

    pub(super) fn tag(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }

    pub(super) fn bool(&mut self) -> Option<bool> {
        match self.tag()? {
            0 => Some(false),
            1 => Some(true),
            _ => None,
        }
    }

    pub(super) fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }

    pub(super) fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }

    pub(super) fn len(&mut self) -> Option<usize> {
        usize::try_from(self.u32()?).ok()
    }

    pub(super) fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = self.len()?;
        self.take(n)
    }

    pub(super) fn string(&mut self) -> Option<String> {
        String::from_utf8(self.bytes()?.to_vec()).ok()
    }

    pub(super) fn opt_string(&mut self) -> Option<Option<String>> {
        match self.tag()? {
            0 => Some(None),
            1 => Some(Some(self.string()?)),
            _ => None,
        }
    }

    /// A list's items; the count is checked against what is left, so a corrupt count cannot
    /// reserve memory the bytes do not back.
    pub(super) fn list<T>(
        &mut self,
        mut each: impl FnMut(&mut Reader<'a>) -> Option<T>,
    ) -> Option<Vec<T>> {
        let n = self.len()?;
        if n > self.0.len() {
            return None;
        }
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(each(self)?);
        }
        Some(out)
    }

    /// Succeeds only if every byte was read.
    pub(super) fn end<T>(self, value: T) -> Option<T> {
        self.0.is_empty().then_some(value)
    }
}
