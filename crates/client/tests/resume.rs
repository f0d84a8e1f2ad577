//! A transfer cut off mid-way continues, on the next run, from the offset both sides verified.

mod common;

use std::fs;
use std::path::Path;

use common::{cutting_proxy, data, opts, sources, wait_until, write, TestServer};
use ferry_client::download::{self, partial_path, Dest};
use ferry_client::{upload, Options, Outcome, Status, Target};
use ferry_proto::{Code, Name};
use ferry_server::Overwrite;

const SIZE: usize = 4 << 20;
const CUT: u64 = 1_500_000;

/// Sends again once the server has finished with the cut connection: until then it refuses
/// the same name as busy ("try again later").
fn send_again(server: &TestServer, paths: &[&Path], opts: &Options) -> Outcome {
    let mut outcome = None;
    wait_until("the server lets go of the cut upload", || {
        let o = upload::send(&server.target(), sources(paths), opts, &mut ());
        let busy = o.files.iter().any(|f| f.status == Status::Code(Code::Busy));
        outcome = Some(o);
        !busy
    });
    outcome.expect("sent at least once")
}

#[test]
fn an_upload_cut_off_resumes_from_the_servers_offset() {
    let server = TestServer::start(Overwrite::Refuse);
    let local = tempfile::tempdir().unwrap();
    let content = data(SIZE, 11);
    let path = local.path().join("big.bin");
    write(&path, &content);
    let after = local.path().join("after.txt");
    write(&after, b"after");
    // A window of one: the second file is not even offered when the cut comes.
    let one = Options {
        window: 1,
        ..opts()
    };

    let (proxy, cut) = cutting_proxy(server.addr(), CUT, u64::MAX);
    let first = upload::send(
        &Target::from(proxy),
        sources(&[&path, &after]),
        &one,
        &mut (),
    );
    cut.join().unwrap();
    assert_eq!(first.exit_code(), 4, "a cut connection is a network error");
    assert_eq!(first.files.len(), 2, "every file is accounted for");
    assert!(first.files.iter().all(|f| f.status == Status::Incomplete));
    assert!(!server.path("big.bin").exists(), "nothing published");

    assert!(!server.path("after.txt").exists(), "never offered");

    let second = send_again(&server, &[&path], &opts());

    assert_eq!(second.exit_code(), 0, "{:?}", second.files);
    let r = &second.files[0];
    assert_eq!(r.status, Status::Code(Code::Stored));
    assert!(r.offset > 0, "resumed, not restarted");
    assert!(r.offset <= CUT);
    assert_eq!(r.bytes, SIZE as u64 - r.offset, "only the rest was sent");
    assert!(fs::read(server.path("big.bin")).unwrap() == content);
}

#[test]
fn a_changed_local_prefix_restarts_from_zero() {
    let server = TestServer::start(Overwrite::Refuse);
    let local = tempfile::tempdir().unwrap();
    let path = local.path().join("big.bin");
    write(&path, &data(SIZE, 12));
    let (proxy, cut) = cutting_proxy(server.addr(), CUT, u64::MAX);
    let first = upload::send(&Target::from(proxy), sources(&[&path]), &opts(), &mut ());
    cut.join().unwrap();
    assert_eq!(first.exit_code(), 4);
    // Same name and size, other bytes: the server's prefix no longer matches ours.
    let other = data(SIZE, 13);
    write(&path, &other);

    let second = send_again(&server, &[&path], &opts());

    assert_eq!(second.exit_code(), 0, "{:?}", second.error);
    assert_eq!(second.files[0].offset, 0);
    assert!(fs::read(server.path("big.bin")).unwrap() == other);
}

#[test]
fn a_download_cut_off_keeps_its_partial_and_resumes() {
    let server = TestServer::start(Overwrite::Refuse);
    let content = data(SIZE, 21);
    write(&server.path("dl/big.bin"), &content);
    let out = tempfile::tempdir().unwrap();
    let dest = Dest::Dir(out.path().to_owned());
    let name = || vec![Name::parse("dl/big.bin").unwrap()];

    let (proxy, cut) = cutting_proxy(server.addr(), u64::MAX, CUT);
    let first = download::get(&Target::from(proxy), name(), &dest, &opts(), &mut ());
    cut.join().unwrap();
    assert_eq!(first.exit_code(), 4);
    let final_path = out.path().join("dl/big.bin");
    assert!(!final_path.exists(), "nothing published");
    let held = fs::metadata(partial_path(&final_path)).unwrap().len();
    assert!(held > 0 && held < CUT, "partial holds {held} bytes");

    let second = download::get(&server.target(), name(), &dest, &opts(), &mut ());

    assert_eq!(second.exit_code(), 0, "{:?}", second.error);
    let r = &second.files[0];
    assert_eq!(r.offset, held, "resumed from the partial");
    assert_eq!(r.bytes, SIZE as u64 - held);
    assert!(fs::read(&final_path).unwrap() == content);
    assert_eq!(common::tree(out.path()), ["dl/big.bin"], "partial gone");
}
