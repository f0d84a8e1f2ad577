//! The accept loop: a bounded set of connection threads, refusals over the limit, and a
//! graceful stop (stop accepting, let transfers finish within the grace period, then cut).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use ferry_proto::{Code, Connection, Driver};
use rustix::event::{poll, PollFd, PollFlags, Timespec};

use crate::config::Config;
use crate::error::ServerError;
use crate::locks::NameLocks;
use crate::session::{serve_connection, Shared};
use crate::slots::Slots;
use crate::store::Store;
use crate::stream::StopFlags;

/// How often the accept loop and the drain wait look at the stop flags.
const TICK: Duration = Duration::from_millis(50);
/// How long a refused client gets to read its refusal before the socket closes.
const REFUSAL_LINGER: Duration = Duration::from_secs(1);

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
        if !local_addr.ip().is_loopback() {
            log::warn!(
                "LISTENING ON {local_addr}, WHICH OTHER MACHINES CAN REACH, WITHOUT AUTHENTICATION: \
                 anyone who can connect can upload files into {} and download every file in it",
                store.root().display()
            );
        }
        log::info!(
            "listening on {local_addr}, storing into {}",
            store.root().display()
        );
        let shared = Shared {
            slots: Slots::new(config.max_connections),
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
        let refusing = Arc::new(AtomicUsize::new(0));
        let result = accept_loop(&listener, &shared, &mut workers, &refusing);
        drop(listener);
        drain(&shared, workers);
        result
    }

    /// Runs the server on a new thread.
    pub fn spawn(self) -> ServerHandle {
        let addr = self.local_addr;
        let dir = self.dir().to_path_buf();
        let stop = self.shutdown_handle();
        let thread = thread::Builder::new()
            .name("ferry-accept".into())
            .spawn(move || self.run())
            .expect("spawning the accept thread");
        ServerHandle {
            addr,
            dir,
            stop,
            thread,
        }
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
    if config.max_connections == 0 {
        return bad("the connection limit must be at least 1");
    }
    if config.header_timeout.is_zero() || config.idle_timeout.is_zero() {
        return bad("timeouts must be longer than zero");
    }
    Ok(())
}

fn accept_loop(
    listener: &TcpListener,
    shared: &Arc<Shared>,
    workers: &mut Vec<JoinHandle<()>>,
    refusing: &Arc<AtomicUsize>,
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
            Ok((stream, peer)) => admit(stream, peer, shared, workers, refusing),
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

fn admit(
    stream: TcpStream,
    peer: SocketAddr,
    shared: &Arc<Shared>,
    workers: &mut Vec<JoinHandle<()>>,
    refusing: &Arc<AtomicUsize>,
) {
    if let Err(e) = stream
        .set_nonblocking(false)
        .and_then(|()| stream.set_nodelay(true))
    {
        log::warn!("{peer}: cannot set up the socket: {e}");
        return;
    }
    let c = &shared.config;
    if workers.len() >= c.max_connections.saturating_add(c.max_handshakes) {
        refuse_busy(stream, peer, c.max_connections, refusing);
        return;
    }
    log::debug!("{peer}: connected");
    let shared = Arc::clone(shared);
    let spawned = thread::Builder::new()
        .name(format!("ferry-conn-{peer}"))
        .spawn(move || serve_connection(stream, peer, &shared));
    match spawned {
        Ok(handle) => workers.push(handle),
        Err(e) => log::error!("{peer}: cannot start a connection thread: {e}"),
    }
}

/// Tells a client over the limit that the server is busy, on a short-lived thread that lets
/// it read the refusal before the socket closes. Refusals are bounded too.
fn refuse_busy(stream: TcpStream, peer: SocketAddr, max: usize, refusing: &Arc<AtomicUsize>) {
    log::warn!("{peer}: refused, the server is at its connection limit");
    if refusing.fetch_add(1, Ordering::Relaxed) >= max {
        refusing.fetch_sub(1, Ordering::Relaxed);
        return;
    }
    let refusing = Arc::clone(refusing);
    let spawned = thread::Builder::new()
        .name("ferry-busy".into())
        .spawn(move || {
            let _ = stream.set_write_timeout(Some(REFUSAL_LINGER));
            let _ = stream.set_read_timeout(Some(REFUSAL_LINGER));
            let mut d = Driver::new(&stream, Connection::server());
            d.conn_mut().close_with_error(Code::Busy, &busy_reason(max));
            if d.flush().is_ok() {
                linger(&stream);
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

/// Half-closes and reads what the client still sends for a moment, so that closing does not
/// reset the connection before the client has read our last words.
fn linger(mut stream: &TcpStream) {
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let until = Instant::now() + REFUSAL_LINGER;
    let mut sink = [0u8; 4096];
    while Instant::now() < until {
        match stream.read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
    let _ = stream.flush();
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
