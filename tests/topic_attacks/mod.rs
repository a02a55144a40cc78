//! The steps of the attacks on topic rooms that `tests/rules.rs` (a relay without
//! authentication) and `tests/attacks.rs` (a relay that requires tokens) both make: each names
//! its attackers, a Rust client and a raw seed client, and adds what only it checks.
#![allow(dead_code)]

use crate::common::*;
use serde_json::{json, Value};
use socketio_p2p::service::{topic_event, topic_room};
use socketio_p2p::{P2pClient, Relay, TopicEvent};

/// Attack on `svc`'s topic `t`: `JOIN_ROOM` its room, from the Rust client `rust` (id
/// `rust_id`) and from the seed client `seed` (id `seed_id`, also with the service's own
/// `SERVICE_CREATE_TOPIC` form). Both are refused and put in no room; then both subscribe to the
/// topic `sentinel` the proper way, and while `sub` (subscribed to `t` here) hears the
/// publication of `t`, neither attacker hears it before the sentinel's.
pub async fn join_topic_room(
    relay: &Relay,
    svc: &Svc,
    sub: &P2pClient,
    (rust, rust_id): (&P2pClient, &str),
    (seed, seed_id): (&mut RawClient, &str),
) {
    let name = svc.name();
    let room = topic_room(&name, "t");
    let (log, h) = topic_log();
    sub.subscribe_topic(&name, "t", h).await.unwrap();

    // A Rust client's plain JOIN_ROOM.
    assert_refused(
        rust.join_room(&room).await,
        &[&room, &name, "SUBSCRIBE_TOPIC"],
    );
    // A seed client's JOIN_ROOM, and the service's own form.
    seed_refused(
        seed,
        "JOIN_ROOM",
        vec![json!(room)],
        &[&room, "SUBSCRIBE_TOPIC"],
    )
    .await;
    seed_refused(
        seed,
        "JOIN_ROOM",
        vec![json!("SERVICE_CREATE_TOPIC"), json!(room)],
        &["SERVICE_CREATE_TOPIC", &room, seed_id],
    )
    .await;
    assert!(!rooms_of(relay, rust_id).contains(&room));
    assert!(!rooms_of(relay, seed_id).contains(&room));

    // Both attackers subscribe to the sentinel the proper way; the sentinel is published after
    // `t`, so once it arrives, a publication to `t` would have arrived before it.
    let heard = Log::new();
    {
        let heard = heard.clone();
        rust.on_raw(&topic_event(&room), move |args| heard.push(args));
    }
    let (rust_sentinel, h) = topic_log();
    rust.subscribe_topic(&name, "sentinel", h).await.unwrap();
    seed_subscribe(seed, seed_id, &name, "sentinel").await;

    svc.publish("t", json!("p1")).await;
    svc.publish("sentinel", json!("s1")).await;
    log.wait_len("the subscriber's publication", 1).await;
    assert_eq!(log.get(), vec![published(json!("p1"))]);
    rust_sentinel
        .wait_len(&format!("{rust_id}'s sentinel"), 1)
        .await;
    let sentinel_event = topic_event(&topic_room(&name, "sentinel"));
    eventually(&format!("{seed_id}'s sentinel"), || {
        event_names(seed).contains(&sentinel_event)
    })
    .await;
    assert!(heard.get().is_empty(), "{rust_id} heard {:?}", heard.get());
    assert!(
        !event_names(seed).contains(&topic_event(&room)),
        "{seed_id} heard {:?}",
        seed.events.get()
    );
}

/// `EMIT_ROOM` into topic room `room` of service `name`, from the Rust client `rust` and the seed
/// client `seed`: a forged publication, a fake destroy notice and any other event are refused
/// with `BAD_REQUEST` naming the room and the service.
pub async fn emit_into_topic_room(rust: &P2pClient, seed: &mut RawClient, name: &str, room: &str) {
    let (published_event, destroyed_event) = (
        topic_event(room),
        socketio_p2p::service::topic_destroyed_event(room),
    );
    for (event, args) in [
        (published_event.as_str(), vec![json!("forged")]),
        (destroyed_event.as_str(), vec![]),
        ("chat", vec![json!("hi")]),
    ] {
        assert_refused(
            rust.emit_room(room, event, socketio_p2p::Args(args.clone()))
                .await,
            &["EMIT_ROOM", room, name],
        );
        let mut all = vec![json!(room), json!(event)];
        all.extend(args);
        seed_refused(seed, "EMIT_ROOM", all, &["EMIT_ROOM", room, name]).await;
    }
}

/// Topic `room`'s `event` sent into the plain room `lobby` by the Rust client `rust` and the
/// seed client `seed`: both refused, naming the event and the topic room.
pub async fn topic_event_into_lobby(
    rust: &P2pClient,
    seed: &mut RawClient,
    event: &str,
    room: &str,
) {
    assert_refused(
        rust.emit_room("lobby", event, ("forged",)).await,
        &[event, room],
    );
    seed_refused(
        seed,
        "EMIT_ROOM",
        vec![json!("lobby"), json!(event), json!("forged")],
        &[event, room],
    )
    .await;
}

/// Topic `room`'s `event` sent as a message to a subscriber, `sub` by the Rust client `rust`,
/// `seed-sub` by the seed client `seed` (id `seed_id`): both refused, naming the event and the
/// topic room.
pub async fn topic_event_as_message(
    rust: &P2pClient,
    (seed, seed_id): (&mut RawClient, &str),
    event: &str,
    room: &str,
) {
    assert_refused(
        rust.request::<Value>("sub", event, ("forged",)).await,
        &[event, room],
    );
    seed_refused(
        seed,
        "P2P_EMIT_ACKNOWLEDGE",
        vec![json!({
            "targetClientId": "seed-sub",
            "event": event,
            "args": [seed_id, "forged"],
        })],
        &[event, room],
    )
    .await;
}

/// After the attacks on `svc`'s topic `t`: its subscribers, the Rust one recording into `log` and
/// the seed one `seed_sub`, are still subscribed and hear only the service's publication; the
/// service still destroys the topic, and both are told.
pub async fn subscribers_hear_only_the_service(
    svc: &Svc,
    log: &Log<TopicEvent>,
    seed_sub: &RawClient,
) {
    let room = topic_room(&svc.name(), "t");
    let (published_event, destroyed_event) = (
        topic_event(&room),
        socketio_p2p::service::topic_destroyed_event(&room),
    );
    svc.publish("t", json!("real")).await;
    log.wait_len("the real publication", 1).await;
    assert_eq!(log.get(), vec![published(json!("real"))]);
    eventually("the seed subscriber's publication", || {
        event_names(seed_sub).contains(&published_event)
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
        !event_names(seed_sub).contains(&destroyed_event),
        "{:?}",
        seed_sub.events.get()
    );

    // The service still destroys its topic: both subscribers are told.
    svc.destroy("t").await;
    log.wait_len("the destroy notice", 2).await;
    assert_eq!(
        log.get(),
        vec![published(json!("real")), TopicEvent::Destroyed]
    );
    eventually("the seed subscriber's destroy notice", || {
        event_names(seed_sub).contains(&destroyed_event)
    })
    .await;
}

/// Attack from the seed client `seed` (id `seed_id`): kick the subscriber `sub` out of the topic
/// `t` of each of `services` (`CLIENT_UNSUBSCRIBE_TOPIC`), force `victim` or itself into it
/// (`CLIENT_SUBSCRIBE_TOPIC`), or act so on a plain room or a topic room of a service nobody
/// provides. Each is refused; `sub` stays in the topic rooms and `victim` is put in no room.
pub async fn kick_and_force(
    relay: &Relay,
    services: &[Svc],
    (seed, seed_id): (&mut RawClient, &str),
) {
    for svc in services {
        let room = topic_room(&svc.name(), "t");
        seed_refused(
            seed,
            "LEAVE_ROOM",
            vec![json!("CLIENT_UNSUBSCRIBE_TOPIC"), json!("sub"), json!(room)],
            &["CLIENT_UNSUBSCRIBE_TOPIC", &room, seed_id],
        )
        .await;
        for who in ["victim", seed_id] {
            seed_refused(
                seed,
                "JOIN_ROOM",
                vec![json!("CLIENT_SUBSCRIBE_TOPIC"), json!(who), json!(room)],
                &["CLIENT_SUBSCRIBE_TOPIC", &room, seed_id],
            )
            .await;
        }
        assert!(rooms_of(relay, "sub").contains(&room));
    }
    // Any plain room, and a topic room of a service that does not exist.
    for room in ["lobby", "service:ghost:topic:t"] {
        for (event, action) in [
            ("JOIN_ROOM", "CLIENT_SUBSCRIBE_TOPIC"),
            ("LEAVE_ROOM", "CLIENT_UNSUBSCRIBE_TOPIC"),
        ] {
            seed_refused(
                seed,
                event,
                vec![json!(action), json!("victim"), json!(room)],
                &[action, room],
            )
            .await;
        }
    }
    let rooms = rooms_of(relay, "victim");
    assert!(
        rooms.iter().all(|r| r.starts_with("__p2p_")),
        "the victim was put in {rooms:?}"
    );
}

/// Each of `services` publishes `value` into its topic `t`, and the subscriber recording that
/// topic into the matching one of `logs` hears it (and only it).
pub async fn subscriber_hears(services: &[Svc], logs: &[Log<TopicEvent>], value: Value) {
    for (svc, log) in services.iter().zip(logs) {
        svc.publish("t", value.clone()).await;
        log.wait_len("the publication", 1).await;
        assert_eq!(log.get(), vec![published(value.clone())]);
    }
}

/// `alice` and `bob` (Rust clients) and `member` (a seed client) are in the room `lobby`:
/// `carol`'s emit there reaches all three, and the seed member heard nothing before it and got
/// no error.
pub async fn lobby_hears_only_carol(
    alice: &P2pClient,
    bob: &P2pClient,
    member: &mut RawClient,
    carol: &P2pClient,
) {
    let heard = Log::new();
    for c in [alice, bob] {
        let heard = heard.clone();
        let me = c.id().to_string();
        c.on_raw("news", move |args| heard.push((me.clone(), args)));
    }
    carol.emit_room("lobby", "news", ("after",)).await.unwrap();
    heard.wait_len("both lobby members hear carol", 2).await;
    eventually("the seed member hears carol", || {
        event_names(member).contains(&"news".to_string())
    })
    .await;
    assert_eq!(event_names(member), vec!["news".to_string()]);
    assert!(member.errors.try_recv().is_err());
}

/// The server's service `jobs` (API `run` answering "done", topic `done` that `log` follows)
/// after the attempts to claim its name: `caller` reaches it, an API it lacks is its error, and
/// its publication arrives.
pub async fn server_service_still_serves(
    caller: &P2pClient,
    jobs: &socketio_p2p::ServiceHandle,
    log: &Log<TopicEvent>,
) {
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
}

/// `early`, connected as `reports`, is told why and disconnected when the server then takes
/// that name for a service; returns the service.
pub async fn early_client_is_told(relay: &Relay, early: &P2pClient) -> socketio_p2p::ServiceHandle {
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
    reports
}

/// Both kinds of service, each with the topics `t` and `sentinel`: `news-srv` provided by the
/// server, `news-cli` by the client service that `news_cli` connects.
pub async fn two_services(
    relay: &Relay,
    news_cli: impl std::future::Future<Output = socketio_p2p::ServiceClient>,
) -> [Svc; 2] {
    let services = [
        Svc::Server(relay.server().as_service("news-srv")),
        Svc::Client(news_cli.await),
    ];
    for s in &services {
        s.create(&["t", "sentinel"]).await;
    }
    services
}
