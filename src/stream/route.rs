//! The relay's accounting of one credit-mode stream, free of I/O: frame headers from side A (the
//! opener) or B (the acceptor) go in, a [`Verdict`] comes out: forward the frame as it is, hold
//! it, or reset both ends. The relay keeps the same credit as the ends, with the same checked
//! types ([`SendCredit`]), so a writer that overruns the receiver's window is cut off here,
//! before it fills the relay's memory.

use super::flow::{FlowError, MAX_WINDOW};
use super::frame::{self, sync, Header, Kind};
use bytes::Bytes;
use std::collections::VecDeque;

/// An end of a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    /// The opener.
    A,
    /// The acceptor.
    B,
}

impl Side {
    /// The other end.
    pub(crate) fn other(self) -> Side {
        match self {
            Side::A => Side::B,
            Side::B => Side::A,
        }
    }
}

/// What to do with a frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Forward it, unchanged, to the other side; after it the route is finished (`last`: a
    /// RESET, or the second confirmation of a FIN) and must be removed.
    Forward { last: bool },
    /// Keep it until the opener knows the route (see [`RouteState::opened`]).
    Held,
    /// Drop it, counted nowhere: its sender sends it again after a resumed session, behind an
    /// OFFSET (see [`RouteState::resumed`]).
    Drop,
    /// The sender broke the rules: reset both ends and remove the route.
    Violation(String),
    /// The route is already finished: drop the frame (it crossed a reset).
    Stale,
}

/// One direction of a route, in absolute byte offsets.
#[derive(Debug, Clone)]
struct Direction {
    /// The receiver's window.
    window: u64,
    /// How far the sender may send: the receiver's window plus its grants (or what its SYNC
    /// said, when grants were lost with a link).
    limit: u64,
    /// Where the sender's next DATA starts.
    next: u64,
    /// The furthest offset forwarded.
    high: u64,
    /// Where the sender's FIN was.
    fin_at: Option<u64>,
    /// The sender went back after its FIN (an OFFSET): its FIN comes again.
    fin_again: bool,
    /// The receiver confirmed every byte and the FIN.
    fin_acked: bool,
    /// A client of the route resumed its session: the sender's DATA and FIN are dropped until
    /// its OFFSET says where they start.
    dropping: bool,
    /// What the receiver's SYNCs that ask for a resend reported received, oldest first, not yet
    /// answered by an OFFSET: the sender goes back only to one of them (a SYNC lost with a link
    /// is never answered and is passed over).
    asked: VecDeque<u64>,
}

/// Unanswered SYNCs one direction may have.
const MAX_ASKED: usize = 32;

impl Direction {
    fn new(window: u32) -> Direction {
        let window = u64::from(window).min(MAX_WINDOW);
        Direction {
            window,
            limit: window,
            next: 0,
            high: 0,
            fin_at: None,
            fin_again: false,
            fin_acked: false,
            dropping: false,
            asked: VecDeque::new(),
        }
    }

    fn data(&mut self, n: u64) -> Result<bool, String> {
        if self.dropping {
            return Ok(false);
        }
        if let Some(f) = self.fin_at {
            if !self.fin_again || self.next + n > f {
                return Err("DATA after FIN".into());
            }
        }
        if self.next + n > self.limit {
            return Err(FlowError::Overrun {
                sent: n,
                credit: self.limit.saturating_sub(self.next),
            }
            .to_string());
        }
        self.next += n;
        self.high = self.high.max(self.next);
        Ok(true)
    }

    fn grant(&mut self, increment: u32) -> Result<(), String> {
        let next = self.limit + u64::from(increment);
        if increment == 0 || next.saturating_sub(self.next) > MAX_WINDOW {
            return Err(FlowError::BadGrant {
                increment,
                current: self.limit.saturating_sub(self.next),
            }
            .to_string());
        }
        self.limit = next;
        Ok(())
    }

    fn fin(&mut self) -> Result<bool, String> {
        if self.dropping {
            return Ok(false);
        }
        match self.fin_at {
            None => self.fin_at = Some(self.next),
            Some(f) if self.fin_again && self.next == f => self.fin_again = false,
            Some(_) => return Err("a second FIN".into()),
        }
        Ok(true)
    }

    /// The receiver's SYNC.
    fn sync(&mut self, received: u64, limit: u64, flags: u8) -> Result<(), String> {
        if received > self.high {
            return Err(format!(
                "SYNC reports {received} bytes received of {} forwarded",
                self.high
            ));
        }
        if limit < received || limit > received + self.window {
            return Err(format!(
                "SYNC grants up to {limit} with {received} bytes received and a window of {}",
                self.window
            ));
        }
        if flags & sync::FIN != 0 {
            if self.fin_at != Some(received) {
                return Err("SYNC confirms a FIN that did not pass".into());
            }
            self.fin_acked = true;
        }
        if flags & (sync::ASK | sync::ANSWER) != 0 {
            if self.asked.len() >= MAX_ASKED {
                return Err(format!(
                    "more than {MAX_ASKED} SYNC frames without an answer"
                ));
            }
            self.asked.push_back(received);
        }
        self.limit = self.limit.max(limit);
        Ok(())
    }

    /// The sender's OFFSET: its next DATA starts there.
    fn offset(&mut self, offset: u64) -> Result<(), String> {
        while self.asked.front().is_some_and(|&r| r < offset) {
            self.asked.pop_front();
        }
        if self.asked.pop_front() != Some(offset) {
            return Err(format!("OFFSET {offset} answers no SYNC of the receiver"));
        }
        self.next = offset;
        self.dropping = false;
        self.fin_again = self.fin_at.is_some();
        Ok(())
    }
}

/// One route's accounting.
#[derive(Debug, Clone)]
pub(crate) struct RouteState {
    /// From A to B.
    ab: Direction,
    /// From B to A.
    ba: Direction,
    /// Frames from B that arrived before A was told the stream is open.
    opening: Option<Vec<Bytes>>,
    /// A RESET passed, both FINs were confirmed, or the route was torn down.
    finished: bool,
}

impl RouteState {
    /// A route whose opener has window `window_a`; B's window is known later (`opened`) when
    /// `opening`, else it is `window_b` now.
    pub(crate) fn new(window_a: u32, window_b: u32, opening: bool) -> RouteState {
        RouteState {
            ab: Direction::new(window_b),
            ba: Direction::new(window_a),
            opening: opening.then(Vec::new),
            finished: false,
        }
    }

    /// A frame `bytes` with header `h` (its [`frame::peek`]) from `from`.
    ///
    /// Before the opener knows the route, what the acceptor may send is bounded: DATA within the
    /// opener's window, one FIN, a RESET; a WINDOW, SYNC or OFFSET then is a violation (the
    /// opener cannot have sent anything to grant credit for).
    pub(crate) fn on_frame(&mut self, from: Side, h: &Header, bytes: &[u8]) -> Verdict {
        if self.finished {
            return Verdict::Stale;
        }
        // A raw 0x1E would split the frame at the receiver into a forged packet; a body that
        // does not decode would lose bytes there: neither is forwarded.
        if let Err(e) = frame::check(bytes, h) {
            return self.violation(e.to_string());
        }
        let opening = self.opening.is_some() && from == Side::B;
        let (out, inn) = match from {
            Side::A => (&mut self.ab, &mut self.ba),
            Side::B => (&mut self.ba, &mut self.ab),
        };
        let checked = match h.kind {
            // Not empty, and decoding to `n` bytes: `frame::check` saw to both.
            Kind::Data => out.data(u64::from(h.value)),
            Kind::Fin => out.fin(),
            Kind::Reset => Ok(true),
            _ if opening => Err(format!("{:?} before the stream opened", h.kind)),
            // The sender lets the other side send more to it.
            Kind::Window => inn.grant(h.value).map(|()| true),
            Kind::Sync => inn.sync(h.position, h.limit, h.flags).map(|()| true),
            Kind::Offset => out.offset(h.position).map(|()| true),
        };
        match checked {
            Err(why) => return self.violation(why),
            Ok(false) => return Verdict::Drop,
            Ok(true) => {}
        }
        // A SYNC that asks is answered first: the route ends with the answer.
        let asks = h.kind == Kind::Sync && h.flags & sync::ASK != 0;
        let last = h.kind == Kind::Reset || (self.ab.fin_acked && self.ba.fin_acked && !asks);
        if last {
            self.finished = true;
        }
        // A last frame held here is reported by `opened`, after the frames before it.
        if opening {
            Verdict::Held
        } else {
            Verdict::Forward { last }
        }
    }

    /// The client at `side` took its session over a new connection: until each sender says
    /// with an OFFSET where its next DATA starts, its DATA and FIN are dropped (they may follow
    /// a gap; it sends them again after the SYNC exchange).
    pub(crate) fn resumed(&mut self) {
        if self.opening.is_none() {
            self.ab.dropping = true;
            self.ba.dropping = true;
        }
    }

    /// Stores a frame the verdict said to hold.
    pub(crate) fn hold(&mut self, frame: Bytes) {
        if let Some(q) = &mut self.opening {
            q.push(frame);
        }
    }

    /// The acceptor answered with `window_b` and the opener is being told: returns the held
    /// frames to forward to A now, and whether the route finished among them. A's credit starts
    /// at `window_b` (no grant from B can have been held, see [`RouteState::on_frame`]).
    pub(crate) fn opened(&mut self, window_b: u32) -> (Vec<Bytes>, bool) {
        self.ab = Direction::new(window_b);
        (self.opening.take().unwrap_or_default(), self.finished)
    }

    fn violation(&mut self, why: String) -> Verdict {
        self.finished = true;
        self.opening = None;
        Verdict::Violation(why)
    }

    /// Tears the route down; returns whether it was still live (so exactly one caller tells the
    /// ends).
    pub(crate) fn finish(&mut self) -> bool {
        self.opening = None;
        !std::mem::replace(&mut self.finished, true)
    }

    /// Credit A (resp. B) still has; for checks.
    #[cfg(test)]
    pub(crate) fn credit(&self, side: Side) -> u64 {
        let d = match side {
            Side::A => &self.ab,
            Side::B => &self.ba,
        };
        d.limit.saturating_sub(d.next)
    }

    /// Whether the route is finished.
    #[cfg(test)]
    pub(crate) fn is_finished(&self) -> bool {
        self.finished
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::frame::{peek, sync, Frame};

    fn feed(r: &mut RouteState, from: Side, f: &Frame) -> Verdict {
        let b = f.encode();
        r.on_frame(from, &peek(&b).unwrap(), &b)
    }

    #[test]
    fn overrun_and_bad_grants_are_violations() {
        let mut r = RouteState::new(10, 4, false);
        let d = |n: usize| Frame::Data {
            route: 1,
            data: Bytes::from(vec![0u8; n]),
        };
        assert_eq!(
            feed(&mut r, Side::A, &d(4)),
            Verdict::Forward { last: false }
        );
        assert!(matches!(
            feed(&mut r, Side::A, &d(1)),
            Verdict::Violation(_)
        ));
        assert_eq!(feed(&mut r, Side::A, &d(1)), Verdict::Stale);

        let mut r = RouteState::new(10, 4, false);
        let w = Frame::Window {
            route: 1,
            increment: u32::MAX,
        };
        assert!(matches!(feed(&mut r, Side::B, &w), Verdict::Violation(_)));
    }

    #[test]
    fn the_second_confirmed_fin_or_a_reset_finishes() {
        let mut r = RouteState::new(10, 10, false);
        let fin = Frame::Fin { route: 1 };
        let ack = Frame::Sync {
            route: 1,
            received: 0,
            limit: 10,
            flags: sync::FIN,
        };
        let fwd = Verdict::Forward { last: false };
        assert_eq!(feed(&mut r, Side::A, &fin), fwd);
        assert_eq!(feed(&mut r, Side::B, &fin), fwd);
        assert!(matches!(feed(&mut r, Side::A, &fin), Verdict::Violation(_)));
        let mut r = RouteState::new(10, 10, false);
        assert!(
            matches!(feed(&mut r, Side::B, &ack), Verdict::Violation(_)),
            "a confirmation of a FIN that did not pass"
        );
        let mut r = RouteState::new(10, 10, false);
        assert_eq!(feed(&mut r, Side::A, &fin), fwd);
        assert_eq!(feed(&mut r, Side::B, &fin), fwd);
        assert_eq!(feed(&mut r, Side::B, &ack), fwd);
        assert_eq!(feed(&mut r, Side::A, &ack), Verdict::Forward { last: true });
        assert!(r.is_finished());
        assert!(!r.finish(), "already finished");
        let mut r = RouteState::new(10, 10, false);
        let reset = Frame::Reset {
            route: 1,
            code: 0,
            reason: String::new(),
        };
        assert_eq!(
            feed(&mut r, Side::B, &reset),
            Verdict::Forward { last: true }
        );
    }

    #[test]
    fn after_a_resume_data_waits_for_the_offset_and_rewinds_stay_within_a_window() {
        let d = |n: usize| Frame::Data {
            route: 1,
            data: Bytes::from(vec![0u8; n]),
        };
        let off = |offset: u64| Frame::Offset { route: 1, offset };
        let sync = |received: u64, limit: u64| Frame::Sync {
            route: 1,
            received,
            limit,
            flags: sync::ASK,
        };
        let fwd = Verdict::Forward { last: false };
        // B's window is 10: A sends 8, B grants 4 (it read 4).
        let mut r = RouteState::new(10, 10, false);
        assert_eq!(feed(&mut r, Side::A, &d(8)), fwd);
        let w = Frame::Window {
            route: 1,
            increment: 4,
        };
        assert_eq!(feed(&mut r, Side::B, &w), fwd);
        r.resumed();
        // Until A's OFFSET, its DATA and FIN are dropped and counted nowhere.
        assert_eq!(feed(&mut r, Side::A, &d(6)), Verdict::Drop);
        assert_eq!(
            feed(&mut r, Side::A, &Frame::Fin { route: 1 }),
            Verdict::Drop
        );
        assert_eq!(r.credit(Side::A), 6);
        // B cannot claim more than was forwarded, nor credit past its window.
        assert!(matches!(
            r.clone().on_frame(
                Side::B,
                &peek(&sync(9, 14).encode()).unwrap(),
                &sync(9, 14).encode()
            ),
            Verdict::Violation(_)
        ));
        assert!(matches!(
            feed(&mut r.clone(), Side::B, &sync(6, 17)),
            Verdict::Violation(_)
        ));
        // B took 6 bytes and granted up to 16 (the grant of 2 more was lost with its link).
        assert_eq!(feed(&mut r, Side::B, &sync(6, 16)), fwd);
        // An OFFSET goes back to where a SYNC of B said it stands, nowhere else.
        assert!(matches!(
            feed(&mut r.clone(), Side::A, &off(7)),
            Verdict::Violation(_)
        ));
        assert!(matches!(
            feed(&mut r.clone(), Side::A, &off(5)),
            Verdict::Violation(_)
        ));
        assert_eq!(feed(&mut r, Side::A, &off(6)), fwd);
        assert!(
            matches!(
                feed(&mut r.clone(), Side::A, &off(6)),
                Verdict::Violation(_)
            ),
            "one OFFSET per SYNC"
        );
        // From 6 A may send up to B's limit of 16.
        assert_eq!(r.credit(Side::A), 10);
        assert_eq!(feed(&mut r, Side::A, &d(10)), fwd);
        assert!(matches!(
            feed(&mut r, Side::A, &d(1)),
            Verdict::Violation(_)
        ));
    }

    #[test]
    fn a_fin_comes_again_only_after_an_offset() {
        let d = Frame::Data {
            route: 1,
            data: Bytes::from_static(b"abcd"),
        };
        let fin = Frame::Fin { route: 1 };
        let fwd = Verdict::Forward { last: false };
        let mut r = RouteState::new(10, 10, false);
        assert_eq!(feed(&mut r, Side::A, &d), fwd);
        assert_eq!(feed(&mut r, Side::A, &fin), fwd);
        r.resumed();
        let ask = Frame::Sync {
            route: 1,
            received: 2,
            limit: 10,
            flags: sync::ASK,
        };
        assert_eq!(feed(&mut r, Side::B, &ask), fwd);
        assert_eq!(
            feed(
                &mut r,
                Side::A,
                &Frame::Offset {
                    route: 1,
                    offset: 2
                }
            ),
            fwd
        );
        // The bytes up to the FIN again, then the FIN once; nothing past it.
        assert!(matches!(
            feed(&mut r.clone(), Side::A, &d),
            Verdict::Violation(_)
        ));
        let two = Frame::Data {
            route: 1,
            data: Bytes::from_static(b"cd"),
        };
        assert_eq!(feed(&mut r, Side::A, &two), fwd);
        assert_eq!(feed(&mut r, Side::A, &fin), fwd);
        assert!(matches!(feed(&mut r, Side::A, &fin), Verdict::Violation(_)));
    }

    #[test]
    fn frames_from_the_acceptor_wait_for_the_opening() {
        let mut r = RouteState::new(10, 0, true);
        let data = Frame::Data {
            route: 1,
            data: Bytes::from_static(b"hi"),
        };
        assert_eq!(feed(&mut r, Side::B, &data), Verdict::Held);
        r.hold(data.encode());
        let (held, finished) = r.opened(8);
        assert_eq!(held.len(), 1);
        assert!(!finished);
        assert_eq!(r.credit(Side::A), 8);
        assert_eq!(
            feed(&mut r, Side::B, &data),
            Verdict::Forward { last: false }
        );
    }

    #[test]
    fn what_the_acceptor_may_send_before_the_open_is_bounded() {
        let data = |n: usize| Frame::Data {
            route: 1,
            data: Bytes::from(vec![1u8; n]),
        };
        // Empty DATA carries nothing: refused, before the open and after.
        for opening in [true, false] {
            let mut r = RouteState::new(10, 10, opening);
            let empty = Frame::data_from_slice(1, b"");
            assert!(matches!(
                r.on_frame(Side::B, &peek(&empty).unwrap(), &empty),
                Verdict::Violation(_)
            ));
        }
        // DATA is held up to the opener's window and no further.
        let mut r = RouteState::new(10, 0, true);
        for _ in 0..10 {
            assert_eq!(feed(&mut r, Side::B, &data(1)), Verdict::Held);
        }
        assert!(matches!(
            feed(&mut r, Side::B, &data(1)),
            Verdict::Violation(_)
        ));
        // A grant before the open is refused (the opener sent nothing yet).
        let mut r = RouteState::new(10, 0, true);
        let w = Frame::Window {
            route: 1,
            increment: 1,
        };
        assert!(matches!(feed(&mut r, Side::B, &w), Verdict::Violation(_)));
        // One FIN, then nothing more.
        let mut r = RouteState::new(10, 0, true);
        let fin = Frame::Fin { route: 1 };
        assert_eq!(feed(&mut r, Side::B, &fin), Verdict::Held);
        assert!(matches!(feed(&mut r, Side::B, &fin), Verdict::Violation(_)));
        // After the open, grants count on top of the acceptor's window.
        let mut r = RouteState::new(10, 0, true);
        assert_eq!(feed(&mut r, Side::B, &data(3)), Verdict::Held);
        let (held, _) = r.opened(5);
        assert_eq!(held.len(), 0, "nothing was stored with hold()");
        assert_eq!(feed(&mut r, Side::B, &w), Verdict::Forward { last: false });
        assert_eq!(r.credit(Side::A), 6);
        assert_eq!(r.credit(Side::B), 7);
    }

    #[test]
    fn frames_with_a_raw_separator_or_a_bad_body_are_violations() {
        for bad in [
            &b"D000000000000000100000003a\x1eb"[..],
            b"D000000000000000100000004\x1d\x03abc",
            b"F0000000000000001\x1e",
            b"W000000000000000100000001x",
            b"R000000000000000100000000\x1e42",
        ] {
            let mut r = RouteState::new(10, 10, false);
            let v = r.on_frame(Side::A, &peek(bad).unwrap(), bad);
            assert!(matches!(v, Verdict::Violation(_)), "{bad:?}: {v:?}");
            assert!(r.is_finished());
        }
    }
}
