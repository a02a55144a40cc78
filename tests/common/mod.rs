//! Shared set-up of the integration tests: a real relay on a loopback port and real clients.
#![allow(dead_code)]

use socketio_p2p::{ClientOptions, P2pClient, Relay, RelayOptions};
use std::future::Future;
use std::time::Duration;

/// A relay on an ephemeral loopback port.
pub async fn relay() -> Relay {
    relay_with(RelayOptions::default()).await
}

pub async fn relay_with(opts: RelayOptions) -> Relay {
    Relay::bind_with("127.0.0.1:0", opts).await.expect("relay binds a loopback port")
}

/// A client with a short timeout, so that a test failing on a wait fails fast.
pub async fn client(relay: &Relay, id: &str) -> P2pClient {
    let opts = ClientOptions {
        timeout: Duration::from_secs(3),
        ..ClientOptions::default()
    };
    P2pClient::connect_with(&relay.url(), id, opts)
        .await
        .unwrap_or_else(|e| panic!("client '{id}' connects: {e}"))
}

/// Waits until `cond` holds, polling, at most 5 s.
pub async fn eventually<F: Fn() -> bool>(what: &str, cond: F) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !cond() {
        if tokio::time::Instant::now() > deadline {
            panic!("timed out waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Awaits a future with a 5 s limit.
pub async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(5), f)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}
