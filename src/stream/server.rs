//! Server side of the Stream API: opening streams between clients, routing their frames, and the
//! server's own stream ends.
//!
//! The relay keeps one [`Route`] per credit-mode stream and forwards each frame to the other end
//! after reading its ASCII header. It keeps its own copy of the credit each end has, so a client
//! that sends more than the receiver granted is cut off here, before it can fill the relay's
//! memory: per stream the relay holds at most about one window in each direction.
//!
//! An end of a route may also be the server itself ([`End::Local`]): the server opens a stream to
//! a client with [`P2pServer::add_p2p_stream`] or accepts one a client opens to
//! `"<its own id>-server-side"` (the seed's name for the server's end).

use super::accept::{Acceptors, IncomingStreams};
use super::duplex::{Endpoint, Mode, P2pDuplex, Shared, Slot, StreamInfo, StreamKey};
use super::flow::{RecvWindow, SendCredit, MAX_WINDOW};
use super::frame::{self, code, Frame, Kind, FRAME_EVENT};
use super::StreamOptions;
use crate::error::Error;
use crate::protocol::{self, event};
use crate::server::{OpError, P2pServer, Peer, Responder};
use bytes::Bytes;
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};

/// Suffix of the id under which the server is a stream peer of a client.
pub const SERVER_SIDE_SUFFIX: &str = "-server-side";

/// One end of a route.
#[derive(Clone)]
enum End {
    Client(Arc<Peer>),
    Local(Arc<Shared>),
}

impl End {
    fn is(&self, peer: &Arc<Peer>) -> bool {
        matches!(self, End::Client(p) if Arc::ptr_eq(p, peer))
    }

    /// Forwards a frame as it is to a client, or decodes it into the server's own stream. Call
    /// it for a local end only without the route table locked: the stream's state lock is always
    /// taken before the table's.
    ///
    /// A failure comes with the reset code and reason to tell both ends: a destination whose
    /// socket already closed has disconnected (its disconnect may not have been handled yet).
    fn deliver(&self, bytes: &Bytes, routes: &Routes) -> Result<(), (u32, String)> {
        match self {
            End::Client(p) => p.socket.emit(FRAME_EVENT, bytes).map_err(|e| match e {
                socketioxide::SendError::Socket(socketioxide::SocketError::Closed) => {
                    (code::PEER_GONE, format!("client '{}' disconnected", p.id))
                }
                e => (
                    code::RELAY,
                    format!("relay could not forward to '{}': {e}", p.id),
                ),
            }),
            End::Local(shared) => {
                match Frame::decode(bytes.clone()) {
                    Ok(f) => {
                        if let Some(reset) = shared.on_frame(f) {
                            routes.forward_local(reset.encode());
                        }
                    }
                    Err(e) => shared.fail(io::ErrorKind::InvalidData, format!("bad frame: {e}")),
                }
                Ok(())
            }
        }
    }

    /// Tells this end the stream is gone.
    fn reset(&self, id: u64, code: u32, reason: &str) {
        match self {
            End::Client(p) => {
                p.routes.lock().unwrap().remove(&id);
                let _ = p.socket.emit(FRAME_EVENT, &reset_frame(id, code, reason));
            }
            End::Local(shared) => {
                let kind = if code == code::PEER_GONE {
                    io::ErrorKind::ConnectionAborted
                } else {
                    io::ErrorKind::ConnectionReset
                };
                shared.fail(kind, format!("stream reset: {reason}"));
            }
        }
    }

    fn forget(&self, id: u64) {
        if let End::Client(p) = self {
            p.routes.lock().unwrap().remove(&id);
        }
    }
}

/// One credit-mode stream as the relay sees it: `a` opened it, `b` accepted it.
struct Route {
    a: End,
    b: End,
    /// Bytes `a` may still send to `b`.
    credit_to_b: u64,
    /// Bytes `b` may still send to `a`.
    credit_to_a: u64,
    fin_a: bool,
    fin_b: bool,
    /// Frames from `b` that arrived before `a` was told the stream is open.
    opening: Option<Vec<Bytes>>,
}

/// The relay's routes, and the server's own stream ends.
pub(crate) struct Routes {
    table: Mutex<HashMap<u64, Route>>,
    next: AtomicU64,
    acceptors: Acceptors,
    window: AtomicU32,
    me: Weak<Routes>,
}

impl Routes {
    pub(crate) fn new() -> Arc<Routes> {
        Arc::new_cyclic(|me| Routes {
            table: Mutex::new(HashMap::new()),
            next: AtomicU64::new(0),
            acceptors: Acceptors::default(),
            window: AtomicU32::new(super::DEFAULT_WINDOW),
            me: me.clone(),
        })
    }

    /// How many credit-mode streams the relay is routing.
    pub(crate) fn len(&self) -> usize {
        self.table.lock().unwrap().len()
    }

    fn endpoint(&self) -> Weak<dyn Endpoint> {
        let weak: Weak<Routes> = self.me.clone();
        weak
    }

    fn allocate(&self) -> u64 {
        self.next.fetch_add(1, Ordering::Relaxed) + 1
    }

    fn remove(&self, id: u64) -> Option<Route> {
        let rt = self.table.lock().unwrap().remove(&id)?;
        rt.a.forget(id);
        rt.b.forget(id);
        Some(rt)
    }

    /// A frame written by one of the server's own streams: forwarded to the client end.
    fn forward_local(&self, bytes: Bytes) {
        let Ok(h) = frame::peek(&bytes) else { return };
        let id = h.route;
        let mut table = self.table.lock().unwrap();
        let Some(rt) = table.get_mut(&id) else { return };
        let local_is_a = matches!(rt.a, End::Local(_));
        match h.kind {
            Kind::Fin => {
                if local_is_a {
                    rt.fin_a = true
                } else {
                    rt.fin_b = true
                }
            }
            Kind::Window => {
                let credit = if local_is_a {
                    &mut rt.credit_to_a
                } else {
                    &mut rt.credit_to_b
                };
                *credit = (*credit + u64::from(h.value)).min(MAX_WINDOW);
            }
            Kind::Data => {
                let credit = if local_is_a {
                    &mut rt.credit_to_b
                } else {
                    &mut rt.credit_to_a
                };
                *credit = credit.saturating_sub(u64::from(h.value));
            }
            Kind::Reset => {}
        }
        let dest = if local_is_a {
            rt.b.clone()
        } else {
            rt.a.clone()
        };
        let finished = h.kind == Kind::Reset || (rt.fin_a && rt.fin_b);
        let failed = dest.deliver(&bytes, self).err();
        if finished || failed.is_some() {
            let rt = table.remove(&id).expect("route present");
            drop(table);
            rt.a.forget(id);
            rt.b.forget(id);
            if let Some((c, reason)) = failed {
                rt.a.reset(id, c, &reason);
                rt.b.reset(id, c, &reason);
            }
        }
    }
}

impl Endpoint for Routes {
    fn send_frame(&self, frame: Bytes) -> io::Result<()> {
        self.forward_local(frame);
        Ok(())
    }

    fn poll_ready(&self, _: &mut Context<'_>, _: &mut Option<Slot>) -> Poll<io::Result<()>> {
        // The client's send buffer takes the frame at once; credit bounds what is queued there.
        Poll::Ready(Ok(()))
    }

    fn send_reserved(&self, _: &mut Option<Slot>, frame: Bytes) -> io::Result<()> {
        self.forward_local(frame);
        Ok(())
    }

    fn send_seed_chunk(
        &self,
        _: &str,
        _: &str,
        _: Option<Bytes>,
        done: Box<dyn FnOnce(Result<(), String>) + Send>,
    ) {
        done(Err(
            "the server's own streams run in credit mode only".into()
        ));
    }

    fn send_seed_destroy(&self, _: &str, _: &str) {}

    fn ack_seed_chunk(&self, _: u64) {}

    fn unregister(&self, key: &StreamKey) {
        // A finished or destroyed server-side stream: its route goes once both ends are done,
        // which the frames through `forward_local` already tell; a destroyed one is removed here.
        if let StreamKey::Route(id) = key {
            let done = self
                .table
                .lock()
                .unwrap()
                .get(id)
                .is_some_and(|rt| rt.fin_a && rt.fin_b);
            if done {
                self.remove(*id);
            }
        }
    }
}

fn valid_window(v: Option<&Value>) -> Option<u64> {
    let w = v?.as_u64()?;
    (w > 0 && w <= MAX_WINDOW).then_some(w)
}

fn reset_frame(route: u64, code: u32, reason: &str) -> Bytes {
    Frame::Reset {
        route,
        code,
        reason: reason.to_string(),
    }
    .encode()
}

fn bad(r: Responder, peer: &Peer, msg: String) {
    r.respond(peer, Err(Error::BadRequest(msg).into()))
}

/// `MULTI_API_CREATE_STREAM({sourceStreamId, targetStreamId, targetClientId, window?, ...}, ack)`.
pub(crate) fn create_stream(server: &P2pServer, peer: &Arc<Peer>, args: Vec<Value>, r: Responder) {
    let info =
        match args.into_iter().next() {
            Some(Value::Object(o)) => o,
            _ => return bad(
                r,
                peer,
                "MULTI_API_CREATE_STREAM needs {sourceStreamId, targetStreamId, targetClientId}"
                    .into(),
            ),
        };
    let target_id = match info.get("targetClientId") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        _ => {
            return bad(
                r,
                peer,
                "MULTI_API_CREATE_STREAM: targetClientId must be a non-empty string".into(),
            )
        }
    };
    for key in ["sourceStreamId", "targetStreamId"] {
        match info.get(key) {
            Some(Value::String(s)) if !s.is_empty() => {}
            Some(Value::Number(_)) => {}
            _ => {
                return bad(
                    r,
                    peer,
                    format!("MULTI_API_CREATE_STREAM: {key} must be a non-empty string"),
                )
            }
        }
    }
    let window_a = match info.get("window") {
        None => None,
        w => match valid_window(w) {
            Some(w) => Some(w),
            None => {
                return bad(
                    r,
                    peer,
                    format!("MULTI_API_CREATE_STREAM: window must be 1..={MAX_WINDOW}"),
                )
            }
        },
    };
    if target_id == format!("{}{SERVER_SIDE_SUFFIX}", peer.id) {
        return accept_local(server, peer, info, window_a, r);
    }
    let Some(target) = server.peer(&target_id) else {
        let msg = protocol::not_registered(&target_id);
        return r.respond(
            peer,
            Err(OpError {
                error: Error::UnknownTarget(target_id),
                seed_ack: Some(vec![Value::from(msg)]),
            }),
        );
    };
    peer.watch(&target.id);
    target.watch(&peer.id);

    let mut forward = info.clone();
    forward.insert("sourceClientId".into(), Value::from(&*peer.id));
    forward.remove("route");
    let routes = server.inner.streams.clone();
    let route = match (window_a, peer.ext && target.ext) {
        (Some(w), true) => {
            let id = routes.allocate();
            routes.table.lock().unwrap().insert(
                id,
                Route {
                    a: End::Client(peer.clone()),
                    b: End::Client(target.clone()),
                    credit_to_b: 0,
                    credit_to_a: w,
                    fin_a: false,
                    fin_b: false,
                    opening: Some(Vec::new()),
                },
            );
            peer.routes.lock().unwrap().insert(id);
            target.routes.lock().unwrap().insert(id);
            forward.insert("route".into(), Value::from(id));
            Some(id)
        }
        _ => None,
    };
    let (timeout, max) = (
        server.inner.opts.reply_timeout,
        server.inner.opts.max_pending_per_client,
    );
    let peer = peer.clone();
    tokio::spawn(async move {
        let answer = target
            .request(
                event::MULTI_API_CREATE_STREAM,
                &[Value::Object(forward)],
                timeout,
                max,
            )
            .await;
        let drop_route = || {
            if let Some(id) = route {
                routes.remove(id);
            }
        };
        match answer {
            Ok(args) => match args.first() {
                None | Some(Value::Null) => {
                    // A seed-era acceptor: no credit, no route.
                    drop_route();
                    r.respond(&peer, Ok(vec![]));
                }
                Some(Value::String(refusal)) => {
                    drop_route();
                    r.respond(
                        &peer,
                        Err(OpError {
                            error: Error::remote(&*target.id, refusal.clone()),
                            seed_ack: Some(vec![Value::from(refusal.clone())]),
                        }),
                    );
                }
                Some(obj) => match (route, valid_window(obj.get("window"))) {
                    (Some(id), Some(wb)) => {
                        let mut table = routes.table.lock().unwrap();
                        match table.get_mut(&id) {
                            Some(rt) => {
                                rt.credit_to_b = wb;
                                // Answer first, then what `b` already sent, so `a` knows the
                                // route before its frames arrive.
                                r.respond(&peer, Ok(vec![json!({ "window": wb, "route": id })]));
                                for f in rt.opening.take().unwrap_or_default() {
                                    let _ = peer.socket.emit(FRAME_EVENT, &f);
                                }
                            }
                            None => {
                                r.respond(&peer, Err(Error::PeerGone(target.id.to_string()).into()))
                            }
                        }
                    }
                    (Some(id), None) => {
                        drop_route();
                        let _ = target.socket.emit(
                            FRAME_EVENT,
                            &reset_frame(id, code::PROTOCOL, "accept answer had no valid window"),
                        );
                        r.respond(
                            &peer,
                            Err(Error::Protocol(format!(
                                "'{}' accepted the stream without a valid window",
                                target.id
                            ))
                            .into()),
                        );
                    }
                    (None, _) => r.respond(&peer, Ok(vec![])),
                },
            },
            Err(e) => {
                drop_route();
                r.respond(&peer, Err(e.into()));
            }
        }
    });
}

/// A client opens a stream to the server's own end.
fn accept_local(
    server: &P2pServer,
    peer: &Arc<Peer>,
    info: Map<String, Value>,
    window_a: Option<u64>,
    r: Responder,
) {
    let routes = server.inner.streams.clone();
    let channel = info
        .get("channel")
        .and_then(Value::as_str)
        .map(str::to_string);
    let Some(acceptor) = routes.acceptors.pick(channel.as_deref()) else {
        let text = format!(
            "Client {}{SERVER_SIDE_SUFFIX} is not listening to create stream event",
            peer.id
        );
        return r.respond(
            peer,
            Err(OpError {
                error: Error::remote("the relay", text.clone()),
                seed_ack: Some(vec![Value::from(text)]),
            }),
        );
    };
    let (Some(window_a), true) = (window_a, peer.ext) else {
        return bad(
            r,
            peer,
            "the server's own stream ends run in credit mode only (a window is required)".into(),
        );
    };
    let id = routes.allocate();
    let own_window = routes.window.load(Ordering::Relaxed);
    let id_of = |k: &str| match info.get(k) {
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None => String::new(),
    };
    let shared = Shared::new(
        StreamKey::Route(id),
        StreamInfo {
            peer: peer.id.to_string(),
            stream_id: id_of("targetStreamId"),
            peer_stream_id: id_of("sourceStreamId"),
            channel,
            args: info.get("args").cloned().unwrap_or(Value::Null),
            seed_mode: false,
        },
        Mode::Credit {
            route: id,
            send: SendCredit::new(window_a as u32),
            recv: RecvWindow::new(own_window),
        },
        routes.endpoint(),
    );
    routes.table.lock().unwrap().insert(
        id,
        Route {
            a: End::Client(peer.clone()),
            b: End::Local(shared.clone()),
            credit_to_b: u64::from(own_window),
            credit_to_a: window_a,
            fin_a: false,
            fin_b: false,
            opening: None,
        },
    );
    peer.routes.lock().unwrap().insert(id);
    r.respond(peer, Ok(vec![json!({ "window": own_window, "route": id })]));
    acceptor.deliver(P2pDuplex::new(shared, None));
}

impl P2pServer {
    /// Opens a byte stream from the server to a connected Rust client (the client sees the
    /// opener as `"<its id>-server-side"`). Seed-era JavaScript clients are not supported as
    /// stream peers of the server.
    pub async fn add_p2p_stream(
        &self,
        client_id: &str,
        opts: StreamOptions,
    ) -> Result<P2pDuplex, Error> {
        let peer = self
            .peer(client_id)
            .ok_or_else(|| Error::UnknownTarget(client_id.to_string()))?;
        if !peer.ext {
            return Err(Error::BadRequest(format!(
                "'{client_id}' is a seed-era client; the server opens streams to Rust clients only"
            )));
        }
        let routes = self.inner.streams.clone();
        let window = opts.window.unwrap_or(routes.window.load(Ordering::Relaxed));
        if window == 0 || u64::from(window) > MAX_WINDOW {
            return Err(Error::BadRequest(format!(
                "stream window {window} is out of range"
            )));
        }
        let id = routes.allocate();
        let own_sid = opts
            .stream_id
            .clone()
            .unwrap_or_else(|| format!("server-{id}"));
        let peer_sid = opts
            .peer_stream_id
            .clone()
            .unwrap_or_else(|| format!("{client_id}-{id}"));
        let shared = Shared::new(
            StreamKey::Route(id),
            StreamInfo {
                peer: client_id.to_string(),
                stream_id: own_sid.clone(),
                peer_stream_id: peer_sid.clone(),
                channel: opts.channel.clone(),
                args: opts.args.clone(),
                seed_mode: false,
            },
            Mode::Credit {
                route: id,
                send: SendCredit::new(0),
                recv: RecvWindow::new(window),
            },
            routes.endpoint(),
        );
        routes.table.lock().unwrap().insert(
            id,
            Route {
                a: End::Local(shared.clone()),
                b: End::Client(peer.clone()),
                credit_to_b: 0,
                credit_to_a: u64::from(window),
                fin_a: false,
                fin_b: false,
                opening: Some(Vec::new()),
            },
        );
        peer.routes.lock().unwrap().insert(id);
        let mut info = json!({
            "sourceStreamId": own_sid,
            "targetStreamId": peer_sid,
            "targetClientId": client_id,
            "sourceClientId": format!("{client_id}{SERVER_SIDE_SUFFIX}"),
            "window": window,
            "route": id,
        });
        if let Some(c) = &opts.channel {
            info["channel"] = Value::from(c.as_str());
        }
        if !opts.args.is_null() {
            info["args"] = opts.args.clone();
        }
        let timeout = opts.timeout.unwrap_or(self.inner.opts.reply_timeout);
        let answer = peer
            .request(
                event::MULTI_API_CREATE_STREAM,
                &[info],
                timeout,
                self.inner.opts.max_pending_per_client,
            )
            .await;
        let window_b = match &answer {
            Ok(args) => args.first().and_then(|v| valid_window(v.get("window"))),
            Err(_) => None,
        };
        let Some(wb) = window_b else {
            routes.remove(id);
            return Err(match answer {
                Err(e) => e,
                Ok(args) => match args.first() {
                    Some(Value::String(refusal)) => Error::remote(client_id, refusal.clone()),
                    _ => Error::Protocol(format!("'{client_id}' did not accept with a window")),
                },
            });
        };
        {
            let mut st = shared.state.lock().unwrap();
            if let Mode::Credit { send, .. } = &mut st.mode {
                *send = SendCredit::new(wb as u32);
            }
        }
        let queued = {
            let mut table = routes.table.lock().unwrap();
            match table.get_mut(&id) {
                Some(rt) => {
                    rt.credit_to_b = wb;
                    rt.opening.take().unwrap_or_default()
                }
                None => return Err(Error::PeerGone(client_id.to_string())),
            }
        };
        for f in queued {
            if let Ok(frame) = Frame::decode(f) {
                if let Some(reset) = shared.on_frame(frame) {
                    routes.forward_local(reset.encode());
                }
            }
        }
        Ok(P2pDuplex::new(shared, None))
    }

    /// Accepts streams clients open to `"<their id>-server-side"` on `channel` by calling
    /// `handler` with each new [`P2pDuplex`] (channels match as on the client).
    pub fn on_add_p2p_stream(
        &self,
        channel: Option<&str>,
        handler: impl Fn(P2pDuplex) + Send + Sync + 'static,
    ) {
        self.inner.streams.acceptors.set_handler(channel, handler);
    }

    /// Accepts streams to the server on `channel` as an async stream.
    pub fn incoming_streams(&self, channel: Option<&str>) -> IncomingStreams {
        self.inner.streams.acceptors.queue(channel)
    }

    /// Receive window of the server's own stream ends, in bytes.
    pub fn set_stream_window(&self, window: u32) {
        let w = u64::from(window).clamp(1, MAX_WINDOW) as u32;
        self.inner.streams.window.store(w, Ordering::Relaxed);
    }
}

/// A binary `P2P_FRAME` from a client: checked against the route's credit and forwarded.
pub(crate) fn on_frame(server: &P2pServer, sender: &Arc<Peer>, bytes: Bytes) {
    let h = match frame::peek(&bytes) {
        Ok(h) => h,
        Err(e) => return sender.server_error(&format!("Error: bad stream frame: {e}")),
    };
    let id = h.route;
    let routes = &server.inner.streams;
    let mut table = routes.table.lock().unwrap();
    let Some(rt) = table.get_mut(&id) else {
        // Frames may cross a reset on the wire; those for a closed route are dropped.
        tracing::trace!(client = %sender.id, route = id, "frame for a closed route");
        return;
    };
    let from_a = rt.a.is(sender);
    if !from_a && !rt.b.is(sender) {
        drop(table);
        return sender.server_error(&format!("Error: stream route {id} is not yours"));
    }
    let mut violation = None;
    match h.kind {
        Kind::Data => {
            let n = u64::from(h.value);
            let encoded = (bytes.len() - frame::DATA_HEADER_LEN) as u64;
            let fin = if from_a { rt.fin_a } else { rt.fin_b };
            let credit = if from_a {
                &mut rt.credit_to_b
            } else {
                &mut rt.credit_to_a
            };
            if n > *credit {
                violation = Some(format!("sent {n} bytes with {credit} bytes of credit"));
            } else if encoded < n || encoded > 2 * n {
                violation = Some(format!(
                    "DATA frame declares {n} bytes but carries {encoded}"
                ));
            } else if fin {
                violation = Some("DATA after FIN".to_string());
            } else {
                *credit -= n;
            }
        }
        Kind::Fin => {
            if from_a {
                rt.fin_a = true;
            } else {
                rt.fin_b = true;
            }
        }
        Kind::Window => {
            // The sender lets the other end send more to it.
            let credit = if from_a {
                &mut rt.credit_to_a
            } else {
                &mut rt.credit_to_b
            };
            let next = *credit + u64::from(h.value);
            if h.value == 0 || next > MAX_WINDOW {
                violation = Some(format!("impossible window grant of {}", h.value));
            } else {
                *credit = next;
            }
        }
        Kind::Reset => {}
    }
    if let Some(why) = violation {
        let rt = table.remove(&id).expect("route present");
        drop(table);
        let reason = format!("protocol violation by '{}': {why}", sender.id);
        tracing::info!(route = id, "{reason}");
        rt.a.reset(id, code::PROTOCOL, &reason);
        rt.b.reset(id, code::PROTOCOL, &reason);
        return;
    }
    let dest = if from_a { rt.b.clone() } else { rt.a.clone() };
    let finished = h.kind == Kind::Reset || (rt.fin_a && rt.fin_b);
    if !from_a {
        if let Some(q) = rt.opening.as_mut() {
            q.push(bytes);
            return;
        }
    }
    if finished {
        let rt = table.remove(&id).expect("route present");
        drop(table);
        rt.a.forget(id);
        rt.b.forget(id);
        let _ = dest.deliver(&bytes, routes);
        return;
    }
    if let End::Local(_) = dest {
        drop(table);
        let _ = dest.deliver(&bytes, routes);
        return;
    }
    // Forward under the lock so frames of one route keep their order.
    if let Err((c, reason)) = dest.deliver(&bytes, routes) {
        // The frame cannot be forwarded (the destination's buffer is full or it is gone):
        // the stream cannot go on without losing data, so both ends are told.
        let rt = table.remove(&id).expect("route present");
        drop(table);
        rt.a.reset(id, c, &reason);
        rt.b.reset(id, c, &reason);
    }
}

/// A client disconnected: the other end of each of its routes gets a RESET.
pub(crate) fn peer_gone(server: &P2pServer, peer: &Arc<Peer>) {
    let ids: Vec<u64> = peer.routes.lock().unwrap().drain().collect();
    let routes = &server.inner.streams;
    for id in ids {
        let Some(rt) = routes.table.lock().unwrap().remove(&id) else {
            continue;
        };
        let other = if rt.a.is(peer) { &rt.b } else { &rt.a };
        let reason = format!("client '{}' disconnected", peer.id);
        other.reset(id, code::PEER_GONE, &reason);
    }
}

/// Registers the Stream API's relay operations.
pub(crate) fn register(ops: &mut crate::server::Operations) {
    ops.add(event::MULTI_API_CREATE_STREAM, create_stream);
    ops.add_binary(FRAME_EVENT, on_frame);
    ops.on_peer_gone(peer_gone);
}
