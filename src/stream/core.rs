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

use super::flow::{FlowError, RecvWindow, MAX_WINDOW};
use super::frame::{code, reset_kind, sync, Frame};
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
    /// A WINDOW, RESET or SYNC frame, sent at once.
    Control(Bytes),
    /// An OFFSET and what follows it, sent again after a resumed session: in this order, and
    /// before any DATA or FIN written after them.
    Resend(Vec<Bytes>),
    /// A chunk to a seed-era peer (`None`: end of stream); its outcome comes back through
    /// [`Core::handle_seed_sent`].
    SeedChunk(Option<Bytes>),
    /// Tell a seed-era peer the stream is destroyed.
    SeedDestroy,
    /// Acknowledge the peer's seed chunk with this request id.
    SeedAck(u64),
}

/// The sending direction of a credit-mode end, in absolute byte offsets.
#[derive(Debug)]
struct Outbound {
    /// The peer's window (0 until known).
    peer_window: u64,
    /// How far this end may send: the peer's window plus every grant (or what its SYNC said).
    limit: u64,
    /// DATA bytes sent so far.
    sent: u64,
    /// The bytes from `kept_from` to `sent`: the peer may not have them yet, and they are sent
    /// again after a resumed session. At most one window: the peer has taken every byte below
    /// `limit - peer_window` (it granted credit for them only after reading them).
    kept: VecDeque<Bytes>,
    kept_from: u64,
    /// FIN is sent (after `sent` bytes).
    fin_sent: bool,
    /// The peer confirmed every byte and the FIN (a SYNC with the FIN flag).
    fin_acked: bool,
}

impl Outbound {
    fn new(peer_window: u32) -> Outbound {
        Outbound {
            peer_window: u64::from(peer_window).min(MAX_WINDOW),
            limit: u64::from(peer_window).min(MAX_WINDOW),
            sent: 0,
            kept: VecDeque::new(),
            kept_from: 0,
            fin_sent: false,
            fin_acked: false,
        }
    }

    fn available(&self) -> u64 {
        self.limit.saturating_sub(self.sent)
    }

    /// Forgets the kept bytes below `to` (the peer has them).
    fn confirm(&mut self, to: u64) {
        let to = to.min(self.sent);
        while self.kept_from < to {
            let Some(front) = self.kept.front_mut() else {
                break;
            };
            let n = (front.len() as u64).min(to - self.kept_from);
            front.advance(n as usize);
            self.kept_from += n;
            if front.is_empty() {
                self.kept.pop_front();
            }
        }
    }

    /// A WINDOW from the peer.
    fn grant(&mut self, increment: u32) -> Result<(), FlowError> {
        let next = self.limit + u64::from(increment);
        if increment == 0 || next - self.sent.min(next) > MAX_WINDOW {
            return Err(FlowError::BadGrant {
                increment,
                current: self.available(),
            });
        }
        self.limit = next;
        self.confirm(self.limit.saturating_sub(self.peer_window));
        Ok(())
    }
}

/// The receiving direction of a credit-mode end, in absolute byte offsets.
#[derive(Debug)]
struct Inbound {
    window: RecvWindow,
    /// DATA bytes taken from the peer so far.
    taken: u64,
    /// The credit granted: this end's window plus every grant.
    limit: u64,
    /// Bytes of the coming DATA this end already has (the peer went back to an earlier offset
    /// after a resumed session).
    skip: u64,
    /// The peer went back after its FIN: its FIN comes again and is not a second one.
    fin_again: bool,
}

/// See [`Core::last_word`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LastWord {
    /// The stream ended cleanly: the SYNC confirming the peer's FIN.
    Ended(Bytes),
    /// This end reset the stream: its RESET.
    Reset(Bytes),
}

impl LastWord {
    /// The frame.
    pub(crate) fn frame(&self) -> &Bytes {
        match self {
            LastWord::Ended(b) | LastWord::Reset(b) => b,
        }
    }
}

/// The wire mode of a stream.
#[derive(Debug)]
enum Mode {
    Credit {
        route: u64,
        send: Outbound,
        recv: Inbound,
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
    /// The owner dropped its handle after its FIN, which the peer has not confirmed yet: the
    /// RESET (with this reason) waits for the confirmation, so that the peer gets every byte
    /// and the FIN first even if they must be sent again after a resumed session.
    reset_when_confirmed: Option<String>,
    /// The RESET this end sent, if it reset the stream.
    sent_reset: Option<Bytes>,
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
            send: Outbound::new(peer_window),
            recv: Inbound {
                window: RecvWindow::new(own_window),
                taken: 0,
                limit: u64::from(own_window),
                skip: 0,
                fin_again: false,
            },
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
            reset_when_confirmed: None,
            sent_reset: None,
            out: VecDeque::new(),
            wake_read: false,
            wake_write: false,
        }
    }

    /// The peer's window, learnt after this end was created (the server's own opener).
    pub(crate) fn set_peer_window(&mut self, window: u32) {
        if let Mode::Credit { send, .. } = &mut self.mode {
            *send = Outbound::new(window);
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

    /// What this credit-mode end, once forgotten, still answers a peer that asks after the
    /// stream (it resumed its session and missed the end): for a stream that ended cleanly (both
    /// FINs, this end's confirmed) the SYNC that confirms the peer's FIN; for a stream this end
    /// reset, its RESET. A cut link may have lost either, so each is also sent again after this
    /// end's own resume.
    pub(crate) fn last_word(&self) -> Option<LastWord> {
        let confirmed = matches!(&self.mode, Mode::Credit { send, .. } if send.fin_acked);
        if confirmed && self.recv_state == RecvState::Finished {
            return self.sync_frame(0).map(LastWord::Ended);
        }
        self.sent_reset.clone().map(LastWord::Reset)
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

    /// Both directions ended; in credit mode the peer also confirmed this end's FIN (until
    /// then the bytes it may miss are kept for a resumed session).
    fn check_both_ended(&mut self) {
        let confirmed = match &self.mode {
            Mode::Credit { send, .. } => send.fin_acked,
            Mode::Seed { .. } => true,
        };
        if self.send == SendState::Finished && self.recv_state == RecvState::Finished && confirmed {
            self.done = true;
        }
    }

    /// Where this end stands in the incoming direction, as a SYNC frame with `flags`.
    fn sync_frame(&self, flags: u8) -> Option<Bytes> {
        let Mode::Credit { route, recv, .. } = &self.mode else {
            return None;
        };
        let fin = if self.recv_state == RecvState::Finished {
            sync::FIN
        } else {
            0
        };
        Some(
            Frame::Sync {
                route: *route,
                received: recv.taken,
                limit: recv.limit,
                flags: flags | fin,
            }
            .encode(),
        )
    }

    /// This end's session was resumed (credit mode): it asks the peer where it stands, and
    /// sends again what the peer misses once the answer comes.
    pub(crate) fn resync(&mut self) {
        if self.done {
            return;
        }
        if let Some(f) = self.sync_frame(sync::ASK) {
            self.out.push_back(Transmit::Control(f));
        }
    }

    /// A SYNC from the peer: where it stands in this end's sending direction.
    fn handle_sync(&mut self, received: u64, limit: u64, flags: u8) {
        let Mode::Credit { route, send, .. } = &mut self.mode else {
            return;
        };
        let route = *route;
        let wrong = if received > send.sent {
            Some(format!(
                "SYNC reports {received} bytes received of {} sent",
                send.sent
            ))
        } else if received < send.kept_from {
            Some(format!(
                "SYNC reports {received} bytes received, below the {} it confirmed",
                send.kept_from
            ))
        } else if limit > received + send.peer_window.max(1) || limit < received {
            Some(format!(
                "SYNC grants up to {limit} with {received} bytes received"
            ))
        } else {
            None
        };
        if let Some(why) = wrong {
            return self.violation(why);
        }
        let Mode::Credit { send, .. } = &mut self.mode else {
            return;
        };
        send.limit = send.limit.max(limit);
        send.confirm(received);
        if flags & sync::FIN != 0 {
            if !send.fin_sent || received != send.sent {
                return self.violation("SYNC confirms a FIN that was not sent".into());
            }
            send.fin_acked = true;
            if let Some(reason) = self.reset_when_confirmed.take() {
                self.send_reset(code::CANCEL, reason);
                self.done = true;
                return;
            }
        }
        self.wake_write = true;
        if flags & sync::ASK != 0 {
            if let Some(f) = self.sync_frame(sync::ANSWER) {
                self.out.push_back(Transmit::Control(f));
            }
        }
        let Mode::Credit { send, .. } = &mut self.mode else {
            return;
        };
        if flags & (sync::ASK | sync::ANSWER) != 0 {
            // Everything the peer misses again, from where it stands.
            let mut frames = vec![Frame::Offset {
                route,
                offset: received,
            }
            .encode()];
            for chunk in &send.kept {
                frames.extend(
                    chunk
                        .chunks(MAX_FRAME)
                        .map(|part| Frame::data_from_slice(route, part)),
                );
            }
            if send.fin_sent && flags & sync::FIN == 0 {
                frames.push(Frame::Fin { route }.encode());
            }
            self.out.push_back(Transmit::Resend(frames));
        }
        self.check_both_ended();
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
        self.send_reset(code::PROTOCOL, reason);
    }

    /// Queues a RESET to the peer (credit mode) and keeps it as this end's last word.
    fn send_reset(&mut self, code: u32, reason: String) {
        if let Some(route) = self.route() {
            let f = Frame::Reset {
                route,
                code,
                reason,
            }
            .encode();
            self.sent_reset = Some(f.clone());
            self.out.push_back(Transmit::Control(f));
        }
    }

    /// A frame from the peer (credit mode).
    pub(crate) fn handle_frame(&mut self, frame: Frame) {
        if self.done {
            // Frames that crossed our RESET, or stragglers after both FINs.
            return;
        }
        if self.reset_when_confirmed.is_some()
            && !matches!(frame, Frame::Sync { .. } | Frame::Reset { .. })
        {
            // Nobody reads here any more; only the confirmation of this end's FIN matters.
            return;
        }
        let Mode::Credit { send, recv, .. } = &mut self.mode else {
            return;
        };
        match frame {
            Frame::Data { mut data, .. } => {
                if recv.skip > 0 {
                    // Bytes this end has already, sent again after a resumed session.
                    let n = recv.skip.min(data.len() as u64);
                    recv.skip -= n;
                    data.advance(n as usize);
                    if data.is_empty() {
                        return;
                    }
                }
                if self.recv_state != RecvState::Open {
                    return self.violation("DATA after FIN".into());
                }
                if let Err(e) = recv.window.on_data(data.len()) {
                    return self.violation(e.to_string());
                }
                recv.taken += data.len() as u64;
                self.recv_len += data.len();
                self.recv.push_back(data);
                self.wake_read = true;
            }
            Frame::Window { increment, .. } => {
                if let Err(e) = send.grant(increment) {
                    return self.violation(e.to_string());
                }
                self.wake_write = true;
            }
            Frame::Fin { .. } => {
                if self.recv_state != RecvState::Open {
                    if recv.fin_again && recv.skip == 0 {
                        recv.fin_again = false;
                        return;
                    }
                    return self.violation("a second FIN".into());
                }
                if recv.skip > 0 {
                    return self.violation("FIN before the bytes already received".into());
                }
                self.recv_state = RecvState::Finished;
                self.wake_read = true;
                // The peer keeps what it sent until this confirmation.
                if let Some(f) = self.sync_frame(0) {
                    self.out.push_back(Transmit::Control(f));
                }
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
            Frame::Sync {
                received,
                limit,
                flags,
                ..
            } => self.handle_sync(received, limit, flags),
            Frame::Offset { offset, .. } => {
                if offset > recv.taken {
                    let why = format!("OFFSET {offset} is past the {} bytes received", recv.taken);
                    return self.violation(why);
                }
                recv.skip = recv.taken - offset;
                recv.fin_again = self.recv_state == RecvState::Finished;
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
                let grant = recv.window.on_consumed(n);
                if let Some(increment) = grant {
                    recv.limit += u64::from(increment);
                }
                // Grants only matter while the peer may still write.
                if let (Some(increment), true) = (grant, peer_writing) {
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
                let n = (buf.len().min(MAX_FRAME) as u64).min(send.available()) as usize;
                if n == 0 {
                    return Err(Stop::Blocked);
                }
                self.out
                    .push_back(Transmit::Ordered(Frame::data_from_slice(*route, &buf[..n])));
                send.kept.push_back(Bytes::copy_from_slice(&buf[..n]));
                send.sent += n as u64;
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
        match &mut self.mode {
            Mode::Credit { route, send, .. } => {
                send.fin_sent = true;
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
        if self.send == SendState::Finished && self.recv_state == RecvState::Finished {
            // Both directions ended: nothing to tell; the end stays until the peer confirms its
            // FIN (or the stream is reset).
            return;
        }
        let f = Failure::new(io::ErrorKind::ConnectionReset, format!("stream {reason}"));
        if matches!(&self.mode, Mode::Credit { send, .. } if send.fin_sent && !send.fin_acked) {
            // The peer still reads every byte and the FIN; the RESET follows its confirmation.
            self.reset_when_confirmed = Some(reason.to_string());
            self.recv_state = RecvState::Failed(f);
            self.recv.clear();
            self.recv_len = 0;
            self.wake_read = true;
            self.wake_write = true;
            return;
        }
        match self.route() {
            Some(_) => self.send_reset(code::CANCEL, reason.to_string()),
            None => self.out.push_back(Transmit::SeedDestroy),
        }
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
            .flat_map(|t| match t {
                Transmit::Ordered(b) | Transmit::Control(b) => vec![b],
                Transmit::Resend(fs) => fs,
                other => panic!("a credit-mode end queued {other:?}"),
            })
            .map(|b| Frame::decode(b).unwrap())
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
        // Only the confirmation of the peer's FIN, sent when it came.
        assert!(matches!(
            &frames(&mut c)[..],
            [Frame::Sync {
                received: 3,
                flags: sync::FIN,
                ..
            }]
        ));
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
        c.write(b"abc").unwrap();
        c.shutdown().unwrap();
        c.close("dropped by its owner");
        // The RESET waits for the peer's confirmation of every byte and the FIN.
        assert!(matches!(
            &frames(&mut c)[..],
            [Frame::Data { .. }, Frame::Fin { .. }]
        ));
        assert!(!c.take_done());
        c.handle_frame(Frame::Sync {
            route: 1,
            received: 3,
            limit: 100,
            flags: sync::FIN,
        });
        assert!(matches!(
            &frames(&mut c)[..],
            [Frame::Reset { code: 0, .. }]
        ));
        assert!(c.take_done());
        let mut c = Core::credit(1, 100, 100);
        c.shutdown().unwrap();
        c.handle_frame(Frame::Fin { route: 1 });
        c.close("dropped by its owner");
        assert!(matches!(
            &frames(&mut c)[..],
            [Frame::Fin { .. }, Frame::Sync { .. }]
        ));
        // Forgotten once the peer confirms this end's FIN.
        assert!(!c.take_done());
        c.handle_frame(Frame::Sync {
            route: 1,
            received: 0,
            limit: 100,
            flags: sync::FIN,
        });
        assert!(c.take_done());
        assert!(frames(&mut c).is_empty());
    }

    /// Passes every frame `from` queued to `to`; returns how many.
    fn pass(from: &mut Core, to: &mut Core) -> usize {
        let fs = frames(from);
        let n = fs.len();
        for f in fs {
            to.handle_frame(f);
        }
        n
    }

    fn read_all(c: &mut Core) -> Vec<u8> {
        let mut out = Vec::new();
        let mut buf = [0u8; 1024];
        while let Ok(n) = c.read(&mut buf) {
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        out
    }

    #[test]
    fn after_a_cut_the_reader_gets_what_it_missed_once() {
        let data: Vec<u8> = (0..200u8).collect();
        let mut a = Core::credit(1, 1000, 1000);
        let mut b = Core::credit(1, 1000, 1000);
        let mut at = 0;
        while at < data.len() {
            at += a.write(&data[at..(at + 50).min(data.len())]).unwrap();
        }
        a.shutdown().unwrap();
        // The first two DATA frames arrive; the rest and the FIN are lost with B's link.
        let mut fs = frames(&mut a);
        fs.truncate(2);
        for f in fs {
            b.handle_frame(f);
        }
        b.resync();
        assert!(matches!(
            &frames(&mut b)[..],
            [Frame::Sync {
                received: 100,
                flags: sync::ASK,
                ..
            }]
        ));
        // Asked twice (a second cut): the answers overlap, the reader skips what it has.
        b.resync();
        b.resync();
        pass(&mut b, &mut a);
        pass(&mut a, &mut b);
        assert_eq!(read_all(&mut b), data);
        assert!(b.read(&mut [0u8; 4]) == Ok(0), "EOF once, after every byte");
        pass(&mut b, &mut a);
        a.handle_frame(Frame::Fin { route: 1 });
        b.shutdown().unwrap();
        pass(&mut b, &mut a);
        pass(&mut a, &mut b);
        assert!(a.take_done());
        assert!(b.take_done());
    }

    #[test]
    fn an_offset_past_what_was_received_is_a_violation() {
        let mut b = Core::credit(1, 100, 100);
        b.handle_frame(Frame::Data {
            route: 1,
            data: Bytes::from_static(b"abc"),
        });
        b.handle_frame(Frame::Offset {
            route: 1,
            offset: 4,
        });
        assert!(matches!(
            &frames(&mut b)[..],
            [Frame::Reset {
                code: code::PROTOCOL,
                ..
            }]
        ));
        assert!(matches!(b.read(&mut [0u8; 8]), Err(Stop::Failed(_))));
    }

    #[test]
    fn a_writer_keeps_at_most_one_window() {
        let mut a = Core::credit(1, 64, 64);
        let mut b = Core::credit(1, 64, 64);
        for _ in 0..100 {
            while a.write(&[7u8; 10]).is_ok() {}
            pass(&mut a, &mut b);
            read_all(&mut b);
            pass(&mut b, &mut a);
            match &a.mode {
                Mode::Credit { send, .. } => {
                    let kept: usize = send.kept.iter().map(Bytes::len).sum();
                    assert!(kept <= 64, "{kept} bytes kept over a window of 64");
                    assert_eq!(kept as u64, send.sent - send.kept_from);
                }
                Mode::Seed { .. } => unreachable!(),
            }
        }
    }

    #[test]
    fn a_sync_claiming_more_than_was_sent_is_a_violation() {
        let mut a = Core::credit(1, 100, 100);
        a.write(b"abc").unwrap();
        frames(&mut a);
        a.handle_frame(Frame::Sync {
            route: 1,
            received: 4,
            limit: 100,
            flags: sync::ANSWER,
        });
        assert!(matches!(
            &frames(&mut a)[..],
            [Frame::Reset {
                code: code::PROTOCOL,
                ..
            }]
        ));
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
