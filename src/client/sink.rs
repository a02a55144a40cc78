//! How the APIs plug into the connection.
//!
//! The connection decodes what the relay sends and answers requests, but it does not know what an
//! event means to an API. Each API that receives events is an [`EventSink`], handed to the
//! connection in an [`Apis`] set when the client is built; the demultiplexer offers every event to
//! the sinks in the order they were added, on the receive path, in arrival order. A sink that
//! keeps state (listeners, streams) is that state: the API finds it again with
//! [`ClientInner::api`].

use super::ClientInner;
use bytes::Bytes;
use serde_json::Value;
use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::Arc;

/// How an event reached this client, as far as the wire tells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Origin {
    /// Addressed to this client alone: relayed from a peer (`P2P_EMIT`, `P2P_EMIT_ACKNOWLEDGE`,
    /// `P2P_BATCH`) or sent by the server. By the seed's framing, `args[0]` is the sender id when
    /// it is a string; the relay checks it for peers.
    Direct,
    /// A room emit (`P2P_ROOM`) to the named room: no sender id, the arguments are the emitter's
    /// own.
    Room(String),
}

/// An event the relay delivered, as the demultiplexer hands it to the sinks.
#[derive(Debug)]
pub(crate) struct Incoming {
    /// The event name.
    pub(crate) event: String,
    /// Its arguments.
    pub(crate) args: Vec<Value>,
    /// The request id, when the sender waits for an answer (`P2P_REQ`); answer it with
    /// [`ClientInner::respond`].
    pub(crate) request: Option<u64>,
    /// How it came.
    pub(crate) origin: Origin,
}

/// An API's receive side. Every method runs on the connection's receive path, one event at a time
/// in arrival order, and should return quickly.
pub(crate) trait EventSink: Any + Send + Sync {
    /// An event; gives it back when this sink does not take it, for the next sink. A request no
    /// sink takes is answered with an error.
    fn event(&self, link: &Arc<ClientInner>, ev: Incoming) -> Option<Incoming> {
        let _ = link;
        Some(ev)
    }

    /// An event with one binary attachment; gives the bytes back when this sink does not take
    /// them.
    fn binary(&self, link: &Arc<ClientInner>, event: &str, data: Bytes) -> Option<Bytes> {
        let _ = (link, event);
        Some(data)
    }

    /// A peer of this client disconnected (`MULTI_API_TARGET_DISCONNECT`).
    fn peer_gone(&self, link: &Arc<ClientInner>, peer: &str) {
        let _ = (link, peer);
    }

    /// The relay reported an error with something this client sent (`SERVER_ERROR` after the
    /// handshake).
    fn server_error(&self, link: &Arc<ClientInner>, message: &str) {
        let _ = (link, message);
    }

    /// The connection is closed; pending requests have already failed.
    fn connection_lost(&self, link: &ClientInner, why: &str) {
        let _ = (link, why);
    }

    /// The link dropped and the client connects again (its session may be resumed); by default
    /// as [`connection_lost`](Self::connection_lost).
    fn link_down(&self, link: &ClientInner, why: &str) {
        self.connection_lost(link, why);
    }

    /// The client is back on a new link, welcomed: `resumed` when the relay kept its session.
    fn link_up(&self, link: &Arc<ClientInner>, resumed: bool) {
        let _ = (link, resumed);
    }
}

/// The APIs a client is built with: their sinks, in the order they see events, and each one's
/// state by its type.
#[derive(Default)]
pub(crate) struct Apis {
    sinks: Vec<Arc<dyn EventSink>>,
    state: HashMap<TypeId, Arc<dyn Any + Send + Sync>>,
}

impl Apis {
    /// Adds `api`, which sees events after the sinks added before it.
    pub(crate) fn with<T: EventSink>(mut self, api: T) -> Apis {
        let api = Arc::new(api);
        let previous = self.state.insert(TypeId::of::<T>(), api.clone());
        debug_assert!(previous.is_none(), "an API added twice");
        self.sinks.push(api);
        self
    }

    pub(super) fn sinks(&self) -> &[Arc<dyn EventSink>] {
        &self.sinks
    }

    pub(super) fn get<T: Any>(&self) -> Option<&T> {
        self.state
            .get(&TypeId::of::<T>())
            .and_then(|a| (**a).downcast_ref::<T>())
    }
}
