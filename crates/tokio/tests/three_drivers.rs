//! One machine under three drivers: `ferry-proto`'s own tests run it in memory; here the
//! async driver talks to the blocking `ferry-server`, and the blocking `Driver` talks to a
//! server built on the async driver (PROTOCOL.md §4-§7, §9).

use std::collections::BTreeMap;
use std::time::Duration;

use ferry_proto::{
    BodyCheck, Code, Connection, Driver, Event, FileId, FileInfo, Hasher, Name, Step,
};
use ferry_tokio::AsyncDriver;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};

fn info(name: &str, size: usize) -> FileInfo {
    FileInfo {
        name: Name::parse(name).unwrap(),
        size: Some(size as u64),
        mtime: None,
        mode: Some(0o644),
    }
}

/// Bytes that differ from file to file and from offset to offset.
fn data(n: usize, seed: u8) -> Vec<u8> {
    (0..n).map(|i| (i as u8).wrapping_mul(31) ^ seed).collect()
}

/// The files both tests move: empty, small (queued inline) and large (written directly).
fn files() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("empty", Vec::new()),
        ("small.txt", data(3000, 1)),
        ("docs/large.bin", data(700_000, 2)),
    ]
}

/// `body` in slices of alternating sizes, so that both body paths are taken.
fn slices(body: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = body;
    for size in [1000usize, 90_000].iter().cycle() {
        let (slice, tail) = rest.split_at((*size).min(rest.len()));
        out.push(slice);
        rest = tail;
        if rest.is_empty() {
            return out;
        }
    }
    out
}

/// §4, §9 with the blocking server: a tokio client uploads each file, downloads it back and
/// closes; the server stores the bytes that were sent.
#[tokio::test]
async fn a_tokio_client_uploads_to_and_downloads_from_the_blocking_server() {
    let tmp = tempfile::tempdir().unwrap();
    let config = ferry_server::Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        dir: tmp.path().join("store"),
        header_timeout: Duration::from_secs(5),
        idle_timeout: Duration::from_secs(5),
        grace: Duration::from_secs(5),
        fsync: false,
        ..ferry_server::Config::default()
    };
    let server = ferry_server::Server::bind(config).unwrap().spawn().unwrap();
    let stream = TcpStream::connect(server.addr()).await.unwrap();
    let mut d = AsyncDriver::new(stream, Connection::client(None).unwrap());
    for (name, body) in files() {
        let id = d.conn_mut().offer(info(name, body.len())).unwrap();
        loop {
            match d.next_step().await.unwrap() {
                Step::Event(Event::Welcome { .. }) => {}
                Step::Event(Event::Accepted { id: got, .. }) if got == id => {
                    d.conn_mut().begin(id, Hasher::new()).unwrap();
                    for s in slices(&body) {
                        d.send_body(s).await.unwrap();
                    }
                    d.conn_mut().end().unwrap();
                }
                Step::Event(Event::Result { id: got, code, .. }) if got == id => {
                    assert_eq!(code, Code::Stored, "{name}");
                    break;
                }
                other => panic!("{name}: {other:?}"),
            }
        }
        assert_eq!(std::fs::read(server.dir().join(name)).unwrap(), body);

        let id = d.conn_mut().get(Name::parse(name).unwrap()).unwrap();
        let (mut got, mut buf) = (Vec::new(), vec![0; 64 * 1024]);
        loop {
            match d.next_step().await.unwrap() {
                Step::Event(Event::Offer(o)) => d.conn_mut().accept(o.id, Hasher::new()).unwrap(),
                Step::Event(Event::Begin { .. }) => {}
                Step::Body(_) => {
                    let n = d.read_body(&mut buf).await.unwrap();
                    got.extend_from_slice(&buf[..n]);
                }
                Step::Event(Event::End { id: e, check, .. }) if e == id => {
                    assert!(matches!(check, BodyCheck::Verified(_)), "{check:?}");
                    d.conn_mut().finish(id, Code::Stored, name).unwrap();
                    break;
                }
                other => panic!("{name}: {other:?}"),
            }
        }
        assert_eq!(got, body, "{name} came back changed");
    }
    d.close().await.unwrap();
    assert_eq!(d.next_step().await.unwrap(), Step::Event(Event::Closed));
    assert!(d.conn().is_closed() && d.conn().is_idle());
    server.shutdown().unwrap();
}

/// A server on the async driver: stores verified uploads in memory and serves them back;
/// returns what it holds once the client closes.
async fn tokio_server<S: AsyncRead + AsyncWrite + Unpin>(stream: S) -> BTreeMap<String, Vec<u8>> {
    let mut d = AsyncDriver::new(stream, Connection::server());
    let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut names: BTreeMap<FileId, String> = BTreeMap::new();
    let (mut body, mut buf) = (Vec::new(), vec![0; 64 * 1024]);
    loop {
        match d.next_step().await.unwrap() {
            Step::Event(Event::Hello { .. }) => d.conn_mut().welcome().unwrap(),
            Step::Event(Event::Offer(o)) => {
                names.insert(o.id, o.name.unwrap().as_str().to_owned());
                d.conn_mut().accept(o.id, Hasher::new()).unwrap();
            }
            Step::Event(Event::Begin { .. }) => body.clear(),
            Step::Body(_) => {
                let n = d.read_body(&mut buf).await.unwrap();
                body.extend_from_slice(&buf[..n]);
            }
            Step::Event(Event::End { id, check, .. }) => {
                assert!(matches!(check, BodyCheck::Verified(_)), "{check:?}");
                files.insert(names[&id].clone(), std::mem::take(&mut body));
                d.conn_mut().finish(id, Code::Stored, &names[&id]).unwrap();
            }
            Step::Event(Event::Get { id, name }) => {
                let name = name.unwrap();
                let held = files[name.as_str()].clone();
                d.conn_mut()
                    .serve(id, info(name.as_str(), held.len()))
                    .unwrap();
                names.insert(id, name.as_str().to_owned());
            }
            Step::Event(Event::Accepted { id, .. }) => {
                let held = files[&names[&id]].clone();
                d.conn_mut().begin(id, Hasher::new()).unwrap();
                for s in slices(&held) {
                    d.send_body(s).await.unwrap();
                }
                d.conn_mut().end().unwrap();
            }
            Step::Event(Event::Result { code, .. }) => assert_eq!(code, Code::Stored),
            Step::Event(Event::Closed) => {
                d.close().await.unwrap();
                return files;
            }
            other => panic!("{other:?}"),
        }
    }
}

/// §4, §7.1, §9 with the async server: the blocking driver offers every file at once
/// (pipelined), then asks for each back; both ends see the same bytes.
#[tokio::test]
async fn the_blocking_driver_uploads_to_and_downloads_from_a_tokio_server() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let client = std::thread::spawn(move || {
        let stream = std::net::TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut d = Driver::new(stream, Connection::client(None).unwrap());
        let all = files();
        let mut ids = Vec::new();
        for (name, body) in &all {
            ids.push(d.conn_mut().offer(info(name, body.len())).unwrap());
        }
        let mut stored = 0;
        while stored < all.len() {
            match d.next_step().unwrap() {
                Step::Event(Event::Welcome { .. }) => {}
                Step::Event(Event::Accepted { id, .. }) => {
                    let at = ids.iter().position(|i| *i == id).unwrap();
                    d.conn_mut().begin(id, Hasher::new()).unwrap();
                    for s in slices(&all[at].1) {
                        d.send_body(s).unwrap();
                    }
                    d.conn_mut().end().unwrap();
                }
                Step::Event(Event::Result { code, .. }) => {
                    assert_eq!(code, Code::Stored);
                    stored += 1;
                }
                other => panic!("{other:?}"),
            }
        }
        let mut back = Vec::new();
        for (name, _) in &all {
            let id = d.conn_mut().get(Name::parse(name).unwrap()).unwrap();
            let (mut got, mut buf) = (Vec::new(), vec![0; 64 * 1024]);
            loop {
                match d.next_step().unwrap() {
                    Step::Event(Event::Offer(o)) => {
                        d.conn_mut().accept(o.id, Hasher::new()).unwrap()
                    }
                    Step::Event(Event::Begin { .. }) => {}
                    Step::Body(_) => {
                        let n = d.read_body(&mut buf).unwrap();
                        got.extend_from_slice(&buf[..n]);
                    }
                    Step::Event(Event::End { id: e, check, .. }) if e == id => {
                        assert!(matches!(check, BodyCheck::Verified(_)), "{check:?}");
                        d.conn_mut().finish(id, Code::Stored, name).unwrap();
                        break;
                    }
                    other => panic!("{other:?}"),
                }
            }
            back.push(got);
        }
        d.flush().unwrap();
        d.stream().shutdown(std::net::Shutdown::Write).unwrap();
        assert_eq!(d.next_step().unwrap(), Step::Event(Event::Closed));
        back
    });
    let (stream, _) = listener.accept().await.unwrap();
    let held = tokio_server(stream).await;
    let back = tokio::task::spawn_blocking(move || client.join().unwrap())
        .await
        .unwrap();
    for ((name, body), got) in files().iter().zip(&back) {
        assert_eq!(&held[*name], body, "{name} stored changed");
        assert_eq!(got, body, "{name} came back changed");
    }
}
