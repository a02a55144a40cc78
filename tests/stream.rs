//! Stream API (README 2.3, 3.3): byte streams between two clients, or a client and the server,
//! through a real relay on loopback.

mod common;
use common::*;
use futures::{SinkExt, StreamExt};
use serde_json::json;
use socketio_p2p::{Error, P2pClient, P2pDuplex, StreamOptions};
use std::collections::HashSet;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};

// ---- helpers ----

/// Length of a pattern block: not a power of two, so block edges and frame edges never line up.
const BLOCK: usize = (1 << 20) + 13;

/// A block of pseudo-random bytes (xorshift64*), different for every `seed`. Stream data is the
/// block repeated, so any length can be generated and checked without holding it in memory.
fn pattern(seed: u64) -> Arc<Vec<u8>> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(BLOCK + 8);
    while out.len() < BLOCK {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(BLOCK);
    Arc::new(out)
}

/// Writes `total` bytes of `block` repeated, in writes of at most `chunk` bytes.
async fn write_pattern<W: AsyncWrite + Unpin>(
    w: &mut W,
    block: &[u8],
    total: u64,
    chunk: usize,
) -> io::Result<()> {
    let mut pos = 0u64;
    while pos < total {
        let off = (pos % BLOCK as u64) as usize;
        let n = chunk.min(BLOCK - off).min((total - pos) as usize);
        w.write_all(&block[off..off + n]).await?;
        pos += n as u64;
    }
    Ok(())
}

/// Reads to EOF, checking every byte against `block` repeated; returns how many bytes came.
/// Panics at the first byte that differs.
async fn read_and_check<R: AsyncRead + Unpin>(r: &mut R, block: &[u8]) -> io::Result<u64> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut pos = 0u64;
    loop {
        let n = r.read(&mut buf).await?;
        if n == 0 {
            return Ok(pos);
        }
        check_at(block, pos, &buf[..n]);
        pos += n as u64;
    }
}

/// Checks that `got` is what the pattern holds at stream offset `pos`.
fn check_at(block: &[u8], pos: u64, got: &[u8]) {
    let mut done = 0;
    while done < got.len() {
        let off = ((pos + done as u64) % BLOCK as u64) as usize;
        let n = (BLOCK - off).min(got.len() - done);
        if got[done..done + n] != block[off..off + n] {
            let i = (0..n).find(|&i| got[done + i] != block[off + i]).unwrap();
            panic!(
                "byte {} of the stream differs: got {:#04x}, expected {:#04x}",
                pos + (done + i) as u64,
                got[done + i],
                block[off + i]
            );
        }
        done += n;
    }
}

/// Awaits with a custom bound.
async fn bounded<T>(what: &str, secs: u64, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(secs), f)
        .await
        .unwrap_or_else(|_| panic!("timed out after {secs} s: {what}"))
}

/// Writes until the stream fails; returns the error (bounded by the caller).
async fn write_until_error(d: &mut P2pDuplex) -> io::Error {
    let chunk = vec![7u8; 16 * 1024];
    loop {
        if let Err(e) = d.write_all(&chunk).await {
            return e;
        }
    }
}

/// Reads until the stream fails; an EOF is a test failure (a destroyed stream is not an end).
async fn read_until_error(d: &mut P2pDuplex) -> io::Error {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match d.read(&mut buf).await {
            Ok(0) => panic!("a destroyed stream read as a clean EOF"),
            Ok(_) => {}
            Err(e) => return e,
        }
    }
}

// ---- transfers ----

/// README 3.3.2: the duplex sends and receives through the network, both directions at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_mib_each_way_at_the_same_time() {
    let relay = relay().await;
    let a = client(&relay, "alice").await;
    let b = client(&relay, "bob").await;
    let (mine, theirs) = open_pair(&a, &b, StreamOptions::default()).await;
    assert_eq!(mine.peer_id(), "bob");
    assert_eq!(theirs.peer_id(), "alice");
    assert!(!mine.info().seed_mode && !theirs.info().seed_mode);
    assert_eq!(a.stream_count(), 1);
    assert_eq!(b.stream_count(), 1);
    assert_eq!(relay.server().stream_count(), 1);

    let (pa, pb) = (pattern(1), pattern(2));
    let total = 1u64 << 20;
    let side = |d: P2pDuplex, send: Arc<Vec<u8>>, expect: Arc<Vec<u8>>| async move {
        let (mut r, mut w) = tokio::io::split(d);
        let writer = async {
            write_pattern(&mut w, &send, total, 10_000).await?;
            w.shutdown().await
        };
        let (wrote, got) = tokio::join!(writer, read_and_check(&mut r, &expect));
        wrote.expect("writes succeed");
        got.expect("reads succeed")
    };
    let (ga, gb) = bounded("1 MiB each way", 60, async {
        tokio::join!(
            side(mine, pa.clone(), pb.clone()),
            side(theirs, pb.clone(), pa.clone())
        )
    })
    .await;
    assert_eq!((ga, gb), (total, total));
    all_freed(&relay, &[&a, &b]).await;
}

/// 256 MiB one way, every byte checked as it arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_fifty_six_mib_arrive_intact() {
    let relay = relay().await;
    let a = client(&relay, "alice").await;
    let b = client(&relay, "bob").await;
    let (mut mine, mut theirs) = open_pair(&a, &b, StreamOptions::default()).await;
    let block = pattern(256);
    let total = 256u64 << 20;
    let started = Instant::now();
    let writer = {
        let block = block.clone();
        tokio::spawn(async move {
            write_pattern(&mut mine, &block, total, 64 * 1024).await?;
            mine.shutdown().await?;
            // Keep the stream open until the reader has everything (dropping it early would
            // destroy the stream, not end it).
            let mut rest = Vec::new();
            mine.read_to_end(&mut rest).await?;
            io::Result::Ok(rest.len())
        })
    };
    let got = bounded("256 MiB arrive", 600, read_and_check(&mut theirs, &block))
        .await
        .expect("reads succeed");
    let secs = started.elapsed().as_secs_f64();
    println!(
        "256 MiB through the relay in {secs:.1} s ({:.0} MB/s)",
        total as f64 / 1e6 / secs
    );
    assert_eq!(got, total);
    theirs.shutdown().await.unwrap();
    let back = bounded("writer ends", 30, writer).await.unwrap().unwrap();
    assert_eq!(back, 0);
    all_freed(&relay, &[&a, &b]).await;
}

/// README 3.3.2: one client has many streams, each one-to-one, each with its own id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_streams_at_once_between_two_clients() {
    const N: u64 = 100;
    const EACH: u64 = 256 * 1024;
    let relay = relay().await;
    let a = client(&relay, "alice").await;
    let b = client(&relay, "bob").await;
    // Bob answers each stream with its own pattern and checks what alice sends.
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
    b.on_add_p2p_stream(None, move |d| {
        let done = done_tx.clone();
        tokio::spawn(async move {
            let n: u64 = d.args()["n"].as_u64().expect("args carry n");
            let ids = (d.stream_id().to_string(), d.info().peer_stream_id.clone());
            let (mut r, mut w) = tokio::io::split(d);
            let send = pattern(1000 + n);
            let expect = pattern(n);
            let writer = async {
                write_pattern(&mut w, &send, EACH, 8192).await?;
                w.shutdown().await
            };
            let (wrote, got) = tokio::join!(writer, read_and_check(&mut r, &expect));
            let _ = done.send((n, ids, wrote.and(got)));
            drop(r.unsplit(w));
        });
    });
    let opens = (0..N).map(|n| {
        let a = a.clone();
        async move {
            let opts = StreamOptions {
                args: json!({ "n": n }),
                ..StreamOptions::default()
            };
            (n, a.add_p2p_stream_with("bob", opts).await)
        }
    });
    let opened = bounded("100 streams open", 30, futures::future::join_all(opens)).await;
    let mut duplexes = Vec::new();
    for (n, r) in opened {
        duplexes.push((n, r.unwrap_or_else(|e| panic!("stream {n} opens: {e}"))));
    }
    assert_eq!(a.stream_count(), N as usize);
    let alice_ids: HashSet<_> = duplexes
        .iter()
        .map(|(_, d)| d.stream_id().to_string())
        .collect();
    assert_eq!(alice_ids.len(), N as usize, "alice's stream ids are unique");

    let transfers = duplexes.into_iter().map(|(n, d)| async move {
        let (mut r, mut w) = tokio::io::split(d);
        let (send, expect) = (pattern(n), pattern(1000 + n));
        let writer = async {
            write_pattern(&mut w, &send, EACH, 8192).await?;
            w.shutdown().await
        };
        let (wrote, got) = tokio::join!(writer, read_and_check(&mut r, &expect));
        wrote.unwrap_or_else(|e| panic!("stream {n}: write fails: {e}"));
        let got = got.unwrap_or_else(|e| panic!("stream {n}: read fails: {e}"));
        assert_eq!(got, EACH, "stream {n} delivers everything to alice");
        (r.unsplit(w), n)
    });
    let ends = bounded("100 transfers", 120, futures::future::join_all(transfers)).await;

    let mut bob_ids = HashSet::new();
    let mut seen = HashSet::new();
    for _ in 0..N {
        let (n, (own, peer), got) = within("bob's side reports", done_rx.recv()).await.unwrap();
        assert_eq!(
            got.expect("bob's side succeeds"),
            EACH,
            "stream {n} delivers to bob"
        );
        assert!(seen.insert(n), "stream {n} was accepted once");
        assert!(
            alice_ids.contains(&peer),
            "bob knows alice's id of stream {n}"
        );
        bob_ids.insert(own);
    }
    assert_eq!(bob_ids.len(), N as usize, "bob's stream ids are unique");
    drop(ends);
    all_freed(&relay, &[&a, &b]).await;
}

/// A slow reader slows the writer down: the writer never gets more than about two windows ahead
/// of what the reader consumed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reader_holds_the_writer_back() {
    const WINDOW: u32 = 64 * 1024;
    const TOTAL: u64 = 2 << 20;
    let relay = relay().await;
    let a = client_window(&relay, "alice", WINDOW).await;
    let b = client_window(&relay, "bob", WINDOW).await;
    let (mut mine, mut theirs) = open_pair(&a, &b, StreamOptions::default()).await;
    let written = Arc::new(AtomicU64::new(0));
    let block = pattern(5);
    let writer = {
        let written = written.clone();
        let block = block.clone();
        tokio::spawn(async move {
            let mut pos = 0u64;
            while pos < TOTAL {
                let off = (pos % BLOCK as u64) as usize;
                let n = 8192.min(BLOCK - off).min((TOTAL - pos) as usize);
                mine.write_all(&block[off..off + n]).await?;
                pos += n as u64;
                written.store(pos, Ordering::SeqCst);
            }
            mine.shutdown().await?;
            let _ = mine.read(&mut [0u8; 1]).await?;
            io::Result::Ok(())
        })
    };
    let mut buf = vec![0u8; 16 * 1024];
    let mut read = 0u64;
    let mut max_ahead = 0u64;
    bounded("slow transfer", 120, async {
        loop {
            tokio::time::sleep(Duration::from_millis(3)).await;
            let ahead = written.load(Ordering::SeqCst).saturating_sub(read);
            max_ahead = max_ahead.max(ahead);
            assert!(
                ahead <= 2 * u64::from(WINDOW),
                "the writer got {ahead} bytes ahead of a reader at {read} (window {WINDOW})"
            );
            let n = theirs.read(&mut buf).await.expect("reads succeed");
            if n == 0 {
                break;
            }
            check_at(&block, read, &buf[..n]);
            read += n as u64;
        }
    })
    .await;
    assert_eq!(read, TOTAL);
    println!("the writer was at most {max_ahead} bytes ahead of the reader");
    theirs.shutdown().await.unwrap();
    bounded("writer ends", 10, writer).await.unwrap().unwrap();
    all_freed(&relay, &[&a, &b]).await;
}

// ---- lifecycle ----

/// Shutting one direction down: the peer reads everything, then EOF; the other direction still
/// works; writing after shutdown is an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_close_keeps_the_other_direction() {
    let relay = relay().await;
    let a = client(&relay, "alice").await;
    let b = client(&relay, "bob").await;
    let (mut mine, mut theirs) = open_pair(&a, &b, StreamOptions::default()).await;
    mine.write_all(b"request and nothing more").await.unwrap();
    mine.shutdown().await.unwrap();
    let e = mine
        .write_all(b"late")
        .await
        .expect_err("write after shutdown fails");
    assert_eq!(e.kind(), io::ErrorKind::BrokenPipe);

    let mut got = Vec::new();
    within("bob reads to EOF", theirs.read_to_end(&mut got))
        .await
        .unwrap();
    assert_eq!(got, b"request and nothing more");
    assert_eq!(b.stream_count(), 1, "bob's direction is still open");
    // Bob answers on the direction that is still open, with more than one window.
    let block = pattern(9);
    let total = 3 * 512 * 1024 + 5;
    let answer = tokio::spawn(async move {
        write_pattern(&mut theirs, &block, total, 50_000).await?;
        theirs.shutdown().await?;
        io::Result::Ok(theirs)
    });
    let got = within(
        "alice reads the answer",
        read_and_check(&mut mine, &pattern(9)),
    )
    .await
    .unwrap();
    assert_eq!(got, total);
    let theirs = within("bob's writes end", answer).await.unwrap().unwrap();
    all_freed(&relay, &[&a, &b]).await;
    drop((mine, theirs));
}

fn assert_destroyed(e: &io::Error, side: &str) {
    assert_eq!(e.kind(), io::ErrorKind::ConnectionReset, "{side}: {e}");
    assert!(e.to_string().contains("reset"), "{side}: {e}");
}

/// Dropping a duplex in the middle of a transfer destroys the stream: the peer's pending write
/// and its later reads fail with an error, not an EOF.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_duplex_mid_transfer_fails_the_peer() {
    let relay = relay().await;
    let a = client_window(&relay, "alice", 64 * 1024).await;
    let b = client_window(&relay, "bob", 64 * 1024).await;

    // Alice writes without end; bob reads a little and drops his end.
    let (mut mine, mut theirs) = open_pair(&a, &b, StreamOptions::default()).await;
    let writer = tokio::spawn(async move {
        let e = write_until_error(&mut mine).await;
        let r = mine.read(&mut [0u8; 16]).await;
        (e, r)
    });
    let mut buf = vec![0u8; 100_000];
    within("bob reads", theirs.read_exact(&mut buf))
        .await
        .unwrap();
    drop(theirs);
    let (e, later_read) = within("alice's write fails", writer).await.unwrap();
    assert_destroyed(&e, "alice's pending write");
    assert_destroyed(
        &later_read.expect_err("a later read fails"),
        "alice's later read",
    );
    all_freed(&relay, &[&a, &b]).await;

    // The other way: bob waits on a read; alice drops her end.
    let (mine, mut theirs) = open_pair(&a, &b, StreamOptions::default()).await;
    let reader = tokio::spawn(async move {
        let e = read_until_error(&mut theirs).await;
        let w = theirs.write_all(b"late").await;
        (e, w)
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    drop(mine);
    let (e, later_write) = within("bob's read fails", reader).await.unwrap();
    assert_destroyed(&e, "bob's pending read");
    assert_destroyed(
        &later_write.expect_err("a later write fails"),
        "bob's later write",
    );
    all_freed(&relay, &[&a, &b]).await;
}

/// An explicit reset works like a drop, and the reset end's own calls fail too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_mid_transfer_fails_both_ends() {
    let relay = relay().await;
    let a = client_window(&relay, "alice", 64 * 1024).await;
    let b = client_window(&relay, "bob", 64 * 1024).await;
    let (mut mine, mut theirs) = open_pair(&a, &b, StreamOptions::default()).await;
    let reader = tokio::spawn(async move {
        let mut buf = vec![0u8; 100_000];
        theirs.read_exact(&mut buf).await.unwrap();
        let e = read_until_error(&mut theirs).await;
        let w = theirs.write_all(b"late").await;
        (e, w)
    });
    let block = pattern(3);
    write_pattern(&mut mine, &block, 200_000, 8192)
        .await
        .unwrap();
    mine.reset();
    let e = mine
        .write_all(b"more")
        .await
        .expect_err("the reset end cannot write");
    assert_eq!(e.kind(), io::ErrorKind::ConnectionReset);
    assert!(
        mine.read(&mut [0u8; 8]).await.is_err(),
        "the reset end cannot read"
    );
    let (e, later_write) = within("bob's read fails", reader).await.unwrap();
    assert_destroyed(&e, "bob's read");
    assert_destroyed(
        &later_write.expect_err("bob's later write fails"),
        "bob's write",
    );
    all_freed(&relay, &[&a, &b]).await;
}

/// The peer disconnecting in the middle of a transfer fails pending writes and reads at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_disconnect_mid_transfer_fails_pending_calls() {
    let relay = relay().await;
    let a = client_window(&relay, "alice", 64 * 1024).await;
    let b = client_window(&relay, "bob", 64 * 1024).await;
    let (mut w_mine, mut w_theirs) = open_pair(&a, &b, StreamOptions::default()).await;
    let (mut r_mine, _r_theirs) = open_pair(&a, &b, StreamOptions::default()).await;
    let writer = tokio::spawn(async move { write_until_error(&mut w_mine).await });
    let reader = tokio::spawn(async move { read_until_error(&mut r_mine).await });
    let mut buf = vec![0u8; 100_000];
    within("bob reads", w_theirs.read_exact(&mut buf))
        .await
        .unwrap();
    b.disconnect().await.unwrap();
    for (what, task) in [("pending write", writer), ("pending read", reader)] {
        let e = within(what, task).await.unwrap();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionAborted, "{what}: {e}");
        assert!(e.to_string().contains("'bob' disconnected"), "{what}: {e}");
    }
    // Bob's own ends fail too, instead of waiting for a peer that cannot answer.
    let e = within("bob's own read", read_until_error(&mut w_theirs)).await;
    assert_eq!(e.kind(), io::ErrorKind::NotConnected, "{e}");
    eventually("alice's and the relay's streams are freed", || {
        a.stream_count() == 0 && b.stream_count() == 0 && relay.server().stream_count() == 0
    })
    .await;
}

/// Disconnecting oneself fails one's own pending reads and writes, and the peer's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_disconnect_fails_pending_calls_on_both_ends() {
    let relay = relay().await;
    let a = client_window(&relay, "alice", 64 * 1024).await;
    let b = client_window(&relay, "bob", 64 * 1024).await;
    let (mut w_mine, mut w_theirs) = open_pair(&a, &b, StreamOptions::default()).await;
    let (mut r_mine, mut r_theirs) = open_pair(&a, &b, StreamOptions::default()).await;
    let writer = tokio::spawn(async move { write_until_error(&mut w_mine).await });
    let reader = tokio::spawn(async move { read_until_error(&mut r_mine).await });
    let peer_reader = tokio::spawn(async move { read_until_error(&mut r_theirs).await });
    let mut buf = vec![0u8; 100_000];
    within("bob reads", w_theirs.read_exact(&mut buf))
        .await
        .unwrap();
    a.disconnect().await.unwrap();
    for (what, task) in [("own pending write", writer), ("own pending read", reader)] {
        let e = within(what, task).await.unwrap();
        assert_eq!(e.kind(), io::ErrorKind::NotConnected, "{what}: {e}");
        assert!(e.to_string().contains("connection lost"), "{what}: {e}");
    }
    let e = within("the peer's pending read", peer_reader)
        .await
        .unwrap();
    assert_eq!(e.kind(), io::ErrorKind::ConnectionAborted, "{e}");
    assert!(e.to_string().contains("'alice' disconnected"), "{e}");
    let e = within("the peer's reads", read_until_error(&mut w_theirs)).await;
    assert_eq!(e.kind(), io::ErrorKind::ConnectionAborted, "{e}");
    let r = a.add_p2p_stream("bob").await;
    assert!(matches!(r, Err(Error::Disconnected(_))), "{r:?}");
    all_freed(&relay, &[&a, &b]).await;
}

// ---- opening, refusal, channels ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opening_to_an_unknown_client_fails() {
    let relay = relay().await;
    let a = client(&relay, "alice").await;
    let r = within("open to nobody", a.add_p2p_stream("nobody")).await;
    assert!(
        matches!(&r, Err(Error::UnknownTarget(x)) if x == "nobody"),
        "{r:?}"
    );
    assert!(matches!(
        a.add_p2p_stream("").await,
        Err(Error::BadRequest(_))
    ));
    all_freed(&relay, &[&a]).await;
}

/// A client that accepts no streams (or stopped accepting) refuses them with the seed's text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_not_accepting_streams_refuses() {
    let relay = relay().await;
    let a = client(&relay, "alice").await;
    let b = client(&relay, "bob").await;
    let r = within("open to bob", a.add_p2p_stream("bob")).await;
    let e = r.unwrap_err();
    assert!(
        matches!(&e, Error::Remote { peer, message }
            if peer == "bob" && message == "Client bob is not listening to create stream event"),
        "the refusal is bob's: {e:?}"
    );
    // Accepting, then no longer.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    b.on_add_p2p_stream(None, move |d| {
        let _ = tx.send(d);
    });
    let mine = within("open to bob", a.add_p2p_stream("bob"))
        .await
        .unwrap();
    let theirs = within("bob accepts", rx.recv()).await.unwrap();
    assert_eq!(theirs.peer_id(), "alice");
    drop((mine, theirs));
    b.off_add_p2p_stream(None);
    let e = within("open to bob", a.add_p2p_stream("bob"))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("not listening"), "{e}");
    // An `IncomingStreams` that is dropped stops accepting, like `off_add_p2p_stream`.
    let incoming = b.incoming_streams(None);
    drop(incoming);
    let e = within("open to bob", a.add_p2p_stream("bob"))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, Error::Remote { peer, message } if peer == "bob" && message.contains("not listening")),
        "refused at once, not reset later: {e:?}"
    );
    all_freed(&relay, &[&a, &b]).await;
}

/// Streams on a channel go to that channel's acceptor; others to the acceptor of no channel.
/// The acceptor sees the opener's arguments and ids.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channels_route_streams_and_carry_arguments() {
    let relay = relay().await;
    let a = client(&relay, "alice").await;
    let b = client(&relay, "bob").await;
    let mut files = b.incoming_streams(Some("files"));
    let mut rest = b.incoming_streams(None);

    let opts = StreamOptions {
        channel: Some("files".into()),
        args: json!({"name": "report.pdf", "size": 3}),
        stream_id: Some("alice-s1".into()),
        peer_stream_id: Some("bob-s1".into()),
        ..StreamOptions::default()
    };
    let opener = tokio::spawn({
        let a = a.clone();
        async move { a.add_p2p_stream_with("bob", opts).await }
    });
    let mut f = within("files acceptor", files.next()).await.unwrap();
    let mut mine = within("open", opener).await.unwrap().unwrap();
    assert_eq!(f.channel(), Some("files"));
    assert_eq!(f.args(), &json!({"name": "report.pdf", "size": 3}));
    assert_eq!(f.stream_id(), "bob-s1");
    assert_eq!(f.info().peer_stream_id, "alice-s1");
    assert_eq!(mine.stream_id(), "alice-s1");
    assert_eq!(mine.info().peer_stream_id, "bob-s1");
    mine.write_all(b"pdf").await.unwrap();
    mine.shutdown().await.unwrap();
    let mut got = Vec::new();
    within("read", f.read_to_end(&mut got)).await.unwrap();
    assert_eq!(got, b"pdf");

    for channel in [None, Some("photos")] {
        let opts = StreamOptions {
            channel: channel.map(str::to_string),
            ..StreamOptions::default()
        };
        let opener = tokio::spawn({
            let a = a.clone();
            async move { a.add_p2p_stream_with("bob", opts).await }
        });
        let other = within("default acceptor", rest.next()).await.unwrap();
        within("open", opener).await.unwrap().unwrap();
        assert_eq!(other.channel(), channel);
        assert_eq!(other.args(), &serde_json::Value::Null);
    }
    // Nothing reached the files acceptor but the files stream.
    assert!(
        tokio::time::timeout(Duration::from_millis(100), files.next())
            .await
            .is_err(),
        "the files acceptor got another stream"
    );

    // With only a channel acceptor, streams of no channel are refused.
    b.off_add_p2p_stream(None);
    let e = within("open", a.add_p2p_stream("bob")).await.unwrap_err();
    assert!(e.to_string().contains("not listening"), "{e}");
    drop((mine, f));
    all_freed(&relay, &[&a, &b]).await;
}

/// An open with a timeout shorter than the round trip fails with a timeout and leaves nothing
/// behind: if the peer accepted anyway, its end is destroyed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_that_times_out_leaves_nothing_behind() {
    let relay = relay().await;
    let a = client(&relay, "alice").await;
    let b = client(&relay, "bob").await;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    b.on_add_p2p_stream(None, move |d| {
        let _ = tx.send(d);
    });
    let opts = StreamOptions {
        timeout: Some(Duration::from_micros(1)),
        ..StreamOptions::default()
    };
    let r = within(
        "an open with a tiny timeout",
        a.add_p2p_stream_with("bob", opts),
    )
    .await;
    match r {
        Err(Error::Timeout { .. }) => {
            // Bob accepted after alice gave up: his end must not wait forever.
            let mut late = within("bob accepts", rx.recv()).await.unwrap();
            let e = within("bob's end fails", read_until_error(&mut late)).await;
            assert_eq!(e.kind(), io::ErrorKind::ConnectionReset, "{e}");
        }
        Ok(d) => drop(d),
        Err(e) => panic!("unexpected error {e}"),
    }
    all_freed(&relay, &[&a, &b]).await;
}

/// A peer that never answers (a seed-protocol client without a stream handler) makes the open
/// fail with a timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_to_a_silent_peer_times_out() {
    let relay = relay().await;
    let a = client(&relay, "alice").await;
    let silent = raw_client(&format!("{}?clientId=silent", relay.url())).await;
    eventually("silent registers", || relay.server().is_connected("silent")).await;
    let opts = StreamOptions {
        timeout: Some(Duration::from_millis(300)),
        ..StreamOptions::default()
    };
    let r = within("open to silent", a.add_p2p_stream_with("silent", opts)).await;
    assert!(matches!(r, Err(Error::Timeout { .. })), "{r:?}");
    silent.events.wait_len("silent saw the request", 1).await;
    assert_eq!(silent.events.get()[0].0, "MULTI_API_CREATE_STREAM");
    all_freed(&relay, &[&a]).await;
}

// ---- the server as an endpoint ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_opens_a_stream_to_a_client() {
    let relay = relay().await;
    let a = client(&relay, "alice").await;
    let mut incoming = a.incoming_streams(Some("logs"));
    let server = relay.server().clone();
    let opener = tokio::spawn(async move {
        let opts = StreamOptions {
            channel: Some("logs".into()),
            args: json!(["tail"]),
            ..StreamOptions::default()
        };
        server.add_p2p_stream("alice", opts).await
    });
    let mut theirs = within("alice accepts", incoming.next()).await.unwrap();
    let mut mine = within("open", opener).await.unwrap().unwrap();
    assert_eq!(theirs.peer_id(), "alice-server-side");
    assert_eq!(theirs.args(), &json!(["tail"]));
    assert_eq!(mine.peer_id(), "alice");
    assert_eq!(a.stream_count(), 1);
    assert_eq!(relay.server().stream_count(), 1);

    let total = 3u64 << 20;
    let down = tokio::spawn(async move {
        write_pattern(&mut mine, &pattern(11), total, 64 * 1024).await?;
        mine.shutdown().await?;
        let got = read_and_check(&mut mine, &pattern(12)).await?;
        io::Result::Ok((mine, got))
    });
    let got = within("alice reads", read_and_check(&mut theirs, &pattern(11)))
        .await
        .unwrap();
    assert_eq!(got, total);
    write_pattern(&mut theirs, &pattern(12), total, 30_000)
        .await
        .unwrap();
    theirs.shutdown().await.unwrap();
    let (mine, back) = within("the server reads", down).await.unwrap().unwrap();
    assert_eq!(back, total);
    all_freed(&relay, &[&a]).await;
    drop((mine, theirs));

    assert!(matches!(
        relay.server().add_p2p_stream("nobody", StreamOptions::default()).await,
        Err(Error::UnknownTarget(id)) if id == "nobody"
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_opens_a_stream_to_the_server() {
    let relay = relay().await;
    let a = client(&relay, "alice").await;
    let e = within(
        "open before the server accepts",
        a.add_p2p_stream("alice-server-side"),
    )
    .await
    .unwrap_err();
    assert!(e.to_string().contains("not listening"), "{e}");

    let mut incoming = relay.server().incoming_streams(None);
    let opts = StreamOptions {
        args: json!({"upload": "x.bin"}),
        ..StreamOptions::default()
    };
    let opener = tokio::spawn({
        let a = a.clone();
        async move { a.add_p2p_stream_with("alice-server-side", opts).await }
    });
    let mut at_server = within("the server accepts", incoming.next()).await.unwrap();
    let mut mine = within("open", opener).await.unwrap().unwrap();
    assert_eq!(at_server.peer_id(), "alice");
    assert_eq!(at_server.args(), &json!({"upload": "x.bin"}));
    assert_eq!(mine.peer_id(), "alice-server-side");

    let total = (3u64 << 20) + 1;
    let up = tokio::spawn(async move {
        write_pattern(&mut mine, &pattern(21), total, 64 * 1024).await?;
        mine.shutdown().await?;
        let got = read_and_check(&mut mine, &pattern(22)).await?;
        io::Result::Ok((mine, got))
    });
    let got = within(
        "the server reads",
        read_and_check(&mut at_server, &pattern(21)),
    )
    .await
    .unwrap();
    assert_eq!(got, total);
    write_pattern(&mut at_server, &pattern(22), total, 64 * 1024)
        .await
        .unwrap();
    at_server.shutdown().await.unwrap();
    let (mine, back) = within("alice reads", up).await.unwrap().unwrap();
    assert_eq!(back, total);
    all_freed(&relay, &[&a]).await;
    drop((mine, at_server));

    // A reset from the client's end reaches the server's end.
    let opener = tokio::spawn({
        let a = a.clone();
        async move { a.add_p2p_stream("alice-server-side").await }
    });
    let mut at_server = within("the server accepts", incoming.next()).await.unwrap();
    let mine = within("open", opener).await.unwrap().unwrap();
    drop(mine);
    let e = within("the server's read fails", read_until_error(&mut at_server)).await;
    assert_eq!(e.kind(), io::ErrorKind::ConnectionReset, "{e}");
    all_freed(&relay, &[&a]).await;
}

// ---- the duplex with tokio's and tokio-util's tools ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lines_through_split_halves_and_bufreader() {
    let relay = relay().await;
    let a = client(&relay, "alice").await;
    let b = client(&relay, "bob").await;
    let (mine, theirs) = open_pair(&a, &b, StreamOptions::default()).await;
    // Bob answers each line in upper case, through split halves and a BufReader.
    let echo = tokio::spawn(async move {
        let (r, mut w) = tokio::io::split(theirs);
        let mut lines = BufReader::new(r).lines();
        while let Some(line) = lines.next_line().await? {
            w.write_all(format!("{}\n", line.to_uppercase()).as_bytes())
                .await?;
        }
        w.shutdown().await?;
        io::Result::Ok(lines.into_inner().into_inner().unsplit(w))
    });
    let (r, mut w) = tokio::io::split(mine);
    let mut answers = BufReader::new(r).lines();
    for word in ["hello", "duplex", "bye"] {
        w.write_all(format!("{word}\n").as_bytes()).await.unwrap();
        let got = within("answer", answers.next_line()).await.unwrap();
        assert_eq!(got.as_deref(), Some(word.to_uppercase().as_str()));
    }
    w.shutdown().await.unwrap();
    assert_eq!(within("EOF", answers.next_line()).await.unwrap(), None);
    let theirs = within("echo ends", echo).await.unwrap().unwrap();
    all_freed(&relay, &[&a, &b]).await;
    drop((theirs, answers, w));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tokio_util_codec_frames_the_duplex() {
    use tokio_util::codec::{Framed, LinesCodec};
    let relay = relay().await;
    let a = client(&relay, "alice").await;
    let b = client(&relay, "bob").await;
    let (mine, theirs) = open_pair(&a, &b, StreamOptions::default()).await;
    // Bob keeps a running sum of the numbers he is sent and answers each line.
    let server = tokio::spawn(async move {
        let mut framed = Framed::new(theirs, LinesCodec::new());
        let mut sum = 0i64;
        while let Some(line) = framed.next().await {
            let line = line.expect("a line");
            let answer = match line.parse::<i64>() {
                Ok(n) => {
                    sum += n;
                    format!("sum {sum}")
                }
                Err(_) => format!("{} characters", line.len()),
            };
            framed.send(answer).await.expect("answer sent");
        }
        let mut theirs = framed.into_inner();
        theirs.shutdown().await.expect("bob shuts down");
        theirs
    });
    let mut framed = Framed::new(mine, LinesCodec::new());
    for (n, expect) in [(5, "sum 5"), (10, "sum 15"), (-1, "sum 14")] {
        framed.send(n.to_string()).await.unwrap();
        let got = within("answer", framed.next()).await.unwrap().unwrap();
        assert_eq!(got, expect);
    }
    // A line longer than a frame.
    framed.send("x".repeat(200_000)).await.unwrap();
    let got = within("answer", framed.next()).await.unwrap().unwrap();
    assert_eq!(got, "200000 characters");
    let mut mine = framed.into_inner();
    mine.shutdown().await.unwrap();
    let theirs = within("bob's codec ends", server).await.unwrap();
    let mut rest = Vec::new();
    within("alice reads to EOF", mine.read_to_end(&mut rest))
        .await
        .unwrap();
    assert!(rest.is_empty());
    all_freed(&relay, &[&a, &b]).await;
    drop((mine, theirs));
}

// ---- opens the relay gives up on ----

/// Makes `c`'s receive path busy for `ms` (a listener that blocks), sent by `from`; returns once
/// the listener is running. Needs the multi-thread runtime.
async fn stall(from: &P2pClient, c: &P2pClient, ms: u64) {
    let started = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let s = started.clone();
    c.on("stall", move |_| {
        s.store(true, Ordering::SeqCst);
        // Off the runtime's worker, so that the relay's timers still run meanwhile.
        tokio::task::block_in_place(|| std::thread::sleep(Duration::from_millis(ms)));
    });
    from.emit_to(c.id(), "stall", ()).await.unwrap();
    eventually("the receive path is busy", || {
        started.load(Ordering::SeqCst)
    })
    .await;
}

fn short_reply_relay_opts() -> socketio_p2p::RelayOptions {
    socketio_p2p::RelayOptions {
        server: socketio_p2p::ServerOptions {
            reply_timeout: Duration::from_millis(300),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// The acceptor answers after the relay stopped waiting: its end is reset, not left hanging.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_the_relay_gave_up_on_resets_the_late_acceptor() {
    let relay = relay_with(short_reply_relay_opts()).await;
    let a = client(&relay, "alice").await;
    let b = client(&relay, "bob").await;
    let mut incoming = b.incoming_streams(None);
    stall(&a, &b, 1200).await;
    let r = within("the open fails", a.add_p2p_stream("bob")).await;
    assert!(matches!(r, Err(Error::Timeout { .. })), "{r:?}");
    let mut late = within("bob accepts late", incoming.next()).await.unwrap();
    let e = within("bob's read ends", read_until_error(&mut late)).await;
    assert_eq!(e.kind(), io::ErrorKind::ConnectionReset, "{e}");
    let e = within("bob's write fails", write_until_error(&mut late)).await;
    assert_eq!(e.kind(), io::ErrorKind::ConnectionReset, "{e}");
    drop(late);
    all_freed(&relay, &[&a, &b]).await;
}

/// The same for a stream the server opens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_open_that_times_out_resets_the_late_acceptor() {
    let relay = relay().await;
    let a = client(&relay, "alice").await;
    let b = client(&relay, "bob").await;
    let mut incoming = b.incoming_streams(None);
    stall(&a, &b, 1200).await;
    let opts = StreamOptions {
        timeout: Some(Duration::from_millis(300)),
        ..StreamOptions::default()
    };
    let r = within("the open fails", relay.server().add_p2p_stream("bob", opts)).await;
    assert!(matches!(r, Err(Error::Timeout { .. })), "{:?}", r.err());
    let mut late = within("bob accepts late", incoming.next()).await.unwrap();
    let e = within("bob's read ends", read_until_error(&mut late)).await;
    assert_eq!(e.kind(), io::ErrorKind::ConnectionReset, "{e}");
    drop(late);
    all_freed(&relay, &[&a, &b]).await;
}
