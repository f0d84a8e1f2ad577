//! An in-memory harness: a client machine and a server machine exchange bytes through two
//! pipes, delivered in chunks whose size the test chooses. No sockets, no threads.
#![allow(dead_code)]

use std::collections::{BTreeMap, VecDeque};

use ferry_proto::{BodyCheck, Code, Connection, Event, FileId, FileInfo, Hasher, Incoming, Name};

/// What the client wants to do.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Files to upload: name, bytes, whether the size is announced.
    pub uploads: Vec<(String, Vec<u8>, bool)>,
    /// Files to download by name.
    pub gets: Vec<String>,
    /// Largest body slice handed to the machine at once.
    pub piece: usize,
    /// Most offers and GETs the client keeps outstanding.
    pub window: usize,
}

/// What the server holds.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Store {
    /// Published files.
    pub files: BTreeMap<String, Vec<u8>>,
    /// Partial uploads kept for resume.
    pub partials: BTreeMap<String, Vec<u8>>,
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
    /// The server's store afterwards.
    pub store: Store,
}

/// One direction of the connection; can flip one bit at an absolute stream offset.
#[derive(Default)]
pub struct Pipe {
    bytes: VecDeque<u8>,
    sent: usize,
    corrupt_at: Option<usize>,
}

impl Pipe {
    fn push(&mut self, data: &[u8]) {
        for b in data {
            let flip = self.corrupt_at == Some(self.sent);
            self.bytes.push_back(if flip { b ^ 0x01 } else { *b });
            self.sent += 1;
        }
    }
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
    offers: BTreeMap<FileId, String>,
    serving: BTreeMap<FileId, String>,
    body: Vec<u8>,
    current: Option<String>,
}

impl Server {
    fn on(&mut self, ev: Event, out: &mut Pipe, piece: usize) {
        let c = &mut self.conn;
        match ev {
            Event::Hello { token, .. } => {
                assert_eq!(token.as_deref(), Some(&b"tok"[..]));
                c.welcome().unwrap();
            }
            Event::Offer(o) => match o.name {
                Err(_) => c.refuse(o.id, Code::BadName, "bad name").unwrap(),
                Ok(n) if self.store.files.contains_key(n.as_str()) => {
                    c.refuse(o.id, Code::Exists, "exists").unwrap()
                }
                Ok(n) => {
                    let mut prefix = Hasher::new();
                    if o.size.is_some() {
                        if let Some(p) = self.store.partials.get(n.as_str()) {
                            prefix.update(p);
                        }
                    }
                    c.accept(o.id, prefix).unwrap();
                    self.offers.insert(o.id, n.as_str().to_owned());
                }
            },
            Event::Begin { id, from } => {
                let name = self.offers[&id].clone();
                self.body = self.store.partials.remove(&name).unwrap_or_default();
                self.body.truncate(from as usize);
                self.current = Some(name);
            }
            Event::End { id, check, .. } => {
                let name = self.current.take().unwrap();
                if matches!(check, BodyCheck::Verified(_)) {
                    self.store
                        .files
                        .insert(name.clone(), std::mem::take(&mut self.body));
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

/// Runs a whole connection. `chunk` bounds each delivery; `corrupt` flips one bit at that
/// offset of the client-to-server stream.
pub fn run(plan: &Plan, store: Store, chunk: usize, corrupt: Option<usize>) -> Outcome {
    let mut client = Connection::client(Some(b"tok")).unwrap();
    let mut server = Server {
        conn: Connection::server(),
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
    let mut uploads: BTreeMap<FileId, usize> = BTreeMap::new();
    let mut gets: BTreeMap<FileId, String> = BTreeMap::new();
    let mut body = Vec::new();
    let window = plan.window.max(1);

    loop {
        let mut moved = false;
        while client.pipeline_room() > ferry_proto::MAX_PIPELINE - window
            && (!to_offer.is_empty() || !to_get.is_empty())
        {
            // Alternate uploads and downloads to exercise both queues at once.
            if let Some(i) = to_offer.pop_front() {
                let (name, data, sized) = &plan.uploads[i];
                let size = sized.then_some(data.len() as u64);
                let info = FileInfo {
                    name: Name::parse(name).unwrap(),
                    size,
                    mtime: None,
                    mode: None,
                };
                uploads.insert(client.offer(info).unwrap(), i);
            }
            if let Some(name) = to_get.pop_front() {
                gets.insert(
                    client.get(Name::parse(name).unwrap()).unwrap(),
                    name.clone(),
                );
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
                Event::Welcome { .. } => {}
                Event::Accepted { id, offset, .. } => {
                    let (name, data, _) = &plan.uploads[uploads[&id]];
                    let mut prefix = Hasher::new();
                    prefix.update(&data[..offset as usize]);
                    let from = client.begin(id, prefix).unwrap();
                    out.starts.insert(name.clone(), from);
                    send_body(&mut client, &data[from as usize..], plan.piece, &mut c2s);
                    client.end().unwrap();
                }
                Event::Refused { id, code, .. } => match uploads.get(&id) {
                    Some(i) => drop(out.uploads.insert(plan.uploads[*i].0.clone(), code)),
                    None => drop(out.downloads.insert(gets[&id].clone(), Err(code))),
                },
                Event::Result { id, code, .. } => {
                    out.uploads
                        .insert(plan.uploads[uploads[&id]].0.clone(), code);
                }
                Event::Offer(o) => {
                    assert_eq!(o.name.as_ref().unwrap().as_str(), gets[&o.id]);
                    client.accept(o.id, Hasher::new()).unwrap();
                }
                Event::Begin { .. } => body.clear(),
                Event::End { id, check, .. } => {
                    let got = match check {
                        BodyCheck::Verified(_) => Ok(std::mem::take(&mut body)),
                        _ => Err(Code::DigestMismatch),
                    };
                    out.downloads.insert(gets[&id].clone(), got);
                    client.finish(id, Code::Stored, "").unwrap();
                }
                other => panic!("client: unexpected {other:?}"),
            }
        }
        let quiet = c2s.bytes.is_empty() && s2c.bytes.is_empty();
        if quiet && to_offer.is_empty() && to_get.is_empty() && client.is_idle() {
            server.conn.handle_eof().unwrap();
            assert_eq!(server.conn.poll_event(), Some(Event::Closed));
            assert!(server.conn.is_idle(), "{:?}", server.conn);
            out.store = server.store;
            return out;
        }
        assert!(moved, "stalled: client {client:?} server {:?}", server.conn);
    }
}
