//! The relay's accounting of one credit-mode stream, free of I/O: frame headers from side A (the
//! opener) or B (the acceptor) go in, a [`Verdict`] comes out: forward the frame as it is, hold
//! it, or reset both ends. The relay keeps the same credit as the ends, with the same checked
//! types ([`SendCredit`]), so a writer that overruns the receiver's window is cut off here,
//! before it fills the relay's memory.

use super::flow::SendCredit;
use super::frame::{self, Header, Kind};
use bytes::Bytes;

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
    /// RESET, or the second FIN) and must be removed.
    Forward { last: bool },
    /// Keep it until the opener knows the route (see [`RouteState::opened`]).
    Held,
    /// The sender broke the rules: reset both ends and remove the route.
    Violation(String),
    /// The route is already finished: drop the frame (it crossed a reset).
    Stale,
}

/// One route's accounting.
#[derive(Debug)]
pub(crate) struct RouteState {
    /// What A may still send to B.
    credit_a: SendCredit,
    /// What B may still send to A.
    credit_b: SendCredit,
    fin_a: bool,
    fin_b: bool,
    /// Frames from B that arrived before A was told the stream is open.
    opening: Option<Vec<Bytes>>,
    /// A RESET passed, both FINs passed, or the route was torn down.
    finished: bool,
}

impl RouteState {
    /// A route whose opener has window `window_a`; B's window is known later (`opened`) when
    /// `opening`, else it is `window_b` now.
    pub(crate) fn new(window_a: u32, window_b: u32, opening: bool) -> RouteState {
        RouteState {
            credit_a: SendCredit::new(window_b),
            credit_b: SendCredit::new(window_a),
            fin_a: false,
            fin_b: false,
            opening: opening.then(Vec::new),
            finished: false,
        }
    }

    /// A frame `bytes` with header `h` (its [`frame::peek`]) from `from`.
    ///
    /// Before the opener knows the route, what the acceptor may send is bounded: DATA within the
    /// opener's window, one FIN, a RESET; a WINDOW then is a violation (the opener cannot have
    /// sent anything to grant credit for).
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
        let (credit, fin, peer_credit) = match from {
            Side::A => (&mut self.credit_a, &mut self.fin_a, &mut self.credit_b),
            Side::B => (&mut self.credit_b, &mut self.fin_b, &mut self.credit_a),
        };
        match h.kind {
            Kind::Data => {
                // Not empty, and decoding to `n` bytes: `frame::check` saw to both.
                let n = u64::from(h.value);
                if *fin {
                    return self.violation("DATA after FIN".into());
                }
                if let Err(e) = credit.consume(n) {
                    return self.violation(e.to_string());
                }
            }
            Kind::Window => {
                if opening {
                    return self.violation("WINDOW before the stream opened".into());
                }
                // The sender lets the other side send more to it.
                if let Err(e) = peer_credit.grant(h.value) {
                    return self.violation(e.to_string());
                }
            }
            Kind::Fin => {
                if *fin {
                    return self.violation("a second FIN".into());
                }
                *fin = true;
            }
            Kind::Reset => {}
        }
        let last = h.kind == Kind::Reset || (self.fin_a && self.fin_b);
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
        self.credit_a = SendCredit::new(window_b);
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
        match side {
            Side::A => self.credit_a.available(),
            Side::B => self.credit_b.available(),
        }
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
    use crate::stream::frame::{peek, Frame};

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
    fn the_second_fin_or_a_reset_finishes() {
        let mut r = RouteState::new(10, 10, false);
        let fin = Frame::Fin { route: 1 };
        assert_eq!(
            feed(&mut r, Side::A, &fin),
            Verdict::Forward { last: false }
        );
        assert_eq!(feed(&mut r, Side::B, &fin), Verdict::Forward { last: true });
        assert!(r.is_finished());
        assert!(!r.finish(), "already finished");
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
