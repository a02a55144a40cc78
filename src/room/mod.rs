//! Rooms (join, leave, emit to a room) and the list of connected clients: the seed's Core API.

pub(crate) mod client;
pub(crate) mod server;
