//! Seed-era JavaScript clients (socket.io-client 2.x speaking the original plugin's protocol)
//! against the Rust relay, and with Rust clients.

mod common;
use common::*;
use serde_json::json;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn javascript_clients_talk_through_the_rust_relay() {
    let relay = relay().await;
    let url = relay.url();
    let (status, lines) = run_node("js-js.js", &[&url], Duration::from_secs(60), |l| {
        println!("js-js: {l}")
    })
    .await;
    let failed: Vec<_> = lines.iter().filter(|l| l.starts_with("FAIL")).collect();
    assert!(failed.is_empty(), "failed checks: {failed:?}");
    assert!(status.success(), "js-js.js exited with {status}");
    assert!(lines.iter().any(|l| l == "all checks passed"));
    assert!(lines.iter().filter(|l| l.starts_with("ok ")).count() >= 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_and_javascript_exchange_messages_and_replies() {
    let relay = relay().await;
    let rust = client(&relay, "rust-peer").await;
    let hellos = Arc::new(Mutex::new(Vec::new()));
    let added = Arc::new(Mutex::new(Vec::new()));
    {
        let hellos = hellos.clone();
        rust.on("hello", move |m| {
            hellos.lock().unwrap().push((m.from, m.args))
        });
        let added = added.clone();
        rust.on_add_p2p_target(move |id| added.lock().unwrap().push(id));
        rust.on("ask", |m| {
            let n: i64 = m.arg(0).unwrap_or(0);
            if let Some(r) = m.reply {
                r.send(n + 1);
            }
        });
    }
    let node = node_until_ready(
        "message-interop.js",
        vec![relay.url()],
        Duration::from_secs(40),
        "the JavaScript peer is ready",
    )
    .await;
    // What the JavaScript peer did before READY reached the Rust peer.
    assert_eq!(added.lock().unwrap().clone(), vec!["js-peer".to_string()]);
    assert_eq!(
        hellos.lock().unwrap().clone(),
        vec![("js-peer".to_string(), vec![json!("from js"), json!(42)])]
    );
    // Rust -> JavaScript: a message, then a request answered by a Socket.IO acknowledgement.
    finish_message_interop(&rust, node).await;
}
