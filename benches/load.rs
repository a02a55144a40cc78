//! Load and fault suite: prints figures, asserts nothing about speed.
//!
//! `cargo bench --bench load`; sizes by environment: LOAD_CLIENTS (1000), LOAD_MESSAGES per
//! client (1000), FLOOD_MESSAGES (100000). The relay runs as a child process
//! (`socketio-p2p serve`), so its CPU time and peak RSS are its own (from `/proc`).
//!
//! 1. Many clients each send messages to random peers: lost, duplicated, out of order per
//!    sender; time, relay CPU seconds, relay peak RSS.
//! 2. A flood to a stopped (SIGSTOP) target: relay peak RSS, what the sender is told.
//! 3. `kill -9` of a receiving `socketio-p2p recv` mid-stream: time until the sender's error.
//! 4. A stopped `socketio-p2p recv`: time until `socketio-p2p send --stall-timeout 3` fails.
//! 5. `kill -9` of the relay: time until each of two clients sees its connection closed.

mod common;
use common::{env_usize, Serve};
use socketio_p2p::{P2pClient, StreamOptions};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;

const BIN: &str = env!("CARGO_BIN_EXE_socketio-p2p");

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill").args([sig, &pid.to_string()]).status();
}

async fn connect(url: &str, id: &str) -> P2pClient {
    common::connect(url, id, Duration::from_secs(10)).await
}

/// 1. `clients` × `messages` to random peers.
async fn many_to_many(clients: usize, messages: usize) {
    println!(
        "1. {clients} clients x {messages} messages to random peers \
         (all from one address: the relay runs with --max-connects-per-sec 0)"
    );
    let serve = Serve::start(&["--max-connects-per-sec", "0"]);
    let idle_rss = serve.rss_kib();
    let cpu0 = serve.cpu_secs();
    let began = Instant::now();
    // seen[sender * messages + seq]: how often that message arrived.
    let seen: Arc<Vec<AtomicU8>> =
        Arc::new((0..clients * messages).map(|_| AtomicU8::new(0)).collect());
    let received = Arc::new(AtomicU64::new(0));
    let out_of_order = Arc::new(AtomicU64::new(0));
    let mut all = Vec::with_capacity(clients);
    for i in 0..clients {
        let c = connect(&serve.url, &format!("c{i}")).await;
        // Last sequence number from each sender, at this receiver.
        let last: Arc<Mutex<Vec<i64>>> = Arc::new(Mutex::new(vec![-1; clients]));
        let (seen, received, ooo) = (seen.clone(), received.clone(), out_of_order.clone());
        c.on("m", move |m| {
            let (Ok(from), Ok(seq)) = (m.arg::<usize>(0), m.arg::<usize>(1)) else {
                return;
            };
            if from >= clients || seq >= messages {
                return;
            }
            seen[from * messages + seq].fetch_add(1, Ordering::Relaxed);
            received.fetch_add(1, Ordering::Relaxed);
            let mut last = last.lock().unwrap();
            if seq as i64 <= last[from] {
                ooo.fetch_add(1, Ordering::Relaxed);
            }
            last[from] = seq as i64;
        });
        all.push(c);
    }
    let connected = began.elapsed();
    let send_began = Instant::now();
    let errors = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for (i, c) in all.iter().enumerate() {
        let c = c.clone();
        let errors = errors.clone();
        tasks.push(tokio::spawn(async move {
            let mut x = (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            for seq in 0..messages {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let mut to = (x % clients as u64) as usize;
                if to == i {
                    to = (to + 1) % clients;
                }
                if c.emit_to(&format!("c{to}"), "m", (i, seq)).await.is_err() {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let sent_in = send_began.elapsed();
    let total = (clients * messages) as u64;
    // Wait for delivery: until all arrived or nothing arrives for 10 s.
    let mut last = (received.load(Ordering::Relaxed), Instant::now());
    while received.load(Ordering::Relaxed) < total {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let now = received.load(Ordering::Relaxed);
        if now != last.0 {
            last = (now, Instant::now());
        } else if last.1.elapsed() > Duration::from_secs(10) {
            break;
        }
    }
    let delivered_in = send_began.elapsed();
    let lost = seen
        .iter()
        .filter(|s| s.load(Ordering::Relaxed) == 0)
        .count();
    let duplicated: u64 = seen
        .iter()
        .map(|s| s.load(Ordering::Relaxed).saturating_sub(1) as u64)
        .sum();
    let cpu = serve.cpu_secs() - cpu0;
    println!(
        "   connected {clients} clients in {:.2} s",
        connected.as_secs_f64()
    );
    println!(
        "   {total} messages sent in {:.2} s, all delivered in {:.2} s ({:.0} messages/s); send errors {}",
        sent_in.as_secs_f64(),
        delivered_in.as_secs_f64(),
        received.load(Ordering::Relaxed) as f64 / delivered_in.as_secs_f64().max(1e-9),
        errors.load(Ordering::Relaxed)
    );
    println!(
        "   lost {lost}, duplicated {duplicated}, out of order per sender {}",
        out_of_order.load(Ordering::Relaxed)
    );
    println!(
        "   relay: {cpu:.2} CPU s, peak RSS {} (idle {})",
        mib(serve.peak_rss_kib()),
        mib(idle_rss)
    );
    for c in &all {
        let _ = c.disconnect().await;
    }
    drop(all);
    tokio::time::sleep(Duration::from_secs(1)).await;
    println!(
        "   relay log after all {clients} disconnected: {} WARN/ERROR lines",
        serve.warn_lines()
    );
}

/// A `socketio-p2p recv` child; returns it once it waits for a file.
fn recv_child(url: &str, id: &str, out: &Path) -> Child {
    let mut child = Command::new(BIN)
        .args(["recv", "--server", url, "--id", id, "--out"])
        .arg(out)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("recv starts");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    for line in lines.by_ref() {
        if line
            .map(|l| l.starts_with("waiting for a file"))
            .unwrap_or(true)
        {
            break;
        }
    }
    // Keep draining its stderr so it never blocks on it.
    std::thread::spawn(move || for _ in lines {});
    child
}

/// 2. A flood of messages to a stopped target.
async fn flood_to_a_stopped_target(count: usize) {
    println!("2. {count} messages of 1 KiB to a stopped (SIGSTOP) client");
    let serve = Serve::start(&[]);
    let dir = temp_dir("flood");
    let mut target = recv_child(&serve.url, "paused", &dir.join("never.bin"));
    signal(target.id(), "-STOP");
    let sender = connect(&serve.url, "flooder").await;
    let busy = Arc::new(AtomicU64::new(0));
    let first_notice = Arc::new(Mutex::new(None::<String>));
    {
        let (busy, first_notice) = (busy.clone(), first_notice.clone());
        sender.on_server_error(move |text| {
            // A refused batch says how many of its messages were not delivered.
            let n = text
                .split(" messages for it were not delivered")
                .next()
                .filter(|head| head.len() < text.len())
                .and_then(|head| head.rsplit(' ').next()?.parse().ok())
                .unwrap_or(1);
            busy.fetch_add(n, Ordering::Relaxed);
            first_notice.lock().unwrap().get_or_insert(text);
        });
    }
    let before = serve.rss_kib();
    let body = "x".repeat(1024);
    let began = Instant::now();
    let mut errors = 0u64;
    let mut first_error = None;
    for i in 0..count {
        if let Err(e) = sender.emit_to("paused", "flood", (i, &body)).await {
            errors += 1;
            first_error.get_or_insert_with(|| format!("message {i}: {e}"));
        }
    }
    let sent_in = began.elapsed();
    // The notices saying which messages were refused arrive after the sends.
    let mut last = u64::MAX;
    while busy.load(Ordering::Relaxed) != last {
        last = busy.load(Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // What a request (which waits for an answer or an error) is told now.
    let probe = sender
        .request::<serde_json::Value>("paused", "probe", ())
        .timeout(Duration::from_secs(20))
        .await;
    println!(
        "   sent in {:.2} s; emit errors {errors}{}",
        sent_in.as_secs_f64(),
        first_error.map_or(String::new(), |e| format!(" (first: {e})"))
    );
    let delivered = count as u64 - errors - last;
    println!(
        "   the sender was told of {last} refused (first: {}); {delivered} accepted and held for the target",
        first_notice.lock().unwrap().as_deref().unwrap_or("none")
    );
    println!(
        "   a request to the stopped client now: {}",
        match probe {
            Ok(v) => format!("answered {v}"),
            Err(e) => format!("error: {e}"),
        }
    );
    println!(
        "   relay RSS before {} after {}, peak {}",
        mib(before),
        mib(serve.rss_kib()),
        mib(serve.peak_rss_kib())
    );
    signal(target.id(), "-KILL");
    signal(target.id(), "-CONT");
    let _ = target.wait();
    let _ = sender.disconnect().await;
    let _ = std::fs::remove_dir_all(dir);
}

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("socketio-p2p-load-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// 3. `kill -9` of a receiver mid-stream.
async fn receiver_killed_mid_stream() {
    println!("3. kill -9 of a receiving client mid-stream");
    let serve = Serve::start(&[]);
    let dir = temp_dir("kill");
    let mut target = recv_child(&serve.url, "victim", &dir.join("out.bin"));
    let sender = connect(&serve.url, "writer").await;
    let opts = StreamOptions {
        channel: Some("file".into()),
        args: serde_json::json!({"name": "endless.bin"}),
        ..StreamOptions::default()
    };
    let mut duplex = sender
        .add_p2p_stream_with("victim", opts)
        .await
        .expect("the stream opens");
    let chunk = vec![7u8; 64 * 1024];
    let mut written = 0u64;
    let mut killed: Option<Instant> = None;
    let outcome = loop {
        if killed.is_none() && written >= 8 * 1024 * 1024 {
            signal(target.id(), "-KILL");
            killed = Some(Instant::now());
        }
        match tokio::time::timeout(Duration::from_secs(10), duplex.write_all(&chunk)).await {
            Ok(Ok(())) => written += chunk.len() as u64,
            Ok(Err(e)) => break format!("error: {e}"),
            Err(_) => break "no error within 10 s".to_string(),
        }
    };
    let took = killed.map(|k| k.elapsed());
    println!(
        "   after {} written: the sender's write failed {} after the kill: {outcome}",
        mib(written / 1024),
        took.map_or("(before the kill)".into(), |t| format!(
            "{:.0} ms",
            t.as_secs_f64() * 1e3
        ))
    );
    let _ = target.wait();
    let _ = sender.disconnect().await;
    let _ = std::fs::remove_dir_all(dir);
}

/// 4. A stopped receiver: the `send` command fails within its stall timeout.
async fn receiver_stopped() {
    println!("4. a stopped (SIGSTOP) receiver, send --stall-timeout 3");
    let serve = Serve::start(&[]);
    let dir = temp_dir("stall");
    let input = dir.join("input.bin");
    std::fs::write(&input, vec![1u8; 64 * 1024 * 1024]).unwrap();
    let mut target = recv_child(&serve.url, "sleepy", &dir.join("out.bin"));
    let mut send = Command::new(BIN)
        .args([
            "send", "--server", &serve.url, "--id", "eager", "--to", "sleepy",
        ])
        .args(["--stall-timeout", "3"])
        .arg(&input)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("send starts");
    // Stop the receiver once its temporary file appears.
    let began = Instant::now();
    while began.elapsed() < Duration::from_secs(10)
        && !std::fs::read_dir(&dir)
            .unwrap()
            .any(|e| e.unwrap().file_name().to_string_lossy().ends_with(".part"))
    {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    signal(target.id(), "-STOP");
    let stopped = Instant::now();
    let status = tokio::task::spawn_blocking(move || {
        let status = send.wait();
        let mut err = String::new();
        let _ = std::io::Read::read_to_string(&mut send.stderr.take().unwrap(), &mut err);
        (status, err)
    })
    .await
    .unwrap();
    let took = stopped.elapsed();
    let last = status.1.lines().last().unwrap_or("").to_string();
    println!(
        "   send ended {:.2} s after the stop ({}): {last}",
        took.as_secs_f64(),
        status.0.map_or("?".into(), |s| s.to_string())
    );
    signal(target.id(), "-KILL");
    signal(target.id(), "-CONT");
    let _ = target.wait();
    let _ = std::fs::remove_dir_all(dir);
}

/// 5. `kill -9` of the relay with two clients and a stream between them.
async fn relay_killed() {
    println!("5. kill -9 of the relay, two clients with a stream between them");
    let mut serve = Serve::start(&[]);
    let a = connect(&serve.url, "a").await;
    let b = connect(&serve.url, "b").await;
    let mut incoming = b.incoming_streams(None);
    let (opened, accepted) = tokio::join!(a.add_p2p_stream("b"), incoming.next());
    let (_duplex_a, _duplex_b) = (opened.expect("stream opens"), accepted.expect("accepted"));
    signal(serve.pid(), "-KILL");
    let killed = Instant::now();
    let _ = serve.child.wait();
    let wait = |c: P2pClient| async move {
        match tokio::time::timeout(Duration::from_secs(10), c.closed()).await {
            Ok(()) => format!("{:.0} ms", killed.elapsed().as_secs_f64() * 1e3),
            Err(_) => "not within 10 s".into(),
        }
    };
    let (ta, tb) = tokio::join!(wait(a.clone()), wait(b.clone()));
    println!("   client a saw its connection closed after {ta}, client b after {tb}");
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let clients = env_usize("LOAD_CLIENTS", 1000).max(2);
    let messages = env_usize("LOAD_MESSAGES", 1000);
    let flood = env_usize("FLOOD_MESSAGES", 100_000);
    many_to_many(clients, messages).await;
    flood_to_a_stopped_target(flood).await;
    receiver_killed_mid_stream().await;
    receiver_stopped().await;
    relay_killed().await;
}
