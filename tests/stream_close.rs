//! Closing a stream like TCP/QUIC, through a real relay on loopback: write, `shutdown()`, drop
//! on one end gives the other end every byte and then EOF, whatever its reading speed; and what
//! dropping a duplex does in each state (see the rustdoc of `P2pDuplex` and PROTOCOL.md 5.3).

mod common;
use common::*;
use socketio_p2p::{P2pDuplex, StreamOptions};
use std::io;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn data_of(run: u64, len: usize) -> Vec<u8> {
    let mut x = run.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Reads to EOF in uneven sizes, pausing now and then like a busy consumer. Returns the bytes, or
/// the error with how many bytes came before it.
async fn paused_read(d: &mut P2pDuplex, run: u64) -> Result<Vec<u8>, (usize, io::Error)> {
    let mut got = Vec::new();
    let mut buf = vec![0u8; 48 * 1024];
    let mut i = run;
    loop {
        i = i
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let want = 1 + (i >> 33) as usize % buf.len();
        match d.read(&mut buf[..want]).await {
            Ok(0) => return Ok(got),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => return Err((got.len(), e)),
        }
        if (i >> 20) % 4 == 0 {
            tokio::time::sleep(Duration::from_millis(1 + (i >> 40) % 3)).await;
        }
    }
}

/// 100 of 100 runs: `tokio::io::copy` into the duplex, `shutdown()`, drop; the paused reader gets
/// every byte and then EOF.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_shutdown_drop_delivers_everything_then_eof() {
    const RUNS: u64 = 100;
    let relay = relay().await;
    let window = 64 * 1024;
    let a = client_window(&relay, "alice", window).await;
    let b = client_window(&relay, "bob", window).await;
    let mut failures = Vec::new();
    for run in 0..RUNS {
        // More than one window (backpressure), sizes differing per run.
        let len = 200 * 1024 + (run as usize * 7919) % (200 * 1024);
        let data = data_of(run, len);
        // Bob opens to alice and writes; alice reads.
        let (mut bobs, mut alices) = open_pair(&b, &a, StreamOptions::default()).await;
        let writer = {
            let data = data.clone();
            tokio::spawn(async move {
                let mut src: &[u8] = &data;
                tokio::io::copy(&mut src, &mut bobs).await?;
                bobs.shutdown().await?;
                drop(bobs);
                io::Result::Ok(())
            })
        };
        let read = tokio::time::timeout(Duration::from_secs(10), paused_read(&mut alices, run))
            .await
            .unwrap_or_else(|_| panic!("run {run}: the reader got stuck"));
        let wrote = within("the writer finishes", writer).await.unwrap();
        assert!(wrote.is_ok(), "run {run}: the writer failed: {wrote:?}");
        match read {
            Ok(got) => assert!(
                got == data,
                "run {run}: {} of {len} bytes, or different bytes",
                got.len()
            ),
            Err((n, e)) => failures.push(format!("run {run}: {n} of {len} bytes, then {e}")),
        }
        drop(alices);
    }
    assert!(
        failures.is_empty(),
        "{} of {RUNS} runs failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    all_freed(&relay, &[&a, &b]).await;
}

fn assert_reset(e: &io::Error, what: &str) {
    assert_eq!(e.kind(), io::ErrorKind::ConnectionReset, "{what}: {e}");
    assert!(e.to_string().contains("reset"), "{what}: {e}");
}

/// Dropping before anything was sent aborts the stream: the peer's read is an error, not an EOF
/// (an empty stream would be indistinguishable from one cut short), and so is its write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_before_sending_anything_resets() {
    let relay = relay().await;
    let a = client_window(&relay, "alice", 64 * 1024).await;
    let b = client_window(&relay, "bob", 64 * 1024).await;
    let (mine, mut theirs) = open_pair(&a, &b, StreamOptions::default()).await;
    drop(mine);
    let e = within("bob's read", theirs.read(&mut [0u8; 16]))
        .await
        .expect_err("a dropped, unfinished stream is not an EOF");
    assert_reset(&e, "bob's read");
    let e = theirs
        .write_all(b"late")
        .await
        .expect_err("nobody reads any more");
    assert_reset(&e, "bob's write");
    all_freed(&relay, &[&a, &b]).await;
}

/// Dropping in the middle of a write (no shutdown) aborts: the peer reads at most what was
/// written, then an error, never an EOF.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_mid_write_resets_after_a_prefix() {
    let relay = relay().await;
    let a = client_window(&relay, "alice", 64 * 1024).await;
    let b = client_window(&relay, "bob", 64 * 1024).await;
    let (mut mine, mut theirs) = open_pair(&a, &b, StreamOptions::default()).await;
    let data = data_of(7, 300 * 1024);
    // The window stops the writer after 64 KiB until bob reads: drop it while it waits.
    let mut src: &[u8] = &data;
    let partial = tokio::time::timeout(
        Duration::from_millis(300),
        tokio::io::copy(&mut src, &mut mine),
    )
    .await;
    assert!(partial.is_err(), "the writer waits for credit");
    drop(mine);
    let (n, e) = paused_read(&mut theirs, 1)
        .await
        .expect_err("an aborted stream does not end with EOF");
    assert!(n < data.len(), "only a prefix arrived");
    assert_reset(&e, "bob's read");
    all_freed(&relay, &[&a, &b]).await;
}

/// Dropping after `shutdown()` is a clean close of this direction: the peer reads every byte and
/// EOF; only the peer's writing stops (nobody reads what it sends).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_after_shutdown_keeps_data_and_eof_and_stops_the_peer_writer() {
    let relay = relay().await;
    let a = client_window(&relay, "alice", 64 * 1024).await;
    let b = client_window(&relay, "bob", 64 * 1024).await;
    let (mut mine, mut theirs) = open_pair(&a, &b, StreamOptions::default()).await;
    let data = data_of(8, 150 * 1024);
    let writer = {
        let data = data.clone();
        tokio::spawn(async move {
            mine.write_all(&data).await.unwrap();
            mine.shutdown().await.unwrap();
            drop(mine);
        })
    };
    within("the writer finishes", async {
        // Bob is not reading yet: the last window is still on its way when alice drops.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let got = paused_read(&mut theirs, 2)
            .await
            .expect("every byte, then EOF");
        assert!(got == data, "bob got {} of {} bytes", got.len(), data.len());
    })
    .await;
    writer.await.unwrap();
    // Alice's reset tells bob that nobody reads its direction any more.
    let e = within("bob's write fails", async {
        loop {
            if let Err(e) = theirs.write_all(&[1u8; 4096]).await {
                return e;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert_reset(&e, "bob's write");
    // The EOF stays an EOF.
    assert_eq!(theirs.read(&mut [0u8; 8]).await.unwrap(), 0);
    all_freed(&relay, &[&a, &b]).await;
}

/// Dropping after the peer's FIN but without our own shutdown aborts our direction: the peer,
/// which already finished writing, gets an error on its read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_after_the_peers_fin_resets_our_direction() {
    let relay = relay().await;
    let a = client_window(&relay, "alice", 64 * 1024).await;
    let b = client_window(&relay, "bob", 64 * 1024).await;
    let (mut mine, mut theirs) = open_pair(&a, &b, StreamOptions::default()).await;
    mine.write_all(b"question").await.unwrap();
    mine.shutdown().await.unwrap();
    let mut q = Vec::new();
    within("bob reads to EOF", theirs.read_to_end(&mut q))
        .await
        .unwrap();
    assert_eq!(q, b"question");
    theirs.write_all(b"half an ans").await.unwrap();
    drop(theirs);
    let mut got = Vec::new();
    let e = within("alice's read", mine.read_to_end(&mut got))
        .await
        .expect_err("an answer without FIN is cut short");
    assert_reset(&e, "alice's read");
    all_freed(&relay, &[&a, &b]).await;
}

/// Dropping after both directions ended changes nothing: both ends already read to EOF, and
/// everything is freed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_after_both_fins_is_silent() {
    let relay = relay().await;
    let a = client_window(&relay, "alice", 64 * 1024).await;
    let b = client_window(&relay, "bob", 64 * 1024).await;
    let (mut mine, mut theirs) = open_pair(&a, &b, StreamOptions::default()).await;
    mine.write_all(b"ping").await.unwrap();
    mine.shutdown().await.unwrap();
    theirs.write_all(b"pong").await.unwrap();
    theirs.shutdown().await.unwrap();
    let mut got = Vec::new();
    within("bob reads", theirs.read_to_end(&mut got))
        .await
        .unwrap();
    assert_eq!(got, b"ping");
    drop(theirs);
    let mut got = Vec::new();
    within("alice reads", mine.read_to_end(&mut got))
        .await
        .expect("bob's drop after both FINs is no reset");
    assert_eq!(got, b"pong");
    drop(mine);
    all_freed(&relay, &[&a, &b]).await;
}
