//! The Rust client: a connection to the relay under a client id.
//!
//! This module is the connection alone; it knows no API. Every event that reaches the client goes
//! through one demultiplexer (`ClientInner::demux`): answers to this client's requests go to the
//! pending-request table, the handshake and decoding stay here, and everything else is offered
//! to the APIs' `EventSink`s, which the client is built with (`Apis`). Outgoing events go
//! through one writer task that keeps them in order and packs runs of fire-and-forget messages
//! into `P2P_BATCH` events.

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
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
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
}

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
        }
    }
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

/// Most `P2P_EMIT`s packed into one `P2P_BATCH`.
const MAX_BATCH: usize = 512;

pub(crate) struct ClientInner {
    pub(crate) id: String,
    pub(crate) opts: ClientOptions,
    sio: OnceLock<SioClient>,
    pub(crate) out: mpsc::Sender<Outgoing>,
    /// This client's requests waiting for their `P2P_RES`.
    pending: PendingRequests<ResAnswer>,
    /// Hooks of requests, by request id (see [`AnswerHook`]).
    hooks: Mutex<HashMap<u64, AnswerHook>>,
    /// The APIs this client was built with.
    apis: Apis,
    pub(crate) me: Weak<ClientInner>,
    welcome: Mutex<Option<oneshot::Sender<Result<()>>>>,
    closed: watch::Sender<bool>,
    closed_flag: AtomicBool,
    /// Why the connection closed, once it has.
    closed_why: OnceLock<String>,
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
        let (welcome_tx, welcome_rx) = oneshot::channel();
        let (closed, _) = watch::channel(false);
        let inner = Arc::new_cyclic(|me| ClientInner {
            me: me.clone(),
            apis,
            id: client_id.to_string(),
            opts: opts.clone(),
            sio: OnceLock::new(),
            out: out_tx,
            pending: PendingRequests::new(MAX_PENDING),
            hooks: Mutex::new(HashMap::new()),
            welcome: Mutex::new(Some(welcome_tx)),
            closed,
            closed_flag: AtomicBool::new(false),
            closed_why: OnceLock::new(),
        });

        let sep = if url.contains('?') { '&' } else { '?' };
        let full_url = format!(
            "{url}{sep}{}={}&{}=1",
            protocol::QUERY_CLIENT_ID,
            protocol::percent_encode(client_id),
            protocol::QUERY_EXTENSIONS
        );
        let weak = Arc::downgrade(&inner);
        let weak_close = weak.clone();
        let weak_err = weak.clone();
        let mut builder = ClientBuilder::new(full_url)
            .transport_type(TransportType::Websocket)
            .reconnect(false);
        if let Some(token) = &opts.token {
            builder = builder.auth(serde_json::json!({ crate::auth::AUTH_TOKEN: token }));
        }
        if let Some(pem) = &opts.ca_cert {
            let connector = tls_connector(pem).map_err(|e| Error::Connect {
                url: url.to_string(),
                source: Arc::new(e),
            })?;
            builder = builder.tls_config(connector);
        }
        let connecting = builder
            .on_any(move |ev, payload, _| {
                if let Some(inner) = weak.upgrade() {
                    inner.demux(&String::from(ev), payload);
                }
                futures::future::ready(()).boxed()
            })
            .on("close", move |_, _| {
                if let Some(inner) = weak_close.upgrade() {
                    inner.mark_closed("the server closed the connection");
                }
                futures::future::ready(()).boxed()
            })
            .on("error", move |payload, _| {
                if let Some(inner) = weak_err.upgrade() {
                    tracing::debug!(client = %inner.id, "socket.io client error: {payload:?}");
                    match connect_error(&payload) {
                        Some(message) => inner.refused(message),
                        None => inner.on_transport_error(),
                    }
                }
                futures::future::ready(()).boxed()
            })
            .connect();
        let sio = match tokio::time::timeout(opts.connect_timeout, connecting).await {
            Ok(Ok(sio)) => sio,
            Ok(Err(e)) => {
                return Err(Error::Connect {
                    url: url.to_string(),
                    source: tls::explain(e),
                })
            }
            Err(_) => {
                return Err(Error::Connect {
                    url: url.to_string(),
                    source: Arc::new(Error::Timeout {
                        peer: None,
                        event: "connect".into(),
                        after: opts.connect_timeout,
                    }),
                })
            }
        };
        let _ = inner.sio.set(sio.clone());
        let relay_addrs = nodelay::resolve(url).await;
        let tuned = nodelay::set_on_sockets_to(&relay_addrs);
        tracing::trace!(client = %client_id, tuned, "TCP_NODELAY set on sockets to the relay");
        tokio::spawn(writer(sio.clone(), out_rx, Arc::downgrade(&inner)));

        match tokio::time::timeout(opts.connect_timeout, welcome_rx).await {
            Ok(Ok(Ok(()))) => Ok(P2pClient { inner }),
            Ok(Ok(Err(e))) => {
                let _ = sio.disconnect().await;
                Err(e)
            }
            Ok(Err(_)) => Err(Error::Disconnected(
                "the connection closed during the handshake".into(),
            )),
            Err(_) => {
                let _ = sio.disconnect().await;
                Err(Error::Connect {
                    url: url.to_string(),
                    source: Arc::new(Error::Timeout {
                        peer: None,
                        event: format!(
                            "{} for '{client_id}' (is it a socketio-p2p relay?)",
                            event::P2P_WELCOME
                        ),
                        after: opts.connect_timeout,
                    }),
                })
            }
        }
    }

    /// A handle that does not keep the connection open.
    pub fn downgrade(&self) -> WeakP2pClient {
        WeakP2pClient(Arc::downgrade(&self.inner))
    }

    /// This client's id.
    pub fn id(&self) -> &str {
        &self.inner.id
    }

    /// Whether the connection is still open.
    pub fn is_connected(&self) -> bool {
        !self.inner.closed_flag.load(Ordering::Acquire)
    }

    /// Resolves when the connection is closed (by either side).
    pub async fn closed(&self) {
        let mut rx = self.inner.closed.subscribe();
        let _ = rx.wait_for(|c| *c).await;
    }

    /// Closes the connection. Pending calls fail with [`Error::Disconnected`]; peers that talked
    /// to this client are told it left. Closing a connection that already failed is not an
    /// error: either way the client is closed afterwards.
    pub async fn disconnect(&self) -> Result<()> {
        self.inner.mark_closed("disconnected by this client");
        if let Some(sio) = self.inner.sio.get() {
            if let Err(e) = sio.disconnect().await {
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

    pub(crate) fn check_open(&self) -> Result<()> {
        if self.closed_flag.load(Ordering::Acquire) {
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

    /// Queues an event for the writer, waiting when the queue is full.
    pub(crate) async fn send(&self, item: Outgoing) -> Result<()> {
        self.check_open()?;
        self.out.send(item).await.map_err(|_| self.closed_error())
    }

    /// Queues an event without waiting; used from synchronous handlers.
    pub(crate) fn send_now(&self, item: Outgoing) {
        match self.out.try_send(item) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(item)) => {
                let out = self.out.clone();
                tokio::spawn(async move {
                    let _ = out.send(item).await;
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
        self.check_open()?;
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
                "client '{}' lost its connection while waiting for '{}'",
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

    fn mark_closed(&self, why: &str) {
        let _ = self.closed_why.set(why.to_string());
        if self.closed_flag.swap(true, Ordering::AcqRel) {
            return;
        }
        tracing::debug!(client = %self.id, "connection closed: {why}");
        self.pending.abandon_all();
        self.hooks.lock().unwrap().clear();
        for sink in self.apis.sinks() {
            sink.connection_lost(self, why);
        }
        if let Some(w) = self.welcome.lock().unwrap().take() {
            let _ = w.send(Err(Error::Disconnected(why.to_string())));
        }
        self.closed.send_replace(true);
    }

    /// The relay refused the connection with a Socket.IO connection error (its authenticator
    /// did): the handshake fails with the relay's reason.
    fn refused(&self, message: String) {
        let reason = crate::auth::RefusalReason::of_message(&message);
        if let Some(w) = self.welcome.lock().unwrap().take() {
            let _ = w.send(Err(Error::Unauthorized { reason, message }));
        }
        self.mark_closed("the relay refused the connection");
    }

    /// rust_socketio reports every failure (a dropped transport, a ping timeout, a packet it
    /// could not parse) through one error callback whose only content is text, and it does not
    /// tell when its packet stream ends. So the client does not read the text: it asks the relay
    /// something cheap, and if no answer comes (or the request cannot even be sent), the link is
    /// gone. A lost link fails the probe at once, as the writer's send fails.
    fn on_transport_error(&self) {
        if self.closed_flag.load(Ordering::Acquire) {
            return;
        }
        let Some(me) = self.me.upgrade() else { return };
        tokio::spawn(async move {
            let limit = me.opts.timeout.min(Duration::from_secs(3));
            if let Err(e @ (Error::Timeout { .. } | Error::Disconnected(_))) =
                me.request(event::LIST_CLIENTS, vec![], limit).await
            {
                me.mark_closed(&format!(
                    "the relay stopped answering after a transport error: {e}"
                ));
            }
        });
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
                if let Err(e) = Welcome::from_values(args) {
                    tracing::debug!(client = %self.id, "P2P_WELCOME without its id: {e}");
                }
                if let Some(w) = self.welcome.lock().unwrap().take() {
                    let _ = w.send(Ok(()));
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

/// Takes queued events and emits them in order, packing runs of `P2P_EMIT`s into batches.
async fn writer(sio: SioClient, mut rx: mpsc::Receiver<Outgoing>, inner: Weak<ClientInner>) {
    let mut held: Option<Outgoing> = None;
    loop {
        let first = match held.take() {
            Some(item) => item,
            None => match rx.recv().await {
                Some(item) => item,
                None => break,
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
        if let Err(e) = sio.emit(name, payload).await {
            if let Some(inner) = inner.upgrade() {
                inner.mark_closed(&format!("sending failed: {e}"));
            }
            break;
        }
    }
}

impl Drop for ClientInner {
    fn drop(&mut self) {
        if let Some(sio) = self.sio.get().cloned() {
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    let _ = sio.disconnect().await;
                });
            }
        }
    }
}
