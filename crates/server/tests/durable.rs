//! The default, durable server (group commit, crates/server/src/commit.rs): a pipelined burst
//! of small files (more than a batch flushes one by one, so one `syncfs`), a few files (flushed
//! file by file), a big file (written behind while it arrives) and a folder made by an offer
//! are all answered `Stored` and land whole. That nothing is answered before its flush is shown
//! by the unit tests of the commit module, which hold the flush.

mod common;

use common::*;
use ferry_proto::{Code, Event, FileId, Hasher, Step};
use ferry_server::Config;

/// Offers every file at once, sends the bodies as the ACCEPTs come, and returns the RESULTs
/// by id.
fn upload_all(d: &mut Client, files: &[(String, Vec<u8>)]) -> Vec<(FileId, Code)> {
    let ids: Vec<FileId> = files
        .iter()
        .map(|(n, b)| d.conn_mut().offer(info(n, b.len() as u64)).unwrap())
        .collect();
    let mut results = Vec::new();
    while results.len() < files.len() {
        match d.next_step().unwrap() {
            Step::Event(Event::Accepted { id, .. }) => {
                let at = ids.iter().position(|i| *i == id).unwrap();
                d.conn_mut().begin(id, Hasher::new()).unwrap();
                for chunk in files[at].1.chunks(1 << 20) {
                    d.send_body(chunk).unwrap();
                }
                d.conn_mut().end().unwrap();
            }
            Step::Event(Event::Result { id, code, .. }) => results.push((id, code)),
            other => panic!("unexpected {other:?}"),
        }
    }
    results
}

#[test]
fn a_durable_server_stores_bursts_few_files_big_files_and_folders() {
    let srv = start(Config {
        fsync: true,
        ..config()
    });
    let mut d = connect(srv.addr());
    for (count, size) in [(300usize, 4096usize), (3, 1000), (1, 20 << 20)] {
        let files: Vec<(String, Vec<u8>)> = (0..count)
            .map(|i| (format!("s{size}/d{}/f{i}", i % 7), data(size, i as u8)))
            .collect();
        let results = upload_all(&mut d, &files);
        assert!(
            results.iter().all(|(_, c)| *c == Code::Stored),
            "{results:?}"
        );
        for (name, bytes) in &files {
            assert_eq!(srv.read(name).as_deref(), Some(bytes.as_slice()), "{name}");
        }
    }
    let made = offer_folder(&mut d, "empty/inner", Some(0o755), None);
    assert_eq!(made.code, Code::Stored, "{made:?}");
    assert!(srv.dir.join("empty/inner").is_dir());
}
