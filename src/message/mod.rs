//! Message API: events between clients by id, with or without an answer, and listeners for any
//! peer or for one.
//!
//! Event arguments are any serializable value ([`IntoArgs`]):
//!
//! | value | arguments |
//! | --- | --- |
//! | `()` | none |
//! | `(a, b)` | two: `a`, `b` |
//! | `(x,)` | one: `x` |
//! | `x` (a struct, a number, a string, a `Vec`, a `serde_json::Value`, ...) | one: `x` |
//! | [`Args`] | the list it holds, as it is |
//!
//! A fixed-size array (`[1, 2]`) is serialized by serde like a tuple, so it is spread too; pass a
//! slice or a `Vec` to send it as one argument. Received arguments are read back the same way
//! ([`parse_args`], [`PeerMessage::parse`]).

mod args;
mod call;
pub mod client;
pub(crate) mod server;

pub use crate::request::Reply;
pub use args::{parse_args, Args, IntoArgs};
pub use call::Request;
pub use client::{ListenerId, PeerListeners, PeerMessage};
