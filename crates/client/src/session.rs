//! One ferry-framing conversation with a server, as uploads and downloads share it: connect,
//! say HELLO, turn the events every conversation can meet (WELCOME, a fatal ERROR, an early
//! close) into state or errors, and end cleanly.

use std::io::Read;
use std::time::{Duration, Instant};

use ferry_proto::{Connection, DriveError, Driver, Event, Step};
use ferry_secure::{Stream, Token};

use crate::error::ClientError;
use crate::net::{self, Options};
use crate::report::Observer;
use crate::sniff;
use crate::target::Target;
use crate::timed::Timed;

/// Longest wait, after our clean end over TLS, for the server's `close_notify` and end.
const LINGER: Duration = Duration::from_secs(2);

pub(crate) struct Session<'a> {
    pub(crate) target: &'a Target,
    pub(crate) opts: &'a Options,
    pub(crate) driver: Driver<Stream<Timed>>,
    welcomed: bool,
    /// The last step was body bytes: the body goes on, with the same budget.
    in_body: bool,
}

impl<'a> Session<'a> {
    /// Connects (with TLS, only returns once the server is trusted) and queues HELLO, with the
    /// token if any (sent with the first commands).
    pub(crate) fn open(
        target: &'a Target,
        opts: &'a Options,
        obs: &mut dyn Observer,
    ) -> Result<Self, ClientError> {
        let stream = net::open(target, opts)?;
        if stream.newly_trusted() {
            if let Some(fp) = stream.peer_fingerprint() {
                obs.trusted(target, &fp);
            }
        }
        let conn = Connection::client(opts.token.as_ref().map(Token::as_bytes))?;
        Ok(Self {
            target,
            opts,
            driver: Driver::new(stream, conn),
            welcomed: false,
            in_body: false,
        })
    }

    /// Whether the server said WELCOME: it is a ferry server that let us in. The machine's
    /// word is taken too: a frame after the WELCOME, read with it, may have failed before the
    /// WELCOME was stepped to.
    pub(crate) fn welcomed(&self) -> bool {
        self.welcomed || self.version().is_some()
    }

    /// The protocol version the server agreed to, once it said WELCOME.
    pub(crate) fn version(&self) -> Option<u16> {
        self.driver.conn().version()
    }

    /// Sends HELLO (and anything queued with it) and waits for WELCOME; returns the version
    /// both speak. Only offers of version-1 bits may be queued before (PROTOCOL.md §2.2, §4.1).
    pub(crate) fn welcome(&mut self) -> Result<u16, ClientError> {
        self.driver.stream_mut().get_mut().restart();
        while !self.welcomed {
            if let Some(step) = self.step()? {
                return Err(self.unexpected(&step));
            }
        }
        Ok(self.version().unwrap_or(1))
    }

    /// The next step that concerns files: WELCOME is absorbed, an ERROR from the server or
    /// its closing the connection while files are owed ends the conversation.
    ///
    /// Each call is a wait for a message, due within [`Options::timeout`] however its bytes
    /// trickle in; body bytes share the budget of the wait they began in, renewed by each
    /// [`crate::timed::PROGRESS_BYTES`] moved.
    pub(crate) fn next(&mut self) -> Result<Step, ClientError> {
        if !self.in_body {
            self.driver.stream_mut().get_mut().restart();
        }
        loop {
            if let Some(step) = self.step()? {
                return Ok(step);
            }
        }
    }

    /// One step of the driver; `None` when it was WELCOME (absorbed).
    fn step(&mut self) -> Result<Option<Step>, ClientError> {
        let step = self
            .driver
            .next_step()
            .map_err(|e| match self.drive_err(e) {
                e if !self.welcomed => {
                    // Raw bytes tell something only without TLS (with it, they are records).
                    let stream = self.driver.stream();
                    let peer = if stream.is_tls() {
                        sniff::Peer::Unknown
                    } else {
                        sniff::identify(&stream.get_ref().first_bytes().get())
                    };
                    e.unwelcomed(self.target, &peer)
                }
                e => e,
            })?;
        self.in_body = matches!(step, Step::Body(_));
        match step {
            Step::Event(Event::Welcome { version }) => {
                log::debug!("{}: welcomed, protocol v{version}", self.target);
                self.welcomed = true;
                Ok(None)
            }
            Step::Event(Event::PeerError { code, reason }) => Err(ClientError::from_peer(
                self.target,
                self.welcomed,
                code,
                &reason,
            )),
            Step::Event(Event::Closed) => Err(ClientError::Lost {
                target: self.target.clone(),
                reason: "the server closed the connection".into(),
            }),
            other => Ok(Some(other)),
        }
    }

    /// Sends what is queued and closes our sending side at a frame boundary (with TLS,
    /// `close_notify` first): the clean end of a conversation, which the server reads as
    /// such. Over plain TCP that is all: every answer is read, so closing the socket now
    /// sends no reset (only unread bytes would), and the server's own FIN needs no reader.
    /// With TLS the server answers with its `close_notify`, bytes that would reach a closed
    /// socket and draw a reset: we wait a little for it and its end.
    pub(crate) fn close(&mut self) -> Result<(), ClientError> {
        self.driver.stream_mut().get_mut().restart();
        self.driver.flush().map_err(|e| self.drive_err(e))?;
        let stream = self.driver.stream_mut();
        // The server may already have closed too; nothing is lost then.
        if stream.shutdown_write().is_ok() && stream.is_tls() {
            stream.get_mut().restart_within(LINGER);
            let mut sink = [0u8; 512];
            let until = Instant::now() + LINGER;
            while Instant::now() < until && matches!(stream.read(&mut sink), Ok(n) if n > 0) {}
        }
        Ok(())
    }

    /// An error for a step this client never asked for.
    pub(crate) fn unexpected(&self, step: &Step) -> ClientError {
        let what = match step {
            Step::Body(_) => "file body".to_owned(),
            Step::Event(e) => format!("{e:?}"),
        };
        ClientError::unexpected(self.target, &what)
    }

    pub(crate) fn drive_err(&self, e: DriveError) -> ClientError {
        ClientError::from_drive(self.target, self.opts.timeout, e)
    }
}
