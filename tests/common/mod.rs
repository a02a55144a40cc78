//! Shared set-up of the integration tests: a real relay on a loopback port and real clients.
#![allow(dead_code)]

mod proxy;
#[allow(unused_imports)]
pub use proxy::Proxy;

use futures::FutureExt;
use rust_socketio::asynchronous::{Client as SioClient, ClientBuilder};
use rust_socketio::{Payload, TransportType};
use serde_json::{json, Value};
use socketio_p2p::{ClientOptions, P2pClient, P2pDuplex, Relay, RelayOptions, StreamOptions};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};

/// A relay on an ephemeral loopback port.
pub async fn relay() -> Relay {
    relay_with(RelayOptions::default()).await
}

pub async fn relay_with(opts: RelayOptions) -> Relay {
    Relay::bind_with("127.0.0.1:0", opts)
        .await
        .expect("relay binds a loopback port")
}

/// A client with a short timeout, so that a test failing on a wait fails fast.
pub async fn client(relay: &Relay, id: &str) -> P2pClient {
    let opts = ClientOptions {
        timeout: Duration::from_secs(3),
        ..ClientOptions::default()
    };
    P2pClient::connect_with(&relay.url(), id, opts)
        .await
        .unwrap_or_else(|e| panic!("client '{id}' connects: {e}"))
}

/// Waits until `cond` holds, polling, at most 5 s.
pub async fn eventually<F: Fn() -> bool>(what: &str, cond: F) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !cond() {
        if tokio::time::Instant::now() > deadline {
            panic!("timed out waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Awaits a future with a 5 s limit.
pub async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(5), f)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}

/// A client with its own call timeout.
pub async fn client_with_timeout(relay: &Relay, id: &str, timeout: Duration) -> P2pClient {
    let opts = ClientOptions {
        timeout,
        ..ClientOptions::default()
    };
    P2pClient::connect_with(&relay.url(), id, opts)
        .await
        .unwrap_or_else(|e| panic!("client '{id}' connects: {e}"))
}

/// A shared, append-only record of what listeners saw.
pub struct Log<T>(Arc<Mutex<Vec<T>>>);

impl<T> Clone for Log<T> {
    fn clone(&self) -> Self {
        Log(self.0.clone())
    }
}

impl<T: Clone> Log<T> {
    pub fn new() -> Self {
        Log(Arc::new(Mutex::new(Vec::new())))
    }
    pub fn push(&self, v: T) {
        self.0.lock().unwrap().push(v);
    }
    pub fn get(&self) -> Vec<T> {
        self.0.lock().unwrap().clone()
    }
    pub fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }
    /// Waits (bounded) until at least `n` entries are recorded.
    pub async fn wait_len(&self, what: &str, n: usize) {
        eventually(what, || self.len() >= n).await;
    }
}

/// Waits (bounded) until `cond` resolves to true, polling an async condition.
pub async fn eventually_async<F, Fut>(what: &str, cond: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        if tokio::time::timeout(Duration::from_secs(5), cond())
            .await
            .unwrap_or(false)
        {
            return;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Two fresh normal clients exchange a message and a reply through `relay`: the server still
/// works.
pub async fn assert_relay_works(relay: &Relay, a_id: &str, b_id: &str) {
    let a = client(relay, a_id).await;
    let b = client(relay, b_id).await;
    assert_clients_exchange(a, b, a_id, b_id).await;
}

/// A raw Socket.IO client speaking only the seed protocol (no extensions), as the original
/// JavaScript client would: it records every event it receives and every `SERVER_ERROR` text.
pub struct RawClient {
    pub sio: SioClient,
    pub errors: mpsc::UnboundedReceiver<String>,
    pub events: Log<(String, Vec<Value>)>,
    pub closed: watch::Receiver<bool>,
}

fn first_text(p: &Payload) -> String {
    match p {
        Payload::Text(v) => v
            .first()
            .map(|v| v.as_str().map(str::to_string).unwrap_or(v.to_string()))
            .unwrap_or_default(),
        _ => String::new(),
    }
}

/// Connects a raw seed-protocol client to `url` (the query string, if any, is the caller's).
pub async fn raw_client(url: &str) -> RawClient {
    let (err_tx, errors) = mpsc::unbounded_channel();
    let (closed_tx, closed) = watch::channel(false);
    let closed_tx = Arc::new(closed_tx);
    let events: Log<(String, Vec<Value>)> = Log::new();
    let ev = events.clone();
    let sio = within(
        "raw client connects",
        ClientBuilder::new(url.to_string())
            .transport_type(TransportType::Websocket)
            .reconnect(false)
            .on("SERVER_ERROR", move |p, _| {
                let _ = err_tx.send(first_text(&p));
                futures::future::ready(()).boxed()
            })
            .on("close", move |_, _| {
                closed_tx.send_replace(true);
                futures::future::ready(()).boxed()
            })
            .on_any(move |name, p, _| {
                if let Payload::Text(v) = p {
                    ev.push((String::from(name), v));
                }
                futures::future::ready(()).boxed()
            })
            .connect(),
    )
    .await
    .expect("raw client connects at the transport level");
    RawClient {
        sio,
        errors,
        events,
        closed,
    }
}

/// Emits `event(...args, ack)` from the raw Socket.IO client `sio` and waits (bounded) for the
/// acknowledgement's arguments.
pub async fn sio_emit_with_ack(sio: &SioClient, event: &str, args: Vec<Value>) -> Vec<Value> {
    let (tx, rx) = oneshot::channel::<Vec<Value>>();
    let tx = Arc::new(Mutex::new(Some(tx)));
    sio.emit_with_ack(
        event,
        Payload::Text(args),
        Duration::from_secs(5),
        move |p: Payload, _| {
            if let (Some(tx), Payload::Text(v)) = (tx.lock().unwrap().take(), p) {
                // The acknowledgement's data arrives as one JSON array of its arguments.
                let args = match v.as_slice() {
                    [Value::Array(a)] => a.clone(),
                    _ => v,
                };
                let _ = tx.send(args);
            }
            futures::future::ready(()).boxed()
        },
    )
    .await
    .expect("raw emit is sent");
    within(&format!("ack of {event}"), rx)
        .await
        .expect("ack callback runs")
}

/// A seed client `id` whose handler of `big` never returns: it stops reading its connection at
/// the first `big` event.
pub async fn paused_client(relay: &Relay, id: &str) -> SioClient {
    within(
        "paused client connects",
        ClientBuilder::new(format!("{}?clientId={id}", relay.url()))
            .transport_type(TransportType::Websocket)
            .reconnect(false)
            .on("big", |_, _| futures::future::pending::<()>().boxed())
            .connect(),
    )
    .await
    .expect("paused client connects")
}

impl RawClient {
    /// Emits `event(...args)`.
    pub async fn emit(&self, event: &str, args: Vec<Value>) {
        self.sio
            .emit(event, Payload::Text(args))
            .await
            .expect("raw emit is sent");
    }

    /// Emits `event(...args, ack)` and waits (bounded) for the acknowledgement's arguments.
    pub async fn emit_with_ack(&self, event: &str, args: Vec<Value>) -> Vec<Value> {
        sio_emit_with_ack(&self.sio, event, args).await
    }

    /// The next `SERVER_ERROR` text (bounded wait).
    pub async fn next_error(&mut self, what: &str) -> String {
        within(&format!("SERVER_ERROR for {what}"), self.errors.recv())
            .await
            .expect("error channel open")
    }

    /// Waits (bounded) until the server closed the connection.
    pub async fn wait_closed(&mut self, what: &str) {
        within(what, self.closed.wait_for(|c| *c))
            .await
            .expect("close channel open");
    }
}

/// Runs `node <script> <args...>` from the `interop/` folder, returning its exit status and
/// stdout lines, and calls `on_line` with each line as it arrives. Fails the test with a clear
/// message when Node or the npm packages are missing (run `npm ci` in `interop/`).
pub async fn run_node(
    script: &str,
    args: &[&str],
    limit: Duration,
    mut on_line: impl FnMut(&str),
) -> (std::process::ExitStatus, Vec<String>) {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("interop");
    assert!(
        dir.join("node_modules").join("socket.io-client").exists(),
        "interop/node_modules is missing: run `npm ci` in interop/ (the README's test command does)"
    );
    let mut child = tokio::process::Command::new("node")
        .arg(script)
        .args(args)
        .current_dir(&dir)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node runs (install Node.js to run the interop tests)");
    let mut lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
    let mut seen = Vec::new();
    let run = async {
        while let Ok(Some(line)) = lines.next_line().await {
            on_line(&line);
            seen.push(line);
        }
        child.wait().await.expect("node exits")
    };
    let status = tokio::time::timeout(limit, run)
        .await
        .unwrap_or_else(|_| panic!("node {script} did not finish within {limit:?}"));
    (status, seen)
}

/// [`run_node`] as a task of its own, each line printed after the script's name; returns once
/// the script prints `READY` (waited for with [`within`] as `ready`), with the task that yields
/// its exit status and lines.
pub async fn node_until_ready(
    script: &'static str,
    args: Vec<String>,
    limit: Duration,
    ready: &str,
) -> tokio::task::JoinHandle<(std::process::ExitStatus, Vec<String>)> {
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<()>();
    let mut ready_tx = Some(ready_tx);
    let name = script.trim_end_matches(".js");
    let node = tokio::spawn(async move {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run_node(script, &args, limit, move |l| {
            println!("{name}: {l}");
            if l == "READY" {
                if let Some(tx) = ready_tx.take() {
                    let _ = tx.send(());
                }
            }
        })
        .await
    });
    within(ready, ready_rx).await.unwrap();
    node
}

/// Waits (as `what`) for the task of [`node_until_ready`] running `script`, and checks that the
/// script exited successfully with `DONE` as its last line.
pub async fn node_done(
    what: &str,
    script: &str,
    node: tokio::task::JoinHandle<(std::process::ExitStatus, Vec<String>)>,
) {
    let (status, lines) = within(what, node).await.unwrap();
    assert!(status.success(), "{script} failed: {lines:?}");
    assert_eq!(lines.last().map(String::as_str), Some("DONE"));
}

/// The Rust peer's part of `interop/message-interop.js` once the JavaScript peer is ready: a
/// message to it, a request it answers with a Socket.IO acknowledgement, then leaving, after
/// which the script ends (`node`, from [`node_until_ready`]).
pub async fn finish_message_interop(
    rust: &P2pClient,
    node: tokio::task::JoinHandle<(std::process::ExitStatus, Vec<String>)>,
) {
    rust.emit_to("js-peer", "greet", "hi from rust")
        .await
        .unwrap();
    let answer: i64 = rust
        .request("js-peer", "question", 21)
        .timeout(Duration::from_secs(3))
        .await
        .unwrap();
    assert_eq!(answer, 42);
    rust.disconnect().await.unwrap();
    node_done("the JavaScript peer finishes", "message-interop.js", node).await;
}

/// Waits (bounded) until `client` is in `state`.
pub async fn wait_state(client: &P2pClient, state: socketio_p2p::ConnectionState) {
    let mut rx = client.state();
    within(
        &format!("client '{}' becomes {state:?}", client.id()),
        rx.wait_for(|s| *s == state),
    )
    .await
    .expect("the client's state can be watched");
}

/// A client with a small stream window and a short call timeout.
pub async fn client_window(relay: &Relay, id: &str, window: u32) -> P2pClient {
    let opts = ClientOptions {
        timeout: Duration::from_secs(3),
        stream_window: window,
        ..ClientOptions::default()
    };
    P2pClient::connect_with(&relay.url(), id, opts)
        .await
        .unwrap_or_else(|e| panic!("client '{id}' connects: {e}"))
}

/// `from` opens a stream to `to` (which accepts through `incoming_streams`): both ends.
pub async fn open_pair(
    from: &P2pClient,
    to: &P2pClient,
    opts: StreamOptions,
) -> (P2pDuplex, P2pDuplex) {
    let mut incoming = to.incoming_streams(opts.channel.as_deref());
    let opener = {
        let from = from.clone();
        let to = to.id().to_string();
        tokio::spawn(async move { from.add_p2p_stream_with(&to, opts).await })
    };
    let theirs = within("the peer accepts", incoming.next())
        .await
        .expect("acceptor open");
    let mine = within("open resolves", opener)
        .await
        .unwrap()
        .expect("stream opens");
    (mine, theirs)
}

/// Waits until no stream is left on any of `clients` nor on the relay.
pub async fn all_freed(relay: &Relay, clients: &[&P2pClient]) {
    eventually("every stream is freed", || {
        clients.iter().all(|c| c.stream_count() == 0) && relay.server().stream_count() == 0
    })
    .await;
}

/// A client of the relay at `url` (one that runs as a separate process, say), with the short
/// timeout of [`client`].
pub async fn client_at(url: &str, id: &str) -> P2pClient {
    let opts = ClientOptions {
        timeout: Duration::from_secs(3),
        ..ClientOptions::default()
    };
    P2pClient::connect_with(url, id, opts)
        .await
        .unwrap_or_else(|e| panic!("client '{id}' connects to {url}: {e}"))
}

/// [`assert_relay_works`] for a relay known only by its URL: two fresh clients exchange a
/// message and a reply through it.
pub async fn assert_relay_works_at(url: &str, a_id: &str, b_id: &str) {
    let a = client_at(url, a_id).await;
    let b = client_at(url, b_id).await;
    assert_clients_exchange(a, b, a_id, b_id).await;
}

/// `a` (id `a_id`) sends `b` (id `b_id`) a message and asks it a question; `b` hears the one
/// and answers the other.
async fn assert_clients_exchange(a: P2pClient, b: P2pClient, a_id: &str, b_id: &str) {
    let got = Log::new();
    let g = got.clone();
    b.on("check-msg", move |m| g.push((m.from, m.args)));
    b.on("check-ask", |m| {
        let n: i64 = m.arg(0).unwrap();
        m.reply.unwrap().send((n * 2,));
    });
    a.emit_to(b_id, "check-msg", ("still alive",))
        .await
        .unwrap();
    let r: i64 = within("check reply", a.request(b_id, "check-ask", (21,)))
        .await
        .expect("the relay still relays replies");
    assert_eq!(r, 42);
    got.wait_len("check message arrives", 1).await;
    assert_eq!(
        got.get(),
        vec![(a_id.to_string(), vec![json!("still alive")])]
    );
    a.disconnect().await.unwrap();
    b.disconnect().await.unwrap();
}

// ---- `socketio-p2p serve` as a process of its own (tests of the `cli` feature's command) ----

/// Spawns `serve`, a `socketio-p2p serve ...` command line the caller built (the binary's path
/// is known only to the tests that require the `cli` feature), with its stdout piped and killed
/// when dropped, and waits (at most 60 s) for the URL it announces on its first line. Returns
/// the process, that URL, and the rest of its stdout.
pub async fn spawn_serve(
    mut serve: tokio::process::Command,
) -> (
    tokio::process::Child,
    String,
    tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
) {
    use tokio::io::AsyncBufReadExt;
    let mut child = serve
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("serve starts");
    let mut lines = tokio::io::BufReader::new(child.stdout.take().expect("piped stdout")).lines();
    let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
        .await
        .expect("serve announces its URL")
        .expect("serve's stdout")
        .expect("a line from serve");
    let url = line
        .rsplit(' ')
        .next()
        .filter(|u| u.starts_with("http://") || u.starts_with("https://"))
        .unwrap_or_else(|| panic!("unexpected first line from serve: {line}"))
        .to_string();
    (child, url, lines)
}

/// A directory of its own under the system's temporary directory, removed when dropped.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let dir =
            std::env::temp_dir().join(format!("socketio-p2p-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temporary directory");
        TempDir(dir)
    }

    /// Writes `data` to the file `name` in this directory; its path.
    pub fn write(&self, name: &str, data: impl AsRef<[u8]>) -> String {
        let path = self.0.join(name);
        std::fs::write(&path, data).expect("a file in the temporary directory");
        path_str(&path).to_string()
    }
}

/// A temporary path as text, for a command line.
pub fn path_str(p: &std::path::Path) -> &str {
    p.to_str().expect("a UTF-8 temporary path")
}

/// Waits for `f`, failing the test after a minute: for whole processes (a relay, a transfer).
pub async fn bounded<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(60), f)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}

/// `len` bytes that are not all alike (0x1E among them), the same on every call.
pub fn sample(len: usize) -> Vec<u8> {
    let mut x: u32 = 0x9e37_79b9;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 8) as u8
        })
        .collect()
}

/// The SHA-256 of `data` in hex, as `send` and `recv` print it.
pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

// ---- The relay's rules, seen by the one who tries to break them (tests/rules.rs, tests/attacks.rs) ----

use socketio_p2p::{Error, ServiceClient, TopicEvent};

/// A raw seed-protocol client registered as `id`.
pub async fn raw_as(relay: &Relay, id: &str) -> RawClient {
    let c = raw_client(&format!("{}?clientId={id}", relay.url())).await;
    eventually("the raw client registers", || {
        relay.server().is_connected(id)
    })
    .await;
    c
}

/// A client that is a service, with the tests' short timeout.
pub async fn service_client(relay: &Relay, name: &str) -> ServiceClient {
    let opts = ClientOptions {
        timeout: Duration::from_secs(3),
        ..ClientOptions::default()
    };
    P2pClient::connect_service(&relay.url(), name, opts)
        .await
        .unwrap_or_else(|e| panic!("service client '{name}' connects: {e}"))
}

/// Panics unless `text` mentions every needle.
pub fn assert_says(text: &str, needles: &[&str]) {
    for n in needles {
        assert!(text.contains(n), "{text:?} should mention {n:?}");
    }
}

/// A refusal the relay sent as `BAD_REQUEST`, mentioning every needle.
pub fn assert_refused(result: socketio_p2p::Result<impl std::fmt::Debug>, needles: &[&str]) {
    match result {
        Err(Error::BadRequest(text)) => assert_says(&text, needles),
        other => panic!("expected a refusal mentioning {needles:?}, got {other:?}"),
    }
}

/// The text of a permission denial ([`Error::PermissionDenied`]).
pub fn denied<T: std::fmt::Debug>(result: socketio_p2p::Result<T>) -> String {
    match result {
        Err(Error::PermissionDenied(text)) => text,
        other => panic!("expected a permission denial, got {other:?}"),
    }
}

/// Emits `event(...args, ack)` from a seed client the relay refuses: the acknowledgement and
/// the `SERVER_ERROR` both carry the refusal, which mentions every needle. Returns the text.
pub async fn seed_refused(
    raw: &mut RawClient,
    event: &str,
    args: Vec<Value>,
    needles: &[&str],
) -> String {
    let ack = raw.emit_with_ack(event, args.clone()).await;
    let text = ack.first().and_then(Value::as_str).unwrap_or_default();
    assert_says(text, needles);
    let error = raw.next_error(&format!("{event}{args:?}")).await;
    assert_eq!(error, text, "the acknowledgement repeats the SERVER_ERROR");
    error
}

/// Rooms the server has `client` in.
pub fn rooms_of(relay: &Relay, client: &str) -> Vec<String> {
    relay
        .server()
        .socket_of(client)
        .map(|s| s.rooms().into_iter().map(|r| r.to_string()).collect())
        .unwrap_or_default()
}

/// The names of the events a raw client received (rust_socketio reports an event without
/// arguments as "message" with the name as its argument).
pub fn event_names(raw: &RawClient) -> Vec<String> {
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
pub async fn seed_subscribe(raw: &RawClient, me: &str, service: &str, topic: &str) {
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

/// A topic handler that records publications and the destroy notice.
pub fn topic_log() -> (Log<TopicEvent>, impl Fn(TopicEvent) + Send + Sync + 'static) {
    let log = Log::new();
    let l = log.clone();
    (log, move |e| l.push(e))
}

/// A topic event carrying one published value.
pub fn published(v: Value) -> TopicEvent {
    TopicEvent::Published(vec![v])
}

/// One service, provided by the server or by a client: the legitimate side of the tests.
pub enum Svc {
    Server(socketio_p2p::ServiceHandle),
    Client(ServiceClient),
}

impl Svc {
    pub fn name(&self) -> String {
        match self {
            Svc::Server(s) => s.name().to_string(),
            Svc::Client(s) => s.name().to_string(),
        }
    }

    pub async fn create(&self, topics: &[&str]) {
        match self {
            Svc::Server(s) => s.create_topic(topics).unwrap(),
            Svc::Client(s) => s.create_topic(topics).await.unwrap(),
        }
    }

    pub async fn publish(&self, topic: &str, value: Value) {
        match self {
            Svc::Server(s) => s.publish_topic(topic, (value,)).unwrap(),
            Svc::Client(s) => s.publish_topic(topic, (value,)).await.unwrap(),
        }
    }

    pub async fn destroy(&self, topic: &str) {
        match self {
            Svc::Server(s) => s.destroy_topic(topic).unwrap(),
            Svc::Client(s) => s.destroy_topic(topic).await.unwrap(),
        }
    }
}

// ---- A relay that requires JSON Web Tokens (tests/auth.rs, tests/attacks.rs) ----

/// The HS256 secret of the tests' relays with authentication.
pub const JWT_SECRET: &[u8] = b"a shared secret of the tests, long enough for HS256";

/// A relay that accepts HS256 tokens signed with [`JWT_SECRET`], with `server` for the rest.
pub async fn jwt_relay_with(server: socketio_p2p::ServerOptions) -> Relay {
    let auth = socketio_p2p::auth::JwtAuthenticator::hs256(JWT_SECRET).unwrap();
    relay_with(RelayOptions {
        server: server.authenticate_with(auth),
        ..RelayOptions::default()
    })
    .await
}

/// A token for `sub`, valid for an hour, without permissions of its own.
pub fn jwt_token(sub: &str) -> String {
    socketio_p2p::auth::mint_hs256(
        JWT_SECRET,
        &socketio_p2p::auth::Claims::new(sub, Duration::from_secs(3600)),
    )
    .unwrap()
}

/// A token for `sub`, valid for an hour, carrying `permissions`.
pub fn jwt_token_with(sub: &str, permissions: socketio_p2p::auth::Permissions) -> String {
    let claims = socketio_p2p::auth::Claims::new(sub, Duration::from_secs(3600))
        .with_permissions(permissions);
    socketio_p2p::auth::mint_hs256(JWT_SECRET, &claims).unwrap()
}

/// The tests' short-timeout client options carrying `token` (in the Socket.IO auth payload).
pub fn token_opts(token: Option<String>) -> ClientOptions {
    ClientOptions {
        timeout: Duration::from_secs(3),
        token,
        ..ClientOptions::default()
    }
}

/// A relay that requires tokens, with the default options otherwise.
pub async fn jwt_relay() -> Relay {
    jwt_relay_with(socketio_p2p::ServerOptions::default()).await
}

/// An hour: the lifetime of the tests' tokens.
pub fn hour() -> Duration {
    Duration::from_secs(3600)
}

/// A Rust client of `relay` asking for `id`, with `token` in its auth payload.
pub async fn connect_token(
    relay: &Relay,
    id: &str,
    token: Option<String>,
) -> socketio_p2p::Result<P2pClient> {
    within(
        "the connect resolves",
        P2pClient::connect_with(&relay.url(), id, token_opts(token)),
    )
    .await
}

/// The reason and text of a connect refused at authentication.
pub fn unauthorized(
    result: socketio_p2p::Result<P2pClient>,
) -> (socketio_p2p::auth::RefusalReason, String) {
    match result {
        Err(Error::Unauthorized { reason, message }) => (reason, message),
        Err(e) => panic!("expected an authentication refusal, got {e:?}"),
        Ok(c) => panic!("expected a refusal, '{}' connected", c.id()),
    }
}

/// A raw Socket.IO client of `url` presenting `auth` (its Socket.IO auth payload): the client,
/// and `Ok` once the relay accepted it or the text of its connection error (`connect_error`).
pub async fn raw_connect(url: &str, auth: Option<Value>) -> (SioClient, Result<(), String>) {
    let (tx, mut rx) = mpsc::unbounded_channel::<Result<(), String>>();
    let err_tx = tx.clone();
    let mut builder = ClientBuilder::new(url.to_string())
        .transport_type(TransportType::Websocket)
        .reconnect(false)
        .on("open", move |_, _| {
            let _ = tx.send(Ok(()));
            futures::future::ready(()).boxed()
        })
        .on("error", move |p, _| {
            let _ = err_tx.send(Err(first_text(&p)));
            futures::future::ready(()).boxed()
        });
    if let Some(auth) = auth {
        builder = builder.auth(auth);
    }
    let sio = within("raw connect", builder.connect())
        .await
        .expect("the transport connects");
    let outcome = within("connect or connect_error", rx.recv())
        .await
        .expect("an outcome");
    (sio, outcome)
}

/// A raw Socket.IO client that the relay is expected to refuse at authentication: returns the
/// text of its connection error (`connect_error`); panics if it connects.
pub async fn raw_connect_error(url: &str, auth: Option<Value>) -> String {
    let (sio, outcome) = raw_connect(url, auth).await;
    let _ = sio.disconnect().await;
    match outcome {
        Err(text) => text,
        Ok(()) => panic!("{url} connected; expected a connection error"),
    }
}

// ---- a real Redis, for the relays of a cluster ----

/// A real `redis-server` on a loopback port of its own, without persistence (`--save ''
/// --appendonly no`), killed when dropped. `redis-server` must be installed (`.ci/run` installs
/// it).
pub struct RedisServer {
    child: Option<std::process::Child>,
    pub port: u16,
}

impl RedisServer {
    /// Starts one on a free port and waits (at most 10 s) until it accepts connections.
    pub fn start() -> RedisServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free loopback port")
            .port();
        RedisServer::start_on(port)
    }

    /// Starts one on `port`.
    pub fn start_on(port: u16) -> RedisServer {
        let child = std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("redis-server starts (is it installed? .ci/run installs it)");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "redis-server listens on port {port} within 10 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        RedisServer {
            child: Some(child),
            port,
        }
    }

    /// Its URL, `redis://127.0.0.1:<port>/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Kills it (SIGKILL) and waits for it to be gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills it and starts a fresh one, which knows nothing, on the same port.
    pub fn restart(&mut self) {
        self.kill();
        *self = RedisServer::start_on(self.port);
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The `P2P_WELCOME` a raw extension client got: its resume secret and whether it resumed a
/// session.
pub async fn p2p_welcome(raw: &RawClient) -> (String, bool) {
    eventually("a P2P_WELCOME arrives", || {
        raw.events.get().iter().any(|(ev, _)| ev == "P2P_WELCOME")
    })
    .await;
    let events = raw.events.get();
    let (_, args) = events.iter().find(|(ev, _)| ev == "P2P_WELCOME").unwrap();
    let secret = args[0]["resume"]
        .as_str()
        .expect("a resume secret")
        .to_string();
    (secret, args[0]["resumed"].as_bool().unwrap_or(false))
}
