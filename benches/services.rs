//! Service call rate and topic fan-out through an embedded relay on loopback, with the plain
//! message round trip between two clients measured in the same run as the baseline.
//!
//! Run with `cargo bench --bench services`. Environment:
//! - `CALLS` (5000): sequential calls with a reply (one in flight);
//! - `PIPELINED` (50000): calls with a reply, `WINDOW` (256) in flight at once;
//! - `FIRE` (100000): fire-and-forget calls, counted as the handler runs;
//! - `SUBSCRIBERS` (1000): subscriber clients of the fan-out part, each a real `P2pClient` on its
//!   own connection, all in this process;
//! - `PUBLISHES` (20): publications of the burst part of the fan-out.

mod common;
use common::{env_usize, unthrottled};
use futures::StreamExt;
use serde_json::Value;
use socketio_p2p::{Args, ClientOptions, P2pClient, Relay, ServiceClient, TopicEvent};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A wait on deliveries gives up when nothing new arrived for this long.
const STALL: Duration = Duration::from_secs(10);

fn opts() -> ClientOptions {
    ClientOptions {
        timeout: Duration::from_secs(30),
        ..ClientOptions::default()
    }
}

/// Waits until `counter` reaches `target` or stops moving for [`STALL`]; returns the count and
/// the time of the last change.
async fn wait_count(counter: &AtomicU64, target: u64, start: Instant) -> (u64, Instant) {
    let mut seen = counter.load(Ordering::Relaxed);
    let mut last = start;
    loop {
        let now = counter.load(Ordering::Relaxed);
        if now != seen {
            seen = now;
            last = Instant::now();
        }
        if now >= target || last.elapsed() > STALL {
            return (now, last);
        }
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
}

/// Sequential calls with a reply: returns calls per second, or why it failed.
async fn sequential(
    caller: &P2pClient,
    target: &str,
    event: &str,
    n: usize,
) -> Result<f64, String> {
    for i in 0..1000u64 {
        caller
            .request::<Vec<Value>>(target, event, i)
            .await
            .map_err(|e| e.to_string())?;
    }
    let start = Instant::now();
    for i in 0..n as u64 {
        let reply = caller
            .request::<Vec<Value>>(target, event, i)
            .await
            .map_err(|e| e.to_string())?;
        if reply.first().and_then(Value::as_u64) != Some(i) {
            return Err(format!("wrong answer {reply:?} to {i}"));
        }
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

/// Calls with a reply, `window` in flight: returns calls per second, or why it failed.
async fn pipelined(
    caller: &P2pClient,
    target: &str,
    event: &str,
    n: usize,
    window: usize,
) -> Result<f64, String> {
    let start = Instant::now();
    let mut answers = futures::stream::iter(0..n as u64)
        .map(|i| async move {
            let reply = caller.request::<Vec<Value>>(target, event, i).await;
            (i, reply)
        })
        .buffer_unordered(window);
    let mut ok = 0usize;
    while let Some((i, reply)) = answers.next().await {
        match reply {
            Ok(v) if v.first().and_then(Value::as_u64) == Some(i) => ok += 1,
            Ok(v) => return Err(format!("wrong answer {v:?} to {i}")),
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(ok as f64 / start.elapsed().as_secs_f64())
}

/// Fire-and-forget calls, counted as the service's handler runs.
async fn fire_and_forget(
    caller: &P2pClient,
    target: &str,
    event: &str,
    counter: &AtomicU64,
    n: usize,
) -> Result<f64, String> {
    let before = counter.load(Ordering::Relaxed);
    let start = Instant::now();
    for i in 0..n as u64 {
        caller
            .emit_to(target, event, (i,))
            .await
            .map_err(|e| e.to_string())?;
    }
    let target = before + n as u64;
    let (got, last) = wait_count(counter, target, start).await;
    if got < target {
        return Err(format!("{} of {n} calls arrived", got - before));
    }
    Ok(n as f64 / last.duration_since(start).as_secs_f64())
}

fn show(r: &Result<f64, String>, baseline: Option<f64>) -> String {
    match (r, baseline) {
        (Ok(v), Some(b)) => format!("{v:>9.0} calls/s  ({:.2}x the baseline)", v / b),
        (Ok(v), None) => format!("{v:>9.0} calls/s"),
        (Err(e), _) => format!("FAILED: {e}"),
    }
}

struct FanOut {
    single_secs: f64,
    single_delivered: u64,
    burst_secs: f64,
    burst_delivered: u64,
    burst_expected: u64,
}

/// One publication to every subscriber, then a burst of `publishes` back to back.
async fn fan_out<F, Fut>(
    counter: &AtomicU64,
    subscribers: u64,
    publishes: u64,
    publish: F,
) -> FanOut
where
    F: Fn(u64) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    // Warm-up: every subscription delivers once.
    let before = counter.load(Ordering::Relaxed);
    publish(0).await;
    wait_count(counter, before + subscribers, Instant::now()).await;

    let before = counter.load(Ordering::Relaxed);
    let start = Instant::now();
    publish(1).await;
    let (got, last) = wait_count(counter, before + subscribers, start).await;
    let single_secs = last.duration_since(start).as_secs_f64();
    let single_delivered = got - before;

    let before = counter.load(Ordering::Relaxed);
    let start = Instant::now();
    for i in 0..publishes {
        publish(2 + i).await;
    }
    let expected = subscribers * publishes;
    let (got, last) = wait_count(counter, before + expected, start).await;
    FanOut {
        single_secs,
        single_delivered,
        burst_secs: last.duration_since(start).as_secs_f64(),
        burst_delivered: got - before,
        burst_expected: expected,
    }
}

fn show_fan_out(who: &str, subscribers: u64, publishes: u64, f: &FanOut) {
    println!(
        "  {who:<16} one publish to {subscribers}: {} of {subscribers} delivered in {:.1} ms = {:.0} deliveries/s",
        f.single_delivered,
        f.single_secs * 1e3,
        f.single_delivered as f64 / f.single_secs.max(1e-9)
    );
    println!(
        "  {who:<16} {publishes} publishes to {subscribers}: {} of {} delivered in {:.1} ms = {:.0} deliveries/s",
        f.burst_delivered,
        f.burst_expected,
        f.burst_secs * 1e3,
        f.burst_delivered as f64 / f.burst_secs.max(1e-9)
    );
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let calls = env_usize("CALLS", 5000);
    let piped = env_usize("PIPELINED", 50_000);
    let window = env_usize("WINDOW", 256).max(1);
    let fire = env_usize("FIRE", 100_000);
    let subscribers = env_usize("SUBSCRIBERS", 1000);
    let publishes = env_usize("PUBLISHES", 20) as u64;

    let relay = Relay::bind_with("127.0.0.1:0", unthrottled()).await?;
    let url = relay.url();
    println!(
        "socketio-p2p services benchmark: relay {url}, {} worker threads",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );

    // Providers: the same `echo` and `count` APIs on the server and on a client service.
    let fired_srv = Arc::new(AtomicU64::new(0));
    let fired_cli = Arc::new(AtomicU64::new(0));
    let srv = relay.server().as_service("bench-srv");
    srv.provide_service("echo", |call| call.respond(Args(call.args.clone())))?;
    {
        let fired = fired_srv.clone();
        srv.provide_service("count", move |_| {
            fired.fetch_add(1, Ordering::Relaxed);
        })?;
    }
    let cli: ServiceClient = P2pClient::connect_service(&url, "bench-cli", opts()).await?;
    cli.provide_service("echo", |call| call.respond(Args(call.args.clone())))?;
    {
        let fired = fired_cli.clone();
        cli.provide_service("count", move |_| {
            fired.fetch_add(1, Ordering::Relaxed);
        })?;
    }
    // Baseline: a plain client answering a plain message.
    let peer = P2pClient::connect_with(&url, "plain-peer", opts()).await?;
    peer.on("echo", |m| {
        if let Some(r) = m.reply {
            r.send(Args(m.args));
        }
    });
    let fired_peer = Arc::new(AtomicU64::new(0));
    {
        let fired = fired_peer.clone();
        peer.on("count", move |_| {
            fired.fetch_add(1, Ordering::Relaxed);
        });
    }
    let caller = P2pClient::connect_with(&url, "caller", opts()).await?;

    println!();
    println!(
        "service calls from one caller; a service call is a message to (service, api), so each \
         mode's baseline is a plain message to a plain client in the same run:"
    );
    let row = |label: &str, r: &Result<f64, String>, base: &Result<f64, String>| {
        println!("  {label:<60} {}", show(r, base.as_ref().ok().copied()));
    };
    let none = Err(String::new());

    let base = sequential(&caller, "plain-peer", "echo", calls).await;
    row(
        &format!("sequential with replies ({calls}), baseline"),
        &base,
        &none,
    );
    let r = sequential(&caller, "bench-srv", "echo", calls).await;
    row("  server-provided", &r, &base);
    let r = sequential(&caller, "bench-cli", "echo", calls).await;
    row("  client-provided", &r, &base);

    let base = pipelined(&caller, "plain-peer", "echo", piped, window).await;
    row(
        &format!("pipelined with replies ({piped}, {window} in flight), baseline"),
        &base,
        &none,
    );
    let r = pipelined(&caller, "bench-srv", "echo", piped, window).await;
    row("  server-provided", &r, &base);
    let r = pipelined(&caller, "bench-cli", "echo", piped, window).await;
    row("  client-provided", &r, &base);

    let base = fire_and_forget(&caller, "plain-peer", "count", &fired_peer, fire).await;
    row(&format!("fire-and-forget ({fire}), baseline"), &base, &none);
    let r = fire_and_forget(&caller, "bench-srv", "count", &fired_srv, fire).await;
    row("  server-provided", &r, &base);
    let r = fire_and_forget(&caller, "bench-cli", "count", &fired_cli, fire).await;
    row("  client-provided", &r, &base);

    // Fan-out: every subscriber subscribes to the `fan` topic of both providers.
    println!();
    println!("topic fan-out ({subscribers} subscriber clients, each its own connection, in this process):");
    srv.create_topic("fan")?;
    cli.create_topic("fan").await?;
    let got_srv = Arc::new(AtomicU64::new(0));
    let got_cli = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let results: Vec<Result<P2pClient, String>> = futures::stream::iter(0..subscribers)
        .map(|i| {
            let (url, got_srv, got_cli) = (url.clone(), got_srv.clone(), got_cli.clone());
            async move {
                let c = P2pClient::connect_with(&url, &format!("sub-{i}"), opts())
                    .await
                    .map_err(|e| format!("sub-{i} connects: {e}"))?;
                c.subscribe_topic("bench-srv", "fan", move |e| {
                    if matches!(e, TopicEvent::Published(_)) {
                        got_srv.fetch_add(1, Ordering::Relaxed);
                    }
                })
                .await
                .map_err(|e| format!("sub-{i} subscribes: {e}"))?;
                c.subscribe_topic("bench-cli", "fan", move |e| {
                    if matches!(e, TopicEvent::Published(_)) {
                        got_cli.fetch_add(1, Ordering::Relaxed);
                    }
                })
                .await
                .map_err(|e| format!("sub-{i} subscribes: {e}"))?;
                Ok(c)
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    let mut subs = Vec::with_capacity(subscribers);
    for r in results {
        match r {
            Ok(c) => subs.push(c),
            Err(e) => eprintln!("  {e}"),
        }
    }
    let n = subs.len() as u64;
    println!(
        "  {n} subscribers connected and subscribed to 2 topics in {:.1} s (server counts {} on the server topic)",
        start.elapsed().as_secs_f64(),
        srv.subscriber_count("fan").await?
    );
    let f = fan_out(&got_srv, n, publishes, |i| {
        let srv = srv.clone();
        async move {
            if let Err(e) = srv.publish_topic("fan", i) {
                eprintln!("  server publish failed: {e}");
            }
        }
    })
    .await;
    show_fan_out("server-provided", n, publishes, &f);
    let f = fan_out(&got_cli, n, publishes, |i| {
        let cli = cli.clone();
        async move {
            if let Err(e) = cli.publish_topic("fan", i).await {
                eprintln!("  client publish failed: {e}");
            }
        }
    })
    .await;
    show_fan_out("client-provided", n, publishes, &f);

    for c in &subs {
        let _ = c.disconnect().await;
    }
    relay.shutdown().await;
    Ok(())
}
