//! Upload a file over TCP with `ferry-tokio`: both ends are async tasks on one tokio runtime,
//! each running a `ferry-proto` machine under [`AsyncDriver`].
//!
//! Run with `cargo run -p ferry-examples --example tokio_tcp`.

use ferry_proto::{BodyCheck, Code, Connection, DriveError, Event, FileInfo, Hasher, Name, Step};
use ferry_tokio::AsyncDriver;
use tokio::net::{TcpListener, TcpStream};

/// Accepts one connection and keeps the verified uploads in memory; returns them with their
/// names once the client closes.
async fn serve(listener: TcpListener) -> Result<Vec<(String, Vec<u8>)>, DriveError> {
    let (stream, _) = listener.accept().await?;
    let mut d = AsyncDriver::new(stream, Connection::server());
    let (mut stored, mut name, mut body) = (Vec::new(), String::new(), Vec::new());
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match d.next_step().await? {
            Step::Event(Event::Hello { .. }) => d.conn_mut().welcome()?,
            Step::Event(Event::Offer(o)) => match o.name {
                Ok(n) => {
                    name = n.as_str().to_owned();
                    d.conn_mut().accept(o.id, Hasher::new())?;
                }
                Err(bad) => d.conn_mut().refuse(o.id, Code::BadName, &bad.to_string())?,
            },
            Step::Event(Event::Begin { .. }) => body.clear(),
            Step::Body(_) => {
                let n = d.read_body(&mut buf).await?;
                body.extend_from_slice(&buf[..n]);
            }
            Step::Event(Event::End { id, check, .. }) => {
                if let BodyCheck::Verified(_) = check {
                    d.conn_mut().finish(id, Code::Stored, &name)?;
                    stored.push((std::mem::take(&mut name), std::mem::take(&mut body)));
                } else {
                    d.conn_mut()
                        .finish(id, Code::DigestMismatch, "digest mismatch")?;
                }
            }
            Step::Event(Event::Closed) => {
                d.close().await?;
                return Ok(stored);
            }
            Step::Event(other) => panic!("server: unexpected {other:?}"),
        }
    }
}

/// Uploads `data` as `name` and closes once the server stored it.
async fn upload(stream: TcpStream, name: Name, data: &[u8]) -> Result<(), DriveError> {
    let mut d = AsyncDriver::new(stream, Connection::client(None)?);
    let info = FileInfo {
        name,
        size: Some(data.len() as u64),
        mtime: None,
        mode: None,
    };
    let id = d.conn_mut().offer(info)?;
    loop {
        match d.next_step().await? {
            Step::Event(Event::Welcome { version }) => println!("welcomed, protocol v{version}"),
            Step::Event(Event::Accepted { id, .. }) => {
                d.conn_mut().begin(id, Hasher::new())?;
                for chunk in data.chunks(1 << 20) {
                    d.send_body(chunk).await?;
                }
                let digest = d.conn_mut().end()?;
                println!("sent {} bytes, blake3 {digest}", data.len());
            }
            Step::Event(Event::Result {
                id: got,
                code,
                detail,
            }) if got == id => {
                println!("server says {code}: {detail}");
                d.close().await?;
                return Ok(());
            }
            Step::Event(other) => panic!("client: unexpected {other:?}"),
            Step::Body(_) => panic!("client: no body was asked for"),
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    rt.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let server = tokio::spawn(serve(listener));
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let stream = TcpStream::connect(addr).await?;
        upload(stream, Name::parse("hello/world.bin")?, &data).await?;
        let stored = server.await??;
        assert_eq!(stored, [("hello/world.bin".to_owned(), data)]);
        println!("the server holds the file, identical");
        Ok(())
    })
}
