//! Stream frames between relays: how a credit-mode stream between clients of two relays is
//! carried.
//!
//! # Two halves of one route
//!
//! The opener's relay and the acceptor's relay each keep a route of their own for the stream
//! (see `crate::stream::server`): its id on that relay, its end there (the client), and as its
//! other end the other relay's route. Each relay checks every frame of the stream against the
//! same credit accounts as for a stream within one relay, and first the frames of its own
//! client, so a client that overruns its credit is cut off by its own relay before anything
//! reaches Redis or the other relay. The open travels as [`Envelope::StreamOpen`] and is
//! answered by [`Envelope::StreamAnswer`], which carries the acceptor relay's route id; frames
//! the acceptor sends before the opener knows the route are held at the acceptor's relay until
//! its client's answer, then at the opener's relay until the opener has been told, as
//! `PROTOCOL.md` 5.3 says for one relay.
//!
//! A route whose other half is on a relay that dies (found dead as for messages: its liveness
//! key gone, or nobody reading its channel at two heartbeats in a row) is reset with
//! `PEER_GONE`; one whose frames cannot be handed to Redis, or when this relay loses its link to
//! Redis, is reset with `RELAY`. A frame is never sent again between relays: a link to Redis that
//! breaks ends the streams that cross it.
//!
//! # The transport: Redis pub/sub, binary
//!
//! A frame crosses as one `PUBLISH` to the other relay's channel, whose name each route keeps:
//! no directory look-up (no Lua) per frame. The message is the frame as the client wrote it,
//! behind a 17-byte prefix: a zero byte (no JSON envelope starts with one) and the sending
//! relay's id; the frame's route id is rewritten to the receiving relay's id for the route, so
//! the receiver finds its route from the header as for a frame from its own client, and checks
//! that the route's other half is on the sending relay. The body is the frame's bytes as they
//! are (binary, not hex). Frames go through the same ordered queue and pipelines as every other
//! envelope for that relay, so a route's frames, its open's answer and its RESET keep their
//! order.
//!
//! What is in flight towards one relay waits in Redis' output buffer for that relay's
//! subscription, which Redis closes past `client-output-buffer-limit pubsub` (32 MiB by
//! default): a relay that falls that far behind loses its link, and every stream through it is
//! reset. One stream has at most a window (512 KiB by default) in flight, so this takes many
//! busy streams into one slow relay at once; raise the limit where that is expected.
//!
//! Direct connections between relays were the other choice, to be taken if Redis could not
//! carry a stream across relays at half the speed of one within a relay. It can, so they were
//! not: `cargo bench --bench cluster` (two relays and Redis on one shared 2-core machine, release
//! build), in two runs, measured one 256 MiB stream at 327 and 445 MB/s within a relay and 207
//! and 254 MB/s across relays (0.63x, 0.57x), and 100,000 messages at 363,000 and 423,000/s
//! within a relay and 224,000 and 306,000/s across (0.62x, 0.72x); a reply's round trip (p50)
//! went from 78 and 230 µs to 256 and 454 µs. What Redis costs is a second hop per frame and a
//! copy into and out of its output buffer; in return there is no listener, no address book of
//! relays and no liveness check of a second kind: the relays' liveness in Redis already says
//! when a route's other half is gone. The figures vary from run to run and machine to machine
//! (the ratios stayed above the goal of 0.5x); run the benchmark where the relays will run.

use super::{Cluster, Done, Outgoing, Route};
use crate::error::Error;
use bytes::Bytes;
use std::sync::Arc;
use tokio::sync::mpsc;

/// The first byte of a frame message on a relay's channel.
const MARK: u8 = 0;

/// Length of a relay id.
const RELAY_ID_LEN: usize = 16;

/// Where a frame's route id is: 16 hex digits after its type byte.
const ROUTE_AT: std::ops::Range<usize> = 1..17;

/// A frame message from another relay: the sending relay's id and the frame; `None` for
/// anything else (a JSON envelope).
pub(crate) fn parse(payload: &[u8]) -> Option<(&str, Bytes)> {
    if payload.first() != Some(&MARK) {
        return None;
    }
    let relay = payload.get(1..1 + RELAY_ID_LEN)?;
    let relay = std::str::from_utf8(relay).ok()?;
    Some((relay, Bytes::copy_from_slice(&payload[1 + RELAY_ID_LEN..])))
}

/// The message for a frame from relay `relay`, with its route id rewritten to `route`.
fn payload(relay: &str, route: u64, frame: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + relay.len() + frame.len());
    out.push(MARK);
    out.extend_from_slice(relay.as_bytes());
    out.extend_from_slice(&frame[..ROUTE_AT.start]);
    out.extend_from_slice(format!("{route:016x}").as_bytes());
    out.extend_from_slice(&frame[ROUTE_AT.end..]);
    out
}

impl Cluster {
    /// The channel of relay `relay`, kept by the routes that send to it.
    pub(crate) fn channel_of(&self, relay: &str) -> Arc<str> {
        format!("{}{relay}", self.relay_prefix()).into()
    }

    /// Queues `frame` (a checked frame of at least a header) for the route `route` of the relay
    /// whose channel is `channel`. Fails at once when Redis is out of reach or the queue is
    /// full; `done` hears later whether Redis took it for a relay that reads its channel (it is
    /// never called from within this call).
    pub(crate) fn send_frame(
        &self,
        channel: &Arc<str>,
        route: u64,
        frame: &[u8],
        done: Done,
    ) -> Result<(), Error> {
        if !self.is_up() {
            return Err(self.unavailable("the stream frame was not sent"));
        }
        if frame.len() < ROUTE_AT.end {
            return Err(Error::Protocol(
                "a stream frame shorter than its header".into(),
            ));
        }
        let out = Outgoing {
            route: Route::Channel(channel.clone()),
            payload: payload(&self.id, route, frame),
            done: Some(done),
            // Not numbered: a relay whose subscription breaks resets the streams through it.
            what: super::Sent::Notice("stream frame"),
        };
        self.outbox.try_send(out).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => Error::Overloaded(format!(
                "the relay's queue towards the other relays is full ({} waiting)",
                self.opts.max_queued
            )),
            mpsc::error::TrySendError::Closed(_) => {
                Error::Cluster("the relay is leaving the cluster".into())
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_cross_with_the_receivers_route_id_and_json_is_not_taken_for_one() {
        let frame = b"F00000000000000ab";
        let p = payload("0123456789abcdef", 0x1234, frame);
        let (relay, got) = parse(&p).unwrap();
        assert_eq!(relay, "0123456789abcdef");
        assert_eq!(&got[..], b"F0000000000001234");
        assert!(parse(b"{\"kind\":\"gone\"}").is_none());
        assert!(parse(b"\0short").is_none());
        assert!(parse(b"").is_none());
    }
}
