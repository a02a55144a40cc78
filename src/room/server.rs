//! Server side of the Core API: rooms and the client list.

use crate::error::Error;
use crate::protocol::{
    event, ArgsRef, ClientList, EmitRoom, ExtArgs, JoinRoom, LeaveRoom, RoomTarget,
};
use crate::server::{OpError, OpReply, Operations, P2pServer, Peer};
use futures::FutureExt;
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
fn join_room(server: &P2pServer, peer: &Arc<Peer>, JoinRoom(target): JoinRoom, r: OpReply) {
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
    r.respond(result);
}

/// `LEAVE_ROOM(room)`, `LEAVE_ROOM("CLIENT_UNSUBSCRIBE_TOPIC", client, room)`,
/// `LEAVE_ROOM("SERVICE_DESTROY_TOPIC", room)`.
fn leave_room(server: &P2pServer, peer: &Arc<Peer>, LeaveRoom(target): LeaveRoom, r: OpReply) {
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
    r.respond(result);
}

/// Tells every member of `room` that it is being destroyed and removes them all from it.
pub(crate) fn destroy_room(socket: &socketioxide::extract::SocketRef, room: &str) {
    let notice = format!("{room}-TOPIC_BEING_DESTROYED");
    for member in socket.within(room.to_string()).sockets() {
        let _ = member.emit(&notice, &ArgsRef(&[]));
        member.leave(room.to_string());
    }
}

/// `EMIT_ROOM(room, event, ...args)`: `event(...args)` to every member but the caller.
fn emit_room(_: &P2pServer, peer: &Arc<Peer>, e: EmitRoom, r: OpReply) {
    if crate::message::server::is_reserved(&e.event) {
        let error = Error::BadRequest(format!("EMIT_ROOM: event name '{}' is reserved", e.event));
        return r.respond(Err(error.into()));
    }
    let socket = peer.socket.clone();
    let EmitRoom { room, event, args } = e;
    // Every member gets binary data as arrays of byte values: extension clients cannot take
    // binary inside a JSON event.
    let mut fut = Box::pin(async move { socket.to(room).emit(&event, &ExtArgs(&args)).await });
    let result = match (&mut fut).now_or_never() {
        Some(Err(e)) => Err(Error::Protocol(format!("EMIT_ROOM failed: {e}")).into()),
        Some(Ok(())) => Ok(vec![]),
        None => {
            // A remote adapter answers later; let it finish on its own.
            tokio::spawn(fut);
            Ok(vec![])
        }
    };
    r.respond(result);
}

/// `LIST_CLIENTS(ack)`: `ack([clientId, ...])`.
fn list_clients(server: &P2pServer, _: &Arc<Peer>, (): (), r: OpReply) {
    let mut ids = server.client_ids();
    ids.sort();
    r.respond(Ok(ClientList(ids).to_values()));
}
