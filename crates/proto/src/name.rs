//! File names on the wire: relative paths of plain, portable components (PROTOCOL.md §5).
//!
//! A [`Name`] can only be built by validation, so a value of this type is safe to join onto a
//! destination folder on Unix, Windows and macOS: it has no root, no `..`, no drive, no
//! separator other than `/`, no control characters and no reserved device names.

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
    /// A character that is a separator, drive marker or wildcard on some system.
    #[error("the character {0:?} is not allowed in names")]
    ReservedChar(char),
    /// A control or invisible formatting character.
    #[error("control or formatting character U+{0:04X} is not allowed")]
    ControlChar(u32),
    /// A Windows device name such as `CON` or `nul.txt`.
    #[error("{0:?} is a reserved device name on Windows")]
    DeviceName(String),
    /// A component that names a file's hidden part on some system (macOS `..namedfork`).
    #[error("{0:?} names a resource fork on macOS")]
    ForkName(String),
    /// A component ends with a dot or a space, which Windows strips silently.
    #[error("a component ends with a dot or a space")]
    TrailingDotOrSpace,
}

/// A validated relative file name: `/`-separated plain components.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Name(String);

impl Name {
    /// Validates a ferry-framing name: a relative path of plain components.
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

    /// Validates a seed-framing name: one plain component, no separator at all.
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

    /// The name as sent on the wire.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The components, in order; none is empty, `.` or `..`.
    pub fn components(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
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
        f.write_str(&escape(&self.0))
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
    let mut out = String::with_capacity(raw.len());
    for c in raw.chars() {
        if is_forbidden_char(c) || c == '\\' {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

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
    for ch in c.chars() {
        if is_forbidden_char(ch) {
            return Err(NameError::ControlChar(ch as u32));
        }
        if matches!(ch, '\\' | ':' | '<' | '>' | '"' | '|' | '?' | '*') {
            return Err(NameError::ReservedChar(ch));
        }
    }
    if c.ends_with('.') || c.ends_with(' ') {
        return Err(NameError::TrailingDotOrSpace);
    }
    if c.eq_ignore_ascii_case("..namedfork") {
        // `file/..namedfork/rsrc` writes into the resource fork of an existing `file`.
        return Err(NameError::ForkName(c.to_owned()));
    }
    if is_device_name(c) {
        return Err(NameError::DeviceName(c.to_owned()));
    }
    Ok(())
}

/// Control characters (C0, DEL, C1) and the invisible formatting characters that can disguise a
/// name on screen (bidirectional overrides, zero-width characters, the byte-order mark).
fn is_forbidden_char(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{2069}' | '\u{FEFF}' | '\u{FFF9}'..='\u{FFFB}')
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
        }
        assert_eq!(Name::parse("a/b/c").unwrap().components().count(), 3);
        assert_eq!(Name::parse("a/b/c.txt").unwrap().file_name(), "c.txt");
    }

    #[test]
    fn refuses_every_dangerous_form() {
        let cases: &[(&str, NameError)] = &[
            ("", NameError::Empty),
            ("/etc/passwd", NameError::Absolute),
            ("../x", NameError::DotComponent),
            ("a/../../x", NameError::DotComponent),
            ("./x", NameError::DotComponent),
            ("a//b", NameError::EmptyComponent),
            ("a/", NameError::EmptyComponent),
            ("..\\x", NameError::ReservedChar('\\')),
            ("C:x", NameError::ReservedChar(':')),
            ("a\0b", NameError::ControlChar(0)),
            ("a\nb", NameError::ControlChar(10)),
            ("a\u{1b}[2Jb", NameError::ControlChar(0x1b)),
            ("evil\u{202E}gpj.exe", NameError::ControlChar(0x202E)),
            ("x?", NameError::ReservedChar('?')),
            ("CON", NameError::DeviceName("CON".into())),
            ("dir/nul.txt", NameError::DeviceName("nul.txt".into())),
            ("lpt1", NameError::DeviceName("lpt1".into())),
            ("COM¹.log", NameError::DeviceName("COM¹.log".into())),
            ("trailing.", NameError::TrailingDotOrSpace),
            ("trailing ", NameError::TrailingDotOrSpace),
            (
                "f/..namedfork/rsrc",
                NameError::ForkName("..namedfork".into()),
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

    #[test]
    fn single_component_form_refuses_separators() {
        assert!(Name::parse_single("report.pdf").is_ok());
        assert_eq!(Name::parse_single("a/b"), Err(NameError::Separator));
        assert_eq!(Name::parse_single("/a"), Err(NameError::Absolute));
        assert_eq!(
            Name::parse_single("a\\b"),
            Err(NameError::ReservedChar('\\'))
        );
    }

    #[test]
    fn escape_neutralises_terminal_tricks() {
        assert_eq!(escape("ok.txt"), "ok.txt");
        assert_eq!(escape("a\u{1b}[31mb\n"), "a\\u{1b}[31mb\\n");
        assert_eq!(escape("x\u{202E}y"), "x\\u{202e}y");
        assert_eq!(Name::parse("é.txt").unwrap().to_string(), "é.txt");
    }
}
