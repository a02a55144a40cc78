//! The attacks on client identity, against a relay with authentication on (JWT HS256): the
//! attacker, mallory, always holds a valid token for her own id, and uses it from a Rust client
//! or from a raw Socket.IO client speaking the seed protocol with the token in its query (as
//! socket.io-client 2 does). Each attack is refused with an error to mallory; the victim stays
//! connected, still gets its legitimate traffic and never sees mallory's. Real relay on loopback,
//! real clients. (`tests/rules.rs` makes the same attacks on a relay without authentication.)

mod common;
mod topic_attacks;
use common::*;
use serde_json::{json, Value};
use socketio_p2p::auth::{mint_hs256, Claims, Permissions, RefusalReason, Rule};
use socketio_p2p::service::{topic_destroyed_event, topic_event, topic_room};
use socketio_p2p::{
    DuplicateIdPolicy, Error, P2pClient, Relay, ServerOptions, ServiceClient, StreamOptions,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `id`, connected with a valid token of its own carrying `permissions` (`None`: no claim, the
/// relay's defaults).
async fn authed_with(relay: &Relay, id: &str, permissions: Option<Permissions>) -> P2pClient {
    let token = match permissions {
        Some(p) => jwt_token_with(id, p),
        None => jwt_token(id),
    };
    connect_token(relay, id, Some(token))
        .await
        .unwrap_or_else(|e| panic!("'{id}' connects with its token: {e}"))
}

/// `id`, connected with a valid token of its own without permissions.
async fn authed(relay: &Relay, id: &str) -> P2pClient {
    authed_with(relay, id, None).await
}

/// The client that is service `name`, connected with its token.
async fn authed_service(relay: &Relay, name: &str) -> ServiceClient {
    within(
        "the service connects",
        P2pClient::connect_service(&relay.url(), name, token_opts(Some(jwt_token(name)))),
    )
    .await
    .unwrap_or_else(|e| panic!("service client '{name}' connects with its token: {e}"))
}

/// A raw seed-protocol client proving `id` with `token` in the query, once registered.
async fn raw_with_token(relay: &Relay, id: &str, token: &str) -> RawClient {
    let c = raw_client(&format!("{}?clientId={id}&token={token}", relay.url())).await;
    eventually("the raw client registers", || {
        relay.server().is_connected(id)
    })
    .await;
    c
}

/// A raw seed-protocol client with a valid token of its own id.
async fn raw_authed(relay: &Relay, id: &str) -> RawClient {
    raw_with_token(relay, id, &jwt_token(id)).await
}

/// The text of a connect the relay refused once authenticated ([`Error::Refused`]).
fn refused_connect<T>(result: socketio_p2p::Result<T>) -> String {
    match result {
        Err(Error::Refused(text)) => text,
        Err(e) => panic!("expected the relay to refuse the connection, got {e:?}"),
        Ok(_) => panic!("expected a refusal, it connected"),
    }
}

/// `who` sends `raw` (connected as `raw_id`) the event `sentinel` and waits until it arrives:
/// whatever `who` sent towards `raw` before has arrived too.
async fn sentinel(who: &P2pClient, raw: &RawClient, raw_id: &str) {
    who.emit_to(raw_id, "sentinel", ()).await.unwrap();
    eventually(&format!("{raw_id} gets the sentinel"), || {
        event_names(raw).contains(&"sentinel".to_string())
    })
    .await;
}

/// Attack: connect under the id of a client that is offline and receive its messages.
///
/// Only bob's token proves `bob`. Without a token, with mallory's own token, or with a token for
/// `bob` that mallory signed herself, the connect fails with the reason (`missing token`,
/// `token subject mismatch`, `bad token signature`); a second `clientId` in the query does not
/// change whom a token proves. While bob is away, a request for him fails at its sender with
/// `Error::UnknownTarget` ("client 'bob' is not connected to the relay"); once bob is back with his token, he gets his messages, and mallory none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_clients_id_is_claimed_only_with_its_token() {
    let relay = jwt_relay().await;
    let alice = authed(&relay, "alice").await;
    let bob = authed(&relay, "bob").await;
    bob.disconnect().await.unwrap();
    eventually("bob is offline", || !relay.server().is_connected("bob")).await;

    let mallorys = jwt_token("mallory");
    let (reason, text) = unauthorized(connect_token(&relay, "bob", None).await);
    assert_eq!(reason, RefusalReason::MissingToken);
    assert!(text.starts_with("missing token"), "{text}");
    let (reason, text) = unauthorized(connect_token(&relay, "bob", Some(mallorys.clone())).await);
    assert_eq!(reason, RefusalReason::SubjectMismatch);
    assert_eq!(
        text,
        "token subject mismatch: the token is for client 'mallory', the connection asks for \
         clientId 'bob'"
    );
    let self_signed = mint_hs256(b"mallory's own secret", &Claims::new("bob", hour())).unwrap();
    let (reason, text) =
        unauthorized(connect_token(&relay, "bob", Some(self_signed.clone())).await);
    assert_eq!(reason, RefusalReason::BadSignature);
    assert!(text.starts_with("bad token signature"), "{text}");

    // A seed client (the token in the query), and a Socket.IO 4 client (in the auth payload).
    let url = relay.url();
    let text = raw_connect_error(&format!("{url}?clientId=bob"), None).await;
    assert_says(&text, &["missing token"]);
    for query in [
        format!("clientId=bob&token={mallorys}"),
        // The first clientId is the one the token must prove.
        format!("clientId=bob&clientId=mallory&token={mallorys}"),
    ] {
        let text = raw_connect_error(&format!("{url}?{query}"), None).await;
        assert_says(&text, &["token subject mismatch", "'mallory'", "'bob'"]);
    }
    let text = raw_connect_error(&format!("{url}?token={self_signed}"), None).await;
    assert_says(&text, &["bad token signature"]);
    let text = raw_connect_error(
        &format!("{url}?clientId=bob"),
        Some(json!({ "token": mallorys })),
    )
    .await;
    assert_says(&text, &["token subject mismatch", "'mallory'", "'bob'"]);
    // A connection that proves mallory is mallory, whatever else its query names.
    let mallory = raw_client(&format!(
        "{url}?clientId=mallory&clientId=bob&token={mallorys}"
    ))
    .await;
    eventually("mallory registers", || {
        relay.server().is_connected("mallory")
    })
    .await;
    let mut online = relay.server().client_ids();
    online.sort();
    assert_eq!(online, ["alice", "mallory"]);

    // While bob is away, his messages fail at their sender.
    match alice
        .request::<String>("bob", "for-bob", ("secret 1",))
        .await
    {
        Err(Error::UnknownTarget(id)) => assert_eq!(id, "bob"),
        other => panic!("expected bob to be unknown, got {other:?}"),
    }

    // Back with his token, bob gets his messages.
    let bob = authed(&relay, "bob").await;
    let at_bob = Log::new();
    {
        let at_bob = at_bob.clone();
        bob.on("for-bob", move |m| {
            at_bob.push((m.from.clone(), m.args.clone()));
            m.respond("got it");
        });
    }
    let answer: String = alice
        .request("bob", "for-bob", ("secret 2",))
        .await
        .unwrap();
    assert_eq!(answer, "got it");
    assert_eq!(
        at_bob.get(),
        [("alice".to_string(), vec![json!("secret 2")])]
    );
    sentinel(&alice, &mallory, "mallory").await;
    assert_eq!(event_names(&mallory), ["sentinel"]);
}

/// Attack: take over bob's live connection on a relay that lets a newer connection replace an
/// older one under the same id (`--replace-duplicates`, [`DuplicateIdPolicy::Replace`]).
///
/// Only a connection proving `bob` replaces bob: mallory's token (in the auth payload or the
/// query) gets `token subject mismatch`, no token `missing token`. Bob is never told he was
/// replaced, his peers are never told he left, and his requests keep reaching him. Bob's own
/// token does take over, which shows the policy is on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replace_duplicates_hands_an_online_id_only_to_its_own_token() {
    let relay = jwt_relay_with(ServerOptions {
        duplicate_ids: DuplicateIdPolicy::Replace,
        ..ServerOptions::default()
    })
    .await;
    let bob = authed(&relay, "bob").await;
    let told_bob = Log::new();
    {
        let told_bob = told_bob.clone();
        bob.on_server_error(move |t| told_bob.push(t));
    }
    let at_bob = Log::new();
    {
        let at_bob = at_bob.clone();
        bob.on("for-bob", move |m| {
            at_bob.push(m.args.clone());
            m.respond("bob here");
        });
    }
    let alice = authed(&relay, "alice").await;
    alice.add_p2p_target("bob").await.unwrap();
    let gone = Log::new();
    {
        let gone = gone.clone();
        alice.on_p2p_target_disconnect(move |id| gone.push(id));
    }

    let mallorys = jwt_token("mallory");
    let (reason, _) = unauthorized(connect_token(&relay, "bob", None).await);
    assert_eq!(reason, RefusalReason::MissingToken);
    let (reason, text) = unauthorized(connect_token(&relay, "bob", Some(mallorys.clone())).await);
    assert_eq!(reason, RefusalReason::SubjectMismatch);
    assert_says(&text, &["'mallory'", "'bob'"]);
    let url = relay.url();
    let text = raw_connect_error(&format!("{url}?clientId=bob"), None).await;
    assert_says(&text, &["missing token"]);
    let text = raw_connect_error(&format!("{url}?clientId=bob&token={mallorys}"), None).await;
    assert_says(&text, &["token subject mismatch", "'mallory'", "'bob'"]);
    // mallory's token without a clientId connects as mallory, beside bob.
    let mallory = raw_client(&format!("{url}?token={mallorys}")).await;
    eventually("mallory registers", || {
        relay.server().is_connected("mallory")
    })
    .await;

    assert!(bob.is_connected());
    let answer: String = alice
        .request("bob", "for-bob", ("still you?",))
        .await
        .unwrap();
    assert_eq!(answer, "bob here");
    assert_eq!(at_bob.get(), [vec![json!("still you?")]]);
    sentinel(&alice, &mallory, "mallory").await;
    assert_eq!(event_names(&mallory), ["sentinel"]);
    assert!(
        told_bob.get().is_empty(),
        "bob was told {:?}",
        told_bob.get()
    );
    assert!(
        gone.get().is_empty(),
        "alice was told {:?} left",
        gone.get()
    );

    // Bob's own token takes over: the old connection is told and closed, alice sees it go.
    let bob2 = authed(&relay, "bob").await;
    within("the older connection closes", bob.closed()).await;
    assert!(
        told_bob
            .get()
            .iter()
            .any(|t| t.contains("a newer connection took over client id 'bob'")),
        "{:?}",
        told_bob.get()
    );
    gone.wait_len("alice's notice", 1).await;
    assert_eq!(gone.get(), ["bob"]);
    assert_eq!(bob2.id(), "bob");
}

/// A token's permissions for mallory that allow all a permission can: acting as either service
/// (`serve`) and following any topics (`subscribe`). The relay's rules, not her permissions,
/// decide who a topic's service is.
fn as_if_the_services() -> Option<Permissions> {
    Some(Permissions {
        serve: Rule::allow(["news-srv", "news-cli", "mallory"]),
        subscribe: Rule::allow(["*"]),
        ..Permissions::default()
    })
}

/// Attack: `JOIN_ROOM` a topic room (`service:<s>:topic:<t>`), or claim it with the service's
/// own `SERVICE_CREATE_TOPIC` form, and read the publications without subscribing; for a topic
/// of a server service and of a client service.
///
/// mallory's client gets `BAD_REQUEST` ("... a client joins it by calling the service's
/// SUBSCRIBE_TOPIC"), though her token allows her to serve and subscribe to both services; a
/// seed client gets the same text as `SERVER_ERROR` and acknowledgement. Neither is put in the
/// room nor hears a publication of `t`, while the subscriber does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_rooms_are_joined_only_through_subscribe_topic() {
    let relay = jwt_relay().await;
    let services = topic_attacks::two_services(&relay, authed_service(&relay, "news-cli")).await;
    let sub = authed(&relay, "sub").await;
    let mallory = authed_with(&relay, "mallory", as_if_the_services()).await;
    let mut seedy = raw_authed(&relay, "mallory-seed").await;

    for svc in &services {
        topic_attacks::join_topic_room(
            &relay,
            svc,
            &sub,
            (&mallory, "mallory"),
            (&mut seedy, "mallory-seed"),
        )
        .await;
    }
    assert!(sub.is_connected());
}

/// Attack: publish into a topic room with `EMIT_ROOM` (a forged publication, a fake
/// `<room>-TOPIC_BEING_DESTROYED`, any other event), or send a topic's events another way: into
/// a plain room the subscribers are in, or as a message to a subscriber.
///
/// Each is refused with `BAD_REQUEST` naming the topic's service ("EMIT_ROOM: only service ...
/// publishes into its topic room"), though mallory's token allows her to serve both services.
/// The subscribers, a Rust client and a seed client, stay subscribed, hear only the service's
/// publication, and are told of the destroy once, when the service destroys the topic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_publications_and_destroy_notices_are_refused() {
    let relay = jwt_relay().await;
    let services = topic_attacks::two_services(&relay, authed_service(&relay, "news-cli")).await;
    let sub = authed(&relay, "sub").await;
    sub.join_room("lobby").await.unwrap();
    let mut seed_sub = raw_authed(&relay, "seed-sub").await;
    assert_eq!(
        seed_sub
            .emit_with_ack("JOIN_ROOM", vec![json!("lobby")])
            .await,
        Vec::<Value>::new()
    );
    let mallory = authed_with(&relay, "mallory", as_if_the_services()).await;
    let mut seedy = raw_authed(&relay, "mallory-seed").await;

    for svc in &services {
        let name = svc.name();
        let room = topic_room(&name, "t");
        let (published_event, destroyed_event) = (topic_event(&room), topic_destroyed_event(&room));
        let (log, h) = topic_log();
        sub.subscribe_topic(&name, "t", h).await.unwrap();
        seed_subscribe(&seed_sub, "seed-sub", &name, "t").await;

        topic_attacks::emit_into_topic_room(&mallory, &mut seedy, &name, &room).await;
        for event in [&published_event, &destroyed_event] {
            topic_attacks::topic_event_into_lobby(&mallory, &mut seedy, event, &room).await;
            topic_attacks::topic_event_as_message(
                &mallory,
                (&mut seedy, "mallory-seed"),
                event,
                &room,
            )
            .await;
        }

        topic_attacks::subscribers_hear_only_the_service(svc, &log, &seed_sub).await;
        let notices = event_names(&seed_sub)
            .into_iter()
            .filter(|n| *n == destroyed_event)
            .count();
        assert_eq!(notices, 1);
    }
    assert!(
        seed_sub.errors.try_recv().is_err(),
        "the victim got no error"
    );
    // Nor did mallory's other event into the topic rooms.
    assert!(!event_names(&seed_sub).contains(&"chat".to_string()));
}

/// Attack: kick a subscriber out of a topic (`LEAVE_ROOM("CLIENT_UNSUBSCRIBE_TOPIC", sub,
/// room)`) or force a client into a room (`JOIN_ROOM("CLIENT_SUBSCRIBE_TOPIC", client, room)`):
/// a topic room of another service, a plain room, a topic room of a service nobody provides.
///
/// Each is refused with `BAD_REQUEST` ("CLIENT_..._TOPIC: client 'mallory-seed' acts only on the
/// topic rooms of its own service ..."); the subscriber still hears both services, and the
/// victim is put in no room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_are_neither_kicked_nor_forced_into_rooms() {
    let relay = jwt_relay().await;
    let services = topic_attacks::two_services(&relay, authed_service(&relay, "news-cli")).await;
    let sub = authed(&relay, "sub").await;
    let victim = authed(&relay, "victim").await;
    let mut seedy = raw_authed(&relay, "mallory-seed").await;
    let mut logs = Vec::new();
    for svc in &services {
        let (log, h) = topic_log();
        sub.subscribe_topic(&svc.name(), "t", h).await.unwrap();
        logs.push(log);
    }

    topic_attacks::kick_and_force(&relay, &services, (&mut seedy, "mallory-seed")).await;
    assert!(victim.is_connected());

    topic_attacks::subscriber_hears(&services, &logs, json!("still here")).await;
}

/// Attack: empty a plain room with `LEAVE_ROOM("SERVICE_DESTROY_TOPIC", room)` (every member
/// would be told the "topic" is destroyed and removed), or destroy another service's topic.
///
/// Each is refused with `BAD_REQUEST` ("SERVICE_DESTROY_TOPIC: client 'mallory-seed' acts only
/// on the topic rooms of its own service ..."). The room's members stay in it, are told
/// nothing and still hear its traffic; the topic's subscriber stays subscribed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_destroy_topic_empties_no_room_of_others() {
    let relay = jwt_relay().await;
    let alice = authed(&relay, "alice").await;
    let bob = authed(&relay, "bob").await;
    let mut member = raw_authed(&relay, "seed-member").await;
    alice.join_room("lobby").await.unwrap();
    bob.join_room("lobby").await.unwrap();
    member
        .emit_with_ack("JOIN_ROOM", vec![json!("lobby")])
        .await;
    let services = topic_attacks::two_services(&relay, authed_service(&relay, "news-cli")).await;
    let sub = authed(&relay, "sub").await;
    let mut logs = Vec::new();
    for svc in &services {
        let (log, h) = topic_log();
        sub.subscribe_topic(&svc.name(), "t", h).await.unwrap();
        logs.push(log);
    }

    let mut seedy = raw_authed(&relay, "mallory-seed").await;
    seed_refused(
        &mut seedy,
        "LEAVE_ROOM",
        vec![json!("SERVICE_DESTROY_TOPIC"), json!("lobby")],
        &["SERVICE_DESTROY_TOPIC", "lobby", "mallory-seed"],
    )
    .await;
    for svc in &services {
        let room = topic_room(&svc.name(), "t");
        seed_refused(
            &mut seedy,
            "LEAVE_ROOM",
            vec![json!("SERVICE_DESTROY_TOPIC"), json!(room)],
            &["SERVICE_DESTROY_TOPIC", &room, "mallory-seed"],
        )
        .await;
        assert!(rooms_of(&relay, "sub").contains(&room));
    }
    for id in ["alice", "bob", "seed-member"] {
        assert!(rooms_of(&relay, id).contains(&"lobby".to_string()), "{id}");
    }

    // Everyone in the lobby hears carol's emit, and nothing before it.
    let carol = authed(&relay, "carol").await;
    topic_attacks::lobby_hears_only_carol(&alice, &bob, &mut member, &carol).await;

    topic_attacks::subscriber_hears(&services, &logs, json!("real")).await;
}

/// Attack: join another client's plain room, or emit into it, to read or spoil its traffic;
/// also through the service forms (`SERVICE_CREATE_TOPIC`, `CLIENT_SUBSCRIBE_TOPIC` of oneself,
/// `CLIENT_UNSUBSCRIBE_TOPIC` of its owner).
///
/// The relay's default permissions allow the rooms `public-*` only; mallory's token says the same
/// in its own claim, the seed client's token has no claim and so gets the defaults, and bob's
/// token allows `bob-*` too. Each attempt is refused with `PERMISSION_DENIED` ("client
/// 'mallory' may not join or emit to room 'bob-private'"; for a seed client `SERVER_ERROR` and
/// the acknowledgement), while both may join `public-lobby`. Bob stays in his room, his friend
/// hears what he says there, and neither attacker does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_clients_plain_room_is_closed_by_permissions() {
    let public_only = Permissions {
        rooms: Rule::allow(["public-*"]),
        ..Permissions::default()
    };
    let relay = jwt_relay_with(ServerOptions {
        default_permissions: public_only.clone(),
        ..ServerOptions::default()
    })
    .await;
    let with_private = || {
        Some(Permissions {
            rooms: Rule::allow(["public-*", "bob-*"]),
            ..Permissions::default()
        })
    };
    let bob = authed_with(&relay, "bob", with_private()).await;
    let friend = authed_with(&relay, "friend", with_private()).await;
    bob.join_room("bob-private").await.unwrap();
    friend.join_room("bob-private").await.unwrap();
    let at_friend = Log::new();
    {
        let at_friend = at_friend.clone();
        friend.on_raw("private-news", move |args| at_friend.push(args));
    }
    let mallory = authed_with(&relay, "mallory", Some(public_only)).await;
    let mut seedy = raw_authed(&relay, "mallory-seed").await;

    let text = denied(mallory.join_room("bob-private").await);
    assert_eq!(
        text,
        "client 'mallory' may not join or emit to room 'bob-private'"
    );
    let text = denied(
        mallory
            .emit_room("bob-private", "private-news", ("fake",))
            .await,
    );
    assert_eq!(
        text,
        "client 'mallory' may not join or emit to room 'bob-private'"
    );
    let seed_denial =
        "Error: permission denied: client 'mallory-seed' may not join or emit to room 'bob-private'";
    for (event, args) in [
        ("JOIN_ROOM", vec![json!("bob-private")]),
        (
            "EMIT_ROOM",
            vec![json!("bob-private"), json!("private-news"), json!("fake")],
        ),
        (
            "JOIN_ROOM",
            vec![json!("SERVICE_CREATE_TOPIC"), json!("bob-private")],
        ),
        (
            "JOIN_ROOM",
            vec![
                json!("CLIENT_SUBSCRIBE_TOPIC"),
                json!("mallory-seed"),
                json!("bob-private"),
            ],
        ),
        (
            "LEAVE_ROOM",
            vec![
                json!("CLIENT_UNSUBSCRIBE_TOPIC"),
                json!("bob"),
                json!("bob-private"),
            ],
        ),
    ] {
        let text = seed_refused(&mut seedy, event, args, &[]).await;
        assert_eq!(text, seed_denial, "{event}");
    }
    assert!(!rooms_of(&relay, "mallory").contains(&"bob-private".to_string()));
    assert!(!rooms_of(&relay, "mallory-seed").contains(&"bob-private".to_string()));
    assert!(rooms_of(&relay, "bob").contains(&"bob-private".to_string()));

    // Both may join a public room; bob speaks in his room, then in the public one.
    mallory.join_room("public-lobby").await.unwrap();
    assert_eq!(
        seedy
            .emit_with_ack("JOIN_ROOM", vec![json!("public-lobby")])
            .await,
        Vec::<Value>::new()
    );
    bob.join_room("public-lobby").await.unwrap();
    let heard = Log::new();
    for event in ["private-news", "public-news"] {
        let heard = heard.clone();
        mallory.on_raw(event, move |_| heard.push(event));
    }
    bob.emit_room("bob-private", "private-news", ("for friends",))
        .await
        .unwrap();
    bob.emit_room("public-lobby", "public-news", ("for all",))
        .await
        .unwrap();
    at_friend.wait_len("the friend hears bob", 1).await;
    assert_eq!(at_friend.get(), [vec![json!("for friends")]]);
    heard.wait_len("mallory hears the public emit", 1).await;
    eventually("the seed client hears the public emit", || {
        event_names(&seedy).contains(&"public-news".to_string())
    })
    .await;
    assert_eq!(heard.get(), ["public-news"]);
    let seen: Vec<_> = event_names(&seedy)
        .into_iter()
        .filter(|n| n != "SERVER_ERROR")
        .collect();
    assert_eq!(seen, ["public-news"]);
}

/// Attack: connect under the name of a service the server provides, to take its calls or act on
/// its topics, even with a valid token whose `sub` is that name (say, minted by mistake).
///
/// The connect is refused: a Rust client or service client fails with `Error::Refused` ("client
/// id 'jobs' is the name of a service the server provides"), a seed client gets that as
/// `SERVER_ERROR` and is disconnected. Callers still reach the server's service and its
/// subscriber still gets its publications. A client with a valid token that already holds a
/// name the server then takes for a service is told why and disconnected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_service_names_are_refused_at_connect_whatever_the_token() {
    let relay = jwt_relay().await;
    let jobs = relay.server().as_service("jobs");
    jobs.provide_service("run", |call| call.respond(("done",)))
        .unwrap();
    jobs.create_topic("done").unwrap();
    let sub = authed(&relay, "sub").await;
    let (log, h) = topic_log();
    sub.subscribe_topic("jobs", "done", h).await.unwrap();

    let jobs_token = jwt_token("jobs");
    let text = refused_connect(connect_token(&relay, "jobs", Some(jobs_token.clone())).await);
    assert_eq!(
        text,
        "client id 'jobs' is the name of a service the server provides"
    );
    let text = refused_connect(
        P2pClient::connect_service(&relay.url(), "jobs", token_opts(Some(jobs_token.clone())))
            .await,
    );
    assert_says(&text, &["'jobs'", "service the server provides"]);
    for query in [
        format!("clientId=jobs&token={jobs_token}"),
        format!("token={jobs_token}"),
    ] {
        let mut raw = raw_client(&format!("{}?{query}", relay.url())).await;
        assert_says(
            &raw.next_error("connecting as jobs").await,
            &[
                "connection refused",
                "'jobs'",
                "service the server provides",
            ],
        );
        raw.wait_closed("the relay disconnects the impostor").await;
    }
    assert!(!relay.server().is_connected("jobs"));

    let caller = authed(&relay, "caller").await;
    topic_attacks::server_service_still_serves(&caller, &jobs, &log).await;

    let early = authed(&relay, "reports").await;
    let _reports = topic_attacks::early_client_is_told(&relay, &early).await;
    let text = refused_connect(connect_token(&relay, "reports", Some(jwt_token("reports"))).await);
    assert_says(&text, &["'reports'", "service the server provides"]);
}

/// Attack: register `bob-server-side` (even with a valid token whose `sub` is that name) and pose
/// as the server's end of bob's streams; or, as mallory, open a stream to `bob-server-side`, or
/// send bob a message claiming to come from it.
///
/// The connect is refused (`Error::Refused`: "client id 'bob-server-side' ends with
/// '-server-side': such ids name the server's end of a client's streams"; a seed client gets it
/// as `SERVER_ERROR` and is disconnected). mallory's stream and message are refused with
/// `BAD_REQUEST`. Bob gets only mallory's honest message, and his streams with the server work
/// both ways.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_side_ids_are_refused_at_connect_whatever_the_token() {
    let relay = jwt_relay().await;
    let bob = authed(&relay, "bob").await;
    let at_bob = Log::new();
    {
        let at_bob = at_bob.clone();
        bob.on("hello", move |m| {
            at_bob.push((m.from.clone(), m.args.clone()))
        });
    }
    let mut bob_incoming = bob.incoming_streams(None);
    for id in ["bob-server-side", "-server-side"] {
        let token = jwt_token(id);
        let text = refused_connect(connect_token(&relay, id, Some(token.clone())).await);
        assert_eq!(
            text,
            format!(
                "client id '{id}' ends with '-server-side': such ids name the server's end of a \
                 client's streams"
            )
        );
        let mut raw = raw_client(&format!("{}?token={token}", relay.url())).await;
        assert_says(
            &raw.next_error(id).await,
            &["connection refused", id, "server's end"],
        );
        raw.wait_closed("the relay disconnects the impostor").await;
        assert!(!relay.server().is_connected(id));
    }

    let mallory = authed(&relay, "mallory").await;
    assert_refused(
        mallory.add_p2p_stream("bob-server-side").await,
        &["bob-server-side", "server's end", "mallory-server-side"],
    );
    let mut seedy = raw_authed(&relay, "mallory-seed").await;
    seed_refused(
        &mut seedy,
        "P2P_EMIT_ACKNOWLEDGE",
        vec![json!({
            "targetClientId": "bob",
            "event": "hello",
            "args": ["bob-server-side", "from the server, honest"],
        })],
        &[
            "args[0] must be the sender's own client id 'mallory-seed'",
            "bob-server-side",
        ],
    )
    .await;
    mallory.emit_to("bob", "hello", ("hi",)).await.unwrap();
    at_bob.wait_len("mallory's honest message", 1).await;
    assert_eq!(at_bob.get(), [("mallory".to_string(), vec![json!("hi")])]);
    assert_eq!(bob.stream_count(), 0);

    // Bob's streams with the server's end work both ways.
    let mut at_server = relay.server().incoming_streams(None);
    let opener = tokio::spawn({
        let bob = bob.clone();
        async move { bob.add_p2p_stream("bob-server-side").await }
    });
    let mut server_end = within("the server accepts", at_server.next())
        .await
        .unwrap();
    let mut mine = within("the open resolves", opener).await.unwrap().unwrap();
    assert_eq!(server_end.peer_id(), "bob");
    mine.write_all(b"to the server").await.unwrap();
    mine.shutdown().await.unwrap();
    let mut got = String::new();
    within("the server reads", server_end.read_to_string(&mut got))
        .await
        .unwrap();
    assert_eq!(got, "to the server");
    drop((mine, server_end));

    let server = relay.server().clone();
    let opener =
        tokio::spawn(async move { server.add_p2p_stream("bob", StreamOptions::default()).await });
    let mut at_bob_end = within("bob accepts", bob_incoming.next()).await.unwrap();
    let mut from_server = within("the open resolves", opener).await.unwrap().unwrap();
    assert_eq!(at_bob_end.peer_id(), "bob-server-side");
    from_server.write_all(b"from the server").await.unwrap();
    from_server.shutdown().await.unwrap();
    let mut got = String::new();
    within("bob reads", at_bob_end.read_to_string(&mut got))
        .await
        .unwrap();
    assert_eq!(got, "from the server");
}

/// Attack: as a service of her own, force a client she may not send to into one of her topic
/// rooms (`JOIN_ROOM("CLIENT_SUBSCRIBE_TOPIC", victim, "service:mallory:topic:x")`) and publish
/// there, reaching it around her `send` permission.
///
/// Adding a client to one's topic room is sending to it: the join is refused with
/// `PERMISSION_DENIED` ("client 'mallory' may not send to client 'victim'"). The victim is in no
/// room and hears nothing; a client mallory may send to is added and gets her publication.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_adds_to_its_topics_only_clients_it_may_send_to() {
    let relay = jwt_relay().await;
    let victim = authed(&relay, "victim").await;
    let fan = authed(&relay, "fan").await;
    let room = topic_room("mallory", "x");
    let (at_victim, at_fan) = (Log::new(), Log::new());
    for (c, log) in [(&victim, &at_victim), (&fan, &at_fan)] {
        let log = log.clone();
        c.on_raw(&topic_event(&room), move |args| log.push(args));
    }
    let not_victim = Permissions {
        send: Rule::deny(["victim"]),
        ..Permissions::default()
    };
    let mut mallory =
        raw_with_token(&relay, "mallory", &jwt_token_with("mallory", not_victim)).await;
    let create = vec![json!("SERVICE_CREATE_TOPIC"), json!(room)];
    assert_eq!(
        mallory.emit_with_ack("JOIN_ROOM", create).await,
        Vec::<Value>::new()
    );

    let add = |who: &str| vec![json!("CLIENT_SUBSCRIBE_TOPIC"), json!(who), json!(room)];
    let text = seed_refused(
        &mut mallory,
        "JOIN_ROOM",
        add("victim"),
        &["may not send to client 'victim'"],
    )
    .await;
    assert_eq!(
        text,
        "Error: permission denied: client 'mallory' may not send to client 'victim'"
    );
    assert!(!rooms_of(&relay, "victim").contains(&room));
    assert_eq!(
        mallory.emit_with_ack("JOIN_ROOM", add("fan")).await,
        Vec::<Value>::new()
    );
    mallory
        .emit(
            "EMIT_ROOM",
            vec![json!(room), json!(topic_event(&room)), json!("news")],
        )
        .await;
    at_fan.wait_len("the fan's publication", 1).await;
    assert_eq!(at_fan.get(), [vec![json!("news")]]);
    assert!(at_victim.get().is_empty(), "{:?}", at_victim.get());
    assert!(victim.is_connected());
}
