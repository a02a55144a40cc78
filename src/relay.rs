//! A ready-to-run relay: socketioxide hosted in axum on a TCP listener, with the P2P plugin
//! attached. Used by the `socketio-p2p serve` command, the examples and the tests.
//!
//! Besides Socket.IO (under `/socket.io/`), the relay answers two plain HTTP requests on the same
//! port, for an operator: `GET /healthz` (`200 ok` while it serves) and `GET /metrics` (its
//! metrics in the Prometheus text format, see [`P2pServer::metrics_text`]).
//!
//! With [`RelayOptions::tls`] set the relay serves all of it over TLS (rustls) on the same port,
//! and its [`url`](Relay::url) starts with `https://`. Handshakes run apart from the accept loop,
//! at most [`MAX_TLS_HANDSHAKES`] at once, each given [`TLS_HANDSHAKE_TIMEOUT`]; a connection
//! that fails its handshake is closed and logged at debug level.

use crate::cluster::ClusterOptions;
use crate::server::{P2pServer, ServerOptions, WriteCounter, WriteCounters, METRICS_CONTENT_TYPE};
use axum::extract::connect_info::{ConnectInfo, Connected};
use axum::serve::IncomingStream;
use socketioxide::{ParserConfig, SocketIo};
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream, ToSocketAddrs};
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::task::JoinHandle;
use tokio_rustls::rustls;
use tokio_rustls::TlsAcceptor;

/// TLS handshakes the relay runs at once; further connections wait, unaccepted, until one ends.
pub const MAX_TLS_HANDSHAKES: usize = 256;

/// How long a connection has to finish its TLS handshake before the relay closes it.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The relay's TLS certificate and private key, for [`RelayOptions::tls`].
///
/// Built from PEM: the certificate chain (the relay's certificate first, then any intermediate
/// certificates) and its private key (PKCS#8, PKCS#1 or SEC1). TLS 1.2 and 1.3 are offered, with
/// rustls' safe defaults; client certificates are not asked for.
#[derive(Clone)]
pub struct TlsConfig {
    server: Arc<rustls::ServerConfig>,
}

impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key is a secret: say only that there is one.
        f.debug_struct("TlsConfig").finish_non_exhaustive()
    }
}

impl TlsConfig {
    /// A configuration from a PEM certificate chain and a PEM private key.
    ///
    /// Fails with [`Error::Io`](crate::Error::Io) (kind `InvalidData`) when the chain holds no
    /// certificate, the key is missing or unreadable, or the key does not match the certificate.
    pub fn from_pem(cert_chain: &[u8], key: &[u8]) -> crate::Result<TlsConfig> {
        use rustls_pki_types::pem::PemObject;
        use rustls_pki_types::{CertificateDer, PrivateKeyDer};
        let certs = CertificateDer::pem_slice_iter(cert_chain)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| invalid(format!("cannot read the TLS certificate chain: {e}")))?;
        if certs.is_empty() {
            return Err(
                invalid("the TLS certificate chain holds no PEM certificate".into()).into(),
            );
        }
        let key = PrivateKeyDer::from_pem_slice(key)
            .map_err(|e| invalid(format!("cannot read the TLS private key: {e}")))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut server = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| invalid(format!("TLS setup: {e}")))?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| {
                invalid(format!(
                    "the TLS certificate and key do not go together: {e}"
                ))
            })?;
        server.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(TlsConfig {
            server: Arc::new(server),
        })
    }

    /// A configuration from a PEM certificate chain file and a PEM private key file. The error
    /// names the file that could not be read or used.
    pub fn from_pem_files(
        cert_chain: impl AsRef<Path>,
        key: impl AsRef<Path>,
    ) -> crate::Result<TlsConfig> {
        let (cert_path, key_path) = (cert_chain.as_ref(), key.as_ref());
        let read = |path: &Path| {
            std::fs::read(path).map_err(|e| {
                crate::Error::from(io::Error::new(
                    e.kind(),
                    format!("cannot read {}: {e}", path.display()),
                ))
            })
        };
        let (cert, key) = (read(cert_path)?, read(key_path)?);
        TlsConfig::from_pem(&cert, &key).map_err(|e| match e {
            crate::Error::Io(io) => invalid(format!(
                "{} and {}: {io}",
                cert_path.display(),
                key_path.display()
            ))
            .into(),
            other => other,
        })
    }
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

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
    /// Serve over TLS with this certificate and key; `None` (the default) serves plain HTTP.
    pub tls: Option<TlsConfig>,
    /// Join the cluster of the relays sharing this Redis (see [`crate::cluster`]); `None` (the
    /// default) runs the relay alone.
    pub cluster: Option<ClusterOptions>,
}

impl Default for RelayOptions {
    fn default() -> Self {
        RelayOptions {
            server: ServerOptions::default(),
            max_buffer_size: 65_536,
            max_payload: 16 << 20,
            tls: None,
            cluster: None,
        }
    }
}

/// A running relay server.
pub struct Relay {
    addr: SocketAddr,
    tls: bool,
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
    /// A failure to bind is [`Error::Io`](crate::Error::Io), its cause kept; a
    /// [`cluster`](RelayOptions::cluster) whose Redis URL cannot be used is
    /// [`Error::Cluster`](crate::Error::Cluster).
    pub async fn bind_with(addr: impl ToSocketAddrs, opts: RelayOptions) -> crate::Result<Relay> {
        if let Some(cluster) = &opts.cluster {
            cluster.check()?;
        }
        let listener = TcpListener::bind(addr).await?;
        Ok(Relay::serve(listener, opts))
    }

    /// Serves on an already bound listener. Must be called within a Tokio runtime.
    ///
    /// A [`cluster`](RelayOptions::cluster) whose Redis URL cannot be used is logged as an
    /// error and the relay runs alone; [`bind_with`](Self::bind_with) refuses it instead.
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
        if let Some(cluster) = opts.cluster {
            if let Err(e) = server.join_cluster(cluster) {
                tracing::error!("the relay runs alone: {e}");
            }
        }
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
        let tls = opts.tls.is_some();
        let listener = match opts.tls {
            None => CountingListener::Plain(listener),
            Some(config) => {
                let (tx, rx) = mpsc::channel(16);
                tokio::spawn(accept_tls(listener, TlsAcceptor::from(config.server), tx));
                CountingListener::Tls { rx, local: addr }
            }
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await
        });
        tracing::info!(%addr, tls, "relay listening");
        Relay {
            addr,
            tls,
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

    /// The URL clients connect to, e.g. `http://127.0.0.1:9000`, or `https://127.0.0.1:9000`
    /// when the relay serves TLS.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
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
        self.server.leave_cluster().await;
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
/// grants) do not wait for Nagle's algorithm. Over TLS the bytes counted are the plaintext ones
/// (what was queued), and connections come from [`accept_tls`] once their handshake is done.
enum CountingListener {
    Plain(TcpListener),
    Tls {
        rx: mpsc::Receiver<(Conn, SocketAddr)>,
        local: SocketAddr,
    },
}

impl axum::serve::Listener for CountingListener {
    type Io = Counted;
    type Addr = (SocketAddr, WriteCounter);

    async fn accept(&mut self) -> (Counted, Self::Addr) {
        let (io, addr) = match self {
            CountingListener::Plain(listener) => {
                let (tcp, addr) = axum::serve::Listener::accept(listener).await;
                set_nodelay(&tcp);
                (Conn::Plain(tcp), addr)
            }
            CountingListener::Tls { rx, .. } => match rx.recv().await {
                Some(conn) => conn,
                // The accepting task is gone, which happens only as the relay stops.
                None => std::future::pending().await,
            },
        };
        let counter = WriteCounter::for_peer(addr);
        (
            Counted {
                io,
                written: counter.clone(),
            },
            (addr, counter),
        )
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        let addr = match self {
            CountingListener::Plain(listener) => listener.local_addr()?,
            CountingListener::Tls { local, .. } => *local,
        };
        Ok((addr, WriteCounter::default()))
    }
}

fn set_nodelay(tcp: &TcpStream) {
    if let Err(e) = tcp.set_nodelay(true) {
        tracing::debug!("could not set TCP_NODELAY: {e}");
    }
}

/// Accepts TCP connections on `listener` and hands each to `ready` once its TLS handshake is
/// done, until `ready`'s receiver is dropped. At most [`MAX_TLS_HANDSHAKES`] run at once, each
/// for at most [`TLS_HANDSHAKE_TIMEOUT`], so a client that connects and stays silent holds the
/// relay for no longer than that, and never holds up the others.
async fn accept_tls(
    mut listener: TcpListener,
    acceptor: TlsAcceptor,
    ready: mpsc::Sender<(Conn, SocketAddr)>,
) {
    let handshakes = Arc::new(Semaphore::new(MAX_TLS_HANDSHAKES));
    loop {
        let permit = tokio::select! {
            _ = ready.closed() => return,
            p = handshakes.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
        };
        let (tcp, addr) = tokio::select! {
            _ = ready.closed() => return,
            a = axum::serve::Listener::accept(&mut listener) => a,
        };
        set_nodelay(&tcp);
        let acceptor = acceptor.clone();
        let ready = ready.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => {
                    // Fails only when the relay is stopping; the connection is then dropped.
                    let _ = ready.send((Conn::Tls(Box::new(tls)), addr)).await;
                }
                Ok(Err(e)) => tracing::debug!(%addr, "TLS handshake failed: {e}"),
                Err(_) => tracing::debug!(
                    %addr,
                    "TLS handshake not done within {TLS_HANDSHAKE_TIMEOUT:?}; closed"
                ),
            }
            drop(permit);
        });
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

/// A connection as the relay accepted it: plain TCP, or TLS over TCP.
enum Conn {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

/// Calls `$method` on the stream inside a [`Conn`].
macro_rules! on_conn {
    ($conn:expr, $s:ident => $e:expr) => {
        match $conn {
            Conn::Plain($s) => $e,
            Conn::Tls($s) => $e,
        }
    };
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        on_conn!(self.get_mut(), s => Pin::new(s).poll_read(cx, buf))
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        on_conn!(self.get_mut(), s => Pin::new(s).poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        on_conn!(self.get_mut(), s => Pin::new(s).poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        on_conn!(self, s => s.is_write_vectored())
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        on_conn!(self.get_mut(), s => Pin::new(s).poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        on_conn!(self.get_mut(), s => Pin::new(s).poll_shutdown(cx))
    }
}

/// A connection that counts the bytes written to it (over TLS, the plaintext bytes).
struct Counted {
    io: Conn,
    written: WriteCounter,
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write(cx, buf);
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
        let r = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = r {
            self.written.add(n);
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
