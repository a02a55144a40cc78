//! Wire protocol shared by the relay server and the Rust client.
//!
//! Event names and payload shapes of the seed protocol (what seed-era JavaScript clients speak) and
//! the extensions Rust peers use on top of it. `PROTOCOL.md` at the repository root describes the
//! same thing event by event; this module is its typed form.

use serde::ser::SerializeTuple;
use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;

mod arg;
pub mod service;
pub mod stream;
mod wire;

pub use arg::{
    args_error, check_no_placeholder, has_placeholder, Arg, ExtArgs, RawArgs, SeedArgs,
    PLACEHOLDER_KEY, PLACEHOLDER_REFUSED,
};
pub use wire::*;

/// Room names starting with this belong to the relay: clients can neither join, leave, empty nor
/// emit to them.
pub const RESERVED_ROOM_PREFIX: &str = "__p2p_";
/// The relay's room of every extension (Rust) connection: room emits reach these members as
/// `P2P_ROOM`, through the adapter like any broadcast.
pub const EXT_MEMBERS_ROOM: &str = "__p2p_ext__";
/// The relay's room of every seed-era connection: room emits reach these members as the plain
/// `event(...args)` the seed protocol sends.
pub const SEED_MEMBERS_ROOM: &str = "__p2p_seed__";

/// Query-string key carrying the client id in the handshake (`?clientId=alice`).
pub const QUERY_CLIENT_ID: &str = "clientId";
/// Query-string key a Rust peer sets to `1` to announce the protocol extensions
/// (acknowledgements carried as `P2P_REQ`/`P2P_RES` events, `P2P_WELCOME`, batches).
pub const QUERY_EXTENSIONS: &str = "p2pExt";

/// Query parameter with which a returning extension client presents the resume secret of its
/// session (from `P2P_WELCOME`), to take that session over.
pub const QUERY_RESUME: &str = "resume";

/// Query parameter with which an extension client says how many events of its session it has
/// received from the relay (0 for a new session): a client that sends it counts and confirms
/// what it receives with `P2P_RECEIVED`, and the relay keeps what it sent until confirmed, to
/// send it again after a resume (see `PROTOCOL.md`, "Session resume").
pub const QUERY_RECEIVED: &str = "received";

/// Seed event names.
pub mod event {
    /// Join a room, or one of the action forms (see `PROTOCOL.md`).
    pub const JOIN_ROOM: &str = "JOIN_ROOM";
    /// Leave a room, or one of the action forms.
    pub const LEAVE_ROOM: &str = "LEAVE_ROOM";
    /// Emit an event to every other member of a room.
    pub const EMIT_ROOM: &str = "EMIT_ROOM";
    /// Ask the server for the ids of connected clients.
    pub const LIST_CLIENTS: &str = "LIST_CLIENTS";
    /// Relay an event to one client.
    pub const P2P_EMIT: &str = "P2P_EMIT";
    /// Relay an event to one client and pass its acknowledgement back.
    pub const P2P_EMIT_ACKNOWLEDGE: &str = "P2P_EMIT_ACKNOWLEDGE";
    /// Ask a client to become a peer (and watch both ends for disconnects).
    pub const MULTI_API_ADD_TARGET: &str = "MULTI_API_ADD_TARGET";
    /// A peer of this client went away.
    pub const MULTI_API_TARGET_DISCONNECT: &str = "MULTI_API_TARGET_DISCONNECT";
    /// Open a byte stream to a client.
    pub const MULTI_API_CREATE_STREAM: &str = "MULTI_API_CREATE_STREAM";
    /// An error the server reports to the client that caused it.
    pub const SERVER_ERROR: &str = "SERVER_ERROR";

    /// Extension: an event that wants an answer, for peers that cannot use Socket.IO
    /// acknowledgements: `P2P_REQ(id, event, ...args)`.
    pub const P2P_REQ: &str = "P2P_REQ";
    /// Extension: the answer to a `P2P_REQ`: `P2P_RES(id, {"ok": [...args]} | {"err": "..."})`.
    pub const P2P_RES: &str = "P2P_RES";
    /// Extension: sent by the server to an extension peer once its client id is registered.
    pub const P2P_WELCOME: &str = "P2P_WELCOME";
    /// Extension: several `P2P_EMIT` payloads in one event, in order (client to server), or several
    /// relayed events in one event (server to client).
    pub const P2P_BATCH: &str = "P2P_BATCH";
    /// Extension: how many events of the session one end has received from the other:
    /// `P2P_RECEIVED(count)`. Not counted itself.
    pub const P2P_RECEIVED: &str = "P2P_RECEIVED";
}

/// Action strings that select the non-room forms of `JOIN_ROOM`/`LEAVE_ROOM`.
pub mod action {
    /// `JOIN_ROOM("CLIENT_SUBSCRIBE_TOPIC", clientId, room)`: join another client to a room.
    pub const CLIENT_SUBSCRIBE_TOPIC: &str = "CLIENT_SUBSCRIBE_TOPIC";
    /// `JOIN_ROOM("SERVICE_CREATE_TOPIC", room)`: a service joins its own topic room.
    pub const SERVICE_CREATE_TOPIC: &str = "SERVICE_CREATE_TOPIC";
    /// `LEAVE_ROOM("CLIENT_UNSUBSCRIBE_TOPIC", clientId, room)`: remove another client from a room.
    pub const CLIENT_UNSUBSCRIBE_TOPIC: &str = "CLIENT_UNSUBSCRIBE_TOPIC";
    /// `LEAVE_ROOM("SERVICE_DESTROY_TOPIC", room)`: empty a room, telling every member.
    pub const SERVICE_DESTROY_TOPIC: &str = "SERVICE_DESTROY_TOPIC";
}

/// Payload of `P2P_EMIT` and `P2P_EMIT_ACKNOWLEDGE`: `{targetClientId, event, args}`.
///
/// `args[0]` is the sender's client id; the relay checks it against the connection's own id.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EmitPayload {
    /// The client the event is for.
    pub target_client_id: String,
    /// The event name the target receives.
    pub event: String,
    /// The event's arguments, sender id first.
    #[serde(default)]
    pub args: Vec<Value>,
}

/// Borrowed plain-JSON arguments for an event, one element per argument.
pub struct ArgsRef<'a>(pub &'a [Value]);

impl Serialize for ArgsRef<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut t = s.serialize_tuple(self.0.len())?;
        for v in self.0 {
            t.serialize_element(v)?;
        }
        t.end()
    }
}

/// The seed's error text for an unknown add-target / create-stream target.
pub fn not_registered(id: &str) -> String {
    format!("Client {id} is not registered to server")
}

/// The seed's error text for an unknown message target.
pub fn unknown_target(id: &str) -> String {
    format!("Error: Could not find target client '{id}' socket")
}

/// Extracts `(key, value)` pairs from a URL query string; keys are percent-decoded (invalid
/// escapes kept as they are), values are returned raw, for [`percent_decode_strict`].
pub fn query_pairs(query: &str) -> impl Iterator<Item = (String, &str)> + '_ {
    query.split('&').filter(|p| !p.is_empty()).map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(k), v)
    })
}

/// Decodes `%XX` escapes and `+` as a space; invalid escapes are kept as they are and invalid
/// UTF-8 becomes U+FFFD.
pub fn percent_decode(s: &str) -> String {
    let out = decode_bytes(s, false).unwrap_or_default();
    String::from_utf8_lossy(&out).into_owned()
}

/// Decodes `%XX` escapes and `+` as a space, strictly: a `%` not followed by two hex digits, or
/// bytes that are not UTF-8 once decoded (`%ff`, a cut sequence like `%e2%82`), are an error
/// saying what was wrong.
pub fn percent_decode_strict(s: &str) -> Result<String, String> {
    let out = decode_bytes(s, true)?;
    String::from_utf8(out).map_err(|_| "it is not UTF-8 once percent-decoded".to_string())
}

fn decode_bytes(s: &str, strict: bool) -> Result<Vec<u8>, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok());
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None if strict => {
                        return Err("it has a '%' not followed by two hex digits".into())
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    Ok(out)
}

/// The longest client id, in bytes of UTF-8.
pub const MAX_CLIENT_ID_LEN: usize = 256;

/// Checks a client id (already decoded): non-empty, at most [`MAX_CLIENT_ID_LEN`] bytes, no
/// control characters. The error is the reason the relay gives when it refuses the connection
/// (and the Rust client, which refuses such an id before connecting).
pub fn check_client_id(id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err("the client id is empty (connect with ?clientId=<id>)".into());
    }
    if id.len() > MAX_CLIENT_ID_LEN {
        return Err(format!(
            "the client id is longer than {MAX_CLIENT_ID_LEN} bytes ({} bytes)",
            id.len()
        ));
    }
    if id.chars().any(char::is_control) {
        return Err("the client id contains a control character".into());
    }
    Ok(())
}

/// Event names no client may deliver to another through the relay, matched exactly: names that
/// Socket.IO 2/4 clients, rust_socketio or this project's clients treat specially.
pub const RESERVED_EVENTS: &[&str] = &[
    // socket.io-client 2 and 4, Node's EventEmitter
    "connect",
    "connect_error",
    "connect_timeout",
    "connecting",
    "disconnect",
    "disconnecting",
    "error",
    "newListener",
    "removeListener",
    // rust_socketio 0.6
    "open",
    "close",
    "message",
    // this project's protocol
    event::JOIN_ROOM,
    event::LEAVE_ROOM,
    event::EMIT_ROOM,
    event::LIST_CLIENTS,
    event::P2P_EMIT,
    event::P2P_EMIT_ACKNOWLEDGE,
    event::MULTI_API_ADD_TARGET,
    event::MULTI_API_TARGET_DISCONNECT,
    event::MULTI_API_CREATE_STREAM,
    event::SERVER_ERROR,
    event::P2P_REQ,
    event::P2P_RES,
    event::P2P_WELCOME,
    event::P2P_BATCH,
    event::P2P_RECEIVED,
    "P2P_FRAME",
    "P2P_ROOM",
];

/// Event names starting with this are reserved too (`reconnect`, `reconnect_attempt`,
/// `reconnecting`, ... of socket.io-client 2).
pub const RESERVED_EVENT_PREFIX: &str = "reconnect";

/// Whether a client may not deliver an event called `name` to another (see [`RESERVED_EVENTS`]):
/// the one check every relay path that delivers a client's chosen name uses.
pub fn is_reserved(name: &str) -> bool {
    name.starts_with(RESERVED_EVENT_PREFIX) || RESERVED_EVENTS.contains(&name)
}

/// The error text for a reserved event name, the same on the relay and in the client.
pub fn reserved_event(name: &str) -> String {
    format!(
        "event name '{name}' is reserved (Socket.IO clients or this protocol treat it specially)"
    )
}

/// Encodes a query-string component.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_round_trip() {
        for s in ["alice", "a b&c=d", "ünï/çødé", "%", "x%2"] {
            assert_eq!(percent_decode(&percent_encode(s)), s);
        }
        assert_eq!(percent_decode("a%2"), "a%2");
        assert_eq!(percent_decode("%zz"), "%zz");
    }

    #[test]
    fn query_pairs_parse() {
        let v: Vec<_> = query_pairs("clientId=al%20ice&p2pExt=1&EIO=4").collect();
        assert_eq!(v[0], ("clientId".into(), "al%20ice"));
        assert_eq!(v[1], ("p2pExt".into(), "1"));
        assert_eq!(percent_decode_strict("al%20ice+x").unwrap(), "al ice x");
        assert_eq!(percent_decode_strict("%e2%82%ac").unwrap(), "€");
        for bad in ["%ff", "%e2%82", "a%2", "%zz", "%"] {
            assert!(percent_decode_strict(bad).is_err(), "{bad}");
        }
        assert!(check_client_id("a\u{7}b").is_err());
        assert!(check_client_id(&"x".repeat(257)).is_err());
        assert!(check_client_id("ünï").is_ok());
    }

    #[test]
    fn reserved_names() {
        // Socket.IO 2's heartbeat names reach its listeners as ordinary events; the seed's
        // clients relay them.
        assert!(!is_reserved("ping") && !is_reserved("pong"));
        for n in [
            "disconnect",
            "reconnect_attempt",
            "P2P_FRAME",
            "P2P_ROOM",
            "message",
        ] {
            assert!(is_reserved(n), "{n}");
        }
        for n in [
            "chat",
            "PEER_STREAM_DESTROYED",
            "Disconnect",
            "P2P_EMIT_STREAM-from-stream-1",
        ] {
            assert!(!is_reserved(n), "{n}");
        }
    }
}
