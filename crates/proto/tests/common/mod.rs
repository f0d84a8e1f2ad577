//! An in-memory harness: a client machine and a server machine exchange bytes through two
//! pipes, delivered in chunks whose size the test chooses. No sockets, no threads.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use ferry_proto::wire::{self, kind, Frame, Timestamp, FRAME_HEADER_LEN, MAGIC, VERSION};
use ferry_proto::{
    BodyCheck, Code, Connection, Digest, Entry, EntryKind, Event, FileId, FileInfo, Hasher,
    Incoming, Name, OfferOptions,
};

/// The mtime the harness client offers with every sized upload and folder.
pub const MTIME: Timestamp = Timestamp {
    secs: 1_700_000_000,
    nanos: 123_456_789,
};

/// What the client wants to do.
#[derive(Clone, Debug, Default)]
pub struct Plan {
    /// Files to upload: name, bytes, whether the size is announced.
    pub uploads: Vec<(String, Vec<u8>, bool)>,
    /// Files to download by name.
    pub gets: Vec<String>,
    /// Largest body slice handed to the machine at once.
    pub piece: usize,
    /// Most offers and GETs the client keeps outstanding.
    pub window: usize,
    /// Version 2: folders to offer (after WELCOME).
    pub folders: Vec<String>,
    /// Version 2: paths to LIST (empty: the root), and whether recursively.
    pub lists: Vec<(String, bool)>,
    /// Version 2: offer sized uploads with their digest (`--checksum`), after WELCOME.
    pub checksum: bool,
}

/// What the server holds.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Store {
    /// Published files.
    pub files: BTreeMap<String, Vec<u8>>,
    /// The mtimes of published files that have one.
    pub mtimes: BTreeMap<String, Timestamp>,
    /// Folders.
    pub folders: BTreeSet<String>,
    /// Partial uploads kept for resume.
    pub partials: BTreeMap<String, Vec<u8>>,
}

impl Store {
    /// What a LIST of `path` answers (PROTOCOL.md §4.10): `None` when nothing has that name.
    fn listing(&self, path: Option<&Name>, recursive: bool) -> Option<Vec<Entry>> {
        let entry = |name: &str| {
            let name_ = Name::parse(name).expect("stored names are valid");
            match self.files.get(name) {
                Some(data) => Entry {
                    kind: EntryKind::File,
                    name: name_,
                    size: data.len() as u64,
                    mtime: self.mtimes.get(name).copied().unwrap_or(MTIME),
                    mode: 0o644,
                },
                None => Entry {
                    kind: EntryKind::Folder,
                    name: name_,
                    size: 0,
                    mtime: MTIME,
                    mode: 0o755,
                },
            }
        };
        let mut out = Vec::new();
        let base = match path {
            Some(p) if self.files.contains_key(p.as_str()) => return Some(vec![entry(p.as_str())]),
            Some(p) if self.folders.contains(p.as_str()) => {
                out.push(entry(p.as_str()));
                p.depth()
            }
            Some(_) => return None,
            None => 0,
        };
        let names: BTreeSet<&String> = self.files.keys().chain(&self.folders).collect();
        for n in names {
            let name = Name::parse(n).unwrap();
            let under = path.is_none_or(|p| name.is_under(p));
            if under && (recursive || name.depth() == base + 1) {
                out.push(entry(n));
            }
        }
        Some(out)
    }
}

/// What happened.
#[derive(Debug, Default, PartialEq)]
pub struct Outcome {
    /// Upload name -> code from the server's RESULT or REFUSE.
    pub uploads: BTreeMap<String, Code>,
    /// Download name -> verified bytes, or the refusal code.
    pub downloads: BTreeMap<String, Result<Vec<u8>, Code>>,
    /// Upload name -> offset the body started at.
    pub starts: BTreeMap<String, u64>,
    /// Folder name -> code from the server's RESULT or REFUSE; `Unsupported` when version 1
    /// was negotiated and the folder could not be offered.
    pub folders: BTreeMap<String, Code>,
    /// Listed path -> the entries, in order, or the refusal code (`Unsupported` under v1).
    pub listings: BTreeMap<String, Result<Vec<Entry>, Code>>,
    /// ENTRIES pages the client received.
    pub pages: usize,
    /// The version each end negotiated: client, server.
    pub versions: (Option<u16>, Option<u16>),
    /// The server's store afterwards.
    pub store: Store,
}

/// One direction of the connection; can flip one bit at an absolute stream offset, and
/// keeps a copy of everything sent.
#[derive(Default)]
pub struct Pipe {
    bytes: VecDeque<u8>,
    sent: usize,
    corrupt_at: Option<usize>,
    log: Vec<u8>,
}

impl Pipe {
    pub fn push(&mut self, data: &[u8]) {
        for b in data {
            let flip = self.corrupt_at == Some(self.sent);
            self.bytes.push_back(if flip { b ^ 0x01 } else { *b });
            self.sent += 1;
        }
        self.log.extend_from_slice(data);
    }
}

/// The control frames of a logged ferry stream (DATA payloads skipped).
pub fn frames_of(mut log: &[u8]) -> Vec<Frame> {
    if log.starts_with(&MAGIC) {
        log = &log[MAGIC.len()..];
    }
    let mut frames = Vec::new();
    while !log.is_empty() {
        let header = log[..FRAME_HEADER_LEN].try_into().unwrap();
        let (k, len) = wire::parse_header(header).unwrap();
        let (payload, rest) = log[FRAME_HEADER_LEN..].split_at(len as usize);
        log = rest;
        if k != kind::DATA {
            frames.push(Frame::decode(k, payload).unwrap());
        }
    }
    frames
}

/// Moves everything the machine queued onto the pipe.
pub fn flush(conn: &mut Connection, pipe: &mut Pipe) {
    pipe.push(conn.poll_transmit());
    let n = conn.poll_transmit().len();
    conn.transmitted(n);
}

/// Feeds up to `chunk` bytes from the pipe; body bytes are appended to `body`. Returns the
/// events raised, and whether anything moved.
pub fn feed(
    conn: &mut Connection,
    pipe: &mut Pipe,
    chunk: usize,
    body: &mut Vec<u8>,
) -> (Vec<Event>, bool) {
    let mut moved = false;
    let mut budget = chunk.max(1).min(pipe.bytes.len());
    let mut events: Vec<Event> = Vec::new();
    while budget > 0 {
        // Events are acted on before any later byte: a BEGIN must be seen before its body.
        events.extend(std::iter::from_fn(|| conn.poll_event()));
        if !events.is_empty() {
            break;
        }
        let take = match conn.incoming() {
            Some(Incoming::Bytes(n)) => (n as usize).min(budget),
            Some(Incoming::UntilEof) => budget,
            None => budget,
        };
        let bytes: Vec<u8> = pipe.bytes.iter().take(take).copied().collect();
        let used = if conn.incoming().is_some() {
            conn.body_received(&bytes).expect("body bytes accepted");
            body.extend_from_slice(&bytes);
            bytes.len()
        } else {
            conn.handle_input(&bytes).expect("valid input")
        };
        if used == 0 {
            break;
        }
        pipe.bytes.drain(..used);
        budget -= used;
        moved = true;
    }
    events.extend(std::iter::from_fn(|| conn.poll_event()));
    (events, moved)
}

/// Sends a whole body, alternating the inline path and the caller-written DATA path.
pub fn send_body(conn: &mut Connection, data: &[u8], piece: usize, pipe: &mut Pipe) {
    for (i, part) in data.chunks(piece.max(1)).enumerate() {
        if i % 2 == 0 {
            conn.send_data(part).unwrap();
        } else {
            let header = conn.data_frame(part.len() as u32).unwrap();
            flush(conn, pipe);
            pipe.push(header.as_bytes());
            pipe.push(part);
            conn.body_sent(part).unwrap();
        }
    }
}

struct Server {
    conn: Connection,
    store: Store,
    offers: BTreeMap<FileId, (String, Option<Timestamp>)>,
    serving: BTreeMap<FileId, String>,
    body: Vec<u8>,
    current: Option<(String, Option<Timestamp>)>,
}

impl Server {
    fn on(&mut self, ev: Event, out: &mut Pipe, piece: usize) {
        let c = &mut self.conn;
        let v2 = c.version() >= Some(2);
        match ev {
            Event::Hello { token, version } => {
                assert_eq!(token.as_deref(), Some(&b"tok"[..]));
                assert_eq!(c.version(), Some(version));
                c.welcome().unwrap();
            }
            Event::Offer(o) if o.kind == EntryKind::Folder => match o.name {
                Err(_) => c.refuse(o.id, Code::BadName, "bad name").unwrap(),
                Ok(n) => {
                    let code = if self.store.files.contains_key(n.as_str()) {
                        Code::Exists
                    } else if self.store.folders.insert(n.as_str().to_owned()) {
                        Code::Stored
                    } else {
                        Code::Unchanged
                    };
                    c.finish(o.id, code, n.as_str()).unwrap();
                }
            },
            Event::Offer(o) => match &o.name {
                Err(_) => c.refuse(o.id, Code::BadName, "bad name").unwrap(),
                Ok(n) if self.store.files.contains_key(n.as_str()) => {
                    // PROTOCOL.md §4.8: the quick check first (v2), then the overwrite policy.
                    let held = &self.store.files[n.as_str()];
                    let mtime = self.store.mtimes.get(n.as_str()).copied();
                    let unchanged = v2
                        && mtime.is_some_and(|t| {
                            o.unchanged(held.len() as u64, t, || Ok::<_, ()>(Digest::of(held)))
                                == Ok(true)
                        });
                    if unchanged {
                        c.refuse(o.id, Code::Unchanged, n.as_str()).unwrap()
                    } else {
                        c.refuse(o.id, Code::Exists, "exists").unwrap()
                    }
                }
                Ok(n) => {
                    let mut prefix = Hasher::new();
                    if o.size.is_some() {
                        if let Some(p) = self.store.partials.get(n.as_str()) {
                            prefix.update(p);
                        }
                    }
                    c.accept(o.id, prefix).unwrap();
                    self.offers.insert(o.id, (n.as_str().to_owned(), o.mtime));
                }
            },
            Event::Begin { id, from } => {
                let (name, mtime) = self.offers[&id].clone();
                self.body = self.store.partials.remove(&name).unwrap_or_default();
                self.body.truncate(from as usize);
                self.current = Some((name, mtime));
            }
            Event::End { id, check, .. } => {
                let (name, mtime) = self.current.take().unwrap();
                if matches!(check, BodyCheck::Verified(_)) {
                    self.store
                        .files
                        .insert(name.clone(), std::mem::take(&mut self.body));
                    if let Some(t) = mtime {
                        self.store.mtimes.insert(name.clone(), t);
                    }
                    c.finish(id, Code::Stored, &name).unwrap();
                } else {
                    c.finish(id, Code::DigestMismatch, "digest mismatch")
                        .unwrap();
                }
            }
            Event::Get { id, name } => {
                match name
                    .ok()
                    .filter(|n| self.store.files.contains_key(n.as_str()))
                {
                    Some(n) => {
                        let size = Some(self.store.files[n.as_str()].len() as u64);
                        c.serve(
                            id,
                            FileInfo {
                                name: n.clone(),
                                size,
                                mtime: None,
                                mode: None,
                            },
                        )
                        .unwrap();
                        self.serving.insert(id, n.as_str().to_owned());
                    }
                    None => c.refuse(id, Code::NotFound, "no such file").unwrap(),
                }
            }
            Event::List {
                id,
                path,
                recursive,
            } => {
                let entries = match path {
                    Err(_) => return c.refuse(id, Code::BadName, "bad name").unwrap(),
                    Ok(p) => self.store.listing(p.as_ref(), recursive),
                };
                let Some(entries) = entries else {
                    return c.refuse(id, Code::NotFound, "no such file").unwrap();
                };
                // One page at a time: the machine never holds more than the page it queued.
                let mut rest = &entries[..];
                while !rest.is_empty() {
                    let n = c.list_page(id, rest).unwrap();
                    assert!(n > 0);
                    let queued = c.poll_transmit().len();
                    assert!(
                        queued <= FRAME_HEADER_LEN + wire::MAX_CONTROL_PAYLOAD as usize,
                        "{queued} bytes queued for one page"
                    );
                    flush(c, out);
                    rest = &rest[n..];
                }
                c.listed(id, 0).unwrap();
            }
            Event::Accepted { id, .. } => {
                let data = self.store.files[&self.serving[&id]].clone();
                c.begin(id, Hasher::new()).unwrap();
                send_body(c, &data, piece, out);
                c.end().unwrap();
            }
            Event::Result { .. } | Event::Closed => {}
            other => panic!("server: unexpected {other:?}"),
        }
    }
}

/// What the client has asked for, by id.
#[derive(Default)]
struct Asked {
    uploads: BTreeMap<FileId, usize>,
    gets: BTreeMap<FileId, String>,
    folders: BTreeMap<FileId, String>,
    lists: BTreeMap<FileId, String>,
}

/// Runs a whole connection between the newest client and server. `chunk` bounds each
/// delivery; `corrupt` flips one bit at that offset of the client-to-server stream.
pub fn run(plan: &Plan, store: Store, chunk: usize, corrupt: Option<usize>) -> Outcome {
    run_versions(plan, store, chunk, corrupt, (VERSION, VERSION))
}

/// Runs a whole connection between a client and a server speaking up to the given versions
/// (client, server). Checks that nothing of version 2 crosses the wire unless both speak it.
pub fn run_versions(
    plan: &Plan,
    store: Store,
    chunk: usize,
    corrupt: Option<usize>,
    (client_max, server_max): (u16, u16),
) -> Outcome {
    let mut client = Connection::client_with_max_version(Some(b"tok"), client_max).unwrap();
    let mut server = Server {
        conn: Connection::server_with_max_version(server_max).unwrap(),
        store,
        offers: BTreeMap::new(),
        serving: BTreeMap::new(),
        body: Vec::new(),
        current: None,
    };
    let mut c2s = Pipe {
        corrupt_at: corrupt,
        ..Pipe::default()
    };
    let mut s2c = Pipe::default();
    let mut out = Outcome::default();
    let mut to_offer: VecDeque<usize> = (0..plan.uploads.len()).collect();
    let mut to_get: VecDeque<&String> = plan.gets.iter().collect();
    // Indices into `plan.folders` and `plan.lists`, one of each per step.
    let mut to_v2: VecDeque<usize> = VecDeque::new();
    let mut v2_queued = false;
    let mut asked = Asked::default();
    let mut body = Vec::new();
    let window = plan.window.max(1);

    loop {
        let mut moved = false;
        // Version-2 requests wait for WELCOME: only then does the client know the version.
        if !v2_queued && client.version().is_some() {
            v2_queued = true;
            to_v2 = (0..plan.folders.len().max(plan.lists.len())).collect();
        }
        let offers_wait = plan.checksum && client.version().is_none();
        while client.pipeline_room() > ferry_proto::MAX_PIPELINE - window
            && ((!to_offer.is_empty() && !offers_wait) || !to_get.is_empty() || !to_v2.is_empty())
        {
            // Alternate uploads and downloads to exercise both queues at once.
            if let Some(i) = to_offer.pop_front().filter(|_| !offers_wait) {
                let (name, data, sized) = &plan.uploads[i];
                let size = sized.then_some(data.len() as u64);
                let info = FileInfo {
                    name: Name::parse(name).unwrap(),
                    size,
                    mtime: sized.then_some(MTIME),
                    mode: None,
                };
                let opts = match client.version() {
                    Some(v) if v >= 2 && plan.checksum && *sized => {
                        OfferOptions::with_digest(Digest::of(data))
                    }
                    _ => OfferOptions::default(),
                };
                asked
                    .uploads
                    .insert(client.offer_with(info, opts).unwrap(), i);
            }
            if let Some(name) = to_get.pop_front() {
                let id = client.get(Name::parse(name).unwrap()).unwrap();
                asked.gets.insert(id, name.clone());
            }
            if let Some(i) = to_v2.pop_front() {
                let (folder, list) = (plan.folders.get(i), plan.lists.get(i));
                let v2 = client.version() >= Some(2);
                if let Some(f) = folder {
                    if v2 {
                        let info = FileInfo {
                            name: Name::parse(f).unwrap(),
                            size: None,
                            mtime: Some(MTIME),
                            mode: Some(0o750),
                        };
                        let id = client.offer_with(info, OfferOptions::folder()).unwrap();
                        asked.folders.insert(id, f.clone());
                    } else {
                        out.folders.insert(f.clone(), Code::Unsupported);
                    }
                }
                if let Some((path, recursive)) = list {
                    if v2 {
                        let p = (!path.is_empty()).then(|| Name::parse(path).unwrap());
                        let id = client.list(p, *recursive).unwrap();
                        asked.lists.insert(id, path.clone());
                        out.listings.insert(path.clone(), Ok(Vec::new()));
                    } else {
                        out.listings.insert(path.clone(), Err(Code::Unsupported));
                    }
                }
            }
            moved = true;
        }
        flush(&mut client, &mut c2s);
        flush(&mut server.conn, &mut s2c);

        let (events, m) = feed(&mut server.conn, &mut c2s, chunk, &mut server.body);
        moved |= m || !events.is_empty();
        for ev in events {
            server.on(ev, &mut s2c, plan.piece);
        }
        let (events, m) = feed(&mut client, &mut s2c, chunk, &mut body);
        moved |= m || !events.is_empty();
        for ev in events {
            match ev {
                Event::Welcome { version } => assert_eq!(client.version(), Some(version)),
                Event::Accepted { id, offset, .. } => {
                    let (name, data, _) = &plan.uploads[asked.uploads[&id]];
                    let mut prefix = Hasher::new();
                    prefix.update(&data[..offset as usize]);
                    let from = client.begin(id, prefix).unwrap();
                    out.starts.insert(name.clone(), from);
                    send_body(&mut client, &data[from as usize..], plan.piece, &mut c2s);
                    client.end().unwrap();
                }
                Event::Refused { id, code, .. } | Event::Result { id, code, .. } => {
                    if let Some(i) = asked.uploads.get(&id) {
                        out.uploads.insert(plan.uploads[*i].0.clone(), code);
                    } else if let Some(f) = asked.folders.get(&id) {
                        out.folders.insert(f.clone(), code);
                    } else if let Some(p) = asked.lists.get(&id) {
                        out.listings.insert(p.clone(), Err(code));
                    } else {
                        out.downloads.insert(asked.gets[&id].clone(), Err(code));
                    }
                }
                Event::Offer(o) => {
                    assert_eq!(o.name.as_ref().unwrap().as_str(), asked.gets[&o.id]);
                    client.accept(o.id, Hasher::new()).unwrap();
                }
                Event::Begin { .. } => body.clear(),
                Event::End { id, check, .. } => {
                    let got = match check {
                        BodyCheck::Verified(_) => Ok(std::mem::take(&mut body)),
                        _ => Err(Code::DigestMismatch),
                    };
                    out.downloads.insert(asked.gets[&id].clone(), got);
                    client.finish(id, Code::Stored, "").unwrap();
                }
                Event::Entries { id, entries } => {
                    out.pages += 1;
                    let listing = out.listings.get_mut(&asked.lists[&id]).unwrap();
                    listing.as_mut().unwrap().extend(entries);
                }
                Event::Listed { id, count, .. } => {
                    let listing = &out.listings[&asked.lists[&id]];
                    assert_eq!(listing.as_ref().unwrap().len() as u64, count);
                }
                other => panic!("client: unexpected {other:?}"),
            }
        }
        let quiet = c2s.bytes.is_empty() && s2c.bytes.is_empty();
        let all_asked = to_offer.is_empty() && to_get.is_empty() && to_v2.is_empty();
        if quiet && all_asked && v2_queued && client.is_idle() {
            server.conn.handle_eof().unwrap();
            assert_eq!(server.conn.poll_event(), Some(Event::Closed));
            assert!(server.conn.is_idle(), "{:?}", server.conn);
            out.versions = (client.version(), server.conn.version());
            assert_eq!(out.versions.0, out.versions.1);
            if corrupt.is_none() && out.versions.0 < Some(2) {
                for f in frames_of(&c2s.log).iter().chain(&frames_of(&s2c.log)) {
                    assert_eq!(f.version_2_feature(), None, "{f:?} crossed a v1 connection");
                }
            }
            out.store = server.store;
            return out;
        }
        assert!(moved, "stalled: client {client:?} server {:?}", server.conn);
    }
}

/// A client and a server machine past HELLO/WELCOME, with `info` offered and accepted at 0.
pub fn accepted_upload(info: FileInfo) -> (Connection, Connection, FileId) {
    let mut client = Connection::client(None).unwrap();
    let mut server = Connection::server();
    let id = client.offer(info).unwrap();
    server.handle_input(client.poll_transmit()).unwrap();
    client.transmitted(client.poll_transmit().len());
    assert!(matches!(server.poll_event(), Some(Event::Hello { .. })));
    server.welcome().unwrap();
    assert!(matches!(server.poll_event(), Some(Event::Offer(_))));
    server.accept(id, Hasher::new()).unwrap();
    client.handle_input(server.poll_transmit()).unwrap();
    let n = server.poll_transmit().len();
    server.transmitted(n);
    (client, server, id)
}
