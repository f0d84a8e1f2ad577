//! Who may do what: named credentials (a token, kept as its SHA-256 digest, with permissions
//! and maybe a folder of its own within the storage folder), and what clients without a token
//! may do.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use ferry_proto::{Code, Name};
use ferry_secure::{Token, TokenDigest};

use crate::paths::Refusal;

/// What a client may do; any combination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Permissions {
    /// Store files and folders.
    pub upload: bool,
    /// Fetch stored files.
    pub download: bool,
    /// List the stored files.
    pub list: bool,
}

/// One thing a client asks to do, checked against its [`Permissions`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    Upload,
    Download,
    List,
}

impl Permissions {
    /// Everything.
    pub const ALL: Self = Self {
        upload: true,
        download: true,
        list: true,
    };
    /// Nothing: every request is refused.
    pub const NONE: Self = Self {
        upload: false,
        download: false,
        list: false,
    };
    /// Upload only: an inbox whose senders cannot see what others sent.
    pub const UPLOAD: Self = Self {
        upload: true,
        download: false,
        list: false,
    };

    /// Whether nothing is allowed.
    pub fn is_none(&self) -> bool {
        *self == Self::NONE
    }

    /// Whether `action` is allowed.
    pub(crate) fn allows(&self, action: Action) -> bool {
        match action {
            Action::Upload => self.upload,
            Action::Download => self.download,
            Action::List => self.list,
        }
    }

    /// What anonymous clients may do when the operator did not say: nothing when tokens
    /// exist; everything on a loopback address (only local users can connect, as to a
    /// folder they could share by other means); else upload only, so that a server reachable
    /// from the network never hands its files to strangers.
    pub fn default_anonymous(tokens: bool, listen: IpAddr) -> Self {
        match (tokens, listen.is_loopback()) {
            (true, _) => Self::NONE,
            (false, true) => Self::ALL,
            (false, false) => Self::UPLOAD,
        }
    }
}

impl fmt::Display for Permissions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<&str> = [
            (self.upload, "upload"),
            (self.download, "download"),
            (self.list, "list"),
        ]
        .into_iter()
        .filter_map(|(on, word)| on.then_some(word))
        .collect();
        if parts.is_empty() {
            f.write_str("none")
        } else {
            f.write_str(&parts.join(","))
        }
    }
}

impl FromStr for Permissions {
    type Err = String;

    /// `upload,download,list` in any combination, `all` or `none`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut p = Self::NONE;
        for word in s.split(',').map(str::trim) {
            match word {
                "upload" => p.upload = true,
                "download" => p.download = true,
                "list" => p.list = true,
                "all" => p = Self::ALL,
                "none" => {}
                other => {
                    return Err(format!(
                        "unknown permission {other:?}: use upload, download, list (comma \
                         separated), all or none"
                    ))
                }
            }
        }
        Ok(p)
    }
}

/// A named token with its permissions.
#[derive(Debug, Clone)]
pub struct Credential {
    /// Shown in logs, metrics and the hook's `FERRY_USER`.
    pub name: String,
    /// The digest of the token (the token itself is not kept).
    pub digest: TokenDigest,
    /// What its holder may do.
    pub permissions: Permissions,
    /// Its own folder within the storage folder (created if missing), which its uploads,
    /// downloads and listings are confined to; `None`: the storage folder itself.
    pub folder: Option<Name>,
}

impl Credential {
    /// The credential of `--token-file`: named `token`, every permission, the whole folder.
    pub fn full(token: &Token) -> Self {
        Self {
            name: "token".into(),
            digest: TokenDigest::of(token),
            permissions: Permissions::ALL,
            folder: None,
        }
    }
}

/// Whom an upload belongs to, for what is kept of it when it is cut: only the same principal
/// resumes it (told the digest of the bytes held, and continuing them), so that nobody learns
/// what another's cut upload holds or writes into it (SECURITY.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Principal {
    /// The holders of a credential, by its name: whoever holds the token is the same one.
    Credential(String),
    /// Clients without a token where they may download: one principal, as the holders of one
    /// token are, which may read whatever another of them stores.
    Anonymous,
    /// A client without a token that may not download, by its address (the only thing it
    /// shows): strangers leaving files in an inbox are told apart by it, and a client cut off
    /// resumes from the same address.
    Address(IpAddr),
}

impl Principal {
    /// The principal of a client at `peer` with the credential named `user` (`None`: no
    /// token) and its `permissions`.
    pub(crate) fn of(user: Option<&str>, permissions: Permissions, peer: IpAddr) -> Self {
        match user {
            Some(name) => Self::Credential(name.to_owned()),
            None if permissions.download => Self::Anonymous,
            // An IPv4 client reaching an IPv6 socket is the same client as over IPv4.
            None => Self::Address(peer.to_canonical()),
        }
    }

    /// `name` as this principal's: text that differs for every pair of principal and name,
    /// for naming what is kept of this principal's upload of `name`.
    pub(crate) fn own(&self, name: &str) -> String {
        let who = match self {
            Self::Credential(user) => format!("token {user}"),
            Self::Anonymous => "anonymous".to_owned(),
            Self::Address(ip) => format!("address {ip}"),
        };
        // The length first: no pair of principal and name reads as another.
        format!("{}:{who}/{name}", who.len())
    }
}

/// The credentials a server checks HELLOs against, and what clients without a token may do.
#[derive(Debug)]
pub(crate) struct Access {
    credentials: Vec<Credential>,
    anonymous: Permissions,
    /// The distinct credential folders, in order of first use.
    folders: Vec<Name>,
}

/// Who a HELLO says the client is.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Verdict<'a> {
    /// No token, and anonymous clients may do something.
    Anonymous(Permissions),
    /// A credential's token: the credential, and the index of its folder in
    /// [`Access::folders`] (`None`: the storage folder).
    User(&'a Credential, Option<usize>),
    /// No token, and one is required.
    Missing,
    /// A token that is none of the credentials'.
    Wrong,
}

impl Access {
    /// The credentials and anonymous permissions of `config`.
    pub(crate) fn new(config: &crate::Config) -> Self {
        let credentials = config.all_credentials();
        let mut folders: Vec<Name> = Vec::new();
        for f in credentials.iter().filter_map(|c| c.folder.as_ref()) {
            if !folders.contains(f) {
                folders.push(f.clone());
            }
        }
        Self {
            credentials,
            anonymous: config.anonymous_permissions(),
            folders,
        }
    }

    /// What clients without a token may do.
    pub(crate) fn anonymous(&self) -> Permissions {
        self.anonymous
    }

    /// The distinct folders of the credentials.
    pub(crate) fn folders(&self) -> &[Name] {
        &self.folders
    }

    /// Who `offered` (the token of a HELLO) makes the client. Every credential is checked
    /// (each in constant time), so the time taken does not tell which one matched.
    pub(crate) fn check(&self, offered: Option<&[u8]>) -> Verdict<'_> {
        // Without credentials, a token (a client's FERRY_TOKEN, say) is not looked at.
        let Some(token) = offered.filter(|_| !self.credentials.is_empty()) else {
            return if self.anonymous.is_none() {
                Verdict::Missing
            } else {
                Verdict::Anonymous(self.anonymous)
            };
        };
        let mut found = None;
        for c in &self.credentials {
            if c.digest.verify(Some(token)) && found.is_none() {
                found = Some(c);
            }
        }
        match found {
            Some(c) => {
                let folder = c
                    .folder
                    .as_ref()
                    .and_then(|f| self.folders.iter().position(|g| g == f));
                Verdict::User(c, folder)
            }
            None => Verdict::Wrong,
        }
    }
}

/// The refusal of an action that the client's credential does not allow.
pub(crate) fn denied(action: Action, user: Option<&str>) -> Refusal {
    let what = match action {
        Action::Upload => "upload",
        Action::Download => "download",
        Action::List => "list files",
    };
    let who = match user {
        Some(name) => format!("the credential {name:?}"),
        None => "clients without a token".to_owned(),
    };
    Refusal::new(Code::Denied, format!("{who} may not {what} on this server"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permissions_parse_and_print() {
        let p: Permissions = "upload, list".parse().unwrap();
        assert_eq!(p.to_string(), "upload,list");
        assert_eq!("all".parse::<Permissions>().unwrap(), Permissions::ALL);
        assert_eq!("none".parse::<Permissions>().unwrap().to_string(), "none");
        assert!("write".parse::<Permissions>().is_err());
    }

    #[test]
    fn principals_own_names_apart() {
        let v4: IpAddr = "192.0.2.1".parse().unwrap();
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        let (read, drop) = (Permissions::ALL, Permissions::UPLOAD);
        let by = |user, p, ip| Principal::of(user, p, ip).own("a/b");
        assert_eq!(by(None, drop, v4), by(None, drop, mapped));
        assert_eq!(by(None, read, v4), by(None, read, "::1".parse().unwrap()));
        assert_eq!(by(Some("x"), drop, v4), by(Some("x"), read, mapped));
        let all = [
            by(None, drop, v4),
            by(None, drop, "192.0.2.2".parse().unwrap()),
            by(None, read, v4),
            by(Some("x"), drop, v4),
            by(Some("y"), drop, v4),
            Principal::Credential("x/a".into()).own("b"),
        ];
        for (i, a) in all.iter().enumerate() {
            assert!(all[i + 1..].iter().all(|b| a != b), "{a}");
        }
    }

    #[test]
    fn anonymous_may_only_upload_from_the_network() {
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        let any: IpAddr = "0.0.0.0".parse().unwrap();
        assert_eq!(Permissions::default_anonymous(false, lo), Permissions::ALL);
        assert_eq!(
            Permissions::default_anonymous(false, any),
            Permissions::UPLOAD
        );
        assert!(Permissions::default_anonymous(true, lo).is_none());
    }
}
