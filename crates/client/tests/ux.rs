//! Every message and exit code of `ferry` tells the truth about whose fault a failure is:
//! local files, a server's size limit on standard input, TLS against a plain server, a source
//! blocked after failed logins, servers that are not ferry servers, and pins in openssl's form.
//! A refusal says what the user can do about it, and the closing line counts every file.

mod common;
mod slow;

use std::fs;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::process::{Command, Output, Stdio};
use std::thread;
use std::time::Duration;

use common::{data, ferry, stderr, token_file, tree, write, TestServer};
use ferry_secure::{Fingerprint, ServerTls, Token};
use ferry_server::Overwrite;

fn arg(p: &std::path::Path) -> &str {
    p.to_str().unwrap()
}

/// Runs `ferry` with `stdin` fed from a thread (the client may stop reading it early).
fn ferry_fed(args: &[&str], stdin: Vec<u8>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(args)
        .env_remove("FERRY_TOKEN")
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run ferry");
    let mut pipe = child.stdin.take().expect("stdin");
    let feeder = thread::spawn(move || {
        let _ = pipe.write_all(&stdin);
    });
    let out = child.wait_with_output().expect("ferry output");
    feeder.join().unwrap();
    out
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// The log's lines (warnings by default, more with `RUST_LOG`) read as the tool's own:
/// `ferry: warning: ...`, `ferry: debug: ...`, never a log's timestamp, level and module.
#[test]
fn log_lines_read_as_the_tools_own() {
    let server = TestServer::start(Overwrite::Refuse);
    let local = tempfile::tempdir().unwrap();
    let file = local.path().join("f.txt");
    write(&file, b"x");
    let out = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["send", &server.addr().to_string(), arg(&file)])
        .env("RUST_LOG", "debug")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        err.lines().any(|l| l.starts_with("ferry: debug: ")),
        "{err}"
    );
    assert!(
        !err.contains("DEBUG") && !err.contains("ferry_client::"),
        "{err}"
    );
}

#[test]
fn a_named_file_or_folder_the_user_cannot_read_is_a_local_error_before_connecting() {
    if !is_root() {
        println!("SKIPPED: needs root (to run the client as nobody)");
        return;
    }
    let server = TestServer::start(Overwrite::Refuse);
    let local = tempfile::tempdir().unwrap();
    let mode = |p: &std::path::Path, m| {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(p, fs::Permissions::from_mode(m)).unwrap();
    };
    mode(local.path(), 0o755);
    let secret = local.path().join("secret.txt");
    write(&secret, b"root's only");
    mode(&secret, 0o600);
    // A folder likewise (what it holds is the walk's: skipped).
    let private = local.path().join("private");
    fs::create_dir(&private).unwrap();
    write(&private.join("a.txt"), b"root's only");
    mode(&private, 0o700);
    for path in [&secret, &private] {
        let out = Command::new(env!("CARGO_BIN_EXE_ferry"))
            .args([
                "--timeout",
                "20",
                "send",
                &server.addr().to_string(),
                arg(path),
            ])
            .env_remove("RUST_LOG")
            .uid(65534)
            .gid(65534)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert_eq!(
            err.trim(),
            format!("ferry: cannot read {}: permission denied", path.display())
        );
    }
    assert!(tree(server.dir.path()).is_empty());
}

#[test]
fn a_file_that_shrinks_while_it_is_sent_is_a_local_failure() {
    let server = TestServer::start(Overwrite::Refuse);
    let proxy = slow::SlowProxy::start(server.addr());
    let local = tempfile::tempdir().unwrap();
    let file = local.path().join("growing.log");
    write(&file, &data(32 << 20, 1));
    let child = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args([
            "--timeout",
            "20",
            "send",
            &proxy.addr.to_string(),
            arg(&file),
        ])
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    proxy.wait_for(256 << 10);
    // Cut it to 1 MiB: the client, a few MiB in at most, finds its end early.
    fs::OpenOptions::new()
        .write(true)
        .open(&file)
        .unwrap()
        .set_len(1 << 20)
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("could not send growing.log: cannot read"),
        "{err}"
    );
    assert!(err.contains("shrank"), "{err}");
    assert!(!err.contains("server could not store"), "{err}");
}

#[test]
fn stdin_over_the_size_limit_gets_the_servers_reason_and_no_resume_hint() {
    let server = TestServer::with(|c| c.max_file_size = Some(3 << 20));
    let out = ferry_fed(
        &[
            "--timeout",
            "20",
            "send",
            &server.addr().to_string(),
            "-",
            "--name",
            "big.bin",
        ],
        data(4 << 20, 2),
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("server refused big.bin: too large"), "{err}");
    assert!(!err.contains("resume"), "{err}");
    assert!(!err.contains("lost"), "{err}");
    assert!(tree(server.dir.path()).is_empty());
}

#[test]
fn tls_to_a_plain_server_says_it_does_not_speak_tls_and_is_not_retried() {
    let plain = TestServer::start(Overwrite::Refuse);
    let local = tempfile::tempdir().unwrap();
    let file = local.path().join("f.txt");
    write(&file, b"x");
    let pin = format!("SHA256:{}", "ab".repeat(32));
    let out = ferry(&[
        "--retries",
        "3",
        "--timeout",
        "20",
        "send",
        &plain.addr().to_string(),
        arg(&file),
        "--pin",
        &pin,
    ]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(5), "{err}");
    assert!(err.contains("does not speak TLS"), "{err}");
    assert!(!err.contains("retrying"), "{err}");
    assert!(tree(plain.dir.path()).is_empty());
}

#[test]
fn a_client_blocked_after_failed_logins_is_told_so_and_for_how_long() {
    let state = tempfile::tempdir().unwrap();
    let tls = ServerTls::self_signed(state.path()).unwrap();
    let pin = tls.fingerprint().to_string();
    let server = TestServer::with(|c| {
        c.tls = Some(tls);
        c.token = Some(Token::new(b"right".to_vec()).unwrap());
        c.max_auth_failures = 1;
        c.auth_window = Duration::from_secs(600);
    });
    let local = tempfile::tempdir().unwrap();
    let file = local.path().join("f.txt");
    write(&file, b"x");
    let wrong = token_file(local.path(), "wrong");
    let run = || {
        ferry(&[
            "--retries",
            "2",
            "--timeout",
            "20",
            "send",
            &server.addr().to_string(),
            arg(&file),
            "--pin",
            &pin,
            "--token-file",
            arg(&wrong),
        ])
    };
    let first = run();
    assert_eq!(first.status.code(), Some(3), "{}", stderr(&first));
    assert!(
        stderr(&first).contains("authentication failed"),
        "{}",
        stderr(&first)
    );
    let blocked = run();
    let err = stderr(&blocked);
    assert_eq!(blocked.status.code(), Some(3), "{err}");
    assert!(
        err.contains("blocked after too many failed logins"),
        "{err}"
    );
    assert!(
        err.contains("try again in 600 s") || err.contains("try again in 599 s"),
        "{err}"
    );
    assert!(!err.contains("TLS handshake"), "{err}");
    assert!(!err.contains("retrying"), "{err}");
}

/// A listener that answers its one connection as `reply` says, then closes.
fn scripted(reply: &'static [u8], read_first: bool) -> (String, thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let t = thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 4096];
        if read_first {
            let _ = s.read(&mut buf);
        }
        let _ = s.write_all(reply);
        if !read_first {
            let _ = s.read(&mut buf);
        }
    });
    (addr, t)
}

#[test]
fn http_and_ssh_servers_are_named_as_not_ferry_servers() {
    let local = tempfile::tempdir().unwrap();
    let file = local.path().join("f.txt");
    write(&file, b"x");
    let cases: [(&[u8], bool, &str); 2] = [
        (
            b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            true,
            "is not a ferry server: it answered like an HTTP server (HTTP/1.1 400 Bad Request)",
        ),
        (
            b"SSH-2.0-OpenSSH_9.2\r\n",
            false,
            "is not a ferry server: it answered like an SSH server (SSH-2.0-OpenSSH_9.2)",
        ),
    ];
    for (reply, read_first, says) in cases {
        for tls in [false, true] {
            let (addr, t) = scripted(reply, read_first);
            let mut args = vec!["--timeout", "20", "send", &addr, arg(&file)];
            let pin = format!("SHA256:{}", "ab".repeat(32));
            if tls {
                args.extend(["--pin", &pin]);
            }
            let out = ferry(&args);
            let err = stderr(&out);
            assert_eq!(out.status.code(), Some(5), "{err}");
            assert!(err.contains(says), "{err}");
            t.join().unwrap();
        }
    }
}

#[test]
fn pin_takes_the_fingerprint_as_openssl_prints_it() {
    let state = tempfile::tempdir().unwrap();
    let tls = ServerTls::self_signed(state.path()).unwrap();
    let fp: Fingerprint = tls.fingerprint();
    let server = TestServer::with(|c| c.tls = Some(tls));
    let pairs: Vec<String> = fp.as_bytes().iter().map(|b| format!("{b:02X}")).collect();
    let colons = pairs.join(":");
    let local = tempfile::tempdir().unwrap();
    for (i, pin) in [format!("SHA256 Fingerprint={colons}"), colons]
        .iter()
        .enumerate()
    {
        let file = local.path().join(format!("f{i}.txt"));
        write(&file, b"pinned");
        let out = ferry(&["send", &server.addr().to_string(), arg(&file), "--pin", pin]);
        assert_eq!(out.status.code(), Some(0), "{pin}: {}", stderr(&out));
    }
    assert_eq!(tree(server.dir.path()), ["f0.txt", "f1.txt"]);
}

#[test]
fn the_exit_code_tables_say_what_these_tests_assert() {
    let help = String::from_utf8(ferry(&["--help"]).stdout).unwrap();
    let root = env!("CARGO_MANIFEST_DIR");
    let readme = fs::read_to_string(format!("{root}/README.md")).unwrap();
    let top = fs::read_to_string(format!("{root}/../../README.md")).unwrap();
    // (code, words its entry must hold) for each code the tests above assert.
    let table = [
        ("2", vec!["read"]),
        (
            "3",
            vec!["blocked after failed logins", "every file", "folders alike"],
        ),
        ("5", vec!["not a ferry server", "does not speak TLS"]),
        ("130", vec!["interrupted", "again to resume"]),
    ];
    for (code, words) in &table {
        // The entry's first line, and the lines indented under it.
        let mut lines = help
            .lines()
            .skip_while(|l| !l.starts_with(&format!("  {code}  ")));
        let first = lines
            .next()
            .unwrap_or_else(|| panic!("--help has no exit code {code}"));
        let rest = lines.take_while(|l| l.starts_with("     "));
        let entry = std::iter::once(first)
            .chain(rest)
            .map(str::trim)
            .collect::<Vec<_>>()
            .join(" ");
        for doc in [&readme, &top] {
            let row = doc
                .lines()
                .find(|l| l.starts_with(&format!("| {code} |")))
                .unwrap_or_else(|| panic!("a README has no exit code {code}"));
            for word in words {
                assert!(
                    entry.contains(word),
                    "--help, exit {code}: {word} not in {entry:?}"
                );
                assert!(
                    row.contains(word),
                    "README, exit {code}: {word} not in {row:?}"
                );
            }
        }
    }
}

/// The `--json` lines of `out`, one value each.
fn json(out: &Output) -> Vec<serde_json::Value> {
    common::json_lines(&out.stdout)
}

/// PROTOCOL.md §4.8 "Renamed copies": a re-run under the server's rename policy is reported
/// unchanged with the copy that holds the file, not as the name it was offered under alone.
#[test]
fn a_rerun_under_rename_names_the_copy_that_holds_the_file() {
    let server = TestServer::start(Overwrite::Rename);
    let local = tempfile::tempdir().unwrap();
    let tree = local.path().join("tree");
    write(&tree.join("b.txt"), b"b");
    let addr = server.addr().to_string();
    assert_eq!(ferry(&["send", &addr, arg(&tree)]).status.code(), Some(0));
    write(&tree.join("b.txt"), b"changed");
    let copy = ferry(&["send", &addr, arg(&tree)]);
    assert!(
        stderr(&copy).contains("stored tree/b.txt as tree/b (1).txt"),
        "{}",
        stderr(&copy)
    );

    let again = ferry(&["send", &addr, arg(&tree)]);

    let err = stderr(&again);
    assert_eq!(again.status.code(), Some(0), "{err}");
    assert!(
        err.contains("unchanged tree/b.txt (held as tree/b (1).txt)"),
        "{err}"
    );
    assert!(!server.path("tree/b (2).txt").exists());
}

/// A download kept because the local file matches is reported `unchanged NAME`: its detail
/// (why it was kept) is not a copy's name, as an upload's under rename is.
#[test]
fn a_download_kept_unchanged_names_no_copy() {
    let server = TestServer::start(Overwrite::Refuse);
    write(&server.path("tree/b.txt"), b"b");
    let out = tempfile::tempdir().unwrap();
    let addr = server.addr().to_string();
    let get = || ferry(&["get", &addr, "tree", "-o", arg(out.path())]);
    assert_eq!(get().status.code(), Some(0));

    let again = get();

    let err = stderr(&again);
    assert_eq!(again.status.code(), Some(0), "{err}");
    assert!(err.contains("unchanged tree/b.txt\n"), "{err}");
    assert!(!err.contains("held as"), "{err}");
}

/// A changed file sent again under the server's `--overwrite refuse` is refused: the line says
/// what the user can do about it, and the summary counts it with the rest (unchanged,
/// skipped), so that every file is accounted for.
#[test]
fn a_changed_file_refused_by_the_servers_policy_is_counted_and_says_what_to_do() {
    let server = TestServer::start(Overwrite::Refuse);
    let local = tempfile::tempdir().unwrap();
    let tree = local.path().join("tree");
    write(&tree.join("a.txt"), b"a");
    write(&tree.join("b.txt"), b"b");
    std::os::unix::fs::symlink(tree.join("nowhere"), tree.join("dangling")).unwrap();
    let addr = server.addr().to_string();
    let first = ferry(&["send", &addr, arg(&tree)]);
    assert_eq!(first.status.code(), Some(1), "{}", stderr(&first));
    assert!(
        stderr(&first).contains("3 files: 2 stored, 1 skipped, 2 B in "),
        "{}",
        stderr(&first)
    );
    write(&tree.join("a.txt"), b"changed");

    let again = ferry(&["send", &addr, arg(&tree)]);

    let err = stderr(&again);
    assert_eq!(again.status.code(), Some(1), "{err}");
    assert!(
        err.contains(
            "server refused tree/a.txt: a file of that name exists (server policy: refuse); \
             the server keeps what it holds there: send it under another name (--to PATH), or \
             ask the server's operator for ferry-server --overwrite replace or rename"
        ),
        "{err}"
    );
    assert!(
        err.contains("3 files: 1 unchanged, 1 refused, 1 skipped, 0 B in "),
        "{err}"
    );
    assert_eq!(fs::read(server.path("tree/a.txt")).unwrap(), b"a");

    let lines = json(&ferry(&["send", "--json", &addr, arg(&tree)]));
    let summary = lines.last().unwrap();
    assert_eq!(
        (
            &summary["files"],
            &summary["unchanged"],
            &summary["refused"],
            &summary["failed"],
            &summary["skipped"]
        ),
        (&3.into(), &1.into(), &1.into(), &1.into(), &1.into()),
        "{summary}"
    );
}

/// Standard input sent again under an existing name is refused (exit 3: every file) with
/// the same advice, naming the option that names a stream.
#[test]
fn a_stream_sent_again_under_its_name_is_refused_with_what_to_do() {
    let server = TestServer::start(Overwrite::Refuse);
    let addr = server.addr().to_string();
    let args = ["send", &addr, "-", "--name", "backup.tar"];
    let first = ferry_fed(&args, b"first".to_vec());
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));

    let again = ferry_fed(&args, b"second".to_vec());

    let err = stderr(&again);
    assert_eq!(again.status.code(), Some(3), "{err}");
    assert!(
        err.contains(
            "server refused backup.tar: a file of that name exists (server policy: refuse); \
             the server keeps what it holds there: send it under another name (--name NAME), \
             or ask the server's operator for ferry-server --overwrite replace or rename"
        ),
        "{err}"
    );
    assert_eq!(fs::read(server.path("backup.tar")).unwrap(), b"first");
}

/// `--quiet` prints nothing but failures, and what was skipped is one: the exit code (1) says
/// so, and so do the lines that tell what and why. `--help` and the READMEs say the same.
#[test]
fn quiet_still_prints_the_skipped_entries_that_set_the_exit_code() {
    let server = TestServer::start(Overwrite::Refuse);
    let local = tempfile::tempdir().unwrap();
    let q = local.path().join("q");
    fs::create_dir(&q).unwrap();
    let fifo = q.join("fifo");
    rustix::fs::mkfifoat(
        rustix::fs::CWD,
        &fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
    )
    .unwrap();
    let dangling = q.join("dangling");
    std::os::unix::fs::symlink(q.join("nowhere"), &dangling).unwrap();

    let out = ferry(&["send", "-q", &server.addr().to_string(), arg(&q)]);

    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 2, "{err}");
    for p in [&dangling, &fifo] {
        let line = format!("ferry: skipped {}: ", p.display());
        assert!(
            lines.iter().any(|l| l.starts_with(&line)),
            "{line} in {err}"
        );
    }
    let help = String::from_utf8(ferry(&["send", "--help"]).stdout).unwrap();
    assert!(
        help.contains("Print nothing but failures (what was skipped included)"),
        "{help}"
    );
    let root = env!("CARGO_MANIFEST_DIR");
    for readme in [
        format!("{root}/README.md"),
        format!("{root}/../../README.md"),
    ] {
        let text = fs::read_to_string(&readme).unwrap().replace('\n', " ");
        assert!(
            text.contains("(`--quiet` too: "),
            "{readme} says skip lines are printed with --quiet"
        );
    }
}

/// The record of `name` among `lines`.
fn record<'a>(lines: &'a [serde_json::Value], name: &str) -> &'a serde_json::Value {
    lines
        .iter()
        .find(|l| l["name"] == name)
        .unwrap_or_else(|| panic!("no record of {name} in {lines:?}"))
}

/// Exit 3 means the server refused every file, whether one file was sent or a folder of
/// them: a tree sent under a name that is a file on the server is refused whole (its files
/// and its folder), and says so in the same words.
#[test]
fn a_folder_the_server_refuses_whole_exits_3_as_a_single_file_does() {
    let server = TestServer::start(Overwrite::Refuse);
    write(&server.path("single.txt"), b"single");
    let local = tempfile::tempdir().unwrap();
    let tree = local.path().join("tree");
    write(&tree.join("a.txt"), b"a");
    write(&tree.join("sub/b.txt"), b"b");
    let addr = server.addr().to_string();

    let out = ferry(&["send", &addr, arg(&tree), "--to", "single.txt/x"]);

    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "{err}");
    for name in [
        "single.txt/x/tree/a.txt",
        "single.txt/x/tree/sub/b.txt",
        "folder single.txt/x/tree/sub",
        "folder single.txt/x/tree",
    ] {
        let line = format!("server refused {name}: ");
        assert!(err.contains(&line), "{line} in {err}");
    }
    assert!(!err.contains("could not store"), "{err}");
    assert!(
        err.contains("2 files: 2 refused (folders: 2 refused), "),
        "{err}"
    );
    let one = ferry(&[
        "send",
        &addr,
        arg(&tree.join("a.txt")),
        "--to",
        "single.txt/x",
    ]);
    assert_eq!(one.status.code(), Some(3), "{}", stderr(&one));
    let lines = json(&ferry(&[
        "send",
        "--json",
        &addr,
        arg(&tree),
        "--to",
        "single.txt/x",
    ]));
    assert_eq!(lines.last().unwrap()["exit_code"], 3, "{lines:?}");
    assert_eq!(record(&lines, "single.txt/x/tree")["status"], "exists");
    assert_eq!(common::tree(server.dir.path()), ["single.txt"]);
}

/// A name with a backslash is stored as itself: not shown as renamed, and `--json` carries
/// it raw in `name` and `detail` alike (JSON escapes it once, as any string).
#[test]
fn a_name_with_a_backslash_is_not_shown_as_renamed_and_json_carries_it_raw() {
    let server = TestServer::start(Overwrite::Refuse);
    let local = tempfile::tempdir().unwrap();
    let odd = local.path().join("odd");
    write(&odd.join("back\\slash.txt"), b"x");
    write(&odd.join("plain.txt"), b"y");
    let addr = server.addr().to_string();

    let out = ferry(&["send", &addr, arg(&odd)]);

    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("stored odd/back\\\\slash.txt (1 B"), "{err}");
    assert!(!err.contains(" as "), "{err}");
    fs::remove_dir_all(server.path("odd")).unwrap();
    let lines = json(&ferry(&["send", "--json", &addr, arg(&odd)]));
    let r = record(&lines, "odd/back\\slash.txt");
    assert_eq!(r["detail"], "odd/back\\slash.txt", "{r}");
    assert_eq!(r["status"], "stored", "{r}");
}

/// A refusal names the file once, whatever the server's reason says: of an upload, of a
/// download, of a listing.
#[test]
fn refusals_name_the_file_once() {
    let server = TestServer::start(Overwrite::Refuse);
    let local = tempfile::tempdir().unwrap();
    let odd = local.path().join("odd");
    write(&odd.join(".ferry-state"), b"x");
    let addr = server.addr().to_string();

    let sent = ferry(&["send", &addr, arg(&odd)]);
    let err = stderr(&sent);
    assert!(
        err.contains("server refused odd/.ferry-state: names starting with"),
        "{err}"
    );
    let got = ferry(&["get", &addr, "nope", "-o", arg(local.path())]);
    assert_eq!(got.status.code(), Some(3), "{}", stderr(&got));
    assert_eq!(stderr(&got).trim(), "server refused nope: no such file");
    let listed = ferry(&["ls", &addr, "nope"]);
    assert_eq!(listed.status.code(), Some(3), "{}", stderr(&listed));
    assert!(
        stderr(&listed)
            .trim()
            .ends_with("refused to list nope (not found): no such file"),
        "{}",
        stderr(&listed)
    );
}

/// A skipped name that is not UTF-8 is recorded under the name it would have travelled under
/// (lossy), folder and `--to` included, as every other skipped entry.
#[test]
fn a_skipped_name_that_is_not_utf8_keeps_its_folder_in_json() {
    use std::os::unix::ffi::OsStrExt;
    let server = TestServer::start(Overwrite::Refuse);
    let local = tempfile::tempdir().unwrap();
    let odd = local.path().join("odd");
    write(
        &odd.join(std::ffi::OsStr::from_bytes(b"bad\xffutf8.txt")),
        b"x",
    );
    std::os::unix::fs::symlink(odd.join("nowhere"), odd.join("dangling")).unwrap();
    let addr = server.addr().to_string();

    let lines = json(&ferry(&["send", "--json", &addr, arg(&odd), "--to", "in"]));

    let skipped: Vec<&str> = lines
        .iter()
        .filter(|l| l["status"] == "skipped")
        .map(|l| l["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        skipped,
        ["in/odd/bad\u{fffd}utf8.txt", "in/odd/dangling"],
        "{lines:?}"
    );
}

/// A peer that is not a ferry server is named for what it is; no file is said to have been
/// cut first, whether an offer rode with the HELLO or not (`--checksum`).
#[test]
fn a_peer_that_is_not_a_ferry_server_gets_only_the_diagnosis() {
    let local = tempfile::tempdir().unwrap();
    let file = local.path().join("single.txt");
    write(&file, b"x");
    // What `python3 -m http.server` answers to a request line it cannot read.
    let page: &[u8] = b"<!DOCTYPE HTML>\n<html lang=\"en\">\n<head><title>Error response</title>\
                        </head>\n<body><h1>Error response</h1></body>\n</html>\n";
    for extra in [None, Some("--checksum"), Some("--json")] {
        let (addr, t) = scripted(page, true);
        let mut args = vec!["--timeout", "20", "send", &addr, arg(&file)];
        args.extend(extra);
        let out = ferry(&args);
        t.join().unwrap();
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(5), "{extra:?}: {err}");
        assert_eq!(
            err.trim(),
            format!("ferry: {addr} is not a ferry server: it answered with \"<!DOCTYPE HTML>\""),
            "{extra:?}"
        );
        if extra == Some("--json") {
            let lines = json(&out);
            assert_eq!(lines.len(), 1, "only the summary: {lines:?}");
            assert_eq!(lines[0]["exit_code"], 5);
        }
    }
}

/// A command line clap cannot parse still gets, under `--json`, the summary the other errors
/// print, with exit code 2.
#[test]
fn usage_errors_under_json_print_the_summary_too() {
    for args in [
        &["--json", "send", "--bogus", "h", "x"][..],
        &["send", "h", "x", "--json", "--bogus"],
        &["--json", "send", "h"],
    ] {
        let out = ferry(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        let lines = json(&out);
        assert_eq!(lines.len(), 1, "{args:?}: {lines:?}");
        let summary = &lines[0];
        assert_eq!(summary["type"], "summary");
        assert_eq!(summary["exit_code"], 2);
        assert!(
            stderr(&out).contains(summary["error"].as_str().unwrap()),
            "{args:?}: {summary}"
        );
    }
    let plain = ferry(&["send", "--bogus", "h", "x"]);
    assert_eq!(plain.status.code(), Some(2));
    assert!(plain.stdout.is_empty());
    let dead = common::dead_addr().to_string();
    let after = ferry(&["send", &dead, "--bogus", "--", "--json"]);
    assert_eq!(after.status.code(), Some(2));
    assert!(after.stdout.is_empty(), "a path named --json is no option");
}

/// QA M1: what a server leaves out of a listing is told in words that fit every reason it
/// may have (a name it cannot carry too, not only links), "1 entry" for one; `get` of the
/// folder says how many it skipped there, counts them in its summary and exits 1, as `send`
/// does for entries it skips.
#[test]
fn entries_the_server_leaves_out_are_told_for_every_reason_and_counted() {
    let server = TestServer::start(Overwrite::Refuse);
    write(&server.path("share/a.txt"), b"a");
    write(&server.path("share/new\nline"), b"n");
    let out = tempfile::tempdir().unwrap();
    let host = server.addr().to_string();

    let ls = ferry(&["ls", &host, "share"]);
    assert_eq!(ls.status.code(), Some(0));
    let said = stderr(&ls);
    assert!(
        said.contains("left out 1 entry:") && said.contains("names the protocol cannot carry"),
        "{said}"
    );

    let get = ferry(&["get", "--json", &host, "share", "-o", arg(out.path())]);
    assert_eq!(get.status.code(), Some(1), "{}", stderr(&get));
    let said = stderr(&get);
    assert!(said.contains("skipped 1 entry under share:"), "{said}");
    let summary = json(&get).pop().unwrap();
    assert_eq!(summary["skipped"], 1, "{summary}");
    assert_eq!(summary["exit_code"], 1, "{summary}");
    assert_eq!(tree(out.path()), ["share/a.txt"]);
}

/// Where a test sends `ferry`'s standard output: a full disk, or a pipe nobody reads.
enum Stdout {
    /// `/dev/full`: every write fails with ENOSPC.
    Full,
    /// A pipe whose reading end is closed before `ferry` starts: every write fails with EPIPE.
    Closed,
}

/// Runs `ferry` with standard output going to `to`.
fn ferry_into(args: &[&str], to: Stdout) -> Output {
    let stdout = match to {
        Stdout::Full => Stdio::from(fs::File::options().write(true).open("/dev/full").unwrap()),
        Stdout::Closed => {
            let (reader, writer) = rustix::pipe::pipe().unwrap();
            drop(reader);
            Stdio::from(writer)
        }
    };
    Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(args)
        .env_remove("FERRY_TOKEN")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(Stdio::piped())
        .output()
        .unwrap()
}

/// QA L4, L5: a write to standard output that fails is the local side's failure, said as such
/// (`cannot write to standard output: No space left on device`), never a panic, never blamed
/// on the network, and the run exits 1 (README's table): `ls`, `send --json`, `get -o -` and
/// `completions`.
#[test]
fn a_full_standard_output_is_told_and_exits_1() {
    let server = TestServer::start(Overwrite::Refuse);
    write(&server.path("held.bin"), &data(300_000, 4));
    let local = tempfile::tempdir().unwrap();
    let f = local.path().join("f.txt");
    write(&f, b"f");
    let addr = server.addr().to_string();

    for args in [
        vec!["ls", &addr],
        vec!["ls", "--json", &addr],
        vec!["send", "--json", &addr, arg(&f)],
        vec!["get", &addr, "held.bin", "-o", "-"],
        vec!["completions", "bash"],
    ] {
        let out = ferry_into(&args, Stdout::Full);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert_eq!(
            err.matches("ferry: cannot write to standard output: No space left on device")
                .count(),
            1,
            "{args:?}: {err}"
        );
        assert!(
            !err.contains("panicked") && !err.contains("connection ended"),
            "{args:?}: {err}"
        );
    }
    assert!(
        server.path("f.txt").exists(),
        "the upload itself went through"
    );
}

/// QA L4, L5: when standard output's reader went away (`ferry ls | head -1`, `| true`), ferry
/// ends at once without a word, with the status a tool that SIGPIPE ends has (141).
#[test]
fn a_closed_standard_output_ends_quietly() {
    let server = TestServer::start(Overwrite::Refuse);
    write(&server.path("held.bin"), &data(300_000, 4));
    let addr = server.addr().to_string();

    for args in [
        vec!["ls", &addr],
        vec!["get", &addr, "held.bin", "-o", "-"],
        vec!["completions", "bash"],
    ] {
        let out = ferry_into(&args, Stdout::Closed);
        assert_eq!(out.status.code(), Some(141), "{args:?}: {}", stderr(&out));
        assert_eq!(stderr(&out), "", "{args:?}");
    }
}
