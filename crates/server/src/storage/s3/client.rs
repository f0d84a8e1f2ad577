//! A small blocking S3 client: requests signed by rusty-s3 (SigV4 in the query string, no
//! I/O of its own), sent by ureq over rustls; path-style URLs (what Ceph RGW serves). Every
//! request has connect, response and per-read/write timeouts, every reply body read into
//! memory is capped, and every failure is an [`S3Error`] that names the endpoint.

use std::io::Read;
use std::time::{Duration, SystemTime};

use instant_xml::FromXml;
use rusty_s3::actions::{
    CompleteMultipartUpload, CreateMultipartUpload, ListObjectsV2, ListParts, S3Action,
};
use rusty_s3::{Bucket, Credentials, UrlStyle};
use ureq::http::{HeaderMap, Response, StatusCode};
use ureq::{Agent, Body};

/// How long a signed URL stays valid (it is used at once).
const SIGNED_FOR: Duration = Duration::from_secs(300);
/// Time to connect to the object store.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for a reply's head, and for each read or write of a body.
const STALL_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest error, record or listing reply read into memory.
const MAX_REPLY: u64 = 4 << 20;
/// Most parts one ListParts page may name (S3's own limit is 1000).
const MAX_PARTS_PAGE: u16 = 1000;
/// Most keys one ListObjectsV2 page may name.
const MAX_KEYS_PAGE: usize = 1000;
/// Most bytes of the store's error message quoted in an [`S3Error`].
const MAX_MESSAGE: usize = 300;

/// Why a request to the object store failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum S3Error {
    /// No reply: connection refused, timeout, TLS failure.
    #[error("the object store ({endpoint}) could not be reached: {source}")]
    Transport {
        /// The store's endpoint URL.
        endpoint: String,
        /// What ureq said.
        source: Box<ureq::Error>,
    },
    /// The store answered with an error status.
    #[error("the object store ({endpoint}) said HTTP {status}{}{}",
        if code.is_empty() { String::new() } else { format!(" {code}") },
        if message.is_empty() { String::new() } else { format!(": {message}") })]
    Status {
        /// The store's endpoint URL.
        endpoint: String,
        /// The HTTP status.
        status: u16,
        /// The S3 error code (`NoSuchKey`, `AccessDenied`, ...), or empty.
        code: String,
        /// The store's message, shortened.
        message: String,
    },
    /// The store answered something this client cannot use.
    #[error("the object store ({endpoint}) said something unusable: {what}")]
    Malformed {
        /// The store's endpoint URL.
        endpoint: String,
        /// What was wrong with it.
        what: String,
    },
}

impl S3Error {
    /// The HTTP status of an error reply, if it was one.
    pub(crate) fn status(&self) -> Option<u16> {
        match self {
            Self::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Whether the store said the object or upload does not exist.
    pub(crate) fn is_not_found(&self) -> bool {
        self.status() == Some(404)
    }

    /// Whether a conditional request lost: 412, or 409 (a concurrent conditional write).
    pub(crate) fn is_condition_lost(&self) -> bool {
        matches!(self.status(), Some(412 | 409))
    }
}

/// A condition on a PutObject.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Cond<'a> {
    /// Write whatever is there.
    None,
    /// `If-None-Match: *`: only if nothing is stored under the key.
    Absent,
    /// `If-Match: ETAG`: only if the key holds this version.
    Matches(&'a str),
}

/// What a HEAD says about an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Head {
    /// Bytes in the object.
    pub size: u64,
    /// The object's ETag, without quotes.
    pub etag: String,
    /// When it was stored.
    pub last_modified: Option<SystemTime>,
    /// Its user metadata (`x-amz-meta-NAME`), names lower-case and without the prefix.
    pub meta: Vec<(String, String)>,
}

impl Head {
    /// The user metadata value `name` (without `x-amz-meta-`).
    pub(crate) fn meta(&self, name: &str) -> Option<&str> {
        self.meta
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// One page of a ListObjectsV2.
#[derive(Debug, Default)]
pub(crate) struct Page {
    /// Objects: key, size, last modified.
    pub objects: Vec<(String, u64, Option<SystemTime>)>,
    /// Common prefixes (folders, with a delimiter), each ending in the delimiter.
    pub prefixes: Vec<String>,
    /// Token for the next page; `None` on the last.
    pub next: Option<String>,
}

/// A part held by a multipart upload, as ListParts tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ListedPart {
    /// Part number, from 1.
    pub number: u16,
    /// The part's ETag, without quotes.
    pub etag: String,
    /// Bytes in the part.
    pub size: u64,
}

/// A multipart upload in progress, as ListMultipartUploads tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ListedUpload {
    /// The key it completes to.
    pub key: String,
    /// Its id.
    pub upload_id: String,
    /// When it was started.
    pub initiated: Option<SystemTime>,
}

/// One page of ListMultipartUploads, and where the next starts (key and upload id markers).
pub(crate) type UploadsPage = (Vec<ListedUpload>, Option<(String, String)>);

/// A bucket on an S3-compatible store, with credentials and a connection pool.
#[derive(Debug)]
pub(crate) struct Client {
    bucket: Bucket,
    credentials: Credentials,
    agent: Agent,
    endpoint: String,
}

impl Client {
    /// A client of `bucket` at `endpoint` (`http://host:port` or `https://…`), signing with
    /// `credentials` for `region`.
    pub(crate) fn new(
        endpoint: &str,
        bucket: &str,
        region: &str,
        credentials: Credentials,
    ) -> Result<Self, String> {
        let url: url::Url = endpoint
            .parse()
            .map_err(|e| format!("the object store endpoint {endpoint} is not a URL: {e}"))?;
        let bucket = Bucket::new(url, UrlStyle::Path, bucket.to_owned(), region.to_owned())
            .map_err(|e| format!("cannot use bucket {bucket} at {endpoint}: {e:?}"))?;
        let agent = Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .timeout_connect(Some(CONNECT_TIMEOUT))
            .timeout_send_request(Some(STALL_TIMEOUT))
            .timeout_recv_response(Some(STALL_TIMEOUT))
            .timeout_per_read(Some(STALL_TIMEOUT))
            .timeout_per_write(Some(STALL_TIMEOUT))
            .build()
            .new_agent();
        Ok(Self {
            bucket,
            credentials,
            agent,
            endpoint: endpoint.to_owned(),
        })
    }

    /// The endpoint, for messages.
    pub(crate) fn endpoint(&self) -> &str {
        &self.endpoint
    }

    fn creds(&self) -> Option<&Credentials> {
        Some(&self.credentials)
    }

    fn malformed(&self, what: impl Into<String>) -> S3Error {
        S3Error::Malformed {
            endpoint: self.endpoint.clone(),
            what: what.into(),
        }
    }

    fn transport(&self, e: ureq::Error) -> S3Error {
        S3Error::Transport {
            endpoint: self.endpoint.clone(),
            source: Box::new(e),
        }
    }

    /// Turns a reply into an error unless its status is a success.
    fn check(&self, mut reply: Response<Body>) -> Result<Response<Body>, S3Error> {
        let status = reply.status();
        if status.is_success() {
            return Ok(reply);
        }
        let body = reply
            .body_mut()
            .with_config()
            .limit(MAX_REPLY)
            .lossy_utf8(true)
            .read_to_string()
            .unwrap_or_default();
        let (code, message) = error_fields(&body);
        Err(S3Error::Status {
            endpoint: self.endpoint.clone(),
            status: status.as_u16(),
            code,
            message,
        })
    }

    /// Reads a capped reply body as text.
    fn text(&self, mut reply: Response<Body>) -> Result<String, S3Error> {
        reply
            .body_mut()
            .with_config()
            .limit(MAX_REPLY)
            .read_to_string()
            .map_err(|e| self.transport(e))
    }

    /// HEAD: what is stored under `key`, or `None`.
    pub(crate) fn head(&self, key: &str) -> Result<Option<Head>, S3Error> {
        let url = self.bucket.head_object(self.creds(), key).sign(SIGNED_FOR);
        let reply = self
            .agent
            .head(url.as_str())
            .call()
            .map_err(|e| self.transport(e))?;
        if reply.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let reply = self.check(reply)?;
        let headers = reply.headers();
        let size = header(headers, "content-length")
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| self.malformed(format!("no size for {key}")))?;
        Ok(Some(Head {
            size,
            etag: etag_of(headers).unwrap_or_default(),
            last_modified: header(headers, "last-modified")
                .and_then(|v| httpdate::parse_http_date(v).ok()),
            meta: headers
                .iter()
                .filter_map(|(k, v)| {
                    let name = k.as_str().strip_prefix("x-amz-meta-")?;
                    Some((name.to_owned(), v.to_str().ok()?.to_owned()))
                })
                .collect(),
        }))
    }

    /// GET of a small object (at most `cap` bytes): its bytes and ETag, or `None`.
    pub(crate) fn get_small(
        &self,
        key: &str,
        cap: u64,
    ) -> Result<Option<(Vec<u8>, String)>, S3Error> {
        let url = self.bucket.get_object(self.creds(), key).sign(SIGNED_FOR);
        let reply = self
            .agent
            .get(url.as_str())
            .call()
            .map_err(|e| self.transport(e))?;
        if reply.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let mut reply = self.check(reply)?;
        let etag = etag_of(reply.headers()).unwrap_or_default();
        let mut bytes = Vec::new();
        reply
            .body_mut()
            .as_reader()
            .take(cap.saturating_add(1))
            .read_to_end(&mut bytes)
            .map_err(|e| self.malformed(format!("reading {key}: {e}")))?;
        if bytes.len() as u64 > cap {
            return Err(self.malformed(format!("{key} is larger than {cap} bytes")));
        }
        Ok(Some((bytes, etag)))
    }

    /// A ranged GET from `from` to the end of the version `etag` of `key`, as a stream.
    pub(crate) fn get_from(
        &self,
        key: &str,
        from: u64,
        etag: &str,
    ) -> Result<impl Read + Send + 'static, S3Error> {
        let url = self.bucket.get_object(self.creds(), key).sign(SIGNED_FOR);
        let reply = self
            .agent
            .get(url.as_str())
            .header("range", format!("bytes={from}-"))
            .header("if-match", quoted(etag))
            .call()
            .map_err(|e| self.transport(e))?;
        let reply = self.check(reply)?;
        if from > 0 && reply.status() != StatusCode::PARTIAL_CONTENT {
            return Err(self.malformed(format!("{key} from {from}: the range was not honoured")));
        }
        Ok(reply.into_body().into_reader())
    }

    /// PutObject of `body` under `cond`, with user metadata `meta` (names without
    /// `x-amz-meta-`); the new ETag, or `None` when the condition did not hold.
    pub(crate) fn put(
        &self,
        key: &str,
        body: &[u8],
        cond: Cond<'_>,
        meta: &[(&str, String)],
    ) -> Result<Option<String>, S3Error> {
        let mut action = self.bucket.put_object(self.creds(), key);
        let (url, headers) = sign_with_meta(&mut action, meta);
        let mut request = self.agent.put(url.as_str());
        for (name, value) in &headers {
            request = request.header(name, value);
        }
        request = match cond {
            Cond::None => request,
            Cond::Absent => request.header("if-none-match", "*"),
            // Unquoted: Ceph RGW compares a PutObject's If-Match with the bare ETag (its GET
            // takes either form).
            Cond::Matches(etag) => request.header("if-match", unquoted(etag)),
        };
        let reply = request.send(body).map_err(|e| self.transport(e))?;
        match self.check(reply) {
            Ok(reply) => Ok(Some(etag_of(reply.headers()).unwrap_or_default())),
            Err(e) if e.is_condition_lost() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// DeleteObject; a missing object is not an error.
    pub(crate) fn delete(&self, key: &str) -> Result<(), S3Error> {
        let url = self
            .bucket
            .delete_object(self.creds(), key)
            .sign(SIGNED_FOR);
        self.delete_gone_or_not(&url)
    }

    /// Sends a signed DELETE; what it names being gone already is not an error.
    fn delete_gone_or_not(&self, url: &url::Url) -> Result<(), S3Error> {
        let reply = self
            .agent
            .delete(url.as_str())
            .call()
            .map_err(|e| self.transport(e))?;
        match self.check(reply) {
            Err(e) if !e.is_not_found() => Err(e),
            _ => Ok(()),
        }
    }

    /// CreateMultipartUpload for `key` with user metadata `meta`; the upload id.
    pub(crate) fn create_multipart(
        &self,
        key: &str,
        meta: &[(&str, String)],
    ) -> Result<String, S3Error> {
        let mut action = self.bucket.create_multipart_upload(self.creds(), key);
        let (url, headers) = sign_with_meta(&mut action, meta);
        let mut request = self.agent.post(url.as_str());
        for (name, value) in &headers {
            request = request.header(name, value);
        }
        let reply = request.send_empty().map_err(|e| self.transport(e))?;
        let text = self.text(self.check(reply)?)?;
        let parsed = CreateMultipartUpload::parse_response(&text)
            .map_err(|e| self.malformed(format!("CreateMultipartUpload reply: {e}")))?;
        Ok(parsed.upload_id().to_owned())
    }

    /// UploadPart `number` (from 1) of `upload` of `key`; the part's ETag.
    pub(crate) fn upload_part(
        &self,
        key: &str,
        upload: &str,
        number: u16,
        body: &[u8],
    ) -> Result<String, S3Error> {
        let url = self
            .bucket
            .upload_part(self.creds(), key, number, upload)
            .sign(SIGNED_FOR);
        let reply = self
            .agent
            .put(url.as_str())
            .send(body)
            .map_err(|e| self.transport(e))?;
        let reply = self.check(reply)?;
        etag_of(reply.headers()).ok_or_else(|| self.malformed("a part stored without an ETag"))
    }

    /// ListParts of `upload` of `key`, every page (at most `max` parts).
    pub(crate) fn list_parts(
        &self,
        key: &str,
        upload: &str,
        max: usize,
    ) -> Result<Vec<ListedPart>, S3Error> {
        let mut parts = Vec::new();
        let mut marker = None;
        loop {
            let mut action = ListParts::new(&self.bucket, self.creds(), key, upload);
            action.set_max_parts(MAX_PARTS_PAGE);
            if let Some(m) = marker {
                action.set_part_number_marker(m);
            }
            let reply = self
                .agent
                .get(action.sign(SIGNED_FOR).as_str())
                .call()
                .map_err(|e| self.transport(e))?;
            let text = self.text(self.check(reply)?)?;
            let page = ListParts::parse_response(&text)
                .map_err(|e| self.malformed(format!("ListParts reply: {e}")))?;
            parts.extend(page.parts.into_iter().map(|p| ListedPart {
                number: p.number,
                etag: unquoted(&p.etag).to_owned(),
                size: p.size,
            }));
            match page.next_part_number_marker {
                Some(m) if parts.len() < max && Some(m) != marker => marker = Some(m),
                _ => break,
            }
        }
        parts.truncate(max);
        Ok(parts)
    }

    /// CompleteMultipartUpload of `upload` of `key` from `etags` (part 1 first); the
    /// object's ETag.
    pub(crate) fn complete(
        &self,
        key: &str,
        upload: &str,
        etags: &[String],
    ) -> Result<String, S3Error> {
        let quoted: Vec<String> = etags.iter().map(|e| quoted(e)).collect();
        let action = CompleteMultipartUpload::new(
            &self.bucket,
            self.creds(),
            key,
            upload,
            quoted.iter().map(String::as_str),
        );
        let url = action.sign(SIGNED_FOR);
        let body = action.body();
        let reply = self
            .agent
            .post(url.as_str())
            .send(body.as_bytes())
            .map_err(|e| self.transport(e))?;
        let text = self.text(self.check(reply)?)?;
        // S3 may report a failed completion in the body of a 200 reply.
        if text.contains("<Error>") {
            let (code, message) = error_fields(&text);
            return Err(S3Error::Status {
                endpoint: self.endpoint.clone(),
                status: 200,
                code,
                message,
            });
        }
        Ok(instant_xml::from_str::<Completed>(&text)
            .map(|c| unquoted(&c.etag).to_owned())
            .unwrap_or_default())
    }

    /// AbortMultipartUpload; an upload already gone is not an error.
    pub(crate) fn abort(&self, key: &str, upload: &str) -> Result<(), S3Error> {
        let url = self
            .bucket
            .abort_multipart_upload(self.creds(), key, upload)
            .sign(SIGNED_FOR);
        self.delete_gone_or_not(&url)
    }

    /// One page of ListObjectsV2 under `prefix`, grouped by `/` when `folders`, from
    /// `token` (a previous page's `next`), at most `max` keys.
    pub(crate) fn list(
        &self,
        prefix: &str,
        folders: bool,
        token: Option<&str>,
        max: usize,
    ) -> Result<Page, S3Error> {
        let mut action = ListObjectsV2::new(&self.bucket, self.creds());
        action.with_prefix(prefix);
        if folders {
            action.with_delimiter("/");
        }
        if let Some(t) = token {
            action.with_continuation_token(t);
        }
        action.with_max_keys(max.clamp(1, MAX_KEYS_PAGE));
        let reply = self
            .agent
            .get(action.sign(SIGNED_FOR).as_str())
            .call()
            .map_err(|e| self.transport(e))?;
        let text = self.text(self.check(reply)?)?;
        let parsed = ListObjectsV2::parse_response(&text)
            .map_err(|e| self.malformed(format!("ListObjectsV2 reply: {e}")))?;
        Ok(Page {
            objects: parsed
                .contents
                .into_iter()
                .map(|c| {
                    let when = iso8601(&c.last_modified);
                    (c.key, c.size, when)
                })
                .collect(),
            prefixes: parsed
                .common_prefixes
                .into_iter()
                .map(|p| p.prefix)
                .collect(),
            next: parsed.next_continuation_token,
        })
    }

    /// One page of ListMultipartUploads under `prefix`, from `after` (a previous page's
    /// markers). rusty-s3 has no action for it: the bucket-level GET of ListObjectsV2 is
    /// signed with ListMultipartUploads' query instead.
    pub(crate) fn list_uploads(
        &self,
        prefix: &str,
        after: Option<&(String, String)>,
    ) -> Result<UploadsPage, S3Error> {
        let mut action = ListObjectsV2::new(&self.bucket, self.creds());
        let query = action.query_mut();
        query.remove("list-type");
        query.remove("encoding-type");
        query.insert("uploads", "");
        query.insert("prefix", prefix.to_owned());
        query.insert("max-uploads", MAX_KEYS_PAGE.to_string());
        if let Some((key, id)) = after {
            query.insert("key-marker", key.clone());
            query.insert("upload-id-marker", id.clone());
        }
        let reply = self
            .agent
            .get(action.sign(SIGNED_FOR).as_str())
            .call()
            .map_err(|e| self.transport(e))?;
        let text = self.text(self.check(reply)?)?;
        let page = instant_xml::from_str::<UploadsListed>(&text)
            .map_err(|e| self.malformed(format!("ListMultipartUploads reply: {e}")))?;
        let uploads = page
            .uploads
            .into_iter()
            .map(|u| ListedUpload {
                key: u.key,
                upload_id: u.upload_id,
                initiated: u.initiated.as_deref().and_then(iso8601),
            })
            .collect();
        let next = match page.truncated {
            Some(true) => page.next_key.zip(page.next_upload),
            _ => None,
        };
        Ok((uploads, next))
    }
}

/// Signs `action` with the user metadata `meta` (names without `x-amz-meta-`) among its
/// signed headers; its URL, and those headers, which the request must carry as signed.
fn sign_with_meta<'a>(
    action: &mut impl S3Action<'a>,
    meta: &[(&str, String)],
) -> (url::Url, Vec<(String, String)>) {
    let headers: Vec<(String, String)> = meta
        .iter()
        .map(|(name, value)| (format!("x-amz-meta-{name}"), value.clone()))
        .collect();
    for (name, value) in &headers {
        action.headers_mut().insert(name.clone(), value.clone());
    }
    (action.sign(SIGNED_FOR), headers)
}

/// A header's value as text.
fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The ETag header, without quotes.
fn etag_of(headers: &HeaderMap) -> Option<String> {
    header(headers, "etag").map(|v| unquoted(v).to_owned())
}

/// An ETag without its surrounding quotes.
pub(crate) fn unquoted(etag: &str) -> &str {
    etag.trim().trim_matches('"')
}

/// An ETag in quotes, as conditions and CompleteMultipartUpload want it.
fn quoted(etag: &str) -> String {
    format!("\"{}\"", unquoted(etag))
}

/// S3's XML namespace, on every reply but errors.
const S3_NS: &str = "http://s3.amazonaws.com/doc/2006-03-01/";

/// The reply to CompleteMultipartUpload (the fields ferry reads).
#[derive(Debug, FromXml)]
#[xml(rename = "CompleteMultipartUploadResult", ns(S3_NS))]
struct Completed {
    #[xml(rename = "ETag")]
    etag: String,
}

/// A page of ListMultipartUploads.
#[derive(Debug, FromXml)]
#[xml(rename = "ListMultipartUploadsResult", ns(S3_NS))]
struct UploadsListed {
    uploads: Vec<UploadListed>,
    #[xml(rename = "IsTruncated")]
    truncated: Option<bool>,
    #[xml(rename = "NextKeyMarker")]
    next_key: Option<String>,
    #[xml(rename = "NextUploadIdMarker")]
    next_upload: Option<String>,
}

/// One multipart upload in [`UploadsListed`].
#[derive(Debug, FromXml)]
#[xml(rename = "Upload", ns(S3_NS))]
struct UploadListed {
    #[xml(rename = "Key")]
    key: String,
    #[xml(rename = "UploadId")]
    upload_id: String,
    #[xml(rename = "Initiated")]
    initiated: Option<String>,
}

/// An S3 error reply (no namespace).
#[derive(Debug, FromXml)]
#[xml(rename = "Error")]
struct ErrorReply {
    #[xml(rename = "Code")]
    code: Option<String>,
    #[xml(rename = "Message")]
    message: Option<String>,
}

/// The `Code` and `Message` of an S3 error reply, the message shortened.
fn error_fields(body: &str) -> (String, String) {
    let reply = instant_xml::from_str::<ErrorReply>(body).ok();
    let (code, mut message) = reply.map_or_else(Default::default, |r| {
        (r.code.unwrap_or_default(), r.message.unwrap_or_default())
    });
    if message.len() > MAX_MESSAGE {
        let mut cut = MAX_MESSAGE;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
        message.push('…');
    }
    (code, message)
}

/// An ISO 8601 UTC time as ListObjectsV2 gives it (`2026-11-29T16:20:23.000Z`).
fn iso8601(text: &str) -> Option<SystemTime> {
    text.trim()
        .parse::<jiff::Timestamp>()
        .ok()
        .map(SystemTime::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_replies_are_read_and_shortened() {
        let body = format!(
            "<?xml version=\"1.0\"?><Error><Code>NoSuchKey</Code><Message>{}</Message></Error>",
            "x".repeat(1000)
        );
        let (code, message) = error_fields(&body);
        assert_eq!(code, "NoSuchKey");
        assert!(message.len() <= MAX_MESSAGE + 3);
        assert_eq!(error_fields("not xml"), (String::new(), String::new()));
    }

    #[test]
    fn errors_name_the_store() {
        let e = |code: &str, message: &str| S3Error::Status {
            endpoint: "http://s3:7480".into(),
            status: 403,
            code: code.into(),
            message: message.into(),
        };
        assert_eq!(
            e("AccessDenied", "no").to_string(),
            "the object store (http://s3:7480) said HTTP 403 AccessDenied: no"
        );
        assert_eq!(
            e("", "").to_string(),
            "the object store (http://s3:7480) said HTTP 403"
        );
        assert!(e("", "").status() == Some(403) && !e("", "").is_not_found());
    }

    #[test]
    fn etags_lose_and_get_their_quotes() {
        assert_eq!(unquoted("\"abc\""), "abc");
        assert_eq!(unquoted("abc"), "abc");
        assert_eq!(quoted("\"abc\""), "\"abc\"");
    }

    /// Replies as S3 documents them (and RGW sends them): unknown elements are skipped.
    #[test]
    fn replies_rusty_s3_does_not_parse_are_read() {
        let listed = r#"<?xml version="1.0" encoding="UTF-8"?>
<ListMultipartUploadsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
<Bucket>b</Bucket><KeyMarker></KeyMarker><UploadIdMarker></UploadIdMarker>
<NextKeyMarker>p/a&amp;b</NextKeyMarker><NextUploadIdMarker>2~x</NextUploadIdMarker>
<MaxUploads>1000</MaxUploads><IsTruncated>true</IsTruncated>
<Upload><Key>p/a&amp;b</Key><UploadId>2~x</UploadId>
<Initiator><ID>u</ID><DisplayName>u</DisplayName></Initiator>
<Owner><ID>u</ID><DisplayName>u</DisplayName></Owner>
<StorageClass>STANDARD</StorageClass><Initiated>2026-11-29T16:20:23.500Z</Initiated></Upload>
</ListMultipartUploadsResult>"#;
        let page = instant_xml::from_str::<UploadsListed>(listed).unwrap();
        assert_eq!(page.uploads.len(), 1);
        assert_eq!(page.uploads[0].key, "p/a&b");
        assert_eq!(page.uploads[0].upload_id, "2~x");
        assert!(page.uploads[0]
            .initiated
            .as_deref()
            .and_then(iso8601)
            .is_some());
        assert_eq!(page.truncated, Some(true));
        assert_eq!(page.next_key.as_deref(), Some("p/a&b"));
        let done = r#"<?xml version="1.0" encoding="UTF-8"?>
<CompleteMultipartUploadResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
<Location>http://h/b/k</Location><Bucket>b</Bucket><Key>k</Key>
<ETag>&quot;3858f62230ac3c915f300c664312c11f-9&quot;</ETag></CompleteMultipartUploadResult>"#;
        let c = instant_xml::from_str::<Completed>(done).unwrap();
        assert_eq!(unquoted(&c.etag), "3858f62230ac3c915f300c664312c11f-9");
        let err = r#"<?xml version="1.0" encoding="UTF-8"?><Error><Code>PreconditionFailed</Code><BucketName>b</BucketName><RequestId>r</RequestId><HostId>h</HostId></Error>"#;
        assert_eq!(
            error_fields(err),
            ("PreconditionFailed".to_owned(), String::new())
        );
        assert_eq!(error_fields("not xml"), (String::new(), String::new()));
    }

    #[test]
    fn listing_times_parse() {
        let t = iso8601("2026-11-29T16:20:23.500Z").unwrap();
        let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap();
        assert_eq!(d.as_secs(), 1_795_969_223);
        assert_eq!(d.subsec_millis(), 500);
        assert_eq!(
            iso8601("1970-01-01T00:00:00Z"),
            Some(SystemTime::UNIX_EPOCH)
        );
        assert_eq!(iso8601("garbage"), None);
        assert_eq!(iso8601("2026-13-01T00:00:00Z"), None);
    }
}
