//! `ferry completions SHELL` and `ferry man --out DIR`: generated from the command line's own
//! definition, so every subcommand and option is in them.

mod common;

use std::process::Command;

use common::{ferry, stderr};

#[test]
fn completion_scripts_know_every_subcommand() {
    let out = ferry(&["completions", "bash"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let bash = String::from_utf8_lossy(&out.stdout);
    for word in [
        "ferry",
        "send",
        "get",
        "completions",
        "--retries",
        "--pin",
        "--name",
    ] {
        assert!(
            bash.contains(word),
            "{word} missing from the bash completions"
        );
    }
    for shell in ["zsh", "fish"] {
        let out = ferry(&["completions", shell]);
        assert_eq!(out.status.code(), Some(0), "{shell}: {}", stderr(&out));
        let script = String::from_utf8_lossy(&out.stdout);
        assert!(
            script.contains("send") && script.contains("retries"),
            "{shell}"
        );
    }
    let out = ferry(&["completions", "tcsh"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn man_pages_render_with_name_and_synopsis() {
    let dir = tempfile::tempdir().unwrap();
    let man = dir.path().join("man1");
    let out = ferry(&["man", "--out", man.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    for page in ["ferry.1", "ferry-send.1", "ferry-get.1"] {
        let roff = std::fs::read_to_string(man.join(page)).unwrap();
        for section in [".SH NAME", ".SH SYNOPSIS", "\\-\\-timeout"] {
            assert!(roff.contains(section), "{section} missing from {page}");
        }
    }
    // Rendered as a reader sees it, where man(1) is installed.
    match Command::new("man")
        .arg("-l")
        .arg(man.join("ferry-send.1"))
        .env("MANPAGER", "cat")
        .env("MANWIDTH", "80")
        .output()
    {
        Ok(out) if out.status.success() => {
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(text.contains("NAME") && text.contains("SYNOPSIS"), "{text}");
            assert!(text.contains("ferry-send"), "{text}");
        }
        _ => println!("man(1) not available: the pages were checked as roff only"),
    }
}
