//! [`P2pDuplex`]: one end of a byte stream between two clients (or a client and the server).
//!
//! The duplex and the receive path share one state (the sans-IO core of `super::core`) behind a
//! mutex, with a waker per direction (as yamux does); the owner is only called once that lock
//! is released. Two wire modes exist: credit mode between peers that speak the
//! extensions (binary frames, many in flight, bounded by the peer's window), and seed mode with a
//! seed-era JavaScript peer (one acknowledged chunk at a time).

use super::core::{Core, LastWord, Stop, Transmit};
pub use super::core::{MAX_FRAME, SEED_BUFFER, SEED_CHUNK};
use super::frame::Frame;
use bytes::Bytes;
use serde_json::Value;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, Waker};

/// What a stream's owner (a client or the server) does for it.
pub(crate) trait Endpoint: Send + Sync {
    /// Sends a frame now (control frames and data alike); errors mean the link is gone.
    fn send_frame(&self, frame: Bytes) -> io::Result<()>;
    /// Waits for room to send one frame.
    fn poll_ready(&self, cx: &mut Context<'_>, slot: &mut Option<Slot>) -> Poll<io::Result<()>>;
    /// Sends a frame through the room reserved by `poll_ready`.
    fn send_reserved(&self, slot: &mut Option<Slot>, frame: Bytes) -> io::Result<()>;
    /// Sends `frames` in this order, ahead of any DATA or FIN the stream writes later: what
    /// does not fit in the send queue now waits in the stream's backlog (see
    /// [`Shared::backlog`]), and the stream's writes wait behind it.
    fn send_in_order(&self, shared: &Arc<Shared>, frames: Vec<Bytes>);
    /// Sends one chunk to a seed-era peer and calls `done` with the outcome when it is
    /// acknowledged. `None` is end-of-stream.
    fn send_seed_chunk(
        &self,
        peer: &str,
        own_stream_id: &str,
        chunk: Option<Bytes>,
        done: Box<dyn FnOnce(Result<(), String>) + Send>,
    );
    /// Tells a seed-era peer the stream is destroyed.
    fn send_seed_destroy(&self, peer: &str, own_stream_id: &str);
    /// Acknowledges a seed chunk the peer sent.
    fn ack_seed_chunk(&self, ack: u64);
    /// Forgets the stream (it is closed at both ends or destroyed); `last_word` is what still
    /// answers a peer that asks after it (see `Core::last_word`).
    fn unregister(&self, key: &StreamKey, last_word: Option<LastWord>);
}

/// Room for one frame, reserved in the owner's send queue.
pub(crate) type Slot = tokio_util::sync::PollSender<crate::client::Outgoing>;

/// How a stream is named in its owner's table.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum StreamKey {
    /// Credit mode: the relay's route id.
    Route(u64),
    /// Seed mode: (peer id, the peer's stream id).
    Seed(String, String),
}

/// Facts about a stream fixed at opening.
#[derive(Debug, Clone)]
pub struct StreamInfo {
    /// The client at the other end (`"<id>-server-side"` is the server's end of a client's stream).
    pub peer: String,
    /// This end's stream id.
    pub stream_id: String,
    /// The other end's stream id.
    pub peer_stream_id: String,
    /// The channel the opener named, if any.
    pub channel: Option<String>,
    /// The opener's JSON arguments.
    pub args: Value,
    /// Whether the stream runs the seed-era protocol (one chunk per acknowledgement).
    pub seed_mode: bool,
}

/// A stream end's state and the tasks waiting on it.
struct Inner {
    core: Core,
    read_waker: Option<Waker>,
    write_waker: Option<Waker>,
}

/// State shared by a [`P2pDuplex`] and its owner's receive path: the sans-IO [`Core`] behind a
/// mutex, with a waker per direction.
///
/// The lock is only ever taken inside [`Shared::update`], which hands back the [`Effects`] of the
/// change (frames to send, tasks to wake, the table entry to drop) to be run once the lock is
/// released: the owner is never called with a stream's state locked.
pub(crate) struct Shared {
    pub(crate) key: StreamKey,
    pub(crate) info: StreamInfo,
    state: Mutex<Inner>,
    /// Held from a change that queues DATA, FIN or OFFSET frames until they are handed to the
    /// owner, so that those frames reach the owner in the order the state made them (a resend
    /// after a resumed session must not overtake a write, nor the other way round). Taken
    /// before the state's lock, never while the owner holds one of its own.
    order: Mutex<()>,
    /// Frames sent again after a resumed session that did not fit in the owner's send queue, in
    /// order (`Some` while they are being sent); the stream's writes wait until it is empty.
    pub(crate) backlog: Mutex<Option<std::collections::VecDeque<Bytes>>>,
    endpoint: Weak<dyn Endpoint>,
}

/// What a change of a stream's state asks of the outside world; see [`Shared::update`].
#[must_use = "effects do nothing until run"]
pub(crate) struct Effects {
    transmits: Vec<Transmit>,
    wake: [Option<Waker>; 2],
    unregister: Option<Option<LastWord>>,
}

impl Effects {
    /// Wakes, sends and unregisters. A DATA or FIN frame goes through `slot` when the caller
    /// reserved room there; its send error (the connection is closed) is returned.
    pub(crate) fn run(
        self,
        shared: &Arc<Shared>,
        mut slot: Option<&mut Option<Slot>>,
    ) -> io::Result<()> {
        for w in self.wake.into_iter().flatten() {
            w.wake();
        }
        let mut result = Ok(());
        if let Some(ep) = shared.endpoint.upgrade() {
            for t in self.transmits {
                match t {
                    Transmit::Ordered(frame) => match slot.take() {
                        Some(s) => result = ep.send_reserved(s, frame),
                        None => result = result.and(ep.send_frame(frame)),
                    },
                    Transmit::Control(frame) => {
                        let _ = ep.send_frame(frame);
                    }
                    Transmit::Resend(frames) => ep.send_in_order(shared, frames),
                    Transmit::SeedChunk(chunk) => {
                        let weak = Arc::downgrade(shared);
                        ep.send_seed_chunk(
                            &shared.info.peer,
                            &shared.info.stream_id,
                            chunk,
                            Box::new(move |res| {
                                if let Some(shared) = weak.upgrade() {
                                    let _ = shared
                                        .update(|st| st.core.handle_seed_sent(res))
                                        .1
                                        .run(&shared, None);
                                }
                            }),
                        );
                    }
                    Transmit::SeedDestroy => {
                        ep.send_seed_destroy(&shared.info.peer, &shared.info.stream_id)
                    }
                    Transmit::SeedAck(a) => ep.ack_seed_chunk(a),
                }
            }
            if let Some(last_sync) = self.unregister {
                ep.unregister(&shared.key, last_sync);
            }
        }
        result
    }
}

impl Shared {
    pub(crate) fn new(
        key: StreamKey,
        info: StreamInfo,
        core: Core,
        endpoint: Weak<dyn Endpoint>,
    ) -> Arc<Shared> {
        Arc::new(Shared {
            key,
            info,
            state: Mutex::new(Inner {
                core,
                read_waker: None,
                write_waker: None,
            }),
            order: Mutex::new(()),
            backlog: Mutex::new(None),
            endpoint,
        })
    }

    fn endpoint(&self) -> Option<Arc<dyn Endpoint>> {
        self.endpoint.upgrade()
    }

    /// Runs `f` on the state, then collects what the change asks for, with the lock released
    /// before returning.
    fn update<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> (R, Effects) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let r = f(&mut st);
        let (read, write) = st.core.take_wakes();
        let effects = Effects {
            transmits: std::iter::from_fn(|| st.core.poll_transmit()).collect(),
            wake: [
                read.then(|| st.read_waker.take()).flatten(),
                write.then(|| st.write_waker.take()).flatten(),
            ],
            unregister: st.core.take_done().then(|| st.core.last_word()),
        };
        (r, effects)
    }

    fn ordered(&self) -> std::sync::MutexGuard<'_, ()> {
        self.order.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The backlog (see [`Shared::backlog`]).
    pub(crate) fn backlog(
        &self,
    ) -> std::sync::MutexGuard<'_, Option<std::collections::VecDeque<Bytes>>> {
        self.backlog.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The backlog was sent: a write waiting behind it goes on.
    pub(crate) fn backlog_sent(self: &Arc<Self>) {
        let waker = self
            .state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .write_waker
            .take();
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Whether a write must wait behind the backlog; registers `cx` to be woken when it is
    /// sent. Called with the order lock held.
    fn behind_backlog(&self, cx: &Context<'_>) -> bool {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .write_waker = Some(cx.waker().clone());
        self.backlog().is_some()
    }

    /// A frame from the peer (credit mode), handled and its effects run (a RESET back to a peer
    /// that broke the rules, what a resumed peer misses); the caller holds no lock the owner
    /// takes.
    pub(crate) fn receive(self: &Arc<Self>, frame: Frame) {
        let _order = self.ordered();
        let _ = self
            .update(|st| st.core.handle_frame(frame))
            .1
            .run(self, None);
    }

    /// This end's session was resumed on a new link: it asks the peer where it stands.
    pub(crate) fn resync(self: &Arc<Self>) {
        let _order = self.ordered();
        let _ = self.update(|st| st.core.resync()).1.run(self, None);
    }

    /// A frame for this stream that did not decode (credit mode): the stream fails and the peer
    /// gets a RESET.
    pub(crate) fn bad_frame(self: &Arc<Self>, why: String) {
        let _ = self
            .update(|st| st.core.handle_bad_frame(why))
            .1
            .run(self, None);
    }

    /// A chunk from a seed-era peer (`None` is end-of-stream), acknowledged with `ack` once there
    /// is room for more.
    pub(crate) fn handle_seed_chunk(self: &Arc<Self>, chunk: Option<Bytes>, ack: Option<u64>) {
        let _ = self
            .update(|st| st.core.handle_seed_chunk(chunk, ack))
            .1
            .run(self, None);
    }

    /// The stream is gone for a reason outside it (a disconnect, a seed peer's destroy).
    pub(crate) fn fail(self: &Arc<Self>, kind: io::ErrorKind, why: String) {
        let _ = self.update(|st| st.core.fail(kind, why)).1.run(self, None);
    }

    /// The peer's window, once the server's own opener learns it.
    pub(crate) fn set_peer_window(self: &Arc<Self>, window: u32) {
        let _ = self
            .update(|st| st.core.set_peer_window(window))
            .1
            .run(self, None);
    }
}

/// One end of a byte stream to a peer: `AsyncRead + AsyncWrite`, usable with `tokio::io::copy`,
/// `tokio::io::split`, `BufReader` and tokio-util codecs.
///
/// Writes wait while the peer's receive window is used up, so a slow reader slows the writer down
/// instead of filling memory anywhere on the way. [`shutdown`](tokio::io::AsyncWriteExt::shutdown)
/// ends this direction (the peer reads what was written, then EOF) while the other keeps working.
///
/// # Closing and dropping
///
/// Streams close like TCP or QUIC streams. The clean way to end one is `shutdown()` on each end;
/// a duplex may then be dropped at any time. Dropping a duplex (or calling
/// [`reset`](P2pDuplex::reset)) does, depending on where the stream stands:
///
/// | state when dropped | the peer's reads | the peer's writes |
/// | --- | --- | --- |
/// | nothing sent yet, no `shutdown()` | fail (`ConnectionReset`) | fail (`ConnectionReset`) |
/// | in the middle of writing, no `shutdown()` | fail once the reset arrives; what was not read yet is discarded, so a cut-short stream never reads as complete | fail |
/// | after `shutdown()` | every byte written, then EOF, at whatever pace the peer reads | fail (nobody reads them) |
/// | after the peer's FIN, without own `shutdown()` | fail (this end's direction was not finished) | had already ended |
/// | after both directions ended | EOF as before; nothing is sent | had already ended |
///
/// A reset that reaches this end after the peer's FIN never discards what the peer finished
/// sending: reads still return every byte, then EOF; only this end's writes fail. The same holds
/// when the peer disconnects after its FIN.
///
/// # A cut link
///
/// When a client's link to the relay drops and the client resumes its session (see
/// [`ConnectionState`](crate::ConnectionState) and `ServerOptions::resume_grace`), a
/// credit-mode stream goes on: reads and writes wait while the link is down, then each end sends
/// again what the other has not confirmed (each writer keeps at most one window of it), and the
/// reader sees one unbroken byte stream. If the session is not resumed, both ends fail:
/// `ConnectionAborted` (`client '<id>' disconnected` at the peer, `the relay did not resume the
/// session` at the client that came back). A stream with a seed-era JavaScript peer fails
/// when the link drops.
pub struct P2pDuplex {
    shared: Arc<Shared>,
    slot: Option<Slot>,
}

impl std::fmt::Debug for P2pDuplex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("P2pDuplex")
            .field("info", &self.shared.info)
            .finish()
    }
}

impl P2pDuplex {
    pub(crate) fn new(shared: Arc<Shared>, slot: Option<Slot>) -> P2pDuplex {
        P2pDuplex { shared, slot }
    }

    /// Facts about the stream: peer, ids, channel, arguments, mode.
    pub fn info(&self) -> &StreamInfo {
        &self.shared.info
    }

    /// The client at the other end.
    pub fn peer_id(&self) -> &str {
        &self.shared.info.peer
    }

    /// This end's stream id.
    pub fn stream_id(&self) -> &str {
        &self.shared.info.stream_id
    }

    /// The channel the opener named.
    pub fn channel(&self) -> Option<&str> {
        self.shared.info.channel.as_deref()
    }

    /// The opener's JSON arguments (`Null` if none).
    pub fn args(&self) -> &Value {
        &self.shared.info.args
    }

    /// Destroys the stream now, like a drop (see the type's documentation), except that this
    /// end's own later calls fail too.
    pub fn reset(&mut self) {
        self.close("reset by its owner");
    }

    fn close(&mut self, why: &str) {
        let _ = self
            .shared
            .update(|st| st.core.close(why))
            .1
            .run(&self.shared, None);
    }
}

fn stopped(stop: Stop) -> io::Error {
    match stop {
        Stop::Failed(f) => f.to_io(),
        Stop::Blocked => io::Error::new(io::ErrorKind::WouldBlock, "blocked"),
    }
}

fn link_gone() -> io::Error {
    io::Error::new(
        io::ErrorKind::NotConnected,
        "the connection that carried this stream is gone",
    )
}

impl Drop for P2pDuplex {
    fn drop(&mut self) {
        self.close("dropped by its owner");
    }
}

impl tokio::io::AsyncRead for P2pDuplex {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let (r, effects) = this.shared.update(|st| {
            let r = st.core.read(buf.initialize_unfilled());
            if r == Err(Stop::Blocked) {
                st.read_waker = Some(cx.waker().clone());
            }
            r
        });
        let _ = effects.run(&this.shared, None);
        match r {
            Ok(n) => {
                buf.advance(n);
                Poll::Ready(Ok(()))
            }
            Err(Stop::Blocked) => Poll::Pending,
            Err(stop) => Poll::Ready(Err(stopped(stop))),
        }
    }
}

impl P2pDuplex {
    /// Reserves room in the owner's send queue for one ordered frame (credit mode), so credit is
    /// only taken when the frame can go.
    fn poll_room(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.shared.info.seed_mode {
            return Poll::Ready(Ok(()));
        }
        let Some(ep) = self.shared.endpoint() else {
            return Poll::Ready(Err(link_gone()));
        };
        ep.poll_ready(cx, &mut self.slot)
    }
}

impl tokio::io::AsyncWrite for P2pDuplex {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if let Err(e) = std::task::ready!(this.poll_room(cx)) {
            return Poll::Ready(Err(e));
        }
        let shared = this.shared.clone();
        let _order = shared.ordered();
        if shared.behind_backlog(cx) {
            return Poll::Pending;
        }
        let (r, effects) = this.shared.update(|st| {
            let r = st.core.write(buf);
            if r == Err(Stop::Blocked) {
                st.write_waker = Some(cx.waker().clone());
            }
            r
        });
        let sent = effects.run(&this.shared, Some(&mut this.slot));
        match r {
            Ok(n) => Poll::Ready(sent.map(|()| n)),
            Err(Stop::Blocked) => Poll::Pending,
            Err(stop) => Poll::Ready(Err(stopped(stop))),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        let (r, effects) = self.shared.update(|st| st.core.flush());
        let _ = effects.run(&self.shared, None);
        Poll::Ready(r.map_err(stopped))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Err(e) = std::task::ready!(this.poll_room(cx)) {
            return Poll::Ready(Err(e));
        }
        let shared = this.shared.clone();
        let _order = shared.ordered();
        if shared.behind_backlog(cx) {
            return Poll::Pending;
        }
        let (r, effects) = this.shared.update(|st| {
            let r = st.core.shutdown();
            if r == Err(Stop::Blocked) {
                st.write_waker = Some(cx.waker().clone());
            }
            r
        });
        let sent = effects.run(&this.shared, Some(&mut this.slot));
        match r {
            Ok(()) => Poll::Ready(sent),
            Err(Stop::Blocked) => Poll::Pending,
            Err(stop) => Poll::Ready(Err(stopped(stop))),
        }
    }
}
