//! Core API (README 2.1 and 3.1): the server's client map, the client list, rooms, the server
//! emitting to clients, and duplicate client ids. Real relay, real clients, loopback.

mod common;
use common::*;
use serde_json::{json, Value};
use socketio_p2p::{DuplicateIdPolicy, Error, P2pClient, RelayOptions, ServerOptions};
use std::time::{Duration, Instant};

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

// README 2.1.2: connected clients are added to the client map, disconnected ones removed; a new
// socket per connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_map_gains_and_loses_clients() {
    let relay = relay().await;
    let server = relay.server();
    assert!(server.client_ids().is_empty());
    assert!(!server.is_connected("alice"));

    let alice = client(&relay, "alice").await;
    assert!(server.is_connected("alice"));
    assert_eq!(server.client_ids(), vec!["alice"]);

    let bob = client(&relay, "bob").await;
    assert_eq!(sorted(server.client_ids()), vec!["alice", "bob"]);
    let alice_sid = server.socket_of("alice").expect("alice has a socket").id;
    let bob_sid = server.socket_of("bob").expect("bob has a socket").id;
    assert_ne!(alice_sid, bob_sid, "each client has a socket of its own");

    alice.disconnect().await.unwrap();
    assert!(!alice.is_connected());
    eventually("alice leaves the client map", || {
        !server.is_connected("alice")
    })
    .await;
    assert_eq!(server.client_ids(), vec!["bob"]);
    assert!(server.socket_of("alice").is_none());

    // The same id may connect again, on a new socket.
    let alice2 = client(&relay, "alice").await;
    assert!(server.is_connected("alice"));
    let alice2_sid = server
        .socket_of("alice")
        .expect("alice has a socket again")
        .id;
    assert_ne!(alice2_sid, alice_sid, "a reconnection gets a new socket");
    assert_eq!(sorted(server.client_ids()), vec!["alice", "bob"]);

    // Dropping the last handle closes the connection too.
    drop(bob);
    eventually("bob leaves the client map when dropped", || {
        !server.is_connected("bob")
    })
    .await;
    assert_eq!(server.client_ids(), vec!["alice"]);
    alice2.disconnect().await.unwrap();
    eventually("the map is empty", || server.client_ids().is_empty()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_clients_from_a_client() {
    let relay = relay().await;
    let carol = client(&relay, "carol").await;
    let alice = client(&relay, "alice").await;
    let bob = client(&relay, "bob").await;
    assert_eq!(
        alice.list_clients().await.unwrap(),
        vec!["alice", "bob", "carol"],
        "every connected id, sorted"
    );
    assert_eq!(
        bob.list_clients().await.unwrap(),
        vec!["alice", "bob", "carol"]
    );

    carol.disconnect().await.unwrap();
    eventually("carol leaves", || !relay.server().is_connected("carol")).await;
    assert_eq!(alice.list_clients().await.unwrap(), vec!["alice", "bob"]);
}

/// Records the raw arguments of every `event` a client receives through `on`.
fn record_raw(c: &P2pClient, event: &str) -> Log<Vec<Value>> {
    let log = Log::new();
    let l = log.clone();
    c.on_raw(event, move |args| l.push(args));
    log
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_join_emit_leave() {
    let relay = relay().await;
    let alice = client(&relay, "alice").await;
    let bob = client(&relay, "bob").await;
    let carol = client(&relay, "carol").await;
    let dave = client(&relay, "dave").await;
    let at_alice = record_raw(&alice, "news");
    let at_bob = record_raw(&bob, "news");
    let at_carol = record_raw(&carol, "news");
    let at_dave = record_raw(&dave, "news");

    alice.join_room("lobby").await.unwrap();
    bob.join_room("lobby").await.unwrap();
    carol.join_room("lobby").await.unwrap();

    alice
        .emit_room("lobby", "news", ("first", 1))
        .await
        .unwrap();
    at_bob.wait_len("bob gets the room event", 1).await;
    at_carol.wait_len("carol gets the room event", 1).await;
    assert_eq!(at_bob.get(), vec![vec![json!("first"), json!(1)]]);
    assert_eq!(at_carol.get(), vec![vec![json!("first"), json!(1)]]);

    // Positive controls: later events that do reach alice and dave, sent after the room emit was
    // handled, arrive alone: the room event never reached the sender nor the non-member.
    bob.emit_room("lobby", "news", ("from bob",)).await.unwrap();
    alice.emit_to("dave", "news", ("direct",)).await.unwrap();
    at_alice.wait_len("alice gets bob's room event", 1).await;
    at_dave.wait_len("dave gets the direct event", 1).await;
    assert_eq!(
        at_alice.get(),
        vec![vec![json!("from bob")]],
        "the sender does not get its own room event"
    );
    assert_eq!(
        at_dave.get(),
        vec![vec![json!("alice"), json!("direct")]],
        "a non-member does not get the room event"
    );
    at_carol.wait_len("carol gets bob's room event", 2).await;

    // After leave_room, bob gets no more room events.
    bob.leave_room("lobby").await.unwrap();
    alice.emit_room("lobby", "news", ("second",)).await.unwrap();
    at_carol
        .wait_len("carol gets the second room event", 3)
        .await;
    alice
        .emit_to("bob", "news", ("direct to bob",))
        .await
        .unwrap();
    at_bob.wait_len("bob gets the direct event", 2).await;
    assert_eq!(
        at_bob.get(),
        vec![
            vec![json!("first"), json!(1)],
            vec![json!("alice"), json!("direct to bob")]
        ],
        "after leave_room no room events reach bob"
    );
    assert_eq!(
        at_carol.get(),
        vec![
            vec![json!("first"), json!(1)],
            vec![json!("from bob")],
            vec![json!("second")]
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_room_name_is_an_error() {
    let relay = relay().await;
    let alice = client(&relay, "alice").await;
    assert!(matches!(
        alice.join_room("").await,
        Err(Error::BadRequest(_))
    ));
    assert!(matches!(
        alice.leave_room("").await,
        Err(Error::BadRequest(_))
    ));
    assert!(matches!(
        alice.emit_room("", "news", ()).await,
        Err(Error::BadRequest(_))
    ));
    assert!(matches!(
        alice.emit_room("lobby", "", ()).await,
        Err(Error::BadRequest(_))
    ));
    let e = alice.join_room("").await.unwrap_err();
    assert!(e.to_string().contains("room name is empty"), "{e}");
    // The client still works.
    alice.join_room("lobby").await.unwrap();
    alice.leave_room("lobby").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_emits_to_a_client() {
    let relay = relay().await;
    let alice = client(&relay, "alice").await;
    let raw = record_raw(&alice, "from-server");
    relay
        .server()
        .emit_to("alice", "from-server", (1, "two", json!({"three": 3})))
        .unwrap();
    raw.wait_len("alice gets the server's event", 1).await;
    assert_eq!(
        raw.get(),
        vec![vec![json!(1), json!("two"), json!({"three": 3})]],
        "a raw listener gets the server's arguments as they were sent"
    );
    let r = relay.server().emit_to("nobody", "x", ());
    assert!(
        matches!(&r, Err(Error::UnknownTarget(id)) if id == "nobody"),
        "{r:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_request_answered_by_a_client() {
    let relay = relay().await;
    let alice = client(&relay, "alice").await;
    let seen = Log::new();
    let s = seen.clone();
    alice.on("ask", move |m| {
        s.push((m.from.clone(), m.args.clone()));
        let n: i64 = m.arg(0).unwrap();
        m.reply
            .expect("the server waits for a reply")
            .send((n + 1, "ok"));
    });
    alice.on("refuse", |m| {
        m.reply.unwrap().error("not today");
    });
    let held = Log::new();
    let h = held.clone();
    alice.on("hold", move |m| h.push(m.reply.unwrap()));

    // The server's emits carry no sender id of their own: the first argument is what a peer
    // listener sees as the sender, so the server names itself there (as the seed's
    // emitClient(serviceName, ...) does).
    let server = relay.server();
    let reply = within(
        "server request",
        server
            .request::<Vec<Value>>("alice", "ask", ("server", 41))
            .timeout(Duration::from_secs(3)),
    )
    .await
    .unwrap();
    assert_eq!(reply, vec![json!(42), json!("ok")]);
    assert_eq!(seen.get(), vec![("server".to_string(), vec![json!(41)])]);

    let err = within(
        "server request answered with an error",
        server
            .request::<Vec<Value>>("alice", "refuse", ("server",))
            .timeout(Duration::from_secs(3)),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&err, Error::Remote { message, .. } if message == "not today"),
        "{:?}",
        err
    );

    // No listener at all: the client says so at once.
    let t = Instant::now();
    let err = within(
        "server request without a listener",
        server
            .request::<Vec<Value>>("alice", "nothing", ("server",))
            .timeout(Duration::from_secs(3)),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&err, Error::Remote { message: text, .. } if text.contains("no listener")),
        "{err:?}"
    );
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "fails fast, took {:?}",
        t.elapsed()
    );

    // A client that keeps the reply without answering: the server's own timeout applies.
    let t = Instant::now();
    let err = within(
        "server request never answered",
        server
            .request::<Vec<Value>>("alice", "hold", ("server",))
            .timeout(Duration::from_millis(300)),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
    assert!(
        t.elapsed() >= Duration::from_millis(250),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(held.len(), 1);

    assert!(matches!(
        server
            .request::<Vec<Value>>("nobody", "ask", ())
            .timeout(Duration::from_secs(1))
            .await,
        Err(Error::UnknownTarget(id)) if id == "nobody"
    ));
}

// README 2.1.2: the client id must be unique. The default policy refuses the second connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_id_is_refused_by_default() {
    let relay = relay().await;
    let first = client(&relay, "dup").await;
    let peer = client(&relay, "peer").await;
    let gone = Log::new();
    let g = gone.clone();
    peer.on_p2p_target_disconnect(move |id| g.push(id));
    peer.add_p2p_target("dup").await.unwrap();
    let sid = relay.server().socket_of("dup").unwrap().id;

    let second = within("second connection", P2pClient::connect(&relay.url(), "dup")).await;
    match second {
        Err(Error::Refused(text)) => {
            assert!(
                text.contains("already connected"),
                "refusal says why: {text}"
            );
            assert!(text.contains("dup"), "refusal names the id: {text}");
        }
        other => panic!("expected Error::Refused, got {other:?}"),
    }

    // The first connection is untouched and keeps working.
    assert!(first.is_connected());
    assert_eq!(relay.server().socket_of("dup").unwrap().id, sid);
    assert_eq!(sorted(relay.server().client_ids()), vec!["dup", "peer"]);
    first.on("ping", |m| {
        m.reply.unwrap().send(("pong",));
    });
    let r: String = within("first still answers", peer.request("dup", "ping", ()))
        .await
        .unwrap();
    assert_eq!(r, "pong");
    assert_eq!(peer.list_clients().await.unwrap(), vec!["dup", "peer"]);
    assert!(
        gone.get().is_empty(),
        "the refused connection did not make the first one look gone to its peers"
    );
    assert_eq!(peer.from("dup").listener_count(), 0);
}

// With the Replace policy the newer connection wins; the old one is closed and its peers see it
// leave; there are never two live sockets for one id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_id_replaces_the_old_connection() {
    let relay = relay_with(RelayOptions {
        server: ServerOptions {
            duplicate_ids: DuplicateIdPolicy::Replace,
            ..ServerOptions::default()
        },
        ..RelayOptions::default()
    })
    .await;
    let old = client_with_timeout(&relay, "dup", Duration::from_secs(5)).await;
    let peer = client(&relay, "peer").await;
    let held = Log::new();
    let h = held.clone();
    peer.on("hold", move |m| h.push(m.reply.unwrap()));
    let old_errors = Log::new();
    let oe = old_errors.clone();
    old.on_server_error(move |t| oe.push(t));
    let gone = Log::new();
    let g = gone.clone();
    peer.on_p2p_target_disconnect(move |id| g.push(id));
    peer.add_p2p_target("dup").await.unwrap();
    let from_old = Log::new();
    let f = from_old.clone();
    peer.from("dup").on("hello", move |m| f.push(m.args));
    old.emit_to("peer", "hello", ("from old",)).await.unwrap();
    from_old.wait_len("peer hears the old connection", 1).await;
    let old_sid = relay.server().socket_of("dup").unwrap().id;
    // A request of the old connection is still pending when it is replaced.
    let old2 = old.clone();
    let pending = tokio::spawn(async move { old2.request::<Vec<Value>>("peer", "hold", ()).await });
    held.wait_len("peer holds the old connection's request", 1)
        .await;

    let t = Instant::now();
    let new = within("new connection", P2pClient::connect(&relay.url(), "dup"))
        .await
        .expect("the newer connection is accepted under Replace");
    let r = within("the old connection's pending request ends", pending)
        .await
        .unwrap();
    assert!(
        matches!(r, Err(Error::Disconnected(_))),
        "a pending call of the replaced connection fails as disconnected: {r:?}"
    );
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "promptly, took {:?}",
        t.elapsed()
    );

    within("the old connection is closed", old.closed()).await;
    assert!(!old.is_connected());
    // The server has dropped the old socket (and run its disconnect handling): two sockets left.
    eventually("the old socket is gone from the server", || {
        relay.io().sockets().len() == 2
    })
    .await;
    assert!(new.is_connected());
    gone.wait_len("the peer is told the old connection left", 1)
        .await;
    assert_eq!(gone.get(), vec!["dup"]);
    assert_eq!(
        peer.from("dup").listener_count(),
        0,
        "the peer's listeners for the old connection went with it"
    );
    old_errors
        .wait_len("the old connection is told why", 1)
        .await;
    assert!(
        old_errors.get()[0].contains("newer connection"),
        "{:?}",
        old_errors.get()
    );

    // One live socket for the id: the new one.
    assert_eq!(sorted(relay.server().client_ids()), vec!["dup", "peer"]);
    assert_ne!(relay.server().socket_of("dup").unwrap().id, old_sid);
    assert_eq!(peer.list_clients().await.unwrap(), vec!["dup", "peer"]);

    // The old handle fails; the new one works both ways.
    assert!(matches!(
        old.emit_to("peer", "hello", ()).await,
        Err(Error::Disconnected(_))
    ));
    new.on("ping", |m| {
        m.reply.unwrap().send(("pong from new",));
    });
    let r: String = within("new answers", peer.request("dup", "ping", ()))
        .await
        .unwrap();
    assert_eq!(r, "pong from new");
    let at_peer = Log::new();
    let a = at_peer.clone();
    peer.on("hi", move |m| a.push((m.from, m.args)));
    new.emit_to("peer", "hi", ("from new",)).await.unwrap();
    at_peer.wait_len("peer hears the new connection", 1).await;
    assert_eq!(
        at_peer.get(),
        vec![("dup".to_string(), vec![json!("from new")])]
    );

    // The old socket's own disconnect did not take the new registration with it.
    assert!(relay.server().is_connected("dup"));
    assert_eq!(gone.get(), vec!["dup"], "the peer was told once");
}

// README 2.1.2: every socket listens to the seed's events. A raw seed-protocol client (no
// extensions, Socket.IO acknowledgements) uses them directly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_client_uses_core_and_message_events() {
    let relay = relay().await;
    let bob = client(&relay, "bob").await;
    bob.on("ask", |m| {
        let n: i64 = m.arg(0).unwrap();
        m.reply.unwrap().send((n * 10,));
    });
    let at_bob = Log::new();
    let b = at_bob.clone();
    bob.on("hello", move |m| b.push((m.from, m.args)));
    let seed = raw_client(&format!("{}?clientId=seed", relay.url())).await;
    eventually("seed registers", || relay.server().is_connected("seed")).await;

    assert_eq!(
        seed.emit_with_ack("LIST_CLIENTS", vec![]).await,
        vec![json!(["bob", "seed"])]
    );
    assert_eq!(
        seed.emit_with_ack("JOIN_ROOM", vec![json!("lobby")]).await,
        Vec::<Value>::new()
    );

    bob.emit_room("lobby", "news", ("to the room",))
        .await
        .unwrap();
    eventually("seed gets the room event", || {
        seed.events.get().iter().any(|(e, _)| e == "news")
    })
    .await;

    // P2P_EMIT and P2P_EMIT_ACKNOWLEDGE from the seed client.
    seed.emit(
        "P2P_EMIT",
        vec![json!({"targetClientId": "bob", "event": "hello", "args": ["seed", "hi"]})],
    )
    .await;
    at_bob.wait_len("bob gets the seed's message", 1).await;
    assert_eq!(at_bob.get(), vec![("seed".to_string(), vec![json!("hi")])]);
    let ack = seed
        .emit_with_ack(
            "P2P_EMIT_ACKNOWLEDGE",
            vec![json!({"targetClientId": "bob", "event": "ask", "args": ["seed", 4]})],
        )
        .await;
    assert_eq!(ack, vec![json!(40)]);

    // EMIT_ROOM from the seed client, then LEAVE_ROOM.
    let at_bob_room = record_raw(&bob, "seed-news");
    bob.join_room("lobby").await.unwrap();
    seed.emit(
        "EMIT_ROOM",
        vec![json!("lobby"), json!("seed-news"), json!(7)],
    )
    .await;
    at_bob_room
        .wait_len("bob gets the seed's room event", 1)
        .await;
    assert_eq!(at_bob_room.get(), vec![vec![json!(7)]]);

    assert_eq!(
        seed.emit_with_ack("LEAVE_ROOM", vec![json!("lobby")]).await,
        Vec::<Value>::new()
    );
    bob.emit_room("lobby", "news", ("after leave",))
        .await
        .unwrap();
    bob.emit_to("seed", "direct", ("marker",)).await.unwrap();
    eventually("seed gets the direct event", || {
        seed.events.get().iter().any(|(e, _)| e == "direct")
    })
    .await;
    let events: Vec<_> = seed
        .events
        .get()
        .into_iter()
        .filter(|(e, _)| e == "news" || e == "direct")
        .collect();
    assert_eq!(
        events,
        vec![
            ("news".to_string(), vec![json!("to the room")]),
            ("direct".to_string(), vec![json!("bob"), json!("marker")]),
        ],
        "no room events after LEAVE_ROOM"
    );
    seed.sio.disconnect().await.unwrap();
    eventually("seed leaves", || !relay.server().is_connected("seed")).await;
}

/// Builds the relay over a Socket.IO server of any adapter: the way a remote adapter (Redis, say)
/// is plugged in. Registering the connect handler is left to code that knows the adapter, as
/// socketioxide only lets a known adapter register a namespace.
fn p2p_over<A: socketioxide::adapter::Adapter>(
    io: &socketioxide::SocketIo<A>,
) -> socketio_p2p::P2pServer<A> {
    socketio_p2p::P2pServer::new(io, ServerOptions::default())
}

/// The server's own API, used without knowing the adapter: a service topic counted, published
/// to and destroyed, an event to a client, the client map.
async fn serve_topic<A: socketioxide::adapter::Adapter>(
    server: &socketio_p2p::P2pServer<A>,
    subscribed: &Log<socketio_p2p::TopicEvent>,
    at_bob: &Log<Vec<Value>>,
) {
    assert_eq!(sorted(server.client_ids()), vec!["alice", "bob"]);
    let news = server.as_service("news");
    news.create_topic("daily").unwrap();
    assert_eq!(news.subscriber_count("daily").await.unwrap(), 0);
    // Nobody subscribed yet: this publication reaches nobody (`subscribed` sees only later ones).
    news.publish_topic("daily", ("nobody listens",)).unwrap();
    assert_eq!(subscribed.len(), 0);

    server.emit_to("bob", "hello", "from the server").unwrap();
    at_bob.wait_len("bob gets the server's event", 1).await;
    assert_eq!(at_bob.get()[0], vec![json!("from the server")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_over_an_explicit_adapter_type_serves_clients() {
    use socketio_p2p::TopicEvent;
    use socketioxide::adapter::LocalAdapter;

    let (layer, io) = socketioxide::SocketIo::builder()
        .with_adapter::<LocalAdapter>(())
        .build_layer();
    let server = p2p_over(&io);
    io.ns("/", server.connect_handler());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let app = axum::Router::new().layer(layer);
    let task = tokio::spawn(async move { axum::serve(listener, app).await });

    let opts = socketio_p2p::ClientOptions {
        timeout: Duration::from_secs(3),
        ..Default::default()
    };
    let alice = P2pClient::connect_with(&url, "alice", opts.clone())
        .await
        .unwrap();
    let bob = P2pClient::connect_with(&url, "bob", opts).await.unwrap();

    // Rooms go through the adapter: a join, then a room emit that reaches the other member only.
    let at_bob_room = record_raw(&bob, "news");
    let at_alice_room = record_raw(&alice, "news");
    alice.join_room("lobby").await.unwrap();
    bob.join_room("lobby").await.unwrap();
    alice.emit_room("lobby", "news", ("hi",)).await.unwrap();
    at_bob_room.wait_len("bob gets the room event", 1).await;
    assert_eq!(at_bob_room.get()[0], vec![json!("hi")]);
    bob.leave_room("lobby").await.unwrap();
    alice
        .emit_room("lobby", "news", ("after leave",))
        .await
        .unwrap();
    // A request after it, answered in order, proves the emit was handled.
    assert_eq!(alice.list_clients().await.unwrap(), vec!["alice", "bob"]);
    assert_eq!(at_bob_room.len(), 1, "bob left the room");
    assert_eq!(at_alice_room.len(), 0, "the sender is not a receiver");

    // The server's API, from generic code.
    let topic: Log<TopicEvent> = Log::new();
    let at_bob = record_raw(&bob, "hello");
    serve_topic(&server, &topic, &at_bob).await;
    let t = topic.clone();
    bob.subscribe_topic("news", "daily", move |e| t.push(e))
        .await
        .unwrap();
    let news = server.as_service("news");
    assert_eq!(news.subscriber_count("daily").await.unwrap(), 1);
    news.publish_topic("daily", ("today",)).unwrap();
    topic.wait_len("bob gets the publication", 1).await;
    assert_eq!(topic.get()[0].args(), Some(&[json!("today")][..]));
    news.destroy_topic("daily").unwrap();
    topic.wait_len("bob hears the topic go", 2).await;
    assert!(matches!(topic.get()[1], TopicEvent::Destroyed));
    assert_eq!(news.subscriber_count("daily").await.unwrap(), 0);

    alice.disconnect().await.unwrap();
    bob.disconnect().await.unwrap();
    eventually("both leave", || server.client_ids().is_empty()).await;
    task.abort();
}
