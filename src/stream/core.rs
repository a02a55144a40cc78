//! The state of one stream end, free of I/O (in the manner of quinn-proto): frames and chunks go
//! in through `handle_*`, the application's reads, writes, shutdown and close are plain calls
//! that either act or say [`Stop::Blocked`], and what must go out is queued as [`Transmit`]s for
//! the driver to take with [`Core::poll_transmit`]. Nothing in here wakes a task or calls the
//! owner; the shell ([`P2pDuplex`](super::P2pDuplex)) does that after releasing its lock.
//!
//! Closing follows TCP and QUIC. Each direction ends on its own: `shutdown` sends FIN after the
//! last byte. A RESET aborts the stream, except that what the peer finished sending before it
//! (its data and its FIN) stays readable: a RESET after the peer's FIN only tells this end that
//! nobody reads its direction any more (like QUIC's STOP_SENDING), so only the local writer fails.

use super::flow::{RecvWindow, SendCredit};
use super::frame::{code, reset_kind, Frame};
use bytes::{Buf, Bytes};
use std::collections::VecDeque;
use std::io;

/// Largest DATA frame a writer sends.
pub const MAX_FRAME: usize = 64 * 1024;
/// Largest chunk sent to a seed-era peer (sent as a JSON array of numbers).
pub const SEED_CHUNK: usize = 16 * 1024;
/// Bytes buffered from a seed-era peer before its acknowledgements are held back.
pub const SEED_BUFFER: usize = 256 * 1024;

/// Why a stream call cannot go on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Failure {
    pub(crate) kind: io::ErrorKind,
    pub(crate) reason: String,
}

impl Failure {
    fn new(kind: io::ErrorKind, reason: impl Into<String>) -> Failure {
        Failure {
            kind,
            reason: reason.into(),
        }
    }

    pub(crate) fn to_io(&self) -> io::Error {
        io::Error::new(self.kind, self.reason.clone())
    }
}

/// Outcome of a call that could not complete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Stop {
    /// Try again after the next event (data, credit, an acknowledgement).
    Blocked,
    /// The call fails for good.
    Failed(Failure),
}

/// Something the driver must send for this end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Transmit {
    /// A DATA or FIN frame: these must keep their order, so the driver sends them through the
    /// room it reserved before calling [`Core::write`] or [`Core::shutdown`].
    Ordered(Bytes),
    /// A WINDOW or RESET frame, sent at once.
    Control(Bytes),
    /// A chunk to a seed-era peer (`None`: end of stream); its outcome comes back through
    /// [`Core::handle_seed_sent`].
    SeedChunk(Option<Bytes>),
    /// Tell a seed-era peer the stream is destroyed.
    SeedDestroy,
    /// Acknowledge the peer's seed chunk with this request id.
    SeedAck(u64),
}

/// The wire mode of a stream.
#[derive(Debug)]
enum Mode {
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

/// Where this end's sending direction stands.
#[derive(Debug, Clone, PartialEq, Eq)]
enum SendState {
    Open,
    /// FIN (or the seed end marker) is queued: no more writes.
    Finished,
    Failed(Failure),
}

/// Where the peer's direction stands.
#[derive(Debug, Clone, PartialEq, Eq)]
enum RecvState {
    Open,
    /// The peer's FIN arrived: what is buffered, then EOF.
    Finished,
    /// Aborted: reads fail, even with data buffered (a cut-short stream must not look whole).
    Failed(Failure),
}

/// One end of a stream.
#[derive(Debug)]
pub(crate) struct Core {
    mode: Mode,
    send: SendState,
    recv_state: RecvState,
    recv: VecDeque<Bytes>,
    recv_len: usize,
    /// No frame for this stream is expected or sent any more (reset either way, or both
    /// directions ended): the owner may forget it.
    done: bool,
    /// `done` was reported by [`Core::take_done`].
    done_reported: bool,
    /// The owner dropped its handle.
    closed: bool,
    out: VecDeque<Transmit>,
    wake_read: bool,
    wake_write: bool,
}

impl Core {
    /// A credit-mode end on `route`: the peer may send `own_window` bytes, this end
    /// `peer_window` (0 until the peer's window is known, see [`Core::set_peer_window`]).
    pub(crate) fn credit(route: u64, peer_window: u32, own_window: u32) -> Core {
        Core::with_mode(Mode::Credit {
            route,
            send: SendCredit::new(peer_window),
            recv: RecvWindow::new(own_window),
        })
    }

    /// A seed-mode end: one acknowledged chunk at a time.
    pub(crate) fn seed() -> Core {
        Core::with_mode(Mode::Seed {
            in_flight: false,
            held_acks: VecDeque::new(),
        })
    }

    fn with_mode(mode: Mode) -> Core {
        Core {
            mode,
            send: SendState::Open,
            recv_state: RecvState::Open,
            recv: VecDeque::new(),
            recv_len: 0,
            done: false,
            done_reported: false,
            closed: false,
            out: VecDeque::new(),
            wake_read: false,
            wake_write: false,
        }
    }

    /// The peer's window, learnt after this end was created (the server's own opener).
    pub(crate) fn set_peer_window(&mut self, window: u32) {
        if let Mode::Credit { send, .. } = &mut self.mode {
            *send = SendCredit::new(window);
            self.wake_write = true;
        }
    }

    /// The next thing to send.
    pub(crate) fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.pop_front()
    }

    /// Whether a blocked read (resp. write) may now go on; each flag is reset when read.
    pub(crate) fn take_wakes(&mut self) -> (bool, bool) {
        (
            std::mem::take(&mut self.wake_read),
            std::mem::take(&mut self.wake_write),
        )
    }

    /// True once, when the stream no longer needs its entry in the owner's table.
    pub(crate) fn take_done(&mut self) -> bool {
        if self.done && !self.done_reported {
            self.done_reported = true;
            return true;
        }
        false
    }

    /// Bytes received and not read yet.
    #[cfg(test)]
    pub(crate) fn buffered(&self) -> usize {
        self.recv_len
    }

    fn route(&self) -> Option<u64> {
        match self.mode {
            Mode::Credit { route, .. } => Some(route),
            Mode::Seed { .. } => None,
        }
    }

    fn check_both_ended(&mut self) {
        if self.send == SendState::Finished && self.recv_state == RecvState::Finished {
            self.done = true;
        }
    }

    /// Fails whatever is still open in both directions; what the peer finished sending stays
    /// readable.
    fn abort(&mut self, f: Failure) {
        if self.send == SendState::Open {
            self.send = SendState::Failed(f.clone());
        }
        if self.recv_state == RecvState::Open {
            self.recv_state = RecvState::Failed(f);
            self.recv.clear();
            self.recv_len = 0;
        }
        self.done = true;
        self.wake_read = true;
        self.wake_write = true;
    }

    /// The peer broke the rules: everything fails and the peer is told.
    fn violation(&mut self, why: String) {
        let reason = format!("protocol violation: {why}");
        let f = Failure::new(io::ErrorKind::InvalidData, reason.clone());
        self.send = SendState::Failed(f.clone());
        self.recv_state = RecvState::Failed(f);
        self.recv.clear();
        self.recv_len = 0;
        self.done = true;
        self.wake_read = true;
        self.wake_write = true;
        if let Some(route) = self.route() {
            self.out.push_back(Transmit::Control(
                Frame::Reset {
                    route,
                    code: code::PROTOCOL,
                    reason,
                }
                .encode(),
            ));
        }
    }

    /// A frame from the peer (credit mode).
    pub(crate) fn handle_frame(&mut self, frame: Frame) {
        if self.done {
            // Frames that crossed our RESET, or stragglers after both FINs.
            return;
        }
        let Mode::Credit { send, recv, .. } = &mut self.mode else {
            return;
        };
        match frame {
            Frame::Data { data, .. } => {
                if self.recv_state != RecvState::Open {
                    return self.violation("DATA after FIN".into());
                }
                if let Err(e) = recv.on_data(data.len()) {
                    return self.violation(e.to_string());
                }
                if !data.is_empty() {
                    self.recv_len += data.len();
                    self.recv.push_back(data);
                    self.wake_read = true;
                }
            }
            Frame::Window { increment, .. } => {
                if let Err(e) = send.grant(increment) {
                    return self.violation(e.to_string());
                }
                self.wake_write = true;
            }
            Frame::Fin { .. } => {
                if self.recv_state != RecvState::Open {
                    return self.violation("a second FIN".into());
                }
                self.recv_state = RecvState::Finished;
                self.wake_read = true;
                self.check_both_ended();
            }
            Frame::Reset {
                code: c, reason, ..
            } => {
                self.abort(Failure::new(
                    reset_kind(c),
                    format!("stream reset by the other end: {reason}"),
                ));
            }
        }
    }

    /// A frame for this stream whose header was readable but not the rest (credit mode): the
    /// stream fails with `InvalidData` and the peer gets a RESET (protocol), rather than the
    /// frame's bytes going missing from the middle of the stream.
    pub(crate) fn handle_bad_frame(&mut self, why: String) {
        if !self.done {
            self.violation(format!("bad frame: {why}"));
        }
    }

    /// A chunk from a seed-era peer (`None`: end of stream), acknowledged by `ack` when there is
    /// room (the acknowledgement is held while too much is buffered). A peer that keeps sending
    /// without the acknowledgements (more than [`SEED_BUFFER`] and one [`SEED_CHUNK`] buffered,
    /// or a second acknowledgement held) breaks the seed's stop-and-wait: the stream fails with
    /// `InvalidData` and the peer is told it is destroyed.
    pub(crate) fn handle_seed_chunk(&mut self, chunk: Option<Bytes>, ack: Option<u64>) {
        let held = match &self.mode {
            Mode::Seed { held_acks, .. } => held_acks.len(),
            Mode::Credit { .. } => 0,
        };
        let incoming = chunk.as_ref().map_or(0, Bytes::len);
        if self.recv_state == RecvState::Open
            && (held > 0 || self.recv_len + incoming > SEED_BUFFER + SEED_CHUNK)
        {
            let f = Failure::new(
                io::ErrorKind::InvalidData,
                "protocol violation: the seed-era peer sent on without waiting for acknowledgements",
            );
            self.abort(f.clone());
            // The read side fails even if the peer had ended its direction.
            self.recv_state = RecvState::Failed(f);
            self.recv.clear();
            self.recv_len = 0;
            self.out.push_back(Transmit::SeedDestroy);
            return;
        }
        if self.recv_state == RecvState::Open {
            match chunk {
                None => {
                    self.recv_state = RecvState::Finished;
                    self.check_both_ended();
                }
                Some(c) if !c.is_empty() => {
                    self.recv_len += c.len();
                    self.recv.push_back(c);
                }
                Some(_) => {}
            }
            self.wake_read = true;
        }
        let Some(a) = ack else { return };
        // While too much waits unread, the acknowledgement is what holds a seed peer back.
        let hold = self.recv_len > SEED_BUFFER && self.recv_state == RecvState::Open;
        match &mut self.mode {
            Mode::Seed { held_acks, .. } if hold => held_acks.push_back(a),
            _ => self.out.push_back(Transmit::SeedAck(a)),
        }
    }

    /// The outcome of the last [`Transmit::SeedChunk`].
    pub(crate) fn handle_seed_sent(&mut self, result: Result<(), String>) {
        if let Mode::Seed { in_flight, .. } = &mut self.mode {
            *in_flight = false;
        }
        if let Err(e) = result {
            if self.send == SendState::Open {
                self.send = SendState::Failed(Failure::new(io::ErrorKind::BrokenPipe, e));
            }
        }
        self.wake_write = true;
    }

    /// The stream is gone for a reason outside it (the peer or this end disconnected, a seed
    /// peer destroyed it). What the peer finished sending stays readable.
    pub(crate) fn fail(&mut self, kind: io::ErrorKind, reason: String) {
        self.abort(Failure::new(kind, reason));
    }

    /// Reads into `buf`: `Ok(0)` is EOF (or an empty `buf`).
    pub(crate) fn read(&mut self, buf: &mut [u8]) -> Result<usize, Stop> {
        if let RecvState::Failed(f) = &self.recv_state {
            return Err(Stop::Failed(f.clone()));
        }
        if self.recv.is_empty() {
            return match self.recv_state {
                RecvState::Finished => Ok(0),
                _ => Err(Stop::Blocked),
            };
        }
        let mut n = 0;
        while n < buf.len() {
            let Some(front) = self.recv.front_mut() else {
                break;
            };
            let take = front.len().min(buf.len() - n);
            buf[n..n + take].copy_from_slice(&front[..take]);
            front.advance(take);
            if front.is_empty() {
                self.recv.pop_front();
            }
            n += take;
        }
        self.recv_len -= n;
        let peer_writing = self.recv_state == RecvState::Open && !self.done;
        match &mut self.mode {
            Mode::Credit { route, recv, .. } => {
                // Grants only matter while the peer may still write.
                if let (Some(increment), true) = (recv.on_consumed(n), peer_writing) {
                    self.out.push_back(Transmit::Control(
                        Frame::Window {
                            route: *route,
                            increment,
                        }
                        .encode(),
                    ));
                }
            }
            Mode::Seed { held_acks, .. } => {
                if self.recv_len <= SEED_BUFFER {
                    self.out.extend(held_acks.drain(..).map(Transmit::SeedAck));
                }
            }
        }
        Ok(n)
    }

    fn writable(&self) -> Result<(), Stop> {
        match &self.send {
            SendState::Open => Ok(()),
            SendState::Finished => Err(Stop::Failed(Failure::new(
                io::ErrorKind::BrokenPipe,
                "write after shutdown",
            ))),
            SendState::Failed(f) => Err(Stop::Failed(f.clone())),
        }
    }

    /// Writes up to one frame (or seed chunk) of `buf`; returns how many bytes were taken.
    pub(crate) fn write(&mut self, buf: &[u8]) -> Result<usize, Stop> {
        self.writable()?;
        if buf.is_empty() {
            return Ok(0);
        }
        match &mut self.mode {
            Mode::Credit { route, send, .. } => {
                let n = send.take(buf.len().min(MAX_FRAME));
                if n == 0 {
                    return Err(Stop::Blocked);
                }
                self.out
                    .push_back(Transmit::Ordered(Frame::data_from_slice(*route, &buf[..n])));
                Ok(n)
            }
            Mode::Seed { in_flight, .. } => {
                if *in_flight {
                    return Err(Stop::Blocked);
                }
                *in_flight = true;
                let n = buf.len().min(SEED_CHUNK);
                self.out
                    .push_back(Transmit::SeedChunk(Some(Bytes::copy_from_slice(&buf[..n]))));
                Ok(n)
            }
        }
    }

    /// Ends this direction after what was written. Idempotent.
    pub(crate) fn shutdown(&mut self) -> Result<(), Stop> {
        if self.send == SendState::Finished {
            return Ok(());
        }
        self.writable()?;
        match &self.mode {
            Mode::Credit { route, .. } => {
                self.out
                    .push_back(Transmit::Ordered(Frame::Fin { route: *route }.encode()));
            }
            Mode::Seed { in_flight, .. } => {
                if *in_flight {
                    // The seed protocol sends the end marker after the last chunk's ack.
                    return Err(Stop::Blocked);
                }
                self.out.push_back(Transmit::SeedChunk(None));
            }
        }
        self.send = SendState::Finished;
        self.check_both_ended();
        Ok(())
    }

    /// The owner drops its handle (`reset`: it asks for an abort even after a clean end of
    /// its own direction). What the peer is told depends on where the stream stands:
    ///
    /// - both directions ended, or the stream is already aborted: nothing;
    /// - otherwise a RESET (seed: a destroy event). After this end's FIN the peer keeps every
    ///   byte and its EOF, and only its writer fails; before it, the peer's reads fail too.
    pub(crate) fn close(&mut self, reason: &str) {
        if self.closed {
            return;
        }
        self.closed = true;
        if self.done {
            return;
        }
        match self.route() {
            Some(route) => self.out.push_back(Transmit::Control(
                Frame::Reset {
                    route,
                    code: code::CANCEL,
                    reason: reason.to_string(),
                }
                .encode(),
            )),
            None => self.out.push_back(Transmit::SeedDestroy),
        }
        let f = Failure::new(io::ErrorKind::ConnectionReset, format!("stream {reason}"));
        // The owner's own later calls (after `reset`) fail, received data included.
        if !matches!(self.send, SendState::Failed(_)) {
            self.send = SendState::Failed(f.clone());
        }
        self.recv_state = RecvState::Failed(f);
        self.recv.clear();
        self.recv_len = 0;
        self.done = true;
        self.wake_read = true;
        self.wake_write = true;
    }

    /// Flushes nothing (frames leave as they are written) but reports a failed stream.
    pub(crate) fn flush(&self) -> Result<(), Stop> {
        match &self.send {
            SendState::Failed(f) => Err(Stop::Failed(f.clone())),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(c: &mut Core) -> Vec<Frame> {
        std::iter::from_fn(|| c.poll_transmit())
            .map(|t| match t {
                Transmit::Ordered(b) | Transmit::Control(b) => Frame::decode(b).unwrap(),
                other => panic!("a credit-mode end queued {other:?}"),
            })
            .collect()
    }

    #[test]
    fn reset_after_fin_keeps_data_and_eof_and_fails_the_writer() {
        let mut c = Core::credit(1, 100, 100);
        c.handle_frame(Frame::Data {
            route: 1,
            data: Bytes::from_static(b"abc"),
        });
        c.handle_frame(Frame::Fin { route: 1 });
        c.handle_frame(Frame::Reset {
            route: 1,
            code: code::CANCEL,
            reason: "dropped".into(),
        });
        assert!(matches!(c.write(b"x"), Err(Stop::Failed(_))));
        let mut buf = [0u8; 8];
        assert_eq!(c.read(&mut buf), Ok(3));
        assert_eq!(&buf[..3], b"abc");
        assert_eq!(c.read(&mut buf), Ok(0));
        assert!(c.take_done());
        c.close("dropped by its owner");
        assert!(frames(&mut c).is_empty(), "nothing to tell a gone peer");
    }

    #[test]
    fn reset_before_fin_fails_reads() {
        let mut c = Core::credit(1, 100, 100);
        c.handle_frame(Frame::Data {
            route: 1,
            data: Bytes::from_static(b"abc"),
        });
        c.handle_frame(Frame::Reset {
            route: 1,
            code: code::CANCEL,
            reason: "dropped".into(),
        });
        assert!(matches!(c.read(&mut [0u8; 8]), Err(Stop::Failed(_))));
    }

    #[test]
    fn drop_after_shutdown_resets_and_drop_after_both_fins_is_silent() {
        let mut c = Core::credit(1, 100, 100);
        c.shutdown().unwrap();
        c.close("dropped by its owner");
        assert!(matches!(
            &frames(&mut c)[..],
            [Frame::Fin { .. }, Frame::Reset { code: 0, .. }]
        ));
        let mut c = Core::credit(1, 100, 100);
        c.shutdown().unwrap();
        c.handle_frame(Frame::Fin { route: 1 });
        c.close("dropped by its owner");
        assert!(matches!(&frames(&mut c)[..], [Frame::Fin { .. }]));
    }

    #[test]
    fn overrun_is_a_protocol_reset() {
        let mut c = Core::credit(1, 100, 4);
        c.handle_frame(Frame::Data {
            route: 1,
            data: Bytes::from_static(b"abcde"),
        });
        assert!(matches!(
            &frames(&mut c)[..],
            [Frame::Reset {
                code: code::PROTOCOL,
                ..
            }]
        ));
        assert!(c.take_done());
    }

    #[test]
    fn a_frame_that_does_not_decode_fails_the_stream_and_resets_the_peer() {
        let mut c = Core::credit(1, 100, 100);
        c.handle_frame(Frame::Data {
            route: 1,
            data: Bytes::from_static(b"hello"),
        });
        c.handle_bad_frame("malformed DATA frame body".into());
        match c.read(&mut [0u8; 16]) {
            Err(Stop::Failed(f)) => assert_eq!(f.kind, io::ErrorKind::InvalidData),
            other => panic!("the read must fail, got {other:?}"),
        }
        assert!(matches!(c.write(b"x"), Err(Stop::Failed(_))));
        assert!(matches!(
            &frames(&mut c)[..],
            [Frame::Reset {
                code: code::PROTOCOL,
                ..
            }]
        ));
        assert!(c.take_done());
    }

    #[test]
    fn a_seed_peer_ignoring_acknowledgements_is_cut_off() {
        let mut c = Core::seed();
        let chunk = || Some(Bytes::from(vec![0u8; SEED_CHUNK]));
        let mut acks = 0;
        let mut ack_id = 0;
        // Within the buffer every chunk is acknowledged at once.
        while (ack_id as usize) * SEED_CHUNK < SEED_BUFFER {
            c.handle_seed_chunk(chunk(), Some(ack_id));
            ack_id += 1;
        }
        // The chunk past the buffer is taken, its acknowledgement held.
        c.handle_seed_chunk(chunk(), Some(ack_id));
        ack_id += 1;
        while let Some(t) = c.poll_transmit() {
            assert!(matches!(t, Transmit::SeedAck(_)), "{t:?}");
            acks += 1;
        }
        assert_eq!(acks, ack_id - 1, "the last acknowledgement is held");
        // The peer sends on without it: the stream fails and the peer is told.
        c.handle_seed_chunk(chunk(), Some(ack_id));
        assert_eq!(c.poll_transmit(), Some(Transmit::SeedDestroy));
        assert_eq!(c.poll_transmit(), None);
        assert_eq!(c.buffered(), 0, "nothing kept");
        match c.read(&mut [0u8; 16]) {
            Err(Stop::Failed(f)) => assert_eq!(f.kind, io::ErrorKind::InvalidData),
            other => panic!("the read must fail, got {other:?}"),
        }
        assert!(matches!(c.write(b"x"), Err(Stop::Failed(_))));
        assert!(c.take_done());
        // Later chunks are only acknowledged (the peer was told), never kept.
        c.handle_seed_chunk(chunk(), Some(ack_id + 1));
        assert_eq!(c.poll_transmit(), Some(Transmit::SeedAck(ack_id + 1)));
        assert_eq!(c.buffered(), 0);
    }

    #[test]
    fn a_seed_peer_waiting_for_acknowledgements_is_never_cut_off() {
        let mut c = Core::seed();
        let mut buf = vec![0u8; SEED_CHUNK];
        for i in 0..1000u64 {
            c.handle_seed_chunk(Some(Bytes::from(vec![1u8; SEED_CHUNK])), Some(i));
            // The peer sends the next chunk only after this one's acknowledgement; the reader is
            // slow, reading a chunk only every other time.
            let mut acked =
                std::iter::from_fn(|| c.poll_transmit()).any(|t| t == Transmit::SeedAck(i));
            while !acked {
                assert_eq!(c.read(&mut buf), Ok(SEED_CHUNK));
                acked = std::iter::from_fn(|| c.poll_transmit()).any(|t| t == Transmit::SeedAck(i));
            }
            if i % 2 == 0 {
                assert_eq!(c.read(&mut buf), Ok(SEED_CHUNK));
            }
        }
        assert!(c.buffered() <= SEED_BUFFER + SEED_CHUNK);
    }
}
