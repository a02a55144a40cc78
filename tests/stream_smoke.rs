mod common;
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_mib_both_ways() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .try_init();
    let relay = relay().await;
    let a = client(&relay, "alice").await;
    let b = client(&relay, "bob").await;
    let mut incoming = b.incoming_streams(None);
    let opener = tokio::spawn({
        let a = a.clone();
        async move { a.add_p2p_stream("bob").await }
    });
    let mut theirs = within("accept", incoming.next()).await.unwrap();
    let mut mine = within("open", opener).await.unwrap().unwrap();
    assert!(!mine.info().seed_mode);
    let data: Vec<u8> = (0..1 << 20).map(|i| (i * 7 % 251) as u8).collect();
    let d2 = data.clone();
    let w = tokio::spawn(async move {
        mine.write_all(&d2).await.unwrap();
        mine.shutdown().await.unwrap();
        let mut back = Vec::new();
        mine.read_to_end(&mut back).await.unwrap();
        back
    });
    let mut got = Vec::new();
    within("read", theirs.read_to_end(&mut got)).await.unwrap();
    assert_eq!(got.len(), data.len());
    assert!(got == data);
    theirs.write_all(b"thanks").await.unwrap();
    theirs.shutdown().await.unwrap();
    let back = within("reply", w).await.unwrap();
    assert_eq!(back, b"thanks");
    eventually("streams freed", || {
        a.stream_count() == 0 && b.stream_count() == 0 && relay.server().stream_count() == 0
    })
    .await;
}
