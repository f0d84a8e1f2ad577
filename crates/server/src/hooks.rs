//! `--on-stored PROGRAM`: runs a program for each stored file, with no shell, the file's
//! details in its environment only (`FERRY_PATH`, `FERRY_NAME`, `FERRY_SIZE`, `FERRY_DIGEST`,
//! `FERRY_CLIENT`, `FERRY_USER`), so that no name is ever interpolated into a command line.
//! `FERRY_PATH` is the stored file's path, or its object's URL (`s3://BUCKET/KEY`) on an
//! object store.
//! A fixed number of worker threads run them, each killed past the timeout; a bounded queue
//! waits for a worker, and files beyond it are skipped with a log line. Failures are logged
//! and never change the transfer's result (the client was told before the hook runs).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use ferry_proto::Digest;

/// Stored files waiting for a free worker; more are skipped (and logged).
pub const QUEUE: usize = 256;
/// How often a running hook is checked for its end.
const POLL: Duration = Duration::from_millis(20);

/// One stored file, for the hook.
#[derive(Debug)]
pub(crate) struct Stored {
    pub path: PathBuf,
    pub name: String,
    pub size: u64,
    pub digest: Option<Digest>,
    pub client: SocketAddr,
    pub user: Option<String>,
}

/// The hook's workers and their queue.
#[derive(Debug)]
pub(crate) struct Hooks {
    queue: SyncSender<Stored>,
}

impl Hooks {
    /// Starts `concurrency` workers that run `program` (killed after `timeout`).
    pub(crate) fn start(
        program: PathBuf,
        concurrency: usize,
        timeout: Duration,
    ) -> std::io::Result<Self> {
        let (queue, jobs) = sync_channel(QUEUE);
        let jobs = Arc::new(Mutex::new(jobs));
        let program = Arc::new(program);
        for i in 0..concurrency.max(1) {
            let (jobs, program) = (Arc::clone(&jobs), Arc::clone(&program));
            thread::Builder::new()
                .name(format!("ferry-hook-{i}"))
                .spawn(move || work(&jobs, &program, timeout))?;
        }
        Ok(Self { queue })
    }

    /// Queues the hook for `file`; never blocks.
    pub(crate) fn stored(&self, file: Stored) {
        if let Err(TrySendError::Full(f) | TrySendError::Disconnected(f)) =
            self.queue.try_send(file)
        {
            log::warn!(
                "{}: hook not run for {}: {QUEUE} stored files already wait for it",
                f.client,
                f.name
            );
        }
    }
}

/// Checks, at start, that `program` is a file the server's user may run, found as it will be
/// run: a path holding a `/` as it is, a bare name in `PATH`. The error says why not.
pub(crate) fn check(program: &Path) -> Result<(), String> {
    if program.to_string_lossy().contains('/') {
        return runnable(program);
    }
    let dirs = std::env::var_os("PATH").unwrap_or_default();
    if std::env::split_paths(&dirs).any(|dir| runnable(&dir.join(program)).is_ok()) {
        return Ok(());
    }
    Err(format!(
        "no program of that name the server's user may run in PATH ({}); give its path",
        dirs.to_string_lossy()
    ))
}

/// Whether `path` is a regular file the server's (effective) user may execute.
fn runnable(path: &Path) -> Result<(), String> {
    let meta = std::fs::metadata(path).map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    rustix::fs::accessat(
        rustix::fs::CWD,
        path,
        rustix::fs::Access::EXEC_OK,
        rustix::fs::AtFlags::EACCESS,
    )
    .map_err(|e| format!("the server's user may not run it ({e}); chmod +x it"))
}

/// A worker: runs the hook for each queued file until the queue is dropped.
fn work(jobs: &Mutex<Receiver<Stored>>, program: &PathBuf, timeout: Duration) {
    loop {
        let job = match jobs.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let Ok(file) = job else { return };
        run(program, &file, timeout);
    }
}

/// Runs the hook for `file`, logging how it ended.
fn run(program: &PathBuf, file: &Stored, timeout: Duration) {
    let who = format!(
        "{}: hook {} for {}",
        file.client,
        program.display(),
        file.name
    );
    let spawned = Command::new(program)
        .env("FERRY_PATH", &file.path)
        .env("FERRY_NAME", &file.name)
        .env("FERRY_SIZE", file.size.to_string())
        .env(
            "FERRY_DIGEST",
            file.digest.map(|d| d.to_hex()).unwrap_or_default(),
        )
        .env("FERRY_CLIENT", file.client.to_string())
        .env("FERRY_USER", file.user.as_deref().unwrap_or_default())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => {
            log::warn!("{who}: cannot start it: {e}");
            return;
        }
    };
    let until = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => {
                log::debug!("{who}: done");
                return;
            }
            Ok(Some(status)) => {
                log::warn!("{who}: failed ({status})");
                return;
            }
            Ok(None) if Instant::now() >= until => {
                let _ = child.kill();
                let _ = child.wait();
                log::warn!("{who}: killed after {timeout:?}");
                return;
            }
            Ok(None) => thread::sleep(POLL),
            Err(e) => {
                log::warn!("{who}: cannot wait for it: {e}");
                return;
            }
        }
    }
}
