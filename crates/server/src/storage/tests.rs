//! The [`Storage`] trait driven through the file-system backend alone, as the session drives
//! it: no socket, no protocol machine.

use super::*;
use crate::commit::Flush;
use ferry_proto::EntryKind;

fn name(s: &str) -> Name {
    Name::parse(s).expect("valid")
}

fn open_in(dir: &Path) -> Arc<dyn Storage> {
    let config = Config {
        dir: dir.join("store"),
        ..Config::default()
    };
    open(&config).expect("the storage opens")
}

/// Bytes that differ from one offset to the next, so that a prefix at the wrong offset shows.
fn body(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
}

/// Everything `out` reads from `from` to its end, through ranged reads of `chunk` bytes.
fn read_from(out: &mut dyn Outgoing, from: u64, chunk: usize) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = vec![0u8; chunk];
    for _ in 0..10_000 {
        let n = out.read_at(from + got.len() as u64, &mut buf).unwrap();
        if n == 0 {
            return got;
        }
        got.extend_from_slice(&buf[..n]);
    }
    panic!("read_at never reached the end");
}

#[test]
fn an_upload_is_cut_resumed_from_its_verified_prefix_published_served_and_listed() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open_in(tmp.path());
    let data = body(3 << 20);
    let cut = (3 << 20) / 2 + 12_345;
    let mtime = Timestamp {
        secs: 1_700_000_000,
        nanos: 0,
    };
    let meta = FileMeta {
        size: Some(data.len() as u64),
        mtime: Some(mtime),
        mode: Some(0o640),
    };
    let n = name("d/big.bin");

    // First attempt: nothing held yet; the body is cut off and kept.
    let (mut up, prefix) = store
        .prepare_upload(n.clone(), meta, None, Some(&Principal::Anonymous), &mut [])
        .unwrap()
        .upload();
    assert_eq!(prefix.len(), 0);
    assert!(
        up.holds_reservation(),
        "a large resumable upload holds its partial"
    );
    let busy = store
        .prepare_upload(n.clone(), meta, None, Some(&Principal::Anonymous), &mut [])
        .unwrap_err();
    assert_eq!(
        busy.code,
        Code::Busy,
        "the partial is locked: {}",
        busy.reason
    );
    let mut incoming = store.start_body(&mut up, 0).unwrap();
    for chunk in data[..cut].chunks(64 << 10) {
        incoming.write(chunk).unwrap();
    }
    assert_eq!(incoming.len(), cut as u64);
    assert!(incoming.interrupt(), "kept for resume");
    drop(up);
    let hidden = store.offer_download(n.clone()).unwrap_err();
    assert_eq!(hidden.code, Code::NotFound, "nothing under the final name");

    // Second attempt: the hasher covers exactly the bytes kept.
    let (mut up, prefix) = store
        .prepare_upload(n.clone(), meta, None, Some(&Principal::Anonymous), &mut [])
        .unwrap()
        .upload();
    assert_eq!(prefix.len(), cut as u64);
    assert_eq!(prefix.finalize(), Digest::of(&data[..cut]));
    let mut incoming = store.start_body(&mut up, prefix.len()).unwrap();
    incoming.write(&data[cut..]).unwrap();
    assert_eq!(incoming.len(), data.len() as u64);
    let (stored, touched) = incoming.publish(&up, Digest::of(&data), true).unwrap();
    assert_eq!(stored, "d/big.bin");
    assert!(store.durable());
    let touched = touched.expect("a durable store tracks what to flush");
    store.flush(&Flush::Items(vec![touched])).unwrap();
    drop(up);
    let on_disk = store.local_folder().unwrap().join("d/big.bin");
    assert_eq!(std::fs::read(&on_disk).unwrap(), data);

    // Served: the OFFER describes it, reads at any offset give its bytes, and a resumed
    // download gets the hasher over its first bytes.
    let offered = store.offer_download(n.clone()).unwrap();
    assert_eq!(offered.info.size, Some(data.len() as u64));
    assert_eq!(offered.info.mtime, Some(mtime));
    assert_eq!(
        offered.digest,
        Some(Digest::of(&data)),
        "recorded at publish"
    );
    let mut out = store.open_download(offered).unwrap();
    assert_eq!(out.info().name, n);
    assert_eq!(read_from(out.as_mut(), 0, 100_000), data);
    assert_eq!(read_from(out.as_mut(), 777, 4096), data[777..]);
    let mut buf = vec![0u8; 64 << 10];
    let resumed = out.prefix(cut as u64, &mut buf);
    assert_eq!(resumed.finalize(), Digest::of(&data[..cut]));
    assert_eq!(out.prefix(data.len() as u64 + 1, &mut buf).len(), 0);
    assert_eq!(out.prefix(0, &mut buf).len(), 0);

    // A file changed after its OFFER is not served as the version offered.
    let offered = store.offer_download(n.clone()).unwrap();
    std::fs::write(&on_disk, b"something else").unwrap();
    let why = store.open_download(offered).err().expect("changed");
    assert!(why.contains("changed"), "{why}");

    // Listed: the folder, then the file, nothing skipped.
    let mut listing = store.list(None, true).unwrap();
    let mut entries = Vec::new();
    while let Some(e) = listing.next_entry() {
        entries.push((e.kind, e.name.as_str().to_owned(), e.size));
    }
    assert_eq!(
        entries,
        [
            (EntryKind::Folder, "d".to_owned(), 0),
            (EntryKind::File, "d/big.bin".to_owned(), 14),
        ]
    );
    assert_eq!(listing.skipped(), 0);
}

#[test]
fn a_small_or_plain_upload_holds_nothing_and_a_cut_body_is_dropped() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open_in(tmp.path());
    let data = body(5000);
    let meta = FileMeta {
        size: Some(data.len() as u64),
        ..FileMeta::default()
    };
    for resume_for in [Some(&Principal::Anonymous), None] {
        let (mut up, prefix) = store
            .prepare_upload(name("s"), meta, None, resume_for, &mut [])
            .unwrap()
            .upload();
        assert_eq!(prefix.len(), 0);
        assert!(
            !up.holds_reservation(),
            "below the resume size: a temp file"
        );
        let mut incoming = store.start_body(&mut up, 0).unwrap();
        incoming.write(&data[..100]).unwrap();
        assert!(!incoming.interrupt(), "dropped");
    }
    let (_, prefix) = store
        .prepare_upload(name("s"), meta, None, Some(&Principal::Anonymous), &mut [])
        .unwrap()
        .upload();
    assert_eq!(prefix.len(), 0, "nothing was kept");
    let mut listing = store.list(None, false).unwrap();
    assert!(listing.next_entry().is_none(), "nothing shows");
}
