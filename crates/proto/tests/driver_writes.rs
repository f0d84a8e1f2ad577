//! The driver loop under writes of any length (PROTOCOL.md §6.1, §9): whatever a stream takes
//! per write (everything, one byte, part of a vectored write, nothing, or `WouldBlock`), the
//! bytes that reach the peer are exactly those of a stream that takes everything, and the
//! peer machine verifies every body.

mod common;

use std::io::{self, IoSlice, Read, Write};

use common::{accepted_upload, feed, Pipe};
use ferry_proto::{
    BodyCheck, DriveError, Driver, Event, FileInfo, Hasher, Name, FLUSH_AT, INLINE_BODY_MAX,
};
use proptest::prelude::*;

/// What one write call does.
#[derive(Debug, Clone, Copy)]
enum Write1 {
    /// Takes at most this many bytes (at least 1), across the slices of a vectored write.
    Take(usize),
    /// Returns `Ok(0)`.
    Zero,
    /// Fails with `WouldBlock`.
    Block,
}

/// A stream whose writes follow a schedule, cycled, and which is never read. Each cycle ends
/// with a write that takes everything, so that the writer always progresses in the end.
struct Flaky {
    schedule: Vec<Write1>,
    next: usize,
    out: Vec<u8>,
}

impl Flaky {
    fn new(mut schedule: Vec<Write1>) -> Self {
        schedule.push(Write1::Take(usize::MAX));
        Self {
            schedule,
            next: 0,
            out: Vec::new(),
        }
    }
}

impl Read for Flaky {
    fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
        Err(io::ErrorKind::WouldBlock.into())
    }
}

impl Write for Flaky {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[IoSlice::new(buf)])
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let step = self
            .schedule
            .get(self.next % self.schedule.len().max(1))
            .copied();
        self.next += 1;
        let mut room = match step.unwrap_or(Write1::Take(usize::MAX)) {
            Write1::Take(n) => n.max(1),
            Write1::Zero => return Ok(0),
            Write1::Block => return Err(io::ErrorKind::WouldBlock.into()),
        };
        let mut n = 0;
        for b in bufs {
            let k = b.len().min(room);
            self.out.extend_from_slice(&b[..k]);
            room -= k;
            n += k;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Repeats `op` while the stream refuses (`WouldBlock`, a write of 0), as a caller of a
/// non-blocking stream would after waiting; at most `10_000` times.
fn again<T>(
    d: &mut Driver<Flaky>,
    mut op: impl FnMut(&mut Driver<Flaky>) -> Result<T, DriveError>,
) -> T {
    for _ in 0..10_000 {
        match op(d) {
            Err(DriveError::Io(e))
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::WriteZero
                ) => {}
            other => return other.expect("no error besides the stream's refusals"),
        }
    }
    panic!("no progress after 10000 attempts");
}

fn body(pieces: &[usize]) -> Vec<Vec<u8>> {
    pieces
        .iter()
        .enumerate()
        .map(|(i, &n)| (0..n).map(|j| (i * 7 + j * 13) as u8).collect())
        .collect()
}

/// Uploads `pieces` through a driver over a stream that writes as `schedule` says, with a
/// second OFFER queued between two pieces; returns every byte written.
fn upload(pieces: &[Vec<u8>], schedule: Vec<Write1>) -> Vec<u8> {
    let size: usize = pieces.iter().map(Vec::len).sum();
    let info = |name: &str, size| FileInfo {
        name: Name::parse(name).unwrap(),
        size: Some(size as u64),
        mtime: None,
        mode: None,
    };
    let (client, _, id) = accepted_upload(info("body", size));
    let mut d = Driver::new(Flaky::new(schedule), client);
    d.conn_mut().begin(id, Hasher::new()).unwrap();
    for (i, piece) in pieces.iter().enumerate() {
        again(&mut d, |d| d.send_body(piece));
        if i == pieces.len() / 2 {
            d.conn_mut().offer(info("next", 1)).unwrap();
        }
    }
    d.conn_mut().end().unwrap();
    again(&mut d, Driver::flush);
    assert!(d.conn().poll_transmit().is_empty() && !d.conn().body_pending());
    d.into_parts().0.out
}

fn write_step() -> impl Strategy<Value = Write1> {
    prop_oneof![
        4 => (1usize..3 * FLUSH_AT).prop_map(Write1::Take),
        2 => Just(Write1::Take(1)),
        1 => (2usize..16).prop_map(Write1::Take),
        2 => Just(Write1::Zero),
        2 => Just(Write1::Block),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// §6.1, §9: random write sizes (0, 1, partial, `WouldBlock`) in the driver loop never
    /// desynchronise the two machines: the stream carries the same bytes as one that takes
    /// every write whole, and the server machine receives the body intact.
    #[test]
    fn random_write_sizes_never_desynchronise_the_machines(
        sizes in prop::collection::vec(
            prop_oneof![0usize..64, 1usize..=INLINE_BODY_MAX, INLINE_BODY_MAX..4 * INLINE_BODY_MAX],
            1..10,
        ),
        schedule in prop::collection::vec(write_step(), 1..40),
    ) {
        let pieces = body(&sizes);
        let flaky = upload(&pieces, schedule);
        let whole = upload(&pieces, vec![Write1::Take(usize::MAX)]);
        prop_assert!(flaky == whole, "the byte streams differ");

        let (_, mut server, id) = accepted_upload(FileInfo {
            name: Name::parse("body").unwrap(),
            size: Some(pieces.iter().map(Vec::len).sum::<usize>() as u64),
            mtime: None,
            mode: None,
        });
        // The driver wrote what follows the magic, HELLO and OFFER this server has read.
        let mut pipe = Pipe::default();
        pipe.push(&flaky);
        let mut received = Vec::new();
        let mut events = Vec::new();
        loop {
            let (ev, moved) = feed(&mut server, &mut pipe, usize::MAX, &mut received);
            events.extend(ev);
            if !moved {
                break;
            }
        }
        let all: Vec<u8> = pieces.concat();
        prop_assert_eq!(&received, &all);
        let end = events.iter().find_map(|e| match e {
            Event::End { id: got, check, .. } if *got == id => Some(*check),
            _ => None,
        });
        prop_assert_eq!(end, Some(BodyCheck::Verified(ferry_proto::Digest::of(&all))));
        prop_assert!(events.iter().any(|e| matches!(e, Event::Offer(o) if o.name.as_ref().is_ok_and(|n| n.as_str() == "next"))));
    }
}
