//! Service API (README 2.4 and 3.4): services and topics provided by the server or by clients,
//! called the same way. Real relay, real clients, loopback.

mod common;
use common::*;
use serde_json::{json, Value};
use socketio_p2p::service::{topic_event, topic_room};
use socketio_p2p::{
    Args, ClientOptions, Error, HandlerId, P2pClient, Relay, ServiceClient, ServiceHandle,
    ServiceRequest, TopicEvent,
};
use std::time::Duration;

/// A service provided by the server or by a client: the provider's side of the tests, written
/// once for both.
#[derive(Clone)]
enum Provider {
    Server(ServiceHandle),
    Client(ServiceClient),
}

impl Provider {
    fn name(&self) -> String {
        match self {
            Provider::Server(s) => s.name().to_string(),
            Provider::Client(s) => s.name().to_string(),
        }
    }

    fn provide(
        &self,
        api: &str,
        handler: impl Fn(ServiceRequest) + Send + Sync + 'static,
    ) -> HandlerId {
        let id = match self {
            Provider::Server(s) => s.provide_service(api, handler),
            Provider::Client(s) => s.provide_service(api, handler),
        };
        id.expect("provide_service accepts the API")
    }

    fn destroy_service(&self, api: &str) -> bool {
        match self {
            Provider::Server(s) => s.destroy_service(api),
            Provider::Client(s) => s.destroy_service(api),
        }
    }

    fn destroy_service_handler(&self, api: &str, id: HandlerId) -> bool {
        match self {
            Provider::Server(s) => s.destroy_service_handler(api, id),
            Provider::Client(s) => s.destroy_service_handler(api, id),
        }
    }

    fn destroy_all_services(&self) {
        match self {
            Provider::Server(s) => s.destroy_all_services(),
            Provider::Client(s) => s.destroy_all_services(),
        }
    }

    fn apis(&self) -> Vec<String> {
        match self {
            Provider::Server(s) => s.apis(),
            Provider::Client(s) => s.apis(),
        }
    }

    async fn create_topic(&self, topic: &str) -> socketio_p2p::Result<()> {
        match self {
            Provider::Server(s) => s.create_topic(topic),
            Provider::Client(s) => s.create_topic(topic).await,
        }
    }

    async fn destroy_topic(&self, topic: &str) -> socketio_p2p::Result<()> {
        match self {
            Provider::Server(s) => s.destroy_topic(topic),
            Provider::Client(s) => s.destroy_topic(topic).await,
        }
    }

    async fn publish(&self, topic: &str, args: Vec<Value>) -> socketio_p2p::Result<()> {
        match self {
            Provider::Server(s) => s.publish_topic(topic, Args(args)),
            Provider::Client(s) => s.publish_topic(topic, Args(args)).await,
        }
    }

    async fn emit_client(
        &self,
        client: &str,
        event: &str,
        args: Vec<Value>,
    ) -> socketio_p2p::Result<()> {
        match self {
            Provider::Server(s) => s.emit_client(client, event, Args(args)),
            Provider::Client(s) => s.emit_client(client, event, Args(args)).await,
        }
    }

    async fn request_client(
        &self,
        client: &str,
        event: &str,
        args: Vec<Value>,
    ) -> socketio_p2p::Result<Vec<Value>> {
        match self {
            Provider::Server(s) => s.request_client(client, event, Args(args)).await,
            Provider::Client(s) => s.request_client(client, event, Args(args)).await,
        }
    }
}

/// A typed answer.
#[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
struct Job {
    id: u64,
    name: String,
}

fn add_handler(call: ServiceRequest) {
    let (a, b): (i64, i64) = call.parse().expect("add(a, b)");
    call.respond((a + b,));
}

/// The caller's side, identical whoever provides the service: calls with and without replies,
/// emit_client, topics subscribed, published, unsubscribed, destroyed and created again.
async fn same_caller_code(relay: &Relay, p: &Provider, tag: &str) {
    let svc = p.name();
    p.provide("add", add_handler);
    let pokes = Log::new();
    {
        let pokes = pokes.clone();
        p.provide("poke", move |call| {
            pokes.push((call.from.clone(), call.args.clone(), call.reply.is_some()))
        });
    }
    p.create_topic("t").await.unwrap();
    p.create_topic("sentinel").await.unwrap();

    let caller_id = format!("{tag}-caller");
    let caller = client(relay, &caller_id).await;

    // A call with a reply, typed and untyped.
    let sum: i64 = caller.request_service(&svc, "add", (2, 3)).await.unwrap();
    assert_eq!(sum, 5);
    let raw = caller
        .request_service::<Vec<Value>>(&svc, "add", (40, 2))
        .await
        .unwrap();
    assert_eq!(raw, vec![json!(42)]);

    // An API the service lacks: the same error whoever provides it.
    let err = caller
        .request_service::<Vec<Value>>(&svc, "no-such-api", ())
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("'{svc}' answered with an error: service '{svc}' has no API 'no-such-api'")
    );

    // A call without a reply: the handler sees the caller's id and the arguments, and no reply.
    caller.emit_service(&svc, "poke", ("x", 1)).await.unwrap();
    pokes.wait_len("the fire-and-forget call arrives", 1).await;
    assert_eq!(
        pokes.get(),
        vec![(caller_id.clone(), vec![json!("x"), json!(1)], false)]
    );

    // emit_client: the client hears it from the service, and can answer.
    let notes = Log::new();
    {
        let notes = notes.clone();
        caller.on_service(&svc, "note", move |m| {
            notes.push((m.from.clone(), m.args.clone()));
            if let Some(r) = m.reply {
                r.send(("noted",));
            }
        });
    }
    p.emit_client(&caller_id, "note", vec![json!("hello")])
        .await
        .unwrap();
    let answer = p
        .request_client(&caller_id, "note", vec![json!("answer me")])
        .await
        .unwrap();
    assert_eq!(answer, vec![json!("noted")]);
    assert_eq!(
        notes.get(),
        vec![
            (svc.clone(), vec![json!("hello")]),
            (svc.clone(), vec![json!("answer me")])
        ]
    );

    // Three subscribers; each also watches `sentinel`, published after `t`, so that seeing the
    // sentinel proves that an earlier publication to `t` would have arrived by then.
    let mut subs = Vec::new();
    let mut logs = Vec::new();
    let mut sentinels = Vec::new();
    for i in 0..3 {
        let c = client(relay, &format!("{tag}-sub{i}")).await;
        let (log, h) = topic_log();
        c.subscribe_topic(&svc, "t", h).await.unwrap();
        let (sentinel, h) = topic_log();
        c.subscribe_topic(&svc, "sentinel", h).await.unwrap();
        subs.push(c);
        logs.push(log);
        sentinels.push(sentinel);
    }
    let room = topic_room(&svc, "t");
    for i in 0..3 {
        assert!(rooms_of(relay, &format!("{tag}-sub{i}")).contains(&room));
    }

    p.publish("t", vec![json!(1)]).await.unwrap();
    p.publish("sentinel", vec![json!("s1")]).await.unwrap();
    for s in &sentinels {
        s.wait_len("sentinel s1", 1).await;
    }
    for log in &logs {
        assert_eq!(log.get(), vec![published(json!(1))]);
    }

    // Unsubscribed: the client leaves the room and hears nothing more.
    subs[0].unsubscribe_topic(&svc, "t").await.unwrap();
    let sub0 = format!("{tag}-sub0");
    eventually("sub0 leaves the topic room", || {
        !rooms_of(relay, &sub0).contains(&room)
    })
    .await;
    p.publish("t", vec![json!(2)]).await.unwrap();
    p.publish("sentinel", vec![json!("s2")]).await.unwrap();
    for s in &sentinels {
        s.wait_len("sentinel s2", 2).await;
    }
    assert_eq!(logs[0].get(), vec![published(json!(1))]);
    for log in &logs[1..] {
        assert_eq!(log.get(), vec![published(json!(1)), published(json!(2))]);
    }

    // Destroyed: the remaining subscribers are told once and leave the room; publishing fails.
    p.destroy_topic("t").await.unwrap();
    for log in &logs[1..] {
        log.wait_len("TOPIC_BEING_DESTROYED", 3).await;
        assert_eq!(
            log.get(),
            vec![
                published(json!(1)),
                published(json!(2)),
                TopicEvent::Destroyed
            ]
        );
    }
    for i in 0..3 {
        assert!(!rooms_of(relay, &format!("{tag}-sub{i}")).contains(&room));
    }
    let err = p.publish("t", vec![json!("late")]).await.unwrap_err();
    assert!(err.to_string().contains("not created"), "{err}");

    // Created again: a new subscriber hears it; the old subscribers' handlers are gone, even for
    // sub1, which subscribes again and does receive the event on the wire.
    p.create_topic("t").await.unwrap();
    let fresh = client(relay, &format!("{tag}-fresh")).await;
    let (fresh_log, h) = topic_log();
    fresh.subscribe_topic(&svc, "t", h).await.unwrap();
    let wire = Log::new();
    {
        let wire = wire.clone();
        subs[1].on_raw(&topic_event(&room), move |args| wire.push(args));
    }
    subs[1].subscribe_topic(&svc, "t", |_| {}).await.unwrap();
    p.publish("t", vec![json!(3)]).await.unwrap();
    p.publish("sentinel", vec![json!("s3")]).await.unwrap();
    fresh_log
        .wait_len("the fresh subscriber's publication", 1)
        .await;
    wire.wait_len("the raw room event", 1).await;
    for s in &sentinels {
        s.wait_len("sentinel s3", 3).await;
    }
    assert_eq!(fresh_log.get(), vec![published(json!(3))]);
    assert_eq!(wire.get(), vec![vec![json!(3)]]);
    assert_eq!(logs[0].get(), vec![published(json!(1))]);
    for log in &logs[1..] {
        assert_eq!(
            log.len(),
            3,
            "a destroyed subscription heard more: {:?}",
            log.get()
        );
    }
}

// README 2.4.2: topics can be created, subscribed to and published to by the server; APIs can
// be called, with and without replies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_provided_service_used_by_clients() {
    let relay = relay().await;
    let p = Provider::Server(relay.server().as_service("srv"));
    same_caller_code(&relay, &p, "s").await;
}

// README 2.4.2: clients treat services created by the server and by other clients alike: the
// same caller code as above, against a client service.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_provided_service_used_by_clients() {
    let relay = relay().await;
    let p = Provider::Client(service_client(&relay, "cli").await);
    same_caller_code(&relay, &p, "c").await;
}

// README 2.4.2: one server instance serves as several services.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_server_provides_several_services() {
    let relay = relay().await;
    let math = relay.server().as_service("math");
    let greeter = relay.server().as_service("greeter");
    math.provide_service("add", add_handler).unwrap();
    math.provide_service("mul", |call| {
        let (a, b): (i64, i64) = call.parse().unwrap();
        call.respond((a * b,));
    })
    .unwrap();
    greeter
        .provide_service("hello", |call| {
            let name: String = call.arg(0).unwrap();
            call.respond((
                format!("hello {name}, from {}", call.from),
                call.service.clone(),
            ));
        })
        .unwrap();
    // The same API name in two services are two APIs.
    greeter
        .provide_service("add", |call| call.respond(("greeter has its own add",)))
        .unwrap();
    assert_eq!(relay.server().service_names(), vec!["greeter", "math"]);
    assert_eq!(math.apis(), vec!["add", "mul"]);

    let alice = client(&relay, "alice").await;
    assert_eq!(
        alice
            .request_service::<i64>("math", "add", (2, 5))
            .await
            .unwrap(),
        7
    );
    assert_eq!(
        alice
            .request_service::<i64>("math", "mul", (3, 5))
            .await
            .unwrap(),
        15
    );
    let (text, svc): (String, String) = alice
        .request_service("greeter", "hello", ("Alice",))
        .await
        .unwrap();
    assert_eq!(text, "hello Alice, from alice");
    assert_eq!(svc, "greeter");
    let other: String = alice
        .request_service("greeter", "add", (1, 2))
        .await
        .unwrap();
    assert_eq!(other, "greeter has its own add");

    // Several topics at once; repeats are one topic.
    math.create_topic(["a", "b", "a"]).unwrap();
    math.create_topic(vec!["b".to_string(), "c".to_string()])
        .unwrap();
    assert_eq!(math.topics(), vec!["a", "b", "c"]);
    math.destroy_topic(&["a", "c"][..]).unwrap();
    assert_eq!(math.topics(), vec!["b"]);
    assert!(math.publish_topic("a", ()).is_err());
    math.publish_topic("b", ()).unwrap();

    // Same topic name in two services: two topics, two rooms.
    math.create_topic("news").unwrap();
    greeter.create_topic("news").unwrap();
    let (math_news, h) = topic_log();
    alice.subscribe_topic("math", "news", h).await.unwrap();
    greeter.publish_topic("news", ("greeter news",)).unwrap();
    math.publish_topic("news", ("math news",)).unwrap();
    math_news.wait_len("math news", 1).await;
    assert_eq!(math_news.get(), vec![published(json!("math news"))]);
    assert_eq!(math.subscriber_count("news").await.unwrap(), 1);
    assert_eq!(greeter.subscriber_count("news").await.unwrap(), 0);
}

// README 2.4.2: APIs can be created and destroyed; several handlers per API all run and the
// first answer wins; the built-in topic APIs stay when everything else goes.
async fn handlers_added_and_removed(relay: &Relay, p: Provider) {
    let svc = p.name();
    let caller = client(relay, &format!("{svc}-caller")).await;
    let ran = Log::new();
    let first = {
        let ran = ran.clone();
        p.provide("api", move |call| {
            ran.push("first");
            call.respond(("first",));
        })
    };
    {
        let ran = ran.clone();
        p.provide("api", move |call| {
            ran.push("second");
            call.respond(("second",));
        });
    }
    let r: String = caller.request_service(&svc, "api", ()).await.unwrap();
    assert_eq!(r, "first");
    ran.wait_len("both handlers run", 2).await;
    assert_eq!(ran.get(), vec!["first", "second"]);

    assert!(p.destroy_service_handler("api", first));
    assert!(!p.destroy_service_handler("api", first));
    let r: String = caller.request_service(&svc, "api", ()).await.unwrap();
    assert_eq!(r, "second");
    assert_eq!(ran.get(), vec!["first", "second", "second"]);

    assert!(p.destroy_service("api"));
    assert!(!p.destroy_service("api"));
    let err = caller
        .request_service::<Vec<Value>>(&svc, "api", ())
        .await
        .unwrap_err();
    assert!(
        !matches!(err, Error::Timeout { .. }),
        "an error answer, not a wait: {err}"
    );
    assert!(err.to_string().contains("api"), "{err}");

    // Added again, then everything goes but the topic APIs and the topics.
    p.provide("api", |call| call.respond(("back",)));
    p.provide("other", |call| call.respond(("other",)));
    let r: String = caller.request_service(&svc, "api", ()).await.unwrap();
    assert_eq!(r, "back");
    p.create_topic("kept").await.unwrap();
    p.destroy_all_services();
    assert!(p.apis().is_empty());
    for api in ["api", "other"] {
        let err = caller
            .request_service::<Vec<Value>>(&svc, api, ())
            .await
            .unwrap_err();
        assert!(!matches!(err, Error::Timeout { .. }), "{err}");
    }
    let (log, h) = topic_log();
    caller.subscribe_topic(&svc, "kept", h).await.unwrap();
    p.publish("kept", vec![json!("still here")]).await.unwrap();
    log.wait_len("publication after destroy_all_services", 1)
        .await;
    assert_eq!(log.get(), vec![published(json!("still here"))]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_service_handlers_added_and_removed() {
    let relay = relay().await;
    let p = Provider::Server(relay.server().as_service("h-srv"));
    handlers_added_and_removed(&relay, p).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_service_handlers_added_and_removed() {
    let relay = relay().await;
    let p = Provider::Client(service_client(&relay, "h-cli").await);
    handlers_added_and_removed(&relay, p).await;
}

// Replies: kept and answered later from a task; never answered; a handler that panics.
async fn replies(relay: &Relay, p: Provider) {
    let svc = p.name();
    let caller = client(relay, &format!("{svc}-caller")).await;
    p.provide("later", |call| {
        let reply = call.reply.clone().expect("a call with a reply");
        let n: i64 = call.arg(0).unwrap();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            reply.send((n * 10,));
        });
    });
    p.provide("never", |_call| {});
    p.provide("fails", |call| {
        call.reply.as_ref().unwrap().error("no such job");
    });
    p.provide("slow", |call| {
        let reply = call.reply.clone().expect("a call with a reply");
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(400)).await;
            reply.send("slow answer");
        });
    });
    p.provide("job", |call| {
        let name: String = call.parse().unwrap();
        call.respond(Job { id: 7, name });
    });
    let r: i64 = caller.request_service(&svc, "later", (4,)).await.unwrap();
    assert_eq!(r, 40);

    // A struct answer is one value; a single string argument needs no tuple.
    let job: Job = caller.request_service(&svc, "job", "print").await.unwrap();
    assert_eq!(
        job,
        Job {
            id: 7,
            name: "print".into()
        }
    );

    // The per-call timeout replaces the client's (3 s here) both ways.
    let t = std::time::Instant::now();
    let err = caller
        .request_service::<String>(&svc, "slow", ())
        .timeout(Duration::from_millis(100))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
    assert!(
        t.elapsed() < Duration::from_millis(350),
        "{:?}",
        t.elapsed()
    );
    let short = client_with_timeout(
        relay,
        &format!("{svc}-impatient"),
        Duration::from_millis(100),
    )
    .await;
    let answer: String = short
        .request_service(&svc, "slow", ())
        .timeout(Duration::from_secs(3))
        .await
        .unwrap();
    assert_eq!(answer, "slow answer");
    let err = short
        .request_service::<String>(&svc, "slow", ())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");

    // Bad names fail when the request is awaited, without a wait.
    let err = caller
        .request_service::<()>("", "job", ())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::BadRequest(_)), "{err:?}");
    let err = caller
        .request_service::<Vec<Value>>(&svc, "never", ())
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("dropped the reply without answering"),
        "{err}"
    );
    let err = caller
        .request_service::<Vec<Value>>(&svc, "fails", ())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Remote { message, .. } if message == "no such job"),
        "{:?}",
        err
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_service_replies() {
    let relay = relay().await;
    let srv = relay.server().as_service("r-srv");
    replies(&relay, Provider::Server(srv.clone())).await;
    // A panicking handler is answered with an error; the relay goes on.
    srv.provide_service("panics", |_| panic!("handler bug"))
        .unwrap();
    let caller = client(&relay, "panic-caller").await;
    let err = caller
        .request_service::<Vec<Value>>("r-srv", "panics", ())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("failed"), "{err}");
    assert_relay_works(&relay, "after-panic-a", "after-panic-b").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_service_replies() {
    let relay = relay().await;
    let cli = service_client(&relay, "r-cli").await;
    replies(&relay, Provider::Client(cli.clone())).await;
    // The same as on the server: a panicking handler is answered with an error, and the service
    // goes on answering.
    cli.provide_service("panics", |_| panic!("handler bug"))
        .unwrap();
    let caller = client(&relay, "cli-panic-caller").await;
    let err = caller
        .request_service::<Vec<Value>>("r-cli", "panics", ())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("failed"), "{err}");
    let n: i64 = caller.request_service("r-cli", "later", 1).await.unwrap();
    assert_eq!(n, 10);
}

// README 3.4.2: a client can use services and be a service at the same time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_service_also_uses_services_and_messages_clients() {
    let relay = relay().await;
    let math = relay.server().as_service("math");
    math.provide_service("add", add_handler).unwrap();
    math.create_topic("ticks").unwrap();
    let other = service_client(&relay, "other-svc").await;
    other
        .provide_service("echo", |call| call.respond(Args(call.args.clone())))
        .unwrap();
    let bob = client(&relay, "bob").await;
    let bob_got = Log::new();
    {
        let bob_got = bob_got.clone();
        bob.on("hi", move |m| bob_got.push((m.from, m.args)));
    }

    let worker = service_client(&relay, "worker").await;
    {
        let me = worker.client().clone();
        worker
            .provide_service("sum-via-math", move |call| {
                // A service's handler calling another service.
                let reply = call.reply.clone().unwrap();
                let (a, b): (i64, i64) = call.parse().unwrap();
                let me = me.clone();
                tokio::spawn(async move {
                    let sum: i64 = me.request_service("math", "add", (a, b)).await.unwrap();
                    reply.send((sum, "via math"));
                });
            })
            .unwrap();
    }
    let sum: i64 = worker
        .request_service("math", "add", (20, 22))
        .await
        .unwrap();
    assert_eq!(sum, 42);
    let echoed: (String, i64) = worker
        .request_service("other-svc", "echo", ("e", 1))
        .await
        .unwrap();
    assert_eq!(echoed, ("e".to_string(), 1));
    let (ticks, h) = topic_log();
    worker.subscribe_topic("math", "ticks", h).await.unwrap();
    math.publish_topic("ticks", (1,)).unwrap();
    ticks
        .wait_len("the service client hears the server topic", 1)
        .await;
    worker
        .emit_to("bob", "hi", ("from a service",))
        .await
        .unwrap();
    bob_got.wait_len("bob hears the service client", 1).await;
    assert_eq!(
        bob_got.get(),
        vec![("worker".to_string(), vec![json!("from a service")])]
    );
    // And it is still a service others call.
    let back = bob
        .request_service::<Vec<Value>>("worker", "sum-via-math", (1, 2))
        .await
        .unwrap();
    assert_eq!(back, vec![json!(3), json!("via math")]);
}

// README 3.4.2: one client instance is one service: its id is the service name, and a second
// client claiming the name is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_service_per_client_and_a_taken_name_is_refused() {
    let relay = relay().await;
    let jobs = service_client(&relay, "jobs").await;
    assert_eq!(jobs.name(), "jobs");
    assert_eq!(jobs.id(), "jobs");
    jobs.provide_service("ping", |call| call.respond(("pong",)))
        .unwrap();
    let err = P2pClient::connect_service(&relay.url(), "jobs", ClientOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Refused(_)), "{err}");
    assert!(err.to_string().contains("already connected"), "{err}");
    let caller = client(&relay, "caller").await;
    let pong: String = caller.request_service("jobs", "ping", ()).await.unwrap();
    assert_eq!(pong, "pong");
}

// README 3.2.2 / 2.4.2: n-to-n: several subscribers to the same-named topic of several services,
// server and client services mixed; each subscriber hears every publication once, in order per
// service, and never another service's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn n_to_n_topics() {
    const PER_SERVICE: i64 = 5;
    let relay = relay().await;
    let providers = vec![
        Provider::Server(relay.server().as_service("s1")),
        Provider::Server(relay.server().as_service("s2")),
        Provider::Client(service_client(&relay, "c1").await),
        Provider::Client(service_client(&relay, "c2").await),
    ];
    for p in &providers {
        p.create_topic("news").await.unwrap();
    }
    let mut subscribers = Vec::new();
    for i in 0..5 {
        let c = client(&relay, &format!("sub{i}")).await;
        let log: Log<(String, Value)> = Log::new();
        for p in &providers {
            let log = log.clone();
            let svc = p.name();
            c.subscribe_topic(&p.name(), "news", move |e| {
                if let TopicEvent::Published(args) = e {
                    log.push((svc.clone(), args[0].clone()));
                }
            })
            .await
            .unwrap();
        }
        subscribers.push((c, log));
    }
    let publishers: Vec<_> = providers
        .iter()
        .cloned()
        .map(|p| {
            tokio::spawn(async move {
                for n in 0..PER_SERVICE {
                    p.publish("news", vec![json!(format!("{}-{n}", p.name()))])
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for t in publishers {
        within("publishers finish", t).await.unwrap();
    }
    let total = providers.len() * PER_SERVICE as usize;
    for (c, log) in &subscribers {
        log.wait_len(&format!("{} hears everything", c.id()), total)
            .await;
        let got = log.get();
        assert_eq!(got.len(), total, "{}: {got:?}", c.id());
        for p in &providers {
            let from_p: Vec<Value> = got
                .iter()
                .filter(|(s, _)| *s == p.name())
                .map(|(_, v)| v.clone())
                .collect();
            let expected: Vec<Value> = (0..PER_SERVICE)
                .map(|n| json!(format!("{}-{n}", p.name())))
                .collect();
            assert_eq!(from_p, expected, "{} from {}", c.id(), p.name());
        }
    }
}

// README 2.4.2: topics are rooms: a plain seed-protocol client subscribed through
// `SUBSCRIBE_TOPIC` is in the room `service:<service>:topic:<topic>` and receives the topic's
// events as room events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_are_rooms_on_the_wire() {
    let relay = relay().await;
    let svc = relay.server().as_service("wire");
    svc.create_topic("t").unwrap();
    let raw = raw_client(&format!("{}?clientId=raw", relay.url())).await;
    eventually("the raw client registers", || {
        relay.server().is_connected("raw")
    })
    .await;
    let room = "service:wire:topic:t";
    assert_eq!(topic_room("wire", "t"), room);
    let ack = raw
        .emit_with_ack(
            "P2P_EMIT_ACKNOWLEDGE",
            vec![json!({"targetClientId": "wire", "event": "SUBSCRIBE_TOPIC", "args": ["raw", "raw", "t"]})],
        )
        .await;
    assert_eq!(ack, Vec::<Value>::new());
    assert!(rooms_of(&relay, "raw").contains(&room.to_string()));
    svc.publish_topic("t", ("a", 1)).unwrap();
    svc.destroy_topic("t").unwrap();
    eventually("the raw client receives both topic events", || {
        raw.events.len() >= 2
    })
    .await;
    // rust_socketio reports an event without arguments, `["X"]` on the wire, as a "message"
    // event whose one argument is "X".
    assert_eq!(
        raw.events.get(),
        vec![
            (
                format!("{room}-DEFAULT_TOPIC_EVENT"),
                vec![json!("a"), json!(1)]
            ),
            (
                "message".to_string(),
                vec![json!(format!("{room}-TOPIC_BEING_DESTROYED"))]
            ),
        ]
    );
}

// Bad input: each is an error to the one who made it, and nobody else is disturbed.
async fn bad_input(relay: &Relay, p: Provider) {
    let svc = p.name();
    p.provide("ok", |call| call.respond(("ok",)));
    let caller = client(relay, &format!("{svc}-bad")).await;

    // Empty topic names, locally and on the provider's side.
    let err = caller.subscribe_topic(&svc, "", |_| {}).await.unwrap_err();
    assert!(matches!(err, Error::BadRequest(_)), "{err}");
    assert!(caller.unsubscribe_topic(&svc, "").await.is_err());
    assert!(p.create_topic("").await.is_err());
    let err = p.publish("never-created", vec![]).await.unwrap_err();
    assert!(err.to_string().contains("not created"), "{err}");
    let err = p.publish("", vec![]).await.unwrap_err();
    assert!(matches!(err, Error::BadRequest(_)), "{err}");

    // Built-in and empty API names cannot be provided.
    match &p {
        Provider::Server(s) => {
            assert!(s.provide_service("SUBSCRIBE_TOPIC", |_| {}).is_err());
            assert!(s.provide_service("", |_| {}).is_err());
            // A reserved event name could never be called.
            assert!(s.provide_service("disconnect", |_| {}).is_err());
        }
        Provider::Client(s) => {
            assert!(s.provide_service("UNSUBSCRIBE_TOPIC", |_| {}).is_err());
            assert!(s.provide_service("", |_| {}).is_err());
            assert!(s.provide_service("disconnect", |_| {}).is_err());
        }
    }

    // A seed-protocol client sends what the Rust API cannot: non-string and empty topics, and
    // a subscription for somebody else. Each is answered the seed's way, `ack(errorText)`.
    let raw_id = format!("{svc}-raw");
    let raw = raw_client(&format!("{}?clientId={raw_id}", relay.url())).await;
    eventually("the raw client registers", || {
        relay.server().is_connected(&raw_id)
    })
    .await;
    let subscribe =
        |args: Vec<Value>| json!({"targetClientId": svc, "event": "SUBSCRIBE_TOPIC", "args": args});
    for topic in [json!(""), json!(42), json!(null)] {
        let answer = raw
            .emit_with_ack(
                "P2P_EMIT_ACKNOWLEDGE",
                vec![subscribe(vec![json!(raw_id), json!(raw_id), topic.clone()])],
            )
            .await;
        assert_eq!(
            answer,
            vec![json!("topicName can not be empty")],
            "topic {topic}"
        );
    }
    let answer = raw
        .emit_with_ack(
            "P2P_EMIT_ACKNOWLEDGE",
            vec![subscribe(vec![
                json!(raw_id),
                json!(caller.id()),
                json!("t"),
            ])],
        )
        .await;
    let text = answer.first().and_then(Value::as_str).unwrap_or_default();
    assert!(text.contains("only subscribe"), "{answer:?}");
    assert!(!rooms_of(relay, caller.id()).contains(&topic_room(&svc, "t")));

    // An unknown API with a reply is an error answer, without one a server error.
    let err = caller
        .request_service::<Vec<Value>>(&svc, "no-such-api", ())
        .await
        .unwrap_err();
    assert!(!matches!(err, Error::Timeout { .. }), "{err}");
    assert!(err.to_string().contains("no-such-api"), "{err}");
    let r: String = caller.request_service(&svc, "ok", ()).await.unwrap();
    assert_eq!(r, "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_service_bad_input() {
    let relay = relay().await;
    let srv = relay.server().as_service("b-srv");
    bad_input(&relay, Provider::Server(srv.clone())).await;

    let caller = client(&relay, "b-caller").await;
    // An unknown service is an unknown target.
    let err = caller
        .request_service::<Vec<Value>>("no-such-service", "api", ())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::UnknownTarget(x) if x == "no-such-service"),
        "{:?}",
        err
    );
    // A fire-and-forget call of an unknown API comes back as a server error.
    let errors = Log::new();
    {
        let errors = errors.clone();
        caller.on_server_error(move |e| errors.push(e));
    }
    caller
        .emit_service("b-srv", "no-such-api", ())
        .await
        .unwrap();
    errors.wait_len("SERVER_ERROR for the unknown API", 1).await;
    assert!(
        errors.get()[0].contains("has no API 'no-such-api'"),
        "{:?}",
        errors.get()
    );

    // A caller cannot pretend to be another client: the handler never runs.
    let ran = Log::new();
    {
        let ran = ran.clone();
        srv.provide_service("who", move |call| ran.push(call.from))
            .unwrap();
    }
    let mut raw = raw_client(&format!("{}?clientId=mallory", relay.url())).await;
    eventually("mallory registers", || {
        relay.server().is_connected("mallory")
    })
    .await;
    raw.emit(
        "P2P_EMIT",
        vec![json!({"targetClientId": "b-srv", "event": "who", "args": ["b-caller"]})],
    )
    .await;
    let text = raw.next_error("a forged sender id").await;
    assert!(text.contains("sender's own client id"), "{text}");
    caller.emit_service("b-srv", "who", ()).await.unwrap();
    ran.wait_len("the honest call", 1).await;
    assert_eq!(ran.get(), vec!["b-caller".to_string()]);

    // The server side rejects bad emit_client calls.
    assert!(matches!(
        srv.emit_client("nobody", "x", ()),
        Err(Error::UnknownTarget(_))
    ));
    assert!(srv.emit_client("b-caller", "", ()).is_err());
    assert!(srv.emit_client("b-caller", "P2P_RES", ()).is_err());
    assert!(srv.create_topic(Vec::<String>::new()).is_err());
    assert_relay_works(&relay, "b-check-a", "b-check-b").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_service_bad_input() {
    let relay = relay().await;
    let svc = service_client(&relay, "b-cli").await;
    svc.create_topic(["x", "y", "x"]).await.unwrap();
    assert_eq!(svc.topics(), vec!["x", "y"]);
    svc.destroy_topic(["x", "y"]).await.unwrap();
    assert!(svc.topics().is_empty());
    assert!(svc.create_topic(["ok", ""]).await.is_err());
    let p = Provider::Client(svc);
    bad_input(&relay, p).await;
    assert_relay_works(&relay, "bc-check-a", "bc-check-b").await;
}

/// The APIs `service-interop.js` expects of `rs-server` and `rs-client`.
fn interop_apis(p: &Provider) {
    p.provide("add", add_handler);
    for api in ["publish", "destroy", "notify"] {
        let provider = p.clone();
        p.provide(api, move |call| {
            let p = provider.clone();
            let reply = call.reply.clone();
            tokio::spawn(async move {
                let result = match call.api.as_str() {
                    "publish" => {
                        let (topic, value): (String, Value) = call.parse().unwrap();
                        p.publish(&topic, vec![value]).await.map(|()| "published")
                    }
                    "destroy" => {
                        let topic: String = call.arg(0).unwrap();
                        p.destroy_topic(&topic).await.map(|()| "destroyed")
                    }
                    _ => {
                        let (event, text): (String, String) = call.parse().unwrap();
                        p.emit_client(&call.from, &event, vec![json!(text)])
                            .await
                            .map(|()| "notified")
                    }
                };
                if let Some(reply) = reply {
                    match result {
                        Ok(done) => reply.send((done,)),
                        Err(e) => reply.error(e.to_string()),
                    };
                }
            });
        });
    }
}

// Seed compatibility: seed-era JavaScript clients call a Rust server service and a Rust client
// service with the same code, subscribe to their topics, and provide a service a Rust client
// calls and whose topic it subscribes to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_javascript_clients_and_rust_services() {
    let relay = relay().await;
    let server_side = Provider::Server(relay.server().as_service("rs-server"));
    let client_side = Provider::Client(service_client(&relay, "rs-client").await);
    for p in [&server_side, &client_side] {
        interop_apis(p);
        p.create_topic("ticks").await.unwrap();
    }
    let caller = client(&relay, "rs-caller").await;
    let products = Log::new();
    let seen = Log::new();
    {
        let (products, seen) = (products.clone(), seen.clone());
        let me = caller.clone();
        caller.on("call-js-service", move |m| {
            let (me, products, seen) = (me.clone(), products.clone(), seen.clone());
            let reply = m.reply.expect("call-js-service asks for an answer");
            tokio::spawn(async move {
                let product: i64 = me.request_service("js-svc", "mul", (6, 7)).await.unwrap();
                products.push(product);
                let to_js = me.clone();
                me.subscribe_topic("js-svc", "updates", move |e| {
                    seen.push(e.clone());
                    let what = match e {
                        TopicEvent::Published(args) => args[0].clone(),
                        TopicEvent::Destroyed => json!("destroyed"),
                    };
                    let to_js = to_js.clone();
                    tokio::spawn(
                        async move { to_js.emit_to("js-caller", "rust-saw", (what,)).await },
                    );
                })
                .await
                .unwrap();
                reply.send((product,));
            });
        });
    }
    let url = relay.url();
    let (status, lines) = run_node(
        "service-interop.js",
        &[&url],
        Duration::from_secs(60),
        |l| println!("service-interop: {l}"),
    )
    .await;
    let failed: Vec<_> = lines.iter().filter(|l| l.starts_with("FAIL")).collect();
    assert!(failed.is_empty(), "failed checks: {failed:?}");
    assert!(
        status.success(),
        "service-interop.js exited with {status}: {lines:?}"
    );
    assert_eq!(lines.last().map(String::as_str), Some("SERVICE INTEROP OK"));
    assert!(
        lines.iter().filter(|l| l.starts_with("ok ")).count() >= 18,
        "{lines:?}"
    );
    // What the Rust caller saw of the JavaScript service.
    assert_eq!(products.get(), vec![42]);
    assert_eq!(
        seen.get(),
        vec![published(json!("u1")), TopicEvent::Destroyed]
    );
}

// A publication without arguments reaches a Rust subscriber as an empty publication (on the
// wire it is the bare event name, which rust_socketio reports as a "message" event).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publication_without_arguments() {
    let relay = relay().await;
    let providers = [
        Provider::Server(relay.server().as_service("quiet-srv")),
        Provider::Client(service_client(&relay, "quiet-cli").await),
    ];
    let sub = client(&relay, "quiet-sub").await;
    for p in &providers {
        p.create_topic("t").await.unwrap();
        let (log, h) = topic_log();
        sub.subscribe_topic(&p.name(), "t", h).await.unwrap();
        p.publish("t", vec![]).await.unwrap();
        p.publish("t", vec![json!("after")]).await.unwrap();
        log.wait_len("both publications", 2).await;
        assert_eq!(
            log.get(),
            vec![TopicEvent::Published(vec![]), published(json!("after"))],
            "{}",
            p.name()
        );
    }
}
