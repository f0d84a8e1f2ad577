//! `HOST[:PORT]` as typed on the command line: host names, IPv4, and IPv6 with or without
//! brackets (`[::1]:8386`, `::1`).

use std::fmt;
use std::io;
use std::net::{Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::str::FromStr;

/// The port a ferry server listens on unless told otherwise.
pub const DEFAULT_PORT: u16 = 8386;

/// Where to connect: a host (name or address) and a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    host: String,
    port: u16,
}

/// Why a `HOST[:PORT]` argument was not understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TargetError {
    /// Nothing before the port.
    #[error("the host is missing (expected HOST[:PORT], e.g. box.example:8386)")]
    EmptyHost,
    /// The port is not a number from 1 to 65535.
    #[error("{0:?} is not a port number (1-65535)")]
    BadPort(String),
    /// A `[` without its `]`, or text after `]` that is not `:PORT`.
    #[error("IPv6 addresses go in brackets: [::1] or [::1]:8386")]
    BadBrackets,
    /// Several colons that do not make an IPv6 address.
    #[error("too many colons: write IPv6 addresses as [ADDR]:PORT")]
    BadIpv6,
}

impl Target {
    /// A target from its parts.
    #[must_use]
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        Self {
            host: host.into(),
            port,
        }
    }

    /// The host name or address, without brackets.
    #[must_use]
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port.
    #[must_use]
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Looks the host up; every address it has, in the resolver's order.
    pub fn resolve(&self) -> io::Result<Vec<SocketAddr>> {
        Ok((self.host.as_str(), self.port).to_socket_addrs()?.collect())
    }
}

impl From<SocketAddr> for Target {
    fn from(addr: SocketAddr) -> Self {
        Self::new(addr.ip().to_string(), addr.port())
    }
}

impl FromStr for Target {
    type Err = TargetError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let (host, after) = rest.split_once(']').ok_or(TargetError::BadBrackets)?;
            let port = match after {
                "" => None,
                p => Some(p.strip_prefix(':').ok_or(TargetError::BadBrackets)?),
            };
            (host, port)
        } else if s.matches(':').count() > 1 {
            s.parse::<Ipv6Addr>().map_err(|_| TargetError::BadIpv6)?;
            (s, None)
        } else {
            match s.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (s, None),
            }
        };
        if host.is_empty() {
            return Err(TargetError::EmptyHost);
        }
        let port = match port {
            None => DEFAULT_PORT,
            Some(p) => match p.parse::<u16>() {
                Ok(n) if n > 0 => n,
                _ => return Err(TargetError::BadPort(p.to_owned())),
            },
        };
        Ok(Self::new(host, port))
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Result<(String, u16), TargetError> {
        s.parse::<Target>().map(|t| (t.host, t.port))
    }

    #[test]
    fn parses_every_form() {
        assert_eq!(t("box"), Ok(("box".into(), DEFAULT_PORT)));
        assert_eq!(t("box.example:9000"), Ok(("box.example".into(), 9000)));
        assert_eq!(t("127.0.0.1:1"), Ok(("127.0.0.1".into(), 1)));
        assert_eq!(t("[::1]:8386"), Ok(("::1".into(), 8386)));
        assert_eq!(t("[::1]"), Ok(("::1".into(), DEFAULT_PORT)));
        assert_eq!(t("fe80::1"), Ok(("fe80::1".into(), DEFAULT_PORT)));
    }

    #[test]
    fn refuses_malformed_targets() {
        assert_eq!(t(""), Err(TargetError::EmptyHost));
        assert_eq!(t(":80"), Err(TargetError::EmptyHost));
        assert_eq!(t("box:"), Err(TargetError::BadPort(String::new())));
        assert_eq!(t("box:0"), Err(TargetError::BadPort("0".into())));
        assert_eq!(t("box:70000"), Err(TargetError::BadPort("70000".into())));
        assert_eq!(t("[::1"), Err(TargetError::BadBrackets));
        assert_eq!(t("[::1]8386"), Err(TargetError::BadBrackets));
        assert_eq!(t("a:b:c"), Err(TargetError::BadIpv6));
    }

    #[test]
    fn displays_ipv6_in_brackets() {
        assert_eq!(Target::new("::1", 5).to_string(), "[::1]:5");
        assert_eq!(Target::new("box", 5).to_string(), "box:5");
        let addr: SocketAddr = "127.0.0.1:7".parse().unwrap();
        assert_eq!(Target::from(addr).to_string(), "127.0.0.1:7");
    }
}
