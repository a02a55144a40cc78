//! The relay's rules for topic rooms and reserved ids (PROTOCOL.md, "Rules"): each attack a
//! client could make is refused with an error to the attacker, and the legitimate subscribers,
//! services and server keep working. Real relay on loopback, real Rust clients and raw Socket.IO
//! clients speaking the seed protocol.

mod common;
mod topic_attacks;
use common::*;
use serde_json::{json, Value};
use socketio_p2p::service::{topic_destroyed_event, topic_event, topic_room};
use socketio_p2p::{Error, P2pClient, ServiceClient, StreamOptions, TopicEvent};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

// Attack: join a topic room with JOIN_ROOM (or the service's own SERVICE_CREATE_TOPIC form) and
// read the publications without subscribing, for server and client services alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_rooms_are_joined_only_through_subscribe_topic() {
    let relay = relay().await;
    let services = topic_attacks::two_services(&relay, service_client(&relay, "news-cli")).await;
    let sub = client(&relay, "sub").await;
    let eve = client(&relay, "eve").await;
    let mut mallory = raw_as(&relay, "mallory").await;

    for svc in &services {
        topic_attacks::join_topic_room(&relay, svc, &sub, (&eve, "eve"), (&mut mallory, "mallory"))
            .await;
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
    let services = topic_attacks::two_services(&relay, service_client(&relay, "news-cli")).await;
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
        topic_attacks::emit_into_topic_room(&eve, &mut mallory, &name, &room).await;
        // The topic's events through a plain room both subscribers are in.
        for event in [&published_event, &destroyed_event] {
            topic_attacks::topic_event_into_lobby(&eve, &mut mallory, event, &room).await;
        }
        // The topic's events as messages to a subscriber.
        for event in [&published_event, &destroyed_event] {
            topic_attacks::topic_event_as_message(&eve, (&mut mallory, "mallory"), event, &room)
                .await;
        }

        // The subscribers are still subscribed and heard only the service, which still
        // destroys its topic.
        topic_attacks::subscribers_hear_only_the_service(svc, &log, &seed_sub).await;
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
    let services = topic_attacks::two_services(&relay, service_client(&relay, "news-cli")).await;
    let sub = client(&relay, "sub").await;
    let victim = client(&relay, "victim").await;
    let mut mallory = raw_as(&relay, "mallory").await;
    let mut logs = Vec::new();
    for svc in &services {
        let (log, h) = topic_log();
        sub.subscribe_topic(&svc.name(), "t", h).await.unwrap();
        logs.push(log);
    }

    topic_attacks::kick_and_force(&relay, &services, (&mut mallory, "mallory")).await;

    // The subscriber still hears both services.
    topic_attacks::subscriber_hears(&services, &logs, json!("still here")).await;

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
    let carol = client(&relay, "carol").await;
    topic_attacks::lobby_hears_only_carol(&alice, &bob, &mut seedy, &carol).await;

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
    topic_attacks::server_service_still_serves(&caller, &jobs, &log).await;

    // A client already connected under a name the server then takes for a service is told why
    // and disconnected.
    let early = client(&relay, "reports").await;
    let reports = topic_attacks::early_client_is_told(&relay, &early).await;
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
