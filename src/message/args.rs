//! Event arguments from any serializable value, and back.
//!
//! See the table in [`crate::message`].

use crate::error::{Error, Result};
use serde::de::DeserializeOwned;
use serde::ser::{self, Serialize};
use serde_json::Value;

/// Converts a value into a list of event arguments: `()` is none, a tuple is spread into one
/// argument per element, any other serializable value is one argument (see the table in
/// [`crate::message`]). Implemented for every `Serialize` type.
pub trait IntoArgs {
    /// The argument list.
    fn into_args(self) -> Result<Vec<Value>>;
}

impl<T: Serialize> IntoArgs for T {
    fn into_args(self) -> Result<Vec<Value>> {
        self.serialize(Spread).map_err(Error::from)
    }
}

/// An argument list already built, sent as it is: `Args(vec![json!(1), json!("a")])` is two
/// arguments. Useful when the number of arguments is known only at run time.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Args(pub Vec<Value>);

impl From<Vec<Value>> for Args {
    fn from(v: Vec<Value>) -> Self {
        Args(v)
    }
}

impl Serialize for Args {
    fn serialize<S: ser::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        // Written as a tuple so that `IntoArgs` spreads it.
        use ser::SerializeTuple;
        let mut t = s.serialize_tuple(self.0.len())?;
        for v in &self.0 {
            t.serialize_element(v)?;
        }
        t.end()
    }
}

/// Deserializes a list of event arguments as one value: a tuple for several arguments, the value
/// itself for one, `()` (or an `Option` that is `None`) for none. `Vec<Value>` takes the list as
/// it is.
pub fn parse_args<T: DeserializeOwned>(args: &[Value]) -> Result<T> {
    match serde_json::from_value::<T>(Value::Array(args.to_vec())) {
        Ok(v) => Ok(v),
        Err(e) => {
            let alone = match args {
                [] => Value::Null,
                [one] => one.clone(),
                _ => return Err(e.into()),
            };
            // With one argument (or none) the value alone is what the caller meant to read, so
            // its error is the one that says what was wrong.
            serde_json::from_value(alone).map_err(Error::from)
        }
    }
}

type JsonSer = serde_json::value::Serializer;
type JsonErr = serde_json::Error;
const JSON: JsonSer = serde_json::value::Serializer;

/// The top-level serializer of [`IntoArgs`]: a tuple becomes one value per element, `()` no value,
/// anything else one value (serialized by serde_json).
struct Spread;

/// A compound value being serialized as one argument.
struct One<S>(S);

/// A top-level tuple: one argument per element.
struct Elements(Vec<Value>);

macro_rules! one_value {
    ($($method:ident($($arg:ident: $ty:ty),*);)*) => {
        $(
            fn $method(self, $($arg: $ty),*) -> std::result::Result<Vec<Value>, JsonErr> {
                Ok(vec![ser::Serializer::$method(JSON, $($arg),*)?])
            }
        )*
    };
}

impl ser::Serializer for Spread {
    type Ok = Vec<Value>;
    type Error = JsonErr;
    type SerializeSeq = One<<JsonSer as ser::Serializer>::SerializeSeq>;
    type SerializeTuple = Elements;
    type SerializeTupleStruct = One<<JsonSer as ser::Serializer>::SerializeTupleStruct>;
    type SerializeTupleVariant = One<<JsonSer as ser::Serializer>::SerializeTupleVariant>;
    type SerializeMap = One<<JsonSer as ser::Serializer>::SerializeMap>;
    type SerializeStruct = One<<JsonSer as ser::Serializer>::SerializeStruct>;
    type SerializeStructVariant = One<<JsonSer as ser::Serializer>::SerializeStructVariant>;

    one_value! {
        serialize_bool(v: bool);
        serialize_i8(v: i8);
        serialize_i16(v: i16);
        serialize_i32(v: i32);
        serialize_i64(v: i64);
        serialize_i128(v: i128);
        serialize_u8(v: u8);
        serialize_u16(v: u16);
        serialize_u32(v: u32);
        serialize_u64(v: u64);
        serialize_u128(v: u128);
        serialize_f32(v: f32);
        serialize_f64(v: f64);
        serialize_char(v: char);
        serialize_str(v: &str);
        serialize_bytes(v: &[u8]);
        serialize_none();
        serialize_unit_struct(name: &'static str);
        serialize_unit_variant(name: &'static str, index: u32, variant: &'static str);
    }

    fn serialize_unit(self) -> std::result::Result<Vec<Value>, JsonErr> {
        Ok(Vec::new())
    }

    fn serialize_some<T: ?Sized + Serialize>(
        self,
        value: &T,
    ) -> std::result::Result<Vec<Value>, JsonErr> {
        Ok(vec![serde_json::to_value(value)?])
    }

    fn serialize_newtype_struct<T: ?Sized + Serialize>(
        self,
        name: &'static str,
        value: &T,
    ) -> std::result::Result<Vec<Value>, JsonErr> {
        Ok(vec![ser::Serializer::serialize_newtype_struct(
            JSON, name, value,
        )?])
    }

    fn serialize_newtype_variant<T: ?Sized + Serialize>(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        value: &T,
    ) -> std::result::Result<Vec<Value>, JsonErr> {
        Ok(vec![ser::Serializer::serialize_newtype_variant(
            JSON, name, index, variant, value,
        )?])
    }

    fn serialize_seq(self, len: Option<usize>) -> std::result::Result<Self::SerializeSeq, JsonErr> {
        Ok(One(JSON.serialize_seq(len)?))
    }

    fn serialize_tuple(self, len: usize) -> std::result::Result<Elements, JsonErr> {
        Ok(Elements(Vec::with_capacity(len)))
    }

    fn serialize_tuple_struct(
        self,
        name: &'static str,
        len: usize,
    ) -> std::result::Result<Self::SerializeTupleStruct, JsonErr> {
        Ok(One(JSON.serialize_tuple_struct(name, len)?))
    }

    fn serialize_tuple_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        len: usize,
    ) -> std::result::Result<Self::SerializeTupleVariant, JsonErr> {
        Ok(One(JSON.serialize_tuple_variant(name, index, variant, len)?))
    }

    fn serialize_map(self, len: Option<usize>) -> std::result::Result<Self::SerializeMap, JsonErr> {
        Ok(One(JSON.serialize_map(len)?))
    }

    fn serialize_struct(
        self,
        name: &'static str,
        len: usize,
    ) -> std::result::Result<Self::SerializeStruct, JsonErr> {
        Ok(One(JSON.serialize_struct(name, len)?))
    }

    fn serialize_struct_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        len: usize,
    ) -> std::result::Result<Self::SerializeStructVariant, JsonErr> {
        Ok(One(
            JSON.serialize_struct_variant(name, index, variant, len)?
        ))
    }
}

impl ser::SerializeTuple for Elements {
    type Ok = Vec<Value>;
    type Error = JsonErr;
    fn serialize_element<T: ?Sized + Serialize>(
        &mut self,
        value: &T,
    ) -> std::result::Result<(), JsonErr> {
        self.0.push(serde_json::to_value(value)?);
        Ok(())
    }
    fn end(self) -> std::result::Result<Vec<Value>, JsonErr> {
        Ok(self.0)
    }
}

macro_rules! one_compound {
    ($trait:ident, $($method:ident($($arg:ident: $ty:ty),*);)*) => {
        impl<S: ser::$trait<Ok = Value, Error = JsonErr>> ser::$trait for One<S> {
            type Ok = Vec<Value>;
            type Error = JsonErr;
            $(
                fn $method<T: ?Sized + Serialize>(
                    &mut self,
                    $($arg: $ty,)*
                    value: &T,
                ) -> std::result::Result<(), JsonErr> {
                    self.0.$method($($arg,)* value)
                }
            )*
            fn end(self) -> std::result::Result<Vec<Value>, JsonErr> {
                Ok(vec![self.0.end()?])
            }
        }
    };
}

one_compound!(SerializeSeq, serialize_element(););
one_compound!(SerializeTupleStruct, serialize_field(););
one_compound!(SerializeTupleVariant, serialize_field(););
one_compound!(SerializeStruct, serialize_field(key: &'static str););
one_compound!(SerializeStructVariant, serialize_field(key: &'static str););

impl<S: ser::SerializeMap<Ok = Value, Error = JsonErr>> ser::SerializeMap for One<S> {
    type Ok = Vec<Value>;
    type Error = JsonErr;
    fn serialize_key<T: ?Sized + Serialize>(
        &mut self,
        key: &T,
    ) -> std::result::Result<(), JsonErr> {
        self.0.serialize_key(key)
    }
    fn serialize_value<T: ?Sized + Serialize>(
        &mut self,
        value: &T,
    ) -> std::result::Result<(), JsonErr> {
        self.0.serialize_value(value)
    }
    fn end(self) -> std::result::Result<Vec<Value>, JsonErr> {
        Ok(vec![self.0.end()?])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::{Deserialize, Serialize};
    use serde_json::json;
    use std::collections::BTreeMap;

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    struct Point {
        x: i32,
        y: i32,
    }

    #[derive(Serialize)]
    struct Pair(i32, i32);

    #[derive(Serialize)]
    enum Shape {
        Dot,
        Circle(u32),
        Line(i32, i32),
        Rect { w: u32, h: u32 },
    }

    #[test]
    fn a_tuple_is_spread_and_anything_else_is_one_argument() {
        assert_eq!(().into_args().unwrap(), Vec::<Value>::new());
        assert_eq!((1, "a").into_args().unwrap(), vec![json!(1), json!("a")]);
        assert_eq!((5,).into_args().unwrap(), vec![json!(5)]);
        assert_eq!(5.into_args().unwrap(), vec![json!(5)]);
        assert_eq!("hi".into_args().unwrap(), vec![json!("hi")]);
        let p = Point { x: 1, y: 2 };
        assert_eq!((&p).into_args().unwrap(), vec![json!({"x": 1, "y": 2})]);
        assert_eq!(p.into_args().unwrap(), vec![json!({"x": 1, "y": 2})]);
        assert_eq!(vec![1, 2].into_args().unwrap(), vec![json!([1, 2])]);
        assert_eq!(
            vec![json!(1), json!(2)].into_args().unwrap(),
            vec![json!([1, 2])],
            "a Vec<Value> is one argument; Args is a list"
        );
        assert_eq!(
            Args(vec![json!(1), json!(2)]).into_args().unwrap(),
            vec![json!(1), json!(2)]
        );
        assert_eq!(json!({"a": 1}).into_args().unwrap(), vec![json!({"a": 1})]);
        assert_eq!(Pair(1, 2).into_args().unwrap(), vec![json!([1, 2])]);
        assert_eq!(None::<i32>.into_args().unwrap(), vec![json!(null)]);
        assert_eq!(Some(3).into_args().unwrap(), vec![json!(3)]);
        let mut m = BTreeMap::new();
        m.insert("k", 1);
        assert_eq!(m.into_args().unwrap(), vec![json!({"k": 1})]);
        assert_eq!(Shape::Dot.into_args().unwrap(), vec![json!("Dot")]);
        assert_eq!(
            Shape::Circle(2).into_args().unwrap(),
            vec![json!({"Circle": 2})]
        );
        assert_eq!(
            Shape::Line(1, 2).into_args().unwrap(),
            vec![json!({"Line": [1, 2]})]
        );
        assert_eq!(
            Shape::Rect { w: 1, h: 2 }.into_args().unwrap(),
            vec![json!({"Rect": {"w": 1, "h": 2}})]
        );
        // Only the top level is spread.
        assert_eq!(
            ((1, 2), 3).into_args().unwrap(),
            vec![json!([1, 2]), json!(3)]
        );
        assert_eq!(([1, 2],).into_args().unwrap(), vec![json!([1, 2])]);
    }

    #[test]
    fn parse_reads_one_several_or_no_arguments() {
        let (a, b): (i64, String) = parse_args(&[json!(1), json!("x")]).unwrap();
        assert_eq!((a, b), (1, "x".to_string()));
        let p: Point = parse_args(&[json!({"x": 1, "y": 2})]).unwrap();
        assert_eq!(p, Point { x: 1, y: 2 });
        let n: i64 = parse_args(&[json!(7)]).unwrap();
        assert_eq!(n, 7);
        parse_args::<()>(&[]).unwrap();
        assert_eq!(parse_args::<Option<i64>>(&[]).unwrap(), None);
        let all: Vec<Value> = parse_args(&[json!(1), json!(2)]).unwrap();
        assert_eq!(all, vec![json!(1), json!(2)]);
        assert!(parse_args::<i64>(&[json!("x")]).is_err());
        assert!(parse_args::<i64>(&[json!(1), json!(2)]).is_err());
    }
}
