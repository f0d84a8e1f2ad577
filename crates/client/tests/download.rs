//! Downloads against the in-process ferry server.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::{data, opts, write, TestServer};
use ferry_client::download::{self, Dest};
use ferry_client::{Options, Outcome, Status, Target};
use ferry_proto::{Code, Digest, EntryKind, Name};
use ferry_server::{Overwrite, Permissions};

fn get(server: &TestServer, names: &[&str], dest: &Dest, opts: &Options) -> Outcome {
    let names = names.iter().map(|n| Name::parse(n).unwrap()).collect();
    download::get(&server.target(), names, dest, opts, &mut ())
}

#[test]
fn files_land_under_their_relative_names() {
    let server = TestServer::start(Overwrite::Refuse);
    let big = data(2_500_000, 7);
    write(&server.path("photos/2024/cat.jpg"), &big);
    write(&server.path("a.txt"), b"hello");
    let out = tempfile::tempdir().unwrap();
    let dest = Dest::Dir(out.path().join("downloads"));

    let outcome = get(&server, &["photos/2024/cat.jpg", "a.txt"], &dest, &opts());

    assert_eq!(outcome.exit_code(), 0, "{:?}", outcome.error);
    let cat = &outcome.files[0];
    assert_eq!(cat.status, Status::Code(Code::Stored));
    assert_eq!(cat.digest, Some(Digest::of(&big)));
    assert_eq!(cat.bytes, big.len() as u64);
    assert_eq!(
        common::tree(&out.path().join("downloads")),
        ["a.txt", "photos/2024/cat.jpg"],
        "no partial or temp file left"
    );
    assert!(fs::read(out.path().join("downloads/photos/2024/cat.jpg")).unwrap() == big);
}

#[test]
fn a_missing_file_is_a_refusal() {
    let server = TestServer::start(Overwrite::Refuse);
    write(&server.path("here.txt"), b"here");
    let out = tempfile::tempdir().unwrap();
    let dest = Dest::Dir(out.path().to_owned());

    let none = get(&server, &["nope.txt"], &dest, &opts());
    assert_eq!(none.exit_code(), 3);
    assert_eq!(none.files[0].status, Status::Code(Code::NotFound));
    assert!(none.files[0].refused);

    let some = get(&server, &["nope.txt", "here.txt"], &dest, &opts());
    assert_eq!(some.exit_code(), 1);
    assert_eq!(common::tree(out.path()), ["here.txt"]);
}

#[test]
fn local_files_are_kept_unless_forced() {
    let server = TestServer::start(Overwrite::Refuse);
    write(&server.path("f.txt"), b"server");
    let out = tempfile::tempdir().unwrap();
    write(&out.path().join("f.txt"), b"mine");
    let dest = Dest::Dir(out.path().to_owned());

    let kept = get(&server, &["f.txt"], &dest, &opts());
    assert_eq!(kept.exit_code(), 1);
    assert_eq!(kept.files[0].status, Status::Code(Code::Exists));
    assert!(kept.files[0].detail.contains("--force"));
    assert_eq!(fs::read(out.path().join("f.txt")).unwrap(), b"mine");

    let force = Options {
        force: true,
        ..opts()
    };
    let replaced = get(&server, &["f.txt"], &dest, &force);
    assert_eq!(replaced.exit_code(), 0, "{:?}", replaced.error);
    assert_eq!(fs::read(out.path().join("f.txt")).unwrap(), b"server");
}

#[test]
fn an_upload_comes_back_identical() {
    let server = TestServer::start(Overwrite::Refuse);
    let local = tempfile::tempdir().unwrap();
    let content = data(1_234_567, 3);
    let path = local.path().join("round.bin");
    write(&path, &content);
    assert_eq!(common::send(&server.target(), &[&path]).exit_code(), 0);

    let back = local.path().join("back");
    let outcome = get(&server, &["round.bin"], &Dest::Dir(back.clone()), &opts());

    assert_eq!(outcome.exit_code(), 0, "{:?}", outcome.error);
    let got: PathBuf = back.join("round.bin");
    assert!(fs::read(got).unwrap() == content);
}

#[test]
fn many_small_files_are_asked_for_beyond_one_window() {
    let server = TestServer::start(Overwrite::Refuse);
    let names: Vec<String> = (0..150).map(|i| format!("many/f{i:03}")).collect();
    for (i, n) in names.iter().enumerate() {
        write(&server.path(n), &data(i * 13, i as u32));
    }
    let out = tempfile::tempdir().unwrap();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();

    let outcome = get(&server, &refs, &Dest::Dir(out.path().to_owned()), &opts());

    assert_eq!(outcome.exit_code(), 0, "{:?}", outcome.error);
    assert_eq!(outcome.files.len(), 150);
    assert_eq!(common::tree(out.path()), names);
    for (i, n) in names.iter().enumerate() {
        assert_eq!(
            fs::read(out.path().join(n)).unwrap(),
            data(i * 13, i as u32)
        );
    }
}

/// This process's umask, as Linux tells it.
fn umask() -> u32 {
    let status = fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Umask:"))
        .map(|v| u32::from_str_radix(v.trim(), 8).unwrap())
        .unwrap()
}

/// The permission bits of `path`.
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

#[test]
fn downloads_keep_the_servers_mode_less_the_umask() {
    use std::os::unix::fs::PermissionsExt;
    let umask = umask();
    let server = TestServer::start(Overwrite::Refuse);
    let cases = [("run.sh", 0o755), ("secret", 0o600), ("shared", 0o664)];
    for (name, mode) in cases {
        write(&server.path(name), name.as_bytes());
        fs::set_permissions(server.path(name), fs::Permissions::from_mode(mode)).unwrap();
    }
    let out = tempfile::tempdir().unwrap();
    let dest = Dest::Dir(out.path().to_owned());
    let names: Vec<&str> = cases.iter().map(|c| c.0).collect();
    let outcome = get(&server, &names, &dest, &opts());
    assert_eq!(outcome.exit_code(), 0, "{:?}", outcome.error);
    for (name, offered) in cases {
        let got = mode(&out.path().join(name));
        assert_eq!(got, offered & !umask, "{name}: {got:o}");
    }
}

/// QA P2: a folder the server holds read-only (mode 555) lands with `rwx` for its owner, so
/// that a later run adds the server's new files to it; the rest of its mode is the server's.
#[test]
fn a_read_only_folder_lands_writable_for_its_owner() {
    use std::os::unix::fs::PermissionsExt;
    let server = TestServer::start(Overwrite::Refuse);
    fs::create_dir(server.path("ro")).unwrap();
    write(&server.path("ro/one.txt"), b"1");
    fs::set_permissions(server.path("ro"), fs::Permissions::from_mode(0o555)).unwrap();
    let out = tempfile::tempdir().unwrap();
    let dest = Dest::Dir(out.path().to_owned());
    assert_eq!(get(&server, &["ro"], &dest, &opts()).exit_code(), 0);
    assert_eq!(mode(&out.path().join("ro")), 0o755 & !umask());
    fs::set_permissions(server.path("ro"), fs::Permissions::from_mode(0o755)).unwrap();
    write(&server.path("ro/two.txt"), b"2");
    fs::set_permissions(server.path("ro"), fs::Permissions::from_mode(0o555)).unwrap();
    let again = get(&server, &["ro"], &dest, &opts());
    assert_eq!(again.exit_code(), 0, "{again:?}");
    assert_eq!(fs::read(out.path().join("ro/two.txt")).unwrap(), b"2");
}

/// A hard link or a symbolic link planted at the partial's name (by someone who can write in
/// the destination folder) leads to a file elsewhere: that file is neither read (offered as
/// our prefix), truncated nor written, and the download lands whole.
#[test]
fn a_link_planted_at_the_partial_is_never_read_or_written_through() {
    let server = TestServer::start(Overwrite::Refuse);
    let content = data(300_000, 3);
    write(&server.path("a.txt"), &content);
    for kind in ["hard link", "symlink"] {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tmp.path().join("outside.txt");
        // A prefix of the real file, so that reading it would look like a resume.
        write(&outside, &content[..1000]);
        let dir = tmp.path().join("out");
        fs::create_dir(&dir).unwrap();
        let partial = download::partial_path(&dir.join("a.txt"));
        match kind {
            "hard link" => fs::hard_link(&outside, &partial).unwrap(),
            _ => std::os::unix::fs::symlink(&outside, &partial).unwrap(),
        }

        let outcome = get(&server, &["a.txt"], &Dest::Dir(dir.clone()), &opts());

        assert_eq!(outcome.exit_code(), 0, "{kind}: {:?}", outcome);
        assert_eq!(outcome.files[0].offset, 0, "{kind}: nothing was resumed");
        assert_eq!(fs::read(&outside).unwrap(), &content[..1000], "{kind}");
        assert_eq!(fs::read(dir.join("a.txt")).unwrap(), content, "{kind}");
        assert_eq!(common::tree(&dir), ["a.txt"], "{kind}: no partial left");
    }
}

/// Names of every length a server may hold (a component of up to 255 bytes, PROTOCOL.md
/// §5.1) download: the partial beside each (`.NAME.ferry-partial`, 15 bytes longer) would
/// pass the 255 bytes a file name may have from 241 bytes on, so those take a short form.
#[test]
fn names_up_to_255_bytes_download() {
    let server = TestServer::start(Overwrite::Refuse);
    let mut names: Vec<String> = [239, 240, 241, 254, 255]
        .iter()
        .map(|&n| format!("ln/{}", "n".repeat(n)))
        .collect();
    // 254 bytes of two-byte characters, 255 of three- and four-byte ones mixed.
    names.push(format!("ln/{}", "é".repeat(127)));
    names.push(format!("ln/{}{}", "日".repeat(81), "🦀".repeat(3)));
    for (i, n) in names.iter().enumerate() {
        write(&server.path(n), &data(1000 + i, i as u32));
    }
    let out = tempfile::tempdir().unwrap();

    let outcome = get(&server, &["ln"], &Dest::Dir(out.path().to_owned()), &opts());

    assert_eq!(outcome.exit_code(), 0, "{:?}", outcome.files);
    for (i, n) in names.iter().enumerate() {
        assert!(
            fs::read(out.path().join(n)).unwrap() == data(1000 + i, i as u32),
            "{n}"
        );
    }
    names.sort();
    assert_eq!(common::tree(out.path()), names, "no partial left");
}

/// A download of a 255-byte name cut off mid-way keeps its partial under the short form, and
/// the next run resumes from it (as `resume.rs` checks for short names).
#[test]
fn a_long_name_cut_off_resumes_from_its_short_partial() {
    const SIZE: usize = 4 << 20;
    const CUT: u64 = 1_500_000;
    let server = TestServer::start(Overwrite::Refuse);
    let name = format!("ln/{}", "n".repeat(255));
    let content = data(SIZE, 5);
    write(&server.path(&name), &content);
    let out = tempfile::tempdir().unwrap();
    let dest = Dest::Dir(out.path().to_owned());
    let names = || vec![Name::parse(&name).unwrap()];

    let (proxy, cut) = common::cutting_proxy(server.addr(), u64::MAX, CUT);
    let first = download::get(&Target::from(proxy), names(), &dest, &opts(), &mut ());
    cut.join().unwrap();
    assert_eq!(first.exit_code(), 4, "{:?}", first.files);
    let final_path = out.path().join(&name);
    let partial = download::partial_path(&final_path);
    let partial_name = partial.file_name().unwrap().to_str().unwrap();
    assert!(partial_name.len() <= 255, "{partial_name}");
    assert!(partial_name.ends_with(".ferry-partial"), "{partial_name}");
    let held = fs::metadata(&partial).unwrap().len();
    assert!(held > 0 && held < CUT, "partial holds {held} bytes");

    let second = download::get(&server.target(), names(), &dest, &opts(), &mut ());

    assert_eq!(second.exit_code(), 0, "{:?}", second.error);
    assert_eq!(second.files[0].offset, held, "resumed from the partial");
    assert_eq!(second.files[0].bytes, SIZE as u64 - held);
    assert!(fs::read(&final_path).unwrap() == content);
    assert_eq!(common::tree(out.path()), [name], "partial gone");
}

/// A partial is private (0600) while the download runs, whatever the umask allows, and gets
/// the offered mode less the umask only once it is published. One kept by an older ferry with
/// wider bits is narrowed when the next run takes it up, and either way it is resumed.
#[test]
fn a_partial_is_private_until_it_is_published() {
    use std::os::unix::fs::PermissionsExt;
    const SIZE: usize = 8 << 20;
    let server = TestServer::start(Overwrite::Refuse);
    let content = data(SIZE, 8);
    write(&server.path("run.sh"), &content);
    fs::set_permissions(server.path("run.sh"), fs::Permissions::from_mode(0o755)).unwrap();
    let out = tempfile::tempdir().unwrap();
    let dest = Dest::Dir(out.path().to_owned());
    let names = || vec![Name::parse("run.sh").unwrap()];
    let final_path = out.path().join("run.sh");
    let partial = download::partial_path(&final_path);
    // Cuts after this many bytes from the server: what the partial holds then.
    let cut_after = |cut: u64| {
        let (proxy, cutting) = common::cutting_proxy(server.addr(), u64::MAX, cut);
        let o = download::get(&Target::from(proxy), names(), &dest, &opts(), &mut ());
        cutting.join().unwrap();
        assert_eq!(o.exit_code(), 4, "{:?}", o.files);
        assert!(!final_path.exists(), "nothing published");
        fs::metadata(&partial).unwrap().len()
    };

    let first = cut_after(1_500_000);
    assert_eq!(mode(&partial), 0o600, "a new partial");
    fs::set_permissions(&partial, fs::Permissions::from_mode(0o755)).unwrap();
    let second = cut_after(3_000_000);
    assert!(second > first, "resumed: {first} then {second} bytes");
    assert_eq!(mode(&partial), 0o600, "an older ferry's partial, taken up");

    let last = download::get(&server.target(), names(), &dest, &opts(), &mut ());

    assert_eq!(last.exit_code(), 0, "{:?}", last.error);
    assert_eq!(
        last.files[0].offset, second,
        "resumed from the private partial"
    );
    assert!(fs::read(&final_path).unwrap() == content);
    assert_eq!(mode(&final_path), 0o755 & !umask());
    assert_eq!(common::tree(out.path()), ["run.sh"], "partial gone");
}

/// `-o -` writes files to standard output: a folder among the names is the user's to mend, a
/// usage error (exit 2, README "Exit codes"), not a refusal by the server (exit 3), and it is
/// found before any byte is written. Files still go to standard output, and a name the server
/// does not have is still its refusal.
#[test]
fn a_folder_to_standard_output_is_a_usage_error() {
    let server = TestServer::start(Overwrite::Refuse);
    write(&server.path("tree/a.txt"), b"in the tree");
    write(&server.path("one.txt"), b"one");
    write(&server.path("two.txt"), b"two");
    let addr = server.addr().to_string();

    for names in [&["tree"][..], &["one.txt", "tree"], &["tree/"]] {
        let out = common::ferry(&[&["get", &addr], names, &["-o", "-"]].concat());
        let err = common::stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{names:?}: {err}");
        assert_eq!(
            err.trim_end(),
            "ferry: tree is a folder; -o - writes only files to standard output: use -o DIR \
             to fetch a folder",
            "{names:?}"
        );
        assert!(out.stdout.is_empty(), "{names:?}: nothing written");
    }

    let files = common::ferry(&["get", &addr, "one.txt", "two.txt", "-o", "-"]);
    assert_eq!(files.status.code(), Some(0), "{}", common::stderr(&files));
    assert_eq!(files.stdout, b"onetwo");
    let missing = common::ferry(&["get", &addr, "nope.txt", "-o", "-"]);
    assert_eq!(
        missing.status.code(),
        Some(3),
        "{}",
        common::stderr(&missing)
    );
    assert!(common::stderr(&missing).contains("nope.txt"));
}

/// `ferry ls` shows each name as `get` takes it (crates/client/README.md "Listing"): pasted
/// into a POSIX shell as the argument of `ferry get`, every name printed, plain or quoted,
/// file or folder, fetches exactly that name. `--json` carries the names as they are.
#[test]
fn ls_prints_names_a_shell_hands_back_to_get() {
    let server = TestServer::start(Overwrite::Refuse);
    let names = [
        "bs/back\\slash.txt",
        "odd/trailing space ",
        "odd/ leading space",
        "q/it's.txt",
        "q/\"double\".txt",
        "q/mixed '\"\\ $x",
        "sp/$HOME",
        "sp/*",
        "sp/~tilde",
        "sp/#hash",
        "sp/a{b,c}",
        "sp/x;y&z|w`id`",
        "sp/no\u{a0}break",
        "dir with space/f",
        "plain/ok-name_1.2+x@y:z%.txt",
        "plain/日本語 é.txt",
    ];
    for n in names {
        write(&server.path(n), n.as_bytes());
    }
    let addr = server.addr().to_string();

    let ls = common::ferry(&["ls", "-r", &addr]);
    assert_eq!(ls.status.code(), Some(0), "{}", common::stderr(&ls));
    let text = String::from_utf8(ls.stdout).unwrap();
    // Mode, size, date and time take the first 44 bytes of a line, the name the rest.
    let shown: Vec<&str> = text.lines().map(|l| &l[44..]).collect();
    assert!(shown.contains(&"'bs/back\\slash.txt'"), "{text}");
    assert!(shown.contains(&"'odd/trailing space '"), "{text}");
    assert!(shown.contains(&"'q/it'\\''s.txt'"), "{text}");
    assert!(shown.contains(&"plain/ok-name_1.2+x@y:z%.txt"), "{text}");
    assert!(shown.contains(&"'dir with space'/"), "{text}");
    assert_eq!(
        shown.len(),
        names.len() + 6,
        "every file and folder: {text}"
    );
    for word in shown {
        let out = tempfile::tempdir().unwrap();
        let script = format!("exec \"$0\" get \"$1\" {word} -o \"$2\"");
        let get = std::process::Command::new("sh")
            .args(["-c", &script, env!("CARGO_BIN_EXE_ferry"), &addr])
            .arg(out.path())
            .output()
            .unwrap();
        assert_eq!(
            get.status.code(),
            Some(0),
            "{word}: {}",
            common::stderr(&get)
        );
        let got = common::tree(out.path());
        assert!(!got.is_empty(), "{word}: nothing fetched");
        for name in got {
            assert!(names.contains(&name.as_str()), "{word} fetched {name}");
            assert_eq!(fs::read(out.path().join(&name)).unwrap(), name.as_bytes());
        }
    }

    let json = common::ferry(&["ls", "-r", "--json", &addr]);
    let mut raw: Vec<String> = common::json_lines(&json.stdout)
        .iter()
        .filter(|l| l["kind"] == "file")
        .map(|l| l["name"].as_str().unwrap().to_owned())
        .collect();
    raw.sort();
    let mut want = names.map(str::to_owned).to_vec();
    want.sort();
    assert_eq!(raw, want);
}

/// A server whose clients without a token may do `what` and nothing else.
fn server_allowing(what: Permissions) -> TestServer {
    TestServer::with(|c| c.anonymous = Some(what))
}

/// QA H1: a client that may download but not list gets the files it names (asked for as
/// files, as on a protocol-1 server), its file kept unchanged when it holds it already; a
/// folder, which needs its listing, is refused with words that say the listing is what the
/// server denies. One that may upload only is told it may not download.
#[test]
fn a_client_that_may_download_but_not_list_gets_files_by_name() {
    let download = Permissions {
        download: true,
        ..Permissions::NONE
    };
    let server = server_allowing(download);
    write(&server.path("pub.txt"), b"public");
    write(&server.path("photos/cat.jpg"), b"cat");
    let out = tempfile::tempdir().unwrap();

    let one = get(
        &server,
        &["pub.txt"],
        &Dest::Path(out.path().join("got.txt")),
        &opts(),
    );
    assert_eq!(one.exit_code(), 0, "{:?} {:?}", one.error, one.files);
    assert_eq!(fs::read(out.path().join("got.txt")).unwrap(), b"public");
    let again = get(
        &server,
        &["pub.txt"],
        &Dest::Path(out.path().join("got.txt")),
        &opts(),
    );
    assert_eq!(again.files[0].status, Status::Code(Code::Unchanged));

    let folder = get(&server, &["photos"], &Dest::Dir(out.path().into()), &opts());
    assert_eq!(folder.exit_code(), 3);
    let detail = &folder.files[0].detail;
    assert!(
        detail.contains("listing") && detail.contains("may not list"),
        "{detail}"
    );
    assert_eq!(common::tree(out.path()), ["got.txt"]);

    let inbox = server_allowing(Permissions::UPLOAD);
    write(&inbox.path("pub.txt"), b"public");
    let denied = get(&inbox, &["pub.txt"], &Dest::Dir(out.path().into()), &opts());
    assert_eq!(denied.exit_code(), 3);
    let detail = &denied.files[0].detail;
    assert!(
        detail.contains("may not download") && !detail.contains("list"),
        "{detail}"
    );
}

/// QA M3: a get that fetches nothing makes nothing: a name mistyped with `-o want.txt`
/// leaves no folder there, and the name put right then lands as the file `want.txt`.
#[test]
fn a_get_that_fetches_nothing_makes_nothing_at_the_o_path() {
    let server = TestServer::start(Overwrite::Refuse);
    write(&server.path("f.txt"), b"hi");
    let out = tempfile::tempdir().unwrap();
    let want = Dest::Path(out.path().join("want.txt"));
    let deep = Dest::Dir(out.path().join("new/dir"));

    for dest in [&want, &deep] {
        let typo = get(&server, &["f.tx"], dest, &opts());
        assert_eq!(typo.exit_code(), 3);
        assert_eq!(fs::read_dir(out.path()).unwrap().count(), 0, "{dest:?}");
    }

    let right = get(&server, &["f.txt"], &want, &opts());
    assert_eq!(right.exit_code(), 0, "{:?}", right.error);
    assert_eq!(fs::read(out.path().join("want.txt")).unwrap(), b"hi");
}

/// QA M4: a symbolic link (even one to a folder) or a file where a folder belongs is not a
/// folder: nothing is written through it or under it, the folder is reported once with how
/// many entries it stops, and the rest of the download goes on.
#[test]
#[cfg(unix)]
fn a_link_or_a_file_where_a_folder_belongs_is_never_written_through() {
    let server = TestServer::start(Overwrite::Refuse);
    write(&server.path("photos/cat.jpg"), b"cat");
    write(&server.path("photos/sub/x"), b"x");
    write(&server.path("docs/sub/y"), b"y");
    write(&server.path("docs/z"), b"z");
    let out = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let dest = Dest::Dir(out.path().join("dl"));
    fs::create_dir_all(out.path().join("dl/docs")).unwrap();
    std::os::unix::fs::symlink(elsewhere.path(), out.path().join("dl/photos")).unwrap();
    std::os::unix::fs::symlink(elsewhere.path(), out.path().join("dl/docs/sub")).unwrap();

    let outcome = get(&server, &["photos", "docs"], &dest, &opts());

    assert_eq!(outcome.exit_code(), 1, "{:?}", outcome.files);
    assert_eq!(fs::read_dir(elsewhere.path()).unwrap().count(), 0);
    assert_eq!(fs::read(out.path().join("dl/docs/z")).unwrap(), b"z");
    let failed: Vec<_> = outcome
        .files
        .iter()
        .filter(|f| !f.status.is_success())
        .collect();
    assert_eq!(failed.len(), 2, "one report per blocked folder: {failed:?}");
    assert_eq!(failed[0].name.as_str(), "docs/sub");
    assert!(failed[0].detail.contains("symbolic link"), "{failed:?}");
    assert!(failed[0].detail.contains("1 entry under it"), "{failed:?}");
    assert_eq!(failed[1].name.as_str(), "photos");
    assert!(
        failed[1].detail.contains("3 entries under it"),
        "{failed:?}"
    );

    // A file there: said so, not "File exists (os error 17)".
    fs::remove_file(out.path().join("dl/photos")).unwrap();
    fs::write(out.path().join("dl/photos"), b"mine").unwrap();
    let outcome = get(&server, &["photos/sub/x"], &dest, &opts());
    assert_eq!(outcome.exit_code(), 1);
    let detail = &outcome.files[0].detail;
    assert!(detail.contains("is a file, not a folder"), "{detail}");
    assert_eq!(fs::read(out.path().join("dl/photos")).unwrap(), b"mine");
}

/// QA L2: a name inside a folder also asked for, in either order, is fetched once.
#[test]
fn a_name_inside_a_folder_also_asked_for_is_fetched_once() {
    let server = TestServer::start(Overwrite::Refuse);
    write(&server.path("photos/2024/cat.jpg"), b"cat");
    for names in [
        ["photos", "photos/2024/cat.jpg"],
        ["photos/2024/cat.jpg", "photos"],
    ] {
        let out = tempfile::tempdir().unwrap();
        let outcome = get(&server, &names, &Dest::Dir(out.path().into()), &opts());
        assert_eq!(outcome.exit_code(), 0, "{names:?}: {:?}", outcome.files);
        let files = outcome.files.iter().filter(|f| f.kind == EntryKind::File);
        assert_eq!(files.count(), 1, "{names:?}: {:?}", outcome.files);
        assert_eq!(common::tree(out.path()), ["photos/2024/cat.jpg"]);
    }
}

/// QA L3: a local folder where a file lands is refused before a byte is fetched, with or
/// without --force (which cannot help, so the words do not advise it), and leaves no partial.
#[test]
fn a_local_folder_where_a_file_lands_is_refused_before_fetching() {
    let server = TestServer::start(Overwrite::Refuse);
    write(&server.path("photos/cat.jpg"), b"cat");
    let out = tempfile::tempdir().unwrap();
    fs::create_dir_all(out.path().join("photos/cat.jpg/inside")).unwrap();
    for force in [false, true] {
        let opts = Options { force, ..opts() };
        let outcome = get(&server, &["photos"], &Dest::Dir(out.path().into()), &opts);
        assert_eq!(outcome.exit_code(), 1, "{force}");
        let cat = outcome.files.iter().find(|f| f.kind == EntryKind::File);
        let cat = cat.expect("the file's report");
        assert_eq!(cat.status, Status::Code(Code::Exists));
        assert_eq!(cat.bytes, 0);
        assert!(cat.detail.contains("is a folder here"), "{}", cat.detail);
        assert!(!cat.detail.contains("use --force"), "{}", cat.detail);
        assert_eq!(
            common::tree(&out.path().join("photos")),
            Vec::<String>::new()
        );
    }
}

/// QA M5: a local file with the server's contents and another mtime (`cp` without `-p`) is
/// unchanged, by the digest the server sends with its offer (a small file's, or one it
/// stored and so holds in its digest cache), and gets the server's mtime; one of the same
/// size with other contents is kept, as before.
#[test]
fn a_local_copy_with_another_mtime_is_unchanged_by_its_digest() {
    let server = TestServer::start(Overwrite::Refuse);
    let old = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_577_836_800);
    let big = data(200_000, 9);
    let sent = tempfile::tempdir().unwrap();
    for (name, content) in [("a.txt", &b"same"[..]), ("big.bin", &big)] {
        let path = sent.path().join(name);
        write(&path, content);
        let f = fs::File::options().write(true).open(&path).unwrap();
        f.set_modified(old).unwrap();
        assert_eq!(common::send(&server.target(), &[&path]).exit_code(), 0);
    }
    let out = tempfile::tempdir().unwrap();
    write(&out.path().join("a.txt"), b"same");
    write(&out.path().join("big.bin"), &big);
    let dest = Dest::Dir(out.path().into());

    let outcome = get(&server, &["a.txt", "big.bin"], &dest, &opts());

    assert_eq!(outcome.exit_code(), 0, "{:?}", outcome.files);
    for f in &outcome.files {
        assert_eq!(f.status, Status::Code(Code::Unchanged), "{f:?}");
        assert_eq!(f.bytes, 0);
        let local = fs::metadata(f.path.as_ref().unwrap()).unwrap();
        assert_eq!(local.modified().unwrap(), old, "{f:?}");
    }

    write(&out.path().join("a.txt"), b"diff");
    let kept = get(&server, &["a.txt"], &dest, &opts());
    assert_eq!(kept.exit_code(), 1);
    assert_eq!(kept.files[0].status, Status::Code(Code::Exists));
    assert!(kept.files[0].detail.contains("--force"));
    assert_eq!(fs::read(out.path().join("a.txt")).unwrap(), b"diff");
}

/// QA M1: entries the server leaves out of a folder's listing (a symbolic link, a name the
/// protocol cannot carry) are counted as skipped: the run exits 1, as a send with skipped
/// entries does, and the summary counts them.
#[test]
#[cfg(unix)]
fn entries_the_server_leaves_out_of_a_folder_are_skipped() {
    let server = TestServer::start(Overwrite::Refuse);
    write(&server.path("share/a.txt"), b"a");
    write(&server.path("share/new\nline"), b"n");
    std::os::unix::fs::symlink("a.txt", server.path("share/link")).unwrap();
    let out = tempfile::tempdir().unwrap();

    let outcome = get(&server, &["share"], &Dest::Dir(out.path().into()), &opts());

    assert_eq!(outcome.left_out, 2);
    assert_eq!(outcome.exit_code(), 1);
    assert_eq!(outcome.summary_json(0.0)["skipped"], 2);
    assert_eq!(common::tree(out.path()), ["share/a.txt"]);
}
