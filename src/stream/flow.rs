//! Credit-based flow control, free of I/O so it can be tested on its own.
//!
//! Each end of a stream advertises a receive window when the stream opens. The writer may have at
//! most that many bytes unacknowledged; the reader grants more (a WINDOW frame) as its application
//! consumes bytes. All arithmetic is checked: a peer that overruns its credit, or grants so much
//! that the window would exceed [`MAX_WINDOW`], is a protocol error, never a panic.

/// Largest window either side may hold (as in HTTP/2: 2^31 - 1).
pub const MAX_WINDOW: u64 = (1 << 31) - 1;

/// A flow-control rule broken by the peer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlowError {
    /// The peer sent more bytes than it had credit for.
    #[error("peer sent {sent} bytes with only {credit} bytes of credit")]
    Overrun {
        /// Bytes in the offending frame.
        sent: u64,
        /// Credit the peer had.
        credit: u64,
    },
    /// A grant that would push the window past [`MAX_WINDOW`], or a zero grant.
    #[error("impossible window grant of {increment} on top of {current}")]
    BadGrant {
        /// The grant.
        increment: u32,
        /// Credit before it.
        current: u64,
    },
}

/// The sending side: how many bytes this end may still send.
#[derive(Debug, Clone)]
pub struct SendCredit {
    available: u64,
}

impl SendCredit {
    /// Credit from the peer's advertised window.
    pub fn new(window: u32) -> SendCredit {
        SendCredit {
            available: u64::from(window).min(MAX_WINDOW),
        }
    }

    /// Bytes that may be sent now.
    pub fn available(&self) -> u64 {
        self.available
    }

    /// Takes up to `want` bytes of credit; returns how many were taken.
    pub fn take(&mut self, want: usize) -> usize {
        let n = (want as u64).min(self.available);
        self.available -= n;
        n as usize
    }

    /// Accounts for exactly `n` bytes someone else sent on this credit (the relay checking a
    /// writer): more than is available is an overrun and changes nothing.
    pub fn consume(&mut self, n: u64) -> Result<(), FlowError> {
        if n > self.available {
            return Err(FlowError::Overrun {
                sent: n,
                credit: self.available,
            });
        }
        self.available -= n;
        Ok(())
    }

    /// Adds a grant from the peer.
    pub fn grant(&mut self, increment: u32) -> Result<(), FlowError> {
        let next = self.available + u64::from(increment);
        if increment == 0 || next > MAX_WINDOW {
            return Err(FlowError::BadGrant {
                increment,
                current: self.available,
            });
        }
        self.available = next;
        Ok(())
    }
}

/// The receiving side: how many bytes the peer may still send, and when to grant more.
#[derive(Debug, Clone)]
pub struct RecvWindow {
    window: u32,
    /// Bytes the peer may send before it needs a grant.
    credit: u64,
    /// Bytes the application has consumed since the last grant.
    consumed: u64,
}

impl RecvWindow {
    /// A window of `window` bytes, all granted up front.
    pub fn new(window: u32) -> RecvWindow {
        RecvWindow {
            window,
            credit: u64::from(window),
            consumed: 0,
        }
    }

    /// The advertised window.
    pub fn window(&self) -> u32 {
        self.window
    }

    /// Accounts for `n` bytes arriving from the peer.
    pub fn on_data(&mut self, n: usize) -> Result<(), FlowError> {
        let n = n as u64;
        if n > self.credit {
            return Err(FlowError::Overrun {
                sent: n,
                credit: self.credit,
            });
        }
        self.credit -= n;
        Ok(())
    }

    /// Accounts for `n` bytes consumed by the application; returns a grant to send when enough
    /// has been consumed to be worth a frame (half the window), so grants stay few.
    pub fn on_consumed(&mut self, n: usize) -> Option<u32> {
        self.consumed += n as u64;
        let threshold = (u64::from(self.window) / 2).max(1);
        if self.consumed >= threshold {
            let grant = self.consumed.min(u64::from(u32::MAX));
            self.consumed -= grant;
            self.credit += grant;
            Some(grant as u32)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writer_never_exceeds_credit() {
        let mut c = SendCredit::new(100);
        assert_eq!(c.take(60), 60);
        assert_eq!(c.take(60), 40);
        assert_eq!(c.take(1), 0);
        c.grant(10).unwrap();
        assert_eq!(c.take(100), 10);
    }

    #[test]
    fn grants_are_checked() {
        let mut c = SendCredit::new(10);
        assert!(matches!(c.grant(0), Err(FlowError::BadGrant { .. })));
        assert!(matches!(c.grant(u32::MAX), Err(FlowError::BadGrant { .. })));
        assert_eq!(c.available(), 10, "a refused grant changes nothing");
    }

    #[test]
    fn receiver_detects_overrun_and_grants_on_half_window() {
        let mut r = RecvWindow::new(100);
        r.on_data(70).unwrap();
        assert_eq!(
            r.on_data(31),
            Err(FlowError::Overrun {
                sent: 31,
                credit: 30
            })
        );
        assert_eq!(r.on_consumed(40), None);
        assert_eq!(r.on_consumed(10), Some(50));
        // Credit is back to 30 + 50.
        r.on_data(80).unwrap();
        assert!(r.on_data(1).is_err());
    }

    #[test]
    fn a_full_exchange_keeps_in_flight_within_the_window() {
        // Writer and reader exchanging through the two types, with the reader consuming in odd
        // sizes: bytes in flight never exceed the window.
        let window = 1000u32;
        let mut send = SendCredit::new(window);
        let mut recv = RecvWindow::new(window);
        let mut in_flight = 0usize;
        let mut buffered = 0usize;
        let mut total = 0usize;
        while total < 100_000 {
            let n = send.take(333);
            if n > 0 {
                recv.on_data(n).unwrap();
                in_flight += n;
                total += n;
            }
            assert!(in_flight as u64 <= u64::from(window));
            let eat = in_flight.min(217);
            in_flight -= eat;
            buffered += eat;
            if let Some(g) = recv.on_consumed(eat) {
                send.grant(g).unwrap();
            }
        }
        assert!(buffered > 0);
    }
}
