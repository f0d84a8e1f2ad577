//! The `ferry` binary itself: arguments, exit codes, messages, `--json`, stdin and stdout.

mod common;

use std::fs;
use std::net::TcpListener;

use common::{data, ferry, ferry_with_stdin, json_lines, stderr, write, TestServer};
use ferry_proto::Digest;
use ferry_server::Overwrite;

#[test]
fn help_documents_the_exit_codes() {
    let out = ferry(&["--help"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for line in [
        "Exit codes:",
        "  3  the server refused",
        "  5  the server broke",
    ] {
        assert!(text.contains(line), "{line} in\n{text}");
    }
}

#[test]
fn usage_errors_exit_2_before_connecting() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let local = tempfile::tempdir().unwrap();
    let missing = local.path().join("missing.jpg");

    let out = ferry(&["send", &addr, missing.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("cannot read"), "{}", stderr(&out));
    assert!(stderr(&out).contains("missing.jpg"), "{}", stderr(&out));

    let out = ferry(&["send", "box:0", "x"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("not a port number"),
        "{}",
        stderr(&out)
    );

    let out = ferry(&["get", &addr, "../etc/passwd"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(listener.accept().is_err(), "no connection was made");
}

#[test]
fn nothing_listening_says_what_to_check() {
    let addr = common::dead_addr();
    let local = tempfile::tempdir().unwrap();
    let f = local.path().join("f");
    write(&f, b"x");
    let out = ferry(&["send", &addr.to_string(), f.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(4));
    assert_eq!(
        stderr(&out).trim(),
        format!("ferry: connection refused: is ferry-server running on {addr}?")
    );
}

#[test]
fn json_reports_each_file_and_a_summary() {
    let server = TestServer::start(Overwrite::Refuse);
    let local = tempfile::tempdir().unwrap();
    let a = local.path().join("a.bin");
    let b = local.path().join("b.txt");
    write(&a, &data(70_000, 1));
    write(&b, b"bee");
    let addr = server.addr().to_string();

    let out = ferry(&[
        "send",
        "--json",
        &addr,
        a.to_str().unwrap(),
        b.to_str().unwrap(),
    ]);

    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let lines = json_lines(&out.stdout);
    assert_eq!(lines.len(), 3);
    let first = &lines[0];
    assert_eq!(first["type"], "file");
    assert_eq!(first["name"], "a.bin");
    assert_eq!(first["size"], 70_000);
    assert_eq!(first["status"], "stored");
    assert_eq!(first["bytes"], 70_000);
    assert_eq!(first["digest"], Digest::of(&data(70_000, 1)).to_hex());
    assert!(first["seconds"].as_f64().unwrap() >= 0.0);
    assert_eq!(lines[1]["name"], "b.txt");
    let summary = &lines[2];
    assert_eq!(summary["type"], "summary");
    assert_eq!(
        (summary["files"].as_u64(), summary["ok"].as_u64()),
        (Some(2), Some(2))
    );
    assert_eq!(summary["bytes"], 70_003);
    assert_eq!(summary["exit_code"], 0);

    // Sent again unchanged: the server already holds it (issue 12), a success.
    let out = ferry(&["send", "--json", &addr, b.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let lines = json_lines(&out.stdout);
    assert_eq!(lines[0]["status"], "unchanged");
    assert_eq!(lines[0]["ok"], true);
    assert_eq!(lines[1]["unchanged"], 1);

    // Changed and sent again: refused, with the code string and the exit code for "refused".
    fs::write(&b, b"changed").unwrap();
    let out = ferry(&["send", "--json", &addr, b.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3));
    let lines = json_lines(&out.stdout);
    assert_eq!(lines[0]["status"], "exists");
    assert_eq!(lines[1]["exit_code"], 3);
    let err = stderr(&out);
    assert!(
        err.starts_with("server refused b.txt: a file of that name exists (server policy: refuse)"),
        "{err}"
    );
}

#[test]
fn stdin_goes_up_and_stdout_brings_it_back() {
    let server = TestServer::start(Overwrite::Refuse);
    let addr = server.addr().to_string();
    let content = data(200_000, 4);

    let up = ferry_with_stdin(
        &["send", &addr, "-", "--name", "backup/b.tar"],
        Some(&content),
    );
    assert_eq!(up.status.code(), Some(0), "{}", stderr(&up));
    assert!(fs::read(server.path("backup/b.tar")).unwrap() == content);

    let down = ferry(&["get", &addr, "backup/b.tar", "-o", "-"]);
    assert_eq!(down.status.code(), Some(0), "{}", stderr(&down));
    assert!(down.stdout == content);
}

#[test]
fn get_saves_into_the_folder_and_reports_missing_files() {
    let server = TestServer::start(Overwrite::Refuse);
    write(&server.path("docs/a.txt"), b"aaa");
    let out_dir = tempfile::tempdir().unwrap();
    let addr = server.addr().to_string();
    let dir = out_dir.path().join("dl");

    let out = ferry(&[
        "get",
        "--json",
        &addr,
        "docs/a.txt",
        "nope",
        "-o",
        dir.to_str().unwrap(),
    ]);

    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let lines = json_lines(&out.stdout);
    // Lines come in the order each file's fate became known.
    let status = |name: &str| {
        lines
            .iter()
            .find(|l| l["name"] == name)
            .map(|l| l["status"].clone())
    };
    assert_eq!(status("docs/a.txt"), Some("stored".into()));
    assert_eq!(status("nope"), Some("not_found".into()));
    assert_eq!(lines.last().unwrap()["failed"], 1);
    assert_eq!(fs::read(dir.join("docs/a.txt")).unwrap(), b"aaa");

    let again = || {
        ferry(&[
            "get",
            "-q",
            &addr,
            "docs/a.txt",
            "-o",
            dir.to_str().unwrap(),
        ])
    };
    // The same file again: unchanged (same size and mtime as listed), a success.
    assert_eq!(again().status.code(), Some(0), "{}", stderr(&again()));
    // A local file that differs is kept unless --force.
    fs::write(dir.join("docs/a.txt"), b"mine").unwrap();
    let again = again();
    assert_eq!(again.status.code(), Some(1));
    assert!(stderr(&again).contains("--force"), "{}", stderr(&again));
}

#[test]
fn a_cut_connection_exits_4_and_says_how_to_resume() {
    let server = TestServer::start(Overwrite::Refuse);
    let local = tempfile::tempdir().unwrap();
    let big = local.path().join("big.bin");
    write(&big, &data(3_000_000, 8));
    let (proxy, cut) = common::cutting_proxy(server.addr(), 1_000_000, u64::MAX);

    let out = ferry(&["send", &proxy.to_string(), big.to_str().unwrap()]);
    cut.join().unwrap();

    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&format!("connection to {proxy} lost")),
        "{err}"
    );
    assert!(
        err.contains("run the same command again to resume"),
        "{err}"
    );
}

#[test]
fn one_line_per_file_without_bars_when_not_a_terminal_and_none_when_quiet() {
    let server = TestServer::start(Overwrite::Refuse);
    let local = tempfile::tempdir().unwrap();
    let a = local.path().join("a.txt");
    let b = local.path().join("b.txt");
    write(&a, b"a");
    write(&b, b"b");
    let addr = server.addr().to_string();

    let out = ferry(&["send", &addr, a.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0));
    let err = stderr(&out);
    assert!(err.starts_with("stored a.txt (1 B in "), "{err}");
    assert!(
        !err.contains("ETA") && !err.contains('\x1b'),
        "no progress bar: {err}"
    );
    assert!(out.stdout.is_empty());

    let quiet = ferry(&["send", "-q", &addr, b.to_str().unwrap()]);
    assert_eq!(quiet.status.code(), Some(0));
    assert!(quiet.stderr.is_empty() && quiet.stdout.is_empty());
}
