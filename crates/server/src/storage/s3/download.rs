//! Downloads from the bucket: the object's bytes read through a ranged GET of the version
//! offered, kept open while the reads follow each other and opened again where a read jumps.

use std::io::{self, Read};
use std::sync::Arc;

use ferry_proto::FileInfo;

use super::client::Head;
use super::Shared;
use crate::storage::Outgoing;

/// One version (ETag) of an object, read at offsets.
pub(crate) struct Body {
    shared: Arc<Shared>,
    key: String,
    etag: String,
    size: u64,
    /// The open GET and the offset it is at.
    stream: Option<(u64, Box<dyn Read + Send>)>,
}

impl Body {
    /// Reads of the object `key` as `head` describes it.
    pub(crate) fn new(shared: &Arc<Shared>, key: String, head: &Head) -> Self {
        Self {
            shared: Arc::clone(shared),
            key,
            etag: head.etag.clone(),
            size: head.size,
            stream: None,
        }
    }

    /// Reads at `at` into `buf`; 0 at the end. A version replaced meanwhile fails (the GET
    /// asks for the ETag offered).
    pub(crate) fn read(&mut self, at: u64, buf: &mut [u8]) -> io::Result<usize> {
        if at >= self.size || buf.is_empty() {
            return Ok(0);
        }
        let stream = match self.stream.take() {
            Some((pos, s)) if pos == at => s,
            _ => {
                let s = self
                    .shared
                    .client
                    .get_from(&self.key, at, &self.etag)
                    .map_err(|e| io::Error::other(e.to_string()))?;
                Box::new(s) as Box<dyn Read + Send>
            }
        };
        let mut stream = stream;
        let want = usize::try_from(self.size - at)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        let n = stream.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "the object store ({}) ended {} early",
                    self.shared.client.endpoint(),
                    self.key
                ),
            ));
        }
        self.stream = Some((at + n as u64, stream));
        Ok(n)
    }
}

/// A download being sent.
pub(crate) struct Download {
    /// The object's bytes.
    pub body: Body,
    /// What was offered.
    pub info: FileInfo,
}

impl Outgoing for Download {
    fn info(&self) -> &FileInfo {
        &self.info
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        self.body.read(offset, buf)
    }
}
