//! Opening the TCP connection, and the settings every transfer shares.

use std::io;
use std::net::TcpStream;
use std::time::Duration;

use crate::error::ClientError;
use crate::target::Target;

/// Settings shared by uploads and downloads.
#[derive(Debug, Clone)]
pub struct Options {
    /// Longest wait for connecting and for any single read or write.
    pub timeout: Duration,
    /// Most files offered or requested and not yet finished (pipelining).
    pub window: usize,
    /// The authentication token sent in HELLO, if the server requires one.
    pub token: Option<Vec<u8>>,
    /// Downloads: replace existing local files.
    pub force: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(60),
            window: 64,
            token: None,
            force: false,
        }
    }
}

/// Connects to the first address of `target` that answers, with `TCP_NODELAY` and the
/// timeouts of `opts` set.
pub(crate) fn connect(target: &Target, opts: &Options) -> Result<TcpStream, ClientError> {
    let addrs = target.resolve().map_err(|source| ClientError::Resolve {
        host: target.host().to_owned(),
        source,
    })?;
    let mut last = io::Error::new(io::ErrorKind::NotFound, "the host has no address");
    for addr in addrs {
        log::debug!("connecting to {addr}");
        match TcpStream::connect_timeout(&addr, opts.timeout) {
            Ok(s) => {
                let setup = s
                    .set_nodelay(true)
                    .and_then(|()| s.set_read_timeout(Some(opts.timeout)))
                    .and_then(|()| s.set_write_timeout(Some(opts.timeout)));
                return match setup {
                    Ok(()) => Ok(s),
                    Err(e) => Err(ClientError::from_io(target, opts.timeout, e)),
                };
            }
            Err(e) => last = e,
        }
    }
    Err(match last.kind() {
        io::ErrorKind::ConnectionRefused => ClientError::ConnectionRefused(target.clone()),
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => ClientError::Timeout {
            target: target.clone(),
            after: opts.timeout,
        },
        _ => ClientError::Connect {
            target: target.clone(),
            source: last,
        },
    })
}
