//! Event arguments as the relay holds them: JSON with real binary data in it.
//!
//! A Socket.IO event may carry binary attachments anywhere inside its arguments (a Node `Buffer`
//! in an object, say). The relay keeps them as [`Arg::Binary`], a variant no JSON text can
//! produce, so a client cannot make the relay turn plain JSON into binary for anyone: whatever
//! arrived as JSON leaves as the same JSON, whatever arrived as binary leaves as binary (towards
//! seed-era clients) or as an array of byte values (towards extension clients, whose Socket.IO
//! library cannot carry binary inside a JSON event).

use bytes::Bytes;
use serde::de::{MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, SerializeSeq, SerializeTuple};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;
use std::fmt;

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
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Arg, A::Error> {
        let mut json = serde_json::Map::new();
        while let Some((k, v)) = map.next_entry::<String, Arg>()? {
            match v {
                Arg::Json(v) => {
                    json.insert(k, v);
                }
                binary => {
                    let mut out: Vec<(String, Arg)> =
                        json.into_iter().map(|(k, v)| (k, Arg::Json(v))).collect();
                    out.push((k, binary));
                    while let Some((k, v)) = map.next_entry::<String, Arg>()? {
                        out.push((k, v));
                    }
                    return Ok(Arg::Object(out));
                }
            }
        }
        Ok(Arg::Json(Value::Object(json)))
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
            serde_json::from_value(json!([{"__p2p_binary__": [1, 2]}, {"_placeholder": true}]))
                .unwrap();
        assert!(a.0.iter().all(|a| matches!(a, Arg::Json(_))));
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
