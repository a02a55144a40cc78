//! The relay server: a plugin on a socketioxide [`SocketIo`] that registers clients by id and relays
//! rooms, messages and replies between them.
//!
//! Every event handler here runs inline on the socket's receive path (see `Inline`) so that the
//! events of one connection are handled in the order they arrived; only work that has to wait for a
//! peer (a reply, an acceptance) is moved to a task of its own.

use crate::auth::{Action, Authenticator, Handshake, Identity, Permissions, Refusal};
use crate::error::Error;
use crate::message::{IntoArgs, Request};
use crate::protocol::{
    self, event, Arg, ExtArgs, RawArgs, ResAnswer, Response, SeedArgs, ServerError,
    TargetDisconnect, Welcome,
};
use crate::request::{Answer, NoAnswer, PendingRequests, Reply};
use serde_json::Value;
use socketioxide::adapter::{Adapter, LocalAdapter};
use socketioxide::extract::{AckSender, SocketRef, TryData};
use socketioxide::handler::{ConnectHandler, FromMessageParts, MessageHandler, Value as SioValue};
use socketioxide::operators::BroadcastOperators;
use socketioxide::socket::{DisconnectReason, Socket};
use socketioxide::{SendError, SocketError, SocketIo};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

mod budget;
mod dispatch;
mod lane;
mod limits;
mod members;
mod metrics;
mod remote;
mod replay;

pub(crate) use budget::json_size;
pub(crate) use budget::Connections as WriteCounters;
pub use budget::WriteCounter;
use budget::{arg_size, Budget, Connections};

pub(crate) use dispatch::Operations;
use lane::Lane;
pub(crate) use limits::CallerSlot;
pub(crate) use members::{encode_args, ClusterRoomEvent, ClusterSent, RoomEvent};
use metrics::SlowConsumer;
pub use metrics::METRICS_CONTENT_TYPE;
pub(crate) use metrics::{Metrics, Reason};
pub(crate) use remote::{Remote, Target};
pub(crate) use replay::{CONFIRM_AFTER, CONFIRM_BYTES, CONFIRM_EVERY};

/// What the server does when a client connects with an id that is already connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DuplicateIdPolicy {
    /// Refuse the new connection with a `SERVER_ERROR` and disconnect it (the default).
    #[default]
    Reject,
    /// Disconnect the old connection (its peers see it leave) and keep the new one.
    Replace,
}

/// Settings of a [`P2pServer`].
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Handling of a second connection under a connected client id.
    pub duplicate_ids: DuplicateIdPolicy,
    /// How long the server waits for a client to answer a request it relayed (a reply, an
    /// add-target acceptance) before it reports a timeout to the caller.
    pub reply_timeout: Duration,
    /// How many relayed requests may wait for one client's answer at once; past that the caller is
    /// told the target is busy.
    pub max_pending_per_client: usize,
    /// How many of one client's own requests (`P2P_EMIT_ACKNOWLEDGE`, `MULTI_API_ADD_TARGET`)
    /// may wait for their targets' answers at once; past that the caller's next one is refused.
    /// Default 1,024.
    pub max_pending_per_caller: usize,
    /// Longest event name a client may have relayed, in bytes. Default 256.
    pub max_event_name_len: usize,
    /// Longest room name a client may join, leave or emit to, in bytes. Default 256.
    pub max_room_name_len: usize,
    /// How many plain rooms one client may be in, and, counted apart, how many topic rooms
    /// (`service:<s>:topic:<t>`), so that services putting a client in their topic rooms cannot
    /// keep it from joining rooms itself. The relay's own rooms are not counted. Default 1,000.
    pub max_rooms_per_client: usize,
    /// Largest event a client may send, in bytes of its Socket.IO packet (the event name and
    /// JSON arguments as they came, plus binary attachments). Default 1 MiB. The Engine.IO
    /// payload, which may hold several events, is capped separately
    /// ([`RelayOptions::max_payload`](crate::RelayOptions::max_payload)).
    pub max_event_bytes: usize,
    /// How many credit-mode streams one client may be an end of at once. Default 1,000.
    pub max_streams_per_client: usize,
    /// Events one client may send per second, sustained (a token bucket refilled at this rate).
    /// Default 10,000. Stream frames (`P2P_FRAME`) and answers (`P2P_RES`) are not counted; a
    /// `P2P_BATCH` counts once.
    pub max_events_per_sec: u32,
    /// Events one client may send in a burst above [`max_events_per_sec`](Self::max_events_per_sec)
    /// (the bucket's size). Default 20,000. Past it each event is refused as busy.
    pub event_burst: u32,
    /// Refused events after which a client that keeps flooding is disconnected with a
    /// `SERVER_ERROR` saying why (the bucket may fall this far below empty). Default 10,000.
    pub flood_disconnect_after: u32,
    /// Connections per second accepted from one remote address (a token bucket refilled at this
    /// rate). Default 50. Only applies where the host passes the remote address on (the
    /// [`Relay`](crate::Relay) does); 0 turns the limit off.
    pub max_connects_per_sec: u32,
    /// Connections one remote address may open in a burst (the bucket's size). Default 200.
    pub connect_burst: u32,
    /// Bytes the relay may hold queued towards one client. An event or request that does not fit
    /// is refused and its sender told the target is busy (a client with nothing queued takes one
    /// packet of any size). Room emits and topic publications count for each member on this
    /// server like an event sent to it alone: a member whose queue is full does not get one, the
    /// others do, and the sender hears which members did not ([`Error::Overloaded`]). Notices may
    /// use twice this before the client is disconnected as a slow consumer. Stream frames, stream
    /// resets and the answers to the client's own requests (`P2P_RES`) are counted but not refused
    /// (the stream's window, the streams and the requests in flight per client bound them).
    pub max_queued_bytes: usize,
    /// How long a client's queue may stay full (more than half of
    /// [`max_queued_bytes`](Self::max_queued_bytes) pending since a send to it was refused)
    /// before the relay disconnects it as a slow consumer.
    pub slow_consumer_deadline: Duration,
    /// Who may connect: run on every connection before it is registered (see [`crate::auth`]).
    /// `None` (the default) leaves the relay open: every client id is accepted.
    pub authenticator: Option<Arc<dyn Authenticator>>,
    /// What a client may do when its identity carries no permissions of its own: every client
    /// of a relay without an authenticator, and those whose token has no `permissions` claim.
    /// The default allows everything.
    pub default_permissions: Permissions,
    /// How long the relay keeps the session of an extension client whose connection dropped
    /// (not one that disconnected itself or that the relay disconnected): a client that comes back
    /// within it with the session's resume secret takes its rooms and watchers over, and its
    /// peers are not told it left. Past it the session ends as a disconnect does, and its peers
    /// are told. Default 10 s; zero turns resuming off. Messages, requests and answers addressed to
    /// the client while it is away, and room events (room emits, topic publications) to the rooms
    /// it was in when its link dropped, are held for it, up to
    /// [`resume_hold_bytes`](Self::resume_hold_bytes), and delivered in order on its return;
    /// its credit-mode streams go on after the resume, their senders sending again what it
    /// missed (see `PROTOCOL.md`, "Session resume").
    pub resume_grace: Duration,
    /// Bytes the relay may hold for one client whose session waits for its return (see
    /// [`resume_grace`](Self::resume_grace)), counted as for
    /// [`max_queued_bytes`](Self::max_queued_bytes). Something addressed to the client that does
    /// not fit ends the session at once: its peers are told it left, requests held for it fail
    /// with `PEER_GONE`, and the clients whose messages or room emits were held for it get a
    /// `SERVER_ERROR` saying how many were not delivered. Default 4 MiB.
    pub resume_hold_bytes: usize,
    /// Bytes of what the relay sent to one extension client and the client has not confirmed
    /// yet (`P2P_RECEIVED`), kept to send again if its link drops and it resumes its session
    /// (see `PROTOCOL.md`, "Session resume"), counted as for
    /// [`max_queued_bytes`](Self::max_queued_bytes); stream frames are not kept. An event or
    /// request that does not fit is refused and its sender told the target is busy, as for the
    /// byte budget (a client that confirms nothing is a slow consumer); answers and notices are
    /// not refused but push the oldest unconfirmed events out, and a client that resumes without
    /// having received those starts a new session. Default 4 MiB.
    pub resume_replay_bytes: usize,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            duplicate_ids: DuplicateIdPolicy::Reject,
            reply_timeout: Duration::from_secs(30),
            max_pending_per_client: 65_536,
            max_pending_per_caller: 1_024,
            max_event_name_len: 256,
            max_room_name_len: 256,
            max_rooms_per_client: 1_000,
            max_event_bytes: 1 << 20,
            max_streams_per_client: 1_000,
            max_events_per_sec: 10_000,
            event_burst: 20_000,
            flood_disconnect_after: 10_000,
            max_connects_per_sec: 50,
            connect_burst: 200,
            max_queued_bytes: 4 << 20,
            slow_consumer_deadline: Duration::from_secs(10),
            authenticator: None,
            default_permissions: Permissions::default(),
            resume_grace: Duration::from_secs(10),
            resume_hold_bytes: 4 << 20,
            resume_replay_bytes: 4 << 20,
        }
    }
}

impl ServerOptions {
    /// The same options with `authenticator` deciding who may connect.
    pub fn authenticate_with(mut self, authenticator: impl Authenticator) -> ServerOptions {
        self.authenticator = Some(Arc::new(authenticator));
        self
    }
}

/// A connected client as the server sees it.
pub(crate) struct Peer<A: Adapter = LocalAdapter> {
    pub(crate) id: Arc<str>,
    pub(crate) socket: SocketRef<A>,
    /// Speaks the protocol extensions (`P2P_REQ`/`P2P_RES`, batches).
    pub(crate) ext: bool,
    /// What this client may do; `None`: everything.
    permissions: Option<Arc<Permissions>>,
    /// Its id was established by the relay's authenticator.
    authenticated: bool,
    /// Ids of clients to tell when this one disconnects.
    watchers: Mutex<HashSet<Arc<str>>>,
    /// Requests this server relayed to this client, waiting for its `P2P_RES`; a connection that
    /// resumes the session shares its table, so that requests held for it are answered through
    /// the new connection.
    pending: Arc<PendingRequests<ResAnswer>>,
    /// Acknowledgements this server waits for from this client (seed-era clients answer with
    /// Socket.IO acknowledgements, not `P2P_RES`), bounded like `pending`. Nothing is ever
    /// resolved here: the table ends every wait at once when the client disconnects
    /// (socketioxide leaves a closed socket's acknowledgements waiting until their timeout).
    seed_waiting: PendingRequests<()>,
    /// Stream routes this client is an end of.
    pub(crate) routes: Mutex<HashSet<u64>>,
    /// This client's room operations, in the order it asked for them.
    lane: Lane,
    /// This client's own requests waiting for their targets' answers (bounded by
    /// [`ServerOptions::max_pending_per_caller`]).
    pub(crate) asking: Arc<AtomicUsize>,
    /// The events this client may still send (see [`ServerOptions::max_events_per_sec`]).
    rate: Mutex<limits::TokenBucket>,
    /// The bytes queued towards this client.
    budget: Arc<Budget>,
    conns: Connections,
    slow_deadline: Duration,
    /// The relay's metrics.
    pub(crate) metrics: Arc<Metrics>,
    slow: SlowConsumer,
    /// Set once the relay has told this client it is disconnected for flooding: the disconnect
    /// follows when what is queued for it has been written (see [`Peer::close_after_notice`]).
    closing: AtomicBool,
    /// Events this client sent after the notice of its disconnect.
    sent_after_notice: Arc<AtomicUsize>,
    /// The secret with which a new connection may take this client's session over (extension
    /// clients of a relay that resumes sessions).
    resume: Option<String>,
    /// Set once a new connection took this session over: this one's end tells nobody.
    taken_over: AtomicBool,
    /// Where what is addressed to this client goes (see [`Hold`]).
    hold: Mutex<Hold<A>>,
    /// [`ServerOptions::resume_hold_bytes`].
    hold_limit: usize,
    /// The counts of its session and what was sent to it unconfirmed, for a client that counts
    /// and confirms (see [`replay`]); set once its connection is registered.
    session: std::sync::OnceLock<Arc<replay::Session>>,
    /// The latest count this connection confirmed (a count never goes back).
    confirmed_here: std::sync::atomic::AtomicU64,
}

/// Where a client's session stands, for what outlives its connection (stream routes).
pub(crate) enum Session<A: Adapter> {
    /// Its connection is up (or gone for good without a session kept for it).
    Here,
    /// Its connection dropped and the session waits for its return.
    Away,
    /// Another connection took the session over.
    TakenOver(Arc<Peer<A>>),
    /// The session ended.
    Ended,
}

/// Where what is addressed to a client goes.
enum Hold<A: Adapter> {
    /// To its connection.
    Open,
    /// Into a buffer, in order: its session is parked, or what was held for it is about to be
    /// delivered to the connection that resumed it.
    Holding(Held),
    /// To the connection that took the session over, behind what was held.
    Forward(std::sync::Weak<Peer<A>>),
    /// Nowhere: the session ended; the sender hears the client is gone.
    Ended,
}

/// What is held for a client while its session is parked.
#[derive(Default)]
struct Held {
    items: VecDeque<HeldItem>,
    bytes: usize,
    /// Set once something did not fit: the session is ending, nothing more is taken.
    full: bool,
    /// Ends the session when something does not fit; taken when called.
    on_full: Option<Box<dyn FnOnce() + Send>>,
    /// The emitters of room events refused once the session was ending, one entry per event:
    /// they are told with the senders of the held messages (see [`P2pServer::end_held`]).
    refused: Vec<Arc<str>>,
}

/// One event held for a client.
struct HeldItem {
    payload: Payload,
    /// Its size as the byte budget counts it.
    bytes: usize,
    /// The client that sent it and how many messages it carries, for a fire-and-forget message
    /// whose sender is told if it is never delivered.
    from: Option<(Arc<str>, usize)>,
}

/// What an event held for a client is made of.
#[derive(Clone)]
enum Payload {
    /// An event of its own: `event(...args)`.
    Args { event: String, args: Vec<Arg> },
    /// The event a room member gets, its arguments encoded once for all members.
    Room(members::RoomEvent),
}

impl Payload {
    fn args(event: &str, args: Vec<Arg>) -> Payload {
        Payload::Args {
            event: event.to_string(),
            args,
        }
    }

    fn out(&self) -> Out<'_> {
        match self {
            Payload::Args { event, args } => Out::Args(event, args),
            Payload::Room(e) => Out::Room(e),
        }
    }
}

/// An event on its way to a client's connection (see [`Peer::queue_out`]).
enum Out<'a> {
    Json(&'a str, &'a [Value]),
    Args(&'a str, &'a [Arg]),
    Room(&'a members::RoomEvent),
    Frame(&'a bytes::Bytes),
}

impl Out<'_> {
    fn emit<A: Adapter>(&self, socket: &SocketRef<A>, ext: bool) -> Result<(), SendError> {
        match *self {
            Out::Json(event, args) => socket.emit(event, &protocol::ArgsRef(args)),
            Out::Args(event, args) if ext => socket.emit(event, &ExtArgs(args)),
            Out::Args(event, args) => socket.emit(event, &SeedArgs(args)),
            Out::Room(e) => socket.emit(e.name(), &e.args()),
            Out::Frame(frame) => socket.emit(crate::stream::frame::FRAME_EVENT, frame),
        }
    }

    /// What is kept of it until the client confirms it; `None` for a stream frame.
    fn keep(&self) -> Option<Payload> {
        match *self {
            Out::Json(event, args) => Some(Payload::args(event, json_args(args))),
            Out::Args(event, args) => Some(Payload::args(event, args.to_vec())),
            Out::Room(e) => Some(Payload::Room(e.clone())),
            Out::Frame(_) => None,
        }
    }
}

/// The session of an extension client whose connection dropped, kept for
/// [`ServerOptions::resume_grace`].
struct Parked<A: Adapter> {
    peer: Arc<Peer<A>>,
    /// The rooms its socket was in.
    rooms: Vec<String>,
    /// Peers it watched that left while it was away: it is told on its return.
    missed: Vec<Arc<str>>,
}

/// A session whose connection no longer stands for it in its rooms: parked, or being taken over
/// by a new connection that has not joined them yet. Room events reach it through this (see
/// [`P2pServer::room_members`]).
struct Away<A: Adapter> {
    peer: Arc<Peer<A>>,
    /// The rooms it was in when its link dropped, less those destroyed since.
    rooms: HashSet<String>,
}

/// Keeps a resumed session's old peer among the [`Away`] ones until dropped: once the new
/// connection is in the session's rooms.
struct AwayUntilJoined<'a, A: Adapter> {
    inner: &'a Inner<A>,
    old: Arc<Peer<A>>,
}

impl<A: Adapter> Drop for AwayUntilJoined<'_, A> {
    fn drop(&mut self) {
        self.inner.leave_away(&self.old);
    }
}

/// What a connection that presented a session's resume secret takes over.
struct Resumed<A: Adapter> {
    old: Arc<Peer<A>>,
    rooms: Vec<String>,
    missed: Vec<Arc<str>>,
}

/// A new resume secret: 32 random bytes, in hex.
fn resume_secret() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `presented` is `secret`, in a time that does not depend on where they differ.
fn secret_matches(secret: &str, presented: &str) -> bool {
    secret.len() == presented.len()
        && secret
            .bytes()
            .zip(presented.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// The longest a client told it is disconnected is kept, so that the notice reaches it.
const NOTICE_DRAIN: Duration = Duration::from_secs(5);

/// A registration in a seed-era client's table of acknowledgements waited for, removed when
/// dropped (however the wait ended).
struct SeedWait<'a> {
    table: &'a PendingRequests<()>,
    id: u64,
}

impl Drop for SeedWait<'_> {
    fn drop(&mut self) {
        self.table.cancel(self.id);
    }
}

impl<A: Adapter> Peer<A> {
    /// Checks one operation against this client's permissions: the one place every operation
    /// a client asks for is authorized. A denial is [`Error::PermissionDenied`], to answer the
    /// caller with; the operation must then not reach its target.
    pub(crate) fn check(&self, action: Action<'_>) -> Result<(), Error> {
        match &self.permissions {
            None => Ok(()),
            Some(p) => p.check(&self.id, action).inspect_err(|_| {
                self.metrics.refused(Reason::Permission);
            }),
        }
    }

    /// Queues a packet of at least `bytes` bytes with `send`, if it fits in the budget (`slack`
    /// times [`ServerOptions::max_queued_bytes`]); [`Error::Busy`] when it does not.
    fn queue(
        &self,
        bytes: usize,
        slack: u64,
        send: impl FnOnce() -> Result<(), SendError>,
    ) -> Result<(), Error> {
        // An event, request or frame is refused back to its sender; an answer or a notice (slack
        // 2) that does not fit disconnects this client instead, counted there.
        let refused = |e: Error| {
            if slack != 2 && matches!(e, Error::Busy(_)) {
                self.metrics.refused(Reason::Busy);
            }
            e
        };
        if let Err(full) = self.budget.admit(&self.socket, &self.conns, bytes, slack) {
            if full.watch {
                self.watch_slow();
            }
            return Err(refused(Error::Busy(self.id.to_string())));
        }
        send().map_err(|e| {
            self.budget.give_back(bytes);
            refused(send_error(&self.id, e))
        })
    }

    /// The one way an event reaches this client's connection: for a client that confirms what
    /// it receives, the event is counted and kept until confirmed (see [`replay`]), and written,
    /// under its session's lock, so that the count's order is the order on the wire. An event
    /// that may be refused (`slack` 1) and does not fit in
    /// [`ServerOptions::resume_replay_bytes`] is refused as busy; `from` is its sender, told if
    /// the session ends with it unconfirmed.
    fn queue_out(
        &self,
        out: Out<'_>,
        bytes: usize,
        slack: u64,
        from: Option<(&Arc<str>, usize)>,
    ) -> Result<(), Error> {
        let Some(session) = self.session.get() else {
            return self.queue(bytes, slack, || out.emit(&self.socket, self.ext));
        };
        let mut kept = session.out.lock().unwrap();
        if slack == 1 {
            if let Err(full) = kept.fits(bytes) {
                self.metrics.refused(Reason::Busy);
                if full.is_zero() {
                    // Full from now on: a client that confirms nothing more within the
                    // slow-consumer deadline is disconnected.
                    self.watch_unconfirmed(session.clone());
                }
                return Err(Error::Busy(self.id.to_string()));
            }
        }
        self.queue(bytes, slack, || out.emit(&self.socket, self.ext))?;
        kept.push(out.keep(), bytes, from);
        Ok(())
    }

    /// Disconnects this client as a slow consumer if what it was sent stays unconfirmed and
    /// over [`ServerOptions::resume_replay_bytes`] for the slow-consumer deadline.
    fn watch_unconfirmed(&self, session: Arc<replay::Session>) {
        let socket = self.socket.clone();
        let id = self.id.clone();
        let deadline = self.slow_deadline;
        let slow = self.slow.clone();
        tokio::spawn(async move {
            tokio::time::sleep(deadline).await;
            let stayed = session.out.lock().unwrap().full_for(deadline);
            if stayed && socket.connected() {
                slow.count();
                let reason = format!(
                    "Error: disconnected: slow consumer: client '{id}' confirmed too little of \
                     what it received for {deadline:?}"
                );
                disconnect_with(&socket, &id, &reason);
            }
        });
    }

    /// One more event received from this client, `v`, for its session's count; false when this
    /// connection no longer stands for its session (a new one took it over): the event is then
    /// not handled, and the client sends it again on the new connection.
    pub(crate) fn count_received(&self, v: &SioValue) -> bool {
        match self.session.get() {
            Some(session) => session.count_received(sio_value_size(v), &self.taken_over),
            None => true,
        }
    }

    /// `P2P_RECEIVED(count)`: the client received `count` events of its session. A count that
    /// goes back or past what was sent is refused with a `SERVER_ERROR`.
    pub(crate) fn confirmed(&self, count: u64) {
        let Some(session) = self.session.get() else {
            return self.report(&Error::BadRequest(format!(
                "{}: the connection did not say it counts what it receives (query '{}')",
                event::P2P_RECEIVED,
                protocol::QUERY_RECEIVED
            )));
        };
        let before = self.confirmed_here.fetch_max(count, Ordering::AcqRel);
        if count < before {
            return self.report(&Error::BadRequest(format!(
                "{} counts {count} event(s), fewer than the {before} it counted before",
                event::P2P_RECEIVED
            )));
        }
        let confirmed = session.out.lock().unwrap().confirm(count);
        if let Err(why) = confirmed {
            self.report(&Error::BadRequest(why));
        }
    }

    /// Sends again, in order, what this client's session sent and the client had not received
    /// before its link dropped (its `count`), right after the welcome of the connection that
    /// resumed it. Returns whether it could.
    fn send_again(&self, count: u64) -> bool {
        let Some(session) = self.session.get() else {
            return true;
        };
        let mut kept = session.out.lock().unwrap();
        if let Err(why) = kept.check_resume(count) {
            drop(kept);
            self.lost(
                "what it had not received",
                &Error::Protocol(why.to_string()),
            );
            return false;
        }
        kept.resume_from(count);
        let mut failed = None;
        for (payload, bytes) in kept.again() {
            let sent = self.queue(bytes, u64::MAX, || {
                payload.out().emit(&self.socket, self.ext)
            });
            if let Err(e) = sent {
                failed = Some(e);
                break;
            }
        }
        drop(kept);
        match failed {
            Some(e) => self.control_sent(Err(e), "what it had not received"),
            None => true,
        }
    }

    /// Watches this client's full queue; disconnects it if the queue stays full past the
    /// slow-consumer deadline.
    fn watch_slow(&self) {
        let budget = self.budget.clone();
        let socket = self.socket.clone();
        let id = self.id.clone();
        let deadline = self.slow_deadline;
        let slow = self.slow.clone();
        tokio::spawn(async move {
            if budget.stays_full(deadline).await && socket.connected() {
                slow.count();
                let reason = format!(
                    "Error: disconnected: slow consumer: client '{id}' read nothing of its queue \
                     for {deadline:?}"
                );
                disconnect_with(&socket, &id, &reason);
            }
        });
    }

    /// Disconnects this client once what is queued for it, the notice saying why among it, has
    /// been written and the client has stopped sending for a moment, or after [`NOTICE_DRAIN`]
    /// at most. Disconnecting at once would lose the notice: socketioxide closes the whole
    /// connection when a packet arrives for a client it has just disconnected, and a connection
    /// closed while the other end still sends is reset, throwing away what that end had not read
    /// yet.
    pub(crate) fn close_after_notice(&self) {
        let (budget, socket) = (self.budget.clone(), self.socket.clone());
        let sent_after = self.sent_after_notice.clone();
        tokio::spawn(async move {
            let until = tokio::time::Instant::now() + NOTICE_DRAIN;
            let mut seen = usize::MAX;
            while tokio::time::Instant::now() < until {
                let sent = sent_after.load(Ordering::Acquire);
                if sent == seen && budget.queued() == 0 {
                    break;
                }
                seen = sent;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let _ = socket.disconnect();
        });
    }

    /// Disconnects this client because something it must see could not be queued for it.
    fn lost(&self, what: &str, e: &Error) {
        let reason = format!(
            "Error: disconnected: slow consumer: client '{}' could not be sent {what}: {e}",
            self.id
        );
        let socket = self.socket.clone();
        let id = self.id.clone();
        let slow = self.slow.clone();
        // Not inline: the caller may hold locks that the disconnect handler takes.
        tokio::spawn(async move {
            if socket.connected() {
                slow.count();
            }
            disconnect_with(&socket, &id, &reason)
        });
    }

    /// Emits `event(...args)` to this client; arguments a Socket.IO client would read as a binary
    /// placeholder are refused.
    pub(crate) fn emit(&self, event: &str, args: &[Value]) -> Result<(), Error> {
        protocol::check_no_placeholder(args)?;
        let size = event.len() + 4 + args.iter().map(|a| json_size(a) + 1).sum::<usize>();
        let now = || self.queue_out(Out::Json(event, args), size, 1, None);
        let payload = || Payload::args(event, json_args(args));
        self.send_or_hold(size, 1, None, false, payload, now)
    }

    /// Emits an answer or a notice: within twice the budget, and a client that cannot take it is
    /// disconnected as a slow consumer. Returns whether it was queued (or held for the client's
    /// return).
    fn emit_control(&self, event: &str, args: &[Value], what: &str) -> bool {
        let size = event.len() + 4 + args.iter().map(|a| json_size(a) + 1).sum::<usize>();
        let now = || self.queue_out(Out::Json(event, args), size, 2, None);
        let payload = || Payload::args(event, json_args(args));
        let sent = self.send_or_hold(size, 2, None, false, payload, now);
        self.control_sent(sent, what)
    }

    /// Emits `P2P_RES(...args)`, the answer to one of this client's own requests: never refused
    /// for the budget, since the client has at most
    /// [`ServerOptions::max_pending_per_client`] requests in flight, and the stream frames queued
    /// ahead of it (bounded by their windows, not by the budget) must not make it look like a
    /// slow consumer.
    fn emit_answer(&self, args: &[Value]) -> bool {
        let event = event::P2P_RES;
        let size = event.len() + 4 + args.iter().map(|a| json_size(a) + 1).sum::<usize>();
        let now = || self.queue_out(Out::Json(event, args), size, u64::MAX, None);
        let payload = || Payload::args(event, json_args(args));
        let sent = self.send_or_hold(size, u64::MAX, None, false, payload, now);
        self.control_sent(sent, "an answer")
    }

    /// [`emit_control`](Self::emit_control) straight to the connection, ahead of anything held
    /// (the welcome of a resumed session, and what comes with it).
    fn emit_control_now(&self, event: &str, args: &[Value], what: &str) -> bool {
        let size = event.len() + 4 + args.iter().map(|a| json_size(a) + 1).sum::<usize>();
        let sent = self.queue_out(Out::Json(event, args), size, 2, None);
        self.control_sent(sent, what)
    }

    /// Sends the welcome, which is not counted among the session's events.
    fn send_welcome(&self, welcome: &Welcome) -> bool {
        let args = welcome.to_values();
        let size =
            event::P2P_WELCOME.len() + 4 + args.iter().map(|a| json_size(a) + 1).sum::<usize>();
        let sent = self.queue(size, 2, || {
            self.socket
                .emit(event::P2P_WELCOME, &protocol::ArgsRef(&args))
        });
        self.control_sent(sent, "its welcome")
    }

    /// Queues an event for this client with `now`; while its session waits for its return,
    /// holds it instead (`payload` makes it), or forwards it to the connection that took the
    /// session over. Something that does not fit in [`ServerOptions::resume_hold_bytes`] ends the
    /// parked session and is refused as gone; with `counted`, its sender (`from`) is also told
    /// with those of the held messages (a room event, whose emitter is not refused: the other
    /// members got it).
    fn send_or_hold(
        &self,
        size: usize,
        slack: u64,
        from: Option<(&Arc<str>, usize)>,
        counted: bool,
        payload: impl FnOnce() -> Payload,
        now: impl FnOnce() -> Result<(), Error>,
    ) -> Result<(), Error> {
        let gone = || Error::PeerGone(self.id.to_string());
        let mut hold = self.hold.lock().unwrap();
        let held = match &mut *hold {
            Hold::Open => {
                drop(hold);
                return now();
            }
            Hold::Ended => return Err(gone()),
            Hold::Forward(next) => {
                let next = next.upgrade();
                drop(hold);
                let next = next.ok_or_else(gone)?;
                return next.send_payload(payload(), slack, from, counted);
            }
            Hold::Holding(held) => held,
        };
        // Only a parked session has a budget: a resumed one holds for the moment its connection
        // is being set up.
        let over = held.bytes.saturating_add(size) > self.hold_limit && held.on_full.is_some();
        if held.full || over {
            held.full = true;
            if let (true, Some((sender, _))) = (counted, from) {
                held.refused.push(sender.clone());
            }
            let end = held.on_full.take();
            drop(hold);
            if let Some(end) = end {
                end();
            }
            return Err(gone());
        }
        held.bytes += size;
        held.items.push_back(HeldItem {
            payload: payload(),
            bytes: size,
            from: from.map(|(sender, n)| (sender.clone(), n)),
        });
        Ok(())
    }

    /// Holds what is addressed to this client from now on (its connection has dropped; its
    /// session may be kept, see [`P2pServer::park`]).
    fn start_holding(&self) {
        let mut hold = self.hold.lock().unwrap();
        if matches!(*hold, Hold::Open) {
            *hold = Hold::Holding(Held::default());
        }
    }

    /// Takes over what was held for the session of `old`, which this connection resumes: it is
    /// delivered, in order, ahead of anything sent to this connection since, by
    /// [`release_held`](Self::release_held); what is still sent to `old` comes here.
    fn take_over_held(self: &Arc<Self>, old: &Peer<A>) {
        let mut old_hold = old.hold.lock().unwrap();
        let taken = std::mem::replace(&mut *old_hold, Hold::Forward(Arc::downgrade(self)));
        let Hold::Holding(taken) = taken else { return };
        let mut hold = self.hold.lock().unwrap();
        match &mut *hold {
            Hold::Holding(held) => {
                held.bytes += taken.bytes;
                for item in taken.items.into_iter().rev() {
                    held.items.push_front(item);
                }
                held.refused.extend(taken.refused);
            }
            other => {
                *other = Hold::Holding(Held {
                    items: taken.items,
                    bytes: taken.bytes,
                    refused: taken.refused,
                    ..Held::default()
                })
            }
        }
    }

    /// Delivers, in order, what is held for this client, once its connection is set up; then
    /// what is sent to it goes straight to the connection. What cannot be queued stays held and
    /// the client is disconnected as a slow consumer (the end of its connection ends what is
    /// held, as [`P2pServer::end_held`] says).
    fn release_held(&self) {
        let mut hold = self.hold.lock().unwrap();
        let Hold::Holding(held) = &mut *hold else {
            return;
        };
        while let Some(item) = held.items.pop_front() {
            // Counted within the hold's budget already: not refused for the queue's.
            let from = item.from.as_ref().map(|(s, n)| (s, *n));
            let sent = self.queue_out(item.payload.out(), item.bytes, u64::MAX, from);
            if let Err(e) = sent {
                held.items.push_front(item);
                drop(hold);
                self.control_sent(Err(e), "what was held for it while it was away");
                return;
            }
            held.bytes = held.bytes.saturating_sub(item.bytes);
        }
        *hold = Hold::Open;
    }

    /// The outcome of queueing something this client must see (`what`): a client that could not
    /// take it is disconnected as a slow consumer. Returns whether it was queued.
    fn control_sent(&self, sent: Result<(), Error>, what: &str) -> bool {
        match sent {
            Ok(()) => true,
            Err(Error::PeerGone(_)) => false,
            Err(e) => {
                self.lost(what, &e);
                false
            }
        }
    }

    /// Emits `event(...args)` to this client, binary data as binary for a seed-era client and as
    /// arrays of byte values for an extension client.
    pub(crate) fn emit_args(&self, event: &str, args: &[Arg]) -> Result<(), Error> {
        self.emit_args_within(event, args, 1)
    }

    /// [`emit_args`](Self::emit_args) for `n` fire-and-forget messages from client `from`, who
    /// is told if they are held for this client and its session ends before they are delivered.
    pub(crate) fn emit_args_from(
        &self,
        from: &Arc<str>,
        n: usize,
        event: &str,
        args: &[Arg],
    ) -> Result<(), Error> {
        self.send_args(event, args, 1, Some((from, n)))
    }

    /// [`emit_args`](Self::emit_args) within `slack` times the budget.
    fn emit_args_within(&self, event: &str, args: &[Arg], slack: u64) -> Result<(), Error> {
        self.send_args(event, args, slack, None)
    }

    fn send_args(
        &self,
        event: &str,
        args: &[Arg],
        slack: u64,
        from: Option<(&Arc<str>, usize)>,
    ) -> Result<(), Error> {
        let size = event.len()
            + 4
            + args
                .iter()
                .map(|a| arg_size(a, self.ext) + 1)
                .sum::<usize>();
        let now = || self.queue_out(Out::Args(event, args), size, slack, from);
        let payload = || Payload::args(event, args.to_vec());
        self.send_or_hold(size, slack, from, false, payload, now)
    }

    /// Sends what was addressed to an earlier connection of this client's session.
    fn send_payload(
        &self,
        payload: Payload,
        slack: u64,
        from: Option<(&Arc<str>, usize)>,
        counted: bool,
    ) -> Result<(), Error> {
        match payload {
            Payload::Args { event, args } => self.send_args(&event, &args, slack, from),
            Payload::Room(e) => self.send_room_form(&e, slack, from, counted),
        }
    }

    /// Where this client's session stands (see [`Session`]).
    pub(crate) fn session(&self) -> Session<A> {
        match &*self.hold.lock().unwrap() {
            Hold::Holding(held) if held.full => Session::Ended,
            Hold::Holding(held) if held.on_full.is_some() => Session::Away,
            Hold::Open | Hold::Holding(_) => Session::Here,
            Hold::Forward(next) => next.upgrade().map_or(Session::Ended, Session::TakenOver),
            Hold::Ended => Session::Ended,
        }
    }

    /// Whether a new connection may take this client's session over when its link drops.
    pub(crate) fn resumable(&self) -> bool {
        self.resume.is_some()
    }

    /// Sends one binary stream frame (`P2P_FRAME` with one attachment) to this client.
    ///
    /// Stream frames are counted in the byte budget but never refused for it: what a stream may
    /// have in flight is already bounded by the receiver's window (the relay checks every frame
    /// against the route's credit), and refusing a frame would reset a stream that kept every
    /// rule. A receiver that stops reading altogether still meets the slow-consumer deadline
    /// through the rest of its traffic.
    pub(crate) fn send_frame(&self, frame: &bytes::Bytes) -> Result<(), Error> {
        self.queue_out(Out::Frame(frame), frame.len() + 20, u64::MAX, None)
    }

    /// Sends a stream frame the client must see (a reset): a client that cannot take it is
    /// disconnected as a slow consumer.
    /// Never refused for the budget, as for frames: a client has at most
    /// [`ServerOptions::max_streams_per_client`] streams to reset, and the stream frames ahead of
    /// it (bounded by their windows) must not make it look like a slow consumer.
    pub(crate) fn send_control_frame(&self, frame: &bytes::Bytes) {
        let sent = self.queue_out(Out::Frame(frame), frame.len() + 20, u64::MAX, None);
        self.control_sent(sent, "a stream reset");
    }

    /// The bytes queued towards this client, as far as the relay's account knows.
    pub(crate) fn queued_bytes(&self) -> u64 {
        self.budget.queued()
    }

    /// Sends `event(...args)` and waits for the client's answer: a Socket.IO acknowledgement for a
    /// seed client, a `P2P_RES` for an extension client. Arguments a Socket.IO client would read
    /// as a binary placeholder are refused.
    pub(crate) async fn request(
        &self,
        event: &str,
        args: &[Value],
        timeout: Duration,
        max_pending: usize,
    ) -> Result<Vec<Value>, Error> {
        protocol::check_no_placeholder(args)?;
        let args: Vec<Arg> = args.iter().cloned().map(Arg::Json).collect();
        let answer = self.request_args(event, args, timeout, max_pending).await?;
        Ok(answer.into_iter().map(Arg::into_value).collect())
    }

    /// [`request`](Self::request) with arguments that may hold binary data; the answer's binary
    /// data (a seed client may acknowledge with some) is kept as it came.
    pub(crate) async fn request_args(
        &self,
        event: &str,
        args: Vec<Arg>,
        timeout: Duration,
        max_pending: usize,
    ) -> Result<Vec<Arg>, Error> {
        let timed_out = || Error::Timeout {
            peer: Some(self.id.to_string()),
            event: event.to_string(),
            after: timeout,
        };
        if self.ext {
            if self.pending.len() >= max_pending {
                self.metrics.refused(Reason::Busy);
                return Err(Error::Busy(self.id.to_string()));
            }
            let Some(waiting) = self.pending.register() else {
                self.metrics.refused(Reason::Busy);
                return Err(Error::Busy(self.id.to_string()));
            };
            let mut full = Vec::with_capacity(args.len() + 2);
            full.push(Arg::Json(Value::from(waiting.id)));
            full.push(Arg::from(event));
            full.extend(args);
            if let Err(e) = self.emit_args(event::P2P_REQ, &full) {
                self.pending.cancel(waiting.id);
                return Err(e);
            }
            match self.pending.wait(waiting, timeout).await {
                Ok(answer) => answer
                    .into_result(&self.id)
                    .map(|v| v.into_iter().map(Arg::Json).collect()),
                Err(NoAnswer::Abandoned) => Err(Error::PeerGone(self.id.to_string())),
                Err(NoAnswer::TimedOut) => Err(timed_out()),
            }
        } else {
            let waiting = match self.seed_waiting.len() < max_pending {
                true => self.seed_waiting.register(),
                false => None,
            };
            let Some(waiting) = waiting else {
                self.metrics.refused(Reason::Busy);
                return Err(Error::Busy(self.id.to_string()));
            };
            let _registered = SeedWait {
                table: &self.seed_waiting,
                id: waiting.id,
            };
            // Registered first, so that a disconnect from now on ends the wait below; one that
            // came before shows here.
            if !self.socket.connected() {
                return Err(Error::PeerGone(self.id.to_string()));
            }
            let size = event.len() + 4 + args.iter().map(|a| arg_size(a, false) + 1).sum::<usize>();
            let mut stream = None;
            self.queue(size, 1, || {
                stream = Some(
                    self.socket
                        .timeout(timeout)
                        .emit_with_ack::<_, RawArgs>(event, &SeedArgs(&args))?,
                );
                Ok(())
            })?;
            let Some(stream) = stream else {
                return Err(Error::PeerGone(self.id.to_string()));
            };
            let answer = tokio::select! {
                answer = stream => answer,
                // Only a disconnect or the timeout ends this wait: nothing resolves it.
                gone = self.seed_waiting.wait(waiting, timeout) => {
                    return Err(match gone {
                        Err(NoAnswer::TimedOut) => timed_out(),
                        Ok(()) | Err(NoAnswer::Abandoned) => Error::PeerGone(self.id.to_string()),
                    });
                }
            };
            match answer {
                Ok(RawArgs(v)) => Ok(v),
                Err(socketioxide::AckError::Timeout) => Err(timed_out()),
                Err(socketioxide::AckError::Socket(_)) => Err(Error::PeerGone(self.id.to_string())),
                Err(socketioxide::AckError::Decode(e)) => {
                    // The answer is refused: its sender is told, the caller hears why.
                    let why = protocol::args_error(&e);
                    self.report(&Error::BadRequest(format!(
                        "the answer to '{event}' was not relayed: {why}"
                    )));
                    Err(Error::Protocol(format!(
                        "bad answer from '{}' to '{event}': {why}",
                        self.id
                    )))
                }
            }
        }
    }

    /// Hands a `P2P_RES` to the request waiting for it; answers nobody waits for are dropped.
    fn resolve(&self, res: Response) -> bool {
        self.pending.resolve(res.id, res.body)
    }

    pub(crate) fn watch(&self, other: &Arc<str>) {
        let mut w = self.watchers.lock().unwrap();
        if !w.contains(other) {
            w.insert(other.clone());
        }
    }

    /// Sends `SERVER_ERROR(message)`.
    pub(crate) fn server_error(&self, message: &str) {
        self.send_server_error(ServerError {
            message: message.to_string(),
            error: None,
        });
    }

    /// Reports an error with `SERVER_ERROR`: the seed's text, and for an extension client the
    /// error's wire form too, so that it needs no text to tell what failed.
    pub(crate) fn report(&self, e: &Error) {
        self.send_server_error(ServerError {
            message: seed_text(e),
            error: self.ext.then(|| e.to_wire()),
        });
    }

    /// Runs a room operation of this client after its earlier ones (see [`Lane`]), then answers
    /// `r` with its outcome.
    pub(crate) fn room_op<F>(&self, what: &str, op: F, r: OpReply)
    where
        F: std::future::Future<Output = Result<(), Error>> + Send + 'static,
    {
        self.lane.run(what, op, move |result| {
            r.respond(result.map(|()| vec![]).map_err(OpError::from))
        });
    }

    fn send_server_error(&self, e: ServerError) {
        tracing::debug!(client = %self.id, "SERVER_ERROR: {}", e.message);
        self.emit_control(event::SERVER_ERROR, &e.to_values(), "an error notice");
    }

    /// Sends a seed client's Socket.IO acknowledgement; a client that cannot take it is
    /// disconnected as a slow consumer. Returns whether it was queued.
    fn acknowledge(&self, ack: AckSender<A>, args: &[Value]) -> bool {
        // `43<id>[...]` in a WebSocket frame: at least 5 bytes around the arguments.
        let size = 6 + args.iter().map(|a| json_size(a) + 1).sum::<usize>();
        let sent = self.queue(size, 2, || ack.send(&protocol::ArgsRef(args)));
        self.control_sent(sent, "an acknowledgement")
    }

    /// [`acknowledge`](Self::acknowledge) with arguments whose binary data goes out as binary.
    fn acknowledge_args(&self, ack: AckSender<A>, args: &[Arg]) -> bool {
        let size = 6 + args.iter().map(|a| arg_size(a, false) + 1).sum::<usize>();
        let sent = self.queue(size, 2, || ack.send(&SeedArgs(args)));
        self.control_sent(sent, "an acknowledgement")
    }

    /// Answers this extension client's request `id` with `P2P_RES(id, {"ok": [...args]})`, the
    /// arguments' binary data written as arrays of byte values straight from the bytes.
    fn answer_args(&self, id: u64, args: Vec<Arg>) -> bool {
        let res = [
            Arg::Json(Value::from(id)),
            Arg::Object(vec![("ok".to_string(), Arg::Array(args))]),
        ];
        let sent = self.emit_args_within(event::P2P_RES, &res, u64::MAX);
        self.control_sent(sent, "an answer")
    }
}

/// The bytes of an event as it came: its packet's text and binary attachments.
fn sio_value_size(v: &SioValue) -> usize {
    match v {
        SioValue::Str(s, bins) => s.len() + bins.iter().flatten().map(|b| b.len()).sum::<usize>(),
        SioValue::Bytes(b) => b.len(),
    }
}

/// JSON arguments as [`Arg`]s, to hold.
fn json_args(args: &[Value]) -> Vec<Arg> {
    args.iter().cloned().map(Arg::Json).collect()
}

/// Checks an event name the server's own API is asked to send to a client: not reserved (see
/// [`protocol::is_reserved`]), with the same refusal a client gets.
fn check_server_event(event: &str) -> Result<(), Error> {
    if protocol::is_reserved(event) {
        return Err(Error::BadRequest(protocol::reserved_event(event)));
    }
    Ok(())
}

/// Tells a client why it is disconnected (queued past any budget: the notice is small and the
/// connection ends anyway), then disconnects it.
fn disconnect_with<A: Adapter>(socket: &SocketRef<A>, id: &str, reason: &str) {
    tracing::info!(client = %id, "{reason}");
    let notice = ServerError {
        message: reason.to_string(),
        error: None,
    };
    let _ = socket.emit(event::SERVER_ERROR, &protocol::ArgsRef(&notice.to_values()));
    let _ = socket.clone().disconnect();
}

fn send_error(id: &str, e: SendError) -> Error {
    match e {
        SendError::Socket(SocketError::InternalChannelFull) => Error::Busy(id.to_string()),
        SendError::Socket(SocketError::Closed) => Error::PeerGone(id.to_string()),
        SendError::Serialize(e) => Error::Protocol(format!("could not encode event: {e}")),
    }
}

/// The text a seed-era client (and, until answers carry codes, an extension client) reads for an
/// error: the seed's own wording where it has one.
pub(crate) fn seed_text(e: &Error) -> String {
    match e {
        Error::Remote { message, .. } => message.clone(),
        Error::UnknownTarget(id) => protocol::unknown_target(id),
        Error::Refused(reason) => format!("Error: connection refused: {reason}"),
        Error::Timeout {
            peer: Some(p),
            event,
            after,
        } => format!("Error: timed out: client '{p}' did not answer '{event}' within {after:?}"),
        other => format!("Error: {other}"),
    }
}

pub(crate) use crate::error::RELAY;

/// Whether `e` is the relay's own refusal or failure, not an error answer of a peer or service.
fn is_relays_own(e: &Error) -> bool {
    !matches!(e, Error::Remote { peer, .. } if peer != RELAY)
}

/// How the relay answers one request: through a [`Reply`], the crate's one answer-once path, whose
/// sink sends the answer the way the caller asked for it (see [`OpReply::seed`] and
/// [`OpReply::event`]).
pub(crate) struct OpReply {
    reply: Reply,
    /// The answer is a Socket.IO acknowledgement, so a failure the seed acknowledged with a text is
    /// answered with that text rather than reported.
    seed_ack: bool,
    /// Set by the sink when the answer did not reach the caller (see
    /// [`OpReply::respond_delivered`]).
    lost: Arc<std::sync::atomic::AtomicBool>,
    /// The answer's arguments with their binary data, when [`OpReply::respond_args`] answers:
    /// the sink sends these rather than the plain JSON the [`Reply`] carries.
    with_binary: Arc<Mutex<Option<Vec<Arg>>>>,
}

/// A failed request: what to say, and how the seed would have acknowledged it, if it would have.
pub(crate) struct OpError {
    pub(crate) error: Error,
    pub(crate) seed_ack: Option<Vec<Value>>,
}

impl From<Error> for OpError {
    fn from(error: Error) -> Self {
        OpError {
            error,
            seed_ack: None,
        }
    }
}

impl OpReply {
    /// The answer to a seed event `event` from `caller`: `ack(...)` when the caller asked for an
    /// acknowledgement; a failure nobody acknowledges goes out as `SERVER_ERROR`.
    pub(crate) fn seed<A: Adapter>(
        caller: &Arc<Peer<A>>,
        event: &str,
        ack: Option<AckSender<A>>,
    ) -> OpReply {
        let to = caller.clone();
        let seed_ack = ack.is_some();
        let lost = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let l = lost.clone();
        let with_binary: Arc<Mutex<Option<Vec<Arg>>>> = Arc::default();
        let raw = with_binary.clone();
        let reply = Reply::new(&*caller.id, event, RELAY, move |answer: Answer| {
            match (ack, answer) {
                (Some(ack), Ok(args)) => {
                    let sent = match raw.lock().unwrap().take() {
                        Some(raw) => to.acknowledge_args(ack, &raw),
                        None => to.acknowledge(ack, &args),
                    };
                    if !sent {
                        l.store(true, std::sync::atomic::Ordering::Release);
                    }
                }
                // Nobody asked for the answer's arguments.
                (None, Ok(_)) => l.store(true, std::sync::atomic::Ordering::Release),
                // Reported as the seed did; the relay's own refusal or failure (not an error
                // answer of a peer or service, which the seed never acknowledged) is then
                // acknowledged with its text too, so the caller's acknowledgement does not wait
                // in vain.
                (ack, Err(e)) => {
                    to.report(&e);
                    if let Some(ack) = ack.filter(|_| is_relays_own(&e)) {
                        if let Err(e) = ack.send(&seed_text(&e)) {
                            tracing::debug!(client = %to.id, "could not acknowledge: {e}");
                        }
                    }
                }
            }
        });
        OpReply {
            reply,
            seed_ack,
            lost,
            with_binary,
        }
    }

    /// The answer to an extension client's `P2P_REQ(id, event, ...)`: `P2P_RES(id, ...)`.
    pub(crate) fn event<A: Adapter>(caller: &Arc<Peer<A>>, event: &str, id: u64) -> OpReply {
        let to = caller.clone();
        let lost = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let l = lost.clone();
        let with_binary: Arc<Mutex<Option<Vec<Arg>>>> = Arc::default();
        let raw = with_binary.clone();
        let reply = Reply::new(&*caller.id, event, RELAY, move |answer: Answer| {
            let raw = raw.lock().unwrap().take();
            let sent = match (raw, answer) {
                (Some(raw), Ok(_)) => to.answer_args(id, raw),
                (_, answer) => {
                    let res = Response {
                        id,
                        body: ResAnswer::from_result(answer),
                    };
                    to.emit_answer(&res.to_values())
                }
            };
            if !sent {
                l.store(true, std::sync::atomic::Ordering::Release);
            }
        });
        OpReply {
            reply,
            seed_ack: false,
            lost,
            with_binary,
        }
    }

    /// Answers the caller, once: the result's arguments, the seed's acknowledgement of a failure
    /// where it had one, or the error.
    pub(crate) fn respond(self, result: Result<Vec<Value>, OpError>) {
        self.respond_delivered(result);
    }

    /// [`respond`](OpReply::respond) with arguments that may hold binary data (a seed client's
    /// acknowledgement, relayed): a seed caller gets the binary data as binary, an extension
    /// caller as arrays of byte values. Neither is turned into JSON values on the way, which
    /// would take some 30 bytes of the relay's memory per byte.
    pub(crate) fn respond_args(self, result: Result<Vec<Arg>, OpError>) {
        match result {
            Ok(args) => {
                *self.with_binary.lock().unwrap() = Some(args);
                self.respond(Ok(Vec::new()));
            }
            Err(e) => self.respond(Err(e)),
        }
    }

    /// [`respond`](OpReply::respond), telling whether the answer's arguments went out to the
    /// caller (false: the send failed, an answer was already sent, or the caller asked for none).
    pub(crate) fn respond_delivered(self, result: Result<Vec<Value>, OpError>) -> bool {
        let lost = self.lost.clone();
        let sent = match result {
            Ok(args) => self.reply.send_args(args),
            Err(OpError {
                seed_ack: Some(args),
                ..
            }) if self.seed_ack => self.reply.send_args(args),
            Err(e) => self.reply.fail(e.error),
        };
        sent && !lost.load(std::sync::atomic::Ordering::Acquire)
    }
}

pub(crate) struct Inner<A: Adapter> {
    pub(crate) opts: ServerOptions,
    pub(crate) streams: Arc<crate::stream::server::Routes<A>>,
    clients: RwLock<HashMap<Arc<str>, Arc<Peer<A>>>>,
    /// Sessions whose connection dropped, kept for a while by client id (see
    /// [`ServerOptions::resume_grace`]).
    parked: Mutex<HashMap<Arc<str>, Parked<A>>>,
    /// The sessions room events reach without a connection in the room, by client id (see
    /// [`Away`]).
    away: Mutex<HashMap<Arc<str>, Away<A>>>,
    pub(crate) services: crate::service::server::Services,
    /// What each event does: filled by the APIs when the server is built.
    ops: Operations<A>,
    /// The Socket.IO server, for the rooms of the root namespace.
    io: SocketIo<A>,
    /// Room operations the server's own API asks for, in order.
    lane: Lane,
    /// Connections per remote address.
    connects: limits::ConnectLimiter,
    /// The write counters of connections, for the byte budget (filled by [`Relay`](crate::Relay)).
    pub(crate) conns: Connections,
    /// What the relay relayed and refused (see [`P2pServer::metrics_text`]).
    pub(crate) metrics: Arc<Metrics>,
    /// [`ServerOptions::default_permissions`], shared by the clients that have them; `None`
    /// when they allow everything.
    default_permissions: Option<Arc<Permissions>>,
    /// The cluster this relay joined, if any (see [`P2pServer::join_cluster`]).
    cluster: std::sync::OnceLock<remote::Joined>,
}

/// The operations of every API whose events the relay handles.
fn operations<A: Adapter>() -> Operations<A> {
    let mut ops = Operations::default();
    crate::room::server::register(&mut ops);
    crate::message::server::register(&mut ops);
    crate::stream::server::register(&mut ops);
    ops
}

/// The P2P relay attached to a socketioxide [`SocketIo`].
///
/// It works over any socketioxide [`Adapter`]: the default [`LocalAdapter`] keeps rooms in this
/// process, and a remote adapter shares them between servers. Room operations go through
/// socketioxide's operators, so the adapter carries them; a client's events are handled in the
/// order they arrived whatever the adapter. A room event goes to each member on this server
/// through the member's byte budget ([`ServerOptions::max_queued_bytes`]), and to members on
/// other servers through the adapter's broadcast, which their servers queue without this budget.
///
/// Cheap to clone; every clone is the same server.
pub struct P2pServer<A: Adapter = LocalAdapter> {
    pub(crate) inner: Arc<Inner<A>>,
}

impl<A: Adapter> Clone for P2pServer<A> {
    fn clone(&self) -> Self {
        P2pServer {
            inner: self.inner.clone(),
        }
    }
}

impl P2pServer<LocalAdapter> {
    /// Attaches the relay to the root namespace of `io`, an instance with the default adapter.
    ///
    /// The relay serves as long as the returned server, or a clone of it, is kept; with another
    /// adapter, use [`new`](Self::new) and [`connect_handler`](Self::connect_handler).
    pub fn attach(io: &SocketIo, opts: ServerOptions) -> P2pServer {
        let server = P2pServer::new(io, opts);
        io.ns("/", server.connect_handler());
        server
    }
}

impl<A: Adapter> P2pServer<A> {
    /// A relay over `io`, whatever its adapter, not yet serving: register its
    /// [`connect_handler`](Self::connect_handler) on the root namespace (`"/"`) to start it.
    /// ([`attach`](P2pServer::attach) does both for the default adapter.)
    ///
    /// ```no_run
    /// use socketio_p2p::{P2pServer, ServerOptions};
    /// use socketioxide::{adapter::LocalAdapter, SocketIo};
    ///
    /// let (layer, io) = SocketIo::builder()
    ///     .with_adapter::<LocalAdapter>(())
    ///     .build_layer();
    /// let server = P2pServer::new(&io, ServerOptions::default());
    /// // With a remote adapter, `ns` returns a future to await.
    /// io.ns("/", server.connect_handler());
    /// # drop(layer);
    /// ```
    pub fn new(io: &SocketIo<A>, opts: ServerOptions) -> P2pServer<A> {
        let metrics = Arc::new(Metrics::new());
        P2pServer {
            inner: Arc::new(Inner {
                streams: crate::stream::server::Routes::new(metrics.clone()),
                clients: RwLock::new(HashMap::new()),
                parked: Mutex::new(HashMap::new()),
                away: Mutex::new(HashMap::new()),
                services: Default::default(),
                ops: operations(),
                io: io.clone(),
                lane: Lane::new(opts.reply_timeout),
                connects: Default::default(),
                conns: Connections::default(),
                metrics,
                default_permissions: (!opts.default_permissions.allows_all())
                    .then(|| Arc::new(opts.default_permissions.clone())),
                cluster: std::sync::OnceLock::new(),
                opts,
            }),
        }
    }

    /// The handler to register on the root namespace of the [`SocketIo`] this server was made
    /// with: it registers each connecting client. It holds the server weakly: once every
    /// [`P2pServer`] handle is dropped, new connections are turned away.
    ///
    /// It comes with the relay's connect middleware, which applies the per-address connection
    /// rate and runs the [`authenticator`](ServerOptions::authenticator), if there is one,
    /// before the connection is accepted.
    pub fn connect_handler(&self) -> impl ConnectHandler<A, (SocketRef<A>,)> {
        let server = Arc::downgrade(&self.inner);
        let admitting = server.clone();
        let handler = Registrar(server);
        let middleware = move |socket: SocketRef<A>, TryData(auth): TryData<Value>| {
            let server = admitting.clone();
            async move {
                // A gone relay is handled by the handler.
                let Some(inner) = server.upgrade() else {
                    return Ok(());
                };
                let server = P2pServer { inner };
                let refused = server.admit(&socket, auth.ok()).await;
                if let Err(refusal) = &refused {
                    server.metrics().refused(Reason::Auth);
                    tracing::info!(
                        sid = %socket.id,
                        reason = refusal.reason().as_str(),
                        "refusing connection: {refusal}"
                    );
                    close_refused(socket);
                }
                refused
            }
        };
        handler.with(middleware)
    }

    /// The ids of the connected clients.
    pub fn client_ids(&self) -> Vec<String> {
        let clients = self.inner.clients.read().unwrap();
        clients.keys().map(|k| k.to_string()).collect()
    }

    /// Whether a client with this id is connected.
    pub fn is_connected(&self, client_id: &str) -> bool {
        self.inner.clients.read().unwrap().contains_key(client_id)
    }

    /// The socket of a connected client, to use socketioxide's own API on it.
    pub fn socket_of(&self, client_id: &str) -> Option<SocketRef<A>> {
        self.peer(client_id).map(|p| p.socket.clone())
    }

    /// Emits `event` with `args` from the server to a client (`args` as for
    /// [`P2pClient::emit_to`](crate::P2pClient::emit_to): a tuple is several arguments, `()`
    /// none, any other value one); a Rust client receives it through
    /// [`P2pClient::on_raw`](crate::P2pClient::on_raw), with the arguments as they were sent.
    ///
    /// Fails with [`Error::BadRequest`] for a reserved event name (one Socket.IO clients or this
    /// protocol treat specially, such as `disconnect`: see [`protocol::is_reserved`]) and for
    /// arguments holding an object with the key `_placeholder`, which Socket.IO clients read as a
    /// binary attachment; nothing is sent then.
    pub fn emit_to(&self, client_id: &str, event: &str, args: impl IntoArgs) -> Result<(), Error> {
        check_server_event(event)?;
        let args = args.into_args()?;
        match self.target(client_id)? {
            Target::Local(peer) => peer.emit(event, &args),
            Target::Remote(remote) => self.emit_to_remote(remote, event, &args),
        }
    }

    /// Sends `event` with `args` to a client and waits for its answer, deserialized as `R`, at
    /// most [`ServerOptions::reply_timeout`] or what [`Request::timeout`] sets; a Rust client
    /// answers through [`P2pClient::on_request`](crate::P2pClient::on_request). Refused as
    /// [`emit_to`](Self::emit_to) says.
    pub fn request<R>(&self, client_id: &str, event: &str, args: impl IntoArgs) -> Request<R> {
        if let Err(e) = check_server_event(event) {
            return Request::failed(e);
        }
        let args = match args.into_args() {
            Ok(args) => args,
            Err(e) => return Request::failed(e),
        };
        let server = self.clone();
        let (client_id, event) = (client_id.to_string(), event.to_string());
        Request::new(self.inner.opts.reply_timeout, move |timeout| async move {
            server.request_raw(&client_id, &event, args, timeout).await
        })
    }

    /// Sends `event(...args)` to a client and waits for its answer's arguments, at most `timeout`.
    pub(crate) async fn request_raw(
        &self,
        client_id: &str,
        event: &str,
        args: Vec<Value>,
        timeout: Duration,
    ) -> Result<Vec<Value>, Error> {
        protocol::check_no_placeholder(&args)?;
        let max = self.inner.opts.max_pending_per_client;
        let answer = self
            .target(client_id)?
            .request_args(None, event, json_args(&args), timeout, max)
            .await?;
        Ok(answer.into_iter().map(Arg::into_value).collect())
    }

    /// The bytes the relay holds queued towards a connected client, by its own account (see
    /// [`ServerOptions::max_queued_bytes`]); `None` for a client not connected. A client whose
    /// connection the relay cannot count (long polling, a server not started by
    /// [`Relay`](crate::Relay)) always shows 0.
    pub fn queued_bytes(&self, client_id: &str) -> Option<u64> {
        self.peer(client_id).map(|p| p.queued_bytes())
    }

    /// The bytes the relay holds for a client whose link dropped and whose session waits for
    /// its return (see [`ServerOptions::resume_hold_bytes`]); `None` when no session of
    /// `client_id` waits.
    pub fn held_bytes(&self, client_id: &str) -> Option<usize> {
        let peer = self
            .inner
            .parked
            .lock()
            .unwrap()
            .get(client_id)?
            .peer
            .clone();
        let hold = peer.hold.lock().unwrap();
        match &*hold {
            Hold::Holding(held) => Some(held.bytes),
            _ => None,
        }
    }

    /// The bytes of what the relay sent to a client and the client has not confirmed yet, kept to
    /// send again if its link drops (see [`ServerOptions::resume_replay_bytes`]); `None` for a
    /// client that is neither connected nor away within its grace period, or that does not
    /// confirm what it receives.
    pub fn unconfirmed_bytes(&self, client_id: &str) -> Option<usize> {
        let peer = self.peer_or_away(client_id)?;
        let session = peer.session.get()?;
        let bytes = session.out.lock().unwrap().bytes();
        Some(bytes)
    }

    /// How many credit-mode streams the relay is routing between clients.
    pub fn stream_count(&self) -> usize {
        self.inner.streams.len()
    }

    /// Disconnects every client, so that each sees the server leave at once.
    pub fn disconnect_all(&self) {
        let peers: Vec<_> = self
            .inner
            .clients
            .read()
            .unwrap()
            .values()
            .cloned()
            .collect();
        for p in peers {
            let _ = p.socket.clone().disconnect();
        }
    }

    /// The operators of the root namespace, restricted to `room`: the server's way into its
    /// rooms, on every server the adapter spans.
    pub(crate) fn within(&self, room: String) -> Result<BroadcastOperators<A>, Error> {
        let ns = self.inner.io.of("/").ok_or_else(|| {
            Error::Protocol("the relay's root namespace is not registered".into())
        })?;
        Ok(ns.within(room))
    }

    /// Runs a room operation the server's own API asked for, after its earlier ones (see
    /// [`Lane`]). Its outcome is returned when it completes at once (always, with the local
    /// adapter); one that has to wait is logged if it fails.
    pub(crate) fn room_op<F>(&self, what: &str, op: F) -> Result<(), Error>
    where
        F: std::future::Future<Output = Result<(), Error>> + Send + 'static,
    {
        let (tx, rx) = std::sync::mpsc::channel();
        let name = what.to_string();
        self.inner.lane.run(what, op, move |result| {
            if let Err(result) = tx.send(result) {
                if let Err(e) = result.0 {
                    tracing::warn!("{name} failed: {e}");
                }
            }
        });
        rx.try_recv().unwrap_or(Ok(()))
    }

    /// Checks an event name a client chose for delivery to one client: that of
    /// [`check_event_text`](Self::check_event_text), and not the event of a topic room, which
    /// only the topic's service sends, into that room (see [`crate::service::rules`]).
    pub(crate) fn check_event_name(&self, name: &str) -> Result<(), Error> {
        self.check_event_text(name)?;
        crate::service::rules::check_direct_event(self, name)
    }

    /// Checks an event name a client chose for delivery to others: not reserved (see
    /// [`protocol::is_reserved`]) and not longer than [`ServerOptions::max_event_name_len`].
    pub(crate) fn check_event_text(&self, name: &str) -> Result<(), Error> {
        if protocol::is_reserved(name) {
            return Err(Error::BadRequest(protocol::reserved_event(name)));
        }
        let max = self.inner.opts.max_event_name_len;
        if name.len() > max {
            self.metrics().refused(Reason::Limit);
            return Err(Error::BadRequest(format!(
                "event name is longer than {max} bytes ({} bytes)",
                name.len()
            )));
        }
        Ok(())
    }

    /// Checks one event `peer` sent against [`ServerOptions::max_event_bytes`] and the event rate
    /// ([`ServerOptions::max_events_per_sec`]); the error is the answer to the refused event. A
    /// client that floods past [`ServerOptions::flood_disconnect_after`] is told why and
    /// disconnected.
    pub(crate) fn admit_event(&self, peer: &Peer<A>, v: &SioValue) -> Result<(), Error> {
        let opts = &self.inner.opts;
        if peer.closing.load(Ordering::Acquire) {
            // Told it is disconnected; what it still sends only delays the disconnect.
            peer.sent_after_notice.fetch_add(1, Ordering::AcqRel);
            return Err(Error::Overloaded(format!(
                "client '{}' is being disconnected for flooding; this event was not handled",
                peer.id
            )));
        }
        let size = sio_value_size(v);
        if size > opts.max_event_bytes {
            self.metrics().refused(Reason::Limit);
            return Err(Error::BadRequest(format!(
                "the event is {size} bytes, more than the {} bytes one event may have",
                opts.max_event_bytes
            )));
        }
        let take = peer.rate.lock().unwrap().take(
            opts.max_events_per_sec,
            opts.event_burst,
            opts.flood_disconnect_after,
        );
        let busy = || {
            Error::Overloaded(format!(
                "client '{}' sent more than {} events at once or {} per second; this one was \
                 not handled, slow down",
                peer.id, opts.event_burst, opts.max_events_per_sec
            ))
        };
        if take != limits::Take::Ok {
            self.metrics().refused(Reason::Busy);
        }
        match take {
            limits::Take::Ok => {
                self.metrics().event_bytes(size);
                Ok(())
            }
            limits::Take::Over => Err(busy()),
            limits::Take::Flood => {
                if peer.socket.connected() && !peer.closing.swap(true, Ordering::AcqRel) {
                    tracing::info!(client = %peer.id, "disconnecting a client that floods");
                    peer.server_error(&format!(
                        "Error: disconnected: client '{}' kept sending more than {} events per \
                         second",
                        peer.id, opts.max_events_per_sec
                    ));
                    peer.close_after_notice();
                }
                Err(busy())
            }
        }
    }

    pub(crate) fn peer(&self, id: &str) -> Option<Arc<Peer<A>>> {
        self.inner.clients.read().unwrap().get(id).cloned()
    }

    /// The connected client `id`, or the one whose session waits for its return: what is sent
    /// to the latter is held for it (see [`ServerOptions::resume_hold_bytes`]).
    pub(crate) fn peer_or_away(&self, id: &str) -> Option<Arc<Peer<A>>> {
        self.peer(id).or_else(|| {
            let parked = self.inner.parked.lock().unwrap();
            parked.get(id).map(|p| p.peer.clone())
        })
    }

    /// The connect middleware: runs before the connection is accepted at the Socket.IO level.
    /// A connection over the per-address rate is let through without authentication, to be
    /// refused by [`on_connect`](Self::on_connect) with a `SERVER_ERROR` as before; with an
    /// authenticator, a connection it refuses never connects and receives the refusal as its
    /// connection error (`connect_error`).
    async fn admit(&self, socket: &SocketRef<A>, auth: Option<Value>) -> Result<(), Refusal> {
        let opts = &self.inner.opts;
        if let Some(addr) = remote_addr(socket) {
            let (rate, burst) = (opts.max_connects_per_sec, opts.connect_burst);
            if !self.inner.connects.admit(addr, rate, burst) {
                self.metrics().refused(Reason::Limit);
                let reason = format!(
                    "too many connections from {addr} (at most {burst} at once, {rate} per \
                     second); try again later"
                );
                socket.extensions.insert(Admission::Refused(reason.into()));
                return Ok(());
            }
        }
        let Some(authenticator) = opts.authenticator.clone() else {
            self.admit_in_cluster(socket, None).await;
            return Ok(());
        };
        let handshake = handshake_of(socket, auth);
        let wait = opts.reply_timeout;
        let identity =
            match tokio::time::timeout(wait, authenticator.authenticate(&handshake)).await {
                Ok(identity) => identity?,
                Err(_) => {
                    return Err(Refusal::denied(format!(
                    "the relay could not authenticate the connection within {wait:?}; try again \
                     later"
                )))
                }
            };
        if let Err(why) = protocol::check_client_id(&identity.client_id) {
            return Err(Refusal::denied(format!(
                "the authenticated client id is not valid: {why}"
            )));
        }
        // The id the connection asks for, if it names one, must be the one it proved.
        if let Some(asked) = raw_query_value(socket, protocol::QUERY_CLIENT_ID) {
            match protocol::percent_decode_strict(asked) {
                Ok(asked) if asked == identity.client_id => {}
                Ok(asked) => {
                    return Err(Refusal::new(
                        crate::auth::RefusalReason::SubjectMismatch,
                        format!(
                            "the token is for client '{}', the connection asks for clientId \
                             '{asked}'",
                            identity.client_id
                        ),
                    ))
                }
                Err(why) => {
                    return Err(Refusal::denied(format!(
                        "the client id is not valid: {why}"
                    )))
                }
            }
        }
        let id = identity.client_id.clone();
        socket
            .extensions
            .insert(Admission::Identified(Arc::new(identity)));
        self.admit_in_cluster(socket, Some(id)).await;
        Ok(())
    }

    /// In a cluster, claims the id of a connecting client (`id`, else the one its query asks
    /// for, if valid); when another relay holds it, the connection is refused as a duplicate
    /// once connected (see [`on_connect`](Self::on_connect)).
    async fn admit_in_cluster(&self, socket: &SocketRef<A>, id: Option<String>) {
        if self.cluster().is_none() {
            return;
        }
        let id = id.or_else(|| {
            let asked = raw_query_value(socket, protocol::QUERY_CLIENT_ID)?;
            let id = protocol::percent_decode_strict(asked).ok()?;
            protocol::check_client_id(&id).ok().map(|()| id)
        });
        let Some(id) = id else { return };
        let secret = raw_query_value(socket, protocol::QUERY_RESUME)
            .and_then(|s| protocol::percent_decode_strict(s).ok());
        let authenticated = matches!(
            socket.extensions.get::<Admission>(),
            Some(Admission::Identified(_))
        );
        if let Some(reason) = self
            .claim_in_cluster(&id, secret.as_deref(), authenticated)
            .await
        {
            socket.extensions.insert(Admission::Refused(reason.into()));
        }
    }

    fn on_connect(&self, socket: SocketRef<A>) {
        let mut client_id = None;
        let mut ext = false;
        let mut resume = None;
        let mut received = None;
        if let Some(q) = socket.req_parts().uri.query() {
            for (k, v) in protocol::query_pairs(q) {
                match k.as_str() {
                    protocol::QUERY_CLIENT_ID => client_id = Some(v),
                    protocol::QUERY_EXTENSIONS => ext = v == "1",
                    protocol::QUERY_RESUME => resume = Some(v),
                    protocol::QUERY_RECEIVED => received = Some(v),
                    _ => {}
                }
            }
        }
        let refuse = |reason: String| {
            tracing::info!(sid = %socket.id, "refusing connection: {reason}");
            let e = Error::Refused(reason);
            let notice = ServerError {
                message: seed_text(&e),
                error: ext.then(|| e.to_wire()),
            };
            let _ = socket.emit(event::SERVER_ERROR, &protocol::ArgsRef(&notice.to_values()));
            let _ = socket.clone().disconnect();
        };
        let identity = match socket.extensions.get::<Admission>() {
            Some(Admission::Refused(reason)) => return refuse(reason.to_string()),
            Some(Admission::Identified(identity)) => Some(identity),
            None if self.inner.opts.authenticator.is_some() => {
                // Only reachable by a handler registered without the relay's middleware.
                return refuse("the connection was not authenticated".into());
            }
            None => None,
        };
        let id: Arc<str> = match (&identity, client_id.map(protocol::percent_decode_strict)) {
            (Some(identity), _) => identity.client_id.as_str().into(),
            (None, Some(Ok(id))) => match protocol::check_client_id(&id) {
                Ok(()) => id.into(),
                Err(reason) => return refuse(reason),
            },
            (None, Some(Err(why))) => return refuse(format!("the client id is not valid: {why}")),
            (None, None) => {
                return refuse(
                    "the handshake query has no clientId (connect with ?clientId=<id>)".into(),
                )
            }
        };
        // A client that counts what it receives says how much of its session it has.
        let received: Option<u64> = match received {
            Some(v) if ext && !self.inner.opts.resume_grace.is_zero() => match v.parse() {
                Ok(n) => Some(n),
                Err(_) => {
                    return refuse(format!(
                        "the query parameter '{}' is not a count: '{v}'",
                        protocol::QUERY_RECEIVED
                    ))
                }
            },
            _ => None,
        };
        let permissions = match identity.as_ref().and_then(|i| i.permissions.as_ref()) {
            Some(own) => (!own.allows_all()).then(|| Arc::new(own.clone())),
            None => self.inner.default_permissions.clone(),
        };
        // Only an extension client has a session to resume, and it must prove the same identity
        // as the session's (with authentication on, the id comes from its token).
        let resume = resume.filter(|_| ext && !self.inner.opts.resume_grace.is_zero());
        let may_resume = |old: &Peer<A>| {
            resume.is_some_and(|presented| {
                old.resume
                    .as_deref()
                    .is_some_and(|secret| secret_matches(secret, presented))
                    && (identity.is_some() || !old.authenticated)
                    && replay_allows(old, received)
            })
        };
        // A session whose connection dropped a moment ago.
        let parked = {
            let mut parked = self.inner.parked.lock().unwrap();
            match parked.get(&id) {
                Some(p) if may_resume(&p.peer) => parked.remove(&id),
                _ => None,
            }
        };
        // A connection the relay still holds for the session (it has not seen it drop yet): the
        // requests relayed to it wait for their answers through this one.
        let holding = match &parked {
            Some(_) => None,
            None => {
                let clients = self.inner.clients.read().unwrap();
                clients.get(&id).filter(|old| may_resume(old)).cloned()
            }
        };
        // Room events reach the session through its old peer until this connection is in its
        // rooms.
        let away = parked.as_ref().map(|p| AwayUntilJoined {
            inner: &self.inner,
            old: p.peer.clone(),
        });
        let peer = Arc::new(Peer {
            id: id.clone(),
            socket: socket.clone(),
            ext,
            permissions,
            authenticated: identity.is_some(),
            watchers: Mutex::new(HashSet::new()),
            pending: match (&parked, &holding) {
                (Some(p), _) => p.peer.pending.clone(),
                (None, Some(old)) if old.session.get().is_some() => old.pending.clone(),
                _ => Arc::new(PendingRequests::new(
                    self.inner.opts.max_pending_per_client.max(1),
                )),
            },
            seed_waiting: PendingRequests::new(self.inner.opts.max_pending_per_client.max(1)),
            routes: Mutex::new(HashSet::new()),
            lane: Lane::new(self.inner.opts.reply_timeout),
            asking: Arc::new(AtomicUsize::new(0)),
            rate: Mutex::new(limits::TokenBucket::new(self.inner.opts.event_burst)),
            budget: Arc::new(Budget::new(self.inner.opts.max_queued_bytes)),
            conns: self.inner.conns.clone(),
            slow_deadline: self.inner.opts.slow_consumer_deadline,
            metrics: self.inner.metrics.clone(),
            slow: SlowConsumer::new(&self.inner.metrics),
            closing: AtomicBool::new(false),
            sent_after_notice: Arc::default(),
            resume: (ext && !self.inner.opts.resume_grace.is_zero()).then(resume_secret),
            taken_over: AtomicBool::new(false),
            // Resuming: what comes for it waits behind what was held, until its welcome is out.
            // A client that counts what it receives gets nothing before its welcome either.
            hold: Mutex::new(match (&parked, received) {
                (None, None) => Hold::Open,
                _ => Hold::Holding(Held::default()),
            }),
            hold_limit: self.inner.opts.resume_hold_bytes,
            session: std::sync::OnceLock::new(),
            confirmed_here: std::sync::atomic::AtomicU64::new(received.unwrap_or(0)),
        });
        enum Registration<P> {
            Fresh,
            Replaced(P),
            /// Takes over a connection the relay still holds, as the session's owner.
            Resumed(P),
            Refused,
        }
        let unclaimable;
        let registration = {
            let mut clients = self.inner.clients.write().unwrap();
            // Checked under the client table's lock: `as_service` registers its name before it
            // looks for a client of that name, so one of the two always sees the other.
            unclaimable = limits::check_claimable_id(&id, self.inner.services.contains(&id)).err();
            match clients.get(&id) {
                _ if unclaimable.is_some() => Registration::Refused,
                // Connected still, or closing and not yet forgotten.
                Some(old) if may_resume(old) => {
                    let old = old.clone();
                    clients.insert(id.clone(), peer.clone());
                    Registration::Resumed(old)
                }
                Some(old) if old.socket.connected() => match self.inner.opts.duplicate_ids {
                    DuplicateIdPolicy::Reject => Registration::Refused,
                    // With authentication on, only a connection that proved the same identity
                    // takes over (an unauthenticated one never gets this far there).
                    DuplicateIdPolicy::Replace if old.authenticated && !peer.authenticated => {
                        Registration::Refused
                    }
                    DuplicateIdPolicy::Replace => {
                        let old = old.clone();
                        clients.insert(id.clone(), peer.clone());
                        Registration::Replaced(old)
                    }
                },
                _ => {
                    clients.insert(id.clone(), peer.clone());
                    Registration::Fresh
                }
            }
        };
        let (replaced, resumed) = match registration {
            Registration::Refused => {
                if let Some(p) = parked {
                    self.end_parked(p.peer);
                }
                self.release_in_cluster(&id);
                return refuse(
                    unclaimable.unwrap_or_else(|| format!("client id '{id}' is already connected")),
                );
            }
            Registration::Replaced(old) => (Some(old), None),
            Registration::Resumed(old) => match parked {
                // The same session, parked a moment before it was unregistered: its rooms are
                // those it was in when its link dropped.
                Some(p) if Arc::ptr_eq(&p.peer, &old) => (
                    None,
                    Some(Resumed {
                        old,
                        rooms: p.rooms,
                        missed: p.missed,
                    }),
                ),
                other => {
                    if let Some(p) = other {
                        self.end_parked(p.peer);
                    }
                    let rooms = old
                        .socket
                        .rooms()
                        .into_iter()
                        .map(|r| r.to_string())
                        .collect();
                    let missed = Vec::new();
                    (None, Some(Resumed { old, rooms, missed }))
                }
            },
            Registration::Fresh => (
                None,
                parked.map(|p| Resumed {
                    old: p.peer,
                    rooms: p.rooms,
                    missed: p.missed,
                }),
            ),
        };
        if resumed.is_none() {
            // A new session under this id: an older one kept for resuming is over.
            let stale = self.inner.parked.lock().unwrap().remove(&id);
            if let Some(p) = stale {
                self.end_parked(p.peer);
            }
        }
        let was_resumed = resumed.is_some();
        if received.is_some() {
            // The session's counts go on from the old connection's, or start at 0.
            let session = resumed
                .as_ref()
                .and_then(|r| r.old.session.get().cloned())
                .unwrap_or_else(|| {
                    Arc::new(replay::Session::new(self.inner.opts.resume_replay_bytes))
                });
            let _ = peer.session.set(session);
        }
        let mut missed = Vec::new();
        if let Some(Resumed {
            old,
            rooms,
            missed: gone,
        }) = resumed
        {
            missed = gone;
            tracing::info!(client = %id, "the client resumed its session");
            match old.session.get() {
                // What the old connection still gets from now on is not counted nor handled.
                Some(session) => session.stop_counting(&old.taken_over),
                None => old.taken_over.store(true, Ordering::Release),
            }
            peer.take_over_held(&old);
            // Its watchers are the new connection's, and it is in the same rooms.
            let watchers: Vec<_> = old.watchers.lock().unwrap().drain().collect();
            peer.watchers.lock().unwrap().extend(watchers);
            // Its rooms as they are now: a topic destroyed while it was away is not among them.
            for room in self.inner.away_rooms(&old).unwrap_or(rooms) {
                socket.join(room);
            }
            if Arc::ptr_eq(&old.pending, &peer.pending) {
                // What was held for it waits for its answers through this connection.
                self.unregister_keeping_requests(&old);
            } else {
                self.unregister(&old);
            }
            if old.socket.connected() {
                let _ = old.socket.clone().disconnect();
            }
        }
        if let Some(old) = replaced {
            tracing::info!(client = %id, "replacing the older connection of this client id");
            old.server_error(&format!(
                "Error: disconnected: a newer connection took over client id '{id}'"
            ));
            self.forget(&old);
            let _ = old.socket.clone().disconnect();
        }
        tracing::debug!(client = %id, ext, sid = %socket.id, "client connected");
        self.note_resume_secret(&peer);

        // Room events reach each member on this server through its budget (see `members`), found
        // from its socket; members on other servers through the adapter's broadcast, which
        // leaves this server's own room out.
        socket
            .extensions
            .insert(members::PeerLink(Arc::downgrade(&peer)));
        drop(away);
        if let Some(node) = self.node_room() {
            socket.join(node);
        }
        // Room emits reach the two kinds of client in two forms; these marker rooms tell the
        // adapter which is which (see `EMIT_ROOM` in PROTOCOL.md).
        socket.join(if ext {
            protocol::EXT_MEMBERS_ROOM
        } else {
            protocol::SEED_MEMBERS_ROOM
        });
        dispatch::register(self, &peer);

        let this = self.clone();
        let weak = Arc::downgrade(&peer);
        socket.on_disconnect(move |s: SocketRef<A>, reason: DisconnectReason| {
            let this = this.clone();
            let weak = weak.clone();
            // Taken now: the socket leaves its rooms once this handler is done.
            let rooms: Vec<String> = s.rooms().into_iter().map(|r| r.to_string()).collect();
            // What comes for a session that may be resumed is held from now on, not sent to
            // the closed connection (see `park`).
            if let Some(peer) = weak.upgrade() {
                if may_park(&peer, &reason) && !peer.taken_over.load(Ordering::Acquire) {
                    peer.start_holding();
                }
            }
            async move {
                if let Some(peer) = weak.upgrade() {
                    tracing::debug!(client = %peer.id, ?reason, "client disconnected");
                    if peer.taken_over.load(Ordering::Acquire) {
                        return;
                    }
                    if may_park(&peer, &reason) {
                        this.park(&peer, rooms);
                    } else {
                        this.forget(&peer);
                    }
                }
            }
        });
        if !socket.connected() {
            // It went away before its disconnect handler was there to see it: nothing else will
            // remove it.
            tracing::debug!(client = %id, "client gone during its connect");
            socket.leave_all();
            self.forget(&peer);
            return;
        }

        if ext {
            let welcome = Welcome {
                client_id: id.to_string(),
                resume: peer.resume.clone(),
                resumed: was_resumed,
                received: peer
                    .session
                    .get()
                    .filter(|_| was_resumed)
                    .map(|s| s.received()),
            };
            peer.send_welcome(&welcome);
            if let (true, Some(n)) = (was_resumed, received) {
                peer.send_again(n);
            }
            if let Some(session) = peer.session.get() {
                confirm_received(&peer, session.clone(), welcome.received.unwrap_or(0));
            }
            for gone in missed {
                let notice = TargetDisconnect(gone.to_string());
                peer.emit_control_now(
                    event::MULTI_API_TARGET_DISCONNECT,
                    &notice.to_values(),
                    "a disconnect notice",
                );
            }
        }
        peer.release_held();
    }

    /// Removes a peer (if it is still the registered one for its id), fails what waits on it and
    /// tells its watchers it left.
    fn forget(&self, peer: &Arc<Peer<A>>) {
        self.unregister(peer);
        self.end_held(peer);
        self.tell_watchers(peer);
    }

    /// Keeps the session of `peer`, whose connection dropped, for
    /// [`ServerOptions::resume_grace`]: it is unregistered at once, what is addressed to it is
    /// held (within [`ServerOptions::resume_hold_bytes`]) for its return, and its watchers are
    /// told only when the grace period ends without it.
    fn park(&self, peer: &Arc<Peer<A>>, rooms: Vec<String>) {
        let registered = {
            let clients = self.inner.clients.read().unwrap();
            clients.get(&peer.id).is_some_and(|p| Arc::ptr_eq(p, peer))
        };
        if !registered {
            // Already replaced or forgotten.
            return self.forget(peer);
        }
        tracing::debug!(client = %peer.id, "keeping the session for its return");
        // Requests relayed over the dropped link keep waiting: a client that confirms what it
        // receives gets them again if it resumes. Those of a client that does not fail.
        if peer.session.get().is_none() {
            peer.pending.abandon_all();
        }
        {
            let end = self.end_when_full(peer);
            let mut hold = peer.hold.lock().unwrap();
            match &mut *hold {
                // What its connection had not been given yet stays first.
                Hold::Holding(held) => held.on_full = Some(end),
                other => {
                    *other = Hold::Holding(Held {
                        on_full: Some(end),
                        ..Held::default()
                    })
                }
            }
        }
        self.inner.away.lock().unwrap().insert(
            peer.id.clone(),
            Away {
                peer: peer.clone(),
                rooms: rooms.iter().cloned().collect(),
            },
        );
        let earlier = self.inner.parked.lock().unwrap().insert(
            peer.id.clone(),
            Parked {
                peer: peer.clone(),
                rooms,
                missed: Vec::new(),
            },
        );
        if let Some(p) = earlier {
            self.end_parked(p.peer);
        }
        // Kept before it is unregistered, so that it is never unknown meanwhile.
        self.unregister_keeping_requests(peer);
        let this = Arc::downgrade(&self.inner);
        let peer = peer.clone();
        let grace = self.inner.opts.resume_grace;
        tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            let Some(inner) = this.upgrade() else { return };
            let expired = {
                let mut parked = inner.parked.lock().unwrap();
                match parked.get(&peer.id) {
                    Some(p) if Arc::ptr_eq(&p.peer, &peer) => parked.remove(&peer.id),
                    _ => None,
                }
            };
            if let Some(p) = expired {
                tracing::debug!(client = %peer.id, "the session was not resumed in time");
                P2pServer { inner }.end_parked(p.peer);
            }
        });
    }

    /// What ends the parked session of `peer` when what is held for it passes
    /// [`ServerOptions::resume_hold_bytes`]: it can no longer be resumed from then on.
    fn end_when_full(&self, peer: &Arc<Peer<A>>) -> Box<dyn FnOnce() + Send> {
        let inner = Arc::downgrade(&self.inner);
        let peer = Arc::downgrade(peer);
        Box::new(move || {
            let (Some(inner), Some(peer)) = (inner.upgrade(), peer.upgrade()) else {
                return;
            };
            let ended = {
                let mut parked = inner.parked.lock().unwrap();
                match parked.get(&peer.id) {
                    Some(p) if Arc::ptr_eq(&p.peer, &peer) => parked.remove(&peer.id),
                    _ => None,
                }
            };
            if let Some(p) = ended {
                tracing::info!(
                    client = %peer.id,
                    "what is held for the client passed resume_hold_bytes; its session ends"
                );
                // Not inline: the sender that filled it may hold locks the end takes.
                tokio::spawn(async move { P2pServer { inner }.end_parked(p.peer) });
            }
        })
    }

    /// Ends a kept session: what was held for it is dropped (see [`end_held`](Self::end_held)),
    /// requests waiting for it fail, and its watchers are told it left.
    fn end_parked(&self, peer: Arc<Peer<A>>) {
        self.inner.leave_away(&peer);
        self.end_kept(&peer);
        self.end_held(&peer);
        peer.pending.abandon_all();
        crate::stream::server::session_ended(self, &peer);
        self.tell_watchers(&peer);
    }

    /// Drops what is held for `peer`, whose session ended: the requests among it fail with
    /// their waits (the caller's `PEER_GONE`), and each client whose messages are among it gets
    /// a `SERVER_ERROR` saying how many were not delivered. What is sent to it later is refused
    /// as gone.
    fn end_held(&self, peer: &Peer<A>) {
        let held = {
            let mut hold = peer.hold.lock().unwrap();
            if !matches!(*hold, Hold::Holding(_)) {
                return;
            }
            match std::mem::replace(&mut *hold, Hold::Ended) {
                Hold::Holding(held) => held,
                _ => return,
            }
        };
        let mut dropped: HashMap<Arc<str>, usize> = HashMap::new();
        let mut own = 0;
        for item in held.items {
            match item.from {
                Some((sender, n)) => *dropped.entry(sender).or_default() += n,
                None => own += 1,
            }
        }
        for sender in held.refused {
            *dropped.entry(sender).or_default() += 1;
        }
        if own > 0 {
            // Answers, notices and what the server's own API sent: nobody to tell but the log.
            tracing::info!(
                client = %peer.id,
                events = own,
                "the session ended with events held for it that no client sent"
            );
        }
        self.tell_senders_of_loss(
            peer,
            dropped,
            "sent to it while its link was down were not delivered",
        );
    }

    /// Tells the senders of the messages sent to `peer`, whose session ended, that it never
    /// confirmed how many of them.
    fn end_kept(&self, peer: &Peer<A>) {
        let Some(session) = peer.session.get() else {
            return;
        };
        let senders = session.out.lock().unwrap().unconfirmed_senders();
        self.tell_senders_of_loss(
            peer,
            senders,
            "sent to it before its link dropped were not confirmed delivered",
        );
    }

    /// Sends each client of `senders` still here (or away) a `SERVER_ERROR`: `peer`, whose
    /// session ended, disconnected, and the sender's count of messages to it `lost` (the rest of
    /// the sentence).
    fn tell_senders_of_loss(&self, peer: &Peer<A>, senders: HashMap<Arc<str>, usize>, lost: &str) {
        for (sender, n) in senders {
            let Some(to) = self.peer_or_away(&sender) else {
                continue;
            };
            let gone = Error::PeerGone(peer.id.to_string());
            to.send_server_error(ServerError {
                message: format!(
                    "Error: client '{}' disconnected: {n} message(s) {lost}",
                    peer.id
                ),
                error: to.ext.then(|| gone.to_wire()),
            });
        }
    }

    /// Removes a peer (if it is still the registered one for its id) and fails what waits on it.
    fn unregister(&self, peer: &Arc<Peer<A>>) {
        peer.pending.abandon_all();
        self.unregister_keeping_requests(peer);
    }

    /// [`unregister`](Self::unregister), leaving the requests relayed to it waiting (they are
    /// held for its return).
    fn unregister_keeping_requests(&self, peer: &Arc<Peer<A>>) {
        {
            let mut clients = self.inner.clients.write().unwrap();
            if clients.get(&peer.id).is_some_and(|p| Arc::ptr_eq(p, peer)) {
                clients.remove(&peer.id);
            }
        }
        peer.seed_waiting.abandon_all();
        self.inner.conns.forget(&peer.socket.id.to_string());
        for gone in &self.inner.ops.peer_gone {
            gone(self, peer);
        }
    }

    /// Tells the watchers of `peer` it left.
    /// Tells the watchers of `peer` it left, those on other relays of a cluster included; its
    /// session is over.
    fn tell_watchers(&self, peer: &Arc<Peer<A>>) {
        let watchers: Vec<_> = peer.watchers.lock().unwrap().drain().collect();
        let mut elsewhere = Vec::new();
        for w in watchers {
            if !self.tell_one(&w, &peer.id) {
                elsewhere.push(w);
            }
        }
        self.left_cluster(peer, elsewhere);
    }
}

/// Whether a connection that says it received `received` events of the session of `old` may
/// resume it: a session that keeps what it sent must still have everything after that count.
fn replay_allows<A: Adapter>(old: &Peer<A>, received: Option<u64>) -> bool {
    let Some(session) = old.session.get() else {
        return true;
    };
    let Some(count) = received else {
        tracing::info!(client = %old.id, "not resumed: the connection does not count what it receives");
        return false;
    };
    match session.out.lock().unwrap().check_resume(count) {
        Ok(()) => true,
        Err(why) => {
            tracing::info!(client = %old.id, "not resumed, a new session begins: {why}");
            false
        }
    }
}

/// Confirms to the client of `peer` what its session received from it, with `P2P_RECEIVED`, once
/// [`replay::CONFIRM_EVERY`] events or [`replay::CONFIRM_BYTES`] bytes came since the last
/// confirmation, or [`replay::CONFIRM_AFTER`] after something came, while its connection lasts.
/// `told`: the count it already knows.
fn confirm_received<A: Adapter>(peer: &Arc<Peer<A>>, session: Arc<replay::Session>, told: u64) {
    let socket = peer.socket.clone();
    tokio::spawn(async move {
        let (mut told, mut told_bytes) = (told, session.received_bytes());
        loop {
            let news = session.received_reach(told + 1, u64::MAX, Duration::from_secs(1));
            if !news.await {
                if !socket.connected() {
                    return;
                }
                continue;
            }
            let (events, bytes) = (
                told + replay::CONFIRM_EVERY,
                told_bytes + replay::CONFIRM_BYTES,
            );
            session
                .received_reach(events, bytes, replay::CONFIRM_AFTER)
                .await;
            if !socket.connected() {
                return;
            }
            let n = session.received();
            told_bytes = session.received_bytes();
            let _ = socket.emit(event::P2P_RECEIVED, &protocol::ArgsRef(&[Value::from(n)]));
            told = n;
        }
    });
}

/// Whether the session of `peer`, whose connection ended for `reason`, is kept for its return: a
/// connection that dropped (rather than one that either side closed on purpose) may come back.
fn may_park<A: Adapter>(peer: &Peer<A>, reason: &DisconnectReason) -> bool {
    let dropped = matches!(
        reason,
        DisconnectReason::TransportClose
            | DisconnectReason::TransportError
            | DisconnectReason::HeartbeatTimeout
    );
    dropped && peer.resume.is_some() && !peer.closing.load(Ordering::Acquire)
}

impl<A: Adapter> Inner<A> {
    /// The rooms of `peer`'s session while it is away, if it is.
    fn away_rooms(&self, peer: &Arc<Peer<A>>) -> Option<Vec<String>> {
        let away = self.away.lock().unwrap();
        let a = away.get(&peer.id).filter(|a| Arc::ptr_eq(&a.peer, peer))?;
        Some(a.rooms.iter().cloned().collect())
    }

    /// Room events no longer reach `peer`'s session through it.
    fn leave_away(&self, peer: &Arc<Peer<A>>) {
        let mut away = self.away.lock().unwrap();
        if away
            .get(&peer.id)
            .is_some_and(|a| Arc::ptr_eq(&a.peer, peer))
        {
            away.remove(&peer.id);
        }
    }
}

/// The remote address of a connection, where the host passes it on (axum's `ConnectInfo`).
fn remote_addr<A: Adapter>(socket: &SocketRef<A>) -> Option<std::net::IpAddr> {
    let ext = &socket.req_parts().extensions;
    ext.get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip())
        .or_else(|| ext.get::<std::net::SocketAddr>().map(|a| a.ip()))
}

/// The relay's connect handler: registers each accepted connection at once, on the path that
/// accepted it, rather than in a task of its own as socketioxide runs an async handler; a client
/// may send its first events as soon as it is told it is connected, and they must find their
/// handlers there.
struct Registrar<A: Adapter>(std::sync::Weak<Inner<A>>);

impl<A: Adapter> Clone for Registrar<A> {
    fn clone(&self) -> Self {
        Registrar(self.0.clone())
    }
}

impl<A: Adapter> ConnectHandler<A, (SocketRef<A>,)> for Registrar<A> {
    fn call(&self, socket: Arc<Socket<A>>, _: Option<SioValue>) {
        let socket = SocketRef::from(socket);
        match self.0.upgrade() {
            Some(inner) => P2pServer { inner }.on_connect(socket),
            None => {
                tracing::info!(sid = %socket.id, "the relay is gone; disconnecting");
                let _ = socket.disconnect();
            }
        }
    }
}

/// What the connect middleware decided about a connection, for the connect handler (kept in
/// the socket's extensions).
#[derive(Clone)]
enum Admission {
    /// Over the per-address connection rate: refused with a `SERVER_ERROR` once connected.
    Refused(Arc<str>),
    /// The identity the authenticator established.
    Identified(Arc<Identity>),
}

/// The raw (not yet percent-decoded) value of query parameter `name` of a connection.
fn raw_query_value<'s, A: Adapter>(socket: &'s SocketRef<A>, name: &str) -> Option<&'s str> {
    protocol::query_pairs(socket.req_parts().uri.query()?)
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
}

/// The handshake of a connection, as an [`Authenticator`] sees it.
fn handshake_of<A: Adapter>(socket: &SocketRef<A>, auth: Option<Value>) -> Handshake {
    let parts = socket.req_parts();
    let query = parts
        .uri
        .query()
        .map(|q| {
            protocol::query_pairs(q)
                .map(|(k, v)| (k, protocol::percent_decode(v)))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    let handshake = Handshake::new(query, parts.headers.clone(), auth);
    match remote_addr(socket) {
        Some(addr) => handshake.with_remote_addr(addr),
        None => handshake,
    }
}

/// Ends the connection of a client whose connect was refused. socket.io-client 2 (Socket.IO
/// protocol 4) keeps its Engine.IO connection open after a connection error, so it is sent a
/// disconnect too, which makes it close; the pause lets the connection error, which socketioxide
/// sends once the middleware returns, go out first. Later clients close by themselves, and
/// socketioxide closes a connection that joins no namespace within its connect timeout.
fn close_refused<A: Adapter>(socket: SocketRef<A>) {
    if socket.protocol() != socketioxide::ProtocolVersion::V4 {
        return;
    }
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let _ = socket.disconnect();
    });
}

/// A socketioxide message handler that runs synchronously on the socket's receive path, keeping
/// the events of one connection in order (socketioxide's own async handlers each get a task, and
/// tasks may run out of order).
pub(crate) struct Inline<F>(pub(crate) F);

/// Marker type for [`Inline`]'s [`MessageHandler`] implementation.
pub(crate) struct InlineMarker;

impl<A: Adapter, F> MessageHandler<A, InlineMarker> for Inline<F>
where
    F: Fn(&Arc<Socket<A>>, SioValue, Option<i64>) + Send + Sync + 'static,
{
    fn call(&self, s: Arc<Socket<A>>, v: SioValue, ack_id: Option<i64>) {
        (self.0)(&s, v, ack_id)
    }
}

/// Decodes every argument of an event, binary data kept.
pub(crate) fn decode_args<A: Adapter>(
    s: &Arc<Socket<A>>,
    v: &mut SioValue,
    ack_id: &Option<i64>,
) -> Result<Vec<Arg>, Error> {
    socketioxide::extract::Data::<RawArgs>::from_message_parts(s, v, ack_id)
        .map(|d| d.0 .0)
        .map_err(|e| Error::from(protocol::args_error(&e)))
}

/// The acknowledgement a seed event asks for, if it asks for one.
pub(crate) fn ack_sender<A: Adapter>(
    s: &Arc<Socket<A>>,
    v: &mut SioValue,
    ack_id: &Option<i64>,
) -> Option<AckSender<A>> {
    ack_id.as_ref()?;
    AckSender::from_message_parts(s, v, ack_id).ok()
}
