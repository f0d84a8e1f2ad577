//! The lab report's seed framing: `<name>\n` then the body until close, no reply.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::process::{Command, Stdio};

use common::*;
use ferry_server::Config;

/// Sends a seed upload and waits until the server closes the connection.
fn seed_send_until_closed(addr: SocketAddr, name: &[u8], body: &[u8]) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut msg = name.to_vec();
    msg.push(b'\n');
    msg.extend_from_slice(body);
    let _ = s.write_all(&msg);
    let _ = s.shutdown(Shutdown::Write);
    let mut sink = Vec::new();
    match s.read_to_end(&mut sink) {
        Ok(_) => {}
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
    }
}

#[test]
fn replica_of_the_seed_client_stores_the_file_byte_exact() {
    let mut srv = start(config());
    let body = data(300_001, 7);
    seed_send(srv.addr(), b"report.pdf", &body);
    seed_send(srv.addr(), "é t.txt".as_bytes(), b"");
    wait_for("report.pdf", || {
        srv.read("report.pdf").as_deref() == Some(&body[..])
    });
    wait_for("the empty file", || srv.read("é t.txt") == Some(Vec::new()));
    srv.stop();
    assert_eq!(srv.listing(), vec!["report.pdf", "é t.txt"]);
}

#[test]
fn the_seed_python_client_works_unchanged() {
    let script = seed_client_py().expect("seed/client.py is part of the repository");
    let srv = start(config());
    let src = tempfile::tempdir().unwrap();
    let path = src.path().join("lab data.bin");
    let body = data(50_000, 3);
    std::fs::write(&path, &body).unwrap();
    let mut child = Command::new("python3")
        .arg(&script)
        .env("SEED_PORT", srv.addr().port().to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    let input = format!("127.0.0.1\n{}\n", path.display());
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("sent successfully"), "{stdout}");
    wait_for("the python upload", || {
        srv.read("lab data.bin").as_deref() == Some(&body[..])
    });
}

#[test]
fn unsafe_seed_names_are_refused_and_nothing_is_written() {
    let mut srv = start(config());
    let long = "a".repeat(256);
    let bad: Vec<&[u8]> = vec![
        b"",
        b".",
        b"..",
        b"../escape.txt",
        b"/etc/passwd",
        b"dir/file.txt",
        b"bad\x01name",
        b"bell\x07",
        b"\x1b[2Jclear",
        long.as_bytes(),
        b"\xff\xfe not utf-8",
        b".ferry-partial.x",
    ];
    for name in bad {
        seed_send_until_closed(srv.addr(), name, b"payload");
    }
    // A name over the line cap ends the connection as a protocol error.
    seed_send_until_closed(srv.addr(), &[b'x'; 5000], b"");
    // Names only Windows refuses are ordinary names here (PROTOCOL.md §5).
    let ordinary = [
        "..\\escape.txt",
        "C:evil.txt",
        "CON",
        "fine.txt",
        "nul.txt",
        "trailing ",
        "trailing.",
    ];
    for name in ordinary {
        seed_send(srv.addr(), name.as_bytes(), b"ok");
        wait_for(name, || srv.read(name).is_some());
    }
    srv.stop();
    assert_eq!(srv.listing(), ordinary);
    assert!(!srv.dir.parent().unwrap().join("escape.txt").exists());
}

#[test]
fn seed_framing_can_be_turned_off() {
    let mut srv = start(Config {
        accept_seed: false,
        ..config()
    });
    seed_send_until_closed(srv.addr(), b"seed.txt", b"body");
    assert_eq!(
        upload_once(srv.addr(), "ferry.txt", b"x").code,
        ferry_proto::Code::Stored
    );
    srv.stop();
    assert_eq!(srv.listing(), vec!["ferry.txt"]);
}

#[test]
fn a_seed_upload_over_the_size_limit_is_dropped() {
    let mut srv = start(Config {
        max_file_size: Some(1000),
        ..config()
    });
    seed_send_until_closed(srv.addr(), b"big.bin", &data(5000, 1));
    seed_send(srv.addr(), b"small.bin", &data(1000, 1));
    wait_for("small.bin", || srv.read("small.bin").is_some());
    srv.stop();
    assert_eq!(srv.listing(), vec!["small.bin"]);
}
