//! Stream acceptors by channel, shared by clients and the server.

use super::duplex::P2pDuplex;
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tokio::sync::mpsc;

/// What takes the streams of one channel.
#[derive(Clone)]
pub(crate) enum Acceptor {
    Handler(Arc<dyn Fn(P2pDuplex) + Send + Sync>),
    Queue(mpsc::Sender<P2pDuplex>),
}

impl Acceptor {
    /// Hands over a new stream. A queue that is full or closed refuses it: the duplex is dropped,
    /// which resets the stream, so the opener learns of it.
    pub(crate) fn deliver(self, duplex: P2pDuplex) {
        match self {
            Acceptor::Handler(h) => h(duplex),
            Acceptor::Queue(q) => {
                if let Err(e) = q.try_send(duplex) {
                    tracing::warn!("incoming stream refused: {e}");
                }
            }
        }
    }
}

/// Acceptors by channel; `None` takes streams with no channel and channels with no acceptor.
#[derive(Default)]
pub(crate) struct Acceptors(Mutex<HashMap<Option<String>, Acceptor>>);

impl Acceptors {
    pub(crate) fn set_handler(
        &self,
        channel: Option<&str>,
        handler: impl Fn(P2pDuplex) + Send + Sync + 'static,
    ) {
        self.0.lock().unwrap().insert(
            channel.map(str::to_string),
            Acceptor::Handler(Arc::new(handler)),
        );
    }

    pub(crate) fn queue(&self, channel: Option<&str>) -> IncomingStreams {
        let (tx, rx) = mpsc::channel(64);
        self.0
            .lock()
            .unwrap()
            .insert(channel.map(str::to_string), Acceptor::Queue(tx));
        IncomingStreams { rx }
    }

    pub(crate) fn remove(&self, channel: Option<&str>) {
        self.0.lock().unwrap().remove(&channel.map(str::to_string));
    }

    /// The acceptor of `channel`, else that of no channel. A queue whose [`IncomingStreams`]
    /// was dropped accepts nothing any more: it is forgotten here, so the opener is refused as
    /// if nobody had asked for streams.
    pub(crate) fn pick(&self, channel: Option<&str>) -> Option<Acceptor> {
        let mut map = self.0.lock().unwrap();
        map.retain(|_, a| !matches!(a, Acceptor::Queue(q) if q.is_closed()));
        map.get(&channel.map(str::to_string))
            .or_else(|| map.get(&None))
            .cloned()
    }
}

/// Incoming streams of one channel, as an async stream: see
/// [`P2pClient::incoming_streams`](crate::P2pClient::incoming_streams).
pub struct IncomingStreams {
    rx: mpsc::Receiver<P2pDuplex>,
}

impl IncomingStreams {
    /// The next incoming stream; `None` once its owner is closed.
    pub async fn next(&mut self) -> Option<P2pDuplex> {
        self.rx.recv().await
    }
}

impl futures::Stream for IncomingStreams {
    type Item = P2pDuplex;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<P2pDuplex>> {
        self.rx.poll_recv(cx)
    }
}
