//! Credit-mode streams across a cut link: a client whose link drops and whose session the relay
//! resumes goes on with its streams, without a byte lost or duplicated; a session that is not
//! resumed (no grace period, or a cut longer than it) fails both ends with a clear error. Each
//! client reaches the relay through its own TCP proxy, so either end's link can be cut while
//! every process stays alive.

mod common;
use common::*;
use socketio_p2p::{
    ClientOptions, ConnectionState, P2pClient, P2pDuplex, Relay, RelayOptions, ServerOptions,
};
use std::io::ErrorKind;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinHandle;

const MIB: u64 = 1024 * 1024;

/// The byte at every absolute offset of the test streams: the same on both ends, computed as it
/// is needed, so no end ever holds the whole stream.
fn pattern(offset: u64, buf: &mut [u8]) {
    for (i, b) in buf.iter_mut().enumerate() {
        let at = offset + i as u64;
        let mut x = (at / 8).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        x ^= x >> 29;
        x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
        x ^= x >> 32;
        *b = (x >> ((at % 8) * 8)) as u8;
    }
}

/// Options with quick reconnection attempts and a short call timeout.
fn quick() -> ClientOptions {
    ClientOptions {
        timeout: Duration::from_secs(5),
        ..ClientOptions::default()
    }
    .with_reconnect_delay(Duration::from_millis(50), Duration::from_millis(200))
}

async fn behind(proxy: &Proxy, id: &str) -> P2pClient {
    P2pClient::connect_with(&proxy.url(), id, quick())
        .await
        .unwrap_or_else(|e| panic!("client '{id}' connects: {e}"))
}

/// Cuts `client`'s link and keeps it down until the relay has seen it drop (its session is
/// kept), then lets it come back after `down`.
async fn cut(relay: &Relay, proxy: &Proxy, client: &P2pClient, down: Duration) {
    proxy.refuse(true);
    proxy.cut();
    wait_state(client, ConnectionState::Reconnecting).await;
    eventually("the relay sees the link drop", || {
        !relay.server().is_connected(client.id())
    })
    .await;
    tokio::time::sleep(down).await;
    proxy.refuse(false);
}

/// Writes `len` bytes of the pattern, then shuts down; returns what the writes said.
fn writer(mut stream: P2pDuplex, len: u64) -> JoinHandle<std::io::Result<P2pDuplex>> {
    tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        let mut at = 0u64;
        while at < len {
            let n = (len - at).min(buf.len() as u64) as usize;
            pattern(at, &mut buf[..n]);
            stream.write_all(&buf[..n]).await?;
            at += n as u64;
        }
        stream.shutdown().await?;
        Ok(stream)
    })
}

/// Reads to EOF, checking every byte against the pattern as it comes; `progress` counts what
/// was read. Returns the total, or the first error (a wrong byte is an `InvalidData` error).
fn reader(
    mut stream: P2pDuplex,
    progress: tokio::sync::watch::Sender<u64>,
) -> JoinHandle<std::io::Result<u64>> {
    tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        let mut want = vec![0u8; 64 * 1024];
        let mut at = 0u64;
        loop {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                return Ok(at);
            }
            pattern(at, &mut want[..n]);
            if buf[..n] != want[..n] {
                let i = buf[..n].iter().zip(&want[..n]).position(|(a, b)| a != b);
                return Err(std::io::Error::new(
                    ErrorKind::InvalidData,
                    format!("wrong byte at offset {}", at + i.unwrap_or(0) as u64),
                ));
            }
            at += n as u64;
            progress.send_replace(at);
        }
    })
}

/// Waits until the reader is past `bytes`, failing the test when it makes no progress for 20 s.
async fn read_past(progress: &mut tokio::sync::watch::Receiver<u64>, bytes: u64) {
    while *progress.borrow_and_update() < bytes {
        let at = *progress.borrow();
        let changed = tokio::time::timeout(Duration::from_secs(20), progress.changed())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "the reader is stuck at {at} bytes on its way to {} MiB",
                    bytes / MIB
                )
            });
        if changed.is_err() {
            // The reader ended: its outcome says how.
            return;
        }
    }
}

/// Writes `len` bytes from `out` to `inn`, cutting a client's link for `pause` each time the
/// reader is past the offset of an entry of `cuts` (the offset, the proxy, the client). Checks
/// that the reader gets every byte, in order, once, and that the writer's calls all succeed.
async fn carry_through_cuts(
    relay: &Relay,
    out: P2pDuplex,
    inn: P2pDuplex,
    len: u64,
    cuts: &[(u64, &Proxy, &P2pClient)],
    pause: Duration,
) {
    let (progress, mut seen) = tokio::sync::watch::channel(0u64);
    let writing = writer(out, len);
    let reading = reader(inn, progress);
    for &(at, proxy, client) in cuts {
        read_past(&mut seen, at).await;
        cut(relay, proxy, client, pause).await;
    }
    read_past(&mut seen, len).await;
    let total = within("the reader finishes", reading)
        .await
        .unwrap()
        .expect("every byte arrives, in order, once");
    assert_eq!(total, len);
    let out = within("the writer finishes", writing)
        .await
        .unwrap()
        .expect("the writer's calls all succeed");
    drop(out);
}

/// Peak memory of this process (VmHWM), in bytes.
fn peak_memory() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

// A 256 MiB stream whose sender's link is cut twice and whose receiver's link is cut once, each
// time mid-transfer and until the relay has seen it drop: both clients resume their sessions
// and the reader gets every byte once, in order, then EOF; the writer's calls all succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_goes_on_through_cuts_of_either_link() {
    const LEN: u64 = 256 * MIB;
    let relay = relay().await;
    let (sp, rp) = (
        Proxy::start(relay.local_addr()).await,
        Proxy::start(relay.local_addr()).await,
    );
    let sender = behind(&sp, "sender").await;
    let receiver = behind(&rp, "receiver").await;
    let (out, inn) = open_pair(&sender, &receiver, Default::default()).await;
    let cuts = [
        (40 * MIB, &sp, &sender),
        (100 * MIB, &rp, &receiver),
        (170 * MIB, &sp, &sender),
    ];
    carry_through_cuts(&relay, out, inn, LEN, &cuts, Duration::from_millis(300)).await;
    assert!(sender.is_connected() && receiver.is_connected());
    all_freed(&relay, &[&sender, &receiver]).await;
    if let Some(peak) = peak_memory() {
        assert!(
            peak < LEN,
            "the process peaked at {} MiB: the stream was held whole somewhere",
            peak / MIB
        );
    }
}

/// What a stream's read or write ended with.
async fn error_of<T: std::fmt::Debug>(what: &str, task: JoinHandle<std::io::Result<T>>) -> String {
    let e = within(what, task)
        .await
        .unwrap()
        .expect_err("the stream fails");
    assert!(
        matches!(
            e.kind(),
            ErrorKind::ConnectionAborted | ErrorKind::NotConnected
        ),
        "{what}: {e:?}"
    );
    e.to_string()
}

/// A sender behind a proxy streaming a long pattern to a receiver, both started; the reader has
/// read a first MiB.
struct Transfer {
    relay: Relay,
    proxy: Proxy,
    sender: P2pClient,
    receiver: P2pClient,
    writing: JoinHandle<std::io::Result<P2pDuplex>>,
    reading: JoinHandle<std::io::Result<u64>>,
}

async fn transfer(grace: Duration) -> Transfer {
    let relay = relay_with(RelayOptions {
        server: ServerOptions {
            resume_grace: grace,
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    let proxy = Proxy::start(relay.local_addr()).await;
    let sender = behind(&proxy, "sender").await;
    let receiver = client(&relay, "receiver").await;
    let (out, inn) = open_pair(&sender, &receiver, Default::default()).await;
    let (progress, mut seen) = tokio::sync::watch::channel(0u64);
    let writing = writer(out, 1 << 40);
    let reading = reader(inn, progress);
    read_past(&mut seen, MIB).await;
    Transfer {
        relay,
        proxy,
        sender,
        receiver,
        writing,
        reading,
    }
}

// With no grace period the relay keeps no session: a cut ends the stream at both ends, each with
// an error that says why, and nothing hangs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_grace_period_a_cut_fails_both_ends() {
    let t = transfer(Duration::ZERO).await;
    t.proxy.cut();
    let read = error_of("the reader fails", t.reading).await;
    assert_says(&read, &["sender", "disconnected"]);
    let write = error_of("the writer fails", t.writing).await;
    assert!(
        write.contains("not resume") || write.contains("connection lost"),
        "{write}"
    );
    wait_state(&t.sender, ConnectionState::Connected).await;
    all_freed(&t.relay, &[&t.sender, &t.receiver]).await;
}

// A cut longer than the grace period ends the session: the reader gets the reset of a
// disconnected peer, and the writer, back on a new session, learns the stream is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_longer_than_the_grace_period_fails_both_ends() {
    let t = transfer(Duration::from_millis(500)).await;
    t.proxy.refuse(true);
    t.proxy.cut();
    let read = error_of("the reader fails", t.reading).await;
    assert_says(&read, &["client 'sender' disconnected"]);
    t.proxy.refuse(false);
    let write = error_of("the writer fails", t.writing).await;
    assert_says(&write, &["did not resume the session"]);
    wait_state(&t.sender, ConnectionState::Connected).await;
    all_freed(&t.relay, &[&t.sender, &t.receiver]).await;
}

// A stream between the server's own end and a client: the client's link is cut in the middle
// of each direction, and each direction still arrives whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_with_the_servers_own_end_goes_on_through_cuts() {
    const LEN: u64 = 24 * MIB;
    let relay = relay().await;
    let proxy = Proxy::start(relay.local_addr()).await;
    let carol = behind(&proxy, "carol").await;
    let mut incoming = carol.incoming_streams(None);
    let opening = {
        let server = relay.server().clone();
        tokio::spawn(async move { server.add_p2p_stream("carol", Default::default()).await })
    };
    let at_carol = within("carol accepts", incoming.next())
        .await
        .expect("carol accepts streams");
    let at_server = within("the server's stream opens", opening)
        .await
        .unwrap()
        .expect("the stream opens");

    // The server writes, carol reads.
    let cuts = [(LEN / 3, &proxy, &carol)];
    let pause = Duration::from_millis(200);
    carry_through_cuts(&relay, at_server, at_carol, LEN, &cuts, pause).await;
    all_freed(&relay, &[&carol]).await;

    // And the other way round.
    let mut incoming = relay.server().incoming_streams(None);
    let opening = {
        let carol = carol.clone();
        tokio::spawn(async move { carol.add_p2p_stream("carol-server-side").await })
    };
    let at_server = within("the server accepts", incoming.next())
        .await
        .expect("the server accepts streams");
    let at_carol = within("carol's stream opens", opening)
        .await
        .unwrap()
        .expect("the stream opens");
    let cuts = [(LEN / 2, &proxy, &carol)];
    carry_through_cuts(&relay, at_carol, at_server, LEN, &cuts, pause).await;
    all_freed(&relay, &[&carol]).await;
}

// With a send queue of a few events, what a client sends again after a resume does not fit in
// it at once: it waits, in order, and the stream's new writes wait behind it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_send_queue_keeps_the_resent_bytes_in_order() {
    const LEN: u64 = 48 * MIB;
    let relay = relay().await;
    let (sp, rp) = (
        Proxy::start(relay.local_addr()).await,
        Proxy::start(relay.local_addr()).await,
    );
    let tiny = || ClientOptions {
        send_queue: 2,
        ..quick()
    };
    let sender = P2pClient::connect_with(&sp.url(), "sender", tiny())
        .await
        .expect("the sender connects");
    let receiver = P2pClient::connect_with(&rp.url(), "receiver", tiny())
        .await
        .expect("the receiver connects");
    let (out, inn) = open_pair(&sender, &receiver, Default::default()).await;
    let cuts = [
        (8 * MIB, &sp, &sender),
        (20 * MIB, &rp, &receiver),
        (32 * MIB, &sp, &sender),
    ];
    carry_through_cuts(&relay, out, inn, LEN, &cuts, Duration::from_millis(100)).await;
    all_freed(&relay, &[&sender, &receiver]).await;
}
