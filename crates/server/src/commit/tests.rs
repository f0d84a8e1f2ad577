use super::*;

#[test]
fn a_batch_closes_at_its_caps_or_at_once_without_durability() {
    let mut b = Batch::with_caps(true, (2, 100, 1000));
    assert!(!b.is_full());
    b.stored(1, "a".into(), 10, None);
    assert!(!b.is_full());
    b.push(Reply {
        id: 2,
        code: Code::DigestMismatch,
        detail: "b".into(),
    });
    assert!(!b.is_full(), "a failure does not count as a file to flush");
    b.stored(3, "c".into(), 10, None);
    assert!(b.is_full(), "two files");
    let (replies, flush) = b.close();
    assert_eq!(replies.iter().map(|r| r.id).collect::<Vec<_>>(), [1, 2, 3]);
    assert!(
        matches!(flush, Some(Flush::All)),
        "untracked files: {flush:?}"
    );
    assert!(!b.is_full());
    b.stored(4, "d".into(), 100, Some(touched(1)));
    assert!(b.is_full(), "100 bytes");
    assert!(matches!(b.close().1, Some(Flush::Items(i)) if i.len() == 1));
    b.push(Reply {
        id: 5,
        code: Code::Io,
        detail: "x".repeat(1000),
    });
    assert!(b.is_full(), "1000 bytes of text");
    assert!(b.close().1.is_none(), "nothing stored, nothing to flush");

    // A folder made now waits for a flush of its own.
    assert!(b.touch(Some(touched(0))));
    assert!(b.waits_for_flush());
    assert!(matches!(b.close().1, Some(Flush::Items(i)) if i.len() == 1));

    // Past MAX_TRACKED descriptors, the batch lets them go and flushes everything.
    for id in 0..MAX_TRACKED as u64 {
        b.stored(id, "f".into(), 1, Some(touched(1)));
    }
    assert!(matches!(b.close().1, Some(Flush::All)));

    let mut plain = Batch::new(false);
    plain.stored(1, "a".into(), 1, Some(touched(1)));
    assert!(plain.is_full());
    assert!(plain.close().1.is_none());
}

/// Something touching `extra + 1` folders (descriptors of the current folder: never flushed
/// here, only counted).
fn touched(extra: usize) -> Touched {
    let dir = || rustix::fs::open(".", rustix::fs::OFlags::RDONLY, rustix::fs::Mode::empty());
    Touched {
        file: None,
        folders: (0..=extra).map(|_| dir().unwrap()).collect(),
    }
}

#[test]
fn a_batch_is_ripe_at_a_quarter_of_a_cap_when_durable() {
    let mut b = Batch::with_caps(true, (8, 400, 4000));
    b.stored(1, "a".into(), 10, None);
    assert!(!b.is_ripe());
    b.stored(2, "b".into(), 10, None);
    assert!(b.is_ripe(), "2 of 8 files");
    b.close();
    b.stored(3, "c".into(), 100, None);
    assert!(b.is_ripe(), "100 of 400 bytes");
    b.close();
    b.push(Reply {
        id: 4,
        code: Code::Io,
        detail: "x".repeat(1000),
    });
    assert!(b.is_ripe(), "1000 of 4000 bytes of text");
    let mut plain = Batch::with_caps(false, (8, 400, 4000));
    plain.stored(1, "a".into(), 400, None);
    assert!(!plain.is_ripe(), "not durable: full at once instead");
}
