//! What a cut link costs a client whose session the relay keeps: how long a resume takes, and
//! message throughput with one cut per second next to the same run without cuts.
//!
//! An embedded relay on loopback; `alice` sends to `bob`, whose link goes through a TCP proxy
//! that can cut it. After each resume the relay sends again what bob had not confirmed receiving
//! (`PROTOCOL.md` 5.5), so nothing should be lost: a message counts as lost only if it never
//! arrives, and the sender, which lets a window of messages be on their way, writes off what has
//! not arrived after a short wait on a working link (the cut run's rate includes that wait).
//! Run with `cargo bench --bench resume`. Environment:
//! - `CUTS` (20): cuts for the resume figures;
//! - `SECS` (5): length of each throughput run, with and without cuts;
//! - `WINDOW` (10000): messages the sender lets be on their way at once;
//! - `RECONNECT_MS` (20): the receiver's first reconnection delay (`ClientOptions`; doubling up
//!   to ten times that, with jitter).

mod common;
use common::{env_usize, unthrottled};
use serde_json::Value;
use socketio_p2p::{ClientOptions, ConnectionState, P2pClient, Relay};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

/// Bytes the relay may hold for the receiver while it is away (the default is 4 MiB).
const HOLD_BYTES: usize = 64 << 20;
/// A wait that should never run out; past it the figure is reported as missing.
const LIMIT: Duration = Duration::from_secs(20);
/// The sender writes off what is on its way when nothing arrived for this long on a working link.
const STALL: Duration = Duration::from_millis(100);
/// At the end of a run, the receiver is done when nothing arrived for this long.
const DRAIN: Duration = Duration::from_secs(2);

/// A TCP proxy on a loopback port: copies both ways, and cuts every connection it carries on
/// demand (the client sees its link drop, the relay its transport close).
struct Proxy {
    addr: SocketAddr,
    conns: Arc<Mutex<Vec<AbortHandle>>>,
    /// When it accepted its latest connection.
    accepted: Arc<Mutex<Option<Instant>>>,
    accept: AbortHandle,
}

impl Proxy {
    async fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("proxy binds");
        let addr = listener.local_addr().expect("proxy address");
        let conns: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let accepted: Arc<Mutex<Option<Instant>>> = Arc::default();
        let (c, a) = (conns.clone(), accepted.clone());
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                *a.lock().unwrap() = Some(Instant::now());
                let _ = inbound.set_nodelay(true);
                let task = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(target).await {
                        let _ = outbound.set_nodelay(true);
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                c.lock().unwrap().push(task.abort_handle());
            }
        })
        .abort_handle();
        Proxy {
            addr,
            conns,
            accepted,
            accept,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Closes every connection the proxy carries, on both sides.
    fn cut(&self) {
        for c in self.conns.lock().unwrap().drain(..) {
            c.abort();
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

/// What the receiver saw of the numbered messages `m(n)`.
#[derive(Default)]
struct Seen {
    got: Vec<bool>,
    unique: u64,
    duplicates: u64,
    last: Option<Instant>,
}

/// When each probe `p(k)` arrived.
type Probes = Arc<Mutex<Vec<(u64, Instant)>>>;

/// Records `m(n)` at `bob`, and the arrival time of each probe `p(k)`.
fn record(bob: &P2pClient) -> (Arc<Mutex<Seen>>, Probes) {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let s = seen.clone();
    bob.on("m", move |m| {
        let Some(n) = m.args.first().and_then(Value::as_u64) else {
            return;
        };
        let mut s = s.lock().unwrap();
        let n = n as usize;
        if s.got.len() <= n {
            s.got.resize(n + 1, false);
        }
        if s.got[n] {
            s.duplicates += 1;
        } else {
            s.got[n] = true;
            s.unique += 1;
        }
        s.last = Some(Instant::now());
    });
    let probes = Arc::new(Mutex::new(Vec::new()));
    let p = probes.clone();
    bob.on("p", move |m| {
        if let Some(k) = m.args.first().and_then(Value::as_u64) {
            p.lock().unwrap().push((k, Instant::now()));
        }
    });
    (seen, probes)
}

/// Waits until `bob` is connected (bounded).
async fn connected(bob: &P2pClient) -> bool {
    let mut state = bob.state();
    let up = tokio::time::timeout(LIMIT, state.wait_for(|s| *s == ConnectionState::Connected))
        .await
        .is_ok();
    up
}

struct Resumes {
    /// Cut → the relay sees the link drop.
    seen_down_ms: Vec<f64>,
    /// Cut → the first message sent after it arrives.
    resume_ms: Vec<f64>,
    /// The receiver's new connection accepted → that message arrives: the resume itself, without
    /// the client's reconnection delay.
    handshake_ms: Vec<f64>,
    missing: usize,
}

/// Cuts bob's link `cuts` times; each time alice sends a probe once the relay has seen the link
/// drop, and the time from the cut to its arrival is one resume.
async fn resumes(
    relay: &Relay,
    proxy: &Proxy,
    alice: &P2pClient,
    bob: &P2pClient,
    probes: &Mutex<Vec<(u64, Instant)>>,
    cuts: usize,
) -> Resumes {
    let mut r = Resumes {
        seen_down_ms: Vec::new(),
        resume_ms: Vec::new(),
        handshake_ms: Vec::new(),
        missing: 0,
    };
    for k in 0..cuts as u64 {
        if !connected(bob).await {
            r.missing += 1;
            continue;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        let cut = Instant::now();
        proxy.cut();
        let server = relay.server();
        while server.is_connected("bob") && cut.elapsed() < LIMIT {
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        r.seen_down_ms.push(cut.elapsed().as_secs_f64() * 1e3);
        if alice.emit_to("bob", "p", (k,)).await.is_err() {
            r.missing += 1;
            continue;
        }
        let arrived = loop {
            if let Some(&(_, at)) = probes.lock().unwrap().iter().find(|(n, _)| *n == k) {
                break Some(at);
            }
            if cut.elapsed() > LIMIT {
                break None;
            }
            tokio::time::sleep(Duration::from_micros(200)).await;
        };
        match arrived {
            Some(at) => {
                r.resume_ms.push(at.duration_since(cut).as_secs_f64() * 1e3);
                if let Some(back) = proxy.accepted.lock().unwrap().filter(|t| *t > cut) {
                    r.handshake_ms
                        .push(at.duration_since(back).as_secs_f64() * 1e3);
                }
            }
            None => r.missing += 1,
        }
    }
    r
}

struct Throughput {
    sent: u64,
    delivered: u64,
    /// Runs of consecutive numbers among those lost.
    lost_runs: usize,
    duplicates: u64,
    cuts: usize,
    secs: f64,
    send_failure: Option<String>,
}

impl Throughput {
    fn per_sec(&self) -> f64 {
        self.delivered as f64 / self.secs
    }

    fn lost(&self) -> u64 {
        self.sent - self.delivered.min(self.sent)
    }
}

/// Alice sends `m(n)` to bob for `secs` seconds, with at most `window` on their way; with
/// `proxy`, bob's link is cut once a second. Messages are numbered from `first`.
async fn throughput(
    alice: &P2pClient,
    bob: &P2pClient,
    seen: &Mutex<Seen>,
    proxy: Option<&Proxy>,
    first: u64,
    secs: f64,
    window: u64,
) -> Throughput {
    let (before, dup_before) = {
        let s = seen.lock().unwrap();
        (s.unique, s.duplicates)
    };
    let delivered = || seen.lock().unwrap().unique - before;
    let start = Instant::now();
    let until = start + Duration::from_secs_f64(secs);
    let mut next_cut = start + Duration::from_secs(1);
    let (mut sent, mut cuts, mut written_off, mut send_failure) = (0u64, 0, 0u64, None);
    let mut progress = (0u64, Instant::now());
    while Instant::now() < until {
        if let Some(p) = proxy {
            if Instant::now() >= next_cut {
                p.cut();
                cuts += 1;
                next_cut += Duration::from_secs(1);
            }
        }
        let d = delivered();
        if d != progress.0 {
            progress = (d, Instant::now());
        }
        if sent - d - written_off.min(sent - d) >= window {
            // What was on its way when the link dropped may never come: written off after a
            // while without arrivals on a working link, and counted as lost below.
            if progress.1.elapsed() > STALL && *bob.state().borrow() == ConnectionState::Connected {
                written_off = sent - d;
            }
            tokio::task::yield_now().await;
            continue;
        }
        if let Err(e) = alice.emit_to("bob", "m", (first + sent,)).await {
            send_failure = Some(e.to_string());
            break;
        }
        sent += 1;
    }
    // Everything sent has arrived, or nothing more arrived for a while on a working link.
    let mut last = (delivered(), Instant::now());
    loop {
        let d = delivered();
        if d >= sent {
            break;
        }
        if d != last.0 {
            last = (d, Instant::now());
        } else if last.1.elapsed() > DRAIN || start.elapsed() > LIMIT * 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let s = seen.lock().unwrap();
    let end = s.last.unwrap_or(start).max(start);
    let got = |n: u64| s.got.get(n as usize).copied().unwrap_or(false);
    let lost_runs = (first..first + sent)
        .filter(|&n| !got(n) && (n == first || got(n - 1)))
        .count();
    Throughput {
        sent,
        delivered: s.unique - before,
        lost_runs,
        duplicates: s.duplicates - dup_before,
        cuts,
        secs: end.duration_since(start).as_secs_f64().max(1e-9),
        send_failure,
    }
}

/// The median and the largest of `v`.
fn median_max(v: &mut [f64]) -> (f64, f64) {
    if v.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[v.len() - 1])
}

#[tokio::main]
async fn main() {
    let cuts = env_usize("CUTS", 20);
    let secs = env_usize("SECS", 5).max(1) as f64;
    let window = env_usize("WINDOW", 10_000).max(1) as u64;
    let reconnect = Duration::from_millis(env_usize("RECONNECT_MS", 20) as u64);

    let mut opts = unthrottled();
    opts.server.resume_hold_bytes = HOLD_BYTES;
    let relay = Relay::bind_with("127.0.0.1:0", opts)
        .await
        .expect("relay binds loopback");
    let proxy = Proxy::start(relay.local_addr()).await;
    let client_opts = ClientOptions {
        timeout: Duration::from_secs(10),
        ..ClientOptions::default()
    };
    let alice = P2pClient::connect_with(&relay.url(), "alice", client_opts.clone())
        .await
        .expect("alice connects");
    let bob = P2pClient::connect_with(
        &proxy.url(),
        "bob",
        client_opts.with_reconnect_delay(reconnect, reconnect * 10),
    )
    .await
    .expect("bob connects");
    let (seen, probes) = record(&bob);
    let errors = Arc::new(AtomicU64::new(0));
    let first_error = Arc::new(Mutex::new(None::<String>));
    {
        let (errors, first_error) = (errors.clone(), first_error.clone());
        alice.on_server_error(move |text| {
            errors.fetch_add(1, Ordering::Relaxed);
            first_error.lock().unwrap().get_or_insert(text);
        });
    }

    println!(
        "socketio-p2p resume bench: alice -> relay -> proxy -> bob, {} (bob reconnects after \
         {reconnect:?}, doubling, with jitter; relay holds up to {} MiB for him)",
        relay.url(),
        HOLD_BYTES >> 20
    );
    let mut r = resumes(&relay, &proxy, &alice, &bob, &probes, cuts).await;
    let _ = connected(&bob).await;
    let plain = throughput(&alice, &bob, &seen, None, 0, secs, window).await;
    let _ = connected(&bob).await;
    let cut = throughput(&alice, &bob, &seen, Some(&proxy), plain.sent, secs, window).await;
    drop((alice, bob, proxy));
    relay.shutdown().await;

    println!();
    let (down_med, down_max) = median_max(&mut r.seen_down_ms);
    let (med, max) = median_max(&mut r.resume_ms);
    println!(
        "resume, {} cuts: cut -> first message after it arrives   median {med:>7.1} ms   max {max:>7.1} ms",
        r.resume_ms.len()
    );
    println!(
        "        of which cut -> relay sees the link drop        median {down_med:>7.1} ms   max {down_max:>7.1} ms"
    );
    let (hs_med, hs_max) = median_max(&mut r.handshake_ms);
    println!(
        "        of which reconnected -> it arrives               median {hs_med:>7.1} ms   max {hs_max:>7.1} ms"
    );
    if r.missing > 0 {
        println!("MISSING: {} of {cuts} probes never arrived", r.missing);
    }
    println!(
        "messages/s, {secs:.0} s each, window {window}:   no cuts {:>9.0}   one cut/s ({} cuts) {:>9.0}   ratio {:>5.2}x",
        plain.per_sec(),
        cut.cuts,
        cut.per_sec(),
        cut.per_sec() / plain.per_sec()
    );
    for (name, t) in [("no cuts", &plain), ("one cut/s", &cut)] {
        println!(
            "  {name:<10} sent {:>9}   delivered {:>9}   lost {:>6} (in {} runs)   duplicated {:>6}",
            t.sent,
            t.delivered,
            t.lost(),
            t.lost_runs,
            t.duplicates
        );
        if let Some(e) = &t.send_failure {
            println!("  {name}: SEND FAILED: {e}");
        }
    }
    let errors = errors.load(Ordering::Relaxed);
    if errors > 0 {
        println!(
            "SERVER_ERROR x{errors} to the sender; first: {}",
            first_error.lock().unwrap().as_deref().unwrap_or("?")
        );
    }
    if plain.lost() + cut.lost() > 0 || plain.duplicates + cut.duplicates > 0 {
        println!(
            "LOST or DUPLICATED messages: see above (what the relay had already passed to the \
             dropped connection is not held; PROTOCOL.md 5.5)"
        );
    }
}
