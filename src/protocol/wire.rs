//! Typed payloads of the non-stream events, and their decoding.
//!
//! Each event is decoded once, where it enters: the relay's dispatch decodes what clients send
//! ([`FromArgs`], from [`Arg`]s that may hold binary data), the client's demultiplexer what the
//! relay sends ([`FromValues`], from the JSON values rust_socketio hands over). A payload that does
//! not have its event's shape is a [`DecodeError`] saying what was wrong.

use super::{action, Arg};
use crate::error::{Error, WireError};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;

/// Why an event's arguments do not have the shape of its payload.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DecodeError(pub String);

impl DecodeError {
    fn new(text: impl Into<String>) -> DecodeError {
        DecodeError(text.into())
    }
}

impl From<DecodeError> for Error {
    fn from(e: DecodeError) -> Self {
        Error::BadRequest(e.0)
    }
}

/// A payload decoded from the arguments of an event a client sent to the relay.
pub trait FromArgs: Sized {
    /// Decodes the whole argument list.
    fn from_args(args: Vec<Arg>) -> Result<Self, DecodeError>;
}

/// A payload decoded from the arguments of an event the relay sent to a client.
pub trait FromValues: Sized {
    /// Decodes the whole argument list.
    fn from_values(args: Vec<Value>) -> Result<Self, DecodeError>;
}

/// The arguments as they came, binary data kept.
impl FromArgs for Vec<Arg> {
    fn from_args(args: Vec<Arg>) -> Result<Self, DecodeError> {
        Ok(args)
    }
}

/// Opaque JSON arguments (binary data as arrays of byte values), for payloads decoded further by
/// their API.
impl FromArgs for Vec<Value> {
    fn from_args(args: Vec<Arg>) -> Result<Self, DecodeError> {
        Ok(args.into_iter().map(Arg::into_value).collect())
    }
}

/// An event whose arguments do not matter (`LIST_CLIENTS(ack)`).
impl FromArgs for () {
    fn from_args(_: Vec<Arg>) -> Result<Self, DecodeError> {
        Ok(())
    }
}

/// The non-empty string in `arg`, or what was wrong with it, for `what` (a field name).
fn string_field(arg: Option<Arg>, ev: &str, what: &str) -> Result<String, DecodeError> {
    match arg {
        Some(Arg::Json(Value::String(s))) if !s.is_empty() => Ok(s),
        Some(Arg::Json(Value::String(_))) => Err(DecodeError(format!("{ev}: the {what} is empty"))),
        Some(other) => Err(DecodeError(format!(
            "{ev}: the {what} must be a string, got {}",
            other.describe()
        ))),
        None => Err(DecodeError(format!("{ev}: the {what} is missing"))),
    }
}

/// Which room a `JOIN_ROOM`/`LEAVE_ROOM` is about, and for whom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoomTarget {
    /// `JOIN_ROOM(room)` / `LEAVE_ROOM(room)`: the caller itself.
    Own(String),
    /// `JOIN_ROOM("CLIENT_SUBSCRIBE_TOPIC", clientId, room)` /
    /// `LEAVE_ROOM("CLIENT_UNSUBSCRIBE_TOPIC", clientId, room)`: another client. The room is
    /// empty when the caller gave none (the seed answers that with "topicName can not be empty").
    Client {
        /// The client to add or remove.
        client: String,
        /// The room.
        room: String,
    },
    /// `JOIN_ROOM("SERVICE_CREATE_TOPIC", room)` / `LEAVE_ROOM("SERVICE_DESTROY_TOPIC", room)`: a
    /// service's topic room.
    Topic(String),
}

fn room_target(
    args: Vec<Arg>,
    ev: &str,
    client_action: &str,
    topic_action: &str,
) -> Result<RoomTarget, DecodeError> {
    let first = args.first().and_then(Arg::as_str).map(str::to_string);
    let mut it = args.into_iter();
    match first.as_deref() {
        Some(a) if a == client_action => {
            it.next();
            let client = match it.next() {
                Some(Arg::Json(Value::String(s))) => s,
                _ => return Err(DecodeError(format!("{ev}: the client id must be a string"))),
            };
            let room = match it.next() {
                Some(Arg::Json(Value::String(s))) => s,
                _ => String::new(),
            };
            Ok(RoomTarget::Client { client, room })
        }
        Some(a) if a == topic_action => {
            it.next();
            string_field(it.next(), ev, "room name").map(RoomTarget::Topic)
        }
        _ => string_field(it.next(), ev, "room name").map(RoomTarget::Own),
    }
}

/// `JOIN_ROOM` in any of its forms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinRoom(pub RoomTarget);

impl FromArgs for JoinRoom {
    fn from_args(args: Vec<Arg>) -> Result<Self, DecodeError> {
        room_target(
            args,
            super::event::JOIN_ROOM,
            action::CLIENT_SUBSCRIBE_TOPIC,
            action::SERVICE_CREATE_TOPIC,
        )
        .map(JoinRoom)
    }
}

/// `LEAVE_ROOM` in any of its forms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaveRoom(pub RoomTarget);

impl FromArgs for LeaveRoom {
    fn from_args(args: Vec<Arg>) -> Result<Self, DecodeError> {
        room_target(
            args,
            super::event::LEAVE_ROOM,
            action::CLIENT_UNSUBSCRIBE_TOPIC,
            action::SERVICE_DESTROY_TOPIC,
        )
        .map(LeaveRoom)
    }
}

/// `EMIT_ROOM(room, event, ...args)`.
#[derive(Debug, Clone, PartialEq)]
pub struct EmitRoom {
    /// The room.
    pub room: String,
    /// The event the members receive.
    pub event: String,
    /// Its arguments, binary data kept.
    pub args: Vec<Arg>,
}

impl FromArgs for EmitRoom {
    fn from_args(args: Vec<Arg>) -> Result<Self, DecodeError> {
        let ev = super::event::EMIT_ROOM;
        let mut it = args.into_iter();
        let room = string_field(it.next(), ev, "room name")?;
        let event = match it.next() {
            Some(Arg::Json(Value::String(s))) if !s.is_empty() => s,
            _ => {
                return Err(DecodeError(format!(
                    "{ev}: the event name must be a non-empty string"
                )))
            }
        };
        Ok(EmitRoom {
            room,
            event,
            args: it.collect(),
        })
    }
}

/// `P2P_EMIT`/`P2P_EMIT_ACKNOWLEDGE`'s `{targetClientId, event, args}` as the relay decodes it,
/// binary data in the arguments kept. (The client builds the same payload as
/// [`EmitPayload`](super::EmitPayload).)
#[derive(Debug, Clone, PartialEq)]
pub struct Emit {
    /// The client the event is for.
    pub target: String,
    /// The event name.
    pub event: String,
    /// The arguments, sender id first.
    pub args: Vec<Arg>,
}

const EMIT_SHAPE: &str = "the payload must be {targetClientId: string, event: string, args: array}";

impl Emit {
    /// Decodes one payload object.
    pub fn decode(arg: Option<Arg>) -> Result<Emit, DecodeError> {
        let (mut target, mut event, mut args) = (None, None, None);
        match arg {
            None => {
                return Err(DecodeError::new(
                    "the payload {targetClientId, event, args} is missing",
                ))
            }
            Some(Arg::Json(Value::Object(mut m))) => {
                target = m.remove("targetClientId").map(Arg::Json);
                event = m.remove("event").map(Arg::Json);
                args = m.remove("args").map(Arg::Json);
            }
            Some(Arg::Object(entries)) => {
                for (k, v) in entries {
                    match k.as_str() {
                        "targetClientId" => target = Some(v),
                        "event" => event = Some(v),
                        "args" => args = Some(v),
                        _ => {}
                    }
                }
            }
            Some(other) => {
                return Err(DecodeError(format!(
                    "{EMIT_SHAPE}, got {}",
                    other.describe()
                )))
            }
        }
        let target = match target {
            Some(Arg::Json(Value::String(s))) => s,
            Some(other) => {
                return Err(DecodeError(format!(
                    "{EMIT_SHAPE}: targetClientId is {}",
                    other.describe()
                )))
            }
            None => {
                return Err(DecodeError(format!(
                    "{EMIT_SHAPE}: targetClientId is missing"
                )))
            }
        };
        let event = match event {
            Some(Arg::Json(Value::String(s))) => s,
            Some(other) => {
                return Err(DecodeError(format!(
                    "{EMIT_SHAPE}: event is {}",
                    other.describe()
                )))
            }
            None => return Err(DecodeError(format!("{EMIT_SHAPE}: event is missing"))),
        };
        let args = match args {
            None | Some(Arg::Json(Value::Null)) => Vec::new(),
            Some(Arg::Json(Value::Array(a))) => a.into_iter().map(Arg::Json).collect(),
            Some(Arg::Array(a)) => a,
            Some(other) => {
                return Err(DecodeError(format!(
                    "{EMIT_SHAPE}: args is {}",
                    other.describe()
                )))
            }
        };
        if target.is_empty() {
            return Err(DecodeError::new("targetClientId is empty"));
        }
        if event.is_empty() {
            return Err(DecodeError::new("the event name is empty"));
        }
        Ok(Emit {
            target,
            event,
            args,
        })
    }

    /// The sender id the payload claims (`args[0]`), if it is a string.
    pub fn claimed_sender(&self) -> Result<&str, String> {
        match self.args.first() {
            Some(a) => a.as_str().ok_or_else(|| a.describe()),
            None => Err("nothing".to_string()),
        }
    }

    /// The payload with plain JSON arguments (binary data as arrays of byte values).
    pub fn into_payload(self) -> super::EmitPayload {
        super::EmitPayload {
            target_client_id: self.target,
            event: self.event,
            args: self.args.into_iter().map(Arg::into_value).collect(),
        }
    }
}

impl FromArgs for Emit {
    fn from_args(args: Vec<Arg>) -> Result<Self, DecodeError> {
        Emit::decode(args.into_iter().next())
    }
}

/// `P2P_BATCH(payload, payload, ...)`: each item decoded on its own, so one bad item does not
/// spoil the others.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch(pub Vec<Result<Emit, DecodeError>>);

impl FromArgs for Batch {
    fn from_args(args: Vec<Arg>) -> Result<Self, DecodeError> {
        Ok(Batch(
            args.into_iter().map(|a| Emit::decode(Some(a))).collect(),
        ))
    }
}

/// `MULTI_API_ADD_TARGET(targetClientId)` (client to relay) or `(sourceClientId)` (relay to
/// client): the other client's id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddTarget(pub String);

const ADD_TARGET_SHAPE: &str =
    "MULTI_API_ADD_TARGET needs the target client id (a non-empty string)";

impl FromArgs for AddTarget {
    fn from_args(args: Vec<Arg>) -> Result<Self, DecodeError> {
        match args.into_iter().next() {
            Some(Arg::Json(Value::String(s))) if !s.is_empty() => Ok(AddTarget(s)),
            _ => Err(DecodeError::new(ADD_TARGET_SHAPE)),
        }
    }
}

impl FromValues for AddTarget {
    fn from_values(args: Vec<Value>) -> Result<Self, DecodeError> {
        AddTarget::from_args(args.into_iter().map(Arg::Json).collect())
    }
}

/// The request id at the head of `P2P_REQ`/`P2P_RES`.
fn request_id(arg: Option<&Arg>, ev: &str) -> Result<u64, DecodeError> {
    match arg {
        Some(Arg::Json(Value::Number(n))) if n.as_u64().is_some() => {
            Ok(n.as_u64().unwrap_or_default())
        }
        _ => Err(DecodeError(format!(
            "{ev} needs a request id (a non-negative integer) first"
        ))),
    }
}

/// `P2P_REQ(id, event, ...args)`: `event(...args)` that wants an answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Request<A = Vec<Arg>> {
    /// The request id, unique among the sender's requests in flight.
    pub id: u64,
    /// The event asked.
    pub event: String,
    /// Its arguments.
    pub args: A,
}

/// A `P2P_REQ` that could not be decoded: with its id when it had one, so that the sender can
/// still be answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadRequest {
    /// The request id, if it was readable.
    pub id: Option<u64>,
    /// What was wrong.
    pub error: DecodeError,
}

impl Request<Vec<Arg>> {
    /// Decodes `P2P_REQ`'s arguments.
    pub fn decode(args: Vec<Arg>) -> Result<Self, BadRequest> {
        let ev = super::event::P2P_REQ;
        let id = request_id(args.first(), ev).map_err(|error| BadRequest { id: None, error })?;
        let mut it = args.into_iter().skip(1);
        let event = match it.next() {
            Some(Arg::Json(Value::String(s))) if !s.is_empty() => s,
            _ => {
                return Err(BadRequest {
                    id: Some(id),
                    error: DecodeError(format!("{ev} needs an event name second")),
                })
            }
        };
        Ok(Request {
            id,
            event,
            args: it.collect(),
        })
    }
}

impl Request<Vec<Value>> {
    /// The event's arguments: `[id, event, ...args]`.
    pub fn to_values(self) -> Vec<Value> {
        let mut v = Vec::with_capacity(self.args.len() + 2);
        v.push(Value::from(self.id));
        v.push(Value::from(self.event));
        v.extend(self.args);
        v
    }
}

impl FromValues for Request<Vec<Value>> {
    fn from_values(args: Vec<Value>) -> Result<Self, DecodeError> {
        let r = Request::decode(args.into_iter().map(Arg::Json).collect()).map_err(|b| b.error)?;
        Ok(Request {
            id: r.id,
            event: r.event,
            args: r.args.into_iter().map(Arg::into_value).collect(),
        })
    }
}

/// The body of a `P2P_RES` on the wire: `{"ok": [...args]}` or a [`WireError`]
/// (`{"err": "...", "code": ..., ...}`).
#[derive(Debug, Clone, PartialEq)]
pub enum ResAnswer {
    /// What a Socket.IO acknowledgement would have carried.
    Ok(Vec<Value>),
    /// Why the request failed.
    Err(WireError),
}

impl ResAnswer {
    /// The wire form of an answer.
    pub fn from_result(r: Result<Vec<Value>, Error>) -> ResAnswer {
        match r {
            Ok(v) => ResAnswer::Ok(v),
            Err(e) => ResAnswer::Err(e.to_wire()),
        }
    }

    /// The answer as a result; `from` names who answered, for errors that name nobody.
    pub fn into_result(self, from: &str) -> Result<Vec<Value>, Error> {
        match self {
            ResAnswer::Ok(v) => Ok(v),
            ResAnswer::Err(w) => Err(Error::from_wire(w, from)),
        }
    }

    fn decode(v: Value) -> Result<ResAnswer, DecodeError> {
        let shape = "P2P_RES needs (id, {ok: [...]} or {err: text, code?})";
        match v {
            Value::Object(mut m) if m.contains_key("ok") => match m.remove("ok") {
                Some(Value::Array(a)) => Ok(ResAnswer::Ok(a)),
                Some(Value::Null) => Ok(ResAnswer::Ok(Vec::new())),
                _ => Err(DecodeError(format!("{shape}: ok is not an array"))),
            },
            v @ Value::Object(_) => serde_json::from_value::<WireError>(v)
                .map(ResAnswer::Err)
                .map_err(|e| DecodeError(format!("{shape}: {e}"))),
            other => Err(DecodeError(format!("{shape}, got {other}"))),
        }
    }
}

impl Serialize for ResAnswer {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Ok<'a> {
            ok: &'a [Value],
        }
        match self {
            ResAnswer::Ok(v) => Ok { ok: v }.serialize(s),
            ResAnswer::Err(w) => w.serialize(s),
        }
    }
}

/// `P2P_RES(id, body)`: the answer to a `P2P_REQ`.
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    /// The id of the request answered.
    pub id: u64,
    /// The answer.
    pub body: ResAnswer,
}

impl Response {
    /// The event's arguments.
    pub fn to_values(&self) -> Vec<Value> {
        vec![
            Value::from(self.id),
            serde_json::to_value(&self.body).unwrap_or(Value::Null),
        ]
    }
}

impl FromArgs for Response {
    fn from_args(args: Vec<Arg>) -> Result<Self, DecodeError> {
        Response::from_values(args.into_iter().map(Arg::into_value).collect())
    }
}

impl FromValues for Response {
    fn from_values(args: Vec<Value>) -> Result<Self, DecodeError> {
        let ev = super::event::P2P_RES;
        let mut it = args.into_iter();
        let id = request_id(it.next().map(Arg::Json).as_ref(), ev)?;
        let body = it
            .next()
            .ok_or_else(|| DecodeError(format!("{ev} needs (id, {{ok|err}})")))?;
        Ok(Response {
            id,
            body: ResAnswer::decode(body)?,
        })
    }
}

/// The request id of a `P2P_RES` packet whose answer cannot be decoded, read from the packet's
/// JSON text (`["P2P_RES", id, ...]`) with nothing else looked at; `None` when there is none.
pub fn response_id(packet: &str) -> Option<u64> {
    struct Id(Option<u64>);
    impl<'de> Deserialize<'de> for Id {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> serde::de::Visitor<'de> for V {
                type Value = Id;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("an event packet")
                }
                fn visit_seq<A: serde::de::SeqAccess<'de>>(
                    self,
                    mut seq: A,
                ) -> Result<Id, A::Error> {
                    use serde::de::IgnoredAny;
                    let _event = seq.next_element::<IgnoredAny>()?;
                    let id = seq.next_element::<Value>()?.and_then(|v| v.as_u64());
                    while seq.next_element::<IgnoredAny>()?.is_some() {}
                    Ok(Id(id))
                }
            }
            d.deserialize_seq(V)
        }
    }
    serde_json::from_str::<Id>(packet).ok().and_then(|id| id.0)
}

/// `P2P_WELCOME({clientId, resume?, resumed?, received?})`: the relay registered this client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Welcome {
    /// The id the relay registered.
    pub client_id: String,
    /// The secret that lets this client take its session back over a new connection (sent to
    /// extension clients by a relay that resumes sessions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume: Option<String>,
    /// Whether this connection took over an earlier one of the same session (its rooms and
    /// watchers were kept) rather than starting a new session.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub resumed: bool,
    /// In a resumed welcome: how many events of the session the relay has received from this
    /// client; the client sends again what it sent after those.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub received: Option<u64>,
}

impl Welcome {
    /// The event's arguments.
    pub fn to_values(&self) -> Vec<Value> {
        vec![serde_json::to_value(self).unwrap_or(Value::Null)]
    }
}

impl FromValues for Welcome {
    fn from_values(args: Vec<Value>) -> Result<Self, DecodeError> {
        let v = args.into_iter().next().unwrap_or(Value::Null);
        serde_json::from_value(v)
            .map_err(|e| DecodeError(format!("P2P_WELCOME({{clientId}}): {e}")))
    }
}

/// `SERVER_ERROR(message)`, and for an extension client `SERVER_ERROR(message, error)` with the
/// error's wire form, so that it can be told apart without reading the text.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerError {
    /// The text (what seed-era clients read).
    pub message: String,
    /// The error, from a relay that sends it.
    pub error: Option<WireError>,
}

impl ServerError {
    /// The event's arguments.
    pub fn to_values(&self) -> Vec<Value> {
        let mut v = vec![Value::from(self.message.as_str())];
        if let Some(w) = &self.error {
            v.push(serde_json::to_value(w).unwrap_or(Value::Null));
        }
        v
    }
}

impl FromValues for ServerError {
    fn from_values(args: Vec<Value>) -> Result<Self, DecodeError> {
        let mut it = args.into_iter();
        let message = match it.next() {
            Some(Value::String(s)) => s,
            Some(other) => other.to_string(),
            None => String::new(),
        };
        let error = it.next().and_then(|v| serde_json::from_value(v).ok());
        Ok(ServerError { message, error })
    }
}

/// `MULTI_API_TARGET_DISCONNECT(clientId)`: a peer went away.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetDisconnect(pub String);

impl TargetDisconnect {
    /// The event's arguments.
    pub fn to_values(&self) -> Vec<Value> {
        vec![Value::from(self.0.as_str())]
    }
}

impl FromValues for TargetDisconnect {
    fn from_values(args: Vec<Value>) -> Result<Self, DecodeError> {
        match args.into_iter().next() {
            Some(Value::String(s)) => Ok(TargetDisconnect(s)),
            _ => Err(DecodeError::new(
                "MULTI_API_TARGET_DISCONNECT needs the client id (a string)",
            )),
        }
    }
}

/// One relayed event inside a `P2P_BATCH` from the relay: `[event, ...args]`.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchItem {
    /// The event name.
    pub event: String,
    /// Its arguments.
    pub args: Vec<Value>,
}

impl BatchItem {
    /// Decodes one `[event, ...args]` item.
    pub fn decode(v: Value) -> Result<BatchItem, DecodeError> {
        match v {
            Value::Array(mut a) if matches!(a.first(), Some(Value::String(_))) => {
                let event = match a.remove(0) {
                    Value::String(s) => s,
                    _ => String::new(),
                };
                Ok(BatchItem { event, args: a })
            }
            other => Err(DecodeError(format!(
                "a P2P_BATCH item must be [event, ...args], got {other}"
            ))),
        }
    }
}

/// The arguments of one batch item the relay sends, binary data kept.
pub fn batch_item(event: &str, args: Vec<Arg>) -> Arg {
    if args.iter().any(Arg::has_binary) {
        let mut all = Vec::with_capacity(args.len() + 1);
        all.push(Arg::from(event));
        all.extend(args);
        return Arg::Array(all);
    }
    let mut all = Vec::with_capacity(args.len() + 1);
    all.push(Value::from(event));
    all.extend(args.into_iter().map(Arg::into_value));
    Arg::Json(Value::Array(all))
}

/// `P2P_BATCH([event, ...args], ...)` from the relay: each item decoded on its own.
#[derive(Debug, Clone, PartialEq)]
pub struct RelayedBatch(pub Vec<Result<BatchItem, DecodeError>>);

impl FromValues for RelayedBatch {
    fn from_values(args: Vec<Value>) -> Result<Self, DecodeError> {
        Ok(RelayedBatch(
            args.into_iter().map(BatchItem::decode).collect(),
        ))
    }
}

/// Extension: `P2P_ROOM(room, event, ...args)`, a room emit as the relay delivers it to an
/// extension member (a seed-era member gets `event(...args)`). It carries no sender id: unlike a
/// peer's message, its first argument is whatever the emitter put there.
#[derive(Debug, Clone, PartialEq)]
pub struct RoomEmit {
    /// The room the emit went to.
    pub room: String,
    /// The event the members receive.
    pub event: String,
    /// Its arguments, as the emitter gave them.
    pub args: Vec<Value>,
}

impl RoomEmit {
    /// The event name.
    pub const EVENT: &'static str = "P2P_ROOM";

    /// The event's arguments, binary data kept: `[room, event, ...args]`.
    pub fn to_args(room: &str, event: &str, args: &[Arg]) -> Vec<Arg> {
        let mut all = Vec::with_capacity(args.len() + 2);
        all.push(Arg::from(room));
        all.push(Arg::from(event));
        all.extend(args.iter().cloned());
        all
    }
}

impl FromValues for RoomEmit {
    fn from_values(args: Vec<Value>) -> Result<Self, DecodeError> {
        let mut it = args.into_iter();
        match (it.next(), it.next()) {
            (Some(Value::String(room)), Some(Value::String(event))) if !event.is_empty() => {
                Ok(RoomEmit {
                    room,
                    event,
                    args: it.collect(),
                })
            }
            _ => Err(DecodeError::new(
                "P2P_ROOM needs (room, event, ...args) with string room and event names",
            )),
        }
    }
}

/// The sender id of a relayed peer event: its first argument, when that is a string.
pub fn sender_of(args: &[Value]) -> Option<&str> {
    match args.first() {
        Some(Value::String(s)) => Some(s),
        _ => None,
    }
}

/// The event name rust_socketio hands over as the one argument of a `message` event when an event
/// came without arguments (`["X"]` on the wire).
pub fn bare_event_name(args: &[Value]) -> Option<&str> {
    match args {
        [Value::String(ev)] => Some(ev),
        _ => None,
    }
}

/// The answer to `LIST_CLIENTS`: `[clientId, ...]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientList(pub Vec<String>);

impl ClientList {
    /// The answer's arguments.
    pub fn to_values(&self) -> Vec<Value> {
        vec![Value::from(self.0.clone())]
    }
}

impl FromValues for ClientList {
    fn from_values(args: Vec<Value>) -> Result<Self, DecodeError> {
        let list = args.into_iter().next().unwrap_or(Value::Array(vec![]));
        serde_json::from_value(list)
            .map(ClientList)
            .map_err(|e| DecodeError(format!("the LIST_CLIENTS answer is not a list of ids: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn args(v: Value) -> Vec<Arg> {
        match v {
            Value::Array(a) => a.into_iter().map(Arg::Json).collect(),
            _ => unreachable!(),
        }
    }

    #[test]
    fn room_forms() {
        assert_eq!(
            JoinRoom::from_args(args(json!(["lobby"]))).unwrap(),
            JoinRoom(RoomTarget::Own("lobby".into()))
        );
        assert_eq!(
            JoinRoom::from_args(args(json!(["CLIENT_SUBSCRIBE_TOPIC", "bob", "t"]))).unwrap(),
            JoinRoom(RoomTarget::Client {
                client: "bob".into(),
                room: "t".into()
            })
        );
        assert_eq!(
            LeaveRoom::from_args(args(json!(["SERVICE_DESTROY_TOPIC", "t"]))).unwrap(),
            LeaveRoom(RoomTarget::Topic("t".into()))
        );
        let e = JoinRoom::from_args(args(json!([5]))).unwrap_err();
        assert!(e.0.contains("must be a string, got 5"), "{e}");
    }

    #[test]
    fn requests_and_answers() {
        let r = Request::decode(args(json!([3, "JOIN_ROOM", "x"]))).unwrap();
        assert_eq!((r.id, r.event.as_str(), r.args.len()), (3, "JOIN_ROOM", 1));
        let bad = Request::decode(args(json!([3, 4]))).unwrap_err();
        assert_eq!(bad.id, Some(3));
        let res = Response::from_values(vec![json!(2), json!({"ok": [1]})]).unwrap();
        assert_eq!(res.body, ResAnswer::Ok(vec![json!(1)]));
        let e = Error::UnknownTarget("bob".into());
        let back = Response {
            id: 1,
            body: ResAnswer::from_result(Err(e.clone())),
        }
        .to_values();
        let res = Response::from_values(back).unwrap();
        let got = res.body.into_result("x").unwrap_err();
        assert!(
            matches!(got, Error::UnknownTarget(ref p) if p == "bob"),
            "{got}"
        );
        assert!(Response::from_values(vec![json!("x")]).is_err());
    }

    #[test]
    fn the_id_of_an_unreadable_answer() {
        let text = r#"["P2P_RES",7,{"ok":[{"_placeholder":true,"num":0}]}]"#;
        assert_eq!(response_id(text), Some(7));
        assert_eq!(response_id(r#"["P2P_RES","x",{}]"#), None);
        assert_eq!(response_id(r#"["P2P_RES"]"#), None);
        assert_eq!(response_id("not json"), None);
    }
}
