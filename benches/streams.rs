//! Stream benchmark: prints figures and ratios against baselines measured in the same run.
//!
//! 1. One stream, `STREAM_MB` (256) MiB in 64 KiB writes, client -> relay -> client, against:
//!    the same bytes as bare Socket.IO binary events relayed by a minimal socketioxide server
//!    between two rust_socketio clients (no P2P layer, no flow control); a raw TCP relay (tokio
//!    `copy` through a middle task); and the JavaScript anchor (`../shared/bench/js-anchor`).
//! 2. `STREAMS` (256) concurrent streams of `EACH_MB` (4) MiB: aggregate MB/s and fairness.
//! 3. `THROTTLED_MB` (1024) MiB to a reader throttled to `THROTTLE_MBPS` (20) MB/s, with sender,
//!    relay and receiver in processes of their own: peak RSS of each against its idle RSS.
//! 4. Relay CPU seconds per GiB relayed, `CPU_MB` (256) MiB through one stream: our relay in a
//!    process of its own (`/proc/<pid>/stat`), next to the raw TCP relay on a thread of its own
//!    (`/proc/thread-self/schedstat`).
//! 5. One stream of `CUTS_MB` (4096) MiB, client -> relay -> client, each client reaching the
//!    relay through a TCP proxy of its own (`common::proxy`): once without cuts, then with the
//!    proxies cutting a link once a second, the sender's and the receiver's in turn. The clients
//!    try to reconnect after 50 ms (200 ms at most), the relay keeps sessions for its default grace period. Printed: MB/s
//!    of both runs and their ratio, the number of cuts, and per cut the time until the client was
//!    connected again and until the receiver read new bytes (median, max). The receiver checks
//!    every byte against a pattern of the stream offset. The size is large enough for the run with
//!    cuts to last several seconds.
//!
//! Run with `cargo bench --bench streams`; `SKIP_THROTTLED=1` leaves out part 3 (about a minute),
//! `SKIP_CUTS=1` part 5.

mod common;
use bytes::Bytes;
use common::proxy::CutProxy;
use common::{env_usize, proc_status_kib, Serve};
use futures::FutureExt;
use rust_socketio::asynchronous::ClientBuilder;
use rust_socketio::{Payload, TransportType};
use socketio_p2p::{ClientOptions, ConnectionState, P2pClient, Relay, StreamOptions};
use socketioxide::extract::{Data, SocketRef};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const MB: f64 = 1024.0 * 1024.0;
const CHUNK: usize = 64 * 1024;

/// Payload bytes for every measurement: a pattern without 0x1E, because rust_engineio 0.6 splits
/// incoming binary WebSocket messages at that byte and the bare Socket.IO baseline would break.
fn chunk() -> Vec<u8> {
    (0..CHUNK)
        .map(|i| {
            let b = (i * 31 % 251) as u8;
            if b == 0x1e {
                0x1f
            } else {
                b
            }
        })
        .collect()
}

/// CPU seconds the calling thread has used so far.
fn thread_cpu_secs() -> f64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(f64::NAN, |ns| ns as f64 / 1e9)
}

/// Our relay in a child process: CPU seconds per GiB it spends relaying one stream.
async fn p2p_relay_cpu_per_gib(total: usize) -> f64 {
    let relay = Serve::start(&[]);
    let a = client(&relay.url, "alice").await;
    let b = client(&relay.url, "bob").await;
    let mut incoming = b.incoming_streams(None);
    let reader = tokio::spawn(async move {
        let mut s = incoming.next().await.unwrap();
        count_to_eof(&mut s).await
    });
    let mut w = a.add_p2p_stream("bob").await.unwrap();
    let data = chunk();
    let cpu0 = relay.cpu_secs();
    write_all_then_end(&mut w, &data, total).await;
    let got = reader.await.unwrap();
    let cpu = relay.cpu_secs() - cpu0;
    assert_eq!(got, total, "every byte arrived");
    drop(w);
    cpu / (total as f64 / (1024.0 * MB))
}

/// The raw TCP relay on a thread and runtime of its own: CPU seconds per GiB it spends.
async fn raw_tcp_relay_cpu_per_gib(total: usize) -> f64 {
    let front = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let back = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (fa, ba) = (front.local_addr().unwrap(), back.local_addr().unwrap());
    let relay = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            front.set_nonblocking(true).unwrap();
            let front = tokio::net::TcpListener::from_std(front).unwrap();
            let (mut inbound, _) = front.accept().await.unwrap();
            let mut outbound = tokio::net::TcpStream::connect(ba).await.unwrap();
            let cpu0 = thread_cpu_secs();
            tokio::io::copy(&mut inbound, &mut outbound).await.unwrap();
            outbound.shutdown().await.unwrap();
            thread_cpu_secs() - cpu0
        })
    });
    let reader = tokio::spawn(async move {
        let (mut s, _) = back.accept().await.unwrap();
        count_to_eof(&mut s).await
    });
    let mut w = tokio::net::TcpStream::connect(fa).await.unwrap();
    write_all_then_end(&mut w, &chunk(), total).await;
    assert_eq!(reader.await.unwrap(), total);
    let cpu = tokio::task::spawn_blocking(move || relay.join().unwrap())
        .await
        .unwrap();
    cpu / (total as f64 / (1024.0 * MB))
}

/// Writes `data` over and over until `total` bytes are out, then ends the write direction.
async fn write_all_then_end(w: &mut (impl AsyncWriteExt + Unpin), data: &[u8], total: usize) {
    let mut sent = 0;
    while sent < total {
        w.write_all(data).await.unwrap();
        sent += data.len();
    }
    w.shutdown().await.unwrap();
}

/// Reads to end-of-stream, counting the bytes.
async fn count_to_eof(s: &mut (impl tokio::io::AsyncRead + Unpin)) -> usize {
    let mut buf = vec![0u8; 256 * 1024];
    let mut got = 0usize;
    loop {
        let n = s.read(&mut buf).await.unwrap();
        if n == 0 {
            return got;
        }
        got += n;
    }
}

async fn client(url: &str, id: &str) -> P2pClient {
    common::connect(url, id, Duration::from_secs(30)).await
}

/// One P2P stream of `total` bytes; returns MB/s.
async fn p2p_one_stream(total: usize) -> f64 {
    let relay = Relay::bind("127.0.0.1:0").await.unwrap();
    let a = client(&relay.url(), "alice").await;
    let b = client(&relay.url(), "bob").await;
    let mut incoming = b.incoming_streams(None);
    let reader = tokio::spawn(async move {
        let mut s = incoming.next().await.unwrap();
        count_to_eof(&mut s).await
    });
    let mut w = a.add_p2p_stream("bob").await.unwrap();
    let data = chunk();
    let t0 = Instant::now();
    write_all_then_end(&mut w, &data, total).await;
    let got = reader.await.unwrap();
    let secs = t0.elapsed().as_secs_f64();
    assert_eq!(got, total, "every byte arrived");
    drop(w);
    total as f64 / MB / secs
}

/// The same bytes as bare Socket.IO binary events through a minimal socketioxide relay.
async fn bare_socketio(total: usize) -> f64 {
    let (layer, io) = socketioxide::SocketIo::builder()
        .max_buffer_size(1 << 16)
        .max_payload(1 << 24)
        .build_layer();
    io.ns("/", async |s: SocketRef| {
        s.on("chunk", async |s: SocketRef, Data::<Bytes>(b)| {
            let _ = s.broadcast().emit("chunk", &b).await;
        });
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, axum::Router::new().layer(layer)).await;
    });
    let got = Arc::new(AtomicU64::new(0));
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
    let done_tx = Arc::new(std::sync::Mutex::new(Some(done_tx)));
    let g = got.clone();
    let _receiver = ClientBuilder::new(url.clone())
        .transport_type(TransportType::Websocket)
        .on("chunk", move |p, _| {
            if let Payload::Binary(b) = p {
                let n = g.fetch_add(b.len() as u64, Ordering::Relaxed) + b.len() as u64;
                if n >= total as u64 {
                    if let Some(tx) = done_tx.lock().unwrap().take() {
                        let _ = tx.send(());
                    }
                }
            }
            futures::future::ready(()).boxed()
        })
        .connect()
        .await
        .unwrap();
    let sender = ClientBuilder::new(url)
        .transport_type(TransportType::Websocket)
        .connect()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let data = Bytes::from(chunk());
    let t0 = Instant::now();
    let mut sent = 0;
    while sent < total {
        sender
            .emit("chunk", Payload::Binary(data.clone()))
            .await
            .unwrap();
        sent += data.len();
    }
    let ok = tokio::time::timeout(Duration::from_secs(120), done_rx).await;
    let secs = t0.elapsed().as_secs_f64();
    server.abort();
    if ok.is_err() {
        println!(
            "  (bare Socket.IO relay delivered {} of {total} bytes: no flow control)",
            got.load(Ordering::Relaxed)
        );
    }
    got.load(Ordering::Relaxed) as f64 / MB / secs
}

/// A raw TCP relay: the middle task copies one socket into the other.
async fn raw_tcp(total: usize) -> f64 {
    let front = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let back = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (fa, ba) = (front.local_addr().unwrap(), back.local_addr().unwrap());
    let relay = tokio::spawn(async move {
        let (mut inbound, _) = front.accept().await.unwrap();
        let mut outbound = tokio::net::TcpStream::connect(ba).await.unwrap();
        tokio::io::copy(&mut inbound, &mut outbound).await.unwrap();
        outbound.shutdown().await.unwrap();
    });
    let reader = tokio::spawn(async move {
        let (mut s, _) = back.accept().await.unwrap();
        count_to_eof(&mut s).await
    });
    let mut w = tokio::net::TcpStream::connect(fa).await.unwrap();
    let data = chunk();
    let t0 = Instant::now();
    write_all_then_end(&mut w, &data, total).await;
    let got = reader.await.unwrap();
    let secs = t0.elapsed().as_secs_f64();
    relay.await.unwrap();
    assert_eq!(got, total);
    total as f64 / MB / secs
}

/// Many concurrent streams; returns (aggregate MB/s, slowest stream's rate / mean rate).
async fn many_streams(n: usize, each: usize) -> (f64, f64) {
    let relay = Relay::bind("127.0.0.1:0").await.unwrap();
    let a = client(&relay.url(), "alice").await;
    let b = client(&relay.url(), "bob").await;
    let mut incoming = b.incoming_streams(None);
    let readers = tokio::spawn(async move {
        let mut tasks = Vec::new();
        for _ in 0..n {
            let mut s = incoming.next().await.unwrap();
            tasks.push(tokio::spawn(async move { count_to_eof(&mut s).await }));
        }
        let mut total = 0;
        for t in tasks {
            total += t.await.unwrap();
        }
        total
    });
    let mut streams = Vec::new();
    for _ in 0..n {
        streams.push(
            a.add_p2p_stream_with("bob", StreamOptions::default())
                .await
                .unwrap(),
        );
    }
    let data = Arc::new(chunk());
    let t0 = Instant::now();
    let mut writers = Vec::new();
    for mut s in streams {
        let data = data.clone();
        writers.push(tokio::spawn(async move {
            let start = Instant::now();
            write_all_then_end(&mut s, &data, each).await;
            let secs = start.elapsed().as_secs_f64();
            // Keep the stream open until the reader saw EOF.
            let mut end = [0u8; 1];
            let _ = s.read(&mut end).await;
            secs
        }));
    }
    let mut times = Vec::new();
    let got = readers.await.unwrap();
    let secs = t0.elapsed().as_secs_f64();
    for w in writers {
        times.push(w.await.unwrap());
    }
    assert_eq!(got, n * each, "every byte of every stream arrived");
    let rates: Vec<f64> = times.iter().map(|t| each as f64 / t).collect();
    let mean = rates.iter().sum::<f64>() / rates.len() as f64;
    let slowest = rates.iter().cloned().fold(f64::INFINITY, f64::min);
    ((n * each) as f64 / MB / secs, slowest / mean)
}

/// Part 3's roles, run as child processes of this program.
async fn role(role: &str, url: &str, total: usize, mbps: f64) {
    let me = std::process::id();
    match role {
        "sender" => {
            let a = client(url, "throttle-sender").await;
            println!("idle {}", proc_status_kib(me, "VmRSS:"));
            let mut w = loop {
                match a.add_p2p_stream("throttle-receiver").await {
                    Ok(w) => break w,
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            };
            let data = chunk();
            write_all_then_end(&mut w, &data, total).await;
            let mut end = [0u8; 1];
            let _ = w.read(&mut end).await;
            println!("peak {}", proc_status_kib(me, "VmHWM:"));
        }
        "receiver" => {
            let b = client(url, "throttle-receiver").await;
            let mut incoming = b.incoming_streams(None);
            println!("idle {}", proc_status_kib(me, "VmRSS:"));
            let mut s = incoming.next().await.unwrap();
            let mut buf = vec![0u8; 64 * 1024];
            let mut got = 0usize;
            let t0 = Instant::now();
            loop {
                let n = s.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                got += n;
                let due = Duration::from_secs_f64(got as f64 / (mbps * 1e6));
                if let Some(wait) = due.checked_sub(t0.elapsed()) {
                    tokio::time::sleep(wait).await;
                }
            }
            assert_eq!(got, total);
            println!("rate {:.1}", got as f64 / 1e6 / t0.elapsed().as_secs_f64());
            println!("peak {}", proc_status_kib(me, "VmHWM:"));
        }
        other => panic!("unknown role {other}"),
    }
}

fn parse_line(out: &str, key: &str) -> f64 {
    out.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(f64::NAN)
}

async fn throttled(total: usize, mbps: f64) {
    let relay = Serve::start(&[]);
    let url = relay.url.clone();
    let relay_idle = relay.rss_kib();
    let exe = std::env::current_exe().unwrap();
    let spawn = |r: &str| {
        tokio::process::Command::new(&exe)
            .args(["--role", r, &url, &total.to_string(), &mbps.to_string()])
            .stdout(Stdio::piped())
            .spawn()
            .expect("role starts")
    };
    let receiver = spawn("receiver");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sender = spawn("sender");
    let mut relay_peak_during = 0;
    let watch = async {
        loop {
            relay_peak_during = relay_peak_during.max(relay.rss_kib());
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let both = async {
        let s = sender.wait_with_output().await.unwrap();
        let r = receiver.wait_with_output().await.unwrap();
        (s, r)
    };
    let (s, r) = tokio::select! {
        out = both => out,
        _ = watch => unreachable!(),
    };
    let relay_peak = relay.peak_rss_kib();
    drop(relay);
    let (so, ro) = (
        String::from_utf8_lossy(&s.stdout).to_string(),
        String::from_utf8_lossy(&r.stdout).to_string(),
    );
    if !s.status.success() || !r.status.success() {
        println!("  throttled run failed: sender {so:?} receiver {ro:?}");
        return;
    }
    let window_mib = socketio_p2p::stream::DEFAULT_WINDOW as f64 / MB;
    println!(
        "throttled reader       {:.0} MiB at {:.1} MB/s (asked {mbps} MB/s); window {window_mib:.1} MiB",
        total as f64 / MB,
        parse_line(&ro, "rate")
    );
    for (name, idle, peak) in [
        ("sender", parse_line(&so, "idle"), parse_line(&so, "peak")),
        ("relay", relay_idle as f64, relay_peak as f64),
        ("receiver", parse_line(&ro, "idle"), parse_line(&ro, "peak")),
    ] {
        println!(
            "  peak RSS {name:<9} {:>7.1} MiB   idle {:>6.1} MiB   above idle {:>6.1} MiB",
            peak / 1024.0,
            idle / 1024.0,
            (peak - idle) / 1024.0
        );
    }
}

/// The byte at `offset` of part 5's stream: eight bytes of a mixed 64-bit word per word index,
/// so a byte lost, repeated or moved anywhere in the stream shows as a mismatch.
fn fill_pattern(offset: u64, buf: &mut [u8]) {
    let word = |w: u64| {
        let mut x = w.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        x ^= x >> 31;
        x = x.wrapping_mul(0xD6E8_FEB8_6659_FD93);
        (x ^ (x >> 32)).to_le_bytes()
    };
    // The bytes up to the next word boundary, then whole words, then what is left.
    let skip = (offset % 8) as usize;
    let head = ((8 - skip) % 8).min(buf.len());
    buf[..head].copy_from_slice(&word(offset / 8)[skip..skip + head]);
    let mut w = (offset + head as u64) / 8;
    let mut words = buf[head..].chunks_exact_mut(8);
    for out in &mut words {
        out.copy_from_slice(&word(w));
        w += 1;
    }
    let tail = words.into_remainder();
    let n = tail.len();
    tail.copy_from_slice(&word(w)[..n]);
}

/// What one run of part 5 measured.
struct CutRun {
    mbps: f64,
    /// Bytes the receiver read and found equal to the pattern, to end-of-stream.
    verified: u64,
    /// Per cut: which link, time from the cut until the client was connected again, and until the
    /// receiver read the first bytes after that.
    cuts: Vec<(&'static str, Duration, Duration)>,
}

/// Part 5: one stream of `total` bytes, sender and receiver each reaching the relay through a
/// proxy of its own; with `every`, a cut every `every`, alternating the sender's and the
/// receiver's link. Fails (rather than hangs) when the stream stops or a byte is wrong.
async fn stream_through_cuts(total: u64, every: Option<Duration>) -> Result<CutRun, String> {
    const STUCK: Duration = Duration::from_secs(30);
    let relay = Relay::bind("127.0.0.1:0").await.unwrap();
    let (sp, rp) = (
        CutProxy::start(relay.local_addr()).await,
        CutProxy::start(relay.local_addr()).await,
    );
    let opts = || {
        ClientOptions {
            timeout: Duration::from_secs(30),
            ..ClientOptions::default()
        }
        .with_reconnect_delay(Duration::from_millis(50), Duration::from_millis(200))
    };
    let sender = P2pClient::connect_with(&sp.url(), "cut-sender", opts())
        .await
        .expect("the sender connects");
    let receiver = P2pClient::connect_with(&rp.url(), "cut-receiver", opts())
        .await
        .expect("the receiver connects");
    let mut incoming = receiver.incoming_streams(None);
    let mut w = sender.add_p2p_stream("cut-receiver").await.unwrap();
    let mut r = incoming.next().await.unwrap();

    // The reader publishes how far it got and when it last read.
    let t0 = Instant::now();
    let (progress, seen) = tokio::sync::watch::channel((0u64, t0));
    let reading = tokio::spawn(async move {
        let mut buf = vec![0u8; 256 * 1024];
        let mut want = vec![0u8; 256 * 1024];
        let mut at = 0u64;
        loop {
            let n = r.read(&mut buf).await.map_err(|e| format!("read: {e}"))?;
            if n == 0 {
                return Ok::<_, String>((at, Instant::now()));
            }
            fill_pattern(at, &mut want[..n]);
            if buf[..n] != want[..n] {
                let i = buf[..n].iter().zip(&want[..n]).position(|(a, b)| a != b);
                return Err(format!(
                    "wrong byte at offset {}",
                    at + i.unwrap_or(0) as u64
                ));
            }
            at += n as u64;
            progress.send_replace((at, Instant::now()));
        }
    });
    let writing = tokio::spawn(async move {
        let mut buf = vec![0u8; CHUNK];
        let mut at = 0u64;
        while at < total {
            let n = (total - at).min(CHUNK as u64) as usize;
            fill_pattern(at, &mut buf[..n]);
            w.write_all(&buf[..n]).await?;
            at += n as u64;
        }
        w.shutdown().await?;
        Ok::<_, std::io::Error>(w)
    });

    let mut cuts = Vec::new();
    if let Some(every) = every {
        let mut seen = seen.clone();
        let mut next = t0 + every;
        loop {
            // Until the next cut is due, or the reader is done.
            tokio::time::sleep_until(next.into()).await;
            if reading.is_finished() || seen.borrow().0 >= total {
                break;
            }
            let (link, proxy, client) = if cuts.len() % 2 == 0 {
                ("sender", &sp, &sender)
            } else {
                ("receiver", &rp, &receiver)
            };
            let mut state = client.state();
            state.borrow_and_update();
            let cut_at = Instant::now();
            if proxy.cut() == 0 {
                return Err(format!("the {link}'s proxy carried no connection to cut"));
            }
            // Back: the client's state moves and ends at Connected.
            let back = tokio::time::timeout(STUCK, async {
                loop {
                    state.changed().await.map_err(|_| "client dropped")?;
                    match *state.borrow_and_update() {
                        ConnectionState::Connected => return Ok(Instant::now()),
                        ConnectionState::Closed => return Err("client closed"),
                        ConnectionState::Reconnecting => {}
                    }
                }
            })
            .await
            .map_err(|_| format!("the {link} was not connected again within {STUCK:?}"))?
            .map_err(|e| format!("the {link}: {e}"))?;
            // Flowing: the receiver reads something after the client is back.
            let flowing = tokio::time::timeout(STUCK, async {
                loop {
                    let (at, when) = *seen.borrow_and_update();
                    if when > back || at >= total {
                        return Some(when.max(back));
                    }
                    if seen.changed().await.is_err() {
                        return None;
                    }
                }
            })
            .await
            .map_err(|_| {
                format!(
                    "the receiver read nothing within {STUCK:?} after the {link} came back, at {} of {total} bytes",
                    seen.borrow().0
                )
            })?;
            let Some(flowing) = flowing else {
                break; // The reader ended; its outcome says how.
            };
            cuts.push((link, back - cut_at, flowing - cut_at));
            next = (next + every).max(Instant::now());
        }
    }
    let (verified, end) = tokio::time::timeout(STUCK * 4, reading)
        .await
        .map_err(|_| "the reader did not finish".to_string())?
        .map_err(|e| e.to_string())??;
    let secs = (end - t0).as_secs_f64();
    let w = tokio::time::timeout(STUCK, writing)
        .await
        .map_err(|_| "the writer did not finish".to_string())?
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("write: {e}"))?;
    drop(w);
    if verified != total {
        return Err(format!("the receiver read {verified} of {total} bytes"));
    }
    Ok(CutRun {
        mbps: total as f64 / MB / secs,
        verified,
        cuts,
    })
}

/// Median and maximum, in milliseconds.
fn median_max_ms(mut v: Vec<Duration>) -> (f64, f64) {
    if v.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let mid = v.len() / 2;
    let median = if v.len() % 2 == 1 {
        ms(v[mid])
    } else {
        (ms(v[mid - 1]) + ms(v[mid])) / 2.0
    };
    (median, ms(v[v.len() - 1]))
}

/// Part 5 with its figures printed; a failed run is printed and makes the program fail.
async fn cuts_part(mb: usize) {
    let total = (mb as u64) << 20;
    println!("== one stream of {mb} MiB, each client behind a TCP proxy: no cuts, then a cut a second ==");
    let plain = stream_through_cuts(total, None).await;
    let cut = stream_through_cuts(total, Some(Duration::from_secs(1))).await;
    let (plain, cut) = match (plain, cut) {
        (Ok(p), Ok(c)) => (p, c),
        (p, c) => {
            println!("  no cuts: {:?}", p.as_ref().map(|r| r.mbps));
            println!("  cut once a second: {:?}", c.as_ref().map(|r| r.mbps));
            panic!("the stream through cut links failed");
        }
    };
    let check = |r: &CutRun| format!("{} of {total} bytes equal to the pattern", r.verified);
    println!(
        "no cuts                {:>8.1} MB/s   {}",
        plain.mbps,
        check(&plain)
    );
    println!(
        "a cut every second     {:>8.1} MB/s   {}   with cuts / without {:.2}",
        cut.mbps,
        check(&cut),
        cut.mbps / plain.mbps
    );
    let of = |link: &str| cut.cuts.iter().filter(|c| c.0 == link).count();
    println!(
        "cuts                   {:>8}        sender's link {}, receiver's link {}",
        cut.cuts.len(),
        of("sender"),
        of("receiver")
    );
    let (m, x) = median_max_ms(cut.cuts.iter().map(|c| c.1).collect());
    println!(
        "cut -> connected again  median {m:>7.1} ms   max {x:>7.1} ms   (first reconnect wait: at most 50 ms)"
    );
    let (m, x) = median_max_ms(cut.cuts.iter().map(|c| c.2).collect());
    println!("cut -> new bytes read   median {m:>7.1} ms   max {x:>7.1} ms   (at the receiver)");
}

/// Runs the JavaScript anchor when present; returns its stream MB/s.
fn js_anchor(stream_mb: usize) -> Option<f64> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/bench/js-anchor");
    if !dir.join("bench.js").exists() {
        println!("js-anchor: not present at {}", dir.display());
        return None;
    }
    if !dir.join("node_modules").exists() {
        let ok = std::process::Command::new("npm")
            .args(["install", "--no-audit", "--no-fund"])
            .current_dir(&dir)
            .stdout(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !ok {
            println!("js-anchor: npm install failed");
            return None;
        }
    }
    let out = std::process::Command::new("node")
        .arg("bench.js")
        .env("STREAM_MB", stream_mb.to_string())
        .env("MSGS", "2000")
        .env("ACKS", "200")
        .current_dir(&dir)
        .output();
    match out {
        Ok(o) if o.status.success() => {
            let text = String::from_utf8_lossy(&o.stdout);
            let v = parse_line(&text, "stream_MBps");
            let v = if v.is_nan() {
                text.lines()
                    .find(|l| l.starts_with("stream_MBps"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(f64::NAN)
            } else {
                v
            };
            Some(v)
        }
        Ok(o) => {
            println!("js-anchor: failed: {}", String::from_utf8_lossy(&o.stderr));
            None
        }
        Err(e) => {
            println!("js-anchor: cannot run node: {e}");
            None
        }
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--role") {
        let (r, url, total, mbps) = (&args[i + 1], &args[i + 2], &args[i + 3], &args[i + 4]);
        role(r, url, total.parse().unwrap(), mbps.parse().unwrap()).await;
        return;
    }
    let stream_mb = env_usize("STREAM_MB", 256);
    let total = stream_mb << 20;
    println!("== one stream, {stream_mb} MiB in 64 KiB writes, client -> relay -> client ==");
    let ours = p2p_one_stream(total).await;
    let bare = bare_socketio(total).await;
    let tcp = raw_tcp(total).await;
    let anchor_mb = env_usize("ANCHOR_STREAM_MB", 64);
    let anchor = js_anchor(anchor_mb);
    println!("socketio-p2p stream    {ours:>8.1} MB/s");
    println!(
        "bare Socket.IO relay   {bare:>8.1} MB/s   ours/bare {:.2} (target >= 0.70)",
        ours / bare
    );
    println!(
        "raw TCP relay          {tcp:>8.1} MB/s   ours/tcp  {:.3}",
        ours / tcp
    );
    match anchor {
        Some(a) => println!(
            "js-anchor stream       {a:>8.1} MB/s   ours/anchor {:.1}x (target >= 20x; anchor moved {anchor_mb} MiB)",
            ours / a
        ),
        None => println!("js-anchor stream       (not measured)"),
    }

    let cpu_mb = env_usize("CPU_MB", 256);
    println!("== relay CPU per GiB relayed, one stream of {cpu_mb} MiB ==");
    let ours_cpu = p2p_relay_cpu_per_gib(cpu_mb << 20).await;
    let tcp_cpu = raw_tcp_relay_cpu_per_gib(cpu_mb << 20).await;
    println!("socketio-p2p relay     {ours_cpu:>8.2} CPU s/GiB (relay process)");
    println!(
        "raw TCP relay          {tcp_cpu:>8.2} CPU s/GiB (relay thread)   ours/tcp {:.1}x",
        ours_cpu / tcp_cpu
    );

    let n = env_usize("STREAMS", 256);
    let each = env_usize("EACH_MB", 4) << 20;
    println!("== {n} concurrent streams of {} MiB ==", each >> 20);
    let (agg, fairness) = many_streams(n, each).await;
    println!("aggregate              {agg:>8.1} MB/s   slowest stream / mean rate {fairness:.2}");

    if std::env::var("SKIP_CUTS").is_ok() {
        println!("== stream through cut links: left out (SKIP_CUTS) ==");
    } else {
        cuts_part(env_usize("CUTS_MB", 4096)).await;
    }

    if std::env::var("SKIP_THROTTLED").is_ok() {
        println!("== throttled reader: left out (SKIP_THROTTLED) ==");
        return;
    }
    let tmb = env_usize("THROTTLED_MB", 1024);
    let mbps = env_usize("THROTTLE_MBPS", 20) as f64;
    println!("== {tmb} MiB to a reader throttled to {mbps} MB/s, three processes ==");
    throttled(tmb << 20, mbps).await;
}
