//! The byte budget of each connection's outgoing queue.
//!
//! socketioxide queues every packet for a client in an in-memory channel bounded by a packet
//! count ([`RelayOptions::max_buffer_size`](crate::RelayOptions)), whatever the packets' sizes, and
//! tells nobody when a packet has been written. The relay therefore keeps its own account:
//!
//! * **Enqueue.** Every send to a client through [`Peer`](super::Peer) adds a *lower bound* of the
//!   packet's serialized size (JSON measured without escapes, binary attachments by length) to the
//!   connection's pending bytes, or is refused when that would pass the budget.
//! * **Release.** The [`Relay`](crate::Relay) wraps each accepted TCP connection in a counter of the
//!   bytes the kernel accepted from it ([`WriteCounter`]). The WebSocket connection a client's
//!   packets travel on is found from its handshake request (a client that connects straight over
//!   WebSocket) or from its upgrade request (`sid` in the query). Bytes written since the last look
//!   are taken off the pending bytes, never below zero, so framing and heartbeats written while
//!   nothing is pending earn no credit, and a lower-bound size can only make the account smaller
//!   than the truth by the framing of the packets still queued.
//!
//! Every event, answer and notice the relay sends a registered client goes through `Peer`, room
//! events included: they are sent to each member on this server one by one (see `members`).
//!
//! Limits: a connection with no counter (long polling, or a relay hosted elsewhere than in
//! [`Relay`](crate::Relay)) is not accounted and relies on socketioxide's packet count alone.
//! Packets not sent through `Peer` are not counted, and their writes release counted bytes
//! early: socketioxide's own (the connect packet, heartbeats), the last notice before a
//! disconnect, and room events other servers of a cluster adapter broadcast to this server's
//! members (each server accounts the members it serves, for the events it sends them).

use socketioxide::adapter::Adapter;
use socketioxide::extract::SocketRef;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How many bytes the kernel accepted on one TCP connection of the relay.
#[derive(Debug, Clone, Default)]
pub struct WriteCounter {
    written: Arc<AtomicU64>,
    /// The connection's remote address, for the relay's per-address connection limit.
    peer: Option<std::net::SocketAddr>,
}

impl WriteCounter {
    /// A counter for a connection from `peer`.
    pub(crate) fn for_peer(peer: std::net::SocketAddr) -> WriteCounter {
        WriteCounter {
            written: Arc::default(),
            peer: Some(peer),
        }
    }

    /// The connection's remote address.
    pub(crate) fn peer(&self) -> Option<std::net::SocketAddr> {
        self.peer
    }

    /// Counts `n` more bytes written.
    pub(crate) fn add(&self, n: usize) {
        self.written.fetch_add(n as u64, Ordering::Relaxed);
    }

    fn get(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }
}

/// The write counters of upgraded WebSocket connections, by Engine.IO session id.
#[derive(Debug, Clone, Default)]
pub(crate) struct Connections(Arc<Mutex<HashMap<String, WriteCounter>>>);

impl Connections {
    /// Records that session `sid` now travels on the connection counted by `counter`.
    pub(crate) fn upgraded(&self, sid: &str, counter: WriteCounter) {
        let mut map = self.0.lock().unwrap();
        // A session id nobody claims (a failed upgrade) is kept only while the map is small.
        if map.len() >= 65_536 {
            map.clear();
        }
        map.insert(sid.to_string(), counter);
    }

    fn take(&self, sid: &str) -> Option<WriteCounter> {
        self.0.lock().unwrap().remove(sid)
    }

    pub(crate) fn forget(&self, sid: &str) {
        self.0.lock().unwrap().remove(sid);
    }
}

/// Refusal of [`Budget::admit`].
pub(crate) struct Full {
    /// The connection has just become full: the caller starts the slow-consumer watch.
    pub(crate) watch: bool,
}

#[derive(Default)]
struct State {
    pending: u64,
    seen: u64,
    full_since: Option<Instant>,
}

/// One connection's account of queued bytes.
pub(crate) struct Budget {
    counter: OnceLock<WriteCounter>,
    state: Mutex<State>,
    watching: AtomicBool,
    limit: u64,
}

impl Budget {
    pub(crate) fn new(limit: usize) -> Budget {
        Budget {
            counter: OnceLock::new(),
            state: Mutex::new(State::default()),
            watching: AtomicBool::new(false),
            limit: limit.max(1) as u64,
        }
    }

    /// The write counter of the connection `socket` travels on, once it is known.
    fn counter<A: Adapter>(
        &self,
        socket: &SocketRef<A>,
        conns: &Connections,
    ) -> Option<&WriteCounter> {
        if let Some(c) = self.counter.get() {
            return Some(c);
        }
        if socket.transport_type() != socketioxide::TransportType::Websocket {
            return None;
        }
        let parts = socket.req_parts();
        let direct = parts
            .uri
            .query()
            .is_some_and(|q| q.split('&').any(|kv| kv == "transport=websocket"));
        let found = if direct {
            parts
                .extensions
                .get::<axum::extract::ConnectInfo<WriteCounter>>()
                .map(|c| c.0.clone())
        } else {
            conns.take(&socket.id.to_string())
        }?;
        let seen = found.get();
        self.state.lock().unwrap().seen = seen;
        Some(self.counter.get_or_init(|| found))
    }

    fn refresh(&self, counter: Option<&WriteCounter>, st: &mut State) {
        if let Some(c) = counter {
            let written = c.get();
            st.pending = st.pending.saturating_sub(written.saturating_sub(st.seen));
            st.seen = written;
        }
        if st.pending <= self.limit / 2 {
            st.full_since = None;
        }
    }

    /// Takes `bytes` from the budget, or refuses when they do not fit within `slack` times the
    /// limit. A connection with nothing pending takes one packet of any size.
    pub(crate) fn admit<A: Adapter>(
        &self,
        socket: &SocketRef<A>,
        conns: &Connections,
        bytes: usize,
        slack: u64,
    ) -> Result<(), Full> {
        let Some(counter) = self.counter(socket, conns) else {
            return Ok(());
        };
        let mut st = self.state.lock().unwrap();
        self.refresh(Some(counter), &mut st);
        let bytes = bytes as u64;
        if st.pending > 0 && st.pending.saturating_add(bytes) > self.limit.saturating_mul(slack) {
            let first = st.full_since.is_none();
            if first {
                st.full_since = Some(Instant::now());
            }
            let watch = first && !self.watching.swap(true, Ordering::AcqRel);
            return Err(Full { watch });
        }
        st.pending += bytes;
        Ok(())
    }

    /// Gives back bytes admitted for a packet that was not queued after all.
    pub(crate) fn give_back(&self, bytes: usize) {
        let mut st = self.state.lock().unwrap();
        st.pending = st.pending.saturating_sub(bytes as u64);
    }

    /// The bytes queued towards the connection, as far as the account knows.
    pub(crate) fn queued(&self) -> u64 {
        let mut st = self.state.lock().unwrap();
        self.refresh(self.counter.get(), &mut st);
        st.pending
    }

    /// Waits while the connection stays full; true when it stayed full for `deadline`.
    pub(crate) async fn stays_full(&self, deadline: Duration) -> bool {
        let tick = (deadline / 4).clamp(Duration::from_millis(10), Duration::from_millis(500));
        let verdict = loop {
            tokio::time::sleep(tick).await;
            let mut st = self.state.lock().unwrap();
            self.refresh(self.counter.get(), &mut st);
            match st.full_since {
                None => break false,
                Some(t) if t.elapsed() >= deadline => break true,
                Some(_) => {}
            }
        };
        self.watching.store(false, Ordering::Release);
        verdict
    }
}

/// The brackets and commas of a list of `n` items: `[a,b]`.
fn list_punctuation(n: usize) -> usize {
    2 + n.saturating_sub(1)
}

/// A lower bound of the bytes `value` takes as JSON. (A bound that could exceed the truth would
/// leave bytes pending that no write ever gives back.)
pub(crate) fn json_size(value: &serde_json::Value) -> usize {
    use serde_json::Value;
    match value {
        Value::Null | Value::Bool(true) => 4,
        Value::Bool(false) => 5,
        Value::Number(_) => 1,
        Value::String(s) => s.len() + 2,
        Value::Array(a) => list_punctuation(a.len()) + a.iter().map(json_size).sum::<usize>(),
        // `"key":value` for each entry.
        Value::Object(o) => {
            list_punctuation(o.len())
                + o.iter()
                    .map(|(k, v)| k.len() + 3 + json_size(v))
                    .sum::<usize>()
        }
    }
}

/// A lower bound of the bytes `arg` takes on the wire: `inline` when binary data is written as
/// an array of byte values (at least two characters a byte), otherwise as an attachment.
pub(crate) fn arg_size(arg: &crate::protocol::Arg, inline: bool) -> usize {
    use crate::protocol::Arg;
    match arg {
        Arg::Json(v) => json_size(v),
        // `[7,7]`.
        Arg::Binary(b) if inline => list_punctuation(b.len()) + b.len(),
        // The attachment, and its placeholder `{"_placeholder":true,"num":0}` in the JSON.
        Arg::Binary(b) => b.len() + 29,
        Arg::Array(a) => {
            list_punctuation(a.len()) + a.iter().map(|a| arg_size(a, inline)).sum::<usize>()
        }
        Arg::Object(o) => {
            list_punctuation(o.len())
                + o.iter()
                    .map(|(k, v)| k.len() + 3 + arg_size(v, inline))
                    .sum::<usize>()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Arg, ExtArgs, SeedArgs};
    use serde_json::json;

    #[test]
    fn sizes_never_exceed_the_json() {
        for v in [
            json!(null),
            json!([]),
            json!({}),
            json!(["snd"]),
            json!([["snd", "a"], {"ok": [[1, 2], []]}]),
            json!({"targetClientId": "b", "event": "e", "args": ["a", {"x": [true, false, 1.5]}]}),
            json!("caf\u{e9} \"quoted\""),
        ] {
            let text = serde_json::to_string(&v).unwrap();
            assert!(json_size(&v) <= text.len(), "{text}: {}", json_size(&v));
            assert!(
                json_size(&v) + 1 >= text.len() / 2,
                "{text}: a useful bound"
            );
        }
        let bin = Arg::Binary(bytes::Bytes::from_static(&[7, 200, 0]));
        let args = [
            Arg::Array(vec![bin.clone(), Arg::from("x")]),
            Arg::Object(vec![("k".into(), bin.clone())]),
            bin,
        ];
        for a in &args {
            let inline = serde_json::to_string(&ExtArgs(std::slice::from_ref(a))).unwrap();
            // The list's own brackets are not part of the argument.
            assert!(arg_size(a, true) <= inline.len() - 2, "{inline}");
        }
        // As an attachment: the bytes and a placeholder in the JSON.
        let seed = serde_json::to_string(&SeedArgs(&args[2..])).unwrap();
        assert!(
            seed.contains("[7,200,0]"),
            "a JSON serializer writes bytes as numbers"
        );
    }
}
