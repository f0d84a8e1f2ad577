//! The accept loop: a bounded set of connection threads, refusals over the limit, and a
//! graceful stop (stop accepting, let transfers finish within the grace period, then cut).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use ferry_proto::wire::Frame;
use ferry_proto::{Code, Connection, Driver};
use ferry_secure::{FailureLimiter, SharedFailureLimiter, Stream};
use rustix::event::{poll, PollFd, PollFlags, Timespec};

use crate::access::Access;
use crate::config::Config;
use crate::error::ServerError;
use crate::gate::{self, REFUSAL_LINGER};
use crate::hooks::{self, Hooks};
use crate::locks::NameLocks;
use crate::openings::{Openings, DISPLACE_AFTER};
use crate::proxy;
use crate::session::{serve_connection, Shared};
use crate::slots::Slots;
use crate::sources::{SourceTicket, Sources};
use crate::storage::{self, Storage};
use crate::stream::{Guarded, StopFlags, Wait};
use crate::throttle::{Kind, Refusals};

/// How often the accept loop and the drain wait look at the stop flags.
const TICK: Duration = Duration::from_millis(50);
/// Most reads (of 4 KiB) of what a client refused without a thread sent, before its socket is
/// closed: bounded, as the accept loop does it.
const BLURT_READS: usize = 16;
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
        let store = storage::open(&config).map_err(|source| match &config.object_store {
            Some(store) => ServerError::ObjectStore {
                url: store.url.clone(),
                message: source.to_string(),
            },
            None => ServerError::Dir {
                path: config.dir.clone(),
                source: explain_dir_error(&config.dir, source),
            },
        })?;
        Self::with_storage(config, store)
    }

    /// Binds a server that stores into `store` (opened from `config` by [`Server::bind`]).
    pub(crate) fn with_storage(
        config: Config,
        store: Arc<dyn Storage>,
    ) -> Result<Server, ServerError> {
        let bind_err = |source| ServerError::Bind {
            addr: config.listen,
            source,
        };
        let listener = TcpListener::bind(config.listen).map_err(bind_err)?;
        listener.set_nonblocking(true).map_err(bind_err)?;
        let local_addr = listener.local_addr().map_err(bind_err)?;
        announce(&config, local_addr, &store.describe());
        let access = Arc::new(Access::new(&config));
        let mut shared = Shared {
            slots: Slots::new(config.max_connections, config.evict_after),
            limiter: SharedFailureLimiter::new(FailureLimiter::new(
                config.max_auth_failures,
                config.auth_window,
                LIMITER_CAPACITY,
            )),
            access: Arc::clone(&access),
            spaces: Vec::new(),
            metrics: Arc::default(),
            refusals: Arc::new(Refusals::new()),
            hooks: match &config.on_stored {
                Some(program) => Some(Arc::new(
                    Hooks::start(
                        program.clone(),
                        config.hook_concurrency,
                        config.hook_timeout,
                    )
                    .map_err(|e| {
                        ServerError::Thread(format!("cannot start the hook workers: {e}"))
                    })?,
                )),
                None => None,
            },
            store,
            locks: Arc::new(NameLocks::default()),
            stop: Arc::new(StopFlags::default()),
            config,
        };
        if let Some(addr) = shared.config.metrics_listen {
            let bound = shared
                .metrics
                .serve(addr)
                .map_err(|source| ServerError::Bind { addr, source })?;
            log::info!("metrics at http://{bound}/metrics");
        }
        for folder in access.folders() {
            let sub = shared.store.sub_storage(folder, &shared.config);
            let sub = sub.map_err(|source| ServerError::Dir {
                path: shared.config.dir.join(folder.as_str()),
                source,
            })?;
            let space = shared.space(sub);
            shared.spaces.push(space);
        }
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

    /// The storage folder, canonical ([`Config::dir`] as given for a storage that is not a
    /// local folder).
    pub fn dir(&self) -> &Path {
        let s = &self.shared;
        s.store.local_folder().unwrap_or(&s.config.dir)
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
            openings: Openings::new(DISPLACE_AFTER),
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

/// Puts a storage path that is not a folder in words a user can act on, rather than the
/// system's "File exists" or "Not a directory"; other errors pass unchanged.
fn explain_dir_error(dir: &Path, e: std::io::Error) -> std::io::Error {
    use std::io::{Error, ErrorKind};
    match std::fs::metadata(dir) {
        Ok(m) if !m.is_dir() => Error::new(
            ErrorKind::NotADirectory,
            "it is a file, not a folder: give --dir a folder (it is created if missing)",
        ),
        _ if e.kind() == ErrorKind::NotADirectory => Error::new(
            ErrorKind::NotADirectory,
            "part of that path is a file, not a folder",
        ),
        _ => e,
    }
}

/// Refuses, before anything is bound, a configuration that cannot work: limits or timeouts of
/// zero, an `--on-stored` program the server cannot run.
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
    if let Some(program) = &config.on_stored {
        hooks::check(program)
            .or_else(|why| bad(&format!("--on-stored {}: {why}", program.display())))?;
    }
    Ok(())
}

/// Logs where the server listens and how it is protected, warning when other machines can
/// reach it without a token or without TLS.
fn announce(config: &Config, addr: SocketAddr, root: &str) {
    if let Some(warning) = exposure_warning(config, addr, root) {
        log::warn!("{warning}");
    }
    log::info!("listening on {addr}, storing into {root}");
    if let Some(tls) = &config.tls {
        log::info!(
            "TLS 1.3 required; certificate fingerprint: {} (clients can --pin it)",
            tls.fingerprint()
        );
    }
    log::info!(
        "clients without a token may: {} (set with --anonymous)",
        config.anonymous_permissions()
    );
    for c in config.all_credentials() {
        let folder = c
            .folder
            .as_ref()
            .map(|f| format!(", in {root}/{f}"))
            .unwrap_or_default();
        log::info!("token {:?}: {}{folder}", c.name, c.permissions);
    }
    if config.has_tokens() {
        log::info!(
            "token required; at most {} failed attempts per source every {:?}",
            config.max_auth_failures,
            config.auth_window
        );
    }
    if !config.trusted_proxies.is_empty() {
        let proxies: Vec<String> = config
            .trusted_proxies
            .iter()
            .map(|t| t.to_string())
            .collect();
        log::info!(
            "a PROXY protocol v2 header is required from {}; other addresses connect directly",
            proxies.join(", ")
        );
    }
    if config.accept_seed && !config.seed_allowed() {
        log::info!("the seed framing is refused: it has no token and no encryption");
    }
}

/// The warning for a server that other machines can reach without a token, or with a token
/// but without TLS (the token then crosses the network in clear).
fn exposure_warning(config: &Config, addr: SocketAddr, root: &str) -> Option<String> {
    if addr.ip().is_loopback() {
        return None;
    }
    let anonymous = config.anonymous_permissions();
    match (config.has_tokens(), &config.tls) {
        (false, _) | (true, _) if !anonymous.is_none() => Some(format!(
            "LISTENING ON {addr}, WHICH OTHER MACHINES CAN REACH, WITHOUT AUTHENTICATION: \
             anyone who can connect may {anonymous} in {root} (set --token-file, tokens in \
             --config, or --anonymous none)"
        )),
        (true, None) => Some(format!(
            "LISTENING ON {addr}, WHICH OTHER MACHINES CAN REACH, WITHOUT TLS: the token and \
             every file cross the network in clear (set --tls-cert/--tls-key or \
             --tls-self-signed)"
        )),
        _ => None,
    }
}

/// What the accept loop counts besides the connection threads.
struct Admission {
    /// Busy refusals being sent right now.
    refusing: Arc<AtomicUsize>,
    /// Connections open per source.
    sources: Arc<Sources>,
    /// Connections without a slot, which a newcomer may displace when the server is full.
    openings: Arc<Openings>,
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
        let ready = match poll(&mut fds, Some(&tick)) {
            Ok(ready) => ready > 0,
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(ServerError::Listen(e.into())),
        };
        reap(workers);
        shared.refusals.tick();
        if !ready {
            // A tick without a connection: only the stop flag and the finished threads to see.
            continue;
        }
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
    // A trusted proxy's connections are screened on their own thread, once its PROXY header
    // has named the client: the proxy's address is neither blocked nor capped as one source.
    let proxied = proxy::is_trusted(&c.trusted_proxies, peer.ip());
    if !proxied {
        if let Some(no) = blocked(peer, shared) {
            return refuse(stream, peer, shared, admission, no);
        }
    }
    let ticket = if proxied {
        None
    } else {
        match per_source(peer, &admission.sources, &shared.refusals) {
            Ok(ticket) => Some(ticket),
            Err(no) => return refuse(stream, peer, shared, admission, no),
        }
    };
    if !make_room(workers.len(), shared, &admission.openings) {
        shared.refusals.warn(
            Kind::Full,
            format_args!("{peer}: refused, the server is at its connection limit"),
        );
        let why = busy_reason(c.max_connections);
        let no = Refusal::busy(why);
        return refuse(stream, peer, shared, admission, no);
    }
    let opening = match admission.openings.register(&stream, peer) {
        Ok(opening) => opening,
        Err(e) => {
            log::warn!("{peer}: cannot set up the socket: {e}");
            return;
        }
    };
    log::debug!("{peer}: connected");
    let shared = Arc::clone(shared);
    let sources = Arc::clone(&admission.sources);
    let spawned = thread::Builder::new()
        .name(format!("ferry-conn-{peer}"))
        .spawn(move || {
            let started = Instant::now();
            let c = &shared.config;
            let mut io = Guarded::new(stream, &shared.stop, c.idle_timeout);
            io.set_opening(opening);
            // The PROXY header and the TLS handshake count against the time to open.
            io.set_wait(Wait::Until(started + c.header_timeout), true);
            let (peer, _ticket) = match ticket {
                Some(ticket) => (peer, ticket),
                None => match unwrap_proxied(&mut io, peer, &shared, &sources) {
                    Ok(admitted) => admitted,
                    Err(Some((client, no))) => return tell(io, client, &shared, no),
                    Err(None) => return,
                },
            };
            serve_connection(io, peer, started, &shared);
        });
    match spawned {
        Ok(handle) => workers.push(handle),
        Err(e) => log::error!("{peer}: cannot start a connection thread: {e}"),
    }
}

/// Whether a newcomer may have a thread, `running` connection threads being there: yes below
/// `--max-connections` plus `--max-handshakes` (those displaced and ending not counted); at
/// the limit, only if the oldest connection without a slot (past [`DISPLACE_AFTER`]: still
/// opening, or on probation) is displaced to make room (logged). Displaced threads end at
/// once, but never more than the limit's worth of them are waited for at a time.
fn make_room(running: usize, shared: &Shared, openings: &Openings) -> bool {
    let c = &shared.config;
    let pool = c.max_connections.saturating_add(c.max_handshakes);
    let leaving = openings.leaving();
    if running.saturating_sub(leaving) < pool {
        return true;
    }
    if leaving >= pool {
        return false;
    }
    match openings.displace() {
        Some((victim, age)) => {
            shared.refusals.warn(
                Kind::Displaced,
                format_args!(
                    "{victim}: closed without a slot after {age:.1?}: the server is full and a \
                     newcomer takes its place"
                ),
            );
            true
        }
        None => false,
    }
}

/// Reads the PROXY header of a connection from the trusted proxy `proxy`, then screens the
/// client it names as a direct one is screened at accept. The client and its source ticket;
/// or the client and why it is refused; or `None` when the header was bad (logged).
fn unwrap_proxied(
    io: &mut Guarded<'_>,
    proxy: SocketAddr,
    shared: &Shared,
    sources: &Arc<Sources>,
) -> Result<(SocketAddr, SourceTicket), Option<(SocketAddr, Refusal)>> {
    let client = match proxy::read_header(io, proxy) {
        Ok(client) => client,
        Err(e) => {
            log::warn!("{proxy}: closing: {e}");
            return Err(None);
        }
    };
    log::debug!("{client}: connected through {proxy}");
    if let Some(no) = blocked(client, shared) {
        return Err(Some((client, no)));
    }
    match per_source(client, sources, &shared.refusals) {
        Ok(ticket) => Ok((client, ticket)),
        Err(no) => Err(Some((client, no))),
    }
}

/// Why a connection is refused before it is served: a code, words for the client, and
/// whether (with TLS) the TLS handshake comes first.
struct Refusal {
    code: Code,
    why: String,
    handshake: bool,
}

impl Refusal {
    /// Over a connection limit: told after the TLS handshake, as any answer.
    fn busy(why: String) -> Self {
        Self {
            code: Code::Busy,
            why,
            handshake: true,
        }
    }
}

/// The refusal (logged) for a source that failed to authenticate too often, if it did.
fn blocked(peer: SocketAddr, shared: &Shared) -> Option<Refusal> {
    if !shared.config.has_tokens() || shared.limiter.check(peer.ip(), Instant::now()) {
        return None;
    }
    let left = shared
        .limiter
        .retry_after(peer.ip(), Instant::now())
        .unwrap_or_default();
    shared.refusals.warn(
        Kind::Blocked,
        format_args!(
            "{peer}: refused before the handshake: too many failed authentications from this \
             source (for {left:.0?} more)"
        ),
    );
    // Said in plain, before any TLS: a blocked source costs no handshake. A ferry client
    // reads it as the server's answer whether it speaks TLS or not.
    Some(Refusal {
        code: Code::Denied,
        why: format!(
            "blocked after too many failed logins from your address; try again in {} s",
            left.as_secs().saturating_add(1)
        ),
        handshake: false,
    })
}

/// Counts a connection from `peer`'s source, or the refusal (logged) when it has too many.
fn per_source(
    peer: SocketAddr,
    sources: &Arc<Sources>,
    refusals: &Refusals,
) -> Result<SourceTicket, Refusal> {
    sources.try_open(peer.ip()).ok_or_else(|| {
        let max = sources.max();
        refusals.warn(
            Kind::Source,
            format_args!("{peer}: refused, its address has {max} connections open already"),
        );
        Refusal::busy(format!(
            "your address has {max} connections open, the most this server allows per \
             address; close some or try again later"
        ))
    })
}

/// Tells a client over a limit why, on a short-lived thread that lets it read the refusal
/// before the socket closes. Refusals are bounded too, in number and in time (see [`tell`]):
/// past `--max-connections` of them at once, the refusal is [blurted](blurt) instead.
fn refuse(
    stream: TcpStream,
    peer: SocketAddr,
    shared: &Arc<Shared>,
    admission: &Admission,
    no: Refusal,
) {
    let max = shared.config.max_connections;
    let refusing = &admission.refusing;
    if refusing.fetch_add(1, Ordering::Relaxed) >= max {
        refusing.fetch_sub(1, Ordering::Relaxed);
        return blurt(&stream, &no);
    }
    let refusing = Arc::clone(refusing);
    let shared = Arc::clone(shared);
    let spawned = thread::Builder::new()
        .name("ferry-busy".into())
        .spawn(move || {
            let io = Guarded::new(stream, &shared.stop, REFUSAL_LINGER);
            tell(io, peer, &shared, no);
            refusing.fetch_sub(1, Ordering::Relaxed);
        });
    if spawned.is_err() {
        // The closure (and its decrement) never ran.
        log::error!("{peer}: cannot start a thread to refuse the connection");
    }
}

/// Refuses without a thread, on the accept loop, where nothing may block: the ERROR frame in
/// plain (a TLS client reads it as it reads a blocked source's) in one non-blocking write,
/// which a fresh socket's empty send buffer takes whole; then the sending half is shut down,
/// and what the client sent so far is read and dropped (non-blocking), so that closing is less
/// likely to reset the connection before the client reads why. Never a silent close.
fn blurt(stream: &TcpStream, no: &Refusal) {
    let mut frame = Vec::new();
    Frame::Error {
        code: no.code,
        reason: no.why.clone(),
    }
    .encode(&mut frame);
    // Best effort throughout: the peer may be gone already.
    let _ = stream.set_nonblocking(true);
    let _ = (&*stream).write(&frame);
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let mut sink = [0u8; 4096];
    for _ in 0..BLURT_READS {
        if !matches!((&*stream).read(&mut sink), Ok(n) if n > 0) {
            break;
        }
    }
}

/// Sends `no` and closes: with TLS and `no.handshake`, the handshake comes first (the client
/// then reads the refusal as it reads any answer); all of it must fit in [`REFUSAL_LINGER`].
fn tell(mut io: Guarded<'_>, peer: SocketAddr, shared: &Shared, no: Refusal) {
    io.set_wait(Wait::Until(Instant::now() + REFUSAL_LINGER), false);
    io.close_within(REFUSAL_LINGER);
    let opened = match &shared.config.tls {
        Some(tls) if no.handshake => gate::open(io, peer, Some(tls)),
        // Plain: the refusal goes out before anything is read, as it always has.
        _ => Some(Stream::plain(io)),
    };
    if let Some(stream) = opened {
        let mut d = Driver::new(stream, Connection::server());
        d.conn_mut().close_with_error(no.code, &no.why);
        let flushed = d.flush().is_ok();
        let (mut stream, _) = d.into_parts();
        gate::shutdown(&mut stream);
        if flushed {
            gate::linger(&mut stream);
        }
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
mod tests {
    use super::*;
    use ferry_secure::{ServerTls, Token};

    #[test]
    fn reachable_servers_warn_unless_they_have_a_token_and_tls() {
        let state = tempfile::tempdir().unwrap();
        let tls = ServerTls::self_signed(state.path()).unwrap();
        let token = Token::new(b"t".to_vec()).unwrap();
        let root = "/srv/inbox";
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
