//! Client side of the Message API: sending to peers, replies, and the listener registry.
//!
//! Listeners are plain closures called in the order events arrive, on the client's receive path:
//! they should return quickly (spawn a task for slow work). A listener that wants to answer gets a
//! [`Reply`] it may keep and use later, from any task.

pub use super::args::{parse_args, Args, IntoArgs};
pub use super::call::Request;
pub use crate::request::Reply;

use crate::client::{ClientInner, EventSink, Incoming, Origin, Outgoing, P2pClient};
use crate::error::{Error, Result};
use crate::protocol::{event, AddTarget, EmitPayload, FromValues};
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

/// Identifies one registered listener, to remove it with [`P2pClient::remove_listener`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ListenerId(u64);

/// An event from a peer.
#[derive(Debug)]
pub struct PeerMessage {
    /// The sender's client id, as the server vouches for it.
    pub from: String,
    /// The event name.
    pub event: String,
    /// The arguments after the sender id.
    pub args: Vec<Value>,
    /// Present when the sender waits for an answer.
    pub reply: Option<Reply>,
}

impl PeerMessage {
    /// Deserializes the arguments as one typed value: a tuple for several arguments, e.g.
    /// `let (name, n): (String, u32) = msg.parse()?`.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T> {
        parse_args(&self.args)
    }

    /// Deserializes argument `i`.
    pub fn arg<T: DeserializeOwned>(&self, i: usize) -> Result<T> {
        let v = self.args.get(i).cloned().unwrap_or(Value::Null);
        serde_json::from_value(v).map_err(Error::from)
    }

    /// Answers with `value` (see [`Reply::send`]) if the sender waits for an answer and nobody
    /// answered yet; does nothing for a plain message. To know whether the answer went, to answer
    /// later or from another task, use [`reply`](Self::reply) instead.
    pub fn respond(&self, value: impl serde::Serialize) {
        if let Some(r) = &self.reply {
            r.send(value);
        }
    }
}

type PeerHandler = Arc<dyn Fn(PeerMessage) + Send + Sync>;
type RawHandler = Arc<dyn Fn(Vec<Value>) + Send + Sync>;
type RequestHandler = Arc<dyn Fn(Vec<Value>, Reply) + Send + Sync>;
type IdHandler = Arc<dyn Fn(String) + Send + Sync>;

#[derive(Clone)]
enum Handler {
    /// Events from peers: `args[0]` is the sender id.
    Peer(PeerHandler),
    /// Any event with its arguments as they came.
    Raw(RawHandler),
    /// An event that wants an answer, with its arguments as they came.
    Request(RequestHandler),
}

struct Listener {
    id: u64,
    from: Option<String>,
    once: bool,
    handler: Handler,
}

/// Listeners by event name, plus the handlers of peer and server notices.
#[derive(Default)]
struct Registry {
    /// Set when this client is a service: requests nobody listens to are unknown APIs.
    service: bool,
    next: u64,
    by_event: HashMap<String, Vec<Listener>>,
    on_add_target: Vec<IdHandler>,
    on_target_disconnect: Vec<IdHandler>,
    on_server_error: Vec<IdHandler>,
}

impl Registry {
    fn add(&mut self, event: &str, from: Option<&str>, once: bool, handler: Handler) -> ListenerId {
        self.next += 1;
        self.by_event
            .entry(event.to_string())
            .or_default()
            .push(Listener {
                id: self.next,
                from: from.map(str::to_string),
                once,
                handler,
            });
        ListenerId(self.next)
    }

    fn retain(&mut self, mut keep: impl FnMut(&str, &Listener) -> bool) {
        self.by_event.retain(|ev, list| {
            list.retain(|l| keep(ev, l));
            !list.is_empty()
        });
    }
}

/// The Message API's receive side: the listener registry, on the client's demultiplexer.
#[derive(Default)]
pub(crate) struct Listeners(Mutex<Registry>);

/// Whether `inner` is a service (see [`mark_service`]).
fn reg_service(inner: &ClientInner) -> bool {
    registry(inner).service
}

/// Marks `inner` as a service: a request nobody listens to is answered as an unknown API, in the
/// words a server-provided service uses, so callers cannot tell the two apart.
pub(crate) fn mark_service(inner: &ClientInner) {
    registry(inner).service = true;
}

/// The listener registry of `inner`.
fn registry(inner: &ClientInner) -> MutexGuard<'_, Registry> {
    inner.api::<Listeners>().0.lock().unwrap()
}

impl EventSink for Listeners {
    /// Takes every event: a peer's add-target request, else the event's listeners.
    fn event(&self, link: &Arc<ClientInner>, ev: Incoming) -> Option<Incoming> {
        match (ev.request, ev.event.as_str()) {
            (Some(id), event::MULTI_API_ADD_TARGET) => match AddTarget::from_values(ev.args) {
                Ok(AddTarget(source)) => {
                    link.respond(id, Ok(vec![]));
                    peer_added(link, &source);
                }
                Err(e) => link.respond(id, Err(e.into())),
            },
            _ => dispatch(link, &ev.event, ev.args, ev.request, &ev.origin),
        }
        None
    }

    fn peer_gone(&self, link: &Arc<ClientInner>, peer: &str) {
        peer_disconnected(link, peer);
    }

    fn server_error(&self, link: &Arc<ClientInner>, message: &str) {
        server_error(link, message);
    }
}

/// Calls the listeners of `name`. Peer listeners see `args[0]` as the sender of an event
/// addressed to this client; a room emit has no sender, so it reaches raw listeners only.
fn dispatch(
    inner: &Arc<ClientInner>,
    name: &str,
    mut args: Vec<Value>,
    reply: Option<u64>,
    origin: &Origin,
) {
    // rust_socketio hands an event without arguments (`["X"]` on the wire, e.g. a topic's
    // `<room>-TOPIC_BEING_DESTROYED`) to its catch-all callback as a "message" event whose one
    // argument is "X"; an event this client listens to is given back its own name.
    if name == "message" && reply.is_none() && *origin == Origin::Direct {
        if let Some(ev) = crate::protocol::bare_event_name(&args) {
            let listened = registry(inner).by_event.contains_key(ev);
            if listened && ev != "message" {
                let ev = ev.to_string();
                return dispatch(inner, &ev, Vec::new(), None, origin);
            }
        }
    }
    let sender = match origin {
        Origin::Direct => crate::protocol::sender_of(&args).map(str::to_string),
        Origin::Room(_) => None,
    };
    let handlers: Vec<Handler> = {
        let mut reg = registry(inner);
        let Some(list) = reg.by_event.get_mut(name) else {
            drop(reg);
            if let Some(id) = reply {
                let text = if reg_service(inner) {
                    format!("service '{}' has no API '{name}'", inner.id)
                } else {
                    format!("no listener for '{name}'")
                };
                inner.refuse(id, text);
            }
            return;
        };
        let mut picked = Vec::new();
        list.retain(|l| {
            let matches = match (&l.handler, &l.from) {
                (Handler::Raw(_), _) => true,
                (Handler::Request(_), _) => reply.is_some(),
                (Handler::Peer(_), None) => sender.is_some(),
                (Handler::Peer(_), Some(f)) => sender.as_deref() == Some(f.as_str()),
            };
            if matches {
                picked.push(l.handler.clone());
            }
            !(matches && l.once)
        });
        if list.is_empty() {
            reg.by_event.remove(name);
        }
        picked
    };
    let reply = reply.map(|id| {
        let client = Arc::downgrade(inner);
        let to = sender.clone().unwrap_or_default();
        Reply::new(to, name, inner.id.as_str(), move |answer| {
            if let Some(c) = client.upgrade() {
                c.respond(id, answer);
            }
        })
    });
    let peer_args = if handlers.iter().any(|h| matches!(h, Handler::Peer(_))) && sender.is_some() {
        Some(args[1..].to_vec())
    } else {
        None
    };
    let n = handlers.len();
    for (i, h) in handlers.into_iter().enumerate() {
        match h {
            Handler::Raw(f) => {
                let a = if i + 1 == n {
                    std::mem::take(&mut args)
                } else {
                    args.clone()
                };
                f(a)
            }
            Handler::Request(f) => {
                if let Some(r) = &reply {
                    let a = if i + 1 == n {
                        std::mem::take(&mut args)
                    } else {
                        args.clone()
                    };
                    f(a, r.clone())
                }
            }
            Handler::Peer(f) => f(PeerMessage {
                from: sender.clone().unwrap_or_default(),
                event: name.to_string(),
                args: peer_args.clone().unwrap_or_default(),
                reply: reply.clone(),
            }),
        }
    }
}

fn peer_added(inner: &ClientInner, source: &str) {
    let handlers = registry(inner).on_add_target.clone();
    for h in handlers {
        h(source.to_string());
    }
}

fn peer_disconnected(inner: &ClientInner, peer: &str) {
    let handlers = {
        let mut reg = registry(inner);
        // README 3.2.2: a peer's `from(peer)` listeners go with it.
        reg.retain(|_, l| l.from.as_deref() != Some(peer));
        reg.on_target_disconnect.clone()
    };
    for h in handlers {
        h(peer.to_string());
    }
}

fn server_error(inner: &ClientInner, text: &str) {
    let handlers = registry(inner).on_server_error.clone();
    for h in handlers {
        h(text.to_string());
    }
}

/// Listeners scoped to one peer: see [`P2pClient::from`].
pub struct PeerListeners<'a> {
    client: &'a P2pClient,
    peer: String,
}

impl PeerListeners<'_> {
    /// Calls `handler` for every `event` this peer sends.
    pub fn on(
        &self,
        event: &str,
        handler: impl Fn(PeerMessage) + Send + Sync + 'static,
    ) -> ListenerId {
        self.client.add_listener(
            event,
            Some(&self.peer),
            false,
            Handler::Peer(Arc::new(handler)),
        )
    }

    /// Calls `handler` for the next `event` this peer sends, then forgets it.
    pub fn once(
        &self,
        event: &str,
        handler: impl Fn(PeerMessage) + Send + Sync + 'static,
    ) -> ListenerId {
        self.client.add_listener(
            event,
            Some(&self.peer),
            true,
            Handler::Peer(Arc::new(handler)),
        )
    }

    /// Removes this peer's listeners of `event`.
    pub fn off(&self, event: &str) {
        let peer = self.peer.clone();
        registry(&self.client.inner)
            .retain(|ev, l| !(ev == event && l.from.as_deref() == Some(peer.as_str())));
    }

    /// How many listeners are registered for this peer.
    pub fn listener_count(&self) -> usize {
        let reg = registry(&self.client.inner);
        reg.by_event
            .values()
            .flatten()
            .filter(|l| l.from.as_deref() == Some(self.peer.as_str()))
            .count()
    }
}

/// Sending to peers.
impl P2pClient {
    fn add_listener(&self, event: &str, from: Option<&str>, once: bool, h: Handler) -> ListenerId {
        registry(&self.inner).add(event, from, once, h)
    }

    /// Sends `event` with `args` to the peer `target`, without waiting for an answer. `args` is
    /// any serializable value: a tuple is several arguments, `()` none, anything else one
    /// ([`IntoArgs`]).
    ///
    /// Resolves once the event is queued. A failure on the way (unknown target, busy target)
    /// comes back as a server error (see [`on_server_error`](P2pClient::on_server_error)); use
    /// [`request`](P2pClient::request) to hear back.
    ///
    /// ```no_run
    /// # async fn f(client: socketio_p2p::P2pClient) -> socketio_p2p::Result<()> {
    /// #[derive(serde::Serialize)]
    /// struct Order { dish: String, table: u32 }
    /// client.emit_to("kitchen", "order", &Order { dish: "soup".into(), table: 4 }).await?;
    /// client.emit_to("kitchen", "cancel", (4, "soup")).await?;   // two arguments
    /// client.emit_to("kitchen", "ping", ()).await?;              // none
    /// # Ok(()) }
    /// ```
    pub async fn emit_to(&self, target: &str, event: &str, args: impl IntoArgs) -> Result<()> {
        let payload = self.emit_payload(target, event, args)?;
        self.inner.send(Outgoing::Emit(payload)).await
    }

    /// Sends `event` with `args` to `target` and waits for its answer, deserialized as `R` (a
    /// tuple for several answer arguments, the value itself for one, `Vec<Value>` for the
    /// arguments as they came). Waits at most the client's timeout
    /// ([`ClientOptions::timeout`](crate::ClientOptions::timeout)), or what
    /// [`Request::timeout`] sets.
    ///
    /// Fails with [`Error::Remote`] when the peer answers with an error, has no listener for
    /// `event`, or drops its [`Reply`] unanswered; [`Error::UnknownTarget`] when no such client
    /// is connected; [`Error::Timeout`] when no answer comes in time.
    ///
    /// ```no_run
    /// # async fn f(client: socketio_p2p::P2pClient) -> socketio_p2p::Result<()> {
    /// use std::time::Duration;
    /// let sum: i64 = client.request("bob", "add", (2, 3)).await?;
    /// let (n, text): (i64, String) = client
    ///     .request("bob", "describe", 5)
    ///     .timeout(Duration::from_secs(1))
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn request<R>(&self, target: &str, event: &str, args: impl IntoArgs) -> Request<R> {
        match self.emit_payload(target, event, args) {
            Ok(payload) => {
                let inner = self.inner.clone();
                let about = crate::client::Subject {
                    peer: Some(target.to_string()),
                    event: event.to_string(),
                };
                Request::new(self.inner.opts.timeout, move |timeout| async move {
                    inner
                        .request_about(
                            crate::protocol::event::P2P_EMIT_ACKNOWLEDGE,
                            vec![payload],
                            timeout,
                            about,
                            None,
                        )
                        .await
                })
            }
            Err(e) => Request::failed(e),
        }
    }

    fn emit_payload(&self, target: &str, event: &str, args: impl IntoArgs) -> Result<Value> {
        if target.is_empty() {
            return Err(Error::BadRequest("the target client id is empty".into()));
        }
        if event.is_empty() {
            return Err(Error::BadRequest("the event name is empty".into()));
        }
        // Refused here as the relay would refuse it, without a round trip.
        if crate::protocol::is_reserved(event) {
            return Err(Error::BadRequest(crate::protocol::reserved_event(event)));
        }
        let mut all = vec![Value::from(self.inner.id.as_str())];
        all.extend(args.into_args()?);
        Ok(serde_json::to_value(EmitPayload {
            target_client_id: target.to_string(),
            event: event.to_string(),
            args: all,
        })?)
    }

    /// Asks `target` to become a peer; resolves when it accepts. Both ends are then told when the
    /// other disconnects. Fails with [`Error::UnknownTarget`] if no such client is connected.
    pub async fn add_p2p_target(&self, target: &str) -> Result<()> {
        if target.is_empty() {
            return Err(Error::BadRequest("the target client id is empty".into()));
        }
        let about = crate::client::Subject {
            peer: Some(target.to_string()),
            event: event::MULTI_API_ADD_TARGET.to_string(),
        };
        self.inner
            .request_about(
                event::MULTI_API_ADD_TARGET,
                vec![Value::from(target)],
                self.inner.opts.timeout,
                about,
                None,
            )
            .await
            .map(|_| ())
    }
}

/// Listening.
impl P2pClient {
    /// Calls `handler` for every `event` from any peer: the main way to receive messages (and
    /// requests) from other clients. The handler gets a [`PeerMessage`]: who sent it, the event,
    /// its arguments ([`PeerMessage::parse`]), and a [`Reply`] when the sender waits for an
    /// answer.
    ///
    /// Handlers are plain closures, called one at a time in the order events arrive, on the
    /// client's receive path: they should return quickly. For slow or async work, spawn a task
    /// and move the `Reply` into it; it answers whenever it is used (and, if dropped unanswered,
    /// tells the caller no answer will come):
    ///
    /// ```no_run
    /// # fn f(client: socketio_p2p::P2pClient) {
    /// client.on("add", |msg| {
    ///     let (a, b): (i64, i64) = msg.parse().unwrap_or_default();
    ///     if let Some(reply) = msg.reply {
    ///         reply.send(a + b);
    ///     }
    /// });
    /// client.on("slow-add", |msg| {
    ///     tokio::spawn(async move {
    ///         let (a, b): (i64, i64) = msg.parse().unwrap_or_default();
    ///         tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    ///         if let Some(reply) = msg.reply {
    ///             reply.send(a + b);
    ///         }
    ///     });
    /// });
    /// # }
    /// ```
    ///
    /// Room emits never reach it, whatever their first argument: they have no sender. They, topic
    /// publications, and events from the server that do not start with a sender name reach
    /// [`on_raw`](P2pClient::on_raw) instead. One peer only: [`from`](P2pClient::from).
    pub fn on(
        &self,
        event: &str,
        handler: impl Fn(PeerMessage) + Send + Sync + 'static,
    ) -> ListenerId {
        self.add_listener(event, None, false, Handler::Peer(Arc::new(handler)))
    }

    /// Like [`on`](P2pClient::on) for the next `event` from any peer only, then forgets the
    /// handler.
    pub fn once(
        &self,
        event: &str,
        handler: impl Fn(PeerMessage) + Send + Sync + 'static,
    ) -> ListenerId {
        self.add_listener(event, None, true, Handler::Peer(Arc::new(handler)))
    }

    /// Removes the [`on`](P2pClient::on)/[`once`](P2pClient::once) listeners of `event`
    /// (listeners scoped with [`from`](P2pClient::from) and raw listeners stay). To remove one
    /// listener, use [`remove_listener`](P2pClient::remove_listener).
    pub fn off(&self, event: &str) {
        registry(&self.inner).retain(|ev, l| {
            !(ev == event && l.from.is_none() && matches!(l.handler, Handler::Peer(_)))
        });
    }

    /// The seed's name for [`on`](P2pClient::on) (`onAny`).
    pub fn on_any(
        &self,
        event: &str,
        handler: impl Fn(PeerMessage) + Send + Sync + 'static,
    ) -> ListenerId {
        self.on(event, handler)
    }

    /// The seed's name for [`once`](P2pClient::once) (`onceAny`).
    pub fn once_any(
        &self,
        event: &str,
        handler: impl Fn(PeerMessage) + Send + Sync + 'static,
    ) -> ListenerId {
        self.once(event, handler)
    }

    /// The seed's name for [`off`](P2pClient::off) (`offAny`).
    pub fn off_any(&self, event: &str) {
        self.off(event)
    }

    /// Listeners for events from one peer only: `client.from("bob").on("chat", |m| ...)`. They
    /// are removed when that peer disconnects.
    pub fn from(&self, peer: &str) -> PeerListeners<'_> {
        PeerListeners {
            client: self,
            peer: peer.to_string(),
        }
    }

    /// Calls `handler` with the arguments of every `event` exactly as they arrive, whoever sent
    /// it: room emits ([`emit_room`](P2pClient::emit_room)), topic publications, events from the
    /// server ([`P2pServer::emit_to`](crate::P2pServer::emit_to)). A peer's message also reaches
    /// it, with the sender id as the first argument.
    pub fn on_raw(
        &self,
        event: &str,
        handler: impl Fn(Vec<Value>) + Send + Sync + 'static,
    ) -> ListenerId {
        self.add_listener(event, None, false, Handler::Raw(Arc::new(handler)))
    }

    /// Calls `handler` with the arguments (as they came) and a [`Reply`] for every `event` that
    /// wants an answer, whoever sent it: requests from the server
    /// ([`P2pServer::request`](crate::P2pServer::request)) arrive here.
    pub fn on_request(
        &self,
        event: &str,
        handler: impl Fn(Vec<Value>, Reply) + Send + Sync + 'static,
    ) -> ListenerId {
        self.add_listener(event, None, false, Handler::Request(Arc::new(handler)))
    }

    /// Removes every listener of `event`, of any kind; returns how many there were.
    pub(crate) fn remove_event_listeners(&self, event: &str) -> usize {
        let mut n = 0;
        registry(&self.inner).retain(|ev, _| {
            let hit = ev == event;
            n += usize::from(hit);
            !hit
        });
        n
    }

    /// Removes one listener. Returns whether it was registered.
    pub fn remove_listener(&self, id: ListenerId) -> bool {
        let mut found = false;
        registry(&self.inner).retain(|_, l| {
            let hit = l.id == id.0;
            found |= hit;
            !hit
        });
        found
    }

    /// Calls `handler` with the id of every client that adds this one as a target (this client
    /// always accepts).
    pub fn on_add_p2p_target(&self, handler: impl Fn(String) + Send + Sync + 'static) {
        registry(&self.inner).on_add_target.push(Arc::new(handler));
    }

    /// Calls `handler` with the id of a peer that disconnected (a peer is a client this one added,
    /// was added by, or exchanged messages with). Its `from(peer)` listeners are already gone.
    pub fn on_p2p_target_disconnect(&self, handler: impl Fn(String) + Send + Sync + 'static) {
        registry(&self.inner)
            .on_target_disconnect
            .push(Arc::new(handler));
    }

    /// Calls `handler` with the text of every `SERVER_ERROR` the server sends this client.
    pub fn on_server_error(&self, handler: impl Fn(String) + Send + Sync + 'static) {
        registry(&self.inner)
            .on_server_error
            .push(Arc::new(handler));
    }
}
