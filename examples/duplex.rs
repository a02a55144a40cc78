//! Talking over a byte stream, as the seed's interact-with-duplex example did: one client opens a
//! stream to another, writes lines and reads the answers; the other answers each line until the
//! opener shuts its direction down, then ends its own.
//!
//! Run with `cargo run --example duplex`.

use socketio_p2p::{P2pClient, Relay, StreamOptions};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::time::timeout;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let relay = Relay::bind("127.0.0.1:0").await?;
    println!("relay listening on {}", relay.url());
    let asker = P2pClient::connect(&relay.url(), "asker").await?;
    let answerer = P2pClient::connect(&relay.url(), "answerer").await?;

    // The answerer takes every stream opened to it and answers line by line.
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
    answerer.on_add_p2p_stream(None, move |duplex| {
        let done = done_tx.clone();
        tokio::spawn(async move {
            println!(
                "[answerer] stream {} from '{}' with {}",
                duplex.stream_id(),
                duplex.peer_id(),
                duplex.args()
            );
            let (read, mut write) = tokio::io::split(duplex);
            let mut lines = BufReader::new(read).lines();
            let mut n = 0;
            while let Some(line) = lines.next_line().await? {
                n += 1;
                println!("[answerer] got: {line}");
                let answer = format!(
                    "#{n}: {} characters, upper case {}\n",
                    line.len(),
                    line.to_uppercase()
                );
                write.write_all(answer.as_bytes()).await?;
            }
            println!("[answerer] the asker is done; ending my side");
            write.shutdown().await?;
            let _ = done.send(());
            std::io::Result::Ok(())
        });
    });

    let opts = StreamOptions {
        args: serde_json::json!({ "purpose": "questions" }),
        ..StreamOptions::default()
    };
    let duplex = asker.add_p2p_stream_with("answerer", opts).await?;
    println!(
        "[asker] stream {} open to '{}'",
        duplex.stream_id(),
        duplex.peer_id()
    );
    let (read, mut write) = tokio::io::split(duplex);
    let mut answers = BufReader::new(read).lines();
    for question in ["hello", "how does a duplex work?", "bye"] {
        println!("[asker] sending: {question}");
        write.write_all(format!("{question}\n").as_bytes()).await?;
        let answer = timeout(Duration::from_secs(5), answers.next_line())
            .await??
            .ok_or("the answerer ended early")?;
        println!("[asker] answer: {answer}");
    }
    // Half-close: the answerer reads EOF, ends its side, and this side reads EOF too.
    write.shutdown().await?;
    let rest = timeout(Duration::from_secs(5), answers.next_line()).await??;
    assert!(rest.is_none());
    println!("[asker] the answerer ended its side too");
    timeout(Duration::from_secs(5), done_rx.recv()).await?;

    drop((answers, write));
    asker.disconnect().await?;
    answerer.disconnect().await?;
    relay.shutdown().await;
    Ok(())
}
