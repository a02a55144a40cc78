//! Service API: socket-based APIs (request/response) and topics (publish/subscribe), provided by
//! the server or by a client, and called the same way in both cases.
//!
//! Services are a thin layer over messages and rooms:
//! - a service is addressed like a client: a call is a message to `(service, api)`, with or without
//!   an answer ([`P2pClient::emit_service`], [`P2pClient::request_service`]);
//! - a topic is the room `service:<service>:topic:<topic>` ([`topic_room`]); a publication is the
//!   room event `<room>-DEFAULT_TOPIC_EVENT`, and `<room>-TOPIC_BEING_DESTROYED` tells members the
//!   topic is gone;
//! - every service answers the built-in APIs [`SUBSCRIBE_TOPIC`] and [`UNSUBSCRIBE_TOPIC`], which
//!   join the caller to a topic room and remove it.
//!
//! A topic room belongs to its service: only the service's `SUBSCRIBE_TOPIC` puts a client in
//! it, and only the service publishes into it, destroys it, or adds and removes other clients;
//! the relay enforces this whatever a client claims (see `PROTOCOL.md`, "Rules").
//!
//! The server provides services through [`ServiceHandle`]s ([`P2pServer::as_service`]); it handles
//! the calls addressed to an API it provides and relays everything else to the client of that
//! name, so a service may also be a client ([`ServiceClient`], [`P2pClient::connect_service`]).
//! Both share one implementation of what every service has (its APIs, their handlers, its topics):
//! providers on both sides receive the same [`ServiceRequest`] and answer with the same
//! [`Reply`] as any request.
//!
//! [`P2pServer::as_service`]: crate::P2pServer::as_service
//! [`P2pClient::emit_service`]: crate::P2pClient::emit_service
//! [`P2pClient::request_service`]: crate::P2pClient::request_service
//! [`P2pClient::connect_service`]: crate::P2pClient::connect_service

pub mod client;
pub(crate) mod rules;
pub(crate) mod server;

pub use client::{ServiceClient, TopicEvent};
pub use server::ServiceHandle;

use crate::error::{Error, Result};
use crate::message::parse_args;
use crate::request::Reply;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

/// Built-in API of every service: `SUBSCRIBE_TOPIC(clientId, topic)` joins that client (it must
/// be the caller) to the topic's room. Answered with no arguments on success. A refusal (empty or
/// non-string topic, another client's id) is answered as the seed did, with the error text as the
/// one argument; the server answers a Rust caller with an error instead.
/// [`P2pClient::subscribe_topic`](crate::P2pClient::subscribe_topic) reads both as an error.
pub const SUBSCRIBE_TOPIC: &str = "SUBSCRIBE_TOPIC";
/// Built-in API of every service: `UNSUBSCRIBE_TOPIC(clientId, topic)` removes that client (it
/// must be the caller) from the topic's room.
pub const UNSUBSCRIBE_TOPIC: &str = "UNSUBSCRIBE_TOPIC";
/// Suffix of the room event that carries a publication: `<room>-DEFAULT_TOPIC_EVENT`.
pub const TOPIC_EVENT_SUFFIX: &str = "-DEFAULT_TOPIC_EVENT";
/// Suffix of the room event that tells members a topic is destroyed: `<room>-TOPIC_BEING_DESTROYED`.
pub const TOPIC_DESTROYED_SUFFIX: &str = "-TOPIC_BEING_DESTROYED";
/// The seed's answer to an empty (or non-string) topic name.
pub const EMPTY_TOPIC: &str = "topicName can not be empty";

/// The room of `topic` of `service`: `service:<service>:topic:<topic>`. The prefix keeps the
/// topics of two services apart even when they share a name.
pub fn topic_room(service: &str, topic: &str) -> String {
    format!("service:{service}:topic:{topic}")
}

/// The event a publication to `room` arrives as.
pub fn topic_event(room: &str) -> String {
    format!("{room}{TOPIC_EVENT_SUFFIX}")
}

/// The event that tells the members of `room` that the topic is destroyed.
pub fn topic_destroyed_event(room: &str) -> String {
    format!("{room}{TOPIC_DESTROYED_SUFFIX}")
}

/// Whether `api` is one of the built-in topic APIs, which cannot be provided or destroyed.
pub fn is_builtin_api(api: &str) -> bool {
    api == SUBSCRIBE_TOPIC || api == UNSUBSCRIBE_TOPIC
}

/// One or several topic names: `"news"`, `["a", "b"]`, `&["a", "b"][..]`, `vec![String]`.
pub trait TopicNames {
    /// The names, in order.
    fn topic_names(self) -> Vec<String>;
}

impl TopicNames for &str {
    fn topic_names(self) -> Vec<String> {
        vec![self.to_string()]
    }
}

impl TopicNames for String {
    fn topic_names(self) -> Vec<String> {
        vec![self]
    }
}

impl TopicNames for &String {
    fn topic_names(self) -> Vec<String> {
        vec![self.clone()]
    }
}

impl<S: AsRef<str>> TopicNames for &[S] {
    fn topic_names(self) -> Vec<String> {
        self.iter().map(|s| s.as_ref().to_string()).collect()
    }
}

impl<S: AsRef<str>, const N: usize> TopicNames for [S; N] {
    fn topic_names(self) -> Vec<String> {
        self.iter().map(|s| s.as_ref().to_string()).collect()
    }
}

impl<S: AsRef<str>> TopicNames for Vec<S> {
    fn topic_names(self) -> Vec<String> {
        self.iter().map(|s| s.as_ref().to_string()).collect()
    }
}

/// Checks a list of topic names: at least one, none empty. Repeated names are kept once.
pub(crate) fn check_topics(names: impl TopicNames) -> Result<Vec<String>> {
    let names = names.topic_names();
    if names.is_empty() {
        return Err(Error::BadRequest("no topic name given".into()));
    }
    let mut out: Vec<String> = Vec::with_capacity(names.len());
    for n in names {
        check_topic(&n)?;
        if !out.contains(&n) {
            out.push(n);
        }
    }
    Ok(out)
}

/// Checks one topic name.
pub(crate) fn check_topic(topic: &str) -> Result<()> {
    if topic.is_empty() {
        Err(Error::BadRequest(EMPTY_TOPIC.into()))
    } else {
        Ok(())
    }
}

/// Checks a service or API name.
pub(crate) fn check_name(name: &str, what: &str) -> Result<()> {
    if name.is_empty() {
        Err(Error::BadRequest(format!("the {what} name is empty")))
    } else {
        Ok(())
    }
}

/// Checks an API name given to `provide_service`: not empty, not a built-in topic API.
pub(crate) fn check_provided_api(api: &str) -> Result<()> {
    check_name(api, "API")?;
    if is_builtin_api(api) {
        return Err(Error::BadRequest(format!(
            "'{api}' is a built-in API of every service"
        )));
    }
    // Calls to it would be refused on their way.
    if crate::protocol::is_reserved(api) {
        return Err(Error::BadRequest(crate::protocol::reserved_event(api)));
    }
    Ok(())
}

/// Identifies one handler given to `provide_service`, to remove it alone with
/// `destroy_service_handler`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HandlerId(u64);

/// A call to an API of a service, as its provider sees it (server or client alike).
#[derive(Debug)]
pub struct ServiceRequest {
    /// The service that was called.
    pub service: String,
    /// The API that was called.
    pub api: String,
    /// The caller's client id, as the server vouches for it.
    pub from: String,
    /// The call's arguments (after the caller id).
    pub args: Vec<Value>,
    /// Present when the caller waits for an answer. With several handlers on one API every
    /// handler gets a clone, and the first answer wins.
    pub reply: Option<Reply>,
}

impl ServiceRequest {
    /// Deserializes the arguments as one typed value: a tuple for several arguments.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T> {
        parse_args(&self.args)
    }

    /// Deserializes argument `i`.
    pub fn arg<T: DeserializeOwned>(&self, i: usize) -> Result<T> {
        let v = self.args.get(i).cloned().unwrap_or(Value::Null);
        serde_json::from_value(v).map_err(Error::from)
    }

    /// Answers the call with `value` (see [`Reply::send`]) if the caller waits for an answer and
    /// no other handler answered first; does nothing for a call without a reply. To know whether
    /// the answer went, use [`reply`](Self::reply) instead.
    pub fn respond(&self, value: impl Serialize) {
        if let Some(r) = &self.reply {
            r.send(value);
        }
    }
}

type Handler = Arc<dyn Fn(ServiceRequest) + Send + Sync>;

/// What every service has, whoever provides it: its name, the handlers of its APIs and the topics
/// it created. [`ServiceHandle`] (server) and [`ServiceClient`] (client) are both one of these plus
/// their transport.
pub(crate) struct Provider {
    name: Arc<str>,
    apis: RwLock<HashMap<String, Vec<(u64, Handler)>>>,
    topics: Mutex<HashSet<String>>,
    next: AtomicU64,
}

impl Provider {
    pub(crate) fn new(name: &str) -> Provider {
        Provider {
            name: Arc::from(name),
            apis: RwLock::new(HashMap::new()),
            topics: Mutex::new(HashSet::new()),
            next: AtomicU64::new(1),
        }
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// Adds a handler of `api`; also says whether it is the API's first.
    pub(crate) fn provide(
        &self,
        api: &str,
        handler: impl Fn(ServiceRequest) + Send + Sync + 'static,
    ) -> Result<(HandlerId, bool)> {
        check_provided_api(api)?;
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let mut apis = self.apis.write().unwrap();
        let list = apis.entry(api.to_string()).or_default();
        list.push((id, Arc::new(handler)));
        Ok((HandlerId(id), list.len() == 1))
    }

    /// Removes every handler of `api`; whether it had any.
    pub(crate) fn destroy(&self, api: &str) -> bool {
        self.apis.write().unwrap().remove(api).is_some()
    }

    /// Removes one handler of `api`: whether it was there, and whether the API has none left.
    pub(crate) fn destroy_handler(&self, api: &str, handler: HandlerId) -> (bool, bool) {
        let mut apis = self.apis.write().unwrap();
        let Some(list) = apis.get_mut(api) else {
            return (false, false);
        };
        let before = list.len();
        list.retain(|(h, _)| *h != handler.0);
        let removed = list.len() != before;
        let empty = list.is_empty();
        if empty {
            apis.remove(api);
        }
        (removed, empty)
    }

    /// Removes every API; returns their names.
    pub(crate) fn destroy_all(&self) -> Vec<String> {
        self.apis.write().unwrap().drain().map(|(k, _)| k).collect()
    }

    /// The provided APIs, sorted.
    pub(crate) fn apis(&self) -> Vec<String> {
        let mut apis: Vec<String> = self.apis.read().unwrap().keys().cloned().collect();
        apis.sort();
        apis
    }

    /// Whether `api` has handlers.
    pub(crate) fn provides(&self, api: &str) -> bool {
        self.apis.read().unwrap().contains_key(api)
    }

    /// Runs the handlers of `api` in the order they were added, each with a clone of `reply`.
    /// A panicking handler is answered for with an error, and the others still run.
    pub(crate) fn call(&self, api: &str, from: &str, mut args: Vec<Value>, reply: Option<Reply>) {
        let handlers: Vec<Handler> = match self.apis.read().unwrap().get(api) {
            Some(list) => list.iter().map(|(_, h)| h.clone()).collect(),
            None => Vec::new(),
        };
        let n = handlers.len();
        for (i, h) in handlers.into_iter().enumerate() {
            let args = if i + 1 == n {
                std::mem::take(&mut args)
            } else {
                args.clone()
            };
            let req = ServiceRequest {
                service: self.name.to_string(),
                api: api.to_string(),
                from: from.to_string(),
                args,
                reply: reply.clone(),
            };
            if std::panic::catch_unwind(AssertUnwindSafe(|| h(req))).is_err() {
                tracing::error!(service = %self.name, api = %api, "a service handler panicked");
                if let Some(reply) = &reply {
                    reply.error(format!(
                        "service '{}' failed while handling '{api}'",
                        self.name
                    ));
                }
            }
        }
    }

    /// Adds topics; returns those that are new.
    pub(crate) fn add_topics(&self, names: Vec<String>) -> Vec<String> {
        let mut topics = self.topics.lock().unwrap();
        names
            .into_iter()
            .filter(|n| topics.insert(n.clone()))
            .collect()
    }

    /// Forgets topics.
    pub(crate) fn remove_topics(&self, names: &[String]) {
        let mut topics = self.topics.lock().unwrap();
        for n in names {
            topics.remove(n);
        }
    }

    /// Fails unless `topic` was created (and not destroyed).
    pub(crate) fn check_created(&self, topic: &str) -> Result<()> {
        check_topic(topic)?;
        if self.topics.lock().unwrap().contains(topic) {
            Ok(())
        } else {
            Err(Error::BadRequest(format!(
                "topic '{topic}' of service '{}' was not created",
                self.name
            )))
        }
    }

    /// The created topics, sorted.
    pub(crate) fn topics(&self) -> Vec<String> {
        let mut topics: Vec<String> = self.topics.lock().unwrap().iter().cloned().collect();
        topics.sort();
        topics
    }
}
