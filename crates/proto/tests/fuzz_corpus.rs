//! Replays the fuzz corpus (`tests/corpus/<target>/`) through the fuzz targets' own checks
//! (`tests/fuzz_checks/mod.rs`, which `fuzz/fuzz_targets/*.rs` include), without a fuzzer.
//! See `fuzz/README.md` for running the fuzzers and adding a reproducer.

mod fuzz_checks;

use std::fs;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use ferry_proto::wire::{Frame, Timestamp, MAGIC, VERSION};
use ferry_proto::{Code, Digest, EntryKind};
use fuzz_checks::{sample_entry as entry, Chunked, TARGETS};

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/corpus")
        .join(target)
}

fn corpus_files(target: &str) -> Vec<PathBuf> {
    let dir = corpus_dir(target);
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

/// Runs every corpus file of `target` through its check; fails listing every file that panics.
fn replay(target: &str) {
    let check = TARGETS.iter().find(|(t, _)| *t == target).unwrap().1;
    let files = corpus_files(target);
    assert!(!files.is_empty(), "the {target} corpus is empty");
    let mut failed = Vec::new();
    for file in &files {
        let data = fs::read(file).unwrap();
        if catch_unwind(AssertUnwindSafe(|| check(&data))).is_err() {
            failed.push(file.file_name().unwrap().to_string_lossy().into_owned());
        }
    }
    assert!(
        failed.is_empty(),
        "{target}: {} of {} corpus inputs fail: {failed:?}",
        failed.len(),
        files.len()
    );
}

#[test]
fn corpus_frame_decode() {
    replay("frame_decode");
}

#[test]
fn corpus_names() {
    replay("names");
}

#[test]
fn corpus_server_stream() {
    replay("server_stream");
}

#[test]
fn corpus_client_stream() {
    replay("client_stream");
}

#[test]
fn corpus_seed_stream() {
    replay("seed_stream");
}

/// Every target has a corpus directory, and the corpus stays small.
#[test]
fn corpus_is_complete_and_small() {
    let mut total = 0;
    for (target, _) in TARGETS {
        for f in corpus_files(target) {
            total += fs::metadata(f).unwrap().len();
        }
    }
    let dirs = fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus")).unwrap();
    for d in dirs {
        let name = d.unwrap().file_name();
        let name = name.to_string_lossy();
        assert!(
            TARGETS.iter().any(|(t, _)| *t == name),
            "tests/corpus/{name} is not a fuzz target"
        );
    }
    assert!(total < 1 << 20, "the corpus is {total} bytes");
}

/// The seed inputs themselves pass the checks (they are also what `write_seeds` writes).
#[test]
fn seeds_pass_the_checks() {
    for (target, check) in TARGETS {
        let seeds = seeds(target);
        assert!(!seeds.is_empty(), "{target}");
        for (name, data) in seeds {
            if catch_unwind(AssertUnwindSafe(|| check(&data))).is_err() {
                panic!("{target}/{name} fails");
            }
        }
    }
}

/// Writes well-formed starting inputs for the fuzzers to `$FERRY_FUZZ_SEEDS/<target>/`
/// (see fuzz/README.md): `FERRY_FUZZ_SEEDS=$PWD/fuzz/corpus cargo test -p ferry-proto
/// --test fuzz_corpus -- --ignored write_seeds`.
#[test]
#[ignore = "writes files; run by hand to seed fuzz/corpus"]
fn write_seeds() {
    let root = PathBuf::from(std::env::var("FERRY_FUZZ_SEEDS").expect("set FERRY_FUZZ_SEEDS"));
    for (target, _) in TARGETS {
        let dir = root.join(target);
        fs::create_dir_all(&dir).unwrap();
        for (name, data) in seeds(target) {
            fs::write(dir.join(format!("seed-{name}")), data).unwrap();
        }
    }
}

fn enc(frames: &[Frame]) -> Vec<u8> {
    let mut out = Vec::new();
    for f in frames {
        f.encode(&mut out);
    }
    out
}

fn data(bytes: &[u8]) -> Vec<u8> {
    let mut out = enc(&[Frame::Data {
        len: bytes.len() as u32,
    }]);
    out.extend_from_slice(bytes);
    out
}

fn with_header(options: u8, sizes: &[u8], stream: &[u8]) -> Vec<u8> {
    let mut v = Chunked::header(options, sizes);
    v.extend_from_slice(stream);
    v
}

/// Well-formed inputs for each target: valid frames, names and whole conversations.
fn seeds(target: &str) -> Vec<(String, Vec<u8>)> {
    let d = Digest::of(b"hello");
    let sample_frames = vec![
        Frame::Hello {
            min: 1,
            max: 1,
            token: b"tok".to_vec(),
        },
        Frame::Welcome { version: VERSION },
        Frame::Offer {
            kind: EntryKind::File,
            digest: None,
            id: 1,
            size: Some(5),
            mtime: Some(Timestamp {
                secs: 1_700_000_000,
                nanos: 5,
            }),
            mode: Some(0o644),
            name: "dir/a.txt".into(),
            early: false,
        },
        Frame::Accept {
            id: 1,
            offset: 2,
            prefix: d,
        },
        Frame::Refuse {
            id: 2,
            code: Code::Exists,
            reason: "exists".into(),
        },
        Frame::Begin { id: 1, from: 0 },
        Frame::End {
            id: 1,
            size: 5,
            digest: d,
        },
        Frame::Result {
            id: 1,
            code: Code::Stored,
            detail: "a.txt".into(),
        },
        Frame::Get {
            id: 3,
            name: "g1".into(),
        },
        Frame::Cancel {
            id: 4,
            reason: "gone".into(),
        },
        Frame::Error {
            code: Code::Other(999),
            reason: "é".into(),
        },
        // Version 2 (PROTOCOL.md §4.8-§4.10).
        Frame::Offer {
            kind: EntryKind::Folder,
            digest: None,
            id: 5,
            size: None,
            mtime: Some(Timestamp { secs: 7, nanos: 8 }),
            mode: Some(0o750),
            name: "photos/2024".into(),
            early: false,
        },
        Frame::Offer {
            kind: EntryKind::File,
            digest: Some(d),
            id: 6,
            size: Some(5),
            mtime: None,
            mode: None,
            name: "aux.c".into(),
            early: false,
        },
        Frame::Refuse {
            id: 6,
            code: Code::Unchanged,
            reason: "aux.c".into(),
        },
        Frame::List {
            id: 7,
            recursive: true,
            path: "photos".into(),
        },
        Frame::Entries {
            id: 7,
            entries: vec![
                entry(EntryKind::Folder, "photos"),
                entry(EntryKind::File, "photos/x:y?"),
            ],
        },
        Frame::Listed {
            id: 7,
            count: 2,
            skipped: 1,
        },
    ];
    let mut out: Vec<(String, Vec<u8>)> = Vec::new();
    match target {
        "frame_decode" => {
            for (i, f) in sample_frames.iter().enumerate() {
                let e = enc(std::slice::from_ref(f));
                let mut v = vec![e[0]];
                v.extend_from_slice(&e[5..]);
                out.push((format!("frame{i}"), v));
            }
        }
        "names" => {
            for (i, n) in [
                "a.txt",
                "photos/2024/img 1.jpg",
                "é/日本.txt",
                "../x",
                "C:x",
                "COM¹.log",
                "dir/nul.txt",
                "a\u{202E}b",
                "linux/aux.c",
                "Screenshot 2024-01-01 10:30:00.png",
                "what?",
                "back\\slash/trailing.",
                "f/..namedfork/rsrc",
            ]
            .iter()
            .enumerate()
            {
                out.push((format!("name{i}"), n.as_bytes().to_vec()));
            }
        }
        "server_stream" => {
            let hello = fuzz_checks::client_prelude();
            let upload = enc(&[
                Frame::Offer {
                    kind: EntryKind::File,
                    digest: None,
                    id: 1,
                    size: Some(5),
                    mtime: None,
                    mode: None,
                    name: "a.txt".into(),
                    early: false,
                },
                Frame::Offer {
                    kind: EntryKind::File,
                    digest: None,
                    id: 2,
                    size: None,
                    mtime: None,
                    mode: None,
                    name: "s".into(),
                    early: false,
                },
                Frame::Offer {
                    kind: EntryKind::File,
                    digest: None,
                    id: 3,
                    size: Some(1),
                    mtime: None,
                    mode: None,
                    name: "../bad".into(),
                    early: false,
                },
                Frame::Begin { id: 1, from: 0 },
            ]);
            let mut session = hello.clone();
            session.extend_from_slice(&upload);
            session.extend_from_slice(&data(b"hel"));
            session.extend_from_slice(&data(b"lo"));
            session.extend(enc(&[
                Frame::End {
                    id: 1,
                    size: 5,
                    digest: d,
                },
                Frame::Begin { id: 2, from: 0 },
            ]));
            session.extend_from_slice(&data(b"stream"));
            session.extend(enc(&[
                Frame::Cancel {
                    id: 2,
                    reason: "gone".into(),
                },
                Frame::Get {
                    id: 4,
                    name: "g1".into(),
                },
                Frame::Get {
                    id: 5,
                    name: "/etc/passwd".into(),
                },
                Frame::Accept {
                    id: 4,
                    offset: 0,
                    prefix: Digest::of_empty(),
                },
                Frame::Result {
                    id: 4,
                    code: Code::Stored,
                    detail: "g1".into(),
                },
            ]));
            out.push(("session".into(), with_header(0, &[], &session)));
            out.push(("session-bytewise".into(), with_header(0, &[0], &session)));
            // Served files of 7 bytes (options bits 4-6 = 3), a resume of 5 (bits 2-3 = 2).
            out.push((
                "session-resume".into(),
                with_header(0x38, &[2, 40, 0], &session),
            ));
            out.push((
                "after-hello".into(),
                with_header(2, &[3], &session[hello.len()..]),
            ));
            out.push(("magic-only".into(), with_header(1, &[], &hello[8..])));
            out.push(("bad-magic".into(), with_header(0, &[], b"\0ferrx\r\n")));
            // 1025 GETs in one read: the 1025th is over the pipeline cap (PROTOCOL.md §7.1).
            let gets: Vec<Frame> = (1..=1025)
                .map(|id| Frame::Get {
                    id,
                    name: "a".into(),
                })
                .collect();
            out.push(("pipeline-full".into(), with_header(2, &[], &enc(&gets))));
            let v2 = fuzz_checks::v2_server_session();
            out.push(("v2-session-bytewise".into(), with_header(2, &[0], &v2)));
            out.push((
                "v2-session-chunked".into(),
                with_header(2, &[2, 200, 9], &v2),
            ));
            // A version-1 client (HELLO 1..=1) that sends a LIST: NotInVersion.
            let mut v1 = enc(&[Frame::Hello {
                min: 1,
                max: 1,
                token: Vec::new(),
            }]);
            v1.extend(enc(&[Frame::List {
                id: 9,
                recursive: false,
                path: String::new(),
            }]));
            out.push(("v1-list".into(), with_header(1, &[], &v1)));
        }
        "client_stream" => {
            // WELCOME prepended (bit 0); 2 uploads (ids 1 stream, 3 sized 4); 1 GET (id 2).
            let options = 1 | (2 << 1) | (1 << 4);
            let mut reply = enc(&[
                Frame::Accept {
                    id: 1,
                    offset: 0,
                    prefix: Digest::of_empty(),
                },
                Frame::Offer {
                    kind: EntryKind::File,
                    digest: None,
                    id: 2,
                    size: Some(3),
                    mtime: None,
                    mode: None,
                    name: "g1".into(),
                    early: false,
                },
                Frame::Accept {
                    id: 3,
                    offset: 2,
                    prefix: Digest::of(b"xx"),
                },
                Frame::Begin { id: 2, from: 0 },
            ]);
            reply.extend_from_slice(&data(b"abc"));
            reply.extend(enc(&[
                Frame::End {
                    id: 2,
                    size: 3,
                    digest: Digest::of(b"abc"),
                },
                Frame::Result {
                    id: 1,
                    code: Code::Stored,
                    detail: "up/f1".into(),
                },
                Frame::Result {
                    id: 3,
                    code: Code::DigestMismatch,
                    detail: "no".into(),
                },
            ]));
            out.push(("session".into(), with_header(options, &[], &reply)));
            out.push((
                "session-chunked".into(),
                with_header(options | 0x80, &[0, 6, 1], &reply),
            ));
            let refused = enc(&[
                Frame::Refuse {
                    id: 1,
                    code: Code::Exists,
                    reason: "exists".into(),
                },
                Frame::Refuse {
                    id: 2,
                    code: Code::NotFound,
                    reason: "no".into(),
                },
                Frame::Error {
                    code: Code::ShuttingDown,
                    reason: "bye".into(),
                },
            ]);
            out.push(("refused".into(), with_header(options, &[], &refused)));
            // Version 2: after WELCOME 2 the client offers folder #4 and lists the root (#5).
            let mut v2 = reply.clone();
            v2.extend(fuzz_checks::v2_client_tail(4, 5));
            out.push((
                "v2-session-bytewise".into(),
                with_header(options, &[0], &v2),
            ));
            // A version-1 server (WELCOME 1) that sends a page: NotInVersion.
            let mut v1 = enc(&[Frame::Welcome { version: 1 }]);
            v1.extend(enc(&[Frame::Entries {
                id: 5,
                entries: vec![entry(EntryKind::File, "a")],
            }]));
            out.push(("v1-entries".into(), with_header(options & !1, &[], &v1)));
            out.push(("no-welcome".into(), with_header(0, &[], &refused)));
            let mut magic_reply = MAGIC.to_vec();
            magic_reply.extend_from_slice(&refused);
            out.push((
                "server-speaks-magic".into(),
                with_header(1, &[], &magic_reply),
            ));
        }
        "seed_stream" => {
            out.push(("upload".into(), with_header(0, &[], b"report.pdf\nhello")));
            out.push(("upload-bytewise".into(), with_header(0, &[0], b"r.txt\nhi")));
            out.push(("bad-name".into(), with_header(0, &[], b"a/b\nhello")));
            out.push(("no-newline".into(), with_header(0, &[], b"abc")));
            let mut long = vec![b'a'; 4097];
            long.extend_from_slice(b"\nbody");
            out.push(("too-long".into(), with_header(0, &[200], &long)));
            let mut max = vec![b'b'; 255];
            max.extend_from_slice(b"\n\n\n");
            out.push(("empty-lines".into(), with_header(0, &[], &max)));
        }
        other => panic!("no seeds for {other}"),
    }
    out
}
