//! Server side of the Core API: rooms and the client list.

use crate::auth::Action;
use crate::error::Error;
use crate::protocol::{
    event, ArgsRef, ClientList, EmitRoom, ExtArgs, JoinRoom, LeaveRoom, RoomEmit, RoomTarget,
    EXT_MEMBERS_ROOM, RESERVED_ROOM_PREFIX, SEED_MEMBERS_ROOM,
};
use crate::server::{OpError, OpReply, Operations, P2pServer, Peer, RELAY};
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

/// The other client a `CLIENT_(UN)SUBSCRIBE_TOPIC` action names, checked, and the room.
fn client_and_room<A: Adapter>(
    server: &P2pServer<A>,
    client: String,
    room: String,
) -> Result<(Arc<Peer<A>>, String), OpError> {
    if room.is_empty() {
        // The seed's answer to an empty topic name.
        return Err(OpError {
            error: Error::BadRequest("topicName can not be empty".into()),
            seed_ack: Some(vec![Value::from("topicName can not be empty")]),
        });
    }
    match server.peer(&client) {
        Some(p) => Ok((p, room)),
        None => Err(OpError {
            seed_ack: Some(vec![Value::from(crate::protocol::unknown_target(&client))]),
            error: Error::UnknownTarget(client),
        }),
    }
}

/// The future that joins (or leaves) `socket` to `room`: ready at once, since the socket is one
/// of this server's, but queued behind the caller's earlier room operations (see
/// [`Peer::room_op`]).
fn membership<A: Adapter>(
    server: &P2pServer<A>,
    socket: &SocketRef<A>,
    room: String,
    join: bool,
) -> impl Future<Output = Result<(), Error>> + Send + 'static {
    let socket = socket.clone();
    let max = server.inner.opts.max_rooms_per_client;
    async move {
        if join {
            join_bounded(&socket, room, max)
        } else {
            socket.leave(room);
            Ok(())
        }
    }
}

/// Joins `socket` to `room` unless that would put it in more than `max` rooms (the relay's own
/// marker rooms not counted). Counted when the join runs, after the client's earlier room
/// operations.
pub(crate) fn join_bounded<A: Adapter>(
    socket: &SocketRef<A>,
    room: String,
    max: usize,
) -> Result<(), Error> {
    let rooms = socket.rooms();
    if !rooms.iter().any(|r| **r == *room) {
        let n = rooms
            .iter()
            .filter(|r| !r.starts_with(RESERVED_ROOM_PREFIX))
            .count();
        if n >= max {
            return Err(Error::BadRequest(format!(
                "JOIN_ROOM: the client is in {n} rooms, the most one client may be in; \
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
    // Joining oneself is a subscription when the room is a topic's; joining another client, or
    // creating a topic, is acting as the service.
    let action = match &target {
        RoomTarget::Own(room) => Action::own_room(room, false),
        RoomTarget::Client { room, .. } | RoomTarget::Topic(room) => Action::service_room(room),
    };
    if let Err(e) = peer.check(action) {
        return r.respond(Err(e.into()));
    }
    let (socket, room) = match target {
        RoomTarget::Client { client, room } => match client_and_room(server, client, room) {
            Ok((other, room)) => (other.socket.clone(), room),
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
    let (socket, room) = match target {
        RoomTarget::Client { client, room } => match client_and_room(server, client, room) {
            Ok((other, room)) => (other.socket.clone(), room),
            Err(e) => return r.respond(Err(e)),
        },
        RoomTarget::Topic(room) => {
            // Only the service a topic room belongs to may empty it.
            let own_prefix = format!("service:{}:topic:", peer.id);
            if room.starts_with("service:") && !room.starts_with(&own_prefix) {
                let e = Error::BadRequest(format!(
                    "LEAVE_ROOM: '{}' may not destroy topic room '{room}' of another service",
                    peer.id
                ));
                return r.respond(Err(e.into()));
            }
            let members = peer.socket.within(room.clone());
            return peer.room_op(event::LEAVE_ROOM, destroy_room(members, room), r);
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
/// then removes them all from it, on every server the adapter spans.
pub(crate) async fn destroy_room<A: Adapter>(
    members: BroadcastOperators<A>,
    room: String,
) -> Result<(), Error> {
    let notice = format!("{room}-TOPIC_BEING_DESTROYED");
    let told = members.clone().emit(&notice, &ArgsRef(&[])).await;
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
/// emit (no sender id) from a peer's message (sender id first). Both go through the adapter's
/// broadcast, split by the marker rooms every connection joins ([`EXT_MEMBERS_ROOM`],
/// [`SEED_MEMBERS_ROOM`]), so a remote adapter carries them like any room emit.
fn emit_room<A: Adapter>(server: &P2pServer<A>, peer: &Arc<Peer<A>>, e: EmitRoom, r: OpReply) {
    if let Err(error) = server.check_event_name(&e.event) {
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
    let marked = RoomEmit::to_args(&room, &event, &args);
    let socket = peer.socket.clone();
    let op = async move {
        // Every member gets binary data as arrays of byte values: extension clients cannot take
        // binary inside a JSON event.
        let seed = socket
            .to(room.clone())
            .except(EXT_MEMBERS_ROOM)
            .emit(&event, &ExtArgs(&args))
            .await;
        let ext = socket
            .to(room.clone())
            .except(SEED_MEMBERS_ROOM)
            .emit(RoomEmit::EVENT, &ExtArgs(&marked))
            .await;
        seed.and(ext)
            .map_err(|e| adapter_error(&format!("EMIT_ROOM to '{room}'"), e))
    };
    peer.room_op(event::EMIT_ROOM, op, r);
}

/// `LIST_CLIENTS(ack)`: `ack([clientId, ...])`.
fn list_clients<A: Adapter>(server: &P2pServer<A>, _: &Arc<Peer<A>>, (): (), r: OpReply) {
    let mut ids = server.client_ids();
    ids.sort();
    r.respond(Ok(ClientList(ids).to_values()));
}
