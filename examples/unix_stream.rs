//! Upload a file and download it back over a `UnixStream` pair, with `ferry-proto` alone.
//!
//! The [`Driver`] runs each machine over any `Read + Write`; here one thread is the server, the
//! main thread the client. Run with `cargo run -p ferry-examples --example unix_stream`.

use std::collections::BTreeMap;
use std::os::unix::net::UnixStream;
use std::thread;

use ferry_proto::{
    BodyCheck, Code, Connection, DriveError, Driver, Event, FileInfo, Hasher, Name, Step,
};

/// A tiny in-memory "disk" server: stores verified uploads, serves them back.
fn serve(stream: UnixStream) -> Result<BTreeMap<String, Vec<u8>>, DriveError> {
    let mut d = Driver::new(stream, Connection::server());
    let mut files = BTreeMap::new();
    let mut names = BTreeMap::new();
    let mut body = Vec::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match d.next_step()? {
            Step::Body(_) => {
                let n = d.read_body(&mut buf)?;
                body.extend_from_slice(&buf[..n]);
            }
            Step::Event(Event::Hello { .. }) => d.conn_mut().welcome()?,
            Step::Event(Event::Offer(o)) => match o.name {
                Ok(name) => {
                    d.conn_mut().accept(o.id, Hasher::new())?;
                    names.insert(o.id, name.as_str().to_owned());
                }
                Err(bad) => d.conn_mut().refuse(o.id, Code::BadName, &bad.to_string())?,
            },
            Step::Event(Event::Begin { .. }) => body.clear(),
            Step::Event(Event::End { id, check, .. }) => {
                if let BodyCheck::Verified(_) = check {
                    files.insert(names[&id].clone(), std::mem::take(&mut body));
                    d.conn_mut().finish(id, Code::Stored, &names[&id])?;
                } else {
                    d.conn_mut()
                        .finish(id, Code::DigestMismatch, "digest mismatch")?;
                }
            }
            Step::Event(Event::Get { id, name: Ok(name) }) if files.contains_key(name.as_str()) => {
                let size = Some(files[name.as_str()].len() as u64);
                d.conn_mut().serve(
                    id,
                    FileInfo {
                        name,
                        size,
                        mtime: None,
                        mode: None,
                    },
                )?;
            }
            Step::Event(Event::Get { id, .. }) => d.conn_mut().refuse(id, Code::NotFound, "no")?,
            Step::Event(Event::Accepted { id, .. }) => {
                let data = files.values().next().cloned().unwrap_or_default();
                d.conn_mut().begin(id, Hasher::new())?;
                d.send_body(&data)?;
                d.conn_mut().end()?;
            }
            Step::Event(Event::Result { .. }) => {}
            Step::Event(Event::Closed) => {
                d.flush()?;
                return Ok(files);
            }
            Step::Event(other) => panic!("server: unexpected {other:?}"),
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (a, b) = UnixStream::pair()?;
    let server = thread::spawn(move || serve(b));

    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let name = Name::parse("hello/world.bin")?;
    let mut d = Driver::new(a, Connection::client(None)?);
    let info = FileInfo {
        name: name.clone(),
        size: Some(data.len() as u64),
        mtime: None,
        mode: None,
    };
    let up = d.conn_mut().offer(info)?;
    let mut got = Vec::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match d.next_step()? {
            Step::Event(Event::Welcome { version }) => println!("welcomed, protocol v{version}"),
            Step::Event(Event::Accepted { id, .. }) => {
                d.conn_mut().begin(id, Hasher::new())?;
                for chunk in data.chunks(1 << 20) {
                    d.send_body(chunk)?;
                }
                let digest = d.conn_mut().end()?;
                println!("sent {} bytes, blake3 {digest}", data.len());
            }
            Step::Event(Event::Result { id, code, detail }) if id == up => {
                println!("server says {code}: {detail}");
                d.conn_mut().get(name.clone())?;
            }
            Step::Event(Event::Offer(o)) => d.conn_mut().accept(o.id, Hasher::new())?,
            Step::Event(Event::Begin { .. }) => got.clear(),
            Step::Body(_) => {
                let n = d.read_body(&mut buf)?;
                got.extend_from_slice(&buf[..n]);
            }
            Step::Event(Event::End { id, check, .. }) => {
                assert!(matches!(check, BodyCheck::Verified(_)), "download verified");
                d.conn_mut().finish(id, Code::Stored, "")?;
                break;
            }
            Step::Event(other) => panic!("client: unexpected {other:?}"),
        }
    }
    d.flush()?;
    drop(d); // closing our side lets the server see a clean end
    let stored = server.join().expect("server thread")?;
    assert_eq!(
        stored.get("hello/world.bin").map(Vec::len),
        Some(data.len())
    );
    assert!(got == data, "downloaded bytes equal the upload");
    println!("downloaded {} bytes back, identical", got.len());
    Ok(())
}
