//! The one error type of the crate, and its wire form.
//!
//! Every failure a caller can see is an [`Error`]. Failures that happen on the relay or at a peer
//! travel back to the caller as an [`ErrorCode`] plus details (see [`WireError`]), so the caller
//! gets the same variant it would have got locally, without reading any text.

use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;

/// A boxed cause kept inside an [`Error`].
pub type BoxError = Arc<dyn std::error::Error + Send + Sync + 'static>;

/// Everything that can go wrong talking through the relay.
///
/// Display texts are one sentence without a trailing period; the underlying cause, when there is
/// one, is available through [`std::error::Error::source`], not repeated in the text.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The target client is not connected to the relay.
    #[error("client '{0}' is not connected to the relay")]
    UnknownTarget(String),
    /// The request was malformed or used a reserved name; the text says what was wrong.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// The peer (or a service) answered with an error of its own.
    #[error("{} answered with an error: {message}", answerer(peer))]
    Remote {
        /// Who answered: a client id, a service name, or `the relay`.
        peer: String,
        /// The peer's own words.
        message: String,
    },
    /// No answer came within the allowed time.
    #[error("no answer from {} to '{event}' within {after:?}", who(.peer))]
    Timeout {
        /// The client (or service) that did not answer; `None` is the relay itself.
        peer: Option<String>,
        /// The event (or API) that was asked.
        event: String,
        /// How long the caller waited.
        after: Duration,
    },
    /// The peer disconnected before it answered, or while a stream to it was open.
    #[error("client '{0}' disconnected")]
    PeerGone(String),
    /// The target's outgoing queue on the relay is full; nothing was delivered. Try again later.
    #[error("client '{0}' is busy (its queue on the relay is full); nothing was delivered, try again later")]
    Busy(String),
    /// The relay turned a request away, or carried out only part of it, for lack of room: the
    /// sender went past its event rate or its requests in flight, or members of a room had full
    /// queues and did not get a room event (the others did). The text says which and who; slow
    /// down and try again later. Travels with the same code as [`Error::Busy`].
    #[error("busy: {0}")]
    Overloaded(String),
    /// The other side broke the protocol.
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// This client's connection to the relay is closed; the text says why.
    #[error("not connected to the relay: {0}")]
    Disconnected(String),
    /// The relay refused the connection; the text is its reason.
    #[error("the relay refused the connection: {0}")]
    Refused(String),
    /// The relay's authenticator refused the connection (see [`crate::auth`]).
    #[error("the relay refused the connection: {message}")]
    Unauthorized {
        /// Why, as one of a few distinct causes.
        reason: crate::auth::RefusalReason,
        /// The relay's words (the client's connection error).
        message: String,
    },
    /// The caller's permissions do not allow the operation; nothing reached its target. The text
    /// says who may not do what.
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// A token or key could not be made or read (minting a token, loading a key).
    #[error("{message}")]
    Token {
        /// What failed.
        message: String,
        /// The underlying error, if any.
        #[source]
        source: Option<BoxError>,
    },
    /// Connecting to the relay failed below the Socket.IO level (address, network, handshake).
    #[error("could not connect to {url}")]
    Connect {
        /// The relay address that was tried.
        url: String,
        /// What failed.
        #[source]
        source: BoxError,
    },
    /// An I/O operation failed (binding a port, reading a file).
    #[error("I/O error")]
    Io(#[source] Arc<std::io::Error>),
    /// A value could not be converted to or from JSON.
    #[error("could not convert a payload to or from JSON")]
    Json(#[source] Arc<serde_json::Error>),
    /// The target is on another relay of the cluster, or may be, and the relays cannot reach
    /// each other right now (their Redis is down or unreachable), or the operation is not carried
    /// between relays; nothing was delivered, except that a room event (or the end of a topic)
    /// reached the members on the sender's own relay. The text says which. See
    /// [`ClusterOptions`](crate::cluster::ClusterOptions).
    #[error("cluster: {0}")]
    Cluster(String),
}

/// Who answered, as a text: a quoted client or service name, or the relay itself unquoted.
fn answerer(peer: &str) -> String {
    if peer == RELAY {
        peer.to_string()
    } else {
        format!("'{peer}'")
    }
}

/// Who answers when the relay itself answers a request, as [`Error::Remote`] names it.
pub const RELAY: &str = "the relay";

fn who(peer: &Option<String>) -> String {
    match peer {
        Some(p) => format!("'{p}'"),
        None => RELAY.to_string(),
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Io(Arc::new(e))
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::Json(Arc::new(e))
    }
}

impl From<Error> for std::io::Error {
    fn from(e: Error) -> Self {
        use std::io::ErrorKind as K;
        let kind = match &e {
            Error::Io(io) => io.kind(),
            Error::UnknownTarget(_) => K::NotFound,
            Error::BadRequest(_) => K::InvalidInput,
            Error::Protocol(_) | Error::Json(_) => K::InvalidData,
            Error::Timeout { .. } => K::TimedOut,
            Error::PeerGone(_) => K::ConnectionAborted,
            Error::Disconnected(_) => K::NotConnected,
            Error::Refused(_) | Error::Unauthorized { .. } => K::ConnectionRefused,
            Error::PermissionDenied(_) => K::PermissionDenied,
            Error::Token { .. } => K::InvalidInput,
            Error::Busy(_) | Error::Overloaded(_) => K::WouldBlock,
            Error::Cluster(_) => K::NotConnected,
            Error::Remote { .. } | Error::Connect { .. } => K::Other,
        };
        std::io::Error::new(kind, e)
    }
}

/// The kind of an [`Error`] as it travels on the wire, inside a `P2P_RES` error answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[non_exhaustive]
pub enum ErrorCode {
    /// [`Error::UnknownTarget`].
    UnknownTarget,
    /// [`Error::BadRequest`].
    BadRequest,
    /// [`Error::Remote`]: the answering side's own error.
    Remote,
    /// [`Error::Timeout`].
    Timeout,
    /// [`Error::PeerGone`].
    PeerGone,
    /// [`Error::Busy`], or [`Error::Overloaded`] when the answer has a `detail`.
    Busy,
    /// [`Error::Protocol`].
    Protocol,
    /// [`Error::Refused`]: the relay refused the connection.
    Refused,
    /// [`Error::Unauthorized`]: the relay's authenticator refused the connection.
    Unauthorized,
    /// [`Error::PermissionDenied`]: the caller may not do this.
    PermissionDenied,
    /// [`Error::Cluster`]: the relays of a cluster cannot reach each other, or the operation
    /// does not cross relays.
    Cluster,
    /// Anything else that failed on the other side; reaches the caller as [`Error::Remote`].
    #[serde(other)]
    Internal,
}

/// An error as it travels in a `P2P_RES` answer:
/// `{"err": "<text>", "code": "<CODE>", "peer": "...", "event": "...", "afterMs": n}`.
///
/// `err` is the display text (what older peers read); the other fields let the receiver rebuild
/// the [`Error`] variant without parsing text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WireError {
    /// Human-readable text.
    pub err: String,
    /// The kind; absent in answers from peers that predate codes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<ErrorCode>,
    /// The client or service concerned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    /// The event or API concerned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
    /// For timeouts: how long the other side waited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after_ms: Option<u64>,
    /// For [`ErrorCode::BadRequest`], [`ErrorCode::Protocol`], [`ErrorCode::Remote`] and
    /// [`Error::Overloaded`] (code [`ErrorCode::Busy`]): the detail without any prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl Error {
    /// The wire code of this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            Error::UnknownTarget(_) => ErrorCode::UnknownTarget,
            Error::BadRequest(_) => ErrorCode::BadRequest,
            Error::Remote { .. } => ErrorCode::Remote,
            Error::Timeout { .. } => ErrorCode::Timeout,
            Error::PeerGone(_) => ErrorCode::PeerGone,
            Error::Busy(_) | Error::Overloaded(_) => ErrorCode::Busy,
            Error::Protocol(_) => ErrorCode::Protocol,
            Error::Refused(_) => ErrorCode::Refused,
            Error::Unauthorized { .. } => ErrorCode::Unauthorized,
            Error::PermissionDenied(_) => ErrorCode::PermissionDenied,
            Error::Cluster(_) => ErrorCode::Cluster,
            _ => ErrorCode::Internal,
        }
    }

    /// Shorthand for [`Error::Remote`].
    pub fn remote(peer: impl Into<String>, message: impl Into<String>) -> Error {
        Error::Remote {
            peer: peer.into(),
            message: message.into(),
        }
    }

    /// The wire form of this error, to answer a request with.
    pub fn to_wire(&self) -> WireError {
        let mut w = WireError {
            err: self.to_string(),
            code: Some(self.code()),
            peer: None,
            event: None,
            after_ms: None,
            detail: None,
        };
        match self {
            Error::UnknownTarget(p) | Error::PeerGone(p) | Error::Busy(p) => {
                w.peer = Some(p.clone())
            }
            Error::BadRequest(d)
            | Error::Protocol(d)
            | Error::Refused(d)
            | Error::Overloaded(d)
            | Error::PermissionDenied(d)
            | Error::Cluster(d)
            | Error::Unauthorized { message: d, .. } => w.detail = Some(d.clone()),
            Error::Remote { peer, message } => {
                w.peer = Some(peer.clone());
                w.detail = Some(message.clone());
            }
            Error::Timeout { peer, event, after } => {
                w.peer = peer.clone();
                w.event = Some(event.clone());
                w.after_ms = Some(after.as_millis().min(u128::from(u64::MAX)) as u64);
            }
            _ => {}
        }
        w
    }

    /// Rebuilds an error from its wire form. `from` names who answered, for errors that carry
    /// no peer of their own.
    pub fn from_wire(w: WireError, from: &str) -> Error {
        let peer = w.peer.clone().unwrap_or_else(|| from.to_string());
        let detail = w.detail.clone().unwrap_or_else(|| w.err.clone());
        match w.code {
            Some(ErrorCode::UnknownTarget) => Error::UnknownTarget(peer),
            Some(ErrorCode::PeerGone) => Error::PeerGone(peer),
            Some(ErrorCode::Busy) => match w.detail {
                Some(detail) => Error::Overloaded(detail),
                None => Error::Busy(peer),
            },
            Some(ErrorCode::BadRequest) => Error::BadRequest(detail),
            Some(ErrorCode::Protocol) => Error::Protocol(detail),
            Some(ErrorCode::Refused) => Error::Refused(detail),
            Some(ErrorCode::Unauthorized) => Error::Unauthorized {
                reason: crate::auth::RefusalReason::of_message(&detail),
                message: detail,
            },
            Some(ErrorCode::PermissionDenied) => Error::PermissionDenied(detail),
            Some(ErrorCode::Cluster) => Error::Cluster(detail),
            Some(ErrorCode::Timeout) => Error::Timeout {
                peer: w.peer,
                event: w.event.unwrap_or_default(),
                after: Duration::from_millis(w.after_ms.unwrap_or(0)),
            },
            Some(ErrorCode::Remote) => Error::Remote {
                peer,
                message: detail,
            },
            Some(ErrorCode::Internal) | None => Error::Remote {
                peer: from.to_string(),
                message: w.err,
            },
        }
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_coded_error_survives_the_wire() {
        let cases = [
            Error::UnknownTarget("bob".into()),
            Error::BadRequest("the room name is empty".into()),
            Error::remote("bob", "no such job"),
            Error::Timeout {
                peer: Some("bob".into()),
                event: "add".into(),
                after: Duration::from_millis(1500),
            },
            Error::Timeout {
                peer: None,
                event: "JOIN_ROOM".into(),
                after: Duration::from_secs(5),
            },
            Error::PeerGone("bob".into()),
            Error::Busy("bob".into()),
            Error::Overloaded("client 'bob' sent more than 10 events at once".into()),
            Error::Protocol("DATA after FIN".into()),
            Error::Refused("client id 'bob' is already connected".into()),
            Error::Unauthorized {
                reason: crate::auth::RefusalReason::Expired,
                message: "token expired: the token's exp has passed".into(),
            },
            Error::PermissionDenied("client 'alice' may not send to client 'bob'".into()),
            Error::Cluster("the relays cannot reach their Redis".into()),
        ];
        for e in cases {
            let json = serde_json::to_value(e.to_wire()).unwrap();
            let back = Error::from_wire(serde_json::from_value(json).unwrap(), "x");
            assert_eq!(back.to_string(), e.to_string());
            assert_eq!(back.code(), e.code());
        }
    }

    #[test]
    fn an_uncoded_answer_is_the_peers_own_error() {
        let w: WireError = serde_json::from_value(serde_json::json!({"err": "nope"})).unwrap();
        let e = Error::from_wire(w, "bob");
        assert!(
            matches!(&e, Error::Remote { peer, message } if peer == "bob" && message == "nope")
        );
        let w: WireError =
            serde_json::from_value(serde_json::json!({"err": "x", "code": "FROM_THE_FUTURE"}))
                .unwrap();
        assert_eq!(w.code, Some(ErrorCode::Internal));
    }

    #[test]
    fn causes_are_kept_and_texts_do_not_repeat_them() {
        use std::error::Error as _;
        let io = std::io::Error::new(std::io::ErrorKind::AddrInUse, "port taken");
        let e = Error::from(io);
        assert_eq!(e.to_string(), "I/O error");
        assert_eq!(e.source().unwrap().to_string(), "port taken");
        let back = std::io::Error::from(Error::Timeout {
            peer: None,
            event: "X".into(),
            after: Duration::from_secs(1),
        });
        assert_eq!(back.kind(), std::io::ErrorKind::TimedOut);
    }
}
