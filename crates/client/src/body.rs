//! Moving file bytes: hashing a local prefix for resume, and pumping a file into the driver.

use std::io::{self, Read, Write};

use ferry_proto::{DriveError, Driver, Hasher};

/// Why pumping a body stopped early.
pub(crate) enum PumpError {
    /// The local file failed (or ended before its size): the file can be cancelled.
    Local(io::Error),
    /// The connection failed.
    Drive(DriveError),
}

/// One read, retried on interruption.
pub(crate) fn read_some(r: &mut (impl Read + ?Sized), buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match r.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// A hasher over everything `r` yields (read through `buf`).
pub(crate) fn hash_all(r: &mut impl Read, buf: &mut [u8]) -> io::Result<Hasher> {
    let mut h = Hasher::new();
    loop {
        match read_some(r, buf)? {
            0 => return Ok(h),
            n => h.update(&buf[..n]),
        }
    }
}

/// Sends `left` bytes of `input` (all of it until its end when `None`) as body, through
/// `buf`, calling `moved` after each chunk.
pub(crate) fn pump(
    input: &mut dyn Read,
    mut left: Option<u64>,
    driver: &mut Driver<impl Read + Write>,
    buf: &mut [u8],
    mut moved: impl FnMut(u64),
) -> Result<(), PumpError> {
    loop {
        let want = left.map_or(buf.len(), |l| {
            usize::try_from(l).unwrap_or(usize::MAX).min(buf.len())
        });
        if want == 0 {
            return Ok(());
        }
        let n = read_some(input, &mut buf[..want]).map_err(PumpError::Local)?;
        if n == 0 {
            return match left {
                None => Ok(()),
                Some(_) => Err(PumpError::Local(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the file shrank while it was sent",
                ))),
            };
        }
        driver.send_body(&buf[..n]).map_err(PumpError::Drive)?;
        left = left.map(|l| l - n as u64);
        moved(n as u64);
    }
}
