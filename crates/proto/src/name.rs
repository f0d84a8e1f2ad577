//! File names on the wire: relative paths of plain components (PROTOCOL.md §5).
//!
//! A [`Name`] can only be built by validation ([`Name::parse`]), so a value of this type is
//! safe to join onto a destination folder on a POSIX system: it has no root, no `.` or `..`
//! component, no empty component, no NUL, no control character, no bidirectional control and
//! none of the invisible format characters that only disguise a name, and it fits the length
//! caps. Everything else POSIX allows is accepted: `\`, `:`, `?`, `*`, `"`, `<`, `>`, `|` are
//! plain characters there, `aux.c` or `nul.tar.gz` plain names, and the joiners ZWNJ and ZWJ
//! that Persian, Indic scripts and emoji sequences spell with are plain characters too.
//!
//! What Windows cannot store is a separate question, answered by [`Name::portable`]: servers
//! on Windows or started with `--portable-names`, and clients downloading on Windows, ask it
//! too (PROTOCOL.md §5.2).

use std::fmt;

/// Longest name in bytes (UTF-8), whole path.
pub const MAX_NAME_LEN: usize = 4096;
/// Longest single component in bytes (UTF-8).
pub const MAX_COMPONENT_LEN: usize = 255;
/// Most components in one name.
pub const MAX_DEPTH: usize = 64;

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NameError {
    /// The name is empty.
    #[error("the name is empty")]
    Empty,
    /// The name is longer than [`MAX_NAME_LEN`] bytes.
    #[error("the name is {len} bytes long; at most {MAX_NAME_LEN} are allowed")]
    TooLong {
        /// Length in bytes.
        len: usize,
    },
    /// A component is longer than [`MAX_COMPONENT_LEN`] bytes.
    #[error("a component is {len} bytes long; at most {MAX_COMPONENT_LEN} are allowed")]
    ComponentTooLong {
        /// Length in bytes.
        len: usize,
    },
    /// More than [`MAX_DEPTH`] components.
    #[error("the name has {depth} components; at most {MAX_DEPTH} are allowed")]
    TooDeep {
        /// Number of components.
        depth: usize,
    },
    /// The name starts with `/`.
    #[error("absolute paths are not allowed")]
    Absolute,
    /// The name has an empty component (`a//b`, trailing `/`).
    #[error("the name has an empty component")]
    EmptyComponent,
    /// A component is `.` or `..`.
    #[error("`.` and `..` components are not allowed")]
    DotComponent,
    /// A seed-framing name holds a separator; seed names are single components.
    #[error("seed-framing names cannot contain `/`")]
    Separator,
    /// A character that is a separator, drive marker or wildcard on Windows
    /// ([`Name::portable`] only).
    #[error("the character {0:?} cannot be stored on Windows")]
    ReservedChar(char),
    /// A control character, a bidirectional control or an invisible format character that can
    /// disguise a name (PROTOCOL.md §5.1).
    #[error("control or formatting character U+{0:04X} is not allowed")]
    ControlChar(u32),
    /// A Windows device name such as `CON` or `nul.txt` ([`Name::portable`] only).
    #[error("{0:?} is a reserved device name on Windows")]
    DeviceName(String),
    /// A component that names a file's hidden part on some system (macOS `..namedfork`).
    #[error("{0:?} names a resource fork on macOS")]
    ForkName(String),
    /// A component ends with a dot or a space, which Windows strips silently
    /// ([`Name::portable`] only).
    #[error("a component ends with a dot or a space, which Windows cannot store")]
    TrailingDotOrSpace,
}

/// A validated relative file name: `/`-separated plain components, safe under a POSIX folder.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Name(String);

impl Name {
    /// Validates a ferry-framing name: a relative path whose components are neither empty,
    /// `.`, `..` nor `..namedfork`, without control characters, bidirectional controls or
    /// invisible format characters that hide something (ZWNJ and ZWJ are fine), within the
    /// length caps (PROTOCOL.md §5.1). Characters and names that only Windows reserves are
    /// accepted; see [`Name::portable`].
    pub fn parse(raw: &str) -> Result<Self, NameError> {
        if raw.is_empty() {
            return Err(NameError::Empty);
        }
        if raw.len() > MAX_NAME_LEN {
            return Err(NameError::TooLong { len: raw.len() });
        }
        if raw.starts_with('/') {
            return Err(NameError::Absolute);
        }
        let mut depth = 0usize;
        for component in raw.split('/') {
            depth += 1;
            check_component(component)?;
        }
        if depth > MAX_DEPTH {
            return Err(NameError::TooDeep { depth });
        }
        Ok(Self(raw.to_owned()))
    }

    /// Validates a seed-framing name: one component, no separator at all (PROTOCOL.md §2.1).
    pub fn parse_single(raw: &str) -> Result<Self, NameError> {
        if raw.contains('/') {
            return Err(if raw.starts_with('/') {
                NameError::Absolute
            } else {
                NameError::Separator
            });
        }
        Self::parse(raw)
    }

    /// Checks that Windows can store this name as it is (PROTOCOL.md §5.2): no component holds
    /// `\ : < > " | ? *`, ends with a dot or a space, or is a device name (`CON`, `aux.c`,
    /// `nul.tar.gz`, `COM1`, ...). Returns the first rule a component breaks.
    ///
    /// [`Name::parse`] does not apply these rules: on POSIX such names are ordinary. Servers on
    /// Windows or started with `--portable-names`, and clients writing on Windows, apply them.
    pub fn portable(&self) -> Result<(), NameError> {
        self.components().try_for_each(check_portable_component)
    }

    /// The name as sent on the wire.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The components, in order; none is empty, `.` or `..`.
    pub fn components(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }

    /// How many components the name has (at least 1, at most [`MAX_DEPTH`]).
    #[must_use]
    pub fn depth(&self) -> usize {
        self.components().count()
    }

    /// True when `self` lies strictly under the folder `parent` (`a/b` under `a`, not `ab`).
    #[must_use]
    pub fn is_under(&self, parent: &Name) -> bool {
        self.0
            .strip_prefix(parent.as_str())
            .is_some_and(|rest| rest.starts_with('/'))
    }

    /// The last component.
    #[must_use]
    pub fn file_name(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or(&self.0)
    }
}

impl fmt::Display for Name {
    /// Shows the name escaped, safe for a terminal or a log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        Escaped(&self.0).fmt(f)
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Name({:?})", self.0)
    }
}

/// Escapes a name received from a peer so that printing it cannot move the cursor, ring a bell
/// or forge a log line: control, formatting and non-printing characters become `\u{..}`.
#[must_use]
pub fn escape(raw: &str) -> String {
    Escaped(raw).to_string()
}

/// Shows a name the way [`escape`] returns it, without allocating (for a log line).
#[derive(Debug, Clone, Copy)]
pub struct Escaped<'a>(pub &'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0;
        while let Some((at, c)) = rest
            .char_indices()
            .find(|&(_, c)| is_forbidden_char(c) || c == '\\')
        {
            f.write_str(&rest[..at])?;
            write!(f, "{}", c.escape_default())?;
            rest = &rest[at + c.len_utf8()..];
        }
        f.write_str(rest)
    }
}

/// The rules of PROTOCOL.md §5.1, which keep a joined path under its folder and printable.
fn check_component(c: &str) -> Result<(), NameError> {
    if c.is_empty() {
        return Err(NameError::EmptyComponent);
    }
    if c == "." || c == ".." {
        return Err(NameError::DotComponent);
    }
    if c.len() > MAX_COMPONENT_LEN {
        return Err(NameError::ComponentTooLong { len: c.len() });
    }
    if let Some(ch) = c.chars().find(|ch| is_forbidden_char(*ch)) {
        return Err(NameError::ControlChar(ch as u32));
    }
    if c.eq_ignore_ascii_case("..namedfork") {
        // `file/..namedfork/rsrc` writes into the resource fork of an existing `file` on macOS:
        // like `..`, the component does not name a child of its folder.
        return Err(NameError::ForkName(c.to_owned()));
    }
    Ok(())
}

/// The Windows rules of PROTOCOL.md §5.2, for a component that already passed §5.1.
fn check_portable_component(c: &str) -> Result<(), NameError> {
    if let Some(ch) = c.chars().find(|ch| is_windows_reserved(*ch)) {
        return Err(NameError::ReservedChar(ch));
    }
    if c.ends_with('.') || c.ends_with(' ') {
        return Err(NameError::TrailingDotOrSpace);
    }
    if is_device_name(c) {
        return Err(NameError::DeviceName(c.to_owned()));
    }
    Ok(())
}

/// A separator, drive or stream marker, or wildcard on Windows.
fn is_windows_reserved(c: char) -> bool {
    matches!(c, '\\' | ':' | '<' | '>' | '"' | '|' | '?' | '*')
}

/// The characters PROTOCOL.md §5.1 refuses in a name: control characters (C0, DEL, C1), the
/// bidirectional controls, and the format characters that serve a name only to hide something.
/// The joiners U+200C and U+200D are allowed: Persian and Indic spelling and emoji need them.
fn is_forbidden_char(c: char) -> bool {
    c.is_control() || is_bidi_control(c) || is_hiding_format(c)
}

/// Unicode's Bidi_Control characters: marks, embeddings, overrides and isolates, which reorder
/// what is shown around them (`evil\u{202E}gpj.exe` shows as `evilexe.jpg`).
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// Invisible format characters that change neither the spelling nor the shape of any script in
/// a name, so that there they only make two names look alike or hide text: the zero-width
/// space, the word joiner and invisible operators, the deprecated shaping controls, the
/// byte-order mark (a zero-width no-break space, deprecated as such for U+2060) and the
/// interlinear annotation controls.
fn is_hiding_format(c: char) -> bool {
    matches!(c,
        '\u{200B}' | '\u{2060}'..='\u{2064}' | '\u{206A}'..='\u{206F}' | '\u{FEFF}'
        | '\u{FFF9}'..='\u{FFFB}')
}

/// `CON`, `PRN`, `AUX`, `NUL`, `COM0`-`COM9`, `LPT0`-`LPT9` (also with superscript digits),
/// `CONIN$`, `CONOUT$`, in any case, alone or before an extension.
fn is_device_name(component: &str) -> bool {
    let stem = component
        .split('.')
        .next()
        .unwrap_or(component)
        .trim_end_matches(' ');
    let upper = stem.to_ascii_uppercase();
    match upper.as_str() {
        "CON" | "PRN" | "AUX" | "NUL" | "CONIN$" | "CONOUT$" => true,
        _ => {
            let (Some(head), Some(tail)) = (upper.get(..3), upper.get(3..)) else {
                return false;
            };
            (head == "COM" || head == "LPT")
                && tail.chars().count() == 1
                && tail
                    .chars()
                    .all(|d| d.is_ascii_digit() || matches!(d, '¹' | '²' | '³'))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// PROTOCOL.md §5.1: every name POSIX can store and that stays under its folder.
    #[test]
    fn accepts_plain_relative_paths() {
        // Regression (found by proptest): a multi-byte character across byte 3 of a stem.
        assert!(Name::parse("AVé-x").is_ok());
        for ok in [
            "a",
            "a.txt",
            "photos/2024/img 1.jpg",
            "é/日本.txt",
            ".hidden",
            "a..b",
            "COM10",
            "console",
        ] {
            let n = Name::parse(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
            assert_eq!(n.as_str(), ok);
            assert_eq!(n.portable(), Ok(()), "{ok}");
        }
        assert_eq!(Name::parse("a/b/c").unwrap().components().count(), 3);
        assert_eq!(Name::parse("a/b/c").unwrap().depth(), 3);
        assert_eq!(Name::parse("a/b/c.txt").unwrap().file_name(), "c.txt");
    }

    /// PROTOCOL.md §5.1-§5.2: what only Windows reserves is accepted by `parse` (issue 12:
    /// `aux.c`, `x:y`, `what?`, screenshots with `:`) and refused by `portable`, by rule.
    #[test]
    fn windows_only_names_are_valid_but_not_portable() {
        let cases: &[(&str, NameError)] = &[
            ("..\\x", NameError::ReservedChar('\\')),
            ("a\\b", NameError::ReservedChar('\\')),
            ("C:x", NameError::ReservedChar(':')),
            ("x:y", NameError::ReservedChar(':')),
            ("file.txt:stream", NameError::ReservedChar(':')),
            (
                "Screenshot 2024-01-01 10:30:00.png",
                NameError::ReservedChar(':'),
            ),
            ("what?", NameError::ReservedChar('?')),
            ("x*", NameError::ReservedChar('*')),
            ("x<y", NameError::ReservedChar('<')),
            ("x>y", NameError::ReservedChar('>')),
            ("x|y", NameError::ReservedChar('|')),
            ("\"quoted\"", NameError::ReservedChar('"')),
            ("CON", NameError::DeviceName("CON".into())),
            ("src/aux.c", NameError::DeviceName("aux.c".into())),
            ("nul.tar.gz", NameError::DeviceName("nul.tar.gz".into())),
            ("dir/nul.txt", NameError::DeviceName("nul.txt".into())),
            ("lpt1", NameError::DeviceName("lpt1".into())),
            ("COM¹.log", NameError::DeviceName("COM¹.log".into())),
            ("CONIN$", NameError::DeviceName("CONIN$".into())),
            ("trailing.", NameError::TrailingDotOrSpace),
            ("trailing ", NameError::TrailingDotOrSpace),
            ("dir./x", NameError::TrailingDotOrSpace),
        ];
        for (raw, want) in cases {
            let name = Name::parse(raw).unwrap_or_else(|e| panic!("{raw:?}: {e}"));
            assert_eq!(name.as_str(), *raw);
            assert_eq!(name.portable().as_ref(), Err(want), "{raw:?}");
        }
    }

    /// PROTOCOL.md §5.1: forms that leave the folder, hide in it or garble a terminal.
    #[test]
    fn refuses_every_dangerous_form() {
        let cases: &[(&str, NameError)] = &[
            ("", NameError::Empty),
            ("/etc/passwd", NameError::Absolute),
            ("/", NameError::Absolute),
            ("../x", NameError::DotComponent),
            ("a/../../x", NameError::DotComponent),
            ("./x", NameError::DotComponent),
            ("x/..", NameError::DotComponent),
            ("a//b", NameError::EmptyComponent),
            ("a/", NameError::EmptyComponent),
            ("a\0b", NameError::ControlChar(0)),
            ("a\nb", NameError::ControlChar(10)),
            ("tab\there", NameError::ControlChar(9)),
            ("a\u{1b}[2Jb", NameError::ControlChar(0x1b)),
            ("del\u{7f}", NameError::ControlChar(0x7f)),
            ("c1\u{85}", NameError::ControlChar(0x85)),
            ("evil\u{202E}gpj.exe", NameError::ControlChar(0x202E)),
            ("zero\u{200B}width", NameError::ControlChar(0x200B)),
            ("bom\u{FEFF}x", NameError::ControlChar(0xFEFF)),
            ("lrm\u{200E}x", NameError::ControlChar(0x200E)),
            ("rlm\u{200F}x", NameError::ControlChar(0x200F)),
            ("alm\u{061C}x", NameError::ControlChar(0x061C)),
            ("iso\u{2066}x\u{2069}", NameError::ControlChar(0x2066)),
            ("word\u{2060}joiner", NameError::ControlChar(0x2060)),
            ("shape\u{206A}x", NameError::ControlChar(0x206A)),
            ("note\u{FFF9}hidden\u{FFFB}", NameError::ControlChar(0xFFF9)),
            (
                "f/..namedfork/rsrc",
                NameError::ForkName("..namedfork".into()),
            ),
            (
                "f/..NamedFork/rsrc",
                NameError::ForkName("..NamedFork".into()),
            ),
        ];
        for (raw, want) in cases {
            assert_eq!(Name::parse(raw).as_ref(), Err(want), "{raw:?}");
        }
        let long = "a".repeat(MAX_COMPONENT_LEN + 1);
        assert_eq!(
            Name::parse(&long),
            Err(NameError::ComponentTooLong { len: long.len() })
        );
        let deep = vec!["d"; MAX_DEPTH + 1].join("/");
        assert_eq!(
            Name::parse(&deep),
            Err(NameError::TooDeep {
                depth: MAX_DEPTH + 1
            })
        );
        let huge = vec!["d"; 3000].join("/");
        assert_eq!(
            Name::parse(&huge),
            Err(NameError::TooLong { len: huge.len() })
        );
    }

    /// PROTOCOL.md §5.1: the joiners that real names are spelt with (Persian `می‌خواهم` needs a
    /// ZWNJ, emoji sequences such as 👨‍👩‍👧 or 👩‍💻 a ZWJ) are valid and shown as they are, as are
    /// the other format characters that neither reorder nor only hide (a soft hyphen, the tags
    /// of a subdivision flag).
    #[test]
    fn accepts_the_joiners_real_names_need() {
        for ok in [
            "\u{645}\u{6CC}\u{200C}\u{62E}\u{648}\u{627}\u{647}\u{645}.txt",
            "family-\u{1F468}\u{200D}\u{1F469}\u{200D}\u{1F467}.jpg",
            "dev-\u{1F469}\u{200D}\u{1F4BB}.png",
            "\u{915}\u{94D}\u{200D}\u{937}/\u{D28}\u{D4D}\u{200D}",
            "soft\u{AD}hyphen",
            "\u{1F3F4}\u{E0067}\u{E0062}\u{E0073}\u{E0063}\u{E0074}\u{E007F}.png",
        ] {
            let name = Name::parse(ok).unwrap_or_else(|e| panic!("{ok:?}: {e}"));
            assert_eq!(name.as_str(), ok);
            assert_eq!(name.to_string(), ok, "shown as it is");
            assert_eq!(
                Name::parse_single(name.file_name()).map(|n| n.portable()),
                Ok(Ok(()))
            );
        }
    }

    #[test]
    fn single_component_form_refuses_separators() {
        assert!(Name::parse_single("report.pdf").is_ok());
        assert_eq!(Name::parse_single("a/b"), Err(NameError::Separator));
        assert_eq!(Name::parse_single("/a"), Err(NameError::Absolute));
        // A backslash is a plain character on POSIX, never a separator.
        assert_eq!(Name::parse_single("a\\b").unwrap().depth(), 1);
    }

    #[test]
    fn under_means_a_whole_component_prefix() {
        let a = Name::parse("a").unwrap();
        assert!(Name::parse("a/b").unwrap().is_under(&a));
        assert!(Name::parse("a/b/c").unwrap().is_under(&a));
        assert!(!Name::parse("ab/c").unwrap().is_under(&a));
        assert!(!a.is_under(&a));
    }

    #[test]
    fn escape_neutralises_terminal_tricks() {
        assert_eq!(escape("ok.txt"), "ok.txt");
        assert_eq!(escape("a\u{1b}[31mb\n"), "a\\u{1b}[31mb\\n");
        assert_eq!(escape("x\u{202E}y"), "x\\u{202e}y");
        assert_eq!(escape("a\\b\u{7}"), "a\\\\b\\u{7}");
        assert_eq!(Name::parse("é.txt").unwrap().to_string(), "é.txt");
    }
}
