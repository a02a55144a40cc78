//! The byte budget of each connection's outgoing queue: a flooded client that reads nothing gets
//! its senders told "busy", holds no more than the budget on the relay, and is disconnected as a
//! slow consumer; a client that reads is never refused under the same load.

mod common;

use common::*;
use futures::FutureExt;
use rust_socketio::asynchronous::{Client as SioClient, ClientBuilder};
use rust_socketio::TransportType;
use serde_json::{json, Value};
use socketio_p2p::{Relay, RelayOptions, ServerOptions};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

const BUDGET: usize = 1 << 20;
const MESSAGE: usize = 256 << 10;
const COUNT: usize = 160;

/// The two tests measure throughput against each other's CPU use: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn budget_relay(budget: usize) -> Relay {
    relay_with(RelayOptions {
        server: ServerOptions {
            max_queued_bytes: budget,
            slow_consumer_deadline: Duration::from_secs(1),
            ..ServerOptions::default()
        },
        ..RelayOptions::default()
    })
    .await
}

/// A seed client `id` whose handler of `big` never returns: it stops reading its connection at
/// the first `big` event.
async fn paused_client(relay: &Relay, id: &str) -> SioClient {
    within(
        "paused client connects",
        ClientBuilder::new(format!("{}?clientId={id}", relay.url()))
            .transport_type(TransportType::Websocket)
            .reconnect(false)
            .on("big", |_, _| futures::future::pending::<()>().boxed())
            .connect(),
    )
    .await
    .expect("paused client connects")
}

/// Sends `COUNT` messages of `MESSAGE` bytes from `from` to `to` as `big` events.
async fn flood(from: &RawClient, from_id: &str, to: &str) {
    let data = "x".repeat(MESSAGE);
    for _ in 0..COUNT {
        from.emit(
            "P2P_EMIT",
            vec![json!({"targetClientId": to, "event": "big", "args": [from_id, data]})],
        )
        .await;
    }
}

/// Samples the relay's account of the bytes queued towards `id` until stopped; the largest seen.
fn sample_queued(relay: &Relay, id: &str) -> (Arc<AtomicU64>, tokio::task::JoinHandle<()>) {
    let max = Arc::new(AtomicU64::new(0));
    let (m, server, id) = (max.clone(), relay.server().clone(), id.to_string());
    let task = tokio::spawn(async move {
        while let Some(q) = server.queued_bytes(&id) {
            m.fetch_max(q, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    });
    (max, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_target_fills_its_budget_then_is_dropped() {
    let _serial = SERIAL.lock().await;
    let relay = budget_relay(BUDGET).await;
    let paused = paused_client(&relay, "slow").await;
    let mut sender = raw_client(&format!("{}?clientId=snd", relay.url())).await;
    eventually("both registered", || {
        relay.server().is_connected("slow") && relay.server().is_connected("snd")
    })
    .await;
    let (max, sampler) = sample_queued(&relay, "slow");

    flood(&sender, "snd", "slow").await;
    let busy = sender.next_error("a refused message").await;
    assert!(
        busy.contains("busy"),
        "sender told the target is busy: {busy}"
    );

    // The relay never held more than the budget and one message for the target.
    let held = max.load(Ordering::Relaxed);
    assert!(held > 0, "the relay accounted the queued bytes");
    assert!(
        held <= (BUDGET + 2 * MESSAGE) as u64,
        "queued {held} bytes, budget {BUDGET}"
    );

    // Full for longer than the 1 s deadline: disconnected, and its peer told so.
    let gone = tokio::time::Instant::now() + Duration::from_secs(15);
    while relay.server().is_connected("slow") {
        assert!(
            tokio::time::Instant::now() < gone,
            "the slow consumer is disconnected"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eventually("the sender is told the target left", || {
        sender.events.get().iter().any(|(e, a)| {
            e == "MULTI_API_TARGET_DISCONNECT" && a.first() == Some(&Value::from("slow"))
        })
    })
    .await;
    sampler.abort();
    let _ = paused.disconnect().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reading_target_is_never_busy() {
    let _serial = SERIAL.lock().await;
    // The default budget, and a reader that keeps up.
    let relay = budget_relay(ServerOptions::default().max_queued_bytes).await;
    let reader = raw_client(&format!("{}?clientId=fast", relay.url())).await;
    let mut sender = raw_client(&format!("{}?clientId=snd", relay.url())).await;
    eventually("both registered", || {
        relay.server().is_connected("fast") && relay.server().is_connected("snd")
    })
    .await;

    // Paced in rounds the reader has taken in, so it keeps up whatever the machine's load:
    // ten times the budget passes, which only works if written bytes are given back.
    let data = "x".repeat(MESSAGE);
    let rounds = 10 * ServerOptions::default().max_queued_bytes / (4 * MESSAGE);
    for round in 1..=rounds {
        for _ in 0..4 {
            sender
                .emit(
                    "P2P_EMIT",
                    vec![json!({"targetClientId": "fast", "event": "big", "args": ["snd", data]})],
                )
                .await;
        }
        let want = 4 * round;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while reader.events.len() < want {
            assert!(
                tokio::time::Instant::now() < deadline,
                "round {round}: {want} messages arrive, got {}; sender errors: {:?}",
                reader.events.len(),
                sender.errors.try_recv(),
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    assert!(sender.errors.try_recv().is_err(), "no error for the sender");
    assert!(relay.server().is_connected("fast"));
    eventually("the queue drains", || {
        relay.server().queued_bytes("fast") == Some(0)
    })
    .await;
}

/// A sender that reads nothing of its own connection while it floods a paused target: the busy
/// notices it is owed cannot all be queued, so it is disconnected as a slow consumer rather than
/// losing them unseen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sender_that_reads_nothing_is_dropped_not_left_unaware() {
    let _serial = SERIAL.lock().await;
    let relay = relay_with(RelayOptions {
        server: ServerOptions {
            max_queued_bytes: 64 << 10,
            slow_consumer_deadline: Duration::from_secs(60),
            ..ServerOptions::default()
        },
        ..RelayOptions::default()
    })
    .await;
    let paused = paused_client(&relay, "slow").await;
    // Its handler of the first notice never returns, so it reads nothing more.
    let deaf = within(
        "deaf sender connects",
        ClientBuilder::new(format!("{}?clientId=deaf", relay.url()))
            .transport_type(TransportType::Websocket)
            .reconnect(false)
            .on("SERVER_ERROR", |_, _| {
                futures::future::pending::<()>().boxed()
            })
            .connect(),
    )
    .await
    .expect("deaf sender connects");
    eventually("both registered", || {
        relay.server().is_connected("slow") && relay.server().is_connected("deaf")
    })
    .await;

    let data = "y".repeat(1024);
    let sending = tokio::spawn({
        let deaf = deaf.clone();
        async move {
            for _ in 0..40_000 {
                let msg = json!({"targetClientId": "slow", "event": "big", "args": ["deaf", data]});
                if deaf
                    .emit("P2P_EMIT", rust_socketio::Payload::Text(vec![msg]))
                    .await
                    .is_err()
                {
                    break;
                }
            }
        }
    });
    let gone = tokio::time::Instant::now() + Duration::from_secs(30);
    while relay.server().is_connected("deaf") {
        assert!(
            tokio::time::Instant::now() < gone,
            "the sender that reads nothing is disconnected"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The paused target's deadline is long: it is still there, its queue within budget.
    assert!(relay.server().is_connected("slow"));
    let queued = relay.server().queued_bytes("slow").unwrap();
    assert!(queued <= (64 << 10) + 4096, "queued {queued}");
    let _ = within("sender stops", sending).await;
    let _ = paused.disconnect().await;
}
