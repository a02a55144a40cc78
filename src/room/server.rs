//! Server side of the Core API: rooms and the client list.

use crate::error::Error;
use crate::protocol::{action, Args, ArgsRef};
use crate::server::{OpError, P2pServer, Peer, Responder};
use futures::FutureExt;
use serde_json::Value;
use std::sync::Arc;

fn room_arg(args: &[Value], i: usize, what: &str) -> Result<String, OpError> {
    match args.get(i) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        Some(Value::String(_)) => {
            Err(Error::BadRequest(format!("{what}: the room name is empty")).into())
        }
        Some(other) => Err(Error::BadRequest(format!(
            "{what}: the room name must be a string, got {other}"
        ))
        .into()),
        None => Err(Error::BadRequest(format!("{what}: the room name is missing")).into()),
    }
}

/// The other client a `CLIENT_(UN)SUBSCRIBE_TOPIC` action names, and the room.
fn client_and_room(
    server: &P2pServer,
    args: &[Value],
    what: &str,
) -> Result<(Arc<Peer>, String), OpError> {
    let client = match args.get(1) {
        Some(Value::String(s)) => s.clone(),
        _ => {
            return Err(Error::BadRequest(format!("{what}: the client id must be a string")).into())
        }
    };
    let room = match args.get(2) {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        _ => {
            // The seed's answer to an empty topic name.
            return Err(OpError {
                error: Error::BadRequest("topicName can not be empty".into()),
                seed_ack: Some(vec![Value::from("topicName can not be empty")]),
            });
        }
    };
    match server.peer(&client) {
        Some(p) => Ok((p, room)),
        None => Err(OpError {
            error: Error::UnknownTarget(client.clone()),
            seed_ack: Some(vec![Value::from(crate::protocol::unknown_target(&client))]),
        }),
    }
}

/// `JOIN_ROOM(room)`, `JOIN_ROOM("CLIENT_SUBSCRIBE_TOPIC", client, room)`,
/// `JOIN_ROOM("SERVICE_CREATE_TOPIC", room)`.
pub(crate) fn join_room(server: &P2pServer, peer: &Arc<Peer>, args: Vec<Value>, r: Responder) {
    let result = match args.first().and_then(Value::as_str) {
        Some(action::CLIENT_SUBSCRIBE_TOPIC) => {
            client_and_room(server, &args, "JOIN_ROOM").map(|(other, room)| {
                other.socket.join(room);
                vec![]
            })
        }
        Some(action::SERVICE_CREATE_TOPIC) => room_arg(&args, 1, "JOIN_ROOM").map(|room| {
            peer.socket.join(room);
            vec![]
        }),
        _ => room_arg(&args, 0, "JOIN_ROOM").map(|room| {
            peer.socket.join(room);
            vec![]
        }),
    };
    r.respond(peer, result);
}

/// `LEAVE_ROOM(room)`, `LEAVE_ROOM("CLIENT_UNSUBSCRIBE_TOPIC", client, room)`,
/// `LEAVE_ROOM("SERVICE_DESTROY_TOPIC", room)`.
pub(crate) fn leave_room(server: &P2pServer, peer: &Arc<Peer>, args: Vec<Value>, r: Responder) {
    let result = match args.first().and_then(Value::as_str) {
        Some(action::CLIENT_UNSUBSCRIBE_TOPIC) => {
            client_and_room(server, &args, "LEAVE_ROOM").map(|(other, room)| {
                other.socket.leave(room);
                vec![]
            })
        }
        Some(action::SERVICE_DESTROY_TOPIC) => {
            room_arg(&args, 1, "LEAVE_ROOM").and_then(|room| {
                // Only the service a topic room belongs to may empty it.
                let own_prefix = format!("service:{}:topic:", peer.id);
                if room.starts_with("service:") && !room.starts_with(&own_prefix) {
                    return Err(Error::BadRequest(format!(
                        "LEAVE_ROOM: '{}' may not destroy topic room '{room}' of another service",
                        peer.id
                    ))
                    .into());
                }
                destroy_room(&peer.socket, &room);
                Ok(vec![])
            })
        }
        _ => room_arg(&args, 0, "LEAVE_ROOM").map(|room| {
            peer.socket.leave(room);
            vec![]
        }),
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

/// `EMIT_ROOM(room, event, ...args)`: `event(...args)` to every member but the caller.
pub(crate) fn emit_room(_: &P2pServer, peer: &Arc<Peer>, args: Vec<Value>, r: Responder) {
    let result = room_arg(&args, 0, "EMIT_ROOM").and_then(|room| {
        let ev = match args.get(1) {
            Some(Value::String(e)) if !e.is_empty() => e.clone(),
            _ => {
                return Err(Error::BadRequest(
                    "EMIT_ROOM: the event name must be a non-empty string".into(),
                )
                .into())
            }
        };
        if crate::message::server::is_reserved(&ev) {
            return Err(
                Error::BadRequest(format!("EMIT_ROOM: event name '{ev}' is reserved")).into(),
            );
        }
        let socket = peer.socket.clone();
        let rest = Args(args[2..].to_vec());
        let mut fut = Box::pin(async move { socket.to(room).emit(&ev, &rest).await });
        match (&mut fut).now_or_never() {
            Some(Err(e)) => Err(Error::Protocol(format!("EMIT_ROOM failed: {e}")).into()),
            Some(Ok(())) => Ok(vec![]),
            None => {
                // A remote adapter answers later; let it finish on its own.
                tokio::spawn(fut);
                Ok(vec![])
            }
        }
    });
    r.respond(peer, result);
}

/// `LIST_CLIENTS(ack)`: `ack([clientId, ...])`.
pub(crate) fn list_clients(server: &P2pServer, peer: &Arc<Peer>, _: Vec<Value>, r: Responder) {
    let mut ids = server.client_ids();
    ids.sort();
    r.respond(peer, Ok(vec![Value::from(ids)]));
}
