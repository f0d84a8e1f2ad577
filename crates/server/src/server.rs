//! The accept loop: a bounded set of connection threads, refusals over the limit, and a
//! graceful stop (stop accepting, let transfers finish within the grace period, then cut).

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use ferry_proto::{Code, Connection, Driver};
use ferry_secure::{FailureLimiter, SharedFailureLimiter, Stream};
use rustix::event::{poll, PollFd, PollFlags, Timespec};

use crate::config::Config;
use crate::error::ServerError;
use crate::gate::{self, REFUSAL_LINGER};
use crate::locks::NameLocks;
use crate::session::{serve_connection, Shared};
use crate::slots::Slots;
use crate::sources::Sources;
use crate::store::Store;
use crate::stream::{Guarded, StopFlags, Wait};

/// How often the accept loop and the drain wait look at the stop flags.
const TICK: Duration = Duration::from_millis(50);
/// Most sources whose failed authentications are counted at once.
const LIMITER_CAPACITY: usize = 4096;
/// TCP keepalive on accepted sockets: the first probe after this long without traffic...
const KEEPALIVE_IDLE: Duration = Duration::from_secs(30);
/// ... then one every this long ...
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// ... and the kernel drops the connection after this many unanswered ones, so a peer cut off
/// by the network (no FIN ever comes) is noticed in about a minute even with nothing in flight.
const KEEPALIVE_PROBES: u32 = 3;

/// A bound server, ready to [`run`](Server::run) or [`spawn`](Server::spawn).
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    local_addr: SocketAddr,
    shared: Arc<Shared>,
}

/// Asks a server to stop gracefully; cheap to clone and send to other threads.
#[derive(Debug, Clone)]
pub struct ShutdownHandle {
    stop: Arc<StopFlags>,
}

/// A server running on its own thread.
#[derive(Debug)]
pub struct ServerHandle {
    addr: SocketAddr,
    dir: PathBuf,
    stop: ShutdownHandle,
    thread: JoinHandle<Result<(), ServerError>>,
}

impl Server {
    /// Validates `config`, creates the storage folder (removing temp files a crash left
    /// behind) and binds the listening socket (port 0 picks a free port).
    pub fn bind(config: Config) -> Result<Server, ServerError> {
        check(&config)?;
        let store = Store::open(&config).map_err(|source| ServerError::Dir {
            path: config.dir.clone(),
            source,
        })?;
        let bind_err = |source| ServerError::Bind {
            addr: config.listen,
            source,
        };
        let listener = TcpListener::bind(config.listen).map_err(bind_err)?;
        listener.set_nonblocking(true).map_err(bind_err)?;
        let local_addr = listener.local_addr().map_err(bind_err)?;
        announce(&config, local_addr, store.root());
        let shared = Shared {
            slots: Slots::new(config.max_connections, config.evict_after),
            limiter: SharedFailureLimiter::new(FailureLimiter::new(
                config.max_auth_failures,
                config.auth_window,
                LIMITER_CAPACITY,
            )),
            config,
            store,
            locks: Arc::new(NameLocks::default()),
            stop: Arc::new(StopFlags::default()),
        };
        Ok(Server {
            listener,
            local_addr,
            shared: Arc::new(shared),
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The storage folder, canonical.
    pub fn dir(&self) -> &Path {
        self.shared.store.root()
    }

    /// A handle that asks this server to stop.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle {
            stop: Arc::clone(&self.shared.stop),
        }
    }

    /// Serves until a stop is requested, then stops gracefully and returns.
    pub fn run(self) -> Result<(), ServerError> {
        let Server {
            listener, shared, ..
        } = self;
        let mut workers: Vec<JoinHandle<()>> = Vec::new();
        let admission = Admission {
            refusing: Arc::new(AtomicUsize::new(0)),
            sources: Sources::new(shared.config.max_per_source),
        };
        let result = accept_loop(&listener, &shared, &mut workers, &admission);
        drop(listener);
        drain(&shared, workers);
        result
    }

    /// Runs the server on a new thread; fails if the system refuses to start one.
    pub fn spawn(self) -> Result<ServerHandle, ServerError> {
        let addr = self.local_addr;
        let dir = self.dir().to_path_buf();
        let stop = self.shutdown_handle();
        let thread = thread::Builder::new()
            .name("ferry-accept".into())
            .spawn(move || self.run())
            .map_err(|e| ServerError::Thread(format!("cannot start the accept thread: {e}")))?;
        Ok(ServerHandle {
            addr,
            dir,
            stop,
            thread,
        })
    }
}

impl ShutdownHandle {
    /// Requests a graceful stop: no new connections or files; transfers in flight may finish
    /// within the grace period. Returns at once; idempotent.
    pub fn shutdown(&self) {
        self.stop.draining.store(true, Ordering::Relaxed);
    }
}

impl ServerHandle {
    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The storage folder, canonical.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A handle that asks the server to stop without waiting.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.stop.clone()
    }

    /// Stops gracefully and waits until every connection is done.
    pub fn shutdown(self) -> Result<(), ServerError> {
        self.stop.shutdown();
        self.thread
            .join()
            .map_err(|_| ServerError::Thread("the accept thread panicked".into()))?
    }
}

fn check(config: &Config) -> Result<(), ServerError> {
    let bad = |what: &str| Err(ServerError::Config(what.to_owned()));
    if config.max_connections == 0 || config.max_per_source == 0 {
        return bad("the connection limits (in all and per source) must be at least 1");
    }
    let timeouts = [
        config.header_timeout,
        config.idle_timeout,
        config.stall_timeout,
        config.evict_after,
        config.takeover_after,
    ];
    if timeouts.iter().any(Duration::is_zero) {
        return bad("timeouts must be longer than zero");
    }
    if config.max_auth_failures == 0 || config.auth_window.is_zero() {
        return bad("the failed-authentication limit and its window must be above zero");
    }
    Ok(())
}

/// Logs where the server listens and how it is protected, warning when other machines can
/// reach it without a token or without TLS.
fn announce(config: &Config, addr: SocketAddr, root: &Path) {
    if let Some(warning) = exposure_warning(config, addr, root) {
        log::warn!("{warning}");
    }
    let root = root.display();
    log::info!("listening on {addr}, storing into {root}");
    if let Some(tls) = &config.tls {
        log::info!(
            "TLS 1.3 required; certificate fingerprint: {} (clients can --pin it)",
            tls.fingerprint()
        );
    }
    if config.token.is_some() {
        log::info!(
            "token required; at most {} failed attempts per source every {:?}",
            config.max_auth_failures,
            config.auth_window
        );
    }
    if config.accept_seed && !config.seed_allowed() {
        log::info!("the seed framing is refused: it has no token and no encryption");
    }
}

/// The warning for a server that other machines can reach without a token, or with a token
/// but without TLS (the token then crosses the network in clear).
fn exposure_warning(config: &Config, addr: SocketAddr, root: &Path) -> Option<String> {
    if addr.ip().is_loopback() {
        return None;
    }
    let root = root.display();
    match (&config.token, &config.tls) {
        (None, _) => Some(format!(
            "LISTENING ON {addr}, WHICH OTHER MACHINES CAN REACH, WITHOUT AUTHENTICATION: \
             anyone who can connect can upload files into {root} and download every file in it \
             (set --token-file)"
        )),
        (Some(_), None) => Some(format!(
            "LISTENING ON {addr}, WHICH OTHER MACHINES CAN REACH, WITHOUT TLS: the token and \
             every file cross the network in clear (set --tls-cert/--tls-key or \
             --tls-self-signed)"
        )),
        (Some(_), Some(_)) => None,
    }
}

/// What the accept loop counts besides the connection threads.
struct Admission {
    /// Busy refusals being sent right now.
    refusing: Arc<AtomicUsize>,
    /// Connections open per source.
    sources: Arc<Sources>,
}

fn accept_loop(
    listener: &TcpListener,
    shared: &Arc<Shared>,
    workers: &mut Vec<JoinHandle<()>>,
    admission: &Admission,
) -> Result<(), ServerError> {
    let tick = Timespec::try_from(TICK).expect("a small duration");
    while !shared.stop.draining.load(Ordering::Relaxed) {
        let mut fds = [PollFd::new(listener, PollFlags::IN)];
        match poll(&mut fds, Some(&tick)) {
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(ServerError::Listen(e.into())),
        }
        reap(workers);
        match listener.accept() {
            Ok((stream, peer)) => admit(stream, peer, shared, workers, admission),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                // Out of file descriptors and the like: wait a little rather than spin.
                log::warn!("accept failed: {e}");
                thread::sleep(TICK);
            }
        }
    }
    Ok(())
}

fn reap(workers: &mut Vec<JoinHandle<()>>) {
    let mut i = 0;
    while i < workers.len() {
        if workers[i].is_finished() {
            if workers.swap_remove(i).join().is_err() {
                log::error!("a connection thread panicked (a bug); the server goes on");
            }
        } else {
            i += 1;
        }
    }
}

/// Sets up an accepted socket: blocking, no Nagle delay, TCP keepalive.
fn set_up(stream: &TcpStream) -> std::io::Result<()> {
    use rustix::net::sockopt;
    stream.set_nonblocking(false)?;
    stream.set_nodelay(true)?;
    sockopt::set_socket_keepalive(stream, true)?;
    sockopt::set_tcp_keepidle(stream, KEEPALIVE_IDLE)?;
    sockopt::set_tcp_keepintvl(stream, KEEPALIVE_INTERVAL)?;
    sockopt::set_tcp_keepcnt(stream, KEEPALIVE_PROBES)?;
    Ok(())
}

fn admit(
    stream: TcpStream,
    peer: SocketAddr,
    shared: &Arc<Shared>,
    workers: &mut Vec<JoinHandle<()>>,
    admission: &Admission,
) {
    if let Err(e) = set_up(&stream) {
        log::warn!("{peer}: cannot set up the socket: {e}");
        return;
    }
    let c = &shared.config;
    if c.token.is_some() && !shared.limiter.check(peer.ip(), Instant::now()) {
        let left = shared.limiter.retry_after(peer.ip(), Instant::now());
        log::warn!(
            "{peer}: refused before the handshake: too many failed authentications from this \
             source (for {:.0?} more)",
            left.unwrap_or_default()
        );
        return;
    }
    if workers.len() >= c.max_connections.saturating_add(c.max_handshakes) {
        log::warn!("{peer}: refused, the server is at its connection limit");
        refuse_busy(
            stream,
            peer,
            shared,
            admission,
            busy_reason(c.max_connections),
        );
        return;
    }
    let Some(ticket) = admission.sources.try_open(peer.ip()) else {
        let max = admission.sources.max();
        log::warn!("{peer}: refused, its address has {max} connections open already");
        let why = format!(
            "your address has {max} connections open, the most this server allows per \
             address; close some or try again later"
        );
        refuse_busy(stream, peer, shared, admission, why);
        return;
    };
    log::debug!("{peer}: connected");
    let shared = Arc::clone(shared);
    let spawned = thread::Builder::new()
        .name(format!("ferry-conn-{peer}"))
        .spawn(move || {
            serve_connection(stream, peer, &shared);
            drop(ticket);
        });
    match spawned {
        Ok(handle) => workers.push(handle),
        Err(e) => log::error!("{peer}: cannot start a connection thread: {e}"),
    }
}

/// Tells a client over a limit that the server is busy and `why`, on a short-lived thread that
/// lets it read the refusal before the socket closes. Refusals are bounded too, in number and
/// in time: with TLS, the handshake comes first (a plain error would be garbage to a TLS
/// client), and all of it must fit in [`REFUSAL_LINGER`].
fn refuse_busy(
    stream: TcpStream,
    peer: SocketAddr,
    shared: &Arc<Shared>,
    admission: &Admission,
    why: String,
) {
    let max = shared.config.max_connections;
    let refusing = &admission.refusing;
    if refusing.fetch_add(1, Ordering::Relaxed) >= max {
        refusing.fetch_sub(1, Ordering::Relaxed);
        return;
    }
    let refusing = Arc::clone(refusing);
    let shared = Arc::clone(shared);
    let spawned = thread::Builder::new()
        .name("ferry-busy".into())
        .spawn(move || {
            let mut io = Guarded::new(stream, &shared.stop, REFUSAL_LINGER);
            io.set_wait(Wait::Until(Instant::now() + REFUSAL_LINGER), false);
            io.close_within(REFUSAL_LINGER);
            let opened = match &shared.config.tls {
                // Plain: the refusal goes out before anything is read, as it always has.
                None => Some(Stream::plain(io)),
                Some(tls) => gate::open(io, peer, Some(tls)),
            };
            if let Some(stream) = opened {
                let mut d = Driver::new(stream, Connection::server());
                d.conn_mut().close_with_error(Code::Busy, &why);
                let flushed = d.flush().is_ok();
                let (mut stream, _) = d.into_parts();
                gate::shutdown(&mut stream);
                if flushed {
                    gate::linger(&mut stream);
                }
            }
            refusing.fetch_sub(1, Ordering::Relaxed);
        });
    if spawned.is_err() {
        // The closure (and its decrement) never ran.
        log::error!("{peer}: cannot start a thread to refuse the connection");
    }
}

/// What a client over the limit is told.
pub(crate) fn busy_reason(max: usize) -> String {
    format!("the server is at its limit of {max} connections; try again later")
}

/// Waits for connections to finish within the grace period, then cuts the rest.
fn drain(shared: &Shared, mut workers: Vec<JoinHandle<()>>) {
    shared.stop.draining.store(true, Ordering::Relaxed);
    let deadline = Instant::now() + shared.config.grace;
    reap(&mut workers);
    if !workers.is_empty() {
        log::info!(
            "shutting down: waiting up to {:?} for {} connection(s)",
            shared.config.grace,
            workers.len()
        );
    }
    while !workers.is_empty() && Instant::now() < deadline {
        thread::sleep(TICK);
        reap(&mut workers);
    }
    if !workers.is_empty() {
        log::warn!(
            "grace period over: dropping {} connection(s); unfinished files are not published",
            workers.len()
        );
        shared.stop.abort.store(true, Ordering::Relaxed);
    }
    for w in workers {
        if w.join().is_err() {
            log::error!("a connection thread panicked (a bug)");
        }
    }
    log::info!("server stopped");
}

#[cfg(test)]
impl Server {
    /// The store, before the server runs (tests replace how it makes files durable).
    pub(crate) fn store_mut(&mut self) -> &mut crate::store::Store {
        &mut Arc::get_mut(&mut self.shared)
            .expect("not shared before it runs")
            .store
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_secure::{ServerTls, Token};

    #[test]
    fn reachable_servers_warn_unless_they_have_a_token_and_tls() {
        let state = tempfile::tempdir().unwrap();
        let tls = ServerTls::self_signed(state.path()).unwrap();
        let token = Token::new(b"t".to_vec()).unwrap();
        let root = Path::new("/srv/inbox");
        let public: SocketAddr = "192.0.2.7:8386".parse().unwrap();
        let loopback: SocketAddr = "[::1]:8386".parse().unwrap();
        let warn = |tls: Option<&ServerTls>, token: Option<&Token>, addr| {
            let config = Config {
                tls: tls.cloned(),
                token: token.cloned(),
                ..Config::default()
            };
            exposure_warning(&config, addr, root)
        };
        for (t, k) in [(None, None), (Some(&tls), None), (None, Some(&token))] {
            assert_eq!(warn(t, k, loopback), None);
        }
        let open = warn(None, None, public).unwrap();
        assert!(open.contains("WITHOUT AUTHENTICATION"), "{open}");
        let tls_only = warn(Some(&tls), None, public).unwrap();
        assert!(tls_only.contains("WITHOUT AUTHENTICATION"), "{tls_only}");
        let token_only = warn(None, Some(&token), public).unwrap();
        assert!(token_only.contains("WITHOUT TLS"), "{token_only}");
        assert!(token_only.contains("in clear"), "{token_only}");
        assert_eq!(warn(Some(&tls), Some(&token), public), None);
    }

    #[test]
    fn the_seed_framing_is_allowed_only_without_tls_and_token() {
        let token = Token::new(b"t".to_vec()).unwrap();
        assert!(Config::default().seed_allowed());
        let with_token = Config {
            token: Some(token),
            ..Config::default()
        };
        assert!(!with_token.seed_allowed());
        let no_seed = Config {
            accept_seed: false,
            ..Config::default()
        };
        assert!(!no_seed.seed_allowed());
    }
}
