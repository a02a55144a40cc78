//! Message API: events between clients by id, with or without a reply, and peer listeners.

pub mod client;
pub(crate) mod server;

pub use client::{parse_args, IntoArgs, ListenerId, PeerListeners, PeerMessage, Reply};
