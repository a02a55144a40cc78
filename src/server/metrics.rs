//! The relay's metrics, for an operator: live figures (clients, rooms, streams) read when they are
//! asked for, and counters of what the relay relayed and refused, kept as atomics on the paths
//! that do the work.
//!
//! One [`Metrics`] belongs to each [`P2pServer`]; [`P2pServer::metrics_text`] writes it out in the
//! Prometheus text format, and the [`Relay`](crate::Relay) serves that as `GET /metrics`. The
//! counters are `prometheus-client` counters, each an `Arc` of one atomic: counting a message is
//! one relaxed atomic add, with no lock and no allocation. The counters of the refusal reasons
//! are created once, so [`Metrics::refused`] never looks a label up.

use super::P2pServer;
use crate::protocol::RESERVED_ROOM_PREFIX;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};
use socketioxide::adapter::Adapter;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The `Content-Type` of [`P2pServer::metrics_text`]: the OpenMetrics 1.0 text format, which
/// Prometheus reads.
pub const METRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Why the relay refused something: the `reason` label of `socketio_p2p_refusals_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reason {
    /// A client that could not prove who it is.
    Auth = 0,
    /// A client that may not do what it asked.
    Permission = 1,
    /// Past one of the bounds of [`ServerOptions`](super::ServerOptions): an event, name or room
    /// too large, too many rooms or streams, too many connections from one address.
    Limit = 2,
    /// The target or the caller has too much waiting (its queue's byte budget, the requests
    /// waiting on it, the sender's event rate): tried again later, it may pass.
    Busy = 3,
    /// A client disconnected because it did not read what was queued for it.
    SlowConsumer = 4,
}

impl Reason {
    /// Every reason, each at its own index.
    const ALL: [Reason; 5] = [
        Reason::Auth,
        Reason::Permission,
        Reason::Limit,
        Reason::Busy,
        Reason::SlowConsumer,
    ];

    /// The label value.
    fn label(self) -> &'static str {
        match self {
            Reason::Auth => "auth",
            Reason::Permission => "permission",
            Reason::Limit => "limit",
            Reason::Busy => "busy",
            Reason::SlowConsumer => "slow_consumer",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

/// The live figures, read when the metrics are written out.
pub(crate) struct Live {
    pub(crate) clients: usize,
    pub(crate) rooms: Option<usize>,
    pub(crate) streams: usize,
}

/// The metrics of one relay.
pub(crate) struct Metrics {
    registry: Registry,
    clients: Gauge,
    rooms: Gauge,
    streams: Gauge,
    messages: Counter,
    requests: Counter,
    stream_bytes: Counter,
    event_bytes: Counter,
    /// One counter per [`Reason`], indexed by it.
    refusals: [Counter; 5],
    /// Held while the metrics are written out: however many scrapes come at once, one at a time
    /// counts the rooms.
    scraping: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub(crate) fn new() -> Metrics {
        let mut registry = Registry::with_prefix("socketio_p2p");
        let clients = Gauge::default();
        registry.register(
            "connected_clients",
            "Clients registered under a client id",
            clients.clone(),
        );
        let rooms = Gauge::default();
        registry.register(
            "rooms",
            "Rooms with at least one member on this relay (the relay's own marker rooms not \
             counted)",
            rooms.clone(),
        );
        let streams = Gauge::default();
        registry.register(
            "live_streams",
            "Credit-mode streams the relay is routing",
            streams.clone(),
        );
        let messages = Counter::default();
        registry.register(
            "relayed_messages",
            "Messages without an answer delivered to a client's queue (each P2P_EMIT and each \
             message of a P2P_BATCH); room emits not counted",
            messages.clone(),
        );
        let requests = Counter::default();
        registry.register(
            "relayed_requests",
            "Requests that wait for an answer (P2P_EMIT_ACKNOWLEDGE, directly or as P2P_REQ) \
             delivered to their target client",
            requests.clone(),
        );
        let stream_bytes = Counter::default();
        registry.register_with_unit(
            "relayed_stream",
            "Data bytes of the stream frames the relay forwarded along a route",
            Unit::Bytes,
            stream_bytes.clone(),
        );
        let event_bytes = Counter::default();
        registry.register_with_unit(
            "received_event",
            "Bytes of the events clients sent that passed the size and rate checks (Socket.IO \
             packet with its attachments; stream frames and answers not counted)",
            Unit::Bytes,
            event_bytes.clone(),
        );
        let family = Family::<ReasonLabel, Counter>::default();
        let refusals = Reason::ALL.map(|r| {
            family
                .get_or_create(&ReasonLabel { reason: r.label() })
                .clone()
        });
        registry.register(
            "refusals",
            "Things the relay refused, by reason: auth, permission, limit, busy, slow_consumer \
             (a client disconnected because it did not read)",
            family,
        );
        Metrics {
            registry,
            clients,
            rooms,
            streams,
            messages,
            requests,
            stream_bytes,
            event_bytes,
            refusals,
            scraping: tokio::sync::Mutex::new(()),
        }
    }

    /// `n` messages delivered to a client's queue.
    pub(crate) fn messages_relayed(&self, n: usize) {
        self.messages.inc_by(n as u64);
    }

    /// A request delivered to its target.
    pub(crate) fn request_relayed(&self) {
        self.requests.inc();
    }

    /// `n` data bytes of a stream forwarded.
    pub(crate) fn stream_bytes(&self, n: u64) {
        self.stream_bytes.inc_by(n);
    }

    /// An event of `n` bytes admitted.
    pub(crate) fn event_bytes(&self, n: usize) {
        self.event_bytes.inc_by(n as u64);
    }

    /// One refusal for `reason`.
    pub(crate) fn refused(&self, reason: Reason) {
        self.refusals[reason as usize].inc();
    }

    /// Writes every metric out, with the live figures given.
    pub(crate) fn encode(&self, live: Live) -> String {
        self.clients.set(gauge(live.clients));
        if let Some(rooms) = live.rooms {
            self.rooms.set(gauge(rooms));
        }
        self.streams.set(gauge(live.streams));
        let mut text = String::with_capacity(2048);
        if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &self.registry) {
            // Writing into a String does not fail; a metric that could not be written is logged.
            tracing::warn!("could not write the metrics: {e}");
        }
        text
    }
}

/// Counts one client's slow-consumer disconnect once, however many of its sends find it slow.
#[derive(Clone)]
pub(crate) struct SlowConsumer {
    metrics: Arc<Metrics>,
    counted: Arc<AtomicBool>,
}

impl SlowConsumer {
    pub(crate) fn new(metrics: &Arc<Metrics>) -> SlowConsumer {
        SlowConsumer {
            metrics: metrics.clone(),
            counted: Arc::default(),
        }
    }

    /// The client is being disconnected as a slow consumer.
    pub(crate) fn count(&self) {
        if !self.counted.swap(true, Ordering::AcqRel) {
            self.metrics.refused(Reason::SlowConsumer);
        }
    }
}

fn gauge(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// How long counting the rooms may take (a remote adapter is asked for this server's rooms only).
const ROOMS_TIMEOUT: Duration = Duration::from_secs(2);

impl<A: Adapter> P2pServer<A> {
    /// The relay's metrics in the Prometheus text format (OpenMetrics 1.0; serve it with
    /// [`METRICS_CONTENT_TYPE`]), as a [`Relay`](crate::Relay) answers `GET /metrics`. A relay
    /// hosted in an axum app of one's own can serve it the same way:
    ///
    /// ```no_run
    /// use axum::{http::header::CONTENT_TYPE, routing::get, Router};
    /// use socketio_p2p::server::METRICS_CONTENT_TYPE;
    /// use socketio_p2p::{P2pServer, ServerOptions};
    /// use socketioxide::SocketIo;
    ///
    /// let (layer, io) = SocketIo::new_layer();
    /// let server = P2pServer::attach(&io, ServerOptions::default());
    /// let app: Router = Router::new()
    ///     .route(
    ///         "/metrics",
    ///         get(move || {
    ///             let server = server.clone();
    ///             async move { ([(CONTENT_TYPE, METRICS_CONTENT_TYPE)], server.metrics_text().await) }
    ///         }),
    ///     )
    ///     .layer(layer);
    /// # drop(app);
    /// ```
    ///
    /// The figures, all prefixed `socketio_p2p_`:
    ///
    /// - gauges `connected_clients`, `rooms` (rooms with a member on this server; the relay's own
    ///   marker rooms not counted) and `live_streams` (credit-mode streams being routed), read
    ///   when this is called;
    /// - counters `relayed_messages_total` (messages without an answer delivered to a client's
    ///   queue), `relayed_requests_total` (requests delivered to their target client),
    ///   `relayed_stream_bytes_total` (data bytes of the stream frames forwarded),
    ///   `received_event_bytes_total` (bytes of the events clients sent that passed the size and
    ///   rate checks);
    /// - `refusals_total{reason=...}` with `reason` one of `auth`, `permission`, `limit`, `busy`
    ///   and `slow_consumer` (clients disconnected because they did not read).
    ///
    /// Scrapes that come at once are answered one after the other.
    pub async fn metrics_text(&self) -> String {
        let _one_at_a_time = self.inner.metrics.scraping.lock().await;
        let rooms = self.room_count().await;
        self.inner.metrics.encode(Live {
            clients: self.inner.clients.read().unwrap().len(),
            rooms,
            streams: self.inner.streams.len(),
        })
    }

    /// The rooms with a member on this server, the relay's own not counted; `None` when the
    /// adapter did not answer in time (the gauge then keeps its last value).
    async fn room_count(&self) -> Option<usize> {
        let ns = self.inner.io.of("/")?;
        match tokio::time::timeout(ROOMS_TIMEOUT, ns.local().rooms()).await {
            Ok(Ok(rooms)) => Some(
                rooms
                    .iter()
                    .filter(|r| !r.starts_with(RESERVED_ROOM_PREFIX))
                    .count(),
            ),
            Ok(Err(e)) => {
                tracing::debug!("could not count the rooms: {e}");
                None
            }
            Err(_) => {
                tracing::debug!("counting the rooms took more than {ROOMS_TIMEOUT:?}");
                None
            }
        }
    }

    /// The relay's metrics, for the paths that count.
    pub(crate) fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every figure is written out under its name, the refusal reasons each with its own count.
    #[test]
    fn names_and_counts_are_written_out() {
        let m = Metrics::new();
        m.messages_relayed(3);
        m.request_relayed();
        m.stream_bytes(10);
        m.event_bytes(7);
        m.refused(Reason::Busy);
        m.refused(Reason::Busy);
        m.refused(Reason::SlowConsumer);
        let text = m.encode(Live {
            clients: 2,
            rooms: Some(1),
            streams: 4,
        });
        for line in [
            "socketio_p2p_connected_clients 2",
            "socketio_p2p_rooms 1",
            "socketio_p2p_live_streams 4",
            "socketio_p2p_relayed_messages_total 3",
            "socketio_p2p_relayed_requests_total 1",
            "socketio_p2p_relayed_stream_bytes_total 10",
            "socketio_p2p_received_event_bytes_total 7",
            "socketio_p2p_refusals_total{reason=\"auth\"} 0",
            "socketio_p2p_refusals_total{reason=\"permission\"} 0",
            "socketio_p2p_refusals_total{reason=\"limit\"} 0",
            "socketio_p2p_refusals_total{reason=\"busy\"} 2",
            "socketio_p2p_refusals_total{reason=\"slow_consumer\"} 1",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line:?} missing from:\n{text}"
            );
        }
        assert!(text.ends_with("# EOF\n"));
    }
}
