//! Stream API: byte streams between clients ([`P2pDuplex`]), with credit-based backpressure.
//!
//! A stream is opened with `MULTI_API_CREATE_STREAM`; the opener's request carries its receive
//! window and the acceptor's answer carries its own. Data then travels as binary `P2P_FRAME`
//! events (see [`frame`]) that the relay forwards by route id without parsing JSON; each reader
//! grants more credit as it consumes (see [`flow`]). With a seed-era JavaScript peer (whose answer
//! carries no window) the stream falls back to that protocol: one acknowledged chunk at a time.

pub mod accept;
pub mod client;
pub(crate) mod core;
pub mod duplex;
pub mod flow;
pub mod frame;
#[cfg(test)]
mod harness;
pub(crate) mod route;
pub(crate) mod server;

pub use accept::IncomingStreams;
pub use client::StreamOptions;
pub use duplex::{P2pDuplex, StreamInfo};

/// Default receive window of a stream: 512 KiB.
pub const DEFAULT_WINDOW: u32 = 512 * 1024;

/// Prefix of the seed's stream data event: `P2P_EMIT_STREAM-from-stream-<stream id>`.
pub const SEED_DATA_PREFIX: &str = "P2P_EMIT_STREAM-from-stream-";
/// The seed's stream destroy event: `PEER_STREAM_DESTROYED(clientId, streamId)`.
pub const SEED_DESTROYED: &str = "PEER_STREAM_DESTROYED";
