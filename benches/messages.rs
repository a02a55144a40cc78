//! Message rate and reply round trip between two Rust clients through an embedded relay on
//! loopback, side by side with the JavaScript anchor (`../shared/bench/js-anchor`) when present.
//!
//! Run with `cargo bench --bench messages`. Environment:
//! - `MSGS` (200000): fire-and-forget messages sent from one client to the other;
//! - `ACKS` (5000): sequential requests for the round-trip figures;
//! - `ANCHOR_MSGS`, `ANCHOR_ACKS`: the anchor's own sizes (default: `MSGS`, `ACKS`);
//! - `ANCHOR_STREAM_MB` (16): size of the anchor's stream part, which is not compared here;
//! - `ANCHOR=0`: skip the anchor.

mod common;
use common::{env_usize, unthrottled};
use serde_json::Value;
use socketio_p2p::{ClientOptions, P2pClient, Relay};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::process::Command;

/// Receiving stops when nothing new arrived for this long.
const STALL: Duration = Duration::from_secs(5);
/// The anchor run as a whole may take this long.
const ANCHOR_LIMIT: Duration = Duration::from_secs(600);

struct Rate {
    sent: usize,
    delivered: u64,
    out_of_order: u64,
    send_secs: f64,
    total_secs: f64,
    send_failure: Option<String>,
    server_errors: Vec<String>,
}

impl Rate {
    fn per_sec(&self) -> f64 {
        self.delivered as f64 / self.total_secs
    }
}

async fn message_rate(alice: &P2pClient, bob: &P2pClient, n: usize) -> Rate {
    let count = Arc::new(AtomicU64::new(0));
    let out_of_order = Arc::new(AtomicU64::new(0));
    let last_arrival = Arc::new(Mutex::new(None::<Instant>));
    {
        let (count, ooo, last) = (count.clone(), out_of_order.clone(), last_arrival.clone());
        bob.on("m", move |m| {
            let expected = count.fetch_add(1, Ordering::Relaxed);
            if m.args.first().and_then(Value::as_u64) != Some(expected) {
                ooo.fetch_add(1, Ordering::Relaxed);
            }
            *last.lock().unwrap() = Some(Instant::now());
        });
    }
    let errors = Arc::new(Mutex::new(Vec::new()));
    {
        let errors = errors.clone();
        alice.on_server_error(move |text| errors.lock().unwrap().push(text));
    }

    let start = Instant::now();
    let mut sent = 0;
    let mut send_failure = None;
    for i in 0..n {
        if let Err(e) = alice.emit_to("bob", "m", i).await {
            send_failure = Some(e.to_string());
            break;
        }
        sent += 1;
    }
    let send_secs = start.elapsed().as_secs_f64();

    let mut seen = 0;
    let mut progress = Instant::now();
    loop {
        let now = count.load(Ordering::Relaxed);
        if now >= sent as u64 || progress.elapsed() > STALL {
            break;
        }
        if now != seen {
            seen = now;
            progress = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let delivered = count.load(Ordering::Relaxed);
    let end = last_arrival.lock().unwrap().unwrap_or(start);
    let server_errors = errors.lock().unwrap().clone();
    Rate {
        sent,
        delivered,
        out_of_order: out_of_order.load(Ordering::Relaxed),
        send_secs,
        total_secs: end.duration_since(start).as_secs_f64().max(1e-9),
        send_failure,
        server_errors,
    }
}

struct Rtt {
    p50_us: f64,
    p99_us: f64,
    failures: usize,
    first_failure: Option<String>,
}

async fn round_trip(alice: &P2pClient, bob: &P2pClient, n: usize) -> Rtt {
    bob.on("q", |m| {
        let x = m.arg::<u64>(0).unwrap_or(0);
        if let Some(r) = m.reply {
            r.send(x + 1);
        }
    });
    for i in 0..100u64 {
        let _ = alice.request::<Vec<Value>>("bob", "q", i).await;
    }
    let mut lat = Vec::with_capacity(n);
    let (mut failures, mut first_failure) = (0, None);
    for i in 0..n as u64 {
        let t = Instant::now();
        match alice.request::<Vec<Value>>("bob", "q", i).await {
            Ok(v) if v.first().and_then(Value::as_u64) == Some(i + 1) => {
                lat.push(t.elapsed().as_secs_f64() * 1e6)
            }
            Ok(v) => {
                failures += 1;
                first_failure.get_or_insert(format!("wrong answer {v:?} to {i}"));
            }
            Err(e) => {
                failures += 1;
                first_failure.get_or_insert(e.to_string());
            }
        }
    }
    lat.sort_by(f64::total_cmp);
    let pick = |q: f64| {
        lat.get(((lat.len() as f64 * q) as usize).min(lat.len().saturating_sub(1)))
            .copied()
            .unwrap_or(f64::NAN)
    };
    Rtt {
        p50_us: pick(0.5),
        p99_us: pick(0.99),
        failures,
        first_failure,
    }
}

struct Anchor {
    msgs_per_s: f64,
    p50_us: f64,
    p99_us: f64,
    msgs: usize,
    acks: usize,
}

/// The numbers on the line of the anchor's output that starts with `key`, in order.
fn numbers_after(output: &str, key: &str) -> Vec<f64> {
    output
        .lines()
        .find_map(|l| l.trim().strip_prefix(key))
        .map(|rest| {
            rest.split_whitespace()
                .filter_map(|w| w.parse::<f64>().ok())
                .collect()
        })
        .unwrap_or_default()
}

async fn run_logged(cmd: &mut Command, what: &str) -> Result<String, String> {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("could not start {what}: {e}"))?;
    let out = tokio::time::timeout(ANCHOR_LIMIT, child.wait_with_output())
        .await
        .map_err(|_| format!("{what} did not finish within {ANCHOR_LIMIT:?}"))?
        .map_err(|e| format!("{what} failed: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(5).collect();
        return Err(format!(
            "{what} exited with {}: {}",
            out.status,
            tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
        ));
    }
    Ok(stdout)
}

async fn js_anchor(dir: &Path, msgs: usize, acks: usize) -> Result<Anchor, String> {
    if !dir.join("node_modules").is_dir() {
        println!("js-anchor: installing its packages (npm install) ...");
        run_logged(
            Command::new("npm")
                .args(["install", "--no-audit", "--no-fund"])
                .current_dir(dir),
            "npm install",
        )
        .await?;
    }
    let stream_mb = env_usize("ANCHOR_STREAM_MB", 16);
    println!(
        "js-anchor: running node bench.js (MSGS={msgs} ACKS={acks} STREAM_MB={stream_mb}) ..."
    );
    let out = run_logged(
        Command::new("node")
            .arg("bench.js")
            .env("MSGS", msgs.to_string())
            .env("ACKS", acks.to_string())
            .env("STREAM_MB", stream_mb.to_string())
            .current_dir(dir),
        "node bench.js",
    )
    .await?;
    let rate = numbers_after(&out, "msgs_per_s");
    let rtt = numbers_after(&out, "ack_rtt_us");
    match (rate.first(), rtt.as_slice()) {
        (Some(&r), [p50, p99, ..]) => Ok(Anchor {
            msgs_per_s: r,
            p50_us: *p50,
            p99_us: *p99,
            msgs,
            acks,
        }),
        _ => Err(format!(
            "could not find 'msgs_per_s N' and 'ack_rtt_us p50 X p99 Y' in its output: {:?}",
            out.trim()
        )),
    }
}

#[tokio::main]
async fn main() {
    let msgs = env_usize("MSGS", 200_000).max(1);
    let acks = env_usize("ACKS", 5_000).max(1);

    let relay = Relay::bind_with("127.0.0.1:0", unthrottled())
        .await
        .expect("relay binds loopback");
    let opts = ClientOptions {
        timeout: Duration::from_secs(10),
        ..ClientOptions::default()
    };
    let alice = P2pClient::connect_with(&relay.url(), "alice", opts.clone())
        .await
        .expect("alice connects");
    let bob = P2pClient::connect_with(&relay.url(), "bob", opts)
        .await
        .expect("bob connects");

    println!(
        "socketio-p2p messages bench: Rust client -> relay -> Rust client, {}",
        relay.url()
    );
    let rate = message_rate(&alice, &bob, msgs).await;
    let rtt = round_trip(&alice, &bob, acks).await;
    drop((alice, bob));
    relay.shutdown().await;

    let anchor_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/bench/js-anchor");
    let anchor = if std::env::var("ANCHOR").is_ok_and(|v| v == "0") {
        Err("skipped (ANCHOR=0)".to_string())
    } else if !anchor_dir.join("bench.js").is_file() {
        Err(format!("not found at {}", anchor_dir.display()))
    } else {
        let am = env_usize("ANCHOR_MSGS", msgs).max(1);
        let aa = env_usize("ANCHOR_ACKS", acks).max(1);
        js_anchor(&anchor_dir, am, aa).await
    };

    println!();
    println!(
        "ours: {} messages sent in {:.3} s (sender side), {} delivered in {:.3} s; {} round trips",
        rate.sent, rate.send_secs, rate.delivered, rate.total_secs, acks
    );
    if let Ok(a) = &anchor {
        println!(
            "js-anchor: MSGS={} ACKS={} (@gigasource/socket.io-p2p-plugin 1.12.1, socket.io 2, node)",
            a.msgs, a.acks
        );
    }
    println!();
    match &anchor {
        Ok(a) => {
            let ratio = rate.per_sec() / a.msgs_per_s;
            println!(
                "messages/s     ours {:>9.0}   js-anchor {:>9.0}   ratio {:>6.2}x  (target >= 5x) {}",
                rate.per_sec(),
                a.msgs_per_s,
                ratio,
                verdict(ratio >= 5.0)
            );
            let ratio = rtt.p50_us / a.p50_us;
            println!(
                "rtt p50 us     ours {:>9.0}   js-anchor {:>9.0}   ratio {:>6.2}x  (target <= 0.3x) {}",
                rtt.p50_us,
                a.p50_us,
                ratio,
                verdict(ratio <= 0.3)
            );
            println!(
                "rtt p99 us     ours {:>9.0}   js-anchor {:>9.0}   ratio {:>6.2}x",
                rtt.p99_us,
                a.p99_us,
                rtt.p99_us / a.p99_us
            );
        }
        Err(why) => {
            println!("js-anchor: not compared: {why}");
            println!("messages/s     ours {:>9.0}", rate.per_sec());
            println!("rtt p50 us     ours {:>9.0}", rtt.p50_us);
            println!("rtt p99 us     ours {:>9.0}", rtt.p99_us);
        }
    }

    let lost = rate.sent as u64 - rate.delivered.min(rate.sent as u64);
    if lost > 0 {
        println!(
            "LOST: {lost} of {} messages never arrived (waited {:?} after the last arrival)",
            rate.sent, STALL
        );
    }
    if rate.sent < msgs {
        println!(
            "SEND FAILED after {} of {msgs} messages: {}",
            rate.sent,
            rate.send_failure.as_deref().unwrap_or("?")
        );
    }
    if rate.out_of_order > 0 {
        println!(
            "OUT OF ORDER: {} messages arrived out of sequence",
            rate.out_of_order
        );
    }
    if !rate.server_errors.is_empty() {
        println!(
            "SERVER_ERROR x{} to the sender; first ones:",
            rate.server_errors.len()
        );
        for e in rate.server_errors.iter().take(5) {
            println!("  {e}");
        }
    }
    if rtt.failures > 0 {
        println!(
            "ROUND TRIP FAILURES: {} of {acks}; first: {}",
            rtt.failures,
            rtt.first_failure.as_deref().unwrap_or("?")
        );
    }
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "ok"
    } else {
        "MISSED"
    }
}
