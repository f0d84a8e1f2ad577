//! The server side: certificate loading, self-signed certificates, accepting connections.

use std::fs;
use std::io::{self, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::UnbufferedServerConnection;
use rustls::ServerConfig;

use crate::handshake::{handshake, SERVER};
use crate::{check_private_file, provider, Fingerprint, SecureError, Stream, Transport};

/// File name of the self-signed certificate inside the state folder.
pub const CERT_FILE: &str = "cert.pem";
/// File name of the self-signed private key inside the state folder (mode 0600).
pub const KEY_FILE: &str = "key.pem";

/// The first byte of every TLS connection (a handshake record).
pub const TLS_HANDSHAKE_BYTE: u8 = 0x16;

/// Server-side TLS settings: a certificate chain and key, TLS 1.3 only. Cheap to clone.
#[derive(Clone, Debug)]
pub struct ServerTls {
    config: Arc<ServerConfig>,
    fingerprint: Fingerprint,
    generated: bool,
}

impl ServerTls {
    /// Loads a PEM certificate chain (leaf first) and a PEM private key (`--tls-cert`/`--tls-key`).
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<Self, SecureError> {
        let chain = load_certs(cert)?;
        let key_der = load_key(key)?;
        if let Err(e @ SecureError::InsecurePermissions { .. }) = check_private_file(key) {
            log::warn!("{e}");
        }
        Self::build(chain, key_der, false).map_err(|source| SecureError::CertKey {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            source,
        })
    }

    /// `--tls-self-signed`: loads `cert.pem`/`key.pem` from `state_dir`, or generates them there
    /// (folder 0700, key 0600) on first use, for the names `localhost`, `127.0.0.1` and `::1`.
    ///
    /// Clients trust such a certificate by its [`ServerTls::fingerprint`] (`--pin` or
    /// `--known-hosts`), so the server should print it at start.
    pub fn self_signed(state_dir: &Path) -> Result<Self, SecureError> {
        Self::self_signed_for(state_dir, &["localhost", "127.0.0.1", "::1"])
    }

    /// Like [`ServerTls::self_signed`], naming the given hosts if a certificate is generated.
    pub fn self_signed_for(state_dir: &Path, names: &[&str]) -> Result<Self, SecureError> {
        let cert_path = state_dir.join(CERT_FILE);
        let key_path = state_dir.join(KEY_FILE);
        let generated = match (exists(&cert_path)?, exists(&key_path)?) {
            (true, true) => false,
            (false, false) => {
                generate(state_dir, &cert_path, &key_path, names)?;
                true
            }
            (true, false) => {
                return Err(SecureError::PartialSelfSigned {
                    dir: state_dir.to_path_buf(),
                    present: CERT_FILE,
                    missing: KEY_FILE,
                })
            }
            (false, true) => {
                return Err(SecureError::PartialSelfSigned {
                    dir: state_dir.to_path_buf(),
                    present: KEY_FILE,
                    missing: CERT_FILE,
                })
            }
        };
        check_private_file(&key_path)?;
        let mut tls = Self::from_pem_files(&cert_path, &key_path)?;
        tls.generated = generated;
        Ok(tls)
    }

    fn build(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        generated: bool,
    ) -> Result<Self, rustls::Error> {
        let fingerprint = Fingerprint::of_der(&chain[0]);
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_no_client_auth()
            .with_single_cert(chain, key)?;
        // The record layer after the handshake is this crate's (see `tls`): rustls hands it
        // the keys.
        config.enable_secret_extraction = true;
        Ok(ServerTls {
            config: Arc::new(config),
            fingerprint,
            generated,
        })
    }

    /// The SHA-256 fingerprint of the leaf certificate, for clients' `--pin`.
    pub fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }

    /// Whether [`ServerTls::self_signed`] generated the certificate just now.
    pub fn generated(&self) -> bool {
        self.generated
    }

    /// The rustls configuration (for callers that drive rustls themselves).
    pub fn config(&self) -> &Arc<ServerConfig> {
        &self.config
    }
}

fn exists(path: &Path) -> Result<bool, SecureError> {
    match fs::symlink_metadata(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(SecureError::file("inspect", path, e)),
    }
}

fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, SecureError> {
    let pem = fs::read(path).map_err(|e| SecureError::file("read", path, e))?;
    let chain = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| SecureError::Pem {
            path: path.to_path_buf(),
            detail: format!("malformed PEM certificate: {e}"),
        })?;
    if chain.is_empty() {
        return Err(SecureError::Pem {
            path: path.to_path_buf(),
            detail: "no certificate found (expected a `-----BEGIN CERTIFICATE-----` block)".into(),
        });
    }
    Ok(chain)
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, SecureError> {
    let pem = fs::read(path).map_err(|e| SecureError::file("read", path, e))?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| SecureError::Pem {
        path: path.to_path_buf(),
        detail: format!(
            "no usable private key (expected a PKCS#8, PKCS#1 or SEC1 `-----BEGIN ... PRIVATE KEY-----` block): {e}"
        ),
    })
}

fn generate(
    dir: &Path,
    cert_path: &Path,
    key_path: &Path,
    names: &[&str],
) -> Result<(), SecureError> {
    create_private_dir(dir)?;
    let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    let certified = rcgen::generate_simple_self_signed(names)
        .map_err(|e| SecureError::CertGen(e.to_string()))?;
    // The key goes first: a crash in between leaves a key without a certificate, which
    // `self_signed` reports instead of silently replacing.
    write_new(
        key_path,
        certified.key_pair.serialize_pem().as_bytes(),
        0o600,
    )?;
    write_new(cert_path, certified.cert.pem().as_bytes(), 0o644)?;
    log::info!(
        "generated a self-signed TLS certificate in {}",
        dir.display()
    );
    Ok(())
}

fn create_private_dir(dir: &Path) -> Result<(), SecureError> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder
        .create(dir)
        .map_err(|e| SecureError::file("create the folder", dir, e))
}

/// Writes `data` to a temporary file with `mode`, then renames it to `path`.
fn write_new(path: &Path, data: &[u8], mode: u32) -> Result<(), SecureError> {
    let mut tmp = PathBuf::from(path);
    tmp.set_extension(format!("tmp{}", std::process::id()));
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let result = (|| {
        let mut f = options.open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    result.map_err(|e| {
        let _ = fs::remove_file(&tmp);
        SecureError::file("write", path, e)
    })
}

/// Whether a connection's first byte starts a TLS handshake (`0x16`).
///
/// No other ferry connection can start so: the ferry framing starts with its magic (`0x00`)
/// and a seed-framing name never starts with a control character. A server can therefore
/// serve plain and TLS clients on one port by peeking ([`peek_first_byte`]).
pub fn looks_like_tls(first_byte: u8) -> bool {
    first_byte == TLS_HANDSHAKE_BYTE
}

/// Peeks at the first byte without consuming it; `None` if the peer closed without sending.
///
/// Blocks until a byte arrives: set a read timeout on `tcp` first.
pub fn peek_first_byte(tcp: &TcpStream) -> io::Result<Option<u8>> {
    let mut b = [0u8; 1];
    loop {
        match tcp.peek(&mut b) {
            Ok(0) => return Ok(None),
            Ok(_) => return Ok(Some(b[0])),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Performs the server side of a TLS handshake on an accepted connection.
///
/// Blocks until the handshake is done: bound it (socket timeouts, or a [`Transport`] wrapper
/// with deadlines) so a silent or trickling client cannot hold the thread.
pub fn accept<T: Transport>(tls: &ServerTls, io: T) -> Result<Stream<T>, SecureError> {
    let peer = peer_name(&io);
    let conn = UnbufferedServerConnection::new(tls.config.clone()).map_err(|source| {
        SecureError::Handshake {
            peer: peer.clone(),
            source,
            hint: "",
        }
    })?;
    let (tls, _) = handshake(&SERVER, conn, io).map_err(|f| f.into_error(peer, false))?;
    Ok(Stream::tls(tls, None, false))
}

/// What a new connection's first byte says it is; see [`detect`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detected {
    /// A TLS handshake, and TLS is configured: call [`accept`].
    Tls,
    /// Plain ferry or seed framing, and TLS is not required: use [`Stream::plain`].
    Plain,
}

/// Peeks at a new connection's first byte and decides, without consuming anything.
///
/// - TLS (`0x16`) with `tls_configured`: [`Detected::Tls`].
/// - TLS otherwise: [`SecureError::TlsNotConfigured`].
/// - Anything else with `require_tls`: [`SecureError::PlainRefused`] — the server logs it and
///   closes: when TLS is required, both plain framings (seed and ferry) are refused.
/// - Anything else otherwise: [`Detected::Plain`].
/// - Nothing at all: [`SecureError::EmptyConnection`].
///
/// Blocks until the first byte: set a read timeout on `tcp` first.
pub fn detect(
    tls_configured: bool,
    require_tls: bool,
    tcp: &TcpStream,
) -> Result<Detected, SecureError> {
    let first = peek_first_byte(tcp).map_err(|source| SecureError::HandshakeIo {
        peer: peer_name(tcp),
        source,
        hint: "",
    })?;
    match first {
        None => Err(SecureError::EmptyConnection {
            peer: peer_name(tcp),
        }),
        Some(b) if looks_like_tls(b) && tls_configured => Ok(Detected::Tls),
        Some(b) if looks_like_tls(b) => Err(SecureError::TlsNotConfigured {
            peer: peer_name(tcp),
        }),
        Some(_) if require_tls => Err(SecureError::PlainRefused {
            peer: peer_name(tcp),
        }),
        Some(_) => Ok(Detected::Plain),
    }
}

/// Accepts plain or TLS on one port: [`detect`], then [`accept`] or [`Stream::plain`].
///
/// `require_tls` refuses plain connections ([`SecureError::PlainRefused`]); it makes sense
/// only with `tls` set.
pub fn accept_any(
    tls: Option<&ServerTls>,
    require_tls: bool,
    tcp: TcpStream,
) -> Result<Stream, SecureError> {
    match (detect(tls.is_some(), require_tls, &tcp)?, tls) {
        (Detected::Tls, Some(tls)) => accept(tls, tcp),
        _ => Ok(Stream::plain(tcp)),
    }
}

pub(crate) fn peer_name<T: Transport + ?Sized>(io: &T) -> String {
    io.peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| "an unknown peer".to_string())
}
