//! `ferry` on a terminal, through a pseudo-terminal (script(1)): progress lines fit the width
//! and show the end of long names, a small file's bar completes, a stream of unknown size has
//! no full total bar, a resume says it is verifying, and Ctrl-C says what was confirmed and
//! that running the same command again resumes.

mod common;
mod slow;

use std::io::{Read, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use common::{data, wait_child, write, TestServer};
use ferry_server::Overwrite;

const FERRY: &str = env!("CARGO_BIN_EXE_ferry");

/// A shell command running in a pseudo-terminal, its output collected as it comes.
struct Pty {
    child: Child,
    stdin: ChildStdin,
    out: Arc<Mutex<Vec<u8>>>,
}

impl Pty {
    /// Runs `command` (a shell command line) in a terminal `cols` columns wide; `None` (and a
    /// loud line) where script(1) is missing.
    fn run(cols: u16, command: &str) -> Option<Pty> {
        let line = format!("stty cols {cols} rows 24; {command}");
        let spawned = Command::new("script")
            .args(["-q", "-e", "-f", "-c", &line, "/dev/null"])
            .env_remove("RUST_LOG")
            .env_remove("FERRY_TOKEN")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn();
        let Ok(mut child) = spawned else {
            println!("SKIPPED: script(1) is not installed (util-linux)");
            return None;
        };
        let stdin = child.stdin.take().expect("stdin");
        let mut stdout = child.stdout.take().expect("stdout");
        let out = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&out);
        thread::spawn(move || {
            let mut buf = [0u8; 8192];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        Some(Pty { child, stdin, out })
    }

    /// Ctrl-C, as typed.
    fn interrupt(&mut self) {
        self.stdin.write_all(b"\x03").unwrap();
        self.stdin.flush().unwrap();
    }

    /// Waits for the end (at most 30 s); the exit code and the output as text.
    fn finish(mut self) -> (Option<i32>, String) {
        let status = wait_child(&mut self.child, Duration::from_secs(30), || {
            let out = text(&self.out.lock().unwrap());
            format!("the command did not end: {out}")
        });
        // The reader gets the rest once the terminal closes.
        thread::sleep(Duration::from_millis(200));
        let out = text(&self.out.lock().unwrap());
        (status.code(), out)
    }
}

/// The output without colours and cursor moves.
fn text(raw: &[u8]) -> String {
    let s = String::from_utf8_lossy(raw);
    let mut out = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\x1b' && chars.peek() == Some(&'[') {
            chars.next();
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The rows the bars drew on a terminal `cols` wide. The bars pad each line to the width
/// and let the terminal wrap, so a redraw comes as one piece of whole rows; a line too long
/// for the terminal would spill into a row of its own that starts mid-line, with blanks or
/// figures. Pieces that hold the result lines printed above the bars are left out.
fn bar_rows(out: &str, cols: usize) -> Vec<String> {
    let mut rows = Vec::new();
    for piece in out.split(['\r', '\n']) {
        if piece.contains("stored ") || piece.contains("ferry:") || piece.contains(" files: ") {
            continue;
        }
        let chars: Vec<char> = piece.chars().collect();
        for row in chars.chunks(cols) {
            let row: String = row.iter().collect();
            if !row.trim().is_empty() {
                rows.push(row);
            }
        }
    }
    rows
}

#[test]
fn progress_lines_fit_the_terminal_and_show_the_end_of_long_names() {
    let server = TestServer::start(Overwrite::Refuse);
    let local = tempfile::tempdir().unwrap();
    let top = local.path().join("a_rather_long_folder_name_for_photos");
    write(&top.join("2024/summer/the-file-name.bin"), &data(2130, 1));
    write(&top.join("big.bin"), &data(8 << 20, 2));
    let command = format!("exec {FERRY} send {} '{}'", server.addr(), top.display());
    let Some(pty) = Pty::run(60, &command) else {
        return;
    };
    let (code, out) = pty.finish();
    assert_eq!(code, Some(0), "{out}");
    let rows = bar_rows(&out, 60);
    assert!(
        rows.iter()
            .any(|l| l.contains("/the-file-name.bin") && l.contains("/2.08 KiB")),
        "the file name is not shown: {rows:#?}"
    );
    for row in &rows {
        assert!(
            !row.starts_with(' '),
            "a line wider than the terminal: {rows:#?}"
        );
    }
    // The small file's bar was last drawn complete.
    let last = out.rfind("/2.08 KiB").expect("a bar for the small file");
    assert!(out[..last].trim_end().ends_with("2.08 KiB"), "{rows:#?}");
}

#[test]
fn a_stream_of_unknown_size_has_no_full_total_bar() {
    let server = TestServer::start(Overwrite::Refuse);
    let command = format!(
        "head -c 3000000 /dev/zero | {FERRY} send {} - --name stream.bin",
        server.addr()
    );
    let Some(pty) = Pty::run(100, &command) else {
        return;
    };
    let (code, out) = pty.finish();
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("stream.bin"), "{out}");
    assert!(!out.contains("=========="), "a full bar: {out}");
    assert_eq!(
        std::fs::metadata(server.path("stream.bin")).unwrap().len(),
        3_000_000
    );
}

#[test]
fn ctrl_c_says_what_was_confirmed_and_a_rerun_verifies_then_resumes() {
    let server = TestServer::start(Overwrite::Refuse);
    let local = tempfile::tempdir().unwrap();
    let file = local.path().join("b.bin");
    let body = data(16 << 20, 3);
    write(&file, &body);

    let proxy = slow::SlowProxy::start(server.addr());
    let command = format!("exec {FERRY} send {} '{}'", proxy.addr, file.display());
    let Some(mut pty) = Pty::run(100, &command) else {
        return;
    };
    proxy.wait_for(2 << 20);
    pty.interrupt();
    let (code, out) = pty.finish();
    assert_eq!(code, Some(130), "{out}");
    assert!(
        out.contains(
            "ferry: interrupted: 0 of 1 files confirmed stored; run the same command again to \
             resume the rest"
        ),
        "{out}"
    );
    drop(proxy);

    // The same command, straight to the server: it checks the prefix the server holds, then
    // sends the rest.
    let command = format!(
        "exec {FERRY} --retries 5 send {} '{}'",
        server.addr(),
        file.display()
    );
    let (code, out) = Pty::run(100, &command).unwrap().finish();
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("verifying the "), "{out}");
    assert!(out.contains("already on the server"), "{out}");
    assert!(out.contains("resumed at"), "{out}");
    assert!(std::fs::read(server.path("b.bin")).unwrap() == body);
}
