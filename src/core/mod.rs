//! Core API: connecting with a client id, rooms, and the list of connected clients.

pub(crate) mod client;
pub(crate) mod server;
