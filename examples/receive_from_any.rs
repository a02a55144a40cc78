//! One target receives messages from any client with `on`, and learns who sent each one.
//!
//! Two source clients send readings to a "dashboard" client. The dashboard registered one
//! listener for the event, without naming any peer, and sees each sender's id in `msg.from`
//! (the relay vouches for it: a client cannot pretend to be another).
//!
//! Run with `cargo run --example receive_from_any`.

use socketio_p2p::{Error, P2pClient, Relay, Result};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::timeout;

/// The next value a listener passed on, waiting at most 3 s.
async fn next<T>(rx: &mut mpsc::UnboundedReceiver<T>, what: &str) -> Result<T> {
    let after = Duration::from_secs(3);
    match timeout(after, rx.recv()).await {
        Ok(Some(v)) => Ok(v),
        _ => Err(Error::Timeout {
            peer: None,
            event: what.to_string(),
            after,
        }),
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let relay = Relay::bind("127.0.0.1:0").await?;
    println!("relay listening on {}", relay.url());

    let dashboard = P2pClient::connect(&relay.url(), "dashboard").await?;
    let (seen_tx, mut seen_rx) = mpsc::unbounded_channel();
    dashboard.on("reading", move |msg| {
        let (what, value): (String, String) = msg.parse().unwrap_or_default();
        println!("[dashboard] from '{}': {what} = {value}", msg.from);
        let _ = seen_tx.send(msg.from);
    });
    println!("[dashboard] listening to 'reading' from any client");

    let kitchen = P2pClient::connect(&relay.url(), "sensor-kitchen").await?;
    let garage = P2pClient::connect(&relay.url(), "sensor-garage").await?;
    println!("'sensor-kitchen' and 'sensor-garage' connected");

    kitchen
        .emit_to("dashboard", "reading", ("temperature", "21.5 °C"))
        .await?;
    garage
        .emit_to("dashboard", "reading", ("temperature", "9.0 °C"))
        .await?;
    kitchen
        .emit_to("dashboard", "reading", ("humidity", "48 %"))
        .await?;
    garage
        .emit_to("dashboard", "reading", ("door", "open"))
        .await?;

    let mut senders = Vec::new();
    while senders.len() < 4 {
        senders.push(next(&mut seen_rx, "reading").await?);
    }
    senders.sort();
    senders.dedup();
    println!(
        "[dashboard] got 4 readings from {} clients: {senders:?}",
        senders.len()
    );

    kitchen.disconnect().await?;
    garage.disconnect().await?;
    dashboard.disconnect().await?;
    relay.shutdown().await;
    println!("done");
    Ok(())
}
