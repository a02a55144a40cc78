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

/// Reads until the stream fails; the error (bounded).
async fn read_error(d: &mut socketio_p2p::P2pDuplex) -> std::io::Error {
    let mut buf = [0u8; 256];
    within("the read fails", async {
        loop {
            match d.read(&mut buf).await {
                Ok(0) => panic!("the read ended cleanly; it should have failed"),
                Ok(_) => {}
                Err(e) => return e,
            }
        }
    })
    .await
}

/// A Socket.IO packet a peer would like the receiver to take as the server's.
const FORGED: &[u8] = b"42[\"SERVER_ERROR\",\"forged\"]";

/// Builds a frame for a route.
type MakeFrame = fn(u64) -> Bytes;

/// A frame with bytes appended after its encoding.
fn with_tail(frame: Bytes, tail: &[u8]) -> Bytes {
    let mut v = frame.to_vec();
    v.extend_from_slice(tail);
    Bytes::from(v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raw_0x1e_in_a_frame_never_reaches_the_receiver_as_a_server_event() {
    // Where a peer may try to put the separator: a DATA body, a RESET reason, after a FIN or a
    // WINDOW header.
    let cases: [(&str, MakeFrame); 4] = [
        ("DATA body", |route| {
            let mut body = b"ab\x1e".to_vec();
            body.extend_from_slice(FORGED);
            let mut v = format!("D{route:016x}{:08x}", body.len()).into_bytes();
            v.extend_from_slice(&body);
            Bytes::from(v)
        }),
        ("RESET reason", |route| {
            let mut v = format!("R{route:016x}{:08x}bye\x1e", 0).into_bytes();
            v.extend_from_slice(FORGED);
            Bytes::from(v)
        }),
        ("after FIN", |route| {
            let mut tail = b"\x1e".to_vec();
            tail.extend_from_slice(FORGED);
            with_tail(Frame::Fin { route }.encode(), &tail)
        }),
        ("after WINDOW", |route| {
            let mut tail = b"\x1e".to_vec();
            tail.extend_from_slice(FORGED);
            with_tail(
                Frame::Window {
                    route,
                    increment: 1,
                }
                .encode(),
                &tail,
            )
        }),
    ];
    let relay = relay().await;
    let bob = client(&relay, "bob").await;
    let errors = Log::new();
    let e = errors.clone();
    bob.on_server_error(move |t| e.push(t));
    let mut incoming = bob.incoming_streams(None);
    let mut mallory = raw(&relay.url(), "mallory").await;
    for (what, make) in cases {
        let (route, _) = mallory.open("bob", 1 << 16).await;
        let mut at_bob = within("bob accepts", incoming.next()).await.unwrap();
        mallory.send(make(route)).await;
        let f = mallory.next_frame().await;
        assert!(
            matches!(&f, Frame::Reset { code, .. } if *code == socketio_p2p::stream::frame::code::PROTOCOL),
            "{what}: the sender gets a protocol RESET, got {f:?}"
        );
        let err = read_error(&mut at_bob).await;
        assert!(
            err.to_string().contains("protocol violation"),
            "{what}: {err}"
        );
        eventually("the route is gone", || relay.server().stream_count() == 0).await;
    }
    // Let anything forged arrive if it was going to.
    assert_relay_works(&relay, "c1", "c2").await;
    assert!(
        errors.get().iter().all(|t| !t.contains("forged")),
        "a forged server event reached bob: {:?}",
        errors.get()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_body_that_does_not_decode_fails_both_ends() {
    let relay = relay().await;
    let bob = client(&relay, "bob").await;
    let mut incoming = bob.incoming_streams(None);
    let mut mallory = raw(&relay.url(), "mallory").await;
    let (route, _) = mallory.open("bob", 1 << 16).await;
    let mut at_bob = within("bob accepts", incoming.next()).await.unwrap();

    mallory.send(Frame::data_from_slice(route, b"hello")).await;
    // Declares 4 bytes, carries 5 that do not decode (an escape byte with no meaning).
    let mut bad = format!("D{route:016x}{:08x}", 4).into_bytes();
    bad.extend_from_slice(b"\x1d\x03abc");
    mallory.send(Bytes::from(bad)).await;
    mallory.send(Frame::data_from_slice(route, b"world")).await;
    mallory.send(Frame::Fin { route }.encode()).await;

    let mut got = Vec::new();
    let read = within("bob reads", at_bob.read_to_end(&mut got)).await;
    let err = read.expect_err("a stream with a broken frame must not read as complete");
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidData, "{err}");
    assert!(err.to_string().contains("protocol violation"), "{err}");
    assert_protocol_reset(mallory.next_frame().await, route);
    eventually("the route is gone", || relay.server().stream_count() == 0).await;
    eventually("bob forgot the stream", || bob.stream_count() == 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_frames_that_cannot_reach_the_opener_tear_the_route_down() {
    // Sends to a client fail once 16 packets wait for it.
    let relay = relay_with(socketio_p2p::RelayOptions {
        max_buffer_size: 16,
        ..Default::default()
    })
    .await;
    let alice = client(&relay, "alice").await;
    let mut mallory = raw(&relay.url(), "mallory").await;
    let opener = {
        let alice = alice.clone();
        tokio::spawn(async move { alice.add_p2p_stream("mallory").await })
    };
    // Mallory sends a burst before answering: the relay holds it and sends it to alice in one go
    // right after the answer, more than alice's send buffer takes.
    let (req, route) = loop {
        let (ev, args) = mallory.next_text().await;
        if ev == "P2P_REQ" && args[1] == json!("MULTI_API_CREATE_STREAM") {
            break (args[0].clone(), args[2]["route"].as_u64().unwrap());
        }
    };
    for _ in 0..64 {
        mallory
            .send(Frame::data_from_slice(route, &[b'x'; 1000]))
            .await;
    }
    mallory.send(Frame::Fin { route }.encode()).await;
    // Let the relay take the frames before the answer.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    mallory
        .sio
        .emit(
            "P2P_RES",
            Payload::Text(vec![req, json!({"ok": [{"window": 1 << 20}]})]),
        )
        .await
        .unwrap();
    // The relay could not pass everything on: the stream is over at both ends, not left with a
    // hole in the middle.
    match mallory.next_frame().await {
        Frame::Reset { route: r, code, .. } => {
            assert_eq!(r, route);
            assert_eq!(code, socketio_p2p::stream::frame::code::RELAY);
        }
        other => panic!("expected a RESET, got {other:?}"),
    }
    eventually("the route is gone", || relay.server().stream_count() == 0).await;
    if let Ok(Ok(mut d)) = within("the open resolves", opener).await {
        let mut got = Vec::new();
        let r =
            tokio::time::timeout(std::time::Duration::from_secs(2), d.read_to_end(&mut got)).await;
        assert!(
            !matches!(r, Ok(Ok(_))),
            "the stream read as complete with {} of 64000 bytes",
            got.len()
        );
    }
}
