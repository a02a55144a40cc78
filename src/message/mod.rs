//! Message API: events between clients by id, with or without a reply, and peer listeners.

pub(crate) mod server;
