//! A client that loses its link to the relay: it reconnects by itself and goes on under the same
//! `P2pClient`, or, with reconnection off, ends closed. The link is cut by a TCP proxy between the
//! client and the relay.

mod common;
use common::*;
use serde_json::{json, Value};
use socketio_p2p::{
    ClientOptions, ConnectionState, Error, P2pClient, Relay, RelayOptions, ServiceClient,
    TopicEvent,
};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// Options with quick reconnection attempts and a short call timeout.
fn quick() -> ClientOptions {
    ClientOptions {
        timeout: Duration::from_secs(3),
        ..ClientOptions::default()
    }
    .with_reconnect_delay(Duration::from_millis(50), Duration::from_millis(200))
}

async fn connect(url: &str, id: &str, opts: ClientOptions) -> P2pClient {
    P2pClient::connect_with(url, id, opts)
        .await
        .unwrap_or_else(|e| panic!("client '{id}' connects: {e}"))
}

/// Cuts the link of a client behind `proxy` while the proxy refuses new connections: the client
/// is seen reconnecting. The proxy lets connections through again when `resume` is set.
async fn cut_and_see_reconnecting(proxy: &Proxy, client: &P2pClient, resume: bool) {
    proxy.refuse(true);
    proxy.cut();
    wait_state(client, ConnectionState::Reconnecting).await;
    assert!(!client.is_connected());
    if resume {
        proxy.refuse(false);
        wait_state(client, ConnectionState::Connected).await;
        assert!(client.is_connected());
    }
}

/// `from` sends `hello` to `to`, which records it: whether it arrived.
async fn message_arrives(from: &P2pClient, to: &P2pClient, seen: &Log<Value>, n: usize) {
    from.emit_to(to.id(), "hello", (n,)).await.unwrap();
    seen.wait_len(&format!("message {n} reaches '{}'", to.id()), n)
        .await;
    assert_eq!(seen.get()[n - 1], json!(n));
}

fn record_hello(client: &P2pClient) -> Log<Value> {
    let seen = Log::new();
    let s = seen.clone();
    client.on("hello", move |m| s.push(m.args[0].clone()));
    seen
}

// After its link is cut, a client goes Reconnecting, then Connected under the same P2pClient:
// its listeners still get messages and requests, it sends again, its rooms and its topic
// subscription work again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_link_reconnects_and_everything_works_again() {
    let relay = relay().await;
    let proxy = Proxy::start(relay.local_addr()).await;
    let bob = client(&relay, "bob").await;
    let news = ServiceClient::connect(&relay.url(), "news").await.unwrap();
    news.create_topic("sport").await.unwrap();

    let alice = connect(&proxy.url(), "alice", quick()).await;
    let seen = record_hello(&alice);
    alice.on_request("double", |args, reply| {
        let n = args.last().and_then(Value::as_i64).unwrap_or(0);
        reply.send((n * 2,));
    });
    let in_room = Log::new();
    let r = in_room.clone();
    alice.on_raw("room-news", move |args| r.push(args));
    alice.join_room("lobby").await.unwrap();
    bob.join_room("lobby").await.unwrap();
    let (topic_log, handler) = topic_log();
    alice
        .subscribe_topic("news", "sport", handler)
        .await
        .unwrap();

    message_arrives(&bob, &alice, &seen, 1).await;

    cut_and_see_reconnecting(&proxy, &alice, true).await;

    // Messages and requests reach the same listeners.
    message_arrives(&bob, &alice, &seen, 2).await;
    let doubled: i64 = bob.request("alice", "double", (21,)).await.unwrap();
    assert_eq!(doubled, 42);
    // It sends again.
    let back = record_hello(&bob);
    message_arrives(&alice, &bob, &back, 1).await;
    // Its room is joined again.
    assert!(rooms_of(&relay, "alice").contains(&"lobby".to_string()));
    bob.emit_room("lobby", "room-news", ("after the cut",))
        .await
        .unwrap();
    in_room.wait_len("a room emit reaches alice", 1).await;
    assert_eq!(in_room.get()[0], vec![json!("after the cut")]);
    // Its topic subscription works again.
    eventually_async("a publication reaches alice after the cut", || {
        let (news, topic_log) = (news.clone(), topic_log.clone());
        async move {
            news.publish_topic("sport", ("goal",)).await.unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
            !topic_log.get().is_empty()
        }
    })
    .await;
    assert_eq!(topic_log.get()[0], published(json!("goal")));
    alice.disconnect().await.unwrap();
    assert_eq!(*alice.state().borrow(), ConnectionState::Closed);
}

// A call made while the client reconnects waits for the link, at most its timeout, then fails
// with a clear error; a request in flight when the link dropped keeps waiting and gets its answer
// once the session is resumed. Once back, calls work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_while_reconnecting_fail_clearly() {
    let relay = relay().await;
    let proxy = Proxy::start(relay.local_addr()).await;
    let bob = client(&relay, "bob").await;
    // Bob keeps the replies of "slow" and never answers.
    let kept = Log::new();
    let k = kept.clone();
    bob.on_request("slow", move |_, reply| k.push(reply));
    let opts = ClientOptions {
        timeout: Duration::from_millis(800),
        ..quick()
    };
    let alice = connect(&proxy.url(), "alice", opts).await;

    let asking = {
        let alice = alice.clone();
        tokio::spawn(async move {
            alice
                .request::<Value>("bob", "slow", ())
                .timeout(Duration::from_secs(30))
                .await
        })
    };
    kept.wait_len("bob holds the request", 1).await;
    cut_and_see_reconnecting(&proxy, &alice, false).await;

    let during = within(
        "a call while reconnecting ends",
        alice.emit_to("bob", "hi", ()),
    )
    .await;
    match during {
        Err(Error::Disconnected(text)) => assert_says(&text, &["alice", "reconnecting"]),
        other => panic!("expected Disconnected, got {other:?}"),
    }
    let request_during = within(
        "a request while reconnecting ends",
        alice.request::<Value>("bob", "slow", ()),
    )
    .await;
    assert!(
        matches!(request_during, Err(Error::Disconnected(_))),
        "{request_during:?}"
    );

    // A call made while reconnecting that the link comes back for goes out.
    let seen = record_hello(&bob);
    let sending = {
        let alice = alice.clone();
        tokio::spawn(async move { alice.emit_to("bob", "hello", (1,)).await })
    };
    proxy.refuse(false);
    within("the call waiting for the link", sending)
        .await
        .unwrap()
        .unwrap();
    wait_state(&alice, ConnectionState::Connected).await;
    seen.wait_len("the message sent while reconnecting arrives", 1)
        .await;
    // Bob answers the request alice made before her link dropped: it reaches her.
    let reply = kept.get().remove(0);
    reply.send(("late",));
    let in_flight = within("the request in flight is answered", asking)
        .await
        .unwrap();
    assert_eq!(in_flight.unwrap(), json!(["late"]));
}

// With reconnection off, a lost link closes the client for good, and calls fail clearly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnection_off_ends_closed() {
    let relay = relay().await;
    let proxy = Proxy::start(relay.local_addr()).await;
    let bob = client(&relay, "bob").await;
    let alice = connect(&proxy.url(), "alice", quick().with_reconnect(false)).await;
    proxy.cut();
    wait_state(&alice, ConnectionState::Closed).await;
    within("closed() resolves", alice.closed()).await;
    assert!(!alice.is_connected());
    for result in [
        alice.emit_to("bob", "hi", ()).await,
        alice.join_room("lobby").await,
    ] {
        match result {
            Err(Error::Disconnected(text)) => assert_says(&text, &["alice", "connect again"]),
            other => panic!("expected Disconnected, got {other:?}"),
        }
    }
    // The relay let it go: the id is free for a new connection.
    eventually("the relay forgot alice", || {
        relay.server().socket_of("alice").is_none()
    })
    .await;
    drop(bob);
}

// A relay that restarts on the same port knows nothing of its clients: they reconnect as new
// sessions, join their rooms again, a client service creates its topics again and answers
// calls, and a subscriber's subscription is asked for again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_restart_new_session_restores_rooms_and_services() {
    let relay = relay().await;
    let addr = relay.local_addr();
    let url = relay.url();
    let svc = P2pClient::connect_service(&url, "math", quick())
        .await
        .unwrap();
    svc.provide_service("add", |call| {
        let (a, b): (i64, i64) = call.parse().unwrap_or_default();
        call.respond(a + b);
    })
    .unwrap();
    svc.create_topic("results").await.unwrap();
    let alice = connect(&url, "alice", quick()).await;
    alice.join_room("lobby").await.unwrap();
    let (topic_log, handler) = topic_log();
    alice
        .subscribe_topic("math", "results", handler)
        .await
        .unwrap();
    let in_room = Log::new();
    let r = in_room.clone();
    alice.on_raw("room-news", move |args| r.push(args));

    relay.shutdown().await;
    wait_state(&alice, ConnectionState::Reconnecting).await;
    let relay = Relay::bind_with(addr, RelayOptions::default())
        .await
        .expect("a new relay binds the same port");
    wait_state(&alice, ConnectionState::Connected).await;
    wait_state(&svc, ConnectionState::Connected).await;

    // The rooms are joined again before the state turns Connected.
    assert!(rooms_of(&relay, "alice").contains(&"lobby".to_string()));
    let carol = client(&relay, "carol").await;
    carol.join_room("lobby").await.unwrap();
    carol
        .emit_room("lobby", "room-news", ("after the restart",))
        .await
        .unwrap();
    in_room.wait_len("a room emit reaches alice", 1).await;
    // The client service answers.
    let sum: i64 = carol.request_service("math", "add", (2, 3)).await.unwrap();
    assert_eq!(sum, 5);
    // The subscription works again.
    eventually_async("a publication reaches alice after the restart", || {
        let (svc, topic_log) = (svc.clone(), topic_log.clone());
        async move {
            svc.publish_topic("results", (5,)).await.unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
            !topic_log.get().is_empty()
        }
    })
    .await;
    assert_eq!(topic_log.get()[0], published(json!(5)));
    relay.shutdown().await;
}

// ---- Session resume: the relay keeps a dropped client's session for a grace period ----

/// Records the disconnect notices `watcher` gets.
fn record_gone(watcher: &P2pClient) -> Log<String> {
    let gone = Log::new();
    let g = gone.clone();
    watcher.on_p2p_target_disconnect(move |id| g.push(id));
    gone
}

/// A relay with `server` for its options, and a proxy in front of it whose link can be cut.
async fn relay_behind_proxy(server: socketio_p2p::ServerOptions) -> (Relay, Proxy) {
    let relay = relay_with(RelayOptions {
        server,
        ..Default::default()
    })
    .await;
    let proxy = Proxy::start(relay.local_addr()).await;
    (relay, proxy)
}

/// Asserts that `watcher`'s disconnect notices (see [`record_gone`]) are empty.
fn assert_told_nothing(gone: &Log<String>, watcher: &str) {
    assert!(
        gone.get().is_empty(),
        "{watcher} was told: {:?}",
        gone.get()
    );
}

// A client whose link is cut and that comes back within the grace period resumes its session:
// the peer watching it is told nothing, keeps its listeners for it, and the client is still in
// its rooms and gets messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_within_grace_tells_peers_nothing() {
    let relay = relay().await;
    let proxy = Proxy::start(relay.local_addr()).await;
    let bob = client(&relay, "bob").await;
    let gone = record_gone(&bob);
    let from_alice = record_hello(&bob);
    bob.from("alice").on("chat", |_| {});
    let alice = connect(&proxy.url(), "alice", quick()).await;
    let seen = record_hello(&alice);
    alice.add_p2p_target("bob").await.unwrap();
    alice.join_room("lobby").await.unwrap();

    cut_and_see_reconnecting(&proxy, &alice, true).await;

    message_arrives(&bob, &alice, &seen, 1).await;
    message_arrives(&alice, &bob, &from_alice, 1).await;
    // A notice sent before would have reached bob before the answer to this.
    assert!(bob.list_clients().await.unwrap().contains(&"alice".into()));
    assert_told_nothing(&gone, "bob");
    assert_eq!(bob.from("alice").listener_count(), 1);
    assert!(rooms_of(&relay, "alice").contains(&"lobby".to_string()));
    // Its watchers are the new connection's: when it leaves for good, bob is told.
    alice.disconnect().await.unwrap();
    gone.wait_len("bob is told alice left", 1).await;
    assert_eq!(gone.get(), vec!["alice".to_string()]);
}

// Past the grace period the session ends as a disconnect does: the peer is told, and the client
// comes back as a new session that joins its rooms again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_grace_peers_are_told_and_a_new_session_begins() {
    let (relay, proxy) = relay_behind_proxy(socketio_p2p::ServerOptions {
        resume_grace: Duration::from_millis(200),
        ..Default::default()
    })
    .await;
    let bob = client(&relay, "bob").await;
    let gone = record_gone(&bob);
    let alice = connect(&proxy.url(), "alice", quick()).await;
    let seen = record_hello(&alice);
    alice.add_p2p_target("bob").await.unwrap();
    alice.join_room("lobby").await.unwrap();

    cut_and_see_reconnecting(&proxy, &alice, false).await;
    gone.wait_len("bob is told alice left", 1).await;
    assert_eq!(gone.get(), vec!["alice".to_string()]);
    proxy.refuse(false);
    wait_state(&alice, ConnectionState::Connected).await;
    assert!(rooms_of(&relay, "alice").contains(&"lobby".to_string()));
    message_arrives(&bob, &alice, &seen, 1).await;
}

/// The resume secret in the `P2P_WELCOME` a raw extension client got, and whether it resumed.
async fn welcome_of(raw: &RawClient) -> (String, bool) {
    let (secret, resumed) = p2p_welcome(raw).await;
    assert_eq!(secret.len(), 64);
    (secret, resumed)
}

// A connection that presents the session's resume secret takes over a connection the relay
// still holds, at once, even though the relay rejects duplicate ids; its peers are told nothing.
// A wrong secret is refused as a duplicate id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_secret_takes_over_a_stale_connection() {
    let relay = relay().await;
    let bob = client(&relay, "bob").await;
    let gone = record_gone(&bob);
    let url = format!("{}?clientId=alice&p2pExt=1", relay.url());
    let mut first = raw_client(&url).await;
    let (secret, resumed) = welcome_of(&first).await;
    assert!(!resumed);
    // Bob and alice become peers: a plain disconnect of alice would be told to bob.
    bob.emit_to("alice", "hi", ()).await.unwrap();
    eventually("alice gets bob's message", || {
        first.events.get().iter().any(|(ev, _)| ev == "hi")
    })
    .await;

    let mut wrong = raw_client(&format!("{url}&resume={}", "0".repeat(64))).await;
    assert_says(
        &wrong.next_error("a wrong secret").await,
        &["already connected"],
    );

    let second = raw_client(&format!("{url}&resume={secret}")).await;
    let (next_secret, resumed) = welcome_of(&second).await;
    assert!(resumed, "the new connection resumed the session");
    assert_ne!(next_secret, secret, "each connection gets its own secret");
    first.wait_closed("the stale connection is closed").await;
    bob.emit_to("alice", "again", ()).await.unwrap();
    eventually("the new connection gets bob's message", || {
        second.events.get().iter().any(|(ev, _)| ev == "again")
    })
    .await;
    assert!(bob.list_clients().await.unwrap().contains(&"alice".into()));
    assert_told_nothing(&gone, "bob");
    wrong.wait_closed("the refused connection is closed").await;
}

// With authentication on, a reconnecting client proves its identity again, with the token its
// `token_refresh` callback gives, and resumes its session: its peer is told nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_with_authentication_sends_a_fresh_token() {
    let relay = jwt_relay_with(socketio_p2p::ServerOptions::default()).await;
    let proxy = Proxy::start(relay.local_addr()).await;
    let bob = P2pClient::connect_with(&relay.url(), "bob", token_opts(Some(jwt_token("bob"))))
        .await
        .unwrap();
    let gone = record_gone(&bob);
    let asked = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let a = asked.clone();
    let opts = ClientOptions {
        token: Some(jwt_token("alice")),
        token_refresh: Some(Arc::new(move || {
            a.fetch_add(1, Ordering::AcqRel);
            Some(jwt_token("alice"))
        })),
        ..quick()
    };
    let alice = connect(&proxy.url(), "alice", opts).await;
    let seen = record_hello(&alice);
    alice.add_p2p_target("bob").await.unwrap();

    cut_and_see_reconnecting(&proxy, &alice, true).await;
    assert!(
        asked.load(Ordering::Acquire) >= 1,
        "the callback gave the token"
    );
    message_arrives(&bob, &alice, &seen, 1).await;
    assert!(bob.list_clients().await.unwrap().contains(&"alice".into()));
    assert_told_nothing(&gone, "bob");
}

// A client whose reconnection attempts all fail gives up after max_reconnect_attempts and ends
// closed, saying why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnection_gives_up_after_its_attempts() {
    let relay = relay().await;
    let proxy = Proxy::start(relay.local_addr()).await;
    let opts = ClientOptions {
        max_reconnect_attempts: Some(2),
        ..quick()
    };
    let alice = connect(&proxy.url(), "alice", opts).await;
    cut_and_see_reconnecting(&proxy, &alice, false).await;
    wait_state(&alice, ConnectionState::Closed).await;
    match alice.list_clients().await {
        Err(Error::Disconnected(text)) => assert_says(&text, &["alice", "after 2 attempt"]),
        other => panic!("expected Disconnected, got {other:?}"),
    }
}

// ---- What is addressed to a client while it is away is held for its return ----

/// Records the `(sender, n)` of every `m(n)` message `client` gets, in arrival order.
fn record_numbered(client: &P2pClient) -> Log<(String, i64)> {
    let seen = Log::new();
    let s = seen.clone();
    client.on("m", move |m| {
        s.push((m.from.clone(), m.args[0].as_i64().unwrap_or(-1)));
    });
    seen
}

/// Records the `SERVER_ERROR` texts `client` gets.
fn record_errors(client: &P2pClient) -> Log<String> {
    let errors = Log::new();
    let e = errors.clone();
    client.on_server_error(move |text| e.push(text));
    errors
}

/// Cuts `client`'s link behind `proxy` (refusing its return) and waits until the relay has seen
/// it drop and keeps its session.
async fn cut_and_see_parked(relay: &Relay, proxy: &Proxy, client: &P2pClient) {
    cut_and_see_reconnecting(proxy, client, false).await;
    eventually("the relay sees the link drop", || {
        !relay.server().is_connected(client.id())
    })
    .await;
}

/// Sends `m(from..=to)` from `sender` to `target`.
async fn send_numbered(sender: &P2pClient, target: &str, range: std::ops::RangeInclusive<i64>) {
    for n in range {
        sender.emit_to(target, "m", (n,)).await.unwrap();
    }
}

/// Alice behind a proxy, answering `double(n)` with `2n`, and her two peers bob and carol (each
/// has sent her one message), whose disconnect notices and errors are recorded.
struct Scene {
    bob: P2pClient,
    carol: P2pClient,
    bob_gone: Log<String>,
    carol_gone: Log<String>,
    bob_errors: Log<String>,
    carol_errors: Log<String>,
    alice: P2pClient,
    seen: Log<(String, i64)>,
}

async fn scene(relay: &Relay, proxy: &Proxy) -> Scene {
    let bob = client(relay, "bob").await;
    let carol = client(relay, "carol").await;
    let (bob_gone, carol_gone) = (record_gone(&bob), record_gone(&carol));
    let (bob_errors, carol_errors) = (record_errors(&bob), record_errors(&carol));
    let alice = connect(&proxy.url(), "alice", quick()).await;
    let seen = record_numbered(&alice);
    alice.on_request("double", |args, reply| {
        let n = args.last().and_then(Value::as_i64).unwrap_or(0);
        reply.send((n * 2,));
    });
    // Both become alice's peers: a disconnect of hers would be told to them.
    send_numbered(&bob, "alice", 0..=0).await;
    send_numbered(&carol, "alice", 0..=0).await;
    seen.wait_len("alice gets the first messages", 2).await;
    all_confirmed(relay, "alice").await;
    Scene {
        bob,
        carol,
        bob_gone,
        carol_gone,
        bob_errors,
        carol_errors,
        alice,
        seen,
    }
}

/// Waits until `client` has confirmed everything the relay sent it: a session that ends from now
/// on has nothing unconfirmed to tell its senders about.
async fn all_confirmed(relay: &Relay, client: &str) {
    eventually(&format!("'{client}' confirms what it received"), || {
        relay.server().unconfirmed_bytes(client) == Some(0)
    })
    .await;
}

/// `bob` asks the absent `alice` for `double(21)`; the request, once the relay holds it.
async fn ask_while_away(
    relay: &Relay,
    bob: &P2pClient,
) -> tokio::task::JoinHandle<socketio_p2p::Result<i64>> {
    let asking = {
        let bob = bob.clone();
        tokio::spawn(async move {
            bob.request::<i64>("alice", "double", (21,))
                .timeout(Duration::from_secs(20))
                .await
        })
    };
    eventually("the request is held for alice", || {
        relay.server().held_bytes("alice").unwrap_or(0) > 0
    })
    .await;
    asking
}

// Messages and requests sent to a client while its link is down, within the grace period, all
// reach it once it is back: none lost, none twice, each sender's in the order sent, and its
// peers are never told it left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_is_sent_during_the_gap_arrives_in_order_after_resume() {
    let relay = relay().await;
    let proxy = Proxy::start(relay.local_addr()).await;
    let Scene {
        bob,
        carol,
        bob_gone,
        carol_gone,
        bob_errors,
        carol_errors,
        alice,
        seen,
    } = scene(&relay, &proxy).await;

    cut_and_see_parked(&relay, &proxy, &alice).await;
    let asking = ask_while_away(&relay, &bob).await;
    let (b, c) = (bob.clone(), carol.clone());
    let batch = tokio::spawn(async move { send_numbered(&b, "alice", 1..=30).await });
    send_numbered(&c, "alice", 1..=30).await;
    batch.await.unwrap();

    proxy.refuse(false);
    wait_state(&alice, ConnectionState::Connected).await;
    let doubled = within("the held request is answered", asking)
        .await
        .unwrap();
    assert_eq!(doubled.unwrap(), 42);
    seen.wait_len("every held message arrives", 62).await;
    // One more from each: anything delivered twice would have come before these.
    send_numbered(&bob, "alice", 31..=31).await;
    send_numbered(&carol, "alice", 31..=31).await;
    seen.wait_len("the messages after the resume arrive", 64)
        .await;
    let got = seen.get();
    assert_eq!(got.len(), 64, "nothing arrived twice: {got:?}");
    for sender in ["bob", "carol"] {
        let from: Vec<i64> = got
            .iter()
            .filter(|(s, _)| s == sender)
            .map(|(_, n)| *n)
            .collect();
        assert_eq!(from, (0..=31).collect::<Vec<_>>(), "from {sender}");
    }
    // A notice sent before would have reached them before the answers to these.
    assert!(bob.list_clients().await.unwrap().contains(&"alice".into()));
    assert!(carol
        .list_clients()
        .await
        .unwrap()
        .contains(&"alice".into()));
    assert_told_nothing(&bob_gone, "bob");
    assert_told_nothing(&carol_gone, "carol");
    assert!(bob_errors.get().is_empty(), "{:?}", bob_errors.get());
    assert!(carol_errors.get().is_empty(), "{:?}", carol_errors.get());
}

// What is held for an absent client is bounded by resume_hold_bytes: the message that does not
// fit ends the session at once. Its sender hears the client is gone, the senders of the held
// messages how many were not delivered, a held request fails as the target gone, and the peers
// are told it left; back, the client starts a new session without any of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gap_past_the_hold_budget_ends_the_session() {
    let (relay, proxy) = relay_behind_proxy(socketio_p2p::ServerOptions {
        resume_grace: Duration::from_secs(60),
        resume_hold_bytes: 4_000,
        ..Default::default()
    })
    .await;
    let Scene {
        bob,
        carol,
        bob_gone,
        carol_gone,
        bob_errors,
        carol_errors,
        alice,
        seen,
    } = scene(&relay, &proxy).await;

    cut_and_see_parked(&relay, &proxy, &alice).await;
    let asking = ask_while_away(&relay, &bob).await;
    // Three messages from carol are held (each over 100 bytes: all three are in when the relay
    // holds 300 bytes more), then bob's big ones fill the rest.
    let before = relay.server().held_bytes("alice").unwrap();
    let pad = "c".repeat(100);
    for n in 1..=3 {
        carol
            .emit_to("alice", "m", (n, pad.as_str()))
            .await
            .unwrap();
    }
    eventually("carol's messages are held", || {
        relay.server().held_bytes("alice").unwrap_or(0) >= before + 300
    })
    .await;
    let big = "x".repeat(1_000);
    for _ in 0..6 {
        bob.emit_to("alice", "big", (big.as_str(),)).await.unwrap();
    }
    bob_gone.wait_len("bob is told alice left", 1).await;
    carol_gone.wait_len("carol is told alice left", 1).await;
    assert_eq!(bob_gone.get(), vec!["alice".to_string()]);
    let answer = within("the held request ends", asking).await.unwrap();
    assert!(
        matches!(answer, Err(Error::PeerGone(ref id)) if id == "alice"),
        "{answer:?}"
    );
    // Carol's three held messages were dropped: she is told how many.
    carol_errors
        .wait_len("carol hears her messages were dropped", 1)
        .await;
    assert_says(
        &carol_errors.get()[0],
        &["alice", "disconnected", "3 message"],
    );
    // Bob hears that his messages were not delivered: those that did not fit (the client may
    // send them in one batch) and any held before them.
    bob_errors
        .wait_len("bob hears his messages were not delivered", 1)
        .await;
    let bob_said = bob_errors.get().join("\n");
    assert_says(&bob_said, &["alice", "disconnected", "not delivered"]);

    proxy.refuse(false);
    wait_state(&alice, ConnectionState::Connected).await;
    send_numbered(&bob, "alice", 100..=100).await;
    seen.wait_len("a message after the new session arrives", 3)
        .await;
    assert_eq!(
        seen.get()[2],
        ("bob".to_string(), 100),
        "nothing held was delivered to the new session"
    );
}

// Past the grace period a session with messages and a request held for it ends as a disconnect
// does: the peers are told, the request fails as the target gone, the senders of the held
// messages are told they were not delivered, and the client's new session gets none of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gap_past_the_grace_period_ends_the_session() {
    let (relay, proxy) = relay_behind_proxy(socketio_p2p::ServerOptions {
        resume_grace: Duration::from_secs(2),
        ..Default::default()
    })
    .await;
    let bob = client(&relay, "bob").await;
    let gone = record_gone(&bob);
    let errors = record_errors(&bob);
    let alice = connect(&proxy.url(), "alice", quick()).await;
    let seen = record_numbered(&alice);
    alice.on_request("double", |_, reply| {
        reply.send((0,));
    });
    send_numbered(&bob, "alice", 0..=0).await;
    seen.wait_len("alice gets the first message", 1).await;
    all_confirmed(&relay, "alice").await;

    cut_and_see_parked(&relay, &proxy, &alice).await;
    let asking = ask_while_away(&relay, &bob).await;
    // Both held before the grace period ends (each over 100 bytes).
    let before = relay.server().held_bytes("alice").unwrap();
    let pad = "b".repeat(100);
    for n in 1..=2 {
        bob.emit_to("alice", "m", (n, pad.as_str())).await.unwrap();
    }
    eventually("bob's messages are held", || {
        relay.server().held_bytes("alice").unwrap_or(0) >= before + 200
    })
    .await;

    gone.wait_len("bob is told alice left", 1).await;
    assert_eq!(gone.get(), vec!["alice".to_string()]);
    let answer = within("the held request ends", asking).await.unwrap();
    assert!(
        matches!(answer, Err(Error::PeerGone(ref id)) if id == "alice"),
        "{answer:?}"
    );
    errors
        .wait_len("bob hears his messages were not delivered", 1)
        .await;
    assert_says(&errors.get()[0], &["alice", "disconnected", "2 message"]);

    proxy.refuse(false);
    wait_state(&alice, ConnectionState::Connected).await;
    send_numbered(&bob, "alice", 100..=100).await;
    seen.wait_len("a message after the new session arrives", 2)
        .await;
    assert_eq!(seen.get()[1], ("bob".to_string(), 100));
}

// ---- Room events and topic publications while a member's link is down ----

/// A topic handler, made for one topic.
type TopicHandler = Box<dyn Fn(TopicEvent) + Send + Sync>;

/// What alice hears, in arrival order, as one list: `m<n>` for a message `m(n)`, `r<n>` for a
/// room emit `r(n)`, `left<n>` for a room emit `left(n)`, `sport<n>` and `rain<n>` for
/// publications of the server's topic `news/sport` and of the client-provided `weather/rain`.
fn record_everything(alice: &P2pClient) -> (Log<String>, impl Fn(&str) -> TopicHandler) {
    let seen = Log::new();
    let s = seen.clone();
    alice.on("m", move |m| s.push(format!("m{}", m.args[0])));
    for event in ["r", "left"] {
        let s = seen.clone();
        alice.on_raw(event, move |args| s.push(format!("{event}{}", args[0])));
    }
    let log = seen.clone();
    let topic = move |name: &str| -> TopicHandler {
        let (s, name) = (log.clone(), name.to_string());
        Box::new(move |e: TopicEvent| match e.args() {
            Some(args) => s.push(format!("{name}{}", args[0])),
            None => s.push(format!("{name}-destroyed")),
        })
    };
    (seen, topic)
}

/// Records the room emits `r(n)` and the publications a member other than alice gets.
fn record_member(member: &P2pClient) -> (Log<String>, impl Fn(&str) -> TopicHandler) {
    let seen = Log::new();
    let s = seen.clone();
    member.on_raw("r", move |args| s.push(format!("r{}", args[0])));
    let log = seen.clone();
    let topic = move |name: &str| -> TopicHandler {
        let (s, name) = (log.clone(), name.to_string());
        Box::new(move |e: TopicEvent| {
            if let Some(args) = e.args() {
                s.push(format!("{name}{}", args[0]))
            }
        })
    };
    (seen, topic)
}

// Room emits and topic publications (of a server-provided and of a client-provided service) sent
// to the rooms of a client whose link is down reach it once it resumes: in the order the relay
// took them, interleaved with the messages held at the same time, each exactly once. The other
// members got them at once; a room the client left before the drop sends it nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_events_during_the_gap_arrive_in_order_after_resume() {
    let relay = relay().await;
    let proxy = Proxy::start(relay.local_addr()).await;
    let news = relay.server().as_service("news");
    news.create_topic("sport").unwrap();
    let weather = ServiceClient::connect(&relay.url(), "weather")
        .await
        .unwrap();
    weather.create_topic("rain").await.unwrap();
    let bob = client(&relay, "bob").await;
    let bob_errors = record_errors(&bob);
    let carol = client(&relay, "carol").await;
    let (carol_saw, carol_topic) = record_member(&carol);
    carol.join_room("lobby").await.unwrap();
    carol
        .subscribe_topic("news", "sport", carol_topic("sport"))
        .await
        .unwrap();
    carol
        .subscribe_topic("weather", "rain", carol_topic("rain"))
        .await
        .unwrap();

    let alice = connect(&proxy.url(), "alice", quick()).await;
    let (seen, topic) = record_everything(&alice);
    alice.join_room("lobby").await.unwrap();
    alice.join_room("old-room").await.unwrap();
    alice
        .subscribe_topic("news", "sport", topic("sport"))
        .await
        .unwrap();
    alice
        .subscribe_topic("weather", "rain", topic("rain"))
        .await
        .unwrap();
    // Before the drop: one of each.
    bob.emit_to("alice", "m", (0,)).await.unwrap();
    bob.emit_room("lobby", "r", (0,)).await.unwrap();
    news.publish_topic("sport", (0,)).unwrap();
    weather.publish_topic("rain", (0,)).await.unwrap();
    seen.wait_len("alice gets one of each before the cut", 4)
        .await;
    alice.leave_room("old-room").await.unwrap();

    cut_and_see_parked(&relay, &proxy, &alice).await;
    let mut expected = seen.get();
    for n in 1..=10 {
        bob.emit_to("alice", "m", (n,)).await.unwrap();
        bob.emit_room("lobby", "r", (n,)).await.unwrap();
        bob.emit_room("old-room", "left", (n,)).await.unwrap();
        news.publish_topic("sport", (n,)).unwrap();
        weather.publish_topic("rain", (n,)).await.unwrap();
        expected.extend([
            format!("m{n}"),
            format!("r{n}"),
            format!("sport{n}"),
            format!("rain{n}"),
        ]);
    }
    // The other member got them while alice was away.
    carol_saw
        .wait_len("carol gets every room event at once", 33)
        .await;
    assert_eq!(seen.len(), 4, "alice's link is down: {:?}", seen.get());

    proxy.refuse(false);
    wait_state(&alice, ConnectionState::Connected).await;
    seen.wait_len("everything held reaches alice", expected.len())
        .await;
    // One more of each after the resume: anything delivered twice would have come before these.
    bob.emit_to("alice", "m", (11,)).await.unwrap();
    bob.emit_room("lobby", "r", (11,)).await.unwrap();
    news.publish_topic("sport", (11,)).unwrap();
    weather.publish_topic("rain", (11,)).await.unwrap();
    expected.extend(["m11", "r11", "sport11", "rain11"].map(String::from));
    seen.wait_len("the events after the resume arrive", expected.len())
        .await;
    assert_eq!(seen.get(), expected);
    assert!(bob_errors.get().is_empty(), "{:?}", bob_errors.get());
}

/// Lets `alice` back through `proxy` after her session ended, and checks that her new session is
/// in the lobby again and gets `bob`'s next room emit there, and nothing that was held for the
/// old one (`seen` is her record from [`record_everything`]).
async fn new_session_gets_no_held_room_emit(
    relay: &Relay,
    proxy: &Proxy,
    alice: &P2pClient,
    bob: &P2pClient,
    seen: &Log<String>,
) {
    proxy.refuse(false);
    wait_state(alice, ConnectionState::Connected).await;
    eventually("alice is in the lobby again", || {
        rooms_of(relay, "alice").contains(&"lobby".to_string())
    })
    .await;
    bob.emit_room("lobby", "r", (100,)).await.unwrap();
    seen.wait_len("a room emit to the new session arrives", 1)
        .await;
    assert_eq!(
        seen.get(),
        vec!["r100".to_string()],
        "nothing held was delivered"
    );
}

// Room emits held for an absent member are bounded by resume_hold_bytes with the rest: the one
// that does not fit ends the session. The emitter's room emits were answered as done (the other
// members got them), and it hears in one SERVER_ERROR how many did not reach the absent member;
// back, the client starts a new session that gets none of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_events_past_the_hold_budget_end_the_session() {
    let (relay, proxy) = relay_behind_proxy(socketio_p2p::ServerOptions {
        resume_grace: Duration::from_secs(60),
        resume_hold_bytes: 4_000,
        ..Default::default()
    })
    .await;
    let bob = client(&relay, "bob").await;
    let bob_errors = record_errors(&bob);
    let carol = client(&relay, "carol").await;
    let (carol_saw, _) = record_member(&carol);
    carol.join_room("lobby").await.unwrap();
    let alice = connect(&proxy.url(), "alice", quick()).await;
    let (seen, _) = record_everything(&alice);
    alice.join_room("lobby").await.unwrap();

    cut_and_see_parked(&relay, &proxy, &alice).await;
    // Three of about 1,000 bytes are held; the fourth does not fit.
    let pad = "x".repeat(1_000);
    for n in 1..=3 {
        bob.emit_room("lobby", "r", (n, pad.as_str()))
            .await
            .unwrap();
    }
    eventually("bob's room emits are held", || {
        relay.server().held_bytes("alice").unwrap_or(0) >= 3_000
    })
    .await;
    bob.emit_room("lobby", "r", (4, pad.as_str()))
        .await
        .unwrap();
    carol_saw.wait_len("carol gets all four", 4).await;
    bob_errors
        .wait_len("bob hears his room emits did not reach alice", 1)
        .await;
    assert_says(
        &bob_errors.get()[0],
        &["alice", "disconnected", "4 message(s)", "not delivered"],
    );
    eventually("the session has ended", || {
        relay.server().held_bytes("alice").is_none()
    })
    .await;

    new_session_gets_no_held_room_emit(&relay, &proxy, &alice, &bob, &seen).await;
}

// Past the grace period the room emits held for the absent member are dropped with its session:
// the emitter hears how many did not reach it, nothing waits for the member, and its new session
// gets none of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_events_past_the_grace_period_are_not_delivered() {
    let (relay, proxy) = relay_behind_proxy(socketio_p2p::ServerOptions {
        resume_grace: Duration::from_secs(2),
        ..Default::default()
    })
    .await;
    let bob = client(&relay, "bob").await;
    let bob_errors = record_errors(&bob);
    let alice = connect(&proxy.url(), "alice", quick()).await;
    let (seen, _) = record_everything(&alice);
    alice.join_room("lobby").await.unwrap();

    cut_and_see_parked(&relay, &proxy, &alice).await;
    for n in 1..=2 {
        within("a room emit is answered", bob.emit_room("lobby", "r", (n,)))
            .await
            .unwrap();
    }
    eventually("bob's room emits are held", || {
        relay.server().held_bytes("alice").unwrap_or(0) > 0
    })
    .await;
    bob_errors
        .wait_len("bob hears his room emits did not reach alice", 1)
        .await;
    assert_says(
        &bob_errors.get()[0],
        &["alice", "disconnected", "2 message(s)", "not delivered"],
    );
    assert_eq!(relay.server().held_bytes("alice"), None);

    new_session_gets_no_held_room_emit(&relay, &proxy, &alice, &bob, &seen).await;
}

// A topic destroyed while a subscriber's link is down: the subscriber hears of it once it
// resumes, after the publications held before it, and is no longer in the topic's room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_destroyed_during_the_gap_is_told_after_resume() {
    let relay = relay().await;
    let proxy = Proxy::start(relay.local_addr()).await;
    let news = relay.server().as_service("news");
    news.create_topic("sport").unwrap();
    let alice = connect(&proxy.url(), "alice", quick()).await;
    let (seen, topic) = record_everything(&alice);
    alice
        .subscribe_topic("news", "sport", topic("sport"))
        .await
        .unwrap();
    let topic_room = |relay: &Relay| {
        rooms_of(relay, "alice")
            .into_iter()
            .any(|r| r.contains("sport"))
    };
    assert!(topic_room(&relay), "{:?}", rooms_of(&relay, "alice"));

    cut_and_see_parked(&relay, &proxy, &alice).await;
    news.publish_topic("sport", (1,)).unwrap();
    news.destroy_topic("sport").unwrap();

    proxy.refuse(false);
    wait_state(&alice, ConnectionState::Connected).await;
    seen.wait_len("the publication and the end of the topic arrive", 2)
        .await;
    assert_eq!(seen.get(), vec!["sport1", "sport-destroyed"]);
    assert!(!topic_room(&relay), "{:?}", rooms_of(&relay, "alice"));
}

// ---- Nothing lost at a cut: what was on its way when a link dropped is sent again ----

/// Messages each sender sends in the runs below.
const FLOW: i64 = 1_500;
/// Every this many messages, the sender also makes a request.
const ASK_EVERY: i64 = 100;

/// Waits for `f`, at most 30 s: a run of many messages with cuts in it.
async fn long<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(30), f)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}

/// Waits until `log` has at least `n` entries, at most 30 s.
async fn long_wait_len<T: Clone>(log: &Log<T>, what: &str, n: usize) {
    long(what, async {
        while log.len() < n {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

/// `sender` sends `m(1..=FLOW)` to `target` and, every `ASK_EVERY` messages, asks it for
/// `double(n)` without waiting; returns the answers, each with the number asked.
async fn flow(sender: P2pClient, target: &'static str) -> Vec<(i64, socketio_p2p::Result<i64>)> {
    let mut asking = Vec::new();
    for n in 1..=FLOW {
        sender
            .emit_to(target, "m", (n,))
            .await
            .unwrap_or_else(|e| panic!("'{}' sends m({n}): {e}", sender.id()));
        if n % ASK_EVERY == 0 {
            let s = sender.clone();
            asking.push((
                n,
                tokio::spawn(async move {
                    s.request::<i64>(target, "double", (n,))
                        .timeout(Duration::from_secs(25))
                        .await
                }),
            ));
        }
    }
    let mut answers = Vec::new();
    for (n, a) in asking {
        answers.push((n, a.await.unwrap()));
    }
    answers
}

/// Answers `double(n)` with `2n`.
fn answer_double(client: &P2pClient) {
    client.on_request("double", |args, reply| {
        let n = args.last().and_then(Value::as_i64).unwrap_or(0);
        reply.send((n * 2,));
    });
}

/// What `seen` got from each of `senders`, in order, is `m(first..=last)` exactly.
fn assert_each_once_in_order(seen: &[(String, i64)], senders: &[&str], first: i64, last: i64) {
    for sender in senders {
        let from: Vec<i64> = seen
            .iter()
            .filter(|(s, _)| s == sender)
            .map(|(_, n)| *n)
            .collect();
        let expected: Vec<i64> = (first..=last).collect();
        if from != expected {
            let missing = expected.iter().filter(|n| !from.contains(n)).count();
            let twice = from.len() + missing - expected.len();
            panic!(
                "from {sender}: {} received, {missing} missing, {twice} more than once or out of \
                 order (first differences: {:?})",
                from.len(),
                from.iter()
                    .zip(expected.iter())
                    .filter(|(a, b)| a != b)
                    .take(5)
                    .collect::<Vec<_>>()
            );
        }
    }
}

/// Every answer is `2n`.
fn assert_answered(answers: &[(i64, socketio_p2p::Result<i64>)], who: &str) {
    assert_eq!(answers.len() as i64, FLOW / ASK_EVERY, "{who}'s requests");
    for (n, a) in answers {
        match a {
            Ok(v) => assert_eq!(*v, 2 * n, "{who}'s double({n})"),
            Err(e) => panic!("{who}'s double({n}) failed: {e}"),
        }
    }
}

/// Cuts `client`'s link three times while `progress` grows past a third, a half and two thirds
/// of `total`; each time the client comes back at once, through the proxy.
async fn cut_three_times(
    proxy: &Proxy,
    client: &P2pClient,
    progress: impl Fn() -> usize,
    total: usize,
) {
    for k in [3, 2] {
        let mark = total / k;
        long("the flow goes on", async {
            while progress() < mark {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
        .await;
        proxy.cut();
        // Back through the proxy before the next cut.
        long("the client connects again", async {
            while !proxy.carries_any() {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
        .await;
        wait_state(client, ConnectionState::Connected).await;
    }
    let mark = total * 2 / 3;
    long("the flow goes on", async {
        while progress() < mark {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await;
    proxy.cut();
}

// Two senders stream numbered messages and requests to a client whose link is cut three times
// while they flow: every message arrives once, each sender's in order, every request is answered,
// and its peers are never told it left nor that anything was not delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_cut_mid_flow_misses_nothing() {
    let relay = relay().await;
    let proxy = Proxy::start(relay.local_addr()).await;
    let bob = client(&relay, "bob").await;
    let carol = client(&relay, "carol").await;
    let (bob_gone, carol_gone) = (record_gone(&bob), record_gone(&carol));
    let (bob_errors, carol_errors) = (record_errors(&bob), record_errors(&carol));
    let alice = connect(&proxy.url(), "alice", quick()).await;
    let seen = record_numbered(&alice);
    answer_double(&alice);

    let from_bob = tokio::spawn(flow(bob.clone(), "alice"));
    let from_carol = tokio::spawn(flow(carol.clone(), "alice"));
    let total = 2 * FLOW as usize;
    let s = seen.clone();
    cut_three_times(&proxy, &alice, move || s.len(), total).await;

    let bob_answers = long("bob's flow ends", from_bob).await.unwrap();
    let carol_answers = long("carol's flow ends", from_carol).await.unwrap();
    let waited = tokio::time::timeout(Duration::from_secs(30), async {
        while seen.len() < total {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    if waited.is_err() {
        assert_each_once_in_order(&seen.get(), &["bob", "carol"], 1, FLOW);
        panic!("{:?} {:?}", bob_errors.get(), carol_errors.get());
    }
    // One more from each: anything delivered twice would have come before these.
    bob.emit_to("alice", "m", (FLOW + 1,)).await.unwrap();
    carol.emit_to("alice", "m", (FLOW + 1,)).await.unwrap();
    long_wait_len(&seen, "the last messages arrive", total + 2).await;
    assert_each_once_in_order(&seen.get(), &["bob", "carol"], 1, FLOW + 1);
    assert_answered(&bob_answers, "bob");
    assert_answered(&carol_answers, "carol");
    assert!(bob.list_clients().await.unwrap().contains(&"alice".into()));
    assert_told_nothing(&bob_gone, "bob");
    assert_told_nothing(&carol_gone, "carol");
    assert!(bob_errors.get().is_empty(), "{:?}", bob_errors.get());
    assert!(carol_errors.get().is_empty(), "{:?}", carol_errors.get());
}

// A sender whose link is cut three times while it streams numbered messages and requests: what it
// wrote just before each cut is neither lost nor delivered twice, and every request is answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sender_cut_mid_flow_loses_nothing() {
    let relay = relay().await;
    let proxy = Proxy::start(relay.local_addr()).await;
    let bob = client(&relay, "bob").await;
    let bob_gone = record_gone(&bob);
    let seen = record_numbered(&bob);
    answer_double(&bob);
    let alice = connect(&proxy.url(), "alice", quick()).await;
    let alice_errors = record_errors(&alice);
    let carol = connect(&relay.url(), "carol", quick()).await;
    let carol_seen = record_numbered(&carol);
    answer_double(&carol);

    // Alice streams to both bob and carol at once.
    let to_bob = tokio::spawn(flow(alice.clone(), "bob"));
    let to_carol = tokio::spawn(flow(alice.clone(), "carol"));
    let (b, c) = (seen.clone(), carol_seen.clone());
    let total = 2 * FLOW as usize;
    cut_three_times(&proxy, &alice, move || b.len() + c.len(), total).await;

    let bob_answers = long("the flow to bob ends", to_bob).await.unwrap();
    let carol_answers = long("the flow to carol ends", to_carol).await.unwrap();
    long_wait_len(&seen, "every message reaches bob", FLOW as usize).await;
    long_wait_len(&carol_seen, "every message reaches carol", FLOW as usize).await;
    alice.emit_to("bob", "m", (FLOW + 1,)).await.unwrap();
    alice.emit_to("carol", "m", (FLOW + 1,)).await.unwrap();
    long_wait_len(&seen, "the last message reaches bob", FLOW as usize + 1).await;
    long_wait_len(
        &carol_seen,
        "the last message reaches carol",
        FLOW as usize + 1,
    )
    .await;
    assert_each_once_in_order(&seen.get(), &["alice"], 1, FLOW + 1);
    assert_each_once_in_order(&carol_seen.get(), &["alice"], 1, FLOW + 1);
    assert_answered(&bob_answers, "alice (to bob)");
    assert_answered(&carol_answers, "alice (to carol)");
    assert_told_nothing(&bob_gone, "bob");
    assert!(alice_errors.get().is_empty(), "{:?}", alice_errors.get());
}

// A client whose count is older than what the relay kept for it (the record of what it was sent
// is tiny, and an answer pushed an unconfirmed message out of it) cannot resume without loss: it
// starts a new session. Its peers are told it left, the message's sender that it was not
// confirmed delivered, its own request in flight fails clearly, and nothing arrives twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_count_older_than_what_was_kept_starts_a_new_session() {
    let (relay, proxy) = relay_behind_proxy(socketio_p2p::ServerOptions {
        resume_grace: Duration::from_secs(60),
        resume_replay_bytes: 1,
        ..Default::default()
    })
    .await;
    let bob = client(&relay, "bob").await;
    let carol = client(&relay, "carol").await;
    let (bob_gone, carol_gone) = (record_gone(&bob), record_gone(&carol));
    let bob_errors = record_errors(&bob);
    answer_double(&bob);
    let alice = connect(&proxy.url(), "alice", quick()).await;
    let seen = record_numbered(&alice);
    // Both become alice's peers; one message at a time fits in her record.
    for (k, sender) in [&bob, &carol].into_iter().enumerate() {
        send_numbered(sender, "alice", 0..=0).await;
        seen.wait_len("alice gets the first messages", k + 1).await;
        all_confirmed(&relay, "alice").await;
    }

    // What the relay sends alice stops short of her: a message to her, then the answer to her
    // own request, which pushes the message out of the tiny record.
    proxy.stall(true);
    let pad = "p".repeat(500);
    bob.emit_to("alice", "m", (1, pad.as_str())).await.unwrap();
    eventually("the message waits for alice's confirmation", || {
        relay.server().unconfirmed_bytes("alice").unwrap_or(0) >= 500
    })
    .await;
    let asking = {
        let alice = alice.clone();
        tokio::spawn(async move {
            alice
                .request::<i64>("bob", "double", (21,))
                .timeout(Duration::from_secs(20))
                .await
        })
    };
    eventually("the answer pushes the message out", || {
        (1..500).contains(&relay.server().unconfirmed_bytes("alice").unwrap_or(0))
    })
    .await;

    proxy.refuse(true);
    proxy.cut();
    proxy.stall(false);
    wait_state(&alice, ConnectionState::Reconnecting).await;
    proxy.refuse(false);
    wait_state(&alice, ConnectionState::Connected).await;

    bob_gone.wait_len("bob is told alice left", 1).await;
    carol_gone.wait_len("carol is told alice left", 1).await;
    assert_eq!(carol_gone.get(), vec!["alice".to_string()]);
    bob_errors
        .wait_len("bob hears his message was not confirmed", 1)
        .await;
    assert_says(
        &bob_errors.get()[0],
        &["alice", "1 message", "not confirmed delivered"],
    );
    let in_flight = within("alice's request in flight ends", asking)
        .await
        .unwrap();
    match in_flight {
        Err(Error::Disconnected(text)) => assert_says(&text, &["alice", "new session", "double"]),
        other => panic!("expected Disconnected, got {other:?}"),
    }
    send_numbered(&bob, "alice", 2..=2).await;
    seen.wait_len("a message of the new session arrives", 3)
        .await;
    assert_eq!(
        seen.get(),
        vec![
            ("bob".to_string(), 0),
            ("carol".to_string(), 0),
            ("bob".to_string(), 2)
        ],
        "nothing of the old session arrived, nothing twice"
    );
}
