//! The client's APIs, plugged into its connection.
//!
//! The connection ([`crate::client`]) knows no API, and each API knows only the connection: this
//! is the one place that names both. It builds a [`P2pClient`] with the receive side of every
//! API on its demultiplexer, in the order they see events: streams first (they take the seed's
//! stream events and stream requests), then the listener registry, which takes everything else.

use crate::client::{Apis, ClientOptions, P2pClient};
use crate::error::Result;

impl P2pClient {
    /// Connects to the relay at `url` (e.g. `http://127.0.0.1:9000`) as `client_id`, with default
    /// options. Fails if the server refuses the id (see [`Error::Refused`](crate::Error::Refused)).
    pub async fn connect(url: &str, client_id: &str) -> Result<P2pClient> {
        P2pClient::connect_with(url, client_id, ClientOptions::default()).await
    }

    /// Connects with the given options.
    pub async fn connect_with(
        url: &str,
        client_id: &str,
        opts: ClientOptions,
    ) -> Result<P2pClient> {
        let apis = Apis::default()
            .with(crate::stream::client::Streams::default())
            .with(crate::message::client::Listeners::default());
        P2pClient::open(url, client_id, opts, apis).await
    }
}
