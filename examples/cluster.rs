//! Two clients on two relays of one cluster: alice on the first relay, bob on the second, and a
//! message and a request between them.
//!
//! Start a Redis and two relays on it first (see README.md, "Running several relays"), then:
//! `cargo run --example cluster -- http://127.0.0.1:9000 http://127.0.0.1:9001`.

use socketio_p2p::{P2pClient, Result};
use std::time::Duration;

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [first, second] = args.as_slice() else {
        eprintln!("usage: cluster <URL of relay 1> <URL of relay 2>");
        std::process::exit(2);
    };
    let alice = P2pClient::connect(first, "alice").await?;
    let bob = P2pClient::connect(second, "bob").await?;

    let (tx, mut greetings) = tokio::sync::mpsc::unbounded_channel();
    bob.on("greet", move |msg| {
        let text: String = msg.arg(0).unwrap_or_default();
        let _ = tx.send((msg.from, text));
    });
    bob.on("add", |msg| {
        let (a, b): (i64, i64) = msg.parse().unwrap_or_default();
        msg.respond(a + b);
    });

    println!("clients of the cluster: {:?}", alice.list_clients().await?);
    alice
        .emit_to("bob", "greet", "hello from the other relay")
        .await?;
    let got = tokio::time::timeout(Duration::from_secs(5), greetings.recv()).await;
    match got {
        Ok(Some((from, text))) => println!("bob (on {second}) got from {from}: {text}"),
        _ => println!("bob got no greeting within 5 s"),
    }
    let sum: i64 = alice.request("bob", "add", (2, 3)).await?;
    println!("alice (on {first}) asked bob to add 2 and 3: {sum}");
    alice.disconnect().await?;
    bob.disconnect().await?;
    Ok(())
}
