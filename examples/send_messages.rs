//! A source client sends messages to a target client through an embedded relay.
//!
//! The source knows the target's id; the target does not know who will talk to it. When the
//! source adds the target (`add_p2p_target`), the target learns the source's id through
//! `on_add_p2p_target`, listens to that peer only, and sends a message back.
//!
//! Run with `cargo run --example send_messages`.

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

    let target = P2pClient::connect(&relay.url(), "target").await?;
    let source = P2pClient::connect(&relay.url(), "source").await?;
    println!("'target' and 'source' connected");

    // Handlers are plain closures; they hand what they learn to this task through channels.
    let (added_tx, mut added_rx) = mpsc::unbounded_channel();
    target.on_add_p2p_target(move |peer| {
        println!("[target] '{peer}' added me as its target");
        let _ = added_tx.send(peer);
    });
    let (got_tx, mut got_rx) = mpsc::unbounded_channel();
    source.from("target").on("answer", move |msg| {
        let text: String = msg.arg(0).unwrap_or_default();
        println!("[source] answer from '{}': {text}", msg.from);
        let _ = got_tx.send(());
    });

    source.add_p2p_target("target").await?;
    println!("[source] 'target' accepted me as a peer");

    // The target now knows the source's id and listens to that peer only.
    let peer = next(&mut added_rx, "add-target notice").await?;
    let (done_tx, mut done_rx) = mpsc::unbounded_channel();
    target.from(&peer).on("note", move |msg| {
        let (n, text): (u32, String) = msg.parse().unwrap_or_default();
        println!("[target] message #{n} from '{}': {text}", msg.from);
        let _ = done_tx.send(n);
    });

    for (n, text) in [(1, "hello"), (2, "how are you?"), (3, "bye")] {
        println!("[source] sending message #{n}: {text}");
        source.emit_to("target", "note", (n, text)).await?;
    }
    for _ in 0..3 {
        next(&mut done_rx, "note").await?;
    }

    println!("[target] answering '{peer}'");
    target
        .emit_to(&peer, "answer", "got your 3 messages, thanks")
        .await?;
    next(&mut got_rx, "answer").await?;

    source.disconnect().await?;
    target.disconnect().await?;
    relay.shutdown().await;
    println!("done");
    Ok(())
}
