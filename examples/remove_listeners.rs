//! Adding and removing listeners: `from(peer).on` / `once` / `off`, `on` / `off`, and
//! what happens to a peer's listeners when that peer disconnects.
//!
//! Run with `cargo run --example remove_listeners`.

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

/// Sends `count` pings, then waits for an answer to a request sent after them: messages from one
/// client arrive in order, so by then every ping has reached the listener's handlers.
async fn pings(from: &P2pClient, count: u32) -> Result<()> {
    for n in 1..=count {
        from.emit_to("listener", "ping", n).await?;
    }
    from.request::<()>("listener", "sync", ()).await?;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let relay = Relay::bind("127.0.0.1:0").await?;
    let listener = P2pClient::connect(&relay.url(), "listener").await?;
    let alice = P2pClient::connect(&relay.url(), "alice").await?;
    let bob = P2pClient::connect(&relay.url(), "bob").await?;
    println!(
        "relay on {}; 'listener', 'alice' and 'bob' connected",
        relay.url()
    );

    listener.on("sync", |msg| {
        if let Some(reply) = msg.reply {
            reply.send(());
        }
    });
    listener.from("alice").on("ping", |m| {
        println!("  from(alice).on   got ping {}", m.args[0])
    });
    listener.from("alice").once("ping", |m| {
        println!("  from(alice).once got ping {}", m.args[0])
    });
    listener.on("ping", |m| {
        println!("  on               got ping {} from {}", m.args[0], m.from)
    });

    println!("1. alice sends 2 pings (from(alice).on, from(alice).once and on are registered):");
    pings(&alice, 2).await?;

    println!("2. listener calls from(\"alice\").off(\"ping\"); alice sends 1 ping:");
    listener.from("alice").off("ping");
    pings(&alice, 1).await?;

    println!("3. listener calls off(\"ping\"); alice sends 1 ping:");
    listener.off("ping");
    pings(&alice, 1).await?;
    println!("  (nothing: no listener is left for 'ping')");

    println!("4. listener listens to bob only; bob sends 1 ping:");
    listener.from("bob").on("ping", |m| {
        println!("  from(bob).on     got ping {}", m.args[0])
    });
    pings(&bob, 1).await?;
    println!(
        "  listeners for bob: {}",
        listener.from("bob").listener_count()
    );

    println!("5. bob disconnects:");
    let (gone_tx, mut gone_rx) = mpsc::unbounded_channel();
    listener.on_p2p_target_disconnect(move |peer| {
        println!("  listener is told '{peer}' disconnected");
        let _ = gone_tx.send(peer);
    });
    bob.disconnect().await?;
    next(&mut gone_rx, "disconnect notice").await?;
    println!(
        "  listeners for bob: {} (they went with him)",
        listener.from("bob").listener_count()
    );

    alice.disconnect().await?;
    listener.disconnect().await?;
    relay.shutdown().await;
    println!("done");
    Ok(())
}
