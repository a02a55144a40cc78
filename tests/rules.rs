//! The relay's rules for topic rooms and reserved ids (PROTOCOL.md, "Rules"): each attack a
//! client could make is refused with an error to the attacker, and the legitimate subscribers,
//! services and server keep working. Real relay on loopback, real Rust clients and raw Socket.IO
//! clients speaking the seed protocol.

mod common;
use common::*;
use serde_json::{json, Value};
use socketio_p2p::service::{topic_destroyed_event, topic_event, topic_room};
use socketio_p2p::{
    ClientOptions, Error, P2pClient, Relay, ServiceClient, StreamOptions, TopicEvent,
};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A raw seed-protocol client registered as `id`.
async fn raw_as(relay: &Relay, id: &str) -> RawClient {
    let c = raw_client(&format!("{}?clientId={id}", relay.url())).await;
    eventually("the raw client registers", || {
        relay.server().is_connected(id)
    })
    .await;
    c
}

/// A client that is a service, with the tests' short timeout.
async fn service_client(relay: &Relay, name: &str) -> ServiceClient {
    let opts = ClientOptions {
        timeout: Duration::from_secs(3),
        ..ClientOptions::default()
    };
    P2pClient::connect_service(&relay.url(), name, opts)
        .await
        .unwrap_or_else(|e| panic!("service client '{name}' connects: {e}"))
}

fn assert_says(text: &str, needles: &[&str]) {
    for n in needles {
        assert!(text.contains(n), "{text:?} should mention {n:?}");
    }
}

/// A refusal the relay sent as `BAD_REQUEST`, mentioning every needle.
fn assert_refused(result: socketio_p2p::Result<impl std::fmt::Debug>, needles: &[&str]) {
    match result {
        Err(Error::BadRequest(text)) => assert_says(&text, needles),
        other => panic!("expected a refusal mentioning {needles:?}, got {other:?}"),
    }
}

/// Emits `event(...args, ack)` from a seed client the relay refuses: the acknowledgement and
/// the `SERVER_ERROR` both carry the refusal, which mentions every needle.
async fn seed_refused(raw: &mut RawClient, event: &str, args: Vec<Value>, needles: &[&str]) {
    let ack = raw.emit_with_ack(event, args.clone()).await;
    let text = ack.first().and_then(Value::as_str).unwrap_or_default();
    assert_says(text, needles);
    let error = raw.next_error(&format!("{event}{args:?}")).await;
    assert_eq!(error, text, "the acknowledgement repeats the SERVER_ERROR");
}

/// Rooms the server has `client` in.
fn rooms_of(relay: &Relay, client: &str) -> Vec<String> {
    relay
        .server()
        .socket_of(client)
        .map(|s| s.rooms().into_iter().map(|r| r.to_string()).collect())
        .unwrap_or_default()
}

/// The names of the events a raw client received (rust_socketio reports an event without
/// arguments as "message" with the name as its argument).
fn event_names(raw: &RawClient) -> Vec<String> {
    raw.events
        .get()
        .into_iter()
        .map(|(name, args)| match (name.as_str(), args.as_slice()) {
            ("message", [Value::String(bare)]) => bare.clone(),
            _ => name,
        })
        .collect()
}

/// A seed client subscribes itself to `topic` of `service` through its `SUBSCRIBE_TOPIC` (the
/// seed's `subscribeTopic`), which the service answers with no arguments.
async fn seed_subscribe(raw: &RawClient, me: &str, service: &str, topic: &str) {
    let ack = raw
        .emit_with_ack(
            "P2P_EMIT_ACKNOWLEDGE",
            vec![json!({
                "targetClientId": service,
                "event": "SUBSCRIBE_TOPIC",
                "args": [me, me, topic],
            })],
        )
        .await;
    assert_eq!(
        ack,
        Vec::<Value>::new(),
        "{me} subscribes to {service}/{topic}"
    );
}

/// One service, provided by the server or by a client: the legitimate side of the tests.
enum Svc {
    Server(socketio_p2p::ServiceHandle),
    Client(ServiceClient),
}

impl Svc {
    fn name(&self) -> String {
        match self {
            Svc::Server(s) => s.name().to_string(),
            Svc::Client(s) => s.name().to_string(),
        }
    }

    async fn create(&self, topics: &[&str]) {
        match self {
            Svc::Server(s) => s.create_topic(topics).unwrap(),
            Svc::Client(s) => s.create_topic(topics).await.unwrap(),
        }
    }

    async fn publish(&self, topic: &str, value: Value) {
        match self {
            Svc::Server(s) => s.publish_topic(topic, (value,)).unwrap(),
            Svc::Client(s) => s.publish_topic(topic, (value,)).await.unwrap(),
        }
    }

    async fn destroy(&self, topic: &str) {
        match self {
            Svc::Server(s) => s.destroy_topic(topic).unwrap(),
            Svc::Client(s) => s.destroy_topic(topic).await.unwrap(),
        }
    }
}

/// Both kinds of service, each with the topics `t` and `sentinel`.
async fn two_services(relay: &Relay) -> [Svc; 2] {
    let services = [
        Svc::Server(relay.server().as_service("news-srv")),
        Svc::Client(service_client(relay, "news-cli").await),
    ];
    for s in &services {
        s.create(&["t", "sentinel"]).await;
    }
    services
}

/// A topic handler that records publications and the destroy notice.
fn topic_log() -> (Log<TopicEvent>, impl Fn(TopicEvent) + Send + Sync + 'static) {
    let log = Log::new();
    let l = log.clone();
    (log, move |e| l.push(e))
}

fn published(v: Value) -> TopicEvent {
    TopicEvent::Published(vec![v])
}

// Attack: join a topic room with JOIN_ROOM (or the service's own SERVICE_CREATE_TOPIC form) and
// read the publications without subscribing, for server and client services alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_rooms_are_joined_only_through_subscribe_topic() {
    let relay = relay().await;
    let services = two_services(&relay).await;
    let sub = client(&relay, "sub").await;
    let eve = client(&relay, "eve").await;
    let mut mallory = raw_as(&relay, "mallory").await;

    for svc in &services {
        let name = svc.name();
        let room = topic_room(&name, "t");
        let (log, h) = topic_log();
        sub.subscribe_topic(&name, "t", h).await.unwrap();

        // A Rust client's plain JOIN_ROOM.
        assert_refused(
            eve.join_room(&room).await,
            &[&room, &name, "SUBSCRIBE_TOPIC"],
        );
        // A seed client's JOIN_ROOM, and the service's own form.
        seed_refused(
            &mut mallory,
            "JOIN_ROOM",
            vec![json!(room)],
            &[&room, "SUBSCRIBE_TOPIC"],
        )
        .await;
        seed_refused(
            &mut mallory,
            "JOIN_ROOM",
            vec![json!("SERVICE_CREATE_TOPIC"), json!(room)],
            &["SERVICE_CREATE_TOPIC", &room, "mallory"],
        )
        .await;
        assert!(!rooms_of(&relay, "eve").contains(&room));
        assert!(!rooms_of(&relay, "mallory").contains(&room));

        // Both attackers subscribe to the sentinel the proper way; the sentinel is published
        // after `t`, so once it arrives, a publication to `t` would have arrived before it.
        let eve_heard = Log::new();
        {
            let eve_heard = eve_heard.clone();
            eve.on_raw(&topic_event(&room), move |args| eve_heard.push(args));
        }
        let (eve_sentinel, h) = topic_log();
        eve.subscribe_topic(&name, "sentinel", h).await.unwrap();
        seed_subscribe(&mallory, "mallory", &name, "sentinel").await;

        svc.publish("t", json!("p1")).await;
        svc.publish("sentinel", json!("s1")).await;
        log.wait_len("the subscriber's publication", 1).await;
        assert_eq!(log.get(), vec![published(json!("p1"))]);
        eve_sentinel.wait_len("eve's sentinel", 1).await;
        let sentinel_event = topic_event(&topic_room(&name, "sentinel"));
        eventually("mallory's sentinel", || {
            event_names(&mallory).contains(&sentinel_event)
        })
        .await;
        assert!(
            eve_heard.get().is_empty(),
            "eve heard {:?}",
            eve_heard.get()
        );
        assert!(
            !event_names(&mallory).contains(&topic_event(&room)),
            "mallory heard {:?}",
            mallory.events.get()
        );
    }
    // The services' owners may still join their own topic rooms.
    let Svc::Client(cli) = &services[1] else {
        unreachable!()
    };
    cli.join_room(&topic_room("news-cli", "t")).await.unwrap();
    assert_relay_works(&relay, "check-a", "check-b").await;
}

// Attack: EMIT_ROOM a forged publication or a fake TOPIC_BEING_DESTROYED into a topic room, or
// send the topic's events some other way (a plain room, a message to a subscriber).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_topic_service_publishes_into_its_topic_rooms() {
    let relay = relay().await;
    let services = two_services(&relay).await;
    let sub = client(&relay, "sub").await;
    sub.join_room("lobby").await.unwrap();
    let mut seed_sub = raw_as(&relay, "seed-sub").await;
    assert_eq!(
        seed_sub
            .emit_with_ack("JOIN_ROOM", vec![json!("lobby")])
            .await,
        Vec::<Value>::new()
    );
    let eve = client(&relay, "eve").await;
    let mut mallory = raw_as(&relay, "mallory").await;

    for svc in &services {
        let name = svc.name();
        let room = topic_room(&name, "t");
        let (published_event, destroyed_event) = (topic_event(&room), topic_destroyed_event(&room));
        let (log, h) = topic_log();
        sub.subscribe_topic(&name, "t", h).await.unwrap();
        seed_subscribe(&seed_sub, "seed-sub", &name, "t").await;

        // Into the topic room: a forged publication, a fake destroy notice, any other event.
        for (event, args) in [
            (published_event.as_str(), vec![json!("forged")]),
            (destroyed_event.as_str(), vec![]),
            ("chat", vec![json!("hi")]),
        ] {
            assert_refused(
                eve.emit_room(&room, event, socketio_p2p::Args(args.clone()))
                    .await,
                &["EMIT_ROOM", &room, &name],
            );
            let mut all = vec![json!(room), json!(event)];
            all.extend(args);
            seed_refused(&mut mallory, "EMIT_ROOM", all, &["EMIT_ROOM", &room, &name]).await;
        }
        // The topic's events through a plain room both subscribers are in.
        for event in [&published_event, &destroyed_event] {
            assert_refused(
                eve.emit_room("lobby", event, ("forged",)).await,
                &[event.as_str(), &room],
            );
            seed_refused(
                &mut mallory,
                "EMIT_ROOM",
                vec![json!("lobby"), json!(event), json!("forged")],
                &[event.as_str(), &room],
            )
            .await;
        }
        // The topic's events as messages to a subscriber.
        for event in [&published_event, &destroyed_event] {
            assert_refused(
                eve.request::<Value>("sub", event, ("forged",)).await,
                &[event.as_str(), &room],
            );
            seed_refused(
                &mut mallory,
                "P2P_EMIT_ACKNOWLEDGE",
                vec![json!({
                    "targetClientId": "seed-sub",
                    "event": event,
                    "args": ["mallory", "forged"],
                })],
                &[event.as_str(), &room],
            )
            .await;
        }

        // The subscribers are still subscribed and heard only the service.
        svc.publish("t", json!("real")).await;
        log.wait_len("the real publication", 1).await;
        assert_eq!(log.get(), vec![published(json!("real"))]);
        eventually("the seed subscriber's publication", || {
            event_names(&seed_sub).contains(&published_event)
        })
        .await;
        let got: Vec<_> = seed_sub
            .events
            .get()
            .into_iter()
            .filter(|(n, _)| *n == published_event)
            .collect();
        assert_eq!(got, vec![(published_event.clone(), vec![json!("real")])]);
        assert!(
            !event_names(&seed_sub).contains(&destroyed_event),
            "{:?}",
            seed_sub.events.get()
        );

        // The service still destroys its topic: both subscribers are told, once.
        svc.destroy("t").await;
        log.wait_len("the destroy notice", 2).await;
        assert_eq!(
            log.get(),
            vec![published(json!("real")), TopicEvent::Destroyed]
        );
        eventually("the seed subscriber's destroy notice", || {
            event_names(&seed_sub).contains(&destroyed_event)
        })
        .await;
    }
    assert!(
        seed_sub.errors.try_recv().is_err(),
        "the victim got no error"
    );
}

// Attack: kick a subscriber out of a topic (CLIENT_UNSUBSCRIBE_TOPIC) or force a client into a
// room (CLIENT_SUBSCRIBE_TOPIC) without being the topic's service.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_topic_service_adds_and_removes_other_clients() {
    let relay = relay().await;
    let services = two_services(&relay).await;
    let sub = client(&relay, "sub").await;
    let victim = client(&relay, "victim").await;
    let mut mallory = raw_as(&relay, "mallory").await;
    let mut logs = Vec::new();
    for svc in &services {
        let (log, h) = topic_log();
        sub.subscribe_topic(&svc.name(), "t", h).await.unwrap();
        logs.push(log);
    }

    for svc in &services {
        let room = topic_room(&svc.name(), "t");
        seed_refused(
            &mut mallory,
            "LEAVE_ROOM",
            vec![json!("CLIENT_UNSUBSCRIBE_TOPIC"), json!("sub"), json!(room)],
            &["CLIENT_UNSUBSCRIBE_TOPIC", &room, "mallory"],
        )
        .await;
        for who in ["victim", "mallory"] {
            seed_refused(
                &mut mallory,
                "JOIN_ROOM",
                vec![json!("CLIENT_SUBSCRIBE_TOPIC"), json!(who), json!(room)],
                &["CLIENT_SUBSCRIBE_TOPIC", &room, "mallory"],
            )
            .await;
        }
        assert!(rooms_of(&relay, "sub").contains(&room));
    }
    // Any plain room, and a topic room of a service that does not exist.
    for room in ["lobby", "service:ghost:topic:t"] {
        seed_refused(
            &mut mallory,
            "JOIN_ROOM",
            vec![
                json!("CLIENT_SUBSCRIBE_TOPIC"),
                json!("victim"),
                json!(room),
            ],
            &["CLIENT_SUBSCRIBE_TOPIC", room],
        )
        .await;
        seed_refused(
            &mut mallory,
            "LEAVE_ROOM",
            vec![
                json!("CLIENT_UNSUBSCRIBE_TOPIC"),
                json!("victim"),
                json!(room),
            ],
            &["CLIENT_UNSUBSCRIBE_TOPIC", room],
        )
        .await;
    }
    let rooms = rooms_of(&relay, "victim");
    assert!(
        rooms.iter().all(|r| r.starts_with("__p2p_")),
        "the victim was put in {rooms:?}"
    );

    // The subscriber still hears both services.
    for (svc, log) in services.iter().zip(&logs) {
        svc.publish("t", json!("still here")).await;
        log.wait_len("the publication", 1).await;
        assert_eq!(log.get(), vec![published(json!("still here"))]);
    }

    // A seed-era client service adds and removes clients in its own topic rooms.
    let mut svc = raw_as(&relay, "raw-svc").await;
    let room = topic_room("raw-svc", "x");
    svc.emit_with_ack(
        "JOIN_ROOM",
        vec![json!("SERVICE_CREATE_TOPIC"), json!(room)],
    )
    .await;
    let heard = Log::new();
    {
        let heard = heard.clone();
        victim.on_raw(&topic_event(&room), move |args| heard.push(args));
    }
    assert_eq!(
        svc.emit_with_ack(
            "JOIN_ROOM",
            vec![
                json!("CLIENT_SUBSCRIBE_TOPIC"),
                json!("victim"),
                json!(room)
            ],
        )
        .await,
        Vec::<Value>::new()
    );
    assert!(rooms_of(&relay, "victim").contains(&room));
    svc.emit(
        "EMIT_ROOM",
        vec![json!(room), json!(topic_event(&room)), json!(1)],
    )
    .await;
    heard.wait_len("the raw service's publication", 1).await;
    assert_eq!(heard.get(), vec![vec![json!(1)]]);
    assert_eq!(
        svc.emit_with_ack(
            "LEAVE_ROOM",
            vec![
                json!("CLIENT_UNSUBSCRIBE_TOPIC"),
                json!("victim"),
                json!(room)
            ],
        )
        .await,
        Vec::<Value>::new()
    );
    assert!(!rooms_of(&relay, "victim").contains(&room));
    assert!(svc.errors.try_recv().is_err(), "the service got no error");
}

// Attack: SERVICE_DESTROY_TOPIC on a plain room (every member is told the "topic" is destroyed
// and removed), or on a topic room of another service whose name merely starts the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_destroy_topic_acts_only_on_the_callers_own_topic_rooms() {
    let relay = relay().await;
    let alice = client(&relay, "alice").await;
    let bob = client(&relay, "bob").await;
    let mut seedy = raw_as(&relay, "seedy").await;
    alice.join_room("lobby").await.unwrap();
    bob.join_room("lobby").await.unwrap();
    seedy.emit_with_ack("JOIN_ROOM", vec![json!("lobby")]).await;
    let news = relay.server().as_service("news");
    news.create_topic("t:topic:z").unwrap();
    let sub = client(&relay, "sub").await;
    let (log, h) = topic_log();
    sub.subscribe_topic("news", "t:topic:z", h).await.unwrap();
    let news_room = topic_room("news", "t:topic:z");

    let mut mallory = raw_as(&relay, "mallory").await;
    seed_refused(
        &mut mallory,
        "LEAVE_ROOM",
        vec![json!("SERVICE_DESTROY_TOPIC"), json!("lobby")],
        &["SERVICE_DESTROY_TOPIC", "lobby", "mallory"],
    )
    .await;
    // `service:news:topic:t:topic:z` starts like a topic room of a client named `news:topic:t`,
    // but it is topic `t:topic:z` of the server's service `news`.
    let mut lookalike = raw_client(&format!("{}?clientId=news%3Atopic%3At", relay.url())).await;
    eventually("the lookalike registers", || {
        relay.server().is_connected("news:topic:t")
    })
    .await;
    for (event, args) in [
        (
            "LEAVE_ROOM",
            vec![json!("SERVICE_DESTROY_TOPIC"), json!(news_room)],
        ),
        (
            "EMIT_ROOM",
            vec![
                json!(news_room),
                json!(topic_event(&news_room)),
                json!("forged"),
            ],
        ),
        (
            "JOIN_ROOM",
            vec![json!("SERVICE_CREATE_TOPIC"), json!(news_room)],
        ),
    ] {
        seed_refused(&mut lookalike, event, args, &[&news_room, "news"]).await;
    }

    // Everyone is still in the lobby and was told nothing.
    let heard = Log::new();
    for c in [&alice, &bob] {
        let heard = heard.clone();
        let me = c.id().to_string();
        c.on_raw("news", move |args| heard.push((me.clone(), args)));
    }
    let carol = client(&relay, "carol").await;
    carol.emit_room("lobby", "news", ("after",)).await.unwrap();
    heard.wait_len("both lobby members hear carol", 2).await;
    eventually("the seed member hears carol", || {
        event_names(&seedy).contains(&"news".to_string())
    })
    .await;
    assert_eq!(event_names(&seedy), vec!["news".to_string()]);
    assert!(seedy.errors.try_recv().is_err());

    // The server's topic still works, and its destroy is the one that counts.
    news.publish_topic("t:topic:z", ("real",)).unwrap();
    log.wait_len("the real publication", 1).await;
    news.destroy_topic("t:topic:z").unwrap();
    log.wait_len("the real destroy notice", 2).await;
    assert_eq!(
        log.get(),
        vec![published(json!("real")), TopicEvent::Destroyed]
    );

    // A client service still destroys its own topics.
    let cli = service_client(&relay, "cli").await;
    cli.create_topic("mine").await.unwrap();
    let (mine, h) = topic_log();
    alice.subscribe_topic("cli", "mine", h).await.unwrap();
    cli.destroy_topic("mine").await.unwrap();
    mine.wait_len("the client service's destroy notice", 1)
        .await;
    assert_eq!(mine.get(), vec![TopicEvent::Destroyed]);
    assert!(!rooms_of(&relay, "alice").contains(&topic_room("cli", "mine")));
}

// Attack: connect under the name of a service the server provides, to receive the calls of the
// APIs the server lacks and to destroy the server's topics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_service_names_cannot_be_claimed_by_clients() {
    let relay = relay().await;
    let jobs = relay.server().as_service("jobs");
    jobs.provide_service("run", |call| call.respond(("done",)))
        .unwrap();
    jobs.create_topic("done").unwrap();
    let sub = client(&relay, "sub").await;
    let (log, h) = topic_log();
    sub.subscribe_topic("jobs", "done", h).await.unwrap();

    match P2pClient::connect(&relay.url(), "jobs").await {
        Err(Error::Refused(text)) => assert_says(&text, &["'jobs'", "service"]),
        other => panic!("expected a refusal, got {other:?}"),
    }
    match ServiceClient::connect(&relay.url(), "jobs").await {
        Err(Error::Refused(text)) => assert_says(&text, &["'jobs'", "service"]),
        other => panic!(
            "expected a refusal, got {:?}",
            other.map(|s| s.name().to_string())
        ),
    }
    let mut raw = raw_client(&format!("{}?clientId=jobs", relay.url())).await;
    assert_says(
        &raw.next_error("connecting as jobs").await,
        &["connection refused", "'jobs'", "service"],
    );
    raw.wait_closed("the relay disconnects the impostor").await;
    assert!(!relay.server().is_connected("jobs"));

    // Callers reach the server's service, and an API it lacks is its error, not a relay.
    let caller = client(&relay, "caller").await;
    let done: String = caller.request_service("jobs", "run", ()).await.unwrap();
    assert_eq!(done, "done");
    let e = caller
        .request_service::<Value>("jobs", "steal", ())
        .await
        .unwrap_err();
    assert_says(&e.to_string(), &["service 'jobs' has no API 'steal'"]);
    jobs.publish_topic("done", ("job-1",)).unwrap();
    log.wait_len("the publication", 1).await;
    assert_eq!(log.get(), vec![published(json!("job-1"))]);

    // A client already connected under a name the server then takes for a service is told why
    // and disconnected.
    let early = client(&relay, "reports").await;
    let told = Log::new();
    {
        let told = told.clone();
        early.on_server_error(move |t| told.push(t));
    }
    let reports = relay.server().as_service("reports");
    within("the early client is disconnected", early.closed()).await;
    assert!(
        told.get().iter().any(|t| t.contains("service 'reports'")),
        "{:?}",
        told.get()
    );
    eventually("the early client is gone", || {
        !relay.server().is_connected("reports")
    })
    .await;
    reports
        .provide_service("count", |call| call.respond((3,)))
        .unwrap();
    let n: i64 = caller
        .request_service("reports", "count", ())
        .await
        .unwrap();
    assert_eq!(n, 3);
}

// Attack: connect as `<other>-server-side` and pose as the server's end of `<other>`'s streams.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_side_ids_cannot_be_claimed_by_clients() {
    let relay = relay().await;
    let bob = client(&relay, "bob").await;
    for id in ["bob-server-side", "-server-side"] {
        match P2pClient::connect(&relay.url(), id).await {
            Err(Error::Refused(text)) => assert_says(&text, &[id, "-server-side", "server's end"]),
            other => panic!("expected a refusal of {id}, got {other:?}"),
        }
        let mut raw = raw_client(&format!("{}?clientId={id}", relay.url())).await;
        assert_says(
            &raw.next_error(id).await,
            &["connection refused", id, "server's end"],
        );
        raw.wait_closed("the relay disconnects the impostor").await;
        assert!(!relay.server().is_connected(id));
    }

    // Another client cannot open a stream to bob's server end either.
    let alice = client(&relay, "alice").await;
    assert_refused(
        alice.add_p2p_stream("bob-server-side").await,
        &["bob-server-side", "server's end", "alice-server-side"],
    );

    // Bob's streams with the server work both ways.
    let mut incoming = relay.server().incoming_streams(None);
    let opener = tokio::spawn({
        let bob = bob.clone();
        async move { bob.add_p2p_stream("bob-server-side").await }
    });
    let mut at_server = within("the server accepts", incoming.next()).await.unwrap();
    let mut mine = within("open", opener).await.unwrap().unwrap();
    assert_eq!(at_server.peer_id(), "bob");
    mine.write_all(b"to the server").await.unwrap();
    mine.shutdown().await.unwrap();
    let mut got = String::new();
    within("the server reads", at_server.read_to_string(&mut got))
        .await
        .unwrap();
    assert_eq!(got, "to the server");
    drop((mine, at_server));

    let mut bob_incoming = bob.incoming_streams(None);
    let server = relay.server().clone();
    let opener =
        tokio::spawn(async move { server.add_p2p_stream("bob", StreamOptions::default()).await });
    let mut at_bob = within("bob accepts", bob_incoming.next()).await.unwrap();
    let mut from_server = within("open", opener).await.unwrap().unwrap();
    assert_eq!(at_bob.peer_id(), "bob-server-side");
    from_server.write_all(b"from the server").await.unwrap();
    from_server.shutdown().await.unwrap();
    let mut got = String::new();
    within("bob reads", at_bob.read_to_string(&mut got))
        .await
        .unwrap();
    assert_eq!(got, "from the server");
}
