//! The relay's limits and refusals: reserved event names on every delivery path, client ids,
//! name lengths, rooms, event size, streams, requests in flight, event and connection rates,
//! answers to refused acknowledged requests, and connections that vanish mid-handshake. Real
//! relay on loopback, real clients (Rust clients and raw Socket.IO clients).

mod common;
use common::*;
use futures::FutureExt;
use rust_socketio::Payload;
use serde_json::{json, Value};
use socketio_p2p::{Error, P2pClient, RelayOptions, ServerOptions, StreamOptions};
use std::time::Duration;

fn relay_opts(f: impl FnOnce(&mut ServerOptions)) -> RelayOptions {
    let mut opts = RelayOptions::default();
    f(&mut opts.server);
    opts
}

/// The names Socket.IO 2/4, rust_socketio or this protocol treat specially.
const RESERVED: &[&str] = &[
    "connect",
    "connect_error",
    "disconnect",
    "disconnecting",
    "newListener",
    "removeListener",
    "error",
    "reconnect",
    "reconnect_attempt",
    "message",
    "open",
    "close",
    "P2P_FRAME",
    "P2P_ROOM",
    "JOIN_ROOM",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserved_names_are_refused_on_every_path() {
    let relay = relay().await;
    let jobs = relay.server().as_service("jobs");
    let mut victim = raw_as(&relay, "victim").await;
    victim.emit_with_ack("JOIN_ROOM", vec![json!("hall")]).await;
    let mut raw = raw_as(&relay, "raw").await;
    let carol = client(&relay, "carol").await;
    let carol_errors = Log::new();
    let ce = carol_errors.clone();
    carol.on_server_error(move |t| ce.push(t));

    for name in RESERVED {
        // P2P_EMIT
        raw.emit(
            "P2P_EMIT",
            vec![json!({"targetClientId": "victim", "event": name, "args": ["raw", "x"]})],
        )
        .await;
        assert_says(&raw.next_error(name).await, &["reserved", name]);
        // P2P_EMIT_ACKNOWLEDGE: reported, and the acknowledgement carries the refusal.
        let ack = raw
            .emit_with_ack(
                "P2P_EMIT_ACKNOWLEDGE",
                vec![json!({"targetClientId": "victim", "event": name, "args": ["raw"]})],
            )
            .await;
        assert_says(ack[0].as_str().unwrap_or_default(), &["reserved", name]);
        assert_says(&raw.next_error(name).await, &["reserved"]);
        // EMIT_ROOM
        raw.emit("EMIT_ROOM", vec![json!("hall"), json!(name), json!("x")])
            .await;
        assert_says(&raw.next_error(name).await, &["reserved", name]);
        // A server service's emit_client.
        let e = jobs.emit_client("victim", name, ("x",)).unwrap_err();
        assert!(e.to_string().contains("reserved"), "{e}");
    }
    // A Rust client refuses them itself, in the relay's words, before anything is sent.
    for name in RESERVED {
        let e = carol.emit_to("victim", name, ("x",)).await.unwrap_err();
        assert!(
            matches!(&e, Error::BadRequest(t) if t.contains("reserved") && t.contains(name)),
            "{e:?}"
        );
    }
    // The relay's P2P_BATCH path, from a client that speaks the extensions and sends the
    // names anyway: one refusal per item.
    let mut batcher = raw_client(&format!("{}?clientId=batcher&p2pExt=1", relay.url())).await;
    eventually("batcher registers", || {
        relay.server().is_connected("batcher")
    })
    .await;
    let items: Vec<Value> = RESERVED
        .iter()
        .map(|name| json!({"targetClientId": "victim", "event": name, "args": ["batcher", "x"]}))
        .collect();
    batcher.emit("P2P_BATCH", items).await;
    for name in RESERVED {
        assert_says(&batcher.next_error(name).await, &["reserved"]);
    }
    assert!(carol_errors.get().is_empty(), "{:?}", carol_errors.get());

    // Positive control: an ordinary message arrives, and nothing reserved came before it.
    raw.emit(
        "P2P_EMIT",
        vec![json!({"targetClientId": "victim", "event": "chat", "args": ["raw", "ok"]})],
    )
    .await;
    eventually("the ordinary message arrives", || {
        victim.events.get().iter().any(|(n, _)| n == "chat")
    })
    .await;
    let names: Vec<String> = victim.events.get().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, vec!["chat".to_string()], "only the ordinary event");
    assert!(!*victim.closed.borrow(), "the victim is still connected");
    assert!(victim.errors.try_recv().is_err());
    assert!(relay.server().is_connected("victim"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_client_ids_are_refused_with_a_reason() {
    let relay = relay().await;
    let long = "x".repeat(257);
    for (query, reason) in [
        ("%ff", "not valid"),
        ("%e2%82", "not valid"),
        ("ab%2", "not valid"),
        ("a%01b", "control character"),
        ("a%0Ab", "control character"),
        (long.as_str(), "longer than 256 bytes"),
    ] {
        let mut c = raw_client(&format!("{}?clientId={query}", relay.url())).await;
        let e = c.next_error(query).await;
        assert_says(&e, &["refused", reason]);
        c.wait_closed("the relay disconnects a bad id").await;
    }
    assert!(relay.server().client_ids().is_empty(), "no U+FFFD ids");
    // A valid escaped id still works.
    let _ok = raw_client(&format!("{}?clientId=%E2%82%AC", relay.url())).await;
    eventually("an escaped id registers", || {
        relay.server().is_connected("€")
    })
    .await;

    // The Rust client refuses the same ids itself, in the relay's words.
    for (id, reason) in [
        ("a\u{1}b", "the client id contains a control character"),
        (long.as_str(), "the client id is longer than 256 bytes"),
    ] {
        let mut raw = raw_client(&format!(
            "{}?clientId={}",
            relay.url(),
            socketio_p2p::protocol::percent_encode(id)
        ))
        .await;
        assert_says(&raw.next_error(id).await, &[reason]);
        match P2pClient::connect(&relay.url(), id).await {
            Err(Error::BadRequest(text)) => assert_says(&text, &[reason]),
            other => panic!("expected a local refusal, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_rooms_and_event_size_have_limits() {
    let relay = relay_with(relay_opts(|o| {
        o.max_rooms_per_client = 3;
        o.max_event_bytes = 64 * 1024;
    }))
    .await;
    let bob = client(&relay, "bob").await;
    let seen = Log::new();
    let s = seen.clone();
    bob.on_any("big", move |m| s.push(m.args));
    let mut raw = raw_as(&relay, "raw").await;

    // Event names.
    let long_event = "e".repeat(257);
    raw.emit(
        "P2P_EMIT",
        vec![json!({"targetClientId": "bob", "event": long_event, "args": ["raw"]})],
    )
    .await;
    assert_says(&raw.next_error("long event").await, &["longer than 256"]);
    raw.emit("EMIT_ROOM", vec![json!("r"), json!(long_event)])
        .await;
    assert_says(
        &raw.next_error("long room event").await,
        &["longer than 256"],
    );

    // Room names.
    let long_room = "r".repeat(257);
    let ack = raw.emit_with_ack("JOIN_ROOM", vec![json!(long_room)]).await;
    assert_says(
        ack[0].as_str().unwrap_or_default(),
        &["room name is longer"],
    );
    assert_says(&raw.next_error("long room").await, &["room name is longer"]);

    // Rooms per client: three, then refused; leaving one makes room again.
    for r in ["r1", "r2", "r3"] {
        assert_eq!(
            raw.emit_with_ack("JOIN_ROOM", vec![json!(r)]).await,
            Vec::<serde_json::Value>::new()
        );
    }
    let ack = raw.emit_with_ack("JOIN_ROOM", vec![json!("r4")]).await;
    assert_says(ack[0].as_str().unwrap_or_default(), &["3 rooms"]);
    assert_says(&raw.next_error("fourth room").await, &["3 rooms"]);
    assert_eq!(
        raw.emit_with_ack("JOIN_ROOM", vec![json!("r1")]).await,
        Vec::<serde_json::Value>::new()
    );
    assert_eq!(
        raw.emit_with_ack("LEAVE_ROOM", vec![json!("r1")]).await,
        Vec::<serde_json::Value>::new()
    );
    assert_eq!(
        raw.emit_with_ack("JOIN_ROOM", vec![json!("r4")]).await,
        Vec::<serde_json::Value>::new()
    );
    for r in ["b1", "b2", "b3"] {
        bob.join_room(r).await.unwrap();
    }
    let e = bob.join_room("b4").await.unwrap_err();
    assert!(e.to_string().contains("3 rooms"), "{e}");

    // Event size.
    let big = "x".repeat(65 * 1024);
    raw.emit(
        "P2P_EMIT",
        vec![json!({"targetClientId": "bob", "event": "big", "args": ["raw", big]})],
    )
    .await;
    assert_says(&raw.next_error("big event").await, &["bytes", "65536"]);
    let e = bob.emit_to("raw", "big", (big.clone(),)).await;
    let refused = match e {
        Err(e) => e.to_string(),
        Ok(()) => {
            let errors = Log::new();
            let er = errors.clone();
            bob.on_server_error(move |t| er.push(t));
            bob.emit_to("raw", "big", (big,)).await.unwrap();
            errors.wait_len("a refusal", 1).await;
            errors.get()[0].clone()
        }
    };
    assert!(refused.contains("65536"), "{refused}");
    let fits = "y".repeat(60 * 1024);
    raw.emit(
        "P2P_EMIT",
        vec![json!({"targetClientId": "bob", "event": "big", "args": ["raw", fits]})],
    )
    .await;
    seen.wait_len("an event under the limit", 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_acknowledged_requests_are_answered() {
    let relay = relay_with(relay_opts(|o| o.max_pending_per_caller = 2)).await;
    let mut raw = raw_as(&relay, "raw").await;
    let _sink = raw_as(&relay, "sink").await;

    // Unknown target.
    let ack = raw
        .emit_with_ack(
            "P2P_EMIT_ACKNOWLEDGE",
            vec![json!({"targetClientId": "nobody", "event": "q", "args": ["raw"]})],
        )
        .await;
    assert_says(ack[0].as_str().unwrap_or_default(), &["nobody"]);
    assert_says(&raw.next_error("unknown target").await, &["nobody"]);
    // A forged sender.
    let ack = raw
        .emit_with_ack(
            "P2P_EMIT_ACKNOWLEDGE",
            vec![json!({"targetClientId": "sink", "event": "q", "args": ["bob"]})],
        )
        .await;
    assert_says(ack[0].as_str().unwrap_or_default(), &["args[0]"]);
    assert_says(&raw.next_error("forged").await, &["args[0]"]);

    // Requests in flight per caller: the sink never answers, so two wait and the third is
    // refused at once.
    for _ in 0..2 {
        raw.sio
            .emit_with_ack(
                "P2P_EMIT_ACKNOWLEDGE",
                Payload::Text(vec![
                    json!({"targetClientId": "sink", "event": "q", "args": ["raw"]}),
                ]),
                Duration::from_secs(30),
                |_, _| futures::future::ready(()).boxed(),
            )
            .await
            .unwrap();
    }
    let ack = raw
        .emit_with_ack(
            "P2P_EMIT_ACKNOWLEDGE",
            vec![json!({"targetClientId": "sink", "event": "q", "args": ["raw"]})],
        )
        .await;
    assert_says(ack[0].as_str().unwrap_or_default(), &["busy", "2 answers"]);
    let ack = raw
        .emit_with_ack("MULTI_API_ADD_TARGET", vec![json!("sink")])
        .await;
    assert_says(ack[0].as_str().unwrap_or_default(), &["busy"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_per_client_are_bounded() {
    let relay = relay_with(relay_opts(|o| o.max_streams_per_client = 2)).await;
    let a = client(&relay, "a").await;
    let b = client(&relay, "b").await;
    let s1 = open_pair(&a, &b, StreamOptions::default()).await;
    let s2 = open_pair(&a, &b, StreamOptions::default()).await;
    let _incoming = b.incoming_streams(None);
    let e = within(
        "refused at once",
        a.add_p2p_stream_with("b", StreamOptions::default()),
    )
    .await
    .unwrap_err();
    assert!(e.to_string().contains("2 streams"), "{e}");
    drop((s1, s2));
    all_freed(&relay, &[&a, &b]).await;
    drop(_incoming);
    let _s3 = open_pair(&a, &b, StreamOptions::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_floods_get_busy_answers_then_a_disconnect() {
    let relay = relay_with(relay_opts(|o| {
        o.max_events_per_sec = 1;
        o.event_burst = 20;
        o.flood_disconnect_after = 30;
    }))
    .await;
    let bob = client(&relay, "bob").await;
    let seen = Log::new();
    let s = seen.clone();
    bob.on_any("n", move |m| s.push(m.args));
    let mut raw = raw_as(&relay, "raw").await;
    let send = |i: usize| json!({"targetClientId": "bob", "event": "n", "args": ["raw", i]});
    // A burst passes whole.
    for i in 0..20 {
        raw.emit("P2P_EMIT", vec![send(i)]).await;
    }
    seen.wait_len("the burst arrives", 20).await;
    // A sustained flood is refused as busy, then disconnected with a reason.
    for i in 20..60 {
        raw.emit("P2P_EMIT", vec![send(i)]).await;
    }
    let mut busy = 0;
    loop {
        let e = raw.next_error("flood").await;
        if e.contains("disconnected") {
            assert_says(&e, &["events per second"]);
            break;
        }
        assert_says(&e, &["busy"]);
        busy += 1;
    }
    assert!(busy >= 25, "{busy} busy answers");
    raw.wait_closed("the flooder is disconnected").await;
    assert!(seen.len() <= 22, "{} delivered", seen.len());
    eventually("the flooder is gone", || {
        !relay.server().is_connected("raw")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_per_address_are_rate_limited() {
    let relay = relay_with(relay_opts(|o| {
        o.max_connects_per_sec = 1;
        o.connect_burst = 3;
    }))
    .await;
    let mut kept = Vec::new();
    for i in 0..3 {
        kept.push(raw_as(&relay, &format!("c{i}")).await);
    }
    let mut refused = raw_client(&format!("{}?clientId=c3", relay.url())).await;
    let e = refused.next_error("fourth connection").await;
    assert_says(&e, &["refused", "too many connections", "127.0.0.1"]);
    refused.wait_closed("refused").await;
    assert!(!relay.server().is_connected("c3"));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let _later = raw_as(&relay, "c3").await;
}

/// Opens a WebSocket to the relay by hand, sends the Socket.IO connect packet and drops the TCP
/// connection after `linger` (none: right after the packet; `None`: before sending it).
async fn ghost(addr: std::net::SocketAddr, id: String, linger: Option<Duration>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "GET /socket.io/?EIO=4&transport=websocket&clientId={id} HTTP/1.1\r\nHost: {addr}\r\n\
         Upgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    tcp.write_all(req.as_bytes()).await.unwrap();
    let mut buf = [0u8; 1024];
    let _ = within("upgrade answer", tcp.read(&mut buf)).await;
    let Some(linger) = linger else { return };
    // A masked text frame "40" (mask key 0): the Socket.IO connect to the root namespace.
    let _ = tcp.write_all(&[0x81, 0x82, 0, 0, 0, 0, b'4', b'0']).await;
    if !linger.is_zero() {
        tokio::time::sleep(linger).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_dropped_during_the_handshake_leave_no_ghosts() {
    let relay = relay().await;
    let addr = relay.local_addr();
    let mut tasks = Vec::new();
    for i in 0..60u64 {
        let linger = match i % 4 {
            0 => None,
            1 => Some(Duration::ZERO),
            n => Some(Duration::from_micros(200 * n * (i % 7))),
        };
        tasks.push(tokio::spawn(ghost(addr, format!("ghost{i}"), linger)));
    }
    for t in tasks {
        t.await.unwrap();
    }
    eventually("no ghosts are left", || {
        relay.server().client_ids().is_empty()
    })
    .await;
    for i in 0..60 {
        let _c = raw_as(&relay, &format!("ghost{i}")).await;
    }
    assert_relay_works(&relay, "after-1", "after-2").await;
}

/// The relay's own refusals for load (the event rate, the requests one caller may have waiting)
/// reach a Rust caller as busy (code `BUSY`), not as a peer's error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_refusals_reach_a_rust_caller_as_busy() {
    // Requests in flight per caller: the sink never answers, so two wait and the third is refused.
    let relay = relay_with(relay_opts(|o| o.max_pending_per_caller = 2)).await;
    let sink = raw_as(&relay, "sink").await;
    let caller = client_with_timeout(&relay, "caller", Duration::from_secs(30)).await;
    let waiting: Vec<_> = (0..2)
        .map(|_| tokio::spawn(caller.request::<Value>("sink", "q", ())))
        .collect();
    sink.events
        .wait_len("both requests reach the sink", 2)
        .await;
    let e = within("refused at once", caller.request::<Value>("sink", "q", ()))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, Error::Overloaded(t) if t.contains("'caller'") && t.contains("2 answers")),
        "{e:?}"
    );
    assert_eq!(e.code(), socketio_p2p::ErrorCode::Busy);
    for w in waiting {
        w.abort();
    }

    // The event rate: a burst of five, then refused.
    let relay = relay_with(relay_opts(|o| {
        o.max_events_per_sec = 1;
        o.event_burst = 5;
        o.flood_disconnect_after = 1_000;
    }))
    .await;
    let caller = client(&relay, "caller").await;
    let mut refused = None;
    for _ in 0..10 {
        if let Err(e) = caller.list_clients().await {
            refused = Some(e);
            break;
        }
    }
    let e = refused.expect("a request past the burst is refused");
    assert!(
        matches!(&e, Error::Overloaded(t) if t.contains("'caller'") && t.contains("events")),
        "{e:?}"
    );
    assert_eq!(e.code(), socketio_p2p::ErrorCode::Busy);
    assert!(relay.server().is_connected("caller"));
}

/// Topic rooms are counted apart from plain rooms: a service that puts a client in as many of its
/// topic rooms as the limit allows does not keep that client from joining rooms itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_rooms_a_service_fills_leave_the_clients_own_rooms_free() {
    let relay = relay_with(relay_opts(|o| o.max_rooms_per_client = 3)).await;
    let victim = client(&relay, "victim").await;
    let svc = raw_as(&relay, "svc").await;
    for i in 0..3 {
        let ack = svc
            .emit_with_ack(
                "JOIN_ROOM",
                vec![
                    json!("CLIENT_SUBSCRIBE_TOPIC"),
                    json!("victim"),
                    json!(format!("service:svc:topic:t{i}")),
                ],
            )
            .await;
        assert!(ack.iter().all(Value::is_null), "topic {i}: {ack:?}");
    }
    let ack = svc
        .emit_with_ack(
            "JOIN_ROOM",
            vec![
                json!("CLIENT_SUBSCRIBE_TOPIC"),
                json!("victim"),
                json!("service:svc:topic:t3"),
            ],
        )
        .await;
    assert_says(&format!("{ack:?}"), &["3 topic rooms"]);
    for room in ["a", "b", "c"] {
        victim
            .join_room(room)
            .await
            .expect("its own rooms are free");
    }
    match victim.join_room("d").await {
        Err(Error::BadRequest(text)) => assert_says(&text, &["3 rooms", "'d' was not joined"]),
        other => panic!("expected the room limit, got {other:?}"),
    }
}
