//! A wake-up one thread sends another that polls it together with its socket: an `eventfd`,
//! readable from the first ring until it is reset.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::event::{eventfd, EventfdFlags};

/// An `eventfd` counting rings not yet reset.
#[derive(Debug)]
pub(crate) struct Wake(OwnedFd);

impl Wake {
    /// A wake-up not rung yet.
    pub(crate) fn new() -> io::Result<Self> {
        Ok(Self(eventfd(
            0,
            EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK,
        )?))
    }

    /// Makes it readable (it cannot fail short of a counter at its maximum, which is still
    /// readable).
    pub(crate) fn ring(&self) {
        let _ = rustix::io::write(&self.0, &1u64.to_ne_bytes());
    }

    /// Makes it unreadable again (nothing to do when it was not rung).
    pub(crate) fn reset(&self) {
        let mut count = [0u8; 8];
        let _ = rustix::io::read(&self.0, &mut count);
    }
}

impl AsFd for Wake {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}
