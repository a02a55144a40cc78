//! # socketio-p2p
//!
//! Lets clients of one Socket.IO server talk to each other by client id as if directly: rooms,
//! messages with replies, and listeners per peer. The relay ([`P2pServer`], or the ready-made
//! [`Relay`]) runs on socketioxide and also speaks the wire protocol of the original JavaScript
//! plugin, so its clients keep working; the Rust client is [`P2pClient`].

pub mod client;
pub mod error;
pub mod message;
pub mod protocol;
pub mod relay;
#[allow(dead_code)] // used by the request paths as they move onto it
pub(crate) mod request;
pub mod room;
pub mod server;
pub mod service;
pub mod stream;

pub use client::{ClientOptions, P2pClient, WeakP2pClient};
pub use error::{Error, ErrorCode, Result};
pub use message::{parse_args, Args, IntoArgs, ListenerId, PeerListeners, PeerMessage, Request};
pub use relay::{Relay, RelayOptions};
pub use request::Reply;
pub use server::{DuplicateIdPolicy, P2pServer, ServerOptions};
pub use service::{
    HandlerId, ServiceClient, ServiceHandle, ServiceRequest, TopicEvent, TopicNames,
};
pub use stream::{IncomingStreams, P2pDuplex, StreamInfo, StreamOptions};
