//! A file's digest from the digests of its parts (PROTOCOL.md §7.2 resume, when the bytes held
//! live elsewhere, e.g. as the parts of an object-store multipart upload).
//!
//! BLAKE3 is a tree: with parts whose length is a power of two (at least one 1 KiB chunk),
//! every part at an offset that is a multiple of that length is a whole subtree. Its chaining
//! value ([`PartDigest`]) is all a later hasher needs to stand for its bytes: the digest of
//! the whole file is a merge of those values and of what follows, so resuming never re-reads a
//! stored part. The merge order follows BLAKE3's own chaining-value stack (lazy merging, the
//! root merged last); the tests check it against `blake3::hash` of the whole input.

use blake3::hazmat::{
    max_subtree_len, merge_subtrees_non_root, merge_subtrees_root, ChainingValue, HasherExt, Mode,
};

use crate::digest::Digest;

/// BLAKE3's chunk length: the smallest part, and what part offsets are multiples of.
const CHUNK_LEN: u64 = blake3::CHUNK_LEN as u64;

/// What stands for one part of a file in [`Hasher::from_parts`](crate::Hasher::from_parts).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PartDigest {
    /// The part's BLAKE3 chaining value (a non-root subtree hash).
    pub chaining_value: [u8; 32],
    /// The part's digest as a whole file: known only for the part at offset 0, and needed when
    /// the file is that one part.
    pub root: Option<Digest>,
}

/// The digest of the part `part` of a file, which starts at `offset`. `None` when the part is
/// empty, `offset` is not a multiple of 1 KiB, or the part is longer than the largest subtree
/// that can start at `offset` (parts of one power-of-two length at multiples of it always fit).
#[must_use]
pub fn hash_part(offset: u64, part: &[u8]) -> Option<PartDigest> {
    if part.is_empty() || offset % CHUNK_LEN != 0 {
        return None;
    }
    if max_subtree_len(offset).is_some_and(|max| part.len() as u64 > max) {
        return None;
    }
    let mut h = blake3::Hasher::new();
    h.set_input_offset(offset);
    h.update(part);
    Some(PartDigest {
        chaining_value: h.finalize_non_root(),
        root: (offset == 0).then(|| Digest(*h.finalize().as_bytes())),
    })
}

/// A hasher that goes part by part: the chaining values of the parts done (lazily merged, as
/// BLAKE3 merges its chunks) and a subtree hasher over the part being fed.
#[derive(Clone)]
pub(crate) struct PartStack {
    part_len: u64,
    /// Merged subtrees of the parts done, left to right; the last part is never merged in
    /// until another follows (it may be the root's right child).
    stack: Vec<ChainingValue>,
    /// Parts done.
    done: u64,
    /// Digest of part 0 as a whole file (for a file of exactly one part).
    first_root: Option<Digest>,
    /// The part being fed, at offset `done * part_len`.
    current: blake3::Hasher,
    /// Bytes fed to `current`.
    current_len: u64,
}

impl PartStack {
    /// The state after `parts`, each `part_len` bytes; see [`crate::Hasher::from_parts`].
    pub(crate) fn rebuild(part_len: u64, parts: &[PartDigest]) -> Option<Self> {
        if !part_len.is_power_of_two() || part_len < CHUNK_LEN {
            return None;
        }
        let done = u64::try_from(parts.len()).ok()?;
        let offset = done.checked_mul(part_len)?;
        if parts.len() == 1 && parts[0].root.is_none() {
            return None;
        }
        let mut s = Self {
            part_len,
            stack: Vec::new(),
            done: 0,
            first_root: parts.first().and_then(|p| p.root),
            current: blake3::Hasher::new(),
            current_len: 0,
        };
        for p in parts {
            s.push(p.chaining_value);
        }
        s.current.set_input_offset(offset);
        Some(s)
    }

    /// Feeds bytes, closing each part as it fills.
    pub(crate) fn update(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            // `current_len < part_len`: a full part is closed as soon as it fills.
            let room = usize::try_from(self.part_len - self.current_len).unwrap_or(usize::MAX);
            let (now, rest) = data.split_at(room.min(data.len()));
            self.current.update(now);
            self.current_len += now.len() as u64;
            data = rest;
            if self.current_len == self.part_len {
                self.close_part();
            }
        }
    }

    /// The digest of everything fed, the parts rebuilt included.
    pub(crate) fn finalize(&self) -> Digest {
        match (self.done, self.current_len) {
            (0, 0) => Digest(*blake3::hash(&[]).as_bytes()),
            (0, _) => Digest(*self.current.finalize().as_bytes()),
            // One part, nothing after it: `rebuild` and `close_part` keep its root digest.
            (1, 0) => self.first_root.unwrap_or(Digest([0; 32])),
            (_, 0) => {
                let mut rest = self.stack.clone();
                let right = rest.pop().unwrap_or_default();
                fold(rest, right)
            }
            (done, _) => {
                // The part being fed follows: the parts done merge fully first (no merge
                // among them can be the root).
                let mut rest = self.stack.clone();
                merge_down(&mut rest, done);
                fold(rest, self.current.finalize_non_root())
            }
        }
    }

    /// Closes the full part being fed and starts the next.
    fn close_part(&mut self) {
        if self.done == 0 {
            self.first_root = Some(Digest(*self.current.finalize().as_bytes()));
        }
        let cv = self.current.finalize_non_root();
        self.push(cv);
        let offset = self.done.saturating_mul(self.part_len);
        self.current = blake3::Hasher::new();
        self.current.set_input_offset(offset);
        self.current_len = 0;
    }

    /// Puts the chaining value of the next part on the stack, merging the parts before it as
    /// BLAKE3 merges chunks (lazily: the new part stays unmerged).
    fn push(&mut self, cv: ChainingValue) {
        merge_down(&mut self.stack, self.done);
        self.stack.push(cv);
        self.done += 1;
    }
}

/// Merges the top of `stack` (the subtrees of `parts` parts) until it holds one subtree per
/// set bit of `parts`.
fn merge_down(stack: &mut Vec<ChainingValue>, parts: u64) {
    while stack.len() > parts.count_ones() as usize {
        let (Some(right), Some(left)) = (stack.pop(), stack.pop()) else {
            return;
        };
        stack.push(merge_subtrees_non_root(&left, &right, Mode::Hash));
    }
}

/// Merges `right` with the subtrees on `stack` from the top down; the last merge is the root.
fn fold(mut stack: Vec<ChainingValue>, mut right: ChainingValue) -> Digest {
    while let Some(left) = stack.pop() {
        if stack.is_empty() {
            return Digest(*merge_subtrees_root(&left, &right, Mode::Hash).as_bytes());
        }
        right = merge_subtrees_non_root(&left, &right, Mode::Hash);
    }
    // Only reached with one subtree in all, which the callers never pass.
    Digest(right)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Hasher;

    fn data(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 1021) as u8).collect()
    }

    fn parts_of(bytes: &[u8], part_len: usize) -> Vec<PartDigest> {
        bytes
            .chunks(part_len)
            .enumerate()
            .map(|(i, p)| hash_part((i * part_len) as u64, p).unwrap())
            .collect()
    }

    /// Every split of files of many lengths into rebuilt parts and fed bytes gives the
    /// digest `blake3::hash` gives the whole file.
    #[test]
    fn rebuilt_parts_then_fed_bytes_hash_like_the_whole_file() {
        for part_len in [1024usize, 4096] {
            for len in [
                0, 1, 1023, 1024, 1025, 2048, 3000, 4096, 5000, 8192, 12288, 16384, 20000, 33000,
            ] {
                let bytes = data(len);
                let whole = Digest(*blake3::hash(&bytes).as_bytes());
                for held in 0..=len / part_len {
                    let at = held * part_len;
                    let parts = parts_of(&bytes[..at], part_len);
                    let mut h = Hasher::from_parts(part_len as u64, &parts).unwrap();
                    assert_eq!(h.len(), at as u64);
                    // The prefix's own digest (what ACCEPT carries).
                    let prefix = Digest(*blake3::hash(&bytes[..at]).as_bytes());
                    assert_eq!(
                        h.finalize(),
                        prefix,
                        "prefix part {part_len} len {len} held {held}"
                    );
                    for piece in bytes[at..].chunks(777) {
                        h.update(piece);
                    }
                    assert_eq!(h.finalize(), whole, "part {part_len} len {len} held {held}");
                    assert_eq!(h.len(), len as u64);
                }
            }
        }
    }

    #[test]
    fn bad_part_layouts_are_refused_not_panicked_on() {
        assert!(hash_part(0, &[]).is_none());
        assert!(hash_part(100, &[1]).is_none());
        // At offset 1024 a subtree holds at most 1024 bytes.
        assert!(hash_part(1024, &[0; 2048]).is_none());
        let p = hash_part(1024, &[0; 1024]).unwrap();
        assert!(p.root.is_none());
        assert!(Hasher::from_parts(1000, &[]).is_none());
        assert!(Hasher::from_parts(512, &[]).is_none());
        // A single part without its root digest cannot stand for a one-part file.
        assert!(Hasher::from_parts(1024, &[p]).is_none());
        assert!(Hasher::from_parts(1 << 62, &[p, p, p, p]).is_none());
    }
}
