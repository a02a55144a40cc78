//! Client side of the Message API: sending to peers, replies, and the listener registry.
//!
//! Listeners are plain closures called in the order events arrive, on the client's receive path:
//! they should return quickly (spawn a task for slow work). A listener that wants to answer gets a
//! [`Reply`] it may keep and use later, from any task.

use crate::client::{ClientInner, Outgoing, P2pClient};
use crate::error::{Error, Result};
use crate::protocol::{event, EmitPayload, ResBody};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

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
}

/// Deserializes a list of event arguments as one value (a tuple for several, the value itself for
/// one).
pub fn parse_args<T: DeserializeOwned>(args: &[Value]) -> Result<T> {
    match serde_json::from_value::<T>(Value::Array(args.to_vec())) {
        Ok(v) => Ok(v),
        Err(e) if args.len() == 1 => {
            serde_json::from_value(args[0].clone()).map_err(|_| Error::from(e))
        }
        Err(e) => Err(e.into()),
    }
}

/// Converts values into a list of event arguments: `()`, a tuple of serializable values, or a
/// `Vec<Value>` taken as it is.
pub trait IntoArgs {
    /// The argument list.
    fn into_args(self) -> Result<Vec<Value>>;
}

impl IntoArgs for Vec<Value> {
    fn into_args(self) -> Result<Vec<Value>> {
        Ok(self)
    }
}

impl IntoArgs for () {
    fn into_args(self) -> Result<Vec<Value>> {
        Ok(Vec::new())
    }
}

macro_rules! tuple_args {
    ($($t:ident),+) => {
        impl<$($t: Serialize),+> IntoArgs for ($($t,)+) {
            #[allow(non_snake_case)]
            fn into_args(self) -> Result<Vec<Value>> {
                let ($($t,)+) = self;
                Ok(vec![$(serde_json::to_value($t)?),+])
            }
        }
    };
}
tuple_args!(A);
tuple_args!(A, B);
tuple_args!(A, B, C);
tuple_args!(A, B, C, D);
tuple_args!(A, B, C, D, E);
tuple_args!(A, B, C, D, E, F);

/// The way to answer a peer that waits for a reply. Clones share one answer: the first
/// [`send`](Reply::send) wins. If every clone is dropped unanswered, the caller is told at once
/// that no reply will come.
#[derive(Clone)]
pub struct Reply(Arc<ReplyInner>);

struct ReplyInner {
    id: u64,
    peer: String,
    event: String,
    client: Weak<ClientInner>,
    done: AtomicBool,
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reply")
            .field("to", &self.0.peer)
            .field("event", &self.0.event)
            .finish()
    }
}

impl Reply {
    /// Answers with these arguments. Returns false if an answer was already sent.
    pub fn send(&self, args: impl IntoArgs) -> bool {
        match args.into_args() {
            Ok(args) => self.finish(ResBody::Ok(args)),
            Err(e) => self.finish(ResBody::Err(format!(
                "'{}' could not encode its reply: {e}",
                self.0.peer
            ))),
        }
    }

    /// Answers with an error the caller sees as [`Error::Remote`].
    pub fn error(&self, message: impl Into<String>) -> bool {
        self.finish(ResBody::Err(message.into()))
    }

    fn finish(&self, body: ResBody) -> bool {
        if self.0.done.swap(true, Ordering::AcqRel) {
            return false;
        }
        if let Some(c) = self.0.client.upgrade() {
            c.respond(self.0.id, body);
        }
        true
    }
}

impl Drop for ReplyInner {
    fn drop(&mut self) {
        if !self.done.load(Ordering::Acquire) {
            if let Some(c) = self.client.upgrade() {
                let me = c.id.clone();
                c.respond(
                    self.id,
                    ResBody::Err(format!("'{me}' did not reply to '{}'", self.event)),
                );
            }
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
pub(crate) struct Registry {
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

/// Calls the listeners of `name`. Peer listeners see `args[0]` as the sender.
pub(crate) fn dispatch(
    inner: &Arc<ClientInner>,
    name: &str,
    mut args: Vec<Value>,
    reply: Option<u64>,
) {
    // rust_socketio hands an event without arguments (`["X"]` on the wire, e.g. a topic's
    // `<room>-TOPIC_BEING_DESTROYED`) to its catch-all callback as a "message" event whose one
    // argument is "X"; an event this client listens to is given back its own name.
    if name == "message" && reply.is_none() {
        if let Some(ev) = crate::protocol::bare_event_name(&args) {
            let listened = inner.registry.lock().unwrap().by_event.contains_key(ev);
            if listened && ev != "message" {
                let ev = ev.to_string();
                return dispatch(inner, &ev, Vec::new(), None);
            }
        }
    }
    let sender = crate::protocol::sender_of(&args).map(str::to_string);
    let handlers: Vec<Handler> = {
        let mut reg = inner.registry.lock().unwrap();
        let Some(list) = reg.by_event.get_mut(name) else {
            drop(reg);
            if let Some(id) = reply {
                inner.respond(id, ResBody::Err(format!("no listener for '{name}'")));
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
        Reply(Arc::new(ReplyInner {
            id,
            peer: sender.clone().unwrap_or_default(),
            event: name.to_string(),
            client: Arc::downgrade(inner),
            done: AtomicBool::new(false),
        }))
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

pub(crate) fn peer_added(inner: &Arc<ClientInner>, source: &str) {
    let handlers = inner.registry.lock().unwrap().on_add_target.clone();
    for h in handlers {
        h(source.to_string());
    }
}

pub(crate) fn peer_disconnected(inner: &Arc<ClientInner>, peer: &str) {
    let handlers = {
        let mut reg = inner.registry.lock().unwrap();
        // README 3.2.2: a peer's `from(peer)` listeners go with it.
        reg.retain(|_, l| l.from.as_deref() != Some(peer));
        reg.on_target_disconnect.clone()
    };
    for h in handlers {
        h(peer.to_string());
    }
}

pub(crate) fn server_error(inner: &Arc<ClientInner>, text: String) {
    let handlers = inner.registry.lock().unwrap().on_server_error.clone();
    for h in handlers {
        h(text.clone());
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
        self.client
            .inner
            .registry
            .lock()
            .unwrap()
            .retain(|ev, l| !(ev == event && l.from.as_deref() == Some(peer.as_str())));
    }

    /// How many listeners are registered for this peer.
    pub fn listener_count(&self) -> usize {
        let reg = self.client.inner.registry.lock().unwrap();
        reg.by_event
            .values()
            .flatten()
            .filter(|l| l.from.as_deref() == Some(self.peer.as_str()))
            .count()
    }
}

impl P2pClient {
    fn add_listener(&self, event: &str, from: Option<&str>, once: bool, h: Handler) -> ListenerId {
        self.inner
            .registry
            .lock()
            .unwrap()
            .add(event, from, once, h)
    }

    /// Sends `event(...args)` to the peer `target`, without waiting for an answer. A failure
    /// (unknown target, busy target) comes back as a server error (see
    /// [`on_server_error`](P2pClient::on_server_error)).
    pub async fn emit_to(&self, target: &str, event: &str, args: impl IntoArgs) -> Result<()> {
        let payload = self.emit_payload(target, event, args)?;
        self.inner.send(Outgoing::Emit(payload)).await
    }

    /// Sends `event(...args)` to `target` and waits for its reply, at most the client's timeout.
    pub async fn emit_to_with_reply(
        &self,
        target: &str,
        event: &str,
        args: impl IntoArgs,
    ) -> Result<Vec<Value>> {
        self.emit_to_with_reply_timeout(target, event, args, self.inner.opts.timeout)
            .await
    }

    /// Like [`emit_to_with_reply`](P2pClient::emit_to_with_reply) with a timeout of its own.
    pub async fn emit_to_with_reply_timeout(
        &self,
        target: &str,
        event: &str,
        args: impl IntoArgs,
        timeout: Duration,
    ) -> Result<Vec<Value>> {
        let payload = self.emit_payload(target, event, args)?;
        let about = crate::client::Subject {
            peer: Some(target.to_string()),
            event: event.to_string(),
        };
        self.inner
            .request_about(
                crate::protocol::event::P2P_EMIT_ACKNOWLEDGE,
                vec![payload],
                timeout,
                about,
                None,
            )
            .await
    }

    /// Sends a request and deserializes the reply: a tuple for several reply arguments, the value
    /// itself for one.
    pub async fn request<R: DeserializeOwned>(
        &self,
        target: &str,
        event: &str,
        args: impl IntoArgs,
    ) -> Result<R> {
        let reply = self.emit_to_with_reply(target, event, args).await?;
        parse_args(&reply)
    }

    fn emit_payload(&self, target: &str, event: &str, args: impl IntoArgs) -> Result<Value> {
        if target.is_empty() {
            return Err(Error::BadRequest("the target client id is empty".into()));
        }
        if event.is_empty() {
            return Err(Error::BadRequest("the event name is empty".into()));
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

    /// Calls `handler` with the id of every client that adds this one as a target (this client
    /// always accepts).
    pub fn on_add_p2p_target(&self, handler: impl Fn(String) + Send + Sync + 'static) {
        self.inner
            .registry
            .lock()
            .unwrap()
            .on_add_target
            .push(Arc::new(handler));
    }

    /// Calls `handler` with the id of a peer that disconnected (a peer is a client this one added,
    /// was added by, or exchanged messages with). Its `from(peer)` listeners are already gone.
    pub fn on_p2p_target_disconnect(&self, handler: impl Fn(String) + Send + Sync + 'static) {
        self.inner
            .registry
            .lock()
            .unwrap()
            .on_target_disconnect
            .push(Arc::new(handler));
    }

    /// Calls `handler` with the text of every `SERVER_ERROR` the server sends this client.
    pub fn on_server_error(&self, handler: impl Fn(String) + Send + Sync + 'static) {
        self.inner
            .registry
            .lock()
            .unwrap()
            .on_server_error
            .push(Arc::new(handler));
    }

    /// Calls `handler` for `event` from any peer.
    pub fn on_any(
        &self,
        event: &str,
        handler: impl Fn(PeerMessage) + Send + Sync + 'static,
    ) -> ListenerId {
        self.add_listener(event, None, false, Handler::Peer(Arc::new(handler)))
    }

    /// Calls `handler` for the next `event` from any peer, then forgets it.
    pub fn once_any(
        &self,
        event: &str,
        handler: impl Fn(PeerMessage) + Send + Sync + 'static,
    ) -> ListenerId {
        self.add_listener(event, None, true, Handler::Peer(Arc::new(handler)))
    }

    /// Removes the [`on_any`](P2pClient::on_any)/[`once_any`](P2pClient::once_any) listeners of
    /// `event` (listeners scoped with [`from`](P2pClient::from) stay).
    pub fn off_any(&self, event: &str) {
        self.inner.registry.lock().unwrap().retain(|ev, l| {
            !(ev == event && l.from.is_none() && matches!(l.handler, Handler::Peer(_)))
        });
    }

    /// Listeners for events from one peer only: `client.from("bob").on("chat", |m| ...)`.
    pub fn from(&self, peer: &str) -> PeerListeners<'_> {
        PeerListeners {
            client: self,
            peer: peer.to_string(),
        }
    }

    /// Calls `handler` with the arguments of every `event` as they arrive, whoever sent it: room
    /// emits, topic publications, events from the server.
    pub fn on(
        &self,
        event: &str,
        handler: impl Fn(Vec<Value>) + Send + Sync + 'static,
    ) -> ListenerId {
        self.add_listener(event, None, false, Handler::Raw(Arc::new(handler)))
    }

    /// Removes every listener of `event`, of any kind; returns how many there were.
    pub(crate) fn remove_event_listeners(&self, event: &str) -> usize {
        let mut n = 0;
        self.inner.registry.lock().unwrap().retain(|ev, _| {
            let hit = ev == event;
            n += usize::from(hit);
            !hit
        });
        n
    }

    /// Calls `handler` with the arguments (as they came) and a [`Reply`] for every `event` that
    /// wants an answer, whoever sent it: requests from the server
    /// ([`P2pServer::emit_to_with_reply`](crate::P2pServer::emit_to_with_reply)) arrive here.
    pub fn on_request(
        &self,
        event: &str,
        handler: impl Fn(Vec<Value>, Reply) + Send + Sync + 'static,
    ) -> ListenerId {
        self.add_listener(event, None, false, Handler::Request(Arc::new(handler)))
    }

    /// Removes one listener. Returns whether it was registered.
    pub fn remove_listener(&self, id: ListenerId) -> bool {
        let mut found = false;
        self.inner.registry.lock().unwrap().retain(|_, l| {
            let hit = l.id == id.0;
            found |= hit;
            !hit
        });
        found
    }
}
