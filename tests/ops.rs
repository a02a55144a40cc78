//! The relay as an operator sees it: `GET /healthz` and `GET /metrics` on its HTTP port, read over
//! plain HTTP/1.1, with the figures moving as the test's own traffic says they should.

mod common;

use common::*;
use serde_json::json;
use socketio_p2p::{Relay, RelayOptions, Reply, ServerOptions, StreamOptions};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// An HTTP answer: status code, headers (names in lower case) and body.
struct Answer {
    status: u16,
    headers: HashMap<String, String>,
    body: String,
}

/// `GET path` on the relay's port, one request on its own connection.
async fn get(relay: &Relay, path: &str) -> Answer {
    within(&format!("GET {path}"), async {
        let mut tcp = tokio::net::TcpStream::connect(relay.local_addr())
            .await
            .expect("the relay's port accepts");
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            relay.local_addr()
        );
        tcp.write_all(request.as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        tcp.read_to_end(&mut raw).await.unwrap();
        let text = String::from_utf8(raw).expect("a text answer");
        let (head, body) = text.split_once("\r\n\r\n").expect("a head and a body");
        let mut lines = head.lines();
        let status = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|s| s.parse().ok())
            .expect("a status line");
        let headers: HashMap<String, String> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        assert!(
            !headers
                .get("transfer-encoding")
                .is_some_and(|t| t.contains("chunked")),
            "a body of known length"
        );
        Answer {
            status,
            headers,
            body: body.to_string(),
        }
    })
    .await
}

/// The relay's metrics, by name with labels (`name{label="value"}`).
struct Scrape(HashMap<String, f64>);

impl Scrape {
    /// A value the relay always reports.
    fn get(&self, key: &str) -> f64 {
        *self
            .0
            .get(key)
            .unwrap_or_else(|| panic!("/metrics has no {key}: {:?}", self.0.keys()))
    }

    /// How much `key` grew since `before`.
    fn delta(&self, before: &Scrape, key: &str) -> f64 {
        self.get(key) - before.get(key)
    }
}

async fn scrape(relay: &Relay) -> Scrape {
    let answer = get(relay, "/metrics").await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert!(
        answer
            .headers
            .get("content-type")
            .is_some_and(|t| t.starts_with("application/openmetrics-text")),
        "{:?}",
        answer.headers
    );
    assert!(answer.body.ends_with("# EOF\n"), "{}", answer.body);
    let values = answer
        .body
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (key, value) = l.rsplit_once(' ').expect("name value");
            let value = value
                .parse::<f64>()
                .unwrap_or_else(|_| panic!("a number in {l:?}"));
            (key.to_string(), value)
        })
        .collect();
    Scrape(values)
}

const CLIENTS: &str = "socketio_p2p_connected_clients";
const ROOMS: &str = "socketio_p2p_rooms";
const STREAMS: &str = "socketio_p2p_live_streams";
const MESSAGES: &str = "socketio_p2p_relayed_messages_total";
const REQUESTS: &str = "socketio_p2p_relayed_requests_total";
const STREAM_BYTES: &str = "socketio_p2p_relayed_stream_bytes_total";
const EVENT_BYTES: &str = "socketio_p2p_received_event_bytes_total";
const REASONS: [&str; 5] = ["auth", "permission", "limit", "busy", "slow_consumer"];

fn refusals(reason: &str) -> String {
    format!("socketio_p2p_refusals_total{{reason=\"{reason}\"}}")
}

#[tokio::test]
async fn healthz_answers_ok() {
    let relay = relay().await;
    let answer = get(&relay, "/healthz").await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.body.trim(), "ok");
    // Socket.IO still answers on the same port, and other paths are not found.
    assert_eq!(get(&relay, "/nothing-here").await.status, 404);
    assert_relay_works(&relay, "a", "b").await;
}

/// Messages, requests, rooms and a stream: each figure moves by what the traffic was, and nothing
/// is counted as refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_follow_the_traffic() {
    const N: usize = 30;
    const M: usize = 7;
    const K: usize = 300_000;
    let relay = relay().await;
    let start = scrape(&relay).await;
    assert_eq!(start.get(CLIENTS), 0.0);
    assert_eq!(start.get(ROOMS), 0.0);
    assert_eq!(start.get(STREAMS), 0.0);

    let alice = client(&relay, "alice").await;
    let bob = client(&relay, "bob").await;
    let got = Log::new();
    let g = got.clone();
    bob.on("m", move |m| g.push(m.args));
    bob.on("double", |m| {
        let n: i64 = m.arg(0).unwrap_or_default();
        m.respond(n * 2);
    });
    let before = scrape(&relay).await;
    assert_eq!(before.get(CLIENTS), 2.0);

    for i in 0..N {
        alice.emit_to("bob", "m", i).await.unwrap();
    }
    got.wait_len("every message arrives", N).await;
    for i in 0..M as i64 {
        let twice: i64 = within("a reply", alice.request("bob", "double", i))
            .await
            .unwrap();
        assert_eq!(twice, 2 * i);
    }
    alice.join_room("lobby").await.unwrap();
    bob.join_room("lobby").await.unwrap();
    alice.join_room("kitchen").await.unwrap();

    let (mut to_bob, mut at_bob) = open_pair(&alice, &bob, StreamOptions::default()).await;
    let open = scrape(&relay).await;
    assert_eq!(open.get(STREAMS), 1.0);
    assert_eq!(open.get(ROOMS), 2.0);
    let data: Vec<u8> = (0..K).map(|i| (i % 251) as u8).collect();
    let writer = tokio::spawn(async move {
        to_bob.write_all(&data).await.unwrap();
        to_bob.shutdown().await.unwrap();
        to_bob
    });
    let mut received = Vec::new();
    within("the stream's data", at_bob.read_to_end(&mut received))
        .await
        .unwrap();
    assert_eq!(received.len(), K);
    at_bob.shutdown().await.unwrap();
    let to_bob = within("the writer", writer).await.unwrap();
    drop((to_bob, at_bob));
    all_freed(&relay, &[&alice, &bob]).await;

    let after = scrape(&relay).await;
    assert_eq!(after.delta(&before, MESSAGES), N as f64);
    assert_eq!(after.delta(&before, REQUESTS), M as f64);
    assert_eq!(after.delta(&before, STREAM_BYTES), K as f64);
    assert!(
        after.delta(&before, EVENT_BYTES) >= (N + M) as f64,
        "every event has at least a byte"
    );
    assert_eq!(after.get(STREAMS), 0.0);
    for reason in REASONS {
        assert_eq!(after.delta(&start, &refusals(reason)), 0.0, "{reason}");
    }

    bob.disconnect().await.unwrap();
    eventually_async("bob leaves the figures", || async {
        let now = scrape(&relay).await;
        now.get(CLIENTS) == 1.0 && now.get(ROOMS) == 2.0
    })
    .await;
    alice.leave_room("kitchen").await.unwrap();
    assert_eq!(scrape(&relay).await.get(ROOMS), 1.0);
}

/// A refusal of each reachable kind is counted under its reason, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_counted_by_reason() {
    let relay = relay_with(RelayOptions {
        server: ServerOptions {
            max_rooms_per_client: 1,
            max_event_name_len: 16,
            max_event_bytes: 4096,
            max_streams_per_client: 1,
            max_pending_per_caller: 1,
            ..ServerOptions::default()
        },
        ..RelayOptions::default()
    })
    .await;
    let alice = client(&relay, "alice").await;
    let bob = client(&relay, "bob").await;
    let held: Arc<Mutex<Option<Reply>>> = Arc::default();
    let h = held.clone();
    bob.on("hold", move |m| *h.lock().unwrap() = m.reply);
    let before = scrape(&relay).await;

    // Limits: a second room, a long event name, a large event, a second stream.
    alice.join_room("one").await.unwrap();
    assert!(alice.join_room("two").await.is_err());
    let long = "x".repeat(17);
    assert!(alice.request::<()>("bob", &long, ()).await.is_err());
    let large = "y".repeat(8192);
    assert!(alice.request::<()>("bob", "hold", large).await.is_err());
    let (_mine, _theirs) = open_pair(&alice, &bob, StreamOptions::default()).await;
    assert!(alice.add_p2p_stream("bob").await.is_err());

    // Busy: a second request while the first still waits for its answer.
    let first = tokio::spawn({
        let alice = alice.clone();
        async move { alice.request::<String>("bob", "hold", ()).await }
    });
    eventually("bob holds the first request", || {
        held.lock().unwrap().is_some()
    })
    .await;
    let refused = alice.request::<String>("bob", "hold", ()).await;
    assert!(
        refused
            .as_ref()
            .is_err_and(|e| e.to_string().contains("busy")),
        "{refused:?}"
    );
    held.lock().unwrap().take().unwrap().send("done");
    assert_eq!(
        within("the first answer", first).await.unwrap().unwrap(),
        "done"
    );

    let after = scrape(&relay).await;
    assert_eq!(after.delta(&before, &refusals("limit")), 4.0);
    assert_eq!(after.delta(&before, &refusals("busy")), 1.0);
    for reason in ["auth", "permission", "slow_consumer"] {
        assert_eq!(after.delta(&before, &refusals(reason)), 0.0, "{reason}");
    }
    // Only the held request reached bob.
    assert_eq!(after.delta(&before, REQUESTS), 1.0);
}

/// A flood towards a client that reads nothing: each message is either relayed or refused as busy
/// (the two counts add up to what was sent), and the client is dropped as a slow consumer, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_is_relayed_or_refused_and_the_reader_that_stalls_is_dropped() {
    const COUNT: usize = 200;
    let relay = relay_with(RelayOptions {
        server: ServerOptions {
            max_queued_bytes: 256 << 10,
            slow_consumer_deadline: Duration::from_secs(3),
            ..ServerOptions::default()
        },
        ..RelayOptions::default()
    })
    .await;
    let paused = paused_client(&relay, "slow").await;
    let sender = raw_client(&format!("{}?clientId=snd", relay.url())).await;
    eventually("both registered", || {
        relay.server().is_connected("slow") && relay.server().is_connected("snd")
    })
    .await;
    let before = scrape(&relay).await;

    let data = "z".repeat(64 << 10);
    for _ in 0..COUNT {
        sender
            .emit(
                "P2P_EMIT",
                vec![json!({"targetClientId": "slow", "event": "big", "args": ["snd", data]})],
            )
            .await;
    }
    let gone = tokio::time::Instant::now() + Duration::from_secs(30);
    while relay.server().is_connected("slow") {
        assert!(
            tokio::time::Instant::now() < gone,
            "the client that reads nothing is disconnected"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eventually_async("every message relayed or refused", || async {
        let now = scrape(&relay).await;
        now.delta(&before, MESSAGES) + now.delta(&before, &refusals("busy")) == COUNT as f64
    })
    .await;
    let after = scrape(&relay).await;
    assert!(after.delta(&before, &refusals("busy")) >= 1.0);
    assert!(after.delta(&before, MESSAGES) >= 1.0);
    assert_eq!(after.delta(&before, &refusals("slow_consumer")), 1.0);
    assert_eq!(after.get(CLIENTS), 1.0);
    let _ = paused.disconnect().await;
}
