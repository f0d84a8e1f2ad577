//! Two `ferry-proto` machines talking through in-memory buffers: no sockets, no threads.
//!
//! This is the sans-IO model at its barest: whatever one machine puts in `poll_transmit` is
//! handed to the other's `handle_input`, and body bytes are moved by the caller.
//! Run with `cargo run -p ferry-examples --example in_memory`.

use ferry_proto::{BodyCheck, Code, Connection, Event, FileInfo, Hasher, Incoming, Name};

/// Moves everything `from` wants to send into `to`'s inbox.
fn transmit(from: &mut Connection, inbox: &mut Vec<u8>) {
    inbox.extend_from_slice(from.poll_transmit());
    let n = from.poll_transmit().len();
    from.transmitted(n);
}

/// Feeds an inbox into a machine; body bytes are appended to `body`. Stops at each event so
/// that the caller acts on events in order with the bytes around them.
fn receive(conn: &mut Connection, inbox: &mut Vec<u8>, body: &mut Vec<u8>) -> Vec<Event> {
    loop {
        let events: Vec<Event> = std::iter::from_fn(|| conn.poll_event()).collect();
        if !events.is_empty() || inbox.is_empty() {
            return events;
        }
        let used = match conn.incoming() {
            Some(Incoming::Bytes(n)) => {
                let k = inbox.len().min(n as usize);
                conn.body_received(&inbox[..k]).expect("body bytes");
                body.extend_from_slice(&inbox[..k]);
                k
            }
            _ => conn.handle_input(inbox).expect("valid input"),
        };
        inbox.drain(..used);
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let data = b"Hello from an in-memory pipe.\n".repeat(1000);
    let mut client = Connection::client(None)?;
    let mut server = Connection::server();
    let (mut to_server, mut to_client) = (Vec::new(), Vec::new());
    let (mut stored, mut unused) = (Vec::new(), Vec::new());

    let info = FileInfo {
        name: Name::parse("notes/hello.txt")?,
        size: Some(data.len() as u64),
        mtime: None,
        mode: Some(0o644),
    };
    let id = client.offer(info)?;
    let mut done = false;
    while !done {
        transmit(&mut client, &mut to_server);
        for event in receive(&mut server, &mut to_server, &mut stored) {
            match event {
                Event::Hello { .. } => server.welcome()?,
                Event::Offer(o) => server.accept(o.id, Hasher::new())?,
                Event::Begin { .. } => stored.clear(),
                Event::End {
                    id,
                    check: BodyCheck::Verified(digest),
                    ..
                } => {
                    println!("server: verified {} bytes, blake3 {digest}", stored.len());
                    server.finish(id, Code::Stored, "notes/hello.txt")?;
                }
                other => println!("server: {other:?}"),
            }
        }
        transmit(&mut server, &mut to_client);
        for event in receive(&mut client, &mut to_client, &mut unused) {
            match event {
                Event::Welcome { version } => println!("client: welcomed (v{version})"),
                Event::Accepted { id, .. } => {
                    client.begin(id, Hasher::new())?;
                    client.send_data(&data)?;
                    client.end()?;
                }
                Event::Result {
                    id: done_id,
                    code,
                    detail,
                } if done_id == id => {
                    println!("client: {code}: {detail}");
                    done = true;
                }
                other => println!("client: {other:?}"),
            }
        }
    }
    assert_eq!(stored, data);
    Ok(())
}
