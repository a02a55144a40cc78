//! Message API: events between clients by id, with or without a reply, and peer listeners.

pub(crate) mod server;
pub mod client;

pub use client::{parse_args, IntoArgs, ListenerId, PeerListeners, PeerMessage, Reply};
