//! Errors that stop a server (start-up and fatal run-time failures).

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Why a server could not start or had to stop.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// The listening socket could not be opened.
    #[error("cannot listen on {addr}: {source} (is another server using this port?)")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// What the system said.
        source: io::Error,
    },
    /// The storage folder could not be created or used.
    #[error("cannot use {} as the storage folder: {source}", path.display())]
    Dir {
        /// The folder.
        path: PathBuf,
        /// What the system said.
        source: io::Error,
    },
    /// The object store could not be used (unreachable, no such bucket, bad credentials).
    #[error("cannot use the object store {url}: {message}")]
    ObjectStore {
        /// Its `s3://` URL.
        url: String,
        /// What went wrong.
        message: String,
    },
    /// The configuration makes no sense.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The listening socket failed for good.
    #[error("the listening socket failed: {0}")]
    Listen(io::Error),
    /// A server thread could not be started or died.
    #[error("server thread failure: {0}")]
    Thread(String),
}
