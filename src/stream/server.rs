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
use super::core::Core;
use super::duplex::{Endpoint, P2pDuplex, Shared, Slot, StreamInfo, StreamKey};
use super::flow::MAX_WINDOW;
use super::frame::{self, code, Frame, Header};
use super::route::{RouteState, Side, Verdict};
use super::StreamOptions;
use crate::cluster::{Cluster, Envelope, WireArg};
use crate::error::Error;
use crate::protocol::stream::{CreateAnswer, CreateStream, StreamAccept, Window};
use crate::protocol::{self, event};
use crate::server::{Metrics, OpError, OpReply, P2pServer, Peer, Reason, Session};
use bytes::Bytes;
use serde_json::{Map, Value};
use socketioxide::adapter::Adapter;
use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, Weak};
use std::task::{Context, Poll};

/// Suffix of the id under which the server is a stream peer of a client. No client may connect
/// under an id ending with it, nor open a stream to another client's server end.
pub const SERVER_SIDE_SUFFIX: &str = "-server-side";

/// Shards of the route table: streams on different shards never contend, and a frame only
/// takes its shard's read lock to find its route.
const SHARDS: usize = 16;

/// One shard of the route table.
type Shard<A> = RwLock<HashMap<u64, Arc<Route<A>>>>;

/// One end of a route.
enum End<A: Adapter> {
    Client(Arc<Peer<A>>),
    Local(Arc<Shared>),
    /// The other half of the route, on another relay of the cluster (see
    /// [`crate::cluster::stream`]).
    Remote(Arc<RemoteEnd>),
}

/// The half of a route kept by another relay.
struct RemoteEnd {
    cluster: Arc<Cluster>,
    /// The client at that end.
    client: Arc<str>,
    /// Where that half is; unknown on the opener's relay until the acceptor's relay answers.
    link: Option<Link>,
}

/// A route's other half: its relay, that relay's channel, and its route id there.
struct Link {
    relay: String,
    channel: Arc<str>,
    route: u64,
}

impl<A: Adapter> Clone for End<A> {
    fn clone(&self) -> Self {
        match self {
            End::Client(p) => End::Client(p.clone()),
            End::Local(s) => End::Local(s.clone()),
            End::Remote(r) => End::Remote(r.clone()),
        }
    }
}

impl<A: Adapter> End<A> {
    fn is(&self, peer: &Arc<Peer<A>>) -> bool {
        matches!(self, End::Client(p) if Arc::ptr_eq(p, peer))
    }

    fn name(&self) -> String {
        match self {
            End::Client(p) => format!("'{}'", p.id),
            End::Local(_) => "the server".into(),
            End::Remote(r) => format!("'{}' (through its relay)", r.client),
        }
    }

    /// Whether this end is the other half of the route, on relay `relay`.
    fn on_relay(&self, relay: &str) -> bool {
        matches!(self, End::Remote(r) if r.link.as_ref().is_some_and(|l| l.relay == relay))
    }

    /// Whether frames for this end are dropped rather than sent: its client's connection
    /// dropped and its session is kept (or was just taken over, or ended; the route is then
    /// moved or reset), so its sender sends them again after the resume.
    fn away(&self) -> bool {
        match self {
            End::Client(p) => !matches!(p.session(), Session::Here),
            End::Local(_) | End::Remote(_) => false,
        }
    }

    /// Hands a frame of route `id` of `routes` to this end: as it is to a client or to the
    /// route's other half on another relay; decoded for the server's own stream, which the
    /// caller hands it to once it holds no route lock.
    fn deliver(
        &self,
        routes: &Routes<A>,
        id: u64,
        bytes: &Bytes,
    ) -> Result<Delivered, (u32, String)> {
        match self {
            End::Remote(r) => {
                let Some(link) = &r.link else {
                    return Err((
                        code::RELAY,
                        format!("the relay of '{}' has not answered the open yet", r.client),
                    ));
                };
                let me = routes.me.clone();
                let client = r.client.clone();
                let done = Box::new(move |sent: Result<String, Error>| {
                    if let (Err(e), Some(routes)) = (sent, me.upgrade()) {
                        let reason = format!("the relay could not forward to '{client}': {e}");
                        routes.lost_remote(id, &reason);
                    }
                });
                match r.cluster.send_frame(&link.channel, link.route, bytes, done) {
                    Ok(()) => Ok(Delivered::Sent),
                    Err(e) => Err((
                        code::RELAY,
                        format!("the relay could not forward to '{}': {e}", r.client),
                    )),
                }
            }
            End::Client(p) => match p.send_frame(bytes) {
                Ok(()) => Ok(Delivered::Sent),
                // The link dropped a moment ago and the session may be kept for its return.
                Err(Error::PeerGone(_)) if p.resumable() => Ok(Delivered::Lost),
                Err(Error::PeerGone(id)) => {
                    Err((code::PEER_GONE, format!("client '{id}' disconnected")))
                }
                Err(e) => Err((
                    code::RELAY,
                    format!("relay could not forward to '{}': {e}", p.id),
                )),
            },
            End::Local(_) => match Frame::decode(bytes.clone()) {
                Ok(f) => Ok(Delivered::Local(f)),
                Err(e) => Err((
                    code::PROTOCOL,
                    format!("protocol violation: bad frame: {e}"),
                )),
            },
        }
    }

    /// Tells this end the stream is gone.
    fn reset(&self, id: u64, code: u32, reason: &str) {
        match self {
            End::Client(p) => {
                p.send_control_frame(&reset_frame(id, code, reason));
            }
            End::Local(shared) => {
                shared.fail(frame::reset_kind(code), format!("stream reset: {reason}"));
            }
            End::Remote(r) => {
                if let Some(link) = &r.link {
                    let f = reset_frame(id, code, reason);
                    let _ = r
                        .cluster
                        .send_frame(&link.channel, link.route, &f, Box::new(|_| {}));
                }
            }
        }
    }
}

/// What became of a frame handed to an end.
enum Delivered {
    /// Queued for the client.
    Sent,
    /// The client's link is gone and its session may be resumed: the frame is dropped, and
    /// counted nowhere.
    Lost,
    /// For the server's own end.
    Local(Frame),
}

/// One credit-mode stream as the relay sees it: `a` opened it, `b` accepted it. Its lock is
/// held while a frame is checked and handed on, so the frames of one direction keep their order;
/// other routes are not held up by it. A client end changes when a new connection takes the
/// client's session over.
struct Route<A: Adapter> {
    id: u64,
    ends: RwLock<[End<A>; 2]>,
    state: Mutex<RouteState>,
}

impl<A: Adapter> Route<A> {
    fn new(id: u64, a: End<A>, b: End<A>, state: RouteState) -> Route<A> {
        Route {
            id,
            ends: RwLock::new([a, b]),
            state: Mutex::new(state),
        }
    }

    fn end(&self, side: Side) -> End<A> {
        let ends = self.ends.read().unwrap_or_else(|p| p.into_inner());
        match side {
            Side::A => ends[0].clone(),
            Side::B => ends[1].clone(),
        }
    }

    fn both(&self) -> [End<A>; 2] {
        self.ends.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn side_of(&self, peer: &Arc<Peer<A>>) -> Option<Side> {
        let [a, b] = self.both();
        if a.is(peer) {
            Some(Side::A)
        } else if b.is(peer) {
            Some(Side::B)
        } else {
            None
        }
    }

    fn lock(&self) -> MutexGuard<'_, RouteState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The relay's routes, and the server's own stream ends.
pub(crate) struct Routes<A: Adapter> {
    shards: Box<[Shard<A>]>,
    next: AtomicU64,
    acceptors: Acceptors,
    window: AtomicU32,
    me: Weak<Routes<A>>,
    metrics: Arc<Metrics>,
}

impl<A: Adapter> Routes<A> {
    pub(crate) fn new(metrics: Arc<Metrics>) -> Arc<Routes<A>> {
        Arc::new_cyclic(|me| Routes {
            shards: (0..SHARDS).map(|_| RwLock::default()).collect(),
            next: AtomicU64::new(0),
            acceptors: Acceptors::default(),
            window: AtomicU32::new(super::DEFAULT_WINDOW),
            me: me.clone(),
            metrics,
        })
    }

    /// Counts the data bytes of a frame forwarded along a route.
    fn count(&self, h: &Header) {
        if h.kind == frame::Kind::Data {
            self.metrics.stream_bytes(u64::from(h.value));
        }
    }

    fn shard(&self, id: u64) -> &Shard<A> {
        &self.shards[(id % SHARDS as u64) as usize]
    }

    /// How many credit-mode streams the relay is routing.
    pub(crate) fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.read().unwrap_or_else(|p| p.into_inner()).len())
            .sum()
    }

    fn endpoint(&self) -> Weak<dyn Endpoint> {
        let weak: Weak<Routes<A>> = self.me.clone();
        weak
    }

    fn allocate(&self) -> u64 {
        self.next.fetch_add(1, Ordering::Relaxed) + 1
    }

    fn get(&self, id: u64) -> Option<Arc<Route<A>>> {
        self.shard(id)
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .cloned()
    }

    fn insert(&self, route: Route<A>) {
        for end in &route.both() {
            if let End::Client(p) = end {
                p.routes.lock().unwrap().insert(route.id);
            }
        }
        self.shard(route.id)
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(route.id, Arc::new(route));
    }

    /// Takes a route out of the tables (its ends are not told).
    fn unlink(&self, id: u64) -> Option<Arc<Route<A>>> {
        let route = self
            .shard(id)
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id)?;
        for end in &route.both() {
            if let End::Client(p) = end {
                p.routes.lock().unwrap().remove(&id);
            }
        }
        Some(route)
    }

    /// Removes a route and tells both ends it is gone.
    fn tear_down(&self, route: &Route<A>, code: u32, reason: &str) {
        self.unlink(route.id);
        for end in route.both() {
            end.reset(route.id, code, reason);
        }
    }

    /// Removes a route whose acceptor did not take it in credit mode (it refused, or is a
    /// seed-era client): nobody needs to hear about it.
    fn discard(&self, id: u64) {
        if let Some(route) = self.unlink(id) {
            route.lock().finish();
        }
    }

    /// Removes a route whose open failed after the acceptor may have accepted it (no answer in
    /// time, an answer that makes no sense): the acceptor's end is reset, so its reads end and
    /// its writes fail instead of going nowhere. The opener learns of the failure from its answer.
    fn abandon(&self, id: u64, code: u32, reason: &str) {
        if let Some(route) = self.unlink(id) {
            if route.lock().finish() {
                route.end(Side::B).reset(id, code, reason);
            }
        }
    }

    /// Checks a frame from `from` against the route's accounts and hands it on unchanged.
    fn route_frame(&self, route: &Route<A>, from: Side, h: &Header, bytes: Bytes) {
        let mut st = route.lock();
        let to = route.end(from.other());
        if h.kind != frame::Kind::Reset && to.away() {
            // Sent again by its sender after the resume; a RESET ends the route now.
            return;
        }
        let before = st.clone();
        let last = match st.on_frame(from, h, &bytes) {
            Verdict::Stale | Verdict::Drop => {
                // Frames may cross a reset on the wire; dropped ones are sent again.
                return;
            }
            Verdict::Held => return st.hold(bytes),
            Verdict::Violation(why) => {
                drop(st);
                let reason = format!("protocol violation by {}: {why}", route.end(from).name());
                tracing::info!(route = route.id, "{reason}");
                return self.tear_down(route, code::PROTOCOL, &reason);
            }
            Verdict::Forward { last } => last,
        };
        let delivered = if to.away() {
            Ok(Delivered::Lost)
        } else {
            to.deliver(self, route.id, &bytes)
        };
        match delivered {
            Ok(Delivered::Lost) => {
                // Counted nowhere: its sender sends it again after the resume (a RESET still
                // ends the route).
                if h.kind != frame::Kind::Reset {
                    *st = before;
                    return;
                }
                drop(st);
                self.unlink(route.id);
            }
            Ok(delivered) => {
                self.count(h);
                drop(st);
                if last {
                    self.unlink(route.id);
                }
                if let (Delivered::Local(f), End::Local(shared)) = (delivered, &to) {
                    shared.receive(f);
                }
            }
            Err((c, reason)) => {
                // The stream cannot go on without losing data (the destination's buffer is
                // full, or it is gone): both ends are told.
                st.finish();
                drop(st);
                self.tear_down(route, c, &reason);
            }
        }
    }

    /// A frame written by one of the server's own streams: forwarded to the client end.
    fn forward_local(&self, bytes: Bytes) {
        let Ok(h) = frame::peek(&bytes) else { return };
        let Some(route) = self.get(h.route) else {
            return;
        };
        let from = if matches!(route.end(Side::A), End::Local(_)) {
            Side::A
        } else {
            Side::B
        };
        self.route_frame(&route, from, &h, bytes);
    }
}

impl<A: Adapter> Endpoint for Routes<A> {
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

    fn send_in_order(&self, _: &Arc<Shared>, frames: Vec<Bytes>) {
        // Handed on at once, in order: nothing waits.
        for f in frames {
            self.forward_local(f);
        }
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

    fn unregister(&self, _: &StreamKey, _: Option<super::core::LastWord>) {
        // A server-side stream's route goes with the frame that ends it (the second FIN or a
        // RESET), which passes through `forward_local` or `on_frame`.
    }
}

/// After the opener's answer, sends it what the acceptor sent before the opener knew the route
/// (`held`), in order. When that fails, or the answer did (`failed`), the route is torn down at
/// both ends, as for a frame that cannot be forwarded; otherwise it is removed if both ends have
/// already finished.
#[allow(clippy::too_many_arguments)]
fn release_opening<A: Adapter>(
    routes: &Routes<A>,
    rt: &Arc<Route<A>>,
    mut st: MutexGuard<'_, RouteState>,
    id: u64,
    held: Vec<Bytes>,
    finished: bool,
    mut failed: Option<(u32, String)>,
    opener: &str,
) {
    for f in held {
        if failed.is_some() {
            break;
        }
        match rt.end(Side::A).deliver(routes, id, &f) {
            Ok(Delivered::Lost) => {
                failed = Some((
                    code::RELAY,
                    format!("'{opener}' left while the stream was being opened"),
                ))
            }
            Ok(_) => frame::peek(&f).iter().for_each(|h| routes.count(h)),
            Err(e) => failed = Some(e),
        }
    }
    if let Some((c, reason)) = failed {
        st.finish();
        drop(st);
        return routes.tear_down(rt, c, &reason);
    }
    drop(st);
    if finished {
        routes.unlink(id);
    }
}

/// Abandons a route the server is opening when dropped with a reason (see
/// [`P2pServer::add_p2p_stream`]).
struct OpenGuard<'a, A: Adapter> {
    routes: &'a Routes<A>,
    id: u64,
    reason: Option<String>,
}

impl<A: Adapter> Drop for OpenGuard<'_, A> {
    fn drop(&mut self) {
        if let Some(reason) = self.reason.take() {
            self.routes.abandon(self.id, code::CANCEL, &reason);
        }
    }
}

fn reset_frame(route: u64, code: u32, reason: &str) -> Bytes {
    Frame::Reset {
        route,
        code,
        reason: reason.to_string(),
    }
    .encode()
}

fn bad(r: OpReply, msg: String) {
    r.respond(Err(Error::BadRequest(msg).into()))
}

/// Answers an open that `who` (the acceptor) refused with `text`, the seed's refusal words.
fn refused(r: OpReply, who: &str, text: String) {
    r.respond(Err(OpError {
        error: Error::remote(who, text.clone()),
        seed_ack: Some(vec![Value::from(text)]),
    }))
}

/// `MULTI_API_CREATE_STREAM({sourceStreamId, targetStreamId, targetClientId, window?, ...}, ack)`.
pub(crate) fn create_stream<A: Adapter>(
    server: &P2pServer<A>,
    peer: &Arc<Peer<A>>,
    args: Vec<Value>,
    r: OpReply,
) {
    let mut info = match CreateStream::from_args(&args) {
        Ok(info) => info,
        Err(e) => return bad(r, e),
    };
    let max = server.inner.opts.max_streams_per_client;
    if peer.routes.lock().unwrap().len() >= max {
        peer.metrics.refused(Reason::Limit);
        let text = format!(
            "client '{}' has {max} streams open, the most one client may",
            peer.id
        );
        return r.respond(Err(OpError {
            seed_ack: Some(vec![Value::from(text.clone())]),
            error: Error::BadRequest(text),
        }));
    }
    let own_server_end = format!("{}{SERVER_SIDE_SUFFIX}", peer.id);
    if info.target_client_id == own_server_end {
        return accept_local(server, peer, info, r);
    }
    if let Err(e) = peer.check(crate::auth::Action::Send(&info.target_client_id)) {
        return r.respond(Err(e.into()));
    }
    if info.target_client_id.ends_with(SERVER_SIDE_SUFFIX) {
        // No client holds such an id: it names the server's end of another client's streams.
        let text = format!(
            "'{}' is the server's end of another client's streams; a client reaches the \
             server's end as '{own_server_end}'",
            info.target_client_id
        );
        return r.respond(Err(OpError {
            seed_ack: Some(vec![Value::from(text.clone())]),
            error: Error::BadRequest(text),
        }));
    }
    let Some(target) = server.peer(&info.target_client_id) else {
        if server.peer_or_away(&info.target_client_id).is_none() {
            if let Some(cluster) = server.cluster() {
                return open_remote(server, peer, cluster.clone(), info, r);
            }
        }
        let msg = protocol::not_registered(&info.target_client_id);
        return r.respond(Err(OpError {
            error: server.not_here(&info.target_client_id, "a stream"),
            seed_ack: Some(vec![Value::from(msg)]),
        }));
    };
    peer.watch(&target.id);
    target.watch(&peer.id);

    info.source_client_id = Some(peer.id.to_string());
    info.route = None;
    let routes = server.inner.streams.clone();
    let route = match (info.window, peer.ext && target.ext) {
        (Some(w), true) => {
            let id = routes.allocate();
            routes.insert(Route::new(
                id,
                End::Client(peer.clone()),
                End::Client(target.clone()),
                RouteState::new(w.get(), 0, true),
            ));
            info.route = Some(id);
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
                &[info.to_value()],
                timeout,
                max,
            )
            .await
            .map(|args| CreateAnswer::from_args(&args));
        finish_open(&routes, r, &peer, &target.id, route, answer);
    });
}

/// The acceptor `target` answered the open of route `route` (`None`: a seed-era end) by `peer`,
/// or could not: tells `peer`, and forwards what the acceptor sent meanwhile.
fn finish_open<A: Adapter>(
    routes: &Arc<Routes<A>>,
    r: OpReply,
    peer: &Arc<Peer<A>>,
    target: &str,
    route: Option<u64>,
    answer: Result<CreateAnswer, Error>,
) {
    let answer = match answer {
        Ok(answer) => answer,
        Err(e) => {
            if let Some(id) = route {
                let reason = format!("the stream could not be opened: {e}");
                routes.abandon(id, code::CANCEL, &reason);
            }
            return r.respond(Err(e.into()));
        }
    };
    let Some(id) = route else {
        // No route (a seed-era end): whatever the acceptor said, the seed way.
        return match answer {
            CreateAnswer::Refused(text) => refused(r, target, text),
            _ => r.respond(Ok(vec![])),
        };
    };
    match answer {
        CreateAnswer::Seed => {
            // A seed-era acceptor: no credit, no route.
            routes.discard(id);
            r.respond(Ok(vec![]));
        }
        CreateAnswer::Refused(text) => {
            routes.discard(id);
            refused(r, target, text);
        }
        CreateAnswer::Credit(accept) => {
            let Some(rt) = routes.get(id) else {
                return r.respond(Err(Error::PeerGone(target.to_string()).into()));
            };
            let mut st = rt.lock();
            let (held, finished) = st.opened(accept.window.get());
            // Answer first, then what `b` already sent, so `a` knows the route before its
            // frames arrive.
            let answer = StreamAccept {
                window: accept.window,
                route: Some(id),
            };
            let failed = (!r.respond_delivered(Ok(vec![answer.to_value()]))).then(|| {
                // The opener never learns the route: the stream cannot work.
                (
                    code::RELAY,
                    format!("relay could not tell '{}' the stream is open", peer.id),
                )
            });
            release_opening(routes, &rt, st, id, held, finished, failed, &peer.id);
        }
        CreateAnswer::Invalid(what) => {
            routes.abandon(id, code::PROTOCOL, "accept answer had no valid window");
            r.respond(Err(Error::Protocol(format!(
                "'{}' accepted the stream without a valid window: {what}",
                target
            ))
            .into()));
        }
    }
}

/// `peer` opens a stream to a client this relay does not have: the relay holding it (if any) is
/// asked to open its half of the route (see [`crate::cluster::stream`]).
fn open_remote<A: Adapter>(
    server: &P2pServer<A>,
    peer: &Arc<Peer<A>>,
    cluster: Arc<Cluster>,
    mut info: CreateStream,
    r: OpReply,
) {
    let to: Arc<str> = info.target_client_id.as_str().into();
    let Some(window) = info.window.filter(|_| peer.ext) else {
        let text = format!(
            "client '{to}' is not connected to this relay, and streams to clients of the \
             cluster's other relays run in credit mode only, which seed-era clients do not speak"
        );
        return r.respond(Err(OpError {
            error: Error::BadRequest(text),
            seed_ack: Some(vec![Value::from(protocol::not_registered(&to))]),
        }));
    };
    if !cluster.is_up() {
        let what = format!("the stream to client '{to}' was not opened");
        return r.respond(Err(cluster.unavailable(&what).into()));
    }
    info.source_client_id = Some(peer.id.to_string());
    info.route = None;
    let routes = server.inner.streams.clone();
    let id = routes.allocate();
    let remote = RemoteEnd {
        cluster: cluster.clone(),
        client: to.clone(),
        link: None,
    };
    routes.insert(Route::new(
        id,
        End::Client(peer.clone()),
        End::Remote(Arc::new(remote)),
        RouteState::new(window.get(), 0, true),
    ));
    let timeout = server.inner.opts.reply_timeout;
    let request = cluster.next_request();
    let env = Envelope::StreamOpen {
        relay: cluster.id().to_string(),
        id: request,
        from: peer.id.to_string(),
        to: to.to_string(),
        open: info.to_value(),
        route: id,
        timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
    };
    let peer = peer.clone();
    tokio::spawn(async move {
        let answer = cluster
            .request(
                request,
                &to,
                event::MULTI_API_CREATE_STREAM,
                env,
                Some(peer.id.clone()),
                timeout,
            )
            .await
            .map(|args| {
                let args: Vec<Value> = args.into_iter().map(|a| a.into_value()).collect();
                CreateAnswer::from_args(&args)
            });
        finish_open(&routes, r, &peer, &to, Some(id), answer);
    });
}

/// What relay `relay` asked in an [`Envelope::StreamOpen`]: its client `from` opens a stream to
/// `to`, a client of this relay, with the route `for_route` there. This relay keeps the other
/// half of the route, asks `to`, and answers with an [`Envelope::StreamAnswer`].
#[allow(clippy::too_many_arguments)]
pub(crate) fn open_from_relay<A: Adapter>(
    server: &P2pServer<A>,
    cluster: &Arc<Cluster>,
    relay: String,
    request: u64,
    from: String,
    to: String,
    open: Value,
    for_route: u64,
    timeout_ms: u64,
) {
    let answer = {
        let (cluster, relay) = (cluster.clone(), relay.clone());
        move |route: Option<u64>, result: Result<Vec<Value>, Error>| {
            let (ok, err) = match result {
                Ok(args) => (
                    Some(WireArg::from_args(
                        args.into_iter().map(crate::protocol::Arg::Json).collect(),
                    )),
                    None,
                ),
                Err(e) => (None, Some(e.to_wire())),
            };
            let env = Envelope::StreamAnswer {
                relay: cluster.id().to_string(),
                id: request,
                for_route,
                route,
                ok,
                err,
            };
            cluster.send_to_relay(&relay, &env);
        }
    };
    let mut info = match CreateStream::from_args(&[open]) {
        Ok(info) if info.target_client_id == to => info,
        Ok(_) => {
            let e = Error::Protocol("a stream open for another client".into());
            return answer(None, Err(e));
        }
        Err(e) => return answer(None, Err(Error::BadRequest(e))),
    };
    let Some(target) = server.peer(&to) else {
        return answer(None, Err(Error::UnknownTarget(to)));
    };
    let Some(window_a) = info.window.filter(|_| target.ext) else {
        let e = Error::BadRequest(format!(
            "'{to}' is a seed-era client: streams between relays run in credit mode only"
        ));
        return answer(None, Err(e));
    };
    let from: Arc<str> = from.into();
    target.watch(&from);
    cluster.watch(&relay, &from, &target.id);
    let routes = server.inner.streams.clone();
    let id = routes.allocate();
    let remote = RemoteEnd {
        cluster: cluster.clone(),
        client: from.clone(),
        link: Some(Link {
            channel: cluster.channel_of(&relay),
            relay,
            route: for_route,
        }),
    };
    routes.insert(Route::new(
        id,
        End::Remote(Arc::new(remote)),
        End::Client(target.clone()),
        RouteState::new(window_a.get(), 0, true),
    ));
    info.source_client_id = Some(from.to_string());
    info.route = Some(id);
    // Within the opener relay's own wait.
    let timeout = std::time::Duration::from_millis(timeout_ms).min(server.inner.opts.reply_timeout);
    let max = server.inner.opts.max_pending_per_client;
    tokio::spawn(async move {
        let result = target
            .request(
                event::MULTI_API_CREATE_STREAM,
                &[info.to_value()],
                timeout,
                max,
            )
            .await;
        let args = match result {
            Ok(args) => args,
            Err(e) => {
                let reason = format!("the stream could not be opened: {e}");
                routes.abandon(id, code::CANCEL, &reason);
                return answer(None, Err(e));
            }
        };
        match CreateAnswer::from_args(&args) {
            CreateAnswer::Credit(accept) => {
                let Some(rt) = routes.get(id) else {
                    return answer(None, Err(Error::PeerGone(to)));
                };
                let mut st = rt.lock();
                let (held, finished) = st.opened(accept.window.get());
                // The answer first, then what the acceptor sent already: they leave in order.
                let accepted = StreamAccept {
                    window: accept.window,
                    route: None,
                };
                answer(Some(id), Ok(vec![accepted.to_value()]));
                release_opening(&routes, &rt, st, id, held, finished, None, &from);
            }
            CreateAnswer::Refused(_) => {
                routes.discard(id);
                answer(None, Ok(args));
            }
            CreateAnswer::Seed | CreateAnswer::Invalid(_) => {
                routes.abandon(id, code::PROTOCOL, "accept answer had no valid window");
                let e = Error::Protocol(format!("'{to}' accepted the stream without a window"));
                answer(None, Err(e));
            }
        }
    });
}

/// The answer of relay `relay` to the open of route `id` here says where the route's other half
/// is: `route` there. Returns whether the route is still here; when it is not, the other half is
/// reset.
pub(crate) fn connect_remote<A: Adapter>(
    server: &P2pServer<A>,
    cluster: &Arc<Cluster>,
    id: u64,
    relay: &str,
    route: u64,
) -> bool {
    let routes = &server.inner.streams;
    let link = Link {
        relay: relay.to_string(),
        channel: cluster.channel_of(relay),
        route,
    };
    if let Some(rt) = routes.get(id) {
        let mut ends = rt.ends.write().unwrap_or_else(|p| p.into_inner());
        if let End::Remote(r) = &ends[1] {
            if r.link.is_none() {
                let linked = RemoteEnd {
                    cluster: r.cluster.clone(),
                    client: r.client.clone(),
                    link: Some(link),
                };
                ends[1] = End::Remote(Arc::new(linked));
                return true;
            }
        }
        return false;
    }
    let f = reset_frame(id, code::CANCEL, "the opener's end of the stream is gone");
    let _ = cluster.send_frame(&link.channel, route, &f, Box::new(|_| {}));
    false
}

/// A frame from relay `relay` for a route here whose other half is there.
pub(crate) fn from_relay<A: Adapter>(server: &P2pServer<A>, relay: &str, bytes: Bytes) {
    let Ok(h) = frame::peek(&bytes) else {
        tracing::debug!(
            relay,
            "dropping a stream frame from another relay that does not decode"
        );
        return;
    };
    let routes = &server.inner.streams;
    let Some(route) = routes.get(h.route) else {
        // It crossed the route's end.
        tracing::trace!(
            relay,
            route = h.route,
            "frame from another relay for a closed route"
        );
        return;
    };
    let [a, b] = route.both();
    let from = if a.on_relay(relay) {
        Side::A
    } else if b.on_relay(relay) {
        Side::B
    } else {
        tracing::debug!(
            relay,
            route = h.route,
            "a stream frame from a relay the route is not on"
        );
        return;
    };
    routes.route_frame(&route, from, &h, bytes);
}

impl<A: Adapter> Routes<A> {
    /// A frame of route `id` for its other half was not taken by Redis: the route ends here, its
    /// client end told `reason`.
    fn lost_remote(&self, id: u64, reason: &str) {
        if let Some(route) = self.unlink(id) {
            if route.lock().finish() {
                for end in route.both() {
                    if !matches!(end, End::Remote(_)) {
                        end.reset(id, code::RELAY, reason);
                    }
                }
            }
        }
    }

    /// Ends the routes whose other half is on a relay (`Some`: that relay only; `None`: any),
    /// telling their ends here `code` and `reason`.
    fn end_remote(&self, relay: Option<&str>, code: u32, reason: &str) {
        let doomed: Vec<Arc<Route<A>>> = self
            .shards
            .iter()
            .flat_map(|s| {
                s.read()
                    .unwrap_or_else(|p| p.into_inner())
                    .values()
                    .filter(|r| {
                        r.both().iter().any(|e| match (e, relay) {
                            (End::Remote(_), None) => true,
                            (e, Some(relay)) => e.on_relay(relay),
                            _ => false,
                        })
                    })
                    .cloned()
                    .collect::<Vec<_>>()
            })
            .collect();
        for route in doomed {
            self.unlink(route.id);
            if route.lock().finish() {
                for end in route.both() {
                    if !matches!(end, End::Remote(_)) {
                        end.reset(route.id, code, reason);
                    }
                }
            }
        }
    }
}

/// Relay `relay` of the cluster is dead: the routes whose other half was there are reset.
pub(crate) fn relay_gone<A: Adapter>(server: &P2pServer<A>, relay: &str) {
    server.inner.streams.end_remote(
        Some(relay),
        code::PEER_GONE,
        "the other end's relay left the cluster (it stopped, or lost Redis)",
    );
}

/// This relay lost its link to Redis: the routes whose other half is on another relay are reset.
pub(crate) fn link_lost<A: Adapter>(server: &P2pServer<A>) {
    server.inner.streams.end_remote(
        None,
        code::RELAY,
        "the relay lost its link to the cluster's Redis, which carries this stream",
    );
}

/// A client opens a stream to the server's own end.
fn accept_local<A: Adapter>(
    server: &P2pServer<A>,
    peer: &Arc<Peer<A>>,
    info: CreateStream,
    r: OpReply,
) {
    let routes = server.inner.streams.clone();
    let Some(acceptor) = routes.acceptors.pick(info.channel.as_deref()) else {
        let server_end = format!("{}{SERVER_SIDE_SUFFIX}", peer.id);
        let text = format!("Client {server_end} is not listening to create stream event");
        return refused(r, &server_end, text);
    };
    let (Some(window_a), true) = (info.window, peer.ext) else {
        return bad(
            r,
            "the server's own stream ends run in credit mode only (a window is required)".into(),
        );
    };
    let id = routes.allocate();
    let own_window = Window::clamped(routes.window.load(Ordering::Relaxed));
    let shared = Shared::new(
        StreamKey::Route(id),
        StreamInfo {
            peer: peer.id.to_string(),
            stream_id: info.target_stream_id.to_string(),
            peer_stream_id: info.source_stream_id.to_string(),
            channel: info.channel,
            args: info.args,
            seed_mode: false,
        },
        Core::credit(id, window_a.get(), own_window.get()),
        routes.endpoint(),
    );
    routes.insert(Route::new(
        id,
        End::Client(peer.clone()),
        End::Local(shared.clone()),
        RouteState::new(window_a.get(), own_window.get(), false),
    ));
    let answer = StreamAccept {
        window: own_window,
        route: Some(id),
    };
    r.respond(Ok(vec![answer.to_value()]));
    acceptor.deliver(P2pDuplex::new(shared, None));
}

impl<A: Adapter> P2pServer<A> {
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
            .ok_or_else(|| self.not_here(client_id, "a stream"))?;
        if !peer.ext {
            return Err(Error::BadRequest(format!(
                "'{client_id}' is a seed-era client; the server opens streams to Rust clients only"
            )));
        }
        protocol::check_no_placeholder(std::slice::from_ref(&opts.args))?;
        let routes = self.inner.streams.clone();
        let window = opts.window.unwrap_or(routes.window.load(Ordering::Relaxed));
        let Some(window) = Window::new(u64::from(window)) else {
            return Err(Error::BadRequest(format!(
                "stream window {window} is out of range"
            )));
        };
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
            Core::credit(id, 0, window.get()),
            routes.endpoint(),
        );
        routes.insert(Route::new(
            id,
            End::Local(shared.clone()),
            End::Client(peer.clone()),
            RouteState::new(window.get(), 0, true),
        ));
        let info = CreateStream {
            source_stream_id: own_sid.as_str().into(),
            target_stream_id: peer_sid.as_str().into(),
            target_client_id: client_id.to_string(),
            source_client_id: Some(format!("{client_id}{SERVER_SIDE_SUFFIX}")),
            window: Some(window),
            route: Some(id),
            channel: opts.channel.clone(),
            args: opts.args.clone(),
            extra: Map::new(),
        };
        // Whatever ends this call before the stream is open (an error, or the caller dropping
        // the future) resets the client's end, which may have accepted already.
        let mut guard = OpenGuard {
            routes: &routes,
            id,
            reason: Some("the server gave up opening the stream".into()),
        };
        let timeout = opts.timeout.unwrap_or(self.inner.opts.reply_timeout);
        let answer = peer
            .request(
                event::MULTI_API_CREATE_STREAM,
                &[info.to_value()],
                timeout,
                self.inner.opts.max_pending_per_client,
            )
            .await
            .map(|args| CreateAnswer::from_args(&args));
        let window_b = match answer {
            Ok(CreateAnswer::Credit(accept)) => accept.window,
            other => {
                let e = match other {
                    Err(e) => e,
                    Ok(CreateAnswer::Refused(refusal)) => Error::remote(client_id, refusal),
                    Ok(_) => Error::Protocol(format!("'{client_id}' did not accept with a window")),
                };
                guard.reason = Some(format!("the stream could not be opened: {e}"));
                return Err(e);
            }
        };
        guard.reason = None;
        shared.set_peer_window(window_b.get());
        let Some(rt) = routes.get(id) else {
            return Err(Error::PeerGone(client_id.to_string()));
        };
        // What the client sent before this end knew its window goes in first, in order.
        let mut st = rt.lock();
        let (held, finished) = st.opened(window_b.get());
        let mut frames = Vec::with_capacity(held.len());
        let mut broken = None;
        for f in held {
            frame::peek(&f).iter().for_each(|h| routes.count(h));
            match Frame::decode(f) {
                Ok(frame) => frames.push(frame),
                Err(e) => broken = Some(format!("protocol violation: bad frame: {e}")),
            }
        }
        drop(st);
        if finished {
            routes.unlink(id);
        }
        for f in frames {
            shared.receive(f);
        }
        if let Some(reason) = broken {
            routes.tear_down(&rt, code::PROTOCOL, &reason);
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
pub(crate) fn on_frame<A: Adapter>(server: &P2pServer<A>, sender: &Arc<Peer<A>>, bytes: Bytes) {
    let h = match frame::peek(&bytes) {
        Ok(h) => h,
        Err(e) => return sender.server_error(&format!("Error: bad stream frame: {e}")),
    };
    let routes = &server.inner.streams;
    let Some(route) = routes.get(h.route) else {
        // Frames may cross a reset on the wire; those for a closed route are dropped. A client
        // back from a cut asking where a stream stands learns it is gone.
        tracing::trace!(client = %sender.id, route = h.route, "frame for a closed route");
        if h.kind == frame::Kind::Sync && h.flags & frame::sync::ASK != 0 {
            sender.send_control_frame(&reset_frame(
                h.route,
                code::RELAY,
                "the stream ended while this client's link was down",
            ));
        }
        return;
    };
    let Some(from) = route.side_of(sender) else {
        return sender.server_error(&format!("Error: stream route {} is not yours", h.route));
    };
    routes.route_frame(&route, from, &h, bytes);
}

/// A client's connection is gone. If its session is kept for its return, its routes stay (what
/// is sent to it meanwhile is dropped and sent again after the resume); if a new connection took
/// the session over, they move to it; otherwise the other end of each gets a RESET.
pub(crate) fn peer_gone<A: Adapter>(server: &P2pServer<A>, peer: &Arc<Peer<A>>) {
    match peer.session() {
        Session::Away => {}
        Session::TakenOver(next) => move_routes(server, peer, &next),
        Session::Here | Session::Ended => session_ended(server, peer),
    }
}

/// The session of `old` continues on the connection `next`: its routes now end there, and each
/// sender says where its DATA starts again (see [`RouteState::resumed`]).
fn move_routes<A: Adapter>(server: &P2pServer<A>, old: &Arc<Peer<A>>, next: &Arc<Peer<A>>) {
    let ids: Vec<u64> = old.routes.lock().unwrap().drain().collect();
    let routes = &server.inner.streams;
    for id in ids {
        let Some(route) = routes.get(id) else {
            continue;
        };
        let mut st = route.lock();
        let Some(side) = route.side_of(old) else {
            continue;
        };
        {
            let mut ends = route.ends.write().unwrap_or_else(|p| p.into_inner());
            ends[match side {
                Side::A => 0,
                Side::B => 1,
            }] = End::Client(next.clone());
        }
        next.routes.lock().unwrap().insert(id);
        st.resumed();
    }
}

/// A client's session ended (it disconnected, or its kept session was not resumed): the other
/// end of each of its routes gets a RESET.
pub(crate) fn session_ended<A: Adapter>(server: &P2pServer<A>, peer: &Arc<Peer<A>>) {
    let ids: Vec<u64> = peer.routes.lock().unwrap().drain().collect();
    let routes = &server.inner.streams;
    for id in ids {
        let Some(route) = routes.unlink(id) else {
            continue;
        };
        if !route.lock().finish() {
            continue;
        }
        let reason = format!("client '{}' disconnected", peer.id);
        if let Some(side) = route.side_of(peer) {
            route.end(side.other()).reset(id, code::PEER_GONE, &reason);
        }
    }
}

/// Registers the Stream API's relay operations.
pub(crate) fn register<A: Adapter>(ops: &mut crate::server::Operations<A>) {
    ops.add(event::MULTI_API_CREATE_STREAM, create_stream);
    ops.add_binary(super::frame::FRAME_EVENT, on_frame);
    ops.on_peer_gone(peer_gone);
}
