//! A loopback TCP proxy whose connections can all be closed at once, to cut a client's link to
//! the relay in the middle of a transfer while both processes stay up.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Bytes each direction of a proxied connection copies at a time.
const COPY_BUF: usize = 64 * 1024;

/// Forwards every connection it accepts to `target`, both ways, until [`CutProxy::cut`].
pub struct CutProxy {
    addr: SocketAddr,
    /// Bumped by every cut; each connection watches it and ends when it moves.
    cuts: watch::Sender<u64>,
    /// Connections being carried now.
    live: Arc<AtomicUsize>,
    listener: tokio::task::JoinHandle<()>,
}

impl CutProxy {
    pub async fn start(target: SocketAddr) -> CutProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a free port");
        let addr = listener.local_addr().expect("a bound address");
        let (cuts, _) = watch::channel(0u64);
        let live = Arc::new(AtomicUsize::new(0));
        let (watching, counting) = (cuts.clone(), live.clone());
        let listener = tokio::spawn(async move {
            loop {
                let Ok((client_side, _)) = listener.accept().await else {
                    return;
                };
                let mut cut = watching.subscribe();
                cut.mark_unchanged();
                let live = counting.clone();
                live.fetch_add(1, Ordering::AcqRel);
                tokio::spawn(async move {
                    if let Ok(relay_side) = TcpStream::connect(target).await {
                        let (mut a, mut b) = (client_side, relay_side);
                        let _ = a.set_nodelay(true);
                        let _ = b.set_nodelay(true);
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional_with_sizes(
                                &mut a, &mut b, COPY_BUF, COPY_BUF,
                            ) => {}
                            _ = cut.changed() => {}
                        }
                        // Both sockets close here: each end sees its connection drop.
                    }
                    live.fetch_sub(1, Ordering::AcqRel);
                });
            }
        });
        CutProxy {
            addr,
            cuts,
            live,
            listener,
        }
    }

    /// Where clients connect: `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Closes every connection the proxy carries now, both sides; bytes on their way are lost.
    /// New connections are carried as before. Returns how many connections were live.
    pub fn cut(&self) -> usize {
        let live = self.live.load(Ordering::Acquire);
        self.cuts.send_modify(|n| *n += 1);
        live
    }
}

impl Drop for CutProxy {
    fn drop(&mut self) {
        self.listener.abort();
        self.cut();
    }
}
