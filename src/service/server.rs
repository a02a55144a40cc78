//! Server side of the Service API: services the server provides, and the interception of the
//! calls addressed to them.
//!
//! The relay hands every `P2P_EMIT`/`P2P_EMIT_ACKNOWLEDGE` (and every message of a `P2P_BATCH`)
//! to [`intercept`] once it has checked the payload, in particular that `args[0]` is the caller's
//! own id. When the target names a service of this server, the call is handled here: the built-in
//! topic APIs, or the handlers of the API. A call to an API the server does not provide goes on to
//! the client of that name if one is connected (a service provided by a client), and is answered
//! with an error otherwise.

use super::{
    check_name, check_provided_api, check_topic, check_topics, is_builtin_api, topic_event,
    topic_room, HandlerId, HandlerKey, ReplyKind, ServiceReply, ServiceRequest, TopicNames,
    EMPTY_TOPIC, SUBSCRIBE_TOPIC, UNSUBSCRIBE_TOPIC,
};
use crate::error::{Error, Result};
use crate::message::client::IntoArgs;
use crate::protocol::{ArgsRef, EmitPayload};
use crate::server::{OpError, P2pServer, Peer, Responder};
use futures::FutureExt;
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

type Handler = Arc<dyn Fn(ServiceRequest) + Send + Sync>;

/// The services of one server.
#[derive(Default)]
pub(crate) struct Services {
    map: RwLock<HashMap<Arc<str>, Arc<Service>>>,
    /// Set once a service exists, so that servers without services skip the lookup.
    any: AtomicBool,
    next_handler: AtomicU64,
}

impl Services {
    fn get(&self, name: &str) -> Option<Arc<Service>> {
        if !self.any.load(Ordering::Acquire) {
            return None;
        }
        self.map.read().unwrap().get(name).cloned()
    }
}

/// One service of the server: its APIs and the topics it created.
struct Service {
    name: Arc<str>,
    apis: RwLock<HashMap<String, Vec<(u64, Handler)>>>,
    topics: Mutex<HashSet<String>>,
}

impl Service {
    fn handlers(&self, api: &str) -> Vec<Handler> {
        let apis = self.apis.read().unwrap();
        apis.get(api)
            .map(|list| list.iter().map(|(_, h)| h.clone()).collect())
            .unwrap_or_default()
    }
}

/// What [`intercept`] did with a call.
pub(crate) enum Intercept {
    /// A service of this server handled it (or answered it with an error).
    Handled,
    /// Not for this server: relay it to the client it names.
    Relay(EmitPayload, Responder),
}

/// Handles `p` if it calls a service of this server. `wants_reply` is true for
/// `P2P_EMIT_ACKNOWLEDGE`; a fire-and-forget call's handlers get no [`ServiceReply`].
pub(crate) fn intercept(
    server: &P2pServer,
    caller: &Arc<Peer>,
    p: EmitPayload,
    r: Responder,
    wants_reply: bool,
) -> Intercept {
    let Some(service) = server.inner.services.get(&p.target_client_id) else {
        return Intercept::Relay(p, r);
    };
    let api = p.event.as_str();
    if is_builtin_api(api) {
        let result = membership(&service, caller, &p.args[1..], api == SUBSCRIBE_TOPIC);
        r.respond(caller, result.map(|()| vec![]));
        return Intercept::Handled;
    }
    let handlers = service.handlers(api);
    if handlers.is_empty() {
        // The seed's rule: what the server does not provide goes to a client service of that name.
        if server.is_connected(&service.name) {
            return Intercept::Relay(p, r);
        }
        let error = Error::remote(
            service.name.to_string(),
            format!("Error: service '{}' has no API '{api}'", service.name),
        );
        r.respond(caller, Err(error.into()));
        return Intercept::Handled;
    }
    let EmitPayload {
        event: api,
        args: mut all,
        ..
    } = p;
    all.remove(0);
    let reply = if wants_reply {
        Some(ServiceReply(ReplyKind::Server(Arc::new(ServerReply {
            caller: caller.clone(),
            service: service.name.clone(),
            api: api.clone(),
            responder: Mutex::new(Some(r)),
        }))))
    } else {
        r.respond(caller, Ok(vec![]));
        None
    };
    let n = handlers.len();
    for (i, h) in handlers.into_iter().enumerate() {
        let args = if i + 1 == n {
            std::mem::take(&mut all)
        } else {
            all.clone()
        };
        let req = ServiceRequest {
            service: service.name.to_string(),
            api: api.clone(),
            from: caller.id.to_string(),
            args,
            reply: reply.clone(),
        };
        // Handlers run on the caller's receive path; a panicking one must not take it down.
        if std::panic::catch_unwind(AssertUnwindSafe(|| h(req))).is_err() {
            tracing::error!(service = %service.name, api = %api, "a service handler panicked");
            if let Some(reply) = &reply {
                reply.error(format!(
                    "Error: service '{}' failed while handling '{api}'",
                    service.name
                ));
            }
        }
    }
    Intercept::Handled
}

/// The built-in `SUBSCRIBE_TOPIC(clientId, topic)` / `UNSUBSCRIBE_TOPIC(clientId, topic)`.
fn membership(service: &Service, caller: &Peer, args: &[Value], join: bool) -> Result<(), OpError> {
    let api = if join {
        SUBSCRIBE_TOPIC
    } else {
        UNSUBSCRIBE_TOPIC
    };
    let client = match args.first() {
        Some(Value::String(s)) => s.as_str(),
        _ => {
            return Err(Error::BadRequest(format!(
                "{api} needs (clientId, topic): the client id must be a string"
            ))
            .into())
        }
    };
    let topic = match args.get(1) {
        Some(Value::String(s)) if !s.is_empty() => s.as_str(),
        _ => {
            return Err(seed_error(
                Error::BadRequest(EMPTY_TOPIC.into()),
                EMPTY_TOPIC,
            ))
        }
    };
    // The seed trusted this id; here a client may only (un)subscribe itself.
    if client != &*caller.id {
        let text = format!(
            "{api}: client '{}' may only subscribe or unsubscribe itself, not '{client}'",
            caller.id
        );
        return Err(seed_error(Error::BadRequest(text.clone()), &text));
    }
    let room = topic_room(&service.name, topic);
    if join {
        caller.socket.join(room);
    } else {
        caller.socket.leave(room);
    }
    Ok(())
}

/// An error a seed-era caller receives as `ack(text)`, as the seed's topic APIs answer.
fn seed_error(error: Error, text: &str) -> OpError {
    OpError {
        error,
        seed_ack: Some(vec![Value::from(text)]),
    }
}

/// The answer to one call handled by the server, shared by the handlers of its API.
pub(crate) struct ServerReply {
    caller: Arc<Peer>,
    service: Arc<str>,
    api: String,
    responder: Mutex<Option<Responder>>,
}

impl std::fmt::Debug for ServerReply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceReply")
            .field("to", &self.caller.id)
            .field("service", &self.service)
            .field("api", &self.api)
            .finish()
    }
}

impl ServerReply {
    fn finish(&self, result: Result<Vec<Value>, OpError>) -> bool {
        let responder = self.responder.lock().unwrap().take();
        match responder {
            Some(r) => {
                r.respond(&self.caller, result);
                true
            }
            None => false,
        }
    }

    pub(crate) fn send(&self, args: impl IntoArgs) -> bool {
        match args.into_args() {
            Ok(args) => self.finish(Ok(args)),
            Err(e) => self.finish(Err(Error::remote(
                self.service.to_string(),
                format!(
                    "Error: service '{}' could not encode its reply to '{}': {e}",
                    self.service, self.api
                ),
            )
            .into())),
        }
    }

    pub(crate) fn error(&self, message: String) -> bool {
        self.finish(Err(Error::remote(self.service.to_string(), message).into()))
    }
}

impl Drop for ServerReply {
    fn drop(&mut self) {
        if let Some(r) = self.responder.get_mut().unwrap().take() {
            let text = format!(
                "Error: service '{}' did not reply to '{}'",
                self.service, self.api
            );
            r.respond(
                &self.caller,
                Err(Error::remote(self.service.to_string(), text).into()),
            );
        }
    }
}

impl P2pServer {
    /// The service `name` of this server, created on first use. One server may provide many
    /// services; each has the built-in topic APIs from the start.
    ///
    /// Clients call it like any service ([`P2pClient::emit_service`]); the server handles the
    /// calls to the APIs it provides and relays the others to a client of that name, if one is
    /// connected (the seed's rule).
    ///
    /// ```no_run
    /// # async fn f(server: socketio_p2p::P2pServer) -> socketio_p2p::Result<()> {
    /// let jobs = server.as_service("jobs");
    /// jobs.provide_service("add", |call| {
    ///     let (a, b): (i64, i64) = call.parse().unwrap_or_default();
    ///     call.respond((a + b,));
    /// })?;
    /// jobs.create_topic("done")?;
    /// jobs.publish_topic("done", ("job-1",))?;
    /// # Ok(()) }
    /// ```
    ///
    /// [`P2pClient::emit_service`]: crate::P2pClient::emit_service
    pub fn as_service(&self, name: &str) -> ServiceHandle {
        let services = &self.inner.services;
        let service = {
            let mut map = services.map.write().unwrap();
            map.entry(Arc::from(name))
                .or_insert_with(|| {
                    Arc::new(Service {
                        name: Arc::from(name),
                        apis: RwLock::new(HashMap::new()),
                        topics: Mutex::new(HashSet::new()),
                    })
                })
                .clone()
        };
        services.any.store(true, Ordering::Release);
        ServiceHandle {
            server: self.clone(),
            service,
        }
    }

    /// The names of the services this server provides, sorted.
    pub fn service_names(&self) -> Vec<String> {
        let map = self.inner.services.map.read().unwrap();
        let mut names: Vec<String> = map.keys().map(|k| k.to_string()).collect();
        names.sort();
        names
    }
}

/// One service provided by the server: see [`P2pServer::as_service`]. Cheap to clone.
#[derive(Clone)]
pub struct ServiceHandle {
    server: P2pServer,
    service: Arc<Service>,
}

impl std::fmt::Debug for ServiceHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceHandle")
            .field("name", &self.service.name)
            .finish()
    }
}

impl ServiceHandle {
    /// The service's name (the id clients address it by).
    pub fn name(&self) -> &str {
        &self.service.name
    }

    /// Calls `handler` for every call of `api`. An API may have several handlers: all of them
    /// run, in the order they were added, and the first answer wins.
    ///
    /// Handlers run on the caller's receive path and should return quickly; a handler may keep
    /// the [`ServiceReply`] and answer later from a task. Fails if `api` is empty or a built-in
    /// topic API.
    pub fn provide_service(
        &self,
        api: &str,
        handler: impl Fn(ServiceRequest) + Send + Sync + 'static,
    ) -> Result<HandlerId> {
        check_provided_api(api)?;
        let id = self
            .server
            .inner
            .services
            .next_handler
            .fetch_add(1, Ordering::Relaxed);
        self.service
            .apis
            .write()
            .unwrap()
            .entry(api.to_string())
            .or_default()
            .push((id, Arc::new(handler)));
        Ok(HandlerId(HandlerKey::Server(id)))
    }

    /// Removes every handler of `api`; later calls of it get an error answer. Returns whether
    /// the API had handlers.
    pub fn destroy_service(&self, api: &str) -> bool {
        self.service.apis.write().unwrap().remove(api).is_some()
    }

    /// Removes one handler of `api`. Returns whether it was there.
    pub fn destroy_service_handler(&self, api: &str, handler: HandlerId) -> bool {
        let HandlerKey::Server(id) = handler.0 else {
            return false;
        };
        let mut apis = self.service.apis.write().unwrap();
        let Some(list) = apis.get_mut(api) else {
            return false;
        };
        let before = list.len();
        list.retain(|(h, _)| *h != id);
        let removed = list.len() != before;
        if list.is_empty() {
            apis.remove(api);
        }
        removed
    }

    /// Removes every API of this service. The built-in topic APIs stay, and so do the topics.
    pub fn destroy_all_services(&self) {
        self.service.apis.write().unwrap().clear();
    }

    /// The APIs this service provides (not counting the built-in ones), sorted.
    pub fn apis(&self) -> Vec<String> {
        let mut apis: Vec<String> = self.service.apis.read().unwrap().keys().cloned().collect();
        apis.sort();
        apis
    }

    /// Sends `event(serviceName, ...args)` to a client, which sees it as a message from the
    /// service (`on_service(service, event, ..)`, `from(service).on(event, ..)`).
    pub fn emit_client(&self, client: &str, event: &str, args: impl IntoArgs) -> Result<()> {
        let all = self.client_args(event, args)?;
        self.server.emit_to(client, event, all)
    }

    /// Like [`emit_client`](Self::emit_client), and waits for the client's answer, at most the
    /// server's reply timeout.
    pub async fn emit_client_with_reply(
        &self,
        client: &str,
        event: &str,
        args: impl IntoArgs,
    ) -> Result<Vec<Value>> {
        let all = self.client_args(event, args)?;
        let timeout = self.server.inner.opts.reply_timeout;
        self.server
            .emit_to_with_reply(client, event, all, timeout)
            .await
    }

    fn client_args(&self, event: &str, args: impl IntoArgs) -> Result<Vec<Value>> {
        check_name(event, "event")?;
        if crate::message::server::is_reserved(event) {
            return Err(Error::BadRequest(format!(
                "event name '{event}' is reserved"
            )));
        }
        let mut all = vec![Value::from(&*self.service.name)];
        all.extend(args.into_args()?);
        Ok(all)
    }

    /// Creates one or several topics (`"news"` or `["a", "b"]`); creating one again does
    /// nothing. Clients may subscribe before a topic is created; publishing needs it created.
    pub fn create_topic(&self, names: impl TopicNames) -> Result<()> {
        let names = check_topics(names)?;
        self.service.topics.lock().unwrap().extend(names);
        Ok(())
    }

    /// Destroys one or several topics: every subscriber receives `<room>-TOPIC_BEING_DESTROYED`
    /// and leaves the topic's room, and publishing to it fails until it is created again.
    pub fn destroy_topic(&self, names: impl TopicNames) -> Result<()> {
        let names = check_topics(names)?;
        {
            let mut topics = self.service.topics.lock().unwrap();
            for n in &names {
                topics.remove(n);
            }
        }
        // Nobody connected means nobody subscribed.
        if let Some(socket) = self.server.any_socket() {
            for n in &names {
                crate::room::server::destroy_room(&socket, &topic_room(&self.service.name, n));
            }
        }
        Ok(())
    }

    /// Publishes `args` to the subscribers of `topic`: each receives
    /// `<room>-DEFAULT_TOPIC_EVENT(...args)`. Fails if the topic was not created.
    pub fn publish_topic(&self, topic: &str, args: impl IntoArgs) -> Result<()> {
        check_topic(topic)?;
        if !self.service.topics.lock().unwrap().contains(topic) {
            return Err(Error::BadRequest(format!(
                "topic '{topic}' of service '{}' was not created",
                self.service.name
            )));
        }
        let args = args.into_args()?;
        // The rooms of the namespace are reached through any connected socket; nobody
        // connected means nobody subscribed.
        let Some(socket) = self.server.any_socket() else {
            return Ok(());
        };
        let room = topic_room(&self.service.name, topic);
        let event = topic_event(&room);
        let mut fut = Box::pin(async move {
            // `within` (unlike `to`) includes the socket it starts from.
            socket.within(room).emit(&event, &ArgsRef(&args)).await
        });
        match (&mut fut).now_or_never() {
            Some(Ok(())) => Ok(()),
            Some(Err(e)) => Err(Error::Protocol(format!(
                "publishing to '{topic}' failed: {e}"
            ))),
            None => {
                // A remote adapter answers later; let it finish on its own.
                tokio::spawn(fut);
                Ok(())
            }
        }
    }

    /// The topics this service created and did not destroy, sorted.
    pub fn topics(&self) -> Vec<String> {
        let mut topics: Vec<String> = self
            .service
            .topics
            .lock()
            .unwrap()
            .iter()
            .cloned()
            .collect();
        topics.sort();
        topics
    }

    /// How many clients are subscribed to `topic` (members of its room on this server).
    pub fn subscriber_count(&self, topic: &str) -> usize {
        match self.server.any_socket() {
            Some(socket) => socket
                .within(topic_room(&self.service.name, topic))
                .sockets()
                .len(),
            None => 0,
        }
    }
}
