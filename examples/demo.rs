//! A small restaurant on one relay: a kitchen and two waiters, all in one process.
//!
//! Shows add-target and the disconnect notice, a room announcement, requests with answers
//! (typed `request`, raw `request::<Vec<Value>>`, an error answer, an unknown target, a timeout of
//! its own) and plain messages. Run with `cargo run --example demo`.

use serde_json::Value;
use socketio_p2p::{Error, P2pClient, Relay, Result};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};
use tokio::time::timeout;

/// The next event a listener passed on, waiting at most 3 s.
async fn next<T>(rx: &mut UnboundedReceiver<T>, what: &str) -> Result<T> {
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
    let kitchen = P2pClient::connect(&relay.url(), "kitchen").await?;
    let waiters = [
        P2pClient::connect(&relay.url(), "waiter-1").await?,
        P2pClient::connect(&relay.url(), "waiter-2").await?,
    ];

    // The kitchen: greets waiters, notices when they leave, answers "menu" and "order".
    let (notice_tx, mut notices) = unbounded_channel();
    let tx = notice_tx.clone();
    kitchen.on_add_p2p_target(move |w| {
        println!("[kitchen]  {w} started a shift");
        let _ = tx.send(());
    });
    kitchen.on_p2p_target_disconnect(move |w| {
        println!("[kitchen]  {w} went home");
        let _ = notice_tx.send(());
    });
    kitchen.on("menu", |m| {
        if let Some(reply) = m.reply {
            reply.send(vec!["pasta", "salad", "soup"]); // one argument: a list
        }
    });
    let (cook_tx, mut to_cook) = unbounded_channel();
    let tickets = AtomicU32::new(0);
    kitchen.on("order", move |m| {
        let (table, dish): (u32, String) = m.parse().unwrap_or_default();
        println!("[kitchen]  order from {}: {dish} for table {table}", m.from);
        let Some(reply) = m.reply else { return };
        if dish == "soup" {
            reply.error("sorry, no soup left today");
            return;
        }
        let ticket = tickets.fetch_add(1, Ordering::Relaxed) + 1;
        reply.send((ticket, 12));
        let _ = cook_tx.send((m.from, ticket, dish));
    });

    // The waiters: hear room announcements and "ready" calls from the kitchen.
    let (heard_tx, mut heard) = unbounded_channel();
    for w in &waiters {
        let (me, tx) = (w.id().to_string(), heard_tx.clone());
        // Room emits carry no sender: they reach raw listeners.
        w.on_raw("special", move |args| {
            println!("[{me}] announcement: today's special is {}", args[0]);
            let _ = tx.send(());
        });
        let (me, tx) = (w.id().to_string(), heard_tx.clone());
        w.from("kitchen").on("ready", move |m| {
            let (ticket, dish): (u32, String) = m.parse().unwrap_or_default();
            println!("[{me}] ticket {ticket} is ready: {dish}, to the table!");
            let _ = tx.send(());
        });
    }

    println!("-- shift starts: waiters add the kitchen as a target");
    for w in &waiters {
        w.add_p2p_target("kitchen").await?;
        next(&mut notices, "add-target notice").await?;
    }

    println!("-- everyone joins the room 'staff'; the kitchen announces the special");
    for c in [&kitchen, &waiters[0], &waiters[1]] {
        c.join_room("staff").await?;
    }
    kitchen
        .emit_room("staff", "special", ("truffle risotto",))
        .await?;
    next(&mut heard, "announcement").await?;
    next(&mut heard, "announcement").await?;

    println!("-- waiter-2 asks for the menu (request::<Vec<Value>>: the answer's raw arguments)");
    let menu: Vec<Value> = waiters[1].request("kitchen", "menu", ()).await?;
    println!("[waiter-2] menu: {}", menu[0]);
    let dishes: Vec<String> = waiters[1]
        .request("kitchen", "menu", ())
        .timeout(Duration::from_millis(500))
        .await?;
    println!("[waiter-2] the same as a typed list, asked with a 500 ms timeout: {dishes:?}");

    println!("-- orders (request::<(u32, u32)>: the answer as a typed tuple)");
    let (ticket, minutes) = waiters[0]
        .request::<(u32, u32)>("kitchen", "order", (4, "pasta"))
        .await?;
    println!("[waiter-1] ticket {ticket}, ready in about {minutes} minutes");
    match waiters[1]
        .request::<(u32, u32)>("kitchen", "order", (7, "soup"))
        .await
    {
        Err(Error::Remote { message: why, .. }) => {
            println!("[waiter-2] the kitchen said no: {why}")
        }
        other => println!("[waiter-2] unexpected: {other:?}"),
    }
    match waiters[1].request::<Value>("waiter-3", "help", ()).await {
        Err(e @ Error::UnknownTarget(_)) => println!("[waiter-2] asking waiter-3 failed: {e}"),
        other => println!("[waiter-2] unexpected: {other:?}"),
    }

    println!("-- the kitchen cooks and calls the waiter (emit_to: no reply expected)");
    let (waiter, ticket, dish) = next(&mut to_cook, "order to cook").await?;
    kitchen.emit_to(&waiter, "ready", (ticket, dish)).await?;
    next(&mut heard, "ready call").await?;

    println!("-- waiter-2's shift ends");
    waiters[1].disconnect().await?;
    next(&mut notices, "disconnect notice").await?;

    waiters[0].disconnect().await?;
    kitchen.disconnect().await?;
    relay.shutdown().await;
    println!("-- closed for the day");
    Ok(())
}
