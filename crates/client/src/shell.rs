//! Names written for a POSIX shell: `ferry ls` prints each name so that, pasted as an argument
//! of `ferry get`, the shell hands `get` exactly that name.

use std::borrow::Cow;

use ferry_proto::Name;

/// `name` as one POSIX shell word (sh, bash, zsh) that stands for exactly it: as it is when
/// none of its characters means anything to a shell (ASCII letters and digits, `%+,-./:@_`,
/// and any character beyond ASCII but spaces); otherwise between single quotes, inside which
/// a shell takes every character as it is, each `'` written `'\''` (close, a quoted quote,
/// open again). A name holds no control character, bidirectional control or hiding format
/// character (PROTOCOL.md §5.1), so no other form (`$'...'`) is needed, and the word prints
/// safely on a terminal (the joiners ZWNJ and ZWJ it may hold are parts of its letters).
#[must_use]
pub(crate) fn quote(name: &Name) -> Cow<'_, str> {
    let plain = |c: char| {
        c.is_ascii_alphanumeric() || "%+,-./:@_".contains(c) || !(c.is_ascii() || c.is_whitespace())
    };
    let name = name.as_str();
    if name.chars().all(plain) {
        Cow::Borrowed(name)
    } else {
        Cow::Owned(format!("'{}'", name.replace('\'', r"'\''")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a POSIX shell makes of `word` (run by `sh`), as bytes.
    fn through_sh(word: &str) -> Vec<u8> {
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("printf %s {word}"))
            .output()
            .expect("sh");
        assert!(out.status.success(), "{word}: {out:?}");
        out.stdout
    }

    /// The rule of crates/client/README.md "Listing": plain names as they are, others in
    /// single quotes; either way `sh` gives back exactly the name.
    #[test]
    fn the_shell_gives_back_exactly_the_name() {
        let cases = [
            ("photos/2024/cat.jpg", "photos/2024/cat.jpg"),
            ("a-b_c.d+e,f:g@h%i", "a-b_c.d+e,f:g@h%i"),
            ("日本/é🦀.txt", "日本/é🦀.txt"),
            ("-starts-with-a-dash", "-starts-with-a-dash"),
            ("bs/back\\slash.txt", "'bs/back\\slash.txt'"),
            ("odd/trailing space ", "'odd/trailing space '"),
            ("it's", r"'it'\''s'"),
            ("''", r"''\'''\'''"),
        ];
        for (raw, shown) in cases {
            let name = Name::parse(raw).unwrap();
            assert_eq!(quote(&name), shown, "{raw}");
        }
        let awkward = [
            " leading",
            "\"double\"",
            "$HOME",
            "${x}",
            "`id`",
            "$(id)",
            "*",
            "?",
            "[a]",
            "~tilde",
            "#hash",
            "a{b,c}",
            "x;y&z|w",
            "<in>",
            "!bang",
            "a=b",
            "^caret",
            "no\u{a0}break",
            "wide\u{3000}space",
            "mixed '\"\\ $x",
            "\\",
            "a\\'b",
        ];
        for raw in cases.iter().map(|c| c.0).chain(awkward) {
            let name = Name::parse(raw).unwrap();
            assert_eq!(through_sh(&quote(&name)), raw.as_bytes(), "{raw}");
        }
    }
}
