//! Random and mutated input for every decoder of network input (see `tests/fuzz_support`), a
//! few seconds' worth; `cargo bench --bench fuzz` runs millions. And the same at the wire: a raw
//! Socket.IO client throws random events at a live relay, which keeps relaying for others.

mod common;
mod fuzz_support;

use rust_socketio::Payload;
use serde_json::Value;
use std::time::{Duration, Instant};

/// Decoders do not panic on any input (each input under `catch_unwind`; a failure names its
/// seed: `fuzz_support::one(seed)` reproduces it).
#[test]
fn decoders_survive_random_input() {
    // A fresh start each run widens the search; FUZZ_SEED repeats one.
    let start: u64 = std::env::var("FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
                & 0xFFFF_FFFF_FFFF
        });
    let budget = Duration::from_secs(3);
    let began = Instant::now();
    let mut done = 0u64;
    let mut failed = Vec::new();
    while began.elapsed() < budget {
        failed.extend(fuzz_support::run(start + done, 1000));
        done += 1000;
    }
    eprintln!("{done} inputs from seed {start}, {} panics", failed.len());
    assert!(failed.is_empty(), "panicking seeds: {failed:?}");
}

/// A few thousand random events (the relay's own names included, random JSON, wrong types,
/// binary) from a raw client; afterwards two fresh clients still exchange a message and a reply.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_survives_random_events() {
    let relay = common::relay().await;
    // One raw client with a client id (it may be disconnected by what it sends; then a new one).
    let url = format!("{}?clientId=fuzzer", relay.url());
    let mut raw = common::raw_client(&url).await;
    // Peers the random payloads name: their client side decodes whatever is relayed to them.
    let alice = common::client(&relay, "alice").await;
    let bob = common::client(&relay, "bob").await;
    bob.on("ping", |m| {
        if let Some(r) = m.reply {
            r.send(("pong",));
        }
    });
    let mut rng = fuzz_support::Rng::new(0x5EED_F022);
    let mut sent = 0;
    let mut reconnects = 0;
    for i in 0..3000 {
        if *raw.closed.borrow() {
            raw = common::raw_client(&url).await;
            reconnects += 1;
        }
        let name = if rng.chance(4) {
            fuzz_support::string(&mut rng)
        } else {
            rng.pick(fuzz_support::WORDS).to_string()
        };
        // rust_socketio writes event names into the packet unescaped (a quote or a control
        // character would make the packet malformed, and the transport unusable): keep them
        // valid JSON text. Payloads are escaped properly and stay random.
        let name: String = name
            .chars()
            .map(|c| {
                if c == '"' || c == '\\' || c < ' ' {
                    '_'
                } else {
                    c
                }
            })
            .collect();
        let payload = match rng.below(4) {
            0 => Payload::Binary(fuzz_support::bytes(&mut rng, 200).into()),
            _ => {
                let mut args: Vec<Value> = fuzz_support::values(&mut rng);
                if args.is_empty() {
                    args.push(Value::Null);
                }
                Payload::Text(args)
            }
        };
        // Should the connection fail anyway, a new one carries on.
        match raw.sio.emit(name, payload).await {
            Ok(()) => sent += 1,
            Err(_) => {
                let _ = raw.sio.disconnect().await;
                raw = common::raw_client(&url).await;
                reconnects += 1;
            }
        }
        if i % 250 == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    eprintln!("{sent} random events sent ({reconnects} reconnects)");
    assert!(sent >= 2000, "only {sent} events went out");
    // Everything sent was handled once an acknowledged event comes back on the same socket.
    if !*raw.closed.borrow() {
        let _ = raw.emit_with_ack("LIST_CLIENTS", vec![]).await;
    }
    let _ = raw.sio.disconnect().await;
    let pong: String = common::within("bob still answers", alice.request("bob", "ping", ()))
        .await
        .expect("bob answers after the storm");
    assert_eq!(pong, "pong");
    common::assert_relay_works(&relay, "control-a", "control-b").await;
}
