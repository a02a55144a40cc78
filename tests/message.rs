//! Message API (README 2.2 and 3.2): messages and replies between clients by id, listeners per
//! peer, add-target, and what happens when a peer leaves. Real relay, real clients, loopback.

mod common;
use common::*;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use socketio_p2p::{parse_args, Args, Error, P2pClient, PeerMessage, Relay, RelayOptions, Reply};
use std::time::{Duration, Instant};

type Seen = Log<(String, Vec<Value>)>;

/// Records `(sender, args)` of every `event` from any peer.
fn record_any(c: &P2pClient, event: &str) -> Seen {
    let log = Log::new();
    let l = log.clone();
    c.on(event, move |m: PeerMessage| l.push((m.from, m.args)));
    log
}

/// Records `(sender, args)` of every `event` from `peer` only.
fn record_from(c: &P2pClient, peer: &str, event: &str) -> Seen {
    let log = Log::new();
    let l = log.clone();
    c.from(peer).on(event, move |m| l.push((m.from, m.args)));
    log
}

fn entry(from: &str, args: Vec<Value>) -> (String, Vec<Value>) {
    (from.to_string(), args)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smoke() {
    let relay = relay().await;
    let a = client(&relay, "alice").await;
    let b = client(&relay, "bob").await;
    let got = record_any(&b, "hello");
    b.on("ask", |m| {
        let n: i64 = m.arg(0).unwrap();
        m.reply.unwrap().send((n + 1,));
    });
    a.emit_to("bob", "hello", ("hi", 1)).await.unwrap();
    let r = a.request::<Vec<Value>>("bob", "ask", (41,)).await.unwrap();
    assert_eq!(r, vec![json!(42)]);
    got.wait_len("hello arrives", 1).await;
    assert_eq!(got.get(), vec![entry("alice", vec![json!("hi"), json!(1)])]);
    assert_eq!(a.list_clients().await.unwrap(), vec!["alice", "bob"]);
}

// README 3.2.2: the relationship between clients is n-n, and emitTo reaches the right target.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn n_to_n_messaging() {
    const PER_PAIR: usize = 25;
    let relay = relay().await;
    let ids = ["c0", "c1", "c2", "c3"];
    let mut clients = Vec::new();
    let mut logs = Vec::new();
    for id in ids {
        let c = client(&relay, id).await;
        logs.push(record_any(&c, "m"));
        clients.push(c);
    }
    let mut sends = Vec::new();
    for (i, c) in clients.iter().enumerate() {
        let c = c.clone();
        sends.push(tokio::spawn(async move {
            for seq in 0..PER_PAIR {
                for (j, target) in ids.iter().enumerate() {
                    if i != j {
                        c.emit_to(target, "m", (ids[i], *target, seq))
                            .await
                            .unwrap();
                    }
                }
            }
        }));
    }
    for s in sends {
        within("senders finish", s).await.unwrap();
    }
    for (j, log) in logs.iter().enumerate() {
        log.wait_len("every message arrives", (ids.len() - 1) * PER_PAIR)
            .await;
        let got = log.get();
        assert_eq!(
            got.len(),
            (ids.len() - 1) * PER_PAIR,
            "nothing extra at {}",
            ids[j]
        );
        for (i, sender) in ids.iter().enumerate() {
            let from_sender: Vec<_> = got.iter().filter(|(f, _)| f == sender).collect();
            if i == j {
                assert!(
                    from_sender.is_empty(),
                    "{} got messages from itself",
                    ids[j]
                );
                continue;
            }
            let expected: Vec<_> = (0..PER_PAIR)
                .map(|seq| entry(sender, vec![json!(sender), json!(ids[j]), json!(seq)]))
                .collect();
            let from_sender: Vec<_> = from_sender.into_iter().cloned().collect();
            assert_eq!(
                from_sender, expected,
                "{} -> {}: right sender, target, order",
                sender, ids[j]
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_messages_arrive_in_order() {
    let relay = relay().await;
    let a = client(&relay, "alice").await;
    let b = client(&relay, "bob").await;
    let got = record_any(&b, "n");
    for i in 0..1000 {
        a.emit_to("bob", "n", (i,)).await.unwrap();
    }
    got.wait_len("all 1000 arrive", 1000).await;
    let expected: Vec<_> = (0..1000).map(|i| entry("alice", vec![json!(i)])).collect();
    assert_eq!(got.get(), expected);
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Point {
    x: i64,
    y: i64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_replies() {
    let relay = relay().await;
    let a = client(&relay, "alice").await;
    let b = client(&relay, "bob").await;
    b.on("sum", |m| {
        let (x, y): (i64, i64) = m.parse().unwrap();
        assert_eq!(m.from, "alice");
        m.reply.unwrap().send((x + y, format!("{x}+{y}")));
    });
    b.on("point", |m| {
        let p: Point = m.arg(0).unwrap();
        m.reply.unwrap().send((Point { x: p.y, y: p.x },));
    });
    let twice = Log::new();
    let t = twice.clone();
    b.on("twice", move |m| {
        let r = m.reply.unwrap();
        let r2 = r.clone();
        t.push((r.send(("first",)), r2.send(("second",))));
    });

    let (sum, text): (i64, String) = a.request("bob", "sum", (2, 3)).await.unwrap();
    assert_eq!((sum, text.as_str()), (5, "2+3"));

    let p: Point = a
        .request("bob", "point", (Point { x: 1, y: 2 },))
        .await
        .unwrap();
    assert_eq!(p, Point { x: 2, y: 1 });

    let raw = a
        .request::<Vec<Value>>("bob", "sum", (10, 20))
        .await
        .unwrap();
    assert_eq!(raw, vec![json!(30), json!("10+20")]);
    let parsed: (i64, String) = parse_args(&raw).unwrap();
    assert_eq!(parsed, (30, "10+20".to_string()));
    assert!(
        parse_args::<(String, String)>(&raw).is_err(),
        "a wrong type is an error"
    );

    // Two answers: the first wins.
    let r: String = a.request("bob", "twice", ()).await.unwrap();
    assert_eq!(r, "first");
    assert_eq!(twice.get(), vec![(true, false)]);

    // A wrong reply type gives an error, not a panic.
    let wrong = a.request::<Point>("bob", "sum", (1, 1)).await;
    assert!(matches!(wrong, Err(Error::Json(_))), "{wrong:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reply_later_from_another_task_and_reply_errors() {
    let relay = relay().await;
    let a = client(&relay, "alice").await;
    let b = client(&relay, "bob").await;
    b.on("slow", |m| {
        let reply = m.reply.unwrap();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            reply.send(("late",));
        });
    });
    b.on("fail", |m| {
        m.reply.unwrap().error("bob refuses");
    });
    let r: String = a.request("bob", "slow", ()).await.unwrap();
    assert_eq!(r, "late");
    let r = a.request::<Vec<Value>>("bob", "fail", ()).await;
    assert!(
        matches!(&r, Err(Error::Remote { message, .. }) if message == "bob refuses"),
        "{r:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reply_to_event_without_listener_fails_fast() {
    let relay = relay().await;
    let a = client(&relay, "alice").await;
    let _b = client(&relay, "bob").await;
    let t = Instant::now();
    let err = within(
        "no-listener request",
        a.request::<Vec<Value>>("bob", "nobody-listens", (1,)),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&err, Error::Remote { message: text, .. } if text.contains("no listener") && text.contains("nobody-listens")),
        "{err:?}"
    );
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "took {:?}",
        t.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_reply_gives_the_caller_an_error() {
    let relay = relay().await;
    let a = client(&relay, "alice").await;
    let b = client(&relay, "bob").await;
    let seen = record_any(&b, "ignored");
    let t = Instant::now();
    let err = within(
        "dropped reply",
        a.request::<Vec<Value>>("bob", "ignored", (1,)),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&err, Error::Remote { message: text, .. } if text.contains("dropped the reply without answering")),
        "{err:?}"
    );
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "took {:?}",
        t.elapsed()
    );
    assert_eq!(
        seen.get(),
        vec![entry("alice", vec![json!(1)])],
        "the listener did run"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unanswered_request_times_out() {
    let relay = relay().await;
    let a = client_with_timeout(&relay, "alice", Duration::from_millis(500)).await;
    let b = client(&relay, "bob").await;
    let held: Log<Reply> = Log::new();
    let h = held.clone();
    b.on("hold", move |m| h.push(m.reply.unwrap()));

    let t = Instant::now();
    let err = within("held request", a.request::<Vec<Value>>("bob", "hold", ()))
        .await
        .unwrap_err();
    let took = t.elapsed();
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
    assert!(
        took >= Duration::from_millis(450),
        "waited the timeout, took {took:?}"
    );
    assert!(
        took < Duration::from_secs(2),
        "not much longer, took {took:?}"
    );
    assert_eq!(held.len(), 1);

    let t = Instant::now();
    let err = within(
        "held request, own timeout",
        a.request::<Vec<Value>>("bob", "hold", ())
            .timeout(Duration::from_millis(150)),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
    assert!(
        t.elapsed() < Duration::from_millis(450),
        "{:?}",
        t.elapsed()
    );

    // A late answer to a request that timed out goes nowhere; the client keeps working.
    for r in held.get() {
        r.send(("too late",));
    }
    b.on("ok", |m| {
        m.reply.unwrap().send(("fine",));
    });
    let r: String = a.request("bob", "ok", ()).await.unwrap();
    assert_eq!(r, "fine");
}

// README 3.2.2: onAny hears every client, from().on only the chosen one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn from_filters_by_sender_and_on_any_does_not() {
    let relay = relay().await;
    let alice = client(&relay, "alice").await;
    let bob = client(&relay, "bob").await;
    let carol = client(&relay, "carol").await;
    let only_alice = record_from(&bob, "alice", "chat");
    let anyone = record_any(&bob, "chat");

    carol.emit_to("bob", "chat", ("from carol",)).await.unwrap();
    // The on_any listener is called in the same dispatch as the filtered one: once it saw
    // carol's message, the filter has decided on it.
    anyone.wait_len("on_any hears carol", 1).await;
    alice.emit_to("bob", "chat", ("from alice",)).await.unwrap();
    only_alice.wait_len("from(alice) hears alice", 1).await;
    anyone.wait_len("on_any hears alice", 2).await;

    assert_eq!(
        only_alice.get(),
        vec![entry("alice", vec![json!("from alice")])]
    );
    assert_eq!(
        anyone.get(),
        vec![
            entry("carol", vec![json!("from carol")]),
            entry("alice", vec![json!("from alice")])
        ]
    );
    assert_eq!(bob.from("alice").listener_count(), 1);
    assert_eq!(bob.from("carol").listener_count(), 0);
}

// README 3.2.2: once works like socket.once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_any_and_from_once_fire_once() {
    let relay = relay().await;
    let alice = client(&relay, "alice").await;
    let bob = client(&relay, "bob").await;
    let once_any = Log::new();
    let o = once_any.clone();
    bob.once_any("tick", move |m| o.push(m.args));
    let once_from = Log::new();
    let o = once_from.clone();
    bob.from("alice").once("tick", move |m| o.push(m.args));
    assert_eq!(bob.from("alice").listener_count(), 1);
    let all = record_any(&bob, "tick");

    for i in 0..3 {
        alice.emit_to("bob", "tick", (i,)).await.unwrap();
    }
    all.wait_len("all ticks arrive", 3).await;
    assert_eq!(once_any.get(), vec![vec![json!(0)]]);
    assert_eq!(once_from.get(), vec![vec![json!(0)]]);
    assert_eq!(
        bob.from("alice").listener_count(),
        0,
        "a once listener is gone after firing"
    );

    // A once listener with a reply answers once; the next request has no listener.
    bob.once_any("one-shot", |m| {
        m.reply.unwrap().send(("only once",));
    });
    let r: String = alice.request("bob", "one-shot", ()).await.unwrap();
    assert_eq!(r, "only once");
    let second = alice.request::<Vec<Value>>("bob", "one-shot", ()).await;
    assert!(
        matches!(&second, Err(Error::Remote { message: t, .. }) if t.contains("no listener")),
        "{second:?}"
    );
}

// README 3.2.2: off works like socket.off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn off_any_and_from_off_stop_delivery() {
    let relay = relay().await;
    let alice = client(&relay, "alice").await;
    let bob = client(&relay, "bob").await;
    let any = record_any(&bob, "ev");
    let from_alice = record_from(&bob, "alice", "ev");
    let other_event = record_any(&bob, "other");

    alice.emit_to("bob", "ev", (1,)).await.unwrap();
    any.wait_len("on_any fires", 1).await;
    from_alice.wait_len("from(alice) fires", 1).await;

    bob.off_any("ev");
    alice.emit_to("bob", "ev", (2,)).await.unwrap();
    // Positive control: from(alice) still hears "ev" after off_any.
    from_alice.wait_len("from(alice) survives off_any", 2).await;
    assert_eq!(
        any.get(),
        vec![entry("alice", vec![json!(1)])],
        "off_any stopped on_any"
    );

    bob.from("alice").off("ev");
    assert_eq!(bob.from("alice").listener_count(), 0);
    alice.emit_to("bob", "ev", (3,)).await.unwrap();
    alice.emit_to("bob", "other", ("marker",)).await.unwrap();
    other_event.wait_len("a later event still arrives", 1).await;
    assert_eq!(
        from_alice.get(),
        vec![
            entry("alice", vec![json!(1)]),
            entry("alice", vec![json!(2)])
        ],
        "from().off stopped from().on"
    );
    assert_eq!(any.len(), 1);
    // Nothing listens to "ev" any more: a request for it says so.
    let r = alice.request::<Vec<Value>>("bob", "ev", ()).await;
    assert!(
        matches!(&r, Err(Error::Remote { message: t, .. }) if t.contains("no listener")),
        "{r:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remove_listener_removes_only_that_listener() {
    let relay = relay().await;
    let alice = client(&relay, "alice").await;
    let bob = client(&relay, "bob").await;
    let first = Log::new();
    let f = first.clone();
    let id_first = bob.on("ev", move |m| f.push(m.args));
    let second = record_any(&bob, "ev");
    let scoped = Log::new();
    let s = scoped.clone();
    let id_scoped = bob.from("alice").on("ev", move |m| s.push(m.args));

    assert!(bob.remove_listener(id_first));
    assert!(
        !bob.remove_listener(id_first),
        "removing twice reports false"
    );
    alice.emit_to("bob", "ev", (1,)).await.unwrap();
    second.wait_len("the other listener fires", 1).await;
    assert_eq!(scoped.get(), vec![vec![json!(1)]]);
    assert!(first.get().is_empty(), "the removed listener did not fire");

    assert!(bob.remove_listener(id_scoped));
    assert_eq!(bob.from("alice").listener_count(), 0);
    alice.emit_to("bob", "ev", (2,)).await.unwrap();
    second.wait_len("the other listener fires again", 2).await;
    assert_eq!(scoped.len(), 1);
    assert!(first.get().is_empty());
}

// README 2.2.2 / 3.2.1: add-target reaches the target, which learns the source's id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_p2p_target_notifies_the_target() {
    let relay = relay().await;
    let alice = client(&relay, "alice").await;
    let bob = client(&relay, "bob").await;
    let added = Log::new();
    let a = added.clone();
    bob.on_add_p2p_target(move |id| a.push(id));
    within("add target", alice.add_p2p_target("bob"))
        .await
        .unwrap();
    added.wait_len("bob sees alice add it", 1).await;
    assert_eq!(added.get(), vec!["alice"]);

    // The peers can then talk both ways with the id learned.
    let at_alice = record_any(&alice, "hi");
    let b2 = bob.clone();
    let source = added.get()[0].clone();
    b2.emit_to(&source, "hi", ("welcome",)).await.unwrap();
    at_alice.wait_len("alice hears bob", 1).await;
    assert_eq!(at_alice.get(), vec![entry("bob", vec![json!("welcome")])]);
}

// README 2.2.2: an unregistered target is an error for the source.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_p2p_target_to_unknown_id_fails() {
    let relay = relay().await;
    let alice = client(&relay, "alice").await;
    let t = Instant::now();
    let r = within("add unknown target", alice.add_p2p_target("nobody")).await;
    assert!(
        matches!(&r, Err(Error::UnknownTarget(x)) if x == "nobody"),
        "{:?}",
        r
    );
    assert!(t.elapsed() < Duration::from_secs(1));
    assert!(matches!(
        alice.add_p2p_target("").await,
        Err(Error::BadRequest(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emit_to_unknown_target_reports_a_server_error() {
    let relay = relay().await;
    let alice = client(&relay, "alice").await;
    let errors = Log::new();
    let e = errors.clone();
    alice.on_server_error(move |t| e.push(t));
    alice.emit_to("nobody", "hi", ()).await.unwrap();
    errors.wait_len("a SERVER_ERROR comes back", 1).await;
    assert_eq!(
        errors.get(),
        vec!["Error: Could not find target client 'nobody' socket"]
    );
    let r = alice.request::<Vec<Value>>("nobody", "hi", ()).await;
    assert!(
        matches!(&r, Err(Error::UnknownTarget(x)) if x == "nobody"),
        "{:?}",
        r
    );
}

/// Sets up `watcher` with a scoped listener for `peer`, an on_any listener and a disconnect
/// recorder.
struct Watch {
    gone: Log<String>,
    any: Seen,
}

fn watch(watcher: &P2pClient, peer: &str) -> Watch {
    let gone = Log::new();
    let g = gone.clone();
    watcher.on_p2p_target_disconnect(move |id| g.push(id));
    watcher.from(peer).on("chat", |_| {});
    watcher.from(peer).once("bye", |_| {});
    watcher.from(peer).on("other", |_| {});
    let any = record_any(watcher, "chat");
    Watch { gone, any }
}

async fn check_peer_gone(relay: &Relay, watcher: &P2pClient, w: &Watch, peer: &str) {
    w.gone
        .wait_len("the watcher is told the peer left", 1)
        .await;
    assert_eq!(
        watcher.from(peer).listener_count(),
        0,
        "from(peer) listeners are removed with the peer"
    );
    // on_any listeners stay.
    let third = client(relay, &format!("third-of-{}", watcher.id())).await;
    third
        .emit_to(watcher.id(), "chat", ("still listening",))
        .await
        .unwrap();
    eventually("on_any still fires", || {
        w.any.get().iter().any(|(f, _)| *f == third.id())
    })
    .await;
    assert_eq!(
        w.gone.get(),
        vec![peer.to_string()],
        "told once, with the peer's id"
    );
}

// README 2.2.2 and 3.2.2: when the source of an add-target leaves, the target is told with the
// source's id and drops its listeners for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_disconnect_notifies_target_and_removes_its_listeners() {
    let relay = relay().await;
    let alice = client(&relay, "alice").await;
    let bob = client(&relay, "bob").await;
    let w = watch(&bob, "alice");
    let unrelated = watch(&bob, "carol");
    assert_eq!(bob.from("alice").listener_count(), 3);
    alice.add_p2p_target("bob").await.unwrap();
    alice.disconnect().await.unwrap();
    check_peer_gone(&relay, &bob, &w, "alice").await;
    assert_eq!(
        bob.from("carol").listener_count(),
        3,
        "other peers' listeners stay"
    );
    drop(unrelated);
}

// Every peer of a client that leaves is told, once each, however it became a peer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_notifies_every_peer_once() {
    let relay = relay().await;
    let alice = client(&relay, "alice").await;
    let bob = client(&relay, "bob").await;
    let carol = client(&relay, "carol").await;
    let dave = client(&relay, "dave").await;
    let mut logs = Vec::new();
    for c in [&bob, &carol, &dave] {
        let gone = Log::new();
        let g = gone.clone();
        c.on_p2p_target_disconnect(move |id| g.push(id));
        logs.push(gone);
    }
    let got = record_any(&bob, "hi");
    // bob: added and messaged both ways; carol: added by alice; dave: never talked to alice.
    alice.add_p2p_target("bob").await.unwrap();
    bob.add_p2p_target("alice").await.unwrap();
    alice.emit_to("bob", "hi", ()).await.unwrap();
    got.wait_len("bob hears alice", 1).await;
    alice.add_p2p_target("carol").await.unwrap();
    dave.add_p2p_target("bob").await.unwrap();

    alice.disconnect().await.unwrap();
    logs[0].wait_len("bob is told", 1).await;
    logs[1].wait_len("carol is told", 1).await;
    // Positive control for the ones that must not be told (again): later messages arrive.
    let at_dave = record_any(&dave, "hi");
    carol.emit_to("bob", "hi", ()).await.unwrap();
    carol.emit_to("dave", "hi", ()).await.unwrap();
    got.wait_len("bob hears carol", 2).await;
    at_dave.wait_len("dave hears carol", 1).await;
    assert_eq!(logs[0].get(), vec!["alice"]);
    assert_eq!(logs[1].get(), vec!["alice"]);
    assert!(logs[2].get().is_empty(), "dave never was alice's peer");
}

// When the relay goes away, the client sees it and its calls fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_sees_the_server_go_away() {
    let relay = relay().await;
    let alice = client(&relay, "alice").await;
    let opts = socketio_p2p::ClientOptions {
        timeout: Duration::from_secs(1),
        ..Default::default()
    };
    let once = P2pClient::connect_with(&relay.url(), "once", opts.with_reconnect(false))
        .await
        .unwrap();
    let mut state = alice.state();
    within("relay shuts down", relay.shutdown()).await;
    // A client that reconnects tries again; one that does not is closed for good.
    within(
        "alice sees the link go",
        state.wait_for(|s| *s == socketio_p2p::ConnectionState::Reconnecting),
    )
    .await
    .unwrap();
    assert!(!alice.is_connected());
    alice.disconnect().await.unwrap();
    within("once sees the connection close", once.closed()).await;
    assert!(!once.is_connected());
    assert!(matches!(
        once.emit_to("bob", "x", ()).await,
        Err(Error::Disconnected(_))
    ));
    assert!(matches!(
        alice.emit_to("bob", "x", ()).await,
        Err(Error::Disconnected(_))
    ));
    assert!(matches!(
        alice.list_clients().await,
        Err(Error::Disconnected(_))
    ));
}

// The same in the other direction: the target of an add-target leaves, the source is told.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn target_disconnect_notifies_source() {
    let relay = relay().await;
    let alice = client(&relay, "alice").await;
    let bob = client(&relay, "bob").await;
    let w = watch(&alice, "bob");
    alice.add_p2p_target("bob").await.unwrap();
    bob.disconnect().await.unwrap();
    check_peer_gone(&relay, &alice, &w, "bob").await;
}

// Peers that only exchanged messages (no add-target) are told too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_peer_disconnect_notifies() {
    let relay = relay().await;
    let alice = client(&relay, "alice").await;
    let bob = client(&relay, "bob").await;
    let w = watch(&bob, "alice");
    let got = record_from(&bob, "alice", "hello");
    alice.emit_to("bob", "hello", ()).await.unwrap();
    got.wait_len("bob hears alice", 1).await;
    drop(alice);
    check_peer_gone(&relay, &bob, &w, "alice").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_request_fails_promptly_when_the_target_disconnects() {
    let relay = relay().await;
    let alice = client_with_timeout(&relay, "alice", Duration::from_secs(4)).await;
    let bob = client(&relay, "bob").await;
    let asked = Log::new();
    let a = asked.clone();
    bob.on("hold", move |m| a.push(m.reply.unwrap()));
    let alice2 = alice.clone();
    let t = Instant::now();
    let pending =
        tokio::spawn(async move { alice2.request::<Vec<Value>>("bob", "hold", ()).await });
    asked.wait_len("bob holds the request", 1).await;
    // Disconnect bob while it still holds the (unanswered) reply (`asked` keeps it alive).
    bob.disconnect().await.unwrap();
    let r = within("the pending request ends", pending).await.unwrap();
    let took = t.elapsed();
    assert!(
        took < Duration::from_secs(2),
        "the request failed after {took:?}, the full timeout is 4 s"
    );
    assert!(
        matches!(&r, Err(Error::PeerGone(x)) if x == "bob"),
        "{:?}",
        r
    );
}

// The same with a seed-era target, which answers with a Socket.IO acknowledgement: its
// disconnect ends the relay's wait at once, long before the relay's or the caller's timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_request_fails_promptly_when_a_seed_target_disconnects() {
    let mut opts = RelayOptions::default();
    opts.server.reply_timeout = Duration::from_secs(120);
    let relay = relay_with(opts).await;
    let alice = client_with_timeout(&relay, "alice", Duration::from_secs(120)).await;
    let seed = raw_client(&format!("{}?clientId=seedbob", relay.url())).await;
    eventually("seedbob registers", || {
        relay.server().is_connected("seedbob")
    })
    .await;
    let alice2 = alice.clone();
    let pending =
        tokio::spawn(async move { alice2.request::<Vec<Value>>("seedbob", "hold", (1,)).await });
    // The raw client never acknowledges what it is asked.
    eventually("seedbob is asked", || {
        seed.events.get().iter().any(|(ev, _)| ev == "hold")
    })
    .await;
    seed.sio.disconnect().await.unwrap();
    let r = within("the pending request ends", pending).await.unwrap();
    assert!(
        matches!(&r, Err(Error::PeerGone(x)) if x == "seedbob"),
        "{r:?}"
    );
    // The relay holds nothing for it any more, and still relays.
    eventually("seedbob is gone", || {
        !relay.server().is_connected("seedbob")
    })
    .await;
    assert_relay_works(&relay, "after-1", "after-2").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_on_a_disconnected_client_fail() {
    let relay = relay().await;
    let alice = client(&relay, "alice").await;
    let _bob = client(&relay, "bob").await;
    alice.disconnect().await.unwrap();
    assert!(!alice.is_connected());
    within("closed resolves", alice.closed()).await;
    let disconnected = |r: Result<(), Error>| matches!(r, Err(Error::Disconnected(_)));
    assert!(disconnected(alice.emit_to("bob", "x", ()).await));
    assert!(disconnected(
        alice
            .request::<Vec<Value>>("bob", "x", ())
            .await
            .map(|_| ())
    ));
    assert!(disconnected(
        alice.request::<Value>("bob", "x", ()).await.map(|_| ())
    ));
    assert!(disconnected(alice.add_p2p_target("bob").await));
    assert!(disconnected(alice.join_room("r").await));
    assert!(disconnected(alice.leave_room("r").await));
    assert!(disconnected(alice.emit_room("r", "x", ()).await));
    assert!(disconnected(alice.list_clients().await.map(|_| ())));
}

// Arguments: a tuple is several, `()` none, any other serializable value one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_serializable_value_is_an_argument_list() {
    let relay = relay().await;
    let a = client(&relay, "alice").await;
    let b = client(&relay, "bob").await;
    let got = record_any(&b, "v");
    let p = Point { x: 1, y: 2 };
    a.emit_to("bob", "v", &p).await.unwrap();
    a.emit_to("bob", "v", (&p, 3)).await.unwrap();
    a.emit_to("bob", "v", ()).await.unwrap();
    a.emit_to("bob", "v", "text").await.unwrap();
    a.emit_to("bob", "v", vec![1, 2]).await.unwrap();
    a.emit_to("bob", "v", Args(vec![json!(1), json!(2)]))
        .await
        .unwrap();
    a.emit_to("bob", "v", json!({"k": null})).await.unwrap();
    got.wait_len("every message arrives", 7).await;
    assert_eq!(
        got.get(),
        vec![
            entry("alice", vec![json!({"x": 1, "y": 2})]),
            entry("alice", vec![json!({"x": 1, "y": 2}), json!(3)]),
            entry("alice", vec![]),
            entry("alice", vec![json!("text")]),
            entry("alice", vec![json!([1, 2])]),
            entry("alice", vec![json!(1), json!(2)]),
            entry("alice", vec![json!({"k": null})]),
        ]
    );

    // Answers follow the same rule, and are read back as one typed value.
    b.on("echo-point", |m| {
        let p: Point = m.parse().unwrap();
        m.reply.unwrap().send(p);
    });
    b.on("nothing", |m| {
        m.respond(());
        m.respond("a second answer goes nowhere");
    });
    let plain = Log::new();
    let pl = plain.clone();
    b.on("plain", move |m| {
        m.respond("nobody waits");
        pl.push(m.reply.is_none());
    });
    let back: Point = a.request("bob", "echo-point", &p).await.unwrap();
    assert_eq!(back, p);
    let raw: Vec<Value> = a.request("bob", "echo-point", &p).await.unwrap();
    assert_eq!(raw, vec![json!({"x": 1, "y": 2})]);
    a.request::<()>("bob", "nothing", ()).await.unwrap();
    a.emit_to("bob", "plain", ()).await.unwrap();
    plain.wait_len("the plain message arrives", 1).await;
    assert_eq!(plain.get(), vec![true], "a plain message has no reply");
    let none: Option<i64> = a.request("bob", "nothing", ()).await.unwrap();
    assert_eq!(none, None);
    // An answer of the wrong shape is a conversion error, not a panic or a wait.
    let err = a.request::<Point>("bob", "nothing", ()).await.unwrap_err();
    assert!(matches!(err, Error::Json(_)), "{err:?}");
}

// The seed's names stay: on_any / once_any / off_any are on / once / off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_named_listeners_are_the_same_as_on_once_off() {
    let relay = relay().await;
    let alice = client(&relay, "alice").await;
    let bob = client(&relay, "bob").await;
    let any = Log::new();
    let (l1, l2) = (any.clone(), any.clone());
    bob.on_any("ev", move |m: PeerMessage| l1.push(("on_any", m.args)));
    bob.once_any("ev", move |m: PeerMessage| l2.push(("once_any", m.args)));
    bob.on("sync", |m| {
        m.reply.unwrap().send(());
    });
    alice.emit_to("bob", "ev", 1).await.unwrap();
    alice.emit_to("bob", "ev", 2).await.unwrap();
    alice.request::<()>("bob", "sync", ()).await.unwrap();
    assert_eq!(
        any.get(),
        vec![
            ("on_any", vec![json!(1)]),
            ("once_any", vec![json!(1)]),
            ("on_any", vec![json!(2)]),
        ]
    );
    bob.off_any("ev");
    alice.emit_to("bob", "ev", 3).await.unwrap();
    alice.request::<()>("bob", "sync", ()).await.unwrap();
    assert_eq!(any.len(), 3, "off_any removed on_any's listener");
    // `off` removes what `on` added.
    let again = record_any(&bob, "ev");
    bob.off("ev");
    alice.emit_to("bob", "ev", 4).await.unwrap();
    alice.request::<()>("bob", "sync", ()).await.unwrap();
    assert!(again.get().is_empty(), "off removed on's listener");
}

// `on` hears peers only; room emits reach `on_raw`, which also sees peer messages as they came.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_hears_peers_and_on_raw_hears_everything() {
    let relay = relay().await;
    let alice = client(&relay, "alice").await;
    let bob = client(&relay, "bob").await;
    let peers = record_any(&bob, "news");
    let raw: Log<Vec<Value>> = Log::new();
    let r = raw.clone();
    bob.on_raw("news", move |args| r.push(args));
    for c in [&alice, &bob] {
        c.join_room("lobby").await.unwrap();
    }
    alice
        .emit_room("lobby", "news", (1, "to the room"))
        .await
        .unwrap();
    alice.emit_to("bob", "news", "to bob").await.unwrap();
    raw.wait_len("both reach on_raw", 2).await;
    peers.wait_len("the peer message reaches on", 1).await;
    assert_eq!(
        raw.get(),
        vec![
            vec![json!(1), json!("to the room")],
            vec![json!("alice"), json!("to bob")],
        ]
    );
    assert_eq!(peers.get(), vec![entry("alice", vec![json!("to bob")])]);
}

// A request is a future of its own: it can be spawned, and it fails on bad input when awaited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_can_be_spawned_and_checks_its_input() {
    let relay = relay().await;
    let alice = client(&relay, "alice").await;
    let bob = client(&relay, "bob").await;
    bob.on("add", |m| {
        let (x, y): (i64, i64) = m.parse().unwrap();
        m.reply.unwrap().send(x + y);
    });
    let spawned = tokio::spawn(alice.request::<i64>("bob", "add", (40, 2)));
    assert_eq!(
        within("spawned request", spawned).await.unwrap().unwrap(),
        42
    );
    let err = alice.request::<i64>("", "add", (1, 2)).await.unwrap_err();
    assert!(matches!(err, Error::BadRequest(_)), "{err:?}");
    let err = alice.request::<i64>("bob", "", (1, 2)).await.unwrap_err();
    assert!(matches!(err, Error::BadRequest(_)), "{err:?}");
    // A longer per-call timeout than the client's lets a slow answer through.
    let impatient = client_with_timeout(&relay, "impatient", Duration::from_millis(100)).await;
    bob.on("slow", |m| {
        let reply = m.reply.unwrap();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            reply.send("at last");
        });
    });
    let err = impatient
        .request::<String>("bob", "slow", ())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
    let answer: String = impatient
        .request("bob", "slow", ())
        .timeout(Duration::from_secs(3))
        .await
        .unwrap();
    assert_eq!(answer, "at last");
}

// A room emit carries no sender id: one whose first argument is a client id is not a message
// from that client. It reaches `on_raw` only, never `on` or `from(id).on`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_emit_starting_with_a_client_id_is_not_a_peer_message() {
    let relay = relay().await;
    let alice = client(&relay, "alice").await;
    let bob = client(&relay, "bob").await;
    let carol = client(&relay, "carol").await;
    let any = record_any(&bob, "news");
    let from_alice = record_from(&bob, "alice", "news");
    let from_carol = record_from(&bob, "carol", "news");
    let raw: Log<Vec<Value>> = Log::new();
    let r = raw.clone();
    bob.on_raw("news", move |args| r.push(args));
    for c in [&bob, &carol] {
        c.join_room("lobby").await.unwrap();
    }
    // A seed-era member gets the room emit as it always did.
    let seed = raw_client(&format!("{}?clientId=dave", relay.url())).await;
    eventually("dave registers", || relay.server().is_connected("dave")).await;
    seed.emit_with_ack("JOIN_ROOM", vec![json!("lobby")]).await;
    carol
        .emit_room("lobby", "news", ("alice", "forged"))
        .await
        .unwrap();
    carol
        .emit_room("lobby", "news", ("carol", "also not a message"))
        .await
        .unwrap();
    // Sent after the room emits (which resolve once the relay has sent them), so once it has
    // arrived, so have they.
    alice.emit_to("bob", "news", "real").await.unwrap();
    any.wait_len("the real message reaches on", 1).await;
    raw.wait_len("everything reaches on_raw", 3).await;
    assert_eq!(
        raw.get(),
        vec![
            vec![json!("alice"), json!("forged")],
            vec![json!("carol"), json!("also not a message")],
            vec![json!("alice"), json!("real")],
        ]
    );
    assert_eq!(any.get(), vec![entry("alice", vec![json!("real")])]);
    assert_eq!(from_alice.get(), vec![entry("alice", vec![json!("real")])]);
    assert_eq!(from_carol.get(), vec![]);
    eventually("the seed member gets both room emits", || {
        seed.events.len() >= 2
    })
    .await;
    assert_eq!(
        seed.events.get(),
        vec![
            ("news".to_string(), vec![json!("alice"), json!("forged")]),
            (
                "news".to_string(),
                vec![json!("carol"), json!("also not a message")]
            ),
        ]
    );
    // Nobody can pass a message off as a room emit: the relay's mark is a reserved event name.
    let e = alice
        .request::<Value>("bob", "P2P_ROOM", ("lobby", "news"))
        .await
        .unwrap_err();
    assert!(
        matches!(e, Error::BadRequest(_)) && e.to_string().contains("reserved"),
        "{e}"
    );
}

/// The relay bounds the answers it waits for from a seed-era client as it does for a Rust one:
/// past `max_pending_per_client` unanswered requests, the next caller is told at once that the
/// target is busy, and a slot is free again once a request ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_to_a_seed_client_are_bounded() {
    let relay = relay_with(socketio_p2p::RelayOptions {
        server: socketio_p2p::ServerOptions {
            max_pending_per_client: 2,
            reply_timeout: Duration::from_secs(2),
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    // A seed-era client that never acknowledges.
    let seed = raw_client(&format!("{}?clientId=seed", relay.url())).await;
    eventually("seed registers", || relay.server().is_connected("seed")).await;
    let alice = client(&relay, "alice").await;
    let waiting: Vec<_> = (0..2)
        .map(|i| tokio::spawn(alice.request::<Vec<Value>>("seed", "ask", i)))
        .collect();
    seed.events.wait_len("both requests reach seed", 2).await;
    let third = alice.request::<Vec<Value>>("seed", "ask", 2).await;
    assert!(
        matches!(&third, Err(Error::Busy(id)) if id == "seed"),
        "{third:?}"
    );
    for w in waiting {
        let r = within("a waiting request ends", w).await.unwrap();
        assert!(
            matches!(&r, Err(Error::Timeout { peer: Some(p), event, .. }) if p == "seed" && event == "ask"),
            "{r:?}"
        );
    }
    let fourth = alice.request::<Vec<Value>>("seed", "ask", 3).await;
    assert!(
        matches!(&fourth, Err(Error::Timeout { .. })),
        "a freed slot takes a new request: {fourth:?}"
    );
}
