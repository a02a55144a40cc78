//! A ready-to-run relay: socketioxide hosted in axum on a TCP listener, with the P2P plugin
//! attached. Used by the `socketio-p2p serve` command, the examples and the tests.

use crate::server::{P2pServer, ServerOptions};
use axum::serve::ListenerExt;
use socketioxide::SocketIo;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::{TcpListener, ToSocketAddrs};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Settings of a [`Relay`].
#[derive(Debug, Clone)]
pub struct RelayOptions {
    /// Settings of the P2P plugin.
    pub server: ServerOptions,
    /// Packets socketioxide may queue for one client before an emit to it fails with "busy".
    /// socketioxide's own default is 128, too few for a relay that forwards floods.
    pub max_buffer_size: usize,
    /// Largest Engine.IO payload accepted from a client, in bytes.
    pub max_payload: u64,
}

impl Default for RelayOptions {
    fn default() -> Self {
        RelayOptions {
            server: ServerOptions::default(),
            max_buffer_size: 4096,
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
        let (layer, io) = SocketIo::builder()
            .max_buffer_size(opts.max_buffer_size)
            .max_payload(opts.max_payload)
            .ack_timeout(opts.server.reply_timeout)
            .build_layer();
        let server = P2pServer::attach(&io, opts.server);
        let app = axum::Router::new().layer(layer);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            // Small frames (replies, credit grants) must not wait for Nagle's algorithm.
            let listener = listener.tap_io(|tcp| {
                if let Err(e) = tcp.set_nodelay(true) {
                    tracing::debug!("could not set TCP_NODELAY: {e}");
                }
            });
            // The remote address reaches the relay, for its connection rate limit.
            let app = app.into_make_service_with_connect_info::<SocketAddr>();
            axum::serve(listener, app)
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
