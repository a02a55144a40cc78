//! Client side of the Service API: calling services and subscribing to their topics (any
//! [`P2pClient`]), and being a service ([`ServiceClient`]).

use super::{
    check_name, check_topic, check_topics, topic_destroyed_event, topic_event, topic_room,
    HandlerId, Provider, ServiceRequest, TopicNames, EMPTY_TOPIC, SUBSCRIBE_TOPIC,
    UNSUBSCRIBE_TOPIC,
};
use crate::client::{ClientInner, ClientOptions, P2pClient};
use crate::error::{Error, Result};
use crate::message::{parse_args, IntoArgs, ListenerId, PeerMessage, Request};
use crate::protocol::service::{MembershipError, SubscribeAnswer, TopicMembership};
use crate::protocol::{action, event};
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// What a topic subscriber's handler receives (see [`P2pClient::subscribe_topic`]).
#[derive(Debug, Clone, PartialEq)]
pub enum TopicEvent {
    /// A publication, with the arguments the service published.
    Published(Vec<Value>),
    /// The service destroyed the topic. This is the handler's last event: the subscription is
    /// already removed, and the handler is not called again even if the topic is created anew.
    Destroyed,
}

impl TopicEvent {
    /// The arguments of a publication; `None` for [`TopicEvent::Destroyed`].
    pub fn args(&self) -> Option<&[Value]> {
        match self {
            TopicEvent::Published(args) => Some(args),
            TopicEvent::Destroyed => None,
        }
    }

    /// Deserializes a publication's arguments as one typed value (a tuple for several).
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T> {
        match self {
            TopicEvent::Published(args) => parse_args(args),
            TopicEvent::Destroyed => Err(Error::BadRequest(
                "a destroyed topic carries no publication".into(),
            )),
        }
    }
}

impl P2pClient {
    /// Calls `api` of `service` without waiting for an answer. The service may be provided by the
    /// server or by a client; the call is the same. A failure (no such service or API) comes back
    /// as a server error (see [`on_server_error`](P2pClient::on_server_error)).
    pub async fn emit_service(&self, service: &str, api: &str, args: impl IntoArgs) -> Result<()> {
        check_name(service, "service")?;
        check_name(api, "API")?;
        self.emit_to(service, api, args).await
    }

    /// Calls `api` of `service` and waits for its answer, deserialized as `R` (a tuple for
    /// several answer arguments, the value itself for one, `Vec<Value>` for the arguments as they
    /// came). Waits at most the client's timeout, or what [`Request::timeout`] sets. An unknown
    /// service or API is an error answer, not a wait.
    ///
    /// ```no_run
    /// # async fn f(client: socketio_p2p::P2pClient) -> socketio_p2p::Result<()> {
    /// use std::time::Duration;
    /// let sum: i64 = client.request_service("math", "add", (2, 3)).await?;
    /// let sum: i64 = client
    ///     .request_service("math", "add", (2, 3))
    ///     .timeout(Duration::from_secs(1))
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn request_service<R>(&self, service: &str, api: &str, args: impl IntoArgs) -> Request<R> {
        match check_name(service, "service").and_then(|()| check_name(api, "API")) {
            Ok(()) => self.request(service, api, args),
            Err(e) => Request::failed(e),
        }
    }

    /// Calls `handler` for every `event` the service sends this client (its `emit_client`):
    /// the same as `from(service).on(event, handler)`.
    pub fn on_service(
        &self,
        service: &str,
        event: &str,
        handler: impl Fn(PeerMessage) + Send + Sync + 'static,
    ) -> ListenerId {
        self.from(service).on(event, handler)
    }

    /// Subscribes to `topic` of `service`; resolves once the service has added this client to
    /// the topic. `handler` then receives each publication as [`TopicEvent::Published`].
    ///
    /// When the service destroys the topic, the subscription's listeners are removed and
    /// `handler` receives [`TopicEvent::Destroyed`] as its last event. Subscribing twice adds a
    /// second handler; [`unsubscribe_topic`](P2pClient::unsubscribe_topic) removes them all.
    pub async fn subscribe_topic(
        &self,
        service: &str,
        topic: &str,
        handler: impl Fn(TopicEvent) + Send + Sync + 'static,
    ) -> Result<()> {
        check_name(service, "service")?;
        check_topic(topic)?;
        let room = topic_room(service, topic);
        let handler = Arc::new(handler);
        // Listening starts before the request goes out, so no publication made after the
        // service's answer can arrive before its listener exists.
        let h = handler.clone();
        let published = self.on_raw(&topic_event(&room), move |args| {
            h(TopicEvent::Published(args))
        });
        let own: Arc<OnceLock<ListenerId>> = Arc::new(OnceLock::new());
        let done = Arc::new(AtomicBool::new(false));
        let destroyed = {
            let weak = Arc::downgrade(&self.inner);
            let (own, done) = (own.clone(), done.clone());
            let key = (service.to_string(), topic.to_string());
            self.on_raw(&topic_destroyed_event(&room), move |_| {
                if done.swap(true, Ordering::AcqRel) {
                    return;
                }
                if let Some(inner) = weak.upgrade() {
                    inner.session.lock().unwrap().subscriptions.remove(&key);
                    let client = P2pClient { inner };
                    client.remove_listener(published);
                    if let Some(id) = own.get() {
                        client.remove_listener(*id);
                    }
                }
                handler(TopicEvent::Destroyed);
            })
        };
        let _ = own.set(destroyed);
        if done.load(Ordering::Acquire) {
            self.remove_listener(destroyed);
        }
        let answer: Result<Vec<Value>> = self
            .request_service(service, SUBSCRIBE_TOPIC, (self.id(), topic))
            .await;
        // The seed's services answer a refusal as `ack(errorText)`.
        let result = match answer.map(|args| SubscribeAnswer::from_args(&args)) {
            Ok(SubscribeAnswer::Accepted) => Ok(()),
            Ok(SubscribeAnswer::Refused(text)) => Err(Error::remote(service, text)),
            Err(e) => Err(e),
        };
        match &result {
            Ok(()) if !done.load(Ordering::Acquire) => {
                self.inner
                    .session
                    .lock()
                    .unwrap()
                    .subscriptions
                    .insert((service.to_string(), topic.to_string()));
            }
            Ok(()) => {}
            Err(_) => {
                self.remove_listener(published);
                self.remove_listener(destroyed);
            }
        }
        result
    }

    /// Unsubscribes from `topic` of `service`: this client's handlers of that topic are removed
    /// at once (no publication reaches them after this returns), and the service is asked to
    /// remove this client from the topic's room. As in the seed, the request is not answered;
    /// resolves once it is queued.
    pub async fn unsubscribe_topic(&self, service: &str, topic: &str) -> Result<()> {
        check_name(service, "service")?;
        check_topic(topic)?;
        let room = topic_room(service, topic);
        self.inner
            .session
            .lock()
            .unwrap()
            .subscriptions
            .remove(&(service.to_string(), topic.to_string()));
        self.remove_event_listeners(&topic_event(&room));
        self.remove_event_listeners(&topic_destroyed_event(&room));
        self.emit_service(service, UNSUBSCRIBE_TOPIC, (self.id(), topic))
            .await
    }

    /// Connects as the service `service`: the client id is the service name, so one connection
    /// is one service. Fails with [`Error::Refused`] if a client of that name is connected
    /// already (the relay's duplicate-id rule) or the server provides a service of that name.
    pub async fn connect_service(
        url: &str,
        service: &str,
        opts: ClientOptions,
    ) -> Result<ServiceClient> {
        check_name(service, "service")?;
        let client = P2pClient::connect_with(url, service, opts).await?;
        Ok(ServiceClient::install(client))
    }
}

/// A client that is a service: its client id is the service name. Other clients call it like
/// a service the server provides; it answers the built-in topic APIs itself.
///
/// It derefs to its [`P2pClient`], so it can also call other services and message clients.
/// Cheap to clone; every clone is the same service. Its API is that of
/// [`ServiceHandle`](crate::ServiceHandle), the server's services, with one implementation behind
/// both; only the topic operations wait here, for the relay.
///
/// ```no_run
/// # async fn f() -> socketio_p2p::Result<()> {
/// use socketio_p2p::ServiceClient;
/// let jobs = ServiceClient::connect("http://127.0.0.1:9000", "jobs").await?;
/// jobs.provide_service("add", |call| {
///     let (a, b): (i64, i64) = call.parse().unwrap_or_default();
///     call.respond(a + b);
/// })?;
/// jobs.create_topic("done").await?;
/// jobs.publish_topic("done", "job-1").await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct ServiceClient {
    client: P2pClient,
    provider: Arc<Provider>,
    /// The one message listener of each provided API, which hands its calls to the provider.
    listeners: Arc<Mutex<HashMap<String, ListenerId>>>,
}

impl std::fmt::Debug for ServiceClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceClient")
            .field("name", &self.client.id())
            .field("connected", &self.client.is_connected())
            .finish()
    }
}

impl std::ops::Deref for ServiceClient {
    type Target = P2pClient;
    fn deref(&self) -> &P2pClient {
        &self.client
    }
}

impl ServiceClient {
    /// Connects as the service `service` with default options: see
    /// [`P2pClient::connect_service`].
    pub async fn connect(url: &str, service: &str) -> Result<ServiceClient> {
        P2pClient::connect_service(url, service, ClientOptions::default()).await
    }

    fn install(client: P2pClient) -> ServiceClient {
        crate::message::client::mark_service(&client.inner);
        for join in [true, false] {
            let weak = Arc::downgrade(&client.inner);
            let api = if join {
                SUBSCRIBE_TOPIC
            } else {
                UNSUBSCRIBE_TOPIC
            };
            client.on(api, move |m| {
                if let Some(inner) = weak.upgrade() {
                    topic_membership(inner, m, join);
                }
            });
        }
        ServiceClient {
            provider: Arc::new(Provider::new(client.id())),
            client,
            listeners: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// The service's name (its client id).
    pub fn name(&self) -> &str {
        self.client.id()
    }

    /// The client this service runs on.
    pub fn client(&self) -> &P2pClient {
        &self.client
    }

    /// Calls `handler` for every call of `api`, from any client. An API may have several
    /// handlers: all run, in the order they were added, and the first answer wins. Handlers run
    /// on the receive path and should return quickly; one may keep the call's
    /// [`Reply`](crate::Reply) and answer later from a task. Fails if `api` is empty or a
    /// built-in topic API.
    pub fn provide_service(
        &self,
        api: &str,
        handler: impl Fn(ServiceRequest) + Send + Sync + 'static,
    ) -> Result<HandlerId> {
        let mut listeners = self.listeners.lock().unwrap();
        let (id, first) = self.provider.provide(api, handler)?;
        if first {
            let provider = Arc::downgrade(&self.provider);
            let listener = self.client.on(api, move |m: PeerMessage| {
                if let Some(p) = provider.upgrade() {
                    p.call(&m.event, &m.from, m.args, m.reply);
                }
            });
            listeners.insert(api.to_string(), listener);
        }
        Ok(id)
    }

    fn stop_listening(&self, api: &str) {
        if let Some(id) = self.listeners.lock().unwrap().remove(api) {
            self.client.remove_listener(id);
        }
    }

    /// Removes every handler of `api` given to [`provide_service`](Self::provide_service);
    /// later calls of it with a reply get an error answer. Returns whether it had handlers.
    pub fn destroy_service(&self, api: &str) -> bool {
        self.stop_listening(api);
        self.provider.destroy(api)
    }

    /// Removes one handler of `api`. Returns whether it was there.
    pub fn destroy_service_handler(&self, api: &str, handler: HandlerId) -> bool {
        let (removed, empty) = self.provider.destroy_handler(api, handler);
        if empty {
            self.stop_listening(api);
        }
        removed
    }

    /// Removes every API of this service; the built-in topic APIs and the topics stay.
    pub fn destroy_all_services(&self) {
        for api in self.provider.destroy_all() {
            self.stop_listening(&api);
        }
    }

    /// The APIs this service provides (not counting the built-in ones), sorted.
    pub fn apis(&self) -> Vec<String> {
        self.provider.apis()
    }

    /// Creates one or several topics (`"news"` or `["a", "b"]`); creating one again does nothing.
    /// Resolves once the server has set up their rooms. Fails for a service whose name contains
    /// `:topic:`, whose topic rooms would read as another service's.
    pub async fn create_topic(&self, names: impl TopicNames) -> Result<()> {
        super::rules::can_have_topics(self.name())?;
        let names = check_topics(names)?;
        for name in names {
            if self.provider.topics().contains(&name) {
                continue;
            }
            let room = topic_room(self.name(), &name);
            let args = vec![Value::from(action::SERVICE_CREATE_TOPIC), Value::from(room)];
            self.client
                .inner
                .request(event::JOIN_ROOM, args, self.client.inner.opts.timeout)
                .await?;
            self.client
                .inner
                .session
                .lock()
                .unwrap()
                .topics
                .insert(name.clone());
            self.provider.add_topics(vec![name]);
        }
        Ok(())
    }

    /// Destroys one or several topics: every subscriber receives `<room>-TOPIC_BEING_DESTROYED`
    /// and leaves the topic's room, and publishing to it fails until it is created again.
    pub async fn destroy_topic(&self, names: impl TopicNames) -> Result<()> {
        for name in check_topics(names)? {
            self.provider.remove_topics(std::slice::from_ref(&name));
            self.client
                .inner
                .session
                .lock()
                .unwrap()
                .topics
                .remove(&name);
            let room = topic_room(self.name(), &name);
            let args = vec![
                Value::from(action::SERVICE_DESTROY_TOPIC),
                Value::from(room),
            ];
            self.client
                .inner
                .request(event::LEAVE_ROOM, args, self.client.inner.opts.timeout)
                .await?;
        }
        Ok(())
    }

    /// Publishes `args` to the subscribers of `topic`: each receives
    /// `<room>-DEFAULT_TOPIC_EVENT(...args)`. Fails if the topic was not created. Resolves once
    /// the server has sent it.
    pub async fn publish_topic(&self, topic: &str, args: impl IntoArgs) -> Result<()> {
        self.provider.check_created(topic)?;
        let room = topic_room(self.name(), topic);
        self.client
            .emit_room(&room, &topic_event(&room), args)
            .await
    }

    /// The topics this service created and did not destroy, sorted.
    pub fn topics(&self) -> Vec<String> {
        self.provider.topics()
    }

    /// Sends `event(serviceName, ...args)` to a client, which sees it as a message from the
    /// service (`on_service(service, event, ..)`).
    pub async fn emit_client(&self, client: &str, event: &str, args: impl IntoArgs) -> Result<()> {
        self.client.emit_to(client, event, args).await
    }

    /// Like [`emit_client`](Self::emit_client), and waits for the client's answer, deserialized
    /// as `R`; at most the client's timeout, or what [`Request::timeout`] sets.
    pub fn request_client<R>(&self, client: &str, event: &str, args: impl IntoArgs) -> Request<R> {
        self.client.request(client, event, args)
    }
}

/// Creates `topic` of the service `inner` again on the relay (a new session after a reconnect).
pub(crate) async fn create_topic_again(inner: &Arc<ClientInner>, topic: &str) -> Result<()> {
    let room = topic_room(&inner.id, topic);
    let args = vec![Value::from(action::SERVICE_CREATE_TOPIC), Value::from(room)];
    inner
        .request(event::JOIN_ROOM, args, inner.opts.timeout)
        .await
        .map(|_| ())
}

/// Asks `service` again to add the client `inner` to `topic` (a new session after a reconnect);
/// the topic's listeners are still there.
pub(crate) async fn subscribe_again(
    inner: &Arc<ClientInner>,
    service: &str,
    topic: &str,
) -> Result<()> {
    let client = P2pClient {
        inner: inner.clone(),
    };
    let answer: Result<Vec<Value>> = client
        .request_service(service, SUBSCRIBE_TOPIC, (client.id(), topic))
        .await;
    match SubscribeAnswer::from_args(&answer?) {
        SubscribeAnswer::Accepted => Ok(()),
        SubscribeAnswer::Refused(text) => Err(Error::remote(service, text)),
    }
}

/// The built-in `SUBSCRIBE_TOPIC(clientId, topic)` / `UNSUBSCRIBE_TOPIC(clientId, topic)` of a
/// client service: asks the server to add the caller to the topic's room (or remove it), as the
/// seed did, and answers with nothing on success or the error text (the seed's `ack(error)`).
fn topic_membership(inner: Arc<ClientInner>, m: PeerMessage, join: bool) {
    let refuse = |text: String| {
        if let Some(r) = &m.reply {
            r.send(text);
        }
    };
    let TopicMembership { client, topic } = match TopicMembership::from_args(&m.args) {
        Ok(t) => t,
        Err(MembershipError::ClientId) => {
            return refuse(format!(
                "{}: the client id must be a string",
                if join {
                    SUBSCRIBE_TOPIC
                } else {
                    UNSUBSCRIBE_TOPIC
                }
            ))
        }
        Err(MembershipError::EmptyTopic) => return refuse(EMPTY_TOPIC.to_string()),
    };
    // The seed trusted this id; here a client may only (un)subscribe itself.
    if client != m.from {
        return refuse(format!(
            "client '{}' may only subscribe or unsubscribe itself, not '{client}'",
            m.from
        ));
    }
    let room = topic_room(&inner.id, &topic);
    let (name, act) = if join {
        (event::JOIN_ROOM, action::CLIENT_SUBSCRIBE_TOPIC)
    } else {
        (event::LEAVE_ROOM, action::CLIENT_UNSUBSCRIBE_TOPIC)
    };
    let args = vec![Value::from(act), Value::from(client), Value::from(room)];
    let reply = m.reply;
    tokio::spawn(async move {
        let result = inner.request(name, args, inner.opts.timeout).await;
        if let Some(r) = reply {
            match result {
                Ok(_) => r.send(()),
                Err(e) => r.send(e.to_string()),
            };
        }
    });
}
