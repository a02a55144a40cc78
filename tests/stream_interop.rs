//! Streams between a Rust client and a seed-era JavaScript client (socket.io-client 2.x with the
//! seed's stop-and-wait stream protocol, `interop/stream-interop.js`), in both directions.

mod common;
use common::*;
use socketio_p2p::P2pDuplex;
use std::io;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SIZE: usize = 1 << 20;

/// Byte `i` of the pattern `seed`, as `patternByte` in `interop/stream-interop.js`.
fn pattern(seed: usize) -> Vec<u8> {
    (0..SIZE)
        .map(|i| ((i * 131 + seed * 17 + (i >> 11)) & 0xff) as u8)
        .collect()
}

fn check(what: &str, got: &[u8], seed: usize) {
    assert_eq!(got.len(), SIZE, "{what}: length");
    let want = pattern(seed);
    if let Some(i) = (0..SIZE).find(|&i| got[i] != want[i]) {
        panic!(
            "{what}: byte {i} is {:#04x}, expected {:#04x}",
            got[i], want[i]
        );
    }
}

async fn read_all(d: &mut P2pDuplex, what: &str) -> Vec<u8> {
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), d.read_to_end(&mut got))
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    got
}

async fn write_until_error(d: &mut P2pDuplex) -> io::Error {
    let chunk = vec![0x1e_u8; 4096];
    loop {
        if let Err(e) = d.write_all(&chunk).await {
            return e;
        }
    }
}

/// JavaScript sends its chunks as JSON arrays of numbers, which seed-era receivers also accept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_and_seed_javascript_stream_both_ways_json_chunks() {
    exchange(&["--json-chunks"]).await;
}

/// JavaScript sends its chunks as Buffers (Socket.IO binary attachments), as the seed did.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_and_seed_javascript_stream_both_ways_buffer_chunks() {
    exchange(&[]).await;
}

/// Runs `interop/stream-interop.js` (see its header) and plays rust-peer's part.
async fn exchange(node_args: &[&str]) {
    let relay = relay().await;
    let rust = client(&relay, "rust-peer").await;
    let mut incoming = rust.incoming_streams(None);

    let (line_tx, mut line_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let mut args = vec![relay.url()];
    args.extend(node_args.iter().map(|a| a.to_string()));
    let node = tokio::spawn(async move {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run_node(
            "stream-interop.js",
            &args,
            Duration::from_secs(90),
            move |l| {
                println!("stream-interop: {l}");
                let _ = line_tx.send(l.to_string());
            },
        )
        .await
    });

    // 1. JavaScript opens a stream: check its bytes, answer on the same stream.
    let mut s1 = within("js opens a stream", incoming.next()).await.unwrap();
    assert_eq!(s1.peer_id(), "js-peer");
    assert!(
        s1.info().seed_mode,
        "a seed-era opener gets a seed-mode stream"
    );
    let got = read_all(&mut s1, "js -> rust").await;
    check("js -> rust on js's stream", &got, 1);
    tokio::time::timeout(Duration::from_secs(30), async {
        s1.write_all(&pattern(2)).await?;
        s1.shutdown().await
    })
    .await
    .expect("rust -> js in time")
    .expect("rust -> js on js's stream");

    // 2. Rust opens a stream once JavaScript accepts streams.
    loop {
        let line = within("js accepts streams", line_rx.recv()).await.unwrap();
        assert!(!line.starts_with("FAIL"), "{line}");
        if line == "LISTENING" {
            break;
        }
    }
    let mut s2 = within("rust opens a stream", rust.add_p2p_stream("js-peer"))
        .await
        .expect("js accepts");
    assert!(
        s2.info().seed_mode,
        "a seed-era acceptor answers without a window"
    );
    assert_eq!(s2.peer_id(), "js-peer");
    tokio::time::timeout(Duration::from_secs(30), async {
        s2.write_all(&pattern(3)).await?;
        s2.shutdown().await
    })
    .await
    .expect("rust -> js in time")
    .expect("rust -> js on rust's stream");
    let got = read_all(&mut s2, "js -> rust on rust's stream").await;
    check("js -> rust on rust's stream", &got, 4);

    // 3. JavaScript destroys a stream Rust writes to.
    let mut s3 = within("rust opens a stream", rust.add_p2p_stream("js-peer"))
        .await
        .expect("js accepts");
    let e = within("the write fails", write_until_error(&mut s3)).await;
    assert!(e.to_string().contains("destroyed by 'js-peer'"), "{e}");
    assert_eq!(e.kind(), io::ErrorKind::ConnectionReset, "{e}");

    // 4. Rust drops a stream JavaScript writes to.
    let mut s4 = within("js opens a stream", incoming.next()).await.unwrap();
    let mut some = vec![0u8; 40_000];
    within("rust reads", s4.read_exact(&mut some))
        .await
        .unwrap();
    assert!(some.iter().all(|&b| b == 0x1e));
    drop(s4);

    let (status, lines) = within("node finishes", node).await.unwrap();
    let failed: Vec<_> = lines.iter().filter(|l| l.starts_with("FAIL")).collect();
    assert!(failed.is_empty(), "{failed:?}");
    assert!(status.success(), "stream-interop.js exited with {status}");
    assert_eq!(lines.last().map(String::as_str), Some("DONE"));
    assert!(lines
        .iter()
        .any(|l| l.contains("1048576 bytes received and verified")));
    assert!(lines
        .iter()
        .any(|l| l.contains("rust drops a stream js writes to: stream destroyed by 'rust-peer'")));
    drop((s1, s2, s3));
    eventually("rust's streams are freed", || rust.stream_count() == 0).await;
    assert_eq!(relay.server().stream_count(), 0);
}
