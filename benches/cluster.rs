//! Cluster benchmark: two relays on one Redis, in this process, and the same figures for two
//! clients of one relay and for two clients of different relays, side by side:
//!
//! 1. one stream of `STREAM_MB` (256) MiB in 64 KiB writes: MB/s;
//! 2. `MSGS` (100000) fire-and-forget messages: messages/s until the last arrives;
//! 3. `ACKS` (2000) sequential requests: reply round trip p50/p99;
//!
//! and the ratios cross-relay / same-relay. It starts its own `redis-server` (no persistence, a
//! free loopback port), which must be on the `PATH`.
//!
//! Run with `cargo bench --bench cluster`.

mod common;
use common::{env_usize, unthrottled};
use serde_json::Value;
use socketio_p2p::{ClusterOptions, P2pClient, Relay, RelayOptions};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const MB: f64 = 1024.0 * 1024.0;
const CHUNK: usize = 64 * 1024;
/// A measurement gives up when nothing new arrived for this long.
const STALL: Duration = Duration::from_secs(10);

/// `redis-server` without persistence on a free loopback port, killed when dropped.
struct Redis {
    child: Child,
    port: u16,
}

impl Redis {
    fn start() -> Redis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free loopback port")
            .port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts (is it installed?)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "redis-server listens within 10 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Redis { child, port }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn member(redis: &Redis) -> Relay {
    let opts = RelayOptions {
        cluster: Some(ClusterOptions::new(redis.url())),
        ..unthrottled()
    };
    Relay::bind_with("127.0.0.1:0", opts).await.unwrap()
}

async fn client(relay: &Relay, id: &str) -> P2pClient {
    common::connect(&relay.url(), id, Duration::from_secs(30)).await
}

/// Waits until `c` can reach `to` (the cluster's directory knows it).
async fn reachable(c: &P2pClient, to: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if c.list_clients()
            .await
            .is_ok_and(|ids| ids.iter().any(|i| i == to))
        {
            return;
        }
        assert!(Instant::now() < deadline, "'{to}' is in the cluster's list");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One stream of `total` bytes from `a` to `b`: MB/s.
async fn one_stream(a: &P2pClient, b: &P2pClient, total: usize) -> f64 {
    let mut incoming = b.incoming_streams(None);
    let reader = tokio::spawn(async move {
        let mut s = incoming.next().await.unwrap();
        let mut buf = vec![0u8; 256 * 1024];
        let mut got = 0usize;
        loop {
            let n = s.read(&mut buf).await.unwrap();
            if n == 0 {
                return got;
            }
            got += n;
        }
    });
    let mut w = a.add_p2p_stream(b.id()).await.unwrap();
    let data: Vec<u8> = (0..CHUNK).map(|i| (i * 31 % 251) as u8).collect();
    let start = Instant::now();
    let mut sent = 0;
    while sent < total {
        w.write_all(&data).await.unwrap();
        sent += data.len();
    }
    w.shutdown().await.unwrap();
    let got = reader.await.unwrap();
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(got, sent, "every byte arrived");
    sent as f64 / MB / secs
}

/// `n` messages from `a` to `b`, in order: messages/s until the last arrived.
async fn messages(a: &P2pClient, b: &P2pClient, n: usize) -> f64 {
    let count = Arc::new(AtomicU64::new(0));
    let out_of_order = Arc::new(AtomicU64::new(0));
    {
        let (count, ooo) = (count.clone(), out_of_order.clone());
        b.on("m", move |m| {
            let expected = count.fetch_add(1, Ordering::Relaxed);
            if m.args.first().and_then(Value::as_u64) != Some(expected) {
                ooo.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    let start = Instant::now();
    for i in 0..n {
        a.emit_to(b.id(), "m", i).await.unwrap();
    }
    let (mut seen, mut progress) = (0, Instant::now());
    loop {
        let now = count.load(Ordering::Relaxed);
        if now >= n as u64 {
            break;
        }
        assert!(
            progress.elapsed() < STALL,
            "{now} of {n} messages arrived, then nothing"
        );
        if now != seen {
            (seen, progress) = (now, Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(out_of_order.load(Ordering::Relaxed), 0, "messages in order");
    n as f64 / secs
}

/// `n` sequential requests from `a` to `b`: round trip p50 and p99 in µs.
async fn round_trip(a: &P2pClient, b: &P2pClient, n: usize) -> (f64, f64) {
    b.on("q", |m| {
        let x = m.arg::<u64>(0).unwrap_or(0);
        if let Some(r) = m.reply {
            r.send(x + 1);
        }
    });
    for i in 0..100u64 {
        let _ = a.request::<Vec<Value>>(b.id(), "q", i).await;
    }
    let mut lat = Vec::with_capacity(n);
    for i in 0..n as u64 {
        let t = Instant::now();
        let v = a.request::<Vec<Value>>(b.id(), "q", i).await.unwrap();
        assert_eq!(v.first().and_then(Value::as_u64), Some(i + 1));
        lat.push(t.elapsed().as_secs_f64() * 1e6);
    }
    lat.sort_by(f64::total_cmp);
    let pick = |q: f64| lat[((lat.len() as f64 * q) as usize).min(lat.len() - 1)];
    (pick(0.5), pick(0.99))
}

struct Figures {
    stream_mb_s: f64,
    msgs_s: f64,
    p50_us: f64,
    p99_us: f64,
}

async fn measure(a: &P2pClient, b: &P2pClient, stream: usize, msgs: usize, acks: usize) -> Figures {
    let stream_mb_s = one_stream(a, b, stream).await;
    let msgs_s = messages(a, b, msgs).await;
    let (p50_us, p99_us) = round_trip(a, b, acks).await;
    Figures {
        stream_mb_s,
        msgs_s,
        p50_us,
        p99_us,
    }
}

#[tokio::main]
async fn main() {
    let stream_mb = env_usize("STREAM_MB", 256).max(1);
    let msgs = env_usize("MSGS", 100_000).max(1);
    let acks = env_usize("ACKS", 2_000).max(1);
    let redis = Redis::start();
    let (r1, r2) = (member(&redis).await, member(&redis).await);
    let alice = client(&r1, "alice").await;
    let bob = client(&r1, "bob").await;
    let carol = client(&r1, "carol").await;
    let dave = client(&r2, "dave").await;
    reachable(&carol, "dave").await;
    reachable(&dave, "carol").await;

    println!(
        "cluster benchmark: two relays on one Redis ({}), {stream_mb} MiB stream, {msgs} \
         messages, {acks} requests",
        redis.url()
    );
    let stream = stream_mb << 20;
    let same = measure(&alice, &bob, stream, msgs, acks).await;
    let cross = measure(&carol, &dave, stream, msgs, acks).await;

    println!();
    println!(
        "{:<28}{:>14}{:>14}{:>10}",
        "", "same relay", "cross-relay", "ratio"
    );
    let row = |what: &str, s: f64, c: f64, unit: &str| {
        println!(
            "{what:<28}{s:>10.1} {unit:<3}{c:>10.1} {unit:<3}{:>10.2}",
            c / s
        );
    };
    row("one stream", same.stream_mb_s, cross.stream_mb_s, "MB/s");
    row("messages", same.msgs_s, cross.msgs_s, "/s");
    row("reply round trip p50", same.p50_us, cross.p50_us, "µs");
    row("reply round trip p99", same.p99_us, cross.p99_us, "µs");
    println!();
    let goal = |what: &str, ratio: f64| {
        let met = if ratio >= 0.5 { "met" } else { "MISSED" };
        println!("goal {what} cross-relay >= 0.5x same-relay: {ratio:.2}x, {met}");
    };
    goal("stream", cross.stream_mb_s / same.stream_mb_s);
    goal("messages", cross.msgs_s / same.msgs_s);
}
