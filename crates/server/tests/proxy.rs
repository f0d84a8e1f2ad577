//! Behind a load balancer: the real `ferry-server` binary with `--proxy-protocol` behind a
//! real HAProxy (`send-proxy-v2`) sees, logs and limits the real client; a PROXY header from
//! an untrusted address is not believed, and a trusted proxy that sends none is cut.

mod common;
mod haproxy;
mod ops;

use std::io::{ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::path::Path;

use common::*;
use ferry_proto::wire::{Frame, MAGIC, VERSION};
use ferry_proto::{Code, Connection, Driver, Event, Step};
use haproxy::HaProxy;
use ops::*;

/// A ferry client from `from` to `to` presenting `token`: welcomed, or refused with a code.
fn ferry_from(from: [u8; 4], to: SocketAddr, token: Option<&[u8]>) -> Result<Client, Code> {
    let mut d = Driver::new(connect_from(from, to), Connection::client(token).unwrap());
    d.flush().unwrap();
    match d.next_step().unwrap() {
        Step::Event(Event::Welcome { .. }) => Ok(d),
        Step::Event(Event::PeerError { code, .. }) => Err(code),
        other => panic!("expected WELCOME or an error, got {other:?}"),
    }
}

/// The server binary behind a trusted proxy on 127.0.0.1, storing into `dir`.
fn server(dir: &Path, extra: &[&str]) -> Bin {
    let mut args = vec![
        "--dir",
        dir.to_str().unwrap(),
        "--proxy-protocol",
        "--trusted-proxy",
        "127.0.0.1",
    ];
    args.extend(extra);
    Bin::start(&args)
}

#[test]
fn through_haproxy_the_real_client_is_logged_and_limited() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("client.out");
    let script = format!(
        "#!/bin/sh\necho \"$FERRY_CLIENT\" > '{}.tmp'\nmv '{0}.tmp' '{0}'\n",
        out.display()
    );
    let hook = file(tmp.path(), "hook.sh", &script, 0o755);
    let store = tmp.path().join("store");
    let mut bin = server(
        &store,
        &[
            "--max-per-source",
            "1",
            "--on-stored",
            hook.to_str().unwrap(),
        ],
    );
    let Some(haproxy) = HaProxy::start(&[bin.addr]) else {
        return;
    };
    let mut a = ferry_from([127, 0, 0, 2], haproxy.front, None).expect("welcomed");
    assert_eq!(upload(&mut a, "through.txt", b"hello").code, Code::Stored);
    assert_eq!(std::fs::read(store.join("through.txt")).unwrap(), b"hello");
    wait_for("the hook to run", || out.exists());
    let client = std::fs::read_to_string(&out).unwrap();
    assert!(client.starts_with("127.0.0.2:"), "FERRY_CLIENT={client}");
    // Every connection reaches the server from HAProxy's address; the cap counts the clients.
    let b = ferry_from([127, 0, 0, 3], haproxy.front, None);
    assert!(
        b.is_ok(),
        "another client through the same proxy is not capped"
    );
    let again = ferry_from([127, 0, 0, 2], haproxy.front, None);
    assert_eq!(again.err(), Some(Code::Busy), "the same client is capped");
    bin.wait_line("127.0.0.2:");
    bin.wait_line("its address has 1 connections open already");
    drop((a, b));
    let closed = bin.wait_line(": 1 stored, 0 unchanged");
    assert!(closed.contains("127.0.0.2:"), "{closed}");
    let lines = bin.log();
    let refused = lines
        .iter()
        .find(|l| l.contains("connections open already"));
    assert!(refused.unwrap().contains("127.0.0.2:"), "{lines:?}");
    assert!(
        lines.iter().filter(|l| l.contains("through.txt")).count() > 0,
        "{lines:?}"
    );
    for l in lines.iter().filter(|l| l.contains("through.txt")) {
        assert!(l.contains("127.0.0.2:"), "logged as the proxy: {l}");
    }
    bin.stop();
}

/// A valid PROXY v2 header saying the client is 192.0.2.9:4000, then a ferry HELLO.
fn forged_hello() -> Vec<u8> {
    let mut out = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    out.extend([
        0x21, 0x11, 0, 12, 192, 0, 2, 9, 127, 0, 0, 1, 0x0f, 0xa0, 0x20, 0xc2,
    ]);
    out.extend(MAGIC);
    Frame::Hello {
        min: VERSION,
        max: VERSION,
        token: Vec::new(),
    }
    .encode(&mut out);
    out
}

/// Sends `bytes` from `from` to `to`; whether the server then welcomed the client (reads to
/// the end of the stream, or a welcome).
fn welcomed_after(from: [u8; 4], to: SocketAddr, bytes: &[u8]) -> bool {
    let mut s = connect_from(from, to);
    s.write_all(bytes).unwrap();
    let mut got: Vec<u8> = Vec::new();
    let mut buf = [0u8; 256];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => break,
            Err(e) => panic!("the server neither answered nor closed: {e}"),
        }
        let mut welcome = Vec::new();
        Frame::Welcome { version: VERSION }.encode(&mut welcome);
        if got.windows(welcome.len()).any(|w| w == welcome) {
            return true;
        }
    }
    false
}

#[test]
fn a_proxy_header_counts_only_from_a_trusted_proxy() {
    let tmp = tempfile::tempdir().unwrap();
    let mut bin = server(tmp.path(), &[]);
    // From an untrusted address the header is just bytes: not a ferry client, cut.
    assert!(!welcomed_after([127, 0, 0, 3], bin.addr, &forged_hello()));
    bin.wait_line("127.0.0.3:");
    let stored = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name());
    let stored: Vec<_> = stored.filter(|n| n != ".ferry-state").collect();
    assert!(stored.is_empty(), "{stored:?}");
    // The trusted proxy's own header is believed...
    assert!(welcomed_after([127, 0, 0, 1], bin.addr, &forged_hello()));
    bin.wait_line("192.0.2.9:4000");
    // ... but without one, its connection is cut with a line that says why.
    let mut hello = MAGIC.to_vec();
    Frame::Hello {
        min: VERSION,
        max: VERSION,
        token: Vec::new(),
    }
    .encode(&mut hello);
    assert!(!welcomed_after([127, 0, 0, 1], bin.addr, &hello));
    bin.wait_line("malformed PROXY protocol v2 header");
    let lines = bin.log();
    let forged: Vec<_> = lines.iter().filter(|l| l.contains("192.0.2.9")).collect();
    assert!(forged.iter().all(|l| !l.contains("127.0.0.3")), "{lines:?}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("127.0.0.3:") && l.contains("connection closed")),
        "{lines:?}"
    );
    bin.stop();
}

#[test]
fn through_haproxy_failed_logins_block_the_real_client_only() {
    const TOKEN: &[u8] = b"proxy-token-0123456789";
    let tmp = tempfile::tempdir().unwrap();
    let token = file(tmp.path(), "token", "proxy-token-0123456789\n", 0o600);
    let store = tmp.path().join("store");
    let mut bin = server(
        &store,
        &[
            "--token-file",
            token.to_str().unwrap(),
            "--max-auth-failures",
            "2",
        ],
    );
    let Some(haproxy) = HaProxy::start(&[bin.addr]) else {
        return;
    };
    let front = haproxy.front;
    for _ in 0..2 {
        let wrong = ferry_from([127, 0, 0, 2], front, Some(b"wrong-token-0123456789"));
        assert_eq!(wrong.err(), Some(Code::Denied));
    }
    let blocked = ferry_from([127, 0, 0, 2], front, Some(TOKEN));
    assert_eq!(
        blocked.err(),
        Some(Code::Denied),
        "the real client is blocked"
    );
    let line = bin.wait_line("too many failed authentications");
    assert!(line.contains("127.0.0.2:"), "{line}");
    // Every connection comes from HAProxy's address, which is not blocked with the client.
    let other = ferry_from([127, 0, 0, 3], front, Some(TOKEN));
    assert!(
        other.is_ok(),
        "another client through the same proxy gets in"
    );
    bin.stop();
}
