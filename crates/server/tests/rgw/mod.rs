//! A real S3 store for the tests of one test binary: a single-node Ceph RGW started by
//! `scripts/rgw.sh` on first use and stopped when the binary exits, even by a panic (the
//! script's stdin is a pipe only this process holds; when the kernel closes it, the script
//! kills its daemons by PID and removes its folder). Buckets are created and inspected with
//! small presigned requests (rusty-s3 signs, ureq sends).
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use rusty_s3::actions::ListObjectsV2;
use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};

/// The script that starts the cluster.
const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/rgw.sh");

/// How long a presigned request stays valid.
const SIGNED_FOR: Duration = Duration::from_secs(600);

/// Most keys [`Rgw::keys`] reads (a bound on its paging).
const MAX_KEYS: usize = 10_000;

/// A running single-node Ceph RGW and an S3 user on it.
pub struct Rgw {
    endpoint: String,
    access_key: String,
    secret_key: String,
    region: String,
    credentials: Credentials,
    agent: ureq::Agent,
    /// The script, with its stdin open for as long as this process lives.
    _script: Child,
}

static RGW: OnceLock<Result<Option<Rgw>, String>> = OnceLock::new();

impl Rgw {
    /// The RGW of this test binary, started on first use; `None` after a loud `SKIPPED` line
    /// when the Ceph packages are not installed. Panics when they are but it does not start.
    pub fn get() -> Option<&'static Rgw> {
        match RGW.get_or_init(start) {
            Ok(Some(rgw)) => Some(rgw),
            Ok(None) => {
                eprintln!(
                    "SKIPPED: Ceph RGW is not installed \
                     (apt-get install ceph-mon ceph-osd radosgw; see scripts/rgw.sh --check)"
                );
                None
            }
            Err(e) => panic!("{e}"),
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The S3 user's access key id.
    pub fn access_key(&self) -> &str {
        &self.access_key
    }

    /// The S3 user's secret key.
    pub fn secret_key(&self) -> &str {
        &self.secret_key
    }

    /// The region name clients sign with.
    pub fn region(&self) -> &str {
        &self.region
    }

    /// The environment an S3 client reads its credentials from.
    pub fn env(&self) -> [(&'static str, &str); 3] {
        [
            ("AWS_ACCESS_KEY_ID", &self.access_key),
            ("AWS_SECRET_ACCESS_KEY", &self.secret_key),
            ("AWS_REGION", &self.region),
        ]
    }

    /// Creates a bucket no other test uses (its name starts with `tag`, sanitized) and
    /// returns its name.
    pub fn fresh_bucket(&self, tag: &str) -> String {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let tag: String = tag
            .chars()
            .map(|c| c.to_ascii_lowercase())
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .take(30)
            .collect();
        let name = format!(
            "ferry-{tag}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let bucket = self.bucket(&name);
        let url = bucket.create_bucket(&self.credentials).sign(SIGNED_FOR);
        let (status, body) = self.send(self.agent.put(url.as_str()).send_empty());
        assert_eq!(status, 200, "CreateBucket {name}: {body}");
        name
    }

    /// PutObject of `body` under `key` with `If-None-Match: *`: the HTTP status (200 when
    /// stored, 412 when the key exists).
    pub fn put_if_absent(&self, bucket: &str, key: &str, body: &[u8]) -> u16 {
        let bucket = self.bucket(bucket);
        let url = bucket
            .put_object(Some(&self.credentials), key)
            .sign(SIGNED_FOR);
        let req = self.agent.put(url.as_str()).header("If-None-Match", "*");
        self.send(req.send(body)).0
    }

    /// The object's bytes, or `None` when there is no such key.
    pub fn get_object(&self, bucket: &str, key: &str) -> Option<Vec<u8>> {
        let bucket = self.bucket(bucket);
        let url = bucket
            .get_object(Some(&self.credentials), key)
            .sign(SIGNED_FOR);
        match self.agent.get(url.as_str()).call() {
            Ok(mut r) if r.status() == 200 => Some(
                r.body_mut()
                    .with_config()
                    .limit(u64::MAX)
                    .read_to_vec()
                    .unwrap(),
            ),
            Ok(r) if r.status() == 404 => None,
            Ok(r) => panic!("GetObject {key}: HTTP {}", r.status()),
            Err(e) => panic!("GetObject {key}: {e}"),
        }
    }

    /// Every key under `prefix` in `bucket` (completed objects only: a multipart upload in
    /// progress is not listed) with its size, in key order.
    pub fn keys(&self, bucket: &str, prefix: &str) -> Vec<(String, u64)> {
        let bucket = self.bucket(bucket);
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut list = bucket.list_objects_v2(Some(&self.credentials));
            list.with_prefix(prefix);
            if let Some(t) = &token {
                list.with_continuation_token(t.as_str());
            }
            let url = list.sign(SIGNED_FOR);
            let (status, body) = self.send(self.agent.get(url.as_str()).call());
            assert_eq!(status, 200, "ListObjectsV2: {body}");
            let page = ListObjectsV2::parse_response(&body).expect("a ListObjectsV2 answer");
            out.extend(page.contents.into_iter().map(|c| (c.key, c.size)));
            assert!(out.len() <= MAX_KEYS, "more than {MAX_KEYS} keys");
            match page.next_continuation_token {
                Some(t) => token = Some(t),
                None => return out,
            }
        }
    }

    /// A handle on `name` (path-style URLs: no DNS names needed).
    fn bucket(&self, name: &str) -> Bucket {
        Bucket::new(
            self.endpoint.parse().unwrap(),
            UrlStyle::Path,
            name.to_owned(),
            self.region.clone(),
        )
        .unwrap()
    }

    /// The status and body of a response (an error status is an answer here, not a failure).
    fn send(&self, r: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> (u16, String) {
        let mut r =
            r.unwrap_or_else(|e| panic!("the RGW at {} did not answer: {e}", self.endpoint));
        let body = r.body_mut().read_to_string().unwrap_or_default();
        (r.status().as_u16(), body)
    }
}

/// Starts the script and reads its `KEY=VALUE` lines up to `READY`.
fn start() -> Result<Option<Rgw>, String> {
    let check = Command::new(SCRIPT)
        .arg("--check")
        .output()
        .map_err(|e| format!("cannot run {SCRIPT}: {e}"))?;
    if !check.status.success() {
        eprint!("{}", String::from_utf8_lossy(&check.stdout));
        return Ok(None);
    }
    // stderr is inherited: the script's progress, and the daemons' logs when it fails.
    let mut script = Command::new(SCRIPT)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {SCRIPT}: {e}"))?;
    let stdout = script.stdout.take().unwrap();
    let mut vars = HashMap::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.map_err(|e| format!("reading {SCRIPT}: {e}"))?;
        if line == "READY" {
            let var = |k: &str| {
                vars.get(k)
                    .cloned()
                    .ok_or_else(|| format!("{SCRIPT} printed no {k}"))
            };
            let (access_key, secret_key) =
                (var("AWS_ACCESS_KEY_ID")?, var("AWS_SECRET_ACCESS_KEY")?);
            return Ok(Some(Rgw {
                endpoint: var("ENDPOINT")?,
                credentials: Credentials::new(access_key.clone(), secret_key.clone()),
                access_key,
                secret_key,
                region: var("AWS_REGION")?,
                agent: ureq::Agent::config_builder()
                    .http_status_as_error(false)
                    .timeout_global(Some(Duration::from_secs(60)))
                    .build()
                    .into(),
                _script: script,
            }));
        }
        if let Some((k, v)) = line.split_once('=') {
            vars.insert(k.to_owned(), v.to_owned());
        }
    }
    let status = script.wait().map_err(|e| e.to_string())?;
    Err(format!(
        "{SCRIPT} exited ({status}) before READY: Ceph RGW is installed but did not start (its \
         messages are above)"
    ))
}
