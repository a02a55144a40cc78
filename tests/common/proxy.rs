//! A TCP proxy on a loopback port in front of the relay, to cut a client's link while both
//! processes stay alive (tests/reconnect.rs, tests/stream_resume.rs, tests/cli.rs).
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

/// Copies both ways, and can cut every connection it carries, refuse new ones for a while, and
/// stop passing on what the relay sends.
pub struct Proxy {
    addr: SocketAddr,
    conns: Arc<Mutex<Vec<AbortHandle>>>,
    refusing: Arc<AtomicBool>,
    /// While set, what the relay sends is not passed on to the client (it is kept back until the
    /// flag clears, or dropped with a cut).
    stalled: Arc<AtomicBool>,
    accept: AbortHandle,
}

impl Proxy {
    pub async fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let conns: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let refusing = Arc::new(AtomicBool::new(false));
        let stalled = Arc::new(AtomicBool::new(false));
        let (c, r, st) = (conns.clone(), refusing.clone(), stalled.clone());
        let accept = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                if r.load(Ordering::Acquire) {
                    // Closed at once: the client's connection attempt fails.
                    drop(inbound);
                    continue;
                }
                let stalled = st.clone();
                let task = tokio::spawn(async move {
                    let Ok(outbound) = TcpStream::connect(target).await else {
                        return;
                    };
                    let (mut from_client, mut to_client) = inbound.into_split();
                    let (mut from_relay, mut to_relay) = outbound.into_split();
                    let up = tokio::io::copy(&mut from_client, &mut to_relay);
                    let down = async {
                        let mut buf = vec![0u8; 16 * 1024];
                        loop {
                            let n = match from_relay.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => n,
                            };
                            while stalled.load(Ordering::Acquire) {
                                tokio::time::sleep(Duration::from_millis(5)).await;
                            }
                            if to_client.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    };
                    tokio::select! {
                        _ = up => {}
                        _ = down => {}
                    }
                });
                c.lock().unwrap().push(task.abort_handle());
            }
        })
        .abort_handle();
        Proxy {
            addr,
            conns,
            refusing,
            stalled,
            accept,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Closes every connection the proxy carries, on both sides; what was on its way is lost.
    pub fn cut(&self) {
        for c in self.conns.lock().unwrap().drain(..) {
            c.abort();
        }
    }

    /// Whether the proxy carries a connection (cut ones are forgotten by [`Proxy::cut`]).
    pub fn carries_any(&self) -> bool {
        !self.conns.lock().unwrap().is_empty()
    }

    /// Whether what the relay sends stops short of the client, kept back until this is cleared.
    pub fn stall(&self, on: bool) {
        self.stalled.store(on, Ordering::Release);
    }

    /// Whether new connections are closed as soon as they come.
    pub fn refuse(&self, on: bool) {
        self.refusing.store(on, Ordering::Release);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}
