//! Several relays on one real Redis, with clients spread over them: what one relay's clients can
//! do with another's, and what they are told when a relay or Redis fails.

mod common;

use common::*;
use serde_json::{json, Value};
use socketio_p2p::{
    ClientOptions, ClusterOptions, DuplicateIdPolicy, Error, P2pClient, Relay, RelayOptions, Reply,
    ServerOptions,
};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_socketio-p2p");

/// A relay of the cluster on `redis`.
async fn member(redis: &RedisServer) -> Relay {
    member_with(redis, ServerOptions::default()).await
}

/// A relay of the cluster on `redis` with `server` for its options.
async fn member_with(redis: &RedisServer, server: ServerOptions) -> Relay {
    cluster_member(redis, server, false).await
}

/// A relay of the cluster on `redis` with `server` for its options, requiring tokens signed with
/// [`JWT_SECRET`] when `tokens`; returned once it has joined the cluster.
async fn cluster_member(redis: &RedisServer, server: ServerOptions, tokens: bool) -> Relay {
    let server = if tokens {
        server.authenticate_with(socketio_p2p::auth::JwtAuthenticator::hs256(JWT_SECRET).unwrap())
    } else {
        server
    };
    let relay = relay_with(RelayOptions {
        server,
        cluster: Some(ClusterOptions::new(redis.url())),
        ..RelayOptions::default()
    })
    .await;
    linked(&relay.url(), tokens).await;
    relay
}

/// Waits until the relay at `url` has joined its cluster: a client there (with a [`JWT_SECRET`]
/// token when `tokens`) sees itself in the cluster's `LIST_CLIENTS` (which fails while the relay
/// is not linked).
async fn linked(url: &str, tokens: bool) {
    let probe = format!("probe-{}", rand_suffix());
    let c = within(
        "the probe connects",
        P2pClient::connect_with(url, &probe, token_opts(tokens.then(|| jwt_token(&probe)))),
    )
    .await
    .unwrap_or_else(|e| panic!("client '{probe}' connects to {url}: {e}"));
    eventually_async("the relay joins the cluster", || {
        let c = c.clone();
        let probe = probe.clone();
        async move { c.list_clients().await.is_ok_and(|ids| ids.contains(&probe)) }
    })
    .await;
    c.disconnect().await.unwrap();
}

/// [`eventually_async`] with room for reconnecting to Redis (its backoff reaches 2 s): 20 s.
async fn eventually_long<F, Fut>(what: &str, cond: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !tokio::time::timeout(Duration::from_secs(5), cond())
        .await
        .unwrap_or(false)
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64)
        .unwrap_or(0)
}

/// Waits until `c` sees exactly `ids` (sorted) in `LIST_CLIENTS`.
async fn lists(c: &P2pClient, ids: &[&str]) {
    let want: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
    eventually_async("LIST_CLIENTS shows the cluster's clients", || {
        let c = c.clone();
        let want = want.clone();
        async move { c.list_clients().await.is_ok_and(|got| got == want) }
    })
    .await;
}

/// Two relays of the cluster on `redis`, with alice a client of the first and bob of the second.
async fn alice_and_bob(redis: &RedisServer) -> (Relay, Relay, P2pClient, P2pClient) {
    let (r1, r2) = (member(redis).await, member(redis).await);
    let alice = client(&r1, "alice").await;
    let bob = client(&r2, "bob").await;
    (r1, r2, alice, bob)
}

#[tokio::test]
async fn messages_keep_their_order_and_requests_go_both_ways() {
    let redis = RedisServer::start();
    let (_r1, _r2, alice, bob) = alice_and_bob(&redis).await;

    let got = Log::new();
    let g = got.clone();
    bob.on("n", move |m| {
        g.push((m.from.clone(), m.arg::<i64>(0).unwrap()))
    });
    for i in 0..500 {
        alice.emit_to("bob", "n", i).await.unwrap();
    }
    got.wait_len("500 messages across relays", 500).await;
    let want: Vec<(String, i64)> = (0..500).map(|i| ("alice".to_string(), i)).collect();
    assert_eq!(got.get(), want, "in the order sent, from alice");

    bob.on("double", |m| {
        let n: i64 = m.arg(0).unwrap();
        m.respond(n * 2);
    });
    alice.on("greet", |m| {
        let name: String = m.arg(0).unwrap();
        m.respond(format!("hello {name}"));
    });
    alice.on("refuse", |m| {
        m.reply.unwrap().error("not today");
    });
    let n: i64 = within("alice asks bob", alice.request("bob", "double", 21))
        .await
        .unwrap();
    assert_eq!(n, 42);
    let s: String = within("bob asks alice", bob.request("alice", "greet", "bob"))
        .await
        .unwrap();
    assert_eq!(s, "hello bob");
    let refused = within(
        "an error answer",
        bob.request::<Value>("alice", "refuse", ()),
    )
    .await
    .expect_err("alice refuses");
    assert!(
        matches!(&refused, Error::Remote { peer, message } if peer == "alice" && message == "not today"),
        "{refused:?}"
    );
    let nobody = within(
        "a request to nobody",
        alice.request::<Value>("nobody", "x", ()),
    )
    .await
    .expect_err("no such client anywhere");
    assert!(
        matches!(&nobody, Error::UnknownTarget(id) if id == "nobody"),
        "{nobody:?}"
    );
    // A request nobody answers times out with the caller's own timeout.
    let held = hold_replies(&bob, "silent");
    let late = alice
        .request::<Value>("bob", "silent", ())
        .timeout(Duration::from_millis(500))
        .await
        .expect_err("no answer");
    assert!(matches!(late, Error::Timeout { .. }), "{late:?}");
    drop(held);
}

/// Keeps the replies of `event`'s requests to `c` unanswered, as long as the result is kept.
fn hold_replies(c: &P2pClient, event: &str) -> std::sync::Arc<std::sync::Mutex<Vec<Reply>>> {
    let held = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let h = held.clone();
    c.on(event, move |m| h.lock().unwrap().extend(m.reply));
    held
}

#[tokio::test]
async fn add_target_list_clients_and_disconnect_notices_cross_relays() {
    let redis = RedisServer::start();
    let (_r1, r2, alice, bob) = alice_and_bob(&redis).await;
    let carol = client(&r2, "carol").await;

    let added = Log::new();
    let a = added.clone();
    bob.on_add_p2p_target(move |id| a.push(id));
    within("add-target across relays", alice.add_p2p_target("bob"))
        .await
        .unwrap();
    added.wait_len("bob is asked", 1).await;
    assert_eq!(added.get(), ["alice"]);
    let unknown = within("add-target to nobody", alice.add_p2p_target("nobody"))
        .await
        .expect_err("nobody is connected anywhere");
    assert!(unknown.to_string().contains("nobody"), "{unknown}");

    lists(&alice, &["alice", "bob", "carol"]).await;
    lists(&carol, &["alice", "bob", "carol"]).await;

    let gone = Log::new();
    let g = gone.clone();
    alice.on_p2p_target_disconnect(move |id| g.push(id));
    let gone_b = Log::new();
    let g = gone_b.clone();
    bob.on_p2p_target_disconnect(move |id| g.push(id));
    // carol talks to alice; then bob leaves, then alice does.
    carol.emit_to("alice", "hi", ()).await.unwrap();
    bob.disconnect().await.unwrap();
    gone.wait_len("alice hears bob left", 1).await;
    assert_eq!(gone.get(), ["bob"]);
    lists(&alice, &["alice", "carol"]).await;

    let gone_c = Log::new();
    let g = gone_c.clone();
    carol.on_p2p_target_disconnect(move |id| g.push(id));
    alice.disconnect().await.unwrap();
    gone_c.wait_len("carol hears alice left", 1).await;
    assert_eq!(gone_c.get(), ["alice"]);
    assert!(gone_b.get().is_empty());
}

#[tokio::test]
async fn the_servers_own_emits_and_requests_reach_clients_of_other_relays() {
    let redis = RedisServer::start();
    let (r1, r2) = (member(&redis).await, member(&redis).await);
    let bob = client(&r2, "bob").await;
    let got = Log::new();
    let g = got.clone();
    bob.on_raw("notice", move |args| g.push(args.to_vec()));
    bob.on_request("sum", |args, reply| {
        let (a, b) = (args[0].as_i64().unwrap(), args[1].as_i64().unwrap());
        reply.send(a + b);
    });
    r1.server().emit_to("bob", "notice", ("from", 1)).unwrap();
    got.wait_len("bob hears relay 1's server", 1).await;
    assert_eq!(got.get(), [vec![json!("from"), json!(1)]]);
    let sum: i64 = within(
        "relay 1 asks bob",
        r1.server().request("bob", "sum", (2, 3)),
    )
    .await
    .unwrap();
    assert_eq!(sum, 5);
    let nobody = within("nobody", r1.server().request::<Value>("nobody", "sum", ()))
        .await
        .expect_err("no such client");
    assert!(matches!(nobody, Error::UnknownTarget(_)), "{nobody:?}");
}

#[tokio::test]
async fn one_id_one_connection_across_relays() {
    let redis = RedisServer::start();
    let (r1, r2) = (member(&redis).await, member(&redis).await);
    let _bob = client(&r2, "bob").await;
    let again = P2pClient::connect_with(&r1.url(), "bob", quick()).await;
    assert!(
        matches!(&again, Err(Error::Refused(why)) if why == "client id 'bob' is already connected"),
        "refused as a duplicate on one relay is: {:?}",
        again.map(|_| ())
    );

    // Replace: the newer connection wins, the older one is told why.
    let replace = ServerOptions {
        duplicate_ids: DuplicateIdPolicy::Replace,
        ..ServerOptions::default()
    };
    let redis2 = RedisServer::start();
    let (r3, r4) = (
        member_with(&redis2, replace.clone()).await,
        member_with(&redis2, replace).await,
    );
    let old = client(&r3, "dora").await;
    let told = Log::new();
    let t = told.clone();
    old.on_server_error(move |text| t.push(text));
    let new = client(&r4, "dora").await;
    told.wait_len("the older connection is told", 1).await;
    assert_says(
        &told.get()[0],
        &["newer connection took over client id 'dora'"],
    );
    let eve = client(&r3, "eve").await;
    new.on("ping", |m| m.respond("pong"));
    let pong: String = within("eve reaches the new dora", eve.request("dora", "ping", ()))
        .await
        .unwrap();
    assert_eq!(pong, "pong");
}

fn quick() -> ClientOptions {
    ClientOptions {
        timeout: Duration::from_secs(3),
        reconnect: false,
        ..ClientOptions::default()
    }
}

/// `socketio-p2p serve --redis URL` as a process of its own.
async fn serve(redis: &RedisServer) -> (tokio::process::Child, String) {
    let mut cmd = tokio::process::Command::new(BIN);
    cmd.args(["serve", "--port", "0", "--redis", &redis.url()]);
    let (child, url, _lines) = spawn_serve(cmd).await;
    linked(&url, false).await;
    (child, url)
}

#[tokio::test]
async fn a_relay_killed_outright_is_mourned_by_the_others() {
    let redis = RedisServer::start();
    let r1 = member(&redis).await;
    let (mut doomed, url) = serve(&redis).await;
    let alice = client(&r1, "alice").await;
    let bob = client_at(&url, "bob").await;
    let _held = hold_replies(&bob, "hold"); // never answered
    alice.emit_to("bob", "hello", ()).await.unwrap();
    let gone = Log::new();
    let g = gone.clone();
    alice.on_p2p_target_disconnect(move |id| g.push(id));
    lists(&alice, &["alice", "bob"]).await;

    let waiting = {
        let alice = alice.clone();
        tokio::spawn(async move {
            alice
                .request::<Value>("bob", "hold", ())
                .timeout(Duration::from_secs(60))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    doomed.start_kill().unwrap();
    doomed.wait().await.unwrap();

    let failed = tokio::time::timeout(Duration::from_secs(15), waiting)
        .await
        .expect("the pending request ends long before its own timeout")
        .unwrap()
        .expect_err("bob's relay is gone");
    assert!(
        matches!(&failed, Error::PeerGone(id) if id == "bob"),
        "{failed:?}"
    );
    gone.wait_len("alice hears bob is gone", 1).await;
    assert_eq!(gone.get(), ["bob"]);
    eventually_long("bob is gone from the directory", || {
        let alice = alice.clone();
        async move { alice.list_clients().await.is_ok_and(|ids| ids == ["alice"]) }
    })
    .await;
    // bob's id is free again, on a live relay.
    let bob_again = client(&r1, "bob").await;
    bob_again.on("ping", |m| m.respond("pong"));
    let pong: String = alice.request("bob", "ping", ()).await.unwrap();
    assert_eq!(pong, "pong");
}

#[tokio::test]
async fn a_redis_restart_fails_cross_relay_calls_clearly_and_then_heals() {
    let mut redis = RedisServer::start();
    let (r1, r2) = (member(&redis).await, member(&redis).await);
    let alice = client(&r1, "alice").await;
    let carol = client(&r1, "carol").await;
    let bob = client(&r2, "bob").await;
    bob.on("ping", |m| m.respond("pong"));
    carol.on("ping", |m| m.respond("pong"));
    let pong: String = alice.request("bob", "ping", ()).await.unwrap();
    assert_eq!(pong, "pong");

    redis.kill();
    eventually_long("cross-relay calls fail with a clear error", || {
        let alice = alice.clone();
        async move {
            matches!(
                alice.request::<String>("bob", "ping", ()).await,
                Err(Error::Cluster(_))
            )
        }
    })
    .await;
    let e = alice
        .request::<String>("bob", "ping", ())
        .await
        .expect_err("Redis is down");
    assert!(e.to_string().contains("Redis"), "{e}");
    let local: String = alice.request("carol", "ping", ()).await.unwrap();
    assert_eq!(local, "pong", "clients of one relay still talk");
    let listed = alice
        .list_clients()
        .await
        .expect_err("the cluster's list needs Redis");
    assert!(matches!(listed, Error::Cluster(_)), "{listed:?}");
    // A message is refused too, and its sender told why.
    let told = Log::new();
    let t = told.clone();
    alice.on_server_error(move |text| t.push(text));
    alice.emit_to("bob", "hello", ()).await.unwrap();
    told.wait_len("alice is told the message was not delivered", 1)
        .await;
    assert_says(&told.get()[0], &["Redis", "not delivered"]);

    // A client that connects meanwhile is let in, and registered when Redis is back.
    let dave = client(&r2, "dave").await;
    dave.on("ping", |m| m.respond("pong from dave"));

    redis.restart();
    eventually_long("cross-relay calls work again", || {
        let alice = alice.clone();
        async move { alice.request::<String>("bob", "ping", ()).await.is_ok() }
    })
    .await;
    alice.on("ping", |m| m.respond("pong"));
    let back: String = bob.request("alice", "ping", ()).await.unwrap();
    assert_eq!(back, "pong");
    eventually_long("dave is reachable from the other relay", || {
        let alice = alice.clone();
        async move { alice.request::<String>("dave", "ping", ()).await.is_ok() }
    })
    .await;
    lists(&alice, &["alice", "bob", "carol", "dave"]).await;
}

#[tokio::test]
async fn a_client_service_on_another_relay_is_called() {
    let redis = RedisServer::start();
    let (r1, r2) = (member(&redis).await, member(&redis).await);
    let math = service_client(&r2, "math").await;
    math.provide_service("add", |call| {
        let (a, b): (i64, i64) = call.parse().unwrap_or_default();
        call.respond(a + b);
    })
    .unwrap();
    let caller = client(&r1, "caller").await;
    let sum: i64 = within(
        "a call across relays",
        caller.request_service("math", "add", (2, 3)),
    )
    .await
    .unwrap();
    assert_eq!(sum, 5);
}

/// A seed-era JavaScript client (socket.io-client 2, `interop/message-interop.js`) on one relay
/// and a Rust client on another: add-target, messages, requests both ways (Socket.IO
/// acknowledgements on the JavaScript side), and the notice when the Rust client leaves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seed_era_javascript_client_talks_to_a_rust_client_of_another_relay() {
    let redis = RedisServer::start();
    let (r1, r2) = (member(&redis).await, member(&redis).await);
    let rust = client(&r2, "rust-peer").await;
    let hellos = Log::new();
    let added = Log::new();
    let h = hellos.clone();
    rust.on("hello", move |m| h.push((m.from, m.args)));
    let a = added.clone();
    rust.on_add_p2p_target(move |id| a.push(id));
    rust.on("ask", |m| {
        let n: i64 = m.arg(0).unwrap_or(0);
        m.respond(n + 1);
    });
    let node = node_until_ready(
        "message-interop.js",
        vec![r1.url()],
        Duration::from_secs(40),
        "the JavaScript peer is ready",
    )
    .await;
    assert_eq!(added.get(), ["js-peer"]);
    assert_eq!(
        hellos.get(),
        [("js-peer".to_string(), vec![json!("from js"), json!(42)])]
    );
    finish_message_interop(&rust, node).await;
}

/// A connection to another relay that presents the session's resume secret takes the client id
/// over (a wrong secret is refused as a duplicate): the old relay closes its connection without
/// telling its peers, and hands them over, so that they are told when the client leaves for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_resume_secret_takes_the_id_over_on_another_relay() {
    let redis = RedisServer::start();
    let (r1, r2) = (member(&redis).await, member(&redis).await);
    let bob = client(&r1, "bob").await;
    let gone = Log::new();
    let g = gone.clone();
    bob.on_p2p_target_disconnect(move |id| g.push(id));
    let mut first = raw_client(&format!("{}?clientId=alice&p2pExt=1", r1.url())).await;
    let (secret, _) = p2p_welcome(&first).await;
    bob.emit_to("alice", "hi", ()).await.unwrap();
    eventually("alice gets bob's message", || {
        first.events.get().iter().any(|(ev, _)| ev == "hi")
    })
    .await;

    let elsewhere = format!("{}?clientId=alice&p2pExt=1", r2.url());
    let mut wrong = raw_client(&format!("{elsewhere}&resume={}", "0".repeat(64))).await;
    assert_says(
        &wrong.next_error("a wrong secret").await,
        &["already connected"],
    );
    let second = raw_client(&format!("{elsewhere}&resume={secret}")).await;
    let (next, _) = p2p_welcome(&second).await;
    assert_ne!(next, secret);
    first.wait_closed("the old connection is closed").await;
    bob.emit_to("alice", "again", ()).await.unwrap();
    eventually("the new connection gets bob's message", || {
        second.events.get().iter().any(|(ev, _)| ev == "again")
    })
    .await;
    assert!(gone.get().is_empty(), "bob was told: {:?}", gone.get());
    lists(&bob, &["alice", "bob"]).await;

    second.sio.disconnect().await.unwrap();
    gone.wait_len("bob hears alice left for good", 1).await;
    assert_eq!(gone.get(), ["alice"]);
}

/// What arrives on a relay's channel is decoded once: garbage, unknown kinds, a placeholder
/// look-alike and answers nobody waits for are dropped, and the relay goes on relaying.
#[tokio::test]
async fn bad_envelopes_on_a_relays_channel_are_dropped() {
    let redis = RedisServer::start();
    let (_r1, _r2, alice, bob) = alice_and_bob(&redis).await;
    let got = Log::new();
    let g = got.clone();
    bob.on_raw("hi", move |args| g.push(args.to_vec()));

    let hostile = [
        "not json".to_string(),
        "\u{0}\u{1}".to_string(),
        json!({"kind": "launch"}).to_string(),
        json!({"kind": "emit", "relay": "x"}).to_string(),
        json!({"kind": "reply", "id": 12345, "ok": []}).to_string(),
        json!({"kind": "emit", "relay": "x", "from": "mallory", "to": "bob", "event": "hi",
               "args": [{"json": {"_placeholder": true, "num": 0}}]})
        .to_string(),
        json!({"kind": "emit", "relay": "x", "from": "mallory", "to": "bob", "event": "hi",
               "args": [{"binary": "zz"}]})
        .to_string(),
    ];
    let channels = publish_on_relay_channels(&redis, &hostile).await;
    assert_eq!(channels, 2, "one channel per relay");
    alice.emit_to("bob", "hi", "still here").await.unwrap();
    got.wait_len("the relays still relay", 1).await;
    assert_eq!(got.get(), [vec![json!("alice"), json!("still here")]]);
}

/// Publishes each of `payloads` on every relay channel of the cluster on `redis`, as if a relay
/// had sent it; returns how many channels there are.
async fn publish_on_relay_channels(redis: &RedisServer, payloads: &[String]) -> usize {
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let channels: Vec<String> = redis::cmd("PUBSUB")
        .arg("CHANNELS")
        .arg("socketio-p2p:relay:*")
        .query_async(&mut conn)
        .await
        .unwrap();
    for channel in &channels {
        for payload in payloads {
            let _: i64 = redis::cmd("PUBLISH")
                .arg(channel)
                .arg(payload)
                .query_async(&mut conn)
                .await
                .unwrap();
        }
    }
    channels.len()
}

// ---- Rooms, room emits and service topics across relays ----

/// How many relays the cluster's Redis lists as holding members of `room`.
fn relays_of_room(redis: &RedisServer, room: &str) -> usize {
    let out = std::process::Command::new("redis-cli")
        .args(["-p", &redis.port.to_string(), "SCARD"])
        .arg(format!("socketio-p2p:room:{room}"))
        .output()
        .expect("redis-cli runs");
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim()
        .parse()
        .unwrap_or_else(|_| panic!("SCARD answers a count: {text}"))
}

/// Records the room events `c` receives among `events`, with their arguments.
fn hear(c: &P2pClient, events: &[&str]) -> Log<(String, Vec<Value>)> {
    let log = Log::new();
    for e in events {
        let (l, name) = (log.clone(), e.to_string());
        c.on_raw(e, move |args| l.push((name.clone(), args.to_vec())));
    }
    log
}

/// The arguments of the `event` entries of `log`.
fn heard(log: &Log<(String, Vec<Value>)>, event: &str) -> Vec<Vec<Value>> {
    log.get()
        .into_iter()
        .filter(|(e, _)| e == event)
        .map(|(_, a)| a)
        .collect()
}

#[tokio::test]
async fn room_emits_reach_each_member_on_every_relay_once() {
    let redis = RedisServer::start();
    let (r1, r2) = (member(&redis).await, member(&redis).await);
    let alice = client(&r1, "alice").await;
    let carol = client(&r1, "carol").await;
    let bob = client(&r2, "bob").await;
    let dave = client(&r2, "dave").await;
    let events = ["tick", "mark", "back", "after", "lobby-mark", "side-mark"];
    let (a, c, b, d) = (
        hear(&alice, &events),
        hear(&carol, &events),
        hear(&bob, &events),
        hear(&dave, &events),
    );
    for m in [&alice, &bob, &dave] {
        m.join_room("hall").await.unwrap();
    }
    alice.join_room("side").await.unwrap();
    carol.join_room("side").await.unwrap();
    // Each relay is listed once per room it has members of; a room of one relay reaches no other.
    assert_eq!(relays_of_room(&redis, "hall"), 2);
    assert_eq!(relays_of_room(&redis, "side"), 1);

    for i in 0..100 {
        alice.emit_room("hall", "tick", i).await.unwrap();
    }
    alice.emit_room("hall", "mark", ()).await.unwrap();
    b.wait_len("bob hears the ticks and the mark", 101).await;
    d.wait_len("dave hears the ticks and the mark", 101).await;
    let ticks: Vec<Vec<Value>> = (0..100).map(|i| vec![json!(i)]).collect();
    assert_eq!(heard(&b, "tick"), ticks, "each tick once, in order");
    assert_eq!(heard(&d, "tick"), ticks, "each tick once, in order");
    alice.emit_room("side", "side-mark", ()).await.unwrap();
    c.wait_len("carol hears the side room", 1).await;
    assert_eq!(
        heard(&c, "tick"),
        Vec::<Vec<Value>>::new(),
        "carol is not in hall"
    );
    assert!(
        heard(&a, "tick").is_empty(),
        "the emitter does not hear itself"
    );

    // From the other relay: the members of both relays, the emitter left out.
    bob.emit_room("hall", "back", ("from bob", 2))
        .await
        .unwrap();
    a.wait_len("alice hears bob's room emit", 1).await;
    eventually("dave hears bob's room emit", || {
        heard(&d, "back").len() == 1
    })
    .await;
    assert_eq!(heard(&a, "back"), [vec![json!("from bob"), json!(2)]]);
    assert_eq!(heard(&d, "back"), [vec![json!("from bob"), json!(2)]]);
    assert!(heard(&b, "back").is_empty());

    // Leave, then emit: the member that left hears nothing of it.
    dave.leave_room("hall").await.unwrap();
    dave.join_room("lobby").await.unwrap();
    alice.emit_room("hall", "after", ()).await.unwrap();
    alice.emit_room("lobby", "lobby-mark", ()).await.unwrap();
    eventually("bob hears the emit after dave left", || {
        heard(&b, "after").len() == 1
    })
    .await;
    eventually("dave hears the lobby", || {
        heard(&d, "lobby-mark").len() == 1
    })
    .await;
    assert!(
        heard(&d, "after").is_empty(),
        "dave left hall before the emit"
    );

    // The relay with no member left withdraws from the room's set.
    bob.leave_room("hall").await.unwrap();
    eventually_long("relay 2 withdraws from hall", || async {
        relays_of_room(&redis, "hall") == 1
    })
    .await;
    // A member that disconnects is withdrawn too.
    dave.disconnect().await.unwrap();
    eventually_long("relay 2 withdraws from lobby", || async {
        relays_of_room(&redis, "lobby") == 0
    })
    .await;
}

#[tokio::test]
async fn topics_of_a_client_service_cross_relays_under_its_rules() {
    let redis = RedisServer::start();
    let r1 = member_with(
        &redis,
        ServerOptions {
            max_rooms_per_client: 1,
            ..ServerOptions::default()
        },
    )
    .await;
    let r2 = member(&redis).await;
    let svc = service_client(&r2, "rust-svc").await;
    svc.create_topic(["news", "sports"]).await.unwrap();
    let sub = client(&r1, "sub").await;
    let news = "service:rust-svc:topic:news";
    let (log, handler) = topic_log();
    within(
        "a subscription to a service of another relay",
        sub.subscribe_topic("rust-svc", "news", handler),
    )
    .await
    .unwrap();
    assert!(rooms_of(&r1, "sub").contains(&news.to_string()));
    // The member's own relay counts its topic rooms, as for a service of the same relay.
    let refused = within(
        "a second topic past the limit",
        sub.subscribe_topic("rust-svc", "sports", |_| {}),
    )
    .await
    .expect_err("one topic room at most on relay 1");
    assert_says(&refused.to_string(), &["topic rooms", "sports"]);

    svc.publish_topic("news", (json!({"n": 1}),)).await.unwrap();
    log.wait_len("the publication crosses relays", 1).await;
    assert_eq!(log.get(), [published(json!({"n": 1}))]);

    // Only the service acts on its topic rooms, whatever relay the member is on.
    let mallory = client(&r2, "mallory").await;
    let e = mallory
        .emit_room(news, &format!("{news}-DEFAULT_TOPIC_EVENT"), "forged")
        .await
        .expect_err("only the service publishes");
    assert_says(&e.to_string(), &["only service 'rust-svc' publishes"]);
    let raw = raw_as(&r2, "mallory-raw").await;
    let ack = raw
        .emit_with_ack(
            "JOIN_ROOM",
            vec![
                json!("CLIENT_SUBSCRIBE_TOPIC"),
                json!("sub"),
                json!("service:rust-svc:topic:sports"),
            ],
        )
        .await;
    assert_says(
        &ack[0].to_string(),
        &["acts only on the topic rooms of its own service"],
    );
    assert!(!rooms_of(&r1, "sub").contains(&"service:rust-svc:topic:sports".to_string()));

    // Unsubscribing goes through the service too, across relays.
    sub.unsubscribe_topic("rust-svc", "news").await.unwrap();
    eventually("sub leaves the topic room on its relay", || {
        !rooms_of(&r1, "sub").contains(&news.to_string())
    })
    .await;

    // Destroying the topic tells the subscribers everywhere and empties the room.
    let (log, handler) = topic_log();
    within(
        "subscribe again",
        sub.subscribe_topic("rust-svc", "news", handler),
    )
    .await
    .unwrap();
    let here = client(&r2, "here").await;
    let (local, handler) = topic_log();
    within(
        "a subscriber on the service's relay",
        here.subscribe_topic("rust-svc", "news", handler),
    )
    .await
    .unwrap();
    svc.destroy_topic("news").await.unwrap();
    log.wait_len("the end of the topic crosses relays", 1).await;
    local.wait_len("the local subscriber hears it too", 1).await;
    assert_eq!(log.get(), [socketio_p2p::TopicEvent::Destroyed]);
    assert_eq!(local.get(), [socketio_p2p::TopicEvent::Destroyed]);
    eventually("the remote member is out of the room", || {
        !rooms_of(&r1, "sub").contains(&news.to_string())
    })
    .await;
}

/// Every relay provides the server's services (the application registers them on each): a
/// client of each relay calls its own relay's, and a publication to a topic of one, made on one
/// relay, reaches the subscribers of every relay, once each.
#[tokio::test]
async fn a_server_service_on_every_relay_and_its_topics() {
    let redis = RedisServer::start();
    let (r1, r2) = (member(&redis).await, member(&redis).await);
    for (r, name) in [(&r1, "relay 1"), (&r2, "relay 2")] {
        let clock = r.server().as_service("clock");
        let name = name.to_string();
        clock
            .provide_service("now", move |call| call.respond(name.clone()))
            .unwrap();
        clock.create_topic("ticks").unwrap();
    }
    let a = client(&r1, "a").await;
    let b = client(&r2, "b").await;
    let said: String = within("a calls clock", a.request_service("clock", "now", ()))
        .await
        .unwrap();
    assert_eq!(said, "relay 1");
    let said: String = within("b calls clock", b.request_service("clock", "now", ()))
        .await
        .unwrap();
    assert_eq!(said, "relay 2");
    let (la, ha) = topic_log();
    let (lb, hb) = topic_log();
    within("a subscribes", a.subscribe_topic("clock", "ticks", ha))
        .await
        .unwrap();
    within("b subscribes", b.subscribe_topic("clock", "ticks", hb))
        .await
        .unwrap();
    let c1 = r1.server().as_service("clock");
    let c2 = r2.server().as_service("clock");
    c1.publish_topic("ticks", (1,)).unwrap();
    c2.publish_topic("ticks", (2,)).unwrap();
    la.wait_len("a hears both publications", 2).await;
    lb.wait_len("b hears both publications", 2).await;
    // Each relay's publications keep their order; the two relays' may interleave.
    for log in [&la, &lb] {
        let mut got = log.get();
        got.sort_by_key(|e| format!("{e:?}"));
        assert_eq!(got, [published(json!(1)), published(json!(2))]);
    }
    c1.destroy_topic("ticks").unwrap();
    la.wait_len("a hears the end", 3).await;
    lb.wait_len("b hears the end", 3).await;
    assert_eq!(la.get()[2], socketio_p2p::TopicEvent::Destroyed);
    assert_eq!(lb.get()[2], socketio_p2p::TopicEvent::Destroyed);
}

#[tokio::test]
async fn room_emits_while_redis_is_down_fail_clearly_and_then_heal() {
    let mut redis = RedisServer::start();
    let (r1, r2) = (member(&redis).await, member(&redis).await);
    let alice = client(&r1, "alice").await;
    let carol = client(&r1, "carol").await;
    let bob = client(&r2, "bob").await;
    let (c, b) = (hear(&carol, &["down", "up"]), hear(&bob, &["down", "up"]));
    for m in [&alice, &carol, &bob] {
        m.join_room("hall").await.unwrap();
    }
    alice.emit_room("hall", "up", 0).await.unwrap();
    b.wait_len("bob hears alice", 1).await;

    redis.kill();
    eventually_long(
        "a room emit says its members elsewhere were not reached",
        || {
            let alice = alice.clone();
            async move {
                matches!(
                    alice.emit_room("hall", "down", ()).await,
                    Err(Error::Cluster(_))
                )
            }
        },
    )
    .await;
    let e = alice
        .emit_room("hall", "down", ())
        .await
        .expect_err("Redis is down");
    assert_says(&e.to_string(), &["Redis", "'hall'"]);
    // The members of this relay got it all the same.
    eventually("carol hears the room emits", || {
        heard(&c, "down").len() >= 2
    })
    .await;

    // A fresh Redis knows nothing: each relay writes its rooms again.
    redis.restart();
    eventually_long("room emits cross relays again", || {
        let (alice, b) = (alice.clone(), b.clone());
        async move {
            alice.emit_room("hall", "up", 1).await.is_ok()
                && tokio::time::timeout(Duration::from_millis(500), async {
                    while heard(&b, "up").len() < 2 {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                })
                .await
                .is_ok()
        }
    })
    .await;
    assert_eq!(relays_of_room(&redis, "hall"), 2);
    assert!(
        heard(&b, "down").is_empty(),
        "what failed was not delivered later"
    );
}

/// A member busy on its own relay (its queue full) does not get a room event from another
/// relay, and the emitter is told so, naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_member_on_another_relay_is_reported_to_the_emitter() {
    let redis = RedisServer::start();
    let r1 = member(&redis).await;
    let r2 = member_with(
        &redis,
        ServerOptions {
            max_queued_bytes: 64 << 10,
            slow_consumer_deadline: Duration::from_secs(60),
            ..ServerOptions::default()
        },
    )
    .await;
    let alice = client(&r1, "alice").await;
    let told = Log::new();
    let t = told.clone();
    alice.on_server_error(move |text| t.push(text));
    let slow = within(
        "a member that stops reading",
        rust_socketio::asynchronous::ClientBuilder::new(format!("{}?clientId=slow", r2.url()))
            .transport_type(rust_socketio::TransportType::Websocket)
            .reconnect(false)
            .on("big", |_, _| {
                use futures::FutureExt;
                futures::future::pending::<()>().boxed()
            })
            .connect(),
    )
    .await
    .expect("the member connects");
    eventually("slow is registered", || r2.server().is_connected("slow")).await;
    let ack = sio_emit_with_ack(&slow, "JOIN_ROOM", vec![json!("hall")]).await;
    assert!(ack.is_empty(), "{ack:?}");
    let data = "z".repeat(16 << 10);
    for _ in 0..4000 {
        if !told.get().is_empty() {
            break;
        }
        alice.emit_room("hall", "big", data.as_str()).await.unwrap();
    }
    told.wait_len("alice is told that slow is busy", 1).await;
    assert_says(&told.get()[0], &["'slow'", "'hall'", "did not get"]);
    assert!(r2.server().is_connected("slow"), "within its deadline");
    let _ = slow.disconnect().await;
}

/// A seed-era JavaScript client (socket.io-client 2, `interop/room-interop.js`) on one relay, a
/// Rust member and a Rust service on another: room emits both ways, a topic publication, and the
/// topic's end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seed_era_javascript_member_gets_room_emits_and_topics_from_another_relay() {
    let redis = RedisServer::start();
    let (r1, r2) = (member(&redis).await, member(&redis).await);
    let alice = client(&r2, "alice").await;
    let from_js = hear(&alice, &["from-js"]);
    alice.join_room("hall").await.unwrap();
    let svc = service_client(&r2, "rust-svc").await;
    svc.create_topic("news").await.unwrap();
    let node = node_until_ready(
        "room-interop.js",
        vec![r1.url()],
        Duration::from_secs(40),
        "the JavaScript member is ready",
    )
    .await;
    assert!(rooms_of(&r1, "js-member").contains(&"hall".to_string()));
    alice
        .emit_room("hall", "flash", ("hello", 42))
        .await
        .unwrap();
    svc.publish_topic("news", (json!({"n": 1}),)).await.unwrap();
    alice.emit_room("hall", "last", ()).await.unwrap();
    from_js
        .wait_len("alice hears the JavaScript member's room emit", 1)
        .await;
    assert_eq!(
        from_js.get(),
        [("from-js".to_string(), vec![json!("hi rust"), json!(7)])]
    );
    svc.destroy_topic("news").await.unwrap();
    node_done("the JavaScript member finishes", "room-interop.js", node).await;
}

/// What a client may do is checked on its own relay, whatever relay the members of a room, or
/// the service, are on: a denied room emit reaches nobody, a denied subscription joins nothing.
#[tokio::test]
async fn permissions_hold_whatever_relay_the_members_are_on() {
    use socketio_p2p::auth::{Permissions, Rule};
    let redis = RedisServer::start();
    let (r1, r2) = (
        cluster_member(&redis, ServerOptions::default(), true).await,
        cluster_member(&redis, ServerOptions::default(), true).await,
    );
    let bob = connect_token(&r2, "bob", Some(jwt_token("bob")))
        .await
        .unwrap();
    let b = hear(&bob, &["leak", "mark"]);
    bob.join_room("secret").await.unwrap();
    let svc = P2pClient::connect_service(
        &r2.url(),
        "rust-svc",
        token_opts(Some(jwt_token_with(
            "rust-svc",
            Permissions {
                send: Rule::deny(["frank"]),
                ..Permissions::default()
            },
        ))),
    )
    .await
    .unwrap();
    svc.create_topic("news").await.unwrap();

    let eve_may = Permissions {
        rooms: Rule::deny(["secret"]),
        subscribe: Rule::deny(["rust-svc"]),
        ..Permissions::default()
    };
    let eve = connect_token(&r1, "eve", Some(jwt_token_with("eve", eve_may)))
        .await
        .unwrap();
    let denied = eve
        .emit_room("secret", "leak", "x")
        .await
        .expect_err("eve may not emit to secret");
    assert!(matches!(denied, Error::PermissionDenied(_)), "{denied:?}");
    let denied = within(
        "eve subscribes",
        eve.subscribe_topic("rust-svc", "news", |_| {}),
    )
    .await
    .expect_err("eve may not subscribe to rust-svc");
    assert!(matches!(denied, Error::PermissionDenied(_)), "{denied:?}");

    // The service may not send to frank, so it may not put him in its topic room either, though
    // he is on another relay.
    let frank = connect_token(&r1, "frank", Some(jwt_token("frank")))
        .await
        .unwrap();
    let refused = within(
        "frank subscribes",
        frank.subscribe_topic("rust-svc", "news", |_| {}),
    )
    .await
    .expect_err("the service may not add frank");
    assert_says(&refused.to_string(), &["permission denied"]);
    let news = "service:rust-svc:topic:news".to_string();
    assert!(!rooms_of(&r1, "frank").contains(&news));

    frank.emit_room("secret", "mark", ()).await.unwrap();
    b.wait_len("bob hears the allowed emit", 1).await;
    assert_eq!(heard(&b, "mark").len(), 1);
    assert!(
        heard(&b, "leak").is_empty(),
        "the denied emit reached nobody"
    );
}

/// Room envelopes on a relay's channel that no relay sends (a relay's own room, a binary
/// placeholder look-alike, an unknown member) are dropped or refused, and the relays go on.
#[tokio::test]
async fn hostile_room_envelopes_are_dropped() {
    let redis = RedisServer::start();
    let (_r1, r2, alice, bob) = alice_and_bob(&redis).await;
    let b = hear(&bob, &["hi"]);
    bob.join_room("hall").await.unwrap();

    let hostile = [
        json!({"kind": "room_emit", "relay": "x", "from": null, "room": "__p2p_ext__",
               "event": "hi", "args": ["to every extension client"], "wrap": false}),
        json!({"kind": "room_emit", "relay": "x", "from": null, "room": "hall",
               "event": "hi", "args": [{"_placeholder": true, "num": 0}], "wrap": true}),
        json!({"kind": "room_destroy", "relay": "x", "room": "__p2p_seed__"}),
        json!({"kind": "room_member", "relay": "x", "id": 1, "client": "nobody", "room": "r",
               "join": true}),
        json!({"kind": "room_member", "relay": "x", "id": 2, "client": "bob",
               "room": "__p2p_node__", "join": true}),
        json!({"kind": "room_busy", "to": "nobody", "error": "x"}),
    ];
    publish_on_relay_channels(&redis, &hostile.map(|p| p.to_string())).await;
    alice.emit_room("hall", "hi", "still here").await.unwrap();
    b.wait_len("the relays still relay room emits", 1).await;
    assert_eq!(heard(&b, "hi"), [vec![json!("still here")]]);
    assert_eq!(
        rooms_of(&r2, "bob")
            .into_iter()
            .filter(|r| !r.starts_with("__p2p_ext"))
            .collect::<Vec<_>>(),
        ["hall"]
    );
}

// Streams between clients of different relays.

/// Writes `data` to `w` and closes its side, then reads what comes back until the other side
/// closes.
async fn write_then_read(
    mut s: socketio_p2p::P2pDuplex,
    data: Vec<u8>,
) -> std::io::Result<Vec<u8>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut r, mut w) = tokio::io::split(&mut s);
    let write = async move {
        w.write_all(&data).await?;
        w.shutdown().await
    };
    let mut back = Vec::new();
    let read = r.read_to_end(&mut back);
    let (wrote, read) = tokio::join!(write, read);
    wrote?;
    read?;
    Ok(back)
}

/// Resident memory of process `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/PID/status")
}

/// Waits until neither `r1` nor `r2` holds a stream.
async fn streams_freed(r1: &Relay, r2: &Relay) {
    eventually("both relays free the stream", || {
        r1.server().stream_count() == 0 && r2.server().stream_count() == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_64_mib_stream_crosses_relays_byte_exact_both_ways() {
    let redis = RedisServer::start();
    let (r1, r2, alice, bob) = alice_and_bob(&redis).await;
    let (mine, theirs) = open_pair(&alice, &bob, Default::default()).await;
    assert!(!mine.info().seed_mode);
    assert_eq!(theirs.info().peer, "alice");
    let there = sample(64 << 20);
    let back: Vec<u8> = there.iter().rev().copied().collect();
    let (a, b) = tokio::join!(
        bounded("alice's side", write_then_read(mine, there.clone())),
        bounded("bob's side", write_then_read(theirs, back.clone())),
    );
    let (a, b) = (
        a.expect("alice's side ends cleanly"),
        b.expect("bob's side ends cleanly"),
    );
    assert_eq!(b.len(), there.len());
    assert!(b == there, "alice -> bob arrives byte-exact");
    assert_eq!(a.len(), back.len());
    assert!(a == back, "bob -> alice arrives byte-exact");
    streams_freed(&r1, &r2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_stops_blocks_its_writer_on_another_relay() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let redis = RedisServer::start();
    let (mut one, url1) = serve(&redis).await;
    let (mut two, url2) = serve(&redis).await;
    let alice = client_at(&url1, "alice").await;
    let bob = client_at(&url2, "bob").await;
    let mut incoming = bob.incoming_streams(None);
    let opener = tokio::spawn({
        let alice = alice.clone();
        async move { alice.add_p2p_stream("bob").await }
    });
    let mut theirs = within("bob accepts", incoming.next()).await.unwrap();
    let mut mine = within("the open", opener).await.unwrap().unwrap();
    let (pid1, pid2) = (one.id().unwrap(), two.id().unwrap());
    let before = (rss_kib(pid1), rss_kib(pid2));

    const TOTAL: usize = 128 << 20;
    let data = sample(TOTAL);
    let written = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let writer = {
        let (data, written) = (data.clone(), written.clone());
        tokio::spawn(async move {
            for chunk in data.chunks(64 << 10) {
                mine.write_all(chunk).await?;
                written.fetch_add(chunk.len(), std::sync::atomic::Ordering::Relaxed);
            }
            mine.shutdown().await
        })
    };
    // bob reads a little, then stops: alice's writes stop soon after.
    let mut got = vec![0u8; 1 << 20];
    bounded("bob reads 1 MiB", theirs.read_exact(&mut got))
        .await
        .unwrap();
    let mut last = 0;
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = written.load(std::sync::atomic::Ordering::Relaxed);
        if now == last {
            break;
        }
        last = now;
        assert!(now < TOTAL, "the writer never blocked");
    }
    assert!(last < 32 << 20, "{last} bytes written for 1 MiB read");
    let after = (rss_kib(pid1), rss_kib(pid2));
    for (b, a) in [(before.0, after.0), (before.1, after.1)] {
        assert!(a < b + 64 * 1024, "a relay grew from {b} KiB to {a} KiB");
    }
    // bob reads on: everything arrives, in order.
    let mut rest = Vec::new();
    bounded("bob reads the rest", theirs.read_to_end(&mut rest))
        .await
        .unwrap();
    got.extend_from_slice(&rest);
    assert_eq!(got.len(), TOTAL);
    assert!(got == data, "byte-exact after the pause");
    bounded("alice's writes end", writer)
        .await
        .unwrap()
        .unwrap();
    one.start_kill().unwrap();
    two.start_kill().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_killed_outright_resets_the_streams_through_it() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let redis = RedisServer::start();
    let r1 = member(&redis).await;
    let (mut doomed, url) = serve(&redis).await;
    let alice = client(&r1, "alice").await;
    let bob = client_at(&url, "bob").await;
    let (mut mine, mut theirs) = open_pair(&alice, &bob, Default::default()).await;
    mine.write_all(b"before").await.unwrap();
    let mut got = [0u8; 6];
    within("bob reads", theirs.read_exact(&mut got))
        .await
        .unwrap();
    assert_eq!(&got, b"before");

    doomed.start_kill().unwrap();
    doomed.wait().await.unwrap();
    // alice's read ends with an error naming the relay, long before any timeout of hers.
    let mut buf = [0u8; 16];
    let e = tokio::time::timeout(Duration::from_secs(15), mine.read(&mut buf))
        .await
        .expect("the stream is reset")
        .expect_err("the stream does not end cleanly");
    assert_says(&e.to_string(), &["relay"]);
    assert_eq!(r1.server().stream_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_going_down_under_a_stream_resets_it_clearly() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut redis = RedisServer::start();
    let (r1, r2) = (member(&redis).await, member(&redis).await);
    let alice = client(&r1, "alice").await;
    let bob = client(&r2, "bob").await;
    let (mut mine, mut theirs) = open_pair(&alice, &bob, Default::default()).await;
    mine.write_all(b"hello").await.unwrap();
    let mut got = [0u8; 5];
    within("bob reads", theirs.read_exact(&mut got))
        .await
        .unwrap();

    redis.kill();
    let mut buf = [0u8; 16];
    for (who, s) in [("alice", &mut mine), ("bob", &mut theirs)] {
        let e = tokio::time::timeout(Duration::from_secs(15), s.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("{who}'s stream is reset"))
            .expect_err("the stream does not end cleanly");
        assert_says(&e.to_string(), &["Redis"]);
    }
    // A new stream across is refused while Redis is away, and says why.
    let e = within("an open while Redis is down", alice.add_p2p_stream("bob"))
        .await
        .expect_err("refused");
    assert!(e.to_string().contains("Redis"), "{e}");
}

#[tokio::test]
async fn a_seed_form_stream_to_another_relay_is_refused_with_the_seed_words() {
    let redis = RedisServer::start();
    let (r1, r2) = (member(&redis).await, member(&redis).await);
    let raw = raw_as(&r1, "sally").await;
    let bob = client(&r2, "bob").await;
    lists(&bob, &["bob", "sally"]).await;
    let open = json!({"sourceStreamId": "s1", "targetStreamId": "s2", "targetClientId": "bob"});
    let ack = within(
        "the seed open is answered",
        raw.emit_with_ack("MULTI_API_CREATE_STREAM", vec![open]),
    )
    .await;
    assert_eq!(ack, vec![json!("Client bob is not registered to server")]);
    assert_eq!(r1.server().stream_count(), 0);
    assert_eq!(r2.server().stream_count(), 0);
}

#[tokio::test]
async fn a_client_that_leaves_resets_its_stream_on_the_other_relay() {
    use tokio::io::AsyncReadExt;
    let redis = RedisServer::start();
    let (r1, r2, alice, bob) = alice_and_bob(&redis).await;
    let (mut mine, _theirs) = open_pair(&alice, &bob, Default::default()).await;
    bob.disconnect().await.unwrap();
    let mut buf = [0u8; 16];
    let e = within("alice's stream is reset", mine.read(&mut buf))
        .await
        .expect_err("the stream does not end cleanly");
    assert_says(&e.to_string(), &["bob"]);
    streams_freed(&r1, &r2).await;
}

/// A hand-driven extension client that overruns its credit on a stream to a client of another
/// relay: its own relay cuts the stream off at both ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_past_its_credit_is_cut_off_across_relays() {
    use futures::FutureExt;
    use rust_socketio::{asynchronous::ClientBuilder, Payload, TransportType};
    use socketio_p2p::stream::frame::{code, Frame, FRAME_EVENT};
    use tokio::io::AsyncReadExt;
    let redis = RedisServer::start();
    let (r1, r2) = (member(&redis).await, member(&redis).await);
    let bob = client(&r2, "bob").await;
    let mut incoming = bob.incoming_streams(None);
    let (texts, mut text_rx) = tokio::sync::mpsc::unbounded_channel();
    let (frames, mut frame_rx) = tokio::sync::mpsc::unbounded_channel();
    let mallory = ClientBuilder::new(format!("{}?clientId=mallory&p2pExt=1", r1.url()))
        .transport_type(TransportType::Websocket)
        .reconnect(false)
        .on_any(move |ev, p, _| {
            match p {
                Payload::Text(v) => {
                    let _ = texts.send((String::from(ev), v));
                }
                Payload::Binary(b) => {
                    let _ = frames.send(Frame::decode(b));
                }
                #[allow(deprecated)]
                Payload::String(_) => {}
            }
            futures::future::ready(()).boxed()
        })
        .connect()
        .await
        .expect("mallory connects");
    lists(&bob, &["bob", "mallory"]).await;
    let open = json!({"sourceStreamId": "s1", "targetStreamId": "t1",
                      "targetClientId": "bob", "window": 65536});
    mallory
        .emit(
            "P2P_REQ",
            Payload::Text(vec![json!(1), json!("MULTI_API_CREATE_STREAM"), open]),
        )
        .await
        .unwrap();
    let accepted = loop {
        let (ev, args) = within("the open's answer", text_rx.recv()).await.unwrap();
        if ev == "P2P_RES" && args[0] == json!(1) {
            break args[1]["ok"][0].clone();
        }
    };
    let (route, window) = (
        accepted["route"].as_u64().expect("a route"),
        accepted["window"].as_u64().expect("bob's window"),
    );
    let mut at_bob = within("bob accepts", incoming.next()).await.unwrap();
    let send = |f: bytes::Bytes| mallory.emit(FRAME_EVENT, Payload::Binary(f));
    send(Frame::data_from_slice(route, b"fine")).await.unwrap();
    let mut buf = [0u8; 4];
    within("bob reads", at_bob.read_exact(&mut buf))
        .await
        .unwrap();
    assert_eq!(&buf, b"fine");

    send(Frame::data_from_slice(route, &vec![7u8; window as usize]))
        .await
        .unwrap();
    match within("mallory's reset", frame_rx.recv()).await.unwrap() {
        Ok(Frame::Reset {
            route: r,
            code: c,
            reason,
        }) => {
            assert_eq!((r, c), (route, code::PROTOCOL), "{reason}");
            assert_says(&reason, &["protocol violation"]);
        }
        other => panic!("expected a RESET, got {other:?}"),
    }
    let e = within("bob's read fails", at_bob.read(&mut buf))
        .await
        .expect_err("reset");
    assert_says(&e.to_string(), &["protocol violation"]);
    streams_freed(&r1, &r2).await;
}

/// Cuts the link of `c` (behind `proxy`, a client of `relay`) until the relay has seen it drop,
/// then lets it come back: its session is resumed.
async fn cut_link(relay: &Relay, proxy: &Proxy, c: &P2pClient) {
    proxy.refuse(true);
    proxy.cut();
    eventually("the relay sees the link drop", || {
        !relay.server().is_connected(c.id())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    proxy.refuse(false);
}

/// A stream across relays goes on through cuts of either client's link to its own relay: every
/// byte arrives once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_across_relays_goes_on_through_cuts_of_either_link() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const LEN: usize = 48 << 20;
    let redis = RedisServer::start();
    let (r1, r2) = (member(&redis).await, member(&redis).await);
    let (p1, p2) = (
        Proxy::start(r1.local_addr()).await,
        Proxy::start(r2.local_addr()).await,
    );
    let opts = || {
        ClientOptions {
            timeout: Duration::from_secs(5),
            ..ClientOptions::default()
        }
        .with_reconnect_delay(Duration::from_millis(50), Duration::from_millis(200))
    };
    let alice = P2pClient::connect_with(&p1.url(), "alice", opts())
        .await
        .unwrap();
    let bob = P2pClient::connect_with(&p2.url(), "bob", opts())
        .await
        .unwrap();
    lists(&alice, &["alice", "bob"]).await;
    let (mut out, mut inn) = open_pair(&alice, &bob, Default::default()).await;
    let data = sample(LEN);
    let writing = {
        let data = data.clone();
        tokio::spawn(async move {
            for chunk in data.chunks(64 << 10) {
                out.write_all(chunk).await?;
            }
            out.shutdown().await?;
            Ok::<_, std::io::Error>(out)
        })
    };
    let read = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let reading = {
        let read = read.clone();
        tokio::spawn(async move {
            let mut got = Vec::with_capacity(LEN);
            let mut buf = vec![0u8; 64 << 10];
            loop {
                let n = inn.read(&mut buf).await?;
                if n == 0 {
                    return Ok::<_, std::io::Error>(got);
                }
                got.extend_from_slice(&buf[..n]);
                read.store(got.len(), std::sync::atomic::Ordering::Relaxed);
            }
        })
    };
    let past = |n: usize| {
        let read = read.clone();
        async move {
            eventually_long("the reader gets on", || {
                let read = read.clone();
                async move { read.load(std::sync::atomic::Ordering::Relaxed) >= n }
            })
            .await
        }
    };
    past(8 << 20).await;
    cut_link(&r1, &p1, &alice).await;
    past(20 << 20).await;
    cut_link(&r2, &p2, &bob).await;
    let got = bounded("the reader finishes", reading)
        .await
        .unwrap()
        .expect("every byte arrives");
    assert_eq!(got.len(), LEN);
    assert!(got == data, "once, in order");
    bounded("the writer finishes", writing)
        .await
        .unwrap()
        .expect("the writer's calls all succeed");
}

// ---- What a relay's broken subscription loses is told to its senders ----

/// Runs `redis-cli` on `redis` with `args`; what it prints.
fn redis_cli(redis: &RedisServer, args: &[&str]) -> String {
    let out = std::process::Command::new("redis-cli")
        .args(["-p", &redis.port.to_string()])
        .args(args)
        .output()
        .expect("redis-cli runs");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Has Redis cut every subscriber whose output buffer grows past its reply buffer (`on`), as
/// `client-output-buffer-limit pubsub` cuts a relay that falls behind, or go back to its default.
fn cut_laggards(redis: &RedisServer, on: bool) {
    let limit = if on {
        "pubsub 1 1 0"
    } else {
        "pubsub 32mb 8mb 60"
    };
    let out = redis_cli(
        redis,
        &["CONFIG", "SET", "client-output-buffer-limit", limit],
    );
    assert_eq!(out, "OK", "CONFIG SET answers");
}

/// The messages the `SERVER_ERROR`s `texts` count as lost or not delivered (`<n> message(s)`,
/// `<n> messages`; one for a single message refused as `client 'bob' disconnected`).
fn counted(texts: &[String]) -> usize {
    texts
        .iter()
        .filter_map(|t| match t.find(" message") {
            Some(end) => t[..end]
                .rsplit(|c: char| !c.is_ascii_digit())
                .next()?
                .parse::<usize>()
                .ok(),
            None => (t == "Error: client 'bob' disconnected").then_some(1),
        })
        .sum()
}

/// Floods `bob` from `alice` with `tasks` tasks of `each` messages at most, stopping once alice
/// is told of a loss; how many messages `emit_to` took.
async fn flood(alice: &P2pClient, told: &Log<String>, tasks: usize, each: usize) -> usize {
    let data = std::sync::Arc::new("x".repeat(1 << 10));
    let floods: Vec<_> = (0..tasks)
        .map(|_| {
            let (alice, told, data) = (alice.clone(), told.clone(), data.clone());
            tokio::spawn(async move {
                let mut sent = 0usize;
                for _ in 0..each {
                    if !loss_notices(&told.get()).is_empty() {
                        break;
                    }
                    if alice.emit_to("bob", "flood", data.as_str()).await.is_ok() {
                        sent += 1;
                    }
                }
                sent
            })
        })
        .collect();
    let mut sent = 0;
    for f in floods {
        sent += bounded("a flood", f).await.unwrap();
    }
    sent
}

/// Notices that messages were lost between relays.
fn loss_notices(texts: &[String]) -> Vec<String> {
    texts
        .iter()
        .filter(|t| t.contains("to clients of another relay were lost: its link to Redis broke"))
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_message_lost_in_a_broken_subscription_is_told_to_its_sender() {
    let redis = RedisServer::start();
    let (_r1, _r2, alice, bob) = alice_and_bob(&redis).await;
    let told = Log::new();
    let t = told.clone();
    alice.on_server_error(move |text| t.push(text));
    let received = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let r = received.clone();
    bob.on_raw("flood", move |_| {
        r.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    });

    // Some get through; then Redis cuts bob's relay as soon as it lags.
    let mut sent = flood(&alice, &told, 1, 200).await;
    eventually_long("the first messages arrive", || {
        let n = received.load(std::sync::atomic::Ordering::Relaxed);
        async move { n > 0 }
    })
    .await;
    cut_laggards(&redis, true);
    sent += flood(&alice, &told, 8, 4000).await;
    cut_laggards(&redis, false);

    let account = || received.load(std::sync::atomic::Ordering::Relaxed) + counted(&told.get());
    eventually_long("every message sent is received or told lost", || {
        let balanced = account() == sent;
        async move { balanced }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(account(), sent, "nothing counted twice: {:?}", told.get());
    let notices = loss_notices(&told.get());
    assert!(
        !notices.is_empty(),
        "the flood broke bob's relay's subscription and alice was told: {:?}",
        told.get()
    );
    assert_says(&notices[0], &["Error: cluster:", "message(s)"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_lost_in_a_broken_subscription_fails_at_once_with_a_clear_error() {
    let redis = RedisServer::start();
    let (r1, r2) = (member(&redis).await, member(&redis).await);
    // Far longer than the relay's own wait (30 s): only the relay's answer ends a call.
    let alice = client_with_timeout(&r1, "alice", Duration::from_secs(300)).await;
    let bob = client(&r2, "bob").await;
    bob.on("ping", |m| m.respond("pong"));
    let pong: String = within("a request crosses", alice.request("bob", "ping", "hi"))
        .await
        .unwrap();
    assert_eq!(pong, "pong");

    cut_laggards(&redis, true);
    let data = "y".repeat(16 << 10);
    let calls: Vec<_> = (0..300)
        .map(|_| {
            let (alice, data) = (alice.clone(), data.clone());
            tokio::spawn(async move { alice.request::<String>("bob", "ping", data).await })
        })
        .collect();
    let mut results = Vec::new();
    for call in calls {
        results.push(bounded("each request ends", call).await.unwrap());
    }
    cut_laggards(&redis, false);

    let mut lost = 0;
    for r in &results {
        match r {
            Ok(pong) => assert_eq!(pong, "pong"),
            Err(Error::Cluster(why)) if why.contains("was lost on its way") => {
                assert_says(why, &["request to client 'bob'", "link to Redis broke"]);
                lost += 1;
            }
            // Refused at once while bob's relay was resubscribing.
            Err(Error::PeerGone(who)) => assert_eq!(who, "bob"),
            Err(e) => panic!("a request ends with a clear error, not {e:?}"),
        }
    }
    assert!(lost > 0, "some requests were lost: {results:?}");
    let pong: String = within("requests cross again", alice.request("bob", "ping", "hi"))
        .await
        .unwrap();
    assert_eq!(pong, "pong");
}

/// A relay of the cluster on `redis` under the duplicate-id policy `replace`, authenticating with
/// [`JWT_SECRET`] tokens when `tokens`.
async fn replacing_member(redis: &RedisServer, tokens: bool) -> Relay {
    let server = ServerOptions {
        duplicate_ids: DuplicateIdPolicy::Replace,
        ..ServerOptions::default()
    };
    cluster_member(redis, server, tokens).await
}

#[tokio::test]
async fn an_unauthenticated_connection_never_replaces_an_authenticated_one_on_another_relay() {
    let redis = RedisServer::start();
    let with_auth = replacing_member(&redis, true).await;
    let open = replacing_member(&redis, false).await;
    let dora = connect_token(&with_auth, "dora", Some(jwt_token("dora")))
        .await
        .unwrap();
    let told = Log::new();
    let t = told.clone();
    dora.on_server_error(move |text| t.push(text));

    let impostor = P2pClient::connect_with(&open.url(), "dora", quick()).await;
    assert!(
        matches!(&impostor, Err(Error::Refused(why)) if why == "client id 'dora' is already connected"),
        "an unauthenticated connection is refused: {:?}",
        impostor.map(|_| ())
    );
    assert!(with_auth.server().is_connected("dora"));
    assert!(dora.is_connected());

    // A connection that proves the same identity on another relay does take the id over.
    let third = replacing_member(&redis, true).await;
    let _new = connect_token(&third, "dora", Some(jwt_token("dora")))
        .await
        .unwrap();
    told.wait_len("the older connection is told", 1).await;
    assert_says(
        &told.get()[0],
        &["newer connection took over client id 'dora'"],
    );
}
