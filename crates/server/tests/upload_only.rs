//! What a credential that may not download learns from its uploads: nothing about what the
//! server holds (SECURITY.md, "An upload-only client learns nothing of what others stored").
//! It is never answered `Unchanged`, neither by size and mtime nor by digest nor through a
//! renamed copy: its offer meets the overwrite policy as a different file would. A kept
//! partial is resumed only by the principal that made it (a token by its name, a client
//! without a token that may not download by its address): another one starts at 0, learns no
//! prefix digest and leaves that partial as it was. A credential that may download is
//! answered as before.

mod common;

use common::*;
use ferry_proto::{Code, Digest, FileInfo, Name, OfferOptions, Timestamp};
use ferry_secure::{Token, TokenDigest};
use ferry_server::{Config, Credential, Overwrite, Permissions};

/// The token of a credential with every permission.
const READER: &[u8] = b"reader token, may do everything";
/// The token of a credential that may only upload.
const DROPPER: &[u8] = b"dropper token, may only upload";

const T: Timestamp = Timestamp {
    secs: 1_700_000_000,
    nanos: 123_456_789,
};

/// A resumable size (the server keeps partials of 1 MiB or more), and where bodies are cut.
const BIG: usize = 2 << 20;
const CUT: usize = 1 << 20;

/// The credential named `name` holding `token`, with `permissions`, on the whole folder.
fn credential(name: &str, token: &[u8], permissions: Permissions) -> Credential {
    Credential {
        name: name.into(),
        digest: TokenDigest::of(&Token::new(token.to_vec()).unwrap()),
        permissions,
        folder: None,
    }
}

/// A server under `overwrite` with the reader and the dropper, and clients without a token
/// that may only upload (an inbox on the network).
fn server(overwrite: Overwrite) -> TestServer {
    start(Config {
        overwrite,
        credentials: vec![
            credential("reader", READER, Permissions::ALL),
            credential("dropper", DROPPER, Permissions::UPLOAD),
        ],
        anonymous: Some(Permissions::UPLOAD),
        ..config()
    })
}

fn file(name: &str, size: usize, mtime: Timestamp) -> FileInfo {
    FileInfo {
        name: Name::parse(name).unwrap(),
        size: Some(size as u64),
        mtime: Some(mtime),
        mode: Some(0o644),
    }
}

/// Offers `bytes` as `info` from 127.0.0.1 with `token` (none: anonymous), by size and mtime
/// and then by digest: the two outcomes.
fn offer_both_ways(
    srv: &TestServer,
    token: Option<&[u8]>,
    info: &FileInfo,
    bytes: &[u8],
) -> [Outcome; 2] {
    let mut d = connect_as([127, 0, 0, 1], srv.addr(), token);
    let quick = upload_info(&mut d, info.clone(), bytes);
    let digest = OfferOptions::with_digest(Digest::of(bytes));
    let checked = upload_with(&mut d, info.clone(), digest, bytes);
    [quick, checked]
}

#[test]
fn an_upload_only_client_gets_no_unchanged_for_an_identical_file() {
    let bytes = b"salary 100".to_vec();
    let info = file("hr.txt", bytes.len(), T);
    for (policy, code) in [
        (Overwrite::Refuse, Code::Exists),
        (Overwrite::Replace, Code::Stored),
    ] {
        let srv = server(policy);
        let mut reader = connect_as([127, 0, 0, 1], srv.addr(), Some(READER));
        assert_eq!(
            upload_info(&mut reader, info.clone(), &bytes).code,
            Code::Stored
        );
        for token in [None, Some(DROPPER)] {
            for o in offer_both_ways(&srv, token, &info, &bytes) {
                // The policy answers, as for another file: under refuse only that the name is
                // taken; under replace the body is taken whole.
                assert_eq!(o.code, code, "{policy:?}, {token:?}: {o:?}");
                if code == Code::Stored {
                    assert_eq!(o.from, Some(0), "{o:?}");
                } else {
                    assert!(!o.detail.contains("hr.txt"), "{o:?}");
                }
            }
        }
        // A credential that may download could read the file anyway: unchanged, both ways.
        for o in offer_both_ways(&srv, Some(READER), &info, &bytes) {
            assert_eq!(
                (o.code, o.detail.as_str()),
                (Code::Unchanged, "hr.txt"),
                "{policy:?}"
            );
        }
        assert_eq!(srv.read("hr.txt").unwrap(), bytes);
    }
}

#[test]
fn under_rename_an_upload_only_client_finds_no_copy_and_makes_a_new_one() {
    let srv = server(Overwrite::Rename);
    let (v1, v2) = (b"salary 100".to_vec(), b"salary 200".to_vec());
    let later = Timestamp {
        secs: T.secs + 60,
        ..T
    };
    let mut reader = connect_as([127, 0, 0, 1], srv.addr(), Some(READER));
    for (bytes, mtime, stored) in [(&v1, T, "b.txt"), (&v2, later, "b (1).txt")] {
        let o = upload_info(&mut reader, file("b.txt", bytes.len(), mtime), bytes);
        assert_eq!((o.code, o.detail.as_str()), (Code::Stored, stored));
    }
    // The reader's re-run finds its copy.
    let info = file("b.txt", v2.len(), later);
    for o in offer_both_ways(&srv, Some(READER), &info, &v2) {
        assert_eq!((o.code, o.detail.as_str()), (Code::Unchanged, "b (1).txt"));
    }
    // An upload-only client is told nothing of b (1).txt: each offer is a new copy.
    let mut n = 1;
    for token in [None, Some(DROPPER)] {
        for o in offer_both_ways(&srv, token, &info, &v2) {
            n += 1;
            assert_eq!(o.code, Code::Stored, "{token:?}: {o:?}");
            assert_eq!((o.detail, o.from), (format!("b ({n}).txt"), Some(0)));
        }
    }
}

/// A folder already there keeps its mode and mtime when a credential that may not download
/// offers it (a stranger may not change what others' folders look like, nor lock the server
/// out of one with mode 000); one that may download restyles it, as before.
#[test]
fn an_upload_only_client_leaves_an_existing_folder_as_it_is() {
    use std::os::unix::fs::MetadataExt;
    let srv = server(Overwrite::Refuse);
    let looks = || {
        let m = std::fs::metadata(srv.dir.join("shared")).unwrap();
        (m.mode() & 0o777, m.mtime())
    };
    let mut reader = connect_as([127, 0, 0, 1], srv.addr(), Some(READER));
    let made = offer_folder(&mut reader, "shared", Some(0o750), Some(T));
    assert_eq!(made.code, Code::Stored);
    let before = looks();
    let later = Timestamp {
        secs: T.secs + 100,
        nanos: 0,
    };
    for token in [None, Some(DROPPER)] {
        let mut d = connect_as([127, 0, 0, 2], srv.addr(), token);
        let o = offer_folder(&mut d, "shared", Some(0o000), Some(later));
        assert_eq!(o.code, Code::Unchanged, "{token:?}");
        assert_eq!(looks(), before, "{token:?}");
    }
    let o = offer_folder(&mut reader, "shared", Some(0o755), Some(later));
    assert_eq!(o.code, Code::Unchanged);
    assert_eq!(looks().1, later.secs);
}

/// Waits until the server holds one partial per length of `lens`, and no other.
fn partials_are(srv: &TestServer, lens: &[usize]) {
    wait_for("the partials to be kept", || {
        let mut held: Vec<u64> = srv
            .partials()
            .iter()
            .filter_map(|p| std::fs::metadata(srv.dir.join(p)).ok())
            .map(|m| m.len())
            .collect();
        held.sort_unstable();
        held == lens.iter().map(|&l| l as u64).collect::<Vec<_>>()
    });
}

/// Uploads `bytes` as `name` from `from` with `token`, over a connection of its own: where
/// the body started (the resume offset taken) and the code.
fn send_from(
    srv: &TestServer,
    from: [u8; 4],
    token: Option<&[u8]>,
    name: &str,
    bytes: &[u8],
) -> (Option<u64>, Code) {
    let o = upload(&mut connect_as(from, srv.addr(), token), name, bytes);
    (o.from, o.code)
}

#[test]
fn an_anonymous_uploader_neither_resumes_nor_clobbers_another_address_s_partial() {
    let srv = server(Overwrite::Replace);
    let (mine, theirs) = ([127, 0, 0, 2], [127, 0, 0, 3]);
    let big = data(BIG, 1);
    drop_mid_body(connect_as(mine, srv.addr(), None), "big.bin", &big, CUT);
    partials_are(&srv, &[CUT]);

    // The same bytes from another address: no offset, so no prefix digest to confirm.
    assert_eq!(
        send_from(&srv, theirs, None, "big.bin", &big),
        (Some(0), Code::Stored)
    );
    // ... and another's cut upload of that name is kept apart from the first one's.
    drop_mid_body(
        connect_as(theirs, srv.addr(), None),
        "big.bin",
        &big,
        CUT / 2,
    );
    partials_are(&srv, &[CUT / 2, CUT]);

    // Each address resumes its own.
    assert_eq!(
        send_from(&srv, mine, None, "big.bin", &big),
        (Some(CUT as u64), Code::Stored)
    );
    assert_eq!(
        send_from(&srv, theirs, None, "big.bin", &big),
        (Some(CUT as u64 / 2), Code::Stored)
    );
    assert_eq!(srv.read("big.bin").unwrap(), big);
    partials_are(&srv, &[]);
}

#[test]
fn a_token_without_download_neither_resumes_nor_clobbers_another_token_s_partial() {
    let srv = server(Overwrite::Replace);
    let here = [127, 0, 0, 1];
    let big = data(BIG, 2);
    drop_mid_body(
        connect_as(here, srv.addr(), Some(READER)),
        "big.bin",
        &big,
        CUT,
    );
    partials_are(&srv, &[CUT]);

    // From the same address, with another token: a fresh upload, the reader's partial kept.
    assert_eq!(
        send_from(&srv, here, Some(DROPPER), "big.bin", &big),
        (Some(0), Code::Stored)
    );
    partials_are(&srv, &[CUT]);
    // The reader, who may download, still resumes its own partial.
    assert_eq!(
        send_from(&srv, here, Some(READER), "big.bin", &big),
        (Some(CUT as u64), Code::Stored)
    );
    partials_are(&srv, &[]);
}
