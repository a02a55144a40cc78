//! Server side of the Core API: rooms and the client list.

use crate::error::Error;
use crate::protocol::{
    event, ArgsRef, ClientList, EmitRoom, ExtArgs, JoinRoom, LeaveRoom, RoomEmit, RoomTarget,
};
use crate::server::{OpError, Operations, P2pServer, Peer, Responder};
use serde_json::Value;
use std::sync::Arc;

/// Registers the Core API's relay operations.
pub(crate) fn register(ops: &mut Operations) {
    ops.add(event::JOIN_ROOM, join_room);
    ops.add(event::LEAVE_ROOM, leave_room);
    ops.add(event::EMIT_ROOM, emit_room);
    ops.add(event::LIST_CLIENTS, list_clients);
}

/// The other client a `CLIENT_(UN)SUBSCRIBE_TOPIC` action names, checked, and the room.
fn client_and_room(
    server: &P2pServer,
    client: String,
    room: String,
) -> Result<(Arc<Peer>, String), OpError> {
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

/// `JOIN_ROOM(room)`, `JOIN_ROOM("CLIENT_SUBSCRIBE_TOPIC", client, room)`,
/// `JOIN_ROOM("SERVICE_CREATE_TOPIC", room)`.
fn join_room(server: &P2pServer, peer: &Arc<Peer>, JoinRoom(target): JoinRoom, r: Responder) {
    let result = match target {
        RoomTarget::Client { client, room } => {
            client_and_room(server, client, room).map(|(other, room)| {
                other.socket.join(room);
                vec![]
            })
        }
        RoomTarget::Own(room) | RoomTarget::Topic(room) => {
            peer.socket.join(room);
            Ok(vec![])
        }
    };
    r.respond(peer, result);
}

/// `LEAVE_ROOM(room)`, `LEAVE_ROOM("CLIENT_UNSUBSCRIBE_TOPIC", client, room)`,
/// `LEAVE_ROOM("SERVICE_DESTROY_TOPIC", room)`.
fn leave_room(server: &P2pServer, peer: &Arc<Peer>, LeaveRoom(target): LeaveRoom, r: Responder) {
    let result = match target {
        RoomTarget::Client { client, room } => {
            client_and_room(server, client, room).map(|(other, room)| {
                other.socket.leave(room);
                vec![]
            })
        }
        RoomTarget::Topic(room) => {
            // Only the service a topic room belongs to may empty it.
            let own_prefix = format!("service:{}:topic:", peer.id);
            if room.starts_with("service:") && !room.starts_with(&own_prefix) {
                Err(Error::BadRequest(format!(
                    "LEAVE_ROOM: '{}' may not destroy topic room '{room}' of another service",
                    peer.id
                ))
                .into())
            } else {
                destroy_room(&peer.socket, &room);
                Ok(vec![])
            }
        }
        RoomTarget::Own(room) => {
            peer.socket.leave(room);
            Ok(vec![])
        }
    };
    r.respond(peer, result);
}

/// Tells every member of `room` that it is being destroyed and removes them all from it.
pub(crate) fn destroy_room(socket: &socketioxide::extract::SocketRef, room: &str) {
    let notice = format!("{room}-TOPIC_BEING_DESTROYED");
    for member in socket.within(room.to_string()).sockets() {
        let _ = member.emit(&notice, &ArgsRef(&[]));
        member.leave(room.to_string());
    }
}

/// `EMIT_ROOM(room, event, ...args)`: `event(...args)` to every member but the caller; an
/// extension member gets `P2P_ROOM(room, event, ...args)` instead, so that it can tell a room
/// emit (no sender id) from a peer's message (sender id first).
fn emit_room(server: &P2pServer, peer: &Arc<Peer>, e: EmitRoom, r: Responder) {
    if crate::message::server::is_reserved(&e.event) {
        let error = Error::BadRequest(format!("EMIT_ROOM: event name '{}' is reserved", e.event));
        return r.respond(peer, Err(error.into()));
    }
    let EmitRoom { room, event, args } = e;
    let marked = RoomEmit::to_args(&room, &event, &args);
    let mut failed = None;
    for member in peer.socket.to(room.clone()).sockets() {
        // Every member gets binary data as arrays of byte values: extension clients cannot take
        // binary inside a JSON event.
        let sent = if speaks_ext(server, &member) {
            member.emit(RoomEmit::EVENT, &ExtArgs(&marked))
        } else {
            member.emit(&event, &ExtArgs(&args))
        };
        if let Err(e) = sent {
            failed.get_or_insert(e);
        }
    }
    let result = match failed {
        Some(e) => Err(Error::Protocol(format!("EMIT_ROOM failed: {e}")).into()),
        None => Ok(vec![]),
    };
    r.respond(peer, result);
}

/// Whether a room member is the registered connection of an extension client.
fn speaks_ext(server: &P2pServer, member: &socketioxide::extract::SocketRef) -> bool {
    let Some(query) = member.req_parts().uri.query() else {
        return false;
    };
    crate::protocol::query_pairs(query)
        .find(|(k, _)| k == crate::protocol::QUERY_CLIENT_ID)
        .and_then(|(_, id)| server.peer(&id))
        .is_some_and(|p| p.ext && p.socket.id == member.id)
}

/// `LIST_CLIENTS(ack)`: `ack([clientId, ...])`.
fn list_clients(server: &P2pServer, peer: &Arc<Peer>, (): (), r: Responder) {
    let mut ids = server.client_ids();
    ids.sort();
    r.respond(peer, Ok(ClientList(ids).to_values()));
}
