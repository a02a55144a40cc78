//! The byte budget of each connection's outgoing queue: a flooded client that reads nothing gets
//! its senders told "busy", holds no more than the budget on the relay, and is disconnected as a
//! slow consumer; a client that reads is never refused under the same load. Room emits and topic
//! publications count against each member's budget like direct sends.

mod common;

use common::*;
use futures::FutureExt;
use rust_socketio::asynchronous::{Client as SioClient, ClientBuilder};
use rust_socketio::TransportType;
use serde_json::{json, Value};
use socketio_p2p::{Error, Relay, RelayOptions, ServerOptions};
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

/// A seed client `id` in `rooms` (joined before it pauses), whose handler of any of `events`
/// never returns: it stops reading its connection at the first of them.
async fn paused_member(relay: &Relay, id: &str, rooms: &[&str], events: &[&str]) -> SioClient {
    let mut builder = ClientBuilder::new(format!("{}?clientId={id}", relay.url()))
        .transport_type(TransportType::Websocket)
        .reconnect(false);
    for e in events {
        builder = builder.on(*e, |_, _| futures::future::pending::<()>().boxed());
    }
    let c = within("paused member connects", builder.connect())
        .await
        .expect("paused member connects");
    // An event sent before the relay has the connection would be dropped with it.
    eventually("the paused member is registered", || {
        relay.server().is_connected(id)
    })
    .await;
    for room in rooms {
        match room
            .strip_prefix("service:")
            .and_then(|r| r.split_once(":topic:"))
        {
            // A topic room is joined only through its service's SUBSCRIBE_TOPIC.
            Some((service, topic)) => c
                .emit_with_ack(
                    "P2P_EMIT_ACKNOWLEDGE",
                    json!({"targetClientId": service, "event": "SUBSCRIBE_TOPIC",
                           "args": [id, id, topic]}),
                    Duration::from_secs(5),
                    |_, _| futures::future::ready(()).boxed(),
                )
                .await
                .expect("SUBSCRIBE_TOPIC is sent"),
            None => c
                .emit("JOIN_ROOM", json!(room))
                .await
                .expect("JOIN_ROOM is sent"),
        }
        let (server, id, room) = (relay.server().clone(), id.to_string(), room.to_string());
        eventually("the paused member is in the room", move || {
            server
                .socket_of(&id)
                .is_some_and(|s| s.rooms().iter().any(|r| *r == *room))
        })
        .await;
    }
    c
}

/// Room emits go through each member's budget: a paused member holds no more than the budget on
/// the relay, its sender is told it is busy, a reading member of the same room gets every event in
/// order, and the paused member is disconnected as a slow consumer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_emits_to_a_paused_member_stay_within_its_budget() {
    let _serial = SERIAL.lock().await;
    let relay = budget_relay(BUDGET).await;
    let paused = paused_member(&relay, "slow", &["hall"], &["big"]).await;
    let reader = client(&relay, "fast").await;
    let got = Log::new();
    let g = got.clone();
    reader.on_raw("big", move |args| {
        g.push(args[0].as_u64().unwrap_or(u64::MAX))
    });
    reader.join_room("hall").await.unwrap();
    let mut sender = raw_client(&format!("{}?clientId=snd", relay.url())).await;
    eventually("the sender is registered", || {
        relay.server().is_connected("snd")
    })
    .await;
    let (max, sampler) = sample_queued(&relay, "slow");

    // Paced in rounds the reader has taken in (two events, half its budget), so that the reader
    // keeps up whatever the machine's load, while the paused member takes nothing.
    let data = "x".repeat(MESSAGE);
    for round in 0..COUNT / 2 {
        for i in 2 * round..2 * round + 2 {
            sender
                .emit(
                    "EMIT_ROOM",
                    vec![json!("hall"), json!("big"), json!(i), json!(data)],
                )
                .await;
        }
        let want = 2 * round + 2;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while got.len() < want {
            assert!(
                tokio::time::Instant::now() < deadline,
                "round {round}: the reader gets {want} room events, got {}",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    assert_eq!(
        got.get(),
        (0..COUNT as u64).collect::<Vec<_>>(),
        "the reading member gets every room event, in order"
    );

    // The sender was told the paused member is busy, and only that one.
    let busy = sender.next_error("a refused room event").await;
    for needle in ["busy", "room 'hall'", "'slow'", "the other 1 got it"] {
        assert!(busy.contains(needle), "{busy:?} should mention {needle:?}");
    }
    while let Ok(e) = sender.errors.try_recv() {
        assert!(!e.contains("'fast'"), "the reader is never busy: {e}");
    }

    // The relay never held more than the budget and one event for the paused member.
    let held = max.load(Ordering::Relaxed);
    assert!(
        held > 0,
        "the relay accounted the room events queued for it"
    );
    assert!(
        held <= (BUDGET + 2 * MESSAGE) as u64,
        "queued {held} bytes, budget {BUDGET}"
    );

    // Full for longer than the 1 s deadline: disconnected.
    let gone = tokio::time::Instant::now() + Duration::from_secs(15);
    while relay.server().is_connected("slow") {
        assert!(
            tokio::time::Instant::now() < gone,
            "the paused member is disconnected as a slow consumer"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(relay.server().is_connected("fast"));
    sampler.abort();
    let _ = paused.disconnect().await;
}

/// An acknowledged or extension sender of a room emit, and the server publishing to a topic, hear
/// which members did not get it; the others did.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_senders_are_told_which_members_were_busy() {
    let _serial = SERIAL.lock().await;
    let relay = relay_with(RelayOptions {
        server: ServerOptions {
            max_queued_bytes: BUDGET,
            slow_consumer_deadline: Duration::from_secs(120),
            ..ServerOptions::default()
        },
        ..RelayOptions::default()
    })
    .await;
    let jobs = relay.server().as_service("jobs");
    jobs.create_topic("done").unwrap();
    let topic_room = "service:jobs:topic:done";
    let topic_event = format!("{topic_room}-DEFAULT_TOPIC_EVENT");
    let paused = paused_member(
        &relay,
        "slow",
        &["hall", topic_room],
        &["big", &topic_event],
    )
    .await;
    let reader = client(&relay, "fast").await;
    let got = Log::new();
    let g = got.clone();
    reader.on_raw("big", move |args| {
        g.push(args[0].as_u64().unwrap_or(u64::MAX))
    });
    reader.join_room("hall").await.unwrap();
    let sender = client(&relay, "snd").await;

    // One event at a time, each taken in by the reader, until the paused member's queue is full.
    let data = "x".repeat(MESSAGE);
    let mut refused = None;
    for i in 0..400u64 {
        let sent = sender.emit_room("hall", "big", (i, data.as_str())).await;
        got.wait_len("the reader gets the room event", i as usize + 1)
            .await;
        if let Err(e) = sent {
            refused = Some(e);
            break;
        }
    }
    let e = refused.expect("the paused member's queue fills");
    let Error::Overloaded(text) = &e else {
        panic!("expected Error::Overloaded, got {e:?}")
    };
    for needle in [
        "1 of 2 members",
        "room 'hall'",
        "'big'",
        "'slow'",
        "the other 1 got it",
    ] {
        assert!(text.contains(needle), "{text:?} should mention {needle:?}");
    }
    assert_eq!(e.code(), socketio_p2p::ErrorCode::Busy);
    let n = got.len() as u64;
    assert_eq!(
        got.get(),
        (0..n).collect::<Vec<_>>(),
        "every event, in order"
    );

    // A seed sender asking for an acknowledgement gets the same refusal as its answer (an event as
    // big: a small one may still fit in the paused member's budget).
    let seed = raw_client(&format!("{}?clientId=seed", relay.url())).await;
    eventually("the seed sender is registered", || {
        relay.server().is_connected("seed")
    })
    .await;
    let ack = seed
        .emit_with_ack(
            "EMIT_ROOM",
            vec![json!("hall"), json!("big"), json!(n), json!(data)],
        )
        .await;
    let text = ack[0].as_str().unwrap_or_default();
    assert!(text.contains("busy") && text.contains("'slow'"), "{ack:?}");
    got.wait_len(
        "the reader gets the acknowledged room event",
        n as usize + 1,
    )
    .await;

    // The server's own topic publication to the paused subscriber.
    let e = jobs.publish_topic("done", (data.as_str(),)).unwrap_err();
    assert!(
        matches!(&e, Error::Overloaded(t) if t.contains("'slow'") && t.contains(topic_room)),
        "{e:?}"
    );
    assert!(relay.server().is_connected("slow"), "a long deadline");
    let _ = paused.disconnect().await;
}

/// The relay's account of a client's queue never keeps bytes that were written: a reading client
/// that got a few answers still takes one event bigger than its whole budget when nothing else is
/// queued for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn written_answers_leave_nothing_pending() {
    let _serial = SERIAL.lock().await;
    let relay = relay_with(RelayOptions {
        server: ServerOptions {
            max_queued_bytes: 64 << 10,
            ..ServerOptions::default()
        },
        ..RelayOptions::default()
    })
    .await;
    let reader = raw_client(&format!("{}?clientId=reader", relay.url())).await;
    let mut sender = raw_client(&format!("{}?clientId=snd", relay.url())).await;
    eventually("both registered", || {
        relay.server().is_connected("reader") && relay.server().is_connected("snd")
    })
    .await;
    for _ in 0..3 {
        reader.emit_with_ack("LIST_CLIENTS", vec![]).await;
        reader.emit_with_ack("JOIN_ROOM", vec![json!("r")]).await;
    }
    eventually("the answers are written", || {
        relay.server().queued_bytes("reader") == Some(0)
    })
    .await;
    let data = "x".repeat(MESSAGE);
    sender
        .emit(
            "P2P_EMIT",
            vec![json!({"targetClientId": "reader", "event": "big", "args": ["snd", data]})],
        )
        .await;
    reader
        .events
        .wait_len("the event bigger than the budget arrives", 1)
        .await;
    assert!(sender.errors.try_recv().is_err(), "the reader was not busy");
}
