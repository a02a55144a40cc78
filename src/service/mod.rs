//! Service API: socket-based APIs (request/response) and topics (publish/subscribe), provided by
//! the server or by a client, and called the same way in both cases.
//!
//! Services are a thin layer over messages and rooms:
//! - a service is addressed like a client: a call is a message to `(service, api)`, with or without
//!   a reply ([`P2pClient::emit_service`], [`P2pClient::emit_service_with_reply`],
//!   [`P2pClient::request_service`]);
//! - a topic is the room `service:<service>:topic:<topic>` ([`topic_room`]); a publication is the
//!   room event `<room>-DEFAULT_TOPIC_EVENT`, and `<room>-TOPIC_BEING_DESTROYED` tells members the
//!   topic is gone;
//! - every service answers the built-in APIs [`SUBSCRIBE_TOPIC`] and [`UNSUBSCRIBE_TOPIC`], which
//!   join the caller to a topic room and remove it.
//!
//! The server provides services through [`ServiceHandle`]s ([`P2pServer::as_service`]); it handles
//! the calls addressed to an API it provides and relays everything else to the client of that
//! name, so a service may also be a client ([`ServiceClient`], [`P2pClient::connect_service`]).
//! Providers on both sides receive the same [`ServiceRequest`] and answer with the same
//! [`ServiceReply`].
//!
//! [`P2pServer::as_service`]: crate::P2pServer::as_service
//! [`P2pClient::emit_service`]: crate::P2pClient::emit_service
//! [`P2pClient::emit_service_with_reply`]: crate::P2pClient::emit_service_with_reply
//! [`P2pClient::request_service`]: crate::P2pClient::request_service
//! [`P2pClient::connect_service`]: crate::P2pClient::connect_service

pub mod client;
pub(crate) mod server;

pub use client::{ServiceClient, TopicEvent};
pub use server::ServiceHandle;

use crate::error::{Error, Result};
use crate::message::client::{parse_args, IntoArgs, ListenerId, Reply};
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::sync::Arc;

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
    Ok(())
}

/// Identifies one handler given to `provide_service`, to remove it alone with
/// `destroy_service_handler`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HandlerId(HandlerKey);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum HandlerKey {
    Server(u64),
    Client(ListenerId),
}

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
    pub reply: Option<ServiceReply>,
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

    /// Answers the call if the caller waits for an answer (unless another handler answered
    /// first); does nothing for a call without a reply. Use [`reply`](Self::reply) to know which
    /// answer was sent.
    pub fn respond(&self, args: impl IntoArgs) {
        if let Some(r) = &self.reply {
            r.send(args);
        }
    }
}

/// The way to answer a service call. Clones share one answer: the first
/// [`send`](ServiceReply::send) or [`error`](ServiceReply::error) wins. If every clone is
/// dropped unanswered, the caller is told at once that no answer will come. It may be kept and
/// used later, from any task.
#[derive(Clone, Debug)]
pub struct ServiceReply(ReplyKind);

#[derive(Clone)]
enum ReplyKind {
    Client(Reply),
    Server(Arc<server::ServerReply>),
}

impl std::fmt::Debug for ReplyKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReplyKind::Client(r) => r.fmt(f),
            ReplyKind::Server(r) => r.fmt(f),
        }
    }
}

impl ServiceReply {
    /// Answers with these arguments. Returns false if an answer was already sent.
    pub fn send(&self, args: impl IntoArgs) -> bool {
        match &self.0 {
            ReplyKind::Client(r) => r.send(args),
            ReplyKind::Server(r) => r.send(args),
        }
    }

    /// Answers with an error: a Rust caller sees it as [`Error::Remote`]; a seed-era JavaScript
    /// caller, whose acknowledgements carry no errors, receives it as a `SERVER_ERROR` event.
    pub fn error(&self, message: impl Into<String>) -> bool {
        match &self.0 {
            ReplyKind::Client(r) => r.error(message),
            ReplyKind::Server(r) => r.error(message.into()),
        }
    }
}
