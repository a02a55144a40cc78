//! The relay's rate limits: token buckets for a client's events and for connections per remote
//! address, and the bound on one caller's requests in flight; and the client ids no client may
//! claim.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Refuses a client id that names the server itself rather than a client: one ending in
/// `-server-side` (the server's end of a client's streams, see
/// [`SERVER_SIDE_SUFFIX`](crate::stream::server::SERVER_SIDE_SUFFIX)), or the name of a service
/// the server provides (`is_service`). The error is the refusal's reason.
pub(crate) fn check_claimable_id(id: &str, is_service: bool) -> Result<(), String> {
    use crate::stream::server::SERVER_SIDE_SUFFIX;
    if id.ends_with(SERVER_SIDE_SUFFIX) {
        return Err(format!(
            "client id '{id}' ends with '{SERVER_SIDE_SUFFIX}': such ids name the server's end of \
             a client's streams"
        ));
    }
    if is_service {
        return Err(format!(
            "client id '{id}' is the name of a service the server provides"
        ));
    }
    Ok(())
}

/// A token bucket: `burst` tokens, refilled at `rate` per second. Tokens may go below zero, down
/// to `-floor`, to tell a client that keeps going over the limit from one that went over once.
#[derive(Debug)]
pub(crate) struct TokenBucket {
    tokens: f64,
    last: Instant,
}

/// What a [`TokenBucket`] says about one more event.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Take {
    /// Within the limit.
    Ok,
    /// Over the limit: refuse this one.
    Over,
    /// Over the limit by more than the floor: the sender keeps flooding.
    Flood,
}

impl TokenBucket {
    /// A full bucket of `burst` tokens.
    pub(crate) fn new(burst: u32) -> TokenBucket {
        TokenBucket {
            tokens: f64::from(burst.max(1)),
            last: Instant::now(),
        }
    }

    /// Takes one token, refilling first at `rate` per second up to `burst`.
    pub(crate) fn take(&mut self, rate: u32, burst: u32, floor: u32) -> Take {
        let now = Instant::now();
        let elapsed = now.duration_since(self.last).as_secs_f64();
        self.last = now;
        let burst = f64::from(burst.max(1));
        self.tokens = (self.tokens + elapsed * f64::from(rate)).min(burst);
        self.tokens -= 1.0;
        if self.tokens >= 0.0 {
            Take::Ok
        } else if self.tokens < -f64::from(floor) {
            Take::Flood
        } else {
            Take::Over
        }
    }

    /// Whether the bucket has refilled to `burst` by now (nothing to remember about its owner).
    fn is_full(&self, rate: u32, burst: u32) -> bool {
        let elapsed = self.last.elapsed().as_secs_f64();
        self.tokens + elapsed * f64::from(rate) >= f64::from(burst.max(1))
    }
}

/// Connections per remote address, one token bucket each.
#[derive(Debug, Default)]
pub(crate) struct ConnectLimiter {
    buckets: Mutex<HashMap<IpAddr, TokenBucket>>,
}

/// Buckets kept before the full ones are forgotten.
const PRUNE_AT: usize = 4_096;

impl ConnectLimiter {
    /// Whether one more connection from `addr` is within `rate` per second (bursts of `burst`).
    pub(crate) fn admit(&self, addr: IpAddr, rate: u32, burst: u32) -> bool {
        if rate == 0 {
            return true;
        }
        let mut buckets = self.buckets.lock().unwrap();
        if buckets.len() >= PRUNE_AT {
            buckets.retain(|_, b| !b.is_full(rate, burst));
        }
        let bucket = buckets
            .entry(addr)
            .or_insert_with(|| TokenBucket::new(burst));
        let ok = bucket.take(rate, burst, 0) == Take::Ok;
        if !ok {
            // A refused connection does not dig the hole deeper.
            bucket.tokens += 1.0;
        }
        ok
    }
}

/// One of a caller's bounded request slots (see `ServerOptions::max_pending_per_caller`), given
/// back when dropped.
pub(crate) struct CallerSlot(Arc<AtomicUsize>);

impl CallerSlot {
    /// Takes one of the slots counted by `count` unless `limit` are taken.
    pub(crate) fn take(count: &Arc<AtomicUsize>, limit: usize) -> Option<CallerSlot> {
        count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit.max(1)).then_some(n + 1)
            })
            .ok()
            .map(|_| CallerSlot(count.clone()))
    }
}

impl Drop for CallerSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_bursts_then_refuses_then_floods() {
        let mut b = TokenBucket::new(3);
        for _ in 0..3 {
            assert_eq!(b.take(0, 3, 2), Take::Ok);
        }
        assert_eq!(b.take(0, 3, 2), Take::Over);
        assert_eq!(b.take(0, 3, 2), Take::Over);
        assert_eq!(b.take(0, 3, 2), Take::Flood);
    }

    #[test]
    fn ids_of_the_server_cannot_be_claimed() {
        assert!(check_claimable_id("bob", false).is_ok());
        assert!(check_claimable_id("bob-server-side-not", false).is_ok());
        assert!(check_claimable_id("bob-server-side", false).is_err());
        assert!(check_claimable_id("-server-side", false).is_err());
        assert!(check_claimable_id("jobs", true).is_err());
    }

    #[test]
    fn connect_limiter_per_address() {
        let l = ConnectLimiter::default();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        assert!(l.admit(a, 1, 2) && l.admit(a, 1, 2));
        assert!(!l.admit(a, 1, 2));
        assert!(l.admit(b, 1, 2));
        assert!(l.admit(a, 0, 2), "rate 0 turns the limit off");
    }
}
