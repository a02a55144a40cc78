//! A ready-to-run relay: socketioxide hosted in axum on a TCP listener, with the P2P plugin
//! attached. Used by the `socketio-p2p serve` command, the examples and the tests.
//!
//! Besides Socket.IO (under `/socket.io/`), the relay answers two plain HTTP requests on the same
//! port, for an operator: `GET /healthz` (`200 ok` while it serves) and `GET /metrics` (its
//! metrics in the Prometheus text format, see [`P2pServer::metrics_text`]).

use crate::server::{P2pServer, ServerOptions, WriteCounter, WriteCounters, METRICS_CONTENT_TYPE};
use axum::extract::connect_info::{ConnectInfo, Connected};
use axum::serve::IncomingStream;
use socketioxide::{ParserConfig, SocketIo};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream, ToSocketAddrs};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Settings of a [`Relay`].
#[derive(Debug, Clone)]
pub struct RelayOptions {
    /// Settings of the P2P plugin.
    pub server: ServerOptions,
    /// Packets socketioxide may queue for one client before an emit to it fails with "busy".
    /// Default 65,536. socketioxide's own default is 128, too few for a relay that forwards
    /// floods. The bytes those packets hold are bounded by [`ServerOptions::max_queued_bytes`],
    /// counted on the connections this relay accepts; this count bounds the rest (about a
    /// hundred bytes of bookkeeping per queued packet). Keep it above
    /// [`event_burst`](ServerOptions::event_burst) plus
    /// [`flood_disconnect_after`](ServerOptions::flood_disconnect_after): a client that sends a
    /// burst before it reads anything is owed one answer per event, and an answer that finds the
    /// queue full disconnects it (before it could be told why).
    pub max_buffer_size: usize,
    /// Largest Engine.IO payload accepted from a client, in bytes: one long-polling request's
    /// body, one WebSocket message, and the binary attachments of one Socket.IO packet. A
    /// connection that sends more is closed (socketioxide's rule); the WebSocket transport checks
    /// a frame's length from its header, before reading it. Default 16 MiB.
    pub max_payload: u64,
}

impl Default for RelayOptions {
    fn default() -> Self {
        RelayOptions {
            server: ServerOptions::default(),
            max_buffer_size: 65_536,
            max_payload: 16 << 20,
        }
    }
}

/// A running relay server.
pub struct Relay {
    addr: SocketAddr,
    server: P2pServer,
    io: SocketIo,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl Relay {
    /// Binds `addr` and starts serving with default options.
    pub async fn bind(addr: impl ToSocketAddrs) -> crate::Result<Relay> {
        Relay::bind_with(addr, RelayOptions::default()).await
    }

    /// Binds `addr` and starts serving.
    /// A failure to bind is [`Error::Io`](crate::Error::Io), its cause kept.
    pub async fn bind_with(addr: impl ToSocketAddrs, opts: RelayOptions) -> crate::Result<Relay> {
        let listener = TcpListener::bind(addr).await?;
        Ok(Relay::serve(listener, opts))
    }

    /// Serves on an already bound listener.
    pub fn serve(listener: TcpListener, opts: RelayOptions) -> Relay {
        let addr = listener
            .local_addr()
            .expect("a bound TCP listener has a local address");
        // engineioxide applies `max_payload` to long polling only; WebSocket messages have limits
        // of their own (64 MiB by default), and so do a packet's binary attachments (10 MB).
        let max_payload = usize::try_from(opts.max_payload).unwrap_or(usize::MAX);
        let (layer, io) = SocketIo::builder()
            .max_buffer_size(opts.max_buffer_size)
            .max_payload(opts.max_payload)
            .ws_max_message_size(max_payload)
            .ws_max_frame_size(max_payload)
            .with_parser(ParserConfig::common().max_incoming_binary_buf_size(max_payload))
            .ack_timeout(opts.server.reply_timeout)
            .build_layer();
        let server = P2pServer::attach(&io, opts.server);
        let conns = server.inner.conns.clone();
        let metrics = server.clone();
        let app = axum::Router::new()
            .route("/healthz", axum::routing::get(|| async { "ok\n" }))
            .route(
                "/metrics",
                axum::routing::get(move || {
                    let server = metrics.clone();
                    async move {
                        let content_type = (axum::http::header::CONTENT_TYPE, METRICS_CONTENT_TYPE);
                        ([content_type], server.metrics_text().await)
                    }
                }),
            )
            .layer(layer)
            .layer(axum::middleware::map_request(
                move |mut req: axum::extract::Request| {
                    note_upgrade(&conns, &req);
                    // The remote address, for the relay's per-address connection limit.
                    let peer = req
                        .extensions()
                        .get::<ConnectInfo<WriteCounter>>()
                        .and_then(|c| c.0.peer());
                    if let Some(peer) = peer {
                        req.extensions_mut().insert(peer);
                    }
                    std::future::ready(req)
                },
            ))
            .into_make_service_with_connect_info::<WriteCounter>();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            axum::serve(CountingListener(listener), app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await
        });
        tracing::info!(%addr, "relay listening");
        Relay {
            addr,
            server,
            io,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// The address the relay listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The URL clients connect to, e.g. `http://127.0.0.1:9000`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The P2P plugin of this relay.
    pub fn server(&self) -> &P2pServer {
        &self.server
    }

    /// The socketioxide instance, to add handlers of one's own.
    pub fn io(&self) -> &SocketIo {
        &self.io
    }

    /// Disconnects every client and stops listening.
    pub async fn shutdown(mut self) {
        self.stop_now().await;
    }

    async fn stop_now(&mut self) {
        self.server.disconnect_all();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            // Upgraded WebSocket connections may outlive the HTTP server's graceful stop; they
            // were told to disconnect above, so do not wait for them for long.
            match tokio::time::timeout(Duration::from_secs(2), task).await {
                Ok(Ok(Err(e))) => tracing::warn!("relay stopped with an error: {e}"),
                Ok(_) => {}
                Err(_) => tracing::debug!("relay connections still closing after 2 s"),
            }
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.server.disconnect_all();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// The relay's listener: each accepted connection counts the bytes written to it (the byte
/// budget's release, see [`ServerOptions::max_queued_bytes`]), and small frames (replies, credit
/// grants) do not wait for Nagle's algorithm.
struct CountingListener(TcpListener);

impl axum::serve::Listener for CountingListener {
    type Io = Counted;
    type Addr = (SocketAddr, WriteCounter);

    async fn accept(&mut self) -> (Counted, Self::Addr) {
        let (tcp, addr) = axum::serve::Listener::accept(&mut self.0).await;
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!("could not set TCP_NODELAY: {e}");
        }
        let counter = WriteCounter::for_peer(addr);
        (
            Counted {
                tcp,
                written: counter.clone(),
            },
            (addr, counter),
        )
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok((self.0.local_addr()?, WriteCounter::default()))
    }
}

impl Connected<IncomingStream<'_, CountingListener>> for WriteCounter {
    fn connect_info(stream: IncomingStream<'_, CountingListener>) -> Self {
        stream.remote_addr().1.clone()
    }
}

/// Records which connection a WebSocket upgrade (`transport=websocket&sid=...`) travels on.
fn note_upgrade(conns: &WriteCounters, req: &axum::extract::Request) {
    let Some(query) = req.uri().query() else {
        return;
    };
    let mut websocket = false;
    let mut sid = None;
    for kv in query.split('&') {
        match kv.split_once('=') {
            Some(("transport", "websocket")) => websocket = true,
            Some(("sid", v)) => sid = Some(v),
            _ => {}
        }
    }
    if let (true, Some(sid), Some(ConnectInfo(counter))) = (
        websocket,
        sid,
        req.extensions().get::<ConnectInfo<WriteCounter>>(),
    ) {
        conns.upgraded(sid, counter.clone());
    }
}

/// A TCP stream that counts the bytes written to it.
struct Counted {
    tcp: TcpStream,
    written: WriteCounter,
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.tcp).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            self.written.add(n);
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = r {
            self.written.add(n);
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}
