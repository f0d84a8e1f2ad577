//! BLAKE3 digests of whole files, and an incremental hasher that counts what it saw (PROTOCOL.md §6).

use std::fmt;

use crate::parts::{PartDigest, PartStack};

/// Length in bytes of a [`Digest`].
pub const DIGEST_LEN: usize = 32;

/// The BLAKE3 digest of a whole file, as carried by END and ACCEPT frames.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Digest(pub [u8; DIGEST_LEN]);

impl Digest {
    /// The digest of zero bytes.
    #[must_use]
    pub fn of_empty() -> Self {
        Hasher::new().finalize()
    }

    /// Hashes `data` in one call.
    #[must_use]
    pub fn of(data: &[u8]) -> Self {
        let mut h = Hasher::new();
        h.update(data);
        h.finalize()
    }

    /// Lower-case hexadecimal form, as printed in logs and JSON output.
    #[must_use]
    pub fn to_hex(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({self})")
    }
}

/// An incremental BLAKE3 hasher that also counts the bytes it has seen.
///
/// Resume uses the count: a hasher fed the first `n` bytes of a file stands for that prefix.
/// A hasher can also be rebuilt from the digests of a file's first parts, without their bytes
/// ([`Hasher::from_parts`]).
#[derive(Clone)]
pub struct Hasher {
    inner: Inner,
    len: u64,
}

/// How a [`Hasher`] holds what it has seen.
#[derive(Clone)]
enum Inner {
    /// Every byte went through one BLAKE3 hasher.
    Whole(blake3::Hasher),
    /// Rebuilt from part digests: goes on part by part.
    Parts(PartStack),
}

impl Default for Hasher {
    fn default() -> Self {
        Self {
            inner: Inner::Whole(blake3::Hasher::new()),
            len: 0,
        }
    }
}

impl Hasher {
    /// A hasher that has seen nothing.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// The hasher of a file's first `parts.len()` parts of `part_len` bytes each, rebuilt from
    /// their digests ([`hash_part`](crate::hash_part)) without the bytes: it goes on hashing
    /// what follows and finalizes to the BLAKE3 digest of the whole file. `None` when
    /// `part_len` is not a power of two of at least 1 KiB, the total length overflows, or a
    /// single part comes without its root digest.
    #[must_use]
    pub fn from_parts(part_len: u64, parts: &[PartDigest]) -> Option<Self> {
        let stack = PartStack::rebuild(part_len, parts)?;
        let len = part_len.checked_mul(u64::try_from(parts.len()).ok()?)?;
        Some(Self {
            inner: Inner::Parts(stack),
            len,
        })
    }

    /// Feeds more bytes.
    pub fn update(&mut self, data: &[u8]) {
        match &mut self.inner {
            // blake3 picks its SIMD kernel at run time; large slices go through its wide path.
            Inner::Whole(h) => {
                h.update(data);
            }
            Inner::Parts(p) => p.update(data),
        }
        self.len = self.len.saturating_add(data.len() as u64);
    }

    /// How many bytes were fed so far.
    #[must_use]
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True when nothing was fed.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The digest of everything fed so far (the hasher stays usable).
    #[must_use]
    pub fn finalize(&self) -> Digest {
        match &self.inner {
            Inner::Whole(h) => Digest(*h.finalize().as_bytes()),
            Inner::Parts(p) => p.finalize(),
        }
    }
}

impl fmt::Debug for Hasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hasher").field("len", &self.len).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incremental_equals_one_shot_and_counts() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        let mut h = Hasher::new();
        for chunk in data.chunks(777) {
            h.update(chunk);
        }
        assert_eq!(h.len(), data.len() as u64);
        assert_eq!(h.finalize(), Digest::of(&data));
        assert_eq!(h.finalize().to_hex().len(), 64);
        assert_ne!(Digest::of(b"a"), Digest::of_empty());
    }
}
