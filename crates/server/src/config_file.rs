//! `--config FILE`: a TOML file whose top-level keys are the command-line options (`dir =
//! "/srv/inbox"`, `max-file-size = "10G"`, `no-seed = true`, `trusted-proxy = ["10.0.0.0/8"]`),
//! and whose `[[token]]` tables are the credentials. The options become command-line
//! arguments placed before the real ones, so that every option can be set, with the same
//! syntax and checks, and flags on the command line win.
//!
//! A token is given as a file (`file = "alice.token"`, relative to the configuration file's
//! folder, refused when group or others can read it) or as its digest (`sha256 = "..."`); in
//! clear (`secret = "..."`) only when the configuration file itself is private.

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};

use ferry_proto::Name;
use ferry_secure::{check_private_secret_file, Token, TokenDigest};
use serde::Deserialize;

use crate::access::{Credential, Permissions};

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

/// Reads and checks the configuration file at `path`; errors name the file and the key.
pub fn load(path: &Path) -> Result<FileSettings, String> {
    let at = |what: String| format!("{}: {what}", path.display());
    let file = fs::File::open(path).map_err(|e| at(format!("cannot read it: {e}")))?;
    let mut text = String::new();
    std::io::Read::read_to_string(
        &mut std::io::Read::take(file, MAX_CONFIG_LEN + 1),
        &mut text,
    )
    .map_err(|e| at(format!("cannot read it as UTF-8 text: {e}")))?;
    if text.len() as u64 > MAX_CONFIG_LEN {
        return Err(at(format!("is over {MAX_CONFIG_LEN} bytes")));
    }
    let mut table: toml::Table = toml::from_str(&text).map_err(|e| at(e.to_string()))?;
    let base = path.parent().unwrap_or(Path::new("."));
    let mut settings = FileSettings::default();
    if let Some(tokens) = table.remove("token") {
        let entries: Vec<TokenEntry> = tokens
            .try_into()
            .map_err(|e| at(format!("[[token]]: {e}")))?;
        for entry in entries {
            let c = credential(entry, base, path).map_err(at)?;
            if settings.credentials.iter().any(|o| o.name == c.name) {
                return Err(at(format!("two tokens are named {:?}", c.name)));
            }
            settings.credentials.push(c);
        }
    }
    for (key, value) in table {
        if key == "config" {
            return Err(at("`config` cannot be set in a configuration file".into()));
        }
        let flag = OsString::from(format!("--{}", key.replace('_', "-")));
        let mut push = |v: &toml::Value| -> Result<(), String> {
            let text = match v {
                toml::Value::String(s) => s.clone(),
                toml::Value::Integer(n) => n.to_string(),
                toml::Value::Boolean(true) => {
                    settings.args.push(flag.clone());
                    return Ok(());
                }
                toml::Value::Boolean(false) => return Ok(()),
                other => {
                    return Err(at(format!(
                        "{key}: expected a string, a number or true, not {}",
                        other.type_str()
                    )))
                }
            };
            settings.args.push(flag.clone());
            settings.args.push(text.into());
            Ok(())
        };
        match &value {
            toml::Value::Array(items) => items.iter().try_for_each(&mut push)?,
            v => push(v)?,
        }
    }
    Ok(settings)
}

/// The credential of one `[[token]]` table.
fn credential(e: TokenEntry, base: &Path, config: &Path) -> Result<Credential, String> {
    let who = format!("[[token]] {:?}", e.name);
    if e.name.is_empty()
        || e.name.len() > MAX_USER_NAME
        || !e
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c))
    {
        return Err(format!(
            "{who}: a name is 1 to {MAX_USER_NAME} letters, digits or -_.@"
        ));
    }
    let permissions = e
        .permissions
        .join(",")
        .parse::<Permissions>()
        .map_err(|err| format!("{who}: {err}"))?;
    let folder = match e.folder {
        Some(f) => Some(Name::parse(&f).map_err(|err| format!("{who}: folder {f:?}: {err}"))?),
        None => None,
    };
    let digest = match (e.file, e.sha256, e.secret) {
        (Some(file), None, None) => {
            let token =
                Token::from_file(&base.join(file)).map_err(|err| format!("{who}: {err}"))?;
            TokenDigest::of(&token)
        }
        (None, Some(hash), None) => {
            TokenDigest::parse(&hash, &who).map_err(|err| err.to_string())?
        }
        (None, None, Some(secret)) => {
            check_private_secret_file(config).map_err(|err| {
                format!(
                    "{who}: a token in clear needs a configuration file only you can read \
                     (chmod 600), or use `file` or `sha256`: {err}"
                )
            })?;
            let token = Token::new(secret.into_bytes()).map_err(|err| format!("{who}: {err}"))?;
            TokenDigest::of(&token)
        }
        _ => {
            return Err(format!(
                "{who}: give exactly one of `file`, `sha256` or `secret`"
            ))
        }
    };
    Ok(Credential {
        name: e.name,
        digest,
        permissions,
        folder,
    })
}
