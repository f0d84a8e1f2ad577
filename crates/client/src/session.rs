//! One ferry-framing conversation with a server, as uploads and downloads share it: connect,
//! say HELLO, turn the events every conversation can meet (WELCOME, a fatal ERROR, an early
//! close) into state or errors, and end cleanly.

use std::net::{Shutdown, TcpStream};

use ferry_proto::{Connection, DriveError, Driver, Event, Step};

use crate::error::ClientError;
use crate::net::{self, Options};
use crate::target::Target;

pub(crate) struct Session<'a> {
    pub(crate) target: &'a Target,
    pub(crate) opts: &'a Options,
    pub(crate) driver: Driver<TcpStream>,
    welcomed: bool,
}

impl<'a> Session<'a> {
    /// Connects and queues HELLO (sent with the first commands).
    pub(crate) fn open(target: &'a Target, opts: &'a Options) -> Result<Self, ClientError> {
        let stream = net::connect(target, opts)?;
        let conn = Connection::client(opts.token.as_deref())?;
        Ok(Self {
            target,
            opts,
            driver: Driver::new(stream, conn),
            welcomed: false,
        })
    }

    /// The next step that concerns files: WELCOME is absorbed, an ERROR from the server or
    /// its closing the connection while files are owed ends the conversation.
    pub(crate) fn next(&mut self) -> Result<Step, ClientError> {
        loop {
            let step = self
                .driver
                .next_step()
                .map_err(|e| match self.drive_err(e) {
                    ClientError::Lost { .. } if !self.welcomed => {
                        ClientError::NoWelcome(self.target.clone())
                    }
                    e => e,
                })?;
            match step {
                Step::Event(Event::Welcome { version }) => {
                    log::debug!("{}: welcomed, protocol v{version}", self.target);
                    self.welcomed = true;
                }
                Step::Event(Event::PeerError { code, reason }) => {
                    return Err(ClientError::from_peer(
                        self.target,
                        self.welcomed,
                        code,
                        &reason,
                    ))
                }
                Step::Event(Event::Closed) => {
                    return Err(ClientError::Lost {
                        target: self.target.clone(),
                        reason: "the server closed the connection".into(),
                    })
                }
                other => return Ok(other),
            }
        }
    }

    /// Sends what is queued and closes our sending side at a frame boundary: the clean end of
    /// a conversation.
    pub(crate) fn close(&mut self) -> Result<(), ClientError> {
        self.driver.flush().map_err(|e| self.drive_err(e))?;
        // The server may already have closed too; nothing is lost then.
        let _ = self.driver.stream().shutdown(Shutdown::Write);
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
