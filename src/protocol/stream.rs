//! Wire types of the Stream API: every JSON payload of `MULTI_API_CREATE_STREAM` and of the seed
//! form of streams, decoded once where it enters (see `PROTOCOL.md` sections 4 and 5.3).
//!
//! Field names are the seed's (`sourceStreamId`, `{type: "Buffer", data}`, ...): seed-era
//! JavaScript clients read and write these exact shapes.

use crate::stream::flow::MAX_WINDOW;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};
use std::fmt;

/// A stream id: the seed sends strings, some seed clients numbers; either is kept as it came so
/// it goes back to the client unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum StreamId {
    /// A string id (never empty once checked by [`CreateStream::check`]).
    Text(String),
    /// A numeric id.
    Number(serde_json::Number),
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StreamId::Text(s) => f.write_str(s),
            StreamId::Number(n) => write!(f, "{n}"),
        }
    }
}

impl StreamId {
    fn is_empty(&self) -> bool {
        matches!(self, StreamId::Text(s) if s.is_empty())
    }
}

impl From<&str> for StreamId {
    fn from(s: &str) -> StreamId {
        StreamId::Text(s.to_string())
    }
}

/// A receive window in bytes, 1..=[`MAX_WINDOW`]; anything else does not decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Window(u32);

impl Window {
    /// A window, if `bytes` is in range.
    pub fn new(bytes: u64) -> Option<Window> {
        (bytes > 0 && bytes <= MAX_WINDOW).then_some(Window(bytes as u32))
    }

    /// `bytes` brought into range.
    pub fn clamped(bytes: u32) -> Window {
        Window(u64::from(bytes).clamp(1, MAX_WINDOW) as u32)
    }

    /// The window in bytes.
    pub fn get(self) -> u32 {
        self.0
    }
}

impl<'de> Deserialize<'de> for Window {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Window, D::Error> {
        let n = u64::deserialize(d)?;
        Window::new(n).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "window {n} is out of range: a window is 1..={MAX_WINDOW} bytes"
            ))
        })
    }
}

/// `MULTI_API_CREATE_STREAM`'s info: the opener's request, and what the relay forwards to the
/// acceptor (with `sourceClientId`, and `route` in credit mode).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateStream {
    /// The opener's own stream id.
    pub source_stream_id: StreamId,
    /// The acceptor's stream id.
    pub target_stream_id: StreamId,
    /// The acceptor.
    pub target_client_id: String,
    /// The opener, added by the relay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_client_id: Option<String>,
    /// The opener's receive window (credit mode; absent from seed-era openers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<Window>,
    /// The relay's route id, added by the relay when both ends run credit mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<u64>,
    /// The channel the acceptor should hand the stream to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    /// The opener's arguments.
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub args: Value,
    /// Fields this version does not know: passed on unchanged.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl CreateStream {
    /// Decodes the first argument of the event, with the ids checked non-empty.
    pub fn from_args(args: &[Value]) -> Result<CreateStream, String> {
        let info = args.first().cloned().unwrap_or(Value::Null);
        let info: CreateStream = serde_json::from_value(info).map_err(|e| {
            format!(
                "MULTI_API_CREATE_STREAM needs {{sourceStreamId, targetStreamId, targetClientId}}: {e}"
            )
        })?;
        info.check()?;
        Ok(info)
    }

    /// Checks what the types cannot: ids are not empty.
    pub fn check(&self) -> Result<(), String> {
        if self.target_client_id.is_empty() {
            return Err(
                "MULTI_API_CREATE_STREAM: targetClientId must be a non-empty string".into(),
            );
        }
        for (key, id) in [
            ("sourceStreamId", &self.source_stream_id),
            ("targetStreamId", &self.target_stream_id),
        ] {
            if id.is_empty() {
                return Err(format!(
                    "MULTI_API_CREATE_STREAM: {key} must be a non-empty string"
                ));
            }
        }
        Ok(())
    }

    /// As the one event argument.
    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

/// A credit-mode acceptance: `{window}` from the acceptor, `{window, route}` from the relay to
/// the opener.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamAccept {
    /// The acceptor's receive window.
    pub window: Window,
    /// The route id (relay to opener only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<u64>,
}

impl StreamAccept {
    /// As the one acknowledgement argument.
    pub fn to_value(self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

/// An answer to `MULTI_API_CREATE_STREAM`, decoded from the acknowledgement's arguments.
#[derive(Debug, Clone, PartialEq)]
pub enum CreateAnswer {
    /// No argument: a seed-era acceptor accepted (seed mode).
    Seed,
    /// A string: refused, with the reason.
    Refused(String),
    /// `{window[, route]}`: accepted in credit mode.
    Credit(StreamAccept),
    /// Anything else (an object without a valid window, ...): a broken answer.
    Invalid(String),
}

impl CreateAnswer {
    /// Decodes the acknowledgement's arguments.
    pub fn from_args(args: &[Value]) -> CreateAnswer {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Wire {
            Refused(String),
            Credit(StreamAccept),
        }
        let Some(first) = args.first().filter(|v| !v.is_null()) else {
            return CreateAnswer::Seed;
        };
        match Wire::deserialize(first) {
            Ok(Wire::Refused(s)) => CreateAnswer::Refused(s),
            Ok(Wire::Credit(a)) => CreateAnswer::Credit(a),
            Err(_) => CreateAnswer::Invalid(first.to_string()),
        }
    }
}

/// A serialized Node `Buffer`: `{"type": "Buffer", "data": [byte, ...]}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeBuffer {
    /// Always `"Buffer"`.
    #[serde(rename = "type")]
    pub kind: BufferTag,
    /// The bytes, each 0..=255.
    pub data: Vec<u8>,
}

/// The one accepted value of [`NodeBuffer::kind`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BufferTag {
    /// `"Buffer"`.
    Buffer,
}

/// One seed-mode chunk, in any form a seed-era client sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SeedChunk {
    /// `null`: end of stream.
    End,
    /// An array of byte values (what Rust peers send, and what binary becomes via the relay).
    Bytes(Vec<u8>),
    /// A serialized Node `Buffer`.
    Buffer(NodeBuffer),
    /// A string, taken as its UTF-8 bytes.
    Text(String),
}

impl SeedChunk {
    /// The bytes; `None` for end of stream.
    pub fn into_bytes(self) -> Option<Vec<u8>> {
        match self {
            SeedChunk::End => None,
            SeedChunk::Bytes(b) | SeedChunk::Buffer(NodeBuffer { data: b, .. }) => Some(b),
            SeedChunk::Text(s) => Some(s.into_bytes()),
        }
    }
}

/// Arguments of the seed data event `P2P_EMIT_STREAM-from-stream-<id>(sender, chunk)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeedData {
    /// The sending client.
    pub sender: String,
    /// The chunk (`SeedChunk::End` when absent).
    pub chunk: SeedChunk,
}

impl SeedData {
    /// Decodes the event's arguments. A chunk that is not bytes (a value over 255, a fraction,
    /// an object of another kind) is an error, whatever its form.
    pub fn from_args(args: &[Value]) -> Result<SeedData, String> {
        let sender = sender_of(args)?;
        let chunk = match args.get(1) {
            None => SeedChunk::End,
            Some(v) => SeedChunk::deserialize(v).map_err(|_| {
                "seed chunk is not bytes: expected null, an array of 0..=255, a string or \
                 {type: \"Buffer\", data: [0..=255, ...]}"
                    .to_string()
            })?,
        };
        Ok(SeedData { sender, chunk })
    }
}

/// Arguments of `PEER_STREAM_DESTROYED(sender, streamId)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeedDestroyed {
    /// The client that destroyed its end.
    pub sender: String,
    /// Its stream id.
    pub stream_id: StreamId,
}

impl SeedDestroyed {
    /// Decodes the event's arguments.
    pub fn from_args(args: &[Value]) -> Result<SeedDestroyed, String> {
        let sender = sender_of(args)?;
        let stream_id = args
            .get(1)
            .map(StreamId::deserialize)
            .transpose()
            .ok()
            .flatten()
            .filter(|id| !id.is_empty())
            .ok_or_else(|| "PEER_STREAM_DESTROYED needs (clientId, streamId)".to_string())?;
        Ok(SeedDestroyed { sender, stream_id })
    }
}

/// The sender's client id, first in every seed stream event's arguments.
pub fn sender_of(args: &[Value]) -> Result<String, String> {
    args.first()
        .map(String::deserialize)
        .transpose()
        .ok()
        .flatten()
        .ok_or_else(|| "a stream event needs the sender's client id first".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn seed_chunks_take_every_form_and_reject_non_bytes_alike() {
        let ok = [
            (json!(null), None),
            (json!([0, 255, 30]), Some(vec![0, 255, 30])),
            (
                json!({"type": "Buffer", "data": [1, 2, 255]}),
                Some(vec![1, 2, 255]),
            ),
            (json!("hi"), Some(b"hi".to_vec())),
        ];
        for (v, want) in ok {
            let d = SeedData::from_args(&[json!("a"), v.clone()]).unwrap();
            assert_eq!(d.chunk.into_bytes(), want, "{v}");
        }
        for bad in [
            json!([256]),
            json!([1.5]),
            json!([-1]),
            json!({"type": "Buffer", "data": [256]}),
            json!({"type": "Buffer", "data": [2.5]}),
            json!({"type": "Blob", "data": [1]}),
            json!({"data": [1]}),
            json!(12),
        ] {
            assert!(
                SeedData::from_args(&[json!("a"), bad.clone()]).is_err(),
                "{bad} must be refused"
            );
        }
    }

    #[test]
    fn create_stream_round_trips_with_seed_field_names() {
        let v = json!({"sourceStreamId": "s1", "targetStreamId": 7, "targetClientId": "bob",
                       "window": 1024, "channel": "c", "args": [1], "custom": true});
        let info = CreateStream::from_args(std::slice::from_ref(&v)).unwrap();
        assert_eq!(info.window.map(Window::get), Some(1024));
        assert_eq!(info.target_stream_id.to_string(), "7");
        assert_eq!(info.to_value(), v);
        for bad in [
            json!({"sourceStreamId": "s", "targetStreamId": "t", "targetClientId": "b", "window": 0}),
            json!({"sourceStreamId": "s", "targetStreamId": "t", "targetClientId": "b",
                   "window": 2147483648u64}),
            json!({"sourceStreamId": "", "targetStreamId": "t", "targetClientId": "b"}),
            json!({"sourceStreamId": "s", "targetStreamId": "t", "targetClientId": ""}),
            json!({"sourceStreamId": "s", "targetStreamId": "t"}),
            json!("nope"),
        ] {
            assert!(
                CreateStream::from_args(std::slice::from_ref(&bad)).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn answers_decode() {
        assert_eq!(CreateAnswer::from_args(&[]), CreateAnswer::Seed);
        assert_eq!(CreateAnswer::from_args(&[json!(null)]), CreateAnswer::Seed);
        assert_eq!(
            CreateAnswer::from_args(&[json!("no")]),
            CreateAnswer::Refused("no".into())
        );
        assert_eq!(
            CreateAnswer::from_args(&[json!({"window": 5, "route": 9})]),
            CreateAnswer::Credit(StreamAccept {
                window: Window(5),
                route: Some(9)
            })
        );
        assert!(matches!(
            CreateAnswer::from_args(&[json!({"window": 0})]),
            CreateAnswer::Invalid(_)
        ));
    }
}
