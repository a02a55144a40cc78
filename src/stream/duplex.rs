//! [`P2pDuplex`]: one end of a byte stream between two clients (or a client and the server).
//!
//! The duplex and the receive path share one [`Shared`] state behind a mutex, with a waker per
//! direction (as yamux does). Two wire modes exist: credit mode between peers that speak the
//! extensions (binary frames, many in flight, bounded by the peer's window), and seed mode with a
//! seed-era JavaScript peer (one acknowledged chunk at a time).

use super::flow::{RecvWindow, SendCredit};
use super::frame::{code, Frame};
use bytes::{Buf, Bytes};
use serde_json::Value;
use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, Waker};

/// Largest DATA frame a writer sends.
pub const MAX_FRAME: usize = 64 * 1024;
/// Largest chunk sent to a seed-era peer (sent as a JSON array of numbers).
pub const SEED_CHUNK: usize = 16 * 1024;
/// Bytes buffered from a seed-era peer before its acknowledgements are held back.
pub const SEED_BUFFER: usize = 256 * 1024;

/// What a stream's owner (a client or the server) does for it.
pub(crate) trait Endpoint: Send + Sync {
    /// Sends a frame now (control frames and data alike); errors mean the link is gone.
    fn send_frame(&self, frame: Bytes) -> io::Result<()>;
    /// Waits for room to send one frame.
    fn poll_ready(&self, cx: &mut Context<'_>, slot: &mut Option<Slot>) -> Poll<io::Result<()>>;
    /// Sends a frame through the room reserved by `poll_ready`.
    fn send_reserved(&self, slot: &mut Option<Slot>, frame: Bytes) -> io::Result<()>;
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
    /// Forgets the stream (it is closed at both ends or destroyed).
    fn unregister(&self, key: &StreamKey);
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

pub(crate) enum Mode {
    Credit {
        route: u64,
        send: SendCredit,
        recv: RecvWindow,
    },
    Seed {
        in_flight: bool,
        held_acks: VecDeque<u64>,
    },
}

pub(crate) struct State {
    pub(crate) mode: Mode,
    recv: VecDeque<Bytes>,
    recv_len: usize,
    recv_eof: bool,
    sent_fin: bool,
    error: Option<(io::ErrorKind, String)>,
    read_waker: Option<Waker>,
    write_waker: Option<Waker>,
    unregistered: bool,
}

/// State shared by a [`P2pDuplex`] and its owner's receive path.
pub(crate) struct Shared {
    pub(crate) key: StreamKey,
    pub(crate) info: StreamInfo,
    pub(crate) state: Mutex<State>,
    endpoint: Weak<dyn Endpoint>,
}

impl Shared {
    pub(crate) fn new(
        key: StreamKey,
        info: StreamInfo,
        mode: Mode,
        endpoint: Weak<dyn Endpoint>,
    ) -> Arc<Shared> {
        Arc::new(Shared {
            key,
            info,
            state: Mutex::new(State {
                mode,
                recv: VecDeque::new(),
                recv_len: 0,
                recv_eof: false,
                sent_fin: false,
                error: None,
                read_waker: None,
                write_waker: None,
                unregistered: false,
            }),
            endpoint,
        })
    }

    fn endpoint(&self) -> Option<Arc<dyn Endpoint>> {
        self.endpoint.upgrade()
    }

    /// Wakes both directions.
    fn wake(st: &mut State) {
        if let Some(w) = st.read_waker.take() {
            w.wake();
        }
        if let Some(w) = st.write_waker.take() {
            w.wake();
        }
    }

    /// Marks the stream failed (unless it already is) and wakes everyone.
    pub(crate) fn fail(&self, kind: io::ErrorKind, why: String) {
        let mut st = self.state.lock().unwrap();
        if st.error.is_none() {
            st.error = Some((kind, why));
        }
        Shared::wake(&mut st);
        self.unregister_locked(&mut st);
    }

    fn unregister_locked(&self, st: &mut State) {
        if !st.unregistered {
            st.unregistered = true;
            if let Some(ep) = self.endpoint() {
                ep.unregister(&self.key);
            }
        }
    }

    fn maybe_finished(&self, st: &mut State) {
        if st.sent_fin && st.recv_eof && st.recv.is_empty() {
            self.unregister_locked(st);
        }
    }

    /// Handles a frame from the peer (credit mode). Returns a RESET to send back when the peer
    /// broke the rules.
    pub(crate) fn on_frame(&self, frame: Frame) -> Option<Frame> {
        let mut st = self.state.lock().unwrap();
        if st.error.is_some() {
            return None;
        }
        let Mode::Credit { route, send, recv } = &mut st.mode else {
            return None;
        };
        let route = *route;
        let violation = match frame {
            Frame::Data { data, .. } => match recv.on_data(data.len()) {
                Ok(()) => {
                    if st.recv_eof {
                        Some("DATA after FIN".to_string())
                    } else {
                        if !data.is_empty() {
                            st.recv_len += data.len();
                            st.recv.push_back(data);
                        }
                        if let Some(w) = st.read_waker.take() {
                            w.wake();
                        }
                        None
                    }
                }
                Err(e) => Some(e.to_string()),
            },
            Frame::Window { increment, .. } => match send.grant(increment) {
                Ok(()) => {
                    if let Some(w) = st.write_waker.take() {
                        w.wake();
                    }
                    None
                }
                Err(e) => Some(e.to_string()),
            },
            Frame::Fin { .. } => {
                st.recv_eof = true;
                if let Some(w) = st.read_waker.take() {
                    w.wake();
                }
                self.maybe_finished(&mut st);
                None
            }
            Frame::Reset {
                code: c, reason, ..
            } => {
                let kind = match c {
                    code::PEER_GONE => io::ErrorKind::ConnectionAborted,
                    _ => io::ErrorKind::ConnectionReset,
                };
                st.error = Some((kind, format!("stream reset by the other end: {reason}")));
                Shared::wake(&mut st);
                self.unregister_locked(&mut st);
                None
            }
        };
        violation.map(|why| {
            let reason = format!("protocol violation: {why}");
            st.error = Some((io::ErrorKind::InvalidData, reason.clone()));
            Shared::wake(&mut st);
            self.unregister_locked(&mut st);
            Frame::Reset {
                route,
                code: code::PROTOCOL,
                reason,
            }
        })
    }

    /// Handles a chunk from a seed-era peer (`None` is end-of-stream). Returns whether the chunk
    /// may be acknowledged now; otherwise the ack is held until the reader drains.
    pub(crate) fn on_seed_chunk(&self, chunk: Option<Bytes>, ack: Option<u64>) -> bool {
        let mut st = self.state.lock().unwrap();
        if st.error.is_some() {
            return true;
        }
        match chunk {
            None => st.recv_eof = true,
            Some(c) => {
                if !c.is_empty() && !st.recv_eof {
                    st.recv_len += c.len();
                    st.recv.push_back(c);
                }
            }
        }
        if let Some(w) = st.read_waker.take() {
            w.wake();
        }
        let over = st.recv_len > SEED_BUFFER;
        if over {
            if let (Some(a), Mode::Seed { held_acks, .. }) = (ack, &mut st.mode) {
                held_acks.push_back(a);
                return false;
            }
        }
        self.maybe_finished(&mut st);
        true
    }
}

/// One end of a byte stream to a peer: `AsyncRead + AsyncWrite`, usable with `tokio::io::copy`,
/// `tokio::io::split`, `BufReader` and tokio-util codecs.
///
/// Writes wait while the peer's receive window is used up, so a slow reader slows the writer down
/// instead of filling memory anywhere on the way. [`shutdown`](tokio::io::AsyncWriteExt::shutdown)
/// ends this direction (the peer reads to EOF) while the other keeps working. Dropping the duplex
/// before both directions ended, or calling [`reset`](P2pDuplex::reset), destroys the stream: the
/// peer's reads and writes fail with an `io::Error`.
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

    /// Destroys the stream now: the peer's pending and later reads and writes fail.
    pub fn reset(&mut self) {
        self.destroy("reset by its owner");
    }

    fn destroy(&mut self, why: &str) {
        let mut st = self.shared.state.lock().unwrap();
        if st.error.is_some() || (st.sent_fin && st.recv_eof) {
            self.shared.unregister_locked(&mut st);
            return;
        }
        st.error = Some((io::ErrorKind::ConnectionReset, format!("stream {why}")));
        Shared::wake(&mut st);
        let tell = match &st.mode {
            Mode::Credit { route, .. } => Some(*route),
            Mode::Seed { .. } => None,
        };
        self.shared.unregister_locked(&mut st);
        drop(st);
        if let Some(ep) = self.shared.endpoint() {
            match tell {
                Some(route) => {
                    let _ = ep.send_frame(
                        Frame::Reset {
                            route,
                            code: code::CANCEL,
                            reason: why.to_string(),
                        }
                        .encode(),
                    );
                }
                None => ep.send_seed_destroy(&self.shared.info.peer, &self.shared.info.stream_id),
            }
        }
    }

    fn io_error(e: &(io::ErrorKind, String)) -> io::Error {
        io::Error::new(e.0, e.1.clone())
    }
}

impl Drop for P2pDuplex {
    fn drop(&mut self) {
        self.destroy("dropped by its owner");
    }
}

impl tokio::io::AsyncRead for P2pDuplex {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let shared = &this.shared;
        let mut st = shared.state.lock().unwrap();
        if let Some(e) = &st.error {
            return Poll::Ready(Err(P2pDuplex::io_error(e)));
        }
        if st.recv.is_empty() {
            if st.recv_eof {
                shared.maybe_finished(&mut st);
                return Poll::Ready(Ok(()));
            }
            st.read_waker = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let mut n = 0;
        while buf.remaining() > 0 {
            let Some(front) = st.recv.front_mut() else {
                break;
            };
            let take = front.len().min(buf.remaining());
            buf.put_slice(&front[..take]);
            front.advance(take);
            if front.is_empty() {
                st.recv.pop_front();
            }
            n += take;
        }
        st.recv_len -= n;
        let below = st.recv_len <= SEED_BUFFER;
        // What to send back is sent after the state lock is released (lock order: a stream's
        // state is never held while its owner's tables are taken).
        let mut grant = None;
        let mut acks = Vec::new();
        match &mut st.mode {
            Mode::Credit { route, recv, .. } => {
                if let Some(increment) = recv.on_consumed(n) {
                    grant = Some(
                        Frame::Window {
                            route: *route,
                            increment,
                        }
                        .encode(),
                    );
                }
            }
            Mode::Seed { held_acks, .. } => {
                if below {
                    acks.extend(held_acks.drain(..));
                }
            }
        }
        shared.maybe_finished(&mut st);
        drop(st);
        if let Some(ep) = shared.endpoint() {
            if let Some(g) = grant {
                let _ = ep.send_frame(g);
            }
            for a in acks {
                ep.ack_seed_chunk(a);
            }
        }
        Poll::Ready(Ok(()))
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
        let Some(ep) = this.shared.endpoint() else {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "the connection that carried this stream is gone",
            )));
        };
        let seed = matches!(this.shared.state.lock().unwrap().mode, Mode::Seed { .. });
        if !seed {
            // Reserve queue room first, so credit is only taken when the frame can go.
            match ep.poll_ready(cx, &mut this.slot) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        let mut st = this.shared.state.lock().unwrap();
        if let Some(e) = &st.error {
            return Poll::Ready(Err(P2pDuplex::io_error(e)));
        }
        if st.sent_fin {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "write after shutdown",
            )));
        }
        match &mut st.mode {
            Mode::Credit { route, send, .. } => {
                let n = send.take(buf.len().min(MAX_FRAME));
                if n == 0 {
                    st.write_waker = Some(cx.waker().clone());
                    return Poll::Pending;
                }
                let frame = Frame::data_from_slice(*route, &buf[..n]);
                drop(st);
                ep.send_reserved(&mut this.slot, frame)?;
                Poll::Ready(Ok(n))
            }
            Mode::Seed { in_flight, .. } => {
                if *in_flight {
                    st.write_waker = Some(cx.waker().clone());
                    return Poll::Pending;
                }
                *in_flight = true;
                let n = buf.len().min(SEED_CHUNK);
                drop(st);
                let weak = Arc::downgrade(&this.shared);
                ep.send_seed_chunk(
                    &this.shared.info.peer,
                    &this.shared.info.stream_id,
                    Some(Bytes::copy_from_slice(&buf[..n])),
                    Box::new(move |res| {
                        if let Some(shared) = weak.upgrade() {
                            let mut st = shared.state.lock().unwrap();
                            if let Mode::Seed { in_flight, .. } = &mut st.mode {
                                *in_flight = false;
                            }
                            if let Err(e) = res {
                                if st.error.is_none() {
                                    st.error = Some((io::ErrorKind::BrokenPipe, e));
                                }
                            }
                            Shared::wake(&mut st);
                        }
                    }),
                );
                Poll::Ready(Ok(n))
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        let st = self.shared.state.lock().unwrap();
        match &st.error {
            Some(e) => Poll::Ready(Err(P2pDuplex::io_error(e))),
            None => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let Some(ep) = this.shared.endpoint() else {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "the connection that carried this stream is gone",
            )));
        };
        {
            let st = this.shared.state.lock().unwrap();
            if st.sent_fin {
                return Poll::Ready(Ok(()));
            }
            if let Some(e) = &st.error {
                return Poll::Ready(Err(P2pDuplex::io_error(e)));
            }
        }
        let seed = matches!(this.shared.state.lock().unwrap().mode, Mode::Seed { .. });
        if seed {
            let mut st = this.shared.state.lock().unwrap();
            if let Mode::Seed {
                in_flight: true, ..
            } = st.mode
            {
                // The seed protocol sends the end marker after the last chunk is acknowledged.
                st.write_waker = Some(cx.waker().clone());
                return Poll::Pending;
            }
            st.sent_fin = true;
            this.shared.maybe_finished(&mut st);
            drop(st);
            ep.send_seed_chunk(
                &this.shared.info.peer,
                &this.shared.info.stream_id,
                None,
                Box::new(|_| {}),
            );
            return Poll::Ready(Ok(()));
        }
        match ep.poll_ready(cx, &mut this.slot) {
            Poll::Ready(Ok(())) => {}
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => return Poll::Pending,
        }
        let mut st = this.shared.state.lock().unwrap();
        let Mode::Credit { route, .. } = st.mode else {
            unreachable!("checked above")
        };
        st.sent_fin = true;
        this.shared.maybe_finished(&mut st);
        drop(st);
        ep.send_reserved(&mut this.slot, Frame::Fin { route }.encode())?;
        Poll::Ready(Ok(()))
    }
}
