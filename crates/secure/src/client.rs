//! The client side: trust settings, pinning, trust on first use, connecting.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::UnbufferedClientConnection;
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore};

use crate::handshake::{handshake, CLIENT};
use crate::server::peer_name;
use crate::{provider, Fingerprint, SecureError, Stream, Transport};

/// How the client decides to trust a server's certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Trust {
    /// `--tls`: a certificate chaining to Mozilla's root CAs (compiled in; works offline and
    /// needs no system CA bundle), valid for the host name.
    WebPkiRoots,
    /// `--ca FILE`: a certificate chaining to one of the PEM certificates in FILE (only those),
    /// valid for the host name.
    CaFile(PathBuf),
    /// `--pin SHA256:...`: exactly the certificate with this fingerprint; names, issuers and
    /// dates are not checked (as with ssh host keys), the handshake signature is.
    Pin(Fingerprint),
    /// `--known-hosts FILE`: trust on first use. The first certificate seen for `host:port` is
    /// recorded in FILE; later connections accept only that one.
    KnownHosts(PathBuf),
}

/// Client-side TLS settings, TLS 1.3 only. Cheap to clone; one per client run.
#[derive(Clone, Debug)]
pub struct ClientTls {
    mode: Mode,
}

#[derive(Clone, Debug)]
enum Mode {
    Verified(Arc<ClientConfig>),
    Pin(Fingerprint),
    KnownHosts(PathBuf),
}

impl ClientTls {
    /// Builds the settings; reads a CA file now (a known-hosts file is read at each connect).
    pub fn new(trust: Trust) -> Result<Self, SecureError> {
        let mode = match trust {
            Trust::WebPkiRoots => {
                let mut roots = RootCertStore::empty();
                roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
                Mode::Verified(verified_config(roots)?)
            }
            Trust::CaFile(path) => Mode::Verified(verified_config(load_ca_file(&path)?)?),
            Trust::Pin(fp) => Mode::Pin(fp),
            Trust::KnownHosts(path) => Mode::KnownHosts(path),
        };
        Ok(ClientTls { mode })
    }
}

fn verified_config(roots: RootCertStore) -> Result<Arc<ClientConfig>, SecureError> {
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(SecureError::TlsConfig)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    // The record layer after the handshake is this crate's (see `tls`).
    config.enable_secret_extraction = true;
    Ok(Arc::new(config))
}

fn load_ca_file(path: &Path) -> Result<RootCertStore, SecureError> {
    let pem = fs::read(path).map_err(|e| SecureError::file("read", path, e))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| SecureError::Pem {
            path: path.to_path_buf(),
            detail: format!("malformed PEM certificate: {e}"),
        })?;
    let mut roots = RootCertStore::empty();
    let (added, ignored) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(SecureError::Pem {
            path: path.to_path_buf(),
            detail: format!(
                "no usable CA certificate found ({ignored} unparsable; expected `-----BEGIN CERTIFICATE-----` blocks)"
            ),
        });
    }
    if ignored > 0 {
        log::warn!(
            "{}: ignored {ignored} unparsable certificate(s)",
            path.display()
        );
    }
    Ok(roots)
}

/// The key of a server in a known-hosts file: `host:port`, host lower-cased, IPv6 in brackets.
pub fn host_key(host: &str, port: u16) -> String {
    let host = bare_host(host).to_ascii_lowercase();
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

fn bare_host(host: &str) -> &str {
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
}

/// A known-hosts file: lines of `host:port SHA256:<hex>`; blank lines and `#` comments ignored.
#[derive(Debug, Clone)]
pub struct KnownHosts {
    path: PathBuf,
    entries: Vec<(String, Fingerprint, usize)>,
}

impl KnownHosts {
    /// Reads the file; a missing file is an empty list.
    pub fn load(path: &Path) -> Result<Self, SecureError> {
        let text = match fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(SecureError::file("read", path, e)),
        };
        let mut entries = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line_no = i + 1;
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let syntax = |reason: &str| SecureError::KnownHostsSyntax {
                path: path.to_path_buf(),
                line: line_no,
                reason: reason.to_string(),
            };
            let mut fields = line.split_whitespace();
            let (Some(host), Some(fp), None) = (fields.next(), fields.next(), fields.next()) else {
                return Err(syntax("expected two fields"));
            };
            let fp: Fingerprint = fp
                .parse()
                .map_err(|_| syntax("the second field is not a SHA256: fingerprint"))?;
            entries.push((host.to_ascii_lowercase(), fp, line_no));
        }
        Ok(KnownHosts {
            path: path.to_path_buf(),
            entries,
        })
    }

    /// The recorded fingerprint for `host:port` (see [`host_key`]) and its 1-based line number.
    pub fn lookup(&self, host_port: &str) -> Option<(Fingerprint, usize)> {
        self.entries
            .iter()
            .find(|(h, _, _)| h == host_port)
            .map(|(_, fp, line)| (*fp, *line))
    }

    /// Appends `host_port fingerprint` to the file, creating it (and its folder) if needed.
    pub fn record(&mut self, host_port: &str, fp: Fingerprint) -> Result<(), SecureError> {
        let path = self.path.clone();
        let err = |e| SecureError::file("update", &path, e);
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir).map_err(err)?;
        }
        let existing = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(err(e)),
        };
        let needs_newline = existing.last().is_some_and(|&b| b != b'\n');
        let mut line = String::new();
        if needs_newline {
            line.push('\n');
        }
        line.push_str(&format!("{host_port} {fp}\n"));
        let mut f = fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(&path)
            .map_err(err)?;
        f.write_all(line.as_bytes()).map_err(err)?;
        f.sync_all().map_err(err)?;
        let line_no = existing.iter().filter(|&&b| b == b'\n').count() + 1 + needs_newline as usize;
        self.entries.push((host_port.to_string(), fp, line_no));
        Ok(())
    }
}

/// Accepts exactly one certificate (or, with `expected: None`, any one), recording what it saw;
/// always checks the handshake signature against the presented certificate's key.
#[derive(Debug)]
struct FingerprintVerifier {
    expected: Option<Fingerprint>,
    seen: SeenSlot,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for FingerprintVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let got = Fingerprint::of_der(end_entity);
        *self.seen.lock().unwrap_or_else(|p| p.into_inner()) = Some(got);
        match self.expected {
            Some(expected) if expected != got => Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            )),
            _ => Ok(ServerCertVerified::assertion()),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Where a [`FingerprintVerifier`] records the certificate it saw.
type SeenSlot = Arc<Mutex<Option<Fingerprint>>>;

fn fingerprint_config(
    expected: Option<Fingerprint>,
) -> Result<(Arc<ClientConfig>, SeenSlot), SecureError> {
    let provider = provider();
    let seen = Arc::new(Mutex::new(None));
    let verifier = FingerprintVerifier {
        expected,
        seen: seen.clone(),
        algorithms: provider.signature_verification_algorithms,
    };
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(SecureError::TlsConfig)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    config.enable_secret_extraction = true;
    Ok((Arc::new(config), seen))
}

/// Performs the client side of a TLS handshake on a connected socket, checking the server as
/// `tls` says. `host` is the name the user gave (name, IPv4, IPv6 with or without brackets):
/// it is sent as SNI, checked against the certificate in the CA modes, and with the peer's port
/// forms the known-hosts key.
///
/// Returns only once the server is trusted, so nothing (no token) is sent to an untrusted one.
/// Bound it first (socket timeouts, or a [`Transport`] with deadlines).
pub fn connect<T: Transport>(tls: &ClientTls, host: &str, io: T) -> Result<Stream<T>, SecureError> {
    let peer = peer_name(&io);
    let name = ServerName::try_from(bare_host(host).to_string()).map_err(|_| {
        SecureError::BadServerName {
            host: host.to_string(),
        }
    })?;
    let mut known = None;
    let (config, expected, seen) = match &tls.mode {
        Mode::Verified(config) => (config.clone(), None, None),
        Mode::Pin(fp) => {
            let (config, seen) = fingerprint_config(Some(*fp))?;
            (config, Some(*fp), Some(seen))
        }
        Mode::KnownHosts(path) => {
            let port = io.peer_addr()?.port();
            let key = host_key(host, port);
            let list = KnownHosts::load(path)?;
            let recorded = list.lookup(&key);
            let (config, seen) = fingerprint_config(recorded.map(|r| r.0))?;
            known = Some((list, key, recorded));
            (config, recorded.map(|r| r.0), Some(seen))
        }
    };
    let conn =
        UnbufferedClientConnection::new(config, name).map_err(|source| SecureError::Handshake {
            peer: peer.clone(),
            source,
            hint: "",
        })?;
    let outcome = handshake(&CLIENT, conn, io);
    let got = seen.and_then(|s| *s.lock().unwrap_or_else(|p| p.into_inner()));
    let (tls, leaf) = match outcome {
        Ok(established) => established,
        Err(failure) => {
            // A certificate that is not the expected one is the typed, loud refusal.
            if let (Some(expected), Some(got)) = (expected, got) {
                if expected != got {
                    return Err(match known {
                        Some((list, key, Some((_, line)))) => SecureError::CertificateChanged {
                            host_port: key,
                            expected,
                            got,
                            path: list.path,
                            line,
                        },
                        _ => SecureError::PinMismatch { expected, got },
                    });
                }
            }
            return Err(failure.into_error(peer, true));
        }
    };
    let peer_fp = got.or(leaf);
    let mut newly_trusted = false;
    if let (Some((mut list, key, None)), Some(fp)) = (known, peer_fp) {
        list.record(&key, fp)?;
        // Info, not a warning: callers tell their user themselves (see `Stream::newly_trusted`).
        log::info!(
            "trusting {key} on first use with certificate {fp}; recorded in {}",
            list.path.display()
        );
        newly_trusted = true;
    }
    Ok(Stream::tls(tls, peer_fp, newly_trusted))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_keys() {
        assert_eq!(host_key("Example.ORG", 7878), "example.org:7878");
        assert_eq!(host_key("::1", 1), "[::1]:1");
        assert_eq!(host_key("[::1]", 1), "[::1]:1");
        assert_eq!(host_key("127.0.0.1", 2), "127.0.0.1:2");
    }

    #[test]
    fn known_hosts_record_and_reload() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("deep/er/known_hosts");
        let a = Fingerprint::from_bytes([1; 32]);
        let b = Fingerprint::from_bytes([2; 32]);
        let mut list = KnownHosts::load(&path).unwrap();
        assert_eq!(list.lookup("a:1"), None);
        list.record("a:1", a).unwrap();
        assert_eq!(list.lookup("a:1"), Some((a, 1)));
        // A hand-edited file without a final newline.
        let mut text = fs::read_to_string(&path).unwrap();
        text.push_str("# note");
        fs::write(&path, &text).unwrap();
        let mut list = KnownHosts::load(&path).unwrap();
        list.record("[::1]:2", b).unwrap();
        assert_eq!(list.lookup("[::1]:2"), Some((b, 3)));
        let reloaded = KnownHosts::load(&path).unwrap();
        assert_eq!(reloaded.lookup("a:1"), Some((a, 1)));
        assert_eq!(reloaded.lookup("[::1]:2"), Some((b, 3)));
        for bad in ["onlyone\n", "a:1 SHA256:00 extra\n"] {
            fs::write(&path, bad).unwrap();
            assert!(matches!(
                KnownHosts::load(&path),
                Err(SecureError::KnownHostsSyntax { line: 1, .. })
            ));
        }
    }
}
