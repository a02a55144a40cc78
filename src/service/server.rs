//! Server side of the Service API: services the server provides, and the interception of the
//! calls addressed to them.
//!
//! The relay hands every `P2P_EMIT`/`P2P_EMIT_ACKNOWLEDGE` (and every message of a `P2P_BATCH`)
//! to [`intercept`] once it has checked the payload, in particular that `args[0]` is the caller's
//! own id. When the target names a service of this server, the call is handled here: the built-in
//! topic APIs, or the handlers of the API; a call to an API the service does not provide is
//! answered with an error. (The seed relayed such a call to a client of the service's name; here no
//! client may hold that name, see [`crate::service::rules`].)

use super::rules::can_have_topics;
use super::{
    check_name, check_topics, is_builtin_api, topic_event, topic_room, HandlerId, Provider,
    ServiceRequest, TopicNames, EMPTY_TOPIC, SUBSCRIBE_TOPIC, UNSUBSCRIBE_TOPIC,
};
use crate::error::{Error, Result};
use crate::message::{IntoArgs, Request};
use crate::protocol::service::{MembershipError, TopicMembership};
use crate::protocol::{check_no_placeholder, EmitPayload};
use crate::request::Reply;
use crate::room::server::adapter_error;
use crate::server::{encode_args, ClusterRoomEvent, OpError, OpReply, P2pServer, Peer, RoomEvent};
use serde_json::Value;
use socketioxide::adapter::Adapter;
use socketioxide::adapter::LocalAdapter;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

/// The services of one server.
#[derive(Default)]
pub(crate) struct Services {
    map: RwLock<HashMap<Arc<str>, Arc<Provider>>>,
    /// Set once a service exists, so that servers without services skip the lookup.
    any: AtomicBool,
}

impl Services {
    /// Whether this server provides a service called `name`.
    pub(crate) fn contains(&self, name: &str) -> bool {
        self.any.load(Ordering::Acquire) && self.map.read().unwrap().contains_key(name)
    }

    fn get(&self, name: &str) -> Option<Arc<Provider>> {
        if !self.any.load(Ordering::Acquire) {
            return None;
        }
        self.map.read().unwrap().get(name).cloned()
    }
}

/// What [`intercept`] did with a call.
pub(crate) enum Intercept {
    /// A service of this server handled it (or answered it with an error).
    Handled,
    /// Not for this server: relay it to the client it names.
    Relay(EmitPayload, OpReply),
}

/// Handles `p` if it calls a service of this server. `wants_reply` is true for
/// `P2P_EMIT_ACKNOWLEDGE`; a fire-and-forget call's handlers get no [`ServiceReply`].
pub(crate) fn intercept<A: Adapter>(
    server: &P2pServer<A>,
    caller: &Arc<Peer<A>>,
    p: EmitPayload,
    r: OpReply,
    wants_reply: bool,
) -> Intercept {
    let Some(service) = server.inner.services.get(&p.target_client_id) else {
        return Intercept::Relay(p, r);
    };
    let api = p.event.as_str();
    if is_builtin_api(api) {
        let join = api == SUBSCRIBE_TOPIC;
        match membership_room(&service, caller, &p.args[1..], join) {
            Ok(room) => {
                let socket = caller.socket.clone();
                let max = server.inner.opts.max_rooms_per_client;
                let metrics = caller.metrics.clone();
                let server = server.clone();
                let op = async move {
                    if join {
                        crate::room::server::join_bounded(&socket, room.clone(), max)
                            .inspect_err(|_| metrics.refused(crate::server::Reason::Limit))?;
                        // Publications from this service on other relays reach it.
                        server.advertise_room(&room).await;
                        Ok(())
                    } else {
                        socket.leave(room);
                        Ok(())
                    }
                };
                caller.room_op(api, op, r);
            }
            Err(e) => r.respond(Err(e)),
        }
        return Intercept::Handled;
    }
    if !service.provides(api) {
        let error = Error::remote(
            service.name(),
            format!("service '{}' has no API '{api}'", service.name()),
        );
        r.respond(Err(error.into()));
        return Intercept::Handled;
    }
    let EmitPayload {
        event: api,
        args: mut all,
        ..
    } = p;
    all.remove(0);
    let reply = if wants_reply {
        let name = service.name().to_string();
        let what = api.clone();
        Some(Reply::new(
            &*caller.id,
            api.as_str(),
            service.name(),
            move |answer| {
                // Checked like the answers of clients, which are refused when they are decoded.
                let answer = answer.and_then(|args| match check_no_placeholder(&args) {
                    Ok(()) => Ok(args),
                    Err(why) => Err(Error::Protocol(format!(
                        "bad answer from '{name}' to '{what}': {why}"
                    ))),
                });
                r.respond(answer.map_err(OpError::from))
            },
        ))
    } else {
        r.respond(Ok(vec![]));
        None
    };
    service.call(&api, &caller.id, all, reply);
    Intercept::Handled
}

/// The room the built-in `SUBSCRIBE_TOPIC(clientId, topic)` / `UNSUBSCRIBE_TOPIC(clientId, topic)`
/// joins the caller to (or removes it from), its arguments checked.
fn membership_room<A: Adapter>(
    service: &Provider,
    caller: &Peer<A>,
    args: &[Value],
    join: bool,
) -> Result<String, OpError> {
    let api = if join {
        SUBSCRIBE_TOPIC
    } else {
        UNSUBSCRIBE_TOPIC
    };
    let TopicMembership { client, topic } = match TopicMembership::from_args(args) {
        Ok(t) => t,
        Err(MembershipError::ClientId) => {
            return Err(Error::BadRequest(format!(
                "{api} needs (clientId, topic): the client id must be a string"
            ))
            .into())
        }
        Err(MembershipError::EmptyTopic) => {
            return Err(seed_error(
                Error::BadRequest(EMPTY_TOPIC.into()),
                EMPTY_TOPIC,
            ))
        }
    };
    // The seed trusted this id; here a client may only (un)subscribe itself.
    if client != *caller.id {
        let text = format!(
            "{api}: client '{}' may only subscribe or unsubscribe itself, not '{client}'",
            caller.id
        );
        return Err(seed_error(Error::BadRequest(text.clone()), &text));
    }
    if let Err(e) = can_have_topics(service.name()) {
        let text = crate::server::seed_text(&e);
        return Err(seed_error(e, &text));
    }
    Ok(topic_room(service.name(), &topic))
}

/// An error a seed-era caller receives as `ack(text)`, as the seed's topic APIs answer.
fn seed_error(error: Error, text: &str) -> OpError {
    OpError {
        error,
        seed_ack: Some(vec![Value::from(text)]),
    }
}

impl<A: Adapter> P2pServer<A> {
    /// The service `name` of this server, created on first use. One server may provide many
    /// services; each has the built-in topic APIs from the start.
    ///
    /// Clients call it like any service ([`P2pClient::emit_service`]); the server handles the
    /// calls to the APIs it provides and answers the others with an error. From then on no client
    /// may connect under the service's name, and one connected under it already is told why and
    /// disconnected (when this runs inside a Tokio runtime; otherwise it stays connected, but
    /// still cannot act as the service).
    ///
    /// ```no_run
    /// # async fn f(server: socketio_p2p::P2pServer) -> socketio_p2p::Result<()> {
    /// let jobs = server.as_service("jobs");
    /// jobs.provide_service("add", |call| {
    ///     let (a, b): (i64, i64) = call.parse().unwrap_or_default();
    ///     call.respond(a + b);
    /// })?;
    /// jobs.create_topic("done")?;
    /// jobs.publish_topic("done", "job-1")?;
    /// # Ok(()) }
    /// ```
    ///
    /// [`P2pClient::emit_service`]: crate::P2pClient::emit_service
    pub fn as_service(&self, name: &str) -> ServiceHandle<A> {
        let services = &self.inner.services;
        let (service, created) = {
            let mut map = services.map.write().unwrap();
            let mut created = false;
            let service = map
                .entry(Arc::from(name))
                .or_insert_with(|| {
                    created = true;
                    Arc::new(Provider::new(name))
                })
                .clone();
            (service, created)
        };
        services.any.store(true, Ordering::Release);
        if created {
            self.disconnect_service_name(name);
        }
        ServiceHandle {
            server: self.clone(),
            service,
        }
    }

    /// Disconnects a client connected under `name` before the server took the name for a service:
    /// no client may hold a service's name (see [`crate::service::rules`]). A connect that races
    /// with this sees the service, since it checks for one under the client table's lock.
    fn disconnect_service_name(&self, name: &str) {
        let Some(peer) = self.peer(name) else {
            return;
        };
        let reason = format!(
            "Error: disconnected: the server now provides service '{name}', and no client may \
             hold that id"
        );
        if tokio::runtime::Handle::try_current().is_err() {
            // Disconnecting runs socketioxide's handlers on the runtime.
            tracing::warn!(client = %name, "{reason}; not disconnected (no Tokio runtime here)");
            return;
        }
        tracing::info!(client = %name, "{reason}");
        peer.server_error(&reason);
        // Closed once the notice is written: a client whose connection is still being set up
        // gets it after its welcome, not never.
        peer.close_after_notice();
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
///
/// Its API is that of [`ServiceClient`](crate::ServiceClient), a service provided by a client,
/// with one implementation behind both; here the topic operations need not wait for anyone.
pub struct ServiceHandle<A: Adapter = LocalAdapter> {
    server: P2pServer<A>,
    service: Arc<Provider>,
}

impl<A: Adapter> Clone for ServiceHandle<A> {
    fn clone(&self) -> Self {
        ServiceHandle {
            server: self.server.clone(),
            service: self.service.clone(),
        }
    }
}

impl<A: Adapter> std::fmt::Debug for ServiceHandle<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceHandle")
            .field("name", &self.service.name())
            .finish()
    }
}

impl<A: Adapter> ServiceHandle<A> {
    /// The service's name (the id clients address it by).
    pub fn name(&self) -> &str {
        self.service.name()
    }

    /// Calls `handler` for every call of `api`. An API may have several handlers: all of them
    /// run, in the order they were added, and the first answer wins.
    ///
    /// Handlers run on the caller's receive path and should return quickly; a handler may keep
    /// the call's [`Reply`] and answer later from a task. Fails if `api` is empty or a built-in
    /// topic API.
    pub fn provide_service(
        &self,
        api: &str,
        handler: impl Fn(ServiceRequest) + Send + Sync + 'static,
    ) -> Result<HandlerId> {
        self.service.provide(api, handler).map(|(id, _)| id)
    }

    /// Removes every handler of `api`; later calls of it get an error answer. Returns whether
    /// the API had handlers.
    pub fn destroy_service(&self, api: &str) -> bool {
        self.service.destroy(api)
    }

    /// Removes one handler of `api`. Returns whether it was there.
    pub fn destroy_service_handler(&self, api: &str, handler: HandlerId) -> bool {
        self.service.destroy_handler(api, handler).0
    }

    /// Removes every API of this service. The built-in topic APIs stay, and so do the topics.
    pub fn destroy_all_services(&self) {
        self.service.destroy_all();
    }

    /// The APIs this service provides (not counting the built-in ones), sorted.
    pub fn apis(&self) -> Vec<String> {
        self.service.apis()
    }

    /// Sends `event(serviceName, ...args)` to a client, which sees it as a message from the
    /// service (`on_service(service, event, ..)`, `from(service).on(event, ..)`). Refused as
    /// [`P2pServer::emit_to`] says, and for the events of a topic room.
    pub fn emit_client(&self, client: &str, event: &str, args: impl IntoArgs) -> Result<()> {
        let all = self.client_args(event, args)?;
        self.server
            .emit_to(client, event, crate::message::Args(all))
    }

    /// Like [`emit_client`](Self::emit_client), and waits for the client's answer, deserialized
    /// as `R`; at most the server's reply timeout, or what [`Request::timeout`] sets.
    pub fn request_client<R>(&self, client: &str, event: &str, args: impl IntoArgs) -> Request<R> {
        let all = match self.client_args(event, args) {
            Ok(all) => all,
            Err(e) => return Request::failed(e),
        };
        let server = self.server.clone();
        let (client, event) = (client.to_string(), event.to_string());
        Request::new(
            self.server.inner.opts.reply_timeout,
            move |timeout| async move { server.request_raw(&client, &event, all, timeout).await },
        )
    }

    fn client_args(&self, event: &str, args: impl IntoArgs) -> Result<Vec<Value>> {
        check_name(event, "event")?;
        self.server.check_event_name(event)?;
        let mut all = vec![Value::from(self.service.name())];
        all.extend(args.into_args()?);
        Ok(all)
    }

    /// Creates one or several topics (`"news"` or `["a", "b"]`); creating one again does
    /// nothing. Clients may subscribe before a topic is created; publishing needs it created.
    /// Fails for a service whose name contains `:topic:`, whose topic rooms would read as another
    /// service's.
    pub fn create_topic(&self, names: impl TopicNames) -> Result<()> {
        can_have_topics(self.service.name())?;
        self.service.add_topics(check_topics(names)?);
        Ok(())
    }

    /// Destroys one or several topics: every subscriber receives `<room>-TOPIC_BEING_DESTROYED`
    /// and leaves the topic's room, and publishing to it fails until it is created again.
    ///
    /// With the local adapter the subscribers are told and removed before this returns; with a
    /// remote adapter that has to wait for other servers, it is done in the background, in order
    /// with the server's other topic operations, and a failure there is logged. In a cluster the
    /// subscribers on the other relays are told and removed by their relays: while Redis is out
    /// of reach this fails with [`Error::Cluster`] (those here are removed all the same), and a
    /// failure to hand it over later is logged.
    pub fn destroy_topic(&self, names: impl TopicNames) -> Result<()> {
        can_have_topics(self.service.name())?;
        let names = check_topics(names)?;
        self.service.remove_topics(&names);
        let mut result = Ok(());
        for n in &names {
            let room = topic_room(self.service.name(), n);
            let done = self.server.within(room.clone()).and_then(|members| {
                let op = crate::room::server::destroy_room(self.server.clone(), members, room);
                self.server.room_op("destroy_topic", op)
            });
            // Every topic is destroyed even if one fails; the first failure is returned.
            if result.is_ok() {
                result = done;
            }
        }
        result
    }

    /// Publishes `args` to the subscribers of `topic`: each receives
    /// `<room>-DEFAULT_TOPIC_EVENT(...args)`. Fails if the topic was not created.
    ///
    /// Each subscriber on this server gets it through its byte budget
    /// ([`ServerOptions::max_queued_bytes`](crate::ServerOptions::max_queued_bytes)), like a
    /// message sent to it alone: a subscriber whose queue is full does not get it, and this fails
    /// with [`Error::Overloaded`] naming them (the others got it). A subscriber whose link
    /// dropped and whose session the server keeps for its return has it held for it (see
    /// [`ServerOptions::resume_grace`](crate::ServerOptions::resume_grace)). Subscribers on other
    /// servers of a remote adapter get it through the adapter; with a remote adapter that has to
    /// wait for other servers, the publication completes in the background, in order with the
    /// server's other topic operations, and a failure there is logged.
    ///
    /// In a cluster ([`crate::cluster`]) the subscribers on the other relays get it too, through
    /// their relays and their own budgets there (each relay provides the service, but a
    /// publication on one reaches the subscribers of all: publish it on one relay only). While
    /// Redis is out of reach this fails with [`Error::Cluster`], the subscribers here having got
    /// it; a failure to hand it over later, and subscribers busy on other relays, are logged.
    /// Arguments holding an object with the key `_placeholder` (which Socket.IO clients read as
    /// a binary attachment) are refused with [`Error::BadRequest`].
    pub fn publish_topic(&self, topic: &str, args: impl IntoArgs) -> Result<()> {
        self.service.check_created(topic)?;
        let args = args.into_args()?;
        check_no_placeholder(&args)?;
        let args = encode_args(args)?;
        let room = topic_room(self.service.name(), topic);
        let publication = RoomEvent::new(&topic_event(&room), &[], args.clone());
        let members = self.server.within(room.clone())?;
        let server = self.server.clone();
        let topic = topic.to_string();
        let op = async move {
            let local = server.room_members(members.clone(), &room, None);
            let delivery = server.send_to_members(&local, None, |_| &publication);
            if let Some(remote) = server.remote_members(members) {
                let sent = remote.emit(publication.name(), &publication.args()).await;
                sent.map_err(|e| adapter_error(&format!("publishing to '{topic}'"), e))?;
            }
            // Not waited for: the outcome is logged.
            let elsewhere = server
                .room_to_cluster(ClusterRoomEvent {
                    from: None,
                    room: &room,
                    event: publication.name(),
                    args: &args,
                    wrap: false,
                })
                .map(|_| ());
            let here = delivery.into_result(&room, publication.name());
            crate::room::server::both(elsewhere, here)
        };
        self.server.room_op("publish_topic", op)
    }

    /// The topics this service created and did not destroy, sorted.
    pub fn topics(&self) -> Vec<String> {
        self.service.topics()
    }

    /// How many clients are subscribed to `topic`: the members of its room, on every server the
    /// adapter spans; in a cluster, those on this relay only. Waits at most the server's reply
    /// timeout for a remote adapter's answer.
    pub async fn subscriber_count(&self, topic: &str) -> Result<usize> {
        let members = self.server.within(topic_room(self.service.name(), topic))?;
        let after = self.server.inner.opts.reply_timeout;
        match tokio::time::timeout(after, members.fetch_sockets()).await {
            Ok(Ok(sockets)) => Ok(sockets.len()),
            Ok(Err(e)) => Err(adapter_error(
                &format!("counting the subscribers of '{topic}'"),
                e,
            )),
            Err(_) => Err(Error::Timeout {
                peer: None,
                event: "subscriber_count".into(),
                after,
            }),
        }
    }
}
