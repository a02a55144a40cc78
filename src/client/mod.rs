//! The Rust client: a connection to the relay under a client id.
//!
//! This module is the connection alone; it knows no API. Every event that reaches the client goes
//! through one demultiplexer (`ClientInner::demux`): answers to this client's requests go to the
//! pending-request table, the handshake and decoding stay here, and everything else is offered
//! to the APIs' `EventSink`s, which the client is built with (`Apis`). Outgoing events go
//! through one writer task that keeps them in order and packs runs of fire-and-forget messages
//! into `P2P_BATCH` events.
//!
//! The client owns its link: each link is one rust_socketio client (with rust_socketio's own
//! reconnection off) and one writer, numbered by a generation so that what an older link reports
//! is told apart. When a link fails, the client builds a new one with growing waits
//! ([`ClientOptions::reconnect`]), presenting the relay's resume secret; the listeners, the
//! outgoing queue and the state ([`ConnectionState`]) stay with the client across links.
//!
//! Nothing is lost at a cut: the demultiplexer counts the events of the session as they come
//! (`ClientInner::on_event`), a task per link confirms them to the relay (`P2P_RECEIVED`, written
//! by the writer, the one task that writes to a link), and the writer counts what it writes and
//! keeps it until the relay confirms it ([`ClientOptions::resume_replay_bytes`]). After a resume
//! the writer first sends again what the relay's welcome says it did not receive; the relay does
//! the same for this client (see `PROTOCOL.md`, "Session resume").

use crate::error::{Error, Result};
use crate::protocol::{
    self, event, FromValues, RelayedBatch, Request, ResAnswer, Response, ServerError,
    TargetDisconnect, Welcome,
};
use crate::request::{NoAnswer, PendingRequests};
use futures::FutureExt;
use rust_socketio::asynchronous::{Client as SioClient, ClientBuilder};
use rust_socketio::{Payload, TransportType};
use serde_json::Value;
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};

mod nodelay;
mod sink;
mod tls;

use tls::tls_connector;

pub(crate) use sink::{Apis, EventSink, Incoming, Origin};

/// Settings of a [`P2pClient`].
#[derive(Clone)]
pub struct ClientOptions {
    /// How long a call that waits on a peer or the server (a reply, an add-target, a room join)
    /// waits before it fails with [`Error::Timeout`].
    pub timeout: Duration,
    /// How long [`P2pClient::connect`] waits for the server to accept the client id.
    pub connect_timeout: Duration,
    /// Outgoing events queued before senders wait.
    pub send_queue: usize,
    /// Receive window of each stream this client accepts or opens, in bytes: how much a peer may
    /// send before this end's reader consumes some.
    pub stream_window: u32,
    /// The token that proves this client's id to a relay with authentication on (see
    /// [`crate::auth`]): sent in the Socket.IO auth payload as `{"token": <token>}`, never in the
    /// URL. `None` (the default) sends none. A relay that refuses the token fails
    /// [`P2pClient::connect_with`] with [`Error::Unauthorized`].
    pub token: Option<String>,
    /// A CA certificate (PEM) to trust for an `https://` relay, besides the system's roots: for
    /// a relay whose certificate a private CA signed, or a self-signed one. `None` (the default)
    /// trusts the system's roots only. A relay whose certificate is not trusted fails
    /// [`P2pClient::connect_with`] with [`Error::Connect`], whose cause says so.
    pub ca_cert: Option<Vec<u8>>,

    // Reconnection (see [`ConnectionState`]).
    /// Whether the client connects again by itself after it lost its link to the relay (`true` by
    /// default). Off, a lost link closes the client for good.
    pub reconnect: bool,
    /// The wait before the first reconnection attempt; each failed attempt doubles it, up to
    /// [`reconnect_delay_max`](Self::reconnect_delay_max). Every wait is shortened by a random
    /// part of up to a half (jitter), so that clients cut off together do not come back together.
    pub reconnect_delay: Duration,
    /// The longest wait between two reconnection attempts.
    pub reconnect_delay_max: Duration,
    /// How many reconnection attempts in a row may fail before the client gives up and closes;
    /// `None` (the default) tries until [`P2pClient::disconnect`] or the last clone is dropped.
    pub max_reconnect_attempts: Option<u32>,
    /// Called before every reconnection attempt for the token to send then; `None` from it (or no
    /// callback, the default) sends [`token`](Self::token) again. With a callback, a relay that
    /// refuses the token does not end the reconnection: the next attempt asks again.
    pub token_refresh: Option<TokenRefresh>,
    /// Bytes of what this client sent and the relay has not confirmed yet (`P2P_RECEIVED`),
    /// kept to send again after a resume (stream frames are not kept: streams resend their own
    /// bytes). When it is full, sending waits for the relay's confirmations, at most
    /// [`timeout`](Self::timeout). Default 4 MiB.
    pub resume_replay_bytes: usize,
}

/// A callback that gives the token to send at a reconnection: see
/// [`ClientOptions::token_refresh`].
pub type TokenRefresh = Arc<dyn Fn() -> Option<String> + Send + Sync>;

impl std::fmt::Debug for ClientOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientOptions")
            .field("timeout", &self.timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("send_queue", &self.send_queue)
            .field("stream_window", &self.stream_window)
            // A secret: whether there is one, not what it is.
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("ca_cert", &self.ca_cert.as_ref().map(|_| "<PEM>"))
            .field("reconnect", &self.reconnect)
            .field("reconnect_delay", &self.reconnect_delay)
            .field("reconnect_delay_max", &self.reconnect_delay_max)
            .field("max_reconnect_attempts", &self.max_reconnect_attempts)
            .field("resume_replay_bytes", &self.resume_replay_bytes)
            .field(
                "token_refresh",
                &self.token_refresh.as_ref().map(|_| "<callback>"),
            )
            .finish()
    }
}

impl ClientOptions {
    /// The same options with `token` sent at connect.
    pub fn with_token(mut self, token: impl Into<String>) -> ClientOptions {
        self.token = Some(token.into());
        self
    }

    /// The same options trusting the CA certificate `pem` (see [`ClientOptions::ca_cert`]).
    pub fn with_ca_cert(mut self, pem: impl Into<Vec<u8>>) -> ClientOptions {
        self.ca_cert = Some(pem.into());
        self
    }

    /// The same options trusting the CA certificate in the PEM file at `path` (see
    /// [`ClientOptions::ca_cert`]). Fails with [`Error::Io`] when the file cannot be read.
    pub fn with_ca_cert_file(self, path: impl AsRef<std::path::Path>) -> Result<ClientOptions> {
        let path = path.as_ref();
        let pem = std::fs::read(path).map_err(|e| {
            std::io::Error::new(e.kind(), format!("cannot read {}: {e}", path.display()))
        })?;
        Ok(self.with_ca_cert(pem))
    }

    /// The same options with automatic reconnection on or off (see
    /// [`reconnect`](Self::reconnect)).
    pub fn with_reconnect(mut self, on: bool) -> ClientOptions {
        self.reconnect = on;
        self
    }

    /// How long the client waits before reconnecting: `first` before the first attempt, doubling
    /// up to `max` (see [`reconnect_delay`](Self::reconnect_delay)).
    pub fn with_reconnect_delay(mut self, first: Duration, max: Duration) -> ClientOptions {
        self.reconnect_delay = first;
        self.reconnect_delay_max = max;
        self
    }

    /// The wait before reconnection attempt `attempt` (0 for the first), jitter included.
    fn backoff(&self, attempt: u32) -> Duration {
        let full = self
            .reconnect_delay
            .saturating_mul(1u32 << attempt.min(16))
            .min(self.reconnect_delay_max.max(self.reconnect_delay));
        // Up to a half off, at random.
        let cut = full.mul_f64(rand::random::<f64>() * 0.5);
        full - cut
    }
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(10),
            send_queue: 4096,
            // The Stream API's default window (512 KiB).
            stream_window: 512 * 1024,
            token: None,
            ca_cert: None,
            reconnect: true,
            reconnect_delay: Duration::from_millis(500),
            reconnect_delay_max: Duration::from_secs(5),
            max_reconnect_attempts: None,
            token_refresh: None,
            resume_replay_bytes: 4 << 20,
        }
    }
}

/// Where a [`P2pClient`]'s link to the relay stands; watch it with [`P2pClient::state`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConnectionState {
    /// The link is up: calls go out at once.
    Connected,
    /// The link was lost and the client is connecting again (see
    /// [`ClientOptions::reconnect`]). Calls made now wait for the link, at most their timeout,
    /// then fail with [`Error::Disconnected`]; requests that were in flight when the link dropped
    /// keep waiting, at most their timeout: they are answered if the session is resumed, and fail
    /// with [`Error::Disconnected`] if a new session begins.
    Reconnecting,
    /// The client is closed for good: by [`P2pClient::disconnect`], by the relay, or because
    /// reconnection is off or gave up. Every call fails with [`Error::Disconnected`].
    Closed,
}

/// An event on its way to the server.
pub(crate) enum Outgoing {
    /// `P2P_EMIT(payload)`; consecutive ones travel together as one `P2P_BATCH`.
    Emit(Value),
    /// Any other event with its arguments.
    Event(&'static str, Vec<Value>),
    /// An event with exactly one binary attachment (a stream's `P2P_FRAME`).
    Binary(&'static str, bytes::Bytes),
}

/// Runs on the receive path when the answer to a request arrives, before any later event is
/// handled; it also sees an answer that comes after its request timed out.
pub(crate) type AnswerHook = Box<dyn FnOnce(&ResAnswer) + Send>;

/// Who a request is about, to name in its errors: the peer that answers (`None`: the relay) and
/// the event as the user knows it.
pub(crate) struct Subject {
    pub(crate) peer: Option<String>,
    pub(crate) event: String,
}

/// Requests in flight are at most this many; past that a request fails as busy.
const MAX_PENDING: usize = 1 << 20;

/// How many times a new session asks a service again for a topic subscription.
const SUBSCRIBE_AGAIN_ATTEMPTS: u32 = 20;

/// Most `P2P_EMIT`s packed into one `P2P_BATCH`.
const MAX_BATCH: usize = 512;

pub(crate) struct ClientInner {
    pub(crate) id: String,
    pub(crate) opts: ClientOptions,
    /// The relay's URL as the application gave it.
    url: String,
    /// The current link, while there is one.
    link: Mutex<Option<Link>>,
    /// Numbers the links: events and failures of an older link are told apart by it.
    generation: AtomicU64,
    /// Whether the current link is up (welcomed): calls go out. Set before the state turns
    /// [`ConnectionState::Connected`], while a new session's rooms are joined again.
    link_up: AtomicBool,
    pub(crate) out: mpsc::Sender<Outgoing>,
    /// The receiving end of `out`, taken by the writer of each link in turn.
    out_rx: Arc<tokio::sync::Mutex<mpsc::Receiver<Outgoing>>>,
    /// This client's requests waiting for their `P2P_RES`.
    pending: PendingRequests<ResAnswer>,
    /// Hooks of requests, by request id (see [`AnswerHook`]).
    hooks: Mutex<HashMap<u64, AnswerHook>>,
    /// The APIs this client was built with.
    apis: Apis,
    pub(crate) me: Weak<ClientInner>,
    welcome: Mutex<Option<oneshot::Sender<Result<Welcome>>>>,
    /// The generation of the last link the relay welcomed: a link's writer sends nothing before
    /// (what was queued while reconnecting would go out before the connection is ready, fail,
    /// and lose the link the relay already took the session over to).
    welcomed: watch::Sender<u64>,
    state: watch::Sender<ConnectionState>,
    /// Why the connection closed, once it has.
    closed_why: OnceLock<String>,
    /// The secret the relay gave to take this session over a new connection.
    resume: Mutex<Option<String>>,
    /// What a new session has to set up again on the relay.
    pub(crate) session: Mutex<Session>,
    /// Events of this session received from the relay (`P2P_WELCOME` and `P2P_RECEIVED` not
    /// counted); taken with the generation of the link they came on.
    received: Mutex<u64>,
    /// About the bytes of those events, for when to confirm them.
    received_bytes: AtomicU64,
    /// Woken when `received` reaches `wake_at` or its bytes `wake_bytes_at` (set by the task
    /// that confirms, so that counting wakes nobody for each event).
    received_news: Arc<tokio::sync::Notify>,
    wake_at: AtomicU64,
    wake_bytes_at: AtomicU64,
    /// What this client sent and the relay has not confirmed.
    kept: Mutex<Kept>,
    /// Woken when the relay confirms something.
    confirmed_news: tokio::sync::Notify,
    /// Tells the current link's writer, once welcomed, where to go on from: the relay's count
    /// of what it received in a resumed session, `None` for a new one.
    go_on: Mutex<Option<oneshot::Sender<Option<u64>>>>,
    /// The relay's reason, when it said it is disconnecting this client (`SERVER_ERROR`
    /// `Error: disconnected: ...`): the link's end is then final, not a reason to reconnect.
    dismissed: Mutex<Option<String>>,
}

/// What this client sent in its session and the relay has not confirmed, in order.
struct Kept {
    /// Events sent in this session: the number of the newest.
    sent: u64,
    confirmed: u64,
    /// The events numbered `confirmed + 1 ..= sent`; `None`: a stream frame's marker.
    entries: std::collections::VecDeque<(&'static str, Option<Payload>, usize)>,
    bytes: usize,
}

impl Kept {
    fn new() -> Kept {
        Kept {
            sent: 0,
            confirmed: 0,
            entries: Default::default(),
            bytes: 0,
        }
    }

    /// Counts an event written (or about to be) to the relay, kept until confirmed; a stream
    /// frame leaves a marker of no bytes.
    fn push(&mut self, name: &'static str, payload: &Payload, size: usize) {
        let keep = match payload {
            Payload::Binary(_) => None,
            other => Some(other.clone()),
        };
        let size = if keep.is_some() { size } else { 0 };
        self.sent += 1;
        self.bytes += size;
        self.entries.push_back((name, keep, size));
    }

    /// [`push`](Self::push) for an event taken from the queue and never written: the relay's
    /// count after a resume shows it did not arrive, and it is sent then.
    fn push_outgoing(&mut self, item: Outgoing) {
        let (name, payload) = match item {
            Outgoing::Event(name, args) => (name, Payload::Text(args)),
            Outgoing::Binary(name, bytes) => (name, Payload::Binary(bytes)),
            Outgoing::Emit(p) => (event::P2P_EMIT, Payload::Text(vec![p])),
        };
        let size = kept_size(name, &payload);
        self.push(name, &payload, size);
    }

    /// The relay received `count` events; `false` for a count that goes back or past what was
    /// sent.
    fn confirm(&mut self, count: u64) -> bool {
        if count < self.confirmed || count > self.sent {
            return false;
        }
        while self.confirmed < count {
            if let Some((_, _, bytes)) = self.entries.pop_front() {
                self.bytes -= bytes;
            }
            self.confirmed += 1;
        }
        true
    }
}

/// The bytes an outgoing event is counted for in [`Kept`]: a lower bound of its JSON.
fn kept_size(name: &str, payload: &Payload) -> usize {
    name.len()
        + 4
        + match payload {
            Payload::Text(args) => args
                .iter()
                .map(|a| crate::server::json_size(a) + 1)
                .sum::<usize>(),
            _ => 0,
        }
}

/// How the relay's `SERVER_ERROR` begins when it disconnects a client on purpose (replaced by a
/// newer connection of its id, flooding, a slow consumer).
const DISMISSAL: &str = "Error: disconnected:";

/// What this client set up on the relay that a new session (after the relay lost the old one)
/// sets up again.
#[derive(Default)]
pub(crate) struct Session {
    /// Rooms joined with [`P2pClient::join_room`].
    pub(crate) rooms: BTreeSet<String>,
    /// Topic subscriptions: (service, topic).
    pub(crate) subscriptions: BTreeSet<(String, String)>,
    /// Topics this client created as a service.
    pub(crate) topics: BTreeSet<String>,
}

/// One Socket.IO connection to the relay.
struct Link {
    sio: SioClient,
    generation: u64,
    /// Dropped when the link is, which stops its writer.
    _stop: oneshot::Sender<()>,
}

/// A client of the relay, known to the other clients by its client id.
///
/// Cheap to clone; every clone is the same connection. The connection closes when
/// [`disconnect`](P2pClient::disconnect) is called or the last clone is dropped. A listener that
/// needs its own client should capture a [`WeakP2pClient`] (see [`P2pClient::downgrade`]): a
/// clone captured by a listener of the same client keeps the connection alive until
/// `disconnect`.
#[derive(Clone)]
pub struct P2pClient {
    pub(crate) inner: Arc<ClientInner>,
}

/// A handle to a [`P2pClient`] that does not keep its connection open: for listeners that need
/// the client they are registered on.
#[derive(Clone)]
pub struct WeakP2pClient(Weak<ClientInner>);

impl WeakP2pClient {
    /// The client, if it is still held somewhere.
    pub fn upgrade(&self) -> Option<P2pClient> {
        self.0.upgrade().map(|inner| P2pClient { inner })
    }
}

impl std::fmt::Debug for P2pClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("P2pClient")
            .field("id", &self.inner.id)
            .field("connected", &self.is_connected())
            .finish()
    }
}

impl P2pClient {
    /// Connects to the relay at `url` as `client_id`, with `apis` on the receive path (the public
    /// constructors, [`P2pClient::connect`] and [`P2pClient::connect_with`], pass every API).
    pub(crate) async fn open(
        url: &str,
        client_id: &str,
        opts: ClientOptions,
        apis: Apis,
    ) -> Result<P2pClient> {
        // What the relay would refuse, refused here with the relay's words.
        protocol::check_client_id(client_id).map_err(Error::BadRequest)?;
        let (out_tx, out_rx) = mpsc::channel(opts.send_queue.max(1));
        let (state, _) = watch::channel(ConnectionState::Reconnecting);
        let inner = Arc::new_cyclic(|me| ClientInner {
            me: me.clone(),
            apis,
            id: client_id.to_string(),
            opts: opts.clone(),
            url: url.to_string(),
            link: Mutex::new(None),
            generation: AtomicU64::new(0),
            link_up: AtomicBool::new(false),
            out: out_tx,
            out_rx: Arc::new(tokio::sync::Mutex::new(out_rx)),
            pending: PendingRequests::new(MAX_PENDING),
            hooks: Mutex::new(HashMap::new()),
            welcome: Mutex::new(None),
            welcomed: watch::Sender::new(0),
            state,
            closed_why: OnceLock::new(),
            resume: Mutex::new(None),
            session: Mutex::new(Session::default()),
            dismissed: Mutex::new(None),
            received: Mutex::new(0),
            received_bytes: AtomicU64::new(0),
            received_news: Arc::default(),
            wake_at: AtomicU64::new(u64::MAX),
            wake_bytes_at: AtomicU64::new(u64::MAX),
            kept: Mutex::new(Kept::new()),
            confirmed_news: tokio::sync::Notify::new(),
            go_on: Mutex::new(None),
        });

        inner.establish(opts.token.clone()).await?;
        if !inner.go_connected(inner.generation.load(Ordering::Acquire)) {
            return Err(Error::Disconnected(format!(
                "client '{client_id}': the connection closed right after the handshake"
            )));
        }
        Ok(P2pClient { inner })
    }

    /// A handle that does not keep the connection open.
    pub fn downgrade(&self) -> WeakP2pClient {
        WeakP2pClient(Arc::downgrade(&self.inner))
    }

    /// This client's id.
    pub fn id(&self) -> &str {
        &self.inner.id
    }

    /// Whether the link to the relay is up ([`ConnectionState::Connected`]).
    pub fn is_connected(&self) -> bool {
        *self.inner.state.borrow() == ConnectionState::Connected
    }

    /// The state of the link to the relay, to read or to wait on: it goes
    /// [`Reconnecting`](ConnectionState::Reconnecting) when the link is lost,
    /// [`Connected`](ConnectionState::Connected) again once the client is back (a new session has
    /// joined its rooms again by then), and [`Closed`](ConnectionState::Closed) at the end.
    ///
    /// ```no_run
    /// # async fn f(client: socketio_p2p::P2pClient) {
    /// use socketio_p2p::ConnectionState;
    /// let mut state = client.state();
    /// while state.changed().await.is_ok() {
    ///     match *state.borrow() {
    ///         ConnectionState::Reconnecting => println!("link lost, reconnecting"),
    ///         ConnectionState::Connected => println!("back"),
    ///         ConnectionState::Closed => break,
    ///     }
    /// }
    /// # }
    /// ```
    pub fn state(&self) -> watch::Receiver<ConnectionState> {
        self.inner.state.subscribe()
    }

    /// Resolves when the client is closed for good ([`ConnectionState::Closed`]); a lost link
    /// that the client reconnects does not count.
    pub async fn closed(&self) {
        let mut rx = self.inner.state.subscribe();
        let _ = rx.wait_for(|s| *s == ConnectionState::Closed).await;
    }

    /// Closes the connection and stops reconnecting. Pending calls fail with
    /// [`Error::Disconnected`]; peers that talked to this client are told it left. Closing a
    /// connection that already failed is not an error: either way the client is closed
    /// afterwards.
    pub async fn disconnect(&self) -> Result<()> {
        let link = self.inner.link.lock().unwrap().take();
        self.inner.mark_closed("disconnected by this client");
        if let Some(link) = link {
            if let Err(e) = link.sio.disconnect().await {
                tracing::debug!(client = %self.inner.id, "closing an already failing link: {e}");
            }
        }
        Ok(())
    }

    /// The default timeout of calls that wait on a peer.
    pub fn timeout(&self) -> Duration {
        self.inner.opts.timeout
    }
}

impl ClientInner {
    /// The state of the API of type `T` this client was built with.
    ///
    /// # Panics
    ///
    /// If the client was built without it: the public constructors add every API.
    pub(crate) fn api<T: std::any::Any>(&self) -> &T {
        match self.apis.get::<T>() {
            Some(api) => api,
            None => panic!(
                "client built without the API {}",
                std::any::type_name::<T>()
            ),
        }
    }

    /// Fails once the client is closed for good; a client that is reconnecting is not closed.
    pub(crate) fn check_open(&self) -> Result<()> {
        if *self.state.borrow() == ConnectionState::Closed {
            Err(self.closed_error())
        } else {
            Ok(())
        }
    }

    /// The error of a call on a closed connection: why it closed, and what to do.
    fn closed_error(&self) -> Error {
        let why = self
            .closed_why
            .get()
            .map_or("the connection is closed", String::as_str);
        Error::Disconnected(format!(
            "client '{}': {why}; connect again to go on",
            self.id
        ))
    }

    /// Waits until a link is up, at most `limit`: at once when it is, and fails at once when the
    /// client is closed.
    async fn ready(&self, limit: Duration) -> Result<()> {
        let mut rx = self.state.subscribe();
        let up = |s: &ConnectionState| {
            *s == ConnectionState::Closed || self.link_up.load(Ordering::Acquire)
        };
        let waited = tokio::time::timeout(limit, rx.wait_for(up))
            .await
            .map(|r| r.map(|s| *s));
        match waited {
            Ok(Ok(s)) if s != ConnectionState::Closed => Ok(()),
            Ok(_) => Err(self.closed_error()),
            Err(_) => Err(Error::Disconnected(format!(
                "client '{}' lost its link to the relay and was not back within {limit:?} \
                 (it is still reconnecting)",
                self.id
            ))),
        }
    }

    /// Queues an event for the writer, waiting while the client reconnects (at most its
    /// timeout) and when the queue is full.
    pub(crate) async fn send(&self, item: Outgoing) -> Result<()> {
        let limit = self.opts.timeout;
        self.ready(limit).await?;
        // Most sends find room at once: no timer for them.
        let item = match self.out.try_send(item) {
            Ok(()) => return Ok(()),
            Err(mpsc::error::TrySendError::Closed(_)) => return Err(self.closed_error()),
            Err(mpsc::error::TrySendError::Full(item)) => item,
        };
        match tokio::time::timeout(limit, self.out.send(item)).await {
            Ok(sent) => sent.map_err(|_| self.closed_error()),
            Err(_) => Err(Error::Timeout {
                peer: None,
                event: "sending (the queue to the relay stayed full: the relay confirms too \
                        little of what this client sent)"
                    .into(),
                after: limit,
            }),
        }
    }

    /// Queues an event without waiting; used from synchronous handlers.
    pub(crate) fn send_now(&self, item: Outgoing) {
        if *self.state.borrow() == ConnectionState::Closed {
            return;
        }
        match self.out.try_send(item) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(item)) => {
                // Bounded: the queue may not drain while the client reconnects.
                let (out, limit) = (self.out.clone(), self.opts.timeout);
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(limit, out.send(item)).await;
                });
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }

    /// Sends `P2P_REQ(id, event, ...args)` and waits for the `P2P_RES`, at most `timeout`.
    pub(crate) async fn request(
        &self,
        name: &str,
        args: Vec<Value>,
        timeout: Duration,
    ) -> Result<Vec<Value>> {
        let about = Subject {
            peer: None,
            event: name.to_string(),
        };
        self.request_about(name, args, timeout, about, None).await
    }

    /// Like [`request`](Self::request); `hook` sees the answer on the receive path first.
    pub(crate) async fn request_with_hook(
        &self,
        name: &str,
        args: Vec<Value>,
        timeout: Duration,
        hook: Option<AnswerHook>,
    ) -> Result<Vec<Value>> {
        let about = Subject {
            peer: None,
            event: name.to_string(),
        };
        self.request_about(name, args, timeout, about, hook).await
    }

    /// Sends `P2P_REQ(id, name, ...args)` on behalf of a call about `about`, whose errors name
    /// that peer and event.
    pub(crate) async fn request_about(
        &self,
        name: &str,
        args: Vec<Value>,
        timeout: Duration,
        about: Subject,
        hook: Option<AnswerHook>,
    ) -> Result<Vec<Value>> {
        self.ready(timeout).await?;
        let from = about
            .peer
            .clone()
            .unwrap_or_else(|| crate::error::RELAY.to_string());
        let Some(waiting) = self.pending.register() else {
            return Err(Error::Busy(self.id.clone()));
        };
        let id = waiting.id;
        if let Some(hook) = hook {
            self.hooks.lock().unwrap().insert(id, hook);
        }
        let req = Request {
            id,
            event: name.to_string(),
            args,
        };
        if let Err(e) = self
            .send(Outgoing::Event(event::P2P_REQ, req.to_values()))
            .await
        {
            self.pending.cancel(id);
            self.hooks.lock().unwrap().remove(&id);
            return Err(e);
        }
        match self.pending.wait(waiting, timeout).await {
            Ok(answer) => answer.into_result(&from),
            Err(NoAnswer::Abandoned) => Err(Error::Disconnected(format!(
                "client '{}' lost its session with the relay while waiting for '{}' (the \
                 client closed, or its link dropped and a new session began); the answer, if \
                 any, is lost",
                self.id, about.event
            ))),
            // A request with a hook keeps it for a late answer (the relay always answers, at
            // worst with its own timeout), so the hook can undo what that answer set up.
            Err(NoAnswer::TimedOut) => Err(Error::Timeout {
                peer: about.peer,
                event: about.event,
                after: timeout,
            }),
        }
    }

    /// Answers a request the relay passed to this client with this client's own error.
    pub(crate) fn refuse(&self, id: u64, text: String) {
        self.respond(id, Err(Error::remote(self.id.clone(), text)));
    }

    /// Answers a request the relay passed to this client: `P2P_RES(id, {ok} | error)`.
    pub(crate) fn respond(&self, id: u64, result: Result<Vec<Value>>) {
        let res = Response {
            id,
            body: ResAnswer::from_result(result),
        };
        self.send_now(Outgoing::Event(event::P2P_RES, res.to_values()));
    }

    /// Closes the client for good.
    fn mark_closed(&self, why: &str) {
        let _ = self.closed_why.set(why.to_string());
        let was = self.state.send_replace(ConnectionState::Closed);
        if was == ConnectionState::Closed {
            return;
        }
        self.link_up.store(false, Ordering::Release);
        tracing::debug!(client = %self.id, "connection closed: {why}");
        if let Some(link) = self.link.lock().unwrap().take() {
            drop_link(link);
        }
        self.pending.abandon_all();
        self.hooks.lock().unwrap().clear();
        for sink in self.apis.sinks() {
            sink.connection_lost(self, why);
        }
        if let Some(w) = self.welcome.lock().unwrap().take() {
            let _ = w.send(Err(Error::Disconnected(why.to_string())));
        }
        // Senders waiting on a full queue fail, once the last writer has let the queue go.
        let out_rx = self.out_rx.clone();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move { out_rx.lock().await.close() });
        }
    }

    /// Makes the client [`ConnectionState::Connected`] on link `generation`, if that link is still
    /// the client's (it may have failed while it was being set up). Returns whether it did.
    fn go_connected(&self, generation: u64) -> bool {
        let link = self.link.lock().unwrap();
        if link.as_ref().map(|l| l.generation) != Some(generation) {
            return false;
        }
        self.state.send_if_modified(|s| {
            if *s == ConnectionState::Reconnecting {
                *s = ConnectionState::Connected;
                true
            } else {
                false
            }
        })
    }

    /// Link `generation` failed: the client reconnects, or closes when it may not.
    fn link_lost(&self, generation: u64, why: &str) {
        {
            let mut link = self.link.lock().unwrap();
            if link.as_ref().map(|l| l.generation) != Some(generation) {
                // An older link, or one the client is closing or replacing itself.
                return;
            }
            let dismissed = self.dismissed.lock().unwrap().clone();
            if let Some(reason) = dismissed {
                drop(link);
                self.mark_closed(&reason);
                return;
            }
            if !self.opts.reconnect {
                drop(link);
                self.mark_closed(why);
                return;
            }
            if *self.state.borrow() != ConnectionState::Connected {
                // Lost while being set up: the attempt that set it up fails at once, or sees
                // the link gone when it would turn Connected.
                self.link_up.store(false, Ordering::Release);
                if let Some(l) = link.take() {
                    drop_link(l);
                }
                if let Some(w) = self.welcome.lock().unwrap().take() {
                    let _ = w.send(Err(Error::Disconnected(why.to_string())));
                }
                drop(link);
                return;
            }
            if let Some(l) = link.take() {
                drop_link(l);
            }
        }
        self.link_up.store(false, Ordering::Release);
        if self.state.send_replace(ConnectionState::Reconnecting) != ConnectionState::Connected {
            return;
        }
        tracing::info!(client = %self.id, "link to the relay lost ({why}); reconnecting");
        // Requests in flight keep waiting: a resumed session answers them.
        for sink in self.apis.sinks() {
            sink.link_down(self, why);
        }
        tokio::spawn(reconnect(self.me.clone()));
    }

    /// Opens a link to the relay and waits for its welcome: the link is then the client's.
    async fn establish(self: &Arc<Self>, token: Option<String>) -> Result<Welcome> {
        // Events of older links are not counted from now on (see `on_event`).
        let (generation, received) = {
            let received = self.received.lock().unwrap();
            (
                self.generation.fetch_add(1, Ordering::AcqRel) + 1,
                *received,
            )
        };
        *self.dismissed.lock().unwrap() = None;
        let (welcome_tx, welcome_rx) = oneshot::channel();
        *self.welcome.lock().unwrap() = Some(welcome_tx);
        let (go_on_tx, go_on_rx) = oneshot::channel();
        *self.go_on.lock().unwrap() = Some(go_on_tx);
        let url = &self.url;
        let sep = if url.contains('?') { '&' } else { '?' };
        let mut full_url = format!(
            "{url}{sep}{}={}&{}=1",
            protocol::QUERY_CLIENT_ID,
            protocol::percent_encode(&self.id),
            protocol::QUERY_EXTENSIONS
        );
        match self.resume.lock().unwrap().as_deref() {
            Some(secret) => full_url.push_str(&format!(
                "&{}={}&{}={received}",
                protocol::QUERY_RESUME,
                protocol::percent_encode(secret),
                protocol::QUERY_RECEIVED,
            )),
            None => full_url.push_str(&format!("&{}=0", protocol::QUERY_RECEIVED)),
        }
        let weak = self.me.clone();
        let weak_close = weak.clone();
        let weak_err = weak.clone();
        let mut builder = ClientBuilder::new(full_url)
            .transport_type(TransportType::Websocket)
            .reconnect(false);
        if let Some(token) = &token {
            builder = builder.auth(serde_json::json!({ crate::auth::AUTH_TOKEN: token }));
        }
        if let Some(pem) = &self.opts.ca_cert {
            let connector = tls_connector(pem).map_err(|e| Error::Connect {
                url: url.to_string(),
                source: Arc::new(e),
            })?;
            builder = builder.tls_config(connector);
        }
        let connecting = builder
            .on_any(move |ev, payload, _| {
                if let Some(inner) = weak.upgrade() {
                    inner.on_event(generation, &String::from(ev), payload);
                }
                futures::future::ready(()).boxed()
            })
            .on("close", move |_, _| {
                if let Some(inner) = weak_close.upgrade() {
                    inner.link_lost(generation, "the server closed the connection");
                }
                futures::future::ready(()).boxed()
            })
            .on("error", move |payload, _| {
                if let Some(inner) = weak_err.upgrade() {
                    if inner.generation.load(Ordering::Acquire) != generation {
                        return futures::future::ready(()).boxed();
                    }
                    tracing::debug!(client = %inner.id, "socket.io client error: {payload:?}");
                    match connect_error(&payload) {
                        Some(message) => inner.refused(message),
                        None => inner.on_transport_error(generation),
                    }
                }
                futures::future::ready(()).boxed()
            })
            .connect();
        let connect_failed = |source: Arc<dyn std::error::Error + Send + Sync>| Error::Connect {
            url: url.to_string(),
            source,
        };
        let timeout = self.opts.connect_timeout;
        let sio = match tokio::time::timeout(timeout, connecting).await {
            Ok(Ok(sio)) => sio,
            Ok(Err(e)) => return Err(connect_failed(tls::explain(e))),
            Err(_) => {
                return Err(connect_failed(Arc::new(Error::Timeout {
                    peer: None,
                    event: "connect".into(),
                    after: timeout,
                })))
            }
        };
        let relay_addrs = nodelay::resolve(url).await;
        let tuned = nodelay::set_on_sockets_to(&relay_addrs);
        tracing::trace!(client = %self.id, tuned, "TCP_NODELAY set on sockets to the relay");
        let (stop_tx, stop_rx) = oneshot::channel();
        {
            let mut link = self.link.lock().unwrap();
            if *self.state.borrow() == ConnectionState::Closed {
                drop(link);
                let _ = sio.disconnect().await;
                return Err(self.closed_error());
            }
            if let Some(old) = link.replace(Link {
                sio: sio.clone(),
                generation,
                _stop: stop_tx,
            }) {
                drop_link(old);
            }
        }
        // The writer is the one task that writes to the link (an event with binary attachments
        // is several packets): confirmations go through it too.
        let (confirm_tx, confirm_rx) = watch::channel(0u64);
        tokio::spawn(writer(
            sio.clone(),
            self.out_rx.clone(),
            stop_rx,
            go_on_rx,
            confirm_rx,
            generation,
            self.me.clone(),
        ));

        let outcome = match tokio::time::timeout(timeout, welcome_rx).await {
            Ok(Ok(Ok(welcome))) => Ok(welcome),
            Ok(Ok(Err(e))) => Err(e),
            Ok(Err(_)) => Err(Error::Disconnected(
                "the connection closed during the handshake".into(),
            )),
            Err(_) => Err(connect_failed(Arc::new(Error::Timeout {
                peer: None,
                event: format!(
                    "{} for '{}' (is it a socketio-p2p relay?)",
                    event::P2P_WELCOME,
                    self.id
                ),
                after: timeout,
            }))),
        };
        match outcome {
            Ok(welcome) => {
                *self.resume.lock().unwrap() = welcome.resume.clone();
                if !welcome.resumed {
                    // A new session: what waited for an answer from the old one gets none.
                    self.pending.abandon_all();
                    self.hooks.lock().unwrap().clear();
                }
                tokio::spawn(confirm_received(self.me.clone(), confirm_tx, generation));
                self.link_up.store(true, Ordering::Release);
                self.welcomed.send_replace(generation);
                Ok(welcome)
            }
            Err(e) => {
                let mut link = self.link.lock().unwrap();
                if link.as_ref().map(|l| l.generation) == Some(generation) {
                    if let Some(l) = link.take() {
                        drop_link(l);
                    }
                }
                Err(e)
            }
        }
    }

    /// After a new session began (the relay did not know the old one): joins the rooms again,
    /// creates this service's topics again and subscribes to the topics again. What fails is
    /// logged; the client goes on.
    async fn restore(self: &Arc<Self>) {
        let (rooms, topics, subscriptions) = {
            let s = self.session.lock().unwrap();
            (s.rooms.clone(), s.topics.clone(), s.subscriptions.clone())
        };
        let timeout = self.opts.timeout;
        for room in rooms {
            if let Err(e) = self
                .request(event::JOIN_ROOM, vec![Value::from(room.as_str())], timeout)
                .await
            {
                tracing::warn!(client = %self.id, "joining room '{room}' again failed: {e}");
            }
        }
        for topic in topics {
            if let Err(e) = crate::service::client::create_topic_again(self, &topic).await {
                tracing::warn!(client = %self.id, "creating topic '{topic}' again failed: {e}");
            }
        }
        // A service may come back after this client: each subscription is asked for again until
        // the service accepts it, a bounded number of times, while this session lasts.
        let generation = self.generation.load(Ordering::Acquire);
        for (service, topic) in subscriptions {
            let me = self.me.clone();
            tokio::spawn(async move {
                for attempt in 0..SUBSCRIBE_AGAIN_ATTEMPTS {
                    let Some(inner) = me.upgrade() else { return };
                    let key = (service.clone(), topic.clone());
                    if inner.generation.load(Ordering::Acquire) != generation
                        || !inner.session.lock().unwrap().subscriptions.contains(&key)
                    {
                        return;
                    }
                    let result =
                        crate::service::client::subscribe_again(&inner, &service, &topic).await;
                    let Err(e) = result else { return };
                    tracing::debug!(
                        client = %inner.id,
                        attempt,
                        "subscribing to topic '{topic}' of '{service}' again failed: {e}"
                    );
                    if attempt + 1 == SUBSCRIBE_AGAIN_ATTEMPTS {
                        tracing::warn!(
                            client = %inner.id,
                            "gave up subscribing to topic '{topic}' of '{service}' again: {e}"
                        );
                        return;
                    }
                    let delay = inner.opts.backoff(attempt);
                    drop(inner);
                    tokio::time::sleep(delay).await;
                }
            });
        }
    }

    /// The relay refused the connection with a Socket.IO connection error (its authenticator
    /// did): the handshake fails with the relay's reason.
    fn refused(&self, message: String) {
        let reason = crate::auth::RefusalReason::of_message(&message);
        if let Some(w) = self.welcome.lock().unwrap().take() {
            let _ = w.send(Err(Error::Unauthorized { reason, message }));
        }
    }

    /// rust_socketio reports every failure (a dropped transport, a ping timeout, a packet it
    /// could not parse) through one error callback whose only content is text, and it does not
    /// tell when its packet stream ends. So the client does not read the text: it asks the relay
    /// something cheap, and if no answer comes (or the request cannot even be sent), the link is
    /// gone. A lost link fails the probe at once, as the writer's send fails.
    fn on_transport_error(&self, generation: u64) {
        if !self.link_up.load(Ordering::Acquire) {
            // Not welcomed yet: the attempt setting the link up fails by its own timeout.
            if let Some(w) = self.welcome.lock().unwrap().take() {
                let _ = w.send(Err(Error::Disconnected(
                    "the connection failed during the handshake".into(),
                )));
            }
            return;
        }
        let Some(me) = self.me.upgrade() else { return };
        tokio::spawn(async move {
            let limit = me.opts.timeout.min(Duration::from_secs(3));
            if let Err(e @ (Error::Timeout { .. } | Error::Disconnected(_))) =
                me.request(event::LIST_CLIENTS, vec![], limit).await
            {
                me.link_lost(
                    generation,
                    &format!("the relay stopped answering after a transport error: {e}"),
                );
            }
        });
    }

    /// An event that came on link `generation`: counted, if that link is still the client's,
    /// and handed to the demultiplexer.
    fn on_event(self: &Arc<Self>, generation: u64, name: &str, payload: Payload) {
        let count = {
            let mut received = self.received.lock().unwrap();
            if self.generation.load(Ordering::Acquire) != generation {
                return;
            }
            match name {
                // Not counted; a welcome starts the count of a new session.
                event::P2P_WELCOME | event::P2P_RECEIVED => {}
                _ => *received += 1,
            }
            *received
        };
        let bytes = match &payload {
            Payload::Text(args) => args.iter().map(crate::server::json_size).sum::<usize>(),
            Payload::Binary(b) => b.len(),
            #[allow(deprecated)]
            Payload::String(s) => s.len(),
        };
        let bytes = self
            .received_bytes
            .fetch_add(bytes as u64, Ordering::Relaxed)
            + bytes as u64;
        if count >= self.wake_at.load(Ordering::Acquire)
            || bytes >= self.wake_bytes_at.load(Ordering::Acquire)
        {
            self.received_news.notify_one();
        }
        self.demux(name, payload);
    }

    /// `P2P_RECEIVED(count)`: the relay received `count` events of this session.
    fn on_confirmed(&self, args: Vec<Value>) {
        let count = match args.as_slice() {
            [n] => n.as_u64(),
            _ => None,
        };
        let ok = count.is_some_and(|n| self.kept.lock().unwrap().confirm(n));
        if !ok {
            tracing::warn!(client = %self.id, "bad {}: {args:?}", event::P2P_RECEIVED);
            return;
        }
        self.confirmed_news.notify_waiters();
    }

    /// The demultiplexer: every event from the server comes through here.
    fn demux(self: &Arc<Self>, name: &str, payload: Payload) {
        let args = match payload {
            Payload::Text(v) => v,
            Payload::Binary(mut data) => {
                for sink in self.apis.sinks() {
                    match sink.binary(self, name, data) {
                        Some(back) => data = back,
                        None => return,
                    }
                }
                tracing::debug!(client = %self.id, len = data.len(), "binary event '{name}' ignored");
                return;
            }
            #[allow(deprecated)]
            Payload::String(s) => vec![Value::String(s)],
        };
        match name {
            event::P2P_RECEIVED => self.on_confirmed(args),
            event::P2P_RES => self.on_res(args),
            event::P2P_REQ => self.on_req(args),
            event::P2P_BATCH => match RelayedBatch::from_values(args) {
                Ok(RelayedBatch(items)) => {
                    for item in items {
                        match item {
                            Ok(item) => self.deliver(Incoming {
                                event: item.event,
                                args: item.args,
                                request: None,
                                origin: Origin::Direct,
                            }),
                            Err(e) => tracing::warn!(client = %self.id, "bad P2P_BATCH item: {e}"),
                        }
                    }
                }
                Err(e) => tracing::warn!(client = %self.id, "bad P2P_BATCH: {e}"),
            },
            protocol::RoomEmit::EVENT => match protocol::RoomEmit::from_values(args) {
                Ok(e) => self.deliver(Incoming {
                    event: e.event,
                    args: e.args,
                    request: None,
                    origin: Origin::Room(e.room),
                }),
                Err(e) => {
                    tracing::warn!(client = %self.id, "bad {}: {e}", protocol::RoomEmit::EVENT)
                }
            },
            event::P2P_WELCOME => {
                let welcome = Welcome::from_values(args).unwrap_or_else(|e| {
                    tracing::debug!(client = %self.id, "P2P_WELCOME without its id: {e}");
                    Welcome {
                        client_id: self.id.clone(),
                        resume: None,
                        resumed: false,
                        received: None,
                    }
                });
                let go_on = if welcome.resumed {
                    let confirmed = self.kept.lock().unwrap().confirmed;
                    Some(welcome.received.unwrap_or(confirmed))
                } else {
                    // A new session: its counts start here.
                    *self.received.lock().unwrap() = 0;
                    None
                };
                if let Some(tx) = self.go_on.lock().unwrap().take() {
                    let _ = tx.send(go_on);
                }
                if let Some(w) = self.welcome.lock().unwrap().take() {
                    let _ = w.send(Ok(welcome));
                }
            }
            event::SERVER_ERROR => {
                let Ok(notice) = ServerError::from_values(args) else {
                    return;
                };
                if let Some(w) = self.welcome.lock().unwrap().take() {
                    let e = match notice.error {
                        Some(wire) => Error::from_wire(wire, crate::error::RELAY),
                        None => Error::Refused(notice.message),
                    };
                    let _ = w.send(Err(e));
                    return;
                }
                tracing::warn!(client = %self.id, "SERVER_ERROR: {}", notice.message);
                if notice.message.starts_with(DISMISSAL) {
                    *self.dismissed.lock().unwrap() = Some(notice.message.clone());
                }
                for sink in self.apis.sinks() {
                    sink.server_error(self, &notice.message);
                }
            }
            event::MULTI_API_TARGET_DISCONNECT => match TargetDisconnect::from_values(args) {
                Ok(TargetDisconnect(peer)) => {
                    for sink in self.apis.sinks() {
                        sink.peer_gone(self, &peer);
                    }
                }
                Err(e) => tracing::warn!(client = %self.id, "{e}"),
            },
            _ => self.deliver(Incoming {
                event: name.to_string(),
                args,
                request: None,
                origin: Origin::Direct,
            }),
        }
    }

    fn on_res(&self, args: Vec<Value>) {
        let res = match Response::from_values(args) {
            Ok(res) => res,
            Err(e) => {
                tracing::warn!(client = %self.id, "malformed P2P_RES: {e}");
                return;
            }
        };
        let hook = self.hooks.lock().unwrap().remove(&res.id);
        if let Some(hook) = hook {
            hook(&res.body);
        }
        self.pending.resolve(res.id, res.body);
    }

    /// `P2P_REQ(id, event, ...args)`: a request the relay passed to this client.
    fn on_req(self: &Arc<Self>, args: Vec<Value>) {
        let req = match Request::<Vec<Value>>::from_values(args) {
            Ok(req) => req,
            Err(e) => {
                tracing::warn!(client = %self.id, "malformed P2P_REQ: {e}");
                return;
            }
        };
        self.deliver(Incoming {
            event: req.event,
            args: req.args,
            request: Some(req.id),
            origin: Origin::Direct,
        });
    }

    /// Offers an event to the APIs in turn; a request none takes is answered with an error, so
    /// that its sender does not wait.
    fn deliver(self: &Arc<Self>, mut ev: Incoming) {
        for sink in self.apis.sinks() {
            match sink.event(self, ev) {
                Some(back) => ev = back,
                None => return,
            }
        }
        match ev.request {
            Some(id) => {
                self.refuse(id, format!("no listener for '{}'", ev.event));
            }
            None => tracing::debug!(client = %self.id, "event '{}' ignored", ev.event),
        }
    }
}

/// The message of a Socket.IO connection error (`connect_error`), if `payload` is one.
///
/// rust_socketio 0.6 has no callback of its own for it: it calls the error callback with the
/// text `Received an ConnectError frame: ` followed by the packet's data, `{"message": "..."}`.
fn connect_error(payload: &Payload) -> Option<String> {
    const PREFIX: &str = "Received an ConnectError frame: ";
    let text = match payload {
        Payload::Text(v) => v.first()?.as_str()?,
        #[allow(deprecated)]
        Payload::String(s) => s.as_str(),
        Payload::Binary(_) => return None,
    };
    let data = text.strip_prefix(PREFIX)?;
    match serde_json::from_str::<Value>(data) {
        Ok(Value::Object(o)) => match o.get("message") {
            Some(Value::String(m)) => Some(m.clone()),
            _ => Some(data.to_string()),
        },
        Ok(Value::String(m)) => Some(m),
        _ => Some(data.to_string()),
    }
}

/// Lets a link go: its writer stops, and its connection is closed in the background.
fn drop_link(link: Link) {
    let sio = link.sio.clone();
    drop(link);
    if let Ok(rt) = tokio::runtime::Handle::try_current() {
        rt.spawn(async move {
            let _ = sio.disconnect().await;
        });
    }
}

/// Connects again after a lost link, with growing waits, until a link is up, the client is
/// closed or dropped, or the attempts run out.
async fn reconnect(me: Weak<ClientInner>) {
    let mut attempt: u32 = 0;
    loop {
        let Some(inner) = me.upgrade() else { return };
        let delay = inner.opts.backoff(attempt);
        let mut state = inner.state.subscribe();
        drop(inner);
        let closed = tokio::time::timeout(delay, state.wait_for(|s| *s == ConnectionState::Closed))
            .await
            .is_ok();
        if closed {
            return;
        }
        let Some(inner) = me.upgrade() else { return };
        attempt = attempt.saturating_add(1);
        let token = inner
            .opts
            .token_refresh
            .as_ref()
            .and_then(|refresh| refresh())
            .or_else(|| inner.opts.token.clone());
        match inner.establish(token).await {
            Ok(welcome) => {
                let generation = inner.generation.load(Ordering::Acquire);
                for sink in inner.apis.sinks() {
                    sink.link_up(&inner, welcome.resumed);
                }
                if welcome.resumed {
                    tracing::info!(client = %inner.id, "reconnected: session resumed");
                } else {
                    tracing::info!(client = %inner.id, "reconnected: new session");
                    inner.restore().await;
                }
                // Closed meanwhile (disconnect): stays closed. Lost again meanwhile: go on.
                if inner.go_connected(generation)
                    || *inner.state.borrow() == ConnectionState::Closed
                {
                    return;
                }
            }
            Err(e) => {
                if *inner.state.borrow() == ConnectionState::Closed {
                    return;
                }
                let fatal =
                    matches!(e, Error::Unauthorized { .. }) && inner.opts.token_refresh.is_none();
                let spent = inner
                    .opts
                    .max_reconnect_attempts
                    .is_some_and(|max| attempt >= max);
                if fatal || spent {
                    inner.mark_closed(&format!(
                        "reconnecting to the relay failed after {attempt} attempt(s): {e}"
                    ));
                    return;
                }
                tracing::debug!(client = %inner.id, attempt, "reconnection attempt failed: {e}");
            }
        }
    }
}

/// Takes queued events and emits them in order, packing runs of `P2P_EMIT`s into batches, until
/// its link stops or fails.
async fn writer(
    sio: SioClient,
    out: Arc<tokio::sync::Mutex<mpsc::Receiver<Outgoing>>>,
    mut stop: oneshot::Receiver<()>,
    go_on: oneshot::Receiver<Option<u64>>,
    mut confirm: watch::Receiver<u64>,
    generation: u64,
    inner: Weak<ClientInner>,
) {
    let mut welcomed = match inner.upgrade() {
        Some(inner) => inner.welcomed.subscribe(),
        None => return,
    };
    tokio::select! {
        r = welcomed.wait_for(|g| *g >= generation) => if r.is_err() { return },
        _ = &mut stop => return,
    }
    let mut rx = tokio::select! {
        rx = out.lock() => rx,
        _ = &mut stop => return,
    };
    // Nothing goes out before the welcome: it says where the session goes on from.
    let go_on = tokio::select! {
        go_on = go_on => match go_on {
            Ok(go_on) => go_on,
            Err(_) => return,
        },
        _ = &mut stop => return,
    };
    let again = match inner.upgrade() {
        Some(inner) => inner.go_on_from(go_on),
        None => return,
    };
    for (name, payload) in again {
        let sent = tokio::select! {
            sent = sio.emit(name, payload) => sent,
            _ = &mut stop => return,
        };
        if let Err(e) = sent {
            if let Some(inner) = inner.upgrade() {
                inner.link_lost(generation, &format!("sending failed: {e}"));
            }
            return;
        }
    }
    let mut held: Option<Outgoing> = None;
    // Writes `P2P_RECEIVED(count)`; false when the link failed.
    let confirm_now = |n: u64| {
        let sio = sio.clone();
        async move {
            sio.emit(event::P2P_RECEIVED, Payload::Text(vec![Value::from(n)]))
                .await
                .is_ok()
        }
    };
    loop {
        let first = match held.take() {
            Some(item) => item,
            None => tokio::select! {
                item = rx.recv() => match item {
                    Some(item) => item,
                    None => break,
                },
                changed = confirm.changed() => {
                    let n = *confirm.borrow_and_update();
                    if changed.is_err() || !confirm_now(n).await {
                        // The confirmations stopped: the link is going.
                        if changed.is_ok() {
                            if let Some(inner) = inner.upgrade() {
                                inner.link_lost(generation, "sending failed");
                            }
                        }
                        break;
                    }
                    continue;
                }
                _ = &mut stop => break,
            },
        };
        let (name, payload) = match first {
            Outgoing::Event(name, args) => (name, Payload::Text(args)),
            Outgoing::Binary(name, bytes) => (name, Payload::Binary(bytes)),
            Outgoing::Emit(payload) => {
                let mut batch = vec![payload];
                while batch.len() < MAX_BATCH {
                    match rx.try_recv() {
                        Ok(Outgoing::Emit(p)) => batch.push(p),
                        Ok(other) => {
                            held = Some(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                if batch.len() == 1 {
                    (event::P2P_EMIT, Payload::Text(batch))
                } else {
                    (event::P2P_BATCH, Payload::Text(batch))
                }
            }
        };
        // Kept until the relay confirms it, once there is room.
        let Some(me) = inner.upgrade() else { break };
        let size = kept_size(name, &payload);
        loop {
            let freed = me.confirmed_news.notified();
            {
                let mut kept = me.kept.lock().unwrap();
                if kept.entries.is_empty() || kept.bytes + size <= me.opts.resume_replay_bytes {
                    kept.push(name, &payload, size);
                    break;
                }
            }
            tokio::select! {
                _ = freed => {}
                // The relay waits for this client's confirmations too.
                Ok(()) = confirm.changed() => {
                    let n = *confirm.borrow_and_update();
                    confirm_now(n).await;
                }
                _ = &mut stop => {
                    // Taken from the queue: kept as sent, the relay's count tells it was not.
                    let mut kept = me.kept.lock().unwrap();
                    kept.push(name, &payload, size);
                    if let Some(item) = held.take() {
                        kept.push_outgoing(item);
                    }
                    return;
                }
            }
        }
        drop(me);
        let sent = tokio::select! {
            sent = sio.emit(name, payload) => sent,
            _ = &mut stop => break,
        };
        if let Err(e) = sent {
            if let Some(inner) = inner.upgrade() {
                inner.link_lost(generation, &format!("sending failed: {e}"));
            }
            break;
        }
    }
    // What was taken from the queue and not written goes with what is sent again after a resume.
    if let (Some(item), Some(inner)) = (held, inner.upgrade()) {
        inner.kept.lock().unwrap().push_outgoing(item);
    }
}

impl ClientInner {
    /// Where a new link goes on from, once welcomed: in a resumed session, what the relay had not
    /// received (`count` is its count), numbered from its count on, stream frames left out; in a
    /// new session, from nothing.
    fn go_on_from(&self, count: Option<u64>) -> Vec<(&'static str, Payload)> {
        let mut kept = self.kept.lock().unwrap();
        let Some(count) = count else {
            let lost = kept.entries.len();
            if lost > 0 {
                tracing::warn!(
                    client = %self.id,
                    events = lost,
                    "a new session began: events sent before the link dropped may not have \
                     reached the relay"
                );
            }
            *kept = Kept::new();
            return Vec::new();
        };
        if !kept.confirm(count) {
            tracing::warn!(
                client = %self.id,
                "the relay's count of what it received ({count}) does not match what was sent \
                 ({} confirmed, {} sent)",
                kept.confirmed,
                kept.sent
            );
        }
        kept.entries.retain(|(_, p, _)| p.is_some());
        kept.sent = kept.confirmed + kept.entries.len() as u64;
        kept.entries
            .iter()
            .filter_map(|(name, p, _)| p.clone().map(|p| (*name, p)))
            .collect()
    }
}

/// Confirms to the relay what this client received, with `P2P_RECEIVED`, once `CONFIRM_EVERY`
/// events or `CONFIRM_BYTES` bytes came since the last confirmation, or `CONFIRM_AFTER` after
/// something came, while link `generation` is the client's.
async fn confirm_received(me: Weak<ClientInner>, confirm: watch::Sender<u64>, generation: u64) {
    let current = |inner: &ClientInner| inner.generation.load(Ordering::Acquire) == generation;
    let count = |inner: &ClientInner| *inner.received.lock().unwrap();
    let bytes = |inner: &ClientInner| inner.received_bytes.load(Ordering::Relaxed);
    let (mut told, mut told_bytes, news) = match me.upgrade() {
        Some(inner) => (count(&inner), bytes(&inner), inner.received_news.clone()),
        None => return,
    };
    loop {
        let Some(inner) = me.upgrade() else { return };
        if !current(&inner) || *inner.state.borrow() == ConnectionState::Closed {
            return;
        }
        // Something new, then more of it or a while.
        let past = |inner: &ClientInner, seen: u64| count(inner) > seen;
        if !past(&inner, told) {
            let news = news.notified();
            inner.wake_at.store(told + 1, Ordering::Release);
            inner.wake_bytes_at.store(u64::MAX, Ordering::Release);
            if past(&inner, told) {
                continue;
            }
            drop(inner);
            let _ = tokio::time::timeout(Duration::from_secs(1), news).await;
            continue;
        }
        inner
            .wake_at
            .store(told + crate::server::CONFIRM_EVERY, Ordering::Release);
        inner
            .wake_bytes_at
            .store(told_bytes + crate::server::CONFIRM_BYTES, Ordering::Release);
        drop(inner);
        let until = tokio::time::Instant::now() + crate::server::CONFIRM_AFTER;
        loop {
            let news = news.notified();
            let Some(inner) = me.upgrade() else { return };
            if past(&inner, told + crate::server::CONFIRM_EVERY - 1)
                || bytes(&inner) >= told_bytes + crate::server::CONFIRM_BYTES
            {
                break;
            }
            drop(inner);
            if tokio::time::timeout_at(until, news).await.is_err() {
                break;
            }
        }
        let Some(inner) = me.upgrade() else { return };
        if !current(&inner) {
            return;
        }
        let n = count(&inner);
        told_bytes = bytes(&inner);
        drop(inner);
        if confirm.send(n).is_err() {
            return;
        }
        told = n;
    }
}

impl Drop for ClientInner {
    fn drop(&mut self) {
        if let Some(link) = self.link.get_mut().unwrap().take() {
            drop_link(link);
        }
    }
}
