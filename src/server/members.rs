//! Events to the members of a room, each through the member's own byte budget.
//!
//! socketioxide's room broadcast queues a packet for every member whatever the member's queue
//! holds, so a room of clients that read nothing could pin any amount of the relay's memory. The
//! relay therefore sends a room event to each member of the room on this server one by one, like
//! a direct send: the event is encoded once ([`RoomEvent`]), each member's budget takes its size or
//! refuses it, and a member whose queue is full does not get it and falls under the slow-consumer
//! deadline. The [`Delivery`] says who was busy, for the sender's answer.
//!
//! A session whose link dropped and that waits for its return (see
//! [`ServerOptions::resume_grace`](crate::ServerOptions::resume_grace)) stays a member of the
//! rooms it was in: [`P2pServer::room_members`] finds it, and what is sent to it is held for it.
//!
//! Members on other servers of a cluster adapter are reached through the adapter's broadcast, as
//! before: the members' own servers queue the packet through socketioxide, bounded by its packet
//! count only (see [`P2pServer::remote_members`]).
//!
//! Members on other relays of a cluster ([`crate::cluster`]) are reached through the relays that
//! hold them: the event goes once to each relay with members of the room, which sends it to each
//! of its members through that member's budget, as here. Members busy there are reported to the
//! sender afterwards, with a `SERVER_ERROR` naming them (a relay cannot wait for the others'
//! answer before answering the sender); a room event that cannot be handed to the other relays
//! (Redis out of reach) fails with [`Error::Cluster`], the members here having got it.

use super::{P2pServer, Payload, Peer};
use crate::cluster::{Cluster, Envelope};
use crate::error::Error;
use crate::protocol::{RoomEmit, RESERVED_ROOM_PREFIX};
use serde::ser::SerializeTuple;
use serde::{Serialize, Serializer};
use serde_json::value::RawValue;
use socketioxide::adapter::{Adapter, LocalAdapter};
use socketioxide::operators::BroadcastOperators;
use std::collections::HashMap;
use std::sync::{Arc, Weak};

/// Arguments encoded once as JSON, shared by the forms of one room event.
pub(crate) type EncodedArgs = Arc<[Box<RawValue>]>;

/// Encodes each of `args` as JSON (binary data inside as arrays of byte values).
pub(crate) fn encode_args<T: Serialize>(
    args: impl IntoIterator<Item = T>,
) -> Result<EncodedArgs, Error> {
    args.into_iter()
        .map(|a| serde_json::value::to_raw_value(&a))
        .collect::<Result<Vec<_>, _>>()
        .map(Arc::from)
        .map_err(Error::from)
}

/// One event for the members of a room: `event(...head, ...args)`, its arguments already JSON, so
/// that a room of many members costs one encoding of them.
#[derive(Clone)]
pub(crate) struct RoomEvent {
    event: String,
    head: Vec<Box<RawValue>>,
    args: EncodedArgs,
    /// The bytes of its packet's JSON (the packet type and namespace not counted, nor escapes in
    /// the event name).
    size: usize,
}

impl RoomEvent {
    /// `event(...head, ...args)`.
    pub(crate) fn new(event: &str, head: &[&str], args: EncodedArgs) -> RoomEvent {
        let head: Vec<Box<RawValue>> = head
            .iter()
            .filter_map(|h| serde_json::value::to_raw_value(h).ok())
            .collect();
        // `["event",...]`: the name in quotes, brackets, a comma between the parts.
        let commas = head.len() + args.len();
        let size = event.len()
            + 4
            + commas
            + head
                .iter()
                .chain(args.iter())
                .map(|r| r.get().len())
                .sum::<usize>();
        RoomEvent {
            event: event.to_string(),
            head,
            args,
            size,
        }
    }

    /// The event name.
    pub(crate) fn name(&self) -> &str {
        &self.event
    }

    /// Its size in bytes, for the budget.
    pub(crate) fn size(&self) -> usize {
        self.size
    }

    /// Its arguments, to emit.
    pub(crate) fn args(&self) -> impl Serialize + '_ {
        Encoded(self)
    }
}

/// The arguments of a [`RoomEvent`] as a list, each written as it was encoded.
struct Encoded<'a>(&'a RoomEvent);

impl Serialize for Encoded<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let e = self.0;
        let mut t = s.serialize_tuple(e.head.len() + e.args.len())?;
        for a in e.head.iter().chain(e.args.iter()) {
            t.serialize_element(a)?;
        }
        t.end()
    }
}

/// What sending one event to the members of a room on this server did.
#[derive(Debug, Default)]
pub(crate) struct Delivery {
    /// Members it was queued for.
    pub(crate) sent: usize,
    /// Members whose queue on the relay was full: they did not get it.
    pub(crate) busy: Vec<Arc<str>>,
}

/// Busy members named in an answer; the others are counted.
const NAMED: usize = 10;

impl Delivery {
    /// `Ok` when no member was busy; otherwise [`Error::Overloaded`] saying how many members of
    /// `room` did not get `event`, and which.
    pub(crate) fn into_result(self, room: &str, event: &str) -> Result<(), Error> {
        if self.busy.is_empty() {
            return Ok(());
        }
        let n = self.busy.len();
        let mut names: Vec<String> = self
            .busy
            .iter()
            .take(NAMED)
            .map(|id| format!("'{id}'"))
            .collect();
        if n > NAMED {
            names.push(format!("{} more", n - NAMED));
        }
        let others = if self.sent == 0 {
            "nobody got it".to_string()
        } else {
            format!("the other {} got it", self.sent)
        };
        Err(Error::Overloaded(format!(
            "{n} of {} members of room '{room}' did not get '{event}': their queues on the relay \
             are full ({}); {others}",
            n + self.sent,
            names.join(", ")
        )))
    }
}

/// The way from a socket to its [`Peer`], kept in the socket's extensions.
pub(crate) struct PeerLink<A: Adapter>(pub(crate) Weak<Peer<A>>);

impl<A: Adapter> Clone for PeerLink<A> {
    fn clone(&self) -> Self {
        PeerLink(self.0.clone())
    }
}

impl<A: Adapter> Peer<A> {
    /// Queues a room event for this member within its budget; [`Error::Busy`] when it does not
    /// fit (the slow-consumer watch starts as for a direct send). While the member's session
    /// waits for its return, the event is held for it instead, and `from`, the client that
    /// emitted it, is told if it is never delivered.
    pub(crate) fn send_room_event(
        &self,
        e: &RoomEvent,
        from: Option<&Arc<str>>,
    ) -> Result<(), Error> {
        self.send_room_form(e, 1, from.map(|f| (f, 1)), true)
    }

    /// Queues a notice about a room for this member (twice the budget), or holds it as
    /// [`send_room_event`](Self::send_room_event) does; a member that cannot take it is
    /// disconnected as a slow consumer. Returns whether it was queued.
    pub(crate) fn send_room_notice(&self, e: &RoomEvent, what: &str) -> bool {
        let sent = self.send_room_form(e, 2, None, false);
        self.control_sent(sent, what)
    }

    /// Queues `e` within `slack` times the budget, or holds it (see [`Peer::send_or_hold`]).
    pub(super) fn send_room_form(
        &self,
        e: &RoomEvent,
        slack: u64,
        from: Option<(&Arc<str>, usize)>,
        counted: bool,
    ) -> Result<(), Error> {
        let now = || self.queue_out(super::Out::Room(e), e.size(), slack, from);
        let payload = || Payload::Room(e.clone());
        self.send_or_hold(e.size(), slack, from, counted, payload, now)
    }
}

impl<A: Adapter> P2pServer<A> {
    /// The connected clients among the sockets of this server that `ops` selects (the sender
    /// excluded when `ops` came from its socket's `to`).
    pub(crate) fn local_members(&self, ops: BroadcastOperators<A>) -> Vec<Arc<Peer<A>>> {
        ops.sockets()
            .into_iter()
            .filter_map(|s| s.extensions.get::<PeerLink<A>>())
            .filter_map(|link| link.0.upgrade())
            .collect()
    }

    /// The members of `room` on this server (`ops` is `room` on some operators): the connected
    /// clients among its sockets, and the sessions that were in it when their link dropped and
    /// wait for their return (what is sent to those is held for them), but not the client
    /// `except`. Each client once, whichever of its connections stands for it.
    pub(crate) fn room_members(
        &self,
        ops: BroadcastOperators<A>,
        room: &str,
        except: Option<&str>,
    ) -> Vec<Arc<Peer<A>>> {
        // Taken together under the lock: a session being resumed is among the away ones until
        // its new connection is in its rooms, so one of the two always finds it.
        let away = self.inner.away.lock().unwrap();
        let mut members = self.local_members(ops);
        if away.is_empty() && members.iter().all(|m| m.socket.connected()) {
            return members;
        }
        members.extend(
            away.values()
                .filter(|a| a.rooms.contains(room) && except != Some(&*a.peer.id))
                .map(|a| a.peer.clone()),
        );
        drop(away);
        // A closed connection still in the room, the session it belonged to, the connection
        // that resumed it: one client, reached once, through the connected one if any.
        let mut index: HashMap<Arc<str>, usize> = HashMap::with_capacity(members.len());
        let mut unique: Vec<Arc<Peer<A>>> = Vec::with_capacity(members.len());
        for m in members {
            match index.get(&m.id) {
                Some(&i) => {
                    if !unique[i].socket.connected() && m.socket.connected() {
                        unique[i] = m;
                    }
                }
                None => {
                    index.insert(m.id.clone(), unique.len());
                    unique.push(m);
                }
            }
        }
        unique
    }

    /// Removes `room` from the rooms of the sessions that wait for their return: they will not
    /// be in it when they come back.
    pub(crate) fn leave_room_while_away(&self, room: &str) {
        for a in self.inner.away.lock().unwrap().values_mut() {
            a.rooms.remove(room);
        }
        for p in self.inner.parked.lock().unwrap().values_mut() {
            p.rooms.retain(|r| r != room);
        }
    }

    /// Sends each of `members` the form of the event `pick` chooses for it, through its budget;
    /// `from` is the client that emitted it, told if it is held for a member and never
    /// delivered.
    pub(crate) fn send_to_members<'e>(
        &self,
        members: &[Arc<Peer<A>>],
        from: Option<&Arc<str>>,
        pick: impl Fn(&Peer<A>) -> &'e RoomEvent,
    ) -> Delivery {
        let mut d = Delivery::default();
        for m in members {
            match m.send_room_event(pick(m), from) {
                Ok(()) => d.sent += 1,
                Err(Error::Busy(_)) => d.busy.push(m.id.clone()),
                // Gone meanwhile: it has left the room too. (A session that waits for its return
                // and whose hold this event overflows has ended; the emitter is told with the
                // rest of what was held for it.)
                Err(Error::PeerGone(_)) => {}
                Err(e) => {
                    tracing::warn!(client = %m.id, "could not send a room event: {e}");
                    d.busy.push(m.id.clone());
                }
            }
        }
        d
    }

    /// The operators that reach the members of `ops`'s selection on the *other* servers of the
    /// adapter, or `None` with the local adapter (there are none).
    ///
    /// Every connection joins this server's own room at connect when the adapter may span
    /// servers, and the broadcast leaves that room out: each server serves its own members.
    pub(crate) fn remote_members(
        &self,
        ops: BroadcastOperators<A>,
    ) -> Option<BroadcastOperators<A>> {
        self.node_room().map(|room| ops.except(room))
    }

    /// This server's own room, which its connections join when the adapter may span servers.
    pub(crate) fn node_room(&self) -> Option<String> {
        if std::any::TypeId::of::<A>() == std::any::TypeId::of::<LocalAdapter>() {
            return None;
        }
        Some(format!(
            "{}node_{}__",
            crate::protocol::RESERVED_ROOM_PREFIX,
            self.inner.io.config().server_id
        ))
    }
}

/// A room event for the members of a room on the other relays of a cluster.
pub(crate) struct ClusterRoomEvent<'a> {
    /// The sending client (`None`: the server's own API).
    pub(crate) from: Option<&'a Arc<str>>,
    pub(crate) room: &'a str,
    pub(crate) event: &'a str,
    pub(crate) args: &'a EncodedArgs,
    /// Extension members get `P2P_ROOM(room, event, ...args)` (an `EMIT_ROOM`), not the event
    /// itself (a topic publication of the server's).
    pub(crate) wrap: bool,
}

/// The outcome of handing a room event to the other relays: how many got it.
pub(crate) type ClusterSent = tokio::sync::oneshot::Receiver<Result<usize, Error>>;

/// Hands `env` to the other relays holding members of `room`; a failure is logged too.
fn send_to_room(cluster: &Cluster, room: &str, env: &Envelope) -> ClusterSent {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let name = room.to_string();
    cluster.send_to_room(room, env, move |sent| {
        if let Err(err) = &sent {
            tracing::warn!(room = %name, "a room event was not handed to the other relays: {err}");
        }
        let _ = tx.send(sent);
    });
    rx
}

impl<A: Adapter> P2pServer<A> {
    /// Records in the cluster's directory, if this relay is in a cluster, that it has a member
    /// in `room`; returns once it is recorded (at once while Redis is out of reach).
    pub(crate) async fn advertise_room(&self, room: &str) {
        if room.starts_with(RESERVED_ROOM_PREFIX) {
            return;
        }
        if let Some(cluster) = self.cluster() {
            cluster.advertise_room(room).await;
        }
    }

    /// Hands room event `e` to the other relays of the cluster that hold members of its room.
    /// `Ok(None)` without a cluster; `Ok(Some(outcome))` once queued (a failure there is also
    /// logged); [`Error::Cluster`] at once while Redis is out of reach.
    pub(crate) fn room_to_cluster(
        &self,
        e: ClusterRoomEvent<'_>,
    ) -> Result<Option<ClusterSent>, Error> {
        let Some(cluster) = self.cluster() else {
            return Ok(None);
        };
        if !cluster.is_up() {
            return Err(cluster.unavailable(&format!(
                "'{}' reached the members of room '{}' on this relay only",
                e.event, e.room
            )));
        }
        let args = e
            .args
            .iter()
            .map(|a| serde_json::from_str(a.get()))
            .collect::<Result<Vec<serde_json::Value>, _>>()?;
        let env = Envelope::RoomEmit {
            relay: cluster.id().to_string(),
            from: e.from.map(|f| f.to_string()),
            room: e.room.to_string(),
            event: e.event.to_string(),
            args,
            wrap: e.wrap,
        };
        Ok(Some(send_to_room(cluster, e.room, &env)))
    }

    /// Tells the other relays of the cluster holding members of topic room `room` that it is
    /// destroyed. As [`room_to_cluster`](Self::room_to_cluster) for the outcome.
    pub(crate) fn destroy_in_cluster(&self, room: &str) -> Result<Option<ClusterSent>, Error> {
        let Some(cluster) = self.cluster() else {
            return Ok(None);
        };
        if !cluster.is_up() {
            return Err(
                cluster.unavailable(&format!("room '{room}' was emptied on this relay only"))
            );
        }
        let env = Envelope::RoomDestroy {
            relay: cluster.id().to_string(),
            room: room.to_string(),
        };
        Ok(Some(send_to_room(cluster, room, &env)))
    }

    /// Puts client `client` of another relay of the cluster in `room` (`join`) or takes it out,
    /// and waits for that relay's answer. [`Error::UnknownTarget`] when no relay holds it.
    pub(crate) async fn remote_membership(
        &self,
        client: &str,
        room: &str,
        join: bool,
    ) -> Result<(), Error> {
        let Some(cluster) = self.cluster() else {
            return Err(Error::UnknownTarget(client.to_string()));
        };
        let what = if join {
            crate::protocol::event::JOIN_ROOM
        } else {
            crate::protocol::event::LEAVE_ROOM
        };
        if !cluster.is_up() {
            return Err(cluster.unavailable(&format!("{what} '{room}' for client '{client}'")));
        }
        let id = cluster.next_request();
        let env = Envelope::RoomMember {
            relay: cluster.id().to_string(),
            id,
            client: client.to_string(),
            room: room.to_string(),
            join,
        };
        let timeout = self.inner.opts.reply_timeout;
        cluster
            .request(id, client, what, env, None, timeout)
            .await
            .map(|_| ())
    }

    /// The rooms this relay's clients are in, the relay's own rooms left out: those of its
    /// connected clients, and those of the sessions it keeps for their return (which go back in
    /// them when they resume here).
    pub(crate) fn local_rooms(&self) -> std::collections::HashSet<String> {
        let peers: Vec<Arc<Peer<A>>> = self
            .inner
            .clients
            .read()
            .unwrap()
            .values()
            .cloned()
            .collect();
        let mut rooms: std::collections::HashSet<String> = peers
            .iter()
            .flat_map(|p| p.socket.rooms())
            .map(|r| r.to_string())
            .collect();
        let parked = self.inner.parked.lock().unwrap();
        rooms.extend(parked.values().flat_map(|p| p.rooms.iter().cloned()));
        drop(parked);
        rooms.retain(|r| !r.starts_with(RESERVED_ROOM_PREFIX));
        rooms
    }

    /// What this relay does with a room envelope from another relay. One naming a room of the
    /// relay's own (`__p2p_…`, which no relay sends) is dropped.
    pub(crate) fn room_from_cluster(&self, cluster: &Arc<Cluster>, env: Envelope) {
        let room = match &env {
            Envelope::RoomEmit { room, .. }
            | Envelope::RoomDestroy { room, .. }
            | Envelope::RoomMember { room, .. } => Some(room.as_str()),
            _ => None,
        };
        if let Some(room) = room.filter(|r| r.starts_with(RESERVED_ROOM_PREFIX)) {
            return tracing::warn!(
                room,
                "dropping an envelope for a reserved room from another relay"
            );
        }
        match env {
            Envelope::RoomEmit {
                relay,
                from,
                room,
                event,
                args,
                wrap,
            } => {
                let checked = crate::protocol::check_no_placeholder(&args)
                    .map_err(Error::from)
                    .and_then(|()| encode_args(args))
                    .and_then(|args| Ok((self.within(room.clone())?, args)));
                let (members, args) = match checked {
                    Ok(x) => x,
                    Err(e) => {
                        return tracing::warn!(%room, "dropping a room event from another relay: {e}")
                    }
                };
                let seed_form = RoomEvent::new(&event, &[], args.clone());
                let ext_form =
                    wrap.then(|| RoomEvent::new(RoomEmit::EVENT, &[&room, &event], args));
                let members = self.room_members(members, &room, from.as_deref());
                let sender: Option<Arc<str>> = from.as_deref().map(Arc::from);
                let delivery =
                    self.send_to_members(&members, sender.as_ref(), |m| match &ext_form {
                        Some(ext) if m.ext => ext,
                        _ => &seed_form,
                    });
                if let Err(e) = delivery.into_result(&room, &event) {
                    let error = match e {
                        Error::Overloaded(text) => text,
                        other => other.to_string(),
                    };
                    match from {
                        Some(to) => {
                            cluster.send_to_relay(&relay, &Envelope::RoomBusy { to, error })
                        }
                        None => tracing::warn!("a room event of another relay's server: {error}"),
                    }
                }
            }
            Envelope::RoomBusy { to, error } => {
                if let Some(sender) = self.peer_or_away(&to) {
                    sender.report(&Error::Overloaded(format!("on another relay: {error}")));
                }
            }
            Envelope::RoomDestroy { relay: _, room } => {
                let op = self
                    .within(room.clone())
                    .map(|members| crate::room::server::destroy_here(self.clone(), members, room));
                if let Err(e) = op.and_then(|op| self.room_op("destroy_topic", op)) {
                    tracing::warn!("destroying a topic room for another relay: {e}");
                }
            }
            Envelope::RoomMember {
                relay,
                id,
                client,
                room,
                join,
            } => {
                let Some(peer) = self.peer(&client) else {
                    let e = Error::UnknownTarget(client);
                    return cluster.send_to_relay(&relay, &Envelope::reply(id, Err(e)));
                };
                let server = self.clone();
                let socket = peer.socket.clone();
                let max = self.inner.opts.max_rooms_per_client;
                let metrics = peer.metrics.clone();
                let op = async move {
                    if join {
                        crate::room::server::join_bounded(&socket, room.clone(), max)
                            .inspect_err(|_| metrics.refused(super::Reason::Limit))?;
                        server.advertise_room(&room).await;
                    } else {
                        socket.leave(room);
                    }
                    Ok(())
                };
                let cluster = cluster.clone();
                let what = if join { "JOIN_ROOM" } else { "LEAVE_ROOM" };
                peer.lane.run(what, op, move |result| {
                    cluster.send_to_relay(&relay, &Envelope::reply(id, result.map(|()| vec![])));
                });
            }
            other => tracing::debug!("not a room envelope: {other:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_room_event_writes_its_encoded_arguments() {
        let args = encode_args([json!({"a": [1, 2]}), json!("x")]).unwrap();
        let e = RoomEvent::new("P2P_ROOM", &["hall", "news"], args);
        let out = serde_json::to_string(&e.args()).unwrap();
        assert_eq!(out, r#"["hall","news",{"a":[1,2]},"x"]"#);
        // The event name, quotes, brackets and commas: the packet's JSON.
        let packet = format!(r#"["{}",{}"#, e.name(), &out[1..]);
        assert_eq!(e.size(), packet.len());
    }

    #[test]
    fn busy_members_are_counted_and_named() {
        let d = Delivery {
            sent: 3,
            busy: (0..12).map(|i| Arc::from(format!("m{i}"))).collect(),
        };
        let e = d.into_result("hall", "news").unwrap_err();
        let text = e.to_string();
        assert!(matches!(e, Error::Overloaded(_)), "{e:?}");
        for needle in [
            "12 of 15 members",
            "'hall'",
            "'news'",
            "'m0'",
            "'m9'",
            "2 more",
            "other 3",
        ] {
            assert!(text.contains(needle), "{text} should mention {needle}");
        }
        assert!(!text.contains("'m10'"), "{text}");
        assert!(Delivery::default().into_result("hall", "news").is_ok());
    }
}
