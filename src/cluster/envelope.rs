//! What relays of one cluster send each other: [`Envelope`], JSON on the Redis channel of the
//! relay it is for, decoded once on arrival. One that does not decode is logged and dropped.

use crate::error::{Error, WireError};
use crate::protocol::Arg;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One message between relays.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub(crate) enum Envelope {
    /// `event(...args)` for client `to` of the receiving relay, from client `from` of relay
    /// `relay` (`None`: the sending relay's own server API).
    Emit {
        relay: String,
        from: Option<String>,
        to: String,
        event: String,
        args: Vec<WireArg>,
    },
    /// Several messages from `from` for `to`, in order.
    Batch {
        relay: String,
        from: String,
        to: String,
        items: Vec<(String, Vec<WireArg>)>,
    },
    /// `event(...args)` for client `to`, whose answer goes back to `relay` as a
    /// [`Envelope::Reply`] with the same `id`. `from` is the asking client (`None`: the sending
    /// relay's server API).
    Request {
        relay: String,
        id: u64,
        from: Option<String>,
        to: String,
        event: String,
        args: Vec<WireArg>,
        timeout_ms: u64,
    },
    /// The answer to [`Envelope::Request`] `id`.
    Reply {
        id: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ok: Option<Vec<WireArg>>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        err: Option<WireError>,
    },
    /// Client `client` of relay `relay` left: tell its watcher `to`, a client of the receiving
    /// relay.
    Gone {
        relay: String,
        client: String,
        to: String,
    },
    /// `n` messages client `from` sent to client `to` were not delivered: `error` says why.
    Undelivered {
        from: String,
        to: String,
        n: usize,
        error: WireError,
    },
    /// Another relay took client id `client` over (the duplicate-id policy `replace`): the
    /// receiving relay disconnects its connection under that id, telling it `reason`.
    Kick { client: String, reason: String },
    /// Relay `relay` took client id `client` over with the session's resume secret: the
    /// receiving relay ends its session of that id without telling its peers, and sends `relay`
    /// the session's watchers ([`Envelope::Watchers`]).
    Resumed { relay: String, client: String },
    /// The watchers of client `client`, whose session the receiving relay took over, and the
    /// peers it watched that left while it was away.
    Watchers {
        client: String,
        watchers: Vec<String>,
        missed: Vec<String>,
    },
    /// A room event for the members of `room` on the receiving relay, from client `from` of
    /// relay `relay` (`None`: that relay's server API): `event(...args)`, or, for an extension
    /// member when `wrap` is set, `P2P_ROOM(room, event, ...args)`. The arguments are JSON,
    /// binary data in them already written as arrays of byte values.
    RoomEmit {
        relay: String,
        from: Option<String>,
        room: String,
        event: String,
        args: Vec<Value>,
        wrap: bool,
    },
    /// Members of a room on another relay did not get a room event client `to` of the receiving
    /// relay sent: `error` says which, for its `SERVER_ERROR`.
    RoomBusy { to: String, error: String },
    /// Topic room `room` is destroyed: the receiving relay tells its members
    /// (`<room>-TOPIC_BEING_DESTROYED`) and removes them from it.
    RoomDestroy { relay: String, room: String },
    /// Puts client `client` of the receiving relay in room `room` (`join`), or takes it out, on
    /// behalf of a service of relay `relay`, which checked what it may do; the outcome goes back
    /// as a [`Envelope::Reply`] with the same `id`.
    RoomMember {
        relay: String,
        id: u64,
        client: String,
        room: String,
        join: bool,
    },
    // Streams between relays (see `super::stream`).
    /// Client `from` of relay `relay` opens a credit-mode stream to client `to` of the receiving
    /// relay: `open` is its `MULTI_API_CREATE_STREAM` argument, `route` the opener relay's route
    /// id. Answered with [`Envelope::StreamAnswer`] `id` within `timeout_ms`.
    StreamOpen {
        relay: String,
        id: u64,
        from: String,
        to: String,
        open: Value,
        route: u64,
        timeout_ms: u64,
    },
    /// The answer to [`Envelope::StreamOpen`] `id` for the opener relay's route `for_route`: the
    /// acceptor's acknowledgement (`ok`) or why there is none (`err`); `route` is the answering
    /// relay's (`relay`) route id when its client accepted.
    StreamAnswer {
        relay: String,
        id: u64,
        for_route: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        route: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ok: Option<Vec<WireArg>>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        err: Option<WireError>,
    },
    /// Relay `relay` missed envelopes the receiving relay sent it (its subscription broke before
    /// it read them): the receiving relay tells whose they were.
    Missed { relay: String, gaps: Vec<Gap> },
}

/// Envelopes one relay missed of what another sent it: those numbered past `after`, up to
/// `upto` (`None`: every one after) in the counter of epoch `epoch`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Gap {
    pub(crate) epoch: String,
    pub(crate) after: u64,
    pub(crate) upto: Option<u64>,
}

impl Gap {
    pub(crate) fn new(epoch: &str, after: u64, upto: Option<u64>) -> Gap {
        Gap {
            epoch: epoch.to_string(),
            after,
            upto,
        }
    }
}

impl Envelope {
    /// The envelope's kind, for logs.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Envelope::Emit { .. } => "emit",
            Envelope::Batch { .. } => "batch",
            Envelope::Request { .. } => "request",
            Envelope::Reply { .. } => "reply",
            Envelope::Gone { .. } => "gone",
            Envelope::Undelivered { .. } => "undelivered",
            Envelope::Kick { .. } => "kick",
            Envelope::Resumed { .. } => "resumed",
            Envelope::Watchers { .. } => "watchers",
            Envelope::RoomEmit { .. } => "room_emit",
            Envelope::RoomBusy { .. } => "room_busy",
            Envelope::RoomDestroy { .. } => "room_destroy",
            Envelope::RoomMember { .. } => "room_member",
            Envelope::Missed { .. } => "missed",
            Envelope::StreamOpen { .. } => "stream_open",
            Envelope::StreamAnswer { .. } => "stream_answer",
        }
    }

    /// The envelope as it travels.
    pub(crate) fn encode(&self) -> Result<String, Error> {
        Ok(serde_json::to_string(self)?)
    }

    /// An envelope that arrived; `None` (logged) for one that does not decode.
    pub(crate) fn decode(bytes: &[u8]) -> Option<Envelope> {
        match serde_json::from_slice(bytes) {
            Ok(e) => Some(e),
            Err(e) => {
                tracing::warn!(
                    bytes = bytes.len(),
                    "dropping a message from another relay that does not decode: {e}"
                );
                None
            }
        }
    }

    /// A reply carrying `result`.
    pub(crate) fn reply(id: u64, result: Result<Vec<Arg>, Error>) -> Envelope {
        match result {
            Ok(args) => Envelope::Reply {
                id,
                ok: Some(WireArg::from_args(args)),
                err: None,
            },
            Err(e) => Envelope::Reply {
                id,
                ok: None,
                err: Some(e.to_wire()),
            },
        }
    }
}

/// An event argument between relays: JSON, or binary data kept as binary (see [`Arg`]), written
/// in hex (two bytes a byte, where a JSON array of byte values takes up to four).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum WireArg {
    Json(Value),
    Binary(#[serde(with = "hex_bytes")] Vec<u8>),
    Array(Vec<WireArg>),
    Object(Vec<(String, WireArg)>),
}

impl WireArg {
    pub(crate) fn from_args(args: Vec<Arg>) -> Vec<WireArg> {
        args.into_iter().map(WireArg::from).collect()
    }

    pub(crate) fn into_args(args: Vec<WireArg>) -> Result<Vec<Arg>, Error> {
        args.into_iter().map(Arg::try_from).collect()
    }
}

impl From<Arg> for WireArg {
    fn from(a: Arg) -> Self {
        match a {
            Arg::Json(v) => WireArg::Json(v),
            Arg::Binary(b) => WireArg::Binary(b.to_vec()),
            Arg::Array(a) => WireArg::Array(a.into_iter().map(WireArg::from).collect()),
            Arg::Object(o) => {
                WireArg::Object(o.into_iter().map(|(k, v)| (k, WireArg::from(v))).collect())
            }
        }
    }
}

impl TryFrom<WireArg> for Arg {
    type Error = Error;

    /// Refuses JSON holding a binary placeholder look-alike, as the relay refuses it from a
    /// client (see [`crate::protocol::arg`]).
    fn try_from(w: WireArg) -> Result<Arg, Error> {
        Ok(match w {
            WireArg::Json(v) => {
                crate::protocol::check_no_placeholder(std::slice::from_ref(&v))?;
                Arg::Json(v)
            }
            WireArg::Binary(b) => Arg::Binary(Bytes::from(b)),
            WireArg::Array(a) => {
                Arg::Array(a.into_iter().map(Arg::try_from).collect::<Result<_, _>>()?)
            }
            WireArg::Object(o) => Arg::Object(
                o.into_iter()
                    .map(|(k, v)| Arg::try_from(v).map(|v| (k, v)))
                    .collect::<Result<_, _>>()?,
            ),
        })
    }
}

/// Bytes as a string of hex digits.
mod hex_bytes {
    use serde::{de, Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut text = String::with_capacity(bytes.len() * 2);
        for b in bytes {
            text.push(DIGITS[usize::from(b >> 4)] as char);
            text.push(DIGITS[usize::from(b & 15)] as char);
        }
        s.serialize_str(&text)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        let digit = |c: u8| match c {
            b'0'..=b'9' => Ok(c - b'0'),
            b'a'..=b'f' => Ok(c - b'a' + 10),
            _ => Err(de::Error::custom("binary data is not in lowercase hex")),
        };
        let text = text.as_bytes();
        if text.len() % 2 != 0 {
            return Err(de::Error::custom(
                "binary data has an odd number of hex digits",
            ));
        }
        text.chunks(2)
            .map(|pair| Ok(digit(pair[0])? << 4 | digit(pair[1])?))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_survive_the_trip_and_bad_ones_are_dropped() {
        let args = vec![
            Arg::Json(serde_json::json!({"a": 1})),
            Arg::Object(vec![(
                "data".into(),
                Arg::Binary(Bytes::from_static(b"\0\x01")),
            )]),
        ];
        let e = Envelope::Emit {
            relay: "r1".into(),
            from: Some("alice".into()),
            to: "bob".into(),
            event: "hi".into(),
            args: WireArg::from_args(args.clone()),
        };
        let back = Envelope::decode(e.encode().unwrap().as_bytes()).unwrap();
        let Envelope::Emit { args: got, .. } = back else {
            panic!("an emit")
        };
        assert_eq!(WireArg::into_args(got).unwrap(), args);
        assert!(Envelope::decode(b"{\"kind\":\"emit\"}").is_none());
        assert!(Envelope::decode(b"\xff").is_none());
        assert!(Envelope::decode(b"{\"kind\":\"launch\"}").is_none());
        let odd = br#"{"kind":"gone","relay":"r","client":"c","to":"t","x":1}"#;
        assert!(
            Envelope::decode(odd).is_none(),
            "unknown fields are refused"
        );
        let bin: WireArg = serde_json::from_str(r#"{"binary":"00ff7f"}"#).unwrap();
        assert_eq!(bin, WireArg::Binary(vec![0, 255, 127]));
        assert!(serde_json::from_str::<WireArg>(r#"{"binary":"0g"}"#).is_err());
        assert!(serde_json::from_str::<WireArg>(r#"{"binary":"abc"}"#).is_err());
        let placeholder = vec![WireArg::Json(serde_json::json!({"_placeholder": true}))];
        assert!(WireArg::into_args(placeholder).is_err());
    }

    #[test]
    fn room_envelopes_survive_the_trip() {
        let e = Envelope::RoomEmit {
            relay: "r1".into(),
            from: None,
            room: "hall".into(),
            event: "news".into(),
            args: vec![serde_json::json!({"data": [0, 1]}), serde_json::json!("x")],
            wrap: false,
        };
        let text = e.encode().unwrap();
        let Some(Envelope::RoomEmit {
            from,
            room,
            args,
            wrap,
            ..
        }) = Envelope::decode(text.as_bytes())
        else {
            panic!("a room emit: {text}")
        };
        assert_eq!((from, room.as_str(), wrap), (None, "hall", false));
        assert_eq!(args[0]["data"], serde_json::json!([0, 1]));
        let member =
            br#"{"kind":"room_member","relay":"r","id":7,"client":"c","room":"t","join":true}"#;
        assert!(matches!(
            Envelope::decode(member),
            Some(Envelope::RoomMember {
                id: 7,
                join: true,
                ..
            })
        ));
        let missing = br#"{"kind":"room_destroy","relay":"r"}"#;
        assert!(Envelope::decode(missing).is_none(), "a room is required");
    }
}
