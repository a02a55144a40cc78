//! # socketio-p2p
//!
//! Lets clients of one Socket.IO server talk to each other by client id as if directly:
//! messages with answers, rooms, byte streams and services. The relay ([`Relay`], or
//! [`P2pServer`] on a socketioxide `SocketIo` of your own) runs on socketioxide in axum and also
//! speaks the wire protocol of the original JavaScript plugin, so its clients keep working; the
//! Rust client is [`P2pClient`], on rust_socketio.
//!
//! ## Where to start
//!
//! - Run a relay: [`Relay::bind`] (or the `socketio-p2p serve` command).
//! - Connect: [`P2pClient::connect`] with a client id.
//! - Messages: [`P2pClient::emit_to`] sends, [`P2pClient::on`] receives a [`PeerMessage`] from
//!   any peer, [`P2pClient::from`] from one peer. Arguments are any `Serialize` value: a tuple is
//!   several arguments, `()` none, anything else one ([`IntoArgs`]).
//! - Requests: [`P2pClient::request`] waits for a typed answer; the listener answers with
//!   [`PeerMessage::respond`] or, to answer later, with the message's [`Reply`]. Per-call options
//!   such as [`Request::timeout`] go before `.await`.
//! - Rooms: [`P2pClient::join_room`], [`P2pClient::emit_room`], received with
//!   [`P2pClient::on_raw`].
//! - Streams: [`P2pClient::add_p2p_stream`] opens a [`P2pDuplex`] (`AsyncRead + AsyncWrite`),
//!   [`P2pClient::incoming_streams`] accepts them.
//! - Services: [`P2pServer::as_service`] (the server provides it) or [`ServiceClient`] (a client
//!   does); callers use [`P2pClient::request_service`] and [`P2pClient::subscribe_topic`] alike.
//! - Securing a relay: [`auth`], an [`Authenticator`](auth::Authenticator) at connect (JSON Web
//!   Tokens built in, [`ClientOptions::token`] on the client side) and [`Permissions`](auth::Permissions)
//!   per client.
//!
//! Every call that waits on someone has a timeout ([`ClientOptions::timeout`], 5 s by default)
//! and fails with an [`Error`] instead of hanging; all of them, the relay's included, return this
//! crate's [`Result`], so `?` works across them.
//!
//! Listeners are plain closures, called one at a time in the order events arrive: they should
//! return quickly. For slow or async work, spawn a task and move the [`Reply`] into it (see
//! [`P2pClient::on`]).
//!
//! ## A relay and two clients
//!
//! ```
//! use socketio_p2p::{P2pClient, Relay};
//!
//! #[tokio::main]
//! async fn main() -> socketio_p2p::Result<()> {
//!     let relay = Relay::bind("127.0.0.1:0").await?;
//!     let alice = P2pClient::connect(&relay.url(), "alice").await?;
//!     let bob = P2pClient::connect(&relay.url(), "bob").await?;
//!     assert_eq!(alice.list_clients().await?, ["alice", "bob"]);
//!     alice.disconnect().await?;
//!     bob.disconnect().await?;
//!     relay.shutdown().await;
//!     Ok(())
//! }
//! ```
//!
//! ## Messages
//!
//! ```
//! use serde::{Deserialize, Serialize};
//! use socketio_p2p::{P2pClient, Relay};
//!
//! #[derive(Debug, PartialEq, Serialize, Deserialize)]
//! struct Order {
//!     dish: String,
//!     table: u32,
//! }
//!
//! #[tokio::main]
//! async fn main() -> socketio_p2p::Result<()> {
//!     let relay = Relay::bind("127.0.0.1:0").await?;
//!     let waiter = P2pClient::connect(&relay.url(), "waiter").await?;
//!     let kitchen = P2pClient::connect(&relay.url(), "kitchen").await?;
//!
//!     let (tx, mut orders) = tokio::sync::mpsc::unbounded_channel();
//!     kitchen.on("order", move |msg| {
//!         let order: Order = msg.parse().expect("an order");
//!         tx.send((msg.from, order)).unwrap();
//!     });
//!
//!     // A struct is one argument; a tuple would be several.
//!     let order = Order { dish: "soup".into(), table: 4 };
//!     waiter.emit_to("kitchen", "order", &order).await?;
//!
//!     let (from, got) = orders.recv().await.unwrap();
//!     assert_eq!((from.as_str(), got), ("waiter", order));
//!     Ok(())
//! }
//! ```
//!
//! ## Requests
//!
//! ```
//! use socketio_p2p::{Error, P2pClient, Relay};
//! use std::time::Duration;
//!
//! #[tokio::main]
//! async fn main() -> socketio_p2p::Result<()> {
//!     let relay = Relay::bind("127.0.0.1:0").await?;
//!     let alice = P2pClient::connect(&relay.url(), "alice").await?;
//!     let bob = P2pClient::connect(&relay.url(), "bob").await?;
//!
//!     bob.on("add", |msg| {
//!         let (a, b): (i64, i64) = msg.parse().unwrap_or_default();
//!         msg.respond(a + b);
//!     });
//!     bob.on("divide", |msg| {
//!         let (a, b): (i64, i64) = msg.parse().unwrap_or_default();
//!         let Some(reply) = msg.reply else { return };
//!         if b == 0 {
//!             reply.error("division by zero");
//!         } else {
//!             reply.send((a / b, a % b)); // two answer arguments
//!         }
//!     });
//!
//!     let sum: i64 = alice.request("bob", "add", (2, 3)).await?;
//!     assert_eq!(sum, 5);
//!     let (q, r): (i64, i64) = alice
//!         .request("bob", "divide", (7, 2))
//!         .timeout(Duration::from_secs(1))
//!         .await?;
//!     assert_eq!((q, r), (3, 1));
//!     let refused = alice.request::<i64>("bob", "divide", (1, 0)).await;
//!     assert!(matches!(refused, Err(Error::Remote { .. })));
//!     Ok(())
//! }
//! ```
//!
//! ## Streams
//!
//! ```
//! use socketio_p2p::{P2pClient, Relay};
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//!
//! #[tokio::main]
//! async fn main() -> socketio_p2p::Result<()> {
//!     let relay = Relay::bind("127.0.0.1:0").await?;
//!     let alice = P2pClient::connect(&relay.url(), "alice").await?;
//!     let bob = P2pClient::connect(&relay.url(), "bob").await?;
//!
//!     let mut incoming = bob.incoming_streams(None);
//!     let mut to_bob = alice.add_p2p_stream("bob").await?;
//!     let mut at_bob = incoming.next().await.expect("a stream");
//!     to_bob.write_all(b"hello").await?;
//!     to_bob.shutdown().await?;
//!     let mut text = String::new();
//!     at_bob.read_to_string(&mut text).await?;
//!     assert_eq!(text, "hello");
//!     Ok(())
//! }
//! ```
//!
//! ## Services
//!
//! ```
//! use socketio_p2p::{P2pClient, Relay, TopicEvent};
//!
//! #[tokio::main]
//! async fn main() -> socketio_p2p::Result<()> {
//!     let relay = Relay::bind("127.0.0.1:0").await?;
//!     // The server provides `math`; a client could too (`ServiceClient`), callers can't tell.
//!     let math = relay.server().as_service("math");
//!     math.provide_service("add", |call| {
//!         let (a, b): (i64, i64) = call.parse().unwrap_or_default();
//!         call.respond(a + b);
//!     })?;
//!     math.create_topic("results")?;
//!
//!     let caller = P2pClient::connect(&relay.url(), "caller").await?;
//!     let (tx, mut published) = tokio::sync::mpsc::unbounded_channel();
//!     caller
//!         .subscribe_topic("math", "results", move |event| {
//!             if let TopicEvent::Published(_) = &event {
//!                 tx.send(event.parse::<i64>().unwrap()).unwrap();
//!             }
//!         })
//!         .await?;
//!
//!     let sum: i64 = caller.request_service("math", "add", (2, 3)).await?;
//!     math.publish_topic("results", sum)?;
//!     assert_eq!(published.recv().await, Some(5));
//!     Ok(())
//! }
//! ```
//!
//! ## Features
//!
//! `cli` (on by default) builds the `socketio-p2p` command and its dependencies. A library user
//! turns it off: `socketio-p2p = { version = "0.1", default-features = false }`.

mod apis;
pub mod auth;
pub mod client;
pub mod cluster;
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

pub use client::{ClientOptions, ConnectionState, P2pClient, TokenRefresh, WeakP2pClient};
pub use cluster::ClusterOptions;
pub use error::{Error, ErrorCode, Result};
pub use message::{parse_args, Args, IntoArgs, ListenerId, PeerListeners, PeerMessage, Request};
pub use relay::{Relay, RelayOptions, TlsConfig};
pub use request::Reply;
pub use server::{DuplicateIdPolicy, P2pServer, ServerOptions};
pub use service::{
    HandlerId, ServiceClient, ServiceHandle, ServiceRequest, TopicEvent, TopicNames,
};
pub use stream::{IncomingStreams, P2pDuplex, StreamInfo, StreamOptions};

/// The README's examples, compiled and run as doctests so that they stay true.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
