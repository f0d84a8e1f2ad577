//! The janitor: a thread per store (the bucket's prefix, and each credential's folder in it)
//! that, once a minute (a quarter of the partial TTL when that is shorter), removes uploads
//! nobody wrote to for the partial TTL (aborting their multipart upload, removing record,
//! lease and part records), claims left behind by a server that died while publishing, and
//! (the prefix's janitor) multipart uploads started more than twice the partial TTL ago that
//! no record names any more (a server died before recording it, or it was not resumable).
//! Each round reads one page of each kind and removes at most [`MAX_REMOVALS`] things; the
//! next round goes on from where it stopped. Every server on the bucket runs one: removing
//! twice is harmless.

use std::sync::{Arc, Weak};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use super::client::S3Error;
use super::layout::{self, Location, UploadRecord, MAX_RECORD};
use super::upload::{remove_upload, CLAIM_TTL};
use super::Shared;

/// Most time between two rounds.
const ROUND_EVERY: Duration = Duration::from_secs(60);
/// Least time between two rounds.
const MIN_ROUND: Duration = Duration::from_secs(1);
/// How often the thread checks whether its server is gone.
const TICK: Duration = Duration::from_secs(1);
/// Keys read per kind of state per round.
const PAGE: usize = 1000;
/// Most uploads and claims removed per round.
const MAX_REMOVALS: usize = 16;
/// Age past which a claim is left over (a publish holds one for seconds).
const STALE_CLAIM: Duration = Duration::from_secs(10 * 60);

/// Starts the janitor of `loc`; it stops once the server's stores are dropped.
pub(crate) fn start(shared: &Arc<Shared>, loc: Location) {
    let weak = Arc::downgrade(shared);
    let spawned = thread::Builder::new()
        .name("ferry-s3-janitor".into())
        .spawn(move || run(&weak, &loc));
    if let Err(e) = spawned {
        log::warn!("the object store's janitor could not start: {e}");
    }
}

/// Where the rounds go on from.
#[derive(Default)]
struct Resume {
    uploads: Option<String>,
    claims: Option<String>,
    multipart: Option<(String, String)>,
}

/// Time between two rounds for the partial TTL `ttl`.
fn round_every(ttl: Option<Duration>) -> Duration {
    ttl.map_or(ROUND_EVERY, |t| (t / 4).clamp(MIN_ROUND, ROUND_EVERY))
}

fn run(weak: &Weak<Shared>, loc: &Location) {
    let mut resume = Resume::default();
    let every = weak
        .upgrade()
        .map_or(ROUND_EVERY, |s| round_every(s.partial_ttl));
    let mut next = Instant::now() + every;
    loop {
        thread::sleep(TICK.min(every));
        let Some(shared) = weak.upgrade() else {
            return;
        };
        if Instant::now() < next {
            continue;
        }
        next = Instant::now() + every;
        if let Err(e) = round(&shared, loc, &mut resume) {
            log::warn!("the janitor of {} stopped this round: {e}", loc.state(""));
        }
    }
}

/// One bounded round.
fn round(shared: &Shared, loc: &Location, resume: &mut Resume) -> Result<(), S3Error> {
    let client = &shared.client;
    let mut removals = 0;
    if let Some(ttl) = shared.partial_ttl {
        let base = loc.state("u/");
        let page = client.list(&base, false, resume.uploads.as_deref(), PAGE)?;
        resume.uploads = page.next;
        // The newest key of each upload's folder says when it was last written to.
        let mut newest: Vec<(String, Option<SystemTime>)> = Vec::new();
        for (key, _, when) in page.objects {
            let Some(dir) = upload_dir_of(&base, &key) else {
                continue;
            };
            match newest.iter_mut().find(|(d, _)| d == dir) {
                Some((_, w)) => *w = (*w).max(when),
                None => newest.push((dir.to_owned(), when)),
            }
        }
        for (dir, when) in newest {
            if removals >= MAX_REMOVALS || !layout::older_than(when, ttl) {
                continue;
            }
            let rec = client
                .get_small(&format!("{dir}record"), MAX_RECORD)?
                .and_then(|(bytes, _)| layout::decode::<UploadRecord>(&bytes));
            let upload = rec.as_ref().map(|r| (r.key.as_str(), r.upload_id.as_str()));
            log::info!("janitor: removing an upload left for {ttl:?}: {dir}");
            remove_upload(client, &dir, upload);
            removals += 1;
        }
    }
    if let Some(ttl) = shared.partial_ttl.filter(|_| loc.prefix == loc.root) {
        let (uploads, next) = client.list_uploads(&loc.list_prefix(), resume.multipart.as_ref())?;
        resume.multipart = next;
        for u in uploads {
            if removals >= MAX_REMOVALS {
                break;
            }
            if layout::older_than(u.initiated, ttl.saturating_mul(2)) {
                log::info!("janitor: aborting an upload to {} left for {ttl:?}", u.key);
                client.abort(&u.key, &u.upload_id)?;
                removals += 1;
            }
        }
    }
    let page = client.list(&loc.state("c/"), false, resume.claims.as_deref(), PAGE)?;
    resume.claims = page.next;
    for (key, _, when) in page.objects {
        if removals >= MAX_REMOVALS {
            break;
        }
        if layout::older_than(when, STALE_CLAIM.max(CLAIM_TTL)) {
            log::info!("janitor: removing a claim left behind: {key}");
            client.delete(&key)?;
            removals += 1;
        }
    }
    Ok(())
}

/// The upload folder (`<base><H>-<SIZE>/`) a state key under `base` is in.
fn upload_dir_of<'k>(base: &str, key: &'k str) -> Option<&'k str> {
    let rest = key.strip_prefix(base)?;
    let end = base.len() + rest.find('/')? + 1;
    key.get(..end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_follow_short_ttls_within_bounds() {
        assert_eq!(round_every(None), ROUND_EVERY);
        assert_eq!(
            round_every(Some(Duration::from_secs(7 * 86_400))),
            ROUND_EVERY
        );
        assert_eq!(
            round_every(Some(Duration::from_secs(8))),
            Duration::from_secs(2)
        );
        assert_eq!(round_every(Some(Duration::ZERO)), MIN_ROUND);
    }

    #[test]
    fn state_keys_map_to_their_upload_folder() {
        let loc = Location::parse("s3://bkt/u/pre").unwrap();
        let base = loc.state("u/");
        let dir = loc.upload_dir("a/b", 9);
        for key in [
            format!("{dir}record"),
            format!("{dir}lease"),
            format!("{}00001.1.e.x.-", Location::parts_dir(&dir, "id")),
        ] {
            assert_eq!(upload_dir_of(&base, &key), Some(dir.as_str()), "{key}");
        }
        assert_eq!(upload_dir_of(&base, "u/pre/.ferry-state/c/x"), None);
        assert_eq!(upload_dir_of(&base, &base), None);
    }
}
