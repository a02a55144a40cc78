//! What the relay sent to an extension client and the client has not confirmed yet, kept to send
//! it again after a resume, and the count of what the relay received from it.
//!
//! Both ends of a session count the events they send to the other and the events they receive
//! from it, across the session's connections (`P2P_WELCOME` and `P2P_RECEIVED` are not counted).
//! Each end confirms what it received with `P2P_RECEIVED(count)`; the sender keeps what is not
//! confirmed, in order, and after a resume sends again what came after the other end's count. A
//! stream frame is counted but not kept (a stream resends its own bytes): a marker of no bytes
//! keeps the count in line while the link is up, and is left out when the rest is sent again,
//! which numbers what is sent again from the other end's count on.
//!
//! Every event to a client that has this scheme goes through `Peer::queue_out`, which counts it,
//! keeps it and writes it under the session's lock, so that the count's order is the order on the
//! wire.

use super::Payload;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// A confirmation goes out once this many events came since the last one...
pub(crate) const CONFIRM_EVERY: u64 = 512;
/// ...or this many bytes of them (as the byte budget counts them)...
pub(crate) const CONFIRM_BYTES: u64 = 256 << 10;
/// ...or this long after the last one, when something came since.
pub(crate) const CONFIRM_AFTER: Duration = Duration::from_millis(100);

/// Events kept at once, markers included, past which what may be refused is refused: a bound on
/// the entries of a client that keeps confirming nothing, whatever their bytes.
const MAX_ENTRIES: usize = 1 << 20;

/// The counts and the kept events of one session, shared by its connections.
pub(crate) struct Session {
    pub(crate) out: Mutex<Kept>,
    /// Events received from the client in this session; taken with the check that the
    /// connection they came on still stands for the session (see [`count_received`]
    /// (Self::count_received)).
    received: AtomicU64,
    /// Orders counting with the end of a connection's part in the session.
    counting: Mutex<()>,
    /// Their bytes.
    received_bytes: AtomicU64,
    /// Woken when `received` reaches `wake_at` or its bytes `wake_bytes_at` (set by the waiter,
    /// so that counting wakes nobody for each event).
    news: Notify,
    wake_at: AtomicU64,
    wake_bytes_at: AtomicU64,
}

/// What was sent to the client and not confirmed.
pub(crate) struct Kept {
    /// Events sent in this session: the number of the newest.
    sent: u64,
    /// The client's latest count.
    confirmed: u64,
    /// The events numbered `confirmed + 1 ..= sent`, in order.
    entries: VecDeque<Entry>,
    /// Their bytes.
    bytes: usize,
    /// [`ServerOptions::resume_replay_bytes`](crate::ServerOptions::resume_replay_bytes).
    limit: usize,
    /// The newest event dropped for room while unconfirmed: a client whose count is older cannot
    /// resume without loss.
    dropped_through: u64,
    /// Since when refusals for room have gone on, for the slow-consumer deadline.
    full_since: Option<Instant>,
}

struct Entry {
    /// `None`: a stream frame's marker, or an event dropped for room (`bytes` 0 both).
    payload: Option<Payload>,
    frame: bool,
    bytes: usize,
    /// The client that sent it and how many messages it carries.
    from: Option<(Arc<str>, usize)>,
}

/// Why a session cannot go on from a client's count.
pub(crate) enum NoResume {
    /// Events after the count were dropped for room.
    Dropped { count: u64, through: u64 },
    /// The count is past what was sent.
    Ahead { count: u64, sent: u64 },
}

impl std::fmt::Display for NoResume {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NoResume::Dropped { count, through } => write!(
                f,
                "the client received {count} event(s) of its session, and events up to {through} \
                 were dropped unconfirmed when resume_replay_bytes was full"
            ),
            NoResume::Ahead { count, sent } => write!(
                f,
                "the client says it received {count} event(s) of its session, the relay sent {sent}"
            ),
        }
    }
}

impl Session {
    pub(crate) fn new(limit: usize) -> Session {
        Session {
            out: Mutex::new(Kept {
                sent: 0,
                confirmed: 0,
                entries: VecDeque::new(),
                bytes: 0,
                limit,
                dropped_through: 0,
                full_since: None,
            }),
            received: AtomicU64::new(0),
            counting: Mutex::new(()),
            received_bytes: AtomicU64::new(0),
            news: Notify::new(),
            wake_at: AtomicU64::new(u64::MAX),
            wake_bytes_at: AtomicU64::new(u64::MAX),
        }
    }

    /// One more event, of `bytes`, received from the client on a connection whose part in the
    /// session is over once `over` is set: then it is not counted (the client sends it again
    /// after the resume), and this returns false.
    pub(crate) fn count_received(
        &self,
        bytes: usize,
        over: &std::sync::atomic::AtomicBool,
    ) -> bool {
        {
            let _counting = self.counting.lock().unwrap();
            if over.load(Ordering::Acquire) {
                return false;
            }
            self.received.fetch_add(1, Ordering::AcqRel);
        }
        let total = self
            .received_bytes
            .fetch_add(bytes as u64, Ordering::AcqRel)
            + bytes as u64;
        if self.received() >= self.wake_at.load(Ordering::Acquire)
            || total >= self.wake_bytes_at.load(Ordering::Acquire)
        {
            self.news.notify_one();
        }
        true
    }

    /// Ends a connection's part in the session (sets `over`, see
    /// [`count_received`](Self::count_received)): from now on the count of what was received is
    /// final until the next connection counts.
    pub(crate) fn stop_counting(&self, over: &std::sync::atomic::AtomicBool) {
        let _counting = self.counting.lock().unwrap();
        over.store(true, Ordering::Release);
    }

    /// Bytes of the events received from the client so far.
    pub(crate) fn received_bytes(&self) -> u64 {
        self.received_bytes.load(Ordering::Acquire)
    }

    /// Events received from the client so far.
    pub(crate) fn received(&self) -> u64 {
        self.received.load(Ordering::Acquire)
    }

    /// Waits until `events` events or `bytes` bytes of them were received, at most `limit`;
    /// returns whether they were.
    pub(crate) async fn received_reach(&self, events: u64, bytes: u64, limit: Duration) -> bool {
        let until = tokio::time::Instant::now() + limit;
        self.wake_at.store(events, Ordering::Release);
        self.wake_bytes_at.store(bytes, Ordering::Release);
        let now = || self.received() >= events || self.received_bytes() >= bytes;
        loop {
            let notified = self.news.notified();
            if now() {
                return true;
            }
            if tokio::time::timeout_at(until, notified).await.is_err() {
                return now();
            }
        }
    }
}

impl Kept {
    /// Whether an event of `bytes` that may be refused fits (an empty record takes one of any
    /// size). Starts the slow-consumer clock when it does not: `Err` with how long the record
    /// has been full (zero: from now on).
    pub(crate) fn fits(&mut self, bytes: usize) -> Result<(), Duration> {
        let over = (self.bytes.saturating_add(bytes) > self.limit && !self.entries.is_empty())
            || self.entries.len() >= MAX_ENTRIES;
        if !over {
            return Ok(());
        }
        match self.full_since {
            Some(since) => Err(since.elapsed().max(Duration::from_nanos(1))),
            None => {
                self.full_since = Some(Instant::now());
                Err(Duration::ZERO)
            }
        }
    }

    /// Whether the record has stayed full (no confirmation brought it to half its limit) for at
    /// least `long`.
    pub(crate) fn full_for(&self, long: Duration) -> bool {
        self.full_since.is_some_and(|since| since.elapsed() >= long)
    }

    /// Counts an event written to the client, keeping `payload` (`None`: a frame's marker) until
    /// it is confirmed. What passes the limit drops the oldest unconfirmed events.
    pub(crate) fn push(
        &mut self,
        payload: Option<Payload>,
        bytes: usize,
        from: Option<(&Arc<str>, usize)>,
    ) {
        self.sent += 1;
        let frame = payload.is_none();
        let bytes = if frame { 0 } else { bytes };
        self.entries.push_back(Entry {
            payload,
            frame,
            bytes,
            from: from.map(|(s, n)| (s.clone(), n)),
        });
        self.bytes += bytes;
        if self.bytes > self.limit {
            // Only what may not be refused gets here over the limit: answers, notices, what was
            // held during a gap.
            let first = self.confirmed + 1;
            let newest = self.entries.len() - 1;
            for (i, e) in self.entries.iter_mut().enumerate() {
                if self.bytes <= self.limit || i == newest {
                    break;
                }
                if e.payload.take().is_some() {
                    self.bytes -= e.bytes;
                    e.bytes = 0;
                    self.dropped_through = self.dropped_through.max(first + i as u64);
                }
            }
        }
    }

    /// The client confirmed `count` events. `Err` says why the count is refused.
    pub(crate) fn confirm(&mut self, count: u64) -> Result<(), String> {
        if count > self.sent {
            return Err(format!(
                "{} counts {count} event(s), more than the {} sent",
                crate::protocol::event::P2P_RECEIVED,
                self.sent
            ));
        }
        while self.confirmed < count {
            if let Some(e) = self.entries.pop_front() {
                self.bytes -= e.bytes;
            }
            self.confirmed += 1;
        }
        if self.full_since.is_some() && self.bytes <= self.limit / 2 {
            self.full_since = None;
        }
        Ok(())
    }

    /// Whether the session can go on from the client's `count`.
    pub(crate) fn check_resume(&self, count: u64) -> Result<(), NoResume> {
        if count > self.sent {
            return Err(NoResume::Ahead {
                count,
                sent: self.sent,
            });
        }
        if count < self.dropped_through {
            return Err(NoResume::Dropped {
                count,
                through: self.dropped_through,
            });
        }
        Ok(())
    }

    /// Goes on from the client's `count` (checked with [`check_resume`](Self::check_resume)):
    /// what came after it is numbered from `count` on, markers left out, to send again in order
    /// ([`again`](Self::again)).
    pub(crate) fn resume_from(&mut self, count: u64) {
        let _ = self.confirm(count.min(self.sent));
        self.entries.retain(|e| !e.frame);
        self.sent = self.confirmed + self.entries.len() as u64;
        self.full_since = None;
    }

    /// What is kept, in order, to send again after [`resume_from`](Self::resume_from).
    pub(crate) fn again(&self) -> impl Iterator<Item = (&Payload, usize)> {
        self.entries
            .iter()
            .filter_map(|e| e.payload.as_ref().map(|p| (p, e.bytes)))
    }

    /// The senders of the messages sent and not confirmed, with how many each (the session
    /// ended); forgets them.
    pub(crate) fn unconfirmed_senders(&mut self) -> HashMap<Arc<str>, usize> {
        let mut senders: HashMap<Arc<str>, usize> = HashMap::new();
        for e in self.entries.drain(..) {
            if let Some((s, n)) = e.from {
                *senders.entry(s).or_default() += n;
            }
        }
        self.bytes = 0;
        senders
    }

    /// The bytes kept.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }
}
