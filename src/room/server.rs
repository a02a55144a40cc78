//! Server side of the Core API: rooms and the client list.

use crate::auth::Action;
use crate::error::Error;
use crate::protocol::action;
use crate::protocol::{
    event, ClientList, EmitRoom, JoinRoom, LeaveRoom, RoomEmit, RoomTarget, EXT_MEMBERS_ROOM,
    RESERVED_ROOM_PREFIX, SEED_MEMBERS_ROOM,
};
use crate::server::{
    encode_args, ClusterRoomEvent, ClusterSent, OpError, OpReply, Operations, P2pServer, Peer,
    Reason, RoomEvent, RELAY,
};
use crate::service::rules;
use serde_json::Value;
use socketioxide::adapter::Adapter;
use socketioxide::extract::SocketRef;
use socketioxide::operators::BroadcastOperators;
use std::future::Future;
use std::sync::Arc;

/// Registers the Core API's relay operations.
pub(crate) fn register<A: Adapter>(ops: &mut Operations<A>) {
    ops.add(event::JOIN_ROOM, join_room);
    ops.add(event::LEAVE_ROOM, leave_room);
    ops.add(event::EMIT_ROOM, emit_room);
    ops.add(event::LIST_CLIENTS, list_clients);
}

/// Refuses the relay's own room names (see [`RESERVED_ROOM_PREFIX`]) and names longer than
/// [`ServerOptions::max_room_name_len`](crate::ServerOptions::max_room_name_len).
fn check_room<A: Adapter>(server: &P2pServer<A>, room: &str) -> Result<(), OpError> {
    let max = server.inner.opts.max_room_name_len;
    if room.len() > max {
        server.metrics().refused(Reason::Limit);
        return Err(Error::BadRequest(format!(
            "room name is longer than {max} bytes ({} bytes)",
            room.len()
        ))
        .into());
    }
    if room.starts_with(RESERVED_ROOM_PREFIX) {
        return Err(Error::BadRequest(format!(
            "room name '{room}' is reserved (names starting with '{RESERVED_ROOM_PREFIX}' belong to the relay)"
        ))
        .into());
    }
    Ok(())
}

/// The room a `JOIN_ROOM`/`LEAVE_ROOM` names, whatever its form.
fn target_room(target: &RoomTarget) -> &str {
    match target {
        RoomTarget::Client { room, .. } | RoomTarget::Own(room) | RoomTarget::Topic(room) => room,
    }
}

/// The rules of topic rooms (see [`crate::service::rules`]) for a `JOIN_ROOM` (`join`) or
/// `LEAVE_ROOM` in any form: a topic room is joined through its service, and the service actions
/// act only on the caller's own topic rooms. Leaving a room oneself is always allowed.
fn check_topic_rules<A: Adapter>(
    server: &P2pServer<A>,
    peer: &Peer<A>,
    target: &RoomTarget,
    join: bool,
) -> Result<(), OpError> {
    let action = match (target, join) {
        (RoomTarget::Own(room), true) => return Ok(rules::check_join(server, &peer.id, room)?),
        (RoomTarget::Own(_), false) => return Ok(()),
        // The seed's answer to an empty topic name comes first.
        (RoomTarget::Client { room, .. }, _) if room.is_empty() => return Ok(()),
        (RoomTarget::Client { .. }, true) => action::CLIENT_SUBSCRIBE_TOPIC,
        (RoomTarget::Client { .. }, false) => action::CLIENT_UNSUBSCRIBE_TOPIC,
        (RoomTarget::Topic(_), true) => action::SERVICE_CREATE_TOPIC,
        (RoomTarget::Topic(_), false) => action::SERVICE_DESTROY_TOPIC,
    };
    Ok(rules::check_own_topic(
        server,
        &peer.id,
        action,
        target_room(target),
    )?)
}

/// The other client a `CLIENT_(UN)SUBSCRIBE_TOPIC` action names.
enum Member<A: Adapter> {
    /// A client of this relay.
    Here(Arc<Peer<A>>),
    /// Perhaps a client of another relay of the cluster: that relay adds or removes it.
    Elsewhere(String),
}

/// The other client a `CLIENT_(UN)SUBSCRIBE_TOPIC` action names, checked, and the room.
fn client_and_room<A: Adapter>(
    server: &P2pServer<A>,
    client: String,
    room: String,
) -> Result<(Member<A>, String), OpError> {
    if room.is_empty() {
        // The seed's answer to an empty topic name.
        return Err(OpError {
            error: Error::BadRequest("topicName can not be empty".into()),
            seed_ack: Some(vec![Value::from("topicName can not be empty")]),
        });
    }
    match server.peer(&client) {
        Some(p) => Ok((Member::Here(p), room)),
        None if server.cluster().is_some() => Ok((Member::Elsewhere(client), room)),
        None => Err(OpError {
            seed_ack: Some(vec![Value::from(crate::protocol::unknown_target(&client))]),
            error: Error::UnknownTarget(client),
        }),
    }
}

/// The future that joins (or leaves) `socket` to `room`, queued behind the caller's earlier room
/// operations (see [`Peer::room_op`]): ready at once, since the socket is one of this server's,
/// unless a join has to be written to the cluster's directory first.
fn membership<A: Adapter>(
    server: &P2pServer<A>,
    socket: &SocketRef<A>,
    room: String,
    join: bool,
) -> impl Future<Output = Result<(), Error>> + Send + 'static {
    let socket = socket.clone();
    let max = server.inner.opts.max_rooms_per_client;
    let metrics = server.inner.metrics.clone();
    let server = server.clone();
    async move {
        if join {
            join_bounded(&socket, room.clone(), max)
                .inspect_err(|_| metrics.refused(Reason::Limit))?;
            // Written to the cluster's directory before the join is answered.
            server.advertise_room(&room).await;
            Ok(())
        } else {
            socket.leave(room);
            Ok(())
        }
    }
}

/// Joins `socket` to `room` unless that would put it in more than `max` rooms of the same kind:
/// plain rooms and topic rooms (`service:<s>:topic:<t>`) are counted apart, so that the topic
/// rooms services put a client in can never keep it from joining rooms itself (the relay's own
/// marker rooms are not counted). Counted when the join runs, after the client's earlier room
/// operations.
pub(crate) fn join_bounded<A: Adapter>(
    socket: &SocketRef<A>,
    room: String,
    max: usize,
) -> Result<(), Error> {
    let rooms = socket.rooms();
    if !rooms.iter().any(|r| **r == *room) {
        let topic = rules::topic_service(&room).is_some();
        let n = rooms
            .iter()
            .filter(|r| !r.starts_with(RESERVED_ROOM_PREFIX))
            .filter(|r| rules::topic_service(r).is_some() == topic)
            .count();
        if n >= max {
            let kind = if topic { "topic rooms" } else { "rooms" };
            return Err(Error::BadRequest(format!(
                "JOIN_ROOM: the client is in {n} {kind}, the most one client may be in; \
                 '{room}' was not joined"
            )));
        }
    }
    socket.join(room);
    Ok(())
}

/// `JOIN_ROOM(room)`, `JOIN_ROOM("CLIENT_SUBSCRIBE_TOPIC", client, room)`,
/// `JOIN_ROOM("SERVICE_CREATE_TOPIC", room)`.
fn join_room<A: Adapter>(
    server: &P2pServer<A>,
    peer: &Arc<Peer<A>>,
    JoinRoom(target): JoinRoom,
    r: OpReply,
) {
    if let Err(e) = check_room(server, target_room(&target)) {
        return r.respond(Err(e));
    }
    // What the caller's permissions deny is said first, then what the rules refuse anyone.
    // Joining oneself is a subscription when the room is a topic's; joining another client, or
    // creating a topic, is acting as the service.
    let action = match &target {
        RoomTarget::Own(room) => Action::own_room(room, false),
        RoomTarget::Client { room, .. } | RoomTarget::Topic(room) => Action::service_room(room),
    };
    if let Err(e) = peer.check(action) {
        return r.respond(Err(e.into()));
    }
    // Putting another client in a room is also sending to it: whatever the caller emits into
    // the room reaches it.
    if let RoomTarget::Client { client, .. } = &target {
        if *client != *peer.id {
            if let Err(e) = peer.check(Action::Send(client)) {
                return r.respond(Err(e.into()));
            }
        }
    }
    if let Err(e) = check_topic_rules(server, peer, &target, true) {
        return r.respond(Err(e));
    }
    let (socket, room) = match target {
        RoomTarget::Client { client, room } => match client_and_room(server, client, room) {
            Ok((Member::Here(other), room)) => (other.socket.clone(), room),
            Ok((Member::Elsewhere(client), room)) => {
                let server = server.clone();
                let op = async move { server.remote_membership(&client, &room, true).await };
                return peer.room_op(event::JOIN_ROOM, op, r);
            }
            Err(e) => return r.respond(Err(e)),
        },
        RoomTarget::Own(room) | RoomTarget::Topic(room) => (peer.socket.clone(), room),
    };
    peer.room_op(event::JOIN_ROOM, membership(server, &socket, room, true), r);
}

/// `LEAVE_ROOM(room)`, `LEAVE_ROOM("CLIENT_UNSUBSCRIBE_TOPIC", client, room)`,
/// `LEAVE_ROOM("SERVICE_DESTROY_TOPIC", room)`.
fn leave_room<A: Adapter>(
    server: &P2pServer<A>,
    peer: &Arc<Peer<A>>,
    LeaveRoom(target): LeaveRoom,
    r: OpReply,
) {
    if let Err(e) = check_room(server, target_room(&target)) {
        return r.respond(Err(e));
    }
    // Leaving is always allowed; removing another client or destroying a room is not.
    if let RoomTarget::Client { room, .. } | RoomTarget::Topic(room) = &target {
        if let Err(e) = peer.check(Action::service_room(room)) {
            return r.respond(Err(e.into()));
        }
    }
    if let Err(e) = check_topic_rules(server, peer, &target, false) {
        return r.respond(Err(e));
    }
    let (socket, room) = match target {
        RoomTarget::Client { client, room } => match client_and_room(server, client, room) {
            Ok((Member::Here(other), room)) => (other.socket.clone(), room),
            Ok((Member::Elsewhere(client), room)) => {
                let server = server.clone();
                let op = async move { server.remote_membership(&client, &room, false).await };
                return peer.room_op(event::LEAVE_ROOM, op, r);
            }
            Err(e) => return r.respond(Err(e)),
        },
        RoomTarget::Topic(room) => {
            let members = peer.socket.within(room.clone());
            let op = destroy_room(server.clone(), members, room);
            return peer.room_op(event::LEAVE_ROOM, op, r);
        }
        RoomTarget::Own(room) => (peer.socket.clone(), room),
    };
    peer.room_op(
        event::LEAVE_ROOM,
        membership(server, &socket, room, false),
        r,
    );
}

/// Tells every member of `room` (`members` is `room` on some operators) that it is being destroyed,
/// then removes them all from it, on every server the adapter spans and on every relay of the
/// cluster holding members of it. The notice goes to each member through its byte budget on its
/// own relay, like an answer: a member that cannot take it is disconnected as a slow consumer.
/// Fails with [`Error::Cluster`] when the other relays could not be told (the members here are
/// removed all the same).
pub(crate) async fn destroy_room<A: Adapter>(
    server: P2pServer<A>,
    members: BroadcastOperators<A>,
    room: String,
) -> Result<(), Error> {
    let elsewhere = server.destroy_in_cluster(&room);
    let here = destroy_here(server, members, room.clone()).await;
    let elsewhere = match elsewhere {
        Ok(sent) => cluster_outcome(sent, &room).await,
        Err(e) => Err(e),
    };
    elsewhere.and(here)
}

/// The outcome of handing a room's event or end to the other relays of the cluster.
pub(crate) async fn cluster_outcome(sent: Option<ClusterSent>, room: &str) -> Result<(), Error> {
    match sent {
        Some(rx) => match rx.await {
            Ok(Err(e)) => Err(Error::Cluster(format!(
                "the members of room '{room}' on the cluster's other relays were not reached: {e}"
            ))),
            Ok(Ok(_)) | Err(_) => Ok(()),
        },
        None => Ok(()),
    }
}

/// [`destroy_room`] on this relay only (and the servers of its adapter).
pub(crate) async fn destroy_here<A: Adapter>(
    server: P2pServer<A>,
    members: BroadcastOperators<A>,
    room: String,
) -> Result<(), Error> {
    let notice = RoomEvent::new(
        &format!("{room}-TOPIC_BEING_DESTROYED"),
        &[],
        Default::default(),
    );
    for m in server.room_members(members.clone(), &room, None) {
        m.send_room_notice(&notice, "the end of a topic it is subscribed to");
    }
    // A member whose session waits for its return gets the notice when it comes back, and is
    // not put back into the room then.
    server.leave_room_while_away(&room);
    let told = match server.remote_members(members.clone()) {
        Some(remote) => remote.emit(notice.name(), &notice.args()).await,
        None => Ok(()),
    };
    // The members leave even when some could not be told.
    let left = members.leave(room.clone()).await;
    told.map_err(|e| adapter_error(&format!("telling the members of '{room}'"), e))?;
    left.map_err(|e| adapter_error(&format!("emptying room '{room}'"), e))
}

/// A room operation the adapter failed, as the caller sees it.
pub(crate) fn adapter_error(what: &str, e: impl std::fmt::Display) -> Error {
    Error::remote(RELAY, format!("{what} failed: {e}"))
}

/// `EMIT_ROOM(room, event, ...args)`: `event(...args)` to every member but the caller; an
/// extension member gets `P2P_ROOM(room, event, ...args)` instead, so that it can tell a room
/// emit (no sender id) from a peer's message (sender id first).
///
/// Each member on this server gets it through its byte budget, like a direct send (see
/// [`P2pServer::send_to_members`]); members whose queue is full do not, and the caller is answered
/// [`Error::Overloaded`] naming them. A member whose session waits for its return has it held
/// (see [`P2pServer::room_members`]). Members on other servers of the adapter get it through the
/// adapter's broadcast, split by the marker rooms every connection joins ([`EXT_MEMBERS_ROOM`],
/// [`SEED_MEMBERS_ROOM`]). Members on other relays of a cluster get it through their relays (see
/// [`crate::server::members`]): the answer waits until Redis has it, and is
/// [`Error::Cluster`] when it could not be handed over; members busy there are reported later
/// with a `SERVER_ERROR`.
fn emit_room<A: Adapter>(server: &P2pServer<A>, peer: &Arc<Peer<A>>, e: EmitRoom, r: OpReply) {
    // The topic-event rule is `rules::check_emit`'s, which knows the room.
    if let Err(error) = server.check_event_text(&e.event) {
        let error = match error {
            Error::BadRequest(why) => Error::BadRequest(format!("EMIT_ROOM: {why}")),
            other => other,
        };
        return r.respond(Err(error.into()));
    }
    let EmitRoom { room, event, args } = e;
    if let Err(e) = check_room(server, &room) {
        return r.respond(Err(e));
    }
    if let Err(e) = peer.check(Action::own_room(&room, true)) {
        return r.respond(Err(e.into()));
    }
    if let Err(e) = rules::check_emit(server, &peer.id, &room, &event) {
        return r.respond(Err(e.into()));
    }
    // Every member gets binary data as arrays of byte values: extension clients cannot take
    // binary inside a JSON event. Encoded once for all members and both forms.
    let args = match encode_args(&args) {
        Ok(args) => args,
        Err(e) => return r.respond(Err(e.into())),
    };
    let seed_form = RoomEvent::new(&event, &[], args.clone());
    let ext_form = RoomEvent::new(RoomEmit::EVENT, &[&room, &event], args.clone());
    let (server, socket, from) = (server.clone(), peer.socket.clone(), peer.id.clone());
    let op = async move {
        let members = server.room_members(socket.to(room.clone()), &room, Some(&from));
        let pick = |m: &Peer<A>| if m.ext { &ext_form } else { &seed_form };
        let delivery = server.send_to_members(&members, Some(&from), pick);
        if let Some(remote) = server.remote_members(socket.to(room.clone())) {
            let seed = (remote.clone().except(EXT_MEMBERS_ROOM))
                .emit(seed_form.name(), &seed_form.args())
                .await;
            let ext = (remote.except(SEED_MEMBERS_ROOM))
                .emit(ext_form.name(), &ext_form.args())
                .await;
            seed.and(ext)
                .map_err(|e| adapter_error(&format!("EMIT_ROOM to '{room}'"), e))?;
        }
        let elsewhere = server.room_to_cluster(ClusterRoomEvent {
            from: Some(&from),
            room: &room,
            event: &event,
            args: &args,
            wrap: true,
        });
        let here = delivery.into_result(&room, &event);
        let elsewhere = match elsewhere {
            Ok(sent) => cluster_outcome(sent, &room).await,
            Err(e) => Err(e),
        };
        both(elsewhere, here)
    };
    peer.room_op(event::EMIT_ROOM, op, r);
}

/// The outcome of a room event sent both here and to the other relays: a failure to reach the
/// other relays, with what happened here said too.
pub(crate) fn both(elsewhere: Result<(), Error>, here: Result<(), Error>) -> Result<(), Error> {
    match (elsewhere, here) {
        (Ok(()), here) => here,
        (Err(e), Ok(())) => Err(e),
        (Err(Error::Cluster(e)), Err(busy)) => Err(Error::Cluster(format!("{e}; here: {busy}"))),
        (Err(e), Err(_)) => Err(e),
    }
}

/// `LIST_CLIENTS(ack)`: `ack([clientId, ...])`.
/// In a cluster, the clients of every relay.
fn list_clients<A: Adapter>(server: &P2pServer<A>, _: &Arc<Peer<A>>, (): (), r: OpReply) {
    if server.cluster().is_none() {
        let mut ids = server.client_ids();
        ids.sort();
        return r.respond(Ok(ClientList(ids).to_values()));
    }
    let server = server.clone();
    tokio::spawn(async move {
        let ids = server.cluster_client_ids().await;
        r.respond(
            ids.map(|ids| ClientList(ids).to_values())
                .map_err(Into::into),
        );
    });
}
