//! What the server learns about its storage at start, from one folder it makes (and removes)
//! in its private `tmp/`: the umask new files and folders get, and how precisely the file
//! system keeps modification times (PROTOCOL.md §4.8 lets a receiver compare at that
//! precision).
//!
//! The precision is probed rather than looked up by file-system type: the probe folder is
//! given the mtime `1000000001.999999999` and read back; Linux truncates a time to what the
//! file system keeps, so the value read back tells the step (1 ns on ext4, xfs, btrfs, tmpfs;
//! 1 µs on some network file systems; 1 s on ext3 or HFS+; 2 s on FAT).

use std::os::fd::{AsFd, BorrowedFd};

use ferry_proto::Timestamp;
use rustix::fs::{self as rfs, AtFlags, Mode, OFlags, Timespec, Timestamps};

/// Nanoseconds in a second.
const NANOS: i128 = 1_000_000_000;
/// The mtime given to the probe folder: an odd second and the largest nanosecond, so that
/// each candidate step truncates it to a different value.
const PROBE_TIME: Timespec = Timespec {
    tv_sec: 1_000_000_001,
    tv_nsec: 999_999_999,
};
/// Steps a file system may keep times in, finest first, in nanoseconds.
const STEPS: [i128; 5] = [1, 1_000, 1_000_000, NANOS, 2 * NANOS];
/// What is assumed when the probe fails: the usual umask, and exact times.
const FALLBACK: Probed = Probed {
    umask: 0o022,
    mtime_step: 1,
};

/// The umask and the mtime precision of the storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Probed {
    /// Permission bits the process's umask removes.
    pub umask: u32,
    /// The step in which the file system keeps modification times, in nanoseconds.
    mtime_step: i128,
}

impl Probed {
    /// Probes in the folder `tmp` (the server's own; the probe folder is removed again). On
    /// failure, logs why and assumes a umask of 022 and exact times.
    pub(crate) fn run(tmp: BorrowedFd<'_>, name: &str) -> Self {
        match probe(tmp, name) {
            Ok(p) => {
                log::debug!(
                    "umask {:03o}; modification times kept to {} ns",
                    p.umask,
                    p.mtime_step
                );
                p
            }
            Err(e) => {
                log::warn!("cannot probe the storage folder ({e}); assuming umask 022 and exact modification times");
                FALLBACK
            }
        }
    }

    /// Whether a file modified at `held` (as the file system keeps it) has the `offered`
    /// mtime, compared at the file system's precision: `offered` truncated to its step.
    pub(crate) fn same_mtime(&self, held: Timestamp, offered: Timestamp) -> bool {
        let truncated = nanos(offered).div_euclid(self.mtime_step) * self.mtime_step;
        truncated == nanos(held)
    }
}

/// A timestamp in nanoseconds since the epoch.
fn nanos(t: Timestamp) -> i128 {
    i128::from(t.secs) * NANOS + i128::from(t.nanos)
}

fn probe(tmp: BorrowedFd<'_>, name: &str) -> std::io::Result<Probed> {
    rfs::mkdirat(tmp, name, Mode::from_raw_mode(0o777))?;
    let measured = (|| {
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = rfs::openat(tmp, name, flags, Mode::empty())?;
        let umask = 0o777 & !rfs::fstat(&fd)?.st_mode;
        let times = Timestamps {
            last_access: PROBE_TIME,
            last_modification: PROBE_TIME,
        };
        rfs::futimens(&fd, &times)?;
        let st = rfs::fstat(fd.as_fd())?;
        let kept = Timestamp {
            secs: st.st_mtime,
            nanos: u32::try_from(st.st_mtime_nsec).unwrap_or(0),
        };
        Ok::<_, std::io::Error>((umask, kept))
    })();
    let _ = rfs::unlinkat(tmp, name, AtFlags::REMOVEDIR);
    let (umask, kept) = measured?;
    let set = Timestamp {
        secs: PROBE_TIME.tv_sec,
        nanos: PROBE_TIME.tv_nsec as u32,
    };
    let mtime_step = STEPS
        .into_iter()
        .find(|&step| {
            Probed {
                umask,
                mtime_step: step,
            }
            .same_mtime(kept, set)
        })
        .ok_or_else(|| {
            std::io::Error::other(format!(
                "the file system kept the time {}.{:09} as {}.{:09}",
                set.secs, set.nanos, kept.secs, kept.nanos
            ))
        })?;
    Ok(Probed { umask, mtime_step })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: i64, nanos: u32) -> Timestamp {
        Timestamp { secs, nanos }
    }

    #[test]
    fn mtimes_are_compared_at_the_kept_precision() {
        let exact = Probed {
            umask: 0,
            mtime_step: 1,
        };
        assert!(exact.same_mtime(t(5, 7), t(5, 7)));
        assert!(!exact.same_mtime(t(5, 0), t(5, 7)));
        let seconds = Probed {
            umask: 0,
            mtime_step: NANOS,
        };
        assert!(seconds.same_mtime(t(5, 0), t(5, 999_999_999)));
        assert!(!seconds.same_mtime(t(5, 0), t(6, 0)));
        assert!(
            !seconds.same_mtime(t(5, 7), t(5, 7)),
            "a file system of seconds"
        );
        assert!(seconds.same_mtime(t(-2, 0), t(-2, 500)));
        let fat = Probed {
            umask: 0,
            mtime_step: 2 * NANOS,
        };
        assert!(fat.same_mtime(t(4, 0), t(5, 1)));
    }

    #[test]
    fn the_probe_finds_the_umask_and_the_step_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let fd = rfs::open(
            dir.path(),
            OFlags::RDONLY | OFlags::DIRECTORY,
            Mode::empty(),
        )
        .unwrap();
        let p = probe(fd.as_fd(), "probe").unwrap();
        assert!(STEPS.contains(&p.mtime_step));
        assert_eq!(p.umask & !0o777, 0);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
