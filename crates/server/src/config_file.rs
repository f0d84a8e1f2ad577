//! `--config FILE`: a TOML file whose top-level keys are the command-line options (`dir =
//! "/srv/inbox"`, `max-file-size = "10G"`, `no-seed = true`, `trusted-proxy = ["10.0.0.0/8"]`),
//! and whose `[[token]]` tables are the credentials. Each option is checked on its own, as the
//! command line checks it, so that an error names the file, the line and the key; the options
//! then become command-line arguments placed before the real ones, and flags on the command
//! line win.
//!
//! A token is given as a file (`file = "alice.token"`, refused when group or others can read
//! it; a relative path is read from `$CREDENTIALS_DIRECTORY` when systemd's `LoadCredential=`
//! set it, else beside the configuration file) or as its digest (`sha256 = "..."`); in clear
//! (`secret = "..."`) only when the configuration file itself is private.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs;
use std::io::Read;
use std::ops::Range;
use std::path::{Path, PathBuf};

use clap::builder::Resettable;
use clap::{ArgAction, Command};
use ferry_proto::Name;
use ferry_secure::{check_private_secret_file, Token, TokenDigest};
use serde::Deserialize;
use toml::{Spanned, Value};

use crate::access::{Credential, Permissions};

/// The folder of systemd's credentials (`LoadCredential=`), where relative token files are
/// read from when it is set.
pub const CREDENTIALS_DIRECTORY: &str = "CREDENTIALS_DIRECTORY";

/// Largest configuration file read, in bytes.
pub const MAX_CONFIG_LEN: u64 = 1 << 20;
/// Longest credential name, in bytes.
pub const MAX_USER_NAME: usize = 64;

/// What a configuration file says.
#[derive(Debug, Default)]
pub struct FileSettings {
    /// The options, as command-line arguments (`--dir`, `/srv/inbox`, ...).
    pub args: Vec<OsString>,
    /// The `[[token]]` credentials.
    pub credentials: Vec<Credential>,
}

/// A configuration file that cannot be used: which file, which line when known, and what is
/// wrong with it.
#[derive(Debug, thiserror::Error)]
#[error("{}{}: {problem}", .path.display(), .line.map(|l| format!(", line {l}")).unwrap_or_default())]
pub struct ConfigError {
    /// The configuration file.
    pub path: PathBuf,
    /// The line of the key or `[[token]]` table at fault, when known (the TOML parser's own
    /// errors name their line in the problem).
    pub line: Option<usize>,
    /// What is wrong.
    pub problem: Problem,
}

/// What is wrong with a configuration file.
#[derive(Debug, thiserror::Error)]
pub enum Problem {
    /// It cannot be opened, or is not UTF-8 text.
    #[error("cannot read it: {0}")]
    Read(std::io::Error),
    /// It is longer than [`MAX_CONFIG_LEN`].
    #[error("it is over {MAX_CONFIG_LEN} bytes")]
    TooLong,
    /// It is not TOML, or a `[[token]]` table has a key it may not have or lacks one.
    #[error("{0}")]
    Toml(Box<toml::de::Error>),
    /// It sets `config`.
    #[error("`config` cannot be set in a configuration file")]
    Nested,
    /// A key that is no option of `ferry-server`.
    #[error(
        "unknown key `{0}` (the keys are the long options `ferry-server --help` lists, \
         without the --)"
    )]
    UnknownKey(String),
    /// A value of the wrong TOML type.
    #[error("{key}: expected {expected}, got {got}")]
    WrongType {
        /// The key.
        key: String,
        /// What the key takes.
        expected: &'static str,
        /// The value found, and its type.
        got: String,
    },
    /// A value the option does not accept (the reason is the command line's).
    #[error("{key}: {reason}")]
    BadValue {
        /// The key.
        key: String,
        /// Why the value is refused.
        reason: String,
    },
    /// Options that cannot go together, or need one another (the reason is the command
    /// line's).
    #[error("{0}")]
    Options(String),
    /// A `[[token]]` table that does not make a credential.
    #[error("[[token]] {name:?}: {reason}")]
    Token {
        /// The token's name.
        name: String,
        /// Why it is refused.
        reason: String,
    },
    /// Two `[[token]]` tables with one name.
    #[error("two [[token]] tables are named {0:?}")]
    TwoTokens(String),
}

/// The `[[token]]` tables of a configuration file (its other keys are the options).
#[derive(Debug, Deserialize)]
struct Tokens {
    #[serde(default)]
    token: Vec<Spanned<TokenEntry>>,
}

/// One `[[token]]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenEntry {
    name: String,
    permissions: Vec<String>,
    folder: Option<String>,
    file: Option<PathBuf>,
    sha256: Option<String>,
    secret: Option<String>,
}

/// Reads and checks the configuration file at `path`, each option as `cmd`'s command line
/// would check it.
pub fn load(path: &Path, cmd: &Command) -> Result<FileSettings, ConfigError> {
    let fail = |line, problem| ConfigError {
        path: path.to_owned(),
        line,
        problem,
    };
    let text = read(path).map_err(|p| fail(None, p))?;
    let line_of = |span: Range<usize>| Some(text[..span.start].matches('\n').count() + 1);
    let options: BTreeMap<String, Spanned<Value>> =
        toml::from_str(&text).map_err(|e| fail(None, Problem::Toml(Box::new(e))))?;
    let tokens: Tokens =
        toml::from_str(&text).map_err(|e| fail(None, Problem::Toml(Box::new(e))))?;
    let base = token_folder(path);
    let mut settings = FileSettings::default();
    for entry in tokens.token {
        let line = line_of(entry.span());
        let c = credential(entry.into_inner(), &base, path).map_err(|p| fail(line, p))?;
        if settings.credentials.iter().any(|o| o.name == c.name) {
            return Err(fail(line, Problem::TwoTokens(c.name)));
        }
        settings.credentials.push(c);
    }
    for (key, value) in options.iter().filter(|(key, _)| *key != "token") {
        let args = option(cmd, key, value.get_ref()).map_err(|p| fail(line_of(value.span()), p))?;
        settings.args.extend(args);
    }
    Ok(settings)
}

/// The text of the file at `path`, at most [`MAX_CONFIG_LEN`] bytes.
fn read(path: &Path) -> Result<String, Problem> {
    let file = fs::File::open(path).map_err(Problem::Read)?;
    let mut text = String::new();
    file.take(MAX_CONFIG_LEN + 1)
        .read_to_string(&mut text)
        .map_err(Problem::Read)?;
    if text.len() as u64 > MAX_CONFIG_LEN {
        return Err(Problem::TooLong);
    }
    Ok(text)
}

/// Where relative token files are read from: `$CREDENTIALS_DIRECTORY` when set, else the
/// folder of the configuration file at `path`.
fn token_folder(path: &Path) -> PathBuf {
    match std::env::var_os(CREDENTIALS_DIRECTORY) {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => path.parent().unwrap_or(Path::new(".")).to_owned(),
    }
}

/// The command-line arguments (`--key=value`, or `--key` for a flag) of the option `key` set
/// to `value` (an array for an option that may be repeated), checked by `cmd`'s own parser of
/// that option.
fn option(cmd: &Command, key: &str, value: &Value) -> Result<Vec<OsString>, Problem> {
    if key == "config" {
        return Err(Problem::Nested);
    }
    let long = key.replace('_', "-");
    let arg = cmd
        .get_arguments()
        .find(|a| {
            a.get_long() == Some(long.as_str())
                && matches!(
                    a.get_action(),
                    ArgAction::Set | ArgAction::Append | ArgAction::SetTrue
                )
        })
        .ok_or_else(|| Problem::UnknownKey(key.to_owned()))?;
    let items = match value {
        Value::Array(items) if matches!(arg.get_action(), ArgAction::Append) => {
            items.iter().collect()
        }
        v => vec![v],
    };
    let mut args = Vec::new();
    for item in items {
        let wrong = |expected| Problem::WrongType {
            key: key.to_owned(),
            expected,
            got: format!("{item} ({})", item.type_str()),
        };
        match item {
            Value::Boolean(true) if !arg.get_action().takes_values() => {
                args.push(format!("--{long}"))
            }
            Value::Boolean(false) if !arg.get_action().takes_values() => {}
            _ if !arg.get_action().takes_values() => return Err(wrong("true or false")),
            Value::String(s) => args.push(format!("--{long}={s}")),
            Value::Integer(n) => args.push(format!("--{long}={n}")),
            _ => return Err(wrong("a string or a whole number")),
        }
    }
    // The option alone, without its ties to others (checked once all are together).
    let alone = arg
        .clone()
        .requires(Resettable::Reset)
        .conflicts_with(Resettable::Reset)
        .overrides_with(Resettable::Reset);
    Command::new("ferry-server")
        .no_binary_name(true)
        .arg(alone)
        .try_get_matches_from(&args)
        .map_err(|e| Problem::BadValue {
            key: key.to_owned(),
            reason: clap_reason(&e),
        })?;
    Ok(args.into_iter().map(OsString::from).collect())
}

/// What a command-line error says is wrong, without clap's `error:` and usage lines: the
/// option's own reason when it has one (`"0s" is not a valid timeout: ...`), followed by the
/// value when the reason does not show it.
pub fn clap_reason(e: &clap::Error) -> String {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    let value = match e.get(ContextKind::InvalidValue) {
        Some(ContextValue::String(v)) => Some(v.as_str()),
        _ => None,
    };
    let reason = match (std::error::Error::source(e), e.get(ContextKind::ValidValue)) {
        (Some(source), _) if source.is::<std::num::ParseIntError>() => {
            if value.is_some_and(|v| v.trim_start().starts_with('-')) {
                "expected a whole number, not a negative one".to_owned()
            } else {
                "expected a whole number (0, 1, 2, ...)".to_owned()
            }
        }
        (Some(source), _) => source.to_string(),
        (None, Some(ContextValue::Strings(valid))) if e.kind() == ErrorKind::InvalidValue => {
            format!("expected one of {}", valid.join(", "))
        }
        _ => {
            // clap's message, up to its usage lines, on one line.
            let text = e.render().to_string();
            let message: Vec<&str> = text
                .lines()
                .take_while(|l| !l.is_empty())
                .map(str::trim)
                .collect();
            let message = message.join(" ");
            message
                .strip_prefix("error: ")
                .unwrap_or(&message)
                .to_owned()
        }
    };
    match value {
        Some(v) if !reason.contains(v) => format!("{reason}, got {v:?}"),
        _ => reason,
    }
}

/// The credential of one `[[token]]` table.
fn credential(e: TokenEntry, base: &Path, config: &Path) -> Result<Credential, Problem> {
    let TokenEntry {
        name,
        permissions,
        folder,
        file,
        sha256,
        secret,
    } = e;
    let refuse = |reason: String| Problem::Token {
        name: name.clone(),
        reason,
    };
    if name.is_empty()
        || name.len() > MAX_USER_NAME
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c))
    {
        return Err(refuse(format!(
            "a name is 1 to {MAX_USER_NAME} letters, digits or -_.@"
        )));
    }
    let permissions = permissions
        .join(",")
        .parse::<Permissions>()
        .map_err(|err| refuse(err.to_string()))?;
    let folder = match &folder {
        Some(f) => Some(Name::parse(f).map_err(|err| refuse(format!("folder {f:?}: {err}")))?),
        None => None,
    };
    let digest = match (file, sha256, secret) {
        (Some(file), None, None) => {
            let token = Token::from_file(&base.join(&file)).map_err(|err| {
                let from = match std::env::var_os(CREDENTIALS_DIRECTORY) {
                    Some(_) if file.is_relative() => format!(
                        " (a relative `file` is read from ${CREDENTIALS_DIRECTORY}, which \
                         systemd's LoadCredential= fills)"
                    ),
                    _ => String::new(),
                };
                refuse(format!("{err}{from}"))
            })?;
            TokenDigest::of(&token)
        }
        (None, Some(hash), None) => {
            TokenDigest::parse(&hash, "`sha256`").map_err(|err| refuse(err.to_string()))?
        }
        (None, None, Some(secret)) => {
            check_private_secret_file(config).map_err(|err| {
                refuse(format!(
                    "a token in clear needs a configuration file only you can read \
                     (chmod 600), or use `file` or `sha256`: {err}"
                ))
            })?;
            let token = Token::new(secret.into_bytes()).map_err(|err| refuse(err.to_string()))?;
            TokenDigest::of(&token)
        }
        _ => {
            return Err(refuse(
                "give exactly one of `file`, `sha256` or `secret`".into(),
            ))
        }
    };
    Ok(Credential {
        name,
        digest,
        permissions,
        folder,
    })
}
