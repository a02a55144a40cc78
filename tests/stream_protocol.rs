//! A misbehaving stream peer, speaking the wire protocol by hand: the relay cuts the stream off
//! with a protocol error and the well-behaved end sees a clear `io::Error`.

mod common;
use bytes::Bytes;
use common::*;
use futures::FutureExt;
use rust_socketio::asynchronous::{Client as SioClient, ClientBuilder};
use rust_socketio::{Payload, TransportType};
use serde_json::{json, Value};
use socketio_p2p::stream::frame::{Frame, FRAME_EVENT};
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;

/// A hand-driven extension client: every text event and every binary frame it receives.
struct Raw {
    sio: SioClient,
    texts: mpsc::UnboundedReceiver<(String, Vec<Value>)>,
    frames: mpsc::UnboundedReceiver<Frame>,
}

async fn raw(url: &str, id: &str) -> Raw {
    let (ttx, texts) = mpsc::unbounded_channel();
    let (ftx, frames) = mpsc::unbounded_channel();
    let sio = ClientBuilder::new(format!("{url}?clientId={id}&p2pExt=1"))
        .transport_type(TransportType::Websocket)
        .reconnect(false)
        .on_any(move |ev, p, _| {
            match p {
                Payload::Text(v) => {
                    let _ = ttx.send((String::from(ev), v));
                }
                Payload::Binary(b) => {
                    if let Ok(f) = Frame::decode(b) {
                        let _ = ftx.send(f);
                    }
                }
                #[allow(deprecated)]
                Payload::String(_) => {}
            }
            futures::future::ready(()).boxed()
        })
        .connect()
        .await
        .expect("raw client connects");
    let mut r = Raw { sio, texts, frames };
    let (ev, _) = r.next_text().await;
    assert_eq!(ev, "P2P_WELCOME");
    r
}

impl Raw {
    async fn next_text(&mut self) -> (String, Vec<Value>) {
        within("a text event", self.texts.recv())
            .await
            .expect("open")
    }

    async fn next_frame(&mut self) -> Frame {
        within("a stream frame", self.frames.recv())
            .await
            .expect("open")
    }

    /// Opens a credit-mode stream to `target`; returns (route, the target's window).
    async fn open(&mut self, target: &str, window: u32) -> (u64, u64) {
        let info = json!({"sourceStreamId": "s1", "targetStreamId": "t1",
                          "targetClientId": target, "window": window});
        self.sio
            .emit(
                "P2P_REQ",
                Payload::Text(vec![json!(1), json!("MULTI_API_CREATE_STREAM"), info]),
            )
            .await
            .unwrap();
        loop {
            let (ev, args) = self.next_text().await;
            if ev == "P2P_RES" && args[0] == json!(1) {
                let ok = &args[1]["ok"][0];
                return (
                    ok["route"].as_u64().unwrap(),
                    ok["window"].as_u64().unwrap(),
                );
            }
        }
    }

    async fn send(&self, frame: Bytes) {
        self.sio
            .emit(FRAME_EVENT, Payload::Binary(frame))
            .await
            .unwrap();
    }
}

fn assert_protocol_reset(f: Frame, route: u64) {
    match f {
        Frame::Reset {
            route: r,
            code,
            reason,
        } => {
            assert_eq!(r, route);
            assert_eq!(
                code,
                socketio_p2p::stream::frame::code::PROTOCOL,
                "{reason}"
            );
            assert!(reason.contains("protocol violation"), "{reason}");
        }
        other => panic!("expected a RESET, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_beyond_the_credit_resets_the_stream() {
    let relay = relay().await;
    let bob = client(&relay, "bob").await;
    let mut incoming = bob.incoming_streams(None);
    let mut mallory = raw(&relay.url(), "mallory").await;
    let (route, window) = mallory.open("bob", 1 << 16).await;
    let mut at_bob = within("bob accepts", incoming.next()).await.unwrap();

    // Within the credit: delivered.
    mallory.send(Frame::data_from_slice(route, b"fine")).await;
    let mut buf = [0u8; 4];
    within("bob reads", at_bob.read_exact(&mut buf))
        .await
        .unwrap();
    assert_eq!(&buf, b"fine");

    // One byte past what bob granted: the relay cuts the stream off at both ends.
    let too_much = vec![7u8; window as usize];
    mallory.send(Frame::data_from_slice(route, &too_much)).await;
    assert_protocol_reset(mallory.next_frame().await, route);
    let err = within("bob's read fails", at_bob.read(&mut buf))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("protocol violation"), "{err}");
    eventually("the route is gone", || relay.server().stream_count() == 0).await;
    eventually("bob forgot the stream", || bob.stream_count() == 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_impossible_grant_resets_the_stream() {
    let relay = relay().await;
    let bob = client(&relay, "bob").await;
    let mut incoming = bob.incoming_streams(None);
    let mut mallory = raw(&relay.url(), "mallory").await;
    let (route, _) = mallory.open("bob", 1 << 16).await;
    let mut at_bob = within("bob accepts", incoming.next()).await.unwrap();
    // A grant that would lift bob's credit past 2^31 - 1.
    mallory
        .send(
            Frame::Window {
                route,
                increment: u32::MAX,
            }
            .encode(),
        )
        .await;
    assert_protocol_reset(mallory.next_frame().await, route);
    let mut buf = [0u8; 1];
    assert!(within("bob's read fails", at_bob.read(&mut buf))
        .await
        .is_err());
    eventually("the route is gone", || relay.server().stream_count() == 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_for_someone_elses_route_are_refused() {
    let relay = relay().await;
    let bob = client(&relay, "bob").await;
    let mut incoming = bob.incoming_streams(None);
    let mut mallory = raw(&relay.url(), "mallory").await;
    let (route, _) = mallory.open("bob", 1 << 16).await;
    let mut at_bob = within("bob accepts", incoming.next()).await.unwrap();
    // A third client tries to write into the stream between mallory and bob.
    let mut eve = raw(&relay.url(), "eve").await;
    eve.send(Frame::data_from_slice(route, b"injected")).await;
    loop {
        let (ev, args) = eve.next_text().await;
        if ev == "SERVER_ERROR" {
            assert!(args[0].as_str().unwrap().contains("not yours"), "{args:?}");
            break;
        }
    }
    // The stream is untouched: mallory's bytes still arrive, and only them.
    mallory.send(Frame::data_from_slice(route, b"real")).await;
    mallory.send(Frame::Fin { route }.encode()).await;
    let mut got = Vec::new();
    within("bob reads to EOF", at_bob.read_to_end(&mut got))
        .await
        .unwrap();
    assert_eq!(got, b"real");
}
