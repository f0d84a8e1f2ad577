//! Operators' features end to end, with the real `ferry-server` binary: credentials with
//! permissions and folders, the configuration file, the hook, progress lines and metrics,
//! the PROXY protocol behind HAProxy, and the systemd unit's stop.

mod common;
mod ops;

use std::path::Path;

use common::*;
use ferry_proto::Code;
use ops::*;

const ADMIN: &[u8] = b"admin-token-0123456789";
const STUDENT: &[u8] = b"student-token-0123456789";

/// `printf %s student-token-0123456789 | sha256sum`
fn sha256_hex(token: &[u8]) -> String {
    let out = std::process::Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(token)?;
            c.wait_with_output()
        })
        .unwrap();
    String::from_utf8(out.stdout).unwrap()[..64].to_owned()
}

/// A configuration file in `dir`: an admin token from a private file (everything), a
/// student token by its hash (upload only, into `inbox`), `dir` set to `dir/store`.
fn config_file(dir: &Path, extra: &str) -> std::path::PathBuf {
    let admin = file(dir, "admin.token", "admin-token-0123456789\n", 0o600);
    let text = format!(
        "dir = \"{store}\"\noverwrite = \"rename\"\n{extra}\n\
         [[token]]\nname = \"admin\"\nfile = \"{admin}\"\npermissions = [\"all\"]\n\n\
         [[token]]\nname = \"student\"\nsha256 = \"sha256:{hash}\"\n\
         permissions = [\"upload\"]\nfolder = \"inbox\"\n",
        store = dir.join("store").display(),
        admin = admin.file_name().unwrap().to_str().unwrap(),
        hash = sha256_hex(STUDENT),
    );
    file(dir, "ferry.toml", &text, 0o644)
}

#[test]
fn an_upload_only_token_stores_into_its_folder_and_cannot_read_back() {
    let tmp = tempfile::tempdir().unwrap();
    let conf = config_file(tmp.path(), "");
    let mut srv = Bin::start(&[std::ffi::OsStr::new("--config"), conf.as_os_str()]);
    srv.wait_line("token \"student\": upload, in ");
    srv.wait_line("clients without a token may: none");
    let store = tmp.path().join("store");

    // The student's upload lands in inbox/, under its own name.
    let mut student = client(srv.addr, Some(STUDENT));
    assert_eq!(
        upload(&mut student, "report.pdf", b"mine").code,
        Code::Stored
    );
    assert_eq!(
        std::fs::read(store.join("inbox/report.pdf")).unwrap(),
        b"mine"
    );
    assert!(!store.join("report.pdf").exists());
    // ... and may neither download it nor list.
    assert_eq!(download(&mut student, "report.pdf"), Err(Code::Denied));
    assert_eq!(list(srv.addr, STUDENT), Err(Code::Denied));

    // The admin sees the whole folder and fetches the report.
    let mut admin = client(srv.addr, Some(ADMIN));
    let (bytes, _) = download(&mut admin, "inbox/report.pdf").unwrap();
    assert_eq!(bytes, b"mine");
    assert_eq!(
        list(srv.addr, ADMIN).unwrap(),
        ["inbox", "inbox/report.pdf"]
    );
    srv.wait_line("authenticated as \"student\" (upload, in ");
    srv.stop();
}

#[test]
fn without_tokens_anonymous_clients_have_the_announced_permissions() {
    let (code, help) = {
        let out = std::process::Command::new(BIN)
            .arg("--help")
            .output()
            .unwrap();
        (out.status.code(), String::from_utf8(out.stdout).unwrap())
    };
    assert_eq!(code, Some(0));
    assert!(help.contains("--anonymous <PERMS>"), "{help}");
    assert!(
        help.contains("upload only when other machines can connect"),
        "{help}"
    );

    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let mut srv = Bin::start(&["--dir", dir.to_str().unwrap(), "--anonymous", "upload"]);
    srv.wait_line("clients without a token may: upload (set with --anonymous)");
    let mut anon = client(srv.addr, None);
    assert_eq!(upload(&mut anon, "a.txt", b"a").code, Code::Stored);
    assert_eq!(download(&mut anon, "a.txt"), Err(Code::Denied));
    assert_eq!(list(srv.addr, b""), Err(Code::Denied));
    srv.stop();
}

#[test]
fn the_configuration_file_sets_options_and_flags_override_it() {
    let tmp = tempfile::tempdir().unwrap();
    let conf = config_file(tmp.path(), "max-file-size = \"1K\"\nno-seed = true");
    let mut srv = Bin::start(&[
        std::ffi::OsStr::new("--config"),
        conf.as_os_str(),
        std::ffi::OsStr::new("--overwrite"),
        std::ffi::OsStr::new("refuse"),
    ]);
    let mut admin = client(srv.addr, Some(ADMIN));
    // From the file: the size limit.
    assert_eq!(upload(&mut admin, "big", &[0; 2048]).code, Code::TooLarge);
    // The command line's --overwrite refuse beats the file's rename.
    assert_eq!(upload(&mut admin, "x", b"1").code, Code::Stored);
    assert_eq!(upload(&mut admin, "x", b"2").code, Code::Exists);
    srv.wait_line("listening on");
    srv.stop();
}

#[test]
fn a_clear_token_in_a_readable_configuration_file_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let text = "[[token]]\nname = \"a\"\nsecret = \"s3cret\"\npermissions = [\"all\"]\n";
    let conf = file(tmp.path(), "ferry.toml", text, 0o644);
    let (code, err) = run(&["--config", conf.to_str().unwrap()]);
    assert_eq!(code, 3, "{err}");
    assert!(
        err.contains("a token in clear needs a configuration file only you can read"),
        "{err}"
    );
    // A world-readable token file named by the configuration is refused too.
    file(tmp.path(), "t", "s3cret\n", 0o644);
    let text = "[[token]]\nname = \"a\"\nfile = \"t\"\npermissions = [\"all\"]\n";
    let conf = file(tmp.path(), "ferry.toml", text, 0o644);
    let (code, err) = run(&["--config", conf.to_str().unwrap()]);
    assert_eq!(code, 3, "{err}");
}

/// Every error in a configuration file names the file, the line and the key and what is wrong
/// with it, as no command-line flag, and exits 3, as any file the server cannot use at start.
#[test]
fn configuration_file_errors_name_the_file_line_and_key_and_exit_3() {
    let tmp = tempfile::tempdir().unwrap();
    for (setting, wants) in [
        ("bogus-key = 1", &["unknown key `bogus-key`"][..]),
        (
            "max-connections = -1",
            &[
                "max-connections: expected a whole number, not a negative one",
                "got \"-1\"",
            ],
        ),
        (
            "max-connections = 0",
            &["max-connections: 0 is not in 1..="],
        ),
        (
            "grace = \"-1s\"",
            &["grace: \"-1s\" is not a valid duration"],
        ),
        (
            "stall-timeout = \"0s\"",
            &["stall-timeout: \"0s\" is not a valid timeout: it must be longer than zero"],
        ),
        (
            "overwrite = \"sometimes\"",
            &["overwrite: expected one of refuse, rename, replace, got \"sometimes\""],
        ),
        (
            "max-handshakes = \"many\"",
            &["max-handshakes: expected a whole number (0, 1, 2, ...), got \"many\""],
        ),
        ("no-seed = 1", &["no-seed: expected true or false, got 1"]),
        ("config = \"other.toml\"", &["`config` cannot be set"]),
    ] {
        let text = format!("# a comment\n{setting}\n");
        let conf = file(tmp.path(), "ferry.toml", &text, 0o600);
        let (code, err) = run(&["--config", conf.to_str().unwrap()]);
        assert_eq!(code, 3, "{setting}: {err}");
        let at = format!("ferry-server: {}, line 2: ", conf.display());
        assert!(err.starts_with(&at), "{setting}: {err}");
        for want in wants {
            assert!(err.contains(want), "{setting}: {want:?} in {err}");
        }
        assert!(!err.contains("unexpected argument"), "{setting}: {err}");
    }
    // TOML the parser refuses, and options of the file that need one another.
    for (text, want) in [
        ("max-connections = \n", "TOML parse error at line 1"),
        (
            "[[token]]\nname = \"a\"\npermissions = [\"all\"]\nfiel = \"t\"\n",
            "unknown field `fiel`",
        ),
        (
            "state-dir = \"tls\"\n",
            "required arguments were not provided: --tls-self-signed",
        ),
    ] {
        let conf = file(tmp.path(), "ferry.toml", text, 0o600);
        let (code, err) = run(&["--config", conf.to_str().unwrap()]);
        assert_eq!(code, 3, "{text}: {err}");
        assert!(
            err.starts_with(&format!("ferry-server: {}: ", conf.display())),
            "{err}"
        );
        assert!(err.contains(want), "{want:?} in {err}");
    }
    // A bad [[token]] table is named by its line.
    let text = "dir = \"x\"\n\n[[token]]\nname = \"a\"\npermissions = [\"al\"]\n\
                sha256 = \"sha256:{}\"\n";
    let conf = file(
        tmp.path(),
        "ferry.toml",
        &text.replace("{}", &"0".repeat(64)),
        0o600,
    );
    let (code, err) = run(&["--config", conf.to_str().unwrap()]);
    assert_eq!(code, 3, "{err}");
    assert!(
        err.contains(", line 3: [[token]] \"a\": unknown permission"),
        "{err}"
    );
}

#[test]
fn the_hook_gets_the_stored_file_in_its_environment_and_cannot_change_the_result() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("hook.out");
    let script = format!(
        "#!/bin/sh\nenv | grep '^FERRY_' | sort > '{}.tmp'\nmv '{0}.tmp' '{0}'\nexit 7\n",
        out.display()
    );
    let hook = file(tmp.path(), "hook.sh", &script, 0o755);
    let dir = tmp.path().join("store");
    let mut srv = Bin::start(&[
        "--dir",
        dir.to_str().unwrap(),
        "--on-stored",
        hook.to_str().unwrap(),
        "--hook-timeout",
        "5s",
    ]);
    // A name that a shell would run if it were ever interpolated.
    let name = "a b;$(touch pwned).txt";
    let mut c = client(srv.addr, None);
    assert_eq!(upload(&mut c, name, b"hello").code, Code::Stored);
    wait_for("the hook to run", || out.exists());
    let env = std::fs::read_to_string(&out).unwrap();
    let root = dir.canonicalize().unwrap();
    let mut h = ferry_proto::Hasher::new();
    h.update(b"hello");
    let digest = h.finalize().to_hex();
    for line in [
        format!("FERRY_PATH={}/{name}", root.display()),
        format!("FERRY_NAME={name}"),
        "FERRY_SIZE=5".to_owned(),
        format!("FERRY_DIGEST={digest}"),
        "FERRY_USER=".to_owned(),
    ] {
        assert!(env.lines().any(|l| l == line), "{line:?} in {env}");
    }
    assert!(env.contains("FERRY_CLIENT=127.0.0.1:"), "{env}");
    // Its failure is logged; the file stays stored.
    srv.wait_line("failed (exit status: 7)");
    assert_eq!(std::fs::read(root.join(name)).unwrap(), b"hello");
    assert!(!Path::new("pwned").exists() && !root.join("pwned").exists());
    srv.stop();
}

/// QA M8b: an `--on-stored` program that is missing, not a file or not executable stops the
/// server at start (exit 3, before it listens), naming the option and the path, whether it
/// comes from the command line or the configuration file; not one warning per stored file.
#[test]
fn an_on_stored_program_that_cannot_run_stops_the_start() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let plain = file(tmp.path(), "not-executable.sh", "#!/bin/sh\n", 0o644);
    for (program, why) in [
        ("/nonexistent/hook".to_owned(), "No such file or directory"),
        (tmp.path().display().to_string(), "not a regular file"),
        (
            plain.display().to_string(),
            "the server's user may not run it",
        ),
        ("no-such-ferry-hook".to_owned(), "no program of that name"),
    ] {
        let (code, err) = run(&[
            "--listen",
            "127.0.0.1:0",
            "--dir",
            store.to_str().unwrap(),
            "--on-stored",
            &program,
        ]);
        assert_eq!(code, 3, "{program}: {err}");
        assert!(
            err.contains(&format!("--on-stored {program}: {why}")),
            "{err}"
        );
        assert!(!err.contains("listening on"), "{err}");
    }
    let text = format!(
        "dir = \"{}\"\non-stored = \"/nonexistent/hook\"\n",
        store.display()
    );
    let conf = file(tmp.path(), "ferry.toml", &text, 0o600);
    let (code, err) = run(&[
        "--listen",
        "127.0.0.1:0",
        "--config",
        conf.to_str().unwrap(),
    ]);
    assert_eq!(code, 3, "{err}");
    assert!(
        err.contains("--on-stored /nonexistent/hook: No such file or directory"),
        "{err}"
    );
}

/// `GET /metrics` over a plain socket: the body.
fn scrape(addr: std::net::SocketAddr) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    text.split_once("\r\n\r\n").unwrap().1.to_owned()
}

#[test]
fn metrics_are_served_over_http_and_long_uploads_log_their_progress() {
    use ferry_proto::{Event, Hasher, Step};
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let mut srv = Bin::start(&[
        "--dir",
        dir.to_str().unwrap(),
        "--metrics-listen",
        "127.0.0.1:0",
        "--progress-interval",
        "200ms",
        "--token-file",
        file(tmp.path(), "t", "admin-token-0123456789\n", 0o600)
            .to_str()
            .unwrap(),
    ]);
    let metrics = metrics_addr(&mut srv);
    // A slow upload: three pieces 300 ms apart.
    let mut c = client(srv.addr, Some(ADMIN));
    let id = c.conn_mut().offer(info("slow.bin", 3000)).unwrap();
    match c.next_step().unwrap() {
        Step::Event(Event::Accepted { .. }) => {}
        other => panic!("{other:?}"),
    }
    c.conn_mut().begin(id, Hasher::new()).unwrap();
    for _ in 0..3 {
        c.send_body(&[7; 1000]).unwrap();
        c.flush().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
    c.conn_mut().end().unwrap();
    c.flush().unwrap();
    match c.next_step().unwrap() {
        Step::Event(Event::Result { code, .. }) => assert_eq!(code, Code::Stored),
        other => panic!("{other:?}"),
    }
    let progress = srv.wait_line("slow.bin: ");
    assert!(progress.contains("so far"), "{progress}");
    // Fetched back, and listed; the upload after them is answered once both are done.
    assert_eq!(download(&mut c, "slow.bin").unwrap().0, vec![7; 3000]);
    c.conn_mut().list(None, false).unwrap();
    c.flush().unwrap();
    while !matches!(c.next_step().unwrap(), Step::Event(Event::Listed { .. })) {}
    assert_eq!(upload(&mut c, "slow.bin", b"x").code, Code::Exists);
    // A wrong token.
    let s = std::net::TcpStream::connect(srv.addr).unwrap();
    let mut bad =
        ferry_proto::Driver::new(s, ferry_proto::Connection::client(Some(b"nope")).unwrap());
    bad.flush().unwrap();
    let _ = bad.next_step();
    srv.wait_line("authentication failed");

    let text = scrape(metrics);
    assert!(text.contains("\nferry_connections_open "), "{text}");
    for want in [
        "ferry_connections_total 2",
        "ferry_received_bytes_total 3000",
        "ferry_files_stored_total 1",
        "ferry_files_downloaded_total 1",
        "ferry_listings_total 1",
        "ferry_auth_failures_total 1",
        "ferry_files_refused_total{reason=\"exists\"} 1",
        "ferry_upload_duration_seconds_count 1",
        "# TYPE ferry_upload_duration_seconds histogram",
    ] {
        assert!(text.lines().any(|l| l == want), "{want:?} in {text}");
    }
    drop(c);
    srv.stop();
}

/// The metrics address a server logs (`metrics at http://ADDR/metrics`).
fn metrics_addr(srv: &mut Bin) -> std::net::SocketAddr {
    let line = srv.wait_line("metrics at http://");
    line.split_once("http://")
        .unwrap()
        .1
        .trim_end_matches("/metrics")
        .parse()
        .unwrap()
}

/// A field of `/proc/PID/status` (`Threads`, ...).
fn proc_status(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn idle_connections_to_the_metrics_port_take_neither_threads_nor_the_file_service() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let mut srv = Bin::start(&[
        "--dir",
        dir.to_str().unwrap(),
        "--metrics-listen",
        "127.0.0.1:0",
    ]);
    let metrics = metrics_addr(&mut srv);
    let pid = srv.child.id();
    let threads_before = proc_status(pid, "Threads");
    // 500 connections that never send a byte.
    let idle: Vec<std::net::TcpStream> = (0..500)
        .map(|_| std::net::TcpStream::connect(metrics).unwrap())
        .collect();
    // The file service and the page are served all the same...
    let mut c = client(srv.addr, None);
    assert_eq!(upload(&mut c, "a.txt", b"a").code, Code::Stored);
    assert!(scrape(metrics).contains("ferry_files_stored_total 1"));
    // ... by a server that made no thread and holds few descriptors for them.
    let threads = proc_status(pid, "Threads");
    assert!(
        threads <= threads_before + 4,
        "{threads} threads, {threads_before} before"
    );
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count();
    assert!(fds < 100, "{fds} descriptors open");
    // The last idle connection is closed after its deadline (2 s).
    let mut last = idle.last().unwrap();
    last.set_read_timeout(Some(PATIENCE)).unwrap();
    let started = std::time::Instant::now();
    assert_eq!(std::io::Read::read(&mut last, &mut [0; 1]).unwrap(), 0);
    assert!(started.elapsed() < std::time::Duration::from_secs(4));
    drop(idle);
    drop(c);
    srv.stop();
}

/// examples/ferry-server.toml is a working configuration, as shipped: with its paths pointed
/// at a temp folder (and the listening address overridden on the command line, which wins),
/// the server starts with TLS and the example's two credentials, with their permissions and
/// folder, reading the teacher's token beside the configuration file, or, as under
/// examples/ferry-server.service's `LoadCredential=`, from `$CREDENTIALS_DIRECTORY`.
#[test]
fn the_example_configuration_starts_a_server_with_its_credentials() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let example = std::fs::read_to_string(examples.join("ferry-server.toml")).unwrap();
    let unit = std::fs::read_to_string(examples.join("ferry-server.service")).unwrap();
    // The unit hands the service the token file the configuration names.
    let credential = unit
        .lines()
        .find_map(|l| l.strip_prefix("LoadCredential="))
        .expect("the unit loads the teacher's token as a credential");
    assert_eq!(credential, "teacher.token:/etc/ferry/teacher.token");
    assert!(
        example.contains("\nfile = \"teacher.token\"\n"),
        "{example}"
    );

    let tmp = tempfile::tempdir().unwrap();
    let conf = file(tmp.path(), "ferry-server.toml", &example, 0o644);
    let creds = tmp.path().join("credentials");
    std::fs::create_dir(&creds).unwrap();
    let token = "teacher-token-0123456789\n";
    for (token_dir, env) in [
        (tmp.path(), None),
        (creds.as_path(), Some(creds.to_str().unwrap())),
    ] {
        let token = file(token_dir, "teacher.token", token, 0o600);
        let (dir, tls) = (tmp.path().join("inbox"), tmp.path().join("tls"));
        let args = [
            std::ffi::OsStr::new("--config"),
            conf.as_os_str(),
            std::ffi::OsStr::new("--dir"),
            dir.as_os_str(),
            std::ffi::OsStr::new("--state-dir"),
            tls.as_os_str(),
        ];
        let env: Vec<(&str, &str)> = env
            .map(|d| ("CREDENTIALS_DIRECTORY", d))
            .into_iter()
            .collect();
        let mut srv = Bin::start_with_env(&args, &env);
        srv.wait_line("TLS 1.3 required");
        let teacher = srv.wait_line("token \"teacher\"");
        assert!(
            teacher.contains("upload") && teacher.contains("list"),
            "{teacher}"
        );
        let students = srv.wait_line("token \"students\"");
        assert!(students.contains("lab1"), "{students}");
        srv.stop();
        std::fs::remove_file(token).unwrap();
    }
    // With $CREDENTIALS_DIRECTORY set, a token file beside the configuration is not read, and
    // the error says where relative files are looked for.
    file(tmp.path(), "teacher.token", token, 0o600);
    let out = std::process::Command::new(BIN)
        .args(["--listen", "127.0.0.1:0", "--config"])
        .arg(&conf)
        .arg("--dir")
        .arg(tmp.path().join("inbox"))
        .arg("--state-dir")
        .arg(tmp.path().join("tls"))
        .env("CREDENTIALS_DIRECTORY", &creds)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(
        err.contains("[[token]] \"teacher\"") && err.contains("LoadCredential="),
        "{err}"
    );
}
