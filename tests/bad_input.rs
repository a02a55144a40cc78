//! Malformed and hostile input from a raw Socket.IO client speaking the seed protocol: every bad
//! event gets a `SERVER_ERROR` saying what was wrong, nothing bad is relayed, and the relay keeps
//! working for everyone else. Real relay, real clients, loopback.

mod common;
use common::*;
use futures::FutureExt;
use serde_json::{json, Value};
use socketio_p2p::{Error, P2pClient, Relay};

/// A raw seed client registered as `raw`.
async fn raw(relay: &Relay) -> RawClient {
    raw_as(relay, "raw").await
}

/// Sends `event(...args)` and returns the `SERVER_ERROR` it caused.
async fn error_for(raw: &mut RawClient, event: &str, args: Vec<Value>) -> String {
    raw.emit(event, args.clone()).await;
    raw.next_error(&format!("{event}{args:?}")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_p2p_emit() {
    let relay = relay().await;
    let bob = client(&relay, "bob").await;
    let seen = Log::new();
    let s = seen.clone();
    bob.on_any("chat", move |m| s.push((m.from, m.args)));
    let mut raw = raw(&relay).await;

    let e = error_for(&mut raw, "P2P_EMIT", vec![json!(5)]).await;
    assert_says(&e, &["bad request", "payload must be", "targetClientId"]);

    let e = error_for(&mut raw, "P2P_EMIT", vec![]).await;
    assert_says(&e, &["bad request", "missing"]);

    let e = error_for(
        &mut raw,
        "P2P_EMIT",
        vec![json!({"targetClientId": "bob", "args": ["raw", "no event"]})],
    )
    .await;
    assert_says(&e, &["bad request", "event"]);

    let e = error_for(
        &mut raw,
        "P2P_EMIT",
        vec![json!({"targetClientId": "bob", "event": "", "args": ["raw"]})],
    )
    .await;
    assert_says(&e, &["event name is empty"]);

    let e = error_for(
        &mut raw,
        "P2P_EMIT",
        vec![json!({"targetClientId": "bob", "event": "chat", "args": []})],
    )
    .await;
    assert_says(&e, &["args[0]", "'raw'", "got nothing"]);

    let e = error_for(
        &mut raw,
        "P2P_EMIT",
        vec![json!({"targetClientId": 7, "event": "chat", "args": ["raw"]})],
    )
    .await;
    assert_says(&e, &["bad request", "targetClientId"]);

    // P2P_EMIT_ACKNOWLEDGE with the same kind of garbage.
    let e = error_for(
        &mut raw,
        "P2P_EMIT_ACKNOWLEDGE",
        vec![json!("not an object")],
    )
    .await;
    assert_says(&e, &["bad request", "payload must be"]);

    // Positive control: a well-formed message from raw does reach bob, and it is the only one.
    raw.emit(
        "P2P_EMIT",
        vec![json!({"targetClientId": "bob", "event": "chat", "args": ["raw", "fine"]})],
    )
    .await;
    seen.wait_len("the good message arrives", 1).await;
    assert_eq!(seen.get(), vec![("raw".to_string(), vec![json!("fine")])]);
    assert!(
        raw.errors.try_recv().is_err(),
        "the good message caused no error"
    );

    assert_relay_works(&relay, "after-1", "after-2").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_target() {
    let relay = relay().await;
    let mut raw = raw(&relay).await;
    let e = error_for(
        &mut raw,
        "P2P_EMIT",
        vec![json!({"targetClientId": "nobody", "event": "chat", "args": ["raw"]})],
    )
    .await;
    assert_eq!(e, "Error: Could not find target client 'nobody' socket");
    // The seed's add-target to an unknown client answers through the acknowledgement.
    let ack = raw
        .emit_with_ack("MULTI_API_ADD_TARGET", vec![json!("nobody")])
        .await;
    assert_eq!(
        ack,
        vec![json!("Client nobody is not registered to server")]
    );
    assert_relay_works(&relay, "after-1", "after-2").await;
}

// The relay does not trust a client's claim about who it is: args[0] must be its own id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_sender_is_refused_and_never_delivered() {
    let relay = relay().await;
    let _alice = client(&relay, "alice").await;
    let bob = client(&relay, "bob").await;
    let seen = Log::new();
    let s = seen.clone();
    bob.on_any("chat", move |m| s.push((m.from, m.args)));
    let from_alice = Log::new();
    let f = from_alice.clone();
    bob.from("alice").on("chat", move |m| f.push(m.args));
    let asked = Log::new();
    let a = asked.clone();
    bob.on_any("ask", move |m| {
        a.push(m.from.clone());
        m.reply.unwrap().send(("answered",));
    });
    let mut raw = raw(&relay).await;

    let e = error_for(
        &mut raw,
        "P2P_EMIT",
        vec![json!({"targetClientId": "bob", "event": "chat", "args": ["alice", "forged"]})],
    )
    .await;
    assert_says(&e, &["args[0]", "own client id 'raw'", "\"alice\""]);

    let e = error_for(
        &mut raw,
        "P2P_EMIT",
        vec![json!({"targetClientId": "bob", "event": "chat", "args": [42, "forged"]})],
    )
    .await;
    assert_says(&e, &["args[0]", "'raw'", "42"]);

    // With an acknowledgement the forged request is refused too and never reaches bob's listener.
    raw.emit(
        "P2P_EMIT_ACKNOWLEDGE",
        vec![json!({"targetClientId": "bob", "event": "ask", "args": ["alice"]})],
    )
    .await;
    let e = raw.next_error("forged P2P_EMIT_ACKNOWLEDGE").await;
    assert_says(&e, &["args[0]", "'raw'", "\"alice\""]);

    // Positive control, after the forgeries (events of one connection are handled in order).
    raw.emit(
        "P2P_EMIT",
        vec![json!({"targetClientId": "bob", "event": "chat", "args": ["raw", "genuine"]})],
    )
    .await;
    let ack = raw
        .emit_with_ack(
            "P2P_EMIT_ACKNOWLEDGE",
            vec![json!({"targetClientId": "bob", "event": "ask", "args": ["raw"]})],
        )
        .await;
    assert_eq!(ack, vec![json!("answered")]);
    seen.wait_len("the genuine message arrives", 1).await;
    assert_eq!(
        seen.get(),
        vec![("raw".to_string(), vec![json!("genuine")])],
        "the forged messages never reached bob"
    );
    assert!(
        from_alice.get().is_empty(),
        "bob's from(alice) listener never fired"
    );
    assert_eq!(
        asked.get(),
        vec!["raw"],
        "the forged request never reached bob"
    );

    assert_relay_works(&relay, "after-1", "after-2").await;
}

// An extension client's batch is checked item by item: a forged item is refused, the others go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_item_in_a_batch_is_refused() {
    let relay = relay().await;
    let _alice = client(&relay, "alice").await;
    let bob = client(&relay, "bob").await;
    let seen = Log::new();
    let s = seen.clone();
    bob.on_any("chat", move |m| s.push((m.from, m.args)));
    let mut ext = raw_client(&format!("{}?clientId=rawext&p2pExt=1", relay.url())).await;
    eventually("rawext registers", || relay.server().is_connected("rawext")).await;

    ext.emit(
        "P2P_BATCH",
        vec![
            json!({"targetClientId": "bob", "event": "chat", "args": ["rawext", 1]}),
            json!({"targetClientId": "bob", "event": "chat", "args": ["alice", "forged"]}),
            json!({"targetClientId": "bob", "event": "P2P_RES", "args": ["rawext", 1, {"ok": []}]}),
            json!("garbage"),
            json!({"targetClientId": "bob", "event": "chat", "args": ["rawext", 2]}),
        ],
    )
    .await;
    let mut errors = Vec::new();
    for i in 0..3 {
        errors.push(ext.next_error(&format!("bad batch item {i}")).await);
    }
    assert_says(&errors[0], &["args[0]", "'rawext'", "\"alice\""]);
    assert_says(&errors[1], &["reserved", "P2P_RES"]);
    assert_says(&errors[2], &["bad request", "payload must be"]);
    seen.wait_len("the good batch items arrive", 2).await;
    ext.emit(
        "P2P_EMIT",
        vec![json!({"targetClientId": "bob", "event": "chat", "args": ["rawext", 3]})],
    )
    .await;
    seen.wait_len("the later message arrives", 3).await;
    assert_eq!(
        seen.get(),
        vec![
            ("rawext".to_string(), vec![json!(1)]),
            ("rawext".to_string(), vec![json!(2)]),
            ("rawext".to_string(), vec![json!(3)]),
        ]
    );
    assert_relay_works(&relay, "after-1", "after-2").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_room_events() {
    let relay = relay().await;
    let bob = client(&relay, "bob").await;
    bob.join_room("lobby").await.unwrap();
    let at_bob = Log::new();
    let b = at_bob.clone();
    bob.on_raw("news", move |args| b.push(args));
    let mut raw = raw(&relay).await;

    let e = error_for(&mut raw, "JOIN_ROOM", vec![json!("")]).await;
    assert_says(&e, &["JOIN_ROOM", "room name is empty"]);
    let e = error_for(&mut raw, "JOIN_ROOM", vec![json!(5)]).await;
    assert_says(&e, &["JOIN_ROOM", "must be a string", "5"]);
    let e = error_for(&mut raw, "JOIN_ROOM", vec![]).await;
    assert_says(&e, &["JOIN_ROOM", "missing"]);
    let e = error_for(&mut raw, "LEAVE_ROOM", vec![json!({"room": "lobby"})]).await;
    assert_says(&e, &["LEAVE_ROOM", "must be a string"]);
    let e = error_for(&mut raw, "EMIT_ROOM", vec![json!("lobby")]).await;
    assert_says(&e, &["EMIT_ROOM", "event name must be a non-empty string"]);
    let e = error_for(
        &mut raw,
        "EMIT_ROOM",
        vec![json!("lobby"), json!(5), json!("x")],
    )
    .await;
    assert_says(&e, &["EMIT_ROOM", "event name must be a non-empty string"]);
    let e = error_for(&mut raw, "EMIT_ROOM", vec![]).await;
    assert_says(&e, &["EMIT_ROOM", "room name is missing"]);
    let e = error_for(
        &mut raw,
        "EMIT_ROOM",
        vec![
            json!("lobby"),
            json!("MULTI_API_TARGET_DISCONNECT"),
            json!("bob"),
        ],
    )
    .await;
    assert_says(&e, &["EMIT_ROOM", "reserved"]);
    // The relay's own rooms (which tell Rust members from JavaScript ones) are out of reach.
    for room in ["__p2p_ext__", "__p2p_seed__"] {
        let e = error_for(&mut raw, "JOIN_ROOM", vec![json!(room)]).await;
        assert_says(&e, &[room, "reserved"]);
        let e = error_for(
            &mut raw,
            "EMIT_ROOM",
            vec![json!(room), json!("news"), json!(1)],
        )
        .await;
        assert_says(&e, &[room, "reserved"]);
        let e = error_for(
            &mut raw,
            "LEAVE_ROOM",
            vec![json!("SERVICE_DESTROY_TOPIC"), json!(room)],
        )
        .await;
        assert_says(&e, &[room, "reserved"]);
    }

    // The same requests with an acknowledgement still report the problem.
    raw.sio
        .emit_with_ack(
            "JOIN_ROOM",
            rust_socketio::Payload::Text(vec![json!("")]),
            std::time::Duration::from_secs(5),
            |_, _| futures::future::ready(()).boxed(),
        )
        .await
        .unwrap();
    let e = raw.next_error("JOIN_ROOM(\"\", ack)").await;
    assert_says(&e, &["room name is empty"]);

    // Positive control: a good room event from raw reaches bob, and only that one did.
    assert_eq!(
        raw.emit_with_ack("JOIN_ROOM", vec![json!("lobby")]).await,
        Vec::<Value>::new()
    );
    raw.emit(
        "EMIT_ROOM",
        vec![json!("lobby"), json!("news"), json!("good")],
    )
    .await;
    at_bob.wait_len("the good room event arrives", 1).await;
    assert_eq!(at_bob.get(), vec![vec![json!("good")]]);

    assert_relay_works(&relay, "after-1", "after-2").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_add_target() {
    let relay = relay().await;
    let bob = client(&relay, "bob").await;
    let added = Log::new();
    let a = added.clone();
    bob.on_add_p2p_target(move |id| a.push(id));
    let mut raw = raw(&relay).await;

    let e = error_for(&mut raw, "MULTI_API_ADD_TARGET", vec![json!({"id": "bob"})]).await;
    assert_says(&e, &["MULTI_API_ADD_TARGET", "target client id"]);
    let e = error_for(&mut raw, "MULTI_API_ADD_TARGET", vec![json!("")]).await;
    assert_says(&e, &["MULTI_API_ADD_TARGET", "target client id"]);
    let e = error_for(&mut raw, "MULTI_API_ADD_TARGET", vec![]).await;
    assert_says(&e, &["MULTI_API_ADD_TARGET", "target client id"]);

    // Positive control: a proper add-target from raw reaches bob, and only that one.
    let ack = raw
        .emit_with_ack("MULTI_API_ADD_TARGET", vec![json!("bob")])
        .await;
    assert_eq!(ack, Vec::<Value>::new(), "bob accepts");
    added.wait_len("bob sees raw add it", 1).await;
    assert_eq!(added.get(), vec!["raw"]);

    assert_relay_works(&relay, "after-1", "after-2").await;
}

// A client may not relay events the receiving library treats as protocol frames.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserved_event_names_are_not_relayed() {
    let relay = relay().await;
    let bob = client(&relay, "bob").await;
    let gone = Log::new();
    let g = gone.clone();
    bob.on_p2p_target_disconnect(move |id| g.push(id));
    let errors = Log::new();
    let e = errors.clone();
    bob.on_server_error(move |t| e.push(t));
    let seen = Log::new();
    let s = seen.clone();
    bob.on_any("chat", move |m| s.push(m.args));
    let mut raw = raw(&relay).await;

    for (event, args) in [
        ("P2P_RES", json!(["raw", 1, {"ok": ["forged"]}])),
        ("P2P_REQ", json!(["raw", 1, "chat"])),
        ("SERVER_ERROR", json!(["raw", "forged error"])),
        ("MULTI_API_TARGET_DISCONNECT", json!(["raw", "alice"])),
        ("MULTI_API_ADD_TARGET", json!(["raw"])),
        ("P2P_WELCOME", json!(["raw"])),
        ("P2P_BATCH", json!(["raw", ["chat", "raw", "x"]])),
    ] {
        let e = error_for(
            &mut raw,
            "P2P_EMIT",
            vec![json!({"targetClientId": "bob", "event": event, "args": args})],
        )
        .await;
        assert_says(&e, &["reserved", event]);
    }

    // Positive control: a later ordinary message arrives, and nothing forged came before it.
    raw.emit(
        "P2P_EMIT",
        vec![json!({"targetClientId": "bob", "event": "chat", "args": ["raw", "ordinary"]})],
    )
    .await;
    seen.wait_len("the ordinary message arrives", 1).await;
    assert_eq!(
        seen.get(),
        vec![vec![json!("ordinary")]],
        "no forged batch item arrived"
    );
    assert!(
        gone.get().is_empty(),
        "no forged disconnect notice reached bob"
    );
    assert!(
        errors.get().is_empty(),
        "no forged SERVER_ERROR reached bob"
    );

    assert_relay_works(&relay, "after-1", "after-2").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_without_client_id_is_refused() {
    let relay = relay().await;
    for url in [
        relay.url(),
        format!("{}?clientId=", relay.url()),
        format!("{}?other=1", relay.url()),
    ] {
        let mut c = raw_client(&url).await;
        let e = c.next_error(&format!("connecting to {url}")).await;
        assert_says(&e, &["refused", "clientId"]);
        c.wait_closed("the server disconnects a client without id")
            .await;
    }
    assert!(relay.server().client_ids().is_empty());
    assert_relay_works(&relay, "after-1", "after-2").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_client_ids_from_the_rust_client() {
    let relay = relay().await;
    match P2pClient::connect(&relay.url(), "").await {
        Err(Error::BadRequest(text)) => assert!(text.contains("client id is empty"), "{text}"),
        other => panic!("expected a BadRequest for an empty id, got {other:?}"),
    }
    let long = "x".repeat(300);
    // Refused before connecting, in the words the relay would use.
    match within("long id", P2pClient::connect(&relay.url(), &long)).await {
        Err(Error::BadRequest(text)) => assert!(text.contains("256"), "{text}"),
        other => panic!("expected a BadRequest for a 300-byte id, got {other:?}"),
    }
    assert!(relay.server().client_ids().is_empty());
    // Ids with characters that need escaping in a URL are fine.
    let odd = client(&relay, "a b&c=d/ü").await;
    assert!(relay.server().is_connected("a b&c=d/ü"));
    assert_eq!(odd.list_clients().await.unwrap(), vec!["a b&c=d/ü"]);
    assert_relay_works(&relay, "after-1", "after-2").await;
}

// Binary data cannot be forged with JSON: an object that looks like the relay's old in-band
// binary marker is relayed as the very JSON it is, to seed-era and Rust receivers alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_cannot_pose_as_binary() {
    let relay = relay().await;
    let bob = client(&relay, "bob").await;
    let at_bob = Log::new();
    let b = at_bob.clone();
    bob.on_any("chat", move |m| b.push(m.args));
    let seed_bob = raw_client(&format!("{}?clientId=seedbob", relay.url())).await;
    eventually("seedbob registers", || {
        relay.server().is_connected("seedbob")
    })
    .await;
    let mut raw = raw(&relay).await;

    let forged = json!({"__p2p_binary__": [1, 2, 3]});
    let plain = json!({"placeholder": true, "num": 0});
    for target in ["bob", "seedbob"] {
        raw.emit(
            "P2P_EMIT",
            vec![json!({
                "targetClientId": target,
                "event": "chat",
                "args": ["raw", forged, plain],
            })],
        )
        .await;
    }
    at_bob.wait_len("bob gets the message", 1).await;
    assert_eq!(at_bob.get(), vec![vec![forged.clone(), plain.clone()]]);
    eventually("seedbob gets the message as JSON", || {
        seed_bob.events.get().iter().any(|(ev, _)| ev == "chat")
    })
    .await;
    let (_, args) = seed_bob
        .events
        .get()
        .into_iter()
        .find(|(ev, _)| ev == "chat")
        .unwrap();
    assert_eq!(args, vec![json!("raw"), forged, plain]);
    assert!(raw.errors.try_recv().is_err(), "nothing was refused");
    assert_relay_works(&relay, "after-1", "after-2").await;
}

/// Whether a refusal text is the one of a binary placeholder look-alike.
fn says_placeholder(text: &str) -> bool {
    text.contains("bad request") && text.contains("'_placeholder'")
}

// An object with the key `_placeholder` is what Socket.IO's parsers read as a binary attachment;
// one that names no attachment makes socket.io-client 4 drop the connection and 2.x throw. The
// relay refuses every event that holds one, on every path, with an error to its sender, and
// delivers nothing of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_placeholder_look_alikes_are_refused_on_every_path() {
    let relay = relay().await;
    let bob = client(&relay, "bob").await;
    bob.join_room("hall").await.unwrap();
    let at_bob = Log::new();
    let b = at_bob.clone();
    bob.on_any("chat", move |m| b.push(m.args));
    let in_hall = Log::new();
    let h = in_hall.clone();
    bob.on_raw("hall-chat", move |args| h.push(args));
    let bob_streams = bob.incoming_streams(None);
    let seed_bob = raw_client(&format!("{}?clientId=seedbob", relay.url())).await;
    eventually("seedbob registers", || {
        relay.server().is_connected("seedbob")
    })
    .await;
    let mut raw = raw(&relay).await;
    let looks_like = [
        json!({"_placeholder": true, "num": 5}),
        json!({"_placeholder": true, "num": 0}),
        json!({"num": 0, "_placeholder": true}),
        json!([1, {"deep": {"_placeholder": "yes"}}]),
    ];

    for fake in &looks_like {
        for target in ["bob", "seedbob"] {
            let payload = json!({"targetClientId": target, "event": "chat", "args": ["raw", fake]});
            let e = error_for(&mut raw, "P2P_EMIT", vec![payload.clone()]).await;
            assert!(says_placeholder(&e), "P2P_EMIT {fake}: {e}");
            let acked = raw
                .emit_with_ack("P2P_EMIT_ACKNOWLEDGE", vec![payload])
                .await;
            let e = raw.next_error("P2P_EMIT_ACKNOWLEDGE").await;
            assert!(says_placeholder(&e), "P2P_EMIT_ACKNOWLEDGE {fake}: {e}");
            assert_eq!(acked, vec![json!(e)], "acknowledged with the error");
        }
        let e = error_for(
            &mut raw,
            "EMIT_ROOM",
            vec![json!("hall"), json!("hall-chat"), fake.clone()],
        )
        .await;
        assert!(says_placeholder(&e), "EMIT_ROOM {fake}: {e}");
    }
    // A client service's topic publication is a room emit of its own.
    raw.emit(
        "JOIN_ROOM",
        vec![json!("SERVICE_CREATE_TOPIC"), json!("service:raw:topic:t")],
    )
    .await;
    let e = error_for(
        &mut raw,
        "EMIT_ROOM",
        vec![
            json!("service:raw:topic:t"),
            json!("service:raw:topic:t-DEFAULT_TOPIC_EVENT"),
            looks_like[0].clone(),
        ],
    )
    .await;
    assert!(says_placeholder(&e), "topic publication: {e}");
    // The arguments of a stream open.
    let acked = raw
        .emit_with_ack(
            "MULTI_API_CREATE_STREAM",
            vec![json!({
                "sourceStreamId": "s1",
                "targetStreamId": "s2",
                "targetClientId": "bob",
                "args": looks_like[1],
            })],
        )
        .await;
    let e = raw.next_error("MULTI_API_CREATE_STREAM").await;
    assert!(says_placeholder(&e), "stream open: {e}");
    assert_eq!(acked, vec![json!(e)]);

    // An extension client: a batch item, and an answer to a request.
    let mut ext = raw_client(&format!("{}?clientId=rawext&p2pExt=1", relay.url())).await;
    eventually("rawext registers", || relay.server().is_connected("rawext")).await;
    ext.emit(
        "P2P_BATCH",
        vec![json!({"targetClientId": "bob", "event": "chat", "args": ["rawext", looks_like[0]]})],
    )
    .await;
    let e = ext.next_error("P2P_BATCH").await;
    assert!(says_placeholder(&e), "P2P_BATCH: {e}");
    let asking = {
        let bob = bob.clone();
        tokio::spawn(async move { bob.request::<Vec<Value>>("rawext", "ask", ()).await })
    };
    eventually("rawext is asked", || {
        ext.events.get().iter().any(|(ev, _)| ev == "P2P_REQ")
    })
    .await;
    let id = ext
        .events
        .get()
        .into_iter()
        .find(|(ev, _)| ev == "P2P_REQ")
        .map(|(_, args)| args[0].clone())
        .unwrap();
    ext.emit("P2P_RES", vec![id, json!({"ok": [looks_like[1]]})])
        .await;
    let e = ext.next_error("P2P_RES").await;
    assert!(says_placeholder(&e), "P2P_RES: {e}");
    // The request fails at once, not at a timeout.
    match within("the refused answer", asking).await.unwrap() {
        Err(Error::Protocol(t)) => {
            assert!(t.contains("'_placeholder'") && t.contains("rawext"), "{t}")
        }
        other => panic!("expected the answer refused, got {other:?}"),
    }

    // The server's own API refuses them too.
    let server = relay.server();
    for fake in &looks_like {
        for target in ["bob", "seedbob"] {
            match server.emit_to(target, "chat", (fake.clone(),)) {
                Err(Error::BadRequest(t)) => assert!(t.contains("'_placeholder'"), "{t}"),
                other => panic!("server emit_to {target} {fake}: {other:?}"),
            }
            match server
                .request::<Value>(target, "chat", (fake.clone(),))
                .await
            {
                Err(Error::BadRequest(t)) => assert!(t.contains("'_placeholder'"), "{t}"),
                other => panic!("server request {target} {fake}: {other:?}"),
            }
        }
    }
    let jobs = server.as_service("jobs");
    jobs.create_topic("t").unwrap();
    assert!(matches!(
        jobs.emit_client("seedbob", "chat", (looks_like[0].clone(),)),
        Err(Error::BadRequest(_))
    ));
    assert!(matches!(
        jobs.request_client::<Value>("bob", "chat", (looks_like[0].clone(),))
            .await,
        Err(Error::BadRequest(_))
    ));
    assert!(matches!(
        jobs.publish_topic("t", (looks_like[2].clone(),)),
        Err(Error::BadRequest(_))
    ));
    let opened = server
        .add_p2p_stream(
            "bob",
            socketio_p2p::StreamOptions {
                args: looks_like[3].clone(),
                ..Default::default()
            },
        )
        .await;
    assert!(matches!(opened, Err(Error::BadRequest(_))), "{opened:?}");
    // A service handler's answer: the seed caller is acknowledged with the error instead.
    let give = looks_like[0].clone();
    jobs.provide_service("give", move |call| call.respond(give.clone()))
        .unwrap();
    let acked = raw
        .emit_with_ack(
            "P2P_EMIT_ACKNOWLEDGE",
            vec![json!({"targetClientId": "jobs", "event": "give", "args": ["raw"]})],
        )
        .await;
    let e = raw.next_error("the service's answer").await;
    assert!(
        e.contains("'_placeholder'") && e.contains("bad answer from 'jobs' to 'give'"),
        "{e}"
    );
    assert_eq!(acked, vec![json!(e)]);

    // Nothing of it arrived: the ordinary messages sent last are the first to arrive.
    for target in ["bob", "seedbob"] {
        raw.emit(
            "P2P_EMIT",
            vec![json!({"targetClientId": target, "event": "chat", "args": ["raw", "ordinary"]})],
        )
        .await;
    }
    raw.emit(
        "EMIT_ROOM",
        vec![json!("hall"), json!("hall-chat"), json!("ordinary")],
    )
    .await;
    at_bob.wait_len("the ordinary message reaches bob", 1).await;
    assert_eq!(at_bob.get(), vec![vec![json!("ordinary")]]);
    in_hall
        .wait_len("the ordinary room emit reaches bob", 1)
        .await;
    assert_eq!(in_hall.get(), vec![vec![json!("ordinary")]]);
    eventually("the ordinary message reaches seedbob", || {
        seed_bob.events.get().iter().any(|(ev, _)| ev == "chat")
    })
    .await;
    let seen: Vec<_> = seed_bob
        .events
        .get()
        .into_iter()
        .filter(|(ev, _)| ev != "MULTI_API_TARGET_DISCONNECT")
        .collect();
    assert_eq!(
        seen,
        vec![("chat".to_string(), vec![json!("raw"), json!("ordinary")])]
    );
    assert_eq!(bob.stream_count(), 0, "no stream was opened");
    drop(bob_streams);
    assert_relay_works(&relay, "after-1", "after-2").await;
}

// A request that times out names the peer and the user's event, not the internal one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_names_the_peer_and_the_event() {
    let relay = relay().await;
    let alice = client_with_timeout(&relay, "alice", std::time::Duration::from_millis(300)).await;
    let bob = client(&relay, "bob").await;
    let keep = Log::new();
    let k = keep.clone();
    bob.on_any("slow", move |m| k.push(m.reply)); // never answers, keeps the reply alive
    let err = alice
        .request::<Vec<serde_json::Value>>("bob", "slow", ())
        .await
        .unwrap_err();
    match &err {
        Error::Timeout { peer, event, .. } => {
            assert_eq!(peer.as_deref(), Some("bob"));
            assert_eq!(event, "slow");
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    let text = err.to_string();
    assert!(text.contains("'bob'") && text.contains("'slow'"), "{text}");
    assert!(!text.contains("P2P_EMIT_ACKNOWLEDGE"), "{text}");
    drop(keep);
}

// An event the relay does not handle is refused with an error naming it; a sender that asked for
// an acknowledgement gets one, with the error text, and nothing waits on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_events_are_refused_and_acknowledged() {
    let relay = relay().await;
    let mut raw = raw(&relay).await;

    let acked = raw.emit_with_ack("NO_SUCH_EVENT", vec![json!(1)]).await;
    let e = raw
        .next_error("NO_SUCH_EVENT with an acknowledgement")
        .await;
    assert_says(&e, &["bad request", "unknown event 'NO_SUCH_EVENT'"]);
    assert_eq!(acked, vec![json!(e)], "acknowledged with the error");

    let e = error_for(&mut raw, "chat", vec![json!("x")]).await;
    assert_says(&e, &["bad request", "unknown event 'chat'"]);

    // An event of the extensions, from a client that did not announce them.
    let acked = raw.emit_with_ack("P2P_BATCH", vec![json!(1)]).await;
    let e = raw.next_error("P2P_BATCH from a seed client").await;
    assert_says(&e, &["unknown event 'P2P_BATCH'", "p2pExt=1"]);
    assert_eq!(acked, vec![json!(e)]);

    let long = "u".repeat(300);
    let e = error_for(&mut raw, &long, vec![]).await;
    assert_says(&e, &["unknown event", "(300 bytes)"]);
    assert!(e.len() < 400, "the name is cut: {e}");

    // The client is still served.
    let acked = raw.emit_with_ack("LIST_CLIENTS", vec![]).await;
    assert_eq!(acked, vec![json!(["raw"])]);
    assert_relay_works(&relay, "after-1", "after-2").await;
}

// The server's own API refuses the event names no client may have delivered (PROTOCOL.md,
// section 3), with the refusal a client gets; nothing reaches the receivers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_emits_refuse_reserved_names() {
    let relay = relay().await;
    let bob = client(&relay, "bob").await;
    let at_bob = Log::new();
    let b = at_bob.clone();
    bob.on_raw("control", move |args| b.push(args));
    let notices = Log::new();
    let n = notices.clone();
    bob.on_server_error(move |t| n.push(t));
    let seed_bob = raw_client(&format!("{}?clientId=seedbob", relay.url())).await;
    eventually("seedbob registers", || {
        relay.server().is_connected("seedbob")
    })
    .await;
    let server = relay.server();

    let reserved = [
        "disconnect",
        "connect",
        "error",
        "reconnect_attempt",
        "newListener",
        "message",
        "SERVER_ERROR",
        "P2P_RES",
        "P2P_ROOM",
    ];
    let says_reserved = |e: &Error, name: &str| matches!(e, Error::BadRequest(t) if t.contains("reserved") && t.contains(&format!("'{name}'")));
    for name in reserved {
        for target in ["bob", "seedbob"] {
            match server.emit_to(target, name, ("x",)) {
                Err(e) if says_reserved(&e, name) => {}
                other => panic!("server.emit_to({target}, {name}): {other:?}"),
            }
            match server.request::<Value>(target, name, ("x",)).await {
                Err(e) if says_reserved(&e, name) => {}
                other => panic!("server.request({target}, {name}): {other:?}"),
            }
        }
    }

    for target in ["bob", "seedbob"] {
        server.emit_to(target, "control", ("after",)).unwrap();
    }
    at_bob.wait_len("bob gets the control event", 1).await;
    assert_eq!(at_bob.get(), vec![vec![json!("after")]]);
    assert!(notices.get().is_empty(), "no SERVER_ERROR reached bob");
    assert!(bob.is_connected());
    eventually("seedbob gets the control event", || {
        seed_bob.events.get().iter().any(|(ev, _)| ev == "control")
    })
    .await;
    assert_eq!(
        seed_bob.events.get(),
        vec![("control".to_string(), vec![json!("after")])],
        "seedbob got nothing before the control event"
    );
    assert!(server.is_connected("seedbob") && server.is_connected("bob"));
}
