//! Framing overhead of ferry-proto: header encode/decode, a 1,000-file pipelined session
//! through both machines in memory, and the body path (hashing) per MiB.
//! Run with `cargo bench -p ferry-proto`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ferry_proto::wire::{Frame, Timestamp};
use ferry_proto::{
    BodyCheck, Code, Connection, EntryKind, Event, FileInfo, Hasher, Incoming, Name,
};

fn offer_frame() -> Frame {
    Frame::Offer {
        id: 42,
        kind: EntryKind::File,
        digest: None,
        size: Some(4096),
        mtime: Some(Timestamp {
            secs: 1_700_000_000,
            nanos: 5,
        }),
        mode: Some(0o644),
        name: "photos/2024/holiday/IMG_0001.jpg".into(),
        early: false,
    }
}

fn headers(c: &mut Criterion) {
    let frame = offer_frame();
    let mut buf = Vec::with_capacity(128);
    c.bench_function("offer/encode", |b| {
        b.iter(|| {
            buf.clear();
            black_box(&frame).encode(&mut buf);
            black_box(buf.len())
        })
    });
    buf.clear();
    frame.encode(&mut buf);
    let payload = buf[5..].to_vec();
    c.bench_function("offer/decode", |b| {
        b.iter(|| Frame::decode(ferry_proto::wire::kind::OFFER, black_box(&payload)).unwrap())
    });
    c.bench_function("name/validate", |b| {
        b.iter(|| Name::parse(black_box("photos/2024/holiday/IMG_0001.jpg")).unwrap())
    });
}

/// Both machines, 1,000 files of `size` bytes, all bytes delivered at once per round.
fn session(files: usize, size: usize) -> usize {
    let data = vec![7u8; size];
    let mut client = Connection::client(None).unwrap();
    let mut server = Connection::server();
    let mut offered = 0;
    let mut stored = 0;
    let (mut c2s, mut s2c) = (Vec::new(), Vec::new());
    while stored < files {
        while offered < files && client.pipeline_room() > ferry_proto::MAX_PIPELINE - 64 {
            let name = Name::parse(&format!("d/{offered}.bin")).unwrap();
            let size = Some(size as u64);
            client
                .offer(FileInfo {
                    name,
                    size,
                    mtime: None,
                    mode: None,
                })
                .unwrap();
            offered += 1;
        }
        c2s.extend_from_slice(client.poll_transmit());
        client.transmitted(usize::MAX);
        let mut at = 0;
        while at < c2s.len() {
            at += match server.incoming() {
                Some(Incoming::Bytes(n)) => {
                    let k = (n as usize).min(c2s.len() - at);
                    server.body_received(&c2s[at..at + k]).unwrap();
                    k
                }
                _ => server.handle_input(&c2s[at..]).unwrap(),
            };
            while let Some(ev) = server.poll_event() {
                match ev {
                    Event::Hello { .. } => server.welcome().unwrap(),
                    Event::Offer(o) => server.accept(o.id, Hasher::new()).unwrap(),
                    Event::End {
                        id,
                        check: BodyCheck::Verified(_),
                        ..
                    } => server.finish(id, Code::Stored, "").unwrap(),
                    _ => {}
                }
            }
        }
        c2s.clear();
        s2c.extend_from_slice(server.poll_transmit());
        server.transmitted(usize::MAX);
        client.handle_input(&s2c).unwrap();
        s2c.clear();
        while let Some(ev) = client.poll_event() {
            match ev {
                Event::Accepted { id, .. } => {
                    client.begin(id, Hasher::new()).unwrap();
                    client.send_data(&data).unwrap();
                    client.end().unwrap();
                }
                Event::Result { .. } => stored += 1,
                _ => {}
            }
        }
    }
    stored
}

fn sessions(c: &mut Criterion) {
    let mut g = c.benchmark_group("session_1000_files");
    for size in [0usize, 4096] {
        g.throughput(Throughput::Elements(1000));
        g.bench_with_input(BenchmarkId::from_parameter(size), &size, |b, &size| {
            b.iter(|| session(1000, size))
        });
    }
    g.finish();
}

fn body_path(c: &mut Criterion) {
    let chunk = vec![0x5au8; 1 << 20];
    let mut g = c.benchmark_group("body");
    g.throughput(Throughput::Bytes(chunk.len() as u64));
    g.bench_function("hash_1MiB", |b| {
        b.iter(|| {
            let mut h = Hasher::new();
            h.update(black_box(&chunk));
            h.finalize()
        })
    });
    g.finish();
}

criterion_group!(benches, headers, sessions, body_path);
criterion_main!(benches);
