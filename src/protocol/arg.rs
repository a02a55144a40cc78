//! Event arguments as the relay holds them: JSON with real binary data in it.
//!
//! A Socket.IO event may carry binary attachments anywhere inside its arguments (a Node `Buffer`
//! in an object, say). The relay keeps them as [`Arg::Binary`], a variant no JSON text can
//! produce, so a client cannot make the relay turn plain JSON into binary for anyone: whatever
//! arrived as JSON leaves as the same JSON, whatever arrived as binary leaves as binary (towards
//! seed-era clients) or as an array of byte values (towards extension clients, whose Socket.IO
//! library cannot carry binary inside a JSON event).
//!
//! The other way round is refused as well: an object with the key `_placeholder` is what
//! Socket.IO's parsers read as a reference to a binary attachment, and a receiver's library fails
//! on one that names no attachment of its packet (socket.io-client 4 drops the connection, 2.x
//! throws out of its packet handler). Such an object is never decoded into an [`Arg`], so the
//! relay cannot forward one on any path.

use super::DecodeError;
use bytes::Bytes;
use serde::de::{MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, SerializeSeq, SerializeTuple};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;
use std::fmt;

/// The key that makes a JSON object a binary placeholder for Socket.IO's parsers
/// (`{"_placeholder": true, "num": 0}` stands for the first attachment of the packet).
pub const PLACEHOLDER_KEY: &str = "_placeholder";

/// Why an event or an answer holding an object with [`PLACEHOLDER_KEY`] is refused.
pub const PLACEHOLDER_REFUSED: &str = "an object with the key '_placeholder' is not relayed \
     (Socket.IO clients read it as a binary attachment)";

/// Whether `v` holds, anywhere inside, an object with the key [`PLACEHOLDER_KEY`].
pub fn has_placeholder(v: &Value) -> bool {
    let mut todo = vec![v];
    while let Some(v) = todo.pop() {
        match v {
            Value::Array(items) => todo.extend(items),
            Value::Object(m) if m.contains_key(PLACEHOLDER_KEY) => return true,
            Value::Object(m) => todo.extend(m.values()),
            _ => {}
        }
    }
    false
}

/// Checks JSON arguments the relay itself is about to send (a server emit, a request, an answer,
/// a topic publication): none may hold an object a Socket.IO client would read as a binary
/// placeholder.
pub fn check_no_placeholder(args: &[Value]) -> Result<(), DecodeError> {
    match args.iter().any(has_placeholder) {
        true => Err(DecodeError(PLACEHOLDER_REFUSED.to_string())),
        false => Ok(()),
    }
}

/// What was wrong with arguments that could not be decoded into [`Arg`]s: the placeholder
/// refusal as it is, anything else with `error`'s own text.
pub fn args_error(error: &dyn fmt::Display) -> DecodeError {
    let text = error.to_string();
    if text.starts_with(PLACEHOLDER_REFUSED) {
        DecodeError(PLACEHOLDER_REFUSED.to_string())
    } else {
        DecodeError(format!("the arguments cannot be decoded: {text}"))
    }
}

/// One event argument, or a part of one.
#[derive(Debug, Clone, PartialEq)]
pub enum Arg {
    /// JSON with no binary data anywhere inside.
    Json(Value),
    /// A binary attachment.
    Binary(Bytes),
    /// An array with binary data somewhere inside.
    Array(Vec<Arg>),
    /// An object with binary data somewhere inside.
    Object(Vec<(String, Arg)>),
}

impl Arg {
    /// The string, if this is a JSON string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Arg::Json(Value::String(s)) => Some(s),
            _ => None,
        }
    }

    /// Whether binary data is anywhere inside.
    pub fn has_binary(&self) -> bool {
        !matches!(self, Arg::Json(_))
    }

    /// The plain JSON form: binary data becomes an array of byte values (what Rust receivers
    /// see).
    pub fn into_value(self) -> Value {
        match self {
            Arg::Json(v) => v,
            Arg::Binary(b) => Value::Array(b.iter().map(|x| Value::from(*x)).collect()),
            Arg::Array(a) => Value::Array(a.into_iter().map(Arg::into_value).collect()),
            Arg::Object(o) => {
                Value::Object(o.into_iter().map(|(k, v)| (k, v.into_value())).collect())
            }
        }
    }

    /// A short description for error texts: the JSON, or `<binary>`.
    pub fn describe(&self) -> String {
        match self {
            Arg::Json(v) => v.to_string(),
            _ => "<binary data>".to_string(),
        }
    }
}

impl From<Value> for Arg {
    fn from(v: Value) -> Self {
        Arg::Json(v)
    }
}

impl From<&str> for Arg {
    fn from(s: &str) -> Self {
        Arg::Json(Value::from(s))
    }
}

struct ArgVisitor;

impl<'de> Visitor<'de> for ArgVisitor {
    type Value = Arg;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value or binary data")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Arg, E> {
        Ok(Arg::Json(Value::Bool(v)))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Arg, E> {
        Ok(Arg::Json(Value::from(v)))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Arg, E> {
        Ok(Arg::Json(Value::from(v)))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Arg, E> {
        Ok(Arg::Json(
            serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number),
        ))
    }
    fn visit_str<E>(self, v: &str) -> Result<Arg, E> {
        Ok(Arg::Json(Value::String(v.to_string())))
    }
    fn visit_string<E>(self, v: String) -> Result<Arg, E> {
        Ok(Arg::Json(Value::String(v)))
    }
    fn visit_bytes<E>(self, v: &[u8]) -> Result<Arg, E> {
        Ok(Arg::Binary(Bytes::copy_from_slice(v)))
    }
    fn visit_byte_buf<E>(self, v: Vec<u8>) -> Result<Arg, E> {
        Ok(Arg::Binary(Bytes::from(v)))
    }
    fn visit_unit<E>(self) -> Result<Arg, E> {
        Ok(Arg::Json(Value::Null))
    }
    fn visit_none<E>(self) -> Result<Arg, E> {
        Ok(Arg::Json(Value::Null))
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Arg, D::Error> {
        Arg::deserialize(d)
    }
    // Arrays and objects are built as plain JSON, the common case, until an element holds
    // binary data; only then do they switch to the `Arg` form.
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Arg, A::Error> {
        let mut json = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(v) = seq.next_element::<Arg>()? {
            match v {
                Arg::Json(v) => json.push(v),
                binary => {
                    let mut out: Vec<Arg> = json.into_iter().map(Arg::Json).collect();
                    out.push(binary);
                    while let Some(v) = seq.next_element::<Arg>()? {
                        out.push(v);
                    }
                    return Ok(Arg::Array(out));
                }
            }
        }
        Ok(Arg::Json(Value::Array(json)))
    }
    // An object with the placeholder key is refused here, before its value is read: no JSON a
    // client sends can reach a receiver as a binary placeholder.
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Arg, A::Error> {
        let mut json = serde_json::Map::new();
        while let Some(k) = next_key(&mut map)? {
            match map.next_value::<Arg>()? {
                Arg::Json(v) => {
                    json.insert(k, v);
                }
                binary => {
                    let mut out: Vec<(String, Arg)> =
                        json.into_iter().map(|(k, v)| (k, Arg::Json(v))).collect();
                    out.push((k, binary));
                    while let Some(k) = next_key(&mut map)? {
                        out.push((k, map.next_value::<Arg>()?));
                    }
                    return Ok(Arg::Object(out));
                }
            }
        }
        Ok(Arg::Json(Value::Object(json)))
    }
}

/// The next key of an object, refusing [`PLACEHOLDER_KEY`].
fn next_key<'de, A: MapAccess<'de>>(map: &mut A) -> Result<Option<String>, A::Error> {
    match map.next_key::<String>()? {
        Some(k) if k == PLACEHOLDER_KEY => Err(serde::de::Error::custom(PLACEHOLDER_REFUSED)),
        k => Ok(k),
    }
}

impl<'de> Deserialize<'de> for Arg {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ArgVisitor)
    }
}

/// Serializes an [`Arg`]: binary as binary (`bytes`) or as an array of byte values.
struct Out<'a> {
    a: &'a Arg,
    bytes: bool,
}

impl Serialize for Out<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.a {
            Arg::Json(v) => v.serialize(s),
            Arg::Binary(b) if self.bytes => s.serialize_bytes(b),
            Arg::Binary(b) => {
                let mut seq = s.serialize_seq(Some(b.len()))?;
                for x in b.iter() {
                    seq.serialize_element(x)?;
                }
                seq.end()
            }
            Arg::Array(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for a in items {
                    seq.serialize_element(&Out {
                        a,
                        bytes: self.bytes,
                    })?;
                }
                seq.end()
            }
            Arg::Object(entries) => {
                let mut map = s.serialize_map(Some(entries.len()))?;
                for (k, a) in entries {
                    map.serialize_entry(
                        k,
                        &Out {
                            a,
                            bytes: self.bytes,
                        },
                    )?;
                }
                map.end()
            }
        }
    }
}

impl Serialize for Arg {
    /// Binary data goes out as binary; a JSON serializer writes it as an array of numbers.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        Out {
            a: self,
            bytes: true,
        }
        .serialize(s)
    }
}

/// All the arguments of an event, as a list.
///
/// Socket.IO events carry a variable number of arguments; socketioxide hands a handler the whole
/// list only when the target type deserializes as a tuple, which this type does. Binary
/// attachments anywhere in the arguments are kept as [`Arg::Binary`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RawArgs(pub Vec<Arg>);

impl<'de> Deserialize<'de> for RawArgs {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawArgs;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list of event arguments")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawArgs, A::Error> {
                let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
                while let Some(v) = seq.next_element::<Arg>()? {
                    out.push(v);
                }
                Ok(RawArgs(out))
            }
        }
        d.deserialize_tuple(usize::MAX, V)
    }
}

fn serialize_list<S: Serializer>(args: &[Arg], bytes: bool, s: S) -> Result<S::Ok, S::Error> {
    let mut t = s.serialize_tuple(args.len())?;
    for a in args {
        t.serialize_element(&Out { a, bytes })?;
    }
    t.end()
}

/// Borrowed arguments for an event to a seed-era client: binary goes out as binary attachments.
pub struct SeedArgs<'a>(pub &'a [Arg]);

impl Serialize for SeedArgs<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        serialize_list(self.0, true, s)
    }
}

/// Borrowed arguments for an event to an extension client: binary goes out as arrays of numbers.
pub struct ExtArgs<'a>(pub &'a [Arg]);

impl Serialize for ExtArgs<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        serialize_list(self.0, false, s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_that_looks_like_binary_stays_json() {
        let a: RawArgs =
            serde_json::from_value(json!([{"__p2p_binary__": [1, 2]}, {"placeholder": true}]))
                .unwrap();
        assert!(a.0.iter().all(|a| matches!(a, Arg::Json(_))));
    }

    #[test]
    fn placeholder_look_alikes_are_refused() {
        for v in [
            json!([{"_placeholder": true, "num": 0}]),
            json!(["x", {"a": [1, {"num": 3, "_placeholder": true}]}]),
            json!([{"_placeholder": false}]),
        ] {
            assert!(v.as_array().unwrap().iter().any(has_placeholder), "{v}");
            let e = serde_json::from_value::<RawArgs>(v.clone()).unwrap_err();
            assert_eq!(args_error(&e).0, PLACEHOLDER_REFUSED, "{v}");
            assert!(check_no_placeholder(v.as_array().unwrap()).is_err());
        }
        let fine = json!([{"placeholder": true}, ["_placeholder"], {"x": "_placeholder"}]);
        assert!(check_no_placeholder(fine.as_array().unwrap()).is_ok());
        let e = serde_json::from_str::<RawArgs>("[1, {]").unwrap_err();
        assert!(args_error(&e)
            .0
            .starts_with("the arguments cannot be decoded"));
    }

    #[test]
    fn binary_goes_out_as_numbers_to_json() {
        let args = vec![
            Arg::Object(vec![(
                "a".into(),
                Arg::Binary(Bytes::from_static(&[1, 2, 255])),
            )]),
            Arg::from("x"),
        ];
        let ext = serde_json::to_value(ExtArgs(&args)).unwrap();
        assert_eq!(ext, json!([{"a": [1, 2, 255]}, "x"]));
        assert_eq!(args[0].clone().into_value(), json!({"a": [1, 2, 255]}));
    }
}
