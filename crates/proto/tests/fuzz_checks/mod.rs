//! The checks behind the `cargo fuzz` targets in `fuzz/`, shared word for word with the corpus
//! replay in `tests/fuzz_corpus.rs`: each fuzz target is `checks::<target>(data)`, and the test
//! runs every file of `tests/corpus/<target>/` through the same function. There is one copy:
//! the fuzz targets include this file with `#[path = ...]`.
//!
//! Every check takes raw bytes and must not panic for any input; a panic is a bug either in
//! `ferry-proto` or in an invariant stated here. Structured inputs are decoded from the bytes
//! by [`Input`] (a tiny stand-in for `arbitrary`, so that the replay needs no extra crates).
#![allow(dead_code)]

use std::path::{Component, Path};

use ferry_proto::name::{escape, MAX_COMPONENT_LEN, MAX_DEPTH, MAX_NAME_LEN};
use ferry_proto::wire::{
    self, kind, Frame, Timestamp, FRAME_HEADER_LEN, MAGIC, MAX_CONTROL_PAYLOAD, MAX_REASON_LEN,
    MAX_TOKEN_LEN, MIN_VERSION, VERSION,
};
use ferry_proto::{
    BodyCheck, Code, Connection, Digest, Entry, EntryKind, Error, Event, FileId, FileInfo, Framing,
    Hasher, Incoming, Name, OfferOptions, ProtocolError, Side,
};

/// A fuzz target's check: panics when an invariant does not hold for the input.
pub type Check = fn(&[u8]);

/// The fuzz targets, by directory name under `tests/corpus/` and `fuzz/fuzz_targets/`.
pub const TARGETS: &[(&str, Check)] = &[
    ("frame_decode", frame_decode),
    ("names", names),
    ("server_stream", server_stream),
    ("client_stream", client_stream),
    ("seed_stream", seed_stream),
];

// ----- input decoding ------------------------------------------------------------------------

/// Reads structure off the front of the fuzzer's bytes; runs out gracefully (zeros).
pub struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Self { data }
    }
    pub fn u8(&mut self) -> u8 {
        match self.data.split_first() {
            Some((b, rest)) => {
                self.data = rest;
                *b
            }
            None => 0,
        }
    }
    pub fn take(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.data.split_at(n.min(self.data.len()));
        self.data = rest;
        head
    }
    pub fn rest(self) -> &'a [u8] {
        self.data
    }
}

/// A byte stream cut at fuzzer-chosen points: `options, n, n chunk sizes, stream...`.
///
/// `n` is the low 3 bits of its byte; each size byte `b` gives a chunk of `b + 1` bytes, cycled
/// over the stream; with `n == 0` the stream is delivered in one piece.
pub struct Chunked<'a> {
    pub options: u8,
    pub sizes: Vec<usize>,
    pub stream: &'a [u8],
}

impl<'a> Chunked<'a> {
    pub fn parse(data: &'a [u8]) -> Self {
        let mut input = Input::new(data);
        let options = input.u8();
        let n = usize::from(input.u8() & 7);
        let sizes = input.take(n).iter().map(|b| usize::from(*b) + 1).collect();
        Self {
            options,
            sizes,
            stream: input.rest(),
        }
    }

    /// Encodes the header for `options` and `sizes` (used to write seed inputs).
    pub fn header(options: u8, sizes: &[u8]) -> Vec<u8> {
        assert!(sizes.len() <= 7);
        let mut v = vec![options, sizes.len() as u8];
        v.extend_from_slice(sizes);
        v
    }
}

// ----- frame_decode ----------------------------------------------------------------------------

/// `kind, payload...` into [`Frame::decode`]; the first five bytes into [`wire::parse_header`].
///
/// A frame that decodes re-encodes to a header that parses to the same kind and the payload's
/// length, and decodes again to the same frame; the encoding is byte for byte the payload
/// (OFFER: up to the absent optional fields, which are sent as zero).
pub fn frame_decode(data: &[u8]) {
    if let Ok(header) =
        <[u8; FRAME_HEADER_LEN]>::try_from(data.get(..FRAME_HEADER_LEN).unwrap_or(&[]))
    {
        check_header(header);
    }
    let Some((&k, payload)) = data.split_first() else {
        return;
    };
    let Ok(frame) = Frame::decode(k, payload) else {
        return;
    };
    assert_ne!(k, kind::DATA, "DATA payloads are never decoded");
    assert_eq!(frame.kind(), k);
    let mut out = Vec::new();
    frame.encode(&mut out);
    let header: [u8; FRAME_HEADER_LEN] = out[..FRAME_HEADER_LEN].try_into().unwrap();
    let (k2, len) = wire::parse_header(header).expect("an encoded header parses");
    assert_eq!(k2, k);
    assert_eq!(len as usize, out.len() - FRAME_HEADER_LEN);
    assert_eq!(
        len as usize,
        payload.len(),
        "re-encoding changes the length"
    );
    assert!(len <= MAX_CONTROL_PAYLOAD);
    let again = Frame::decode(k, &out[FRAME_HEADER_LEN..]).expect("an encoded frame decodes");
    assert_eq!(again, frame);
    let mut out2 = Vec::new();
    again.encode(&mut out2);
    assert_eq!(out2, out, "encoding is not a function of the frame");
    if let Frame::Offer { name, digest, .. } = &frame {
        // id and flags, and the name (then the digest) at the end, are carried as they came.
        assert_eq!(out[FRAME_HEADER_LEN..FRAME_HEADER_LEN + 9], payload[..9]);
        let before_digest = payload.len() - if digest.is_some() { 32 } else { 0 };
        assert!(payload[..before_digest].ends_with(name.as_bytes()));
        if let Some(d) = digest {
            assert_eq!(&payload[before_digest..], &d.0[..]);
        }
    } else {
        assert_eq!(&out[FRAME_HEADER_LEN..], payload, "non-canonical decode");
    }
    check_text_caps(&frame);
}

fn check_header(h: [u8; FRAME_HEADER_LEN]) {
    let k = h[0];
    let len = u32::from_be_bytes([h[1], h[2], h[3], h[4]]);
    match wire::parse_header(h) {
        Ok((k2, len2)) => {
            assert_eq!((k2, len2), (k, len));
            assert!(wire::frame_name(k).is_some());
            assert!(k == kind::DATA || len <= MAX_CONTROL_PAYLOAD);
        }
        Err(ProtocolError::UnknownFrame(k2)) => {
            assert_eq!(k2, k);
            assert!(wire::frame_name(k).is_none());
        }
        Err(ProtocolError::FrameTooLarge {
            kind: k2,
            len: l2,
            max,
        }) => {
            assert_eq!((k2, l2, max), (k, len, MAX_CONTROL_PAYLOAD));
            assert!(k != kind::DATA && len > MAX_CONTROL_PAYLOAD);
        }
        Err(e) => panic!("unexpected header error {e:?}"),
    }
}

fn check_text_caps(frame: &Frame) {
    let (text, cap) = match frame {
        Frame::Hello { token, .. } => (token.len(), MAX_TOKEN_LEN),
        Frame::Offer { name, .. } | Frame::Get { name, .. } => (name.len(), MAX_NAME_LEN),
        Frame::Refuse { reason, .. }
        | Frame::Cancel { reason, .. }
        | Frame::Error { reason, .. }
        | Frame::Result { detail: reason, .. } => (reason.len(), MAX_REASON_LEN),
        Frame::List { path, .. } => (path.len(), MAX_NAME_LEN),
        Frame::Entries { entries, .. } => {
            assert!(!entries.is_empty(), "a page without entries");
            for e in entries {
                assert!(e.mtime.nanos < 1_000_000_000);
                assert!(Name::parse(e.name.as_str()).is_ok());
            }
            (0, 0)
        }
        _ => (0, 0),
    };
    assert!(text <= cap, "text field of {text} bytes over its cap {cap}");
    if let Frame::Offer {
        mtime,
        kind,
        size,
        digest,
        ..
    } = frame
    {
        assert!(mtime.is_none_or(|t| t.nanos < 1_000_000_000));
        if *kind == EntryKind::Folder {
            assert!(size.is_none() && digest.is_none(), "a folder with a size");
        }
        assert!(
            digest.is_none() || size.is_some(),
            "a digest without a size"
        );
    }
}

// ----- names -----------------------------------------------------------------------------------

/// Any string into [`Name::parse`], [`Name::parse_single`] and [`Name::portable`]: an accepted
/// name is safe to join onto a POSIX folder (PROTOCOL.md §5.1); a portable one also keeps
/// every Windows rule (§5.2), and a name that breaks one is never portable; [`escape`] never
/// lets a control character through.
pub fn names(data: &[u8]) {
    let raw = String::from_utf8_lossy(data);
    let raw = raw.as_ref();
    let escaped = escape(raw);
    assert!(
        !escaped.chars().any(forbidden_char),
        "escape leaks a control character: {escaped:?}"
    );
    let multi = Name::parse(raw);
    let single = Name::parse_single(raw);
    if let Ok(n) = &multi {
        check_valid_name(raw, n);
    }
    match &single {
        Ok(n) => {
            check_valid_name(raw, n);
            assert!(!raw.contains('/'));
            assert_eq!(multi.as_ref(), Ok(n), "single accepted, multi refused");
        }
        Err(_) => assert!(
            multi.is_err() || raw.contains('/'),
            "multi accepted a one-component name that single refused"
        ),
    }
}

/// An independent statement of the characters PROTOCOL.md §5.1 refuses: control characters,
/// bidirectional controls and the format characters that only hide (not ZWNJ and ZWJ).
fn forbidden_char(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{061C}' | '\u{200B}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{206F}' | '\u{FEFF}'
            | '\u{FFF9}'..='\u{FFFB}')
}

fn check_valid_name(raw: &str, n: &Name) {
    assert_eq!(n.as_str(), raw);
    assert!(!raw.is_empty() && raw.len() <= MAX_NAME_LEN);
    assert!(!raw.starts_with('/'));
    let components: Vec<&str> = n.components().collect();
    assert!(!components.is_empty() && components.len() <= MAX_DEPTH);
    assert_eq!(components.join("/"), raw);
    assert_eq!(n.file_name(), *components.last().unwrap());
    for c in &components {
        assert!(!c.is_empty(), "empty component in {raw:?}");
        assert!(*c != "." && *c != "..", "dot component in {raw:?}");
        assert!(c.len() <= MAX_COMPONENT_LEN);
        assert!(!c.eq_ignore_ascii_case("..namedfork"), "{raw:?}");
        assert!(
            !c.chars().any(forbidden_char),
            "control character in {raw:?}"
        );
    }
    // Windows rules: portable exactly when no component breaks one (PROTOCOL.md §5.2).
    let windows_unsafe = components.iter().any(|c| {
        c.ends_with('.')
            || c.ends_with(' ')
            || is_device_name(c)
            || c.chars()
                .any(|ch| matches!(ch, '\\' | ':' | '<' | '>' | '"' | '|' | '?' | '*'))
    });
    assert_eq!(n.portable().is_ok(), !windows_unsafe, "{raw:?}");
    // Joined onto a folder, it stays under it, one plain component per name component.
    let base = Path::new("/srv/ferry-root");
    let joined = base.join(raw);
    assert!(joined.starts_with(base), "{raw:?} escapes the folder");
    let path = Path::new(raw);
    assert!(path.is_relative() && !path.has_root());
    let parts: Vec<Component> = path.components().collect();
    assert_eq!(parts.len(), components.len(), "{raw:?}");
    assert!(parts.iter().all(|p| matches!(p, Component::Normal(_))));
    assert_eq!(n.to_string(), escape(raw));
}

/// An independent statement of the Windows device-name rule of PROTOCOL.md §5.
fn is_device_name(component: &str) -> bool {
    let stem = component
        .split('.')
        .next()
        .unwrap_or("")
        .trim_end_matches(' ');
    let upper: Vec<char> = stem.chars().map(|c| c.to_ascii_uppercase()).collect();
    let word: String = upper.iter().collect();
    if ["CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"].contains(&word.as_str()) {
        return true;
    }
    upper.len() == 4
        && (word.starts_with("COM") || word.starts_with("LPT"))
        && (upper[3].is_ascii_digit() || matches!(upper[3], '¹' | '²' | '³'))
}

// ----- the connection machines ---------------------------------------------------------------

/// What a fuzzed connection ended with.
#[derive(Debug, Default)]
pub struct Run {
    /// Every event the machine raised, in order.
    pub events: Vec<Event>,
    /// Everything the machine transmitted.
    pub output: Vec<u8>,
    /// The sticky protocol error, if the input was refused.
    pub error: Option<ProtocolError>,
    /// Body bytes handed to the machine with `body_received`.
    pub body_bytes: u64,
}

/// Synthetic file contents for the files a harness sends.
fn content(id: FileId, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (id as u8).wrapping_mul(31) ^ (i as u8))
        .collect()
}

fn hasher_of(data: &[u8]) -> Hasher {
    let mut h = Hasher::new();
    h.update(data);
    h
}

/// The well-behaved application around a machine: answers every event the way a real server
/// or client would, and checks what the machine says against what it was given.
struct App {
    conn: Connection,
    side: Side,
    /// Server: accept uploads with a resume prefix of up to this many bytes.
    resume: usize,
    /// Server: size of the files it serves.
    served_len: usize,
    /// Client: contents of the files it offered, by id.
    uploads: Vec<(FileId, Vec<u8>)>,
    /// Client: the names it asked for, by id.
    gets: Vec<(FileId, Name)>,
    /// Client: the listings it asked for, by id, with the entries received so far.
    lists: Vec<(FileId, u64)>,
    /// Prefix each accepted incoming file was accepted with, by id.
    prefixes: Vec<(FileId, Hasher)>,
    /// The body being received, mirrored: id and a hasher over what was handed over.
    body: Option<(FileId, Hasher)>,
    run: Run,
}

impl App {
    fn new(conn: Connection) -> Self {
        let side = conn.side();
        Self {
            conn,
            side,
            resume: 0,
            served_len: 0,
            uploads: Vec::new(),
            gets: Vec::new(),
            lists: Vec::new(),
            prefixes: Vec::new(),
            body: None,
            run: Run::default(),
        }
    }

    /// Client, once version 2 is negotiated: offers a folder and lists the root.
    fn after_welcome_v2(&mut self) {
        let info = FileInfo {
            name: Name::parse("up/folder").unwrap(),
            size: None,
            mtime: Some(Timestamp { secs: 1, nanos: 2 }),
            mode: Some(0o755),
        };
        let id = self
            .conn
            .offer_with(info, OfferOptions::folder())
            .expect("offer a folder");
        self.uploads.push((id, Vec::new()));
        let id = self.conn.list(None, false).expect("list the root");
        self.lists.push((id, 0));
    }

    fn flush(&mut self) {
        let out = self.conn.poll_transmit();
        self.run.output.extend_from_slice(out);
        let n = out.len();
        self.conn.transmitted(n);
        assert!(self.conn.poll_transmit().is_empty());
    }

    fn cap(&self) -> usize {
        match self.conn.framing() {
            Some(Framing::Seed) => MAX_NAME_LEN,
            _ => MAX_CONTROL_PAYLOAD as usize + FRAME_HEADER_LEN,
        }
    }

    /// Answers every queued event; returns how many there were.
    fn answer_events(&mut self) -> usize {
        let mut n = 0;
        while let Some(ev) = self.conn.poll_event() {
            n += 1;
            self.answer(&ev);
            self.run.events.push(ev);
        }
        self.flush();
        n
    }

    fn answer(&mut self, ev: &Event) {
        let c = &mut self.conn;
        match (self.side, ev) {
            (Side::Server, Event::Hello { version, .. }) => {
                assert!((MIN_VERSION..=VERSION).contains(version));
                assert_eq!(c.version(), Some(*version));
                c.welcome().expect("welcome after HELLO");
            }
            (Side::Client, Event::Welcome { version }) => {
                assert!((MIN_VERSION..=VERSION).contains(version));
                assert_eq!(c.version(), Some(*version));
                if *version >= 2 {
                    self.after_welcome_v2();
                }
            }
            (Side::Server, Event::Offer(o)) if o.kind == EntryKind::Folder => {
                assert!(o.size.is_none() && o.digest.is_none());
                match &o.name {
                    Ok(_) => c.finish(o.id, Code::Stored, "folder"),
                    Err(bad) => c.refuse(o.id, Code::BadName, &bad.to_string()),
                }
                .expect("answer a folder offer");
            }
            (Side::Server, Event::Offer(o))
                if o.name.is_ok()
                    && o.size == Some(0)
                    && o.mtime.is_some()
                    && o.digest.is_none_or(|d| d == Digest::of_empty())
                    && c.version() >= Some(2) =>
            {
                // The server "holds" every empty file: a v2 check by size and mtime, or by an
                // offered digest of nothing, says unchanged (PROTOCOL.md §4.8).
                let mtime = o.mtime.expect("checked");
                let same = o.unchanged(0, mtime, || Ok::<_, ()>(Digest::of_empty()));
                assert_eq!(same, Ok(true));
                c.refuse(o.id, Code::Unchanged, "held")
                    .expect("answer an unchanged offer");
            }
            (Side::Server, Event::Offer(o)) => match &o.name {
                Ok(name) => {
                    assert!(Name::parse(name.as_str()).is_ok());
                    if c.framing() == Some(Framing::Seed) {
                        assert!(!name.as_str().contains('/'));
                        assert_eq!((o.id, o.size), (1, None));
                    }
                    let k = o.size.map_or(0, |s| self.resume.min(s as usize));
                    let prefix = hasher_of(&b"held bytes, kept for resume"[..k.min(27)]);
                    self.prefixes.push((o.id, prefix.clone()));
                    c.accept(o.id, prefix).expect("accept the next offer");
                }
                Err(bad) => {
                    assert!(!bad.raw.chars().any(forbidden_char), "unescaped {bad:?}");
                    c.refuse(o.id, Code::BadName, &bad.to_string())
                        .expect("refuse the next offer");
                }
            },
            (Side::Client, Event::Offer(o)) => {
                // A download: the machine has checked it answers our GET, name and all.
                let Some((_, want)) = self.gets.iter().find(|(id, _)| *id == o.id) else {
                    panic!("offer for #{} that was never requested", o.id);
                };
                assert_eq!(o.name.as_ref(), Ok(want));
                let k = o.size.map_or(0, |s| self.resume.min(s as usize));
                let prefix = hasher_of(&b"partial download"[..k.min(16)]);
                self.prefixes.push((o.id, prefix.clone()));
                c.accept(o.id, prefix).expect("accept a download");
            }
            (Side::Server, Event::Get { id, name }) => match name {
                Ok(name) => {
                    let info = FileInfo {
                        name: name.clone(),
                        size: Some(self.served_len as u64),
                        mtime: None,
                        mode: Some(0o644),
                    };
                    c.serve(*id, info).expect("serve the next GET");
                    self.uploads.push((*id, content(*id, self.served_len)));
                }
                Err(bad) => c
                    .refuse(*id, Code::BadName, &bad.to_string())
                    .expect("refuse the next GET"),
            },
            (_, Event::Accepted { id, offset, prefix }) => {
                let Some((_, data)) = self.uploads.iter().find(|(i, _)| i == id) else {
                    panic!("ACCEPT for #{id}, which we never offered");
                };
                let data = data.clone();
                let local = if (*offset as usize) <= data.len() {
                    hasher_of(&data[..*offset as usize])
                } else {
                    Hasher::new()
                };
                let matches = local.len() == *offset && local.finalize() == *prefix;
                let from = c.begin(*id, local).expect("begin an accepted file");
                assert_eq!(from, if matches && *offset > 0 { *offset } else { 0 });
                let from = from as usize;
                c.send_data(&data[from..]).expect("send the body");
                let digest = c.end().expect("end the body");
                assert_eq!(digest, Digest::of(&data));
            }
            (_, Event::Begin { id, from }) => {
                assert!(self.body.is_none(), "BEGIN inside a body");
                let held = self
                    .prefixes
                    .iter()
                    .find(|(i, _)| i == id)
                    .map(|(_, h)| h.clone())
                    .expect("BEGIN for a file we accepted");
                let h = if *from == 0 {
                    Hasher::new()
                } else {
                    assert_eq!(*from, held.len(), "BEGIN from neither 0 nor the offset");
                    held
                };
                self.body = Some((*id, h));
            }
            (_, Event::End { id, size, check }) => {
                let (bid, h) = self.body.take().expect("END without BEGIN");
                assert_eq!(bid, *id);
                assert_eq!(
                    *size,
                    h.len(),
                    "END size differs from the bytes handed over"
                );
                let mine = h.finalize();
                match check {
                    BodyCheck::Verified(d) => assert_eq!(*d, mine),
                    BodyCheck::Mismatch { expected, actual } => {
                        assert_eq!(*actual, mine);
                        assert_ne!(expected, actual);
                    }
                    BodyCheck::Unverified(d) => {
                        assert_eq!(c.framing(), Some(Framing::Seed));
                        assert_eq!(*d, mine);
                    }
                }
                let code = match check {
                    BodyCheck::Mismatch { .. } => Code::DigestMismatch,
                    _ => Code::Stored,
                };
                c.finish(*id, code, "stored")
                    .expect("finish a received file");
            }
            (_, Event::Cancelled { id, .. }) => {
                if self.body.as_ref().is_some_and(|(b, _)| b == id) {
                    self.body = None;
                }
            }
            (Side::Client, Event::Refused { id, .. }) => {
                assert!(
                    self.uploads.iter().any(|(i, _)| i == id)
                        || self.gets.iter().any(|(i, _)| i == id),
                    "REFUSE for #{id}, which we never sent"
                );
            }
            (Side::Server, Event::Refused { id, .. }) => {
                assert!(self.uploads.iter().any(|(i, _)| i == id));
            }
            (_, Event::Result { id, .. }) => {
                assert!(self.uploads.iter().any(|(i, _)| i == id));
            }
            (_, Event::PeerError { .. } | Event::Closed) => {}
            (
                Side::Server,
                Event::List {
                    id,
                    path,
                    recursive,
                },
            ) => match path {
                Ok(path) => {
                    let entries = listing_for(path.as_ref(), *recursive);
                    let mut rest = &entries[..];
                    while !rest.is_empty() {
                        let n = c.list_page(*id, rest).expect("a page of a valid listing");
                        assert!(n > 0, "no entry fits a page");
                        rest = &rest[n..];
                    }
                    c.listed(*id, 1).expect("end a listing");
                }
                Err(bad) => c
                    .refuse(*id, Code::BadName, &bad.to_string())
                    .expect("refuse the next LIST"),
            },
            (Side::Client, Event::Entries { id, entries }) => {
                let Some((_, got)) = self.lists.iter_mut().find(|(i, _)| i == id) else {
                    panic!("ENTRIES for #{id}, which we never listed");
                };
                // The client lists the root one level deep (see `after_welcome_v2`).
                assert!(entries.iter().all(|e| e.name.depth() == 1), "{entries:?}");
                *got += entries.len() as u64;
            }
            (Side::Client, Event::Listed { id, count, .. }) => {
                let Some(at) = self.lists.iter().position(|(i, _)| i == id) else {
                    panic!("LISTED for #{id}, which we never listed");
                };
                assert_eq!(self.lists.remove(at).1, *count);
            }
            (side, ev) => panic!("{side:?} machine raised {ev:?}"),
        }
    }

    /// After a protocol error: every input call returns it again, and nothing more is sent.
    fn check_sticky(&mut self, e: &ProtocolError) {
        self.flush();
        let want = Err(Error::Protocol(e.clone()));
        assert_eq!(self.conn.handle_input(b"\0ferry\r\n\x01"), want);
        assert_eq!(self.conn.handle_input(&[]), want);
        assert_eq!(self.conn.handle_eof().map(|()| 0), want);
        assert_eq!(self.conn.body_received(b"x").map(|()| 0), want);
        assert_eq!(self.conn.handle_input(&[kind::ERROR]), want);
        assert!(
            self.conn.poll_transmit().is_empty(),
            "sent more after an error"
        );
        assert!(self.conn.incoming().is_none() || self.conn.framing() == Some(Framing::Seed));
    }

    /// Feeds `stream` cut into `sizes` (cycled), moving body bytes as `incoming` says, then the
    /// end of the stream.
    fn drive(mut self, stream: &[u8], sizes: &[usize]) -> Run {
        self.answer_events();
        let mut rest = stream;
        let mut i = 0;
        while !rest.is_empty() {
            let n = sizes
                .get(i % sizes.len().max(1))
                .copied()
                .unwrap_or(usize::MAX)
                .min(rest.len());
            i += 1;
            match self.conn.incoming() {
                Some(Incoming::Bytes(due)) => {
                    assert!(due > 0, "zero body bytes due");
                    let k = n.min(usize::try_from(due).unwrap_or(usize::MAX));
                    self.take_body(&rest[..k]);
                    rest = &rest[k..];
                }
                Some(Incoming::UntilEof) => {
                    assert_eq!(self.conn.framing(), Some(Framing::Seed));
                    self.take_body(&rest[..n]);
                    rest = &rest[n..];
                }
                None => match self.conn.handle_input(&rest[..n]) {
                    Ok(used) => {
                        assert!(used <= n);
                        rest = &rest[used..];
                        let answered = self.answer_events();
                        if used == 0 {
                            assert!(
                                answered > 0 || self.conn.incoming().is_some(),
                                "stalled: no byte taken, nothing to answer, no body due: {:?}",
                                self.conn
                            );
                        }
                    }
                    Err(Error::Protocol(e)) => return self.failed(e),
                    Err(e) => panic!("handle_input returned a usage error: {e:?}"),
                },
            }
            assert!(
                self.conn.buffered() <= self.cap(),
                "{} bytes buffered",
                self.conn.buffered()
            );
            self.answer_events();
        }
        match self.conn.handle_eof() {
            Ok(()) => {
                self.answer_events();
                assert!(
                    self.body.is_none()
                        || self
                            .run
                            .events
                            .iter()
                            .any(|e| matches!(e, Event::PeerError { .. }))
                        || self.conn.framing() == Some(Framing::Seed)
                );
                assert_eq!(self.conn.buffered(), 0);
                // The end is final: a second EOF changes nothing.
                assert_eq!(self.conn.handle_eof(), Ok(()));
                assert!(self.conn.poll_event().is_none());
            }
            Err(Error::Protocol(e)) => return self.failed(e),
            Err(e) => panic!("handle_eof returned a usage error: {e:?}"),
        }
        self.flush();
        self.check_output();
        self.run
    }

    fn take_body(&mut self, data: &[u8]) {
        self.conn.body_received(data).expect("body bytes as due");
        self.run.body_bytes += data.len() as u64;
        let (_, h) = self.body.as_mut().expect("body bytes outside BEGIN..END");
        h.update(data);
    }

    fn failed(mut self, e: ProtocolError) -> Run {
        self.answer_events_after_error();
        self.check_sticky(&e);
        self.flush();
        let frames = self.check_output();
        match self.conn.framing() {
            // The peer is told why, with the error's own code, in the last frame.
            Some(Framing::Ferry) => match frames.last() {
                Some(Frame::Error { code, .. }) => assert_eq!(*code, e.code()),
                other => panic!("{e:?} but the last frame sent is {other:?}"),
            },
            // At most the one ERROR [`Self::check_output`] allows (PROTOCOL.md §2.1).
            Some(Framing::Seed) => {}
            None => assert!(
                self.run.output.is_empty(),
                "sent bytes before the framing was known"
            ),
        }
        self.run.error = Some(e);
        self.run
    }

    /// Events raised before the error are still delivered, but every command now fails.
    fn answer_events_after_error(&mut self) {
        while let Some(ev) = self.conn.poll_event() {
            self.run.events.push(ev);
        }
        assert!(self.conn.welcome().is_err());
    }

    /// Everything sent decodes as frames in this side's direction. Returns the control frames.
    fn check_output(&self) -> Vec<Frame> {
        let mut out = &self.run.output[..];
        match (self.side, self.conn.framing()) {
            (Side::Client, _) => {
                assert!(
                    out.starts_with(&MAGIC),
                    "client output starts with the magic"
                );
                out = &out[MAGIC.len()..];
            }
            (Side::Server, Some(Framing::Ferry)) => {}
            // PROTOCOL.md §2.1: a refusal, as one ERROR frame, and nothing else.
            (Side::Server, Some(Framing::Seed)) => {
                seed_answer(out);
                return Vec::new();
            }
            (Side::Server, _) => {
                assert!(out.is_empty(), "server sent bytes before the magic");
                return Vec::new();
            }
        }
        let mut frames = Vec::new();
        while !out.is_empty() {
            assert!(
                out.len() >= FRAME_HEADER_LEN,
                "a partial frame header was sent"
            );
            let header = out[..FRAME_HEADER_LEN].try_into().unwrap();
            let (k, len) = wire::parse_header(header).expect("sent a bad header");
            out = &out[FRAME_HEADER_LEN..];
            assert!(out.len() >= len as usize, "a partial frame was sent");
            let (payload, rest) = out.split_at(len as usize);
            out = rest;
            if k == kind::DATA {
                continue;
            }
            let frame = Frame::decode(k, payload).expect("sent a frame that does not decode");
            let allowed = match self.side {
                Side::Client => !matches!(
                    frame,
                    Frame::Welcome { .. } | Frame::Entries { .. } | Frame::Listed { .. }
                ),
                Side::Server => !matches!(
                    frame,
                    Frame::Hello { .. } | Frame::Get { .. } | Frame::List { .. }
                ),
            };
            assert!(allowed, "{:?} sent {frame:?}", self.side);
            // Nothing of version 2 ever goes to a peer that did not negotiate it.
            if self.conn.version() < Some(2) {
                assert_eq!(frame.version_2_feature(), None, "{frame:?} sent in v1");
            }
            frames.push(frame);
        }
        if self.side == Side::Client {
            assert!(matches!(frames.first(), Some(Frame::Hello { .. })));
        }
        frames
    }
}

/// What the fuzzed server lists under `path`: the path itself (a folder), then 40 files with
/// long names (two pages) and a folder, and with `recursive` a file inside that folder. Names
/// that would break the caps are left out.
fn listing_for(path: Option<&Name>, recursive: bool) -> Vec<Entry> {
    let entry = |kind, name: &str| {
        let name = match path {
            Some(p) if name.is_empty() => Some(p.clone()),
            Some(p) => Name::parse(&format!("{}/{name}", p.as_str())).ok(),
            None => Name::parse(name).ok(),
        };
        name.map(|name| Entry {
            kind,
            name,
            size: 0,
            mtime: Timestamp { secs: 7, nanos: 0 },
            mode: 0o644,
        })
    };
    let mut names: Vec<(EntryKind, String)> = Vec::new();
    if path.is_some() {
        names.push((EntryKind::Folder, String::new()));
    }
    for i in 0..40 {
        names.push((EntryKind::File, format!("{i:03}{}", "x".repeat(240))));
    }
    names.push((EntryKind::Folder, "d".into()));
    if recursive {
        names.push((EntryKind::File, "d/f".into()));
    }
    names
        .iter()
        .filter_map(|(kind, name)| entry(*kind, name))
        .collect()
}

/// The frames of `frames`, encoded one after the other.
fn enc(frames: &[Frame]) -> Vec<u8> {
    let mut out = Vec::new();
    for f in frames {
        f.encode(&mut out);
    }
    out
}

/// An entry with fixed size, mtime and mode, for seeds.
pub fn sample_entry(kind: EntryKind, name: &str) -> Entry {
    Entry {
        kind,
        name: Name::parse(name).unwrap(),
        size: 0,
        mtime: Timestamp { secs: 9, nanos: 1 },
        mode: 0o644,
    }
}

/// A version-2 client's stream after HELLO (a seed, and the start of mutations): a folder, an
/// unchanged empty file (digest), a plain empty file, three LISTs (root, a path, a bad path)
/// and a GET, to be answered in order by [`server_stream`]'s server.
pub fn v2_server_session() -> Vec<u8> {
    enc(&[
        Frame::Offer {
            kind: EntryKind::Folder,
            digest: None,
            id: 1,
            size: None,
            mtime: Some(Timestamp { secs: 1, nanos: 0 }),
            mode: Some(0o755),
            name: "dir".into(),
            early: false,
        },
        Frame::Offer {
            kind: EntryKind::File,
            digest: Some(Digest::of_empty()),
            id: 2,
            size: Some(0),
            mtime: Some(Timestamp { secs: 1, nanos: 0 }),
            mode: None,
            name: "dir/held".into(),
            early: false,
        },
        Frame::Offer {
            kind: EntryKind::File,
            digest: None,
            id: 3,
            size: Some(0),
            mtime: None,
            mode: None,
            name: "dir/new".into(),
            early: false,
        },
        Frame::Begin { id: 3, from: 0 },
        Frame::End {
            id: 3,
            size: 0,
            digest: Digest::of_empty(),
        },
        Frame::List {
            id: 4,
            recursive: false,
            path: String::new(),
        },
        Frame::List {
            id: 5,
            recursive: true,
            path: "dir".into(),
        },
        Frame::List {
            id: 6,
            recursive: false,
            path: "../x".into(),
        },
        Frame::Get {
            id: 7,
            name: "x:y".into(),
        },
    ])
}

/// What a version-2 server answers [`client_stream`]'s client after its uploads and GETs:
/// RESULT `Unchanged` for its folder offer `folder`, then two pages and the end of its
/// listing of the root `list`.
pub fn v2_client_tail(folder: FileId, list: FileId) -> Vec<u8> {
    enc(&[
        Frame::Result {
            id: folder,
            code: Code::Unchanged,
            detail: "up/folder".into(),
        },
        Frame::Entries {
            id: list,
            entries: vec![
                sample_entry(EntryKind::File, "a"),
                sample_entry(EntryKind::Folder, "d"),
            ],
        },
        Frame::Entries {
            id: list,
            entries: vec![sample_entry(EntryKind::File, "z?")],
        },
        Frame::Listed {
            id: list,
            count: 3,
            skipped: 0,
        },
    ])
}

/// The HELLO a client sends first, after the magic.
pub fn client_prelude() -> Vec<u8> {
    let c = Connection::client(None).unwrap();
    c.poll_transmit().to_vec()
}

/// A server machine that welcomes HELLO, accepts every upload (refusing bad names), serves
/// every valid GET, fed a hostile client's bytes.
///
/// Options: bits 0-1 prepend nothing, the magic, or the magic and HELLO; bits 2-3 the resume
/// prefix it accepts uploads with (0, 1, 5 or 27 bytes); bits 4-6 the size of served files.
pub fn server_stream(data: &[u8]) {
    let input = Chunked::parse(data);
    let prelude = match input.options & 3 {
        0 => Vec::new(),
        1 => MAGIC.to_vec(),
        _ => client_prelude(),
    };
    let mut stream = prelude;
    stream.extend_from_slice(input.stream);
    run_server(input.options, &stream, &input.sizes);
}

fn run_server(options: u8, stream: &[u8], sizes: &[usize]) -> Run {
    let mut app = App::new(Connection::server());
    app.resume = [0, 1, 5, 27][usize::from(options >> 2 & 3)];
    app.served_len = [0, 1, 2, 7, 100, 1000, 5000, 64][usize::from(options >> 4 & 7)];
    app.drive(stream, sizes)
}

/// A client machine that has offered some files and asked for others, fed a hostile server's
/// bytes: it begins and sends every accepted upload and accepts every download offered.
///
/// Options: bit 0 prepends a WELCOME; bits 1-3 the number of uploads (every second one sized,
/// the rest streams); bits 4-6 the number of GETs (`g1`, `g2`, ...); bit 7 accepts
/// downloads with a resume prefix.
pub fn client_stream(data: &[u8]) {
    let input = Chunked::parse(data);
    let mut stream = Vec::new();
    if input.options & 1 != 0 {
        Frame::Welcome { version: VERSION }.encode(&mut stream);
    }
    stream.extend_from_slice(input.stream);
    run_client(input.options, &stream, &input.sizes);
}

/// The client of [`client_stream`] after its offers and GETs.
fn client_with_files(options: u8) -> App {
    let mut app = App::new(Connection::client(None).unwrap());
    app.resume = if options & 0x80 != 0 { 4 } else { 0 };
    let uploads = usize::from(options >> 1 & 7);
    let gets = usize::from(options >> 4 & 7);
    for i in 0..uploads.max(gets) {
        if i < uploads {
            let len = 3 * i + 1;
            let name = Name::parse(&format!("up/f{}", i + 1)).unwrap();
            let sized = i % 2 == 1;
            let info = FileInfo {
                name,
                size: sized.then_some(len as u64),
                mtime: None,
                mode: None,
            };
            let id = app.conn.offer(info).expect("offer");
            app.uploads.push((id, content(id, len)));
        }
        if i < gets {
            let name = Name::parse(&format!("g{}", i + 1)).unwrap();
            let id = app.conn.get(name.clone()).expect("get");
            app.gets.push((id, name));
        }
    }
    app
}

fn run_client(options: u8, stream: &[u8], sizes: &[usize]) -> Run {
    client_with_files(options).drive(stream, sizes)
}

/// A server fed the seed framing (the first byte is made non-zero), accepting the upload when
/// its name is valid. The machine must agree with an independent reading of PROTOCOL.md §2.1:
/// the name is the first line, the body everything after it, and nothing is sent but one
/// ERROR frame for a refusal (an invalid name: `BadName`) or a failure.
pub fn seed_stream(data: &[u8]) {
    let input = Chunked::parse(data);
    let mut stream = input.stream.to_vec();
    match stream.first_mut() {
        Some(b) if *b == 0 => *b = b'n',
        Some(_) => {}
        None => stream.push(b'\n'),
    }
    let run = run_server(input.options & !3, &stream, &input.sizes);
    let answer = seed_answer(&run.output);
    let newline = stream[..stream.len().min(MAX_NAME_LEN + 1)]
        .iter()
        .position(|b| *b == b'\n');
    let Some(pos) = newline else {
        let expected = if stream.len() > MAX_NAME_LEN {
            ProtocolError::SeedNameTooLong { max: MAX_NAME_LEN }
        } else {
            ProtocolError::Truncated {
                got: stream.len() as u64,
                expected: stream.len() as u64 + 1,
            }
        };
        assert!(
            answer.is_none_or(|code| code == expected.code()),
            "{answer:?}"
        );
        assert_eq!(run.error, Some(expected));
        return;
    };
    let line = &stream[..pos];
    let body = &stream[pos + 1..];
    let valid = std::str::from_utf8(line)
        .ok()
        .and_then(|s| Name::parse_single(s).ok());
    let Some(Event::Offer(offer)) = run.events.first() else {
        panic!("no offer for a seed name line: {:?}", run.events);
    };
    assert_eq!(offer.name.as_ref().ok(), valid.as_ref());
    assert_eq!(run.error, None);
    match valid {
        Some(_) => {
            assert_eq!(answer, None, "a seed server answered an upload it took");
            assert_eq!(run.body_bytes, body.len() as u64);
            let end = Event::End {
                id: 1,
                size: body.len() as u64,
                check: BodyCheck::Unverified(Digest::of(body)),
            };
            assert_eq!(
                run.events[1..],
                [Event::Begin { id: 1, from: 0 }, end, Event::Closed]
            );
        }
        None => {
            // Refused, and told so: the rest is ignored, and the end of the stream is the
            // connection's one Closed event, as at any clean end.
            assert_eq!(answer, Some(Code::BadName));
            assert_eq!(run.body_bytes, 0);
            assert_eq!(run.events[1..], [Event::Closed]);
        }
    }
}

/// What a seed server wrote: nothing, or the code of the one whole ERROR frame it may write
/// (PROTOCOL.md §2.1).
fn seed_answer(output: &[u8]) -> Option<Code> {
    if output.is_empty() {
        return None;
    }
    let header: [u8; FRAME_HEADER_LEN] = output[..FRAME_HEADER_LEN].try_into().unwrap();
    let (kind, len) = wire::parse_header(header).unwrap();
    assert_eq!(
        output.len(),
        FRAME_HEADER_LEN + len as usize,
        "one frame, alone"
    );
    match Frame::decode(kind, &output[FRAME_HEADER_LEN..]).unwrap() {
        Frame::Error { code, .. } => Some(code),
        other => panic!("a seed server sent {other:?}"),
    }
}
