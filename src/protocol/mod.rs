//! Wire protocol shared by the relay server and the Rust client.
//!
//! Event names and payload shapes of the seed protocol (what seed-era JavaScript clients speak) and
//! the extensions Rust peers use on top of it. `PROTOCOL.md` at the repository root describes the
//! same thing event by event; this module is its typed form.

use serde::de::{SeqAccess, Visitor};
use serde::ser::SerializeTuple;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;
use std::fmt;

pub mod stream;

/// Query-string key carrying the client id in the handshake (`?clientId=alice`).
pub const QUERY_CLIENT_ID: &str = "clientId";
/// Query-string key a Rust peer sets to `1` to announce the protocol extensions
/// (acknowledgements carried as `P2P_REQ`/`P2P_RES` events, `P2P_WELCOME`, batches).
pub const QUERY_EXTENSIONS: &str = "p2pExt";

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

/// The `ok`/`err` body of a `P2P_RES` answer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "lowercase")]
pub enum ResBody {
    /// What a Socket.IO acknowledgement would have carried.
    Ok(Vec<Value>),
    /// Why the request failed.
    Err(String),
}

/// Key of the JSON object that stands for binary data inside the relay: a Socket.IO binary
/// attachment (a Node `Buffer`) is held as `{"__p2p_binary__": [byte, ...]}` between decoding and
/// re-encoding. Towards seed-era clients it becomes a binary attachment again; towards extension
/// clients, whose Socket.IO library cannot carry binary inside a JSON event, an array of numbers.
pub const BINARY_TAG: &str = "__p2p_binary__";

/// All the arguments of an event, as a list.
///
/// Socket.IO events carry a variable number of arguments; socketioxide hands a handler the whole
/// list only when the target type deserializes as a tuple, which this type does. Binary
/// attachments anywhere in the arguments are kept (see [`BINARY_TAG`]). On the sending side it
/// serializes as a tuple too, so each element becomes one event argument; binary goes out as
/// arrays of numbers (the form every receiver takes).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Args(pub Vec<Value>);

/// A JSON value that may hold binary data (see [`BINARY_TAG`]).
struct BinValue(Value);

struct BinVisitor;

impl<'de> Visitor<'de> for BinVisitor {
    type Value = Value;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value or binary data")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_bytes<E>(self, v: &[u8]) -> Result<Value, E> {
        let bytes = v.iter().map(|b| Value::from(*b)).collect();
        let mut m = serde_json::Map::with_capacity(1);
        m.insert(BINARY_TAG.to_string(), Value::Array(bytes));
        Ok(Value::Object(m))
    }
    fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Value, E> {
        self.visit_bytes(&v)
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        BinValue::deserialize(d).map(|b| b.0)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(BinValue(v)) = seq.next_element()? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = serde_json::Map::new();
        while let Some((k, BinValue(v))) = map.next_entry::<String, BinValue>()? {
            out.insert(k, v);
        }
        Ok(Value::Object(out))
    }
}

impl<'de> Deserialize<'de> for BinValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(BinVisitor).map(BinValue)
    }
}

impl<'de> Deserialize<'de> for Args {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Args;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list of event arguments")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Args, A::Error> {
                let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
                while let Some(BinValue(v)) = seq.next_element()? {
                    out.push(v);
                }
                Ok(Args(out))
            }
        }
        d.deserialize_tuple(usize::MAX, V)
    }
}

/// Serializes a value, turning [`BINARY_TAG`] objects into binary (`bytes`) or arrays.
struct Out<'a> {
    v: &'a Value,
    bytes: bool,
}

impl Serialize for Out<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{SerializeMap, SerializeSeq};
        match self.v {
            Value::Array(a) => {
                let mut seq = s.serialize_seq(Some(a.len()))?;
                for v in a {
                    seq.serialize_element(&Out {
                        v,
                        bytes: self.bytes,
                    })?;
                }
                seq.end()
            }
            Value::Object(m) => {
                if m.len() == 1 {
                    if let Some(Value::Array(data)) = m.get(BINARY_TAG) {
                        if self.bytes {
                            let raw: Vec<u8> =
                                data.iter().map(|b| b.as_u64().unwrap_or(0) as u8).collect();
                            return s.serialize_bytes(&raw);
                        }
                        return data.serialize(s);
                    }
                }
                let mut map = s.serialize_map(Some(m.len()))?;
                for (k, v) in m {
                    map.serialize_entry(
                        k,
                        &Out {
                            v,
                            bytes: self.bytes,
                        },
                    )?;
                }
                map.end()
            }
            other => other.serialize(s),
        }
    }
}

fn serialize_args<S: Serializer>(args: &[Value], bytes: bool, s: S) -> Result<S::Ok, S::Error> {
    let mut t = s.serialize_tuple(args.len())?;
    for v in args {
        t.serialize_element(&Out { v, bytes })?;
    }
    t.end()
}

impl Serialize for Args {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        serialize_args(&self.0, false, s)
    }
}

/// Borrowed arguments for an event to a seed-era client: binary goes out as binary attachments.
pub struct ArgsRef<'a>(pub &'a [Value]);

impl Serialize for ArgsRef<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        serialize_args(self.0, true, s)
    }
}

/// Borrowed arguments for an event to an extension client: binary goes out as arrays of numbers.
pub struct ExtArgsRef<'a>(pub &'a [Value]);

impl Serialize for ExtArgsRef<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        serialize_args(self.0, false, s)
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

/// Extracts `(key, value)` pairs from a URL query string, percent-decoded.
pub fn query_pairs(query: &str) -> impl Iterator<Item = (String, String)> + '_ {
    query.split('&').filter(|p| !p.is_empty()).map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(k), percent_decode(v))
    })
}

/// Decodes `%XX` escapes and `+` as a space; invalid escapes are kept as they are.
pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
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
        assert_eq!(v[0], ("clientId".into(), "al ice".into()));
        assert_eq!(v[1], ("p2pExt".into(), "1".into()));
    }

    #[test]
    fn binary_tag_goes_out_as_bytes_or_numbers() {
        let args = vec![
            serde_json::json!({"a": {BINARY_TAG: [1, 2, 255]}}),
            Value::from("x"),
        ];
        // Towards an extension client: plain arrays.
        let ext = serde_json::to_value(ExtArgsRef(&args)).unwrap();
        assert_eq!(ext, serde_json::json!([{"a": [1, 2, 255]}, "x"]));
        // Through a JSON serializer, bytes also come out as numbers; the binary form is what
        // socketioxide's serializer turns into an attachment.
        let seed = serde_json::to_value(ArgsRef(&args)).unwrap();
        assert_eq!(seed, serde_json::json!([{"a": [1, 2, 255]}, "x"]));
    }

    #[test]
    fn args_read_every_argument() {
        let a: Args = serde_json::from_str(r#"[1, {"k": [true, null]}, "s"]"#).unwrap();
        assert_eq!(
            a.0,
            vec![
                Value::from(1),
                serde_json::json!({"k": [true, null]}),
                Value::from("s")
            ]
        );
    }

    #[test]
    fn res_body_shape() {
        let ok = serde_json::to_value(ResBody::Ok(vec![1.into()])).unwrap();
        assert_eq!(ok, serde_json::json!({"ok": [1]}));
        let err: ResBody = serde_json::from_value(serde_json::json!({"err": "x"})).unwrap();
        assert_eq!(err, ResBody::Err("x".into()));
    }
}
