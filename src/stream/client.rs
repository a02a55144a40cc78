//! Client side of the Stream API: opening, accepting, and the receive path of streams.

use super::accept::{Acceptors, IncomingStreams};
use super::core::{Core, LastWord};
use super::duplex::{Endpoint, P2pDuplex, Shared, Slot, StreamInfo, StreamKey};
use super::frame::{Frame, FRAME_EVENT};
use super::{SEED_DATA_PREFIX, SEED_DESTROYED};
use crate::client::{ClientInner, EventSink, Incoming, Origin, Outgoing, P2pClient};
use crate::error::{Error, Result};
use crate::protocol::stream::{
    CreateAnswer, CreateStream, SeedData, SeedDestroyed, StreamAccept, Window,
};
use crate::protocol::{event, EmitPayload, ResAnswer};
use bytes::Bytes;
use serde_json::{Map, Value};
use std::collections::{HashMap, VecDeque};
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::PollSender;

/// Options of [`P2pClient::add_p2p_stream_with`].
#[derive(Debug, Clone, Default)]
pub struct StreamOptions {
    /// This end's stream id (generated when `None`).
    pub stream_id: Option<String>,
    /// The peer's stream id (generated when `None`).
    pub peer_stream_id: Option<String>,
    /// This end's receive window (the client's `stream_window` when `None`).
    pub window: Option<u32>,
    /// A channel name: the peer hands the stream to its acceptor for that channel.
    pub channel: Option<String>,
    /// JSON arguments the acceptor sees.
    pub args: Value,
    /// How long to wait for the peer to accept (the client's timeout when `None`).
    pub timeout: Option<Duration>,
}

/// Where an open stands, shared by the opener and the hook that sees the answer.
enum Opening {
    Waiting,
    Accepted(Arc<Shared>),
    /// The opener returned: a later acceptance is undone.
    Abandoned,
}

/// A client's streams and stream acceptors: the Stream API's receive side, on the client's
/// demultiplexer.
#[derive(Default)]
pub(crate) struct Streams {
    table: Mutex<HashMap<StreamKey, Arc<Shared>>>,
    acceptors: Acceptors,
    seq: AtomicU64,
    /// Credit-mode streams this end forgot, with their last word (see `Core::last_word`), for
    /// peers that ask after them when back from a cut; at most [`ENDED_KEPT`].
    ended: Mutex<Ended>,
}

/// Streams a client forgot, most recent last.
#[derive(Default)]
struct Ended {
    words: HashMap<u64, (LastWord, u64)>,
    order: VecDeque<u64>,
    /// Counts the links: a RESET sent on the link that dropped may be lost with it, and is sent
    /// again on the resumed one.
    link: u64,
}

/// How many cleanly ended streams a client remembers for peers back from a cut.
const ENDED_KEPT: usize = 1024;

/// The streams of `inner`.
fn streams(inner: &ClientInner) -> &Streams {
    inner.api::<Streams>()
}

impl EventSink for Streams {
    /// Takes stream requests and the seed's stream events.
    fn event(&self, link: &Arc<ClientInner>, ev: Incoming) -> Option<Incoming> {
        if ev.origin != Origin::Direct {
            return Some(ev);
        }
        if let (Some(id), event::MULTI_API_CREATE_STREAM) = (ev.request, ev.event.as_str()) {
            on_create_stream(link, id, ev.args);
            return None;
        }
        if on_seed_event(link, &ev.event, &ev.args, ev.request) {
            return None;
        }
        Some(ev)
    }

    fn binary(&self, link: &Arc<ClientInner>, event: &str, data: Bytes) -> Option<Bytes> {
        if event != FRAME_EVENT {
            return Some(data);
        }
        on_frame(link, data);
        None
    }

    fn peer_gone(&self, link: &Arc<ClientInner>, peer: &str) {
        peer_gone(link, peer);
    }

    fn connection_lost(&self, link: &ClientInner, why: &str) {
        connection_lost(link, why);
    }

    fn link_down(&self, link: &ClientInner, why: &str) {
        link_down(link, why);
    }

    fn link_up(&self, link: &Arc<ClientInner>, resumed: bool) {
        link_up(link, resumed);
    }
}

impl Endpoint for ClientInner {
    fn send_frame(&self, frame: Bytes) -> io::Result<()> {
        self.send_now(Outgoing::Binary(FRAME_EVENT, frame));
        Ok(())
    }

    fn poll_ready(&self, cx: &mut Context<'_>, slot: &mut Option<Slot>) -> Poll<io::Result<()>> {
        let s = slot.get_or_insert_with(|| PollSender::new(self.out.clone()));
        s.poll_reserve(cx).map_err(|_| {
            io::Error::new(
                io::ErrorKind::NotConnected,
                "the client connection is closed",
            )
        })
    }

    fn send_reserved(&self, slot: &mut Option<Slot>, frame: Bytes) -> io::Result<()> {
        let s = slot.as_mut().expect("poll_ready reserved a slot");
        s.send_item(Outgoing::Binary(FRAME_EVENT, frame))
            .map_err(|_| {
                io::Error::new(
                    io::ErrorKind::NotConnected,
                    "the client connection is closed",
                )
            })
    }

    fn send_in_order(&self, shared: &Arc<Shared>, frames: Vec<Bytes>) {
        let mut backlog = shared.backlog();
        if let Some(waiting) = backlog.as_mut() {
            // Behind what is still being sent.
            waiting.extend(frames);
            return;
        }
        let mut frames = frames.into_iter();
        while let Some(f) = frames.next() {
            match self.out.try_send(Outgoing::Binary(FRAME_EVENT, f)) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Closed(_)) => return,
                Err(mpsc::error::TrySendError::Full(Outgoing::Binary(_, f))) => {
                    let mut waiting: VecDeque<Bytes> = VecDeque::from([f]);
                    waiting.extend(frames);
                    *backlog = Some(waiting);
                    drop(backlog);
                    tokio::spawn(send_backlog(self.out.clone(), shared.clone()));
                    return;
                }
                Err(mpsc::error::TrySendError::Full(_)) => return,
            }
        }
    }

    fn send_seed_chunk(
        &self,
        peer: &str,
        own_stream_id: &str,
        chunk: Option<Bytes>,
        done: Box<dyn FnOnce(std::result::Result<(), String>) + Send>,
    ) {
        let payload = EmitPayload {
            target_client_id: peer.to_string(),
            event: format!("{SEED_DATA_PREFIX}{own_stream_id}"),
            args: vec![
                Value::from(self.id.as_str()),
                chunk.map_or(Value::Null, |c| Value::from(c.to_vec())),
            ],
        };
        let Some(me) = self.me.upgrade() else {
            return done(Err("the client connection is closed".into()));
        };
        tokio::spawn(async move {
            let payload = match serde_json::to_value(payload) {
                Ok(p) => p,
                Err(e) => return done(Err(e.to_string())),
            };
            let timeout = me.opts.timeout;
            let r = me
                .request(event::P2P_EMIT_ACKNOWLEDGE, vec![payload], timeout)
                .await;
            done(r.map(|_| ()).map_err(|e| e.to_string()));
        });
    }

    fn send_seed_destroy(&self, peer: &str, own_stream_id: &str) {
        let payload = EmitPayload {
            target_client_id: peer.to_string(),
            event: SEED_DESTROYED.to_string(),
            args: vec![Value::from(self.id.as_str()), Value::from(own_stream_id)],
        };
        if let Ok(p) = serde_json::to_value(payload) {
            self.send_now(Outgoing::Emit(p));
        }
    }

    fn ack_seed_chunk(&self, ack: u64) {
        self.respond(ack, Ok(vec![]));
    }

    fn unregister(&self, key: &StreamKey, last_word: Option<LastWord>) {
        let streams = streams(self);
        streams.table.lock().unwrap().remove(key);
        if let (StreamKey::Route(route), Some(word)) = (key, last_word) {
            let mut ended = streams.ended.lock().unwrap();
            let link = ended.link;
            if ended.words.insert(*route, (word, link)).is_none() {
                ended.order.push_back(*route);
            }
            while ended.order.len() > ENDED_KEPT {
                if let Some(old) = ended.order.pop_front() {
                    ended.words.remove(&old);
                }
            }
        }
    }
}

/// Sends a stream's backlog in order as the send queue makes room, then lets its writes go on.
async fn send_backlog(out: mpsc::Sender<Outgoing>, shared: Arc<Shared>) {
    loop {
        let next = {
            let mut backlog = shared.backlog();
            match backlog.as_mut().and_then(VecDeque::pop_front) {
                Some(f) => f,
                None => {
                    *backlog = None;
                    break;
                }
            }
        };
        if out.send(Outgoing::Binary(FRAME_EVENT, next)).await.is_err() {
            // The client is closed: the stream fails with it.
            *shared.backlog() = None;
            break;
        }
    }
    shared.backlog_sent();
}

fn endpoint_of(inner: &ClientInner) -> Weak<dyn Endpoint> {
    let weak: Weak<ClientInner> = inner.me.clone();
    weak
}

/// Creates a stream's shared state and enters it in the client's table.
fn register(inner: &ClientInner, key: StreamKey, info: StreamInfo, core: Core) -> Arc<Shared> {
    let shared = Shared::new(key.clone(), info, core, endpoint_of(inner));
    streams(inner)
        .table
        .lock()
        .unwrap()
        .insert(key, shared.clone());
    shared
}

fn slot_of(inner: &ClientInner) -> Option<Slot> {
    Some(PollSender::new(inner.out.clone()))
}

impl P2pClient {
    /// Opens a byte stream to `target` with default options.
    pub async fn add_p2p_stream(&self, target: &str) -> Result<P2pDuplex> {
        self.add_p2p_stream_with(target, StreamOptions::default())
            .await
    }

    /// Opens a byte stream to `target`; resolves once the peer accepts. Fails when the peer is
    /// unknown, refuses, accepts no streams (on that channel), or does not answer in time.
    pub async fn add_p2p_stream_with(
        &self,
        target: &str,
        opts: StreamOptions,
    ) -> Result<P2pDuplex> {
        let inner = &self.inner;
        inner.check_open()?;
        if target.is_empty() {
            return Err(Error::BadRequest("the target client id is empty".into()));
        }
        let seq = streams(inner).seq.fetch_add(1, Ordering::Relaxed);
        let nonce = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let own_id = opts
            .stream_id
            .clone()
            .unwrap_or_else(|| format!("{}-{seq}-{nonce:x}", inner.id));
        let peer_sid = opts
            .peer_stream_id
            .clone()
            .unwrap_or_else(|| format!("{target}-{seq}-{nonce:x}"));
        let window = opts.window.unwrap_or(inner.opts.stream_window);
        let Some(window) = Window::new(u64::from(window)) else {
            return Err(Error::BadRequest(format!(
                "stream window {window} is out of range"
            )));
        };
        let info = StreamInfo {
            peer: target.to_string(),
            stream_id: own_id.clone(),
            peer_stream_id: peer_sid.clone(),
            channel: opts.channel.clone(),
            args: opts.args.clone(),
            seed_mode: true,
        };
        // A seed-era peer may send data as soon as it accepts: be ready for it before asking.
        let seed_key = StreamKey::Seed(target.to_string(), peer_sid.clone());
        let seed_shared = register(inner, seed_key.clone(), info.clone(), Core::seed());

        let request = CreateStream {
            source_stream_id: own_id.as_str().into(),
            target_stream_id: peer_sid.as_str().into(),
            target_client_id: target.to_string(),
            source_client_id: None,
            window: Some(window),
            route: None,
            channel: opts.channel.clone(),
            args: opts.args.clone(),
            extra: Map::new(),
        };

        // In credit mode the peer may send frames right behind the answer; the hook registers
        // the stream on the receive path before they are handled. An answer that arrives after
        // this call gave up (timeout) still runs the hook, which then destroys the stream the
        // peer accepted, so the peer's end does not wait forever.
        let opening: Arc<Mutex<Opening>> = Arc::new(Mutex::new(Opening::Waiting));
        let hook = {
            let opening = opening.clone();
            let me = inner.me.clone();
            let mut info = info.clone();
            let own_id = own_id.clone();
            Box::new(move |body: &ResAnswer| {
                let (Some(inner), ResAnswer::Ok(args)) = (me.upgrade(), body) else {
                    return;
                };
                let mut opening = opening.lock().unwrap();
                let abandoned = matches!(*opening, Opening::Abandoned);
                let credit = match CreateAnswer::from_args(args) {
                    CreateAnswer::Credit(StreamAccept {
                        window: peer_window,
                        route: Some(route),
                    }) => Some((peer_window, route)),
                    CreateAnswer::Seed if abandoned => {
                        // A seed-era peer accepted too late.
                        inner.send_seed_destroy(&info.peer, &own_id);
                        None
                    }
                    _ => None,
                };
                let Some((peer_window, route)) = credit else {
                    return;
                };
                if abandoned {
                    let reset = Frame::Reset {
                        route,
                        code: super::frame::code::CANCEL,
                        reason: "the opener gave up waiting for the acceptance".into(),
                    };
                    inner.send_now(Outgoing::Binary(FRAME_EVENT, reset.encode()));
                    return;
                }
                info.seed_mode = false;
                let shared = register(
                    &inner,
                    StreamKey::Route(route),
                    info,
                    Core::credit(route, peer_window.get(), window.get()),
                );
                *opening = Opening::Accepted(shared);
            }) as crate::client::AnswerHook
        };
        let timeout = opts.timeout.unwrap_or(inner.opts.timeout);
        let answer = inner
            .request_with_hook(
                event::MULTI_API_CREATE_STREAM,
                vec![request.to_value()],
                timeout,
                Some(hook),
            )
            .await;
        let outcome = std::mem::replace(&mut *opening.lock().unwrap(), Opening::Abandoned);
        let registered = match outcome {
            Opening::Accepted(shared) => Some(shared),
            _ => None,
        };
        let unregister_seed = || streams(inner).table.lock().unwrap().remove(&seed_key);
        match answer {
            Ok(args) => {
                if let Some(shared) = registered {
                    unregister_seed();
                    return Ok(P2pDuplex::new(shared, slot_of(inner)));
                }
                match CreateAnswer::from_args(&args) {
                    CreateAnswer::Seed => Ok(P2pDuplex::new(seed_shared, slot_of(inner))),
                    CreateAnswer::Refused(refusal) => {
                        unregister_seed();
                        Err(Error::remote(target, refusal))
                    }
                    CreateAnswer::Credit(_) | CreateAnswer::Invalid(_) => {
                        unregister_seed();
                        Err(Error::Protocol(format!(
                            "unexpected answer to MULTI_API_CREATE_STREAM: {}",
                            Value::Array(args)
                        )))
                    }
                }
            }
            Err(e) => {
                unregister_seed();
                if let Some(shared) = registered {
                    // Accepted too late: tell the peer the stream is gone.
                    P2pDuplex::new(shared, slot_of(inner)).reset();
                }
                Err(e)
            }
        }
    }

    /// Accepts streams on `channel` (`None`: streams with no channel, and any channel that has no
    /// acceptor of its own) by calling `handler` with each new [`P2pDuplex`]. Replaces an earlier
    /// acceptor of the same channel.
    pub fn on_add_p2p_stream(
        &self,
        channel: Option<&str>,
        handler: impl Fn(P2pDuplex) + Send + Sync + 'static,
    ) {
        streams(&self.inner).acceptors.set_handler(channel, handler);
    }

    /// Accepts streams on `channel` as an async stream of [`P2pDuplex`]es (see
    /// [`on_add_p2p_stream`](P2pClient::on_add_p2p_stream) for how channels match). Streams that
    /// arrive while 64 wait unclaimed are reset. Dropping the [`IncomingStreams`] stops
    /// accepting: later openers are refused as by
    /// [`off_add_p2p_stream`](P2pClient::off_add_p2p_stream).
    pub fn incoming_streams(&self, channel: Option<&str>) -> IncomingStreams {
        streams(&self.inner).acceptors.queue(channel)
    }

    /// Stops accepting streams on `channel`; later requests are refused.
    pub fn off_add_p2p_stream(&self, channel: Option<&str>) {
        streams(&self.inner).acceptors.remove(channel);
    }

    /// How many streams of this client are live (not yet closed at both ends or destroyed).
    pub fn stream_count(&self) -> usize {
        streams(&self.inner).table.lock().unwrap().len()
    }
}

/// `P2P_REQ(id, "MULTI_API_CREATE_STREAM", info)`: a peer opens a stream to this client.
fn on_create_stream(inner: &Arc<ClientInner>, req: u64, args: Vec<Value>) {
    let info = match CreateStream::from_args(&args) {
        Ok(CreateStream {
            source_client_id: Some(source),
            ..
        }) if source.is_empty() => None,
        Ok(
            info @ CreateStream {
                source_client_id: Some(_),
                ..
            },
        ) => Some(info),
        _ => None,
    };
    let Some(info) = info else {
        inner.respond(
            req,
            Err(Error::BadRequest(
                "MULTI_API_CREATE_STREAM needs sourceClientId and stream ids".into(),
            )),
        );
        return;
    };
    let source = info.source_client_id.unwrap_or_default();
    let acceptor = streams(inner).acceptors.pick(info.channel.as_deref());
    let Some(acceptor) = acceptor else {
        // The seed's refusal text, as an acknowledgement argument.
        let text = format!(
            "Client {} is not listening to create stream event",
            inner.id
        );
        inner.respond(req, Ok(vec![Value::from(text)]));
        return;
    };
    let peer_sid = info.source_stream_id.to_string();
    let mut stream_info = StreamInfo {
        peer: source.clone(),
        stream_id: info.target_stream_id.to_string(),
        peer_stream_id: peer_sid.clone(),
        channel: info.channel,
        args: info.args,
        seed_mode: true,
    };
    let shared = match (info.window, info.route) {
        (Some(peer_window), Some(route)) => {
            stream_info.seed_mode = false;
            let own_window = Window::clamped(inner.opts.stream_window);
            let core = Core::credit(route, peer_window.get(), own_window.get());
            let shared = register(inner, StreamKey::Route(route), stream_info, core);
            let answer = StreamAccept {
                window: own_window,
                route: None,
            };
            inner.respond(req, Ok(vec![answer.to_value()]));
            shared
        }
        _ => {
            let key = StreamKey::Seed(source, peer_sid);
            let shared = register(inner, key, stream_info, Core::seed());
            // A seed-era opener takes an acknowledgement with no argument as acceptance.
            inner.respond(req, Ok(vec![]));
            shared
        }
    };
    acceptor.deliver(P2pDuplex::new(shared, slot_of(inner)));
}

/// A binary `P2P_FRAME` from the relay.
fn on_frame(inner: &Arc<ClientInner>, bytes: Bytes) {
    let frame = match Frame::decode(bytes.clone()) {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!(client = %inner.id, "bad stream frame: {e}");
            // Dropping it would cut bytes out of the middle of the stream: a stream whose frame
            // is unreadable fails, and its peer is reset.
            if let Ok(h) = super::frame::peek(&bytes) {
                let shared = streams(inner)
                    .table
                    .lock()
                    .unwrap()
                    .get(&StreamKey::Route(h.route))
                    .cloned();
                if let Some(s) = shared {
                    s.bad_frame(e.to_string());
                }
            }
            return;
        }
    };
    let route = frame.route();
    let shared = streams(inner)
        .table
        .lock()
        .unwrap()
        .get(&StreamKey::Route(route))
        .cloned();
    match shared {
        Some(s) => s.receive(frame),
        None => {
            // Frames for a stream this end already closed or reset (they crossed our RESET).
            tracing::debug!(client = %inner.id, route, "frame for an unknown stream");
            if let Frame::Sync { flags, .. } = frame {
                if flags & super::frame::sync::ASK != 0 {
                    answer_after_end(inner, route);
                }
            }
        }
    }
}

/// A peer back from a cut asks after a stream this end no longer has: if it ended cleanly, the
/// peer gets the SYNC that confirms its FIN; otherwise the stream is reset.
fn answer_after_end(inner: &ClientInner, route: u64) {
    let word = streams(inner)
        .ended
        .lock()
        .unwrap()
        .words
        .get(&route)
        .map(|(w, _)| w.frame().clone());
    let frame = word.unwrap_or_else(|| {
        Frame::Reset {
            route,
            code: super::frame::code::CANCEL,
            reason: format!(
                "client '{}' no longer has this stream (it was reset while the link was down)",
                inner.id
            ),
        }
        .encode()
    });
    inner.send_now(Outgoing::Binary(FRAME_EVENT, frame));
}

/// Seed-protocol stream events; returns whether `name` was one.
fn on_seed_event(inner: &Arc<ClientInner>, name: &str, args: &[Value], reply: Option<u64>) -> bool {
    if let Some(sid) = name.strip_prefix(SEED_DATA_PREFIX) {
        let data = match SeedData::from_args(args) {
            Ok(d) => d,
            Err(e) => {
                // Bad bytes end the stream they were meant for, and the sender is told.
                if let Ok(sender) = crate::protocol::stream::sender_of(args) {
                    let key = StreamKey::Seed(sender, sid.to_string());
                    let shared = streams(inner).table.lock().unwrap().get(&key).cloned();
                    if let Some(s) = shared {
                        s.fail(io::ErrorKind::InvalidData, e.clone());
                    }
                }
                if let Some(r) = reply {
                    inner.respond(r, Err(Error::Protocol(e)));
                }
                return true;
            }
        };
        let key = StreamKey::Seed(data.sender.clone(), sid.to_string());
        let shared = streams(inner).table.lock().unwrap().get(&key).cloned();
        let Some(shared) = shared else {
            if let Some(r) = reply {
                inner.refuse(r, format!("no stream '{sid}' from '{}'", data.sender));
            }
            return true;
        };
        let chunk = data.chunk.into_bytes().map(Bytes::from);
        shared.handle_seed_chunk(chunk, reply);
        return true;
    }
    if name == SEED_DESTROYED {
        if let Ok(d) = SeedDestroyed::from_args(args) {
            let key = StreamKey::Seed(d.sender.clone(), d.stream_id.to_string());
            let shared = streams(inner).table.lock().unwrap().get(&key).cloned();
            if let Some(s) = shared {
                s.fail(
                    io::ErrorKind::ConnectionReset,
                    format!("stream destroyed by '{}'", d.sender),
                );
            }
        }
        if let Some(r) = reply {
            inner.respond(r, Ok(vec![]));
        }
        return true;
    }
    false
}

/// A peer disconnected: its seed-mode streams end (credit-mode ones get a RESET from the relay).
fn peer_gone(inner: &ClientInner, peer: &str) {
    let gone: Vec<_> = streams(inner)
        .table
        .lock()
        .unwrap()
        .iter()
        .filter(|(k, _)| matches!(k, StreamKey::Seed(p, _) if p == peer))
        .map(|(_, s)| s.clone())
        .collect();
    for s in gone {
        s.fail(
            io::ErrorKind::ConnectionAborted,
            format!("client '{peer}' disconnected"),
        );
    }
}

/// This client's connection is gone for good: every stream fails.
fn connection_lost(inner: &ClientInner, why: &str) {
    let all: Vec<_> = streams(inner)
        .table
        .lock()
        .unwrap()
        .values()
        .cloned()
        .collect();
    for s in all {
        s.fail(
            io::ErrorKind::NotConnected,
            format!("connection lost: {why}"),
        );
    }
}

/// The link dropped and the client connects again: seed-mode streams fail (a seed-era peer
/// cannot pick them up again); credit-mode streams wait for the resume (reads and writes
/// block, writes within the peer's window still go to the send queue).
fn link_down(inner: &ClientInner, why: &str) {
    let seed: Vec<_> = streams(inner)
        .table
        .lock()
        .unwrap()
        .iter()
        .filter(|(k, _)| matches!(k, StreamKey::Seed(..)))
        .map(|(_, s)| s.clone())
        .collect();
    for s in seed {
        s.fail(
            io::ErrorKind::NotConnected,
            format!("connection lost: {why}"),
        );
    }
}

/// The client is back: on a resumed session each credit-mode stream asks its peer where it
/// stands and goes on from there, and the last words of streams this end forgot on the link that
/// dropped (a RESET, a confirmation of the peer's FIN) go again: they may have been lost with it.
/// On a new session they fail.
fn link_up(inner: &Arc<ClientInner>, resumed: bool) {
    let again: Vec<Bytes> = {
        let mut ended = streams(inner).ended.lock().unwrap();
        let link = ended.link;
        ended.link += 1;
        ended
            .words
            .values()
            .filter(|(_, l)| *l == link && resumed)
            .map(|(w, _)| w.frame().clone())
            .collect()
    };
    for f in again {
        inner.send_now(Outgoing::Binary(FRAME_EVENT, f));
    }
    let credit: Vec<_> = streams(inner)
        .table
        .lock()
        .unwrap()
        .iter()
        .filter(|(k, _)| matches!(k, StreamKey::Route(_)))
        .map(|(_, s)| s.clone())
        .collect();
    for s in credit {
        if resumed {
            s.resync();
        } else {
            s.fail(
                io::ErrorKind::ConnectionAborted,
                "connection lost: the relay did not resume the session, so the stream is gone"
                    .into(),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn client_default_window_is_the_stream_default() {
        assert_eq!(
            crate::ClientOptions::default().stream_window,
            super::super::DEFAULT_WINDOW
        );
    }
}
