//! Holds across server instances, built on conditional PutObject (the one write the
//! supported stores make atomic across gateways): a hold object is created with
//! `If-None-Match: *`; one whose time has lapsed (its holder died or was cut off) is taken over
//! with `If-Match: ETAG` of the version read, so that of several takers exactly one wins.
//!
//! Two kinds use it: the *lease* on an upload record (which connection writes its parts now)
//! and the *claim* on a final name (which upload publishes it now; see the README's "Object
//! store").

use std::time::{Duration, Instant};

use super::client::{Client, Cond, S3Error};
use super::layout::{self, Holder, MAX_RECORD};

/// A hold this connection has.
#[derive(Debug)]
pub(crate) struct Hold {
    /// The hold object's key.
    pub key: String,
    /// Its version as this holder wrote it.
    etag: String,
    /// Who holds it.
    owner: String,
    /// How long each renewal lasts.
    ttl: Duration,
    /// When it was last written.
    renewed: Instant,
}

/// What a try to take a hold found.
#[derive(Debug)]
pub(crate) enum Taken {
    /// The hold is ours.
    Held(Hold),
    /// Someone else holds it and its time has not lapsed.
    Busy,
}

/// Tries to take the hold `key` for `owner`, for `ttl`: creates it, or takes it over when
/// its holder's time has lapsed (or it cannot be read).
pub(crate) fn take(
    client: &Client,
    key: &str,
    owner: &str,
    ttl: Duration,
) -> Result<Taken, S3Error> {
    let body = holder_body(owner, ttl);
    let held = |etag: String| {
        Taken::Held(Hold {
            key: key.to_owned(),
            etag,
            owner: owner.to_owned(),
            ttl,
            renewed: Instant::now(),
        })
    };
    // Twice: a hold released between the failed create and the read is created again.
    for _ in 0..2 {
        if let Some(etag) = client.put(key, &body, Cond::Absent, &[])? {
            return Ok(held(etag));
        }
        let Some((bytes, etag)) = client.get_small(key, MAX_RECORD)? else {
            continue;
        };
        if !lapsed(&bytes, layout::now_ms()) {
            return Ok(Taken::Busy);
        }
        return Ok(match client.put(key, &body, Cond::Matches(&etag), &[])? {
            Some(etag) => held(etag),
            None => Taken::Busy,
        });
    }
    Ok(Taken::Busy)
}

impl Hold {
    /// Writes the hold again when a third of its time has passed; `false` when it was taken
    /// over meanwhile (it is no longer ours).
    pub(crate) fn renew_if_due(&mut self, client: &Client) -> Result<bool, S3Error> {
        if self.renewed.elapsed() < self.ttl / 3 {
            return Ok(true);
        }
        let body = holder_body(&self.owner, self.ttl);
        match client.put(&self.key, &body, Cond::Matches(&self.etag), &[])? {
            Some(etag) => {
                self.etag = etag;
                self.renewed = Instant::now();
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Gives the hold up if it is still the version this holder wrote (one taken over after
    /// it lapsed is the taker's now); best effort: a hold left behind lapses by itself.
    pub(crate) fn release(self, client: &Client) {
        let released = match client.get_small(&self.key, MAX_RECORD) {
            Ok(Some((_, etag))) if etag == self.etag => client.delete(&self.key),
            Ok(_) => Ok(()),
            Err(e) => Err(e),
        };
        if let Err(e) = released {
            log::warn!("cannot release {}: {e}", self.key);
        }
    }
}

/// The body of a hold written now for `ttl`.
fn holder_body(owner: &str, ttl: Duration) -> Vec<u8> {
    let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
    layout::encode(&Holder {
        owner: owner.to_owned(),
        until_ms: layout::now_ms().saturating_add(ttl_ms),
    })
}

/// Whether the hold written as `bytes` has lapsed at `now_ms` (an unreadable one has).
fn lapsed(bytes: &[u8], now_ms: u64) -> bool {
    layout::decode::<Holder>(bytes).is_none_or(|h| h.until_ms < now_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_lapse_when_their_time_is_past_or_they_are_unreadable() {
        let body = holder_body("me", Duration::from_secs(10));
        let now = layout::now_ms();
        assert!(!lapsed(&body, now));
        assert!(!lapsed(&body, now + 9_000));
        assert!(lapsed(&body, now + 11_000));
        assert!(lapsed(b"not a hold", now));
        assert!(lapsed(&[0xff], now));
    }
}
