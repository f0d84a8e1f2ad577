//! Reading the small files of a send into the system's cache ahead of the send.
//!
//! A small file's body goes whole with its offer, read at once when it is offered. If the
//! system let its pages go (they were not read for a while), that read waits for the disk,
//! one file after another, and behind the receiver's writes when both ends share a disk: a
//! tree whose data is not cached took twice as long. The send asks the system to read the
//! small files ahead of it instead ([`crate::walk::Source::read_soon`]), without waiting, so
//! that their reads reach the disk together; at most [`READ_AHEAD_BYTES`] ahead, so that a
//! tree larger than the memory is not read so far ahead that its first files are let go
//! again before they are sent, and only while their bodies go with their offers (a re-run
//! whose files the server holds unchanged reads none of them). Each step of the send asks for
//! at most [`READ_AHEAD_STEP`] more, as much as it can send early, so that the asking (a system
//! call per file) goes along with the offers instead of holding up the first ones: a tree of
//! 5,000 small files asked for all of them before its first write after the handshake, 3 ms
//! later instead of 1 ms, while the server waited.

use std::ops::Range;

/// Most bytes (in whole pages) of the files read ahead and not yet offered.
pub(crate) const READ_AHEAD_BYTES: u64 = 64 << 20;
/// Most bytes (in whole pages) of the files read ahead at one step of the send: as many as
/// one step can send early, before answers come (`EARLY_IN_FLIGHT_MAX`).
pub(crate) const READ_AHEAD_STEP: u64 = ferry_proto::EARLY_IN_FLIGHT_MAX;
/// The cache's page size, in which the bytes read ahead are counted.
const PAGE: u64 = 4096;

/// How far the sources of a send have been read ahead.
#[derive(Debug)]
pub(crate) struct ReadAhead {
    /// Most bytes ahead.
    budget: u64,
    /// Most bytes read ahead at one call.
    step: u64,
    /// The sources before this one have been read ahead.
    until: usize,
    /// The first source read ahead and not yet offered (`bytes` counts from it).
    passed: usize,
    /// Bytes of the sources read ahead and not yet offered, in whole pages.
    bytes: u64,
}

impl ReadAhead {
    /// Nothing read ahead yet; at most `budget` bytes ahead, `step` bytes at a call.
    pub(crate) fn new(budget: u64, step: u64) -> Self {
        Self {
            budget,
            step,
            until: 0,
            passed: 0,
            bytes: 0,
        }
    }

    /// With `next` the next source to offer and `len(i)` the bytes source `i` is read ahead
    /// for (`None` past the last source), the sources to read ahead now: those that follow
    /// the ones read ahead so far while the bytes ahead of `next` stay within the budget, and
    /// those of this call within the step (at least one, so that no file stalls the rest).
    #[must_use]
    pub(crate) fn advance(
        &mut self,
        next: usize,
        len: impl Fn(usize) -> Option<u64>,
    ) -> Range<usize> {
        let pages = |i| len(i).map(|n| n.div_ceil(PAGE).saturating_mul(PAGE));
        while self.passed < next.min(self.until) {
            self.bytes = self.bytes.saturating_sub(pages(self.passed).unwrap_or(0));
            self.passed += 1;
        }
        self.passed = self.passed.max(next);
        self.until = self.until.max(next);
        let from = self.until;
        let mut stepped = 0u64;
        while let Some(n) = pages(self.until) {
            let past_step = self.until > from && stepped.saturating_add(n) > self.step;
            if self.bytes.saturating_add(n) > self.budget || past_step {
                break;
            }
            self.bytes += n;
            stepped += n;
            self.until += 1;
        }
        from..self.until
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_files_ahead_of_the_send_stay_within_the_budget_and_each_is_read_ahead_once() {
        // Ten files: 1 byte (a page), 4 KiB, 5 KiB (two pages), an empty one, then pages.
        let sizes = [1, 4096, 5000, 0, 4096, 4096, 4096, 4096, 4096, 4096];
        let len = |i: usize| sizes.get(i).copied();
        let mut ahead = ReadAhead::new(4 * PAGE, 4 * PAGE);
        // 1 + 1 + 2 pages fill the budget, and the empty file costs none.
        assert_eq!(ahead.advance(0, len), 0..4);
        assert_eq!(ahead.advance(0, len), 4..4, "nothing twice");
        // The first offered frees its page for one more.
        assert_eq!(ahead.advance(1, len), 4..5);
        // Offers may run ahead of what was read ahead.
        assert_eq!(ahead.advance(7, len), 7..10);
        assert_eq!(ahead.advance(10, len), 10..10);
    }

    #[test]
    fn a_file_larger_than_the_budget_is_never_read_ahead_and_does_not_stall_the_rest() {
        let sizes = [8 * PAGE, u64::MAX, PAGE];
        let len = |i: usize| sizes.get(i).copied();
        let mut ahead = ReadAhead::new(4 * PAGE, 4 * PAGE);
        assert_eq!(ahead.advance(0, len), 0..0);
        assert_eq!(
            ahead.advance(1, len),
            1..1,
            "no overflow counting the largest size"
        );
        assert_eq!(ahead.advance(2, len), 2..3);
    }

    #[test]
    fn each_call_reads_ahead_at_most_a_step_and_the_next_calls_go_on() {
        // Ten one-page files, a budget of eight pages, a step of three.
        let len = |i: usize| (i < 10).then_some(PAGE);
        let mut ahead = ReadAhead::new(8 * PAGE, 3 * PAGE);
        assert_eq!(ahead.advance(0, len), 0..3);
        assert_eq!(ahead.advance(0, len), 3..6);
        // The budget binds before the step.
        assert_eq!(ahead.advance(0, len), 6..8);
        assert_eq!(ahead.advance(0, len), 8..8);
        // A file larger than the step still goes, alone, within the budget.
        let big = |i: usize| [PAGE, 5 * PAGE, PAGE].get(i).copied();
        let mut ahead = ReadAhead::new(8 * PAGE, 3 * PAGE);
        assert_eq!(ahead.advance(0, big), 0..1);
        assert_eq!(ahead.advance(0, big), 1..2);
        assert_eq!(ahead.advance(0, big), 2..3);
    }
}
