//! The names policy (issue 12, item 2; PROTOCOL.md §5): a POSIX server stores every name
//! POSIX can, except unsafe ones; started with `--portable-names` (`Config::portable_names`)
//! it also refuses, with `BadName` and the rule broken, what Windows cannot store.

mod common;

use common::*;
use ferry_proto::Code;
use ferry_server::Config;

/// Names Windows cannot store, with words of the rule each breaks.
const WINDOWS_ONLY: [(&str, &str); 5] = [
    ("src/aux.c", "reserved device name"),
    ("x:y", "cannot be stored on Windows"),
    ("what?", "cannot be stored on Windows"),
    ("trailing.", "ends with a dot or a space"),
    (
        "Screenshot 2024-01-01 10:30:00.png",
        "cannot be stored on Windows",
    ),
];

#[test]
fn portable_names_refuses_what_windows_cannot_store_and_says_which_rule() {
    let srv = start(Config {
        portable_names: true,
        ..config()
    });
    let mut d = connect(srv.addr());
    for (name, rule) in WINDOWS_ONLY {
        let o = upload(&mut d, name, b"x");
        assert_eq!(o.code, Code::BadName, "{name}: {o:?}");
        assert!(o.detail.contains(rule), "{name}: {}", o.detail);
        assert!(o.detail.contains("--portable-names"), "{}", o.detail);
        assert_eq!(srv.read(name), None);
    }
    let o = offer_folder(&mut d, "nul", None, None);
    assert_eq!(o.code, Code::BadName, "a folder too: {o:?}");
    assert!(!srv.dir.join("nul").exists());
    // Portable names are stored as ever.
    assert_eq!(upload(&mut d, "src/main.c", b"int").code, Code::Stored);
    assert_eq!(srv.listing(), ["src/main.c"]);
}

#[test]
fn without_portable_names_every_posix_name_is_stored_as_it_is() {
    let srv = start(config());
    let mut d = connect(srv.addr());
    for (name, _) in WINDOWS_ONLY {
        let o = upload(&mut d, name, name.as_bytes());
        assert_eq!((o.code, o.detail.as_str()), (Code::Stored, name), "{o:?}");
        assert_eq!(srv.read(name).as_deref(), Some(name.as_bytes()));
    }
    assert_eq!(offer_folder(&mut d, "nul", None, None).code, Code::Stored);
    assert!(srv.dir.join("nul").is_dir());
}

#[test]
fn help_states_the_names_policy() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ferry-server"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    assert!(help.contains("--portable-names"), "{help}");
    assert!(help.contains("aux.c"), "{help}");
}
